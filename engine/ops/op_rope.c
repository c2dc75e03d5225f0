/* Rotary position embedding with caller-built angle tables, so one kernel
   serves Wan's 3-D split (engine/models builds those tables) and plain 1-D RoPE. */
#include "ops/op_common.h"
#include "ops/op_internal.h"

typedef struct rope_push {
  uint32_t n, L, H, half_d, table_rows;
  uint32_t x_off, cos_off, sin_off;
  uint32_t xs[4];
  uint32_t y_off;
} rope_push;

mr_status mr_op_rope(const mr_tensor *x, const mr_tensor *cos, const mr_tensor *sin, mr_tensor **out) {
  mr_ctx *ctx = x->ctx;
  *out = NULL;
  mr_status st;
  if ((st = mr_op_same_ctx(x, cos, "rope")) != MR_OK || (st = mr_op_same_ctx(x, sin, "rope")) != MR_OK) return st;
  char s1[64], s2[64];
  if (x->ndim != 4 || x->shape[3] % 2)
    return mr_error(ctx, MR_EINVAL, "rope: x must be [B, L, H, D] with D even, got %s",
                    mr_shape_str(x->ndim, x->shape, s1, sizeof s1));
  int64_t half = x->shape[3] / 2;
  if (cos->ndim != 2 || sin->ndim != 2 || cos->shape[1] != half || sin->shape[1] != half ||
      cos->shape[0] != sin->shape[0])
    return mr_error(ctx, MR_EINVAL, "rope: tables must both be [L, %lld], got cos %s and sin %s", (long long)half,
                    mr_shape_str(cos->ndim, cos->shape, s1, sizeof s1), mr_shape_str(sin->ndim, sin->shape, s2, sizeof s2));
  if (!mr_tensor_is_contiguous(cos) || !mr_tensor_is_contiguous(sin))
    return mr_error(ctx, MR_EINVAL, "rope: the angle tables must be contiguous");
  if ((st = mr_tensor_check_index_range(x, "rope")) != MR_OK) return st;
  if ((st = mr_tensor_empty(ctx, x->dtype, 4, x->shape, out)) != MR_OK) return st;
  uint64_t n = (uint64_t)mr_tensor_numel(x) / 2;
  if (n == 0) return MR_OK;
  /* two pairs an invocation where they are dense and rows start at multiples
     of 4 elements (windows start at multiples of 16 bytes: every split keeps it) */
  bool x4 = x->shape[3] % 4 == 0 && x->strides[3] == 1 && x->offset % 4 == 0;
  for (int i = 0; i < 3; i++) x4 = x4 && (x->shape[i] == 1 || x->strides[i] % 4 == 0);
  uint32_t spec[6] = {x->dtype, cos->dtype, sin->dtype, x->dtype, MR_ELEMWISE_WG, x4};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "rope", 4, sizeof(rope_push), spec, 6, &p)) != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
    return st;
  }
  /* runs of (batch item, position) rows: the kernel writes the output at y_off + 2i */
  int64_t B = x->shape[0], L = x->shape[1], H = x->shape[2], D = x->shape[3];
  if (!mr_tensor_is_contiguous(x) && (H - 1) * x->strides[2] + (D - 1) * x->strides[3] + 1 > mr_op_window_budget(x)) {
    /* the heads of one position lie too far apart for a window (a permuted view): rope of a contiguous copy */
    mr_tensor *xc = NULL;
    mr_tensor_free(*out);
    *out = NULL;
    if ((st = mr_tensor_cast((mr_tensor *)x, x->dtype, &xc)) == MR_OK) st = mr_op_rope(xc, cos, sin, out);
    mr_tensor_free(xc);
    return st;
  }
  mr_split sp = {.ndim = 2, .shape = {B, L}, .runs = true, .unit = "position"};
  const int64_t table_strides[2] = {0, half}, out_strides[2] = {L * H * D, H * D};
  mr_split_add(&sp, x, false, x->offset, x->strides, (H - 1) * x->strides[2] + (D - 1) * x->strides[3]);
  mr_split_add(&sp, cos, false, cos->offset, table_strides, half - 1);
  mr_split_add(&sp, sin, false, sin->offset, table_strides, half - 1);
  mr_split_add(&sp, *out, true, 0, out_strides, H * D - 1);
  st = mr_split_plan(ctx, &sp, "rope");
  while (st == MR_OK && mr_split_next(&sp)) {
    int64_t l0 = sp.start[1], rows = cos->shape[0] - l0;
    rope_push pc = {.n = (uint32_t)(sp.points * H * half), .L = (uint32_t)sp.size[1], .H = (uint32_t)H,
                    .half_d = (uint32_t)half, .table_rows = (uint32_t)(rows < 0 ? 0 : rows),
                    .x_off = (uint32_t)sp.rel[0], .cos_off = (uint32_t)sp.rel[1], .sin_off = (uint32_t)sp.rel[2],
                    .y_off = (uint32_t)sp.rel[3]};
    for (int i = 0; i < 4; i++) pc.xs[i] = (uint32_t)x->strides[i];
    st = mr_op_dispatch_1d(ctx, p, sp.bind, 4, &pc, (uint64_t)(sp.points * H * half) / (x4 ? 2 : 1), "rope");
  }
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

