/* Row gather against a CPU reference: odd sizes, repeated ids, strided
   tables, every storage dtype, and the errors a caller can cause. */
#include "testutil.h"

#include <string.h>

/* The reference on a row-major [V, D] table. */
static void ref_gather(const float *table, int D, const int32_t *ids, int n, float *y) {
  for (int i = 0; i < n; i++) memcpy(&y[(size_t)i * D], &table[(size_t)ids[i] * D], (size_t)D * sizeof *y);
}

/* transposed: the table is stored as [D, V] and viewed as [V, D]. */
static void run_case(mr_ctx *ctx, mr_rng *rng, int V, int D, int n, mr_dtype dt, bool transposed) {
  float *t = malloc((size_t)V * D * sizeof *t), *y = malloc(((size_t)n * D + 1) * sizeof *y);
  int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
  mr_rng_fill(rng, t, (size_t)V * D, -3, 3);
  mr_test_round(dt, t, (size_t)V * D);
  for (int i = 0; i < n; i++) ids[i] = (int32_t)mr_rng_uniform(rng, 0, (float)V) % V;
  if (n > 2) { /* the edges and a repeat */
    ids[0] = V - 1;
    ids[1] = 0;
    ids[2] = ids[0];
  }
  mr_tensor *tt = NULL, *base = NULL, *out = NULL;
  if (transposed) {
    float *tr = malloc((size_t)V * D * sizeof *tr);
    for (int v = 0; v < V; v++)
      for (int d = 0; d < D; d++) tr[(size_t)d * V + v] = t[(size_t)v * D + d];
    int64_t bs[2] = {D, V};
    int perm[2] = {1, 0};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 2, bs, MR_F32, tr, &base));
    CHECK_OK(ctx, mr_tensor_permute(base, perm, &tt));
    free(tr);
  } else {
    int64_t ts[2] = {V, D};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 2, ts, MR_F32, t, &tt));
  }
  CHECK_OK(ctx, mr_op_gather_rows(tt, ids, n, &out));
  ref_gather(t, D, ids, n, y);
  if (out) {
    CHECK(mr_tensor_dtype(out) == dt && mr_tensor_ndim(out) == 2);
    CHECK(mr_tensor_shape(out)[0] == n && mr_tensor_shape(out)[1] == D);
    float *got = mr_test_read(ctx, out);
    /* a gather moves values: exact in every dtype */
    bool same = memcmp(got, y, (size_t)n * D * sizeof *y) == 0;
    if (!same) fprintf(stderr, "gather V%d D%d n%d %s%s differs\n", V, D, n, mr_dtype_name(dt), transposed ? " T" : "");
    CHECK(same);
    free(got);
  }
  mr_tensor_free(out);
  mr_tensor_free(tt);
  mr_tensor_free(base);
  free(t);
  free(y);
  free(ids);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  mr_rng rng = {777};
  const mr_dtype dts[3] = {MR_F32, MR_F16, MR_BF16};
  for (int k = 0; k < 3; k++) {
    run_case(ctx, &rng, 37, 13, 29, dts[k], false);
    run_case(ctx, &rng, 300, 32, 20, dts[k], false);
    run_case(ctx, &rng, 1, 7, 5, dts[k], false);   /* one row, repeated */
    run_case(ctx, &rng, 32, 5, 121, dts[k], true); /* T5 bias shape, strided table */
  }
  run_case(ctx, &rng, 11, 1, 3, MR_F32, true);

  /* a slice of the table (offset view) */
  {
    float t[6 * 4];
    for (int i = 0; i < 24; i++) t[i] = (float)i;
    int64_t ts[2] = {6, 4};
    mr_tensor *tt, *sl, *out = NULL;
    CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, ts, MR_F32, t, &tt));
    CHECK_OK(ctx, mr_tensor_slice(tt, 1, 1, 4, 2, &sl)); /* columns 1 and 3 */
    int32_t ids[3] = {5, 2, 5};
    CHECK_OK(ctx, mr_op_gather_rows(sl, ids, 3, &out));
    float got[6] = {0}, want[6] = {21, 23, 9, 11, 21, 23};
    if (out) CHECK_OK(ctx, mr_tensor_read(out, MR_F32, got, 6));
    CHECK(memcmp(got, want, sizeof got) == 0);
    mr_tensor_free(out);
    mr_tensor_free(sl);
    mr_tensor_free(tt);
  }

  /* n = 0 gives an empty [0, D] tensor */
  {
    int64_t ts[2] = {4, 3};
    mr_tensor *tt, *out = NULL;
    CHECK_OK(ctx, mr_tensor_new(ctx, MR_F16, 2, ts, &tt));
    CHECK_OK(ctx, mr_op_gather_rows(tt, NULL, 0, &out));
    CHECK(out && mr_tensor_shape(out)[0] == 0 && mr_tensor_shape(out)[1] == 3);
    mr_tensor_free(out);

    /* errors name the problem and leave out NULL */
    int32_t bad[3] = {0, 4, 1}, neg[1] = {-1};
    out = (mr_tensor *)1;
    CHECK(mr_op_gather_rows(tt, bad, 3, &out) == MR_EINVAL && out == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "id 4 at index 1") != NULL);
    CHECK(mr_op_gather_rows(tt, neg, 1, &out) == MR_EINVAL && out == NULL);
    CHECK(mr_op_gather_rows(tt, bad, -1, &out) == MR_EINVAL);
    CHECK(mr_op_gather_rows(tt, NULL, 2, &out) == MR_EINVAL);
    mr_tensor_free(tt);
    int64_t s3[3] = {2, 2, 2};
    CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 3, s3, &tt));
    CHECK(mr_op_gather_rows(tt, bad, 1, &out) == MR_EINVAL && strstr(mr_ctx_last_error(ctx), "[V, D]") != NULL);
    mr_tensor_free(tt);
  }
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_gather");
}
