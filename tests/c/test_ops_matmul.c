/* Matmul (linear layer) against the CPU reference: every kernel variant, odd
   and non-tile-multiple sizes, every storage dtype, 2-D and batched weights,
   bias or none, strided and offset inputs, a batch larger than one grid row. */
#include "testutil.h"

#include "ops/op_internal.h"
#include "ref_basic.h"
#include "ref_linear.h"

#include <string.h>

static const char *VARIANT_NAMES[MR_MATMUL_VARIANTS] = {"auto", "reg", "smem", "smem_large", "lanes"};

typedef struct mm_case {
  int nbatch;              /* leading dims of x (0..2 of them) */
  int64_t bdims[2];
  int64_t M, N, K;
  mr_dtype xdt, wdt, bdt;
  bool bias, w_batched, x_permuted, offsets;
  mr_matmul_act act;       /* the kernel's activation on its outputs */
} mm_case;

static int64_t prod(const int64_t *d, int n) {
  int64_t p = 1;
  for (int i = 0; i < n; i++) p *= d[i];
  return p;
}

/* A device tensor holding host values h (logical shape), made strided or
   offset as asked: a permuted view of its transpose, or a slice that starts
   one row (or element) in. */
static mr_tensor *make_input(mr_ctx *ctx, mr_dtype dt, int ndim, const int64_t *shape, const float *h, bool permuted,
                             bool offset) {
  int64_t n = prod(shape, ndim), rows = n / shape[ndim - 1], cols = shape[ndim - 1];
  mr_tensor *base = NULL, *view = NULL;
  if (permuted) { /* store [cols, rows] and view it transposed as [rows, cols], then reshape is impossible: keep 2-D */
    float *t = malloc((size_t)(n ? n : 1) * sizeof *t);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) t[c * rows + r] = h[r * cols + c];
    int64_t ts[2] = {cols, rows};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 2, ts, MR_F32, t, &base));
    int perm[2] = {1, 0};
    CHECK_OK(ctx, mr_tensor_permute(base, perm, &view));
    free(t);
  } else if (offset) { /* one extra leading row (or element for 1-D), sliced off */
    int64_t s[MR_MAX_DIMS];
    memcpy(s, shape, (size_t)ndim * sizeof *s);
    s[0] += 1;
    int64_t inner = n / shape[0];
    float *t = calloc((size_t)(n + inner), sizeof *t);
    memcpy(t + inner, h, (size_t)n * sizeof *t);
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, ndim, s, MR_F32, t, &base));
    CHECK_OK(ctx, mr_tensor_slice(base, 0, 1, s[0], 1, &view));
    free(t);
  } else {
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, ndim, shape, MR_F32, h, &view));
  }
  mr_tensor_free(base);
  return view;
}

static void run_case(mr_ctx *ctx, mr_rng *rng, const mm_case *c, int variant) {
  int64_t batch = prod(c->bdims, c->nbatch);
  int64_t xs[MR_MAX_DIMS], ws[MR_MAX_DIMS];
  int xnd = 0, wnd = 0;
  for (int i = 0; i < c->nbatch; i++) xs[xnd++] = c->bdims[i];
  xs[xnd++] = c->M;
  xs[xnd++] = c->K;
  if (c->w_batched)
    for (int i = 0; i < c->nbatch; i++) ws[wnd++] = c->bdims[i];
  ws[wnd++] = c->N;
  ws[wnd++] = c->K;
  size_t nx = (size_t)(batch * c->M * c->K), nw = (size_t)((c->w_batched ? batch : 1) * c->N * c->K);
  size_t no = (size_t)(batch * c->M * c->N);
  float *hx = malloc((nx + 1) * sizeof *hx), *hw = malloc((nw + 1) * sizeof *hw);
  float *hb = malloc((size_t)(c->N + 1) * sizeof *hb), *ref = malloc((no + 1) * sizeof *ref);
  mr_rng_fill(rng, hx, nx, -1, 1);
  mr_rng_fill(rng, hw, nw, -1, 1);
  mr_rng_fill(rng, hb, (size_t)c->N, -1, 1);
  mr_test_round(c->xdt, hx, nx);
  mr_test_round(c->wdt, hw, nw);
  mr_test_round(c->bdt, hb, (size_t)c->N);

  mr_tensor *x = make_input(ctx, c->xdt, xnd, xs, hx, c->x_permuted, c->offsets);
  mr_tensor *w = make_input(ctx, c->wdt, wnd, ws, hw, false, c->offsets);
  mr_tensor *b = NULL, *o = NULL;
  if (c->bias) b = make_input(ctx, c->bdt, 1, &c->N, hb, false, c->offsets);
  CHECK(c->x_permuted == !mr_tensor_is_contiguous(x));
  mr_status st = mr_op_matmul_act(x, w, b, c->act, variant, &o);
  CHECK_OK(ctx, st);
  if (st == MR_OK) {
    CHECK(mr_tensor_dtype(o) == c->xdt && mr_tensor_ndim(o) == xnd);
    CHECK(mr_tensor_shape(o)[xnd - 1] == c->N && mr_tensor_shape(o)[0] == xs[0]);
    float *y = mr_test_read(ctx, o);
    mr_ref_matmul(hx, hw, c->bias ? hb : NULL, ref, batch, c->M, c->N, c->K, c->w_batched);
    if (c->act == MR_MATMUL_ACT_GELU_TANH) mr_ref_unary(MR_UNARY_GELU_TANH, ref, (int64_t)no, ref);
    mr_test_round(c->xdt, ref, no);
    double err = mr_rel_l2(y, ref, no), tol = c->xdt == MR_F32 ? 1e-5 : 1e-2;
    if (!(err <= tol)) {
      fprintf(stderr, "matmul %s: batch %lld M %lld N %lld K %lld x %s w %s%s%s%s%s%s: rel L2 %.3g > %.3g\n",
              VARIANT_NAMES[variant], (long long)batch, (long long)c->M, (long long)c->N, (long long)c->K,
              mr_dtype_name(c->xdt), mr_dtype_name(c->wdt), c->bias ? " bias" : "", c->w_batched ? " batched-w" : "",
              c->x_permuted ? " permuted-x" : "", c->offsets ? " offsets" : "", c->act ? " gelu" : "", err, tol);
      mr_test_failures++;
    }
    free(y);
  }
  mr_tensor_free(o);
  mr_tensor_free(b);
  mr_tensor_free(w);
  mr_tensor_free(x);
  free(hx);
  free(hw);
  free(hb);
  free(ref);
}

