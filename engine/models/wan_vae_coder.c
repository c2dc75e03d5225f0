/* The Wan VAE encoder and decoder: their structure is read from the tensor
   names and shapes (so any width, depth or number of stages loads) and each
   parameter is declared once in the VAE's table under its checkpoint name;
   then one chunk at a time runs through conv1, the down/up sequence, the
   middle and the head.

   Wan 2.1 names modules flat (`encoder.downsamples.N.residual...`); Wan 2.2
   groups them in stages (`encoder.downsamples.S.downsamples.N...`) that add
   a weightless shortcut (AvgDown3D going down, DupUp3D going up). */
#include "models/wan_vae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- structure and parameters */

typedef struct coder_decl {
  mr_loader *L;   /* the checkpoint: names and shapes for the structure */
  mr_params *P;   /* where each parameter is declared (loaded after) */
  vae_coder *cd;
  bool encoder;
} coder_decl;

/* The shape of name in the checkpoint, for the structure (read before
   loading); missing or of another rank is MR_EFORMAT naming it. */
static mr_status shape_of(const mr_loader *L, const char *name, int ndim, int64_t *shape) {
  int64_t s[MR_WEIGHT_MAX_DIMS];
  int nd = mr_loader_shape(L, name, s);
  if (nd == 0) return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%s%s' is missing", L->what, L->prefix, name);
  if (nd != ndim)
    return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%s%s' has %d dims, expected %d", L->what, L->prefix, name, nd, ndim);
  memcpy(shape, s, (size_t)ndim * sizeof *shape);
  return MR_OK;
}

/* NAME.weight [O, C, kt, kh, kw] (two_d: a per-frame Conv2d's [O, C, kh, kw]) and NAME.bias [O]. */
static void conv(const coder_decl *D, vae_conv *cv, const char *name, int64_t O, int64_t C, int kt, int kh, int kw,
                 bool two_d) {
  *cv = (vae_conv){.stride = {1, 1, 1}, .cache = -1};
  if (two_d) mr_params_add(D->P, &cv->w, MR_PARAM_WEIGHT, 4, (int64_t[]){O, C, kh, kw}, "%s.weight", name);
  else mr_params_add(D->P, &cv->w, MR_PARAM_WEIGHT, 5, (int64_t[]){O, C, kt, kh, kw}, "%s.weight", name);
  mr_params_add(D->P, &cv->b, MR_PARAM_F32, 1, (int64_t[]){O}, "%s.bias", name);
}

/* A CausalConv3d with kernel 3 and padding 1: 2 zero frames in front, cached. */
static void causal3(const coder_decl *D, vae_conv *cv, const char *name, int64_t O, int64_t C) {
  conv(D, cv, name, O, C, 3, 3, 3, false);
  memcpy(cv->pad, (const int[6]){2, 0, 1, 1, 1, 1}, sizeof cv->pad);
  cv->cache = D->cd->ncache++;
}

/* An RMS_norm gamma: [C, 1, 1, 1] in 3-D blocks, [C, 1, 1] in the attention. */
static void norm_gamma(const coder_decl *D, mr_tensor **g, const char *name, int64_t C, int ndim) {
  mr_params_add(D->P, g, MR_PARAM_F32, ndim, (int64_t[]){C, 1, 1, 1}, "%s", name);
}

static mr_status resblock(const coder_decl *D, vae_resblock *rb, const char *p, int64_t *ch) {
  char n[256];
  int64_t in = *ch, w[5];
  mr_status st = shape_of(D->L, mr_loader_name(n, sizeof n, "%s.residual.2.weight", p), 5, w);
  if (st != MR_OK) return st;
  int64_t out = w[0];
  norm_gamma(D, &rb->g1, mr_loader_name(n, sizeof n, "%s.residual.0.gamma", p), in, 4);
  causal3(D, &rb->c1, mr_loader_name(n, sizeof n, "%s.residual.2", p), out, in);
  norm_gamma(D, &rb->g2, mr_loader_name(n, sizeof n, "%s.residual.3.gamma", p), out, 4);
  causal3(D, &rb->c2, mr_loader_name(n, sizeof n, "%s.residual.6", p), out, out);
  if (in != out || mr_loader_has(D->L, mr_loader_name(n, sizeof n, "%s.shortcut.weight", p)))
    conv(D, &rb->shortcut, mr_loader_name(n, sizeof n, "%s.shortcut", p), out, in, 1, 1, 1, false);
  *ch = out;
  return MR_OK;
}

