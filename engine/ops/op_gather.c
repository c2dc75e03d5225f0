/* Row gather: out[i, :] = table[ids[i], :], the embedding lookup of the text
   encoder and the bucket-to-bias lookup of T5's relative positions. The ids
   come from the host; they are checked there, then uploaded as 32-bit words
   into a buffer the dispatch reads and that is released after it. */
#include "ops/op_common.h"

typedef struct gather_push {
  uint32_t n, D, t_off, t_rs, t_cs;
  uint32_t i_off, y_off; /* first id and first output element inside their windows */
} gather_push;

/* The binding of bytes [lo, hi) of a (the ids): all of a when it fits the
   limit, else a window from lo rounded down to the alignment (*start). */
static mr_binding ids_window(const mr_ctx *ctx, const mr_alloc *a, VkDeviceSize lo, VkDeviceSize hi,
                             VkDeviceSize *start) {
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  VkDeviceSize gran = caps->align > 16 ? caps->align : 16;
  *start = a->size <= caps->max_binding ? 0 : lo / gran * gran;
  if (a->size <= caps->max_binding) hi = a->size;
  return (mr_binding){.buffer = a->buffer, .offset = a->offset + *start, .range = hi - *start, .write = false};
}

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
  /* Runs of output rows whose ids lie close enough that the table rows between
     the least and the greatest fit one window (all rows at once when the
     table fits). The table offset inside the window may be negative: the
     shader's index t_off + id * t_rs is exact modulo 2^32, and the element it
     names is inside the window. */
  int64_t tb = mr_op_window_budget(table), ob = mr_op_window_budget(*out), rs = table->strides[0];
  int64_t row_span = (D - 1) * table->strides[1] + 1, max_rows = ob / D;
  VkDeviceSize gran = mr_gpu_caps_get(ctx)->align > 16 ? mr_gpu_caps_get(ctx)->align : 16;
  int64_t max_ids = idbuf.size <= mr_op_max_binding(ctx) ? INT64_MAX : (int64_t)((mr_op_max_binding(ctx) - gran) / 4);
  if (max_rows < max_ids) max_ids = max_rows;
  if (st == MR_OK && (row_span > tb || max_ids < 1))
    st = mr_error(ctx, MR_EUNSUPPORTED, "gather_rows: one row of %lld elements is over this device's binding limit of %llu bytes",
                  (long long)D, (unsigned long long)mr_op_max_binding(ctx));
  for (int r0 = 0; r0 < n && st == MR_OK;) {
    int64_t lo = ids[r0], hi = ids[r0];
    int r1 = r0 + 1;
    for (; r1 < n && r1 - r0 < max_ids; r1++) {
      int64_t l = ids[r1] < lo ? ids[r1] : lo, h = ids[r1] > hi ? ids[r1] : hi;
      if ((h - l) * rs + row_span > tb) break;
      lo = l;
      hi = h;
    }
    int64_t tbase, obase;
    VkDeviceSize istart;
    mr_binding b[3];
    mr_tensor_window(table, table->offset + lo * rs, table->offset + hi * rs + row_span, false, &b[0], &tbase);
    b[1] = ids_window(ctx, &idbuf, (VkDeviceSize)r0 * 4, (VkDeviceSize)r1 * 4, &istart);
    mr_tensor_window(*out, (int64_t)r0 * D, (int64_t)r1 * D, true, &b[2], &obase);
    uint64_t count = (uint64_t)(r1 - r0) * (uint64_t)D;
    gather_push pc = {.n = (uint32_t)count, .D = (uint32_t)D, .t_off = (uint32_t)(table->offset - tbase),
                      .t_rs = (uint32_t)rs, .t_cs = (uint32_t)table->strides[1],
                      .i_off = (uint32_t)(r0 - (int64_t)(istart / 4)), .y_off = (uint32_t)((int64_t)r0 * D - obase)};
    st = mr_op_dispatch_1d(ctx, p, b, 3, &pc, count, "gather_rows");
    r0 = r1;
  }
  mr_gpu_free(ctx, &idbuf); /* its next owner waits for the dispatch that reads it (stream order) */
  if (st == MR_OK) return MR_OK;
fail:
  mr_tensor_free(*out);
  *out = NULL;
  return st;
}
