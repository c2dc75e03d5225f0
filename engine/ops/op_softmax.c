/* Softmax along any dim (softmax.comp). The kernel indexes rows with
   strides (rows.glsl), so a non-last dim or a strided view needs no permute
   or contiguous copy: the output is contiguous in x's shape and dtype. */
#include "ops/op_rows.h"

static mr_status softmax_compact(const mr_tensor *x, int d, int variant, mr_tensor **out) {
  mr_tensor *xp = NULL, *yp = NULL, *back = NULL;
  int inv[MR_MAX_DIMS];
  for (int k = 0; k < x->ndim; k++) inv[k] = k < d ? k : k == d ? x->ndim - 1 : k - 1;
  mr_status st = mr_rows_dim_last(x, d, &xp);
  if (st == MR_OK) st = mr_op_softmax_variant(xp, -1, variant, &yp);
  if (st == MR_OK) st = mr_tensor_permute(yp, inv, &back);
  if (st == MR_OK) st = mr_tensor_contiguous(back, out);
  mr_tensor_free(xp);
  mr_tensor_free(yp);
  mr_tensor_free(back);
  return st;
}

mr_status mr_op_softmax_variant(const mr_tensor *x, int dim, int variant, mr_tensor **out) {
  mr_ctx *ctx = x->ctx;
  *out = NULL;
  mr_status st;
  if ((st = mr_rows_check_variant(ctx, variant, "softmax")) != MR_OK) return st;
  int d = mr_dim_normalize(dim, x->ndim);
  if (d < 0) return mr_error(ctx, MR_EINVAL, "softmax: dim %d out of range for %d dims", dim, x->ndim);
  if ((st = mr_tensor_check_index_range(x, "softmax")) != MR_OK) return st;
  if ((st = mr_tensor_empty(ctx, x->dtype, x->ndim, x->shape, out)) != MR_OK) return st;
  if (mr_tensor_numel(x) == 0) return MR_OK;
  mr_rows_push pc;
  mr_rows_geom(x, d, (*out)->strides, &pc);
  uint32_t wg;
  bool per_wg = mr_rows_per_wg(ctx, variant, &pc, &wg);
  if ((pc.x_step != 1 || pc.o_step != 1) && !mr_rows_fit(&pc, x, *out, true)) {
    /* rows too far apart for one window: softmax of a copy with dim d last, permuted back */
    mr_tensor_free(*out);
    *out = NULL;
    return softmax_compact(x, d, mr_rows_resolved(per_wg), out);
  }
  uint32_t spec[4] = {x->dtype, (*out)->dtype, per_wg, wg};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "softmax", 2, sizeof pc, spec, 4, &p)) == MR_OK)
    st = mr_rows_record(ctx, p, &pc, &pc, x, 0, NULL, NULL, NULL, *out, true, per_wg, wg, "softmax");
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_softmax(const mr_tensor *x, int dim, mr_tensor **out) {
  return mr_op_softmax_variant(x, dim, MR_ROWS_AUTO, out);
}
