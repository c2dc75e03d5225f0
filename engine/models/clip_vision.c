/* CLIP ViT image tower as Wan 2.1 I2V uses it (wan-architecture.md §4):
   patch conv (no bias) -> class token -> positions -> pre_norm -> all blocks
   but the last (pre-norm: x += proj(attn(LN1 x)); x += mlp(LN2 x), exact
   GELU). Widths, heads and depth come from the checkpoint's shapes; the head
   count from the 80-wide heads of ViT-H/14 unless config_json says otherwise. */
#include "models/model_util.h"

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
  int dim, patch, image_size, heads, layers, tokens;
  mr_tensor *patch_w;      /* [dim, 3*p*p] */
  mr_tensor *cls, *pos;    /* [1, dim], [tokens, dim] */
  mr_tensor *pre_w, *pre_b;
  clip_block *blocks;
};

static const double clip_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

void mr_clip_vision_free(mr_clip_vision *c) {
  if (!c) return;
  mr_tensor *ts[] = {c->patch_w, c->cls, c->pos, c->pre_w, c->pre_b};
  for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) mr_tensor_free(ts[i]);
  for (int i = 0; c->blocks && i < c->layers; i++) {
    clip_block *b = &c->blocks[i];
    mr_tensor *bs[] = {b->norm1_w, b->norm1_b, b->norm2_w, b->norm2_b, b->qkv_w, b->qkv_b,
                       b->proj_w,  b->proj_b,  b->mlp0_w,  b->mlp0_b,  b->mlp2_w, b->mlp2_b};
    for (size_t k = 0; k < sizeof bs / sizeof *bs; k++) mr_tensor_free(bs[k]);
  }
  free(c->blocks);
  free(c);
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

  int64_t D = c->dim, pw[4] = {D, 3, c->patch, c->patch}, one[1] = {D}, cls[3] = {1, 1, D}, pos[3] = {1, c->tokens, D};
  mr_tensor *p4 = NULL, *cls3 = NULL, *pos3 = NULL;
  st = mr_loader_weight(&L, "visual.patch_embedding.weight", 4, pw, &p4);
  if (st == MR_OK) {
    int64_t flat[2] = {D, 3LL * c->patch * c->patch};
    st = mr_tensor_reshape(p4, 2, flat, &c->patch_w);
  }
  if (st == MR_OK) st = mr_loader_f32(&L, "visual.cls_embedding", 3, cls, &cls3);
  if (st == MR_OK) {
    int64_t f[2] = {1, D};
    st = mr_tensor_reshape(cls3, 2, f, &c->cls);
  }
  if (st == MR_OK) st = mr_loader_f32(&L, "visual.pos_embedding", 3, pos, &pos3);
  if (st == MR_OK) {
    int64_t f[2] = {c->tokens, D};
    st = mr_tensor_reshape(pos3, 2, f, &c->pos);
  }
  mr_tensor_free(p4);
  mr_tensor_free(cls3);
  mr_tensor_free(pos3);
  if (st == MR_OK) st = mr_loader_f32(&L, "visual.pre_norm.weight", 1, one, &c->pre_w);
  if (st == MR_OK) st = mr_loader_f32(&L, "visual.pre_norm.bias", 1, one, &c->pre_b);
  if (st == MR_OK && !(c->blocks = calloc((size_t)c->layers, sizeof *c->blocks)))
    st = mr_error(ctx, MR_ENOMEM, "out of host memory");
  /* The last block's output is never used (Wan takes the states before it), so it is not loaded. */
  for (int i = 0; st == MR_OK && i < c->layers - 1; i++) {
    clip_block *b = &c->blocks[i];
    int64_t qkv[2] = {3 * D, D}, qb[1] = {3 * D}, sq[2] = {D, D}, m0[2] = {-1, D}, m2[2] = {D, -1};
#define T(field, fmt, nd, shape, fn) \
  if (st == MR_OK) st = fn(&L, mr_loader_name(n, sizeof n, "visual.transformer.%d." fmt, i), nd, shape, &b->field)
    T(norm1_w, "norm1.weight", 1, one, mr_loader_f32);
    T(norm1_b, "norm1.bias", 1, one, mr_loader_f32);
    T(norm2_w, "norm2.weight", 1, one, mr_loader_f32);
    T(norm2_b, "norm2.bias", 1, one, mr_loader_f32);
    T(qkv_w, "attn.to_qkv.weight", 2, qkv, mr_loader_weight);
    T(qkv_b, "attn.to_qkv.bias", 1, qb, mr_loader_f32);
    T(proj_w, "attn.proj.weight", 2, sq, mr_loader_weight);
    T(proj_b, "attn.proj.bias", 1, one, mr_loader_f32);
    T(mlp0_w, "mlp.0.weight", 2, m0, mr_loader_weight);
    T(mlp0_b, "mlp.0.bias", 1, NULL, mr_loader_f32);
    T(mlp2_w, "mlp.2.weight", 2, m2, mr_loader_weight);
    T(mlp2_b, "mlp.2.bias", 1, one, mr_loader_f32);
#undef T
  }
  c->layers -= 1; /* blocks actually run */
  if (st != MR_OK) {
    c->layers += 1;
    mr_clip_vision_free(c);
    return st;
  }
  *out = c;
  return MR_OK;
}

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

