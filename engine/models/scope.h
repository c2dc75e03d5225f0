/* A per-call scope for model code: it owns every temporary a forward makes
   and keeps the first error (sticky, like ferror), so a block reads like the
   reference's Python:

     h = modulate(s, x, shift, scale);
     x = sc_mul_add(s, self_attention(s, b, h), gate, 0.0f, x);   // x + attn(h) * gate

   Every sc_* op returns a tensor the scope owns, or NULL once any call in the
   scope has failed (then it does no work). Inputs are borrowed and may be NULL
   after an error. mr_scope_collect frees a step's temporaries as soon as the
   step is done (a DiT block, a VAE chunk), so memory holds one step's worth;
   mr_scope_end frees the rest and returns the first error. Engine-internal. */
#ifndef MR_SCOPE_H
#define MR_SCOPE_H

#include "core/core.h"

typedef struct mr_scope {
  mr_ctx *ctx;
  mr_status st;        /* the first error, MR_OK until one */
  mr_tensor **owned;   /* in order of creation */
  size_t n, cap;
} mr_scope;

void mr_scope_begin(mr_scope *s, mr_ctx *ctx);
/* Frees every owned tensor except *keep (when keep is not NULL), which is
   handed to the caller; on an error *keep is freed too and set to NULL.
   Returns the first error. */
mr_status mr_scope_end(mr_scope *s, mr_tensor **keep);

/* Takes ownership of t as the result of a call that returned st. Returns t,
   or NULL when st (or an earlier call) failed. */
mr_tensor *mr_scope_own(mr_scope *s, mr_status st, mr_tensor *t);
/* Records an error found by model code itself (a bad shape): a message in
   the context, then every later op is skipped. Returns NULL. */
mr_tensor *mr_scope_fail(mr_scope *s, mr_status st, const char *fmt, ...) MR_PRINTF(3, 4);
/* True until a call in the scope fails. */
static inline bool mr_scope_ok(const mr_scope *s) { return s->st == MR_OK; }

/* The position to collect back to: temporaries made after it. */
static inline size_t mr_scope_mark(const mr_scope *s) { return s->n; }
/* Frees every tensor owned since mark except keep, and also prev (an older
   owned tensor that keep replaces, e.g. the residual stream before a block;
   may be NULL or unowned, then it is left alone). Returns keep. */
mr_tensor *mr_scope_collect(mr_scope *s, size_t mark, mr_tensor *keep, mr_tensor *prev);
/* Hands t to the caller, who frees it: state that outlives the scope (the
   VAE's causal caches). Take it out before the next mark (a mark taken
   after t was made would shift). Returns t, or NULL once the scope has
   failed (then the scope still frees it). */
mr_tensor *mr_scope_disown(mr_scope *s, mr_tensor *t);

/* ------------------------------------------------------------ ops, scoped */

/* Inline so the scope adds no exported names; each wrapper skips the call
   when the scope has failed or an input is missing (only possible after a
   failure), else calls the op and takes its result. */
#define MR_SCOPED(s, cond, call)                  \
  do {                                            \
    if ((s)->st != MR_OK || !(cond)) return NULL; \
    mr_tensor *out_ = NULL;                       \
    mr_status st_ = (call);                       \
    return mr_scope_own((s), st_, out_);          \
  } while (0)

static inline mr_tensor *sc_linear(mr_scope *s, const mr_tensor *x, const mr_tensor *w, const mr_tensor *b) {
  MR_SCOPED(s, x && w, mr_op_matmul(x, w, b, &out_));
}
static inline mr_tensor *sc_add(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  MR_SCOPED(s, a && b, mr_op_binary(MR_BINARY_ADD, a, b, &out_));
}
static inline mr_tensor *sc_sub(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  MR_SCOPED(s, a && b, mr_op_binary(MR_BINARY_SUB, a, b, &out_));
}
static inline mr_tensor *sc_mul(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  MR_SCOPED(s, a && b, mr_op_binary(MR_BINARY_MUL, a, b, &out_));
}
static inline mr_tensor *sc_mul_add(mr_scope *s, const mr_tensor *a, const mr_tensor *b, float beta, const mr_tensor *c) {
  MR_SCOPED(s, a && b && c, mr_op_mul_add(a, b, beta, c, &out_));
}
static inline mr_tensor *sc_scale(mr_scope *s, const mr_tensor *a, float scale, float bias) {
  MR_SCOPED(s, a, mr_op_scale(a, scale, bias, &out_));
}
static inline mr_tensor *sc_unary(mr_scope *s, mr_unary_op op, const mr_tensor *a) { MR_SCOPED(s, a, mr_op_unary(op, a, &out_)); }
static inline mr_tensor *sc_layer_norm(mr_scope *s, const mr_tensor *x, const mr_tensor *w, const mr_tensor *b, float eps) {
  MR_SCOPED(s, x, mr_op_layer_norm(x, w, b, eps, &out_));
}
static inline mr_tensor *sc_rms_norm(mr_scope *s, const mr_tensor *x, const mr_tensor *w, float eps) {
  MR_SCOPED(s, x, mr_op_rms_norm(x, w, eps, &out_));
}
static inline mr_tensor *sc_attention(mr_scope *s, const mr_tensor *q, const mr_tensor *k, const mr_tensor *v) {
  MR_SCOPED(s, q && k && v, mr_op_attention(q, k, v, NULL, &out_));
}
static inline mr_tensor *sc_rope(mr_scope *s, const mr_tensor *x, const mr_tensor *cos, const mr_tensor *sin) {
  MR_SCOPED(s, x && cos && sin, mr_op_rope(x, cos, sin, &out_));
}
static inline mr_tensor *sc_softmax(mr_scope *s, const mr_tensor *x, int dim) { MR_SCOPED(s, x, mr_op_softmax(x, dim, &out_)); }
static inline mr_tensor *sc_gather_rows(mr_scope *s, const mr_tensor *table, const int32_t *ids, int n) {
  MR_SCOPED(s, table && ids, mr_op_gather_rows(table, ids, n, &out_));
}
static inline mr_tensor *sc_cast(mr_scope *s, const mr_tensor *t, mr_dtype dtype) {
  MR_SCOPED(s, t, mr_tensor_cast((mr_tensor *)t, dtype, &out_));
}
static inline mr_tensor *sc_pad(mr_scope *s, const mr_tensor *x, const int64_t *pads, float value) {
  MR_SCOPED(s, x, mr_op_pad(x, pads, value, &out_));
}

