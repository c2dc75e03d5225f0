/* Strided copy with dtype conversion, and fill: the kernels behind
   contiguous(), cast(), tensor writes into views, concat and pad. A copy of
   long contiguous runs is a buffer transfer instead of the shader. */
#include "ops/op_common.h"

#include <stdlib.h>
#include <string.h>

typedef struct copy_push {
  uint32_t ndim, n, src_off, dst_off;
  uint32_t shape[MR_MAX_DIMS], src_strides[MR_MAX_DIMS], dst_strides[MR_MAX_DIMS];
} copy_push;

/* Same-dtype copies whose elements lie in contiguous runs of at least this
   many bytes on both sides, in at most COPY_MAX_REGIONS runs, are a buffer
   transfer: lavapipe runs one as a memcpy per run, where the shader pays an
   index decomposition and a scalar load per element (measured in
   docs/performance.md: the VAE's time concatenations). */
#define COPY_MIN_RUN_BYTES 256
#define COPY_MAX_REGIONS 4096

/* The copy as runs: *run elements long (dims k+1.. merged), one per index of
   dims 0..k. False when it is no transfer (see above). */
static bool copy_runs(const mr_tensor *dst, const mr_tensor *src, int *k, int64_t *run, int64_t *regions) {
  if (dst->dtype != src->dtype) return false;
  int d = dst->ndim - 1;
  int64_t n = 1;
  for (; d >= 0; d--) {
    if (dst->shape[d] == 1) continue; /* any stride */
    if (dst->strides[d] != n || src->strides[d] != n) break;
    n *= dst->shape[d];
  }
  int64_t r = 1;
  for (int i = 0; i <= d; i++) r *= dst->shape[i];
  *k = d;
  *run = n;
  *regions = r;
  return n * (int64_t)mr_dtype_size(dst->dtype) >= COPY_MIN_RUN_BYTES && r <= COPY_MAX_REGIONS;
}

/* The bytes of t's storage its view spans, for the hazard tracker. */
static mr_binding span_binding(const mr_tensor *t, bool write) {
  int64_t lo, hi;
  VkDeviceSize es = mr_dtype_size(t->dtype);
  mr_tensor_span(t, &lo, &hi);
  return (mr_binding){.buffer = t->storage->alloc.buffer, .offset = t->storage->alloc.offset + (VkDeviceSize)lo * es,
                      .range = (VkDeviceSize)(hi - lo) * es, .write = write};
}

static mr_status copy_transfer(mr_tensor *dst, const mr_tensor *src, int k, int64_t run, int64_t regions) {
  mr_ctx *ctx = dst->ctx;
  VkDeviceSize es = mr_dtype_size(dst->dtype);
  VkBufferCopy *rg = malloc((size_t)regions * sizeof *rg);
  if (!rg) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  int64_t idx[MR_MAX_DIMS] = {0};
  for (int64_t r = 0; r < regions; r++) {
    int64_t so = src->offset, dof = dst->offset;
    for (int i = 0; i <= k; i++) {
      so += idx[i] * src->strides[i];
      dof += idx[i] * dst->strides[i];
    }
    rg[r] = (VkBufferCopy){.srcOffset = src->storage->alloc.offset + (VkDeviceSize)so * es,
                           .dstOffset = dst->storage->alloc.offset + (VkDeviceSize)dof * es,
                           .size = (VkDeviceSize)run * es};
    for (int i = k; i >= 0 && ++idx[i] == dst->shape[i]; i--) idx[i] = 0;
  }
  mr_binding b[2] = {span_binding(src, false), span_binding(dst, true)};
  mr_status st = mr_gpu_copy_regions(ctx, &b[0], &b[1], rg, (uint32_t)regions, "transfer");
  free(rg);
  return st;
}

