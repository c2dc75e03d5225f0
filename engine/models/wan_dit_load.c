/* Wan DiT: variant detection from names and shapes, and loading. */
#include "models/wan_dit_impl.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ detection */

static const char *const dit_prefixes[] = {"", "model.diffusion_model.", "diffusion_model.", "model.", NULL};

static int find_prefixed(const mr_weights *w, const char *prefix, const char *name, mr_weight_info *info) {
  char full[512];
  snprintf(full, sizeof full, "%s%s", prefix, name);
  int i = mr_weights_find(w, full);
  if (i >= 0 && info) mr_weights_get(w, i, info);
  return i;
}

static int json_int(const cJSON *cfg, const char *key, int dflt) {
  const cJSON *j = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, key) : NULL;
  return cJSON_IsNumber(j) ? j->valueint : dflt;
}

mr_status mr_wan_dit_detect(mr_ctx *ctx, const mr_weights *w, const char *config_json, mr_wan_dit_config *out) {
  memset(out, 0, sizeof *out);
  const char *prefix = NULL;
  mr_weight_info pe;
  for (int i = 0; dit_prefixes[i] && !prefix; i++)
    if (find_prefixed(w, dit_prefixes[i], "patch_embedding.weight", &pe) >= 0) prefix = dit_prefixes[i];
  if (!prefix) return mr_error(ctx, MR_EFORMAT, "not a Wan DiT checkpoint: no 'patch_embedding.weight'");
  if (pe.ndim != 5) return mr_error(ctx, MR_EFORMAT, "Wan DiT: 'patch_embedding.weight' should have 5 dims, has %d", pe.ndim);
  out->dim = (int)pe.shape[0];
  out->in_dim = (int)pe.shape[1];
  for (int i = 0; i < 3; i++) out->patch[i] = (int)pe.shape[2 + i];

  mr_weight_info info;
#define NEED(name)                                                                                  \
  if (find_prefixed(w, prefix, name, &info) < 0)                                                    \
    return mr_error(ctx, MR_EFORMAT, "Wan DiT: tensor '%s%s' is missing", prefix, name);
  NEED("blocks.0.ffn.0.weight");
  out->ffn_dim = (int)info.shape[0];
  NEED("time_embedding.0.weight");
  out->freq_dim = (int)info.shape[1];
  NEED("text_embedding.0.weight");
  out->text_dim = (int)info.shape[1];
  NEED("head.head.weight");
  int patch_volume = out->patch[0] * out->patch[1] * out->patch[2];
  out->out_dim = patch_volume ? (int)info.shape[0] / patch_volume : 0;
#undef NEED
  char name[128];
  while (snprintf(name, sizeof name, "blocks.%d.modulation", out->num_layers), find_prefixed(w, prefix, name, NULL) >= 0)
    out->num_layers++;
  int n_vace = 0;
  while (snprintf(name, sizeof name, "vace_blocks.%d.after_proj.weight", n_vace), find_prefixed(w, prefix, name, NULL) >= 0)
    n_vace++;
  if (find_prefixed(w, prefix, "img_emb.proj.1.weight", &info) >= 0) {
    out->img_dim = (int)info.shape[1];
    out->img_tokens = 257;
    if (find_prefixed(w, prefix, "img_emb.emb_pos", &info) >= 0) out->img_tokens = (int)info.shape[1];
  }
  if (n_vace > 0 && find_prefixed(w, prefix, "vace_patch_embedding.weight", &info) >= 0)
    out->vace_in_dim = (int)info.shape[1];

  /* What shapes cannot tell comes from config.json, else the released models' values. */
  cJSON *root = config_json ? cJSON_Parse(config_json) : NULL;
  if (config_json && !root) return mr_error(ctx, MR_EFORMAT, "Wan DiT: config.json is not valid JSON");
  const cJSON *cfg = root;
  if (root && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "config")))
    cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
  /* Every released DiT has 128-wide heads; other widths need config.json's num_heads. */
  out->num_heads = json_int(cfg, "num_heads", out->dim % 128 == 0 ? out->dim / 128 : 0);
  out->text_len = json_int(cfg, "text_len", 512);
  const cJSON *eps = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "eps") : NULL;
  out->eps = cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-6f;
  const cJSON *type = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "model_type") : NULL;
  const cJSON *vl = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "vace_layers") : NULL;
  if (n_vace > 0) {
    if (cJSON_IsArray(vl) && cJSON_GetArraySize(vl) == n_vace) {
      for (int i = 0; i < n_vace && i < MR_WAN_MAX_VACE_LAYERS; i++)
        out->vace_layers[i] = cJSON_GetArrayItem(vl, i)->valueint;
    } else { /* the released VACE models place hints every num_layers / n_vace blocks from block 0 */
      for (int i = 0; i < n_vace && i < MR_WAN_MAX_VACE_LAYERS; i++) out->vace_layers[i] = i * (out->num_layers / n_vace);
    }
    out->n_vace_layers = n_vace < MR_WAN_MAX_VACE_LAYERS ? n_vace : MR_WAN_MAX_VACE_LAYERS;
  }
  if (cJSON_IsString(type) && strlen(type->valuestring) < sizeof out->model_type) {
    snprintf(out->model_type, sizeof out->model_type, "%s", type->valuestring);
  } else {
    snprintf(out->model_type, sizeof out->model_type, "%s",
             n_vace ? "vace" : out->img_tokens == 514 ? "flf2v" : out->img_dim ? "i2v"
             : out->in_dim > out->out_dim ? "i2v" : out->in_dim == 48 ? "ti2v" : "t2v");
  }
  cJSON_Delete(root);

  if (out->num_layers == 0) return mr_error(ctx, MR_EFORMAT, "Wan DiT: no 'blocks.0.modulation'");
  if (out->num_heads < 0 || (out->num_heads && (out->dim % out->num_heads || (out->dim / out->num_heads) % 2)))
    return mr_error(ctx, MR_EFORMAT, "Wan DiT: dim %d does not split into %d heads of even size", out->dim, out->num_heads);
  if (out->patch[0] != 1)
    return mr_error(ctx, MR_EUNSUPPORTED, "Wan DiT: temporal patch size %d (only 1 is supported)", out->patch[0]);

  /* Parameter count: every tensor under the DiT's prefix. */
  size_t plen = strlen(prefix);
  for (int i = 0; i < mr_weights_count(w); i++) {
    if (mr_weights_get(w, i, &info) != MR_OK || strncmp(info.name, prefix, plen) != 0) continue;
    int64_t n = 1;
    for (int d = 0; d < info.ndim; d++) n *= info.shape[d];
    out->n_params += n;
  }
  return MR_OK;
}