/* f32, sizes around the tile edges, every variant. */
static void test_sizes(mr_ctx *ctx, mr_rng *rng) {
  static const int64_t sz[5] = {1, 7, 33, 65, 130};
  for (int v = 1; v < MR_MATMUL_VARIANTS; v++)
    for (int i = 0; i < 5; i++)
      for (int j = 0; j < 5; j++) {
        mm_case c = {.M = sz[i], .N = sz[j], .K = sz[(i + 2 * j) % 5], .xdt = MR_F32, .wdt = MR_F32,
                     .bdt = MR_F32, .bias = (i + j) % 2 == 0};
        run_case(ctx, rng, &c, v);
      }
  /* K a multiple of 4 takes the vector-load path of the register kernel */
  for (int v = 0; v < MR_MATMUL_VARIANTS; v++) {
    mm_case c = {.M = 9, .N = 13, .K = 68, .xdt = MR_F32, .wdt = MR_F32, .bdt = MR_F32, .bias = true};
    run_case(ctx, rng, &c, v);
    mm_case few = {.M = 3, .N = 70, .K = 20, .xdt = MR_F32, .wdt = MR_F32, .bdt = MR_F32, .bias = true};
    run_case(ctx, rng, &few, v); /* M < 4: one row per invocation in the register kernel */
  }
}

/* The fused GELU on every variant: odd and aligned sizes, with and without
   bias, f32 and bf16 weights (the reference: matmul, then the unary GELU). */
static void test_act(mr_ctx *ctx, mr_rng *rng) {
  for (int v = 0; v < MR_MATMUL_VARIANTS; v++) {
    mm_case a = {.M = 7, .N = 33, .K = 65, .xdt = MR_F32, .wdt = MR_F32, .bdt = MR_F32, .bias = true,
                 .act = MR_MATMUL_ACT_GELU_TANH};
    run_case(ctx, rng, &a, v);
    mm_case b = {.M = 80, .N = 96, .K = 64, .xdt = MR_F32, .wdt = MR_BF16, .bdt = MR_BF16, .act = MR_MATMUL_ACT_GELU_TANH};
    run_case(ctx, rng, &b, v);
  }
}

/* Every storage dtype for x and w (bias in w's dtype), aligned and unaligned K. */
static void test_dtypes(mr_ctx *ctx, mr_rng *rng) {
  static const mr_dtype dts[3] = {MR_F32, MR_F16, MR_BF16};
  for (int v = 1; v < MR_MATMUL_VARIANTS; v++)
    for (int a = 0; a < 3; a++)
      for (int b = 0; b < 3; b++)
        for (int k = 0; k < 2; k++) {
          mm_case c = {.M = 10, .N = 19, .K = k ? 40 : 37, .xdt = dts[a], .wdt = dts[b], .bdt = dts[b], .bias = true};
          run_case(ctx, rng, &c, v);
        }
}

