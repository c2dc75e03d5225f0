/* Benchmark of whole model forwards: the Wan DiT, the umT5 encoder and the
   Wan 2.1 VAE decoder, at the tiny conformance sizes (the real files of
   tests/conformance/data/wan with their configs and io inputs) and at one
   realistic width each. Prints figures; decides nothing.

   The realistic models get random weights laid out exactly as the released
   checkpoints name and shape them: the tensors are made on the device,
   written to a temporary .safetensors with mr_safetensors_write, loaded back
   through mr_weights_open and the model's own loader (the path a real
   checkpoint takes) and the file is deleted. The same layout generator is
   first checked against the tiny checkpoints, name by name and shape by shape.

   Per model: the time of one forward after a warm-up forward (pipelines
   built, memory pools grown), the FLOPs the engine counted for it
   (mr_ctx_flops: matmul, attention, conv3d; 2 per multiply-add), the
   achieved GFLOP/s, and the ratio of that rate to the plain CPU reference
   (mr_ref_matmul on 512x512x512) measured in the same run.

   usage: bench_models [--data DIR] [--small|--large] [--only NAME] [--reps N] [--profile]
   --data      conformance data folder (default tests/conformance/data, then ../tests/conformance/data)
   --small     sizes cut to run in about two minutes on a CPU device (lavapipe), the default there:
               DiT 1 block instead of 2, VAE 5 frames of 48x48 instead of 128x128
   --large     the full realistic sizes; the default on GPUs
   --only      run the cases whose name contains NAME ("dit", "t5", "vae", "tiny", "wan2.1-1.3b"...)
   --profile   per-op GPU profile of each case's forward, printed (to stderr) when
               the case's context is freed. No warm-up then: GPU timestamps never
               include pipeline builds. The report also lists what loading the
               weights dispatched (casts), by its own op names.
   Each case runs in its own context, so MOONREEL_PROFILE=1 without --profile
   prints one report per case covering loading, the warm-up and the timed forward. */
#include "moonreel.h"
#include "ref_linear.h"

#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(mr_ctx *ctx, mr_status st, const char *what) {
  fprintf(stderr, "bench_models: %s: %s: %s\n", what, mr_status_name(st), ctx ? mr_ctx_last_error(ctx) : "");
  exit(1);
}

#define TRY(ctx, expr)                        \
  do {                                        \
    mr_status st_ = (expr);                   \
    if (st_ != MR_OK) die(ctx, st_, #expr);   \
  } while (0)

static uint32_t rng_next(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s;
}

static float rng_uniform(uint32_t *s) { return ((rng_next(s) >> 8) * (1.0f / 16777216.0f)) * 2.0f - 1.0f; }

/* ------------------------------------------------------------------ options */

typedef struct bench_opts {
  const char *data;
  const char *only;
  int large;        /* 1 full sizes, 0 cut for CPU devices */
  int reps;
  bool profile;
  double ref_rate;  /* CPU reference GFLOP/s */
  double sgemm_rate; /* the machine's OpenBLAS sgemm GFLOP/s, 0 if not measured */
} bench_opts;

static bool wanted(const bench_opts *o, const char *name) { return !o->only || strstr(name, o->only) != NULL; }

static mr_ctx *new_ctx(const bench_opts *o) {
  mr_ctx_opts co = mr_ctx_opts_default();
  if (o->profile) co.profile = 1;
  mr_ctx *ctx;
  mr_status st = mr_ctx_new(&co, &ctx);
  if (st != MR_OK) die(NULL, st, "mr_ctx_new");
  return ctx;
}

/* ------------------------------------------------------------------ checkpoint layouts */

typedef enum init_kind {
  INIT_WEIGHT, /* uniform(-1, 1) / sqrt(fan_in) */
  INIT_ONE,    /* norm scales */
  INIT_SMALL,  /* biases, modulation, position tables: uniform(-0.02, 0.02) */
  INIT_EMBED   /* token table: uniform(-1, 1) */
} init_kind;

typedef struct layout_entry {
  char name[96];
  int ndim;
  int64_t shape[5];
  init_kind init;
} layout_entry;

typedef struct layout {
  layout_entry *e;
  int n, cap;
} layout;

#define DIMS(...) (const int64_t[]){__VA_ARGS__}, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

static void add(layout *l, init_kind init, const int64_t *shape, int ndim, const char *fmt, ...) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 256;
    l->e = realloc(l->e, (size_t)l->cap * sizeof *l->e);
    if (!l->e) {
      fprintf(stderr, "bench_models: out of host memory\n");
      exit(1);
    }
  }
  layout_entry *e = &l->e[l->n++];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->name, sizeof e->name, fmt, ap);
  va_end(ap);
  e->ndim = ndim;
  memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
  e->init = init;
}

static void linear(layout *l, const char *p, int64_t out, int64_t in, bool bias) {
  add(l, INIT_WEIGHT, DIMS(out, in), "%s.weight", p);
  if (bias) add(l, INIT_SMALL, DIMS(out), "%s.bias", p);
}

/* Wan DiT, t2v (WanModel with qk_norm and cross_attn_norm, as released). */
typedef struct dit_size { int64_t dim, ffn, freq, text_dim, in_dim, out_dim, layers; } dit_size;

