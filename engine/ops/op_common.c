/* Helpers shared by the op families. */
#include "ops/op_common.h"

#include <string.h>

void mr_op_dims_u32(uint32_t *dst, const int64_t *src, int n, uint32_t pad) {
  for (int i = 0; i < MR_MAX_DIMS; i++) dst[i] = i < n ? (uint32_t)src[i] : pad;
}

mr_status mr_op_dispatch_1d(mr_ctx *ctx, mr_pipeline *p, const mr_binding *b, int nbind, const void *push,
                            uint64_t n, const char *op) {
  uint32_t gx, gy;
  mr_gpu_grid(ctx, (n + MR_ELEMWISE_WG - 1) / MR_ELEMWISE_WG, &gx, &gy);
  return mr_gpu_dispatch(ctx, p, b, nbind, push, gx, gy, 1, op);
}

mr_status mr_op_broadcast_shape(mr_ctx *ctx, int n, const mr_tensor *const *ts, int *ndim, int64_t *out_shape) {
  int nd = 0;
  for (int k = 0; k < n; k++) nd = ts[k]->ndim > nd ? ts[k]->ndim : nd;
  for (int i = 0; i < nd; i++) {
    int owner = 0; /* the first input whose size along dim i is not 1 */
    out_shape[i] = 1;
    for (int k = 0; k < n; k++) {
      int ik = ts[k]->ndim - nd + i;
      int64_t d = ik >= 0 ? ts[k]->shape[ik] : 1;
      if (d == 1 || d == out_shape[i]) continue;
      if (out_shape[i] != 1) {
        char sa[64], sb[64];
        return mr_error(ctx, MR_EINVAL, "shapes %s and %s do not broadcast (dim %d: %lld vs %lld)",
                        mr_shape_str(ts[owner]->ndim, ts[owner]->shape, sa, sizeof sa),
                        mr_shape_str(ts[k]->ndim, ts[k]->shape, sb, sizeof sb), i, (long long)out_shape[i],
                        (long long)d);
      }
      out_shape[i] = d;
      owner = k;
    }
  }
  *ndim = nd;
  return MR_OK;
}

void mr_op_broadcast_strides(const mr_tensor *t, int out_ndim, const int64_t *out_shape, int64_t *strides) {
  for (int i = 0; i < out_ndim; i++) {
    int it = t->ndim - out_ndim + i;
    strides[i] = (it >= 0 && t->shape[it] == out_shape[i] && out_shape[i] != 1) ? t->strides[it] : 0;
  }
}

mr_status mr_op_same_ctx(const mr_tensor *a, const mr_tensor *b, const char *op) {
  if (a->ctx != b->ctx) return mr_error(a->ctx, MR_EINVAL, "%s: tensors belong to different contexts", op);
  return MR_OK;
}

/* ---------------------------------------------------------------- work split over binding windows */

VkDeviceSize mr_op_max_binding(const mr_ctx *ctx) { return mr_gpu_caps_get(ctx)->max_binding; }

bool mr_op_view_fits(const mr_tensor *t) {
  int64_t lo, hi, base;
  mr_binding b;
  mr_tensor_span(t, &lo, &hi);
  return mr_tensor_window(t, lo, hi, false, &b, &base);
}

int mr_split_add(mr_split *s, const mr_tensor *t, bool write, int64_t off, const int64_t *strides, int64_t extent) {
  MR_ASSERT(s->nops < MR_SPLIT_MAX_OPS);
  mr_split_op *o = &s->ops[s->nops];
  *o = (mr_split_op){.t = t, .write = write, .off = off, .extent = extent};
  for (int d = 0; d < s->ndim; d++) o->strides[d] = strides ? strides[d] : 0;
  return s->nops++;
}

/* Elements operand o spans over a chunk of sizes tile. */
static int64_t span_of(const mr_split *s, const mr_split_op *o, const int64_t *tile) {
  int64_t n = o->extent + 1;
  for (int d = 0; d < s->ndim; d++) n += (tile[d] - 1) * o->strides[d];
  return n;
}

mr_binding mr_op_window(const mr_tensor *t, int64_t n, bool write, uint32_t *off) {
  mr_binding b;
  int64_t base;
  mr_tensor_window(t, t->offset, t->offset + n, write, &b, &base);
  *off = (uint32_t)(t->offset - base);
  return b;
}

int64_t mr_op_window_budget(const mr_tensor *t) {
  const mr_gpu_caps *caps = mr_gpu_caps_get(t->ctx);
  if (t->storage->alloc.size <= caps->max_binding) return INT64_MAX;
  VkDeviceSize gran = caps->align > 16 ? caps->align : 16;
  return caps->max_binding > gran ? (int64_t)((caps->max_binding - gran) / mr_dtype_size(t->dtype)) : 0;
}

/* The first operand over its budget with chunks of sizes tile, or -1. */
static int over_budget(const mr_split *s, const int64_t *budget, const int64_t *tile) {
  for (int i = 0; i < s->nops; i++)
    if (span_of(s, &s->ops[i], tile) > budget[i]) return i;
  return -1;
}

