/* The Wan VAE (2.1 and 2.2) against the conformance vectors: encode `video`
   and compare with `latent`, decode `latent` and compare with `decoded`, for
   the f32 / f16 / bf16 weight policies; progress and cancellation; broken
   checkpoints refused with the tensor named.

   The tiny conformance VAEs have z_dim 4, which no released VAE has, so the
   engine applies no latent statistics to them (mean 0, std 1: raw mu). The
   io file carries the mean/std the reference used; this test applies them. */
#include "gpu/gpu.h"
#include "testutil.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A copy of io tensor `name` as f32; shape without the leading batch dim of 1. */
static float *io_tensor(mr_weights *io, const char *name, int *ndim, int64_t *shape) {
  int i = mr_weights_find(io, name);
  CHECK(i >= 0);
  if (i < 0) return NULL;
  mr_weight_info info;
  if (mr_weights_get(io, i, &info) != MR_OK) return NULL;
  int skip = info.ndim > 1 && info.shape[0] == 1 && strcmp(name, "mean") && strcmp(name, "std");
  size_t n = 1;
  *ndim = info.ndim - skip;
  for (int d = 0; d < *ndim; d++) {
    shape[d] = info.shape[d + skip];
    n *= (size_t)shape[d];
  }
  float *x = malloc(n * sizeof *x);
  CHECK(info.dtype == MR_F32);
  memcpy(x, info.data, n * sizeof *x);
  return x;
}

typedef struct progress_log { int calls; float last; int cancel_at; } progress_log;

static bool on_progress(float done, void *user) {
  progress_log *p = user;
  p->calls++;
  p->last = done;
  return p->cancel_at == 0 || p->calls < p->cancel_at;
}

typedef struct vectors {
  float *video, *latent, *decoded, *mean, *std, *mu; /* mu = latent * std + mean */
  int64_t vshape[4], lshape[4];
  size_t nv, nl;
} vectors;

static void vectors_load(mr_ctx *ctx, const char *path, vectors *v) {
  memset(v, 0, sizeof *v);
  mr_weights *io = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &io));
  if (!io) return;
  int nd;
  int64_t s[8];
  v->video = io_tensor(io, "video", &nd, v->vshape);
  v->decoded = io_tensor(io, "decoded", &nd, s);
  v->latent = io_tensor(io, "latent", &nd, v->lshape);
  v->mean = io_tensor(io, "mean", &nd, s);
  v->std = io_tensor(io, "std", &nd, s);
  v->nv = (size_t)(v->vshape[0] * v->vshape[1] * v->vshape[2] * v->vshape[3]);
  v->nl = (size_t)(v->lshape[0] * v->lshape[1] * v->lshape[2] * v->lshape[3]);
  v->mu = malloc(v->nl * sizeof *v->mu);
  size_t per = v->nl / (size_t)v->lshape[0];
  for (size_t i = 0; i < v->nl; i++) v->mu[i] = v->latent[i] * v->std[i / per] + v->mean[i / per];
  mr_weights_free(io);
}

static void vectors_free(vectors *v) {
  free(v->video);
  free(v->latent);
  free(v->decoded);
  free(v->mean);
  free(v->std);
  free(v->mu);
}

/* Encodes and decodes with one weight policy; returns false if loading failed. */
/* The parameter table: every tensor of the checkpoint (conv1 whole, its
   log_var rows included), conv weights in the policy's dtype, gammas and
   biases in f32. */
static void check_table(mr_ctx *ctx, const mr_wan_vae *vae, const mr_weights *w, mr_dtype policy, const char *probe) {
  const mr_params *p = mr_wan_vae_params(vae);
  mr_test_check_params(ctx, p, w, -1, probe);
  for (int i = 0; i < mr_params_count(p); i++) {
    mr_param_info pi;
    CHECK_OK(ctx, mr_params_get(p, i, &pi));
    size_t n = strlen(pi.name);
    bool conv = n > 7 && strcmp(pi.name + n - 7, ".weight") == 0;
    CHECK(pi.is_weight == conv && pi.dtype == (conv ? policy : MR_F32));
  }
}