static void dit_layout(layout *l, const dit_size *s) {
  char p[96];
  int64_t d = s->dim;
  add(l, INIT_WEIGHT, DIMS(d, s->in_dim, 1, 2, 2), "patch_embedding.weight");
  add(l, INIT_SMALL, DIMS(d), "patch_embedding.bias");
  linear(l, "text_embedding.0", d, s->text_dim, true);
  linear(l, "text_embedding.2", d, d, true);
  linear(l, "time_embedding.0", d, s->freq, true);
  linear(l, "time_embedding.2", d, d, true);
  linear(l, "time_projection.1", 6 * d, d, true);
  for (int64_t b = 0; b < s->layers; b++) {
    const char *attn[2] = {"self_attn", "cross_attn"};
    for (int a = 0; a < 2; a++) {
      const char *qkvo[4] = {"q", "k", "v", "o"};
      for (int j = 0; j < 4; j++) {
        snprintf(p, sizeof p, "blocks.%lld.%s.%s", (long long)b, attn[a], qkvo[j]);
        linear(l, p, d, d, true);
      }
      add(l, INIT_ONE, DIMS(d), "blocks.%lld.%s.norm_q.weight", (long long)b, attn[a]);
      add(l, INIT_ONE, DIMS(d), "blocks.%lld.%s.norm_k.weight", (long long)b, attn[a]);
    }
    add(l, INIT_ONE, DIMS(d), "blocks.%lld.norm3.weight", (long long)b);
    add(l, INIT_SMALL, DIMS(d), "blocks.%lld.norm3.bias", (long long)b);
    snprintf(p, sizeof p, "blocks.%lld.ffn.0", (long long)b);
    linear(l, p, s->ffn, d, true);
    snprintf(p, sizeof p, "blocks.%lld.ffn.2", (long long)b);
    linear(l, p, d, s->ffn, true);
    add(l, INIT_SMALL, DIMS(1, 6, d), "blocks.%lld.modulation", (long long)b);
  }
  linear(l, "head.head", s->out_dim * 4, d, true);
  add(l, INIT_SMALL, DIMS(1, 2, d), "head.modulation");
}

/* umT5 encoder, Wan's official naming (per-layer relative position tables). */
typedef struct t5_size { int64_t vocab, dim, ffn, heads, buckets, layers; } t5_size;

static void t5_layout(layout *l, const t5_size *s) {
  char p[96];
  add(l, INIT_EMBED, DIMS(s->vocab, s->dim), "token_embedding.weight");
  add(l, INIT_ONE, DIMS(s->dim), "norm.weight");
  for (int64_t b = 0; b < s->layers; b++) {
    add(l, INIT_ONE, DIMS(s->dim), "blocks.%lld.norm1.weight", (long long)b);
    add(l, INIT_ONE, DIMS(s->dim), "blocks.%lld.norm2.weight", (long long)b);
    const char *qkvo[4] = {"q", "k", "v", "o"};
    for (int j = 0; j < 4; j++) {
      snprintf(p, sizeof p, "blocks.%lld.attn.%s", (long long)b, qkvo[j]);
      linear(l, p, s->dim, s->dim, false);
    }
    add(l, INIT_SMALL, DIMS(s->buckets, s->heads), "blocks.%lld.pos_embedding.embedding.weight", (long long)b);
    snprintf(p, sizeof p, "blocks.%lld.ffn.gate.0", (long long)b);
    linear(l, p, s->ffn, s->dim, false);
    snprintf(p, sizeof p, "blocks.%lld.ffn.fc1", (long long)b);
    linear(l, p, s->ffn, s->dim, false);
    snprintf(p, sizeof p, "blocks.%lld.ffn.fc2", (long long)b);
    linear(l, p, s->dim, s->ffn, false);
  }
}

/* Wan 2.1 VAE (WanVAE_: dim_mult 1,2,4,4, two residual blocks per level,
   temporal downsampling in the last two levels, attention in the middle only). */
static void vae_conv(layout *l, const char *p, int64_t out, int64_t in, int64_t kt, int64_t k) {
  add(l, INIT_WEIGHT, DIMS(out, in, kt, k, k), "%s.weight", p);
  add(l, INIT_SMALL, DIMS(out), "%s.bias", p);
}

static void vae_residual(layout *l, const char *p, int64_t in, int64_t out) {
  char q[96];
  add(l, INIT_ONE, DIMS(in, 1, 1, 1), "%s.residual.0.gamma", p);
  snprintf(q, sizeof q, "%s.residual.2", p);
  vae_conv(l, q, out, in, 3, 3);
  add(l, INIT_ONE, DIMS(out, 1, 1, 1), "%s.residual.3.gamma", p);
  snprintf(q, sizeof q, "%s.residual.6", p);
  vae_conv(l, q, out, out, 3, 3);
  if (in != out) {
    snprintf(q, sizeof q, "%s.shortcut", p);
    vae_conv(l, q, out, in, 1, 1);
  }
}

static void vae_attention(layout *l, const char *p, int64_t c) {
  add(l, INIT_ONE, DIMS(c, 1, 1), "%s.norm.gamma", p);
  add(l, INIT_WEIGHT, DIMS(3 * c, c, 1, 1), "%s.to_qkv.weight", p);
  add(l, INIT_SMALL, DIMS(3 * c), "%s.to_qkv.bias", p);
  add(l, INIT_WEIGHT, DIMS(c, c, 1, 1), "%s.proj.weight", p);
  add(l, INIT_SMALL, DIMS(c), "%s.proj.bias", p);
}

/* A Resample: the 2-D conv (halving the channels when upsampling) and, for
   the temporal modes, the (3, 1, 1) time conv. */
static void vae_resample(layout *l, const char *p, int64_t c, bool up, bool temporal) {
  int64_t out = up ? c / 2 : c;
  add(l, INIT_WEIGHT, DIMS(out, c, 3, 3), "%s.resample.1.weight", p);
  add(l, INIT_SMALL, DIMS(out), "%s.resample.1.bias", p);
  if (temporal) {
    char q[96];
    snprintf(q, sizeof q, "%s.time_conv", p);
    vae_conv(l, q, up ? 2 * c : c, c, 3, 1);
  }
}

