/* Wan DiT forward pass (docs/wan-architecture.md §2): patch embedding, sinusoidal
   time embedding, six-way modulation, self-attention with q/k RMS norm and
   3-D RoPE, cross-attention (text, plus CLIP tokens for Wan 2.1 i2v), gated
   FFN, head and unpatchify; VACE hints on top.

   The residual stream x is [B, L, dim] in f32: B = 1, or one row of the
   batch per context when the same latent runs with several (classifier-free
   guidance in one pass, mr_wan_dit_forward_batch). The modulation vectors
   are [1, T, dim] views with T = 1 (one timestep) or T = L (per-token, Wan
   2.2), so the same broadcasting ops serve every case. Every op records into the
   context's command stream. The forward runs in one scope (models/scope.h)
   that owns its temporaries and keeps the first error; each block's
   temporaries are collected when the block ends, and their bytes serve the
   next block at once. */
#include "models/scope.h"
#include "models/wan_dit_impl.h"
#include "ops/op_internal.h"
#include "tensor/shape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dit_run {
  mr_wan_dit *d;
  const mr_tensor *context;   /* [B, Lctx, dim] embedded (image tokens first for i2v) */
  int img_tokens;             /* leading rows of context attended through k_img/v_img */
  const mr_tensor *e0;        /* [T, 6, dim] */
  const mr_tensor *rope_cos, *rope_sin;
} dit_run;

/* x Wᵀ + b, plus strength·scale·(x Aᵀ)Bᵀ for each adapter applied on the fly. */
static mr_tensor *linear(mr_scope *s, const mr_tensor *x, const dit_linear *l) {
  mr_tensor *y = sc_linear(s, x, l->w, l->b);
  if (!l->loras || !mr_lora_any_on_the_fly(l->loras)) return y;
  const mr_lora *cursor = NULL;
  int entry = 0;
  mr_lora_term t;
  while (mr_lora_term_next(l->loras, l->param, &cursor, &entry, &t))
    y = sc_add(s, y, sc_scale(s, sc_linear(s, sc_linear(s, x, t.a, NULL), t.b, NULL), t.coef, 0.0f));
  return y;
}

/* GELU(linear(x)): the activation in the matmul's kernel when no adapter adds on the fly after it. */
static mr_tensor *linear_gelu(mr_scope *s, const mr_tensor *x, const dit_linear *l) {
  if (l->loras && mr_lora_any_on_the_fly(l->loras)) return sc_unary(s, MR_UNARY_GELU_TANH, linear(s, x, l));
  MR_SCOPED(s, x, mr_op_matmul_act(x, l->w, l->b, MR_MATMUL_ACT_GELU_TANH, MR_MATMUL_AUTO, &out_));
}

/* LN(x) * (1 + scale) + shift, LayerNorm without affine (one pass: mr_op_layer_norm_modulate). */
static mr_tensor *modulate(mr_scope *s, const mr_tensor *x, const mr_tensor *shift, const mr_tensor *scale,
                           float eps) {
  MR_SCOPED(s, x && shift && scale, mr_op_layer_norm_modulate(x, scale, 1.0f, shift, eps, MR_ROWS_AUTO, &out_));
}

/* x + y * gate: the gated residual. */
static mr_tensor *gated(mr_scope *s, const mr_tensor *x, const mr_tensor *y, const mr_tensor *gate) {
  return sc_mul_add(s, y, gate, 0.0f, x);
}

/* Linear, then RMS norm over the whole width (all heads together), then the
   heads as [B, L, heads, head_dim]. */
static mr_tensor *project(mr_scope *s, const mr_tensor *x, const dit_linear *l, const mr_tensor *norm, float eps,
                          int heads) {
  mr_tensor *p = linear(s, x, l);
  if (norm) p = sc_rms_norm(s, p, norm, eps);
  if (!p) return NULL;
  const int64_t *ps = mr_tensor_shape(p);
  int64_t split[4] = {ps[0], ps[1], heads, ps[2] / heads};
  return sc_reshape(s, p, 4, split);
}