static void run_policy(mr_ctx *ctx, const char *model, mr_weights *w, const vectors *v, mr_dtype policy, int version,
                       int stride, const char *probe) {
  mr_model_opts o = mr_model_opts_default();
  o.weights = policy;
  mr_wan_vae *vae = NULL;
  CHECK_OK(ctx, mr_wan_vae_load(ctx, w, &o, &vae));
  if (!vae) return;
  check_table(ctx, vae, w, policy, probe);
  CHECK(mr_wan_vae_version(vae) == version);
  CHECK(mr_wan_vae_spatial_stride(vae) == stride);
  CHECK(mr_wan_vae_z_dim(vae) == v->lshape[0]);
  double tol = policy == MR_F32 ? 1e-4 : 2e-2;
  mr_tensor *video = NULL, *mu = NULL, *lat = NULL, *dec = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, v->vshape, MR_F32, v->video, &video));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, v->lshape, MR_F32, v->mu, &mu));
  progress_log pl = {0, 0, 0};
  double t0 = now_s();
  CHECK_OK(ctx, mr_wan_vae_encode(vae, video, on_progress, &pl, &lat));
  double t1 = now_s();
  CHECK(pl.calls == (int)v->lshape[1] && pl.last == 1.0f);
  double e_enc = -1, e_dec = -1;
  if (lat) {
    const int64_t *s = mr_tensor_shape(lat);
    CHECK(s[0] == v->lshape[0] && s[1] == v->lshape[1] && s[2] == v->lshape[2] && s[3] == v->lshape[3]);
    float *got = mr_test_read(ctx, lat);
    e_enc = mr_rel_l2(got, v->mu, v->nl);
    CHECK(e_enc < tol);
    free(got);
  }
  double t2 = now_s();
  CHECK_OK(ctx, mr_wan_vae_decode(vae, mu, NULL, NULL, &dec));
  double t3 = now_s();
  if (dec) {
    const int64_t *s = mr_tensor_shape(dec);
    CHECK(s[0] == 3 && s[1] == v->vshape[1] && s[2] == v->vshape[2] && s[3] == v->vshape[3]);
    float *got = mr_test_read(ctx, dec);
    e_dec = mr_rel_l2(got, v->decoded, v->nv);
    CHECK(e_dec < tol);
    free(got);
  }
  printf("%-28s %-4s encode rel L2 %.3g (%.2f s)  decode rel L2 %.3g (%.2f s)\n", model, mr_dtype_name(policy), e_enc,
         t1 - t0, e_dec, t3 - t2);
  /* any decode chunking gives the same bits: one latent frame at a time (the
     reference's loop) and two at a time against the default's fewer chunks */
  float *whole = dec ? mr_test_read(ctx, dec) : NULL;
  int chunks[2] = {1, 2};
  for (int c = 0; c < 2 && whole; c++) {
    progress_log cl = {0, 0, 0};
    mr_tensor *again = NULL;
    mr_wan_vae_set_decode_chunk(vae, chunks[c]);
    CHECK_OK(ctx, mr_wan_vae_decode(vae, mu, on_progress, &cl, &again));
    CHECK(cl.calls == 1 + ((int)v->lshape[1] - 1 + chunks[c] - 1) / chunks[c]);
    float *got = again ? mr_test_read(ctx, again) : NULL;
    CHECK(got && memcmp(got, whole, v->nv * sizeof *got) == 0);
    free(got);
    mr_tensor_free(again);
  }
  mr_wan_vae_set_decode_chunk(vae, 0);
  free(whole);
  mr_tensor_free(video);
  mr_tensor_free(mu);
  mr_tensor_free(lat);
  mr_tensor_free(dec);
  mr_wan_vae_free(vae);
}

