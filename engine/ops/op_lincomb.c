/* Linear combinations of up to MR_LINCOMB_MAX same-shape tensors
   (lincomb.comp): the sampler updates and classifier-free guidance. */
#include "ops/op_common.h"
#include "ops/op_internal.h"

typedef struct lincomb_push {
  uint32_t n, off[MR_LINCOMB_MAX];
  float c[MR_LINCOMB_MAX];
  uint32_t y_off;
} lincomb_push;

static mr_status check_inputs(int n, const mr_tensor *const *xs, mr_dtype dtype) {
  if (n < 1 || n > MR_LINCOMB_MAX || !xs || !xs[0])
    return mr_error(xs && n >= 1 && xs[0] ? xs[0]->ctx : NULL, MR_EINVAL,
                    "lincomb: %d tensors given (1 to %d allowed)", n, MR_LINCOMB_MAX);
  mr_ctx *ctx = xs[0]->ctx;
  if (!mr_dtype_is_storage(dtype))
    return mr_error(ctx, MR_EINVAL, "lincomb: output dtype %s is not a storage dtype", mr_dtype_name(dtype));
  for (int k = 1; k < n; k++) {
    if (!xs[k]) return mr_error(ctx, MR_EINVAL, "lincomb: tensor %d is NULL", k);
    mr_status st = mr_op_same_ctx(xs[0], xs[k], "lincomb");
    if (st != MR_OK) return st;
    bool same = xs[k]->ndim == xs[0]->ndim;
    for (int d = 0; same && d < xs[0]->ndim; d++) same = xs[k]->shape[d] == xs[0]->shape[d];
    if (!same) {
      char s0[64], sk[64];
      return mr_error(ctx, MR_EINVAL, "lincomb: tensor %d has shape %s, tensor 0 has %s", k,
                      mr_shape_str(xs[k]->ndim, xs[k]->shape, sk, sizeof sk),
                      mr_shape_str(xs[0]->ndim, xs[0]->shape, s0, sizeof s0));
    }
  }
  return MR_OK;
}

mr_status mr_op_lincomb_dtype(int n, const mr_tensor *const *xs, const float *coeffs, mr_dtype dtype,
                              mr_tensor **out) {
  *out = NULL;
  mr_status st = check_inputs(n, xs, dtype);
  if (st != MR_OK) return st;
  mr_ctx *ctx = xs[0]->ctx;
  mr_tensor *xc[MR_LINCOMB_MAX] = {NULL};
  /* strided views become contiguous copies (a plain view when already contiguous) */
  for (int k = 0; k < n && st == MR_OK; k++) st = mr_tensor_contiguous((mr_tensor *)xs[k], &xc[k]);
  for (int k = 0; k < n && st == MR_OK; k++) st = mr_tensor_check_index_range(xc[k], "lincomb");
  if (st == MR_OK) st = mr_tensor_empty(ctx, dtype, xs[0]->ndim, xs[0]->shape, out);
  uint64_t count = st == MR_OK ? (uint64_t)mr_tensor_numel(*out) : 0;
  if (st == MR_OK && count > 0) {
    uint32_t spec[7] = {0, 0, 0, 0, (*out)->dtype, (uint32_t)n, MR_ELEMWISE_WG};
    /* one loop dim over the elements; unused slots repeat x0 and the shader skips them */
    mr_split sp = {.ndim = 1, .shape = {(int64_t)count}};
    const int64_t one = 1;
    for (int k = 0; k < MR_LINCOMB_MAX; k++) {
      const mr_tensor *x = xc[k < n ? k : 0];
      spec[k] = x->dtype;
      mr_split_add(&sp, x, false, x->offset, &one, 0);
    }
    mr_split_add(&sp, *out, true, 0, &one, 0);
    mr_pipeline *p;
    if ((st = mr_gpu_pipeline(ctx, "lincomb", MR_LINCOMB_MAX + 1, sizeof(lincomb_push), spec, 7, &p)) == MR_OK)
      st = mr_split_plan(ctx, &sp, "lincomb");
    while (st == MR_OK && mr_split_next(&sp)) {
      lincomb_push pc = {.n = (uint32_t)sp.points, .y_off = (uint32_t)sp.rel[MR_LINCOMB_MAX]};
      for (int k = 0; k < MR_LINCOMB_MAX; k++) {
        pc.off[k] = (uint32_t)sp.rel[k];
        pc.c[k] = k < n ? coeffs[k] : 0.0f;
      }
      st = mr_op_dispatch_1d(ctx, p, sp.bind, MR_LINCOMB_MAX + 1, &pc, (uint64_t)sp.points, "lincomb");
    }
  }
  for (int k = 0; k < n; k++) mr_tensor_free(xc[k]);
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_lincomb(int n, const mr_tensor *const *xs, const float *coeffs, mr_tensor **out) {
  *out = NULL;
  if (n < 1 || n > MR_LINCOMB_MAX || !xs || !xs[0]) return check_inputs(n, xs, MR_F32);
  return mr_op_lincomb_dtype(n, xs, coeffs, xs[0]->dtype, out);
}
