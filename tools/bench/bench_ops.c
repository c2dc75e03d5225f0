/* Benchmark of the compute-heavy ops: matmul and attention, every kernel
   variant, with achieved GFLOP/s and the ratio against the plain CPU
   reference measured in the same run. Prints figures; decides nothing.

   usage: bench_ops [--large] [--reps N]
          bench_ops --ab-matmul A B | --ab-conv A B [--rounds N] [--only TEXT]
          bench_ops --attention H L D [--reps N]   (one attention shape, every variant)
   Sizes default by device: seconds-long ones on CPU devices (lavapipe),
   up to 4096^3 matmul and 8 heads x 4096 tokens x 128 attention on GPUs.
   The CPU reference is timed on a subset of rows (its rate does not depend
   on the row count) so large sizes finish.

   The A/B modes compare two kernel variants (the numbers of
   mr_matmul_variant / mr_conv_variant) at the default model's and Wan 1.3B's
   shapes: the two run alternately, N rounds of about 50 ms each, and the
   medians are printed, as wall-clock GFLOP/s and as GFLOP per CPU-second of
   this process (its driver threads included; other work on a shared machine
   inflates that far less than the wall clock), with the load average before
   and after and the relative difference of the two outputs. --only keeps the
   cases whose description contains TEXT. */
#include "moonreel.h"
#include "ops/op_conv.h"
#include "ops/op_internal.h"
#include "ref_linear.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fill(float *x, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = ((seed >> 8) * (1.0f / 16777216.0f)) * 2.0f - 1.0f;
  }
}

