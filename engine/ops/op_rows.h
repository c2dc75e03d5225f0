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
  uint32_t o_off;
} mr_rows_push;

/* Rows of x along dim d (already normalised); the output has x's ndim and
   strides y_strides (size 1 or unused along d for reductions). Outer dims
   that both sides walk contiguously are merged. */
void mr_rows_geom(const mr_tensor *x, int d, const int64_t *y_strides, mr_rows_push *g);

/* The kernel shape for variant (an mr_rows_variant; AUTO decides by device
   and geometry) and its workgroup size. */
bool mr_rows_per_wg(const mr_ctx *ctx, int variant, const mr_rows_push *g, uint32_t *wg);

/* True when a per-invocation row kernel may read and write four elements at
   a time (its X4 form: common.glsl's *4 loads): rows dense in x, y and every
   parameter (NULL ones aside), a multiple of 4 long, starting at multiples of
   4 elements (binding windows start at multiples of 16 bytes, so the offsets
   keep that in every window of a split). */
bool mr_rows_x4(const mr_rows_push *g, bool per_wg, int nparams, const mr_tensor *const *params,
                const uint32_t *steps, uint32_t *const *offs);

/* Records the op over every row of x into y: one dispatch (ceil(rows / wg)
   groups, or one group per row) per chunk of rows whose windows fit the
   binding limit (ops/op_common.h), a single one when every storage fits.
   push begins with *g, which gets each chunk's rows, oshape and offsets.
   Bindings: x, then the nparams parameters read along every row (weight,
   bias: params[i] at step steps[i]; NULL binds x and is never read, its
   offset stays as it is), then y, which gets a whole row per row of x when
   y_row (a reduction writes one element). */
mr_status mr_rows_record(mr_ctx *ctx, mr_pipeline *p, void *push, mr_rows_push *g, const mr_tensor *x,
                         int nparams, const mr_tensor *const *params, const uint32_t *steps, uint32_t *const *offs,
                         const mr_tensor *y, bool y_row, bool per_wg, uint32_t wg, const char *op);

/* True when one row of x (and of y, when y_row; a reduction writes one
   element per row) fits a binding window, so mr_rows_record can split over
   rows. When it does not (rows along a dim with a large stride), the ops
   run on compact copies instead (mr_rows_dim_last). */
bool mr_rows_fit(const mr_rows_push *g, const mr_tensor *x, const mr_tensor *y, bool y_row);

/* A contiguous copy of x with dim d moved last (the others in order), so
   rows along d are contiguous. */
mr_status mr_rows_dim_last(const mr_tensor *x, int d, mr_tensor **out);

/* The fixed variant that AUTO resolved to (for the compact copies, which
   must use the same kernel shape). */
int mr_rows_resolved(bool per_wg);

/* Checks variant is an mr_rows_variant (else an error naming op). */
mr_status mr_rows_check_variant(mr_ctx *ctx, int variant, const char *op);

#endif