static void vae_layout(layout *l, int64_t dim, int64_t z) {
  static const int64_t mult[4] = {1, 2, 4, 4};
  static const bool tdown[3] = {false, true, true};
  const int res_blocks = 2;
  char p[96];
  /* encoder */
  int64_t enc[5] = {dim, dim * mult[0], dim * mult[1], dim * mult[2], dim * mult[3]};
  vae_conv(l, "encoder.conv1", enc[0], 3, 3, 3);
  int idx = 0;
  for (int i = 0; i < 4; i++) {
    int64_t in = enc[i], out = enc[i + 1];
    for (int r = 0; r < res_blocks; r++, in = out) {
      snprintf(p, sizeof p, "encoder.downsamples.%d", idx++);
      vae_residual(l, p, in, out);
    }
    if (i != 3) {
      snprintf(p, sizeof p, "encoder.downsamples.%d", idx++);
      vae_resample(l, p, out, false, tdown[i]);
    }
  }
  vae_residual(l, "encoder.middle.0", enc[4], enc[4]);
  vae_attention(l, "encoder.middle.1", enc[4]);
  vae_residual(l, "encoder.middle.2", enc[4], enc[4]);
  add(l, INIT_ONE, DIMS(enc[4], 1, 1, 1), "encoder.head.0.gamma");
  vae_conv(l, "encoder.head.2", 2 * z, enc[4], 3, 3);
  vae_conv(l, "conv1", 2 * z, 2 * z, 1, 1);
  vae_conv(l, "conv2", z, z, 1, 1);
  /* decoder: the levels reversed, upsampling where the encoder downsampled */
  int64_t dec[5] = {dim * mult[3], dim * mult[3], dim * mult[2], dim * mult[1], dim * mult[0]};
  vae_conv(l, "decoder.conv1", dec[0], z, 3, 3);
  vae_residual(l, "decoder.middle.0", dec[0], dec[0]);
  vae_attention(l, "decoder.middle.1", dec[0]);
  vae_residual(l, "decoder.middle.2", dec[0], dec[0]);
  idx = 0;
  for (int i = 0; i < 4; i++) {
    int64_t in = i >= 1 ? dec[i] / 2 : dec[i], out = dec[i + 1];
    for (int r = 0; r < res_blocks + 1; r++, in = out) {
      snprintf(p, sizeof p, "decoder.upsamples.%d", idx++);
      vae_residual(l, p, in, out);
    }
    if (i != 3) {
      snprintf(p, sizeof p, "decoder.upsamples.%d", idx++);
      vae_resample(l, p, out, true, tdown[2 - i]);
    }
  }
  add(l, INIT_ONE, DIMS(dec[4], 1, 1, 1), "decoder.head.0.gamma");
  vae_conv(l, "decoder.head.2", 3, dec[4], 3, 3);
}

/* Checks that a layout names and shapes exactly the tensors of a real checkpoint. */
static void layout_check(mr_ctx *ctx, const layout *l, const char *path) {
  mr_weights *w;
  TRY(ctx, mr_weights_open(ctx, path, &w));
  int bad = 0;
  for (int i = 0; i < l->n; i++) {
    mr_weight_info info;
    int j = mr_weights_find(w, l->e[i].name);
    bool ok = j >= 0 && mr_weights_get(w, j, &info) == MR_OK && info.ndim == l->e[i].ndim;
    for (int d = 0; ok && d < info.ndim; d++) ok = info.shape[d] == l->e[i].shape[d];
    if (!ok && bad++ < 5) fprintf(stderr, "bench_models: layout: %s differs from %s\n", l->e[i].name, path);
  }
  if (mr_weights_count(w) != l->n) bad++;
  printf("layout check: generator %s %s (%d tensors, file has %d)\n", bad ? "DIFFERS FROM" : "matches",
         strrchr(path, '/') ? strrchr(path, '/') + 1 : path, l->n, mr_weights_count(w));
  mr_weights_free(w);
  if (bad) exit(1);
}

/* Random device tensors for a layout -> temporary .safetensors -> opened weights.
   The file is deleted once open (the mapping keeps the data). */
static mr_weights *random_checkpoint(mr_ctx *ctx, const layout *l, mr_dtype dt, const char *tag, uint32_t seed,
                                     double *bytes) {
  mr_tensor **ts = calloc((size_t)l->n, sizeof *ts);
  const char **names = calloc((size_t)l->n, sizeof *names);
  if (!ts || !names) die(ctx, MR_ENOMEM, "random_checkpoint");
  *bytes = 0;
  for (int i = 0; i < l->n; i++) {
    const layout_entry *e = &l->e[i];
    int64_t n = 1, fan_in = 1;
    for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
    for (int d = 1; d < e->ndim; d++) fan_in *= e->shape[d];
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) die(ctx, MR_ENOMEM, "random_checkpoint");
    float a = e->init == INIT_WEIGHT ? 1.0f / sqrtf((float)fan_in) : e->init == INIT_SMALL ? 0.02f : 1.0f;
    for (int64_t k = 0; k < n; k++) h[k] = e->init == INIT_ONE ? 1.0f : a * rng_uniform(&seed);
    TRY(ctx, mr_tensor_from_host(ctx, dt, e->ndim, e->shape, MR_F32, h, &ts[i]));
    free(h);
    names[i] = e->name;
    *bytes += (double)n * mr_dtype_size(dt);
  }
  const char *dir = getenv("TMPDIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/moonreel-bench-%ld-%s.safetensors", dir && *dir ? dir : "/tmp", (long)getpid(), tag);
  TRY(ctx, mr_safetensors_write(ctx, path, l->n, names, ts, NULL));
  for (int i = 0; i < l->n; i++) mr_tensor_free(ts[i]);
  free(ts);
  free(names);
  mr_weights *w;
  mr_status st = mr_weights_open(ctx, path, &w);
  unlink(path);
  if (st != MR_OK) die(ctx, st, "mr_weights_open");
  return w;
}

static mr_tensor *random_tensor(mr_ctx *ctx, int ndim, const int64_t *shape, uint32_t seed) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  float *h = malloc((size_t)n * sizeof *h);
  if (!h) die(ctx, MR_ENOMEM, "random_tensor");
  for (int64_t k = 0; k < n; k++) h[k] = rng_uniform(&seed);
  mr_tensor *t;
  TRY(ctx, mr_tensor_from_host(ctx, MR_F32, ndim, shape, MR_F32, h, &t));
  free(h);
  return t;
}

