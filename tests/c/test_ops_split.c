/* Every op family split over binding windows: odd-size cases run once with
   the device's binding limit (one dispatch) and once with the limit lowered
   to 4 KiB (mr_gpu_set_max_binding), where each case has operands over the
   limit, so the op must record several dispatches over windows (a binding
   over the limit is refused by the dispatch). The two results must be
   bit-identical: splitting moves work between dispatches, never changes the
   arithmetic of an output element. Covers the strided, broadcast, permuted
   and offset views, every kernel variant, the compaction paths (attention
   keys over the limit, softmax and reduce along a strided dim, conv3d and
   channel_rms_norm pieces) and the refusals of rows that cannot fit. */
#include "op_inputs.h"

#include "gpu/gpu.h"
#include "ops/op_conv.h"
#include "ops/op_internal.h"

#include <string.h>

#define SPLIT_LIMIT 4096

static mr_ctx *ctx;
static mr_rng rng = {11};

/* A tensor of random values in dtype dt and layout l. */
static mr_tensor *rand_input(mr_dtype dt, int ndim, const int64_t *shape, input_layout l) {
  int64_t n = shape_numel(ndim, shape);
  float *h = malloc((size_t)n * sizeof *h);
  mr_rng_fill(&rng, h, (size_t)n, -2, 2);
  mr_tensor *t = make_input(ctx, dt, ndim, shape, h, l);
  free(h);
  return t;
}

/* The op under test, closed over its inputs. */
typedef struct op_case {
  const char *name;
  mr_status (*run)(const struct op_case *c, mr_tensor **out);
  mr_tensor *t[6];
  int variant, i[4];
  const int32_t *ids;
} op_case;

static void *read_raw(mr_tensor *t, size_t *bytes) {
  mr_dtype dt = mr_tensor_dtype(t);
  size_t n = (size_t)mr_tensor_numel(t), es = dt == MR_F32 ? 4 : 2;
  void *p = malloc(n * es + 1);
  CHECK_OK(ctx, mr_tensor_read(t, dt, p, n));
  *bytes = n * es;
  return p;
}

/* Runs c unsplit and split; the outputs must match bit for bit. */
static void check_case(op_case *c) {
  mr_tensor *whole = NULL, *split = NULL;
  VkDeviceSize dev = mr_gpu_set_max_binding(ctx, 0);
  mr_status st = c->run(c, &whole);
  if (st != MR_OK) fprintf(stderr, "%s unsplit: %s\n", c->name, mr_ctx_last_error(ctx));
  CHECK(st == MR_OK);
  mr_gpu_set_max_binding(ctx, SPLIT_LIMIT);
  st = c->run(c, &split);
  if (st != MR_OK) fprintf(stderr, "%s split: %s\n", c->name, mr_ctx_last_error(ctx));
  CHECK(st == MR_OK);
  CHECK(mr_gpu_set_max_binding(ctx, 0) == SPLIT_LIMIT && mr_gpu_caps_get(ctx)->max_binding == dev);
  if (whole && split) {
    size_t nw, ns;
    void *a = read_raw(whole, &nw), *b = read_raw(split, &ns);
    bool same = nw == ns && memcmp(a, b, nw) == 0;
    if (!same) fprintf(stderr, "%s: split result differs from the unsplit one\n", c->name);
    CHECK(same);
    free(a);
    free(b);
  }
  mr_tensor_free(whole);
  mr_tensor_free(split);
  for (int k = 0; k < 6; k++) mr_tensor_free(c->t[k]);
}

/* Bytes of a tensor's storage: a case is only meaningful when some operand is over the split limit. */
static bool over_limit(const mr_tensor *t) { return mr_tensor_device_bytes(t) > SPLIT_LIMIT; }

/* ---------------------------------------------------------------- elementwise, copy, lincomb, gather */