static double rel_err(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int die(mr_ctx *ctx, mr_status st) {
  fprintf(stderr, "bench_ops: %s: %s\n", mr_status_name(st), mr_ctx_last_error(ctx));
  exit(1);
}

/* CPU reference rate in GFLOP/s on the first `rows` rows of x. */
static double ref_matmul_rate(const float *x, const float *w, int64_t M, int64_t N, int64_t K, float *out) {
  int64_t rows = M;
  while (rows > 1 && 2.0 * rows * N * K > 4e8) rows /= 2;
  double t0 = now();
  mr_ref_matmul(x, w, NULL, out, 1, rows, N, K, false);
  return 2.0 * rows * N * K / (now() - t0) / 1e9;
}

static void bench_matmul(mr_ctx *ctx, int64_t M, int64_t N, int64_t K, mr_dtype wdt, int reps) {
  size_t nx = (size_t)(M * K), nw = (size_t)(N * K), no = (size_t)(M * N);
  float *x = malloc(nx * 4), *w = malloc(nw * 4), *ref = malloc(no * 4), *got = malloc(no * 4);
  fill(x, nx, 1);
  fill(w, nw, 2);
  int64_t xs[2] = {M, K}, ws[2] = {N, K};
  mr_tensor *tx, *tw;
  mr_status st;
  if ((st = mr_tensor_from_host(ctx, MR_F32, 2, xs, MR_F32, x, &tx)) != MR_OK) die(ctx, st);
  if ((st = mr_tensor_from_host(ctx, wdt, 2, ws, MR_F32, w, &tw)) != MR_OK) die(ctx, st);
  /* the reference sees the weights as stored (rounded to 16 bits where wdt says so) */
  if (wdt != MR_F32 && (st = mr_tensor_read(tw, MR_F32, w, nw)) != MR_OK) die(ctx, st);
  double ref_rate = ref_matmul_rate(x, w, M, N, K, ref);
  int64_t check_rows = M;
  while (check_rows > 1 && 2.0 * check_rows * N * K > 4e8) check_rows /= 2;
  double flops = 2.0 * M * N * K;
  const char *names[MR_MATMUL_VARIANTS] = {"auto", "reg", "smem", "smem-large", "lanes"};
  for (int v = 1; v < MR_MATMUL_VARIANTS; v++) {
    mr_tensor *out = NULL;
    if ((st = mr_op_matmul_variant(tx, tw, NULL, v, &out)) != MR_OK) die(ctx, st); /* warm-up: pipeline build */
    if ((st = mr_ctx_sync(ctx)) != MR_OK) die(ctx, st);
    double t0 = now();
    for (int r = 0; r < reps; r++) {
      mr_tensor_free(out);
      if ((st = mr_op_matmul_variant(tx, tw, NULL, v, &out)) != MR_OK) die(ctx, st);
    }
    if ((st = mr_ctx_sync(ctx)) != MR_OK) die(ctx, st);
    double dt = (now() - t0) / reps;
    if ((st = mr_tensor_read(out, MR_F32, got, no)) != MR_OK) die(ctx, st);
    double err = rel_err(got, ref, (size_t)(check_rows * N));
    printf("matmul %5lldx%5lldx%5lld w=%-4s %-10s %9.2f ms %9.2f GFLOP/s  ref %6.2f GFLOP/s  ratio %7.2fx  err %.1e\n",
           (long long)M, (long long)N, (long long)K, mr_dtype_name(wdt), names[v], dt * 1e3, flops / dt / 1e9, ref_rate,
           flops / dt / 1e9 / ref_rate, err);
    mr_tensor_free(out);
  }
  mr_tensor_free(tx);
  mr_tensor_free(tw);
  free(x);
  free(w);
  free(ref);
  free(got);
}

static void bench_attention(mr_ctx *ctx, int64_t H, int64_t L, int64_t D, int reps) {
  size_t n = (size_t)(L * H * D);
  float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
  fill(q, n, 3);
  fill(k, n, 4);
  fill(v, n, 5);
  int64_t s[4] = {1, L, H, D};
  mr_tensor *tq, *tk, *tv;
  mr_status st;
  if ((st = mr_tensor_from_host(ctx, MR_F32, 4, s, MR_F32, q, &tq)) != MR_OK) die(ctx, st);
  if ((st = mr_tensor_from_host(ctx, MR_F32, 4, s, MR_F32, k, &tk)) != MR_OK) die(ctx, st);
  if ((st = mr_tensor_from_host(ctx, MR_F32, 4, s, MR_F32, v, &tv)) != MR_OK) die(ctx, st);
  /* reference on the first Lq' query rows (keys complete) */
  int64_t rows = L;
  while (rows > 1 && 4.0 * H * rows * L * D > 4e8) rows /= 2;
  double t0 = now();
  if (!mr_ref_attention(q, k, v, ref, 1, rows, L, H, D, 1.0f / sqrtf((float)D), NULL)) {
    fprintf(stderr, "bench_ops: out of host memory\n");
    exit(1);
  }
  double ref_rate = 4.0 * H * rows * L * D / (now() - t0) / 1e9;
  double flops = 4.0 * H * L * L * D;
  const char *names[MR_ATTENTION_VARIANTS] = {"auto", "reg", "tiled", "lanes", "dlanes"};
  for (int var = 1; var < MR_ATTENTION_VARIANTS; var++) {
    mr_tensor *out = NULL;
    if ((st = mr_op_attention_variant(tq, tk, tv, NULL, var, &out)) != MR_OK) die(ctx, st);
    if ((st = mr_ctx_sync(ctx)) != MR_OK) die(ctx, st);
    t0 = now();
    for (int r = 0; r < reps; r++) {
      mr_tensor_free(out);
      if ((st = mr_op_attention_variant(tq, tk, tv, NULL, var, &out)) != MR_OK) die(ctx, st);
    }
    if ((st = mr_ctx_sync(ctx)) != MR_OK) die(ctx, st);
    double dt = (now() - t0) / reps;
    if ((st = mr_tensor_read(out, MR_F32, got, n)) != MR_OK) die(ctx, st);
    double err = rel_err(got, ref, (size_t)(rows * H * D));
    printf("attention %2lldh x %5lld x %3lld      %-10s %9.2f ms %9.2f GFLOP/s  ref %6.2f GFLOP/s  ratio %7.2fx  err %.1e\n",
           (long long)H, (long long)L, (long long)D, names[var], dt * 1e3, flops / dt / 1e9, ref_rate,
           flops / dt / 1e9 / ref_rate, err);
    mr_tensor_free(out);
  }
  mr_tensor_free(tq);
  mr_tensor_free(tk);
  mr_tensor_free(tv);
  free(q);
  free(k);
  free(v);
  free(ref);
  free(got);
}


/* ---------------------------------------------------------------- A/B: two kernels alternately */

/* One op of an A/B pair: a matmul or a conv3d problem and its operands. */
typedef struct ab_case {
  const char *what;
  bool conv;
  int64_t M, N, K;                    /* matmul */
  int64_t C, T, H, W, O, kt, kh, kw;  /* conv3d, stride 1 */
  int pad[6];
  mr_dtype wdt;
  mr_tensor *x, *w, *b;
  double flops;
} ab_case;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static mr_status ab_run(ab_case *c, int variant, mr_tensor **out) {
  if (c->conv) return mr_op_conv3d_variant(c->x, c->w, c->b, NULL, c->pad, variant, out);
  return mr_op_matmul_variant(c->x, c->w, c->b, variant, out);
}

/* CPU seconds this process (every thread, the driver's workers included) has used. */
static double cpu_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* Seconds of one call (inner calls per sample, then a sync); *cpu gets the
   CPU seconds of one call, which other work on the machine inflates far less. */
static double ab_time(mr_ctx *ctx, ab_case *c, int variant, int inner, double *cpu) {
  mr_status st;
  double c0 = cpu_now(), t0 = now();
  for (int r = 0; r < inner; r++) {
    mr_tensor *o = NULL;
    if ((st = ab_run(c, variant, &o)) != MR_OK) die(ctx, st);
    mr_tensor_free(o);
  }
  if ((st = mr_ctx_sync(ctx)) != MR_OK) die(ctx, st);
  double t = (now() - t0) / inner;
  if (cpu) *cpu = (cpu_now() - c0) / inner;
  return t;
}

static void ab_case_setup(mr_ctx *ctx, ab_case *c) {
  mr_status st;
  int64_t xs[4], ws[5], nb;
  int xn, wn;
  if (c->conv) {
    xs[0] = c->C; xs[1] = c->T; xs[2] = c->H; xs[3] = c->W;
    ws[0] = c->O; ws[1] = c->C; ws[2] = c->kt; ws[3] = c->kh; ws[4] = c->kw;
    xn = 4; wn = 5; nb = c->O;
    int64_t To = c->T + c->pad[0] + c->pad[1] - c->kt + 1, Ho = c->H + c->pad[2] + c->pad[3] - c->kh + 1;
    int64_t Wo = c->W + c->pad[4] + c->pad[5] - c->kw + 1;
    c->flops = 2.0 * c->O * To * Ho * Wo * c->C * c->kt * c->kh * c->kw;
  } else {
    xs[0] = c->M; xs[1] = c->K; ws[0] = c->N; ws[1] = c->K;
    xn = 2; wn = 2; nb = c->N;
    c->flops = 2.0 * c->M * c->N * c->K;
  }
  size_t nx = 1, nw = 1;
  for (int i = 0; i < xn; i++) nx *= (size_t)xs[i];
  for (int i = 0; i < wn; i++) nw *= (size_t)ws[i];
  float *hx = malloc(nx * 4), *hw = malloc(nw * 4), *hb = malloc((size_t)nb * 4);
  fill(hx, nx, 7);
  fill(hw, nw, 8);
  fill(hb, (size_t)nb, 9);
  if ((st = mr_tensor_from_host(ctx, MR_F32, xn, xs, MR_F32, hx, &c->x)) != MR_OK) die(ctx, st);
  if ((st = mr_tensor_from_host(ctx, c->wdt, wn, ws, MR_F32, hw, &c->w)) != MR_OK) die(ctx, st);
  if ((st = mr_tensor_from_host(ctx, MR_F32, 1, &nb, MR_F32, hb, &c->b)) != MR_OK) die(ctx, st);
  free(hx);
  free(hw);
  free(hb);
}

/* Runs variants a and b alternately `rounds` times on each case (after one
   warm-up call of each: pipeline builds), prints the median GFLOP/s of each,
   their ratio, the relative difference of the outputs and the load average
   before and after. */
static void bench_ab(mr_ctx *ctx, bool conv, int a, int b, int rounds, const char *only) {
  static const ab_case matmuls[] = {
      {.what = "default DiT q/k/v/o (80 tokens)", .M = 80, .N = 192, .K = 192, .wdt = MR_F32},
      {.what = "default DiT ffn up", .M = 80, .N = 768, .K = 192, .wdt = MR_F32},
      {.what = "default DiT ffn down", .M = 80, .N = 192, .K = 768, .wdt = MR_F32},
      {.what = "default DiT cross k/v (32 text)", .M = 32, .N = 192, .K = 192, .wdt = MR_F32},
      {.what = "default DiT time (GEMV)", .M = 1, .N = 1152, .K = 192, .wdt = MR_F32},
      {.what = "Wan1.3B q/k/v/o (512 of the tokens)", .M = 512, .N = 1536, .K = 1536, .wdt = MR_BF16},
      {.what = "Wan1.3B ffn up", .M = 512, .N = 8960, .K = 1536, .wdt = MR_BF16},
      {.what = "Wan1.3B ffn down", .M = 512, .N = 1536, .K = 8960, .wdt = MR_BF16},
      {.what = "odd sizes", .M = 77, .N = 203, .K = 129, .wdt = MR_F32},
  };
  static const ab_case convs[] = {
      {.what = "default VAE 16ch 64x64", .conv = true, .C = 16, .T = 6, .H = 64, .W = 64, .O = 16, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}},
      {.what = "default VAE 32ch 32x32", .conv = true, .C = 32, .T = 6, .H = 32, .W = 32, .O = 32, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}},
      {.what = "default VAE 64ch 16x16", .conv = true, .C = 64, .T = 4, .H = 16, .W = 16, .O = 64, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}},
      {.what = "default VAE 64ch 8x8", .conv = true, .C = 64, .T = 3, .H = 8, .W = 8, .O = 64, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}},
      {.what = "default VAE head 16->3", .conv = true, .C = 16, .T = 6, .H = 64, .W = 64, .O = 3, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}},
      {.what = "default VAE 1x1x1 64->192", .conv = true, .C = 64, .T = 1, .H = 8, .W = 8, .O = 192, .kt = 1, .kh = 1, .kw = 1},
      {.what = "Wan VAE 384ch 12x12", .conv = true, .C = 384, .T = 3, .H = 12, .W = 12, .O = 384, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}, .wdt = MR_BF16},
      {.what = "Wan VAE 192ch 24x24", .conv = true, .C = 192, .T = 3, .H = 24, .W = 24, .O = 192, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}, .wdt = MR_BF16},
      {.what = "Wan VAE 96ch 48x48", .conv = true, .C = 96, .T = 3, .H = 48, .W = 48, .O = 96, .kt = 3, .kh = 3, .kw = 3, .pad = {0, 0, 1, 1, 1, 1}, .wdt = MR_BF16},
      {.what = "odd sizes, stride-1 pad 2/0", .conv = true, .C = 7, .T = 3, .H = 9, .W = 13, .O = 5, .kt = 2, .kh = 3, .kw = 2, .pad = {1, 0, 2, 0, 0, 1}},
  };
  const ab_case *list = conv ? convs : matmuls;
  int n = conv ? (int)(sizeof convs / sizeof *convs) : (int)(sizeof matmuls / sizeof *matmuls);
  double *ta = malloc((size_t)rounds * sizeof *ta), *tb = malloc((size_t)rounds * sizeof *tb);
  double *ca = malloc((size_t)rounds * sizeof *ca), *cb = malloc((size_t)rounds * sizeof *cb);
  for (int i = 0; i < n; i++) {
    if (only && !strstr(list[i].what, only)) continue;
    ab_case c = list[i];
    ab_case_setup(ctx, &c);
    double la0[3] = {0}, la1[3] = {0};
    getloadavg(la0, 3);
    /* warm-up (the first call builds the pipelines; the driver may compile
       them there, inside the dispatch) and output check */
    mr_tensor *oa = NULL, *ob = NULL;
    mr_status st;
    double f0 = now();
    if ((st = ab_run(&c, a, &oa)) != MR_OK || (st = mr_ctx_sync(ctx)) != MR_OK) die(ctx, st);
    double f1 = now();
    if ((st = ab_run(&c, b, &ob)) != MR_OK || (st = mr_ctx_sync(ctx)) != MR_OK) die(ctx, st);
    double first_a = f1 - f0, first_b = now() - f1;
    size_t no = (size_t)mr_tensor_numel(oa);
    float *ha = malloc(no * 4), *hb = malloc(no * 4);
    if ((st = mr_tensor_read(oa, MR_F32, ha, no)) != MR_OK || (st = mr_tensor_read(ob, MR_F32, hb, no)) != MR_OK)
      die(ctx, st);
    double err = rel_err(hb, ha, no);
    mr_tensor_free(oa);
    mr_tensor_free(ob);
    free(ha);
    free(hb);
    /* calls per sample: about 50 ms of the first variant */
    double t1 = ab_time(ctx, &c, a, 1, NULL);
    int inner = t1 > 0.05 ? 1 : (int)(0.05 / (t1 > 1e-5 ? t1 : 1e-5)) + 1;
    for (int r = 0; r < rounds; r++) {
      ta[r] = ab_time(ctx, &c, a, inner, &ca[r]);
      tb[r] = ab_time(ctx, &c, b, inner, &cb[r]);
    }
    getloadavg(la1, 3);
    qsort(ta, (size_t)rounds, sizeof *ta, cmp_double);
    qsort(tb, (size_t)rounds, sizeof *tb, cmp_double);
    qsort(ca, (size_t)rounds, sizeof *ca, cmp_double);
    qsort(cb, (size_t)rounds, sizeof *cb, cmp_double);
    double ma = ta[rounds / 2], mb = tb[rounds / 2], mca = ca[rounds / 2], mcb = cb[rounds / 2];
    char shape[96];
    if (c.conv)
      snprintf(shape, sizeof shape, "conv %lldx%lldx%lldx%lld -> %lld, k%lld%lld%lld", (long long)c.C, (long long)c.T,
               (long long)c.H, (long long)c.W, (long long)c.O, (long long)c.kt, (long long)c.kh, (long long)c.kw);
    else
      snprintf(shape, sizeof shape, "matmul %lldx%lldx%lld", (long long)c.M, (long long)c.N, (long long)c.K);
    printf("%-32s %-36s w=%-4s  A %6.2f  B %6.2f GFLOP/s  B/A %5.2fx | per CPU-s A %6.2f  B %6.2f  B/A %5.2fx | "
           "median of %d, %d calls each, A %.2f ms, first call A %.0f ms B %.0f ms, diff %.1e, load %.2f -> %.2f\n",
           c.what, shape, mr_dtype_name(c.wdt), c.flops / ma / 1e9, c.flops / mb / 1e9, ma / mb, c.flops / mca / 1e9,
           c.flops / mcb / 1e9, mca / mcb, rounds, inner, ma * 1e3, first_a * 1e3, first_b * 1e3, err, la0[0], la1[0]);
    fflush(stdout);
    mr_tensor_free(c.x);
    mr_tensor_free(c.w);
    mr_tensor_free(c.b);
  }
  free(ta);
  free(tb);
  free(ca);
  free(cb);
}

