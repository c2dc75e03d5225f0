/* LayerNorm and RMSNorm over the last dim (layer_norm.comp, rms_norm.comp).
   x may be any strided view; weight and bias are 1-D [last dim] views of any
   storage dtype; the output is contiguous in x's dtype. Statistics are f32,
   two-pass and Kahan-compensated in the shaders. */
#include "ops/op_rows.h"

typedef struct norm_push {
  mr_rows_push g;
  uint32_t w_off, w_step, b_off, b_step;
  float eps;
} norm_push;

static mr_status check_param(const mr_tensor *x, const mr_tensor *t, const char *what, const char *op) {
  if (!t) return MR_OK;
  mr_status st = mr_op_same_ctx(x, t, op);
  if (st != MR_OK) return st;
  int64_t c = x->shape[x->ndim - 1];
  if (t->ndim != 1 || t->shape[0] != c) {
    char s[64];
    return mr_error(x->ctx, MR_EINVAL, "%s: %s has shape %s, expected [%lld] (the last dim of x)", op, what,
                    mr_shape_str(t->ndim, t->shape, s, sizeof s), (long long)c);
  }
  return mr_tensor_check_index_range(t, op);
}

/* rms = true: RMSNorm (bias unused). */
static mr_status norm_run(bool rms, const mr_tensor *x, const mr_tensor *w, const mr_tensor *b, float eps, int variant,
                          mr_tensor **out) {
  const char *op = rms ? "rms_norm" : "layer_norm";
  mr_ctx *ctx = x->ctx;
  *out = NULL;
  mr_status st;
  if ((st = mr_rows_check_variant(ctx, variant, op)) != MR_OK || (st = check_param(x, w, "weight", op)) != MR_OK ||
      (st = check_param(x, b, "bias", op)) != MR_OK || (st = mr_tensor_check_index_range(x, op)) != MR_OK)
    return st;
  if ((st = mr_tensor_empty(ctx, x->dtype, x->ndim, x->shape, out)) != MR_OK) return st;
  if (mr_tensor_numel(x) == 0) return MR_OK;
  norm_push pc = {.eps = eps};
  mr_rows_geom(x, x->ndim - 1, (*out)->strides, &pc.g);
  if (w) pc.w_off = (uint32_t)w->offset, pc.w_step = (uint32_t)w->strides[0];
  if (b) pc.b_off = (uint32_t)b->offset, pc.b_step = (uint32_t)b->strides[0];
  uint32_t wg;
  bool per_wg = mr_rows_per_wg(ctx, variant, &pc.g, &wg);
  bool strided = pc.g.x_step != 1 || (w && w->strides[0] != 1) || (b && b->strides[0] != 1);
  if (strided && (!mr_rows_fit(&pc.g, x, *out, true) || (w && (w->shape[0] - 1) * w->strides[0] + 1 > mr_op_window_budget(w)) ||
                  (b && (b->shape[0] - 1) * b->strides[0] + 1 > mr_op_window_budget(b)))) {
    /* a row (x strided along its last dim) too wide for one window: norm of contiguous copies */
    mr_tensor *xc = NULL, *wc = NULL, *bc = NULL;
    mr_tensor_free(*out);
    *out = NULL;
    if ((st = mr_tensor_cast((mr_tensor *)x, x->dtype, &xc)) == MR_OK &&
        (!w || (st = mr_tensor_cast((mr_tensor *)w, w->dtype, &wc)) == MR_OK) &&
        (!b || (st = mr_tensor_cast((mr_tensor *)b, b->dtype, &bc)) == MR_OK))
      st = norm_run(rms, xc, wc, bc, eps, mr_rows_resolved(per_wg), out);
    mr_tensor_free(xc);
    mr_tensor_free(wc);
    mr_tensor_free(bc);
    return st;
  }
  /* absent parameters bind x in their place; the shader never reads them */
  const mr_tensor *params[2] = {w, b};
  uint32_t steps[2] = {pc.w_step, pc.b_step}, *offs[2] = {&pc.w_off, &pc.b_off};
  bool x4 = mr_rows_x4(&pc.g, per_wg, rms ? 1 : 2, params, steps, offs);
  mr_pipeline *p;
  if (rms) {
    uint32_t spec[7] = {x->dtype, w ? w->dtype : MR_F32, (*out)->dtype, w != NULL, per_wg, wg, x4};
    st = mr_gpu_pipeline(ctx, "rms_norm", 3, sizeof pc, spec, 7, &p);
  } else {
    uint32_t spec[9] = {x->dtype, w ? w->dtype : MR_F32, b ? b->dtype : MR_F32, (*out)->dtype,
                        w != NULL, b != NULL, per_wg, wg, x4};
    st = mr_gpu_pipeline(ctx, "layer_norm", 4, sizeof pc, spec, 9, &p);
  }
  if (st == MR_OK)
    st = mr_rows_record(ctx, p, &pc, &pc.g, x, rms ? 1 : 2, params, steps, offs, *out, true, per_wg, wg, op);
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_layer_norm_variant(const mr_tensor *x, const mr_tensor *weight, const mr_tensor *bias, float eps,
                                   int variant, mr_tensor **out) {
  return norm_run(false, x, weight, bias, eps, variant, out);
}

mr_status mr_op_rms_norm_variant(const mr_tensor *x, const mr_tensor *weight, float eps, int variant,
                                 mr_tensor **out) {
  return norm_run(true, x, weight, NULL, eps, variant, out);
}

mr_status mr_op_layer_norm(const mr_tensor *x, const mr_tensor *weight, const mr_tensor *bias, float eps,
                           mr_tensor **out) {
  return norm_run(false, x, weight, bias, eps, MR_ROWS_AUTO, out);
}

mr_status mr_op_rms_norm(const mr_tensor *x, const mr_tensor *weight, float eps, mr_tensor **out) {
  return norm_run(true, x, weight, NULL, eps, MR_ROWS_AUTO, out);
}
