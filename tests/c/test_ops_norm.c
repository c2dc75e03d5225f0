/* Row-wise ops against the CPU references: layer_norm, rms_norm, softmax and
   reduce, through both kernel shapes (one row per invocation, one workgroup
   per row) and the automatic choice; every storage dtype, strided inputs,
   odd sizes, rows up to 5120 wide, errors. */
#include "op_inputs.h"

#include "ops/op_internal.h"
#include "ref_basic.h"

#include <math.h>
#include <string.h>

static const char *const variant_names[MR_ROWS_VARIANTS] = {"auto", "per-invocation", "per-workgroup"};

typedef struct shape_case {
  int ndim;
  int64_t shape[MR_MAX_DIMS];
} shape_case;

static const shape_case norm_shapes[] = {
    {2, {1, 1}}, {2, {3, 7}}, {2, {33, 129}}, {2, {4, 1000}}, {2, {2, 5120}}, {5, {2, 3, 1, 4, 33}}, {1, {257}},
    /* rows a multiple of 4 long: four elements at a time where dense (mr_rows_x4) */
    {2, {6, 192}}, {3, {5, 2, 16}}, {2, {3, 44}},
};

static void test_norms(mr_ctx *ctx) {
  mr_rng rng = {5};
  int ncase = (int)(sizeof norm_shapes / sizeof norm_shapes[0]);
  for (int c = 0; c < ncase; c++) {
    const shape_case *sc = &norm_shapes[c];
    int64_t n = shape_numel(sc->ndim, sc->shape), cols = sc->shape[sc->ndim - 1], rows = n / cols;
    float *x = malloc((size_t)n * sizeof *x), *want = malloc((size_t)n * sizeof *want);
    float *w = malloc((size_t)cols * sizeof *w), *b = malloc((size_t)cols * sizeof *b);
    for (int id = 0; id < 3; id++) {
      mr_dtype dt = all_dtypes[id], wdt = all_dtypes[(id + c) % 3], bdt = all_dtypes[(id + c + 1) % 3];
      mr_rng_fill(&rng, x, (size_t)n, -3, 5);
      mr_rng_fill(&rng, w, (size_t)cols, 0.5f, 1.5f);
      mr_rng_fill(&rng, b, (size_t)cols, -1, 1);
      mr_test_round(dt, x, (size_t)n);
      mr_test_round(wdt, w, (size_t)cols);
      mr_test_round(bdt, b, (size_t)cols);
      int64_t cshape[1] = {cols};
      mr_tensor *tw = make_input(ctx, wdt, 1, cshape, w, (input_layout)(c % LAYOUT_COUNT));
      mr_tensor *tb = make_input(ctx, bdt, 1, cshape, b, LAYOUT_CONTIGUOUS);
      /* parameters: none, weight only, weight and bias (rotating with the case) */
      int params = (c + id) % 3;
      const float *pw = params >= 1 ? w : NULL, *pb = params == 2 ? b : NULL;
      for (int l = 0; l < LAYOUT_COUNT; l++) {
        mr_tensor *t = make_input(ctx, dt, sc->ndim, sc->shape, x, (input_layout)l);
        for (int v = 0; v < MR_ROWS_VARIANTS; v++) {
          for (int rms = 0; rms < 2; rms++) {
            mr_tensor *out = NULL;
            if (rms) {
              CHECK_OK(ctx, mr_op_rms_norm_variant(t, pw ? tw : NULL, 1e-6f, v, &out));
              mr_ref_rms_norm(x, rows, cols, pw, 1e-6f, want);
            } else {
              CHECK_OK(ctx, mr_op_layer_norm_variant(t, pw ? tw : NULL, pb ? tb : NULL, 1e-5f, v, &out));
              mr_ref_layer_norm(x, rows, cols, pw, pb, 1e-5f, want);
            }
            if (!out) continue;
            CHECK(mr_tensor_dtype(out) == dt && mr_tensor_is_contiguous(out));
            mr_test_round(dt, want, (size_t)n);
            float *got = mr_test_read(ctx, out);
            CHECK_CLOSE(got, want, n, tol_for(dt, 2e-6), "%s case %d %s/%s params %d %s", rms ? "rms_norm" : "layer_norm",
                        c, mr_dtype_name(dt), layout_names[l], params, variant_names[v]);
            free(got);
            mr_tensor_free(out);
          }
        }
        mr_tensor_free(t);
      }
      mr_tensor_free(tw);
      mr_tensor_free(tb);
    }
    free(x);
    free(want);
    free(w);
    free(b);
  }
}

