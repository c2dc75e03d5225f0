/* The Wan VAE encoder and decoder: their structure is read from the tensor
   names and shapes (so any width, depth or number of stages loads), then
   one chunk at a time runs through conv1, the down/up sequence, the middle
   and the head.

   Wan 2.1 names modules flat (`encoder.downsamples.N.residual...`); Wan 2.2
   groups them in stages (`encoder.downsamples.S.downsamples.N...`) that add
   a weightless shortcut (AvgDown3D going down, DupUp3D going up). */
#include "models/wan_vae.h"

#include "tensor/tensor_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Activations above this many bytes are synced (and freed) after each module,
   so a chunk's peak is a few activations, not the whole chain. */
#define VAE_SYNC_BYTES ((size_t)64 << 20)

/* ---------------------------------------------------------------- loading */

/* Loads NAME.weight (expect: O, C, kt, kh, kw; -1 = any) and NAME.bias.
   two_d: stored as [O, C, kh, kw] (a per-frame Conv2d). */
static mr_status load_conv(mr_loader *L, vae_conv *cv, const char *name, int64_t O, int64_t C, int kt, int kh, int kw,
                           bool two_d) {
  char buf[256], bb[256];
  memset(cv, 0, sizeof *cv);
  cv->stride[0] = cv->stride[1] = cv->stride[2] = 1;
  cv->cache = -1;
  int64_t e5[5] = {O, C, kt, kh, kw}, e4[4] = {O, C, kh, kw};
  mr_tensor *w = NULL;
  mr_status st = mr_loader_weight(L, mr_loader_name(buf, sizeof buf, "%s.weight", name), two_d ? 4 : 5,
                                  two_d ? e4 : e5, &w);
  if (st != MR_OK) return st;
  if (two_d) {
    int64_t s5[5] = {w->shape[0], w->shape[1], 1, w->shape[2], w->shape[3]};
    st = mr_tensor_reshape(w, 5, s5, &cv->w);
    mr_tensor_free(w);
    if (st != MR_OK) return st;
  } else {
    cv->w = w;
  }
  int64_t eb[1] = {cv->w->shape[0]};
  return mr_loader_f32(L, mr_loader_name(bb, sizeof bb, "%s.bias", name), 1, eb, &cv->b);
}

/* A CausalConv3d with kernel 3 and padding 1: 2 zero frames in front, cached. */
static mr_status load_causal3(mr_loader *L, vae_coder *cd, vae_conv *cv, const char *name, int64_t O, int64_t C) {
  mr_status st = load_conv(L, cv, name, O, C, 3, 3, 3, false);
  const int pad[6] = {2, 0, 1, 1, 1, 1};
  memcpy(cv->pad, pad, sizeof pad);
  cv->cache = cd->ncache++;
  return st;
}

static mr_status load_gamma(mr_loader *L, mr_tensor **g, const char *name, int64_t C, int ndim) {
  int64_t e[4] = {C, 1, 1, 1};
  return mr_loader_f32(L, name, ndim, e, g);
}

static void conv_free(vae_conv *cv) {
  mr_tensor_free(cv->w);
  mr_tensor_free(cv->b);
  cv->w = cv->b = NULL;
}

static mr_status load_resblock(mr_loader *L, vae_coder *cd, vae_resblock *rb, const char *p, int64_t *ch) {
  char n[256];
  int64_t in = *ch;
  mr_status st;
  if ((st = load_gamma(L, &rb->g1, mr_loader_name(n, sizeof n, "%s.residual.0.gamma", p), in, 4)) != MR_OK) return st;
  if ((st = load_causal3(L, cd, &rb->c1, mr_loader_name(n, sizeof n, "%s.residual.2", p), -1, in)) != MR_OK) return st;
  int64_t out = rb->c1.w->shape[0];
  if ((st = load_gamma(L, &rb->g2, mr_loader_name(n, sizeof n, "%s.residual.3.gamma", p), out, 4)) != MR_OK) return st;
  if ((st = load_causal3(L, cd, &rb->c2, mr_loader_name(n, sizeof n, "%s.residual.6", p), out, out)) != MR_OK) return st;
  mr_loader_name(n, sizeof n, "%s.shortcut.weight", p);
  if (in != out || mr_loader_has(L, n)) {
    if ((st = load_conv(L, &rb->shortcut, mr_loader_name(n, sizeof n, "%s.shortcut", p), out, in, 1, 1, 1, false)) != MR_OK)
      return st;
  }
  *ch = out;
  return MR_OK;
}