mr_status mr_tensor_copy(mr_tensor *dst, const mr_tensor *src) {
  mr_ctx *ctx = dst->ctx;
  mr_status st = mr_op_same_ctx(dst, src, "copy");
  if (st != MR_OK) return st;
  if (dst->ndim != src->ndim || memcmp(dst->shape, src->shape, (size_t)dst->ndim * sizeof *dst->shape) != 0) {
    char a[64], b[64];
    return mr_error(ctx, MR_EINVAL, "copy: shapes %s and %s differ", mr_shape_str(dst->ndim, dst->shape, a, sizeof a),
                    mr_shape_str(src->ndim, src->shape, b, sizeof b));
  }
  if ((st = mr_tensor_check_index_range(dst, "copy")) != MR_OK || (st = mr_tensor_check_index_range(src, "copy")) != MR_OK)
    return st;
  uint64_t n = (uint64_t)mr_tensor_numel(dst);
  if (n == 0) return MR_OK;
  int k;
  int64_t run, regions;
  if (copy_runs(dst, src, &k, &run, &regions)) return copy_transfer(dst, src, k, run, regions);
  uint32_t spec[3] = {src->dtype, dst->dtype, MR_ELEMWISE_WG};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "copy", 2, sizeof(copy_push), spec, 3, &p)) != MR_OK) return st;
  /* any box of the shape: both sides are addressed through their strides */
  mr_split sp = {.ndim = dst->ndim};
  memcpy(sp.shape, dst->shape, sizeof sp.shape);
  mr_split_add(&sp, src, false, src->offset, src->strides, 0);
  mr_split_add(&sp, dst, true, dst->offset, dst->strides, 0);
  if ((st = mr_split_plan(ctx, &sp, "copy")) != MR_OK) return st;
  while (mr_split_next(&sp)) {
    copy_push pc = {.ndim = (uint32_t)dst->ndim, .n = (uint32_t)sp.points, .src_off = (uint32_t)sp.rel[0],
                    .dst_off = (uint32_t)sp.rel[1]};
    mr_op_dims_u32(pc.shape, sp.size, dst->ndim, 1);
    mr_op_dims_u32(pc.src_strides, src->strides, src->ndim, 0);
    mr_op_dims_u32(pc.dst_strides, dst->strides, dst->ndim, 0);
    if ((st = mr_op_dispatch_1d(ctx, p, sp.bind, 2, &pc, (uint64_t)sp.points, "copy")) != MR_OK) return st;
  }
  return MR_OK;
}

typedef struct fill_push {
  uint32_t ndim, n, off;
  float value;
  uint32_t shape[MR_MAX_DIMS], strides[MR_MAX_DIMS];
} fill_push;

mr_status mr_tensor_fill(mr_tensor *t, float value) {
  mr_ctx *ctx = t->ctx;
  mr_status st = mr_tensor_check_index_range(t, "fill");
  if (st != MR_OK) return st;
  uint64_t n = (uint64_t)mr_tensor_numel(t);
  if (n == 0) return MR_OK;
  uint32_t spec[2] = {t->dtype, MR_ELEMWISE_WG};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "fill", 1, sizeof(fill_push), spec, 2, &p)) != MR_OK) return st;
  mr_split sp = {.ndim = t->ndim};
  memcpy(sp.shape, t->shape, sizeof sp.shape);
  mr_split_add(&sp, t, true, t->offset, t->strides, 0);
  if ((st = mr_split_plan(ctx, &sp, "fill")) != MR_OK) return st;
  while (mr_split_next(&sp)) {
    fill_push pc = {.ndim = (uint32_t)t->ndim, .n = (uint32_t)sp.points, .off = (uint32_t)sp.rel[0], .value = value};
    mr_op_dims_u32(pc.shape, sp.size, t->ndim, 1);
    mr_op_dims_u32(pc.strides, t->strides, t->ndim, 0);
    if ((st = mr_op_dispatch_1d(ctx, p, sp.bind, 1, &pc, (uint64_t)sp.points, "fill")) != MR_OK) return st;
  }
  return MR_OK;
}
