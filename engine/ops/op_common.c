/* Helpers shared by the op families. */
#include "ops/op_common.h"

void mr_op_dims_u32(uint32_t *dst, const int64_t *src, int n, uint32_t pad) {
  for (int i = 0; i < MR_MAX_DIMS; i++) dst[i] = i < n ? (uint32_t)src[i] : pad;
}

mr_status mr_op_dispatch_1d(mr_ctx *ctx, mr_pipeline *p, const mr_binding *b, int nbind, const void *push,
                            uint64_t n, const char *op) {
  uint32_t gx, gy;
  mr_gpu_grid(ctx, (n + MR_ELEMWISE_WG - 1) / MR_ELEMWISE_WG, &gx, &gy);
  return mr_gpu_dispatch(ctx, p, b, nbind, push, gx, gy, 1, op);
}

mr_status mr_op_broadcast_shape(mr_ctx *ctx, const mr_tensor *a, const mr_tensor *b, int *ndim, int64_t *out_shape) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int i = 0; i < n; i++) {
    int ia = a->ndim - n + i, ib = b->ndim - n + i;
    int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      char sa[64], sb[64];
      return mr_error(ctx, MR_EINVAL, "shapes %s and %s do not broadcast (dim %d: %lld vs %lld)",
                      mr_shape_str(a->ndim, a->shape, sa, sizeof sa), mr_shape_str(b->ndim, b->shape, sb, sizeof sb),
                      i, (long long)da, (long long)db);
    }
    out_shape[i] = da == 1 ? db : da;
  }
  *ndim = n;
  return MR_OK;
}

void mr_op_broadcast_strides(const mr_tensor *t, int out_ndim, const int64_t *out_shape, int64_t *strides) {
  for (int i = 0; i < out_ndim; i++) {
    int it = t->ndim - out_ndim + i;
    strides[i] = (it >= 0 && t->shape[it] == out_shape[i] && out_shape[i] != 1) ? t->strides[it] : 0;
  }
}

mr_status mr_op_same_ctx(const mr_tensor *a, const mr_tensor *b, const char *op) {
  if (a->ctx != b->ctx) return mr_error(a->ctx, MR_EINVAL, "%s: tensors belong to different contexts", op);
  return MR_OK;
}
