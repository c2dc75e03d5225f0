/* Sum, mean and max along one dim (reduce.comp). x may be any strided view;
   the output is contiguous in x's dtype, shaped like x with dim removed (or
   kept with size 1 when keepdim). Reducing the only dim of a 1-D tensor
   without keepdim gives shape [1]: tensors have at least one dim. */
#include "ops/op_rows.h"

static const char *const reduce_names[] = {"sum", "mean", "max"};

mr_status mr_op_reduce_variant(mr_reduce_op op, const mr_tensor *x, int dim, bool keepdim, int variant,
                               mr_tensor **out) {
  mr_ctx *ctx = x->ctx;
  *out = NULL;
  mr_status st;
  if ((unsigned)op > MR_REDUCE_MAX) return mr_error(ctx, MR_EINVAL, "reduce: unknown op %d", (int)op);
  if ((st = mr_rows_check_variant(ctx, variant, "reduce")) != MR_OK) return st;
  int d = mr_dim_normalize(dim, x->ndim);
  if (d < 0) return mr_error(ctx, MR_EINVAL, "reduce: dim %d out of range for %d dims", dim, x->ndim);
  if (op == MR_REDUCE_MAX && x->shape[d] == 0)
    return mr_error(ctx, MR_EINVAL, "reduce: max over dim %d, which has size 0", d);
  if ((st = mr_tensor_check_index_range(x, "reduce")) != MR_OK) return st;

  /* keepdim shape and its contiguous strides: the output's layout either way */
  int64_t kshape[MR_MAX_DIMS], kstrides[MR_MAX_DIMS], oshape[MR_MAX_DIMS], s = 1;
  int ondim = 0;
  for (int k = x->ndim - 1; k >= 0; k--) {
    kshape[k] = k == d ? 1 : x->shape[k];
    kstrides[k] = s;
    s *= kshape[k];
  }
  for (int k = 0; k < x->ndim; k++)
    if (keepdim || k != d) oshape[ondim++] = kshape[k];
  if (ondim == 0) oshape[ondim++] = 1;
  if ((st = mr_tensor_empty(ctx, x->dtype, ondim, oshape, out)) != MR_OK) return st;
  if (mr_tensor_numel(*out) == 0) return MR_OK;

  mr_rows_push pc;
  mr_rows_geom(x, d, kstrides, &pc);
  uint32_t wg;
  bool per_wg = mr_rows_per_wg(ctx, variant, &pc, &wg);
  if (pc.x_step != 1 && !mr_rows_fit(&pc, x, *out, false)) {
    /* rows too far apart for one window: reduce a copy with dim d last */
    mr_tensor *xp = NULL, *r = NULL;
    mr_tensor_free(*out);
    *out = NULL;
    if ((st = mr_rows_dim_last(x, d, &xp)) == MR_OK &&
        (st = mr_op_reduce_variant(op, xp, -1, keepdim, mr_rows_resolved(per_wg), &r)) == MR_OK)
      st = mr_tensor_reshape(r, ondim, oshape, out); /* keepdim: the 1 back in place of dim d */
    mr_tensor_free(xp);
    mr_tensor_free(r);
    return st;
  }
  uint32_t spec[5] = {x->dtype, (*out)->dtype, (uint32_t)op, per_wg, wg};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "reduce", 2, sizeof pc, spec, 5, &p)) == MR_OK)
    st = mr_rows_record(ctx, p, &pc, &pc, x, 0, NULL, NULL, NULL, *out, false, per_wg, wg, reduce_names[op]);
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_reduce(mr_reduce_op op, const mr_tensor *x, int dim, bool keepdim, mr_tensor **out) {
  return mr_op_reduce_variant(op, x, dim, keepdim, MR_ROWS_AUTO, out);
}