/* Rows with a large mean relative to their spread: the statistics must not
   lose the spread (f32, compensated sums). */
static void test_norm_offset(mr_ctx *ctx) {
  mr_rng rng = {9};
  int64_t shape[2] = {4, 5120}, n = 4 * 5120;
  float *x = malloc((size_t)n * sizeof *x), *want = malloc((size_t)n * sizeof *want);
  for (int64_t i = 0; i < n; i++) x[i] = 10.0f + mr_rng_uniform(&rng, -1, 1);
  mr_tensor *t = make_input(ctx, MR_F32, 2, shape, x, LAYOUT_CONTIGUOUS);
  mr_ref_layer_norm(x, 4, 5120, NULL, NULL, 1e-6f, want);
  for (int v = 1; v < MR_ROWS_VARIANTS; v++) {
    mr_tensor *out = NULL;
    CHECK_OK(ctx, mr_op_layer_norm_variant(t, NULL, NULL, 1e-6f, v, &out));
    if (!out) continue;
    float *got = mr_test_read(ctx, out);
    CHECK_CLOSE(got, want, n, 1e-5, "layer_norm offset rows %s", variant_names[v]);
    free(got);
    mr_tensor_free(out);
  }
  mr_tensor_free(t);
  free(x);
  free(want);
}

/* The DiT's modulation fused: LN(x) * (scale + add) + shift with scale and
   shift rows of a [T, 6, C] tensor (as the DiT slices them) seen as [1, T, C],
   T = 1 or L; odd and multiple-of-4 widths, every dtype, both kernel
   shapes; a strided x takes the two-op path. Reference: mr_ref_layer_norm, then the modulation. */
