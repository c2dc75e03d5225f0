/* Row gather: out[i, :] = table[ids[i], :], the embedding lookup of the text
   encoder and the bucket-to-bias lookup of T5's relative positions. The ids
   come from the host; they are checked there, then uploaded as 32-bit words
   into a buffer the dispatch reads and that is released after it. */
#include "ops/op_common.h"

typedef struct gather_push {
  uint32_t n, D, t_off, t_rs, t_cs;
} gather_push;

mr_status mr_op_gather_rows(const mr_tensor *table, const int32_t *ids, int n, mr_tensor **out) {
  mr_ctx *ctx = table->ctx;
  *out = NULL;
  char s[64];
  if (table->ndim != 2)
    return mr_error(ctx, MR_EINVAL, "gather_rows: table must be [V, D], got %s",
                    mr_shape_str(table->ndim, table->shape, s, sizeof s));
  if (n < 0) return mr_error(ctx, MR_EINVAL, "gather_rows: negative row count %d", n);
  if (n > 0 && !ids) return mr_error(ctx, MR_EINVAL, "gather_rows: ids is NULL");
  int64_t V = table->shape[0], D = table->shape[1];
  for (int i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= V)
      return mr_error(ctx, MR_EINVAL, "gather_rows: id %d at index %d is outside the table's %lld rows", (int)ids[i], i,
                      (long long)V);
  mr_status st = mr_tensor_check_index_range(table, "gather_rows");
  if (st != MR_OK) return st;
  int64_t shape[2] = {n, D};
  if ((st = mr_tensor_empty(ctx, table->dtype, 2, shape, out)) != MR_OK) return st;
  uint64_t total = (uint64_t)n * (uint64_t)D;
  if (total == 0) return MR_OK;
  if ((st = mr_tensor_check_index_range(*out, "gather_rows")) != MR_OK) goto fail;
  uint32_t spec[3] = {table->dtype, (*out)->dtype, MR_ELEMWISE_WG};
  mr_pipeline *p;
  if ((st = mr_gpu_pipeline(ctx, "gather_rows", 3, sizeof(gather_push), spec, 3, &p)) != MR_OK) goto fail;
  mr_alloc idbuf;
  if ((st = mr_gpu_alloc(ctx, (VkDeviceSize)n * sizeof(uint32_t), &idbuf)) != MR_OK) goto fail;
  st = mr_gpu_upload(ctx, &idbuf, 0, ids, (VkDeviceSize)n * sizeof(uint32_t));
  if (st == MR_OK) {
    gather_push pc = {.n = (uint32_t)total, .D = (uint32_t)D, .t_off = (uint32_t)table->offset,
                      .t_rs = (uint32_t)table->strides[0], .t_cs = (uint32_t)table->strides[1]};
    mr_binding b[3] = {mr_tensor_binding(table, false),
                       {.buffer = idbuf.buffer, .offset = idbuf.offset, .range = idbuf.size, .write = false},
                       mr_tensor_binding(*out, true)};
    st = mr_op_dispatch_1d(ctx, p, b, 3, &pc, total, "gather_rows");
  }
  mr_gpu_free(ctx, &idbuf); /* deferred past the dispatch that reads it */
  if (st == MR_OK) return MR_OK;
fail:
  mr_tensor_free(*out);
  *out = NULL;
  return st;
}