static inline mr_tensor *sc_concat(mr_scope *s, const mr_tensor *const *parts, int n, int dim) {
  bool all = true;
  for (int i = 0; i < n; i++) all = all && parts[i];
  MR_SCOPED(s, all, mr_op_concat((mr_tensor *const *)parts, n, dim, &out_));
}

/* Views take a non-const tensor in the public API (they share its storage);
   the scope never writes through them. */
static inline mr_tensor *sc_reshape(mr_scope *s, const mr_tensor *t, int ndim, const int64_t *shape) {
  MR_SCOPED(s, t, mr_tensor_reshape((mr_tensor *)t, ndim, shape, &out_));
}
static inline mr_tensor *sc_slice(mr_scope *s, const mr_tensor *t, int dim, int64_t start, int64_t stop) {
  MR_SCOPED(s, t, mr_tensor_slice((mr_tensor *)t, dim, start, stop, 1, &out_));
}
static inline mr_tensor *sc_permute(mr_scope *s, const mr_tensor *t, const int *perm) {
  MR_SCOPED(s, t, mr_tensor_permute((mr_tensor *)t, perm, &out_));
}
static inline mr_tensor *sc_contiguous(mr_scope *s, const mr_tensor *t) {
  MR_SCOPED(s, t, mr_tensor_contiguous((mr_tensor *)t, &out_));
}
static inline mr_tensor *sc_from_host(mr_scope *s, int ndim, const int64_t *shape, const float *data) {
  MR_SCOPED(s, data, mr_tensor_from_host(s->ctx, MR_F32, ndim, shape, MR_F32, data, &out_));
}
static inline mr_tensor *sc_div(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  MR_SCOPED(s, a && b, mr_op_binary(MR_BINARY_DIV, a, b, &out_));
}
static inline mr_tensor *sc_conv3d(mr_scope *s, const mr_tensor *x, const mr_tensor *w, const mr_tensor *b,
                                   const int *stride, const int *pad) {
  MR_SCOPED(s, x && w, mr_op_conv3d(x, w, b, stride, pad, &out_));
}
static inline mr_tensor *sc_upsample_nearest(mr_scope *s, const mr_tensor *x, int fh, int fw) {
  MR_SCOPED(s, x, mr_op_upsample_nearest(x, fh, fw, &out_));
}
static inline mr_tensor *sc_channel_rms_norm(mr_scope *s, const mr_tensor *x, const mr_tensor *gamma, float eps) {
  MR_SCOPED(s, x, mr_op_channel_rms_norm(x, gamma, eps, &out_));
}
static inline mr_tensor *sc_channel_rms_norm_silu(mr_scope *s, const mr_tensor *x, const mr_tensor *gamma, float eps) {
  MR_SCOPED(s, x, mr_op_channel_rms_norm_silu(x, gamma, eps, &out_));
}
static inline mr_tensor *sc_slice_step(mr_scope *s, const mr_tensor *t, int dim, int64_t start, int64_t stop,
                                       int64_t step) {
  MR_SCOPED(s, t, mr_tensor_slice((mr_tensor *)t, dim, start, stop, step, &out_));
}
/* A new tensor with uninitialised contents, for a result the caller writes
   whole (by sc_copy into views of it). */
mr_tensor *mr_scope_empty(mr_scope *s, mr_dtype dtype, int ndim, const int64_t *shape);
static inline mr_tensor *sc_empty(mr_scope *s, mr_dtype dtype, int ndim, const int64_t *shape) {
  return mr_scope_empty(s, dtype, ndim, shape);
}
/* dst <- src elementwise; dst is borrowed (a view of a result). */
static inline void sc_copy(mr_scope *s, mr_tensor *dst, const mr_tensor *src) {
  if (s->st == MR_OK && dst && src) mr_scope_own(s, mr_tensor_copy(dst, src), NULL);
}

#endif