static mr_status run_binary(const op_case *c, mr_tensor **out) { return mr_op_binary(c->i[0], c->t[0], c->t[1], out); }
static mr_status run_unary(const op_case *c, mr_tensor **out) { return mr_op_unary(c->i[0], c->t[0], out); }
static mr_status run_mul_add(const op_case *c, mr_tensor **out) {
  return mr_op_mul_add(c->t[0], c->t[1], 1.0f, c->t[2], out);
}
static mr_status run_scale(const op_case *c, mr_tensor **out) { return mr_op_scale(c->t[0], 1.5f, -0.25f, out); }
static mr_status run_cast(const op_case *c, mr_tensor **out) { return mr_tensor_cast(c->t[0], c->i[0], out); }
static mr_status run_contiguous(const op_case *c, mr_tensor **out) { return mr_tensor_contiguous(c->t[0], out); }
static mr_status run_fill_view(const op_case *c, mr_tensor **out) {
  /* fill a strided view of a fresh tensor, then copy a permuted view into another one */
  const int64_t *s = mr_tensor_shape(c->t[0]);
  mr_tensor *base = NULL, *view = NULL;
  mr_status st = mr_tensor_new(ctx, MR_F16, 2, s, &base);
  if (st == MR_OK) st = mr_tensor_slice(base, 1, 1, s[1], 3, &view);
  if (st == MR_OK) st = mr_tensor_fill(view, 7.0f);
  mr_tensor_free(view);
  view = NULL;
  if (st == MR_OK) st = mr_tensor_slice(base, 0, 2, s[0], 2, &view);
  if (st == MR_OK) {
    mr_tensor *src = NULL;
    st = mr_tensor_slice(c->t[0], 0, 2, s[0], 2, &src);
    if (st == MR_OK) st = mr_tensor_copy(view, src);
    mr_tensor_free(src);
  }
  mr_tensor_free(view);
  if (st == MR_OK) *out = base;
  else mr_tensor_free(base);
  return st;
}
static mr_status run_lincomb(const op_case *c, mr_tensor **out) {
  const float coeffs[3] = {0.5f, -1.25f, 2.0f};
  const mr_tensor *xs[3] = {c->t[0], c->t[1], c->t[2]};
  return mr_op_lincomb_dtype(3, xs, coeffs, MR_F32, out);
}
static mr_status run_gather(const op_case *c, mr_tensor **out) { return mr_op_gather_rows(c->t[0], c->ids, c->i[0], out); }
static mr_status run_concat(const op_case *c, mr_tensor **out) {
  mr_tensor *ts[2] = {c->t[0], c->t[1]};
  return mr_op_concat(ts, 2, 1, out);
}
static mr_status run_pad(const op_case *c, mr_tensor **out) {
  const int64_t pads[6] = {1, 2, 0, 3, 4, 1};
  return mr_op_pad(c->t[0], pads, -1.0f, out);
}

