/* The per-call scope of model code (scope.h). */
#include "models/scope.h"

#include "core/ctx_impl.h"
#include "tensor/tensor_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mr_scope_begin(mr_scope *s, mr_ctx *ctx) { *s = (mr_scope){.ctx = ctx, .st = MR_OK}; }

mr_status mr_scope_end(mr_scope *s, mr_tensor **keep) {
  mr_tensor *k = keep ? *keep : NULL;
  for (size_t i = 0; i < s->n; i++)
    if (s->owned[i] != k || s->st != MR_OK) mr_tensor_free(s->owned[i]);
  if (keep) *keep = s->st == MR_OK ? k : NULL;
  free(s->owned);
  mr_status st = s->st;
  *s = (mr_scope){.ctx = s->ctx, .st = st};
  return st;
}

mr_tensor *mr_scope_own(mr_scope *s, mr_status st, mr_tensor *t) {
  if (s->st != MR_OK) { /* an op is never called after an error; this is a caller's own result */
    mr_tensor_free(t);
    return NULL;
  }
  if (st != MR_OK) {
    mr_tensor_free(t);
    s->st = st;
    return NULL;
  }
  if (!t) return NULL;
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    mr_tensor **o = realloc(s->owned, cap * sizeof *o);
    if (!o) {
      mr_tensor_free(t);
      s->st = mr_error(s->ctx, MR_ENOMEM, "out of host memory");
      return NULL;
    }
    s->owned = o;
    s->cap = cap;
  }
  s->owned[s->n++] = t;
  return t;
}

mr_tensor *mr_scope_fail(mr_scope *s, mr_status st, const char *fmt, ...) {
  if (s->st != MR_OK) return NULL; /* the first error is the one reported */
  va_list ap;
  va_start(ap, fmt);
  char msg[sizeof s->ctx->last_error];
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  s->st = mr_error(s->ctx, st, "%s", msg);
  return NULL;
}

mr_tensor *mr_scope_collect(mr_scope *s, size_t mark, mr_tensor *keep, mr_tensor *prev) {
  if (mark > s->n) mark = s->n;
  if (prev && prev != keep)
    for (size_t i = 0; i < mark; i++)
      if (s->owned[i] == prev) {
        memmove(&s->owned[i], &s->owned[i + 1], (s->n - i - 1) * sizeof *s->owned);
        s->n--;
        mark--;
        mr_tensor_free(prev);
        break;
      }
  size_t w = mark;
  for (size_t i = mark; i < s->n; i++) {
    if (s->owned[i] == keep && s->st == MR_OK) s->owned[w++] = keep;
    else mr_tensor_free(s->owned[i]);
  }
  s->n = w;
  return s->st == MR_OK ? keep : NULL;
}

mr_tensor *mr_scope_disown(mr_scope *s, mr_tensor *t) {
  if (!t || s->st != MR_OK) return NULL;
  for (size_t i = s->n; i-- > 0;)
    if (s->owned[i] == t) {
      memmove(&s->owned[i], &s->owned[i + 1], (s->n - i - 1) * sizeof *s->owned);
      s->n--;
      return t;
    }
  MR_ASSERT(!"mr_scope_disown: not a tensor of this scope");
  return NULL;
}

/* ------------------------------------------------------------ ops, scoped */

/* Each wrapper: skip when the scope has failed or an input is missing (only
   possible after a failure), else call the op and take its result. */
#define SCOPED(s, cond, call)                  \
  do {                                         \
    if ((s)->st != MR_OK || !(cond)) return NULL; \
    mr_tensor *out_ = NULL;                    \
    mr_status st_ = (call);                    \
    return mr_scope_own((s), st_, out_);       \
  } while (0)

