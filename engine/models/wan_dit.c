/* Wan DiT forward pass (wan-architecture.md §2): patch embedding, sinusoidal
   time embedding, six-way modulation, self-attention with q/k RMS norm and
   3-D RoPE, cross-attention (text, plus CLIP tokens for Wan 2.1 i2v), gated
   FFN, head and unpatchify; VACE hints on top.

   The residual stream x is [L, 1, dim] in f32 and the modulation vectors are
   [T, 1, dim] views with T = 1 (one timestep) or T = L (per-token, Wan 2.2),
   so the same broadcasting ops serve both. Every op records into the
   context's command stream; temporaries are freed as soon as they are
   consumed (their bytes serve the next op at once, in stream order). */
#include "models/wan_dit_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* When st is MR_OK, moves *y into *x (freeing the old *x); returns st. */
static mr_status swap_in(mr_status st, mr_tensor **x, mr_tensor **y) {
  if (st == MR_OK) {
    mr_tensor_free(*x);
    *x = *y;
    *y = NULL;
  }
  return st;
}

static mr_status linear(const mr_tensor *x, const dit_linear *l, mr_tensor **out) {
  return mr_op_matmul(x, l->w, l->b, out);
}

/* LN(x) * (1 + scale) + shift, LayerNorm without affine. */
static mr_status modulate(const mr_tensor *x, const mr_tensor *shift, const mr_tensor *scale, float eps,
                          mr_tensor **out) {
  mr_tensor *n = NULL, *s1 = NULL, *m = NULL;
  mr_status st = mr_op_layer_norm(x, NULL, NULL, eps, &n);
  if (st == MR_OK) st = mr_op_scale(scale, 1.0f, 1.0f, &s1);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_MUL, n, s1, &m);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, m, shift, out);
  mr_tensor_free(n);
  mr_tensor_free(s1);
  mr_tensor_free(m);
  return st;
}

/* x += y * gate (gate NULL: plain residual). */
static mr_status residual(mr_tensor **x, const mr_tensor *y, const mr_tensor *gate) {
  mr_tensor *g = NULL, *s = NULL;
  mr_status st = MR_OK;
  if (gate) st = mr_op_binary(MR_BINARY_MUL, y, gate, &g);
  if (st == MR_OK) st = swap_in(mr_op_binary(MR_BINARY_ADD, *x, gate ? g : y, &s), x, &s);
  mr_tensor_free(g);
  return st;
}

/* [L, 1, dim] -> [1, L, heads, head_dim] (a view; x is contiguous). */
static mr_status split_heads(mr_tensor *x, int heads, mr_tensor **out) {
  int64_t s[4] = {1, mr_tensor_shape(x)[0], heads, mr_tensor_shape(x)[2] / heads};
  return mr_tensor_reshape(x, 4, s, out);
}

/* Linear, then RMS norm over the whole width (all heads together), then heads. */
static mr_status project_normed(const mr_tensor *x, const dit_linear *l, const mr_tensor *norm, float eps, int heads,
                                mr_tensor **out) {
  mr_tensor *p = NULL, *n = NULL;
  mr_status st = linear(x, l, &p);
  if (st == MR_OK) st = norm ? mr_op_rms_norm(p, norm, eps, &n) : MR_OK;
  if (st == MR_OK) st = split_heads(norm ? n : p, heads, out);
  mr_tensor_free(p);
  mr_tensor_free(n);
  return st;
}

/* attention(q, k, v) back to [L, 1, dim]. */
static mr_status attend(const mr_tensor *q, const mr_tensor *k, const mr_tensor *v, mr_tensor **out) {
  mr_tensor *a = NULL;
  mr_status st = mr_op_attention(q, k, v, NULL, &a);
  if (st == MR_OK) {
    const int64_t *s = mr_tensor_shape(a);
    int64_t flat[3] = {s[1], 1, s[2] * s[3]};
    st = mr_tensor_reshape(a, 3, flat, out);
  }
  mr_tensor_free(a);
  return st;
}

