/* Elementwise ops against the CPU references: binary with broadcasting,
   scale, unary; every storage dtype, strided inputs, odd sizes, errors. */
#include "op_inputs.h"

#include "ref_basic.h"

#include <math.h>
#include <string.h>

static const char *const binary_names[4] = {"add", "sub", "mul", "div"};
static const char *const unary_names[7] = {"silu", "gelu_tanh", "exp", "tanh", "neg", "square", "gelu"};
#define N_UNARY 7 /* index N_UNARY stands for scale */

typedef struct bcase {
  int an, bn;
  int64_t a[MR_MAX_DIMS], b[MR_MAX_DIMS];
} bcase;

static void test_binary(mr_ctx *ctx) {
  static const bcase cases[] = {
      {1, 1, {1000}, {1000}},                      /* same shape */
      {1, 1, {1}, {1}},                            /* one element */
      {2, 1, {7, 33}, {33}},                       /* row */
      {2, 2, {33, 7}, {33, 1}},                    /* column */
      {3, 1, {3, 7, 5}, {1}},                      /* scalar-like */
      {3, 3, {7, 1, 3}, {1, 5, 3}},                /* both broadcast */
      {5, 4, {2, 3, 1, 4, 5}, {3, 7, 1, 5}},       /* 5-D */
      {1, 2, {5}, {3, 5}},                         /* b has more dims than a */
      {2, 2, {257, 129}, {257, 1}},                /* odd, large */
      {2, 1, {0, 3}, {3}},                         /* empty */
      /* rows a multiple of 4 long: four elements a lane where the layout allows */
      {2, 1, {6, 20}, {20}},                       /* row, read densely */
      {2, 2, {12, 8}, {12, 1}},                    /* column: one value for four */
      {3, 3, {2, 80, 16}, {1, 1, 16}},             /* a DiT's modulation row */
  };
  mr_rng rng = {11};
  int ncase = (int)(sizeof cases / sizeof cases[0]);
  for (int c = 0; c < ncase; c++) {
    const bcase *bc = &cases[c];
    int64_t oshape[MR_MAX_DIMS];
    int on = mr_ref_broadcast_shape(bc->an, bc->a, bc->bn, bc->b, oshape);
    int64_t na = shape_numel(bc->an, bc->a), nb = shape_numel(bc->bn, bc->b), no = shape_numel(on, oshape);
    float *a = malloc((size_t)(na + 1) * sizeof *a), *b = malloc((size_t)(nb + 1) * sizeof *b);
    float *want = malloc((size_t)(no + 1) * sizeof *want);
    for (int ia = 0; ia < 3; ia++) {
      mr_dtype adt = all_dtypes[ia], bdt = all_dtypes[(ia + c) % 3];
      mr_rng_fill(&rng, a, (size_t)na, -2, 2);
      for (int64_t i = 0; i < nb; i++) { /* |b| in [0.5, 2]: safe divisor */
        float v = mr_rng_uniform(&rng, 0.5f, 2.0f);
        b[i] = mr_rng_uniform(&rng, 0, 1) < 0.5f ? -v : v;
      }
      mr_test_round(adt, a, (size_t)na);
      mr_test_round(bdt, b, (size_t)nb);
      for (int la = 0; la < LAYOUT_COUNT; la++) {
        input_layout lb = (input_layout)((la + c) % LAYOUT_COUNT);
        mr_tensor *ta = make_input(ctx, adt, bc->an, bc->a, a, (input_layout)la);
        mr_tensor *tb = make_input(ctx, bdt, bc->bn, bc->b, b, lb);
        for (int op = 0; op < 4; op++) {
          mr_tensor *out = NULL;
          CHECK_OK(ctx, mr_op_binary((mr_binary_op)op, ta, tb, &out));
          if (!out) continue;
          CHECK(mr_tensor_dtype(out) == adt && mr_tensor_ndim(out) == on);
          CHECK(memcmp(mr_tensor_shape(out), oshape, (size_t)on * sizeof *oshape) == 0);
          mr_ref_binary((mr_binary_op)op, a, bc->an, bc->a, b, bc->bn, bc->b, want);
          mr_test_round(adt, want, (size_t)no);
          float *got = mr_test_read(ctx, out);
          CHECK_CLOSE(got, want, no, tol_for(adt, 1e-6), "binary %s case %d a %s/%s b %s/%s", binary_names[op], c,
                      mr_dtype_name(adt), layout_names[la], mr_dtype_name(bdt), layout_names[lb]);
          free(got);
          mr_tensor_free(out);
        }
        mr_tensor_free(ta);
        mr_tensor_free(tb);
      }
    }
    free(a);
    free(b);
    free(want);
  }
}

typedef struct tcase {
  int n[3];
  int64_t s[3][MR_MAX_DIMS];
} tcase;