/* attention(q, k, v) back to [B, L, dim]. */
static mr_tensor *attend(mr_scope *s, const mr_tensor *q, const mr_tensor *k, const mr_tensor *v) {
  mr_tensor *a = sc_attention(s, q, k, v);
  if (!a) return NULL;
  const int64_t *as = mr_tensor_shape(a);
  int64_t flat[3] = {as[0], as[1], as[2] * as[3]};
  return sc_reshape(s, a, 3, flat);
}

/* project, then RoPE: with the norm, one pass (mr_op_rms_norm_rope). */
static mr_tensor *project_rope(mr_scope *s, const dit_run *r, const mr_tensor *x, const dit_linear *l,
                               const mr_tensor *norm, float eps, int heads) {
  if (!norm) return sc_rope(s, project(s, x, l, NULL, eps, heads), r->rope_cos, r->rope_sin);
  mr_tensor *p = project(s, x, l, NULL, eps, heads);
  MR_SCOPED(s, p, mr_op_rms_norm_rope(p, norm, eps, r->rope_cos, r->rope_sin, &out_));
}

static mr_tensor *self_attention(mr_scope *s, const dit_run *r, const dit_attn *a, const mr_tensor *h) {
  const mr_wan_dit_config *c = &r->d->cfg;
  mr_tensor *q = project_rope(s, r, h, &a->q, a->norm_q, c->eps, c->num_heads);
  mr_tensor *k = project_rope(s, r, h, &a->k, a->norm_k, c->eps, c->num_heads);
  mr_tensor *v = project(s, h, &a->v, NULL, c->eps, c->num_heads);
  return linear(s, attend(s, q, k, v), &a->o);
}

static mr_tensor *cross_attention(mr_scope *s, const dit_run *r, const dit_attn *a, const mr_tensor *h) {
  const mr_wan_dit_config *c = &r->d->cfg;
  const mr_tensor *text = r->context;
  if (r->img_tokens) /* Wan 2.1 i2v: image rows first, then the text */
    text = sc_slice(s, r->context, 1, r->img_tokens, mr_tensor_shape(r->context)[1]);
  mr_tensor *q = project(s, h, &a->q, a->norm_q, c->eps, c->num_heads);
  mr_tensor *k = project(s, text, &a->k, a->norm_k, c->eps, c->num_heads);
  mr_tensor *v = project(s, text, &a->v, NULL, c->eps, c->num_heads);
  mr_tensor *o = attend(s, q, k, v);
  if (r->img_tokens) {
    mr_tensor *img = sc_slice(s, r->context, 1, 0, r->img_tokens);
    mr_tensor *ki = project(s, img, &a->k_img, a->norm_k_img, c->eps, c->num_heads);
    mr_tensor *vi = project(s, img, &a->v_img, NULL, c->eps, c->num_heads);
    o = sc_add(s, o, attend(s, q, ki, vi));
  }
  return linear(s, o, &a->o);
}

/* Row k of modulation vectors e [T, n, dim] as a [1, T, dim] view, which
   broadcasts over the batch and the tokens of x [B, L, dim]. */
static mr_tensor *chunk(mr_scope *s, const mr_tensor *e, int k) {
  return sc_permute(s, sc_slice(s, e, 1, k, k + 1), (int[]){1, 0, 2});
}

/* One WanAttentionBlock: returns the new x. */
static mr_tensor *block_forward(mr_scope *s, const dit_run *r, const dit_block *b, mr_tensor *x) {
  const mr_wan_dit_config *c = &r->d->cfg;
  mr_tensor *e = sc_add(s, b->modulation, r->e0); /* [T, 6, dim] */
  mr_tensor *shift_msa = chunk(s, e, 0), *scale_msa = chunk(s, e, 1), *gate_msa = chunk(s, e, 2);
  mr_tensor *shift_ffn = chunk(s, e, 3), *scale_ffn = chunk(s, e, 4), *gate_ffn = chunk(s, e, 5);

  mr_tensor *y = self_attention(s, r, &b->self_attn, modulate(s, x, shift_msa, scale_msa, c->eps));
  x = gated(s, x, y, gate_msa);
  x = sc_add(s, x, cross_attention(s, r, &b->cross_attn, sc_layer_norm(s, x, b->norm3_w, b->norm3_b, c->eps)));
  y = linear_gelu(s, modulate(s, x, shift_ffn, scale_ffn, c->eps), &b->ffn0);
  y = linear(s, y, &b->ffn2);
  return gated(s, x, y, gate_ffn);
}

