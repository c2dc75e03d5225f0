/* CLIP ViT image tower as Wan 2.1 I2V uses it (docs/wan-architecture.md §4):
   patch conv (no bias) -> class token -> positions -> pre_norm -> all blocks
   but the last (pre-norm: x += proj(attn(LN1 x)); x += mlp(LN2 x), exact
   GELU). Widths, heads and depth come from the checkpoint's shapes; the head
   count from the 80-wide heads of ViT-H/14 unless config_json says otherwise. */
#include "models/model_util.h"
#include "models/scope.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct clip_block {
  mr_tensor *norm1_w, *norm1_b, *norm2_w, *norm2_b;
  mr_tensor *qkv_w, *qkv_b, *proj_w, *proj_b, *mlp0_w, *mlp0_b, *mlp2_w, *mlp2_b;
} clip_block;

struct mr_clip_vision {
  mr_ctx *ctx;
  int dim, patch, image_size, heads, layers, tokens, mlp;
  mr_tensor *patch_w;      /* [dim, 3, p, p] */
  mr_tensor *cls, *pos;    /* [1, 1, dim], [1, tokens, dim] */
  mr_tensor *pre_w, *pre_b;
  clip_block *blocks;      /* the blocks run: all but the checkpoint's last */
  mr_params params;        /* every tensor above, under the official names */
};

static const double clip_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

void mr_clip_vision_free(mr_clip_vision *c) {
  if (!c) return;
  mr_params_release(&c->params);
  free(c->blocks);
  free(c);
}

/* Every parameter the tower runs with, once. The last block's output is
   never used (Wan takes the states before it), so it is not declared. */
static void declare(mr_params *P, mr_clip_vision *c) {
  int64_t D = c->dim;
  mr_params_add(P, &c->patch_w, MR_PARAM_WEIGHT, 4, (int64_t[]){D, 3, c->patch, c->patch}, "visual.patch_embedding.weight");
  mr_params_add(P, &c->cls, MR_PARAM_F32, 3, (int64_t[]){1, 1, D}, "visual.cls_embedding");
  mr_params_add(P, &c->pos, MR_PARAM_F32, 3, (int64_t[]){1, c->tokens, D}, "visual.pos_embedding");
  mr_params_add(P, &c->pre_w, MR_PARAM_F32, 1, (int64_t[]){D}, "visual.pre_norm.weight");
  mr_params_add(P, &c->pre_b, MR_PARAM_F32, 1, (int64_t[]){D}, "visual.pre_norm.bias");
  for (int i = 0; i < c->layers; i++) {
    clip_block *b = &c->blocks[i];
#define W(slot, kind, name, ...) \
  mr_params_add(P, &b->slot, kind, (int)(sizeof((int64_t[]){__VA_ARGS__}) / 8), (int64_t[]){__VA_ARGS__}, \
                "visual.transformer.%d." name, i)
    W(norm1_w, MR_PARAM_F32, "norm1.weight", D);
    W(norm1_b, MR_PARAM_F32, "norm1.bias", D);
    W(qkv_w, MR_PARAM_WEIGHT, "attn.to_qkv.weight", 3 * D, D);
    W(qkv_b, MR_PARAM_F32, "attn.to_qkv.bias", 3 * D);
    W(proj_w, MR_PARAM_WEIGHT, "attn.proj.weight", D, D);
    W(proj_b, MR_PARAM_F32, "attn.proj.bias", D);
    W(norm2_w, MR_PARAM_F32, "norm2.weight", D);
    W(norm2_b, MR_PARAM_F32, "norm2.bias", D);
    W(mlp0_w, MR_PARAM_WEIGHT, "mlp.0.weight", c->mlp, D);
    W(mlp0_b, MR_PARAM_F32, "mlp.0.bias", c->mlp);
    W(mlp2_w, MR_PARAM_WEIGHT, "mlp.2.weight", D, c->mlp);
    W(mlp2_b, MR_PARAM_F32, "mlp.2.bias", D);
#undef W
  }
}

int mr_clip_vision_image_size(const mr_clip_vision *c) { return c->image_size; }
int mr_clip_vision_dim(const mr_clip_vision *c) { return c->dim; }