/* ------------------------------------------------------------------ timing */

typedef mr_status (*forward_fn)(void *arg, mr_tensor **out);

/* Times one forward after a warm-up (with --profile, the single forward
   the profile describes) and prints the row. */
static void time_forward(mr_ctx *ctx, const bench_opts *o, const char *name, const char *size, forward_fn fn,
                         void *arg, double *sec_out, double *flops_out) {
  mr_tensor *out = NULL;
  /* the tiny models run in milliseconds: average over 10 times as many forwards */
  int reps = strstr(name, "tiny") ? 10 * o->reps : o->reps;
  if (!o->profile) {
    TRY(ctx, fn(arg, &out));
    mr_tensor_free(out);
    TRY(ctx, mr_ctx_sync(ctx));
  } else {
    reps = 1;
  }
  mr_ctx_memory_reset_peak(ctx);
  mr_memory_stats m0, m1;
  mr_ctx_memory_stats(ctx, &m0);
  double f0 = mr_ctx_flops(ctx), t0 = now();
  for (int r = 0; r < reps; r++) {
    TRY(ctx, fn(arg, &out));
    mr_tensor_free(out);
  }
  TRY(ctx, mr_ctx_sync(ctx));
  double sec = (now() - t0) / reps, flops = (mr_ctx_flops(ctx) - f0) / reps;
  double rate = flops / sec * 1e-9;
  mr_ctx_memory_stats(ctx, &m1);
  printf("%-22s %-46s %10.1f ms %10.3f GFLOP %8.2f GFLOP/s  x%.2f CPU ref", name, size, sec * 1e3, flops * 1e-9,
         rate, rate / o->ref_rate);
  if (o->sgemm_rate > 0) printf("  %4.1f%% of sgemm", 100.0 * rate / o->sgemm_rate);
  /* device memory: what the weights and inputs hold, and the forward's peak on top */
  printf("  | device %.0f MiB held, forward peak +%.0f MiB\n", m0.held_bytes / 1048576.0,
         (m1.peak_held_bytes - m0.held_bytes) / 1048576.0);
  fflush(stdout);
  if (sec_out) *sec_out = sec;
  if (flops_out) *flops_out = flops;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    s = NULL;
  }
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

static void data_path(const bench_opts *o, const char *file, char *out, size_t cap) {
  snprintf(out, cap, "%s/wan/%s", o->data, file);
}

static mr_tensor *io_tensor(mr_ctx *ctx, const mr_weights *io, const char *name) {
  int i = mr_weights_find(io, name);
  if (i < 0) die(ctx, MR_ENOTFOUND, name);
  mr_tensor *t;
  TRY(ctx, mr_weights_to_tensor(ctx, io, i, MR_F32, &t));
  return t;
}

static const char *shape_str(const mr_tensor *t, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = 0;
  for (int d = 0; d < mr_tensor_ndim(t) && len < cap; d++)
    len += (size_t)snprintf(buf + len, cap - len, d ? "x%lld" : "%lld", (long long)mr_tensor_shape(t)[d]);
  return buf;
}

/* ------------------------------------------------------------------ DiT */

typedef struct dit_arg { mr_wan_dit *dit; mr_wan_dit_input in; } dit_arg;

static mr_status dit_forward(void *arg, mr_tensor **out) {
  dit_arg *a = arg;
  return mr_wan_dit_forward(a->dit, &a->in, out);
}

static void bench_dit_tiny(const bench_opts *o) {
  if (!wanted(o, "dit-tiny")) return;
  mr_ctx *ctx = new_ctx(o);
  char path[1024], size[128], sh[64];
  data_path(o, "wan21_dit_t2v_tiny.json", path, sizeof path);
  char *json = read_text(path);
  if (!json) die(ctx, MR_EIO, path);
  mr_weights *w, *io;
  data_path(o, "wan21_dit_t2v_tiny.safetensors", path, sizeof path);
  TRY(ctx, mr_weights_open(ctx, path, &w));
  layout l = {0};
  dit_layout(&l, &(dit_size){.dim = 64, .ffn = 96, .freq = 32, .text_dim = 32, .in_dim = 16, .out_dim = 16, .layers = 2});
  layout_check(ctx, &l, path);
  free(l.e);
  data_path(o, "wan21_dit_t2v_tiny.io.safetensors", path, sizeof path);
  TRY(ctx, mr_weights_open(ctx, path, &io));
  mr_model_opts mo = mr_model_opts_default();
  mo.config_json = json;
  dit_arg a = {0};
  TRY(ctx, mr_wan_dit_load(ctx, w, &mo, &a.dit));
  a.in.x = io_tensor(ctx, io, "x");
  a.in.context = io_tensor(ctx, io, "context");
  a.in.t = 500.0f;
  const mr_wan_dit_config *c = mr_wan_dit_config_get(a.dit);
  const int64_t *xs = mr_tensor_shape(a.in.x);
  snprintf(size, sizeof size, "dim %d, %d blocks, x %s (%lld tok), f32", c->dim, c->num_layers,
           shape_str(a.in.x, sh, sizeof sh), (long long)(xs[1] * xs[2] * xs[3] / 4));
  time_forward(ctx, o, "dit-tiny (t2v)", size, dit_forward, &a, NULL, NULL);
  mr_tensor_free((mr_tensor *)a.in.x);
  mr_tensor_free((mr_tensor *)a.in.context);
  mr_wan_dit_free(a.dit);
  mr_weights_free(w);
  mr_weights_free(io);
  free(json);
  mr_ctx_free(ctx);
}

/* Useful FLOPs of one Wan DiT block: self-attention projections and scores
   over L tokens, cross-attention over Lc text rows, the GELU MLP. */
