/* Strided copy with dtype conversion, and fill: the kernels behind
   contiguous(), cast(), tensor writes into views, concat and pad. */
#include "ops/op_common.h"

#include <string.h>

typedef struct copy_push {
  uint32_t ndim, n, src_off, dst_off;
  uint32_t shape[MR_MAX_DIMS], src_strides[MR_MAX_DIMS], dst_strides[MR_MAX_DIMS];
} copy_push;

mr_status mr_tensor_copy(mr_tensor *dst, const mr_tensor *src) {
  mr_ctx *ctx = dst->ctx;
  mr_status st = mr_op_same_ctx(dst, src, "copy");
  if (st != MR_OK) return st;
  if (dst->ndim != src->ndim || memcmp(dst->shape, src->shape, (size_t)dst->ndim * sizeof *dst->shape) != 0) {
    char a[64], b[64];
    return mr_error(ctx, MR_EINVAL, "copy: shapes %s and %s differ", mr_shape_str(dst->ndim, dst->shape, a, sizeof a),
                    mr_shape_str(src->ndim, src->shape, b, sizeof b));
  }
  if ((st = mr_tensor_check_index_range(dst, "copy")) != MR_OK || (st = mr_tensor_check_index_range(src, "copy")) != MR_OK)
    return st;
  uint64_t n = (uint64_t)mr_tensor_numel(dst);
  if (n == 0) return MR_OK;
  uint32_t spec[3] = {src->dtype, dst->dtype, MR_ELEMWISE_WG};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "copy", 2, sizeof(copy_push), spec, 3, &p)) != MR_OK) return st;
  /* any box of the shape: both sides are addressed through their strides */
  mr_split sp = {.ndim = dst->ndim};
  memcpy(sp.shape, dst->shape, sizeof sp.shape);
  mr_split_add(&sp, src, false, src->offset, src->strides, 0);
  mr_split_add(&sp, dst, true, dst->offset, dst->strides, 0);
  if ((st = mr_split_plan(ctx, &sp, "copy")) != MR_OK) return st;
  while (mr_split_next(&sp)) {
    copy_push pc = {.ndim = (uint32_t)dst->ndim, .n = (uint32_t)sp.points, .src_off = (uint32_t)sp.rel[0],
                    .dst_off = (uint32_t)sp.rel[1]};
    mr_op_dims_u32(pc.shape, sp.size, dst->ndim, 1);
    mr_op_dims_u32(pc.src_strides, src->strides, src->ndim, 0);
    mr_op_dims_u32(pc.dst_strides, dst->strides, dst->ndim, 0);
    if ((st = mr_op_dispatch_1d(ctx, p, sp.bind, 2, &pc, (uint64_t)sp.points, "copy")) != MR_OK) return st;
  }
  return MR_OK;
}

typedef struct fill_push {
  uint32_t ndim, n, off;
  float value;
  uint32_t shape[MR_MAX_DIMS], strides[MR_MAX_DIMS];
} fill_push;

mr_status mr_tensor_fill(mr_tensor *t, float value) {
  mr_ctx *ctx = t->ctx;
  mr_status st = mr_tensor_check_index_range(t, "fill");
  if (st != MR_OK) return st;
  uint64_t n = (uint64_t)mr_tensor_numel(t);
  if (n == 0) return MR_OK;
  uint32_t spec[2] = {t->dtype, MR_ELEMWISE_WG};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "fill", 1, sizeof(fill_push), spec, 2, &p)) != MR_OK) return st;
  mr_split sp = {.ndim = t->ndim};
  memcpy(sp.shape, t->shape, sizeof sp.shape);
  mr_split_add(&sp, t, true, t->offset, t->strides, 0);
  if ((st = mr_split_plan(ctx, &sp, "fill")) != MR_OK) return st;
  while (mr_split_next(&sp)) {
    fill_push pc = {.ndim = (uint32_t)t->ndim, .n = (uint32_t)sp.points, .off = (uint32_t)sp.rel[0], .value = value};
    mr_op_dims_u32(pc.shape, sp.size, t->ndim, 1);
    mr_op_dims_u32(pc.strides, t->strides, t->ndim, 0);
    if ((st = mr_op_dispatch_1d(ctx, p, sp.bind, 1, &pc, (uint64_t)sp.points, "fill")) != MR_OK) return st;
  }
  return MR_OK;
}