int main(int argc, char **argv) {
  int reps = 3, large = -1, ab_a = -1, ab_b = -1, rounds = 7;
  long long attn[3] = {0, 0, 0};
  bool ab_conv = false;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if ((strcmp(argv[i], "--ab-matmul") == 0 || strcmp(argv[i], "--ab-conv") == 0) && i + 2 < argc) {
      ab_conv = strcmp(argv[i], "--ab-conv") == 0;
      ab_a = atoi(argv[i + 1]);
      ab_b = atoi(argv[i + 2]);
      i += 2;
    } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    else if (strcmp(argv[i], "--attention") == 0 && i + 3 < argc) {
      attn[0] = atoll(argv[i + 1]);
      attn[1] = atoll(argv[i + 2]);
      attn[2] = atoll(argv[i + 3]);
      i += 3;
    } else if (strcmp(argv[i], "--large") == 0) large = 1;
    else if (strcmp(argv[i], "--small") == 0) large = 0;
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_ops [--small|--large] [--reps N] | --attention H L D\n"
                      "       bench_ops --ab-matmul A B | --ab-conv A B [--rounds N] [--only TEXT]\n");
      return 2;
    }
  }
  mr_ctx *ctx;
  if (mr_ctx_new(NULL, &ctx) != MR_OK) return 1;
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  if (large < 0) large = info.type != MR_DEVICE_CPU;
  if (attn[0] > 0) { /* one attention shape, every variant */
    printf("device: %s (%s), %d reps\n", info.name, mr_device_type_name(info.type), reps);
    bench_attention(ctx, attn[0], attn[1], attn[2], reps);
    mr_ctx_free(ctx);
    return 0;
  }
  if (ab_a >= 0) {
    int nv = ab_conv ? MR_CONV_VARIANTS : MR_MATMUL_VARIANTS;
    if (ab_a < 1 || ab_b < 1 || ab_a >= nv || ab_b >= nv) {
      fprintf(stderr, "bench_ops: variants are 1..%d\n", nv - 1);
      return 2;
    }
    printf("device: %s (%s); A/B: %s variant %d (A) against %d (B), alternately\n", info.name,
           mr_device_type_name(info.type), ab_conv ? "conv3d" : "matmul", ab_a, ab_b);
    bench_ab(ctx, ab_conv, ab_a, ab_b, rounds, only);
    mr_ctx_free(ctx);
    return 0;
  }
  printf("device: %s (%s), %s sizes, %d reps\n", info.name, mr_device_type_name(info.type), large ? "large" : "small",
         reps);
  if (large) {
    bench_matmul(ctx, 1024, 1024, 1024, MR_F32, reps);
    bench_matmul(ctx, 4096, 4096, 4096, MR_F32, reps);
    bench_matmul(ctx, 4096, 4096, 4096, MR_F16, reps);
    bench_attention(ctx, 8, 1024, 128, reps);
    bench_attention(ctx, 8, 4096, 128, reps);
  } else {
    bench_matmul(ctx, 128, 128, 128, MR_F32, reps);
    bench_matmul(ctx, 256, 384, 256, MR_F32, reps);
    bench_matmul(ctx, 256, 384, 256, MR_BF16, reps);
    bench_attention(ctx, 2, 256, 64, reps);
    bench_attention(ctx, 4, 512, 128, reps);
  }
  mr_ctx_free(ctx);
  return 0;
}
