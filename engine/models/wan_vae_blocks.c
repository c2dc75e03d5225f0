/* The Wan VAE's building blocks, run one chunk of frames at a time.

   Chunked causal execution (docs/wan-architecture.md §3.1): every causal conv
   with a temporal kernel keeps the last VAE_CACHE_T frames of its input and
   puts them in front of the next chunk, in place of that many zero frames.
   Keeping the last frames of cat(cache, chunk) gives exactly the reference's
   rule (a 1-frame chunk keeps [last cached frame, this frame]), so a chunked
   run equals one run over the whole sequence with 2 zero frames in front.
   The two resamples with a time_conv have their own first-chunk rules.

   The cache tensors live across chunks, so the coder owns them, never the
   scope: each is a copy taken out of the scope (mr_scope_disown) and freed
   by the coder when the next chunk replaces it or at mr_vae_coder_reset. */
#include "models/wan_vae.h"

#include <math.h>
#include <string.h>

#define VAE_NORM_EPS 1e-12f

void mr_vae_coder_reset(vae_coder *cd) {
  for (int i = 0; i < cd->ncache; i++) {
    mr_tensor_free(cd->cache[i]);
    cd->cache[i] = NULL;
  }
  for (int i = 0; i < cd->nstate; i++) cd->state[i] = VAE_FIRST;
}

/* [C, Ta + Tb, H, W]: the cached frames a (NULL: none) in front of b. */
static mr_tensor *cat_time(mr_scope *s, const mr_tensor *a, const mr_tensor *b) {
  return a ? sc_concat(s, (const mr_tensor *[]){a, b}, 2, 1) : (mr_tensor *)b;
}

/* The cache's next content: a copy of the last n frames of x (fewer if x is
   shorter), handed to the coder. A copy, so it pins none of x's storage. */
static mr_tensor *cache_tail(mr_scope *s, const mr_tensor *x, int64_t n) {
  if (!x) return NULL;
  int64_t T = mr_tensor_shape(x)[1];
  return mr_scope_disown(s, sc_cast(s, sc_slice(s, x, 1, T > n ? T - n : 0, T), mr_tensor_dtype(x)));
}

/* Puts keep (the coder's, or NULL after an error) in the slot and frees the
   previous content: the convs that read it are recorded already, and frees
   are ordered after the recorded work. */
static void cache_set(mr_tensor **slot, mr_tensor *keep) {
  mr_tensor_free(*slot);
  *slot = keep;
}

mr_tensor *mr_vae_conv_plain(mr_scope *s, const vae_conv *cv, const mr_tensor *x) {
  if (!cv->w || mr_tensor_ndim(cv->w) == 5) return sc_conv3d(s, x, cv->w, cv->b, cv->stride, cv->pad);
  const int64_t *w = mr_tensor_shape(cv->w); /* a Conv2d's [O, C, kh, kw] as kt = 1 */
  size_t mark = mr_scope_mark(s);
  mr_tensor *w5 = sc_reshape(s, cv->w, 5, (int64_t[]){w[0], w[1], 1, w[2], w[3]});
  return mr_scope_collect(s, mark, sc_conv3d(s, x, w5, cv->b, cv->stride, cv->pad), NULL);
}

mr_tensor *mr_vae_causal_conv(mr_scope *s, vae_coder *cd, const vae_conv *cv, const mr_tensor *x) {
  if (cv->cache < 0) return mr_vae_conv_plain(s, cv, x);
  mr_tensor **slot = &cd->cache[cv->cache];
  int pad[6];
  memcpy(pad, cv->pad, sizeof pad);
  if (*slot) pad[0] -= (int)mr_tensor_shape(*slot)[1]; /* cached frames replace front zeros */
  MR_ASSERT(pad[0] >= 0);
  size_t mark = mr_scope_mark(s);
  mr_tensor *in = cat_time(s, *slot, x);
  mr_tensor *keep = cache_tail(s, in, VAE_CACHE_T);
  mr_tensor *y = sc_conv3d(s, in, cv->w, cv->b, cv->stride, pad);
  cache_set(slot, keep);
  return mr_scope_collect(s, mark, y, NULL);
}

mr_tensor *mr_vae_norm_silu(mr_scope *s, const mr_tensor *x, const mr_tensor *gamma) {
  return sc_channel_rms_norm_silu(s, x, gamma, VAE_NORM_EPS);
}

/* shortcut(x) + residual(x), residual = norm, SiLU, conv, norm, SiLU, (dropout 0), conv;
   each step's input is freed once the step is recorded. */
mr_tensor *mr_vae_resblock_forward(mr_scope *s, vae_coder *cd, const vae_resblock *rb, const mr_tensor *x) {
  const mr_tensor *h = rb->shortcut.w ? mr_vae_conv_plain(s, &rb->shortcut, x) : x;
  size_t mark = mr_scope_mark(s);
  mr_tensor *r = mr_vae_causal_conv(s, cd, &rb->c1, mr_vae_norm_silu(s, x, rb->g1));
  r = mr_scope_collect(s, mark, mr_vae_norm_silu(s, r, rb->g2), NULL);
  r = mr_scope_collect(s, mark, mr_vae_causal_conv(s, cd, &rb->c2, r), NULL);
  return sc_add(s, r, h);
}

