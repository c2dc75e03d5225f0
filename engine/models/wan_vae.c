/* The Wan VAE public API: loading with detection of 2.1 / 2.2, chunked
   encode and decode, latent normalisation, progress and cancellation.

   Encode feeds frame 0 alone, then tstride (4) frames at a time; decode one
   latent frame at a time. A call runs in one scope (models/scope.h) that
   owns the output and every temporary; each chunk's temporaries are
   collected when the chunk ends, the causal caches (owned by the coders)
   carry what the next chunk needs, and the context is synced after each
   chunk, so device memory does not grow with the video length: only the
   output tensor does.

   Latent statistics: the released VAEs' per-channel mean/std (z 16 for 2.1,
   z 48 for 2.2) are built in and applied as latent = (mu - mean) / std. A
   checkpoint whose z_dim matches neither (test-size models) gets mean 0 and
   std 1: its latents are the raw mu, and a caller with other statistics
   applies them itself. */
#include "models/wan_vae.h"

#include "tensor/shape.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const float WAN21_MEAN[16] = {-0.7571f, -0.7089f, -0.9113f, 0.1075f,  -0.1745f, 0.9653f,  -0.1517f, 1.5508f,
                                     0.4134f,  -0.0715f, 0.5517f,  -0.3632f, -0.1922f, -0.9497f, 0.2503f,  -0.2921f};
static const float WAN21_STD[16] = {2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f,
                                    3.2687f, 2.1526f, 2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f};
static const float WAN22_MEAN[48] = {
    -0.2289f, -0.0052f, -0.1323f, -0.2339f, -0.2799f, 0.0174f,  0.1838f,  0.1557f,  -0.1382f, 0.0542f,
    0.2813f,  0.0891f,  0.1570f,  -0.0098f, 0.0375f,  -0.1825f, -0.2246f, -0.1207f, -0.0698f, 0.5109f,
    0.2665f,  -0.2108f, -0.2158f, 0.2502f,  -0.2055f, -0.0322f, 0.1109f,  0.1567f,  -0.0729f, 0.0899f,
    -0.2799f, -0.1230f, -0.0313f, -0.1649f, 0.0117f,  0.0723f,  -0.2839f, -0.2083f, -0.0520f, 0.3748f,
    0.0152f,  0.1957f,  0.1433f,  -0.2944f, 0.3573f,  -0.0548f, -0.1681f, -0.0667f};
static const float WAN22_STD[48] = {
    0.4765f, 1.0364f, 0.4514f, 1.1677f, 0.5313f, 0.4990f, 0.4818f, 0.5013f, 0.8158f, 1.0344f, 0.5894f, 1.0901f,
    0.6885f, 0.6165f, 0.8454f, 0.4978f, 0.5759f, 0.3523f, 0.7135f, 0.6804f, 0.5833f, 1.4146f, 0.8986f, 0.5659f,
    0.7069f, 0.5338f, 0.4889f, 0.4917f, 0.4069f, 0.4999f, 0.6866f, 0.4093f, 0.5709f, 0.6065f, 0.6415f, 0.4944f,
    0.5726f, 1.2042f, 0.5458f, 1.6887f, 0.3971f, 1.0600f, 0.3943f, 0.5537f, 0.5444f, 0.4089f, 0.7468f, 0.7744f};

void mr_wan_vae_free(mr_wan_vae *vae) {
  if (!vae) return;
  mr_params_release(&vae->params); /* first: its slots point into the coders */
  mr_vae_coder_free(&vae->enc);
  mr_vae_coder_free(&vae->dec);
  mr_tensor_free(vae->mean);
  mr_tensor_free(vae->std);
  free(vae);
}

/* A 1x1x1 conv NAME [O, C, 1, 1, 1] with its bias. */
static void top_conv(mr_params *P, vae_conv *cv, const char *name, int64_t O, int64_t C) {
  *cv = (vae_conv){.stride = {1, 1, 1}, .cache = -1};
  mr_params_add(P, &cv->w, MR_PARAM_WEIGHT, 5, (int64_t[]){O, C, 1, 1, 1}, "%s.weight", name);
  mr_params_add(P, &cv->b, MR_PARAM_F32, 1, (int64_t[]){O}, "%s.bias", name);
}

/* Replaces the latent statistics (NULL mean: none, latents are raw mu). */
static mr_status set_stats(mr_wan_vae *v, const float *mean, const float *std) {
  mr_tensor *m = NULL, *sd = NULL;
  int64_t s[4] = {v->z_dim, 1, 1, 1};
  mr_status st = MR_OK;
  if (mean) {
    st = mr_tensor_from_host(v->ctx, MR_F32, 4, s, MR_F32, mean, &m);
    if (st == MR_OK) st = mr_tensor_from_host(v->ctx, MR_F32, 4, s, MR_F32, std, &sd);
  }
  if (st != MR_OK) {
    mr_tensor_free(m);
    return st;
  }
  mr_tensor_free(v->mean);
  mr_tensor_free(v->std);
  v->mean = m;
  v->std = sd;
  v->have_stats = mean != NULL;
  return MR_OK;
}

