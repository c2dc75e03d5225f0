/* Test inputs for the op tests: a tensor with given logical contents laid out
   contiguously, as a permuted view, or as a strided slice. Header-only. */
#ifndef MR_OP_INPUTS_H
#define MR_OP_INPUTS_H

#include "testutil.h"

typedef enum input_layout { LAYOUT_CONTIGUOUS, LAYOUT_PERMUTED, LAYOUT_STRIDED, LAYOUT_COUNT } input_layout;

static const char *const layout_names[LAYOUT_COUNT] = {"contiguous", "permuted", "strided"};
static const mr_dtype all_dtypes[3] = {MR_F32, MR_F16, MR_BF16};

/* A tensor of dtype whose logical shape is shape and whose elements, read
   row-major, are host[0..numel). PERMUTED: a view of a base stored with the
   dims reversed (no dim has stride 1 unless ndim is 1). STRIDED: every other
   element along the last dim, starting at 1, of a wider base (offset and a
   stride of 2). The base handle is freed; the view keeps the storage. */
static inline mr_tensor *make_input(mr_ctx *ctx, mr_dtype dt, int ndim, const int64_t *shape, const float *host,
                             input_layout layout) {
  int64_t base_shape[MR_MAX_DIMS], n = 1;
  for (int k = 0; k < ndim; k++) n *= shape[k];
  mr_tensor *base = NULL, *view = NULL;
  mr_status st = MR_OK;
  if (layout == LAYOUT_CONTIGUOUS) {
    st = mr_tensor_from_host(ctx, dt, ndim, shape, MR_F32, host, &view);
  } else if (layout == LAYOUT_PERMUTED) {
    int perm[MR_MAX_DIMS];
    for (int k = 0; k < ndim; k++) base_shape[k] = shape[ndim - 1 - k], perm[k] = ndim - 1 - k;
    if ((st = mr_tensor_new(ctx, dt, ndim, base_shape, &base)) == MR_OK &&
        (st = mr_tensor_permute(base, perm, &view)) == MR_OK)
      st = mr_tensor_write(view, MR_F32, host, (size_t)n);
  } else {
    for (int k = 0; k < ndim; k++) base_shape[k] = shape[k];
    base_shape[ndim - 1] = 2 * shape[ndim - 1] + 1;
    if ((st = mr_tensor_new(ctx, dt, ndim, base_shape, &base)) == MR_OK &&
        (st = mr_tensor_fill(base, 12345.0f)) == MR_OK && /* poison between the elements */
        (st = mr_tensor_slice(base, ndim - 1, 1, base_shape[ndim - 1], 2, &view)) == MR_OK)
      st = mr_tensor_write(view, MR_F32, host, (size_t)n);
  }
  mr_tensor_free(base);
  if (st != MR_OK) {
    fprintf(stderr, "make_input (%s): %s\n", layout_names[layout], mr_ctx_last_error(ctx));
    exit(1);
  }
  return view;
}

static inline int64_t shape_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int k = 0; k < ndim; k++) n *= shape[k];
  return n;
}

/* Relative L2 tolerance for an output stored in dt. */
static inline double tol_for(mr_dtype dt, double f32_tol) {
  return dt == MR_F32 ? f32_tol : dt == MR_F16 ? 2e-3 : 1e-2;
}

/* Checks a rel-L2 comparison, printing the case on failure. */
#define CHECK_CLOSE(got, want, n, tol, ...)                                                  \
  do {                                                                                       \
    double e_ = mr_rel_l2((got), (want), (size_t)(n));                                       \
    if (!(e_ <= (tol))) {                                                                    \
      fprintf(stderr, "%s:%d: rel L2 %.3g > %.3g: ", __FILE__, __LINE__, e_, (double)(tol)); \
      fprintf(stderr, __VA_ARGS__);                                                          \
      fprintf(stderr, "\n");                                                                 \
      mr_test_failures++;                                                                    \
    }                                                                                        \
  } while (0)

#endif
