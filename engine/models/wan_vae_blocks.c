/* The Wan VAE's building blocks, run one chunk of frames at a time.

   Chunked causal execution (docs/wan-architecture.md §3.1): every causal conv
   with a temporal kernel keeps the last VAE_CACHE_T frames of its input and
   puts them in front of the next chunk, in place of that many zero frames.
   Keeping the last frames of cat(cache, chunk) gives exactly the reference's
   rule (a 1-frame chunk keeps [last cached frame, this frame]), so a chunked
   run equals one run over the whole sequence with 2 zero frames in front.
   The two resamples with a time_conv have their own first-chunk rules. */
#include "models/wan_vae.h"

#include "tensor/tensor_impl.h"

#include <math.h>
#include <string.h>

#define VAE_NORM_EPS 1e-12f

mr_status vae_cat_time(mr_tensor *a, mr_tensor *b, mr_tensor **out) {
  *out = NULL;
  if (!a || !b) return mr_tensor_contiguous(a ? a : b, out);
  mr_tensor *base = a, *v = NULL;
  int64_t shape[4] = {base->shape[0], a->shape[1] + b->shape[1], base->shape[2], base->shape[3]};
  mr_status st = mr_tensor_empty(base->ctx, b->dtype, 4, shape, out);
  if (st != MR_OK) return st;
  if ((st = mr_tensor_slice(*out, 1, 0, a->shape[1], 1, &v)) == MR_OK) st = mr_tensor_copy(v, a);
  mr_tensor_free(v);
  v = NULL;
  if (st == MR_OK && (st = mr_tensor_slice(*out, 1, a->shape[1], shape[1], 1, &v)) == MR_OK) st = mr_tensor_copy(v, b);
  mr_tensor_free(v);
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status vae_tail_frames(mr_tensor *x, int64_t n, mr_tensor **out) {
  *out = NULL;
  int64_t T = x->shape[1], start = T > n ? T - n : 0;
  mr_tensor *v;
  mr_status st = mr_tensor_slice(x, 1, start, T, 1, &v);
  if (st != MR_OK) return st;
  st = mr_tensor_cast(v, v->dtype, out); /* always a copy: the cache must not pin x's storage */
  mr_tensor_free(v);
  return st;
}

void vae_coder_reset(vae_coder *cd) {
  for (int i = 0; i < cd->ncache; i++) {
    mr_tensor_free(cd->cache[i]);
    cd->cache[i] = NULL;
  }
  for (int i = 0; i < cd->nstate; i++) cd->state[i] = VAE_FIRST;
}

mr_status vae_conv_run(vae_coder *cd, vae_conv *cv, mr_tensor *x, mr_tensor **out) {
  *out = NULL;
  if (cv->cache < 0) return mr_op_conv3d(x, cv->w, cv->b, cv->stride, cv->pad, out);
  mr_tensor **slot = &cd->cache[cv->cache], *xin = NULL, *keep = NULL;
  int pad[6];
  memcpy(pad, cv->pad, sizeof pad);
  if (*slot) pad[0] -= (int)(*slot)->shape[1]; /* cached frames replace front zeros */
  MR_ASSERT(pad[0] >= 0);
  mr_status st = *slot ? vae_cat_time(*slot, x, &xin) : MR_OK;
  if (st != MR_OK) return st;
  mr_tensor *in = xin ? xin : x;
  if ((st = vae_tail_frames(in, VAE_CACHE_T, &keep)) == MR_OK && (st = mr_op_conv3d(in, cv->w, cv->b, cv->stride, pad, out)) == MR_OK) {
    mr_tensor_free(*slot);
    *slot = keep;
    keep = NULL;
  }
  mr_tensor_free(keep);
  mr_tensor_free(xin);
  return st;
}

mr_status vae_norm_silu(mr_tensor *x, mr_tensor *gamma, mr_tensor **out) {
  mr_tensor *n;
  mr_status st = mr_op_channel_rms_norm(x, gamma, VAE_NORM_EPS, &n);
  if (st != MR_OK) {
    *out = NULL;
    return st;
  }
  st = mr_op_unary(MR_UNARY_SILU, n, out);
  mr_tensor_free(n);
  return st;
}

mr_status vae_resblock_run(vae_coder *cd, vae_resblock *rb, mr_tensor *x, mr_tensor **out) {
  *out = NULL;
  mr_tensor *h = NULL, *a = NULL, *b = NULL;
  mr_status st = MR_OK;
  if (rb->shortcut.w && (st = mr_op_conv3d(x, rb->shortcut.w, rb->shortcut.b, NULL, NULL, &h)) != MR_OK) return st;
  if ((st = vae_norm_silu(x, rb->g1, &a)) != MR_OK) goto done;
  st = vae_conv_run(cd, &rb->c1, a, &b);
  mr_tensor_free(a);
  a = NULL;
  if (st != MR_OK) goto done;
  st = vae_norm_silu(b, rb->g2, &a); /* dropout is 0 */
  mr_tensor_free(b);
  b = NULL;
  if (st != MR_OK) goto done;
  if ((st = vae_conv_run(cd, &rb->c2, a, &b)) != MR_OK) goto done;
  st = mr_op_binary(MR_BINARY_ADD, b, h ? h : x, out);
done:
  mr_tensor_free(a);
  mr_tensor_free(b);
  mr_tensor_free(h);
  return st;
}

/* Single-head attention over the H*W positions of each frame, composed from
   batched matmuls and a softmax (the channel counts of the released VAEs,
   384 to 1024, are past mr_op_attention's head size). */
mr_status vae_attn_run(vae_attn *at, mr_tensor *x, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = x->ctx;
  int64_t C = x->shape[0], T = x->shape[1], L = x->shape[2] * x->shape[3];
  mr_tensor *n = NULL, *qkv = NULL, *qkv4 = NULL, *part[3] = {NULL}, *part3[3] = {NULL}, *qt = NULL, *kt = NULL,
            *vt = NULL, *q = NULL, *s = NULL, *p = NULL, *o = NULL, *proj = NULL, *projt = NULL, *x3 = NULL,
            *sum = NULL;
  mr_status st;
  if ((st = mr_op_channel_rms_norm(x, at->g, VAE_NORM_EPS, &n)) != MR_OK) goto done;
  if ((st = mr_op_conv3d(n, at->qkv.w, at->qkv.b, NULL, NULL, &qkv)) != MR_OK) goto done;
  int64_t s4[4] = {3, C, T, L}, s3[3] = {C, T, L};
  if ((st = mr_tensor_reshape(qkv, 4, s4, &qkv4)) != MR_OK) goto done;
  for (int i = 0; i < 3; i++) {
    if ((st = mr_tensor_slice(qkv4, 0, i, i + 1, 1, &part[i])) != MR_OK) goto done;
    if ((st = mr_tensor_reshape(part[i], 3, s3, &part3[i])) != MR_OK) goto done;
  }
  const int tlc[3] = {1, 2, 0}, tcl[3] = {1, 0, 2};
  if ((st = mr_tensor_permute(part3[0], tlc, &qt)) != MR_OK || (st = mr_tensor_permute(part3[1], tlc, &kt)) != MR_OK ||
      (st = mr_tensor_permute(part3[2], tcl, &vt)) != MR_OK)
    goto done;
  /* q [T, L, C] scaled, k [T, L, C], v [T, C, L]: s = q kᵀ, o = softmax(s) v */
  if ((st = mr_op_scale(qt, 1.0f / sqrtf((float)C), 0.0f, &q)) != MR_OK) goto done;
  if ((st = mr_op_matmul(q, kt, NULL, &s)) != MR_OK) goto done;
  if ((st = mr_op_softmax(s, -1, &p)) != MR_OK) goto done;
  mr_tensor_free(s);
  s = NULL;
  if ((st = mr_op_matmul(p, vt, NULL, &o)) != MR_OK) goto done;
  if ((st = mr_op_matmul(o, at->proj_w, at->proj_b, &proj)) != MR_OK) goto done; /* [T, L, C] */
  if ((st = mr_tensor_permute(proj, (const int[3]){2, 0, 1}, &projt)) != MR_OK) goto done;
  if ((st = mr_tensor_reshape(x, 3, s3, &x3)) != MR_OK) goto done;
  if ((st = mr_op_binary(MR_BINARY_ADD, projt, x3, &sum)) != MR_OK) goto done;
  st = mr_tensor_reshape(sum, 4, x->shape, out);
done:
  (void)ctx;
  mr_tensor *all[] = {n, qkv, qkv4, part[0], part[1], part[2], part3[0], part3[1], part3[2], qt, kt, vt, q, s, p, o,
                      proj, projt, x3, sum};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) mr_tensor_free(all[i]);
  return st;
}