mr_tensor *sc_linear(mr_scope *s, const mr_tensor *x, const mr_tensor *w, const mr_tensor *b) {
  SCOPED(s, x && w, mr_op_matmul(x, w, b, &out_));
}
mr_tensor *sc_add(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  SCOPED(s, a && b, mr_op_binary(MR_BINARY_ADD, a, b, &out_));
}
mr_tensor *sc_sub(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  SCOPED(s, a && b, mr_op_binary(MR_BINARY_SUB, a, b, &out_));
}
mr_tensor *sc_mul(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  SCOPED(s, a && b, mr_op_binary(MR_BINARY_MUL, a, b, &out_));
}
mr_tensor *sc_div(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  SCOPED(s, a && b, mr_op_binary(MR_BINARY_DIV, a, b, &out_));
}
mr_tensor *sc_scale(mr_scope *s, const mr_tensor *a, float scale, float bias) {
  SCOPED(s, a, mr_op_scale(a, scale, bias, &out_));
}
mr_tensor *sc_unary(mr_scope *s, mr_unary_op op, const mr_tensor *a) { SCOPED(s, a, mr_op_unary(op, a, &out_)); }
mr_tensor *sc_layer_norm(mr_scope *s, const mr_tensor *x, const mr_tensor *w, const mr_tensor *b, float eps) {
  SCOPED(s, x, mr_op_layer_norm(x, w, b, eps, &out_));
}
mr_tensor *sc_rms_norm(mr_scope *s, const mr_tensor *x, const mr_tensor *w, float eps) {
  SCOPED(s, x, mr_op_rms_norm(x, w, eps, &out_));
}
mr_tensor *sc_attention(mr_scope *s, const mr_tensor *q, const mr_tensor *k, const mr_tensor *v) {
  SCOPED(s, q && k && v, mr_op_attention(q, k, v, NULL, &out_));
}
mr_tensor *sc_rope(mr_scope *s, const mr_tensor *x, const mr_tensor *cos, const mr_tensor *sin) {
  SCOPED(s, x && cos && sin, mr_op_rope(x, cos, sin, &out_));
}
mr_tensor *sc_softmax(mr_scope *s, const mr_tensor *x, int dim) { SCOPED(s, x, mr_op_softmax(x, dim, &out_)); }
mr_tensor *sc_gather_rows(mr_scope *s, const mr_tensor *table, const int32_t *ids, int n) {
  SCOPED(s, table && ids, mr_op_gather_rows(table, ids, n, &out_));
}
mr_tensor *sc_cast(mr_scope *s, const mr_tensor *t, mr_dtype dtype) {
  SCOPED(s, t, mr_tensor_cast((mr_tensor *)t, dtype, &out_));
}
mr_tensor *sc_pad(mr_scope *s, const mr_tensor *x, const int64_t *pads, float value) {
  SCOPED(s, x, mr_op_pad(x, pads, value, &out_));
}
mr_tensor *sc_conv3d(mr_scope *s, const mr_tensor *x, const mr_tensor *w, const mr_tensor *b, const int *stride,
                     const int *pad) {
  SCOPED(s, x && w, mr_op_conv3d(x, w, b, stride, pad, &out_));
}
mr_tensor *sc_upsample_nearest(mr_scope *s, const mr_tensor *x, int fh, int fw) {
  SCOPED(s, x, mr_op_upsample_nearest(x, fh, fw, &out_));
}
mr_tensor *sc_channel_rms_norm(mr_scope *s, const mr_tensor *x, const mr_tensor *gamma, float eps) {
  SCOPED(s, x, mr_op_channel_rms_norm(x, gamma, eps, &out_));
}

mr_tensor *sc_concat(mr_scope *s, const mr_tensor *const *parts, int n, int dim) {
  bool all = true;
  for (int i = 0; i < n; i++) all = all && parts[i];
  SCOPED(s, all, mr_op_concat((mr_tensor *const *)parts, n, dim, &out_));
}

/* Views take a non-const tensor in the public API (they share its storage);
   the scope never writes through them. */
mr_tensor *sc_reshape(mr_scope *s, const mr_tensor *t, int ndim, const int64_t *shape) {
  SCOPED(s, t, mr_tensor_reshape((mr_tensor *)t, ndim, shape, &out_));
}
mr_tensor *sc_slice(mr_scope *s, const mr_tensor *t, int dim, int64_t start, int64_t stop) {
  SCOPED(s, t, mr_tensor_slice((mr_tensor *)t, dim, start, stop, 1, &out_));
}
mr_tensor *sc_slice_step(mr_scope *s, const mr_tensor *t, int dim, int64_t start, int64_t stop, int64_t step) {
  SCOPED(s, t, mr_tensor_slice((mr_tensor *)t, dim, start, stop, step, &out_));
}
mr_tensor *sc_permute(mr_scope *s, const mr_tensor *t, const int *perm) {
  SCOPED(s, t, mr_tensor_permute((mr_tensor *)t, perm, &out_));
}
mr_tensor *sc_contiguous(mr_scope *s, const mr_tensor *t) {
  SCOPED(s, t, mr_tensor_contiguous((mr_tensor *)t, &out_));
}
mr_tensor *sc_from_host(mr_scope *s, int ndim, const int64_t *shape, const float *data) {
  SCOPED(s, data, mr_tensor_from_host(s->ctx, MR_F32, ndim, shape, MR_F32, data, &out_));
}
mr_tensor *sc_empty(mr_scope *s, mr_dtype dtype, int ndim, const int64_t *shape) {
  SCOPED(s, shape, mr_tensor_empty(s->ctx, dtype, ndim, shape, &out_));
}
void sc_copy(mr_scope *s, mr_tensor *dst, const mr_tensor *src) {
  if (s->st == MR_OK && dst && src) mr_scope_own(s, mr_tensor_copy(dst, src), NULL);
}
