/* The Wan 2.1 VAE at its released width (the exact names and shapes of
   Wan2.1_VAE.pth, dim 96, z 16, as a sparse bf16 file: its values are zeros
   that are never written) decodes 17 frames, and the device memory it holds
   is flat in the frames: after the first chunks fill the causal caches,
   every chunk ends with the same bytes live and no more held. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024.0 * 1024.0)

typedef struct mem_log {
  mr_ctx *ctx;
  int n;
  uint64_t live[16], held[16];
} mem_log;

/* The engine syncs before it reports progress: these are end-of-chunk figures. */
static bool on_chunk(float done, void *user) {
  (void)done;
  mem_log *m = user;
  mr_memory_stats s;
  mr_ctx_memory_stats(m->ctx, &s);
  if (m->n < 16) {
    m->live[m->n] = s.live_bytes;
    m->held[m->n] = s.held_bytes;
    m->n++;
  }
  return true;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  cJSON *root = NULL;
  char file[64];
  if (!mr_test_real_checkpoint(dir, "Wan2.1_VAE", "BF16", 2, file, sizeof file, &root, NULL)) {
    cJSON_Delete(root);
    return mr_test_finish("test_vae_real");
  }

  mr_ctx *ctx = mr_test_ctx();
  mr_weights *w = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, file, &w));
  mr_model_opts mo = mr_model_opts_default();
  mo.weights = MR_BF16;
  mr_wan_vae *vae = NULL;
  if (w) CHECK_OK(ctx, mr_wan_vae_load(ctx, w, &mo, &vae));
  mr_weights_free(w);
  if (vae) {
    CHECK(mr_wan_vae_z_dim(vae) == 16 && mr_wan_vae_spatial_stride(vae) == 8);
    int64_t ls[4] = {16, 5, 3, 3}; /* -> 17 frames of 24x24 */
    mr_tensor *lat = NULL, *video = NULL;
    CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 4, ls, &lat));
    mem_log m = {.ctx = ctx};
    mr_wan_vae_set_decode_chunk(vae, 1); /* the reference's chunks, one latent frame each */
    CHECK_OK(ctx, mr_wan_vae_decode(vae, lat, on_chunk, &m, &video));
    if (video) {
      const int64_t *vs = mr_tensor_shape(video);
      CHECK(vs[0] == 3 && vs[1] == 17 && vs[2] == 24 && vs[3] == 24);
    }
    CHECK(m.n == 5);
    for (int i = 0; i < m.n; i++)
      printf("chunk %d: %.1f MiB live, %.1f MiB held\n", i + 1, m.live[i] / MiB, m.held[i] / MiB);
    /* the output grows by its frames (it is allocated whole up front), nothing else does */
    for (int i = 3; i < m.n; i++) {
      CHECK(m.live[i] == m.live[2]);
      CHECK(m.held[i] == m.held[2]);
    }
    mr_tensor_free(lat);
    mr_tensor_free(video);
    mr_wan_vae_free(vae);
  }
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  unlink(file);
  cJSON_Delete(root);
  return mr_test_finish("test_vae_real");
}
