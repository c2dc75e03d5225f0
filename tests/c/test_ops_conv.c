/* conv3d (both kernels), nearest upsampling and the channels-first RMS norm
   against CPU references: odd sizes, strides, padding, strided inputs, every
   storage dtype. */
#include "ops/op_conv.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

typedef struct conv_case {
  int C, T, H, W, O, kt, kh, kw;
  int stride[3], pad[6];
  bool bias, permuted; /* permuted: x is a [C, T, H, W] view of [T, C, H, W] storage */
} conv_case;

/* The reference, in double: y [O, To, Ho, Wo] from row-major x and w. */
static void ref_conv(const conv_case *k, const float *x, const float *w, const float *b, int To, int Ho, int Wo,
                     float *y) {
  for (int o = 0; o < k->O; o++)
    for (int t = 0; t < To; t++)
      for (int h = 0; h < Ho; h++)
        for (int v = 0; v < Wo; v++) {
          double acc = b ? b[o] : 0.0;
          for (int c = 0; c < k->C; c++)
            for (int dt = 0; dt < k->kt; dt++)
              for (int dh = 0; dh < k->kh; dh++)
                for (int dw = 0; dw < k->kw; dw++) {
                  int ti = t * k->stride[0] + dt - k->pad[0], hi = h * k->stride[1] + dh - k->pad[2],
                      wi = v * k->stride[2] + dw - k->pad[4];
                  if (ti < 0 || ti >= k->T || hi < 0 || hi >= k->H || wi < 0 || wi >= k->W) continue;
                  acc += (double)x[((c * k->T + ti) * k->H + hi) * k->W + wi] *
                         w[(((o * k->C + c) * k->kt + dt) * k->kh + dh) * k->kw + dw];
                }
          y[((o * To + t) * Ho + h) * Wo + v] = (float)acc;
        }
}

static void run_conv(mr_ctx *ctx, mr_rng *rng, const conv_case *k, mr_dtype dt, int variant) {
  size_t nx = (size_t)k->C * k->T * k->H * k->W, nw = (size_t)k->O * k->C * k->kt * k->kh * k->kw;
  int To = (k->T + k->pad[0] + k->pad[1] - k->kt) / k->stride[0] + 1;
  int Ho = (k->H + k->pad[2] + k->pad[3] - k->kh) / k->stride[1] + 1;
  int Wo = (k->W + k->pad[4] + k->pad[5] - k->kw) / k->stride[2] + 1;
  size_t ny = (size_t)k->O * To * Ho * Wo;
  float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc(k->O * sizeof *b),
        *y = malloc(ny * sizeof *y);
  mr_rng_fill(rng, x, nx, -1, 1);
  mr_rng_fill(rng, w, nw, -0.5f, 0.5f);
  mr_rng_fill(rng, b, k->O, -1, 1);
  mr_test_round(dt, x, nx);
  mr_test_round(dt, w, nw);
  mr_tensor *tx = NULL, *base = NULL, *tw = NULL, *tb = NULL, *out = NULL;
  int64_t xs[4] = {k->C, k->T, k->H, k->W}, ws[5] = {k->O, k->C, k->kt, k->kh, k->kw}, bs[1] = {k->O};
  if (k->permuted) {
    float *xt = malloc(nx * sizeof *xt);
    size_t plane = (size_t)k->H * k->W;
    for (int c = 0; c < k->C; c++)
      for (int t = 0; t < k->T; t++) memcpy(&xt[((size_t)t * k->C + c) * plane], &x[((size_t)c * k->T + t) * plane], plane * sizeof *x);
    int64_t ps[4] = {k->T, k->C, k->H, k->W};
    int perm[4] = {1, 0, 2, 3};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 4, ps, MR_F32, xt, &base));
    CHECK_OK(ctx, mr_tensor_permute(base, perm, &tx));
    free(xt);
  } else {
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 4, xs, MR_F32, x, &tx));
  }
  CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 5, ws, MR_F32, w, &tw));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 1, bs, MR_F32, b, &tb));
  CHECK_OK(ctx, mr_op_conv3d_variant(tx, tw, k->bias ? tb : NULL, k->stride, k->pad, variant, &out));
  ref_conv(k, x, w, k->bias ? b : NULL, To, Ho, Wo, y);
  if (out) {
    const int64_t *s = mr_tensor_shape(out);
    CHECK(s[0] == k->O && s[1] == To && s[2] == Ho && s[3] == Wo);
    float *got = mr_test_read(ctx, out);
    double err = mr_rel_l2(got, y, ny), tol = dt == MR_F32 ? 1e-5 : 1e-2;
    if (err > tol)
      fprintf(stderr, "conv3d C%d T%d H%d W%d O%d k%dx%dx%d %s variant %d: rel err %g\n", k->C, k->T, k->H, k->W, k->O,
              k->kt, k->kh, k->kw, mr_dtype_name(dt), variant, err);
    CHECK(err <= tol);
    free(got);
  }
  mr_tensor_free(out);
  mr_tensor_free(tx);
  mr_tensor_free(base);
  mr_tensor_free(tw);
  mr_tensor_free(tb);
  free(x);
  free(w);
  free(b);
  free(y);
}