/* Leading dims, batched w, strided x, offset views. */
static void test_layouts(mr_ctx *ctx, mr_rng *rng) {
  for (int v = 1; v < MR_MATMUL_VARIANTS; v++) {
    mm_case batched = {.nbatch = 2, .bdims = {2, 3}, .M = 17, .N = 40, .K = 33, .xdt = MR_F32, .wdt = MR_F32,
                       .bdt = MR_F32, .bias = true, .w_batched = true};
    run_case(ctx, rng, &batched, v);
    batched.wdt = MR_BF16;
    batched.bias = false;
    batched.K = 36;
    run_case(ctx, rng, &batched, v);
    mm_case lead = {.nbatch = 1, .bdims = {3}, .M = 5, .N = 21, .K = 20, .xdt = MR_F32, .wdt = MR_F16,
                    .bdt = MR_F32, .bias = true};
    run_case(ctx, rng, &lead, v);
    mm_case perm = {.M = 33, .N = 7, .K = 65, .xdt = MR_F32, .wdt = MR_F32, .bdt = MR_F32, .bias = true,
                    .x_permuted = true};
    run_case(ctx, rng, &perm, v);
    perm.xdt = MR_F16;
    perm.K = 64;
    run_case(ctx, rng, &perm, v);
    mm_case off = {.M = 6, .N = 9, .K = 36, .xdt = MR_F32, .wdt = MR_F32, .bdt = MR_F16, .bias = true, .offsets = true};
    run_case(ctx, rng, &off, v);
    off.K = 33;
    off.xdt = off.wdt = MR_BF16;
    run_case(ctx, rng, &off, v);
  }
}

/* More workgroups than one grid row holds (65535 on lavapipe), so the grid
   splits over y. The register kernel only: the shared-memory ones take ~8 s
   each for 70000 barrier-laden workgroups on lavapipe, and all variants
   share the grid code. */
static void test_large_batch(mr_ctx *ctx, mr_rng *rng) {
  mm_case c = {.nbatch = 1, .bdims = {70000}, .M = 1, .N = 3, .K = 4, .xdt = MR_F32, .wdt = MR_F32,
               .bdt = MR_F32, .bias = true, .w_batched = true};
  run_case(ctx, rng, &c, MR_MATMUL_REG);
}

static void test_errors(mr_ctx *ctx) {
  int64_t xs[2] = {4, 8}, ws[2] = {5, 9}, w1[1] = {8}, bs[1] = {4}, w3[3] = {2, 5, 8}, x3[3] = {3, 4, 8};
  mr_tensor *x, *w, *wv, *b, *wb, *xb, *o = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, xs, &x));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, ws, &w));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, w1, &wv));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, bs, &b));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 3, w3, &wb));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 3, x3, &xb));
  CHECK(mr_op_matmul(x, w, NULL, &o) == MR_EINVAL && o == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "K mismatch") != NULL);
  CHECK(mr_op_matmul(x, wv, NULL, &o) == MR_EINVAL && o == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "w must be") != NULL);
  CHECK(mr_op_matmul(xb, wb, NULL, &o) == MR_EINVAL && o == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "leading dims") != NULL);
  int64_t ws2[2] = {5, 8};
  mr_tensor *w2;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, ws2, &w2));
  CHECK(mr_op_matmul(x, w2, b, &o) == MR_EINVAL && o == NULL); /* bias [4] for N = 5 */
  CHECK(strstr(mr_ctx_last_error(ctx), "bias must be [5]") != NULL);
  CHECK(mr_op_matmul_variant(x, w2, NULL, 99, &o) == MR_EINVAL && o == NULL);
  CHECK(mr_op_matmul_act(x, w2, NULL, (mr_matmul_act)7, MR_MATMUL_AUTO, &o) == MR_EINVAL && o == NULL);
  /* a weight from another context */
  mr_ctx *other = mr_test_ctx();
  mr_tensor *wo;
  CHECK_OK(other, mr_tensor_new(other, MR_F32, 2, ws2, &wo));
  CHECK(mr_op_matmul(x, wo, NULL, &o) == MR_EINVAL && o == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "different contexts") != NULL);
  mr_tensor_free(wo);
  mr_ctx_free(other);
  /* empty outputs are fine and record nothing */
  int64_t e[2] = {0, 8};
  mr_tensor *xe;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, e, &xe));
  CHECK_OK(ctx, mr_op_matmul(xe, w2, NULL, &o));
  CHECK(o && mr_tensor_shape(o)[0] == 0 && mr_tensor_shape(o)[1] == 5);
  mr_tensor_free(o);
  mr_tensor_free(xe);
  mr_tensor_free(w2);
  mr_tensor_free(x);
  mr_tensor_free(w);
  mr_tensor_free(wv);
  mr_tensor_free(b);
  mr_tensor_free(wb);
  mr_tensor_free(xb);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  mr_rng rng = {12345};
  test_sizes(ctx, &rng);
  test_dtypes(ctx, &rng);
  test_layouts(ctx, &rng);
  test_large_batch(ctx, &rng);
  test_act(ctx, &rng);
  test_errors(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_matmul");
}