static mr_status run_block(const mr_clip_vision *c, const clip_block *b, mr_tensor **x) {
  int64_t L = c->tokens, D = c->dim, hd = D / c->heads;
  mr_tensor *h = NULL, *qkv = NULL, *q = NULL, *k = NULL, *v = NULL, *a = NULL, *a2 = NULL, *y = NULL, *s = NULL;
  mr_tensor *qkv4 = NULL;
  mr_status st = mr_op_layer_norm(*x, b->norm1_w, b->norm1_b, 1e-5f, &h);
  if (st == MR_OK) st = mr_op_matmul(h, b->qkv_w, b->qkv_b, &qkv); /* [L, 3D]: q | k | v */
  int64_t s5[4] = {L, 3, c->heads, hd};
  if (st == MR_OK) st = mr_tensor_reshape(qkv, 4, s5, &qkv4);
  mr_tensor *parts[3] = {NULL, NULL, NULL};
  for (int i = 0; st == MR_OK && i < 3; i++) {
    mr_tensor *sl = NULL;
    st = mr_tensor_slice(qkv4, 1, i, i + 1, 1, &sl); /* [L, 1, H, hd] -> [1, L, H, hd] */
    int perm[4] = {1, 0, 2, 3};
    if (st == MR_OK) st = mr_tensor_permute(sl, perm, &parts[i]);
    mr_tensor_free(sl);
  }
  q = parts[0], k = parts[1], v = parts[2];
  if (st == MR_OK) st = mr_op_attention(q, k, v, NULL, &a);
  int64_t flat[2] = {L, D};
  if (st == MR_OK) st = mr_tensor_reshape(a, 2, flat, &a2);
  if (st == MR_OK) st = mr_op_matmul(a2, b->proj_w, b->proj_b, &y);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, *x, y, &s);
  if (st == MR_OK) {
    mr_tensor_free(*x);
    *x = s, s = NULL;
  }
  mr_tensor *ts[] = {h, qkv, qkv4, q, k, v, a, a2, y};
  for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) mr_tensor_free(ts[i]);
  h = y = NULL;
  mr_tensor *m = NULL, *g = NULL;
  if (st == MR_OK) st = mr_op_layer_norm(*x, b->norm2_w, b->norm2_b, 1e-5f, &h);
  if (st == MR_OK) st = mr_op_matmul(h, b->mlp0_w, b->mlp0_b, &m);
  if (st == MR_OK) st = mr_op_unary(MR_UNARY_GELU, m, &g);
  if (st == MR_OK) st = mr_op_matmul(g, b->mlp2_w, b->mlp2_b, &y);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, *x, y, &s);
  if (st == MR_OK) {
    mr_tensor_free(*x);
    *x = s;
  }
  mr_tensor_free(h);
  mr_tensor_free(m);
  mr_tensor_free(g);
  mr_tensor_free(y);
  return st;
}

mr_status mr_clip_vision_forward(mr_clip_vision *c, const mr_tensor *pixels, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = c->ctx;
  const int64_t *s = mr_tensor_shape(pixels);
  int S = c->image_size, p = c->patch, G = S / p;
  if (mr_tensor_ndim(pixels) != 3 || s[0] != 3 || s[1] != S || s[2] != S)
    return mr_error(ctx, MR_EINVAL, "CLIP vision: pixels must be [3, %d, %d]", S, S);
  /* patches [G*G, 3*p*p] in (c, py, px) order, as the conv weight flattens */
  int64_t v5[5] = {3, G, p, G, p}, tok[2] = {(int64_t)G * G, 3LL * p * p};
  int perm[5] = {1, 3, 0, 2, 4};
  mr_tensor *cont = NULL, *v = NULL, *pm = NULL, *pc = NULL, *pt = NULL, *emb = NULL, *seq = NULL, *x = NULL;
  mr_status st = mr_tensor_contiguous((mr_tensor *)pixels, &cont);
  if (st == MR_OK) st = mr_tensor_reshape(cont, 5, v5, &v);
  if (st == MR_OK) st = mr_tensor_permute(v, perm, &pm);
  if (st == MR_OK) st = mr_tensor_contiguous(pm, &pc);
  if (st == MR_OK) st = mr_tensor_reshape(pc, 2, tok, &pt);
  if (st == MR_OK) st = mr_op_matmul(pt, c->patch_w, NULL, &emb);
  mr_tensor *parts[2] = {c->cls, emb};
  if (st == MR_OK) st = mr_op_concat(parts, 2, 0, &seq);
  mr_tensor *tmp = NULL;
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, seq, c->pos, &tmp);
  if (st == MR_OK) st = mr_op_layer_norm(tmp, c->pre_w, c->pre_b, 1e-5f, &x);
  mr_tensor *ts[] = {cont, v, pm, pc, pt, emb, seq, tmp};
  for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) mr_tensor_free(ts[i]);
  for (int i = 0; st == MR_OK && i < c->layers; i++) st = run_block(c, &c->blocks[i], &x);
  if (st != MR_OK) {
    mr_tensor_free(x);
    return st;
  }
  *out = x;
  return MR_OK;
}

mr_status mr_clip_vision_encode(mr_clip_vision *c, const mr_tensor *image, mr_tensor **out) {
  *out = NULL;
  mr_tensor *px = NULL;
  mr_status st = mr_clip_vision_preprocess(c, image, &px);
  if (st == MR_OK) st = mr_clip_vision_forward(c, px, out);
  mr_tensor_free(px);
  return st;
}
