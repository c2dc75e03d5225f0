/* CPU references: see ref_basic.h. Plain loops, double accumulation. */
#include "ref_basic.h"

#include <math.h>

int mr_ref_broadcast_shape(int a_ndim, const int64_t *a_shape, int b_ndim, const int64_t *b_shape,
                           int64_t *out_shape) {
  int n = a_ndim > b_ndim ? a_ndim : b_ndim;
  for (int i = 0; i < n; i++) {
    int ia = a_ndim - n + i, ib = b_ndim - n + i;
    int64_t da = ia >= 0 ? a_shape[ia] : 1, db = ib >= 0 ? b_shape[ib] : 1;
    if (da != db && da != 1 && db != 1) return -1;
    out_shape[i] = da == 1 ? db : da;
  }
  return n;
}

/* Offset in a contiguous array of shape [ndim] of the element at out index
   idx (out_ndim dims), with broadcasting. */
static int64_t bcast_offset(const int64_t *idx, int out_ndim, int ndim, const int64_t *shape) {
  int64_t off = 0;
  for (int k = 0; k < ndim; k++) {
    int64_t c = shape[k] == 1 ? 0 : idx[out_ndim - ndim + k];
    off = off * shape[k] + c;
  }
  return off;
}

bool mr_ref_binary(mr_binary_op op, const float *a, int a_ndim, const int64_t *a_shape, const float *b, int b_ndim,
                   const int64_t *b_shape, float *out) {
  int64_t shape[MR_MAX_DIMS], idx[MR_MAX_DIMS] = {0}, n = 1;
  int nd = mr_ref_broadcast_shape(a_ndim, a_shape, b_ndim, b_shape, shape);
  if (nd < 0) return false;
  for (int k = 0; k < nd; k++) n *= shape[k];
  for (int64_t i = 0; i < n; i++) {
    double x = a[bcast_offset(idx, nd, a_ndim, a_shape)], y = b[bcast_offset(idx, nd, b_ndim, b_shape)], v;
    switch (op) {
    case MR_BINARY_ADD: v = x + y; break;
    case MR_BINARY_SUB: v = x - y; break;
    case MR_BINARY_MUL: v = x * y; break;
    default: v = x / y; break;
    }
    out[i] = (float)v;
    for (int k = nd - 1; k >= 0 && ++idx[k] == shape[k]; k--) idx[k] = 0; /* next index, row-major */
  }
  return true;
}

bool mr_ref_mul_add(const float *a, int a_ndim, const int64_t *a_shape, const float *b, int b_ndim,
                    const int64_t *b_shape, float beta, const float *c, int c_ndim, const int64_t *c_shape, float *out) {
  int64_t ab[MR_MAX_DIMS], shape[MR_MAX_DIMS], idx[MR_MAX_DIMS] = {0}, n = 1;
  int nab = mr_ref_broadcast_shape(a_ndim, a_shape, b_ndim, b_shape, ab);
  int nd = nab < 0 ? -1 : mr_ref_broadcast_shape(nab, ab, c_ndim, c_shape, shape);
  if (nd < 0) return false;
  for (int k = 0; k < nd; k++) n *= shape[k];
  for (int64_t i = 0; i < n; i++) {
    double x = a[bcast_offset(idx, nd, a_ndim, a_shape)], y = b[bcast_offset(idx, nd, b_ndim, b_shape)],
           z = c[bcast_offset(idx, nd, c_ndim, c_shape)];
    out[i] = (float)(x * (y + beta) + z);
    for (int k = nd - 1; k >= 0 && ++idx[k] == shape[k]; k--) idx[k] = 0;
  }
  return true;
}

void mr_ref_scale(const float *x, int64_t n, float scale, float bias, float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = (float)((double)x[i] * scale + bias);
}

void mr_ref_unary(mr_unary_op op, const float *x, int64_t n, float *out) {
  for (int64_t i = 0; i < n; i++) {
    double v = x[i], r;
    switch (op) {
    case MR_UNARY_SILU: r = v / (1.0 + exp(-v)); break;
    case MR_UNARY_GELU_TANH: r = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))); break;
    case MR_UNARY_EXP: r = exp(v); break;
    case MR_UNARY_TANH: r = tanh(v); break;
    case MR_UNARY_NEG: r = -v; break;
    case MR_UNARY_GELU: r = 0.5 * v * erfc(-v / sqrt(2.0)); break;
    default: r = v * v; break;
    }
    out[i] = (float)r;
  }
}

