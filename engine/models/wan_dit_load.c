/* Wan DiT: variant detection from names and shapes, and loading. */
#include "models/wan_dit_impl.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
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

bool mr_wan_dit_probe(const mr_weights *w) {
  for (int i = 0; dit_prefixes[i]; i++)
    if (find_prefixed(w, dit_prefixes[i], "patch_embedding.weight", NULL) >= 0) return true;
  return false;
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
  /* a config's numbers size allocations: out of range is refused, not tried */
  if (out->text_len < 1 || out->text_len > 65536 || out->num_heads < 0 || out->num_heads > 4096) {
    cJSON_Delete(root);
    return mr_error(ctx, MR_EFORMAT, "Wan DiT: config.json: %s %d is out of range (1 .. %d)",
                    out->text_len < 1 || out->text_len > 65536 ? "text_len" : "num_heads",
                    out->text_len < 1 || out->text_len > 65536 ? out->text_len : out->num_heads,
                    out->text_len < 1 || out->text_len > 65536 ? 65536 : 4096);
  }
  const cJSON *eps = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "eps") : NULL;
  /* a norm's epsilon: a negative or huge one would turn every norm into NaN or 0 */
  double eps_v = cJSON_IsNumber(eps) ? eps->valuedouble : 1e-6;
  if (!(eps_v >= 0.0 && eps_v <= 1.0)) {
    cJSON_Delete(root);
    return mr_error(ctx, MR_EFORMAT, "Wan DiT: config.json: eps %g is out of range (0 .. 1)", eps_v);
  }
  out->eps = (float)eps_v;
  const cJSON *type = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "model_type") : NULL;
  const cJSON *vl = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "vace_layers") : NULL;
  if (n_vace > 0) {
    if (cJSON_IsArray(vl) && cJSON_GetArraySize(vl) == n_vace) {
      for (int i = 0; i < n_vace && i < MR_WAN_MAX_VACE_LAYERS; i++) {
        /* hint i is added after block vace_layers[i]: one past the blocks would be computed and dropped */
        const cJSON *li = cJSON_GetArrayItem(vl, i);
        if (!cJSON_IsNumber(li) || li->valuedouble != (double)li->valueint || li->valueint < 0 ||
            li->valueint >= out->num_layers) {
          cJSON_Delete(root);
          return mr_error(ctx, MR_EFORMAT, "Wan DiT: config.json: vace_layers[%d] must be a block index 0 .. %d",
                          i, out->num_layers - 1);
        }
        out->vace_layers[i] = li->valueint;
      }
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

/* ------------------------------------------------------------------ the parameter table */

/* Every parameter of the DiT, declared once under its official name: the
   table loads them (with the shape check), frees them and lists them. */

/* The DiT whose table P is: declare() only ever passes &d->params. */
static const mr_wan_dit *dit_of(const mr_params *P) {
  return (const mr_wan_dit *)((const char *)P - offsetof(mr_wan_dit, params));
}

static void linear(mr_params *P, dit_linear *l, int64_t out_f, int64_t in_f, const char *base) {
  l->param = P->n;
  l->loras = &dit_of(P)->loras;
  mr_params_add(P, &l->w, MR_PARAM_WEIGHT, 2, (int64_t[]){out_f, in_f}, "%s.weight", base);
  mr_params_add(P, &l->b, MR_PARAM_F32, 1, (int64_t[]){out_f}, "%s.bias", base);
}

static void vec(mr_params *P, mr_tensor **slot, int64_t n, const char *name) {
  mr_params_add(P, slot, MR_PARAM_F32, 1, (int64_t[]){n}, "%s", name);
}

static void attention(mr_params *P, dit_attn *a, int64_t dim, bool img, const char *base) {
  char n[160];
  linear(P, &a->q, dim, dim, mr_loader_name(n, sizeof n, "%s.q", base));
  linear(P, &a->k, dim, dim, mr_loader_name(n, sizeof n, "%s.k", base));
  linear(P, &a->v, dim, dim, mr_loader_name(n, sizeof n, "%s.v", base));
  linear(P, &a->o, dim, dim, mr_loader_name(n, sizeof n, "%s.o", base));
  vec(P, &a->norm_q, dim, mr_loader_name(n, sizeof n, "%s.norm_q.weight", base));
  vec(P, &a->norm_k, dim, mr_loader_name(n, sizeof n, "%s.norm_k.weight", base));
  if (img) { /* Wan 2.1 i2v: the CLIP tokens' own keys and values */
    linear(P, &a->k_img, dim, dim, mr_loader_name(n, sizeof n, "%s.k_img", base));
    linear(P, &a->v_img, dim, dim, mr_loader_name(n, sizeof n, "%s.v_img", base));
    vec(P, &a->norm_k_img, dim, mr_loader_name(n, sizeof n, "%s.norm_k_img.weight", base));
  }
}

/* WanAttentionBlock, or a VACE block (before_proj on the first, after_proj on each). */
static void block(mr_params *P, const mr_wan_dit_config *c, dit_block *b, bool vace, int index) {
  char base[64], n[160];
  mr_loader_name(base, sizeof base, vace ? "vace_blocks.%d" : "blocks.%d", index);
  b->first_param = P->n;
  mr_params_add(P, &b->modulation, MR_PARAM_F32, 3, (int64_t[]){1, 6, c->dim}, "%s.modulation", base);
  attention(P, &b->self_attn, c->dim, false, mr_loader_name(n, sizeof n, "%s.self_attn", base));
  attention(P, &b->cross_attn, c->dim, c->img_dim > 0 && !vace, mr_loader_name(n, sizeof n, "%s.cross_attn", base));
  vec(P, &b->norm3_w, c->dim, mr_loader_name(n, sizeof n, "%s.norm3.weight", base));
  vec(P, &b->norm3_b, c->dim, mr_loader_name(n, sizeof n, "%s.norm3.bias", base));
  linear(P, &b->ffn0, c->ffn_dim, c->dim, mr_loader_name(n, sizeof n, "%s.ffn.0", base));
  linear(P, &b->ffn2, c->dim, c->ffn_dim, mr_loader_name(n, sizeof n, "%s.ffn.2", base));
  if (vace && index == 0) linear(P, &b->before_proj, c->dim, c->dim, mr_loader_name(n, sizeof n, "%s.before_proj", base));
  if (vace) linear(P, &b->after_proj, c->dim, c->dim, mr_loader_name(n, sizeof n, "%s.after_proj", base));
  b->end_param = P->n;
}

/* The patch embeddings are Conv3d with kernel = stride, kept in the official
   5-D shape; the forward reads them as a Linear over (c, pt, ph, pw). */
static void patch_embedding(mr_params *P, dit_linear *l, const mr_wan_dit_config *c, int64_t in_dim, const char *base) {
  mr_params_add(P, &l->w, MR_PARAM_WEIGHT, 5, (int64_t[]){c->dim, in_dim, c->patch[0], c->patch[1], c->patch[2]},
                "%s.weight", base);
  mr_params_add(P, &l->b, MR_PARAM_F32, 1, (int64_t[]){c->dim}, "%s.bias", base);
}

static void declare(mr_params *P, mr_wan_dit *d) {
  const mr_wan_dit_config *c = &d->cfg;
  patch_embedding(P, &d->patch, c, c->in_dim, "patch_embedding");
  linear(P, &d->text0, c->dim, c->text_dim, "text_embedding.0");
  linear(P, &d->text2, c->dim, c->dim, "text_embedding.2");
  linear(P, &d->time0, c->dim, c->freq_dim, "time_embedding.0");
  linear(P, &d->time2, c->dim, c->dim, "time_embedding.2");
  linear(P, &d->time_proj, 6 * c->dim, c->dim, "time_projection.1");
  linear(P, &d->head, (int64_t)c->patch[0] * c->patch[1] * c->patch[2] * c->out_dim, c->dim, "head.head");
  mr_params_add(P, &d->head_modulation, MR_PARAM_F32, 3, (int64_t[]){1, 2, c->dim}, "head.modulation");
  if (c->img_dim) { /* img_emb: LayerNorm, Linear, GELU, Linear, LayerNorm */
    vec(P, &d->img_norm0_w, c->img_dim, "img_emb.proj.0.weight");
    vec(P, &d->img_norm0_b, c->img_dim, "img_emb.proj.0.bias");
    linear(P, &d->img1, c->img_dim, c->img_dim, "img_emb.proj.1");
    linear(P, &d->img3, c->dim, c->img_dim, "img_emb.proj.3");
    vec(P, &d->img_norm4_w, c->dim, "img_emb.proj.4.weight");
    vec(P, &d->img_norm4_b, c->dim, "img_emb.proj.4.bias");
    if (c->img_tokens == 514) /* FLF2V: learned positions of the two frames' tokens */
      mr_params_add(P, &d->img_emb_pos, MR_PARAM_F32, 3, (int64_t[]){1, c->img_tokens, c->img_dim}, "img_emb.emb_pos");
  }
  for (int i = 0; i < c->num_layers; i++) block(P, c, &d->blocks[i], false, i);
  if (c->n_vace_layers) {
    patch_embedding(P, &d->vace_patch, c, c->vace_in_dim, "vace_patch_embedding");
    for (int i = 0; i < c->n_vace_layers; i++) block(P, c, &d->vace_blocks[i], true, i);
  }
}

/* ------------------------------------------------------------------ loading */

/* Which blocks stay on the device. Everything else is loaded first; the
   main blocks then fill what the budget leaves after a reserve for the
   forward's activations, in order; the rest are streamed (kept in host
   memory, put on the device while they run). VACE blocks stay resident. */
static mr_status plan_residency(mr_wan_dit *d, const mr_loader *L) {
  const mr_wan_dit_config *c = &d->cfg;
  const mr_params *P = &d->params;
  mr_dtype wt = L->opts.weights;
  size_t total = mr_params_bytes(P, 0, P->n, wt), blocks = 0;
  for (int i = 0; i < c->num_layers; i++) blocks += mr_params_bytes(P, d->blocks[i].first_param, d->blocks[i].end_param, wt);
  mr_memory_stats m;
  mr_ctx_memory_stats(d->ctx, &m);
  uint64_t reserve = m.budget_bytes / 5 > (512u << 20) ? m.budget_bytes / 5 : (512u << 20);
  uint64_t room = m.budget_bytes > m.held_bytes + reserve ? m.budget_bytes - m.held_bytes - reserve : 0;
  int resident = L->opts.resident_blocks;
  if (resident < 0 || resident > c->num_layers) {
    resident = c->num_layers;
    uint64_t need = total - blocks;
    for (int i = 0; i < c->num_layers; i++) {
      need += mr_params_bytes(P, d->blocks[i].first_param, d->blocks[i].end_param, wt);
      if (need > room) {
        resident = i;
        break;
      }
    }
    if (L->opts.resident_blocks < 0 && resident == 0 && c->num_layers > 0)
      return mr_error(d->ctx, MR_EDEVMEM, "Wan DiT: %.0f MiB of weights outside the blocks leave no room for one block "
                      "in the %.0f MiB budget (%s) with a %.0f MiB reserve for activations",
                      (total - blocks) / 1048576.0, m.budget_bytes / 1048576.0, m.budget_source, reserve / 1048576.0);
  }
  size_t streamed = 0;
  for (int i = resident; i < c->num_layers; i++) {
    dit_block *b = &d->blocks[i];
    b->streamed = true;
    mr_params_stream(&d->params, b->first_param, b->end_param);
    streamed += mr_params_bytes(P, b->first_param, b->end_param, wt);
  }
  mr_log(d->ctx, resident < c->num_layers ? MR_LOG_WARN : MR_LOG_INFO,
         "Wan DiT: %.1f MiB of %s weights; %d of %d blocks on the device, %d streamed from host memory (%.1f MiB); "
         "budget %.0f MiB (%s), %.0f MiB held",
         total / 1048576.0, mr_dtype_name(wt), resident, c->num_layers, c->num_layers - resident, streamed / 1048576.0,
         m.budget_bytes / 1048576.0, m.budget_source, m.held_bytes / 1048576.0);
  return MR_OK;
}

mr_status mr_wan_dit_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_wan_dit **out) {
  *out = NULL;
  mr_wan_dit *d = calloc(1, sizeof *d);
  if (!d) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  d->ctx = ctx;
  mr_params_init(&d->params, ctx);
  mr_lora_set_init(&d->loras, ctx, &d->params);
  mr_loader L;
  mr_status st = mr_wan_dit_detect(ctx, w, opts ? opts->config_json : NULL, &d->cfg);
  const mr_wan_dit_config *c = &d->cfg;
  if (st == MR_OK && c->num_heads == 0)
    st = mr_error(ctx, MR_EINVAL, "Wan DiT: width %d is not a multiple of 128, so the head count is unknown: "
                  "give config.json (num_heads)", c->dim);
  if (st == MR_OK) st = mr_loader_init(&L, ctx, w, opts, "Wan DiT", "patch_embedding.weight");
  if (st == MR_OK && (!(d->blocks = calloc((size_t)c->num_layers, sizeof *d->blocks)) ||
                      (c->n_vace_layers && !(d->vace_blocks = calloc((size_t)c->n_vace_layers, sizeof *d->vace_blocks)))))
    st = mr_error(ctx, MR_ENOMEM, "out of host memory");
  if (st == MR_OK) {
    declare(&d->params, d);
    st = plan_residency(d, &L);
  }
  if (st == MR_OK) st = mr_params_load(&d->params, &L);
  if (st != MR_OK) {
    mr_wan_dit_free(d);
    return st;
  }
  *out = d;
  return MR_OK;
}

void mr_wan_dit_free(mr_wan_dit *d) {
  if (!d) return;
  mr_lora_set_release(&d->loras);
  mr_params_release(&d->params);
  mr_tensor_free(d->rope.cos);
  mr_tensor_free(d->rope.sin);
  free(d->blocks);
  free(d->vace_blocks);
  free(d);
}

const mr_wan_dit_config *mr_wan_dit_config_get(const mr_wan_dit *d) { return &d->cfg; }

const mr_params *mr_wan_dit_params(const mr_wan_dit *d) { return &d->params; }

mr_status mr_wan_dit_lora_add(mr_wan_dit *d, const mr_weights *w, const char *name, const mr_lora_opts *opts,
                              mr_lora **out) {
  *out = NULL;
  if (!w) return mr_error(d->ctx, MR_EINVAL, "Wan DiT: no LoRA weights given");
  return mr_lora_attach(&d->loras, w, "Wan DiT", name ? name : "(unnamed)", opts, out);
}

const mr_lora *mr_wan_dit_lora_first(const mr_wan_dit *d) { return d->loras.first; }