/* Single-head attention over the H*W positions of each frame, composed from
   batched matmuls and a softmax (the channel counts of the released VAEs,
   384 to 1024, are past mr_op_attention's head size). */
mr_tensor *mr_vae_attn_forward(mr_scope *s, const vae_attn *at, const mr_tensor *x) {
  if (!x) return NULL;
  const int64_t *xs = mr_tensor_shape(x);
  int64_t C = xs[0], T = xs[1], L = xs[2] * xs[3];
  size_t mark = mr_scope_mark(s);
  mr_tensor *qkv = sc_reshape(s, mr_vae_conv_plain(s, &at->qkv, sc_channel_rms_norm(s, x, at->g, VAE_NORM_EPS)), 4,
                              (int64_t[]){3, C, T, L});
  const int tlc[3] = {1, 2, 0}, tcl[3] = {1, 0, 2};
  int64_t s3[3] = {C, T, L};
  mr_tensor *q = sc_permute(s, sc_reshape(s, sc_slice(s, qkv, 0, 0, 1), 3, s3), tlc); /* [T, L, C] */
  mr_tensor *k = sc_permute(s, sc_reshape(s, sc_slice(s, qkv, 0, 1, 2), 3, s3), tlc); /* [T, L, C] */
  mr_tensor *v = sc_permute(s, sc_reshape(s, sc_slice(s, qkv, 0, 2, 3), 3, s3), tcl); /* [T, C, L] */
  /* o = softmax(q kᵀ / √C) v; the [T, L, L] scores go once the softmax has read them */
  size_t scores = mr_scope_mark(s);
  mr_tensor *p = sc_softmax(s, sc_linear(s, sc_scale(s, q, 1.0f / sqrtf((float)C), 0.0f), k, NULL), -1);
  p = mr_scope_collect(s, scores, p, NULL);
  mr_tensor *o = sc_linear(s, p, v, NULL);
  mr_tensor *proj = sc_linear(s, o, sc_reshape(s, at->proj.w, 2, (int64_t[]){C, C}), at->proj.b); /* [T, L, C] */
  mr_tensor *y = sc_add(s, sc_permute(s, proj, (const int[3]){2, 0, 1}), sc_reshape(s, x, 3, s3));
  return mr_scope_collect(s, mark, sc_reshape(s, y, 4, xs), NULL);
}

/* [2C, T, H, W] -> [C, 2T, H, W]: channels [0, C) become frame 2i, [C, 2C) frame 2i + 1. */
static mr_tensor *interleave_time(mr_scope *s, const mr_tensor *t) {
  if (!t) return NULL;
  const int64_t *ts = mr_tensor_shape(t);
  int64_t C = ts[0] / 2, T = ts[1], H = ts[2], W = ts[3];
  mr_tensor *r = sc_permute(s, sc_reshape(s, t, 4, (int64_t[]){2, C, T, H * W}), (const int[4]){1, 2, 0, 3});
  return sc_reshape(s, sc_contiguous(s, r), 4, (int64_t[]){C, 2 * T, H, W});
}

mr_tensor *mr_vae_resample_forward(mr_scope *s, vae_coder *cd, const vae_resample *rs, const mr_tensor *x) {
  size_t mark = mr_scope_mark(s);
  const mr_tensor *y = x;
  switch (rs->mode) {
  case VAE_DOWN2D:
    return mr_vae_conv_plain(s, &rs->conv, x);
  case VAE_DOWN3D: {
    /* First chunk: time_conv skipped, the frame passes and is kept. Later:
       time_conv (stride 2, no padding) over [last kept frame, chunk]. */
    mr_tensor **slot = &cd->cache[rs->time.cache];
    int *state = &cd->state[rs->state];
    mr_tensor *d = mr_vae_conv_plain(s, &rs->conv, x);
    mr_tensor *keep = cache_tail(s, d, 1);
    if (*state != VAE_FIRST) d = mr_vae_conv_plain(s, &rs->time, cat_time(s, *slot, d));
    *state = VAE_NORMAL;
    cache_set(slot, keep);
    return mr_scope_collect(s, mark, d, NULL);
  }
  case VAE_UP2D:
    break;
  case VAE_UP3D: {
    /* First chunk: time_conv skipped ("Rep"); the next chunk starts from zero
       padding, later ones from the cache (the generic causal rule). */
    int *state = &cd->state[rs->state];
    if (*state == VAE_FIRST) {
      *state = VAE_REP;
      break;
    }
    y = interleave_time(s, mr_vae_causal_conv(s, cd, &rs->time, x));
    *state = VAE_NORMAL;
    break;
  }
  }
  return mr_scope_collect(s, mark, mr_vae_conv_plain(s, &rs->conv, sc_upsample_nearest(s, y, 2, 2)), NULL);
}
