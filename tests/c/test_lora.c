/* LoRA forms against CPU references on the tiny t2v DiT's weights: LoHa,
   LoKr (full and low-rank factors), DoRA on either axis, stacking and
   removal order, and the refusals (nothing matches; a shape that is not the
   model's). The three
   namings and both modes against the reference code's outputs are in the
   conformance runner (lora/ vectors). */
#include "testutil.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#define TARGET "blocks.0.self_attn.q.weight" /* [64, 64] in the tiny DiT */
#define N 64

static char tmp[64];

static mr_tensor *host_tensor(mr_ctx *ctx, int64_t r, int64_t c, const float *v) {
  int64_t s[2] = {r, c};
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, s, MR_F32, v, &t));
  return t;
}

/* Writes an adapter of n (name, rows, cols, values) entries to tmp. */
typedef struct part { const char *name; int64_t r, c; const float *v; } part;
static void write_adapter(mr_ctx *ctx, int n, const part *p) {
  const char *names[8];
  mr_tensor *ts[8];
  for (int i = 0; i < n; i++) {
    names[i] = p[i].name;
    ts[i] = host_tensor(ctx, p[i].r, p[i].c, p[i].v);
  }
  CHECK_OK(ctx, mr_safetensors_write(ctx, tmp, n, names, ts, NULL));
  for (int i = 0; i < n; i++) mr_tensor_free(ts[i]);
}

static mr_lora *attach(mr_ctx *ctx, mr_wan_dit *dit, float strength, mr_status want) {
  mr_weights *w = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, tmp, &w));
  mr_lora_opts o = mr_lora_opts_default();
  o.strength = strength;
  mr_lora *l = NULL;
  mr_status st = w ? mr_wan_dit_lora_add(dit, w, "test adapter", &o, &l) : MR_EIO;
  if (st != want) fprintf(stderr, "attach: %s (%s), wanted %s\n", mr_status_name(st), mr_ctx_last_error(ctx), mr_status_name(want));
  CHECK(st == want);
  mr_weights_free(w);
  return l;
}

static float *target(mr_ctx *ctx, mr_wan_dit *dit) {
  const mr_params *p = mr_wan_dit_params(dit);
  mr_param_info pi;
  CHECK_OK(ctx, mr_params_get(p, mr_params_find(p, TARGET), &pi));
  return mr_test_read(ctx, pi.tensor);
}

static void matmul(const float *a, const float *b, int m, int k, int n, float *out) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = 0;
      for (int q = 0; q < k; q++) s += (double)a[i * k + q] * b[q * n + j];
      out[i * n + j] = (float)s;
    }
}