static void test_modulate(mr_ctx *ctx) {
  mr_rng rng = {21};
  static const int64_t cases[][3] = {{2, 5, 7}, {2, 80, 192}, {1, 3, 44}, {3, 1, 33}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (int id = 0; id < 3; id++)
      for (int per_token = 0; per_token < 2; per_token++)
        for (int strided = 0; strided < 2; strided++)
          for (int v = 0; v < MR_ROWS_VARIANTS; v++) {
          int64_t B = cases[c][0], L = cases[c][1], C = cases[c][2], T = per_token ? L : 1, n = B * L * C;
          mr_dtype dt = all_dtypes[id], pdt = all_dtypes[(id + c) % 3];
          float *x = malloc((size_t)n * sizeof *x), *want = malloc((size_t)n * sizeof *want);
          float *e = malloc((size_t)(T * 6 * C) * sizeof *e);
          mr_rng_fill(&rng, x, (size_t)n, -3, 5);
          mr_rng_fill(&rng, e, (size_t)(T * 6 * C), -1, 1);
          mr_test_round(dt, x, (size_t)n);
          mr_test_round(pdt, e, (size_t)(T * 6 * C));
          mr_ref_layer_norm(x, B * L, C, NULL, NULL, 1e-6f, want);
          for (int64_t r = 0; r < B * L; r++)
            for (int64_t i = 0; i < C; i++) {
              int64_t t = (r % L) % T;
              float scale = e[(t * 6 + 1) * C + i], shift = e[(t * 6 + 0) * C + i];
              want[r * C + i] = want[r * C + i] * (scale + 1.0f) + shift;
            }
          mr_test_round(dt, want, (size_t)n);
          int64_t xs[3] = {B, L, C}, es[3] = {T, 6, C};
          mr_tensor *tx = make_input(ctx, dt, 3, xs, x, strided ? LAYOUT_PERMUTED : LAYOUT_CONTIGUOUS);
          mr_tensor *te = make_input(ctx, pdt, 3, es, e, LAYOUT_CONTIGUOUS), *rows[2] = {NULL, NULL},
                    *views[2] = {NULL, NULL}, *out = NULL;
          int perm[3] = {1, 0, 2};
          for (int k = 0; k < 2; k++) { /* [T, 1, C] rows k of e, then [1, T, C] */
            CHECK_OK(ctx, mr_tensor_slice(te, 1, k, k + 1, 1, &rows[k]));
            CHECK_OK(ctx, mr_tensor_permute(rows[k], perm, &views[k]));
          }
          CHECK_OK(ctx, mr_op_layer_norm_modulate(tx, views[1], 1.0f, views[0], 1e-6f, v, &out));
          if (out) {
            CHECK(mr_tensor_dtype(out) == dt && mr_tensor_is_contiguous(out));
            float *got = mr_test_read(ctx, out);
            CHECK_CLOSE(got, want, n, tol_for(dt, 4e-6), "layer_norm_modulate %lldx%lldx%lld T %lld %s/%s%s %s",
                        (long long)B, (long long)L, (long long)C, (long long)T, mr_dtype_name(dt), mr_dtype_name(pdt),
                        strided ? " strided" : "", variant_names[v]);
            free(got);
          }
          mr_tensor_free(out);
          for (int k = 0; k < 2; k++) {
            mr_tensor_free(rows[k]);
            mr_tensor_free(views[k]);
          }
          mr_tensor_free(te);
          mr_tensor_free(tx);
          free(x);
          free(want);
          free(e);
        }
}

typedef struct dim_case {
  int ndim;
  int64_t shape[MR_MAX_DIMS];
  int dim;
} dim_case;

static const dim_case dim_cases[] = {
    {1, {1000}, 0},     {2, {7, 33}, -1},   {2, {7, 33}, 0},   {3, {3, 5, 129}, 1}, {5, {2, 3, 1, 4, 5}, 2},
    {5, {2, 3, 1, 4, 5}, 4}, {2, {4, 5120}, -1}, {2, {257, 3}, 0}, {1, {1}, 0},
};

static void test_softmax_reduce(mr_ctx *ctx) {
  static const char *const reduce_names[3] = {"sum", "mean", "max"};
  mr_rng rng = {17};
  int ncase = (int)(sizeof dim_cases / sizeof dim_cases[0]);
  for (int c = 0; c < ncase; c++) {
    const dim_case *dc = &dim_cases[c];
    int d = dc->dim < 0 ? dc->dim + dc->ndim : dc->dim;
    int64_t n = shape_numel(dc->ndim, dc->shape);
    float *x = malloc((size_t)n * sizeof *x), *want = malloc((size_t)n * sizeof *want);
    for (int id = 0; id < 3; id++) {
      mr_dtype dt = all_dtypes[id];
      mr_rng_fill(&rng, x, (size_t)n, -8, 8);
      mr_test_round(dt, x, (size_t)n);
      for (int l = 0; l < LAYOUT_COUNT; l++) {
        mr_tensor *t = make_input(ctx, dt, dc->ndim, dc->shape, x, (input_layout)l);
        for (int v = 0; v < MR_ROWS_VARIANTS; v++) {
          mr_tensor *out = NULL;
          CHECK_OK(ctx, mr_op_softmax_variant(t, dc->dim, v, &out));
          if (out) {
            CHECK(mr_tensor_dtype(out) == dt && mr_tensor_is_contiguous(out));
            mr_ref_softmax(x, dc->ndim, dc->shape, d, want);
            mr_test_round(dt, want, (size_t)n);
            float *got = mr_test_read(ctx, out);
            CHECK_CLOSE(got, want, n, tol_for(dt, 2e-6), "softmax case %d %s/%s %s", c, mr_dtype_name(dt),
                        layout_names[l], variant_names[v]);
            free(got);
            mr_tensor_free(out);
          }
          for (int op = 0; op < 3; op++) {
            bool keepdim = (op + v + l) % 2 == 0;
            out = NULL;
            CHECK_OK(ctx, mr_op_reduce_variant((mr_reduce_op)op, t, dc->dim, keepdim, v, &out));
            if (!out) continue;
            int64_t no = n / dc->shape[d];
            int ond = keepdim || dc->ndim == 1 ? dc->ndim : dc->ndim - 1;
            CHECK(mr_tensor_ndim(out) == ond && mr_tensor_numel(out) == no && mr_tensor_dtype(out) == dt);
            if (keepdim) CHECK(mr_tensor_shape(out)[d] == 1);
            mr_ref_reduce((mr_reduce_op)op, x, dc->ndim, dc->shape, d, want);
            mr_test_round(dt, want, (size_t)no);
            float *got = mr_test_read(ctx, out);
            CHECK_CLOSE(got, want, no, tol_for(dt, 1e-6), "reduce %s case %d %s/%s keepdim %d %s", reduce_names[op], c,
                        mr_dtype_name(dt), layout_names[l], keepdim, variant_names[v]);
            free(got);
            mr_tensor_free(out);
          }
        }
        mr_tensor_free(t);
      }
    }
    free(x);
    free(want);
  }
}

static void test_errors(mr_ctx *ctx) {
  int64_t s[2] = {3, 4}, s5[1] = {5}, s0[2] = {3, 0};
  mr_tensor *x, *w, *e, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, s, &x));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, s5, &w));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, s0, &e));
  CHECK(mr_op_layer_norm(x, w, NULL, 1e-5f, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "weight has shape 5") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_layer_norm(x, NULL, w, 1e-5f, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "bias") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_rms_norm(x, w, 1e-5f, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "rms_norm") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_softmax(x, 2, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "dim 2 out of range") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_reduce(MR_REDUCE_SUM, x, -3, false, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "dim -3 out of range") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_reduce(MR_REDUCE_MAX, e, 1, false, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "size 0") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_softmax_variant(x, 0, 7, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "variant") != NULL);
  /* empty tensors: valid, nothing to compute */
  CHECK_OK(ctx, mr_op_layer_norm(e, NULL, NULL, 1e-5f, &out));
  CHECK(out && mr_tensor_numel(out) == 0);
  mr_tensor_free(out);
  CHECK_OK(ctx, mr_op_reduce(MR_REDUCE_SUM, e, 0, true, &out));
  CHECK(out && mr_tensor_numel(out) == 0);
  mr_tensor_free(out);
  CHECK_OK(ctx, mr_op_reduce(MR_REDUCE_SUM, e, 1, false, &out)); /* sum over nothing is 0 */
  float z[3] = {1, 1, 1};
  if (out) CHECK_OK(ctx, mr_tensor_read(out, MR_F32, z, 3));
  CHECK(z[0] == 0 && z[1] == 0 && z[2] == 0);
  mr_tensor_free(out);
  mr_tensor_free(x);
  mr_tensor_free(w);
  mr_tensor_free(e);
}