mr_status mr_clip_vision_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_clip_vision **out) {
  *out = NULL;
  mr_loader L;
  /* The whole CLIP checkpoint also holds textual.*, which is never read. */
  mr_status st = mr_loader_init(&L, ctx, w, opts, "CLIP vision", "visual.patch_embedding.weight");
  if (st != MR_OK) return st;
  mr_clip_vision *c = calloc(1, sizeof *c);
  if (!c) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  c->ctx = ctx;
  mr_params_init(&c->params, ctx);
  int64_t s[8];
  if (mr_loader_shape(&L, "visual.patch_embedding.weight", s) != 4 || s[1] != 3 || s[2] != s[3]) {
    mr_clip_vision_free(c);
    return mr_error(ctx, MR_EFORMAT, "CLIP vision: 'visual.patch_embedding.weight' must be [dim, 3, p, p]");
  }
  c->dim = (int)s[0];
  c->patch = (int)s[2];
  if (mr_loader_shape(&L, "visual.pos_embedding", s) != 3) {
    mr_clip_vision_free(c);
    return mr_error(ctx, MR_EFORMAT, "CLIP vision: 'visual.pos_embedding' is missing or not [1, tokens, dim]");
  }
  c->tokens = (int)s[1];
  int grid = (int)lround(sqrt((double)(c->tokens - 1)));
  if (grid * grid != c->tokens - 1) {
    mr_clip_vision_free(c);
    return mr_error(ctx, MR_EFORMAT, "CLIP vision: %d position embeddings is not 1 + a square grid", c->tokens);
  }
  c->image_size = grid * c->patch;
  char n[128];
  while (mr_loader_has(&L, mr_loader_name(n, sizeof n, "visual.transformer.%d.norm1.weight", c->layers))) c->layers++;
  /* ViT-H/14 has 80-wide heads (16 of them); other sizes need config.json's vision_heads. */
  c->heads = c->dim % 80 == 0 ? c->dim / 80 : 0;
  cJSON *root = opts && opts->config_json ? cJSON_Parse(opts->config_json) : NULL;
  const cJSON *cfg = root && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "config"))
                         ? cJSON_GetObjectItemCaseSensitive(root, "config") : root;
  const cJSON *vh = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "vision_heads") : NULL;
  if (cJSON_IsNumber(vh)) c->heads = vh->valueint;
  cJSON_Delete(root);
  if (c->layers < 2 || c->heads <= 0 || c->dim % c->heads) {
    mr_clip_vision_free(c);
    return mr_error(ctx, MR_EFORMAT, "CLIP vision: %d blocks of width %d with %d heads cannot be used "
                    "(need 2 or more blocks; give config.json vision_heads for non-ViT-H widths)", c->layers, c->dim, c->heads);
  }

  int64_t mlp[8];
  if (mr_loader_shape(&L, "visual.transformer.0.mlp.0.weight", mlp) != 2) {
    mr_clip_vision_free(c);
    return mr_error(ctx, MR_EFORMAT, "CLIP vision: 'visual.transformer.0.mlp.0.weight' is missing or not 2-D");
  }
  c->mlp = (int)mlp[0];
  c->layers -= 1; /* blocks actually run */
  if (!(c->blocks = calloc((size_t)c->layers, sizeof *c->blocks))) {
    mr_clip_vision_free(c);
    return mr_error(ctx, MR_ENOMEM, "out of host memory");
  }
  declare(&c->params, c);
  st = mr_params_load(&c->params, &L);
  if (st != MR_OK) {
    mr_clip_vision_free(c);
    return st;
  }
  *out = c;
  return MR_OK;
}

const mr_params *mr_clip_vision_params(const mr_clip_vision *c) { return &c->params; }