/* The patch embedding (a Conv3d with kernel = stride) as a Linear over
   tokens whose values are in (c, pt, ph, pw) order. */
static mr_tensor *embed_patches(mr_scope *s, const mr_tensor *tokens, const dit_linear *l) {
  const int64_t *ws = mr_tensor_shape(l->w);
  int64_t flat[2] = {ws[0], ws[1] * ws[2] * ws[3] * ws[4]};
  return sc_linear(s, tokens, sc_reshape(s, l->w, 2, flat), l->b);
}

/* [C, F, H, W] -> tokens [1, L, C*ph*pw] in (f, h, w) order, each token's
   values in (c, ph, pw) order: the layout of the Conv3d weight. */
static mr_tensor *patchify(mr_scope *s, const mr_tensor *x, int ph, int pw) {
  if (!x) return NULL;
  const int64_t *xs = mr_tensor_shape(x);
  if (mr_tensor_ndim(x) != 4 || xs[2] % ph || xs[3] % pw) {
    char b[96];
    return mr_scope_fail(s, MR_EINVAL, "Wan DiT: latent must be [C, F, H, W] with H, W multiples of %d, %d; got %s",
                         ph, pw, mr_shape_str(mr_tensor_ndim(x), xs, b, sizeof b));
  }
  int64_t C = xs[0], F = xs[1], H2 = xs[2] / ph, W2 = xs[3] / pw;
  int64_t v5[5] = {C, F * H2, ph, W2, pw}, tok[3] = {1, F * H2 * W2, C * ph * pw};
  int perm[5] = {1, 3, 0, 2, 4};
  mr_tensor *v = sc_reshape(s, sc_contiguous(s, x), 5, v5);
  return sc_reshape(s, sc_contiguous(s, sc_permute(s, v, perm)), 3, tok);
}

