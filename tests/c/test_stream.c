/* Loading streams: a real-size checkpoint (the released Wan 2.1 VAE's exact
   names and shapes, 508 MB of f32, as a sparse file) goes to the device with
   host memory growing by about the device copy, not by the file too. On a CPU
   device the device memory is itself host memory, so the bound is "device
   bytes + slack"; without streaming the growth would be about twice that. */
#include "testutil.h"

#include "gpu/gpu.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static long peak_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  cJSON *root = NULL;
  char file[64];
  uint64_t data_bytes = 0;
  if (!mr_test_real_checkpoint(dir, "Wan2.1_VAE", "F32", 4, file, sizeof file, &root, &data_bytes)) {
    cJSON_Delete(root);
    return mr_test_finish("test_stream");
  }

  mr_ctx *ctx = mr_test_ctx();
  mr_weights *w = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, file, &w));
  long before = peak_rss_kb();
  uint64_t dev_before = mr_gpu_bytes_in_use(ctx);
  mr_wan_vae *v = NULL;
  CHECK_OK(ctx, mr_wan_vae_load(ctx, w, NULL, &v));
  CHECK_OK(ctx, mr_ctx_sync(ctx));
  long growth_kb = peak_rss_kb() - before;
  uint64_t dev = mr_gpu_bytes_in_use(ctx) - dev_before;
  double growth = growth_kb / 1024.0, dev_mb = dev / 1048576.0, file_mb = data_bytes / 1048576.0;
  printf("checkpoint %.0f MB; device memory %.0f MB; peak host growth %.0f MB\n", file_mb, dev_mb, growth);
  CHECK(v != NULL && mr_wan_vae_z_dim(v) == 16);
  /* the device copy (host memory on a CPU device) plus 96 MB of slack: one
     tensor, allocator blocks and the Vulkan driver's own allocations */
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  double bound = (info.type == MR_DEVICE_CPU ? dev_mb : 0) + 96.0;
  CHECK(growth <= bound);
  mr_wan_vae_free(v);
  mr_weights_free(w);
  mr_ctx_free(ctx);
  unlink(file);
  cJSON_Delete(root);
  return mr_test_finish("test_stream");
}
