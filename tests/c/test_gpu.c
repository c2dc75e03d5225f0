/* The Vulkan layer: device choice, pipeline cache, profiling, interrupts,
   barrier placement and deferred frees. */
#include "testutil.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_device_choice(void) {
  mr_device_info list[8];
  int n = 0;
  CHECK(mr_devices_list(list, 8, &n) == MR_OK);
  CHECK(n >= 1);
  for (int i = 0; i < n && i < 8; i++) printf("device %d: %s (%s)\n", i, list[i].name, mr_device_type_name(list[i].type));

  /* by index and by name substring, case-insensitively */
  mr_ctx_opts o = mr_ctx_opts_default();
  mr_ctx *ctx = NULL;
  o.device = "0";
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  if (ctx) {
    mr_device_info info;
    mr_ctx_device_info(ctx, &info);
    CHECK(info.index == 0 && strcmp(info.name, list[0].name) == 0);
    mr_ctx_free(ctx);
  }
  char word[16];
  snprintf(word, sizeof word, "%.4s", list[0].name);
  for (char *c = word; *c; c++) *c = (char)((*c >= 'a' && *c <= 'z') ? *c - 32 : *c);
  o.device = word;
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  mr_ctx_free(ctx);
  o.device = "no-such-device-anywhere";
  ctx = (mr_ctx *)1;
  CHECK(mr_ctx_new(&o, &ctx) == MR_ENOTFOUND && ctx == NULL);
  o.device = "97";
  CHECK(mr_ctx_new(&o, &ctx) == MR_ENOTFOUND && ctx == NULL);
}

static void test_pipeline_cache(void) {
  char dir[] = "/tmp/mr_cache_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  mr_ctx_opts o = mr_ctx_opts_default();
  o.cache_dir = dir;
  mr_ctx *ctx;
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  int64_t shape[1] = {10};
  mr_tensor *t;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F16, 1, shape, &t)); /* builds the fill pipeline */
  mr_tensor_free(t);
  mr_ctx_free(ctx);
  /* the cache file exists after the context is freed, and a second context starts from it */
  char cmd[256];
  snprintf(cmd, sizeof cmd, "ls %s/pipelines-*.bin > /dev/null 2>&1", dir);
  CHECK(system(cmd) == 0);
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F16, 1, shape, &t));
  mr_tensor_free(t);
  mr_ctx_free(ctx);
  /* a corrupt cache file is ignored, not fatal */
  snprintf(cmd, sizeof cmd, "for f in %s/pipelines-*.bin; do echo garbage > $f; done", dir);
  CHECK(system(cmd) == 0);
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  mr_ctx_free(ctx);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

static void test_profile(void) {
  mr_ctx_opts o = mr_ctx_opts_default();
  o.profile = 1;
  mr_ctx *ctx;
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  int64_t shape[2] = {64, 64};
  mr_tensor *a, *b;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, shape, &a));
  CHECK_OK(ctx, mr_tensor_cast(a, MR_BF16, &b));
  CHECK_OK(ctx, mr_ctx_sync(ctx));
  char report[4096];
  size_t need = mr_ctx_profile_report(ctx, report, sizeof report);
  CHECK(need > 0 && need < sizeof report);
  CHECK(strstr(report, "fill") != NULL && strstr(report, "copy") != NULL);
  /* a short buffer still gets a terminated prefix and the full length */
  char small[8];
  CHECK(mr_ctx_profile_report(ctx, small, sizeof small) == need && strlen(small) == 7);
  mr_tensor_free(a);
  mr_tensor_free(b);
  mr_ctx_free(ctx);
}

static void test_interrupt(mr_ctx *ctx) {
  int64_t shape[1] = {100};
  mr_tensor *t;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &t));
  mr_ctx_interrupt(ctx);
  CHECK(mr_tensor_fill(t, 1.0f) == MR_ECANCELED);
  CHECK(strstr(mr_ctx_last_error(ctx), "interrupted") != NULL);
  CHECK_OK(ctx, mr_tensor_fill(t, 2.0f)); /* the flag is consumed: work goes on */
  float y[100];
  CHECK_OK(ctx, mr_tensor_read(t, MR_F32, y, 100));
  CHECK(y[0] == 2.0f && y[99] == 2.0f);
  mr_tensor_free(t);
}

/* Write-after-read and write-after-write inside one command buffer: the
   automatic barriers must order them. */
static void test_ordering(mr_ctx *ctx) {
  int64_t shape[1] = {4099};
  mr_tensor *t, *u, *v;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &t));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &u));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &v));
  for (int round = 0; round < 20; round++) {
    CHECK_OK(ctx, mr_tensor_fill(t, (float)round));
    CHECK_OK(ctx, mr_tensor_copy(u, t));
    CHECK_OK(ctx, mr_tensor_fill(t, (float)round + 0.5f));
    CHECK_OK(ctx, mr_tensor_copy(v, t));
  }
  float y[4099];
  CHECK_OK(ctx, mr_tensor_read(u, MR_F32, y, 4099));
  CHECK(y[0] == 19.0f && y[4098] == 19.0f);
  CHECK_OK(ctx, mr_tensor_read(v, MR_F32, y, 4099));
  CHECK(y[0] == 19.5f && y[4098] == 19.5f);
  /* freeing a tensor that recorded work still reads is safe: its bytes go to the next owner in stream order */
  mr_tensor *w;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &w));
  CHECK_OK(ctx, mr_tensor_fill(w, 3.0f));
  CHECK_OK(ctx, mr_tensor_copy(u, w));
  mr_tensor_free(w);
  CHECK_OK(ctx, mr_tensor_read(u, MR_F32, y, 4099));
  CHECK(y[100] == 3.0f);
  mr_tensor_free(t);
  mr_tensor_free(u);
  mr_tensor_free(v);
}

/* More dispatches than one submission holds: the stream splits them. */
static void test_many_dispatches(mr_ctx *ctx) {
  int64_t shape[1] = {33};
  mr_tensor *a, *b;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &a));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &b));
  CHECK_OK(ctx, mr_tensor_fill(a, 1.0f));
  for (int i = 0; i < 1500; i++) CHECK_OK(ctx, i % 2 ? mr_tensor_copy(a, b) : mr_tensor_copy(b, a));
  float y[33];
  CHECK_OK(ctx, mr_tensor_read(a, MR_F32, y, 33));
  CHECK(y[32] == 1.0f);
  mr_tensor_free(a);
  mr_tensor_free(b);
}

/* Large tensors take dedicated blocks and the staging-free mapped path or
   chunked staging; check a 40 MB round trip. */
static void test_large(mr_ctx *ctx) {
  size_t n = 10u << 20;
  float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
  for (size_t i = 0; i < n; i++) x[i] = (float)(i % 1000);
  int64_t shape[2] = {10, 1 << 20};
  mr_tensor *t;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, shape, MR_F32, x, &t));
  CHECK_OK(ctx, mr_tensor_read(t, MR_F32, y, n));
  CHECK(memcmp(x, y, n * sizeof *x) == 0);
  mr_tensor_free(t);
  free(x);
  free(y);
}

int main(void) {
  test_device_choice();
  test_pipeline_cache();
  test_profile();
  mr_ctx *ctx = mr_test_ctx();
  test_interrupt(ctx);
  test_ordering(ctx);
  test_many_dispatches(ctx);
  test_large(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_gpu");
}