static double dit_block_flops(const dit_size *s, double L, double Lc) {
  double d = (double)s->dim;
  return 8 * L * d * d + 4 * L * d * d + 4 * Lc * d * d + 4 * L * d * s->ffn + 4 * L * L * d + 4 * L * Lc * d;
}

/* Loads a Wan2.1-1.3B-width DiT (bf16) from w and times one forward on a
   random latent of shape xs and a random 512-row context. */
/* A rank-r adapter on every linear of dit (the original naming), random,
   written to a temporary file and opened. */
static mr_weights *random_adapter(mr_ctx *ctx, mr_wan_dit *dit, int64_t r) {
  const mr_params *p = mr_wan_dit_params(dit);
  layout l = {0};
  for (int i = 0; i < mr_params_count(p); i++) {
    mr_param_info pi;
    mr_params_get(p, i, &pi);
    size_t n = strlen(pi.name);
    if (!pi.is_weight || pi.ndim != 2 || n < 7 || strcmp(pi.name + n - 7, ".weight") != 0) continue;
    add(&l, INIT_SMALL, DIMS(r, pi.shape[1]), "diffusion_model.%.*s.lora_A.weight", (int)(n - 7), pi.name);
    add(&l, INIT_SMALL, DIMS(pi.shape[0], r), "diffusion_model.%.*s.lora_B.weight", (int)(n - 7), pi.name);
  }
  double bytes;
  mr_weights *w = random_checkpoint(ctx, &l, MR_F32, "lora", 31, &bytes);
  free(l.e);
  return w;
}

/* The adapter's cost: the forward with it on the fly against the forward
   without (same run), and the time a merge takes. */
static void time_lora(mr_ctx *ctx, const bench_opts *o, dit_arg *a, double base_sec) {
  mr_weights *w = random_adapter(ctx, a->dit, 32);
  mr_lora_opts lo = mr_lora_opts_default();
  lo.mode = MR_LORA_ON_THE_FLY;
  mr_lora *l = NULL;
  TRY(ctx, mr_wan_dit_lora_add(a->dit, w, "rank-32 adapter", &lo, &l));
  double sec;
  time_forward(ctx, o, "  + rank-32 LoRA, on the fly", "every linear", dit_forward, a, &sec, NULL);
  mr_lora_remove(l);
  lo.mode = MR_LORA_MERGE;
  double t0 = now();
  TRY(ctx, mr_wan_dit_lora_add(a->dit, w, "rank-32 adapter", &lo, &l));
  TRY(ctx, mr_ctx_sync(ctx));
  double merge = now() - t0;
  t0 = now();
  mr_lora_remove(l);
  TRY(ctx, mr_ctx_sync(ctx));
  printf("  LoRA on the fly: x%.2f the base forward; merging it took %.2f s, removing %.2f s\n", sec / base_sec, merge,
         now() - t0);
  mr_weights_free(w);
}

static void time_dit(mr_ctx *ctx, const bench_opts *o, mr_weights *w, const char *name, const char *size,
                     const int64_t *xs, bool with_lora, double *sec, double *flops) {
  int64_t cs[2] = {512, 4096};
  mr_model_opts mo = mr_model_opts_default();
  mo.weights = MR_BF16;
  mo.config_json = "{\"num_heads\": 12, \"text_len\": 512}";
  dit_arg a = {0};
  TRY(ctx, mr_wan_dit_load(ctx, w, &mo, &a.dit));
  mr_weights_free(w);
  a.in.x = random_tensor(ctx, 4, xs, 21);
  a.in.context = random_tensor(ctx, 2, cs, 22);
  a.in.t = 500.0f;
  double base_sec;
  time_forward(ctx, o, name, size, dit_forward, &a, &base_sec, flops);
  if (sec) *sec = base_sec;
  if (with_lora) time_lora(ctx, o, &a, base_sec);
  mr_tensor_free((mr_tensor *)a.in.x);
  mr_tensor_free((mr_tensor *)a.in.context);
  mr_wan_dit_free(a.dit);
}

static void bench_dit_real(const bench_opts *o) {
  if (!wanted(o, "dit-wan2.1-1.3b-blocks")) return;
  mr_ctx *ctx = new_ctx(o);
  /* Wan2.1-T2V-1.3B widths; 30 blocks in the release */
  dit_size s = {.dim = 1536, .ffn = 8960, .freq = 256, .text_dim = 4096, .in_dim = 16, .out_dim = 16,
                .layers = o->large ? 2 : 1};
  int64_t xs[4] = {16, 4, 40, 48};
  layout l = {0};
  dit_layout(&l, &s);
  double bytes, t0 = now();
  mr_weights *w = random_checkpoint(ctx, &l, MR_BF16, "dit", 11, &bytes);
  free(l.e);
  printf("  (random bf16 checkpoint of %.0f MB written and reopened in %.1f s)\n", bytes / 1e6, now() - t0);
  double L = (double)(xs[1] * xs[2] * xs[3] / 4), sec, flops;
  char size[128];
  snprintf(size, sizeof size, "dim 1536, %lld block%s, x 16x%lldx%lldx%lld (%.0f tok), bf16", (long long)s.layers,
           s.layers > 1 ? "s" : "", (long long)xs[1], (long long)xs[2], (long long)xs[3], L);
  time_dit(ctx, o, w, "dit-wan2.1-1.3b-blocks", size, xs, true, &sec, &flops);
  /* 30 blocks at the rate this forward achieved: its non-block work once, the block work 30 times */
  double fb = dit_block_flops(&s, L, 512);
  double f30 = flops + (30 - s.layers) * fb;
  printf("  extrapolated to the released 30 blocks: %.1f s, %.1f GFLOP (block %.2f GFLOP by formula, %.0f%% of this forward)\n",
         sec * f30 / flops, f30 * 1e-9, fb * 1e-9, 100.0 * s.layers * fb / flops);
  mr_ctx_free(ctx);
}

