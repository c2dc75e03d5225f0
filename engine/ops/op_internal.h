/* Internal entry points of the op families: variant selection for tests and
   benchmarks, helpers one op family offers another. Engine-internal. Each
   family keeps its declarations in its own section. */
#ifndef MR_OP_INTERNAL_H
#define MR_OP_INTERNAL_H

#include "moonreel.h"

/* ---------------------------------------------------------------- matmul, attention (op_matmul.c, op_attention.c) */

/* Kernel variants. AUTO picks per device (LANES on CPU-type devices with
   subgroup shuffles, REG on other CPU-type devices, SMEM otherwise); the
   others force one kernel so tests can run every variant. */
typedef enum mr_matmul_variant {
  MR_MATMUL_AUTO,
  MR_MATMUL_REG,        /* matmul_reg.comp: barrier-free, 4x4 outputs per invocation */
  MR_MATMUL_SMEM,       /* matmul_smem.comp: 64x64 workgroup tile, 4x4 per thread */
  MR_MATMUL_SMEM_LARGE, /* matmul_smem.comp: 128x128 workgroup tile, 8x8 per thread */
  MR_MATMUL_LANES,      /* matmul_lanes.comp: barrier-free, x and w as texel buffers, rows shared by a
                           subgroup (subgroupShuffle); REG where the device has no subgroup shuffle */
  MR_MATMUL_VARIANTS
} mr_matmul_variant;

/* An activation a matmul kernel applies to its outputs (common.glsl's MR_ACT). */
typedef enum mr_matmul_act { MR_MATMUL_ACT_NONE, MR_MATMUL_ACT_GELU_TANH } mr_matmul_act;

/* mr_op_matmul, then act on every output, in the same kernel (an FFN's
   GELU: one pass over its widest activation saved). */
mr_status mr_op_matmul_act(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, mr_matmul_act act,
                           int variant, mr_tensor **out);

/* mr_op_matmul with a chosen kernel. */
mr_status mr_op_matmul_variant(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, int variant,
                               mr_tensor **out);

typedef enum mr_attention_variant {
  MR_ATTENTION_AUTO,
  MR_ATTENTION_REG,   /* attention_reg.comp: one invocation per (query row, head), no barriers */
  MR_ATTENTION_TILED, /* attention.comp: FlashAttention-2 style, K/V tiles in shared memory */
  MR_ATTENTION_LANES, /* attention_lanes.comp: attention_reg with K and V read as texel buffers */
  MR_ATTENTION_DLANES, /* attention_dlanes.comp: a subgroup per SG query rows, its lanes split D */
  MR_ATTENTION_VARIANTS
} mr_attention_variant;

/* mr_op_attention with a chosen kernel. */
mr_status mr_op_attention_variant(const mr_tensor *q, const mr_tensor *k, const mr_tensor *v,
                                  const mr_attention_opts *opts, int variant, mr_tensor **out);

/* ---------------------------------------------------------------- row-wise ops (op_norm.c, op_softmax.c, op_reduce.c) */

/* Kernel shapes of layer_norm, rms_norm, softmax and reduce (shaders/rows.glsl).
   AUTO picks per device and shape (PER_INVOCATION on CPU-type devices, for
   short rows, and for strided rows whose neighbours are adjacent in memory;
   PER_WORKGROUP otherwise); the others force one kernel so tests run both. */
typedef enum mr_rows_variant {
  MR_ROWS_AUTO,
  MR_ROWS_PER_INVOCATION, /* one row per invocation, no barriers */
  MR_ROWS_PER_WORKGROUP,  /* one workgroup per row, shared-memory tree reduction */
  MR_ROWS_VARIANTS
} mr_rows_variant;

/* The public ops with a chosen kernel (variant: an mr_rows_variant). */
mr_status mr_op_layer_norm_variant(const mr_tensor *x, const mr_tensor *weight, const mr_tensor *bias, float eps,
                                   int variant, mr_tensor **out);
mr_status mr_op_rms_norm_variant(const mr_tensor *x, const mr_tensor *weight, float eps, int variant,
                                 mr_tensor **out);
/* LayerNorm without affine, then * (scale + add) + shift with scale and
   shift [1, T, C] (T = 1 or L) broadcast over x [B, L, C]: a DiT's
   modulation in one pass where it can (op_norm.c); variant: an
   mr_rows_variant. */
mr_status mr_op_layer_norm_modulate(const mr_tensor *x, const mr_tensor *scale, float add, const mr_tensor *shift,
                                    float eps, int variant, mr_tensor **out);
/* RMSNorm of x [B, L, H, D] over H·D with weight w [H·D], then RoPE (the
   tables of mr_op_rope): a DiT's q and k in one pass where it can (op_rope.c). */
mr_status mr_op_rms_norm_rope(const mr_tensor *x, const mr_tensor *w, float eps, const mr_tensor *cos,
                              const mr_tensor *sin, mr_tensor **out);
mr_status mr_op_softmax_variant(const mr_tensor *x, int dim, int variant, mr_tensor **out);
mr_status mr_op_reduce_variant(mr_reduce_op op, const mr_tensor *x, int dim, bool keepdim, int variant,
                               mr_tensor **out);

/* ---------------------------------------------------------------- linear combinations (op_lincomb.c) */

/* mr_op_lincomb with a chosen output dtype (F32, F16 or BF16): the samplers
   keep their history in f32 whatever the latent's dtype. */
mr_status mr_op_lincomb_dtype(int n, const mr_tensor *const *xs, const float *coeffs, mr_dtype dtype,
                              mr_tensor **out);

#endif
