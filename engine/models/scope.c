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

mr_tensor *mr_scope_empty(mr_scope *s, mr_dtype dtype, int ndim, const int64_t *shape) {
  if (s->st != MR_OK || !shape) return NULL;
  mr_tensor *out = NULL;
  mr_status st = mr_tensor_empty(s->ctx, dtype, ndim, shape, &out);
  return mr_scope_own(s, st, out);
}
