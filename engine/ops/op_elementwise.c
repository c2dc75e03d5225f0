/* Elementwise ops: binary arithmetic and mul_add with numpy broadcasting
   (binary.comp, mul_add.comp), scale and the unary activations (unary.comp). Inputs are any strided
   views; outputs are contiguous, in the first input's dtype. Where the rows
   allow, a lane takes four elements (X4, x4_layout). */
#include "ops/op_common.h"

#include <string.h>

/* unary.comp's op code for a * scale + bias, after the mr_unary_op codes. */
#define UNARY_SCALE 15u /* past every mr_unary_op */

/* Drops size-1 dims and merges neighbours that every operand walks as one run
   (outer stride = inner stride x inner size), so most calls index with 1 or 2
   dims. The output is contiguous, so it never prevents a merge. */
static int merge_dims(int ndim, int64_t *shape, int nops, int64_t (*strides)[MR_MAX_DIMS]) {
  int n = 0;
  for (int k = 0; k < ndim; k++) {
    if (shape[k] == 1) continue;
    bool merge = n > 0;
    for (int o = 0; o < nops && merge; o++) merge = strides[o][n - 1] == strides[o][k] * shape[k];
    if (merge) {
      shape[n - 1] *= shape[k];
      for (int o = 0; o < nops; o++) strides[o][n - 1] = strides[o][k];
      continue;
    }
    shape[n] = shape[k];
    for (int o = 0; o < nops; o++) strides[o][n] = strides[o][k];
    n++;
  }
  if (n == 0) { /* every dim was 1: one element */
    shape[0] = 1;
    for (int o = 0; o < nops; o++) strides[o][0] = 0;
    n = 1;
  }
  return n;
}

/* Four elements a lane (the X4 forms of binary, mul_add and unary;
   common.glsl): rows a multiple of 4 long that every operand walks densely
   (stride 1, row strides multiples of 4) or not at all (stride 0, one value
   for the four). */
static bool x4_layout(int ndim, const int64_t *shape, int nops, int64_t (*strides)[MR_MAX_DIMS]) {
  if (shape[ndim - 1] % 4 != 0) return false;
  for (int o = 0; o < nops; o++) {
    int64_t in = strides[o][ndim - 1];
    if (in != 0 && in != 1) return false;
    for (int d = 0; d < ndim - 1 && in == 1; d++)
      if (strides[o][d] % 4 != 0) return false;
  }
  return true;
}

/* ... and a window of the split whose rows stay whole and whose dense
   operands start at a multiple of 4 elements from their binding. */
static bool x4_window(const mr_split *sp, int nops, int64_t (*strides)[MR_MAX_DIMS]) {
  if (sp->size[sp->ndim - 1] % 4 != 0) return false;
  for (int o = 0; o < nops; o++)
    if (strides[o][sp->ndim - 1] == 1 && sp->rel[o] % 4 != 0) return false;
  return true;
}

/* The push block of shaders/broadcast.glsl (binary.comp, mul_add.comp). */
#define BCAST_INPUTS 3
typedef struct bcast_push {
  uint32_t ndim, n;
  float beta;
  uint32_t off[BCAST_INPUTS];
  uint32_t shape[MR_MAX_DIMS], strides[BCAST_INPUTS][MR_MAX_DIMS];
  uint32_t y_off;
} bcast_push;

/* The contiguous strides of shape (the output's, after merging). */
static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
  int64_t s = 1;
  for (int k = ndim - 1; k >= 0; k--) {
    strides[k] = s;
    s *= shape[k];
  }
}

/* Records kernel `name` (spec: the inputs' dtypes, the output's, extra spec
   constants, the workgroup size) over the broadcast of the n inputs into a
   new contiguous tensor in in[0]'s dtype, split into output runs that fit the
   binding limit. */
static mr_status broadcast_run(const char *name, int n, const mr_tensor *const *in, float beta, const uint32_t *extra,
                               int nextra, mr_tensor **out) {
  mr_ctx *ctx = in[0]->ctx;
  *out = NULL;
  mr_status st;
  int ndim;
  int64_t shape[MR_MAX_DIMS], strides[BCAST_INPUTS + 1][MR_MAX_DIMS];
  for (int k = 1; k < n; k++)
    if ((st = mr_op_same_ctx(in[0], in[k], name)) != MR_OK) return st;
  if ((st = mr_op_broadcast_shape(ctx, n, in, &ndim, shape)) != MR_OK) return st;
  for (int k = 0; k < n; k++)
    if ((st = mr_tensor_check_index_range(in[k], name)) != MR_OK) return st;
  if ((st = mr_tensor_empty(ctx, in[0]->dtype, ndim, shape, out)) != MR_OK) return st;
  uint64_t count = (uint64_t)mr_tensor_numel(*out);
  if (count == 0) return MR_OK;
  if ((st = mr_tensor_check_index_range(*out, name)) != MR_OK) goto fail;
  for (int k = 0; k < BCAST_INPUTS; k++) /* unused inputs: stride 0, never read */
    if (k < n) mr_op_broadcast_strides(in[k], ndim, shape, strides[k]);
    else memset(strides[k], 0, sizeof strides[k]);
  ndim = merge_dims(ndim, shape, n, strides);
  contiguous_strides(ndim, shape, strides[n]);
  uint32_t spec[BCAST_INPUTS + 5];
  int ns = 0;
  for (int k = 0; k < n; k++) spec[ns++] = in[k]->dtype;
  spec[ns++] = (*out)->dtype;
  for (int k = 0; k < nextra; k++) spec[ns++] = extra[k];
  spec[ns++] = MR_ELEMWISE_WG;
  ns++; /* X4, per window */
  bool x4 = x4_layout(ndim, shape, n + 1, strides);
  /* chunks are runs of the output, which the kernel writes at y_off + i */
  mr_split sp = {.ndim = ndim, .runs = true};
  memcpy(sp.shape, shape, sizeof shape);
  for (int k = 0; k < n; k++) mr_split_add(&sp, in[k], false, in[k]->offset, strides[k], 0);
  mr_split_add(&sp, *out, true, 0, strides[n], 0);
  if ((st = mr_split_plan(ctx, &sp, name)) != MR_OK) goto fail;
  while (mr_split_next(&sp)) {
    bool w4 = x4 && x4_window(&sp, n + 1, strides);
    spec[ns - 1] = w4;
    mr_pipeline *p;
    if ((st = mr_gpu_pipeline(ctx, name, n + 1, sizeof(bcast_push), spec, ns, &p)) != MR_OK) goto fail;
    bcast_push pc = {.ndim = (uint32_t)ndim, .n = (uint32_t)sp.points, .beta = beta, .y_off = (uint32_t)sp.rel[n]};
    mr_op_dims_u32(pc.shape, sp.size, ndim, 1);
    for (int k = 0; k < BCAST_INPUTS; k++) {
      pc.off[k] = k < n ? (uint32_t)sp.rel[k] : 0;
      mr_op_dims_u32(pc.strides[k], strides[k], ndim, 0);
    }
    if ((st = mr_op_dispatch_1d(ctx, p, sp.bind, n + 1, &pc, (uint64_t)sp.points / (w4 ? 4 : 1), name)) != MR_OK)
      goto fail;
  }
  return MR_OK;
fail:
  mr_tensor_free(*out);
  *out = NULL;
  return st;
}

