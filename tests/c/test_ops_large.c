/* Operands past the device's binding limit (on lavapipe, maxStorageBufferRange
   is 128 MiB): every op family runs with at least one operand over it, at
   the device's own limit, and is checked element by element against a CPU
   computation (exact where the op is exact). The sizes are just past 128 MiB
   so the test stays within about a minute and a few GB; on a device whose
   limit is larger nothing splits and the checks still hold. Each shader
   invocation stays under 65535 loop iterations in all (rows, keys):
   lavapipe cuts an invocation's loops short past that. */
#include "testutil.h"

#include "gpu/gpu.h"
#include "ops/op_internal.h"
#include "ref_basic.h"
#include "ref_linear.h"

#include <math.h>
#include <string.h>
#include <time.h>

static mr_ctx *ctx;
static mr_rng rng = {23};
static uint64_t limit;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *rand_host(size_t n, float lo, float hi) {
  float *h = malloc(n * sizeof *h);
  if (!h) {
    fprintf(stderr, "out of host memory\n");
    exit(1);
  }
  mr_rng_fill(&rng, h, n, lo, hi);
  return h;
}

static mr_tensor *upload(mr_dtype dt, int ndim, const int64_t *shape, const float *h) {
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, ndim, shape, MR_F32, h, &t));
  if (!t) exit(1);
  return t;
}

/* Every element within atol + rtol * |want| (0, 0: bit-equal values); reports the first that is not. */
static void check_near(const char *what, const float *got, const float *want, size_t n, double atol, double rtol) {
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - want[i]);
    if (!(d <= atol + rtol * fabs(want[i]))) {
      fprintf(stderr, "%s: element %zu of %zu is %.9g, want %.9g\n", what, i, n, got[i], want[i]);
      mr_test_failures++;
      return;
    }
  }
}

/* Reads out (NULL when the op failed) and compares it with want. */
static void check_out(const char *what, mr_tensor *out, const float *want, size_t n, double atol, double rtol) {
  if (!out) {
    mr_test_failures++;
    return;
  }
  CHECK((size_t)mr_tensor_numel(out) == n);
  float *got = mr_test_read(ctx, out);
  check_near(what, got, want, n, atol, rtol);
  free(got);
}

static bool over(const mr_tensor *t) { return mr_tensor_device_bytes(t) > limit; }

/* Runs the block (the rest of the arguments) and prints its time. */
#define TIMED(name, ...)                                       \
  do {                                                         \
    double t0_ = now();                                        \
    __VA_ARGS__;                                               \
    printf("%-44s %6.2f s\n", name, now() - t0_);              \
    fflush(stdout);                                            \
  } while (0)

/* ---------------------------------------------------------------- elementwise, copy, lincomb, shape */

#define NBIG 34000000 /* f32: 136 MB, just past 128 MiB */