/* A checkpoint of the layout's names and shapes whose data is a hole in a
   sparse file: nothing is written or generated, and every value reads as 0.
   Timing on lavapipe does not depend on the values, so the full 30-block
   model costs no random numbers and no second device copy. */
static mr_weights *sparse_checkpoint(mr_ctx *ctx, const layout *l, const char *tag, double *bytes) {
  const char *dir = getenv("TMPDIR");
  char path[1024], *hdr = malloc(64 * (size_t)l->n + 64);
  if (!hdr) die(ctx, MR_ENOMEM, "sparse_checkpoint");
  snprintf(path, sizeof path, "%s/moonreel-bench-%ld-%s.safetensors", dir && *dir ? dir : "/tmp", (long)getpid(), tag);
  size_t len = 0, cap = 64 * (size_t)l->n + 64;
  uint64_t off = 0;
  len += (size_t)snprintf(hdr + len, cap - len, "{");
  for (int i = 0; i < l->n; i++) {
    const layout_entry *e = &l->e[i];
    uint64_t n = 2;
    char shape[96] = "";
    for (int d = 0, k = 0; d < e->ndim; d++) {
      n *= (uint64_t)e->shape[d];
      k += snprintf(shape + k, sizeof shape - (size_t)k, d ? ",%lld" : "%lld", (long long)e->shape[d]);
    }
    if (cap - len < 256 + strlen(e->name)) {
      cap = cap * 2 + 256 + strlen(e->name);
      if (!(hdr = realloc(hdr, cap))) die(ctx, MR_ENOMEM, "sparse_checkpoint");
    }
    len += (size_t)snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%s],\"data_offsets\":[%llu,%llu]}",
                            i ? "," : "", e->name, shape, (unsigned long long)off, (unsigned long long)(off + n));
    off += n;
  }
  len += (size_t)snprintf(hdr + len, cap - len, "}");
  FILE *f = fopen(path, "wb");
  uint64_t hl = len;
  if (!f || fwrite(&hl, 8, 1, f) != 1 || fwrite(hdr, 1, len, f) != len || fflush(f) != 0 ||
      ftruncate(fileno(f), (off_t)(8 + len + off)) != 0 || fclose(f) != 0)
    die(ctx, MR_EIO, path);
  free(hdr);
  *bytes = (double)off;
  mr_weights *w;
  mr_status st = mr_weights_open(ctx, path, &w);
  unlink(path);
  if (st != MR_OK) die(ctx, st, "mr_weights_open");
  return w;
}

/* The whole Wan2.1-T2V-1.3B DiT (30 blocks) at the size the comparison with
   stable-diffusion.cpp used (docs/performance.md): 64x64 pixels, 17 frames, i.e. a
   16x5x8x8 latent, 80 tokens, with the released 512-row text context. */
static void bench_dit_full(const bench_opts *o) {
  if (!wanted(o, "dit-wan2.1-1.3b-30")) return;
  mr_ctx *ctx = new_ctx(o);
  dit_size s = {.dim = 1536, .ffn = 8960, .freq = 256, .text_dim = 4096, .in_dim = 16, .out_dim = 16, .layers = 30};
  int64_t xs[4] = {16, 5, 8, 8};
  layout l = {0};
  dit_layout(&l, &s);
  double bytes;
  mr_weights *w = sparse_checkpoint(ctx, &l, "dit30", &bytes);
  free(l.e);
  printf("  (sparse bf16 checkpoint of %.0f MB: zeros)\n", bytes / 1e6);
  time_dit(ctx, o, w, "dit-wan2.1-1.3b-30", "dim 1536, 30 blocks, x 16x5x8x8 (80 tok), bf16", xs, false, NULL, NULL);
  mr_ctx_free(ctx);
}

/* ------------------------------------------------------------------ umT5 */

typedef struct t5_arg { mr_t5 *t5; int32_t *ids; int n, n_valid; } t5_arg;

static mr_status t5_forward(void *arg, mr_tensor **out) {
  t5_arg *a = arg;
  return mr_t5_encode(a->t5, a->ids, a->n, a->n_valid, out);
}

static void bench_t5_tiny(const bench_opts *o) {
  if (!wanted(o, "t5-tiny")) return;
  mr_ctx *ctx = new_ctx(o);
  char path[1024], size[128];
  mr_weights *w, *io;
  data_path(o, "t5_encoder_tiny.safetensors", path, sizeof path);
  TRY(ctx, mr_weights_open(ctx, path, &w));
  layout l = {0};
  t5_layout(&l, &(t5_size){.vocab = 300, .dim = 32, .ffn = 48, .heads = 4, .buckets = 32, .layers = 2});
  layout_check(ctx, &l, path);
  free(l.e);
  data_path(o, "t5_encoder_tiny.io.safetensors", path, sizeof path);
  TRY(ctx, mr_weights_open(ctx, path, &io));
  t5_arg a = {0};
  TRY(ctx, mr_t5_load(ctx, w, NULL, &a.t5));
  mr_weight_info ids, mask;
  int ii = mr_weights_find(io, "ids"), im = mr_weights_find(io, "mask");
  if (ii < 0 || im < 0 || mr_weights_get(io, ii, &ids) != MR_OK || mr_weights_get(io, im, &mask) != MR_OK ||
      ids.dtype != MR_I64 || mask.dtype != MR_I64 || ids.ndim != 2)
    die(ctx, MR_EFORMAT, "t5 io ids/mask");
  a.n = (int)ids.shape[1];
  a.ids = malloc((size_t)a.n * sizeof *a.ids);
  for (int i = 0; i < a.n; i++) {
    int64_t v, m;
    memcpy(&v, (const char *)ids.data + 8 * i, 8);
    memcpy(&m, (const char *)mask.data + 8 * i, 8);
    a.ids[i] = (int32_t)v;
    a.n_valid += m != 0;
  }
  snprintf(size, sizeof size, "dim %d, 2 blocks, %d tokens (%d real), f32", mr_t5_dim(a.t5), a.n, a.n_valid);
  time_forward(ctx, o, "t5-tiny", size, t5_forward, &a, NULL, NULL);
  free(a.ids);
  mr_t5_free(a.t5);
  mr_weights_free(w);
  mr_weights_free(io);
  mr_ctx_free(ctx);
}