mr_status mr_op_binary(mr_binary_op op, const mr_tensor *a, const mr_tensor *b, mr_tensor **out) {
  *out = NULL;
  if ((unsigned)op > MR_BINARY_DIV) return mr_error(a->ctx, MR_EINVAL, "binary: unknown op %d", (int)op);
  const mr_tensor *in[2] = {a, b};
  uint32_t code = (uint32_t)op;
  return broadcast_run("binary", 2, in, 0.0f, &code, 1, out);
}

mr_status mr_op_mul_add(const mr_tensor *a, const mr_tensor *b, float beta, const mr_tensor *c, mr_tensor **out) {
  const mr_tensor *in[3] = {a, b, c};
  return broadcast_run("mul_add", 3, in, beta, NULL, 0, out);
}

typedef struct unary_push {
  uint32_t ndim, n, off;
  float scale, bias;
  uint32_t shape[MR_MAX_DIMS], strides[MR_MAX_DIMS];
  uint32_t y_off;
} unary_push;

static mr_status unary_run(uint32_t op, const mr_tensor *a, float scale, float bias, const char *name,
                           mr_tensor **out) {
  mr_ctx *ctx = a->ctx;
  mr_status st = mr_tensor_check_index_range(a, name);
  if (st != MR_OK) return st;
  if ((st = mr_tensor_empty(ctx, a->dtype, a->ndim, a->shape, out)) != MR_OK) return st;
  uint64_t n = (uint64_t)mr_tensor_numel(a);
  if (n == 0) return MR_OK;
  int64_t shape[MR_MAX_DIMS], strides[2][MR_MAX_DIMS];
  for (int k = 0; k < a->ndim; k++) {
    shape[k] = a->shape[k];
    strides[0][k] = a->strides[k];
  }
  int ndim = merge_dims(a->ndim, shape, 1, strides);
  contiguous_strides(ndim, shape, strides[1]);
  /* X4 wants x read densely (a stride-0 row of x is no case for it) */
  bool x4 = x4_layout(ndim, shape, 2, strides) && strides[0][ndim - 1] == 1;
  mr_split sp = {.ndim = ndim, .runs = true};
  memcpy(sp.shape, shape, sizeof shape);
  mr_split_add(&sp, a, false, a->offset, strides[0], 0);
  mr_split_add(&sp, *out, true, 0, strides[1], 0);
  st = mr_split_plan(ctx, &sp, name);
  while (st == MR_OK && mr_split_next(&sp)) {
    bool w4 = x4 && x4_window(&sp, 2, strides);
    uint32_t spec[5] = {a->dtype, (*out)->dtype, op, MR_ELEMWISE_WG, w4};
    mr_pipeline *p;
    if ((st = mr_gpu_pipeline(ctx, "unary", 2, sizeof(unary_push), spec, 5, &p)) != MR_OK) break;
    unary_push pc = {.ndim = (uint32_t)ndim, .n = (uint32_t)sp.points, .off = (uint32_t)sp.rel[0], .scale = scale,
                     .bias = bias, .y_off = (uint32_t)sp.rel[1]};
    mr_op_dims_u32(pc.shape, sp.size, ndim, 1);
    mr_op_dims_u32(pc.strides, strides[0], ndim, 0);
    st = mr_op_dispatch_1d(ctx, p, sp.bind, 2, &pc, (uint64_t)sp.points / (w4 ? 4 : 1), name);
  }
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_op_scale(const mr_tensor *a, float scale, float bias, mr_tensor **out) {
  *out = NULL;
  return unary_run(UNARY_SCALE, a, scale, bias, "scale", out);
}

mr_status mr_op_unary(mr_unary_op op, const mr_tensor *a, mr_tensor **out) {
  *out = NULL;
  if ((unsigned)op > MR_UNARY_GELU) return mr_error(a->ctx, MR_EINVAL, "unary: unknown op %d", (int)op);
  return unary_run((uint32_t)op, a, 0.0f, 0.0f, "unary", out);
}
