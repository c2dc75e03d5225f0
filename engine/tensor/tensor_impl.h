/* Fields of mr_tensor and helpers the ops share. Engine-internal. */
#ifndef MR_TENSOR_IMPL_H
#define MR_TENSOR_IMPL_H

#include "gpu/gpu.h"

/* Device memory shared by a tensor and its views; freed with the last handle. */
typedef struct mr_storage {
  int refs;
  mr_alloc alloc;
} mr_storage;

struct mr_tensor {
  mr_ctx *ctx;
  mr_storage *storage;
  mr_dtype dtype;
  int ndim;
  int64_t shape[MR_MAX_DIMS];
  int64_t strides[MR_MAX_DIMS]; /* elements */
  int64_t offset;               /* elements from the start of the storage */
};

/* A contiguous tensor with uninitialised contents (op outputs). */
mr_status mr_tensor_empty(mr_ctx *ctx, mr_dtype dtype, int ndim, const int64_t *shape, mr_tensor **out);
/* The whole storage of t as a binding; views add t->offset in push constants. */
mr_binding mr_tensor_binding(const mr_tensor *t, bool write);
/* Checks that indices into t fit the 32-bit arithmetic of the shaders. */
mr_status mr_tensor_check_index_range(const mr_tensor *t, const char *op);
/* "2x3x4" into buf. */
const char *mr_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);
/* Dim index after counting negatives from the end; -1 if out of range. */
int mr_dim_normalize(int dim, int ndim);

#endif
