/* Softmax along any dim (softmax.comp). The kernel indexes rows with
   strides (rows.glsl), so a non-last dim or a strided view needs no permute
   or contiguous copy: the output is contiguous in x's shape and dtype. */
#include "ops/op_rows.h"

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
  uint32_t spec[4] = {x->dtype, (*out)->dtype, per_wg, wg};
  mr_binding bind[2] = {mr_tensor_binding(x, false), mr_tensor_binding(*out, true)};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "softmax", 2, sizeof pc, spec, 4, &p)) == MR_OK)
    st = mr_rows_dispatch(ctx, p, bind, 2, &pc, &pc, per_wg, wg, "softmax");
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_softmax(const mr_tensor *x, int dim, mr_tensor **out) {
  return mr_op_softmax_variant(x, dim, MR_ROWS_AUTO, out);
}
