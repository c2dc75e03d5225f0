/* mr_op_lincomb against the CPU reference: 1 to 4 inputs, mixed storage
   dtypes, strided and permuted views, odd and empty sizes, the f32-output
   variant the samplers use, and the argument errors. */
#include "op_inputs.h"

#include "ops/op_internal.h"
#include "ref_basic.h"

#include <string.h>

static void test_lincomb(mr_ctx *ctx) {
  static const int nds[] = {1, 1, 3, 5, 2, 2};
  static const int64_t shapes[][MR_MAX_DIMS] = {{1}, {1000}, {3, 7, 33}, {2, 3, 1, 4, 5}, {129, 257}, {0, 3}};
  mr_rng rng = {41};
  for (int c = 0; c < 6; c++) {
    int64_t count = shape_numel(nds[c], shapes[c]);
    float *x[MR_LINCOMB_MAX], *want = malloc((size_t)(count + 1) * sizeof *want);
    for (int k = 0; k < MR_LINCOMB_MAX; k++) x[k] = malloc((size_t)(count + 1) * sizeof *x[k]);
    for (int n = 1; n <= MR_LINCOMB_MAX; n++) {
      for (int variant = 0; variant < 3; variant++) {
        mr_dtype dts[MR_LINCOMB_MAX];
        mr_tensor *ts[MR_LINCOMB_MAX];
        float coeffs[MR_LINCOMB_MAX];
        for (int k = 0; k < n; k++) {
          dts[k] = all_dtypes[(variant + k * (c + 1)) % 3];
          mr_rng_fill(&rng, x[k], (size_t)count, -3, 3);
          mr_test_round(dts[k], x[k], (size_t)count);
          coeffs[k] = mr_rng_uniform(&rng, -2, 2);
          ts[k] = make_input(ctx, dts[k], nds[c], shapes[c], x[k], (input_layout)((variant + k) % LAYOUT_COUNT));
        }
        mr_ref_lincomb(n, (const float *const *)x, coeffs, count, want);
        /* the public op stores in the first input's dtype; the variant in f32 */
        for (int f32_out = 0; f32_out < 2; f32_out++) {
          mr_tensor *out = NULL;
          mr_dtype odt = f32_out ? MR_F32 : dts[0];
          if (f32_out) CHECK_OK(ctx, mr_op_lincomb_dtype(n, (const mr_tensor *const *)ts, coeffs, MR_F32, &out));
          else CHECK_OK(ctx, mr_op_lincomb(n, (const mr_tensor *const *)ts, coeffs, &out));
          if (!out) continue;
          CHECK(mr_tensor_dtype(out) == odt && mr_tensor_is_contiguous(out) && mr_tensor_ndim(out) == nds[c]);
          CHECK(memcmp(mr_tensor_shape(out), shapes[c], (size_t)nds[c] * sizeof(int64_t)) == 0);
          float *w = malloc((size_t)(count + 1) * sizeof *w);
          memcpy(w, want, (size_t)count * sizeof *w);
          mr_test_round(odt, w, (size_t)count);
          float *got = mr_test_read(ctx, out);
          CHECK_CLOSE(got, w, count, tol_for(odt, 1e-6), "lincomb case %d n %d variant %d out %s", c, n, variant,
                      mr_dtype_name(odt));
          free(got);
          free(w);
          mr_tensor_free(out);
        }
        for (int k = 0; k < n; k++) mr_tensor_free(ts[k]);
      }
    }
    for (int k = 0; k < MR_LINCOMB_MAX; k++) free(x[k]);
    free(want);
  }
}

/* A coefficient of 1 on one tensor and 0 elsewhere copies it bit for bit. */
static void test_exact_copy(mr_ctx *ctx) {
  float a[37], b[37], got[37];
  mr_rng rng = {5};
  mr_rng_fill(&rng, a, 37, -1e3f, 1e3f);
  mr_rng_fill(&rng, b, 37, -1e3f, 1e3f);
  int64_t shape[1] = {37};
  mr_tensor *ta, *tb, *out;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 1, shape, MR_F32, a, &ta));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 1, shape, MR_F32, b, &tb));
  const mr_tensor *xs[2] = {tb, ta};
  float c[2] = {0.0f, 1.0f};
  CHECK_OK(ctx, mr_op_lincomb(2, xs, c, &out));
  CHECK_OK(ctx, mr_tensor_read(out, MR_F32, got, 37));
  CHECK(memcmp(got, a, sizeof a) == 0);
  mr_tensor_free(out);
  mr_tensor_free(ta);
  mr_tensor_free(tb);
}

static void test_errors(mr_ctx *ctx) {
  int64_t s1[2] = {3, 4}, s2[2] = {4, 3};
  mr_tensor *a, *b, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, s1, &a));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F16, 2, s2, &b));
  const mr_tensor *xs[5] = {a, b, a, a, a};
  float c[5] = {1, 1, 1, 1, 1};
  CHECK(mr_op_lincomb(2, xs, c, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "tensor 1 has shape 4x3") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_lincomb(5, xs, c, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "5 tensors") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_lincomb(0, xs, c, &out) == MR_EINVAL && out == NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_lincomb_dtype(1, xs, c, MR_I32, &out) == MR_EINVAL && out == NULL);
  mr_tensor_free(a);
  mr_tensor_free(b);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  test_lincomb(ctx);
  test_exact_copy(ctx);
  test_errors(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_lincomb");
}