static void test_elementwise(void) {
  int64_t s2[2] = {37, 129}, row[1] = {129}, a3[3] = {3, 1, 257}, b3[3] = {3, 50, 1}, s1[1] = {3001};
  op_case c = {"binary add, permuted f32 + broadcast bf16 row", run_binary, {rand_input(MR_F32, 2, s2, LAYOUT_PERMUTED),
               rand_input(MR_BF16, 1, row, LAYOUT_STRIDED)}, .i = {MR_BINARY_ADD}};
  CHECK(over_limit(c.t[0]));
  check_case(&c);
  c = (op_case){"binary mul, both broadcast f16", run_binary, {rand_input(MR_F16, 3, a3, LAYOUT_CONTIGUOUS),
                rand_input(MR_F16, 3, b3, LAYOUT_STRIDED)}, .i = {MR_BINARY_MUL}};
  check_case(&c);
  c = (op_case){"binary div, strided 1-D", run_binary, {rand_input(MR_F32, 1, s1, LAYOUT_STRIDED),
                rand_input(MR_F32, 1, s1, LAYOUT_CONTIGUOUS)}, .i = {MR_BINARY_DIV}};
  check_case(&c);
  int64_t tok[3] = {37, 1, 129}, mod[3] = {1, 1, 129};
  c = (op_case){"mul_add, permuted f32 modulated by broadcast bf16 and strided f16 rows", run_mul_add,
                {rand_input(MR_F32, 2, s2, LAYOUT_PERMUTED), rand_input(MR_BF16, 1, row, LAYOUT_STRIDED),
                 rand_input(MR_F16, 2, s2, LAYOUT_STRIDED)}};
  CHECK(over_limit(c.t[0]));
  check_case(&c);
  c = (op_case){"mul_add, per-token and one-timestep modulation", run_mul_add,
                {rand_input(MR_F32, 3, tok, LAYOUT_CONTIGUOUS), rand_input(MR_F32, 3, tok, LAYOUT_STRIDED),
                 rand_input(MR_F32, 3, mod, LAYOUT_CONTIGUOUS)}};
  check_case(&c);
  c = (op_case){"unary gelu, permuted", run_unary, {rand_input(MR_F32, 2, s2, LAYOUT_PERMUTED)}, .i = {MR_UNARY_GELU}};
  check_case(&c);
  c = (op_case){"unary silu, strided bf16", run_unary, {rand_input(MR_BF16, 2, s2, LAYOUT_STRIDED)}, .i = {MR_UNARY_SILU}};
  check_case(&c);
  c = (op_case){"scale", run_scale, {rand_input(MR_F16, 3, a3, LAYOUT_PERMUTED)}};
  check_case(&c);
  c = (op_case){"cast f32 -> bf16, strided", run_cast, {rand_input(MR_F32, 2, s2, LAYOUT_STRIDED)}, .i = {MR_BF16}};
  check_case(&c);
  c = (op_case){"contiguous of a permuted view", run_contiguous, {rand_input(MR_F16, 2, s2, LAYOUT_PERMUTED)}};
  check_case(&c);
  c = (op_case){"fill and copy into views", run_fill_view, {rand_input(MR_F32, 2, s2, LAYOUT_PERMUTED)}};
  check_case(&c);
  int64_t l3[3] = {7, 11, 53};
  c = (op_case){"lincomb of 3 mixed dtypes", run_lincomb, {rand_input(MR_F32, 3, l3, LAYOUT_CONTIGUOUS),
                rand_input(MR_BF16, 3, l3, LAYOUT_PERMUTED), rand_input(MR_F16, 3, l3, LAYOUT_STRIDED)}};
  check_case(&c);
  int64_t ts[2] = {300, 33};
  int32_t ids[57];
  for (int i = 0; i < 57; i++) ids[i] = (int32_t)((i * 131 + 7) % 300);
  ids[3] = 299;
  ids[40] = 0;
  c = (op_case){"gather rows of a strided table", run_gather, {rand_input(MR_F32, 2, ts, LAYOUT_STRIDED)}, .i = {57},
                .ids = ids};
  check_case(&c);
  int64_t c1[3] = {5, 30, 17}, c2[3] = {5, 21, 17};
  c = (op_case){"concat", run_concat, {rand_input(MR_F32, 3, c1, LAYOUT_PERMUTED), rand_input(MR_F32, 3, c2, LAYOUT_CONTIGUOUS)}};
  check_case(&c);
  c = (op_case){"pad", run_pad, {rand_input(MR_BF16, 3, c1, LAYOUT_STRIDED)}};
  check_case(&c);
}

/* ---------------------------------------------------------------- rows, rope */

static mr_status run_layer_norm(const op_case *c, mr_tensor **out) {
  return mr_op_layer_norm_variant(c->t[0], c->t[1], c->t[2], 1e-5f, c->variant, out);
}
static mr_status run_rms_norm(const op_case *c, mr_tensor **out) {
  return mr_op_rms_norm_variant(c->t[0], c->t[1], 1e-6f, c->variant, out);
}
static mr_status run_softmax(const op_case *c, mr_tensor **out) {
  return mr_op_softmax_variant(c->t[0], c->i[0], c->variant, out);
}
static mr_status run_reduce(const op_case *c, mr_tensor **out) {
  return mr_op_reduce_variant(c->i[0], c->t[0], c->i[1], c->i[2], c->variant, out);
}
static mr_status run_rope(const op_case *c, mr_tensor **out) { return mr_op_rope(c->t[0], c->t[1], c->t[2], out); }

