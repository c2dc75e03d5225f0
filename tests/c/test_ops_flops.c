/* The FLOP counter (mr_ctx_flops): each counted op adds exactly its useful
   work, 2 per multiply-add; other ops and failed calls add nothing; with the
   profile on, the counted FLOPs appear in the report. */
#include "testutil.h"

#include <string.h>

static mr_tensor *zeros(mr_ctx *ctx, int ndim, const int64_t *shape) {
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, ndim, shape, &t));
  return t;
}

static void test_counts(mr_ctx *ctx) {
  /* matmul: x [3, 5, 24] (M = 15) times w [40, 24] -> 2 * 15 * 40 * 24 */
  int64_t xs[3] = {3, 5, 24}, ws[2] = {40, 24};
  mr_tensor *x = zeros(ctx, 3, xs), *w = zeros(ctx, 2, ws), *out = NULL;
  double before = mr_ctx_flops(ctx);
  CHECK_OK(ctx, mr_op_matmul(x, w, NULL, &out));
  CHECK(mr_ctx_flops(ctx) - before == 2.0 * 15 * 40 * 24);
  mr_tensor_free(out);

  /* a failed call (K mismatch) and a non-counting op add nothing */
  before = mr_ctx_flops(ctx);
  CHECK(mr_op_matmul(w, x, NULL, &out) == MR_EINVAL && out == NULL);
  CHECK_OK(ctx, mr_op_unary(MR_UNARY_SILU, x, &out));
  CHECK(mr_ctx_flops(ctx) == before);
  mr_tensor_free(out);
  mr_tensor_free(x);
  mr_tensor_free(w);

  /* attention: B 2, Lq 6, Lk 10, H 3, D 16, key lengths 4 and 10 (masked keys are not work) */
  int64_t qs[4] = {2, 6, 3, 16}, ks[4] = {2, 10, 3, 16};
  mr_tensor *q = zeros(ctx, 4, qs), *k = zeros(ctx, 4, ks), *v = zeros(ctx, 4, ks);
  int32_t kl[2] = {4, 12}; /* 12 is clamped to Lk */
  mr_attention_opts o = mr_attention_opts_default();
  o.k_lens = kl;
  before = mr_ctx_flops(ctx);
  CHECK_OK(ctx, mr_op_attention(q, k, v, &o, &out));
  CHECK(mr_ctx_flops(ctx) - before == 4.0 * (4 + 10) * 3 * 6 * 16);
  mr_tensor_free(out);
  mr_tensor_free(q);
  mr_tensor_free(k);
  mr_tensor_free(v);

  /* conv3d: x [4, 3, 6, 7], w [5, 4, 3, 3, 3], causal time padding, stride 2 in h, w */
  int64_t cs[4] = {4, 3, 6, 7}, cw[5] = {5, 4, 3, 3, 3};
  mr_tensor *cx = zeros(ctx, 4, cs), *wk = zeros(ctx, 5, cw);
  int stride[3] = {1, 2, 2}, pad[6] = {2, 0, 1, 1, 1, 1};
  before = mr_ctx_flops(ctx);
  CHECK_OK(ctx, mr_op_conv3d(cx, wk, NULL, stride, pad, &out));
  const int64_t *os = out ? mr_tensor_shape(out) : cs;
  CHECK(out && os[0] == 5 && os[1] == 3 && os[2] == 3 && os[3] == 4);
  CHECK(mr_ctx_flops(ctx) - before == 2.0 * (5 * 3 * 3 * 4) * 4 * 27);
  mr_tensor_free(out);
  mr_tensor_free(cx);
  mr_tensor_free(wk);
  CHECK_OK(ctx, mr_ctx_sync(ctx));
}

static void test_profile_columns(void) {
  mr_ctx_opts opts = mr_ctx_opts_default();
  opts.profile = 1;
  mr_ctx *ctx;
  CHECK(mr_ctx_new(&opts, &ctx) == MR_OK);
  int64_t xs[2] = {64, 64};
  mr_tensor *x = zeros(ctx, 2, xs), *out = NULL;
  CHECK_OK(ctx, mr_op_matmul(x, x, NULL, &out));
  CHECK_OK(ctx, mr_ctx_sync(ctx));
  CHECK(mr_ctx_flops(ctx) == 2.0 * 64 * 64 * 64);
  char report[4096];
  mr_ctx_profile_report(ctx, report, sizeof report);
  const char *line = strstr(report, "\nmatmul ");
  CHECK(strstr(report, "GFLOP/s") != NULL && line != NULL);
  if (line) CHECK(strstr(line, " 0.001 ") != NULL); /* 524288 FLOPs = 0.001 GFLOP at 3 decimals */
  mr_tensor_free(out);
  mr_tensor_free(x);
  mr_ctx_free(ctx);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  CHECK(mr_ctx_flops(ctx) == 0);
  test_counts(ctx);
  mr_ctx_free(ctx);
  test_profile_columns();
  return mr_test_finish("test_ops_flops");
}