/* [2C, T, H, W] -> [C, 2T, H, W]: channels [0, C) become frame 2i, [C, 2C) frame 2i + 1. */
static mr_status interleave_time(mr_tensor *t, mr_tensor **out) {
  *out = NULL;
  int64_t C = t->shape[0] / 2, T = t->shape[1], H = t->shape[2], W = t->shape[3];
  int64_t s4[4] = {2, C, T, H * W}, o4[4] = {C, 2 * T, H, W};
  mr_tensor *r = NULL, *pm = NULL, *c = NULL;
  mr_status st = mr_tensor_reshape(t, 4, s4, &r);
  if (st == MR_OK) st = mr_tensor_permute(r, (const int[4]){1, 2, 0, 3}, &pm);
  if (st == MR_OK) st = mr_tensor_contiguous(pm, &c);
  if (st == MR_OK) st = mr_tensor_reshape(c, 4, o4, out);
  mr_tensor_free(r);
  mr_tensor_free(pm);
  mr_tensor_free(c);
  return st;
}

mr_status vae_resample_run(vae_coder *cd, vae_resample *rs, mr_tensor *x, mr_tensor **out) {
  *out = NULL;
  mr_tensor *y = NULL, *t = NULL, *u = NULL, *xin = NULL, *keep = NULL;
  mr_status st = MR_OK;
  switch (rs->mode) {
  case VAE_DOWN2D:
    return mr_op_conv3d(x, rs->conv.w, rs->conv.b, rs->conv.stride, rs->conv.pad, out);
  case VAE_DOWN3D: {
    /* First chunk: time_conv skipped, the frame passes and is kept. Later:
       time_conv (stride 2, no padding) over [last kept frame, chunk]. */
    if ((st = mr_op_conv3d(x, rs->conv.w, rs->conv.b, rs->conv.stride, rs->conv.pad, &y)) != MR_OK) return st;
    mr_tensor **slot = &cd->cache[rs->time.cache];
    int *state = &cd->state[rs->state];
    if ((st = vae_tail_frames(y, 1, &keep)) != MR_OK) goto done;
    if (*state == VAE_FIRST) {
      *out = y;
      y = NULL;
    } else {
      if ((st = vae_cat_time(*slot, y, &xin)) != MR_OK) goto done;
      if ((st = mr_op_conv3d(xin, rs->time.w, rs->time.b, rs->time.stride, rs->time.pad, out)) != MR_OK) goto done;
    }
    *state = VAE_NORMAL;
    mr_tensor_free(*slot);
    *slot = keep;
    keep = NULL;
    goto done;
  }
  case VAE_UP2D:
    y = x;
    break;
  case VAE_UP3D: {
    /* First chunk: time_conv skipped ("Rep"); the next chunk starts from zero
       padding, later ones from the cache (the generic causal rule). */
    int *state = &cd->state[rs->state];
    if (*state == VAE_FIRST) {
      *state = VAE_REP;
      y = x;
      break;
    }
    if ((st = vae_conv_run(cd, &rs->time, x, &t)) != MR_OK) return st;
    *state = VAE_NORMAL;
    st = interleave_time(t, &y);
    mr_tensor_free(t);
    t = NULL;
    if (st != MR_OK) return st;
    break;
  }
  }
  if ((st = mr_op_upsample_nearest(y, 2, 2, &u)) == MR_OK)
    st = mr_op_conv3d(u, rs->conv.w, rs->conv.b, rs->conv.stride, rs->conv.pad, out);
  if (y == x) y = NULL;
done:
  mr_tensor_free(y);
  mr_tensor_free(t);
  mr_tensor_free(u);
  mr_tensor_free(xin);
  mr_tensor_free(keep);
  return st;
}