static void test_elementwise(void) {
  int64_t n = NBIG;
  float *ha = rand_host(NBIG, -2, 2), *hb = rand_host(NBIG, -2, 2), *want = malloc(NBIG * sizeof *want);
  mr_tensor *a = upload(MR_F32, 1, &n, ha), *b = upload(MR_F32, 1, &n, hb), *out = NULL;
  CHECK(over(a) && over(b));
  TIMED("binary add, 2 x 136 MB", {
    CHECK_OK(ctx, mr_op_binary(MR_BINARY_ADD, a, b, &out));
    for (size_t i = 0; i < NBIG; i++) want[i] = ha[i] + hb[i];
    check_out("add", out, want, NBIG, 0, 0);
    mr_tensor_free(out);
  });
  TIMED("unary silu, 136 MB", {
    CHECK_OK(ctx, mr_op_unary(MR_UNARY_SILU, a, &out));
    mr_ref_unary(MR_UNARY_SILU, ha, NBIG, want);
    check_out("silu", out, want, NBIG, 1e-6, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("lincomb of 2 x 136 MB", {
    const mr_tensor *xs[2] = {a, b};
    const float c[2] = {0.75f, -1.5f}, *hx[2] = {ha, hb};
    CHECK_OK(ctx, mr_op_lincomb(2, xs, c, &out));
    mr_ref_lincomb(2, hx, c, NBIG, want);
    check_out("lincomb", out, want, NBIG, 1e-6, 1e-6);
    mr_tensor_free(out);
  });
  TIMED("cast f32 -> bf16, 136 MB in", {
    CHECK_OK(ctx, mr_tensor_cast(a, MR_BF16, &out));
    memcpy(want, ha, NBIG * sizeof *want);
    mr_test_round(MR_BF16, want, NBIG);
    check_out("cast", out, want, NBIG, 0, 0);
    mr_tensor_free(out);
  });
  TIMED("concat of 2 x 136 MB", {
    mr_tensor *ts[2] = {a, b};
    CHECK_OK(ctx, mr_op_concat(ts, 2, 0, &out));
    float *got = out ? mr_test_read(ctx, out) : NULL;
    if (got) {
      check_near("concat first half", got, ha, NBIG, 0, 0);
      check_near("concat second half", got + NBIG, hb, NBIG, 0, 0);
    }
    free(got);
    mr_tensor_free(out);
  });
  mr_tensor_free(a);
  mr_tensor_free(b);
  free(ha);
  free(hb);

  /* a strided view (every other column) of a 168 MB base plus a broadcast row; its transpose made contiguous */
  int64_t R = 20000, C = 2100, bs[2] = {R, C}, row = C / 2;
  float *hbase = rand_host((size_t)(R * C), -2, 2), *hrow = rand_host((size_t)row, -1, 1);
  mr_tensor *base = upload(MR_F32, 2, bs, hbase), *view = NULL, *brow = upload(MR_BF16, 1, &row, hrow), *tr = NULL;
  mr_test_round(MR_BF16, hrow, (size_t)row);
  CHECK_OK(ctx, mr_tensor_slice(base, 1, 1, C, 2, &view));
  CHECK(over(base));
  TIMED("binary mul, strided 168 MB view x broadcast row", {
    CHECK_OK(ctx, mr_op_binary(MR_BINARY_MUL, view, brow, &out));
    for (int64_t r = 0; r < R; r++)
      for (int64_t c = 0; c < row; c++) want[r * row + c] = hbase[r * C + 1 + 2 * c] * hrow[c];
    check_out("strided mul", out, want, (size_t)(R * row), 0, 0);
    mr_tensor_free(out);
  });
  TIMED("contiguous copy of a transposed 168 MB view", {
    int perm[2] = {1, 0};
    CHECK_OK(ctx, mr_tensor_permute(base, perm, &tr));
    CHECK_OK(ctx, mr_tensor_contiguous(tr, &out));
    float *got = out ? mr_test_read(ctx, out) : NULL;
    bool same = got != NULL;
    for (int64_t c = 0; c < C && same; c++)
      for (int64_t r = 0; r < R && same; r++) same = got[c * R + r] == hbase[r * C + c];
    CHECK(same);
    free(got);
    mr_tensor_free(out);
  });
  mr_tensor_free(tr);
  mr_tensor_free(view);
  mr_tensor_free(brow);
  mr_tensor_free(base);
  free(hbase);
  free(hrow);
  free(want);
}

/* ---------------------------------------------------------------- rows, matmul over x, rope */

static void test_rows_and_matmul(void) {
  int64_t R = 20000, C = 1700, xs[2] = {R, C}, cs[1] = {C};
  size_t n = (size_t)(R * C);
  float *hx = rand_host(n, -3, 3), *hw = rand_host((size_t)C, 0.5f, 1.5f), *hb = rand_host((size_t)C, -1, 1);
  float *want = malloc(n * sizeof *want);
  mr_tensor *x = upload(MR_F32, 2, xs, hx), *w = upload(MR_F32, 1, cs, hw), *b = upload(MR_F32, 1, cs, hb), *out = NULL;
  CHECK(over(x));
  TIMED("layer_norm [20000 x 1700]", {
    CHECK_OK(ctx, mr_op_layer_norm(x, w, b, 1e-5f, &out));
    mr_ref_layer_norm(hx, R, C, hw, hb, 1e-5f, want);
    check_out("layer_norm", out, want, n, 1e-5, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("rms_norm [20000 x 1700]", {
    CHECK_OK(ctx, mr_op_rms_norm(x, w, 1e-6f, &out));
    mr_ref_rms_norm(hx, R, C, hw, 1e-6f, want);
    check_out("rms_norm", out, want, n, 1e-5, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("softmax [20000 x 1700] along dim 1", {
    CHECK_OK(ctx, mr_op_softmax(x, 1, &out));
    mr_ref_softmax(hx, 2, xs, 1, want);
    check_out("softmax", out, want, n, 1e-7, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("softmax [20000 x 1700] along dim 0 (strided rows)", {
    CHECK_OK(ctx, mr_op_softmax(x, 0, &out));
    mr_ref_softmax(hx, 2, xs, 0, want);
    check_out("softmax dim 0", out, want, n, 1e-10, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("reduce sum [20000 x 1700] along dim 1", {
    CHECK_OK(ctx, mr_op_reduce(MR_REDUCE_SUM, x, 1, false, &out));
    mr_ref_reduce(MR_REDUCE_SUM, hx, 2, xs, 1, want);
    check_out("reduce sum", out, want, (size_t)R, 1e-4, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("reduce max [20000 x 1700] along dim 0", {
    CHECK_OK(ctx, mr_op_reduce(MR_REDUCE_MAX, x, 0, true, &out));
    mr_ref_reduce(MR_REDUCE_MAX, hx, 2, xs, 0, want);
    check_out("reduce max", out, want, (size_t)C, 0, 0);
    mr_tensor_free(out);
  });
  TIMED("matmul x [20000 x 1700] . w [16 x 1700]", {
    int64_t ws[2] = {16, C}, bs[1] = {16};
    float *hmw = rand_host(16 * (size_t)C, -0.5f, 0.5f), *hmb = rand_host(16, -1, 1);
    mr_tensor *mw = upload(MR_F32, 2, ws, hmw), *mb = upload(MR_F32, 1, bs, hmb);
    CHECK_OK(ctx, mr_op_matmul(x, mw, mb, &out));
    mr_ref_matmul(hx, hmw, hmb, want, 1, R, 16, C, false);
    check_out("matmul over x", out, want, (size_t)R * 16, 1e-4, 1e-5);
    mr_tensor_free(out);
    mr_tensor_free(mw);
    mr_tensor_free(mb);
    free(hmw);
    free(hmb);
  });
  TIMED("rope [1, 20000, 2, 850] with [20000, 425] tables", {
    int64_t rs[4] = {1, R, 2, 850}, ts[2] = {R, 425};
    mr_tensor *xr = NULL, *tc = NULL, *tsn = NULL;
    float *hc = rand_host((size_t)R * 425, -1, 1), *hs = rand_host((size_t)R * 425, -1, 1);
    CHECK_OK(ctx, mr_tensor_reshape(x, 4, rs, &xr));
    tc = upload(MR_F32, 2, ts, hc);
    tsn = upload(MR_F32, 2, ts, hs);
    CHECK_OK(ctx, mr_op_rope(xr, tc, tsn, &out));
    for (int64_t l = 0; l < R; l++)
      for (int64_t h = 0; h < 2; h++)
        for (int64_t j = 0; j < 425; j++) {
          size_t i = (size_t)((l * 2 + h) * 850 + 2 * j);
          float a = hx[i], c = hx[i + 1], co = hc[l * 425 + j], si = hs[l * 425 + j];
          want[i] = a * co - c * si;
          want[i + 1] = a * si + c * co;
        }
    check_out("rope", out, want, n, 1e-6, 1e-6);
    mr_tensor_free(out);
    mr_tensor_free(xr);
    mr_tensor_free(tc);
    mr_tensor_free(tsn);
    free(hc);
    free(hs);
  });
  mr_tensor_free(x);
  mr_tensor_free(w);
  mr_tensor_free(b);
  free(hx);
  free(hw);
  free(hb);
  free(want);
}

/* ---------------------------------------------------------------- a weight table over the limit: matmul over N, gather */

static void test_big_weight(void) {
  int64_t N = 70000, K = 512, ws[2] = {N, K}, xs[2] = {3, K};
  float *hw = rand_host((size_t)(N * K), -0.5f, 0.5f), *hx = rand_host(3 * (size_t)K, -1, 1);
  float *hb = rand_host((size_t)N, -1, 1), *want = malloc(3 * (size_t)N * sizeof *want);
  mr_tensor *w = upload(MR_F32, 2, ws, hw), *x = upload(MR_F32, 2, xs, hx), *b = upload(MR_F32, 1, &N, hb), *out = NULL;
  CHECK(over(w));
  TIMED("matmul x [3 x 512] . w [70000 x 512] (143 MB)", {
    CHECK_OK(ctx, mr_op_matmul(x, w, b, &out));
    mr_ref_matmul(hx, hw, hb, want, 1, 3, N, K, false);
    check_out("matmul over w", out, want, 3 * (size_t)N, 1e-4, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("gather 1000 rows of [70000 x 512]", {
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = (int32_t)(((int64_t)i * 7919 + 13) % N);
    ids[0] = 0;
    ids[999] = (int32_t)N - 1;
    CHECK_OK(ctx, mr_op_gather_rows(w, ids, 1000, &out));
    float *g = out ? mr_test_read(ctx, out) : NULL;
    bool same = g != NULL;
    for (int i = 0; i < 1000 && same; i++) same = memcmp(g + (size_t)i * K, hw + (size_t)ids[i] * K, (size_t)K * 4) == 0;
    CHECK(same);
    free(g);
    mr_tensor_free(out);
  });
  mr_tensor_free(w);
  mr_tensor_free(x);
  mr_tensor_free(b);
  free(hw);
  free(hx);
  free(hb);
  free(want);
}

/* ---------------------------------------------------------------- attention */

static void attention_case(const char *name, int64_t Lq, int64_t Lk, int64_t H, int64_t D) {
  int64_t qs[4] = {1, Lq, H, D}, ks[4] = {1, Lk, H, D};
  size_t nq = (size_t)(Lq * H * D), nk = (size_t)(Lk * H * D);
  float *hq = rand_host(nq, -1, 1), *hk = rand_host(nk, -1, 1), *hv = rand_host(nk, -1, 1);
  float *want = malloc(nq * sizeof *want);
  mr_tensor *q = upload(MR_F32, 4, qs, hq), *k = upload(MR_F32, 4, ks, hk), *v = upload(MR_F32, 4, ks, hv), *out = NULL;
  CHECK(over(q) || over(k));
  TIMED(name, {
    CHECK_OK(ctx, mr_op_attention(q, k, v, NULL, &out));
    CHECK(mr_ref_attention(hq, hk, hv, want, 1, Lq, Lk, H, D, 1.0f / sqrtf((float)D), NULL));
    check_out(name, out, want, nq, 1e-5, 1e-4);
    mr_tensor_free(out);
  });
  mr_tensor_free(q);
  mr_tensor_free(k);
  mr_tensor_free(v);
  free(hq);
  free(hk);
  free(hv);
  free(want);
}

/* ---------------------------------------------------------------- conv family */

static void test_conv(void) {
  /* x [4, 3, 2000, 1500] (144 MB): an output frame reads 3 input frames (all of x), so rows split too */
  int64_t C = 4, T = 3, H = 2000, W = 1500, O = 4, xs[4] = {C, T, H, W}, ws[5] = {O, C, 3, 3, 1}, bs[1] = {O};
  size_t n = (size_t)(C * T * H * W);
  float *hx = rand_host(n, -1, 1), *hw = rand_host((size_t)(O * C * 9), -0.5f, 0.5f), *hb = rand_host((size_t)O, -1, 1);
  float *want = malloc(n * sizeof *want);
  mr_tensor *x = upload(MR_F32, 4, xs, hx), *w = upload(MR_F32, 5, ws, hw), *b = upload(MR_F32, 1, bs, hb), *out = NULL;
  CHECK(over(x));
  TIMED("conv3d 3x3x1, x [4, 3, 2000, 1500]", {
    const int stride[3] = {1, 1, 1}, pad[6] = {1, 1, 1, 1, 0, 0};
    CHECK_OK(ctx, mr_op_conv3d(x, w, b, stride, pad, &out));
    for (int64_t o = 0; o < O; o++)
      for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
          float *dst = want + ((o * T + t) * H + h) * W;
          for (int64_t j = 0; j < W; j++) dst[j] = hb[o];
          for (int64_t c = 0; c < C; c++)
            for (int64_t dt = 0; dt < 3; dt++)
              for (int64_t dh = 0; dh < 3; dh++) {
                int64_t ti = t + dt - 1, hi = h + dh - 1;
                if (ti < 0 || ti >= T || hi < 0 || hi >= H) continue;
                float wv = hw[((o * C + c) * 3 + dt) * 3 + dh];
                const float *src = hx + ((c * T + ti) * H + hi) * W;
                for (int64_t j = 0; j < W; j++) dst[j] += wv * src[j];
              }
        }
    check_out("conv3d", out, want, n, 1e-5, 1e-4);
    mr_tensor_free(out);
  });
  TIMED("channel_rms_norm [4, 3, 2000, 1500]", {
    CHECK_OK(ctx, mr_op_channel_rms_norm(x, b, 1e-6f, &out));
    size_t N = n / (size_t)C;
    for (size_t p = 0; p < N; p++) {
      double ss = 0;
      for (int64_t c = 0; c < C; c++) ss += (double)hx[c * N + p] * hx[c * N + p];
      double inv = sqrt((double)C) / fmax(sqrt(ss), 1e-6);
      for (int64_t c = 0; c < C; c++) want[c * N + p] = (float)(hx[c * N + p] * inv * hb[c]);
    }
    check_out("channel_rms_norm", out, want, n, 1e-5, 1e-5);
    mr_tensor_free(out);
  });
  TIMED("upsample_nearest x2 in w of [6, 2000, 1500]", {
    int64_t s3[3] = {C * T, H, W};
    mr_tensor *x3 = NULL, *half = NULL;
    CHECK_OK(ctx, mr_tensor_reshape(x, 3, s3, &x3));
    CHECK_OK(ctx, mr_tensor_slice(x3, 0, 0, C * T / 2, 1, &half));
    CHECK_OK(ctx, mr_op_upsample_nearest(half, 1, 2, &out));
    CHECK(out && over(out));
    float *got = out ? mr_test_read(ctx, out) : NULL;
    bool same = got != NULL;
    for (size_t i = 0; i < n / 2 && same; i++) same = got[2 * i] == hx[i] && got[2 * i + 1] == hx[i];
    CHECK(same);
    free(got);
    mr_tensor_free(out);
    mr_tensor_free(x3);
    mr_tensor_free(half);
  });
  mr_tensor_free(x);
  mr_tensor_free(w);
  mr_tensor_free(b);
  free(hx);
  free(hw);
  free(hb);
  free(want);
}

int main(void) {
  ctx = mr_test_ctx();
  limit = mr_gpu_caps_get(ctx)->max_binding;
  printf("binding limit: %llu bytes\n", (unsigned long long)limit);
  test_elementwise();
  test_rows_and_matmul();
  test_big_weight();
  /* q past the limit (rows of queries split); then k and v past it (heads copied out in groups) */
  attention_case("attention q [1, 1100000, 4, 8] (141 MB)", 1100000, 4, 4, 8);
  attention_case("attention k, v [1, 60000, 72, 8] (138 MB)", 4, 60000, 72, 8);
  test_conv();
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_large");
}
