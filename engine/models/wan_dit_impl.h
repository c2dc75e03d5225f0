/* The Wan DiT's weights, shared by its loader and its forward pass. The
   tensors are owned by the parameter table (params); the fields are where
   the forward reads them. */
#ifndef MR_WAN_DIT_IMPL_H
#define MR_WAN_DIT_IMPL_H

#include "models/lora.h"
#include "models/model_util.h"

typedef struct dit_linear {
  mr_tensor *w, *b; /* w [out, in] (patch embeddings: the Conv3d's 5-D weight); b [out] */
  int param;        /* w's entry in the parameter table (LoRA terms are keyed by it) */
  const mr_lora_set *loras;
} dit_linear;

typedef struct dit_attn {
  dit_linear q, k, v, o;
  mr_tensor *norm_q, *norm_k;     /* [dim] RMS norm weights over the whole width */
  dit_linear k_img, v_img;        /* Wan 2.1 i2v cross-attention only */
  mr_tensor *norm_k_img;
} dit_attn;

typedef struct dit_block {
  mr_tensor *modulation;          /* [1, 6, dim] */
  dit_attn self_attn, cross_attn;
  mr_tensor *norm3_w, *norm3_b;   /* affine LayerNorm before cross-attention */
  dit_linear ffn0, ffn2;
  dit_linear before_proj, after_proj; /* VACE blocks only (before_proj on block 0) */
  int first_param, end_param;     /* its entries in the parameter table */
  bool streamed;                  /* its weights live in host memory until it runs */
} dit_block;

struct mr_wan_dit {
  mr_ctx *ctx;
  mr_wan_dit_config cfg;
  dit_linear patch, text0, text2, time0, time2, time_proj, head;
  mr_tensor *head_modulation;     /* [1, 2, dim] */
  /* i2v img_emb: LayerNorm, Linear, GELU, Linear, LayerNorm */
  mr_tensor *img_norm0_w, *img_norm0_b, *img_norm4_w, *img_norm4_b, *img_emb_pos;
  dit_linear img1, img3;
  dit_block *blocks;
  dit_linear vace_patch;
  dit_block *vace_blocks;
  mr_params params;               /* every tensor above, under its official name */
  mr_lora_set loras;              /* attached adapters (lora.c) */
  /* RoPE angles depend on the token grid alone: kept for the last grid */
  struct { int64_t f, h, w; mr_tensor *cos, *sin; } rope;
};

/* True when w has a DiT's patch embedding under a known prefix: detection
   errors past that point are the DiT's to report. */
bool mr_wan_dit_probe(const mr_weights *w);

#endif