/* Rows of the i2v context that the reference's cross-attention treats as
   image tokens. It slices context[:, :Lc - 512] with the T5 length fixed at
   512 (T5_CONTEXT_TOKEN_NUMBER), not the model's text_len, so with
   Python's negative-index slicing a model whose text_len is not 512 splits at
   2*Lc - 512. For every released model (text_len 512, 257 CLIP tokens) this
   is the CLIP token count. */
static int image_context_rows(const mr_wan_dit_config *c, int64_t clip_rows) {
  int lc = (int)clip_rows + c->text_len;
  int k = lc - 512;
  if (k < 0) k += lc;
  return k < 0 ? 0 : k;
}

typedef struct dit_run {
  mr_wan_dit *d;
  const mr_tensor *context;   /* [Lctx, 1, dim] embedded (image tokens first for i2v) */
  int img_tokens;             /* leading rows of context attended through k_img/v_img */
  const mr_tensor *e0;        /* [T, 6, dim] */
  const mr_tensor *rope_cos, *rope_sin;
} dit_run;

static mr_status self_attention(const dit_run *r, const dit_attn *a, const mr_tensor *h, mr_tensor **out) {
  const mr_wan_dit_config *c = &r->d->cfg;
  mr_tensor *q = NULL, *k = NULL, *v = NULL, *qr = NULL, *kr = NULL, *o = NULL;
  mr_status st = project_normed(h, &a->q, a->norm_q, c->eps, c->num_heads, &q);
  if (st == MR_OK) st = project_normed(h, &a->k, a->norm_k, c->eps, c->num_heads, &k);
  if (st == MR_OK) st = project_normed(h, &a->v, NULL, c->eps, c->num_heads, &v);
  if (st == MR_OK) st = mr_op_rope(q, r->rope_cos, r->rope_sin, &qr);
  if (st == MR_OK) st = mr_op_rope(k, r->rope_cos, r->rope_sin, &kr);
  if (st == MR_OK) st = attend(qr, kr, v, &o);
  if (st == MR_OK) st = linear(o, &a->o, out);
  mr_tensor *ts[] = {q, k, v, qr, kr, o};
  for (int i = 0; i < 6; i++) mr_tensor_free(ts[i]);
  return st;
}

static mr_status cross_attention(const dit_run *r, const dit_attn *a, const mr_tensor *h, mr_tensor **out) {
  const mr_wan_dit_config *c = &r->d->cfg;
  mr_tensor *q = NULL, *k = NULL, *v = NULL, *o = NULL, *img = NULL, *txt = NULL;
  mr_tensor *ki = NULL, *vi = NULL, *oi = NULL, *sum = NULL;
  const mr_tensor *text = r->context;
  mr_status st = MR_OK;
  if (r->img_tokens) { /* Wan 2.1 i2v: image rows first, then the text */
    int64_t n = mr_tensor_shape(r->context)[0];
    st = mr_tensor_slice((mr_tensor *)r->context, 0, 0, r->img_tokens, 1, &img);
    if (st == MR_OK) st = mr_tensor_slice((mr_tensor *)r->context, 0, r->img_tokens, n, 1, &txt);
    text = txt;
  }
  if (st == MR_OK) st = project_normed(h, &a->q, a->norm_q, c->eps, c->num_heads, &q);
  if (st == MR_OK) st = project_normed(text, &a->k, a->norm_k, c->eps, c->num_heads, &k);
  if (st == MR_OK) st = project_normed(text, &a->v, NULL, c->eps, c->num_heads, &v);
  if (st == MR_OK) st = attend(q, k, v, &o);
  if (st == MR_OK && img) {
    st = project_normed(img, &a->k_img, a->norm_k_img, c->eps, c->num_heads, &ki);
    if (st == MR_OK) st = project_normed(img, &a->v_img, NULL, c->eps, c->num_heads, &vi);
    if (st == MR_OK) st = attend(q, ki, vi, &oi);
    if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, o, oi, &sum);
  }
  if (st == MR_OK) st = linear(img ? sum : o, &a->o, out);
  mr_tensor *ts[] = {q, k, v, o, img, txt, ki, vi, oi, sum};
  for (int i = 0; i < 10; i++) mr_tensor_free(ts[i]);
  return st;
}

