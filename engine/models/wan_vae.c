/* The Wan VAE public API: loading with detection of 2.1 / 2.2, chunked
   encode and decode, latent normalisation, progress and cancellation.

   Encode feeds frame 0 alone, then tstride (4) frames at a time; decode one
   latent frame at a time. The causal caches carry what the next chunk needs,
   every intermediate is freed per chunk, and the context is synced after
   each chunk (which releases freed device memory), so device memory does not
   grow with the video length: only the output tensor does.

   Latent statistics: the released VAEs' per-channel mean/std (z 16 for 2.1,
   z 48 for 2.2) are built in and applied as latent = (mu - mean) / std. A
   checkpoint whose z_dim matches neither (test-size models) gets mean 0 and
   std 1: its latents are the raw mu, and a caller with other statistics
   applies them itself. */
#include "models/wan_vae.h"

#include "tensor/tensor_impl.h"

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
  vae_coder_free(&vae->enc);
  vae_coder_free(&vae->dec);
  mr_tensor_free(vae->conv1.w);
  mr_tensor_free(vae->conv1.b);
  mr_tensor_free(vae->conv2.w);
  mr_tensor_free(vae->conv2.b);
  mr_tensor_free(vae->mean);
  mr_tensor_free(vae->std);
  free(vae);
}

static mr_status load_top(mr_loader *L, mr_wan_vae *v) {
  int64_t s[MR_WEIGHT_MAX_DIMS];
  if (mr_loader_shape(L, "conv2.weight", s) != 5)
    return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%sconv2.weight' is missing or not 5-D", L->what, L->prefix);
  int64_t z = s[0];
  v->z_dim = (int)z;
  int64_t e2[5] = {z, z, 1, 1, 1}, e1[5] = {2 * z, 2 * z, 1, 1, 1}, b2[1] = {z}, b1[1] = {2 * z};
  mr_tensor *w1 = NULL, *bias1 = NULL;
  mr_status st;
  if ((st = mr_loader_weight(L, "conv2.weight", 5, e2, &v->conv2.w)) != MR_OK) return st;
  if ((st = mr_loader_f32(L, "conv2.bias", 1, b2, &v->conv2.b)) != MR_OK) return st;
  if ((st = mr_loader_weight(L, "conv1.weight", 5, e1, &w1)) == MR_OK && (st = mr_loader_f32(L, "conv1.bias", 1, b1, &bias1)) == MR_OK &&
      (st = mr_tensor_slice(w1, 0, 0, z, 1, &v->conv1.w)) == MR_OK)
    st = mr_tensor_slice(bias1, 0, 0, z, 1, &v->conv1.b); /* mu rows only */
  mr_tensor_free(w1);
  mr_tensor_free(bias1);
  return st;
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
  v->version = mr_loader_has(&L, "encoder.downsamples.0.downsamples.0.residual.0.gamma") ? 22 : 21;
  int img = v->version == 22 ? 12 : 3; /* 2.2 works on 2x2-patchified pixels */
  if ((st = load_top(&L, v)) != MR_OK) goto fail;
  if ((st = vae_coder_load(&L, &v->enc, true, v->version, v->z_dim)) != MR_OK) goto fail;
  if ((st = vae_coder_load(&L, &v->dec, false, v->version, v->z_dim)) != MR_OK) goto fail;
  if (v->enc.in_ch != img || v->dec.out_ch != img || v->enc.out_ch != 2 * v->z_dim) {
    st = mr_error(ctx, MR_EFORMAT, "%s %d.%d: encoder takes %d channels and gives %d, decoder gives %d (expected %d, %d, %d)",
                  L.what, v->version / 10, v->version % 10, v->enc.in_ch, v->enc.out_ch, v->dec.out_ch, img,
                  2 * v->z_dim, img);
    goto fail;
  }
  int ss, ts;
  vae_coder_strides(&v->enc, &ss, &ts);
  v->sstride = (1 << ss) * (v->version == 22 ? 2 : 1);
  v->tstride = 1 << ts;
  if ((st = load_stats(v)) != MR_OK) goto fail;
  *out = v;
  return MR_OK;
fail:
  mr_wan_vae_free(v);
  return st;
}

int mr_wan_vae_z_dim(const mr_wan_vae *vae) { return vae->z_dim; }
int mr_wan_vae_spatial_stride(const mr_wan_vae *vae) { return vae->sstride; }
int mr_wan_vae_version(const mr_wan_vae *vae) { return vae->version; }

