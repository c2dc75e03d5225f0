/* The Wan VAE (2.1 and 2.2) shared by its files: weights, the causal
   feature cache of chunked execution, and the block functions.
   Engine-internal.

   wan_vae_blocks.c  causal convs with their cache, residual, attention, resample
   wan_vae22.c       Wan 2.2 extras: 2x2 patchify, AvgDown3D / DupUp3D shortcuts
   wan_vae_coder.c   encoder and decoder: structure detection, loading, one chunk forward
   wan_vae.c         the public API: chunking, latent normalisation, progress */
#ifndef MR_WAN_VAE_H
#define MR_WAN_VAE_H

#include "models/model_util.h"

/* Frames a causal 3x3x3 conv keeps from the previous chunk (the reference's CACHE_T). */
#define VAE_CACHE_T 2

/* A convolution; 2-D ones are stored as kt = 1. A causal conv (temporal
   kernel > 1 and padding) pads time in front only and, with a cache slot,
   continues the previous chunk instead of zeros. */
typedef struct vae_conv {
  mr_tensor *w;  /* [O, C, kt, kh, kw] in the policy dtype */
  mr_tensor *b;  /* [O] f32 */
  int stride[3], pad[6];
  int cache;     /* slot in the coder's cache array, -1 for none */
} vae_conv;

typedef struct vae_resblock {
  mr_tensor *g1, *g2;         /* RMS norm gammas [in], [out] */
  vae_conv c1, c2;            /* causal 3x3x3, cached */
  vae_conv shortcut;          /* 1x1x1 when in != out (w NULL otherwise) */
} vae_resblock;

typedef struct vae_attn {
  int C;
  mr_tensor *g;               /* [C] */
  vae_conv qkv;               /* 1x1 conv to 3C */
  mr_tensor *proj_w, *proj_b; /* [C, C] (a linear over channels), [C] */
} vae_attn;

typedef enum vae_resample_mode { VAE_DOWN2D, VAE_DOWN3D, VAE_UP2D, VAE_UP3D } vae_resample_mode;

typedef struct vae_resample {
  vae_resample_mode mode;
  vae_conv conv;              /* the spatial 3x3 conv (per frame) */
  vae_conv time;              /* time_conv of the 3-D modes */
  int state;                  /* slot of the first-chunk state (3-D modes) */
} vae_resample;

typedef enum vae_layer_kind { VAE_RES, VAE_ATTN, VAE_RESAMPLE, VAE_STAGE } vae_layer_kind;

/* One module of a coder's sequence. VAE_STAGE is a Wan 2.2 Down_/Up_ResidualBlock:
   its own sequence plus a weightless shortcut (AvgDown3D / DupUp3D). */
typedef struct vae_layer {
  vae_layer_kind kind;
  vae_resblock res;
  vae_attn attn;
  vae_resample rs;
  struct vae_layer *sub;
  int nsub;
  int sc_in, sc_out, sc_ft, sc_fs; /* shortcut channels and factors; sc_fs 0 = no shortcut */
  bool sc_dup;                     /* DupUp3D (decoder) rather than AvgDown3D (encoder) */
} vae_layer;

/* Cache states of chunked execution. */
enum { VAE_FIRST = 0, VAE_REP = 1, VAE_NORMAL = 2 };

/* Encoder or decoder. */
typedef struct vae_coder {
  vae_conv conv1;
  vae_layer *layers;          /* downsamples / upsamples, then the middle three */
  int nlayers;
  mr_tensor *head_g;
  vae_conv head;
  int in_ch, out_ch;
  /* Chunk state: cached input frames per cache slot, first-chunk states per resample. */
  mr_tensor **cache;
  int ncache;
  int *state;
  int nstate;
  bool first_chunk;
} vae_coder;

struct mr_wan_vae {
  mr_ctx *ctx;
  int version;                /* 21 or 22 */
  int z_dim, sstride, tstride;
  vae_coder enc, dec;
  vae_conv conv1;             /* mu rows of the top 1x1 conv (log_var is never used) */
  vae_conv conv2;
  mr_tensor *mean, *std;      /* [z, 1, 1, 1] f32 latent statistics */
  bool have_stats;            /* false: no released VAE has this z_dim; latents are raw mu */
};

/* ---------------------------------------------------------------- blocks (wan_vae_blocks.c) */

/* out = conv(x) with the coder's cache for that conv (continuing the previous chunk). */
mr_status vae_conv_run(vae_coder *cd, vae_conv *cv, mr_tensor *x, mr_tensor **out);
mr_status vae_resblock_run(vae_coder *cd, vae_resblock *rb, mr_tensor *x, mr_tensor **out);
mr_status vae_attn_run(vae_attn *at, mr_tensor *x, mr_tensor **out);
mr_status vae_resample_run(vae_coder *cd, vae_resample *rs, mr_tensor *x, mr_tensor **out);
/* RMS norm then SiLU. */
mr_status vae_norm_silu(mr_tensor *x, mr_tensor *gamma, mr_tensor **out);
/* [C, Ta + Tb, H, W] from a and b (either may be NULL). */
mr_status vae_cat_time(mr_tensor *a, mr_tensor *b, mr_tensor **out);
/* A contiguous copy of the last n frames of x (fewer if x is shorter). */
mr_status vae_tail_frames(mr_tensor *x, int64_t n, mr_tensor **out);
/* Frees the chunk state of a coder (start and end of every encode/decode). */
void vae_coder_reset(vae_coder *cd);

/* ---------------------------------------------------------------- Wan 2.2 (wan_vae22.c) */

/* x [3, T, H, W] -> [12, T, H/2, W/2], channel c*4 + r*2 + q for row offset q, column offset r. */
mr_status vae_patchify(mr_tensor *x, mr_tensor **out);
/* The inverse, written into dst [3, T, 2h, 2w] (a view). */
mr_status vae_unpatchify_into(mr_tensor *x, mr_tensor *dst);
/* AvgDown3D(in, out, ft, fs) of x. */
mr_status vae_avg_down(mr_tensor *x, int in, int out, int ft, int fs, mr_tensor **y);
/* DupUp3D(in, out, ft, fs) of x; first_chunk drops the first ft - 1 frames. */
mr_status vae_dup_up(mr_tensor *x, int in, int out, int ft, int fs, bool first_chunk, mr_tensor **y);

/* ---------------------------------------------------------------- coders (wan_vae_coder.c) */

/* Detects the structure from the tensors and loads it (encoder or decoder).
   On failure cd holds what was loaded; vae_coder_free releases it. */
mr_status vae_coder_load(mr_loader *L, vae_coder *cd, bool encoder, int version, int z_dim);
void vae_coder_free(vae_coder *cd);
/* One chunk through the coder (conv1, layers, head) with its cache. */
mr_status vae_coder_run(mr_wan_vae *vae, vae_coder *cd, mr_tensor *x, mr_tensor **out);
/* Spatial downsampling steps and temporal ones of the encoder. */
void vae_coder_strides(const vae_coder *enc, int *spatial_steps, int *temporal_steps);

#endif