/* One WanAttentionBlock on *x (updated in place). */
static mr_status block_forward(const dit_run *r, const dit_block *b, mr_tensor **x) {
  const mr_wan_dit_config *c = &r->d->cfg;
  mr_tensor *m = NULL, *chunk[6] = {NULL}, *h = NULL, *y = NULL, *f = NULL;
  mr_status st = mr_op_binary(MR_BINARY_ADD, b->modulation, r->e0, &m); /* [T, 6, dim] */
  for (int i = 0; st == MR_OK && i < 6; i++) st = mr_tensor_slice(m, 1, i, i + 1, 1, &chunk[i]);
  /* chunk: shift_msa, scale_msa, gate_msa, shift_ffn, scale_ffn, gate_ffn */
  if (st == MR_OK) st = modulate(*x, chunk[0], chunk[1], c->eps, &h);
  if (st == MR_OK) st = self_attention(r, &b->self_attn, h, &y);
  if (st == MR_OK) st = residual(x, y, chunk[2]);
  mr_tensor_free(h), h = NULL;
  mr_tensor_free(y), y = NULL;
  if (st == MR_OK) st = mr_op_layer_norm(*x, b->norm3_w, b->norm3_b, c->eps, &h);
  if (st == MR_OK) st = cross_attention(r, &b->cross_attn, h, &y);
  if (st == MR_OK) st = residual(x, y, NULL);
  mr_tensor_free(h), h = NULL;
  mr_tensor_free(y), y = NULL;
  if (st == MR_OK) st = modulate(*x, chunk[3], chunk[4], c->eps, &h);
  if (st == MR_OK) st = linear(h, &b->ffn0, &f);
  if (st == MR_OK) st = swap_in(mr_op_unary(MR_UNARY_GELU_TANH, f, &y), &f, &y);
  if (st == MR_OK) st = linear(f, &b->ffn2, &y);
  if (st == MR_OK) st = residual(x, y, chunk[5]);
  mr_tensor_free(m);
  for (int i = 0; i < 6; i++) mr_tensor_free(chunk[i]);
  mr_tensor_free(h);
  mr_tensor_free(y);
  mr_tensor_free(f);
  return st;
}

/* [C, F, H, W] -> tokens [L, 1, C*ph*pw] in (f, h, w) order, each token's
   values in (c, ph, pw) order: the layout of the Conv3d weight. */
static mr_status patchify(const mr_tensor *x, int ph, int pw, mr_tensor **out) {
  mr_ctx *ctx = mr_tensor_ctx(x);
  const int64_t *s = mr_tensor_shape(x);
  if (mr_tensor_ndim(x) != 4 || s[2] % ph || s[3] % pw) {
    char b[64];
    snprintf(b, sizeof b, "%lldx%lldx%lldx%lld", (long long)s[0], (long long)(mr_tensor_ndim(x) > 1 ? s[1] : 0),
             (long long)(mr_tensor_ndim(x) > 2 ? s[2] : 0), (long long)(mr_tensor_ndim(x) > 3 ? s[3] : 0));
    return mr_error(ctx, MR_EINVAL, "Wan DiT: latent must be [C, F, H, W] with H, W multiples of %d, %d; got %s", ph,
                    pw, b);
  }
  int64_t C = s[0], F = s[1], H2 = s[2] / ph, W2 = s[3] / pw;
  int64_t v5[5] = {C, F * H2, ph, W2, pw}, tok[3] = {F * H2 * W2, 1, C * ph * pw};
  int perm[5] = {1, 3, 0, 2, 4};
  mr_tensor *c = NULL, *v = NULL, *p = NULL, *cont = NULL;
  mr_status st = mr_tensor_contiguous((mr_tensor *)x, &c);
  if (st == MR_OK) st = mr_tensor_reshape(c, 5, v5, &v);
  if (st == MR_OK) st = mr_tensor_permute(v, perm, &p);
  if (st == MR_OK) st = mr_tensor_contiguous(p, &cont);
  if (st == MR_OK) st = mr_tensor_reshape(cont, 3, tok, out);
  mr_tensor_free(c);
  mr_tensor_free(v);
  mr_tensor_free(p);
  mr_tensor_free(cont);
  return st;
}

