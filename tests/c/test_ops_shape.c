/* Concat and constant pad against the CPU references: mixed dtypes, strided
   inputs, odd sizes, 5-D, empty parts, errors; copies as buffer transfers. */
#include "op_inputs.h"

#include "ref_basic.h"

#include <string.h>

typedef struct concat_case {
  int ndim, n, dim;
  int64_t shape[MR_MAX_DIMS]; /* shared dims; shape[dim] is ignored */
  int64_t sizes[3];           /* per input, along dim */
} concat_case;

static void test_concat(mr_ctx *ctx) {
  static const concat_case cases[] = {
      {1, 3, 0, {0}, {7, 1, 1000}},
      {2, 2, 0, {0, 33}, {3, 5}},
      {2, 3, -1, {7, 0}, {1, 129, 2}},
      {3, 3, 1, {3, 0, 5}, {2, 0, 4}},         /* an empty part */
      {5, 2, 2, {2, 3, 0, 4, 5}, {1, 6}},
      {5, 1, 4, {2, 1, 3, 1, 0}, {33}},        /* a single input */
  };
  mr_rng rng = {31};
  int ncase = (int)(sizeof cases / sizeof cases[0]);
  for (int c = 0; c < ncase; c++) {
    const concat_case *cc = &cases[c];
    int d = cc->dim < 0 ? cc->dim + cc->ndim : cc->dim;
    float *xs[3];
    int64_t total = 0, shapes[3][MR_MAX_DIMS];
    for (int i = 0; i < cc->n; i++) {
      memcpy(shapes[i], cc->shape, sizeof shapes[i]);
      shapes[i][d] = cc->sizes[i];
      total += cc->sizes[i];
    }
    int64_t oshape[MR_MAX_DIMS];
    memcpy(oshape, cc->shape, sizeof oshape);
    oshape[d] = total;
    int64_t no = shape_numel(cc->ndim, oshape);
    float *want = malloc((size_t)(no + 1) * sizeof *want);
    for (int id = 0; id < 3; id++) {
      mr_tensor *ts[3];
      for (int i = 0; i < cc->n; i++) {
        mr_dtype dt = all_dtypes[(id + i) % 3]; /* inputs of different dtypes */
        int64_t ni = shape_numel(cc->ndim, shapes[i]);
        xs[i] = malloc((size_t)(ni + 1) * sizeof *xs[i]);
        mr_rng_fill(&rng, xs[i], (size_t)ni, -3, 3);
        mr_test_round(dt, xs[i], (size_t)ni);
        ts[i] = make_input(ctx, dt, cc->ndim, shapes[i], xs[i], (input_layout)((id + i + c) % LAYOUT_COUNT));
      }
      mr_tensor *out = NULL;
      CHECK_OK(ctx, mr_op_concat(ts, cc->n, cc->dim, &out));
      if (out) {
        mr_dtype odt = all_dtypes[id];
        CHECK(mr_tensor_dtype(out) == odt && mr_tensor_ndim(out) == cc->ndim);
        CHECK(memcmp(mr_tensor_shape(out), oshape, (size_t)cc->ndim * sizeof *oshape) == 0);
        mr_ref_concat(cc->n, (const float *const *)xs, cc->ndim, cc->shape, cc->sizes, d, want);
        mr_test_round(odt, want, (size_t)no);
        float *got = mr_test_read(ctx, out);
        CHECK(memcmp(got, want, (size_t)no * sizeof *got) == 0); /* copies are exact */
        if (memcmp(got, want, (size_t)no * sizeof *got) != 0) fprintf(stderr, "  concat case %d, %s output\n", c, mr_dtype_name(odt));
        free(got);
        mr_tensor_free(out);
      }
      for (int i = 0; i < cc->n; i++) {
        mr_tensor_free(ts[i]);
        free(xs[i]);
      }
    }
    free(want);
  }
}

typedef struct pad_case {
  int ndim;
  int64_t shape[MR_MAX_DIMS];
  int64_t pads[2 * MR_MAX_DIMS];
} pad_case;

