/* The Wan VAE (2.1 and 2.2) shared by its files: weights, the causal
   feature cache of chunked execution, and the block functions (in scope
   form, models/scope.h). Engine-internal.

   wan_vae_blocks.c  causal convs with their cache, residual, attention, resample
   wan_vae22.c       Wan 2.2 extras: 2x2 patchify, AvgDown3D / DupUp3D shortcuts
   wan_vae_coder.c   encoder and decoder: structure detection, parameters, one chunk forward
   wan_vae.c         the public API: chunking, latent normalisation, progress */
#ifndef MR_WAN_VAE_H
#define MR_WAN_VAE_H

#include "models/model_util.h"
#include "models/scope.h"

/* Frames a causal 3x3x3 conv keeps from the previous chunk (the reference's CACHE_T). */
#define VAE_CACHE_T 2

/* A convolution under its checkpoint names NAME.weight / NAME.bias. A
   per-frame Conv2d keeps its official [O, C, kh, kw] weight, which the
   forward reads as [O, C, 1, kh, kw]. A causal conv (temporal kernel > 1 and
   padding) pads time in front only and, with a cache slot, continues the
   previous chunk instead of zeros. */
typedef struct vae_conv {
  mr_tensor *w;  /* [O, C, kt, kh, kw] or [O, C, kh, kw], in the policy dtype */
  mr_tensor *b;  /* [O] f32 */
  int stride[3], pad[6];
  int cache;     /* slot in the coder's cache array, -1 for none */
} vae_conv;

typedef struct vae_resblock {
  mr_tensor *g1, *g2;         /* RMS norm gammas [in, 1, 1, 1], [out, 1, 1, 1] */
  vae_conv c1, c2;            /* causal 3x3x3, cached */
  vae_conv shortcut;          /* 1x1x1 when in != out (w NULL otherwise) */
} vae_resblock;

typedef struct vae_attn {
  mr_tensor *g;               /* [C, 1, 1] */
  vae_conv qkv;               /* Conv2d 1x1 to 3C */
  vae_conv proj;              /* Conv2d 1x1 C -> C: the forward reads it as a linear over channels */
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

/* Encoder or decoder. Its tensors belong to the VAE's parameter table. */
typedef struct vae_coder {
  vae_conv conv1;
  vae_layer *layers;          /* downsamples / upsamples, then the middle three (decoder: middle first) */
  int nlayers;
  mr_tensor *head_g;
  vae_conv head;
  int in_ch, out_ch;
  /* Chunk state, owned by the coder (not by any scope): cached input frames
     per cache slot, first-chunk states per resample. */
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
  vae_conv conv1;             /* [2z, 2z, 1, 1, 1]: mu rows, then log_var rows (never used) */
  vae_conv conv2;
  mr_params params;           /* every tensor of the checkpoint, under its official name */
  mr_tensor *mean, *std;      /* [z, 1, 1, 1] f32 latent statistics (not parameters) */
  bool have_stats;            /* false: no released VAE has this z_dim; latents are raw mu */
  int decode_chunk;           /* latent frames per decode chunk after the first; 0: by MR_WAN_VAE_CHUNK_PIXELS */
};

/* ---------------------------------------------------------------- blocks (wan_vae_blocks.c) */

/* Each returns a tensor the scope owns (NULL after an error) and collects
   its own intermediates before returning: the VAE's activations are large,
   so they go as soon as they are used. */

/* conv(x) with the conv's stride and padding, no cache. */
mr_tensor *mr_vae_conv_plain(mr_scope *s, const vae_conv *cv, const mr_tensor *x);
/* conv(x) continuing the previous chunk through the coder's cache for that conv. */
mr_tensor *mr_vae_causal_conv(mr_scope *s, vae_coder *cd, const vae_conv *cv, const mr_tensor *x);
mr_tensor *mr_vae_resblock_forward(mr_scope *s, vae_coder *cd, const vae_resblock *rb, const mr_tensor *x);
mr_tensor *mr_vae_attn_forward(mr_scope *s, const vae_attn *at, const mr_tensor *x);
mr_tensor *mr_vae_resample_forward(mr_scope *s, vae_coder *cd, const vae_resample *rs, const mr_tensor *x);
/* RMS norm then SiLU. */
mr_tensor *mr_vae_norm_silu(mr_scope *s, const mr_tensor *x, const mr_tensor *gamma);
/* Frees the chunk state of a coder (start and end of every encode/decode). */
void mr_vae_coder_reset(vae_coder *cd);

/* ---------------------------------------------------------------- Wan 2.2 (wan_vae22.c) */

/* x [3, T, H, W] -> [12, T, H/2, W/2], channel c*4 + r*2 + q for row offset q, column offset r. */
mr_tensor *mr_vae_patchify(mr_scope *s, const mr_tensor *x);
/* The inverse, written into dst [3, T, 2h, 2w] (a view). */
void mr_vae_unpatchify_into(mr_scope *s, const mr_tensor *x, mr_tensor *dst);
/* AvgDown3D(in, out, ft, fs) of x. */
mr_tensor *mr_vae_avg_down(mr_scope *s, const mr_tensor *x, int in, int out, int ft, int fs);
/* DupUp3D(in, out, ft, fs) of x; first_chunk drops the first ft - 1 frames. */
mr_tensor *mr_vae_dup_up(mr_scope *s, const mr_tensor *x, int in, int out, int ft, int fs, bool first_chunk);

/* ---------------------------------------------------------------- coders (wan_vae_coder.c) */

/* Detects the structure from the checkpoint's names and shapes and declares
   the coder's parameters in P (loaded later by mr_params_load). On failure
   cd holds what was built; mr_vae_coder_free releases it (after P is released:
   the table's slots point into cd). */
mr_status mr_vae_coder_declare(mr_loader *L, mr_params *P, vae_coder *cd, bool encoder, int version, int z_dim);
/* Frees the coder's structure and chunk state (its tensors are the table's). */
void mr_vae_coder_free(vae_coder *cd);
/* One chunk through the coder (conv1, layers, head) with its cache. */
mr_tensor *mr_vae_coder_forward(mr_scope *s, vae_coder *cd, const mr_tensor *x);
/* Spatial downsampling steps and temporal ones of the encoder. */
void mr_vae_coder_strides(const vae_coder *enc, int *spatial_steps, int *temporal_steps);

#endif