/* ------------------------------------------------------------------ loading */

static mr_status take_linear(mr_loader *L, const char *name, int out_f, int in_f, bool bias, dit_linear *lin) {
  char n[160];
  int64_t ws[2] = {out_f, in_f}, bs[1] = {out_f};
  mr_status st = mr_loader_weight(L, mr_loader_name(n, sizeof n, "%s.weight", name), 2, ws, &lin->w);
  if (st == MR_OK && bias) st = mr_loader_f32(L, mr_loader_name(n, sizeof n, "%s.bias", name), 1, bs, &lin->b);
  return st;
}

static void free_linear(dit_linear *l) {
  mr_tensor_free(l->w);
  mr_tensor_free(l->b);
}

static mr_status take_vec(mr_loader *L, const char *fmt, const char *base, int n, mr_tensor **out) {
  char name[160];
  int64_t s[1] = {n};
  return mr_loader_f32(L, mr_loader_name(name, sizeof name, fmt, base), 1, s, out);
}

static mr_status take_attn(mr_loader *L, const char *base, int dim, int kv_in, bool img, dit_attn *a) {
  char n[160];
  mr_status st = MR_OK;
  if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.q", base), dim, dim, true, &a->q);
  if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.k", base), dim, kv_in, true, &a->k);
  if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.v", base), dim, kv_in, true, &a->v);
  if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.o", base), dim, dim, true, &a->o);
  if (st == MR_OK) st = take_vec(L, "%s.norm_q.weight", base, dim, &a->norm_q);
  if (st == MR_OK) st = take_vec(L, "%s.norm_k.weight", base, dim, &a->norm_k);
  if (img) {
    if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.k_img", base), dim, dim, true, &a->k_img);
    if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.v_img", base), dim, dim, true, &a->v_img);
    if (st == MR_OK) st = take_vec(L, "%s.norm_k_img.weight", base, dim, &a->norm_k_img);
  }
  return st;
}