static mr_status load_stats(mr_wan_vae *v) {
  const float *mean = NULL, *std = NULL;
  if (v->version == 21 && v->z_dim == 16) mean = WAN21_MEAN, std = WAN21_STD;
  if (v->version == 22 && v->z_dim == 48) mean = WAN22_MEAN, std = WAN22_STD;
  return set_stats(v, mean, std);
}

mr_status mr_wan_vae_set_latent_stats(mr_wan_vae *vae, const float *mean, const float *std, int z_dim) {
  if (mean && (!std || z_dim != vae->z_dim))
    return mr_error(vae->ctx, MR_EINVAL, "Wan VAE: latent statistics need mean and std of %d channels, got %d",
                    vae->z_dim, z_dim);
  for (int i = 0; mean && i < z_dim; i++)
    if (!(std[i] > 0)) return mr_error(vae->ctx, MR_EINVAL, "Wan VAE: latent std[%d] = %g is not positive", i, std[i]);
  return set_stats(vae, mean, std);
}

mr_status mr_wan_vae_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_wan_vae **out) {
  *out = NULL;
  mr_loader L;
  mr_status st = mr_loader_init(&L, ctx, w, opts, "Wan VAE", "decoder.conv1.weight");
  if (st != MR_OK) return st;
  mr_wan_vae *v = calloc(1, sizeof *v);
  if (!v) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  v->ctx = ctx;
  mr_params_init(&v->params, ctx);
  v->version = mr_loader_has(&L, "encoder.downsamples.0.downsamples.0.residual.0.gamma") ? 22 : 21;
  int img = v->version == 22 ? 12 : 3; /* 2.2 works on 2x2-patchified pixels */
  int64_t s[MR_WEIGHT_MAX_DIMS];
  if (mr_loader_shape(&L, "conv2.weight", s) != 5) {
    st = mr_error(ctx, MR_EFORMAT, "%s: tensor '%sconv2.weight' is missing or not 5-D", L.what, L.prefix);
    goto fail;
  }
  int64_t z = s[0];
  v->z_dim = (int)z;
  /* the checkpoint's order: encoder, conv1, conv2, decoder */
  if ((st = mr_vae_coder_declare(&L, &v->params, &v->enc, true, v->version, v->z_dim)) != MR_OK) goto fail;
  top_conv(&v->params, &v->conv1, "conv1", 2 * z, 2 * z); /* mu and log_var rows: encode reads the mu rows */
  top_conv(&v->params, &v->conv2, "conv2", z, z);
  if ((st = mr_vae_coder_declare(&L, &v->params, &v->dec, false, v->version, v->z_dim)) != MR_OK) goto fail;
  if (v->enc.in_ch != img || v->dec.out_ch != img || v->enc.out_ch != 2 * v->z_dim) {
    st = mr_error(ctx, MR_EFORMAT, "%s %d.%d: encoder takes %d channels and gives %d, decoder gives %d (expected %d, %d, %d)",
                  L.what, v->version / 10, v->version % 10, v->enc.in_ch, v->enc.out_ch, v->dec.out_ch, img,
                  2 * v->z_dim, img);
    goto fail;
  }
  if ((st = mr_params_load(&v->params, &L)) != MR_OK) goto fail;
  int ss, ts;
  mr_vae_coder_strides(&v->enc, &ss, &ts);
  v->sstride = (1 << ss) * (v->version == 22 ? 2 : 1);
  v->tstride = 1 << ts;
  if ((st = load_stats(v)) != MR_OK) goto fail;
  *out = v;
  return MR_OK;
fail:
  mr_wan_vae_free(v);
  return st;
}

const mr_params *mr_wan_vae_params(const mr_wan_vae *vae) { return &vae->params; }

int mr_wan_vae_z_dim(const mr_wan_vae *vae) { return vae->z_dim; }
int mr_wan_vae_spatial_stride(const mr_wan_vae *vae) { return vae->sstride; }
void mr_wan_vae_set_decode_chunk(mr_wan_vae *vae, int latent_frames) { vae->decode_chunk = latent_frames > 0 ? latent_frames : 0; }
int mr_wan_vae_version(const mr_wan_vae *vae) { return vae->version; }

/* After each chunk: release its memory, honour interrupts, report progress
   (done: the fraction of the latent frames done). */
