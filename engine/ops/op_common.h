/* Shared pieces of the op implementations. Engine-internal. */
#ifndef MR_OP_COMMON_H
#define MR_OP_COMMON_H

#include "tensor/tensor_impl.h"

/* Workgroup size of the one-element-per-invocation kernels. */
#define MR_ELEMWISE_WG 128u

/* Copies n int64 dims/strides into the u32 push-constant form, padding with
   1 (shape) or 0 (stride) up to MR_MAX_DIMS. */
void mr_op_dims_u32(uint32_t *dst, const int64_t *src, int n, uint32_t pad);

/* Uniform texel buffer views, as the CPU-type *_lanes kernels read their
   operands: texels of 4 elements (four) or of 1, 32-bit for f32 and 16-bit
   for f16 and bf16 (the shaders convert). mr_op_bind_texels makes b such a
   view of dt elements: its format, and its range cut to whole texels. */
VkDeviceSize mr_op_texel_bytes(mr_dtype dt, bool four);
void mr_op_bind_texels(mr_binding *b, mr_dtype dt, bool four);

/* Records a 1-D dispatch of n invocations in groups of MR_ELEMWISE_WG. */
mr_status mr_op_dispatch_1d(mr_ctx *ctx, mr_pipeline *p, const mr_binding *b, int nbind, const void *push,
                            uint64_t n, const char *op);

/* Right-aligned numpy broadcasting of the n tensors ts into out_shape (ndim = max). */
mr_status mr_op_broadcast_shape(mr_ctx *ctx, int n, const mr_tensor *const *ts, int *ndim, int64_t *out_shape);
/* Strides that read t as if it had out_ndim dims of out_shape (0 on broadcast dims). */
void mr_op_broadcast_strides(const mr_tensor *t, int out_ndim, const int64_t *out_shape, int64_t *strides);

/* Both tensors belong to the same context (else an error naming op). */
mr_status mr_op_same_ctx(const mr_tensor *a, const mr_tensor *b, const char *op);

/* ---------------------------------------------------------------- work split over binding windows

   No op has an operand-size limit. An op describes its work as a loop space
   of up to MR_MAX_DIMS dims (elements, rows, query rows and heads...) and
   each operand by where it lies: at point c the operand touches storage
   elements off + sum_d c[d] * strides[d] + [0, extent]. The split cuts the
   space into chunks (boxes of it) such that every operand's window (see
   mr_tensor_window) for a chunk is within the binding limit, and the op
   records one dispatch per chunk with the chunk's sizes and each operand's
   element offset inside its window. When every operand's storage fits there
   is one chunk, the whole space with whole storages bound and rel = off:
   exactly the dispatch the op recorded before splitting existed. Chunk
   offsets are under 2^32: a window is at most the limit. */

#define MR_SPLIT_MAX_OPS 8

typedef struct mr_split_op {
  const mr_tensor *t;
  bool write;
  int64_t off;                   /* storage element at loop point 0 */
  int64_t strides[MR_MAX_DIMS];  /* elements per step along each loop dim (>= 0) */
  int64_t extent;                /* further elements one point touches */
} mr_split_op;

typedef struct mr_split {
  /* set by the op before mr_split_plan (operands through mr_split_add) */
  int ndim;                      /* 0: one point */
  int64_t shape[MR_MAX_DIMS];
  int64_t max_tile[MR_MAX_DIMS]; /* most a chunk may hold along a dim; 0: no cap */
  bool runs;                     /* chunks must be runs of the space in row-major order (one index
                                    along the dims before the cut dim, all after it): outputs
                                    written at a linear index */
  const char *unit;              /* what one point is, for the error message ("row"); NULL: "element" */
  int nops;
  mr_split_op ops[MR_SPLIT_MAX_OPS];
  /* the current chunk, after mr_split_next */
  int64_t start[MR_MAX_DIMS], size[MR_MAX_DIMS];
  int64_t points;                /* product of size */
  mr_binding bind[MR_SPLIT_MAX_OPS];
  int64_t rel[MR_SPLIT_MAX_OPS]; /* the operand's element at the chunk's first point, inside bind */
  /* the plan */
  int64_t tile[MR_MAX_DIMS];
  bool started;
} mr_split;

/* Adds an operand (strides: ndim values, NULL for none); returns its index
   into ops, bind and rel. */
int mr_split_add(mr_split *s, const mr_tensor *t, bool write, int64_t off, const int64_t *strides, int64_t extent);
/* Chooses the chunk sizes; MR_EUNSUPPORTED naming op when one point of the
   space is already over the limit for some operand. */
mr_status mr_split_plan(mr_ctx *ctx, mr_split *s, const char *op);
/* Moves to the next chunk (the first on the first call) and fills start,
   size, points, bind and rel; false when there is none left. */
bool mr_split_next(mr_split *s);
/* True when the plan is a single chunk. */
bool mr_split_single(const mr_split *s);
/* The bytes one binding may span (mr_gpu_caps.max_binding). */
VkDeviceSize mr_op_max_binding(const mr_ctx *ctx);
/* The most elements a window of t may span for it to fit the limit wherever
   it starts (INT64_MAX when t's whole storage fits). */
int64_t mr_op_window_budget(const mr_tensor *t);
/* True when the elements the view t spans fit one binding (whole or windowed). */
bool mr_op_view_fits(const mr_tensor *t);

/* The binding of t's n elements from its first (t->offset onwards, which
   must fit one window: mr_op_view_fits), and in *off t's first element's
   index inside it. */
mr_binding mr_op_window(const mr_tensor *t, int64_t n, bool write, uint32_t *off);

#endif