static mr_status load_attn(mr_loader *L, vae_attn *at, const char *p, int64_t C) {
  char n[256];
  mr_status st;
  at->C = (int)C;
  if ((st = load_gamma(L, &at->g, mr_loader_name(n, sizeof n, "%s.norm.gamma", p), C, 3)) != MR_OK) return st;
  if ((st = load_conv(L, &at->qkv, mr_loader_name(n, sizeof n, "%s.to_qkv", p), 3 * C, C, 1, 1, 1, true)) != MR_OK)
    return st;
  vae_conv pj;
  if ((st = load_conv(L, &pj, mr_loader_name(n, sizeof n, "%s.proj", p), C, C, 1, 1, 1, true)) != MR_OK) {
    conv_free(&pj);
    return st;
  }
  int64_t s2[2] = {C, C};
  st = mr_tensor_reshape(pj.w, 2, s2, &at->proj_w);
  at->proj_b = pj.b;
  mr_tensor_free(pj.w);
  return st;
}

static mr_status load_resample(mr_loader *L, vae_coder *cd, vae_resample *rs, const char *p, bool encoder, int64_t *ch) {
  char n[256], t[256];
  int64_t C = *ch;
  bool timed = mr_loader_has(L, mr_loader_name(t, sizeof t, "%s.time_conv.weight", p));
  mr_status st;
  rs->state = timed ? cd->nstate++ : -1;
  if (encoder) {
    /* ZeroPad2d(0, 1, 0, 1) + 3x3 stride 2 per frame; time_conv: (3,1,1), stride 2, no padding */
    rs->mode = timed ? VAE_DOWN3D : VAE_DOWN2D;
    if ((st = load_conv(L, &rs->conv, mr_loader_name(n, sizeof n, "%s.resample.1", p), C, C, 1, 3, 3, true)) != MR_OK)
      return st;
    const int s[3] = {1, 2, 2}, pad[6] = {0, 0, 0, 1, 0, 1};
    memcpy(rs->conv.stride, s, sizeof s);
    memcpy(rs->conv.pad, pad, sizeof pad);
    if (timed) {
      if ((st = load_conv(L, &rs->time, mr_loader_name(n, sizeof n, "%s.time_conv", p), C, C, 3, 1, 1, false)) != MR_OK)
        return st;
      rs->time.stride[0] = 2;
      rs->time.cache = cd->ncache++; /* holds the last frame */
    }
  } else {
    /* time_conv C -> 2C, (3,1,1), causal padding; then nearest x2 and a 3x3 conv (C/2 in 2.1, C in 2.2) */
    rs->mode = timed ? VAE_UP3D : VAE_UP2D;
    if (timed) {
      if ((st = load_conv(L, &rs->time, mr_loader_name(n, sizeof n, "%s.time_conv", p), 2 * C, C, 3, 1, 1, false)) != MR_OK)
        return st;
      rs->time.pad[0] = 2;
      rs->time.cache = cd->ncache++;
    }
    if ((st = load_conv(L, &rs->conv, mr_loader_name(n, sizeof n, "%s.resample.1", p), -1, C, 1, 3, 3, true)) != MR_OK)
      return st;
    const int pad[6] = {0, 0, 1, 1, 1, 1};
    memcpy(rs->conv.pad, pad, sizeof pad);
    *ch = rs->conv.w->shape[0];
  }
  return MR_OK;
}

/* Loads the modules P.0, P.1, ... (residual blocks and resamples) until none. */
static mr_status load_sequence(mr_loader *L, vae_coder *cd, const char *P, bool encoder, vae_layer **out, int *nout,
                               int64_t *ch) {
  char n[256], p[256];
  int count = 0;
  for (;; count++) {
    bool res = mr_loader_has(L, mr_loader_name(n, sizeof n, "%s.%d.residual.0.gamma", P, count));
    bool rsm = mr_loader_has(L, mr_loader_name(n, sizeof n, "%s.%d.resample.1.weight", P, count));
    if (!res && !rsm) break;
  }
  *out = calloc(count ? (size_t)count : 1, sizeof **out);
  if (!*out) return mr_error(L->ctx, MR_ENOMEM, "out of host memory");
  *nout = count;
  for (int i = 0; i < count; i++) {
    vae_layer *ly = &(*out)[i];
    mr_loader_name(p, sizeof p, "%s.%d", P, i);
    mr_status st;
    if (mr_loader_has(L, mr_loader_name(n, sizeof n, "%s.residual.0.gamma", p))) {
      ly->kind = VAE_RES;
      st = load_resblock(L, cd, &ly->res, p, ch);
    } else {
      ly->kind = VAE_RESAMPLE;
      st = load_resample(L, cd, &ly->rs, p, encoder, ch);
    }
    if (st != MR_OK) return st;
  }
  return MR_OK;
}

