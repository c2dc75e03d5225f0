/* Row geometry and dispatch shared by the row-wise op families (norms,
   softmax, reduce); the shader side is shaders/rows.glsl. Engine-internal. */
#ifndef MR_OP_ROWS_H
#define MR_OP_ROWS_H

#include "ops/op_common.h"
#include "ops/op_internal.h"

/* The leading push constants of every row kernel (MR_ROWS_PUSH in rows.glsl). */
typedef struct mr_rows_push {
  uint32_t rows, len, x_off, x_step, o_step, ondim;
  uint32_t oshape[MR_MAX_DIMS - 1], x_ostr[MR_MAX_DIMS - 1], o_ostr[MR_MAX_DIMS - 1];
} mr_rows_push;

/* Rows of x along dim d (already normalised); the output has x's ndim and
   strides y_strides (size 1 or unused along d for reductions). Outer dims
   that both sides walk contiguously are merged. */
void mr_rows_geom(const mr_tensor *x, int d, const int64_t *y_strides, mr_rows_push *g);

/* The kernel shape for variant (an mr_rows_variant; AUTO decides by device
   and geometry) and its workgroup size. */
bool mr_rows_per_wg(const mr_ctx *ctx, int variant, const mr_rows_push *g, uint32_t *wg);

/* Records the dispatch: ceil(rows / wg) groups, or one group per row. */
mr_status mr_rows_dispatch(mr_ctx *ctx, mr_pipeline *p, const mr_binding *b, int nbind, const void *push,
                           const mr_rows_push *g, bool per_wg, uint32_t wg, const char *op);

/* Checks variant is an mr_rows_variant (else an error naming op). */
mr_status mr_rows_check_variant(mr_ctx *ctx, int variant, const char *op);

#endif
