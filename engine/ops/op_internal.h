/* Internal entry points of the op families: variant selection for tests and
   benchmarks, helpers one op family offers another. Engine-internal. Each
   family keeps its declarations in its own section. */
#ifndef MR_OP_INTERNAL_H
#define MR_OP_INTERNAL_H

#include "moonreel.h"

/* ---------------------------------------------------------------- row-wise ops (op_norm.c, op_softmax.c, op_reduce.c) */

/* Kernel shapes of layer_norm, rms_norm, softmax and reduce (shaders/rows.glsl).
   AUTO picks per device and shape (PER_INVOCATION on CPU-type devices, for
   short rows, and for strided rows whose neighbours are adjacent in memory;
   PER_WORKGROUP otherwise); the others force one kernel so tests run both. */
typedef enum mr_rows_variant {
  MR_ROWS_AUTO,
  MR_ROWS_PER_INVOCATION, /* one row per invocation, no barriers */
  MR_ROWS_PER_WORKGROUP,  /* one workgroup per row, shared-memory tree reduction */
  MR_ROWS_VARIANTS
} mr_rows_variant;

/* The public ops with a chosen kernel (variant: an mr_rows_variant). */
mr_status mr_op_layer_norm_variant(const mr_tensor *x, const mr_tensor *weight, const mr_tensor *bias, float eps,
                                   int variant, mr_tensor **out);
mr_status mr_op_rms_norm_variant(const mr_tensor *x, const mr_tensor *weight, float eps, int variant,
                                 mr_tensor **out);
mr_status mr_op_softmax_variant(const mr_tensor *x, int dim, int variant, mr_tensor **out);
mr_status mr_op_reduce_variant(mr_reduce_op op, const mr_tensor *x, int dim, bool keepdim, int variant,
                               mr_tensor **out);

#endif