/* Rows past lavapipe's per-invocation loop limit (65,535 iterations in all):
   the automatic kernel choice must still give the reference's answer. */
static void test_long_rows(mr_ctx *ctx) {
  /* a row is never split: under the lowered limits of the split rerun these
     rows are refused, and the rerun's point is splitting, which they skip */
  if (getenv("MOONREEL_MAX_BINDING")) return;
  const int64_t lens[2] = {22001, 70001};
  for (int li = 0; li < 2; li++) {
    int64_t shape[2] = {3, lens[li]}, n = 3 * lens[li];
    float *x = malloc((size_t)n * sizeof *x), *want = malloc((size_t)n * sizeof *want);
    mr_rng rng = {17 + (uint64_t)li};
    mr_rng_fill(&rng, x, (size_t)n, -3, 3);
    mr_tensor *t = NULL, *y = NULL;
    CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, shape, MR_F32, x, &t));
    for (int op = 0; op < 4 && t; op++) {
      mr_status st;
      if (op == 0) { st = mr_op_softmax(t, -1, &y); mr_ref_softmax(x, 2, shape, 1, want); }
      else if (op == 1) { st = mr_op_layer_norm(t, NULL, NULL, 1e-5f, &y); mr_ref_layer_norm(x, 3, lens[li], NULL, NULL, 1e-5f, want); }
      else if (op == 2) { st = mr_op_rms_norm(t, NULL, 1e-6f, &y); mr_ref_rms_norm(x, 3, lens[li], NULL, 1e-6f, want); }
      else { st = mr_op_reduce(MR_REDUCE_SUM, t, -1, false, &y); mr_ref_reduce(MR_REDUCE_SUM, x, 2, shape, 1, want); }
      CHECK_OK(ctx, st);
      if (!y) continue;
      float *got = mr_test_read(ctx, y);
      size_t m = (size_t)mr_tensor_numel(y);
      double err = mr_rel_l2(got, want, m);
      if (err > 1e-5) fprintf(stderr, "long rows: op %d, rows of %lld: rel L2 %g\n", op, (long long)lens[li], err);
      CHECK(err <= 1e-5);
      free(got);
      mr_tensor_free(y);
      y = NULL;
    }
    mr_tensor_free(t);
    free(x);
    free(want);
  }
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  test_norms(ctx);
  test_norm_offset(ctx);
  test_modulate(ctx);
  test_softmax_reduce(ctx);
  test_long_rows(ctx);
  test_errors(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_ops_norm");
}
