/* LayerNorm and RMSNorm over the last dim (layer_norm.comp, rms_norm.comp).
   x may be any strided view; weight and bias are 1-D [last dim] views of any
   storage dtype; the output is contiguous in x's dtype. Statistics are f32,
   two-pass and Kahan-compensated in the shaders. */
#include "ops/op_rows.h"

typedef struct norm_push {
  mr_rows_push g;
  uint32_t w_off, w_step, b_off, b_step;
  float eps;
  uint32_t period, w_rs, b_rs; /* layer_norm: row r's weight and bias start (r % period) * w_rs, b_rs further on */
  float w_add;                 /* layer_norm: added to the weight */
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
  norm_push pc = {.eps = eps, .period = 1};
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

/* The modulation fused (docs/wan-architecture.md §2): LayerNorm without
   affine, then * (scale + add) + shift, where scale and shift are [1, T, C]
   views (T = 1 or x's L; any strides with the last dim dense) broadcast over
   x [B, L, C]. One pass over x where the two ops make two; when the layout
   does not allow it (x not contiguous, a chunked problem, other shapes) the
   two ops run. */
mr_status mr_op_layer_norm_modulate(const mr_tensor *x, const mr_tensor *scale, float add, const mr_tensor *shift,
                                    float eps, int variant, mr_tensor **out) {
  *out = NULL;
  mr_status st;
  if ((st = mr_rows_check_variant(x->ctx, variant, "layer_norm_modulate")) != MR_OK) return st;
  if ((st = mr_op_same_ctx(x, scale, "layer_norm_modulate")) != MR_OK ||
      (st = mr_op_same_ctx(x, shift, "layer_norm_modulate")) != MR_OK)
    return st;
  const mr_tensor *par[2] = {scale, shift};
  int64_t L = x->ndim == 3 ? x->shape[1] : 0, C = x->shape[x->ndim - 1], T = scale->ndim == 3 ? scale->shape[1] : 0;
  bool fused = x->ndim == 3 && mr_tensor_is_contiguous(x) && mr_op_view_fits(x) && (T == 1 || T == L);
  for (int i = 0; i < 2 && fused; i++)
    fused = par[i]->ndim == 3 && par[i]->shape[0] == 1 && par[i]->shape[1] == T && par[i]->shape[2] == C &&
            par[i]->strides[2] == 1 && mr_op_view_fits(par[i]) &&
            mr_tensor_check_index_range(par[i], "layer_norm_modulate") == MR_OK;
  if (!fused) { /* the two ops */
    mr_tensor *n = NULL;
    if ((st = mr_op_layer_norm_variant(x, NULL, NULL, eps, variant, &n)) == MR_OK)
      st = mr_op_mul_add(n, scale, add, shift, out);
    mr_tensor_free(n);
    return st;
  }
  mr_ctx *ctx = x->ctx;
  if ((st = mr_tensor_check_index_range(x, "layer_norm_modulate")) != MR_OK ||
      (st = mr_tensor_empty(ctx, x->dtype, x->ndim, x->shape, out)) != MR_OK)
    return st;
  if (mr_tensor_numel(x) == 0) return MR_OK;
  norm_push pc = {.eps = eps, .period = (uint32_t)T, .w_add = add, .w_step = 1, .b_step = 1};
  mr_rows_geom(x, x->ndim - 1, (*out)->strides, &pc.g);
  uint32_t wg;
  bool per_wg = mr_rows_per_wg(ctx, variant, &pc.g, &wg);
  mr_binding b[4];
  b[0] = mr_op_window(x, mr_tensor_numel(x), false, &pc.g.x_off);
  uint32_t *offs[2] = {&pc.w_off, &pc.b_off}, *rs[2] = {&pc.w_rs, &pc.b_rs}, unused;
  for (int i = 0; i < 2; i++) {
    b[1 + i] = mr_op_window(par[i], (T - 1) * par[i]->strides[1] + C, false, offs[i]);
    *rs[i] = (uint32_t)par[i]->strides[1];
  }
  b[3] = mr_op_window(*out, mr_tensor_numel(*out), true, &unused); /* a new tensor: its window starts at element 0 */
  /* four elements at a time where every row starts on a multiple of 4 */
  bool x4 = !per_wg && C % 4 == 0 && pc.g.x_off % 4 == 0 && pc.w_off % 4 == 0 && pc.b_off % 4 == 0 &&
            pc.w_rs % 4 == 0 && pc.b_rs % 4 == 0;
  uint32_t spec[9] = {x->dtype, scale->dtype, shift->dtype, (*out)->dtype, 1, 1, per_wg, wg, x4};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "layer_norm", 4, sizeof pc, spec, 9, &p)) == MR_OK) {
    uint64_t groups = per_wg ? pc.g.rows : ((uint64_t)pc.g.rows + wg - 1) / wg;
    uint32_t gx, gy;
    mr_gpu_grid(ctx, groups, &gx, &gy);
    st = mr_gpu_dispatch(ctx, p, b, 4, &pc, gx, gy, 1, "layer_norm");
  }
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}
