/* Which component a checkpoint holds, from tensor names and shapes alone. */
#include "core/core.h"
#include "models/wan_dit_impl.h"

#include <stdio.h>
#include <string.h>

const char *mr_model_kind_name(mr_model_kind k) {
  switch (k) {
  case MR_MODEL_WAN_DIT: return "wan-dit";
  case MR_MODEL_UMT5: return "umt5";
  case MR_MODEL_WAN_VAE: return "wan-vae";
  case MR_MODEL_CLIP_VISION: return "clip-vision";
  default: return "unknown";
  }
}

static int shape_of(const mr_weights *w, const char *name, int64_t *shape) {
  mr_weight_info info;
  int i = mr_weights_find(w, name);
  if (i < 0 || mr_weights_get(w, i, &info) != MR_OK) return 0;
  for (int d = 0; d < info.ndim; d++) shape[d] = info.shape[d];
  return info.ndim;
}

static int count_blocks(const mr_weights *w, const char *fmt) {
  char name[160];
  int n = 0;
  while (snprintf(name, sizeof name, fmt, n), mr_weights_find(w, name) >= 0) n++;
  return n;
}

static int64_t all_params(const mr_weights *w) {
  int64_t total = 0;
  mr_weight_info info;
  for (int i = 0; i < mr_weights_count(w); i++) {
    if (mr_weights_get(w, i, &info) != MR_OK) continue;
    int64_t n = 1;
    for (int d = 0; d < info.ndim; d++) n *= info.shape[d];
    total += n;
  }
  return total;
}

mr_status mr_model_detect(mr_ctx *ctx, const mr_weights *w, const char *config_json, mr_model_info *out) {
  memset(out, 0, sizeof *out);
  int64_t s[MR_WEIGHT_MAX_DIMS];
  mr_wan_dit_config dc;
  mr_status dst = mr_wan_dit_detect(ctx, w, config_json, &dc);
  if (dst != MR_OK && mr_wan_dit_probe(w)) return dst; /* a DiT with a problem: its own reason */
  if (dst == MR_OK) {
    out->kind = MR_MODEL_WAN_DIT;
    out->dit = dc;
    snprintf(out->variant, sizeof out->variant, "%s", dc.model_type);
    out->n_params = dc.n_params;
    out->dim = dc.dim;
    out->layers = dc.num_layers;
    out->heads = dc.num_heads;
    return MR_OK;
  }
  /* umT5: the official names, or Hugging Face's encoder.* / shared.* */
  if (shape_of(w, "token_embedding.weight", s) == 2 || shape_of(w, "shared.weight", s) == 2 ||
      shape_of(w, "encoder.embed_tokens.weight", s) == 2) {
    out->kind = MR_MODEL_UMT5;
    snprintf(out->variant, sizeof out->variant, "umt5");
    out->dim = (int)s[1];
    out->layers = count_blocks(w, "blocks.%d.norm1.weight");
    if (!out->layers) out->layers = count_blocks(w, "encoder.block.%d.layer.0.layer_norm.weight");
    if (shape_of(w, "blocks.0.pos_embedding.embedding.weight", s) == 2 ||
        shape_of(w, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", s) == 2)
      out->heads = (int)s[1];
    out->n_params = all_params(w);
    return MR_OK;
  }
  /* Wan VAE: 2.2 patchifies (12 input channels) and ends in 12 outputs */
  if (shape_of(w, "encoder.conv1.weight", s) == 5 && mr_weights_find(w, "decoder.conv1.weight") >= 0) {
    out->kind = MR_MODEL_WAN_VAE;
    out->dim = (int)s[0];
    snprintf(out->variant, sizeof out->variant, "%s", s[1] == 12 ? "2.2" : "2.1");
    if (shape_of(w, "conv2.weight", s) == 5) out->z_dim = (int)s[0];
    out->n_params = all_params(w);
    return MR_OK;
  }
  if (shape_of(w, "visual.patch_embedding.weight", s) == 4) {
    out->kind = MR_MODEL_CLIP_VISION;
    snprintf(out->variant, sizeof out->variant, "clip-vit");
    out->dim = (int)s[0];
    out->layers = count_blocks(w, "visual.transformer.%d.norm1.weight");
    out->heads = out->dim % 80 == 0 ? out->dim / 80 : 0;
    out->n_params = all_params(w);
    return MR_OK;
  }
  return mr_error(ctx, MR_EFORMAT, "no known model in this checkpoint (not a Wan DiT, umT5, Wan VAE or CLIP)");
}