/* tokens [L, 1, ph*pw*C] (values in (ph, pw, c) order) -> [C, F, H, W]. */
static mr_status unpatchify(const mr_tensor *t, int64_t C, int64_t F, int64_t H2, int64_t W2, int ph, int pw,
                            mr_tensor **out) {
  int64_t v5[5] = {F * H2, W2, ph, pw, C}, o4[4] = {C, F, H2 * ph, W2 * pw};
  int perm[5] = {4, 0, 2, 1, 3};
  mr_tensor *v = NULL, *p = NULL, *cont = NULL;
  mr_status st = mr_tensor_reshape((mr_tensor *)t, 5, v5, &v);
  if (st == MR_OK) st = mr_tensor_permute(v, perm, &p);
  if (st == MR_OK) st = mr_tensor_contiguous(p, &cont);
  if (st == MR_OK) st = mr_tensor_reshape(cont, 4, o4, out);
  mr_tensor_free(v);
  mr_tensor_free(p);
  mr_tensor_free(cont);
  return st;
}

/* Sinusoidal timestep features, cos first, computed in double: [T, freq_dim]. */
static mr_status time_features(mr_ctx *ctx, const float *t, int n, int freq_dim, mr_tensor **out) {
  int half = freq_dim / 2;
  float *buf = malloc((size_t)n * freq_dim * sizeof *buf);
  if (!buf) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < half; j++) {
      double a = (double)t[i] * pow(10000.0, -(double)j / half);
      buf[(size_t)i * freq_dim + j] = (float)cos(a);
      buf[(size_t)i * freq_dim + half + j] = (float)sin(a);
    }
  int64_t s[2] = {n, freq_dim};
  mr_status st = mr_tensor_from_host(ctx, MR_F32, 2, s, MR_F32, buf, out);
  free(buf);
  return st;
}

/* Wan's 3-D RoPE angles per token: of head_dim/2 pairs, the first
   c - 2*(c/3) rotate with the frame index, the next c/3 with the row, the
   last c/3 with the column; each axis with frequencies 10000^(-2k/D_axis). */
static mr_status rope_tables(mr_ctx *ctx, int64_t F, int64_t H, int64_t W, int head_dim, mr_tensor **cos_out,
                             mr_tensor **sin_out) {
  int c = head_dim / 2, nh = c / 3, nt = c - 2 * nh;
  int64_t L = F * H * W;
  float *cs = malloc((size_t)L * c * sizeof *cs), *sn = malloc((size_t)L * c * sizeof *sn);
  if (!cs || !sn) {
    free(cs);
    free(sn);
    return mr_error(ctx, MR_ENOMEM, "out of host memory");
  }
  for (int64_t f = 0; f < F; f++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t w = 0; w < W; w++) {
        int64_t l = (f * H + h) * W + w;
        for (int i = 0; i < c; i++) {
          int64_t pos;
          int k, axis_dim;
          if (i < nt) pos = f, k = i, axis_dim = 2 * nt;
          else if (i < nt + nh) pos = h, k = i - nt, axis_dim = 2 * nh;
          else pos = w, k = i - nt - nh, axis_dim = 2 * nh;
          double angle = (double)pos / pow(10000.0, (double)(2 * k) / axis_dim);
          cs[l * c + i] = (float)cos(angle);
          sn[l * c + i] = (float)sin(angle);
        }
      }
  int64_t s[2] = {L, c};
  mr_status st = mr_tensor_from_host(ctx, MR_F32, 2, s, MR_F32, cs, cos_out);
  if (st == MR_OK) st = mr_tensor_from_host(ctx, MR_F32, 2, s, MR_F32, sn, sin_out);
  free(cs);
  free(sn);
  return st;
}