/* mul_add: a * (b + beta) + c against the reference, the modulation and
   gated-residual shapes of a DiT with odd widths, every broadcast pattern,
   mixed dtypes and layouts. */
static void test_mul_add(mr_ctx *ctx) {
  static const tcase cases[] = {
      {{3, 3, 3}, {{37, 1, 29}, {1, 1, 29}, {1, 1, 29}}},     /* modulation, one timestep */
      {{3, 3, 3}, {{37, 1, 29}, {37, 1, 29}, {37, 1, 29}}},   /* modulation, per-token timesteps */
      {{3, 3, 3}, {{37, 1, 29}, {1, 1, 29}, {37, 1, 29}}},    /* gated residual */
      {{1, 1, 1}, {{1}, {1}, {1}}},                           /* one element */
      {{2, 2, 1}, {{33, 7}, {33, 1}, {7}}},                   /* column, row */
      {{3, 2, 3}, {{7, 1, 3}, {5, 1}, {1, 1, 1}}},            /* all three broadcast */
      {{5, 4, 2}, {{2, 3, 1, 4, 5}, {3, 7, 1, 5}, {4, 1}}},   /* 5-D */
      {{1, 2, 1}, {{5}, {3, 5}, {5}}},                        /* b has more dims than a */
      {{2, 2, 2}, {{257, 129}, {1, 129}, {257, 1}}},          /* odd, large */
      {{2, 1, 2}, {{0, 3}, {3}, {0, 3}}},                     /* empty */
      /* rows a multiple of 4 long: four elements a lane where the layout allows */
      {{3, 3, 3}, {{2, 80, 16}, {1, 1, 16}, {1, 1, 16}}},     /* modulation */
      {{3, 3, 3}, {{2, 80, 16}, {2, 1, 16}, {2, 80, 16}}},    /* gated residual, a batch of two */
      {{2, 2, 1}, {{9, 4}, {9, 1}, {4}}},                     /* column and row */
  };
  const float betas[2] = {0.0f, 1.0f};
  mr_rng rng = {17};
  int ncase = (int)(sizeof cases / sizeof cases[0]);
  for (int c = 0; c < ncase; c++) {
    const tcase *tc = &cases[c];
    int64_t ab[MR_MAX_DIMS], oshape[MR_MAX_DIMS], n[3];
    int on = mr_ref_broadcast_shape(mr_ref_broadcast_shape(tc->n[0], tc->s[0], tc->n[1], tc->s[1], ab), ab, tc->n[2],
                                    tc->s[2], oshape);
    float *in[3], *want = malloc((size_t)(shape_numel(on, oshape) + 1) * sizeof *want);
    for (int k = 0; k < 3; k++) {
      n[k] = shape_numel(tc->n[k], tc->s[k]);
      in[k] = malloc((size_t)(n[k] + 1) * sizeof *in[k]);
    }
    int64_t no = shape_numel(on, oshape);
    for (int id = 0; id < 3; id++) {
      mr_dtype dt[3] = {all_dtypes[id], all_dtypes[(id + c) % 3], all_dtypes[(id + 2 * c) % 3]};
      for (int k = 0; k < 3; k++) {
        mr_rng_fill(&rng, in[k], (size_t)n[k], -2, 2);
        mr_test_round(dt[k], in[k], (size_t)n[k]);
      }
      for (int la = 0; la < LAYOUT_COUNT; la++) {
        mr_tensor *t[3];
        for (int k = 0; k < 3; k++)
          t[k] = make_input(ctx, dt[k], tc->n[k], tc->s[k], in[k], (input_layout)((la + k * c) % LAYOUT_COUNT));
        for (int bi = 0; bi < 2; bi++) {
          mr_tensor *out = NULL;
          CHECK_OK(ctx, mr_op_mul_add(t[0], t[1], betas[bi], t[2], &out));
          if (!out) continue;
          CHECK(mr_tensor_dtype(out) == dt[0] && mr_tensor_ndim(out) == on);
          CHECK(memcmp(mr_tensor_shape(out), oshape, (size_t)on * sizeof *oshape) == 0);
          mr_ref_mul_add(in[0], tc->n[0], tc->s[0], in[1], tc->n[1], tc->s[1], betas[bi], in[2], tc->n[2], tc->s[2], want);
          mr_test_round(dt[0], want, (size_t)no);
          float *got = mr_test_read(ctx, out);
          CHECK_CLOSE(got, want, no, tol_for(dt[0], 2e-6), "mul_add case %d beta %g a %s/%s", c, betas[bi],
                      mr_dtype_name(dt[0]), layout_names[la]);
          free(got);
          mr_tensor_free(out);
        }
        for (int k = 0; k < 3; k++) mr_tensor_free(t[k]);
      }
    }
    for (int k = 0; k < 3; k++) free(in[k]);
    free(want);
  }
}