/* Wan 2.2 stages S.downsamples.* / S.upsamples.*, each with its shortcut. */
static mr_status load_stages(mr_loader *L, vae_coder *cd, const char *P, bool encoder, vae_layer **out, int *nout,
                             int64_t *ch) {
  char n[256], p[256];
  const char *inner = encoder ? "downsamples" : "upsamples";
  int count = 0;
  while (mr_loader_has(L, mr_loader_name(n, sizeof n, "%s.%d.%s.0.residual.0.gamma", P, count, inner))) count++;
  *out = calloc(count ? (size_t)count : 1, sizeof **out);
  if (!*out) return mr_error(L->ctx, MR_ENOMEM, "out of host memory");
  *nout = count;
  for (int i = 0; i < count; i++) {
    vae_layer *ly = &(*out)[i];
    ly->kind = VAE_STAGE;
    int64_t in = *ch;
    mr_status st = load_sequence(L, cd, mr_loader_name(p, sizeof p, "%s.%d.%s", P, i, inner), encoder, &ly->sub, &ly->nsub, ch);
    if (st != MR_OK) return st;
    vae_resample *rs = NULL;
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
        return mr_error(L->ctx, MR_EUNSUPPORTED, "%s: stage %s.%d: a %s shortcut from %d to %d channels is not supported",
                        L->what, P, i, encoder ? "AvgDown3D" : "DupUp3D", ly->sc_in, ly->sc_out);
    }
  }
  return MR_OK;
}

static mr_status load_middle(mr_loader *L, vae_coder *cd, const char *c, vae_layer *mid, int64_t *ch) {
  char p[256];
  mr_status st;
  mid[0].kind = VAE_RES;
  mid[1].kind = VAE_ATTN;
  mid[2].kind = VAE_RES;
  if ((st = load_resblock(L, cd, &mid[0].res, mr_loader_name(p, sizeof p, "%s.middle.0", c), ch)) != MR_OK) return st;
  if ((st = load_attn(L, &mid[1].attn, mr_loader_name(p, sizeof p, "%s.middle.1", c), *ch)) != MR_OK) return st;
  return load_resblock(L, cd, &mid[2].res, mr_loader_name(p, sizeof p, "%s.middle.2", c), ch);
}

mr_status vae_coder_load(mr_loader *L, vae_coder *cd, bool encoder, int version, int z_dim) {
  char n[256], P[64];
  const char *c = encoder ? "encoder" : "decoder";
  mr_status st;
  memset(cd, 0, sizeof *cd);
  if ((st = load_causal3(L, cd, &cd->conv1, mr_loader_name(n, sizeof n, "%s.conv1", c), -1, encoder ? -1 : z_dim)) != MR_OK)
    return st;
  cd->in_ch = (int)cd->conv1.w->shape[1];
  int64_t ch = cd->conv1.w->shape[0];
  snprintf(P, sizeof P, "%s.%s", c, encoder ? "downsamples" : "upsamples");
  /* encoder: conv1, downsamples, middle, head; decoder: conv1, middle, upsamples, head */
  vae_layer *seq = NULL, mid[3];
  int nseq = 0;
  memset(mid, 0, sizeof mid);
  if (!encoder && (st = load_middle(L, cd, c, mid, &ch)) != MR_OK) goto done;
  if (version == 22) st = load_stages(L, cd, P, encoder, &seq, &nseq, &ch);
  else st = load_sequence(L, cd, P, encoder, &seq, &nseq, &ch);
  if (st != MR_OK) goto done;
  if (nseq == 0) {
    st = mr_error(L->ctx, MR_EFORMAT, "%s: no modules under '%s%s'", L->what, L->prefix, P);
    goto done;
  }
  if (encoder && (st = load_middle(L, cd, c, mid, &ch)) != MR_OK) goto done;
  if ((st = load_gamma(L, &cd->head_g, mr_loader_name(n, sizeof n, "%s.head.0.gamma", c), ch, 4)) != MR_OK) goto done;
  if ((st = load_causal3(L, cd, &cd->head, mr_loader_name(n, sizeof n, "%s.head.2", c), -1, ch)) != MR_OK) goto done;
  cd->out_ch = (int)cd->head.w->shape[0];
done:
  /* layers own everything loaded so far, so vae_coder_free releases it on any path */
  cd->layers = calloc((size_t)nseq + 3, sizeof *cd->layers);
  if (cd->layers) {
    memcpy(cd->layers + (encoder ? 0 : 3), seq ? seq : mid, seq ? (size_t)nseq * sizeof *seq : 0);
    memcpy(cd->layers + (encoder ? nseq : 0), mid, sizeof mid);
    cd->nlayers = nseq + 3;
  }
  free(seq);
  cd->cache = calloc((size_t)cd->ncache + 1, sizeof *cd->cache);
  cd->state = calloc((size_t)cd->nstate + 1, sizeof *cd->state);
  if (st == MR_OK && (!cd->layers || !cd->cache || !cd->state)) st = mr_error(L->ctx, MR_ENOMEM, "out of host memory");
  return st;
}

