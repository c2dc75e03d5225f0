/* Concat and constant pad, built on the strided copy and fill kernels
   (op_copy.c): concat copies each input into its slice of the output, pad
   fills the output and copies x into the interior. The slices are views
   made on the stack: the output holds the storage for the whole call. */
#include "ops/op_common.h"

#include <string.h>

/* The part of t (contiguous output) starting at start[] with shape[]. */
static mr_tensor sub_view(const mr_tensor *t, const int64_t *start, const int64_t *shape) {
  mr_tensor v = *t;
  for (int k = 0; k < t->ndim; k++) {
    v.offset += start[k] * t->strides[k];
    v.shape[k] = shape[k];
  }
  return v;
}

mr_status mr_op_concat(mr_tensor *const *ts, int n, int dim, mr_tensor **out) {
  *out = NULL;
  if (n < 1 || !ts || !ts[0]) return mr_error(NULL, MR_EINVAL, "concat: needs at least one tensor");
  const mr_tensor *t0 = ts[0];
  mr_ctx *ctx = t0->ctx;
  int d = mr_dim_normalize(dim, t0->ndim);
  if (d < 0) return mr_error(ctx, MR_EINVAL, "concat: dim %d out of range for %d dims", dim, t0->ndim);
  int64_t shape[MR_MAX_DIMS];
  memcpy(shape, t0->shape, sizeof shape);
  shape[d] = 0;
  mr_status st;
  for (int i = 0; i < n; i++) {
    const mr_tensor *t = ts[i];
    if (!t) return mr_error(ctx, MR_EINVAL, "concat: tensor %d is NULL", i);
    if ((st = mr_op_same_ctx(t0, t, "concat")) != MR_OK) return st;
    bool same = t->ndim == t0->ndim;
    for (int k = 0; k < t0->ndim && same; k++) same = k == d || t->shape[k] == t0->shape[k];
    if (!same) {
      char a[64], b[64];
      return mr_error(ctx, MR_EINVAL, "concat: tensor %d has shape %s, tensor 0 has %s; only dim %d may differ", i,
                      mr_shape_str(t->ndim, t->shape, a, sizeof a), mr_shape_str(t0->ndim, t0->shape, b, sizeof b), d);
    }
    shape[d] += t->shape[d];
  }
  if ((st = mr_tensor_empty(ctx, t0->dtype, t0->ndim, shape, out)) != MR_OK) return st;
  int64_t start[MR_MAX_DIMS] = {0};
  for (int i = 0; i < n && st == MR_OK; i++) {
    mr_tensor v = sub_view(*out, start, ts[i]->shape);
    st = mr_tensor_copy(&v, ts[i]);
    start[d] += ts[i]->shape[d];
  }
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_pad(const mr_tensor *x, const int64_t *pads, float value, mr_tensor **out) {
  mr_ctx *ctx = x->ctx;
  *out = NULL;
  int64_t shape[MR_MAX_DIMS] = {0}, start[MR_MAX_DIMS] = {0};
  bool padded = false;
  for (int k = 0; k < x->ndim; k++) {
    if (pads[2 * k] < 0 || pads[2 * k + 1] < 0)
      return mr_error(ctx, MR_EINVAL, "pad: negative padding (%lld before, %lld after) on dim %d",
                      (long long)pads[2 * k], (long long)pads[2 * k + 1], k);
    start[k] = pads[2 * k];
    shape[k] = x->shape[k] + pads[2 * k] + pads[2 * k + 1];
    padded |= pads[2 * k] || pads[2 * k + 1];
  }
  mr_status st = mr_tensor_empty(ctx, x->dtype, x->ndim, shape, out);
  if (st != MR_OK) return st;
  if (padded) st = mr_tensor_fill(*out, value);
  if (st == MR_OK) {
    mr_tensor v = sub_view(*out, start, x->shape);
    st = mr_tensor_copy(&v, x);
  }
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}