static void test_unary(mr_ctx *ctx) {
  /* {1000} and {6, 20} read four elements a lane where contiguous */
  static const int nds[] = {1, 1, 3, 5, 2, 2};
  static const int64_t shapes[][MR_MAX_DIMS] = {{1}, {1000}, {3, 7, 33}, {2, 3, 1, 4, 5}, {129, 257}, {6, 20}};
  mr_rng rng = {23};
  for (int c = 0; c < 6; c++) {
    int64_t n = shape_numel(nds[c], shapes[c]);
    float *x = malloc((size_t)n * sizeof *x), *want = malloc((size_t)n * sizeof *want);
    for (int id = 0; id < 3; id++) {
      mr_dtype dt = all_dtypes[id];
      mr_rng_fill(&rng, x, (size_t)n, -4, 4);
      mr_test_round(dt, x, (size_t)n);
      for (int l = 0; l < LAYOUT_COUNT; l++) {
        mr_tensor *t = make_input(ctx, dt, nds[c], shapes[c], x, (input_layout)l);
        for (int op = 0; op <= N_UNARY; op++) { /* N_UNARY: scale */
          mr_tensor *out = NULL;
          if (op < N_UNARY) CHECK_OK(ctx, mr_op_unary((mr_unary_op)op, t, &out));
          else CHECK_OK(ctx, mr_op_scale(t, -1.75f, 0.5f, &out));
          if (!out) continue;
          CHECK(mr_tensor_dtype(out) == dt && mr_tensor_is_contiguous(out));
          if (op < N_UNARY) mr_ref_unary((mr_unary_op)op, x, n, want);
          else mr_ref_scale(x, n, -1.75f, 0.5f, want);
          mr_test_round(dt, want, (size_t)n);
          float *got = mr_test_read(ctx, out);
          CHECK_CLOSE(got, want, n, tol_for(dt, 2e-6), "%s case %d %s/%s", op < N_UNARY ? unary_names[op] : "scale", c,
                      mr_dtype_name(dt), layout_names[l]);
          free(got);
          mr_tensor_free(out);
        }
        mr_tensor_free(t);
      }
    }
    free(x);
    free(want);
  }
}

/* Extreme arguments: no NaN or overflow where the function is finite, and
   small arguments keep their relative accuracy. */
static void test_unary_extremes(mr_ctx *ctx) {
  float x[10] = {-1000, -100, -30, -1e-4f, 0, 1e-6f, 3e-3f, 30, 100, 1000};
  int64_t shape[1] = {10};
  mr_tensor *t;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 1, shape, MR_F32, x, &t));
  const mr_unary_op ops[4] = {MR_UNARY_SILU, MR_UNARY_GELU_TANH, MR_UNARY_TANH, MR_UNARY_GELU};
  for (int k = 0; k < 4; k++) {
    mr_tensor *out;
    float want[10], got[10];
    CHECK_OK(ctx, mr_op_unary(ops[k], t, &out));
    CHECK_OK(ctx, mr_tensor_read(out, MR_F32, got, 10));
    mr_ref_unary(ops[k], x, 10, want);
    for (int i = 0; i < 10; i++) {
      double err = fabs((double)got[i] - want[i]), lim = 1e-5 * fabs(want[i]) + 1e-30;
      if (!(err <= lim)) {
        fprintf(stderr, "%s(%g) = %g, want %g\n", unary_names[ops[k]], x[i], got[i], want[i]);
        mr_test_failures++;
      }
    }
    mr_tensor_free(out);
  }
  mr_tensor_free(t);
}

static void test_errors(mr_ctx *ctx) {
  int64_t s1[2] = {3, 4}, s2[1] = {5};
  mr_tensor *a, *b, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, s1, &a));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F16, 1, s2, &b));
  CHECK(mr_op_binary(MR_BINARY_ADD, a, b, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "broadcast") && strstr(mr_ctx_last_error(ctx), "3x4"));
  out = (mr_tensor *)1;
  CHECK(mr_op_mul_add(a, a, 1.0f, b, &out) == MR_EINVAL && out == NULL);   /* the third operand does not broadcast */
  CHECK(strstr(mr_ctx_last_error(ctx), "broadcast") && strstr(mr_ctx_last_error(ctx), "3x4 and 5 "));
  out = (mr_tensor *)1;
  CHECK(mr_op_binary((mr_binary_op)9, a, a, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "unknown op") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_unary((mr_unary_op)-1, a, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "unknown op") != NULL);
  mr_tensor_free(a);
  mr_tensor_free(b);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  test_binary(ctx);
  test_mul_add(ctx);
  test_unary(ctx);
  test_unary_extremes(ctx);
  test_errors(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_elementwise");
}