/* Cancelling through the progress callback and through mr_ctx_interrupt. */
static void test_cancel(mr_ctx *ctx, mr_weights *w, const vectors *v) {
  mr_wan_vae *vae = NULL;
  CHECK_OK(ctx, mr_wan_vae_load(ctx, w, NULL, &vae));
  if (!vae) return;
  mr_tensor *video = NULL, *mu = NULL, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, v->vshape, MR_F32, v->video, &video));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, v->lshape, MR_F32, v->mu, &mu));
  progress_log pl = {0, 0, 1};
  CHECK(mr_wan_vae_encode(vae, video, on_progress, &pl, &out) == MR_ECANCELED && out == NULL && pl.calls == 1);
  pl = (progress_log){0, 0, 2};
  out = (mr_tensor *)1;
  CHECK(mr_wan_vae_decode(vae, mu, on_progress, &pl, &out) == MR_ECANCELED && out == NULL && pl.calls == 2);
  mr_ctx_interrupt(ctx);
  CHECK(mr_wan_vae_decode(vae, mu, NULL, NULL, &out) == MR_ECANCELED && out == NULL);
  /* a cancelled call leaves the model usable */
  CHECK_OK(ctx, mr_wan_vae_decode(vae, mu, NULL, NULL, &out));
  mr_tensor_free(out);
  /* bad shapes are errors, not crashes */
  int64_t bad[4] = {3, 4, v->vshape[2], v->vshape[3]};
  mr_tensor *b = NULL;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 4, bad, &b));
  CHECK(mr_wan_vae_encode(vae, b, NULL, NULL, &out) == MR_EINVAL && strstr(mr_ctx_last_error(ctx), "4k+1"));
  CHECK(mr_wan_vae_decode(vae, b, NULL, NULL, &out) == MR_EINVAL);
  mr_tensor_free(b);
  mr_tensor_free(video);
  mr_tensor_free(mu);
  mr_wan_vae_free(vae);
}

/* Device memory after each chunk (the engine syncs before reporting progress). */
typedef struct mem_log { mr_ctx *ctx; int n; uint64_t bytes[16]; } mem_log;

static bool on_progress_mem(float done, void *user) {
  mem_log *m = user;
  if (m->n < 16) m->bytes[m->n++] = (uint64_t)mr_gpu_bytes_in_use(m->ctx);
  return true;
}

/* Memory must not grow with the video: after the first two chunks (the
   caches fill up), every chunk ends with the same device memory in use. */
static void test_memory(mr_ctx *ctx, mr_weights *w, int stride) {
  mr_wan_vae *vae = NULL;
  CHECK_OK(ctx, mr_wan_vae_load(ctx, w, NULL, &vae));
  if (!vae) return;
  mr_rng rng = {99};
  int64_t ls[4] = {mr_wan_vae_z_dim(vae), 6, 2, 3}, vs[4] = {3, 21, 2 * stride, 3 * stride};
  size_t nl = (size_t)(ls[0] * ls[1] * ls[2] * ls[3]), nv = (size_t)(vs[0] * vs[1] * vs[2] * vs[3]);
  float *lat = malloc(nl * sizeof *lat), *vid = malloc(nv * sizeof *vid);
  mr_rng_fill(&rng, lat, nl, -2, 2);
  mr_rng_fill(&rng, vid, nv, -1, 1);
  mr_tensor *tl = NULL, *tv = NULL, *out = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, ls, MR_F32, lat, &tl));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, vs, MR_F32, vid, &tv));
  mr_wan_vae_set_decode_chunk(vae, 1); /* the reference's chunks: one latent frame each */
  for (int pass = 0; pass < 2; pass++) {
    mem_log m = {ctx, 0, {0}};
    if (pass == 0) CHECK_OK(ctx, mr_wan_vae_decode(vae, tl, on_progress_mem, &m, &out));
    else CHECK_OK(ctx, mr_wan_vae_encode(vae, tv, on_progress_mem, &m, &out));
    CHECK(m.n == 6);
    for (int i = 3; i < m.n; i++) {
      if (m.bytes[i] != m.bytes[2])
        fprintf(stderr, "%s chunk %d: %llu bytes in use, chunk 2: %llu\n", pass ? "encode" : "decode", i,
                (unsigned long long)m.bytes[i], (unsigned long long)m.bytes[2]);
      CHECK(m.bytes[i] == m.bytes[2]);
    }
    mr_tensor_free(out);
    out = NULL;
  }
  mr_tensor_free(tl);
  mr_tensor_free(tv);
  free(lat);
  free(vid);
  mr_wan_vae_free(vae);
}