static void free_attn(dit_attn *a) {
  free_linear(&a->q);
  free_linear(&a->k);
  free_linear(&a->v);
  free_linear(&a->o);
  free_linear(&a->k_img);
  free_linear(&a->v_img);
  mr_tensor_free(a->norm_q);
  mr_tensor_free(a->norm_k);
  mr_tensor_free(a->norm_k_img);
}

static mr_status take_block(mr_loader *L, const mr_wan_dit_config *c, const char *base, bool vace, int index,
                            dit_block *b) {
  char n[160];
  int64_t ms[3] = {1, 6, c->dim};
  bool img = c->img_dim > 0 && !vace;
  mr_status st = mr_loader_f32(L, mr_loader_name(n, sizeof n, "%s.modulation", base), 3, ms, &b->modulation);
  if (st == MR_OK) st = take_attn(L, mr_loader_name(n, sizeof n, "%s.self_attn", base), c->dim, c->dim, false, &b->self_attn);
  if (st == MR_OK) st = take_attn(L, mr_loader_name(n, sizeof n, "%s.cross_attn", base), c->dim, c->dim, img, &b->cross_attn);
  if (st == MR_OK) st = take_vec(L, "%s.norm3.weight", base, c->dim, &b->norm3_w);
  if (st == MR_OK) st = take_vec(L, "%s.norm3.bias", base, c->dim, &b->norm3_b);
  if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.ffn.0", base), c->ffn_dim, c->dim, true, &b->ffn0);
  if (st == MR_OK) st = take_linear(L, mr_loader_name(n, sizeof n, "%s.ffn.2", base), c->dim, c->ffn_dim, true, &b->ffn2);
  if (vace && st == MR_OK) {
    if (index == 0)
      st = take_linear(L, mr_loader_name(n, sizeof n, "%s.before_proj", base), c->dim, c->dim, true, &b->before_proj);
    if (st == MR_OK)
      st = take_linear(L, mr_loader_name(n, sizeof n, "%s.after_proj", base), c->dim, c->dim, true, &b->after_proj);
  }
  return st;
}

static void free_block(dit_block *b) {
  mr_tensor_free(b->modulation);
  free_attn(&b->self_attn);
  free_attn(&b->cross_attn);
  mr_tensor_free(b->norm3_w);
  mr_tensor_free(b->norm3_b);
  free_linear(&b->ffn0);
  free_linear(&b->ffn2);
  free_linear(&b->before_proj);
  free_linear(&b->after_proj);
}

/* The patch embedding is a Conv3d with kernel = stride; as a Linear it is the
   weight flattened to [dim, C*pt*ph*pw] in (c, pt, ph, pw) order. */
static mr_status take_patch(mr_loader *L, const char *name, int dim, int in_dim, const int *patch, dit_linear *lin) {
  char n[160];
  int64_t ws[5] = {dim, in_dim, patch[0], patch[1], patch[2]}, bs[1] = {dim};
  mr_tensor *w5 = NULL;
  mr_status st = mr_loader_weight(L, mr_loader_name(n, sizeof n, "%s.weight", name), 5, ws, &w5);
  if (st == MR_OK) {
    int64_t flat[2] = {dim, (int64_t)in_dim * patch[0] * patch[1] * patch[2]};
    st = mr_tensor_reshape(w5, 2, flat, &lin->w);
  }
  mr_tensor_free(w5);
  if (st == MR_OK) st = mr_loader_f32(L, mr_loader_name(n, sizeof n, "%s.bias", name), 1, bs, &lin->b);
  return st;
}