static void layer_free(vae_layer *ly) {
  conv_free(&ly->res.c1);
  conv_free(&ly->res.c2);
  conv_free(&ly->res.shortcut);
  mr_tensor_free(ly->res.g1);
  mr_tensor_free(ly->res.g2);
  mr_tensor_free(ly->attn.g);
  conv_free(&ly->attn.qkv);
  mr_tensor_free(ly->attn.proj_w);
  mr_tensor_free(ly->attn.proj_b);
  conv_free(&ly->rs.conv);
  conv_free(&ly->rs.time);
  for (int i = 0; i < ly->nsub; i++) layer_free(&ly->sub[i]);
  free(ly->sub);
}

void vae_coder_free(vae_coder *cd) {
  if (cd->cache) vae_coder_reset(cd);
  conv_free(&cd->conv1);
  conv_free(&cd->head);
  mr_tensor_free(cd->head_g);
  for (int i = 0; i < cd->nlayers; i++) layer_free(&cd->layers[i]);
  free(cd->layers);
  free(cd->cache);
  free(cd->state);
  memset(cd, 0, sizeof *cd);
}

void vae_coder_strides(const vae_coder *enc, int *spatial_steps, int *temporal_steps) {
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

static mr_status layer_run(vae_coder *cd, vae_layer *ly, mr_tensor *x, mr_tensor **out);

/* Runs layers[0..n) over x (borrowed); *out is new. */
static mr_status sequence_run(vae_coder *cd, vae_layer *layers, int n, mr_tensor *x, mr_tensor **out) {
  *out = NULL;
  mr_tensor *cur = x;
  mr_status st = MR_OK;
  for (int i = 0; i < n && st == MR_OK; i++) {
    mr_tensor *y = NULL;
    st = layer_run(cd, &layers[i], cur, &y);
    if (cur != x) mr_tensor_free(cur);
    cur = y;
    if (st == MR_OK && mr_tensor_device_bytes(cur) >= VAE_SYNC_BYTES) st = mr_ctx_sync(cur->ctx);
  }
  if (st != MR_OK) {
    if (cur != x) mr_tensor_free(cur);
    return st;
  }
  if (cur == x) return mr_tensor_contiguous(x, out);
  *out = cur;
  return MR_OK;
}

static mr_status layer_run(vae_coder *cd, vae_layer *ly, mr_tensor *x, mr_tensor **out) {
  switch (ly->kind) {
  case VAE_RES: return vae_resblock_run(cd, &ly->res, x, out);
  case VAE_ATTN: return vae_attn_run(&ly->attn, x, out);
  case VAE_RESAMPLE: return vae_resample_run(cd, &ly->rs, x, out);
  case VAE_STAGE: break;
  }
  *out = NULL;
  mr_tensor *main = NULL, *sc = NULL;
  mr_status st = sequence_run(cd, ly->sub, ly->nsub, x, &main);
  if (st != MR_OK || !ly->sc_fs) {
    *out = main;
    return st;
  }
  if (ly->sc_dup) st = vae_dup_up(x, ly->sc_in, ly->sc_out, ly->sc_ft, ly->sc_fs, cd->first_chunk, &sc);
  else if (ly->sc_ft * ly->sc_fs == 1 && ly->sc_in == ly->sc_out) st = mr_tensor_contiguous(x, &sc); /* identity */
  else st = vae_avg_down(x, ly->sc_in, ly->sc_out, ly->sc_ft, ly->sc_fs, &sc);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, main, sc, out);
  mr_tensor_free(main);
  mr_tensor_free(sc);
  return st;
}

mr_status vae_coder_run(mr_wan_vae *vae, vae_coder *cd, mr_tensor *x, mr_tensor **out) {
  (void)vae;
  *out = NULL;
  mr_tensor *h = NULL, *y = NULL, *a = NULL;
  mr_status st = vae_conv_run(cd, &cd->conv1, x, &h);
  if (st == MR_OK) st = sequence_run(cd, cd->layers, cd->nlayers, h, &y);
  mr_tensor_free(h);
  if (st == MR_OK) st = vae_norm_silu(y, cd->head_g, &a);
  mr_tensor_free(y);
  if (st == MR_OK) st = vae_conv_run(cd, &cd->head, a, out);
  mr_tensor_free(a);
  return st;
}
