/* Benchmark of the compute-heavy ops: matmul and attention, every kernel
   variant, with achieved GFLOP/s and the ratio against the plain CPU
   reference measured in the same run. Prints figures; decides nothing.

   usage: bench_ops [--large] [--reps N]
   Sizes default by device: seconds-long ones on CPU devices (lavapipe),
   up to 4096^3 matmul and 8 heads x 4096 tokens x 128 attention on GPUs.
   The CPU reference is timed on a subset of rows (its rate does not depend
   on the row count) so large sizes finish. */
#include "moonreel.h"
#include "ops/op_internal.h"
#include "ref_linear.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
  const char *names[MR_MATMUL_VARIANTS] = {"auto", "reg", "smem", "smem-large"};
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
  const char *names[MR_ATTENTION_VARIANTS] = {"auto", "reg", "tiled"};
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

int main(int argc, char **argv) {
  int reps = 3, large = -1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--large") == 0) large = 1;
    else if (strcmp(argv[i], "--small") == 0) large = 0;
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_ops [--small|--large] [--reps N]\n");
      return 2;
    }
  }
  mr_ctx *ctx;
  if (mr_ctx_new(NULL, &ctx) != MR_OK) return 1;
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  if (large < 0) large = info.type != MR_DEVICE_CPU;
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