void mr_ref_layer_norm(const float *x, int64_t rows, int64_t cols, const float *w, const float *b, float eps,
                       float *out) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < cols; i++) mean += xr[i];
    mean /= (double)cols;
    for (int64_t i = 0; i < cols; i++) var += (xr[i] - mean) * (xr[i] - mean);
    double rstd = 1.0 / sqrt(var / (double)cols + eps);
    for (int64_t i = 0; i < cols; i++) {
      double v = (xr[i] - mean) * rstd;
      if (w) v *= w[i];
      if (b) v += b[i];
      out[r * cols + i] = (float)v;
    }
  }
}

void mr_ref_rms_norm(const float *x, int64_t rows, int64_t cols, const float *w, float eps, float *out) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    double ss = 0;
    for (int64_t i = 0; i < cols; i++) ss += (double)xr[i] * xr[i];
    double rrms = 1.0 / sqrt(ss / (double)cols + eps);
    for (int64_t i = 0; i < cols; i++) out[r * cols + i] = (float)(xr[i] * rrms * (w ? w[i] : 1.0));
  }
}

/* Splits shape around dim: outer = product before, len = shape[dim], inner = product after. */
static void split_dims(int ndim, const int64_t *shape, int dim, int64_t *outer, int64_t *len, int64_t *inner) {
  *outer = *inner = 1;
  for (int k = 0; k < dim; k++) *outer *= shape[k];
  for (int k = dim + 1; k < ndim; k++) *inner *= shape[k];
  *len = shape[dim];
}

void mr_ref_softmax(const float *x, int ndim, const int64_t *shape, int dim, float *out) {
  int64_t outer, len, inner;
  split_dims(ndim, shape, dim, &outer, &len, &inner);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      const float *xr = x + o * len * inner + j;
      float *yr = out + o * len * inner + j;
      double m = -INFINITY, s = 0;
      for (int64_t i = 0; i < len; i++) m = fmax(m, xr[i * inner]);
      for (int64_t i = 0; i < len; i++) s += exp(xr[i * inner] - m);
      for (int64_t i = 0; i < len; i++) yr[i * inner] = (float)(exp(xr[i * inner] - m) / s);
    }
}

void mr_ref_reduce(mr_reduce_op op, const float *x, int ndim, const int64_t *shape, int dim, float *out) {
  int64_t outer, len, inner;
  split_dims(ndim, shape, dim, &outer, &len, &inner);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      const float *xr = x + o * len * inner + j;
      double v = op == MR_REDUCE_MAX ? -INFINITY : 0;
      for (int64_t i = 0; i < len; i++) v = op == MR_REDUCE_MAX ? fmax(v, xr[i * inner]) : v + xr[i * inner];
      if (op == MR_REDUCE_MEAN) v /= (double)len;
      out[o * inner + j] = (float)v;
    }
}

void mr_ref_concat(int n, const float *const *xs, int ndim, const int64_t *shape, const int64_t *sizes, int dim,
                   float *out) {
  int64_t outer, len, inner, total = 0;
  split_dims(ndim, shape, dim, &outer, &len, &inner);
  for (int i = 0; i < n; i++) total += sizes[i];
  for (int64_t o = 0; o < outer; o++) {
    float *dst = out + o * total * inner;
    for (int i = 0; i < n; i++) {
      const float *src = xs[i] + o * sizes[i] * inner;
      for (int64_t e = 0; e < sizes[i] * inner; e++) *dst++ = src[e];
    }
  }
}

void mr_ref_pad(const float *x, int ndim, const int64_t *shape, const int64_t *pads, float value, float *out) {
  int64_t oshape[MR_MAX_DIMS], idx[MR_MAX_DIMS] = {0}, n = 1;
  for (int k = 0; k < ndim; k++) {
    oshape[k] = shape[k] + pads[2 * k] + pads[2 * k + 1];
    n *= oshape[k];
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t src = 0;
    bool inside = true;
    for (int k = 0; k < ndim; k++) {
      int64_t c = idx[k] - pads[2 * k];
      inside = inside && c >= 0 && c < shape[k];
      src = src * shape[k] + c;
    }
    out[i] = inside ? x[src] : value;
    for (int k = ndim - 1; k >= 0 && ++idx[k] == oshape[k]; k--) idx[k] = 0;
  }
}

void mr_ref_lincomb(int n, const float *const *xs, const float *c, int64_t count, float *out) {
  for (int64_t i = 0; i < count; i++) {
    double v = 0;
    for (int k = 0; k < n; k++) v += (double)c[k] * xs[k][i];
    out[i] = (float)v;
  }
}