/* Text states [Lc, text_dim] zero-padded to text_len rows, then the text MLP. */
static mr_status embed_text(mr_wan_dit *d, const mr_tensor *context, mr_tensor **out) {
  const mr_wan_dit_config *c = &d->cfg;
  mr_ctx *ctx = d->ctx;
  const int64_t *s = mr_tensor_shape(context);
  int nd = mr_tensor_ndim(context);
  int64_t rows = nd == 3 && s[0] == 1 ? s[1] : s[0], width = s[nd - 1];
  if ((nd != 2 && !(nd == 3 && s[0] == 1)) || width != c->text_dim || rows > c->text_len)
    return mr_error(ctx, MR_EINVAL, "Wan DiT: context must be [L <= %d, %d], got %d dims with %lld x %lld", c->text_len,
                    c->text_dim, nd, (long long)rows, (long long)width);
  int64_t flat[2] = {rows, width};
  int64_t pads[4] = {0, c->text_len - rows, 0, 0};
  mr_tensor *ctx2 = NULL, *padded = NULL, *h = NULL, *g = NULL;
  mr_status st = mr_tensor_contiguous((mr_tensor *)context, &h);
  if (st == MR_OK) st = mr_tensor_reshape(h, 2, flat, &ctx2);
  if (st == MR_OK) st = mr_op_pad(ctx2, pads, 0.0f, &padded);
  mr_tensor_free(h), h = NULL;
  if (st == MR_OK) st = linear(padded, &d->text0, &h);
  if (st == MR_OK) st = mr_op_unary(MR_UNARY_GELU_TANH, h, &g);
  if (st == MR_OK) st = linear(g, &d->text2, out);
  mr_tensor *ts[] = {ctx2, padded, h, g};
  for (int i = 0; i < 4; i++) mr_tensor_free(ts[i]);
  return st;
}

/* CLIP features through img_emb: LayerNorm, Linear, exact GELU, Linear, LayerNorm. */
static mr_status embed_image(mr_wan_dit *d, const mr_tensor *clip, mr_tensor **out) {
  const mr_wan_dit_config *c = &d->cfg;
  const int64_t *s = mr_tensor_shape(clip);
  int nd = mr_tensor_ndim(clip);
  int64_t rows = nd == 3 ? s[0] * s[1] : s[0];
  /* The CLIP token count is the tower's (257 for ViT-H/14 at 224 px); only
     FLF2V's learned positions fix it. */
  bool fixed = d->img_emb_pos != NULL;
  if ((nd != 2 && nd != 3) || s[nd - 1] != c->img_dim || rows < 1 || (fixed && rows != c->img_tokens)) {
    if (fixed) return mr_error(d->ctx, MR_EINVAL, "Wan DiT: clip_fea must be [%d, %d]", c->img_tokens, c->img_dim);
    return mr_error(d->ctx, MR_EINVAL, "Wan DiT: clip_fea must be [tokens, %d]", c->img_dim);
  }
  int64_t flat[2] = {rows, c->img_dim};
  mr_tensor *x = NULL, *cont = NULL, *a = NULL, *b = NULL;
  mr_status st = mr_tensor_contiguous((mr_tensor *)clip, &cont);
  if (st == MR_OK) st = mr_tensor_reshape(cont, 2, flat, &x);
  if (st == MR_OK && d->img_emb_pos) { /* FLF2V: learned positions of the two frames' tokens */
    int64_t ep[2] = {rows, c->img_dim};
    mr_tensor *pos = NULL;
    st = mr_tensor_reshape(d->img_emb_pos, 2, ep, &pos);
    if (st == MR_OK) st = swap_in(mr_op_binary(MR_BINARY_ADD, x, pos, &a), &x, &a);
    mr_tensor_free(pos);
  }
  if (st == MR_OK) st = mr_op_layer_norm(x, d->img_norm0_w, d->img_norm0_b, 1e-5f, &a);
  if (st == MR_OK) st = linear(a, &d->img1, &b);
  if (st == MR_OK) st = swap_in(mr_op_unary(MR_UNARY_GELU, b, &a), &b, &a);
  if (st == MR_OK) st = linear(b, &d->img3, &a);
  if (st == MR_OK) st = mr_op_layer_norm(a, d->img_norm4_w, d->img_norm4_b, 1e-5f, out);
  mr_tensor *ts[] = {x, cont, a, b};
  for (int i = 0; i < 4; i++) mr_tensor_free(ts[i]);
  return st;
}