/* PyTorch's bicubic kernel (A = -0.75) weights for fractional offset t. */
static void cubic_weights(double t, double w[4]) {
  const double A = -0.75;
  double x;
  x = t + 1;
  w[0] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  x = t;
  w[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
  x = 1 - t;
  w[2] = ((A + 2) * x - (A + 3)) * x * x + 1;
  x = 2 - t;
  w[3] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
}

/* Bicubic resize of one [H, W] plane to [S, S], align_corners false, border
   indices clamped, no antialiasing: F.interpolate(mode="bicubic"). */
static void resize_plane(const float *src, int H, int W, int S, double *dst) {
  double sy = (double)H / S, sx = (double)W / S;
  for (int oy = 0; oy < S; oy++) {
    double fy = (oy + 0.5) * sy - 0.5;
    int y0 = (int)floor(fy);
    double wy[4];
    cubic_weights(fy - y0, wy);
    for (int ox = 0; ox < S; ox++) {
      double fx = (ox + 0.5) * sx - 0.5;
      int x0 = (int)floor(fx);
      double wx[4], acc = 0;
      cubic_weights(fx - x0, wx);
      for (int i = 0; i < 4; i++) {
        int yy = y0 - 1 + i;
        yy = yy < 0 ? 0 : yy >= H ? H - 1 : yy;
        double row = 0;
        for (int j = 0; j < 4; j++) {
          int xx = x0 - 1 + j;
          xx = xx < 0 ? 0 : xx >= W ? W - 1 : xx;
          row += wx[j] * src[(size_t)yy * W + xx];
        }
        acc += wy[i] * row;
      }
      dst[(size_t)oy * S + ox] = acc;
    }
  }
}

mr_status mr_clip_vision_preprocess(mr_clip_vision *c, const mr_tensor *image, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = c->ctx;
  const int64_t *s = mr_tensor_shape(image);
  int nd = mr_tensor_ndim(image);
  if (!((nd == 3 && s[0] == 3) || (nd == 4 && s[0] == 3 && s[1] == 1)))
    return mr_error(ctx, MR_EINVAL, "CLIP vision: image must be [3, H, W] or [3, 1, H, W] in [-1, 1]");
  int H = (int)s[nd - 2], W = (int)s[nd - 1], S = c->image_size;
  size_t n = (size_t)3 * H * W;
  float *px = malloc(n * sizeof *px), *res = malloc((size_t)3 * S * S * sizeof *res);
  double *plane = malloc((size_t)S * S * sizeof *plane);
  mr_status st = px && res && plane ? MR_OK : mr_error(ctx, MR_ENOMEM, "out of host memory");
  if (st == MR_OK) st = mr_tensor_read((mr_tensor *)image, MR_F32, px, n);
  for (int ch = 0; st == MR_OK && ch < 3; ch++) {
    resize_plane(px + (size_t)ch * H * W, H, W, S, plane);
    for (size_t i = 0; i < (size_t)S * S; i++)
      res[(size_t)ch * S * S + i] = (float)(((plane[i] + 1.0) / 2.0 - clip_mean[ch]) / clip_std[ch]);
  }
  int64_t os[3] = {3, S, S};
  if (st == MR_OK) st = mr_tensor_from_host(ctx, MR_F32, 3, os, MR_F32, res, out);
  free(px);
  free(res);
  free(plane);
  return st;
}

/* One pre-norm block: x + proj(attn(LN1 x)), then + mlp(LN2 x) with exact GELU. */
static mr_tensor *run_block(mr_scope *s, const mr_clip_vision *c, const clip_block *b, mr_tensor *x) {
  int64_t L = c->tokens, D = c->dim, hd = D / c->heads;
  int64_t s4[4] = {L, 3, c->heads, hd}, flat[2] = {L, D};
  int to_batch[4] = {1, 0, 2, 3}; /* [L, 1, H, hd] -> [1, L, H, hd] */
  mr_tensor *qkv = sc_reshape(s, sc_linear(s, sc_layer_norm(s, x, b->norm1_w, b->norm1_b, 1e-5f), b->qkv_w, b->qkv_b),
                              4, s4); /* [L, 3, H, hd]: q | k | v */
  mr_tensor *q = sc_permute(s, sc_slice(s, qkv, 1, 0, 1), to_batch);
  mr_tensor *k = sc_permute(s, sc_slice(s, qkv, 1, 1, 2), to_batch);
  mr_tensor *v = sc_permute(s, sc_slice(s, qkv, 1, 2, 3), to_batch);
  x = sc_add(s, x, sc_linear(s, sc_reshape(s, sc_attention(s, q, k, v), 2, flat), b->proj_w, b->proj_b));
  mr_tensor *h = sc_linear(s, sc_layer_norm(s, x, b->norm2_w, b->norm2_b, 1e-5f), b->mlp0_w, b->mlp0_b);
  return sc_add(s, x, sc_linear(s, sc_unary(s, MR_UNARY_GELU, h), b->mlp2_w, b->mlp2_b));
}

mr_status mr_clip_vision_forward(mr_clip_vision *c, const mr_tensor *pixels, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = c->ctx;
  const int64_t *ps = mr_tensor_shape(pixels);
  int S = c->image_size, p = c->patch, G = S / p;
  if (mr_tensor_ndim(pixels) != 3 || ps[0] != 3 || ps[1] != S || ps[2] != S)
    return mr_error(ctx, MR_EINVAL, "CLIP vision: pixels must be [3, %d, %d]", S, S);
  mr_scope scope, *s = &scope;
  mr_scope_begin(s, ctx);
  /* patches [G*G, 3*p*p] in (c, py, px) order, as the conv weight flattens */
  int64_t v5[5] = {3, G, p, G, p}, tok[2] = {(int64_t)G * G, 3LL * p * p}, D = c->dim;
  int perm[5] = {1, 3, 0, 2, 4};
  mr_tensor *patches = sc_reshape(s, sc_contiguous(s, sc_permute(s, sc_reshape(s, sc_contiguous(s, pixels), 5, v5), perm)), 2, tok);
  mr_tensor *emb = sc_linear(s, patches, sc_reshape(s, c->patch_w, 2, (int64_t[]){D, 3LL * p * p}), NULL);
  mr_tensor *seq = sc_concat(s, (const mr_tensor *[]){sc_reshape(s, c->cls, 2, (int64_t[]){1, D}), emb}, 2, 0);
  mr_tensor *x = sc_add(s, seq, sc_reshape(s, c->pos, 2, (int64_t[]){c->tokens, D}));
  x = sc_layer_norm(s, x, c->pre_w, c->pre_b, 1e-5f);
  for (int i = 0; i < c->layers && mr_scope_ok(s); i++) {
    size_t mark = mr_scope_mark(s);
    x = mr_scope_collect(s, mark, run_block(s, c, &c->blocks[i], x), x);
  }
  mr_status st = mr_scope_end(s, &x);
  *out = x;
  return st;
}

mr_status mr_clip_vision_encode(mr_clip_vision *c, const mr_tensor *image, mr_tensor **out) {
  *out = NULL;
  mr_tensor *px = NULL;
  mr_status st = mr_clip_vision_preprocess(c, image, &px);
  if (st == MR_OK) st = mr_clip_vision_forward(c, px, out);
  mr_tensor_free(px);
  return st;
}