/* tokens [1, L, ph*pw*C] (values in (ph, pw, c) order) -> [C, F, H, W]. */
static mr_tensor *unpatchify(mr_scope *s, const mr_tensor *t, int64_t C, int64_t F, int64_t H2, int64_t W2, int ph,
                             int pw) {
  int64_t v5[5] = {F * H2, W2, ph, pw, C}, o4[4] = {C, F, H2 * ph, W2 * pw};
  int perm[5] = {4, 0, 2, 1, 3};
  return sc_reshape(s, sc_contiguous(s, sc_permute(s, sc_reshape(s, t, 5, v5), perm)), 4, o4);
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

/* The RoPE tables for a token grid, made on the host once per grid and kept
   by the DiT: every step of a video has the same grid. Borrowed. */
static mr_status rope_for_grid(mr_wan_dit *d, int64_t F, int64_t H, int64_t W, const mr_tensor **cos,
                               const mr_tensor **sin) {
  if (!d->rope.cos || d->rope.f != F || d->rope.h != H || d->rope.w != W) {
    mr_tensor_free(d->rope.cos);
    mr_tensor_free(d->rope.sin);
    d->rope.cos = d->rope.sin = NULL;
    mr_status st = rope_tables(d->ctx, F, H, W, d->cfg.dim / d->cfg.num_heads, &d->rope.cos, &d->rope.sin);
    if (st != MR_OK) {
      mr_tensor_free(d->rope.cos);
      d->rope.cos = NULL;
      return st;
    }
    d->rope.f = F, d->rope.h = H, d->rope.w = W;
  }
  *cos = d->rope.cos;
  *sin = d->rope.sin;
  return MR_OK;
}

/* Each context's text states [Lc, text_dim] zero-padded to text_len rows,
   stacked as [B, text_len, text_dim], then the text MLP. */
static mr_tensor *embed_text(mr_scope *s, mr_wan_dit *d, int n, const mr_tensor *const *contexts) {
  const mr_wan_dit_config *c = &d->cfg;
  mr_tensor *padded[MR_WAN_DIT_MAX_BATCH];
  for (int i = 0; i < n; i++) {
    const int64_t *cs = mr_tensor_shape(contexts[i]);
    int nd = mr_tensor_ndim(contexts[i]);
    int64_t rows = nd == 3 && cs[0] == 1 ? cs[1] : cs[0], width = cs[nd - 1];
    if ((nd != 2 && !(nd == 3 && cs[0] == 1)) || width != c->text_dim || rows > c->text_len) {
      char which[24] = "context";
      if (n > 1) snprintf(which, sizeof which, "context %d of %d", i + 1, n);
      return mr_scope_fail(s, MR_EINVAL, "Wan DiT: %s must be [L <= %d, %d], got %d dims with %lld x %lld", which,
                           c->text_len, c->text_dim, nd, (long long)rows, (long long)width);
    }
    int64_t flat[2] = {rows, width}, pads[4] = {0, c->text_len - rows, 0, 0}, one[3] = {1, c->text_len, width};
    padded[i] = sc_reshape(s, sc_pad(s, sc_reshape(s, sc_contiguous(s, contexts[i]), 2, flat), pads, 0.0f), 3, one);
  }
  mr_tensor *h = n == 1 ? padded[0] : sc_concat(s, (const mr_tensor *const *)padded, n, 0);
  return linear(s, sc_unary(s, MR_UNARY_GELU_TANH, linear(s, h, &d->text0)), &d->text2);
}

/* n copies of t [1, ...] stacked along dim 0 (t itself when n is 1). */
static mr_tensor *repeat_batch(mr_scope *s, mr_tensor *t, int n) {
  if (n == 1) return t;
  const mr_tensor *parts[MR_WAN_DIT_MAX_BATCH];
  for (int i = 0; i < n; i++) parts[i] = t;
  return sc_concat(s, parts, n, 0);
}

/* CLIP features through img_emb: LayerNorm, Linear, exact GELU, Linear, LayerNorm. */
static mr_tensor *embed_image(mr_scope *s, mr_wan_dit *d, const mr_tensor *clip) {
  const mr_wan_dit_config *c = &d->cfg;
  const int64_t *cs = mr_tensor_shape(clip);
  int nd = mr_tensor_ndim(clip);
  int64_t rows = nd == 3 ? cs[0] * cs[1] : cs[0];
  /* The CLIP token count is the tower's (257 for ViT-H/14 at 224 px); only
     FLF2V's learned positions fix it. */
  bool fixed = d->img_emb_pos != NULL;
  if ((nd != 2 && nd != 3) || cs[nd - 1] != c->img_dim || rows < 1 || (fixed && rows != c->img_tokens)) {
    if (fixed) return mr_scope_fail(s, MR_EINVAL, "Wan DiT: clip_fea must be [%d, %d]", c->img_tokens, c->img_dim);
    return mr_scope_fail(s, MR_EINVAL, "Wan DiT: clip_fea must be [tokens, %d]", c->img_dim);
  }
  int64_t flat[2] = {rows, c->img_dim};
  mr_tensor *x = sc_reshape(s, sc_contiguous(s, clip), 2, flat);
  if (fixed) x = sc_add(s, x, sc_reshape(s, d->img_emb_pos, 2, flat));
  x = sc_layer_norm(s, x, d->img_norm0_w, d->img_norm0_b, 1e-5f);
  x = linear(s, sc_unary(s, MR_UNARY_GELU, linear(s, x, &d->img1)), &d->img3);
  return sc_layer_norm(s, x, d->img_norm4_w, d->img_norm4_b, 1e-5f);
}

/* The VACE hints: their own blocks over the embedded context plus x, each
   hint scaled; hints[i] is added after block vace_layers[i]. */
static void vace_hints(mr_scope *s, mr_wan_dit *d, const dit_run *r, const mr_wan_dit_input *in, mr_tensor *x,
                       mr_tensor **hints) {
  const mr_wan_dit_config *c = &d->cfg;
  mr_tensor *vc = embed_patches(s, patchify(s, in->vace_context, c->patch[1], c->patch[2]), &d->vace_patch);
  vc = sc_add(s, linear(s, vc, &d->vace_blocks[0].before_proj), x);
  for (int i = 0; i < c->n_vace_layers; i++) {
    size_t mark = mr_scope_mark(s);
    vc = mr_scope_collect(s, mark, block_forward(s, r, &d->vace_blocks[i], vc), vc);
    hints[i] = sc_scale(s, linear(s, vc, &d->vace_blocks[i].after_proj), in->vace_scale, 0.0f);
  }
}

static mr_status check_input(mr_wan_dit *d, const mr_wan_dit_input *in, int n, const mr_tensor *const *contexts) {
  mr_ctx *ctx = d->ctx;
  const mr_wan_dit_config *c = &d->cfg;
  if (!in || !in->x) return mr_error(ctx, MR_EINVAL, "Wan DiT: x and context are required");
  if (n < 1 || n > MR_WAN_DIT_MAX_BATCH)
    return mr_error(ctx, MR_EINVAL, "Wan DiT: %d contexts in one batch; 1 to %d are allowed", n, MR_WAN_DIT_MAX_BATCH);
  for (int i = 0; i < n; i++)
    if (!contexts[i]) return mr_error(ctx, MR_EINVAL, "Wan DiT: x and context are required");
  if (c->img_dim && !in->clip_fea) return mr_error(ctx, MR_EINVAL, "Wan DiT (%s): clip_fea is required", c->model_type);
  const int64_t *xs = mr_tensor_shape(in->x);
  if (mr_tensor_ndim(in->x) != 4) return mr_error(ctx, MR_EINVAL, "Wan DiT: x must be [C, F, H, W]");
  int64_t L = xs[1] * (xs[2] / c->patch[1]) * (xs[3] / c->patch[2]);
  int64_t cond = in->y ? mr_tensor_shape(in->y)[0] : 0;
  if (xs[0] + cond != c->in_dim)
    return mr_error(ctx, MR_EINVAL, "Wan DiT: x has %lld channels%s%lld; the model takes %d", (long long)xs[0],
                    in->y ? " plus y's " : "", (long long)cond, c->in_dim);
  if (in->t_tokens && in->n_t_tokens != L)
    return mr_error(ctx, MR_EINVAL, "Wan DiT: %d per-token timesteps for %lld tokens", in->n_t_tokens, (long long)L);
  if (in->vace_context && !c->n_vace_layers)
    return mr_error(ctx, MR_EINVAL, "Wan DiT (%s): vace_context given to a model without VACE blocks", c->model_type);
  if (in->vace_context) {
    const int64_t *vs = mr_tensor_shape(in->vace_context);
    if (mr_tensor_ndim(in->vace_context) != 4 || vs[0] != c->vace_in_dim || vs[1] != xs[1] || vs[2] != xs[2] ||
        vs[3] != xs[3])
      return mr_error(ctx, MR_EINVAL, "Wan DiT: vace_context must be [%d, %lld, %lld, %lld]", c->vace_in_dim,
                      (long long)xs[1], (long long)xs[2], (long long)xs[3]);
  }
  return MR_OK;
}

mr_status mr_wan_dit_forward(mr_wan_dit *d, const mr_wan_dit_input *in, mr_tensor **out) {
  *out = NULL;
  return mr_wan_dit_forward_batch(d, in, 1, in ? &in->context : NULL, out);
}

mr_status mr_wan_dit_forward_batch(mr_wan_dit *d, const mr_wan_dit_input *in, int n, const mr_tensor *const *contexts,
                                   mr_tensor **outs) {
  for (int i = 0; i < n; i++) outs[i] = NULL;
  mr_status st = check_input(d, in, n, contexts);
  if (st != MR_OK) return st;
  const mr_wan_dit_config *c = &d->cfg;
  const int64_t *xs = mr_tensor_shape(in->x);
  int64_t F = xs[1], H2 = xs[2] / c->patch[1], W2 = xs[3] / c->patch[2], L = F * H2 * W2;
  mr_scope scope, *s = &scope;
  mr_scope_begin(s, d->ctx);

  /* tokens: the same latent in every row of the batch */
  const mr_tensor *xin = in->x;
  if (in->y) xin = sc_concat(s, (const mr_tensor *[]){in->x, in->y}, 2, 0);
  mr_tensor *x = repeat_batch(s, embed_patches(s, patchify(s, xin, c->patch[1], c->patch[2]), &d->patch), n);

  /* time: e [T, 1, dim] and e0 [T, 6, dim] */
  float t1 = in->t;
  int T = in->t_tokens ? (int)L : 1;
  mr_tensor *tf = NULL;
  if (mr_scope_ok(s)) {
    mr_status st_tf = time_features(d->ctx, in->t_tokens ? in->t_tokens : &t1, T, c->freq_dim, &tf);
    tf = mr_scope_own(s, st_tf, tf); /* the call first: tf is its output */
  }
  mr_tensor *e = linear(s, sc_unary(s, MR_UNARY_SILU, linear(s, tf, &d->time0)), &d->time2);
  mr_tensor *e0 = linear(s, sc_unary(s, MR_UNARY_SILU, e), &d->time_proj);
  e = sc_reshape(s, e, 3, (int64_t[]){T, 1, c->dim});
  e0 = sc_reshape(s, e0, 3, (int64_t[]){T, 6, c->dim});

  /* context: [B, Lctx, dim], [img tokens;] text tokens */
  mr_tensor *context = embed_text(s, d, n, contexts);
  if (c->img_dim) {
    mr_tensor *img = embed_image(s, d, in->clip_fea);
    if (img) img = repeat_batch(s, sc_reshape(s, img, 3, (int64_t[]){1, mr_tensor_shape(img)[0], c->dim}), n);
    context = sc_concat(s, (const mr_tensor *[]){img, context}, 2, 1);
  }
  dit_run run = {.d = d, .context = context, .e0 = e0};
  if (c->img_dim) run.img_tokens = image_context_rows(c, mr_tensor_numel(in->clip_fea) / c->img_dim);
  if (mr_scope_ok(s)) mr_scope_own(s, rope_for_grid(d, F, H2, W2, &run.rope_cos, &run.rope_sin), NULL);

  mr_tensor **hints = NULL;
  if (in->vace_context && mr_scope_ok(s)) {
    if (!(hints = calloc((size_t)c->n_vace_layers, sizeof *hints))) mr_scope_fail(s, MR_ENOMEM, "out of host memory");
    else vace_hints(s, d, &run, in, x, hints);
  }

  for (int i = 0; i < c->num_layers && mr_scope_ok(s); i++) {
    dit_block *b = &d->blocks[i];
    /* a streamed block's weights come onto the device for it and leave after it;
       their bytes serve the next streamed block at once */
    if (b->streamed) mr_scope_own(s, mr_params_fetch(&d->params, b->first_param, b->end_param), NULL);
    size_t mark = mr_scope_mark(s);
    mr_tensor *y = block_forward(s, &run, b, x);
    for (int k = 0; hints && k < c->n_vace_layers; k++)
      if (c->vace_layers[k] == i) y = sc_add(s, y, hints[k]);
    x = mr_scope_collect(s, mark, y, x);
    if (b->streamed) mr_params_evict(&d->params, b->first_param, b->end_param);
  }

  /* head: shift, scale = head.modulation + e */
  mr_tensor *m = sc_add(s, d->head_modulation, e); /* [T, 2, dim] */
  mr_tensor *h = linear(s, modulate(s, x, chunk(s, m, 0), chunk(s, m, 1), c->eps), &d->head);
  for (int i = 0; i < n; i++)
    outs[i] = mr_scope_disown(s, unpatchify(s, sc_slice(s, h, 0, i, i + 1), c->out_dim, F, H2, W2, c->patch[1],
                                            c->patch[2]));
  free(hints);
  st = mr_scope_end(s, NULL);
  if (st != MR_OK)
    for (int i = 0; i < n; i++) {
      mr_tensor_free(outs[i]);
      outs[i] = NULL;
    }
  return st;
}