static void test_pad(mr_ctx *ctx) {
  static const pad_case cases[] = {
      {1, {7}, {3, 0}},
      {1, {1}, {0, 0}},                                   /* no padding: a copy */
      {2, {33, 129}, {1, 2, 0, 3}},
      {3, {3, 5, 7}, {2, 2, 0, 0, 1, 1}},
      {5, {2, 1, 3, 4, 5}, {0, 1, 2, 0, 1, 1, 0, 0, 3, 2}},
      {2, {0, 4}, {1, 1, 2, 0}},                          /* empty input: all padding */
  };
  mr_rng rng = {37};
  int ncase = (int)(sizeof cases / sizeof cases[0]);
  for (int c = 0; c < ncase; c++) {
    const pad_case *pc = &cases[c];
    int64_t n = shape_numel(pc->ndim, pc->shape), oshape[MR_MAX_DIMS];
    for (int k = 0; k < pc->ndim; k++) oshape[k] = pc->shape[k] + pc->pads[2 * k] + pc->pads[2 * k + 1];
    int64_t no = shape_numel(pc->ndim, oshape);
    float *x = malloc((size_t)(n + 1) * sizeof *x), *want = malloc((size_t)(no + 1) * sizeof *want);
    for (int id = 0; id < 3; id++) {
      mr_dtype dt = all_dtypes[id];
      mr_rng_fill(&rng, x, (size_t)n, -3, 3);
      mr_test_round(dt, x, (size_t)n);
      for (int l = 0; l < LAYOUT_COUNT; l++) {
        mr_tensor *t = make_input(ctx, dt, pc->ndim, pc->shape, x, (input_layout)l), *out = NULL;
        CHECK_OK(ctx, mr_op_pad(t, pc->pads, -1.5f, &out));
        if (out) {
          CHECK(mr_tensor_dtype(out) == dt && memcmp(mr_tensor_shape(out), oshape, (size_t)pc->ndim * sizeof *oshape) == 0);
          mr_ref_pad(x, pc->ndim, pc->shape, pc->pads, -1.5f, want);
          float *got = mr_test_read(ctx, out);
          bool same = memcmp(got, want, (size_t)no * sizeof *got) == 0;
          CHECK(same);
          if (!same) fprintf(stderr, "  pad case %d %s/%s\n", c, mr_dtype_name(dt), layout_names[l]);
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

/* Same-dtype copies of long contiguous runs are buffer transfers (op_copy.c),
   the others the copy shader: both against the CPU reference, and the profile
   shows which ran. */
static void test_copy_transfers(void) {
  mr_ctx_opts o = mr_ctx_opts_default();
  o.profile = 1;
  mr_ctx *ctx;
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  mr_rng rng = {77};
  for (int id = 0; id < 3; id++) {
    mr_dtype dt = all_dtypes[id];
    /* the VAE's time concat: [C, T, H, W] pieces, one run per channel each */
    int64_t shape[4] = {5, 0, 7, 9}, sizes[2] = {3, 4}, sa[4] = {5, 3, 7, 9}, sb[4] = {5, 4, 7, 9};
    int64_t na = shape_numel(4, sa), nb = shape_numel(4, sb), no = na + nb;
    float *xa = malloc((size_t)na * sizeof *xa), *xb = malloc((size_t)nb * sizeof *xb);
    float *want = malloc((size_t)no * sizeof *want);
    mr_rng_fill(&rng, xa, (size_t)na, -3, 3);
    mr_rng_fill(&rng, xb, (size_t)nb, -3, 3);
    mr_test_round(dt, xa, (size_t)na);
    mr_test_round(dt, xb, (size_t)nb);
    mr_tensor *ts[2] = {make_input(ctx, dt, 4, sa, xa, LAYOUT_CONTIGUOUS), make_input(ctx, dt, 4, sb, xb, LAYOUT_CONTIGUOUS)};
    mr_tensor *out = NULL;
    CHECK_OK(ctx, mr_op_concat(ts, 2, 1, &out));
    mr_ref_concat(2, (const float *const[]){xa, xb}, 4, shape, sizes, 1, want);
    float *got = out ? mr_test_read(ctx, out) : NULL;
    CHECK(got && memcmp(got, want, (size_t)no * sizeof *got) == 0);
    free(got);
    /* a window of frames of it made contiguous: runs of 2 frames; and a
       transposed view, whose runs are one element (the shader) */
    mr_tensor *win = NULL, *c = NULL, *tr = NULL, *ct = NULL;
    CHECK_OK(ctx, mr_tensor_slice(out, 1, 2, 4, 1, &win));
    CHECK_OK(ctx, mr_tensor_contiguous(win, &c));
    CHECK_OK(ctx, mr_tensor_permute(out, (const int[4]){0, 1, 3, 2}, &tr));
    CHECK_OK(ctx, mr_tensor_contiguous(tr, &ct));
    float *gw = mr_test_read(ctx, c), *gt = mr_test_read(ctx, ct);
    bool same_w = true, same_t = true;
    for (int64_t ch = 0; ch < 5; ch++)
      for (int64_t t = 0; t < 7; t++)
        for (int64_t h = 0; h < 7; h++)
          for (int64_t w = 0; w < 9; w++) {
            float v = want[((ch * 7 + t) * 7 + h) * 9 + w];
            if (t >= 2 && t < 4) same_w &= gw[((ch * 2 + t - 2) * 7 + h) * 9 + w] == v;
            same_t &= gt[((ch * 7 + t) * 9 + w) * 7 + h] == v;
          }
    CHECK(same_w);
    CHECK(same_t);
    free(gw);
    free(gt);
    mr_tensor_free(ct);
    mr_tensor_free(tr);
    mr_tensor_free(c);
    mr_tensor_free(win);
    mr_tensor_free(out);
    mr_tensor_free(ts[0]);
    mr_tensor_free(ts[1]);
    free(xa);
    free(xb);
    free(want);
  }
  CHECK_OK(ctx, mr_ctx_sync(ctx));
  char report[4096];
  mr_ctx_profile_report(ctx, report, sizeof report);
  CHECK(strstr(report, "\ntransfer ") != NULL); /* the concats and the window */
  CHECK(strstr(report, "\ncopy ") != NULL);     /* the transposes */
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
}

static void test_errors(mr_ctx *ctx) {
  int64_t s1[2] = {3, 4}, s2[2] = {3, 5}, s3[3] = {3, 4, 1};
  mr_tensor *a, *b, *c, *out = (mr_tensor *)1;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 2, s1, &a));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_BF16, 2, s2, &b));
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 3, s3, &c));
  mr_tensor *ab[2] = {a, b}, *ac[2] = {a, c};
  CHECK_OK(ctx, mr_op_concat(ab, 2, 1, &out)); /* 3x4 ++ 3x5 along dim 1 is fine */
  mr_tensor_free(out);
  out = (mr_tensor *)1;
  CHECK(mr_op_concat(ab, 2, 0, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "3x5") && strstr(mr_ctx_last_error(ctx), "only dim 0"));
  out = (mr_tensor *)1;
  CHECK(mr_op_concat(ac, 2, 0, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "3x4x1") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_concat(ab, 2, 2, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "dim 2 out of range") != NULL);
  out = (mr_tensor *)1;
  CHECK(mr_op_concat(ab, 0, 0, &out) == MR_EINVAL && out == NULL); /* no ctx to hold the message */
  int64_t pads[4] = {0, 1, -2, 0};
  out = (mr_tensor *)1;
  CHECK(mr_op_pad(a, pads, 0, &out) == MR_EINVAL && out == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "negative padding") && strstr(mr_ctx_last_error(ctx), "dim 1"));
  mr_tensor_free(a);
  mr_tensor_free(b);
  mr_tensor_free(c);
}

int main(void) {
  mr_ctx *ctx = mr_test_ctx();
  test_concat(ctx);
  test_pad(ctx);
  test_errors(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  test_copy_transfers();
  return mr_test_finish("test_ops_shape");
}