/* Writes the checkpoint minus `drop` (or with `reshape` given a wrong shape) and expects a refusal naming it. */
static void test_broken(mr_ctx *ctx, mr_weights *w, const char *drop, const char *reshape) {
  int n = mr_weights_count(w), k = 0;
  const char **names = calloc((size_t)n, sizeof *names);
  mr_tensor **ts = calloc((size_t)n, sizeof *ts);
  for (int i = 0; i < n; i++) {
    mr_weight_info info;
    CHECK_OK(ctx, mr_weights_get(w, i, &info));
    if (drop && !strcmp(info.name, drop)) continue;
    if (reshape && !strcmp(info.name, reshape)) {
      int64_t s[1] = {(int64_t)(info.nbytes / mr_dtype_size(info.dtype)) + 1};
      CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, s, &ts[k]));
    } else {
      CHECK_OK(ctx, mr_weights_to_tensor(ctx, w, i, MR_F32, &ts[k]));
    }
    names[k++] = info.name;
  }
  char path[256];
  const char *dir = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/mr_test_vae_%d.safetensors", dir ? dir : "/tmp", (int)getpid());
  CHECK_OK(ctx, mr_safetensors_write(ctx, path, k, names, ts, NULL));
  mr_weights *bw = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &bw));
  mr_wan_vae *vae = (mr_wan_vae *)1;
  if (bw) {
    mr_status st = mr_wan_vae_load(ctx, bw, NULL, &vae);
    const char *want = drop ? drop : reshape;
    CHECK(st == MR_EFORMAT && vae == NULL);
    if (!strstr(mr_ctx_last_error(ctx), want)) fprintf(stderr, "message does not name %s: %s\n", want, mr_ctx_last_error(ctx));
    CHECK(strstr(mr_ctx_last_error(ctx), want) != NULL);
  }
  mr_weights_free(bw);
  unlink(path);
  for (int i = 0; i < k; i++) mr_tensor_free(ts[i]);
  free(ts);
  free(names);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_vae <conformance data dir>\n");
    return 2;
  }
  mr_ctx *ctx = mr_test_ctx();
  char path[1024];
  struct { const char *file, *io; int version, stride; const char *probe; } models[] = {
      {"wan21_vae_tiny.safetensors", "wan21_vae_tiny.io.safetensors", 21, 8, "decoder.upsamples.0.residual.0.gamma"},
      {"wan21_vae_tiny.pth", "wan21_vae_tiny.io.safetensors", 21, 8, "conv1.weight"},
      {"wan22_vae_tiny.safetensors", "wan22_vae_tiny.io.safetensors", 22, 16,
       "decoder.upsamples.1.upsamples.3.time_conv.weight"},
  };
  const mr_dtype policies[3] = {MR_F32, MR_F16, MR_BF16};
  for (int m = 0; m < 3; m++) {
    vectors v;
    snprintf(path, sizeof path, "%s/wan/%s", argv[1], models[m].io);
    vectors_load(ctx, path, &v);
    mr_weights *w = NULL;
    snprintf(path, sizeof path, "%s/wan/%s", argv[1], models[m].file);
    CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
    if (w && v.mu) {
      /* the .pth holds the same weights as the .safetensors: f32 is enough there */
      for (int p = 0; p < (m == 1 ? 1 : 3); p++)
        run_policy(ctx, models[m].file, w, &v, policies[p], models[m].version, models[m].stride, models[m].probe);
      if (m != 1) test_cancel(ctx, w, &v);
      if (m != 1) test_memory(ctx, w, models[m].stride);
      if (m == 0) {
        test_broken(ctx, w, "decoder.upsamples.4.shortcut.weight", NULL);
        test_broken(ctx, w, NULL, "encoder.middle.1.to_qkv.weight");
        test_broken(ctx, w, "conv1.bias", NULL);
      }
      if (m == 2) {
        test_broken(ctx, w, "decoder.upsamples.1.upsamples.3.time_conv.bias", NULL);
        test_broken(ctx, w, NULL, "encoder.downsamples.2.downsamples.0.shortcut.weight");
      }
    }
    mr_weights_free(w);
    vectors_free(&v);
  }
  mr_ctx_free(ctx);
  return mr_test_finish("test_vae");
}