static void attention(const coder_decl *D, vae_attn *at, const char *p, int64_t C) {
  char n[256];
  norm_gamma(D, &at->g, mr_loader_name(n, sizeof n, "%s.norm.gamma", p), C, 3);
  conv(D, &at->qkv, mr_loader_name(n, sizeof n, "%s.to_qkv", p), 3 * C, C, 1, 1, 1, true);
  conv(D, &at->proj, mr_loader_name(n, sizeof n, "%s.proj", p), C, C, 1, 1, 1, true);
}

static mr_status resample(const coder_decl *D, vae_resample *rs, const char *p, int64_t *ch) {
  char n[256];
  int64_t C = *ch;
  vae_coder *cd = D->cd;
  bool timed = mr_loader_has(D->L, mr_loader_name(n, sizeof n, "%s.time_conv.weight", p));
  rs->state = timed ? cd->nstate++ : -1;
  if (D->encoder) {
    /* ZeroPad2d(0, 1, 0, 1) + 3x3 stride 2 per frame; time_conv: (3,1,1), stride 2, no padding */
    rs->mode = timed ? VAE_DOWN3D : VAE_DOWN2D;
    conv(D, &rs->conv, mr_loader_name(n, sizeof n, "%s.resample.1", p), C, C, 1, 3, 3, true);
    memcpy(rs->conv.stride, (const int[3]){1, 2, 2}, sizeof rs->conv.stride);
    memcpy(rs->conv.pad, (const int[6]){0, 0, 0, 1, 0, 1}, sizeof rs->conv.pad);
    if (timed) {
      conv(D, &rs->time, mr_loader_name(n, sizeof n, "%s.time_conv", p), C, C, 3, 1, 1, false);
      rs->time.stride[0] = 2;
      rs->time.cache = cd->ncache++; /* holds the last frame */
    }
    return MR_OK;
  }
  /* time_conv C -> 2C, (3,1,1), causal padding; then nearest x2 and a 3x3 conv (C/2 in 2.1, C in 2.2) */
  rs->mode = timed ? VAE_UP3D : VAE_UP2D;
  if (timed) {
    conv(D, &rs->time, mr_loader_name(n, sizeof n, "%s.time_conv", p), 2 * C, C, 3, 1, 1, false);
    rs->time.pad[0] = 2;
    rs->time.cache = cd->ncache++;
  }
  int64_t w[4];
  mr_status st = shape_of(D->L, mr_loader_name(n, sizeof n, "%s.resample.1.weight", p), 4, w);
  if (st != MR_OK) return st;
  conv(D, &rs->conv, mr_loader_name(n, sizeof n, "%s.resample.1", p), w[0], C, 1, 3, 3, true);
  memcpy(rs->conv.pad, (const int[6]){0, 0, 1, 1, 1, 1}, sizeof rs->conv.pad);
  *ch = w[0];
  return MR_OK;
}

/* Modules P.0, P.1, ... (residual blocks and resamples) until none. */
static int count_modules(const mr_loader *L, const char *P) {
  char n[256];
  int count = 0;
  for (;; count++) {
    bool res = mr_loader_has(L, mr_loader_name(n, sizeof n, "%s.%d.residual.0.gamma", P, count));
    bool rsm = mr_loader_has(L, mr_loader_name(n, sizeof n, "%s.%d.resample.1.weight", P, count));
    if (!res && !rsm) return count;
  }
}

/* Declares the modules P.0 .. P.(n-1) into layers[0..n). */
static mr_status sequence(const coder_decl *D, const char *P, vae_layer *layers, int n, int64_t *ch) {
  char p[256], g[256];
  for (int i = 0; i < n; i++) {
    vae_layer *ly = &layers[i];
    mr_loader_name(p, sizeof p, "%s.%d", P, i);
    mr_status st;
    if (mr_loader_has(D->L, mr_loader_name(g, sizeof g, "%s.residual.0.gamma", p))) {
      ly->kind = VAE_RES;
      st = resblock(D, &ly->res, p, ch);
    } else {
      ly->kind = VAE_RESAMPLE;
      st = resample(D, &ly->rs, p, ch);
    }
    if (st != MR_OK) return st;
  }
  return MR_OK;
}

/* Wan 2.2 stages P.S.downsamples.* / P.S.upsamples.*, each with its shortcut. */
static const char *stage_inner(bool encoder) { return encoder ? "downsamples" : "upsamples"; }

static int count_stages(const mr_loader *L, const char *P, bool encoder) {
  char n[256];
  int count = 0;
  while (mr_loader_has(L, mr_loader_name(n, sizeof n, "%s.%d.%s.0.residual.0.gamma", P, count, stage_inner(encoder))))
    count++;
  return count;
}