static mr_status chunk_done(mr_ctx *ctx, int i, int n, float done, mr_progress_fn progress, void *user,
                            const char *what) {
  mr_status st = mr_ctx_sync(ctx);
  if (st != MR_OK) return st;
  if (mr_ctx_take_interrupt(ctx)) return mr_error(ctx, MR_ECANCELED, "Wan VAE %s: interrupted after chunk %d of %d", what, i + 1, n);
  if (progress && !progress(done, user))
    return mr_error(ctx, MR_ECANCELED, "Wan VAE %s: canceled by the progress callback after chunk %d of %d", what, i + 1, n);
  return MR_OK;
}

/* Frames [first, end) of chunk i of a sequence cut as 1, tstride, tstride, ... */
static void chunk_frames(int i, int tstride, int64_t *first, int64_t *end) {
  *first = i == 0 ? 0 : 1 + (int64_t)tstride * (i - 1);
  *end = 1 + (int64_t)tstride * i;
}

/* Video frames [f0, f1) of chunk i to latent frame i, written into dst. */
static void encode_chunk(mr_scope *s, mr_wan_vae *vae, const mr_tensor *video, int i, mr_tensor *dst) {
  int64_t f0, f1;
  chunk_frames(i, vae->tstride, &f0, &f1);
  mr_tensor *x = sc_slice(s, video, 1, f0, f1);
  if (mr_tensor_dtype(video) != MR_F32) x = sc_cast(s, x, MR_F32);
  if (vae->version == 22) x = mr_vae_patchify(s, x);
  mr_tensor *h = mr_vae_coder_forward(s, &vae->enc, x);
  /* conv1 gives mu and log_var; only the mu rows are computed */
  int64_t z = vae->z_dim;
  mr_tensor *mu = sc_conv3d(s, h, sc_slice(s, vae->conv1.w, 0, 0, z), sc_slice(s, vae->conv1.b, 0, 0, z), NULL, NULL);
  if (vae->have_stats) mu = sc_div(s, sc_sub(s, mu, vae->mean), vae->std);
  if (!mu) return;
  const int64_t *r = mr_tensor_shape(mu), *d = mr_tensor_shape(dst);
  if (r[1] != d[1] || r[2] != d[2] || r[3] != d[3])
    mr_scope_fail(s, MR_EINVAL, "Wan VAE encode: chunk %d gave %lldx%lldx%lld latent frames/rows/columns", i,
                  (long long)r[1], (long long)r[2], (long long)r[3]);
  sc_copy(s, dst, mu);
}

mr_status mr_wan_vae_encode(mr_wan_vae *vae, const mr_tensor *video, mr_progress_fn progress, void *user,
                            mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = vae->ctx;
  char txt[64];
  if (mr_tensor_ctx(video) != ctx) return mr_error(ctx, MR_EINVAL, "Wan VAE encode: the video belongs to another context");
  const int64_t *vs = mr_tensor_shape(video);
  int S = vae->sstride, TS = vae->tstride;
  if (mr_tensor_ndim(video) != 4 || vs[0] != 3 || vs[1] < 1 || (vs[1] - 1) % TS || vs[2] % S || vs[3] % S ||
      vs[2] < S || vs[3] < S)
    return mr_error(ctx, MR_EINVAL,
                    "Wan VAE encode: video must be [3, T, H, W] with T = %dk+1 and H, W positive multiples of %d, got %s",
                    TS, S, mr_shape_str(mr_tensor_ndim(video), mr_tensor_shape(video), txt, sizeof txt));
  int n = (int)(1 + (vs[1] - 1) / TS);
  mr_scope scope, *s = &scope;
  mr_scope_begin(s, ctx);
  mr_tensor *lat = sc_empty(s, MR_F32, 4, (int64_t[]){vae->z_dim, n, vs[2] / S, vs[3] / S});
  mr_vae_coder_reset(&vae->enc);
  for (int i = 0; i < n && mr_scope_ok(s); i++) {
    size_t mark = mr_scope_mark(s);
    vae->enc.first_chunk = i == 0;
    encode_chunk(s, vae, video, i, sc_slice(s, lat, 1, i, i + 1));
    mr_scope_collect(s, mark, NULL, NULL);
    if (mr_scope_ok(s)) mr_scope_own(s, chunk_done(ctx, i, n, (float)(i + 1) / (float)n, progress, user, "encode"), NULL);
  }
  mr_vae_coder_reset(&vae->enc);
  mr_status st = mr_scope_end(s, &lat);
  *out = lat;
  return st;
}

