/* Out of device memory at every allocation of a generation (issue 15): with
   the injection switch, the n-th device allocation of a text encode, two DiT
   steps and a VAE decode (the tiny conformance models) fails, for every n
   until a run needs fewer. Each such run must end in MR_EDEVMEM with the
   injected message, leave no tensor behind (live bytes back to what the
   models hold), raise no validation message, and the same context must then
   generate exactly what it generated before. */
#include "testutil.h"

#include <string.h>

typedef struct models {
  mr_t5 *t5;
  mr_wan_dit *dit;
  mr_wan_vae *vae;
} models;

static const int32_t IDS[6] = {5, 17, 42, 99, 1, 0};

/* text -> two Euler steps of the DiT -> VAE decode of a latent of its own. */
static mr_status generate(mr_ctx *ctx, const models *m, float *out, size_t cap) {
  mr_tensor *text = NULL, *x = NULL, *v = NULL, *nx = NULL, *lat = NULL, *video = NULL;
  mr_status st = mr_t5_encode(m->t5, IDS, 6, 5, &text);
  int64_t xs[4] = {16, 2, 4, 4}, ls[4] = {4, 2, 2, 2};
  if (st == MR_OK) st = mr_tensor_new(ctx, MR_F32, 4, xs, &x);
  if (st == MR_OK) st = mr_tensor_fill(x, 0.5f);
  for (int step = 0; st == MR_OK && step < 2; step++) {
    mr_wan_dit_input in = {.x = x, .context = text, .t = 900.0f - 400.0f * step};
    st = mr_wan_dit_forward(m->dit, &in, &v);
    const mr_tensor *xs2[2] = {x, v};
    const float c[2] = {1.0f, -0.4f};
    if (st == MR_OK) st = mr_op_lincomb(2, xs2, c, &nx);
    mr_tensor_free(v), v = NULL;
    if (st == MR_OK) {
      mr_tensor_free(x);
      x = nx, nx = NULL;
    }
  }
  if (st == MR_OK) st = mr_tensor_new(ctx, MR_F32, 4, ls, &lat);
  if (st == MR_OK) st = mr_tensor_fill(lat, 0.25f);
  if (st == MR_OK) st = mr_wan_vae_decode(m->vae, lat, NULL, NULL, &video);
  size_t nv = video ? (size_t)mr_tensor_numel(video) : 0, nxx = x ? (size_t)mr_tensor_numel(x) : 0;
  if (st == MR_OK && nv + nxx <= cap) {
    if ((st = mr_tensor_read(x, MR_F32, out, nxx)) == MR_OK) st = mr_tensor_read(video, MR_F32, out + nxx, nv);
  }
  mr_tensor_free(text);
  mr_tensor_free(x);
  mr_tensor_free(lat);
  mr_tensor_free(video);
  return st;
}

static void *load(mr_ctx *ctx, const char *dir, const char *name, int kind) {
  char path[1024], cfg[1024];
  snprintf(path, sizeof path, "%s/wan/%s.safetensors", dir, name);
  snprintf(cfg, sizeof cfg, "%s/wan/%s.json", dir, name);
  char *json = mr_test_read_text(cfg);
  mr_weights *w = NULL;
  void *obj = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  mr_model_opts o = mr_model_opts_default();
  o.config_json = json;
  if (w && kind == 0) CHECK_OK(ctx, mr_t5_load(ctx, w, &o, (mr_t5 **)&obj));
  if (w && kind == 1) CHECK_OK(ctx, mr_wan_dit_load(ctx, w, &o, (mr_wan_dit **)&obj));
  if (w && kind == 2) CHECK_OK(ctx, mr_wan_vae_load(ctx, w, &o, (mr_wan_vae **)&obj));
  mr_weights_free(w);
  free(json);
  return obj;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  mr_ctx *ctx = mr_test_ctx();
  models m = {load(ctx, dir, "t5_encoder_tiny", 0), load(ctx, dir, "wan21_dit_t2v_tiny", 1),
              load(ctx, dir, "wan21_vae_tiny", 2)};
  enum { CAP = 1 << 16 };
  static float want[CAP], got[CAP];
  if (m.t5 && m.dit && m.vae) {
    CHECK_OK(ctx, generate(ctx, &m, want, CAP));
    CHECK_OK(ctx, mr_ctx_memory_trim(ctx));
    mr_memory_stats base;
    mr_ctx_memory_stats(ctx, &base);
    int failed = 0, n = 1;
    for (; n < 5000; n++) {
      CHECK_OK(ctx, mr_ctx_memory_trim(ctx)); /* every run starts from the models' blocks alone */
      mr_ctx_memory_fail_at(ctx, (uint64_t)n);
      memset(got, 0, sizeof got);
      mr_status st = generate(ctx, &m, got, CAP);
      mr_ctx_memory_fail_at(ctx, 0);
      mr_memory_stats s;
      mr_ctx_memory_stats(ctx, &s);
      if (s.live_bytes != base.live_bytes)
        fprintf(stderr, "allocation %d: %llu live bytes after the run, %llu before\n", n,
                (unsigned long long)s.live_bytes, (unsigned long long)base.live_bytes);
      CHECK(s.live_bytes == base.live_bytes);
      if (st == MR_OK) { /* past the last allocation: the run went through */
        CHECK(memcmp(got, want, sizeof got) == 0);
        break;
      }
      CHECK(st == MR_EDEVMEM && strstr(mr_ctx_last_error(ctx), "injected") != NULL);
      failed++;
    }
    printf("a generation makes %d device allocations: each one failing ended the run cleanly\n", failed);
    CHECK(failed >= 100 && n < 5000);
    CHECK_OK(ctx, generate(ctx, &m, got, CAP));
    CHECK(memcmp(got, want, sizeof got) == 0);
  }
  mr_t5_free(m.t5);
  mr_wan_dit_free(m.dit);
  mr_wan_vae_free(m.vae);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_oom");
}