static void test_rows(void) {
  int64_t s2[2] = {97, 200}, w1[1] = {200}, s3[3] = {20, 300, 7}, sm[2] = {150, 30}, s5[5] = {2, 3, 5, 4, 33};
  int64_t w5[1] = {33};
  for (int v = 0; v < MR_ROWS_VARIANTS; v++) {
    op_case c = {"layer_norm", run_layer_norm, {rand_input(MR_F32, 2, s2, LAYOUT_CONTIGUOUS),
                 rand_input(MR_BF16, 1, w1, LAYOUT_STRIDED), rand_input(MR_F32, 1, w1, LAYOUT_CONTIGUOUS)}, .variant = v};
    check_case(&c);
    c = (op_case){"layer_norm, 5-D permuted", run_layer_norm, {rand_input(MR_F16, 5, s5, LAYOUT_PERMUTED),
                  rand_input(MR_F32, 1, w5, LAYOUT_CONTIGUOUS), NULL}, .variant = v};
    check_case(&c);
    c = (op_case){"rms_norm, strided rows", run_rms_norm, {rand_input(MR_F32, 2, s2, LAYOUT_STRIDED),
                  rand_input(MR_F16, 1, w1, LAYOUT_CONTIGUOUS)}, .variant = v};
    check_case(&c);
    int64_t sr[2] = {9, 700}, wr[1] = {700};
    c = (op_case){"layer_norm, strided rows over the limit (compact copies)", run_layer_norm,
                  {rand_input(MR_F32, 2, sr, LAYOUT_STRIDED), rand_input(MR_F32, 1, wr, LAYOUT_STRIDED), NULL},
                  .variant = v};
    check_case(&c);
    c = (op_case){"softmax along dim 0 (rows strided)", run_softmax, {rand_input(MR_F32, 2, sm, LAYOUT_CONTIGUOUS)},
                  .variant = v, .i = {0}};
    check_case(&c);
    c = (op_case){"softmax along the last dim", run_softmax, {rand_input(MR_BF16, 3, s3, LAYOUT_STRIDED)}, .variant = v,
                  .i = {-1}};
    check_case(&c);
    c = (op_case){"reduce sum along dim 1", run_reduce, {rand_input(MR_F32, 3, s3, LAYOUT_CONTIGUOUS)}, .variant = v,
                  .i = {MR_REDUCE_SUM, 1, 0}};
    check_case(&c);
    c = (op_case){"reduce max along dim 0, keepdim", run_reduce, {rand_input(MR_F32, 3, s3, LAYOUT_PERMUTED)},
                  .variant = v, .i = {MR_REDUCE_MAX, 0, 1}};
    check_case(&c);
    c = (op_case){"reduce mean along the last dim", run_reduce, {rand_input(MR_F16, 3, s3, LAYOUT_CONTIGUOUS)},
                  .variant = v, .i = {MR_REDUCE_MEAN, 2, 0}};
    check_case(&c);
  }
  int64_t xs[4] = {2, 45, 3, 16}, tab[2] = {40, 8};
  op_case c = {"rope, permuted x, a table shorter than L", run_rope, {rand_input(MR_F32, 4, xs, LAYOUT_PERMUTED),
               rand_input(MR_F32, 2, tab, LAYOUT_CONTIGUOUS), rand_input(MR_F32, 2, tab, LAYOUT_CONTIGUOUS)}};
  check_case(&c);

  /* a contiguous row over the limit is refused, naming the limit */
  int64_t wide[2] = {2, 2000};
  mr_tensor *x = rand_input(MR_F32, 2, wide, LAYOUT_CONTIGUOUS), *out = NULL;
  mr_gpu_set_max_binding(ctx, SPLIT_LIMIT);
  CHECK(mr_op_layer_norm(x, NULL, NULL, 1e-5f, &out) == MR_EUNSUPPORTED && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "binding limit of 4096 bytes") != NULL);
  mr_gpu_set_max_binding(ctx, 0);
  mr_tensor_free(x);
}