/* ---------------------------------------------------------------- RMS norm, then RoPE */

typedef struct rms_rope_push {
  uint32_t rows, len, x_off, w_off;
  uint32_t L, half_d, table_rows;
  uint32_t cos_off, sin_off;
  float eps;
} rms_rope_push;

mr_status mr_op_rms_norm_rope(const mr_tensor *x, const mr_tensor *w, float eps, const mr_tensor *cos,
                              const mr_tensor *sin, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = x->ctx;
  mr_status st;
  if ((st = mr_op_same_ctx(x, w, "rms_norm_rope")) != MR_OK) return st;
  int64_t D = x->ndim == 4 ? x->shape[3] : 0, width = x->ndim == 4 ? x->shape[2] * D : 0;
  /* one kernel: CPU-type devices (a row per invocation), x contiguous with
     rows of whole texels of 4, everything in one binding window */
  bool fused = mr_gpu_caps_get(ctx)->is_cpu && D % 4 == 0 && D > 0 && mr_tensor_is_contiguous(x) &&
               x->offset % 4 == 0 && w->ndim == 1 && w->shape[0] == width && w->strides[0] == 1 && w->offset % 4 == 0 &&
               cos->ndim == 2 && sin->ndim == 2 && cos->shape[1] == D / 2 && sin->shape[1] == D / 2 &&
               cos->shape[0] == sin->shape[0] && mr_tensor_is_contiguous(cos) && mr_tensor_is_contiguous(sin) &&
               mr_op_view_fits(x) && mr_op_view_fits(w) && mr_op_view_fits(cos) && mr_op_view_fits(sin) &&
               mr_op_same_ctx(x, cos, "rms_norm_rope") == MR_OK && mr_op_same_ctx(x, sin, "rms_norm_rope") == MR_OK;
  if (!fused) { /* the two ops (the norm over the heads of a compact x), which also say what is wrong */
    if (x->ndim != 4) return mr_op_rope(x, cos, sin, out);
    mr_tensor *xc = NULL, *x3 = NULL, *n3 = NULL, *n4 = NULL;
    int64_t s3[3] = {x->shape[0], x->shape[1], width};
    if ((st = mr_tensor_contiguous((mr_tensor *)x, &xc)) == MR_OK && (st = mr_tensor_reshape(xc, 3, s3, &x3)) == MR_OK &&
        (st = mr_op_rms_norm(x3, w, eps, &n3)) == MR_OK && (st = mr_tensor_reshape(n3, 4, x->shape, &n4)) == MR_OK)
      st = mr_op_rope(n4, cos, sin, out);
    mr_tensor_free(xc);
    mr_tensor_free(x3);
    mr_tensor_free(n3);
    mr_tensor_free(n4);
    return st;
  }
  if ((st = mr_tensor_check_index_range(x, "rms_norm_rope")) != MR_OK ||
      (st = mr_tensor_check_index_range(w, "rms_norm_rope")) != MR_OK ||
      (st = mr_tensor_empty(ctx, x->dtype, 4, x->shape, out)) != MR_OK)
    return st;
  int64_t rows = x->shape[0] * x->shape[1];
  if (rows * width == 0) return MR_OK;
  rms_rope_push pc = {.rows = (uint32_t)rows, .len = (uint32_t)width, .L = (uint32_t)x->shape[1],
                      .half_d = (uint32_t)(D / 2), .table_rows = (uint32_t)cos->shape[0], .eps = eps};
  mr_binding b[5] = {mr_op_window(x, rows * width, false, &pc.x_off), mr_op_window(w, width, false, &pc.w_off),
                     mr_op_window(cos, mr_tensor_numel(cos), false, &pc.cos_off),
                     mr_op_window(sin, mr_tensor_numel(sin), false, &pc.sin_off)};
  uint32_t unused;
  b[4] = mr_op_window(*out, rows * width, true, &unused); /* a new tensor: its window starts at element 0 */
  uint32_t spec[6] = {x->dtype, w->dtype, cos->dtype, sin->dtype, x->dtype, MR_ELEMWISE_WG};
  mr_pipeline *p;
  /* windows start on 16 bytes, so x and w offsets stay multiples of 4 in them */
  if ((st = mr_gpu_pipeline(ctx, "rms_rope", 5, sizeof pc, spec, 6, &p)) == MR_OK)
    st = mr_op_dispatch_1d(ctx, p, b, 5, &pc, (uint64_t)rows, "rms_norm");
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}