/* A strided view: every other channel of [6, 3, 5, W] -> [3, 3, 5, W], x2,
   x(3, 1) and x(1, 2); an even W takes the four-outputs-a-lane form for fw 2. */
static void test_upsample(mr_ctx *ctx, mr_rng *rng, mr_dtype dt, int64_t W) {
  int64_t s[4] = {6, 3, 5, W};
  size_t n = (size_t)(6 * 3 * 5 * W);
  float *x = malloc(n * sizeof *x);
  mr_rng_fill(rng, x, n, -3, 3);
  mr_test_round(dt, x, n);
  mr_tensor *base, *v, *out;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 4, s, MR_F32, x, &base));
  CHECK_OK(ctx, mr_tensor_slice(base, 0, 1, 6, 2, &v));
  const int f[3][2] = {{2, 2}, {3, 1}, {1, 2}};
  for (int k = 0; k < 3; k++) {
    int fh = f[k][0], fw = f[k][1];
    CHECK_OK(ctx, mr_op_upsample_nearest(v, fh, fw, &out));
    if (!out) continue;
    const int64_t *os = mr_tensor_shape(out);
    CHECK(os[0] == 3 && os[1] == 3 && os[2] == 5 * fh && os[3] == W * fw);
    float *got = mr_test_read(ctx, out);
    int bad = 0;
    for (int c = 0; c < 3; c++)
      for (int t = 0; t < 3; t++)
        for (int h = 0; h < 5 * fh; h++)
          for (int w = 0; w < W * fw; w++) {
            float want = x[(((1 + 2 * c) * 3 + t) * 5 + h / fh) * W + w / fw];
            bad += got[((c * 3 + t) * 5 * fh + h) * W * fw + w] != want;
          }
    CHECK(bad == 0);
    free(got);
    mr_tensor_free(out);
  }
  mr_tensor_free(v);
  mr_tensor_free(base);
  free(x);
}

static void test_channel_norm(mr_ctx *ctx, mr_rng *rng, int C, int N, mr_dtype dt, bool with_gamma, float scale,
                              bool silu) {
  size_t n = (size_t)C * N;
  float *x = malloc(n * sizeof *x), *g = malloc(C * sizeof *g), *y = malloc(n * sizeof *y);
  mr_rng_fill(rng, x, n, -2, 2);
  for (size_t i = 0; i < n; i++) x[i] *= scale;
  mr_rng_fill(rng, g, C, 0.5f, 1.5f);
  mr_test_round(dt, x, n);
  for (int i = 0; i < N; i++) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)x[c * N + i] * x[c * N + i];
    double inv = sqrt((double)C) / fmax(sqrt(ss), 1e-12);
    for (int c = 0; c < C; c++) {
      double v = x[c * N + i] * inv * (with_gamma ? g[c] : 1.0);
      y[c * N + i] = (float)(silu ? v / (1.0 + exp(-v)) : v);
    }
  }
  int64_t xs[3] = {C, 1, N}, gs[4] = {C, 1, 1, 1};
  mr_tensor *tx, *tg, *out;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, dt, 3, xs, MR_F32, x, &tx));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 4, gs, MR_F32, g, &tg));
  if (silu) CHECK_OK(ctx, mr_op_channel_rms_norm_silu(tx, with_gamma ? tg : NULL, 1e-12f, &out));
  else CHECK_OK(ctx, mr_op_channel_rms_norm(tx, with_gamma ? tg : NULL, 1e-12f, &out));
  if (out) {
    float *got = mr_test_read(ctx, out);
    double err = mr_rel_l2(got, y, n), tol = dt == MR_F32 ? 1e-6 : 1e-2;
    if (err > tol)
      fprintf(stderr, "channel_rms_norm%s C%d N%d %s: rel err %g\n", silu ? "_silu" : "", C, N, mr_dtype_name(dt), err);
    CHECK(err <= tol);
    free(got);
  }
  mr_tensor_free(out);
  mr_tensor_free(tx);
  mr_tensor_free(tg);
  free(x);
  free(g);
  free(y);
}