/* After each chunk: release its memory, honour interrupts, report progress. */
static mr_status chunk_done(mr_ctx *ctx, int i, int n, mr_progress_fn progress, void *user, const char *what) {
  mr_status st = mr_ctx_sync(ctx);
  if (st != MR_OK) return st;
  if (mr_ctx_take_interrupt(ctx)) return mr_error(ctx, MR_ECANCELED, "Wan VAE %s: interrupted after chunk %d of %d", what, i + 1, n);
  if (progress && !progress((float)(i + 1) / (float)n, user))
    return mr_error(ctx, MR_ECANCELED, "Wan VAE %s: canceled by the progress callback after chunk %d of %d", what, i + 1, n);
  return MR_OK;
}

/* Frames [first, end) of chunk i of a sequence cut as 1, tstride, tstride, ... */
static void chunk_frames(int i, int tstride, int64_t *first, int64_t *end) {
  *first = i == 0 ? 0 : 1 + (int64_t)tstride * (i - 1);
  *end = 1 + (int64_t)tstride * i;
}

static mr_status encode_chunk(mr_wan_vae *vae, mr_tensor *video, int i, mr_tensor *dst) {
  int64_t f0, f1;
  chunk_frames(i, vae->tstride, &f0, &f1);
  mr_tensor *x = NULL, *xin = NULL, *h = NULL, *mu = NULL, *a = NULL, *z = NULL;
  mr_status st = mr_tensor_slice(video, 1, f0, f1, 1, &x);
  if (st != MR_OK) return st;
  if (vae->version == 22) st = vae_patchify(x, &xin);
  else if (x->dtype != MR_F32) st = mr_tensor_cast(x, MR_F32, &xin);
  if (st == MR_OK) st = vae_coder_run(vae, &vae->enc, xin ? xin : x, &h);
  if (st == MR_OK) st = mr_op_conv3d(h, vae->conv1.w, vae->conv1.b, NULL, NULL, &mu);
  if (st == MR_OK && vae->have_stats) {
    if ((st = mr_op_binary(MR_BINARY_SUB, mu, vae->mean, &a)) == MR_OK) st = mr_op_binary(MR_BINARY_DIV, a, vae->std, &z);
  }
  if (st == MR_OK) {
    mr_tensor *r = z ? z : mu;
    if (r->shape[1] != dst->shape[1] || r->shape[2] != dst->shape[2] || r->shape[3] != dst->shape[3])
      st = mr_error(vae->ctx, MR_EINVAL, "Wan VAE encode: chunk %d gave %lldx%lldx%lld latent frames/rows/columns", i,
                    (long long)r->shape[1], (long long)r->shape[2], (long long)r->shape[3]);
    else st = mr_tensor_copy(dst, r);
  }
  mr_tensor *all[] = {x, xin, h, mu, a, z};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++) mr_tensor_free(all[k]);
  return st;
}

mr_status mr_wan_vae_encode(mr_wan_vae *vae, const mr_tensor *video, mr_progress_fn progress, void *user,
                            mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = vae->ctx;
  char s[64];
  if (video->ctx != ctx) return mr_error(ctx, MR_EINVAL, "Wan VAE encode: the video belongs to another context");
  const int64_t *vs = video->shape;
  int S = vae->sstride, TS = vae->tstride;
  if (video->ndim != 4 || vs[0] != 3 || vs[1] < 1 || (vs[1] - 1) % TS || vs[2] % S || vs[3] % S || vs[2] < S ||
      vs[3] < S)
    return mr_error(ctx, MR_EINVAL,
                    "Wan VAE encode: video must be [3, T, H, W] with T = %dk+1 and H, W positive multiples of %d, got %s",
                    TS, S, mr_shape_str(video->ndim, video->shape, s, sizeof s));
  int n = (int)(1 + (vs[1] - 1) / TS);
  int64_t ls[4] = {vae->z_dim, n, vs[2] / S, vs[3] / S};
  mr_tensor *lat = NULL;
  mr_status st = mr_tensor_empty(ctx, MR_F32, 4, ls, &lat);
  if (st != MR_OK) return st;
  vae_coder_reset(&vae->enc);
  for (int i = 0; i < n && st == MR_OK; i++) {
    mr_tensor *dst = NULL;
    vae->enc.first_chunk = i == 0;
    if ((st = mr_tensor_slice(lat, 1, i, i + 1, 1, &dst)) == MR_OK) st = encode_chunk(vae, (mr_tensor *)video, i, dst);
    mr_tensor_free(dst);
    if (st == MR_OK) st = chunk_done(ctx, i, n, progress, user, "encode");
  }
  vae_coder_reset(&vae->enc);
  if (st != MR_OK) {
    mr_tensor_free(lat);
    return st;
  }
  *out = lat;
  return MR_OK;
}