static void bench_t5_real(const bench_opts *o) {
  if (!wanted(o, "t5-umt5-xxl")) return;
  mr_ctx *ctx = new_ctx(o);
  /* umT5-XXL widths (24 blocks in the release). The vocabulary is cut from
     256384 to 8192 rows: the lookup does no arithmetic, and the full table
     alone would be 2 GB of bf16. */
  t5_size s = {.vocab = 8192, .dim = 4096, .ffn = 10240, .heads = 64, .buckets = 32, .layers = 1};
  layout l = {0};
  t5_layout(&l, &s);
  double bytes, t0 = now();
  mr_weights *w = random_checkpoint(ctx, &l, MR_BF16, "t5", 12, &bytes);
  free(l.e);
  mr_model_opts mo = mr_model_opts_default();
  mo.weights = MR_BF16;
  t5_arg a = {0};
  TRY(ctx, mr_t5_load(ctx, w, &mo, &a.t5));
  mr_weights_free(w);
  printf("  (random bf16 checkpoint of %.0f MB written, loaded and deleted in %.1f s)\n", bytes / 1e6, now() - t0);
  a.n = 512;
  a.n_valid = a.n;
  a.ids = malloc((size_t)a.n * sizeof *a.ids);
  uint32_t seed = 31;
  for (int i = 0; i < a.n; i++) a.ids[i] = (int32_t)(rng_next(&seed) % (uint32_t)s.vocab);
  char size[128];
  snprintf(size, sizeof size, "dim 4096, 64 heads, ffn 10240, 1 block, %d tok, bf16", a.n);
  double sec, flops;
  time_forward(ctx, o, "t5-umt5-xxl", size, t5_forward, &a, &sec, &flops);
  printf("  extrapolated to the released 24 blocks: %.1f s\n", sec * 24);
  free(a.ids);
  mr_t5_free(a.t5);
  mr_ctx_free(ctx);
}

/* ------------------------------------------------------------------ VAE */

typedef struct vae_arg { mr_wan_vae *vae; const mr_tensor *in; bool encode; } vae_arg;

static mr_status vae_forward(void *arg, mr_tensor **out) {
  vae_arg *a = arg;
  return a->encode ? mr_wan_vae_encode(a->vae, a->in, NULL, NULL, out) : mr_wan_vae_decode(a->vae, a->in, NULL, NULL, out);
}

/* Drops a leading batch dim of 1: [1, C, T, H, W] -> [C, T, H, W]. */
static mr_tensor *unbatch(mr_ctx *ctx, mr_tensor *t) {
  const int64_t *s = mr_tensor_shape(t);
  mr_tensor *v;
  TRY(ctx, mr_tensor_reshape(t, 4, s + 1, &v));
  mr_tensor_free(t);
  return v;
}

static void bench_vae_tiny(const bench_opts *o) {
  if (!wanted(o, "vae-tiny")) return;
  mr_ctx *ctx = new_ctx(o);
  char path[1024], size[128], sh[64];
  mr_weights *w, *io;
  data_path(o, "wan21_vae_tiny.safetensors", path, sizeof path);
  TRY(ctx, mr_weights_open(ctx, path, &w));
  layout l = {0};
  vae_layout(&l, 8, 4);
  layout_check(ctx, &l, path);
  free(l.e);
  data_path(o, "wan21_vae_tiny.io.safetensors", path, sizeof path);
  TRY(ctx, mr_weights_open(ctx, path, &io));
  vae_arg a = {0};
  TRY(ctx, mr_wan_vae_load(ctx, w, NULL, &a.vae));
  mr_tensor *lat = unbatch(ctx, io_tensor(ctx, io, "latent")), *vid = unbatch(ctx, io_tensor(ctx, io, "video"));
  a.in = lat;
  snprintf(size, sizeof size, "dim 8, z 4, latent %s, f32", shape_str(lat, sh, sizeof sh));
  time_forward(ctx, o, "vae-tiny decode", size, vae_forward, &a, NULL, NULL);
  a.in = vid;
  a.encode = true;
  snprintf(size, sizeof size, "dim 8, z 4, video %s, f32", shape_str(vid, sh, sizeof sh));
  time_forward(ctx, o, "vae-tiny encode", size, vae_forward, &a, NULL, NULL);
  mr_tensor_free(lat);
  mr_tensor_free(vid);
  mr_wan_vae_free(a.vae);
  mr_weights_free(w);
  mr_weights_free(io);
  mr_ctx_free(ctx);
}

static void bench_vae_real(const bench_opts *o) {
  if (!wanted(o, "vae-wan2.1")) return;
  mr_ctx *ctx = new_ctx(o);
  layout l = {0};
  vae_layout(&l, 96, 16);
  double bytes, t0 = now();
  mr_weights *w = random_checkpoint(ctx, &l, MR_BF16, "vae", 13, &bytes);
  free(l.e);
  mr_model_opts mo = mr_model_opts_default();
  mo.weights = MR_BF16;
  vae_arg a = {0};
  TRY(ctx, mr_wan_vae_load(ctx, w, &mo, &a.vae));
  mr_weights_free(w);
  printf("  (random bf16 checkpoint of %.0f MB written, loaded and deleted in %.1f s)\n", bytes / 1e6, now() - t0);
  int64_t ls[4] = {16, 2, o->large ? 16 : 6, o->large ? 16 : 6};
  mr_tensor *lat = random_tensor(ctx, 4, ls, 23);
  a.in = lat;
  char size[128];
  snprintf(size, sizeof size, "dim 96, z 16, latent 16x2x%lldx%lld -> 5x%lldx%lld, bf16", (long long)ls[2],
           (long long)ls[3], (long long)ls[2] * 8, (long long)ls[3] * 8);
  time_forward(ctx, o, "vae-wan2.1 decode", size, vae_forward, &a, NULL, NULL);
  mr_tensor_free(lat);
  mr_wan_vae_free(a.vae);
  mr_ctx_free(ctx);
}