static double max_diff(const float *a, const float *b, int n) {
  double m = 0;
  for (int i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
  return m;
}

static void test_loha(mr_ctx *ctx, mr_wan_dit *dit, mr_rng *rng) {
  const int r = 3;
  float w1a[N * 3], w1b[3 * N], w2a[N * 3], w2b[3 * N], alpha = 6.0f, s = 0.7f;
  mr_rng_fill(rng, w1a, N * r, -0.5f, 0.5f);
  mr_rng_fill(rng, w1b, r * N, -0.5f, 0.5f);
  mr_rng_fill(rng, w2a, N * r, -0.5f, 0.5f);
  mr_rng_fill(rng, w2b, r * N, -0.5f, 0.5f);
  part p[5] = {{"diffusion_model.blocks.0.self_attn.q.hada_w1_a", N, r, w1a},
               {"diffusion_model.blocks.0.self_attn.q.hada_w1_b", r, N, w1b},
               {"diffusion_model.blocks.0.self_attn.q.hada_w2_a", N, r, w2a},
               {"diffusion_model.blocks.0.self_attn.q.hada_w2_b", r, N, w2b},
               {"diffusion_model.blocks.0.self_attn.q.alpha", 1, 1, &alpha}};
  write_adapter(ctx, 5, p);
  float *base = target(ctx, dit);
  mr_lora *l = attach(ctx, dit, s, MR_OK);
  float *got = target(ctx, dit);
  float x[N * N], y[N * N], want[N * N];
  matmul(w1a, w1b, N, r, N, x);
  matmul(w2a, w2b, N, r, N, y);
  for (int i = 0; i < N * N; i++) want[i] = base[i] + s * (alpha / r) * x[i] * y[i];
  double d = max_diff(got, want, N * N);
  printf("LoHa: max |W' - reference| %.3g\n", d);
  CHECK(d < 1e-5);
  mr_lora_remove(l);
  float *back = target(ctx, dit);
  CHECK(memcmp(back, base, sizeof want) == 0);
  free(base);
  free(got);
  free(back);
}

static void test_lokr(mr_ctx *ctx, mr_wan_dit *dit, mr_rng *rng) {
  /* w1 [4, 2] full, w2 = w2_a [16, 2] · w2_b [2, 32] with alpha 4: kron is [64, 64] */
  float w1[4 * 2], w2a[16 * 2], w2b[2 * 32], alpha = 4.0f, s = 1.5f;
  mr_rng_fill(rng, w1, 8, -1, 1);
  mr_rng_fill(rng, w2a, 32, -0.5f, 0.5f);
  mr_rng_fill(rng, w2b, 64, -0.5f, 0.5f);
  part p[4] = {{"lora_unet_blocks_0_self_attn_q.lokr_w1", 4, 2, w1},
               {"lora_unet_blocks_0_self_attn_q.lokr_w2_a", 16, 2, w2a},
               {"lora_unet_blocks_0_self_attn_q.lokr_w2_b", 2, 32, w2b},
               {"lora_unet_blocks_0_self_attn_q.alpha", 1, 1, &alpha}};
  write_adapter(ctx, 4, p);
  float *base = target(ctx, dit);
  mr_lora *l = attach(ctx, dit, s, MR_OK);
  float *got = target(ctx, dit);
  float w2[16 * 32], want[N * N];
  matmul(w2a, w2b, 16, 2, 32, w2);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 2; j++)
      for (int k = 0; k < 16; k++)
        for (int q = 0; q < 32; q++) {
          int row = i * 16 + k, col = j * 32 + q;
          want[row * N + col] = base[row * N + col] + s * (alpha / 2) * w1[i * 2 + j] * w2[k * 32 + q];
        }
  double d = max_diff(got, want, N * N);
  printf("LoKr: max |W' - reference| %.3g\n", d);
  CHECK(d < 1e-5);
  mr_lora_remove(l);
  free(base);
  free(got);
}

/* DoRA as ComfyUI computes it, against a CPU reference: c = W + (alpha/r)·B·A;
   a magnitude per output row normalises by the rows of W, one per input
   column by the columns of c (plus f32's epsilon); W' = W + s·(c·m/norm − W). */
static void test_dora(mr_ctx *ctx, mr_wan_dit *dit, mr_rng *rng) {
  const int r = 2;
  float a[2 * N], b[N * 2], mag[N], alpha = 1.0f;
  mr_rng_fill(rng, a, 2 * N, -0.3f, 0.3f);
  mr_rng_fill(rng, b, 2 * N, -0.3f, 0.3f);
  mr_rng_fill(rng, mag, N, 0.5f, 1.5f);
  for (int axis = 0; axis < 2; axis++)
    for (int si = 0; si < 2; si++) {
      float s = si ? 0.5f : 1.0f;
      part p[4] = {{"diffusion_model.blocks.0.self_attn.q.lora_A.weight", r, N, a},
                   {"diffusion_model.blocks.0.self_attn.q.lora_B.weight", N, r, b},
                   {"diffusion_model.blocks.0.self_attn.q.alpha", 1, 1, &alpha},
                   {"diffusion_model.blocks.0.self_attn.q.dora_scale", axis ? 1 : N, axis ? N : 1, mag}};
      write_adapter(ctx, 4, p);
      float *base = target(ctx, dit);
      mr_lora *l = attach(ctx, dit, s, MR_OK);
      float *got = target(ctx, dit), ba[N * N], c[N * N], want[N * N];
      matmul(b, a, N, r, N, ba);
      for (int i = 0; i < N * N; i++) c[i] = base[i] + (alpha / r) * ba[i];
      for (int k = 0; k < N; k++) {
        double ss = 0;
        for (int j = 0; j < N; j++) {
          double v = axis ? c[j * N + k] : base[k * N + j];
          ss += v * v;
        }
        double f = mag[k] / (sqrt(ss) + 1.1920929e-7);
        for (int j = 0; j < N; j++) {
          int idx = axis ? j * N + k : k * N + j;
          want[idx] = (float)(base[idx] + s * (c[idx] * f - base[idx]));
        }
      }
      double d = max_diff(got, want, N * N);
      printf("DoRA (magnitude per %s, strength %g): max |W' - reference| %.3g\n", axis ? "input column" : "output row",
             s, d);
      CHECK(d < 1e-5);
      mr_lora_info li;
      if (l) mr_lora_get_info(l, &li);
      CHECK(l && li.mode == MR_LORA_MERGE);
      mr_lora_remove(l);
      float *back = target(ctx, dit);
      CHECK(memcmp(back, base, sizeof want) == 0);
      free(base);
      free(got);
      free(back);
    }
}

