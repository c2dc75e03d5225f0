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
  copy_push pc = {.ndim = (uint32_t)dst->ndim, .n = (uint32_t)n, .src_off = (uint32_t)src->offset,
                  .dst_off = (uint32_t)dst->offset};
  mr_op_dims_u32(pc.shape, dst->shape, dst->ndim, 1);
  mr_op_dims_u32(pc.src_strides, src->strides, src->ndim, 0);
  mr_op_dims_u32(pc.dst_strides, dst->strides, dst->ndim, 0);
  mr_binding b[2] = {mr_tensor_binding(src, false), mr_tensor_binding(dst, true)};
  return mr_op_dispatch_1d(ctx, p, b, 2, &pc, n, "copy");
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
  fill_push pc = {.ndim = (uint32_t)t->ndim, .n = (uint32_t)n, .off = (uint32_t)t->offset, .value = value};
  mr_op_dims_u32(pc.shape, t->shape, t->ndim, 1);
  mr_op_dims_u32(pc.strides, t->strides, t->ndim, 0);
  mr_binding b = mr_tensor_binding(t, true);
  return mr_op_dispatch_1d(ctx, p, &b, 1, &pc, n, "fill");
}
