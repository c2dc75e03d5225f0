/* Row geometry and kernel choice for the row-wise ops. */
#include "ops/op_rows.h"

void mr_rows_geom(const mr_tensor *x, int d, const int64_t *y_strides, mr_rows_push *g) {
  *g = (mr_rows_push){.len = (uint32_t)x->shape[d], .x_off = (uint32_t)x->offset,
                      .x_step = (uint32_t)x->strides[d], .o_step = (uint32_t)y_strides[d]};
  int64_t shape[MR_MAX_DIMS], xs[MR_MAX_DIMS], ys[MR_MAX_DIMS], rows = 1;
  int n = 0;
  for (int k = 0; k < x->ndim; k++) {
    if (k == d) continue;
    rows *= x->shape[k];
    if (x->shape[k] == 1) continue; /* contributes no index */
    if (n > 0 && xs[n - 1] == x->strides[k] * x->shape[k] && ys[n - 1] == y_strides[k] * x->shape[k]) {
      shape[n - 1] *= x->shape[k]; /* one run in both tensors: merge */
      xs[n - 1] = x->strides[k];
      ys[n - 1] = y_strides[k];
      continue;
    }
    shape[n] = x->shape[k];
    xs[n] = x->strides[k];
    ys[n] = y_strides[k];
    n++;
  }
  g->rows = (uint32_t)rows;
  g->ondim = (uint32_t)n;
  for (int k = 0; k < MR_MAX_DIMS - 1; k++) {
    g->oshape[k] = k < n ? (uint32_t)shape[k] : 1;
    g->x_ostr[k] = k < n ? (uint32_t)xs[k] : 0;
    g->o_ostr[k] = k < n ? (uint32_t)ys[k] : 0;
  }
}

bool mr_rows_per_wg(const mr_ctx *ctx, int variant, const mr_rows_push *g, uint32_t *wg) {
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  bool per_wg;
  if (variant == MR_ROWS_PER_WORKGROUP) per_wg = true;
  else if (variant == MR_ROWS_PER_INVOCATION) per_wg = false;
  /* CPU devices: barriers cost more than the reduction. GPUs: short rows fit
     one invocation; strided rows (a non-last dim) with many neighbours read
     adjacent addresses when each invocation takes one. */
  else per_wg = !caps->is_cpu && g->len > 64 && !(g->x_step != 1 && g->rows >= 4096);
  /* llvmpipe (lavapipe) ends an invocation's loops after 65,535 iterations
     in all, silently: a softmax row (three passes) of 22,000 came out wrong.
     Rows that long are shared by a workgroup on every device. */
  if (variant == MR_ROWS_AUTO && caps->is_cpu && (uint64_t)g->len * 3 >= MR_CPU_LOOP_LIMIT) per_wg = true;
  if (!per_wg) {
    *wg = 64;
    return false;
  }
  uint32_t w = 32; /* about 8 elements per invocation, 32..256, a power of two */
  while (w < 256 && (uint64_t)w * 8 < g->len && w * 2 <= caps->max_invocations) w *= 2;
  *wg = w;
  return true;
}

bool mr_rows_x4(const mr_rows_push *g, bool per_wg, int nparams, const mr_tensor *const *params,
                const uint32_t *steps, uint32_t *const *offs) {
  if (per_wg || g->x_step != 1 || g->o_step != 1 || g->len % 4 != 0 || g->x_off % 4 != 0 || g->o_off % 4 != 0)
    return false;
  for (uint32_t k = 0; k < g->ondim; k++)
    if (g->x_ostr[k] % 4 != 0 || g->o_ostr[k] % 4 != 0) return false;
  for (int i = 0; i < nparams; i++)
    if (params[i] && (steps[i] != 1 || *offs[i] % 4 != 0)) return false;
  return true;
}

mr_status mr_rows_record(mr_ctx *ctx, mr_pipeline *p, void *push, mr_rows_push *g, const mr_tensor *x,
                         int nparams, const mr_tensor *const *params, const uint32_t *steps, uint32_t *const *offs,
                         const mr_tensor *y, bool y_row, bool per_wg, uint32_t wg, const char *op) {
  /* the loop space: the (merged) outer dims, one point per row */
  mr_split sp = {.ndim = (int)g->ondim, .unit = "row"};
  int64_t last = g->len > 0 ? (int64_t)g->len - 1 : 0;
  int64_t xs[MR_MAX_DIMS], ys[MR_MAX_DIMS];
  for (int k = 0; k < sp.ndim; k++) {
    sp.shape[k] = g->oshape[k];
    xs[k] = g->x_ostr[k];
    ys[k] = g->o_ostr[k];
  }
  int ix = mr_split_add(&sp, x, false, g->x_off, xs, last * g->x_step);
  int ip[MR_SPLIT_MAX_OPS];
  for (int i = 0; i < nparams; i++)
    ip[i] = params[i] ? mr_split_add(&sp, params[i], false, *offs[i], NULL, last * steps[i]) : ix;
  int iy = mr_split_add(&sp, y, true, g->o_off, ys, y_row ? last * g->o_step : 0);
  mr_status st = mr_split_plan(ctx, &sp, op);
  while (st == MR_OK && mr_split_next(&sp)) {
    g->rows = (uint32_t)sp.points;
    for (int k = 0; k < sp.ndim; k++) g->oshape[k] = (uint32_t)sp.size[k];
    g->x_off = (uint32_t)sp.rel[ix];
    g->o_off = (uint32_t)sp.rel[iy];
    mr_binding b[MR_SPLIT_MAX_OPS];
    b[0] = sp.bind[ix];
    for (int i = 0; i < nparams; i++) {
      b[1 + i] = sp.bind[ip[i]];
      if (params[i]) *offs[i] = (uint32_t)sp.rel[ip[i]];
    }
    b[1 + nparams] = sp.bind[iy];
    uint64_t groups = per_wg ? g->rows : ((uint64_t)g->rows + wg - 1) / wg;
    uint32_t gx, gy;
    mr_gpu_grid(ctx, groups, &gx, &gy);
    st = mr_gpu_dispatch(ctx, p, b, 2 + nparams, push, gx, gy, 1, op);
  }
  return st;
}

bool mr_rows_fit(const mr_rows_push *g, const mr_tensor *x, const mr_tensor *y, bool y_row) {
  int64_t last = g->len > 0 ? (int64_t)g->len - 1 : 0;
  return last * g->x_step + 1 <= mr_op_window_budget(x) && (!y_row || last * g->o_step + 1 <= mr_op_window_budget(y));
}

mr_status mr_rows_dim_last(const mr_tensor *x, int d, mr_tensor **out) {
  int perm[MR_MAX_DIMS], n = 0;
  for (int k = 0; k < x->ndim; k++)
    if (k != d) perm[n++] = k;
  perm[n] = d;
  mr_tensor *v = NULL;
  mr_status st = mr_tensor_permute((mr_tensor *)x, perm, &v);
  if (st == MR_OK) st = mr_tensor_cast(v, v->dtype, out);
  mr_tensor_free(v);
  return st;
}

int mr_rows_resolved(bool per_wg) { return per_wg ? MR_ROWS_PER_WORKGROUP : MR_ROWS_PER_INVOCATION; }

mr_status mr_rows_check_variant(mr_ctx *ctx, int variant, const char *op) {
  if (variant < 0 || variant >= MR_ROWS_VARIANTS) return mr_error(ctx, MR_EINVAL, "%s: unknown kernel variant %d", op, variant);
  return MR_OK;
}