/* ---------------------------------------------------------------- matmul, attention */

static mr_status run_matmul(const op_case *c, mr_tensor **out) {
  return mr_op_matmul_variant(c->t[0], c->t[1], c->t[2], c->variant, out);
}

static void test_matmul(void) {
  int64_t xs[2] = {70, 96}, ws[2] = {50, 96}, bs[1] = {50}, x3[3] = {3, 20, 40}, w3[3] = {3, 30, 40};
  int64_t wbig[2] = {45, 24}, xsmall[2] = {3, 24}, bbig[1] = {45};
  for (int v = 0; v < MR_MATMUL_VARIANTS; v++) {
    op_case c = {"matmul, x and w over the limit", run_matmul, {rand_input(MR_F32, 2, xs, LAYOUT_CONTIGUOUS),
                 rand_input(MR_F32, 2, ws, LAYOUT_CONTIGUOUS), rand_input(MR_F32, 1, bs, LAYOUT_CONTIGUOUS)}, .variant = v};
    CHECK(over_limit(c.t[0]) && over_limit(c.t[1]));
    check_case(&c);
    c = (op_case){"matmul, bf16, strided x", run_matmul, {rand_input(MR_BF16, 2, xs, LAYOUT_STRIDED),
                  rand_input(MR_BF16, 2, ws, LAYOUT_PERMUTED), NULL}, .variant = v};
    check_case(&c);
    c = (op_case){"matmul, batched w", run_matmul, {rand_input(MR_F16, 3, x3, LAYOUT_CONTIGUOUS),
                  rand_input(MR_F16, 3, w3, LAYOUT_CONTIGUOUS), NULL}, .variant = v};
    check_case(&c);
    c = (op_case){"matmul, only w over the limit", run_matmul, {rand_input(MR_F32, 2, xsmall, LAYOUT_CONTIGUOUS),
                  rand_input(MR_F32, 2, wbig, LAYOUT_CONTIGUOUS), rand_input(MR_F16, 1, bbig, LAYOUT_CONTIGUOUS)},
                  .variant = v};
    check_case(&c);
  }
}

static mr_status run_attention(const op_case *c, mr_tensor **out) {
  mr_attention_opts o = mr_attention_opts_default();
  o.k_lens = c->ids;
  return mr_op_attention_variant(c->t[0], c->t[1], c->t[2], &o, c->variant, out);
}

static void test_attention(void) {
  /* K/V over the limit per item (compact head groups), q over it (row chunks), and more than 16 items with key lengths */
  static const int32_t kl2[2] = {29, 11}, kl20[20] = {9, 1, 0, 5, 9, 9, 3, 7, 2, 8, 9, 4, 6, 9, 1, 2, 3, 4, 5, 6};
  int64_t q1[4] = {2, 37, 5, 16}, k1[4] = {2, 29, 5, 16};
  int64_t q2[4] = {3, 200, 3, 8}, k2[4] = {3, 7, 3, 8};
  int64_t q3[4] = {20, 5, 2, 8}, k3[4] = {20, 9, 2, 8};
  for (int v = 0; v < MR_ATTENTION_VARIANTS; v++) {
    op_case c = {"attention, keys over the limit", run_attention, {rand_input(MR_F32, 4, q1, LAYOUT_CONTIGUOUS),
                 rand_input(MR_F32, 4, k1, LAYOUT_CONTIGUOUS), rand_input(MR_BF16, 4, k1, LAYOUT_CONTIGUOUS)},
                 .variant = v, .ids = kl2};
    CHECK(over_limit(c.t[1]));
    check_case(&c);
    c = (op_case){"attention, queries over the limit", run_attention, {rand_input(MR_F16, 4, q2, LAYOUT_PERMUTED),
                  rand_input(MR_F32, 4, k2, LAYOUT_CONTIGUOUS), rand_input(MR_F32, 4, k2, LAYOUT_STRIDED)}, .variant = v};
    check_case(&c);
    c = (op_case){"attention, 20 items with key lengths", run_attention, {rand_input(MR_F32, 4, q3, LAYOUT_CONTIGUOUS),
                  rand_input(MR_F32, 4, k3, LAYOUT_CONTIGUOUS), rand_input(MR_F32, 4, k3, LAYOUT_CONTIGUOUS)},
                  .variant = v, .ids = kl20};
    check_case(&c);
  }
}