mr_status mr_split_plan(mr_ctx *ctx, mr_split *s, const char *op) {
  int64_t budget[MR_SPLIT_MAX_OPS];
  for (int i = 0; i < s->nops; i++) budget[i] = mr_op_window_budget(s->ops[i].t);
  bool empty = false;
  for (int d = 0; d < s->ndim; d++) {
    s->tile[d] = s->max_tile[d] > 0 && s->max_tile[d] < s->shape[d] ? s->max_tile[d] : s->shape[d];
    empty |= s->shape[d] == 0;
    if (s->tile[d] < 1) s->tile[d] = 1;
  }
  s->started = false;
  int bad = empty ? -1 : over_budget(s, budget, s->tile);
  if (bad >= 0 && s->runs) {
    /* the first dim k whose single index (with every later dim whole) fits, then as many indices of it as fit */
    for (int k = 0; k < s->ndim && bad >= 0; k++) {
      for (int d = 0; d < s->ndim; d++) s->tile[d] = d <= k ? 1 : s->shape[d];
      if ((bad = over_budget(s, budget, s->tile)) >= 0) continue;
      int64_t t = s->shape[k];
      for (int i = 0; i < s->nops; i++) {
        int64_t st = s->ops[i].strides[k], room = budget[i] - span_of(s, &s->ops[i], s->tile);
        if (st > 0 && room / st + 1 < t) t = room / st + 1;
      }
      s->tile[k] = t;
    }
  } else {
    /* shrink the dim that contributes most to an operand over its budget, until all fit */
    while (bad >= 0) {
      const mr_split_op *o = &s->ops[bad];
      int dmax = -1;
      for (int d = 0; d < s->ndim; d++)
        if (s->tile[d] > 1 && o->strides[d] > 0 &&
            (dmax < 0 || (s->tile[d] - 1) * o->strides[d] > (s->tile[dmax] - 1) * o->strides[dmax]))
          dmax = d;
      if (dmax < 0) break;
      int64_t st = o->strides[dmax], rest = span_of(s, o, s->tile) - (s->tile[dmax] - 1) * st;
      s->tile[dmax] = rest > budget[bad] ? 1 : (budget[bad] - rest) / st + 1;
      bad = over_budget(s, budget, s->tile);
    }
  }
  if (bad >= 0) {
    const mr_split_op *o = &s->ops[bad];
    int64_t one[MR_MAX_DIMS];
    for (int d = 0; d < s->ndim; d++) one[d] = 1;
    return mr_error(ctx, MR_EUNSUPPORTED,
                    "%s: one %s spans %lld bytes of an operand, over this device's binding limit of %llu bytes", op,
                    s->unit ? s->unit : "element",
                    (long long)(span_of(s, o, one) * (int64_t)mr_dtype_size(o->t->dtype)),
                    (unsigned long long)mr_op_max_binding(ctx));
  }
  return MR_OK;
}

bool mr_split_single(const mr_split *s) {
  for (int d = 0; d < s->ndim; d++)
    if (s->tile[d] < s->shape[d]) return false;
  return true;
}

bool mr_split_next(mr_split *s) {
  if (!s->started) {
    s->started = true;
    for (int d = 0; d < s->ndim; d++) {
      if (s->shape[d] == 0) return false;
      s->start[d] = 0;
    }
  } else {
    int d = s->ndim - 1;
    for (; d >= 0; d--) {
      s->start[d] += s->tile[d];
      if (s->start[d] < s->shape[d]) break;
      s->start[d] = 0;
    }
    if (d < 0) return false;
  }
  s->points = 1;
  for (int d = 0; d < s->ndim; d++) {
    s->size[d] = s->shape[d] - s->start[d] < s->tile[d] ? s->shape[d] - s->start[d] : s->tile[d];
    s->points *= s->size[d];
  }
  for (int i = 0; i < s->nops; i++) {
    const mr_split_op *o = &s->ops[i];
    int64_t lo = o->off, base;
    for (int d = 0; d < s->ndim; d++) lo += s->start[d] * o->strides[d];
    /* within the limit by the plan; were it not, the dispatch refuses the binding */
    mr_tensor_window(o->t, lo, lo + span_of(s, o, s->size), o->write, &s->bind[i], &base);
    s->rel[i] = lo - base;
  }
  return true;
}

VkDeviceSize mr_op_texel_bytes(mr_dtype dt, bool four) { return mr_dtype_size(dt) * (four ? 4 : 1); }

void mr_op_bind_texels(mr_binding *b, mr_dtype dt, bool four) {
  if (dt == MR_F32) b->texel = four ? VK_FORMAT_R32G32B32A32_UINT : VK_FORMAT_R32_UINT;
  else b->texel = four ? VK_FORMAT_R16G16B16A16_UINT : VK_FORMAT_R16_UINT;
  b->range -= b->range % mr_op_texel_bytes(dt, four);
}