static mr_status stages(const coder_decl *D, const char *P, vae_layer *layers, int n, int64_t *ch) {
  char p[256];
  bool encoder = D->encoder;
  for (int i = 0; i < n; i++) {
    vae_layer *ly = &layers[i];
    ly->kind = VAE_STAGE;
    int64_t in = *ch;
    mr_loader_name(p, sizeof p, "%s.%d.%s", P, i, stage_inner(encoder));
    ly->nsub = count_modules(D->L, p);
    if (!(ly->sub = calloc((size_t)ly->nsub, sizeof *ly->sub))) return mr_error(D->L->ctx, MR_ENOMEM, "out of host memory");
    mr_status st = sequence(D, p, ly->sub, ly->nsub, ch);
    if (st != MR_OK) return st;
    const vae_resample *rs = NULL;
    for (int j = 0; j < ly->nsub; j++)
      if (ly->sub[j].kind == VAE_RESAMPLE) rs = &ly->sub[j].rs;
    ly->sc_in = (int)in;
    ly->sc_out = (int)*ch;
    ly->sc_ft = rs && (rs->mode == VAE_DOWN3D || rs->mode == VAE_UP3D) ? 2 : 1;
    ly->sc_fs = rs ? 2 : 1;
    ly->sc_dup = !encoder;
    if (!encoder && !rs) ly->sc_fs = 0; /* Up_ResidualBlock without up_flag: no shortcut */
    if (ly->sc_fs) {
      int F = ly->sc_ft * ly->sc_fs * ly->sc_fs;
      int64_t a = encoder ? (int64_t)ly->sc_in * F : (int64_t)ly->sc_out * F, b = encoder ? ly->sc_out : ly->sc_in;
      bool ok = b > 0 && a % b == 0 && a / b > 0 && F % (a / b) == 0;
      if (!ok)
        return mr_error(D->L->ctx, MR_EUNSUPPORTED, "%s: stage %s.%d: a %s shortcut from %d to %d channels is not supported",
                        D->L->what, P, i, encoder ? "AvgDown3D" : "DupUp3D", ly->sc_in, ly->sc_out);
    }
  }
  return MR_OK;
}

/* middle.0 (residual), middle.1 (attention), middle.2 (residual). */
static mr_status middle(const coder_decl *D, const char *c, vae_layer *mid, int64_t *ch) {
  char p[256];
  mid[0].kind = VAE_RES;
  mid[1].kind = VAE_ATTN;
  mid[2].kind = VAE_RES;
  mr_status st = resblock(D, &mid[0].res, mr_loader_name(p, sizeof p, "%s.middle.0", c), ch);
  if (st != MR_OK) return st;
  attention(D, &mid[1].attn, mr_loader_name(p, sizeof p, "%s.middle.1", c), *ch);
  return resblock(D, &mid[2].res, mr_loader_name(p, sizeof p, "%s.middle.2", c), ch);
}

mr_status mr_vae_coder_declare(mr_loader *L, mr_params *P, vae_coder *cd, bool encoder, int version, int z_dim) {
  char n[256], S[64];
  const char *c = encoder ? "encoder" : "decoder";
  coder_decl D = {L, P, cd, encoder};
  memset(cd, 0, sizeof *cd);
  int64_t w[5];
  mr_status st = shape_of(L, mr_loader_name(n, sizeof n, "%s.conv1.weight", c), 5, w);
  if (st != MR_OK) return st;
  cd->in_ch = (int)w[1];
  int64_t ch = w[0];
  causal3(&D, &cd->conv1, mr_loader_name(n, sizeof n, "%s.conv1", c), w[0], encoder ? w[1] : z_dim);
  snprintf(S, sizeof S, "%s.%s", c, encoder ? "downsamples" : "upsamples");
  int nseq = version == 22 ? count_stages(L, S, encoder) : count_modules(L, S);
  if (nseq == 0) return mr_error(L->ctx, MR_EFORMAT, "%s: no modules under '%s%s'", L->what, L->prefix, S);
  /* encoder: conv1, downsamples, middle, head; decoder: conv1, middle, upsamples, head.
     The layers are allocated first: the table's slots point into them. */
  if (!(cd->layers = calloc((size_t)nseq + 3, sizeof *cd->layers))) return mr_error(L->ctx, MR_ENOMEM, "out of host memory");
  cd->nlayers = nseq + 3;
  vae_layer *seq = cd->layers + (encoder ? 0 : 3), *mid = cd->layers + (encoder ? nseq : 0);
  if (!encoder && (st = middle(&D, c, mid, &ch)) != MR_OK) return st;
  st = version == 22 ? stages(&D, S, seq, nseq, &ch) : sequence(&D, S, seq, nseq, &ch);
  if (st != MR_OK) return st;
  if (encoder && (st = middle(&D, c, mid, &ch)) != MR_OK) return st;
  norm_gamma(&D, &cd->head_g, mr_loader_name(n, sizeof n, "%s.head.0.gamma", c), ch, 4);
  if ((st = shape_of(L, mr_loader_name(n, sizeof n, "%s.head.2.weight", c), 5, w)) != MR_OK) return st;
  causal3(&D, &cd->head, mr_loader_name(n, sizeof n, "%s.head.2", c), w[0], ch);
  cd->out_ch = (int)w[0];
  cd->cache = calloc((size_t)cd->ncache + 1, sizeof *cd->cache);
  cd->state = calloc((size_t)cd->nstate + 1, sizeof *cd->state);
  if (!cd->cache || !cd->state) return mr_error(L->ctx, MR_ENOMEM, "out of host memory");
  return MR_OK;
}