mr_status mr_wan_dit_forward(mr_wan_dit *d, const mr_wan_dit_input *in, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = d->ctx;
  const mr_wan_dit_config *c = &d->cfg;
  if (!in || !in->x || !in->context) return mr_error(ctx, MR_EINVAL, "Wan DiT: x and context are required");
  if (c->img_dim && !in->clip_fea) return mr_error(ctx, MR_EINVAL, "Wan DiT (%s): clip_fea is required", c->model_type);
  const int64_t *xs = mr_tensor_shape(in->x);
  if (mr_tensor_ndim(in->x) != 4) return mr_error(ctx, MR_EINVAL, "Wan DiT: x must be [C, F, H, W]");
  int64_t F = xs[1], H2 = xs[2] / c->patch[1], W2 = xs[3] / c->patch[2], L = F * H2 * W2;
  int64_t cond = in->y ? mr_tensor_shape(in->y)[0] : 0;
  if (xs[0] + cond != c->in_dim)
    return mr_error(ctx, MR_EINVAL, "Wan DiT: x has %lld channels%s%lld; the model takes %d", (long long)xs[0],
                    in->y ? " plus y's " : "", (long long)cond, c->in_dim);
  if (in->t_tokens && in->n_t_tokens != L)
    return mr_error(ctx, MR_EINVAL, "Wan DiT: %d per-token timesteps for %lld tokens", in->n_t_tokens, (long long)L);
  if (in->vace_context && !c->n_vace_layers)
    return mr_error(ctx, MR_EINVAL, "Wan DiT (%s): vace_context given to a model without VACE blocks", c->model_type);

  mr_tensor *xin = NULL, *x = NULL, *tf = NULL, *e = NULL, *e0 = NULL, *ctx_txt = NULL, *ctx_img = NULL,
            *ctx_all = NULL, *rc = NULL, *rs = NULL, *tmp = NULL, *y = NULL, **hints = NULL, *vc = NULL;
  mr_status st = MR_OK;

  /* tokens */
  if (in->y) {
    mr_tensor *parts[2] = {(mr_tensor *)in->x, (mr_tensor *)in->y};
    st = mr_op_concat(parts, 2, 0, &xin);
  }
  if (st == MR_OK) st = patchify(in->y ? xin : in->x, c->patch[1], c->patch[2], &tmp);
  if (st == MR_OK) st = linear(tmp, &d->patch, &x);
  mr_tensor_free(tmp), tmp = NULL;

  /* time: e [T, 1, dim] and e0 [T, 6, dim] */
  float t1 = in->t;
  int T = in->t_tokens ? (int)L : 1;
  if (st == MR_OK) st = time_features(ctx, in->t_tokens ? in->t_tokens : &t1, T, c->freq_dim, &tf);
  if (st == MR_OK) st = linear(tf, &d->time0, &tmp);
  if (st == MR_OK) st = swap_in(mr_op_unary(MR_UNARY_SILU, tmp, &y), &tmp, &y);
  if (st == MR_OK) st = linear(tmp, &d->time2, &e);
  mr_tensor_free(tmp), tmp = NULL;
  if (st == MR_OK) st = mr_op_unary(MR_UNARY_SILU, e, &tmp);
  if (st == MR_OK) st = linear(tmp, &d->time_proj, &y);
  if (st == MR_OK) {
    int64_t s6[3] = {T, 6, c->dim}, s1[3] = {T, 1, c->dim};
    st = mr_tensor_reshape(y, 3, s6, &e0);
    if (st == MR_OK) st = swap_in(mr_tensor_reshape(e, 3, s1, &tmp), &e, &tmp);
    tmp = NULL;
  }
  mr_tensor_free(y), y = NULL;

  /* context: [img tokens;] text tokens, as [Lctx, 1, dim] */
  if (st == MR_OK) st = embed_text(d, in->context, &ctx_txt);
  if (st == MR_OK && c->img_dim) {
    st = embed_image(d, in->clip_fea, &ctx_img);
    mr_tensor *parts[2] = {ctx_img, ctx_txt};
    if (st == MR_OK) st = mr_op_concat(parts, 2, 0, &tmp);
  }
  if (st == MR_OK) {
    mr_tensor *src = c->img_dim ? tmp : ctx_txt;
    int64_t s3[3] = {mr_tensor_shape(src)[0], 1, c->dim};
    st = mr_tensor_reshape(src, 3, s3, &ctx_all);
  }
  mr_tensor_free(tmp), tmp = NULL;
  if (st == MR_OK) st = rope_tables(ctx, F, H2, W2, c->dim / c->num_heads, &rc, &rs);
  int64_t clip_rows = c->img_dim ? mr_tensor_numel(in->clip_fea) / c->img_dim : 0;
  dit_run run = {.d = d, .context = ctx_all, .img_tokens = c->img_dim ? image_context_rows(c, clip_rows) : 0, .e0 = e0,
                 .rope_cos = rc, .rope_sin = rs};

  /* VACE hints come from their own blocks over the embedded context plus x. */
  if (st == MR_OK && in->vace_context) {
    if (!(hints = calloc((size_t)c->n_vace_layers, sizeof *hints))) st = mr_error(ctx, MR_ENOMEM, "out of host memory");
    const int64_t *vs = mr_tensor_shape(in->vace_context);
    if (st == MR_OK && (mr_tensor_ndim(in->vace_context) != 4 || vs[0] != c->vace_in_dim || vs[1] != F ||
                        vs[2] != xs[2] || vs[3] != xs[3]))
      st = mr_error(ctx, MR_EINVAL, "Wan DiT: vace_context must be [%d, %lld, %lld, %lld]", c->vace_in_dim,
                    (long long)F, (long long)xs[2], (long long)xs[3]);
    if (st == MR_OK) st = patchify(in->vace_context, c->patch[1], c->patch[2], &tmp);
    if (st == MR_OK) st = linear(tmp, &d->vace_patch, &vc);
    mr_tensor_free(tmp), tmp = NULL;
    if (st == MR_OK) st = swap_in(linear(vc, &d->vace_blocks[0].before_proj, &tmp), &vc, &tmp);
    if (st == MR_OK) st = residual(&vc, x, NULL);
    for (int i = 0; st == MR_OK && i < c->n_vace_layers; i++) {
      st = block_forward(&run, &d->vace_blocks[i], &vc);
      if (st == MR_OK) st = linear(vc, &d->vace_blocks[i].after_proj, &tmp);
      if (st == MR_OK) st = mr_op_scale(tmp, in->vace_scale, 0.0f, &hints[i]);
      mr_tensor_free(tmp), tmp = NULL;
    }
  }

  for (int i = 0; st == MR_OK && i < c->num_layers; i++) {
    st = block_forward(&run, &d->blocks[i], &x);
    for (int n = 0; st == MR_OK && hints && n < c->n_vace_layers; n++)
      if (c->vace_layers[n] == i) st = residual(&x, hints[n], NULL);
  }

  /* head: shift, scale = head.modulation + e */
  if (st == MR_OK) {
    mr_tensor *m = NULL, *shift = NULL, *scale = NULL, *h = NULL;
    st = mr_op_binary(MR_BINARY_ADD, d->head_modulation, e, &m); /* [T, 2, dim] */
    if (st == MR_OK) st = mr_tensor_slice(m, 1, 0, 1, 1, &shift);
    if (st == MR_OK) st = mr_tensor_slice(m, 1, 1, 2, 1, &scale);
    if (st == MR_OK) st = modulate(x, shift, scale, c->eps, &h);
    if (st == MR_OK) st = linear(h, &d->head, &tmp);
    if (st == MR_OK) st = unpatchify(tmp, c->out_dim, F, H2, W2, c->patch[1], c->patch[2], out);
    mr_tensor_free(m);
    mr_tensor_free(shift);
    mr_tensor_free(scale);
    mr_tensor_free(h);
    mr_tensor_free(tmp), tmp = NULL;
  }
  if (hints)
    for (int i = 0; i < c->n_vace_layers; i++) mr_tensor_free(hints[i]);
  free(hints);
  mr_tensor *ts[] = {xin, x, tf, e, e0, ctx_txt, ctx_img, ctx_all, rc, rs, vc};
  for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) mr_tensor_free(ts[i]);
  return st;
}
