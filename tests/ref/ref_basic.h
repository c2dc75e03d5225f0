/* Plain CPU references for the elementwise, norm, softmax, reduce and shape
   ops, used by the op tests and the benchmark. Host f32 arrays, row-major,
   contiguous; sums and statistics in double. Deliberately naive: they define
   the result, not the speed. Shapes have 1..MR_MAX_DIMS dims. */
#ifndef MR_REF_BASIC_H
#define MR_REF_BASIC_H

#include "moonreel.h"

/* The numpy broadcast of two shapes (aligned from the right) into out_shape;
   returns its ndim, or -1 if they do not broadcast. */
int mr_ref_broadcast_shape(int a_ndim, const int64_t *a_shape, int b_ndim, const int64_t *b_shape,
                           int64_t *out_shape);

/* out = a op b with broadcasting; out has the shape mr_ref_broadcast_shape
   gives (the caller sizes it). Returns false if the shapes do not broadcast. */
bool mr_ref_binary(mr_binary_op op, const float *a, int a_ndim, const int64_t *a_shape, const float *b, int b_ndim,
                   const int64_t *b_shape, float *out);
/* a * (b + beta) + c with broadcasting over all three (out has the broadcast shape). */
bool mr_ref_mul_add(const float *a, int a_ndim, const int64_t *a_shape, const float *b, int b_ndim,
                    const int64_t *b_shape, float beta, const float *c, int c_ndim, const int64_t *c_shape, float *out);

/* out[i] = x[i] * scale + bias, i < n. */
void mr_ref_scale(const float *x, int64_t n, float scale, float bias, float *out);

/* out[i] = f(x[i]), i < n, evaluated in double (GELU in its tanh form). */
void mr_ref_unary(mr_unary_op op, const float *x, int64_t n, float *out);

/* Each of rows rows of cols values: (x - mean) / sqrt(var + eps) * w + b with
   the biased variance. w and b ([cols]) may be NULL. */
void mr_ref_layer_norm(const float *x, int64_t rows, int64_t cols, const float *w, const float *b, float eps,
                       float *out);

/* Each row: x / sqrt(mean(x^2) + eps) * w; w ([cols]) may be NULL. */
void mr_ref_rms_norm(const float *x, int64_t rows, int64_t cols, const float *w, float eps, float *out);

/* Max-subtracted softmax along dim (0 <= dim < ndim) of x [shape]; out has x's shape. */
void mr_ref_softmax(const float *x, int ndim, const int64_t *shape, int dim, float *out);

/* Sum, mean or max along dim of x [shape]; out holds shape with dim removed
   (the same layout as keeping it with size 1). */
void mr_ref_reduce(mr_reduce_op op, const float *x, int ndim, const int64_t *shape, int dim, float *out);

/* Joins n arrays along dim. Array i has shape `shape` except along dim, where
   it has sizes[i] (shape[dim] is ignored); out has sum(sizes) there. */
void mr_ref_concat(int n, const float *const *xs, int ndim, const int64_t *shape, const int64_t *sizes, int dim,
                   float *out);

/* Constant padding: pads[2*k], pads[2*k+1] (>= 0) elements of value before
   and after x along dim k; out is [shape[k] + pads[2k] + pads[2k+1]]. */
void mr_ref_pad(const float *x, int ndim, const int64_t *shape, const int64_t *pads, float value, float *out);

/* out[i] = sum over k < n of c[k] * xs[k][i], i < count, accumulated in double. */
void mr_ref_lincomb(int n, const float *const *xs, const float *c, int64_t count, float *out);

#endif
