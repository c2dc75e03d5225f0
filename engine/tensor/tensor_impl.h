/* Fields of mr_tensor and helpers the ops share. Engine-internal. */
#ifndef MR_TENSOR_IMPL_H
#define MR_TENSOR_IMPL_H

#include "gpu/gpu.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"

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
/* The binding of the bytes of t's storage holding elements [lo, hi) (element
   indices from the storage start). A storage within the binding limit is
   bound whole, with *base = 0, as before ops split their work; a larger one
   gets the window from lo rounded down to the offset alignment (and to 16
   bytes, so vector loads stay aligned) up to hi, with *base the element it
   starts at: shaders address element e as e - *base. False when that window
   is over the limit (mr_gpu_caps.max_binding). */
bool mr_tensor_window(const mr_tensor *t, int64_t lo, int64_t hi, bool write, mr_binding *b, int64_t *base);
/* The storage elements [*lo, *hi) the view t spans (strides are never negative). */
void mr_tensor_span(const mr_tensor *t, int64_t *lo, int64_t *hi);
/* Checks that t's storage has fewer than 2^32 elements, the reach of the
   shaders' 32-bit indices (else MR_EUNSUPPORTED naming op and the limit). */
mr_status mr_tensor_check_index_range(const mr_tensor *t, const char *op);
/* Dim index after counting negatives from the end; -1 if out of range. */
int mr_dim_normalize(int dim, int ndim);

#endif