/* Latent frames [l0, l1) to their video frames, written into dst. */
static void decode_chunk(mr_scope *s, mr_wan_vae *vae, const mr_tensor *latent, int64_t l0, int64_t l1, int i,
                         mr_tensor *dst) {
  mr_tensor *z = sc_slice(s, latent, 1, l0, l1);
  if (mr_tensor_dtype(latent) != MR_F32) z = sc_cast(s, z, MR_F32);
  if (vae->have_stats) z = sc_mul_add(s, z, vae->std, 0.0f, vae->mean); /* mu */
  mr_tensor *y = mr_vae_coder_forward(s, &vae->dec, sc_conv3d(s, z, vae->conv2.w, vae->conv2.b, NULL, NULL));
  if (!y) return;
  const int64_t *ys = mr_tensor_shape(y), *d = mr_tensor_shape(dst);
  int64_t f = ys[1], hh = ys[2] * (vae->version == 22 ? 2 : 1), ww = ys[3] * (vae->version == 22 ? 2 : 1);
  if (f != d[1] || hh != d[2] || ww != d[3])
    mr_scope_fail(s, MR_EINVAL, "Wan VAE decode: chunk %d gave %lld frames of %lldx%lld", i, (long long)f,
                  (long long)hh, (long long)ww);
  else if (vae->version == 22) mr_vae_unpatchify_into(s, y, dst);
  else sc_copy(s, dst, y);
}

mr_status mr_wan_vae_decode(mr_wan_vae *vae, const mr_tensor *latent, mr_progress_fn progress, void *user,
                            mr_tensor **out) {
  return mr_wan_vae_decode_each(vae, latent, progress, NULL, user, out);
}

mr_status mr_wan_vae_decode_each(mr_wan_vae *vae, const mr_tensor *latent, mr_progress_fn progress,
                                 mr_frames_fn on_frames, void *user, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = vae->ctx;
  char txt[64];
  if (mr_tensor_ctx(latent) != ctx) return mr_error(ctx, MR_EINVAL, "Wan VAE decode: the latent belongs to another context");
  const int64_t *ls = mr_tensor_shape(latent);
  if (mr_tensor_ndim(latent) != 4 || ls[0] != vae->z_dim || ls[1] < 1 || ls[2] < 1 || ls[3] < 1)
    return mr_error(ctx, MR_EINVAL, "Wan VAE decode: latent must be [%d, T, h, w], got %s", vae->z_dim,
                    mr_shape_str(mr_tensor_ndim(latent), mr_tensor_shape(latent), txt, sizeof txt));
  int64_t T = ls[1], S = vae->sstride, ts = vae->tstride;
  /* latent frame 0 alone, then chunks of k latent frames (ts video frames each) */
  int64_t k = vae->decode_chunk;
  if (k <= 0) {
    int64_t per_frame = ts * ls[2] * S * ls[3] * S;
    k = per_frame > 0 ? MR_WAN_VAE_CHUNK_PIXELS / per_frame : 1;
    if (k < 1) k = 1;
  }
  int n = 1 + (int)((T - 1 + k - 1) / k);
  mr_scope scope, *s = &scope;
  mr_scope_begin(s, ctx);
  mr_tensor *video = sc_empty(s, MR_F32, 4, (int64_t[]){3, 1 + ts * (T - 1), ls[2] * S, ls[3] * S});
  mr_vae_coder_reset(&vae->dec);
  for (int i = 0; i < n && mr_scope_ok(s); i++) {
    int64_t l0 = i == 0 ? 0 : 1 + (i - 1) * k, l1 = i == 0 ? 1 : (l0 + k < T ? l0 + k : T);
    int64_t f0 = l0 == 0 ? 0 : 1 + ts * (l0 - 1), f1 = 1 + ts * (l1 - 1);
    size_t mark = mr_scope_mark(s);
    vae->dec.first_chunk = i == 0;
    decode_chunk(s, vae, latent, l0, l1, i, sc_slice(s, video, 1, f0, f1));
    mr_scope_collect(s, mark, NULL, NULL);
    if (mr_scope_ok(s)) mr_scope_own(s, chunk_done(ctx, i, n, (float)l1 / (float)T, progress, user, "decode"), NULL);
    /* the chunk is computed and synced: its frames are final */
    if (on_frames && mr_scope_ok(s)) {
      mr_tensor *done = sc_slice(s, video, 1, f0, f1);
      if (done && !on_frames(done, f0, user))
        mr_scope_fail(s, MR_ECANCELED, "Wan VAE decode: canceled by the frames callback after chunk %d of %d", i + 1, n);
      mr_scope_collect(s, mark, NULL, NULL);
    }
  }
  mr_vae_coder_reset(&vae->dec);
  mr_status st = mr_scope_end(s, &video);
  *out = video;
  return st;
}