static mr_status decode_chunk(mr_wan_vae *vae, mr_tensor *latent, int i, mr_tensor *dst) {
  mr_tensor *zi = NULL, *zf = NULL, *a = NULL, *mu = NULL, *x = NULL, *y = NULL;
  mr_status st = mr_tensor_slice(latent, 1, i, i + 1, 1, &zi);
  if (st != MR_OK) return st;
  if (zi->dtype != MR_F32) st = mr_tensor_cast(zi, MR_F32, &zf);
  mr_tensor *z = zf ? zf : zi;
  if (st == MR_OK && vae->have_stats) {
    if ((st = mr_op_binary(MR_BINARY_MUL, z, vae->std, &a)) == MR_OK) st = mr_op_binary(MR_BINARY_ADD, a, vae->mean, &mu);
  }
  if (st == MR_OK) st = mr_op_conv3d(mu ? mu : z, vae->conv2.w, vae->conv2.b, NULL, NULL, &x);
  if (st == MR_OK) st = vae_coder_run(vae, &vae->dec, x, &y);
  if (st == MR_OK) {
    int64_t f = y->shape[1], hh = y->shape[2] * (vae->version == 22 ? 2 : 1), ww = y->shape[3] * (vae->version == 22 ? 2 : 1);
    if (f != dst->shape[1] || hh != dst->shape[2] || ww != dst->shape[3])
      st = mr_error(vae->ctx, MR_EINVAL, "Wan VAE decode: chunk %d gave %lld frames of %lldx%lld", i, (long long)f,
                    (long long)hh, (long long)ww);
    else if (vae->version == 22) st = vae_unpatchify_into(y, dst);
    else st = mr_tensor_copy(dst, y);
  }
  mr_tensor *all[] = {zi, zf, a, mu, x, y};
  for (size_t k = 0; k < sizeof all / sizeof *all; k++) mr_tensor_free(all[k]);
  return st;
}

mr_status mr_wan_vae_decode(mr_wan_vae *vae, const mr_tensor *latent, mr_progress_fn progress, void *user,
                            mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = vae->ctx;
  char s[64];
  if (latent->ctx != ctx) return mr_error(ctx, MR_EINVAL, "Wan VAE decode: the latent belongs to another context");
  const int64_t *ls = latent->shape;
  if (latent->ndim != 4 || ls[0] != vae->z_dim || ls[1] < 1 || ls[2] < 1 || ls[3] < 1)
    return mr_error(ctx, MR_EINVAL, "Wan VAE decode: latent must be [%d, T, h, w], got %s", vae->z_dim,
                    mr_shape_str(latent->ndim, latent->shape, s, sizeof s));
  int n = (int)ls[1], S = vae->sstride;
  int64_t vs[4] = {3, 1 + (int64_t)vae->tstride * (n - 1), ls[2] * S, ls[3] * S};
  mr_tensor *video = NULL;
  mr_status st = mr_tensor_empty(ctx, MR_F32, 4, vs, &video);
  if (st != MR_OK) return st;
  vae_coder_reset(&vae->dec);
  for (int i = 0; i < n && st == MR_OK; i++) {
    int64_t f0, f1;
    chunk_frames(i, vae->tstride, &f0, &f1);
    mr_tensor *dst = NULL;
    vae->dec.first_chunk = i == 0;
    if ((st = mr_tensor_slice(video, 1, f0, f1, 1, &dst)) == MR_OK) st = decode_chunk(vae, (mr_tensor *)latent, i, dst);
    mr_tensor_free(dst);
    if (st == MR_OK) st = chunk_done(ctx, i, n, progress, user, "decode");
  }
  vae_coder_reset(&vae->dec);
  if (st != MR_OK) {
    mr_tensor_free(video);
    return st;
  }
  *out = video;
  return MR_OK;
}
