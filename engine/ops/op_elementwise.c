/* Elementwise ops: binary arithmetic with numpy broadcasting (binary.comp),
   scale and the unary activations (unary.comp). Inputs are any strided
   views; outputs are contiguous, in the first input's dtype. */
#include "ops/op_common.h"

#include <string.h>

/* unary.comp's op code for a * scale + bias, after the mr_unary_op codes. */
#define UNARY_SCALE 15u /* past every mr_unary_op */

/* Drops size-1 dims and merges neighbours that every operand walks as one run
   (outer stride = inner stride x inner size), so most calls index with 1 or 2
   dims. The output is contiguous, so it never prevents a merge. */
static int merge_dims(int ndim, int64_t *shape, int nops, int64_t (*strides)[MR_MAX_DIMS]) {
  int n = 0;
  for (int k = 0; k < ndim; k++) {
    if (shape[k] == 1) continue;
    bool merge = n > 0;
    for (int o = 0; o < nops && merge; o++) merge = strides[o][n - 1] == strides[o][k] * shape[k];
    if (merge) {
      shape[n - 1] *= shape[k];
      for (int o = 0; o < nops; o++) strides[o][n - 1] = strides[o][k];
      continue;
    }
    shape[n] = shape[k];
    for (int o = 0; o < nops; o++) strides[o][n] = strides[o][k];
    n++;
  }
  if (n == 0) { /* every dim was 1: one element */
    shape[0] = 1;
    for (int o = 0; o < nops; o++) strides[o][0] = 0;
    n = 1;
  }
  return n;
}

typedef struct binary_push {
  uint32_t ndim, n, a_off, b_off;
  uint32_t shape[MR_MAX_DIMS], a_strides[MR_MAX_DIMS], b_strides[MR_MAX_DIMS];
  uint32_t y_off;
} binary_push;

/* The contiguous strides of shape (the output's, after merging). */
static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int k = ndim - 1; k >= 0; k--) {
    strides[k] = s;
    s *= shape[k];
  }
}

mr_status mr_op_binary(mr_binary_op op, const mr_tensor *a, const mr_tensor *b, mr_tensor **out) {
  mr_ctx *ctx = a->ctx;
  *out = NULL;
  mr_status st = mr_op_same_ctx(a, b, "binary");
  if (st != MR_OK) return st;
  if ((unsigned)op > MR_BINARY_DIV) return mr_error(ctx, MR_EINVAL, "binary: unknown op %d", (int)op);
  int ndim;
  int64_t shape[MR_MAX_DIMS], strides[3][MR_MAX_DIMS];
  if ((st = mr_op_broadcast_shape(ctx, a, b, &ndim, shape)) != MR_OK) return st;
  if ((st = mr_tensor_check_index_range(a, "binary")) != MR_OK || (st = mr_tensor_check_index_range(b, "binary")) != MR_OK)
    return st;
  if ((st = mr_tensor_empty(ctx, a->dtype, ndim, shape, out)) != MR_OK) return st;
  uint64_t n = (uint64_t)mr_tensor_numel(*out);
  if (n == 0) return MR_OK;
  if ((st = mr_tensor_check_index_range(*out, "binary")) != MR_OK) goto fail;
  mr_op_broadcast_strides(a, ndim, shape, strides[0]);
  mr_op_broadcast_strides(b, ndim, shape, strides[1]);
  ndim = merge_dims(ndim, shape, 2, strides);
  contiguous_strides(ndim, shape, strides[2]);
  uint32_t spec[5] = {a->dtype, b->dtype, (*out)->dtype, (uint32_t)op, MR_ELEMWISE_WG};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "binary", 3, sizeof(binary_push), spec, 5, &p)) != MR_OK) goto fail;
  /* chunks are runs of the output, which the kernel writes at y_off + i */
  mr_split sp = {.ndim = ndim, .runs = true};
  memcpy(sp.shape, shape, sizeof shape);
  mr_split_add(&sp, a, false, a->offset, strides[0], 0);
  mr_split_add(&sp, b, false, b->offset, strides[1], 0);
  mr_split_add(&sp, *out, true, 0, strides[2], 0);
  if ((st = mr_split_plan(ctx, &sp, "binary")) != MR_OK) goto fail;
  while (mr_split_next(&sp)) {
    binary_push pc = {.ndim = (uint32_t)ndim, .n = (uint32_t)sp.points, .a_off = (uint32_t)sp.rel[0],
                      .b_off = (uint32_t)sp.rel[1], .y_off = (uint32_t)sp.rel[2]};
    mr_op_dims_u32(pc.shape, sp.size, ndim, 1);
    mr_op_dims_u32(pc.a_strides, strides[0], ndim, 0);
    mr_op_dims_u32(pc.b_strides, strides[1], ndim, 0);
    if ((st = mr_op_dispatch_1d(ctx, p, sp.bind, 3, &pc, (uint64_t)sp.points, "binary")) != MR_OK) goto fail;
  }
  return MR_OK;