/* ------------------------------------------------------------------ main */

/* The CPU yardstick: the plain reference matmul on 512 x 512 x 512, best of 3. */
static double cpu_ref_rate(void) {
  const int64_t n = 512;
  float *x = malloc((size_t)(n * n) * 4), *w = malloc((size_t)(n * n) * 4), *out = malloc((size_t)(n * n) * 4);
  if (!x || !w || !out) die(NULL, MR_ENOMEM, "cpu_ref_rate");
  uint32_t seed = 1;
  for (int64_t i = 0; i < n * n; i++) {
    x[i] = rng_uniform(&seed);
    w[i] = rng_uniform(&seed);
  }
  double best = 0;
  for (int r = 0; r < 3; r++) {
    double t0 = now();
    mr_ref_matmul(x, w, NULL, out, 1, n, n, n, false);
    double rate = 2.0 * n * n * n / (now() - t0) * 1e-9;
    if (rate > best) best = rate;
  }
  free(x);
  free(w);
  free(out);
  return best;
}

/* The machine's float32 peak as OpenBLAS reaches it (cblas_sgemm, all
   cores, 2048^3, best of 3): the yardstick the targets are stated
   against. OpenBLAS is looked up at run time (Debian's libopenblas0), so the
   bench has no build dependency on it; 0 when it is not installed. */
static double sgemm_rate(void) {
  void *lib = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return 0;
  typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                           int);
  sgemm_fn sgemm = (sgemm_fn)dlsym(lib, "cblas_sgemm");
  void (*threads)(int) = (void (*)(int))dlsym(lib, "openblas_set_num_threads");
  if (!sgemm) {
    dlclose(lib);
    return 0;
  }
  if (threads) threads((int)sysconf(_SC_NPROCESSORS_ONLN));
  const int n = 2048;
  float *x = malloc((size_t)n * n * 4), *w = malloc((size_t)n * n * 4), *out = malloc((size_t)n * n * 4);
  if (!x || !w || !out) die(NULL, MR_ENOMEM, "sgemm_rate");
  uint32_t seed = 3;
  for (int64_t i = 0; i < (int64_t)n * n; i++) {
    x[i] = rng_uniform(&seed);
    w[i] = rng_uniform(&seed);
  }
  double best = 0;
  for (int r = 0; r < 3; r++) {
    double t0 = now();
    sgemm(101 /* row major */, 111 /* no trans */, 112 /* trans */, n, n, n, 1.0f, x, n, w, n, 0.0f, out, n);
    double rate = 2.0 * n * n * n / (now() - t0) * 1e-9;
    if (rate > best) best = rate;
  }
  free(x);
  free(w);
  free(out);
  dlclose(lib);
  return best;
}

int main(int argc, char **argv) {
  bench_opts o = {.data = NULL, .only = NULL, .large = -1, .reps = 1};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--large") == 0) o.large = 1;
    else if (strcmp(argv[i], "--small") == 0) o.large = 0;
    else if (strcmp(argv[i], "--profile") == 0) o.profile = true;
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) o.reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) o.data = argv[++i];
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) o.only = argv[++i];
    else {
      fprintf(stderr, "usage: bench_models [--data DIR] [--small|--large] [--only NAME] [--reps N] [--profile]\n");
      return 2;
    }
  }
  if (o.reps < 1) o.reps = 1;
  if (!o.data) o.data = access("tests/conformance/data/wan", R_OK) == 0 ? "tests/conformance/data"
                                                                          : "../tests/conformance/data";
  mr_ctx *ctx = new_ctx(&(bench_opts){0});
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  mr_ctx_free(ctx);
  if (o.large < 0) o.large = info.type != MR_DEVICE_CPU;
  double t0 = now();
  o.ref_rate = cpu_ref_rate();
  printf("device: %s (%s)\n", info.name, mr_device_type_name(info.type));
  printf("CPU reference (mr_ref_matmul 512x512x512, one thread): %.2f GFLOP/s\n", o.ref_rate);
  o.sgemm_rate = sgemm_rate();
  if (o.sgemm_rate > 0)
    printf("machine peak (OpenBLAS cblas_sgemm 2048^3, %ld threads): %.1f GFLOP/s\n", sysconf(_SC_NPROCESSORS_ONLN),
           o.sgemm_rate);
  else
    printf("machine peak: not measured (libopenblas.so.0 not found)\n");
  if (o.large)
    printf("sizes: large (DiT 2 blocks at 1920 tokens, umT5 512 tokens, VAE 5 frames of 128x128)\n");
  else
    printf("sizes: cut for a CPU device so the whole run stays near two minutes on lavapipe: DiT 1 block (not 2)\n"
           "       at 1920 tokens, umT5 512 tokens, VAE 5 frames of 48x48 (not 128x128); --large runs the full sizes\n");
  printf("each row: one forward after a warm-up forward (tiny models: the mean of 10)%s;\n"
         "FLOPs as counted by the engine (matmul, attention, conv3d; 2 per multiply-add)\n\n",
         o.profile ? " (--profile: no warm-up)" : "");
  printf("%-22s %-46s %13s %16s %16s  %s\n", "model", "size", "time", "work", "rate", "rate / CPU ref");
  bench_dit_tiny(&o);
  bench_t5_tiny(&o);
  bench_vae_tiny(&o);
  bench_dit_real(&o);
  bench_dit_full(&o);
  bench_t5_real(&o);
  bench_vae_real(&o);
  printf("\ntotal run time %.1f s\n", now() - t0);
  return 0;
}