/* Two adapters on one weight add up; removing the first leaves exactly what
   the second alone gives; removing both gives the base. */
static void test_stack(mr_ctx *ctx, mr_wan_dit *dit, mr_rng *rng) {
  float a1[2 * N], b1[N * 2], a2[2 * N], b2[N * 2];
  mr_rng_fill(rng, a1, 2 * N, -0.3f, 0.3f);
  mr_rng_fill(rng, b1, 2 * N, -0.3f, 0.3f);
  mr_rng_fill(rng, a2, 2 * N, -0.3f, 0.3f);
  mr_rng_fill(rng, b2, 2 * N, -0.3f, 0.3f);
  float *base = target(ctx, dit);
  part p1[2] = {{"blocks.0.self_attn.q.lora_A.weight", 2, N, a1}, {"blocks.0.self_attn.q.lora_B.weight", N, 2, b1}};
  part p2[2] = {{"blocks.0.self_attn.q.lora_down.weight", 2, N, a2}, {"blocks.0.self_attn.q.lora_up.weight", N, 2, b2}};
  write_adapter(ctx, 2, p2);
  mr_lora *only2 = attach(ctx, dit, 0.5f, MR_OK);
  float *w2 = target(ctx, dit);
  mr_lora_remove(only2);
  write_adapter(ctx, 2, p1);
  mr_lora *l1 = attach(ctx, dit, 1.0f, MR_OK);
  write_adapter(ctx, 2, p2);
  mr_lora *l2 = attach(ctx, dit, 0.5f, MR_OK);
  float *both = target(ctx, dit), ab1[N * N], ab2[N * N], want[N * N];
  matmul(b1, a1, N, 2, N, ab1);
  matmul(b2, a2, N, 2, N, ab2);
  for (int i = 0; i < N * N; i++) want[i] = base[i] + ab1[i] + 0.5f * ab2[i];
  CHECK(max_diff(both, want, N * N) < 1e-5);
  int n = 0;
  for (const mr_lora *l = mr_wan_dit_lora_first(dit); l; l = mr_lora_next(l)) n++;
  CHECK(n == 2);
  mr_lora_remove(l1);
  float *left = target(ctx, dit);
  CHECK(memcmp(left, w2, sizeof want) == 0);
  mr_lora_remove(l2);
  float *back = target(ctx, dit);
  CHECK(memcmp(back, base, sizeof want) == 0);
  CHECK(mr_wan_dit_lora_first(dit) == NULL);
  free(base);
  free(w2);
  free(both);
  free(left);
  free(back);
}

static void test_refusals(mr_ctx *ctx, mr_wan_dit *dit) {
  float v[4 * N] = {0};
  /* nothing matches */
  part none[2] = {{"diffusion_model.nowhere.q.lora_A.weight", 4, N, v}, {"diffusion_model.nowhere.q.lora_B.weight", N, 4, v}};
  write_adapter(ctx, 2, none);
  CHECK(attach(ctx, dit, 1, MR_EFORMAT) == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "matches no parameter") && strstr(mr_ctx_last_error(ctx), "nowhere.q"));
  /* a 32-wide adapter on a 64-wide weight (another model's LoRA) */
  part wide[2] = {{"blocks.1.ffn.2.lora_A.weight", 4, 32, v}, {"blocks.1.ffn.2.lora_B.weight", N, 4, v}};
  write_adapter(ctx, 2, wide);
  CHECK(attach(ctx, dit, 1, MR_EFORMAT) == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "blocks.1.ffn.2") != NULL);
  /* a partial match: applied where it matches, the rest counted */
  part some[4] = {{"blocks.0.self_attn.q.lora_A.weight", 4, N, v}, {"blocks.0.self_attn.q.lora_B.weight", N, 4, v},
                  {"blocks.0.cross_attn.k_img.lora_A.weight", 4, N, v}, {"blocks.0.cross_attn.k_img.lora_B.weight", N, 4, v}};
  write_adapter(ctx, 4, some);
  mr_lora *l = attach(ctx, dit, 1, MR_OK);
  if (l) {
    mr_lora_info li;
    mr_lora_get_info(l, &li);
    CHECK(li.modules == 2 && li.unmatched == 1 && li.targets == 1 && strcmp(li.naming, "original") == 0);
    CHECK(li.mode == MR_LORA_MERGE); /* f32 weights */
  }
  mr_lora_remove(l);
}