fail:
  mr_tensor_free(*out);
  *out = NULL;
  return st;
}

typedef struct unary_push {
  uint32_t ndim, n, off;
  float scale, bias;
  uint32_t shape[MR_MAX_DIMS], strides[MR_MAX_DIMS];
  uint32_t y_off;
} unary_push;

static mr_status unary_run(uint32_t op, const mr_tensor *a, float scale, float bias, const char *name,
                           mr_tensor **out) {
  mr_ctx *ctx = a->ctx;
  mr_status st = mr_tensor_check_index_range(a, name);
  if (st != MR_OK) return st;
  if ((st = mr_tensor_empty(ctx, a->dtype, a->ndim, a->shape, out)) != MR_OK) return st;
  uint64_t n = (uint64_t)mr_tensor_numel(a);
  if (n == 0) return MR_OK;
  int64_t shape[MR_MAX_DIMS], strides[2][MR_MAX_DIMS];
  for (int k = 0; k < a->ndim; k++) {
    shape[k] = a->shape[k];
    strides[0][k] = a->strides[k];
  }
  int ndim = merge_dims(a->ndim, shape, 1, strides);
  contiguous_strides(ndim, shape, strides[1]);
  uint32_t spec[4] = {a->dtype, (*out)->dtype, op, MR_ELEMWISE_WG};
  mr_pipeline *p;
  mr_split sp = {.ndim = ndim, .runs = true};
  memcpy(sp.shape, shape, sizeof shape);
  mr_split_add(&sp, a, false, a->offset, strides[0], 0);
  mr_split_add(&sp, *out, true, 0, strides[1], 0);
  if ((st = mr_gpu_pipeline(ctx, "unary", 2, sizeof(unary_push), spec, 4, &p)) == MR_OK)
    st = mr_split_plan(ctx, &sp, name);
  while (st == MR_OK && mr_split_next(&sp)) {
    unary_push pc = {.ndim = (uint32_t)ndim, .n = (uint32_t)sp.points, .off = (uint32_t)sp.rel[0], .scale = scale,
                     .bias = bias, .y_off = (uint32_t)sp.rel[1]};
    mr_op_dims_u32(pc.shape, sp.size, ndim, 1);
    mr_op_dims_u32(pc.strides, strides[0], ndim, 0);
    st = mr_op_dispatch_1d(ctx, p, sp.bind, 2, &pc, (uint64_t)sp.points, name);
  }
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_scale(const mr_tensor *a, float scale, float bias, mr_tensor **out) {
  *out = NULL;
  return unary_run(UNARY_SCALE, a, scale, bias, "scale", out);
}

mr_status mr_op_unary(mr_unary_op op, const mr_tensor *a, mr_tensor **out) {
  *out = NULL;
  if ((unsigned)op > MR_UNARY_GELU) return mr_error(a->ctx, MR_EINVAL, "unary: unknown op %d", (int)op);
  return unary_run((uint32_t)op, a, 0.0f, 0.0f, "unary", out);
}