/* ---------------------------------------------------------------- conv family */

static mr_status run_conv(const op_case *c, mr_tensor **out) {
  const int stride[3] = {c->i[0], c->i[1], c->i[1]};
  const int pad[6] = {c->i[2], 0, 1, 1, 1, 1};
  return mr_op_conv3d_variant(c->t[0], c->t[1], c->t[2], stride, pad, c->variant, out);
}
static mr_status run_upsample(const op_case *c, mr_tensor **out) { return mr_op_upsample_nearest(c->t[0], 2, 3, out); }
static mr_status run_chnorm(const op_case *c, mr_tensor **out) {
  if (c->i[0]) return mr_op_channel_rms_norm_silu(c->t[0], c->t[1], 1e-6f, out);
  return mr_op_channel_rms_norm(c->t[0], c->t[1], 1e-6f, out);
}

static void test_conv(void) {
  int64_t xs[4] = {5, 7, 9, 11}, ws[5] = {6, 5, 3, 3, 3}, bs[1] = {6}, w1[5] = {40, 5, 1, 1, 1}, b1[1] = {40};
  for (int v = 0; v < MR_CONV_VARIANTS; v++) {
    op_case c = {"conv3d 3x3x3, causal time padding", run_conv, {rand_input(MR_F32, 4, xs, LAYOUT_CONTIGUOUS),
                 rand_input(MR_F32, 5, ws, LAYOUT_CONTIGUOUS), rand_input(MR_F32, 1, bs, LAYOUT_CONTIGUOUS)},
                 .variant = v, .i = {1, 1, 2}};
    CHECK(over_limit(c.t[0]));
    check_case(&c);
    c = (op_case){"conv3d stride 2, strided x", run_conv, {rand_input(MR_BF16, 4, xs, LAYOUT_STRIDED),
                  rand_input(MR_BF16, 5, ws, LAYOUT_CONTIGUOUS), NULL}, .variant = v, .i = {2, 2, 1}};
    check_case(&c);
    c = (op_case){"conv3d 1x1x1, weight over the limit", run_conv, {rand_input(MR_F32, 4, xs, LAYOUT_PERMUTED),
                  rand_input(MR_F32, 5, w1, LAYOUT_CONTIGUOUS), rand_input(MR_F32, 1, b1, LAYOUT_CONTIGUOUS)},
                  .variant = v, .i = {1, 1, 0}};
    check_case(&c);
  }
  int64_t us[3] = {3, 17, 19}, cs[4] = {8, 5, 30, 31}, g[1] = {8};
  op_case c = {"upsample_nearest, permuted", run_upsample, {rand_input(MR_F16, 3, us, LAYOUT_PERMUTED)}};
  check_case(&c);
  c = (op_case){"channel_rms_norm", run_chnorm, {rand_input(MR_F32, 4, cs, LAYOUT_CONTIGUOUS),
                rand_input(MR_F32, 1, g, LAYOUT_CONTIGUOUS)}};
  check_case(&c);
  c = (op_case){"channel_rms_norm, strided bf16", run_chnorm, {rand_input(MR_BF16, 4, cs, LAYOUT_STRIDED), NULL}};
  check_case(&c);
  c = (op_case){"channel_rms_norm_silu", run_chnorm, {rand_input(MR_F32, 4, cs, LAYOUT_PERMUTED),
                rand_input(MR_F32, 1, g, LAYOUT_CONTIGUOUS)}, .i = {1}};
  check_case(&c);
}

int main(void) {
  ctx = mr_test_ctx();
  test_elementwise();
  test_rows();
  test_matmul();
  test_attention();
  test_conv();
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_split");
}