/* A rank-8 adapter at strength 0 gives exactly the base forward in both
   modes, and an AUTO adapter whose strength changes goes on the fly. */
static void test_strength_zero(mr_ctx *ctx, mr_wan_dit *dit, mr_rng *rng) {
  float a[8 * N], b[N * 8];
  mr_rng_fill(rng, a, 8 * N, -0.3f, 0.3f);
  mr_rng_fill(rng, b, 8 * N, -0.3f, 0.3f);
  part p[2] = {{"blocks.1.self_attn.v.lora_A.weight", 8, N, a}, {"blocks.1.self_attn.v.lora_B.weight", N, 8, b}};
  write_adapter(ctx, 2, p);
  int64_t xs[4] = {16, 2, 4, 6}, cs[2] = {7, 32};
  float xv[16 * 2 * 4 * 6], cv[7 * 32];
  mr_rng_fill(rng, xv, sizeof xv / 4, -1, 1);
  mr_rng_fill(rng, cv, sizeof cv / 4, -1, 1);
  mr_tensor *x = NULL, *c = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, xs, MR_F32, xv, &x));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, cs, MR_F32, cv, &c));
  mr_wan_dit_input in = {.x = x, .context = c, .t = 700.0f};
  mr_tensor *y = NULL;
  CHECK_OK(ctx, mr_wan_dit_forward(dit, &in, &y));
  float *base = y ? mr_test_read(ctx, y) : NULL;
  size_t n = y ? (size_t)mr_tensor_numel(y) : 0;
  mr_tensor_free(y);
  for (int mode = MR_LORA_MERGE; mode <= MR_LORA_ON_THE_FLY; mode++) {
    mr_weights *w = NULL;
    CHECK_OK(ctx, mr_weights_open(ctx, tmp, &w));
    mr_lora_opts o = {.strength = 0.0f, .mode = (mr_lora_mode)mode};
    mr_lora *l = NULL;
    CHECK_OK(ctx, mr_wan_dit_lora_add(dit, w, "rank 8", &o, &l));
    mr_weights_free(w);
    y = NULL;
    CHECK_OK(ctx, mr_wan_dit_forward(dit, &in, &y));
    float *got = y ? mr_test_read(ctx, y) : NULL;
    CHECK(got && base && memcmp(got, base, n * sizeof *got) == 0);
    free(got);
    mr_tensor_free(y);
    mr_lora_remove(l);
  }
  mr_lora *l = attach(ctx, dit, 1.0f, MR_OK); /* AUTO on f32 weights: merged */
  mr_lora_info li;
  if (l) {
    mr_lora_get_info(l, &li);
    CHECK(li.mode == MR_LORA_MERGE);
    CHECK_OK(ctx, mr_lora_set_strength(l, 0.7f));
    mr_lora_get_info(l, &li);
    CHECK(li.mode == MR_LORA_ON_THE_FLY && li.strength == 0.7f);
  }
  mr_lora_remove(l);
  free(base);
  mr_tensor_free(x);
  mr_tensor_free(c);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  snprintf(tmp, sizeof tmp, "/tmp/mr_lora_%d.safetensors", (int)getpid());
  char path[1024];
  snprintf(path, sizeof path, "%s/wan/wan21_dit_t2v_tiny.json", dir);
  char *json = mr_test_read_text(path);
  snprintf(path, sizeof path, "%s/wan/wan21_dit_t2v_tiny.safetensors", dir);
  mr_ctx *ctx = mr_test_ctx();
  mr_weights *w = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  mr_model_opts o = mr_model_opts_default();
  o.config_json = json;
  mr_wan_dit *dit = NULL;
  if (w) CHECK_OK(ctx, mr_wan_dit_load(ctx, w, &o, &dit));
  mr_weights_free(w);
  if (dit) {
    mr_rng rng = {2024};
    test_loha(ctx, dit, &rng);
    test_lokr(ctx, dit, &rng);
    test_dora(ctx, dit, &rng);
    test_strength_zero(ctx, dit, &rng);
    test_stack(ctx, dit, &rng);
    test_refusals(ctx, dit);
    mr_wan_dit_free(dit);
  }
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  unlink(tmp);
  free(json);
  return mr_test_finish("test_lora");
}