static void test_errors(mr_ctx *ctx) {
  int64_t xs[4] = {3, 2, 4, 4}, ws[5] = {5, 4, 3, 3, 3}, ws2[5] = {5, 3, 3, 3, 3}, bs[1] = {4};
  mr_tensor *x, *w, *w2, *b, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 4, xs, &x));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 5, ws, &w));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 5, ws2, &w2));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, bs, &b));
  CHECK(mr_op_conv3d(x, w, NULL, NULL, NULL, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "[O, 3, kt, kh, kw]") != NULL);
  CHECK(mr_op_conv3d(x, w2, b, NULL, NULL, &out) == MR_EINVAL && strstr(mr_ctx_last_error(ctx), "bias") != NULL);
  /* T = 2 < kt = 3 without padding */
  CHECK(mr_op_conv3d(x, w2, NULL, NULL, NULL, &out) == MR_EINVAL && strstr(mr_ctx_last_error(ctx), "does not fit") != NULL);
  int stride[3] = {0, 1, 1};
  CHECK(mr_op_conv3d(x, w2, NULL, stride, NULL, &out) == MR_EINVAL);
  CHECK(mr_op_upsample_nearest(b, 2, 2, &out) == MR_EINVAL && out == NULL);
  CHECK(mr_op_channel_rms_norm(x, b, 1e-12f, &out) == MR_EINVAL && strstr(mr_ctx_last_error(ctx), "gamma") != NULL);
  mr_tensor_free(x);
  mr_tensor_free(w);
  mr_tensor_free(w2);
  mr_tensor_free(b);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  mr_rng rng = {4242};
  const conv_case cases[] = {
      /* causal 3x3x3 as the VAE uses it */
      {3, 5, 7, 9, 5, 3, 3, 3, {1, 1, 1}, {2, 0, 1, 1, 1, 1}, true, false},
      /* per-frame stride-2 downsample with ZeroPad (0,1,0,1) */
      {13, 3, 11, 6, 17, 1, 3, 3, {1, 2, 2}, {0, 0, 0, 1, 0, 1}, true, false},
      /* temporal stride-2 conv without padding */
      {7, 6, 4, 5, 9, 3, 1, 1, {2, 1, 1}, {0, 0, 0, 0, 0, 0}, false, false},
      /* 1x1x1 onto many channels (wide GPU tile) */
      {33, 2, 5, 3, 70, 1, 1, 1, {1, 1, 1}, {0, 0, 0, 0, 0, 0}, true, false},
      /* strided input view, uneven kernel, stride and padding */
      {5, 4, 6, 7, 6, 2, 3, 2, {1, 1, 2}, {1, 1, 0, 2, 1, 0}, true, true},
      /* K not a multiple of the tile depth, O over one tile */
      {19, 3, 5, 6, 70, 3, 3, 3, {1, 1, 1}, {2, 0, 1, 1, 1, 1}, false, false},
  };
  const mr_dtype dts[3] = {MR_F32, MR_F16, MR_BF16};
  for (int v = MR_CONV_REG; v < MR_CONV_VARIANTS; v++)
    for (int d = 0; d < 3; d++)
      for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) run_conv(ctx, &rng, &cases[c], dts[d], v);
  run_conv(ctx, &rng, &cases[0], MR_F32, MR_CONV_AUTO);
  for (int d = 0; d < 3; d++) {
    test_upsample(ctx, &rng, dts[d], 7);
    test_upsample(ctx, &rng, dts[d], 8);
    for (int silu = 0; silu < 2; silu++) { /* N a multiple of 4 or not: four positions a lane or one */
      test_channel_norm(ctx, &rng, 7, 131, dts[d], true, 1.0f, silu);
      test_channel_norm(ctx, &rng, 33, 17, dts[d], false, 1.0f, silu);
      test_channel_norm(ctx, &rng, 7, 132, dts[d], true, 1.0f, silu);
      test_channel_norm(ctx, &rng, 33, 20, dts[d], false, 1.0f, silu);
    }
  }
  test_channel_norm(ctx, &rng, 5, 9, MR_F32, true, 1e-20f, false); /* below the 1e-12 clamp */
  test_channel_norm(ctx, &rng, 5, 9, MR_F32, true, 1e-20f, true);
  test_channel_norm(ctx, &rng, 5, 12, MR_F32, true, 1e-20f, true);
  test_errors(ctx);
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_conv");
}
