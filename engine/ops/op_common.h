/* Shared pieces of the op implementations. Engine-internal. */
#ifndef MR_OP_COMMON_H
#define MR_OP_COMMON_H

#include "tensor/tensor_impl.h"

/* Workgroup size of the one-element-per-invocation kernels. */
#define MR_ELEMWISE_WG 128u

/* Copies n int64 dims/strides into the u32 push-constant form, padding with
   1 (shape) or 0 (stride) up to MR_MAX_DIMS. */
void mr_op_dims_u32(uint32_t *dst, const int64_t *src, int n, uint32_t pad);

/* Records a 1-D dispatch of n invocations in groups of MR_ELEMWISE_WG. */
mr_status mr_op_dispatch_1d(mr_ctx *ctx, mr_pipeline *p, const mr_binding *b, int nbind, const void *push,
                            uint64_t n, const char *op);

/* Right-aligned numpy broadcasting of a and b into out_shape (ndim = max). */
mr_status mr_op_broadcast_shape(mr_ctx *ctx, const mr_tensor *a, const mr_tensor *b, int *ndim, int64_t *out_shape);
/* Strides that read t as if it had out_ndim dims of out_shape (0 on broadcast dims). */
void mr_op_broadcast_strides(const mr_tensor *t, int out_ndim, const int64_t *out_shape, int64_t *strides);

/* Both tensors belong to the same context (else an error naming op). */
mr_status mr_op_same_ctx(const mr_tensor *a, const mr_tensor *b, const char *op);

#endif
