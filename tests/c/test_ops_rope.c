/* RoPE against a CPU reference: odd sizes, strided input, partial tables,
   dtypes; and RMSNorm then RoPE (mr_op_rms_norm_rope: one kernel where the
   layout allows, the two ops elsewhere) against the two references. */
#include "testutil.h"

#include "ops/op_internal.h"
#include "ref_basic.h"

#include <math.h>
#include <string.h>

/* The reference: rotate adjacent pairs of row-major x [B, L, H, D]. */
static void ref_rope(const float *x, const float *c, const float *s, int B, int L, int H, int D, int rows, float *y) {
  for (int b = 0; b < B; b++)
    for (int l = 0; l < L; l++)
      for (int h = 0; h < H; h++)
        for (int j = 0; j < D / 2; j++) {
          size_t i = (((size_t)b * L + l) * H + h) * D + 2 * j;
          double a = x[i], e = x[i + 1];
          if (l < rows) {
            double cs = c[l * (D / 2) + j], sn = s[l * (D / 2) + j];
            y[i] = (float)(a * cs - e * sn);
            y[i + 1] = (float)(a * sn + e * cs);
          } else {
            y[i] = (float)a;
            y[i + 1] = (float)e;
          }
        }
}

static void run_case(mr_ctx *ctx, mr_rng *rng, int B, int L, int H, int D, int rows, mr_dtype dt, bool permuted,
                     bool norm) {
  size_t n = (size_t)B * L * H * D, half = (size_t)rows * (D / 2);
  float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *c = malloc(half * sizeof *c),
        *s = malloc(half * sizeof *s), *w = malloc((size_t)(H * D) * sizeof *w), *xn = malloc(n * sizeof *xn);
  mr_rng_fill(rng, x, n, -2, 2);
  mr_rng_fill(rng, w, (size_t)(H * D), 0.5f, 1.5f);
  for (size_t i = 0; i < half; i++) {
    float th = mr_rng_uniform(rng, -30, 30);
    c[i] = cosf(th);
    s[i] = sinf(th);
  }
  mr_test_round(dt, x, n);
  mr_tensor *tx, *tc, *ts, *out = NULL, *base = NULL;
  int64_t xs[4] = {B, L, H, D}, cs[2] = {rows, D / 2};
  if (permuted) { /* store as [B, H, L, D] and view it as [B, L, H, D] */
    float *xt = malloc(n * sizeof *xt);
    for (int b = 0; b < B; b++)
      for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++)
          memcpy(&xt[(((size_t)b * H + h) * L + l) * D], &x[(((size_t)b * L + l) * H + h) * D], D * sizeof *x);
    int64_t bs[4] = {B, H, L, D};
    int perm[4] = {0, 2, 1, 3};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 4, bs, MR_F32, xt, &base));
    CHECK_OK(ctx, mr_tensor_permute(base, perm, &tx));
    free(xt);
  } else {
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 4, xs, MR_F32, x, &tx));
  }
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, cs, MR_F32, c, &tc));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, cs, MR_F32, s, &ts));
  mr_tensor *tw = NULL;
  if (norm) {
    int64_t ws[1] = {H * D};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 1, ws, MR_F32, w, &tw));
    CHECK_OK(ctx, mr_op_rms_norm_rope(tx, tw, 1e-6f, tc, ts, &out));
    mr_ref_rms_norm(x, (int64_t)B * L, (int64_t)H * D, w, 1e-6f, xn);
    ref_rope(xn, c, s, B, L, H, D, rows, y);
  } else {
    CHECK_OK(ctx, mr_op_rope(tx, tc, ts, &out));
    ref_rope(x, c, s, B, L, H, D, rows, y);
  }
  if (out) {
    float *got = mr_test_read(ctx, out);
    double err = mr_rel_l2(got, y, n);
    double tol = dt == MR_F32 ? 1e-6 : 1e-2;
    if (err > tol)
      fprintf(stderr, "%s B%d L%d H%d D%d rows%d %s%s: rel err %g\n", norm ? "rms_norm_rope" : "rope", B, L, H, D, rows,
              mr_dtype_name(dt), permuted ? " permuted" : "", err);
    CHECK(err <= tol);
    free(got);
  }
  mr_tensor_free(out);
  mr_tensor_free(tx);
  mr_tensor_free(base);
  mr_tensor_free(tc);
  mr_tensor_free(ts);
  mr_tensor_free(tw);
  free(x);
  free(y);
  free(c);
  free(s);
  free(w);
  free(xn);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  mr_rng rng = {12345};
  const mr_dtype dts[3] = {MR_F32, MR_F16, MR_BF16};
  for (int k = 0; k < 3; k++)
    for (int norm = 0; norm < 2; norm++) {
      run_case(ctx, &rng, 1, 7, 3, 8, 7, dts[k], false, norm);
      run_case(ctx, &rng, 2, 33, 2, 128, 33, dts[k], false, norm);
      run_case(ctx, &rng, 2, 19, 5, 6, 11, dts[k], true, norm);   /* partial table, strided */
      run_case(ctx, &rng, 2, 19, 3, 12, 11, dts[k], false, norm); /* partial table, two pairs an invocation */
      run_case(ctx, &rng, 1, 9, 3, 16, 9, dts[k], true, norm);    /* strided, D a multiple of 4 */
      run_case(ctx, &rng, 2, 80, 3, 64, 80, dts[k], false, norm); /* the default DiT's q and k */
    }
  run_case(ctx, &rng, 1, 1, 1, 2, 1, MR_F32, false, false);
  /* errors name the problem */
  int64_t xs[4] = {1, 4, 2, 7}, cs[2] = {4, 3};
  mr_tensor *x, *c, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 4, xs, &x));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, cs, &c));
  CHECK(mr_op_rope(x, c, c, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "D even") != NULL);
  mr_tensor_free(x);
  xs[3] = 8;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 4, xs, &x));
  CHECK(mr_op_rope(x, c, c, &out) == MR_EINVAL && strstr(mr_ctx_last_error(ctx), "[L, 4]") != NULL);
  mr_tensor_free(x);
  mr_tensor_free(c);
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_rope");
}