void mr_vae_coder_free(vae_coder *cd) {
  if (cd->cache) mr_vae_coder_reset(cd);
  for (int i = 0; i < cd->nlayers; i++) free(cd->layers[i].sub);
  free(cd->layers);
  free(cd->cache);
  free(cd->state);
  memset(cd, 0, sizeof *cd);
}

void mr_vae_coder_strides(const vae_coder *enc, int *spatial_steps, int *temporal_steps) {
  *spatial_steps = *temporal_steps = 0;
  for (int i = 0; i < enc->nlayers; i++) {
    const vae_layer *ly = &enc->layers[i];
    int n = ly->kind == VAE_STAGE ? ly->nsub : 1;
    for (int j = 0; j < n; j++) {
      const vae_layer *l = ly->kind == VAE_STAGE ? &ly->sub[j] : ly;
      if (l->kind != VAE_RESAMPLE) continue;
      (*spatial_steps)++;
      if (l->rs.mode == VAE_DOWN3D) (*temporal_steps)++;
    }
  }
}

/* ---------------------------------------------------------------- one chunk */

static mr_tensor *layer(mr_scope *s, vae_coder *cd, const vae_layer *ly, const mr_tensor *x);

/* layers[0..n) over x, each layer's temporaries collected as it ends. x is
   freed after the first layer (when the scope owns it) unless keep_x: a
   stage's shortcut still reads it. */
static mr_tensor *sequence_forward(mr_scope *s, vae_coder *cd, const vae_layer *layers, int n, const mr_tensor *x,
                                   bool keep_x) {
  mr_tensor *cur = (mr_tensor *)x;
  for (int i = 0; i < n && mr_scope_ok(s); i++) {
    size_t mark = mr_scope_mark(s);
    cur = mr_scope_collect(s, mark, layer(s, cd, &layers[i], cur), cur == x && keep_x ? NULL : cur);
  }
  return cur;
}

static mr_tensor *layer(mr_scope *s, vae_coder *cd, const vae_layer *ly, const mr_tensor *x) {
  switch (ly->kind) {
  case VAE_RES: return mr_vae_resblock_forward(s, cd, &ly->res, x);
  case VAE_ATTN: return mr_vae_attn_forward(s, &ly->attn, x);
  case VAE_RESAMPLE: return mr_vae_resample_forward(s, cd, &ly->rs, x);
  case VAE_STAGE: break;
  }
  mr_tensor *y = sequence_forward(s, cd, ly->sub, ly->nsub, x, true);
  if (!ly->sc_fs) return y;
  if (ly->sc_dup) return sc_add(s, y, mr_vae_dup_up(s, x, ly->sc_in, ly->sc_out, ly->sc_ft, ly->sc_fs, cd->first_chunk));
  if (ly->sc_ft * ly->sc_fs == 1 && ly->sc_in == ly->sc_out) return sc_add(s, y, x); /* identity */
  return sc_add(s, y, mr_vae_avg_down(s, x, ly->sc_in, ly->sc_out, ly->sc_ft, ly->sc_fs));
}

mr_tensor *mr_vae_coder_forward(mr_scope *s, vae_coder *cd, const mr_tensor *x) {
  size_t mark = mr_scope_mark(s);
  mr_tensor *h = sequence_forward(s, cd, cd->layers, cd->nlayers, mr_vae_causal_conv(s, cd, &cd->conv1, x), false);
  h = mr_scope_collect(s, mark, mr_vae_norm_silu(s, h, cd->head_g), NULL);
  return mr_scope_collect(s, mark, mr_vae_causal_conv(s, cd, &cd->head, h), NULL);
}