mr_status mr_wan_dit_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_wan_dit **out) {
  *out = NULL;
  mr_wan_dit *d = calloc(1, sizeof *d);
  if (!d) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  d->ctx = ctx;
  mr_loader L;
  mr_status st = mr_wan_dit_detect(ctx, w, opts ? opts->config_json : NULL, &d->cfg);
  if (st == MR_OK && d->cfg.num_heads == 0)
    st = mr_error(ctx, MR_EINVAL, "Wan DiT: width %d is not a multiple of 128, so the head count is unknown: "
                  "give config.json (num_heads)", d->cfg.dim);
  if (st == MR_OK) st = mr_loader_init(&L, ctx, w, opts, "Wan DiT", "patch_embedding.weight");
  const mr_wan_dit_config *c = &d->cfg;
  if (st == MR_OK) st = take_patch(&L, "patch_embedding", c->dim, c->in_dim, c->patch, &d->patch);
  if (st == MR_OK) st = take_linear(&L, "text_embedding.0", c->dim, c->text_dim, true, &d->text0);
  if (st == MR_OK) st = take_linear(&L, "text_embedding.2", c->dim, c->dim, true, &d->text2);
  if (st == MR_OK) st = take_linear(&L, "time_embedding.0", c->dim, c->freq_dim, true, &d->time0);
  if (st == MR_OK) st = take_linear(&L, "time_embedding.2", c->dim, c->dim, true, &d->time2);
  if (st == MR_OK) st = take_linear(&L, "time_projection.1", 6 * c->dim, c->dim, true, &d->time_proj);
  int patch_volume = c->patch[0] * c->patch[1] * c->patch[2];
  if (st == MR_OK) st = take_linear(&L, "head.head", patch_volume * c->out_dim, c->dim, true, &d->head);
  int64_t hm[3] = {1, 2, c->dim};
  if (st == MR_OK) st = mr_loader_f32(&L, "head.modulation", 3, hm, &d->head_modulation);
  if (st == MR_OK && c->img_dim) {
    st = take_vec(&L, "%s.0.weight", "img_emb.proj", c->img_dim, &d->img_norm0_w);
    if (st == MR_OK) st = take_vec(&L, "%s.0.bias", "img_emb.proj", c->img_dim, &d->img_norm0_b);
    if (st == MR_OK) st = take_linear(&L, "img_emb.proj.1", c->img_dim, c->img_dim, true, &d->img1);
    if (st == MR_OK) st = take_linear(&L, "img_emb.proj.3", c->dim, c->img_dim, true, &d->img3);
    if (st == MR_OK) st = take_vec(&L, "%s.4.weight", "img_emb.proj", c->dim, &d->img_norm4_w);
    if (st == MR_OK) st = take_vec(&L, "%s.4.bias", "img_emb.proj", c->dim, &d->img_norm4_b);
    int64_t ep[3] = {1, c->img_tokens, c->img_dim};
    if (st == MR_OK && c->img_tokens == 514) st = mr_loader_f32(&L, "img_emb.emb_pos", 3, ep, &d->img_emb_pos);
  }
  if (st == MR_OK && !(d->blocks = calloc((size_t)c->num_layers, sizeof *d->blocks)))
    st = mr_error(ctx, MR_ENOMEM, "out of host memory");
  char name[64];
  for (int i = 0; st == MR_OK && i < c->num_layers; i++)
    st = take_block(&L, c, mr_loader_name(name, sizeof name, "blocks.%d", i), false, i, &d->blocks[i]);
  if (st == MR_OK && c->n_vace_layers) {
    int vp[3] = {1, 2, 2};
    memcpy(vp, c->patch, sizeof vp);
    st = take_patch(&L, "vace_patch_embedding", c->dim, c->vace_in_dim, vp, &d->vace_patch);
    if (st == MR_OK && !(d->vace_blocks = calloc((size_t)c->n_vace_layers, sizeof *d->vace_blocks)))
      st = mr_error(ctx, MR_ENOMEM, "out of host memory");
    for (int i = 0; st == MR_OK && i < c->n_vace_layers; i++)
      st = take_block(&L, c, mr_loader_name(name, sizeof name, "vace_blocks.%d", i), true, i, &d->vace_blocks[i]);
  }
  if (st != MR_OK) {
    mr_wan_dit_free(d);
    return st;
  }
  *out = d;
  return MR_OK;
}

void mr_wan_dit_free(mr_wan_dit *d) {
  if (!d) return;
  dit_linear *lins[] = {&d->patch, &d->text0, &d->text2, &d->time0, &d->time2, &d->time_proj,
                        &d->head, &d->img1, &d->img3, &d->vace_patch};
  for (size_t i = 0; i < sizeof lins / sizeof *lins; i++) free_linear(lins[i]);
  mr_tensor *ts[] = {d->head_modulation, d->img_norm0_w, d->img_norm0_b, d->img_norm4_w, d->img_norm4_b, d->img_emb_pos};
  for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) mr_tensor_free(ts[i]);
  if (d->blocks)
    for (int i = 0; i < d->cfg.num_layers; i++) free_block(&d->blocks[i]);
  if (d->vace_blocks)
    for (int i = 0; i < d->cfg.n_vace_layers; i++) free_block(&d->vace_blocks[i]);
  free(d->blocks);
  free(d->vace_blocks);
  free(d);
}

const mr_wan_dit_config *mr_wan_dit_config_get(const mr_wan_dit *d) { return &d->cfg; }
