/* Tensors: shape, strides and shared device storage; views; host copies. */
#include "tensor/tensor_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mr_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < ndim && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, i ? "x%lld" : "%lld", (long long)shape[i]);
  if (ndim == 0) snprintf(buf, cap, "scalar");
  return buf;
}

int mr_dim_normalize(int dim, int ndim) {
  if (dim < 0) dim += ndim;
  return dim >= 0 && dim < ndim ? dim : -1;
}

static mr_status check_shape(mr_ctx *ctx, int ndim, const int64_t *shape, int64_t *numel) {
  if (ndim < 1 || ndim > MR_MAX_DIMS) return mr_error(ctx, MR_EINVAL, "a tensor has 1 to %d dims, not %d", MR_MAX_DIMS, ndim);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return mr_error(ctx, MR_EINVAL, "dim %d has negative size %lld", i, (long long)shape[i]);
    if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i]) return mr_error(ctx, MR_EINVAL, "shape is too large");
    n *= shape[i];
  }
  *numel = n;
  return MR_OK;
}

static void set_contiguous_strides(mr_tensor *t) {
  int64_t s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    t->strides[i] = s;
    s *= t->shape[i];
  }
}

mr_status mr_tensor_empty(mr_ctx *ctx, mr_dtype dtype, int ndim, const int64_t *shape, mr_tensor **out) {
  *out = NULL;
  if (!mr_dtype_is_storage(dtype))
    return mr_error(ctx, MR_EINVAL, "device tensors store f32, f16 or bf16, not %s", mr_dtype_name(dtype));
  int64_t numel = 0;
  mr_status st = check_shape(ctx, ndim, shape, &numel);
  if (st != MR_OK) return st;
  mr_tensor *t = calloc(1, sizeof *t);
  mr_storage *s = calloc(1, sizeof *s);
  if (!t || !s) {
    free(t);
    free(s);
    return mr_error(ctx, MR_ENOMEM, "out of host memory");
  }
  st = mr_gpu_alloc(ctx, (VkDeviceSize)numel * mr_dtype_size(dtype), &s->alloc);
  if (st != MR_OK) {
    free(t);
    free(s);
    return st;
  }
  s->refs = 1;
  t->ctx = ctx;
  t->storage = s;
  t->dtype = dtype;
  t->ndim = ndim;
  memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
  set_contiguous_strides(t);
  *out = t;
  return MR_OK;
}

mr_status mr_tensor_new(mr_ctx *ctx, mr_dtype dtype, int ndim, const int64_t *shape, mr_tensor **out) {
  mr_status st = mr_tensor_empty(ctx, dtype, ndim, shape, out);
  if (st == MR_OK && (st = mr_tensor_fill(*out, 0.0f)) != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_tensor_from_host(mr_ctx *ctx, mr_dtype dtype, int ndim, const int64_t *shape, mr_dtype src_type,
                              const void *data, mr_tensor **out) {
  mr_status st = mr_tensor_empty(ctx, dtype, ndim, shape, out);
  if (st != MR_OK) return st;
  st = mr_tensor_write(*out, src_type, data, (size_t)mr_tensor_numel(*out));
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

void mr_tensor_free(mr_tensor *t) {
  if (!t) return;
  if (--t->storage->refs == 0) {
    mr_gpu_free(t->ctx, &t->storage->alloc);
    free(t->storage);
  }
  free(t);
}

mr_ctx *mr_tensor_ctx(const mr_tensor *t) { return t->ctx; }
mr_dtype mr_tensor_dtype(const mr_tensor *t) { return t->dtype; }
int mr_tensor_ndim(const mr_tensor *t) { return t->ndim; }
const int64_t *mr_tensor_shape(const mr_tensor *t) { return t->shape; }
const int64_t *mr_tensor_strides(const mr_tensor *t) { return t->strides; }
size_t mr_tensor_device_bytes(const mr_tensor *t) { return (size_t)t->storage->alloc.size; }

int64_t mr_tensor_numel(const mr_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

bool mr_tensor_is_contiguous(const mr_tensor *t) {
  int64_t s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->strides[i] != s) return false;
    s *= t->shape[i];
  }
  return true;
}

mr_status mr_tensor_vk_buffer(const mr_tensor *t, mr_vk_buffer *out) {
  memset(out, 0, sizeof *out);
  /* A strided view has no single range a host could read as rows. */
  if (!mr_tensor_is_contiguous(t))
    return mr_error(t->ctx, MR_EINVAL, "mr_tensor_vk_buffer: the tensor is not contiguous (take mr_tensor_contiguous)");
  const mr_alloc *a = &t->storage->alloc;
  size_t es = mr_dtype_size(t->dtype);
  /* VkBuffer is a pointer on 64-bit platforms and a uint64_t on 32-bit ones */
  memcpy(&out->buffer, &a->buffer, sizeof a->buffer);
  out->offset = (uint64_t)a->offset + (uint64_t)t->offset * es;
  out->size = (uint64_t)mr_tensor_numel(t) * es;
  return MR_OK;
}

bool mr_tensor_window(const mr_tensor *t, int64_t lo, int64_t hi, bool write, mr_binding *b, int64_t *base) {
  const mr_alloc *a = &t->storage->alloc;
  const mr_gpu_caps *caps = mr_gpu_caps_get(t->ctx);
  VkDeviceSize es = mr_dtype_size(t->dtype), limit = caps->max_binding;
  *b = (mr_binding){.buffer = a->buffer, .offset = a->offset, .range = a->size, .write = write};
  *base = 0;
  if (a->size <= limit) return true;
  /* clamped into the storage; an empty range (nothing read) binds one element */
  int64_t n = (int64_t)(a->size / es);
  lo = lo < 0 ? 0 : lo >= n ? n - 1 : lo;
  hi = hi > n ? n : hi <= lo ? lo + 1 : hi;
  VkDeviceSize gran = caps->align > 16 ? caps->align : 16; /* both powers of two: the larger is a multiple */
  VkDeviceSize start = (VkDeviceSize)lo * es / gran * gran, end = (VkDeviceSize)hi * es;
  b->offset = a->offset + start;
  b->range = end - start;
  *base = (int64_t)(start / es);
  return b->range <= limit;
}

void mr_tensor_span(const mr_tensor *t, int64_t *lo, int64_t *hi) {
  int64_t last = t->offset;
  for (int i = 0; i < t->ndim; i++) {
    if (t->shape[i] == 0) {
      *lo = *hi = t->offset;
      return;
    }
    last += (t->shape[i] - 1) * t->strides[i];
  }
  *lo = t->offset;
  *hi = last + 1;
}

mr_status mr_tensor_check_index_range(const mr_tensor *t, const char *op) {
  uint64_t elems = t->storage->alloc.size / mr_dtype_size(t->dtype);
  if (elems > UINT32_MAX)
    return mr_error(t->ctx, MR_EUNSUPPORTED,
                    "%s: a tensor storage of %llu elements is over the limit of 2^32 - 1 elements (the shaders "
                    "index with 32 bits)",
                    op, (unsigned long long)elems);
  return MR_OK;
}

/* ----------------------------------------------------------- host transfers */

mr_status mr_tensor_write(mr_tensor *t, mr_dtype src_type, const void *data, size_t count) {
  mr_ctx *ctx = t->ctx;
  if ((int64_t)count != mr_tensor_numel(t))
    return mr_error(ctx, MR_EINVAL, "write of %zu elements into a tensor of %lld", count, (long long)mr_tensor_numel(t));
  if ((unsigned)src_type >= MR_DTYPE_COUNT) return mr_error(ctx, MR_EINVAL, "unknown source dtype %d", (int)src_type);
  size_t es = mr_dtype_size(t->dtype), bytes = count * es;
  if (mr_tensor_is_contiguous(t)) {
    VkDeviceSize off = (VkDeviceSize)t->offset * es;
    if (src_type == t->dtype) return mr_gpu_upload(ctx, &t->storage->alloc, off, data, bytes);
    /* Convert in slices so host memory stays bounded for large weights. */
    enum { SLICE = 1 << 20 };
    void *buf = malloc((count < SLICE ? count : SLICE) * es);
    if (!buf) return mr_error(ctx, MR_ENOMEM, "out of host memory");
    mr_status st = MR_OK;
    for (size_t done = 0; done < count && st == MR_OK;) {
      size_t n = count - done < SLICE ? count - done : SLICE;
      mr_convert(t->dtype, buf, src_type, (const char *)data + done * mr_dtype_size(src_type), n);
      st = mr_gpu_upload(ctx, &t->storage->alloc, off + done * es, buf, n * es);
      done += n;
    }
    free(buf);
    return st;
  }
  /* A strided view: fill a contiguous temporary, then copy it in on the device. */
  mr_tensor *tmp;
  mr_status st = mr_tensor_from_host(ctx, t->dtype, t->ndim, t->shape, src_type, data, &tmp);
  if (st != MR_OK) return st;
  st = mr_tensor_copy(t, tmp);
  mr_tensor_free(tmp);
  return st;
}

mr_status mr_tensor_read(mr_tensor *t, mr_dtype dst_type, void *dst, size_t count) {
  mr_ctx *ctx = t->ctx;
  if ((int64_t)count != mr_tensor_numel(t))
    return mr_error(ctx, MR_EINVAL, "read of %zu elements from a tensor of %lld", count, (long long)mr_tensor_numel(t));
  if (dst_type != MR_F32 && dst_type != MR_F16 && dst_type != MR_BF16 && dst_type != MR_F64)
    return mr_error(ctx, MR_EINVAL, "tensors read as f32, f16, bf16 or f64, not %s", mr_dtype_name(dst_type));
  if (!mr_tensor_is_contiguous(t)) {
    mr_tensor *c;
    mr_status st = mr_tensor_contiguous(t, &c);
    if (st != MR_OK) return st;
    st = mr_tensor_read(c, dst_type, dst, count);
    mr_tensor_free(c);
    return st;
  }
  size_t es = mr_dtype_size(t->dtype);
  VkDeviceSize off = (VkDeviceSize)t->offset * es;
  if (dst_type == t->dtype) return mr_gpu_download(ctx, &t->storage->alloc, off, dst, count * es);
  enum { SLICE = 1 << 20 };
  void *buf = malloc((count < SLICE ? count : SLICE) * es);
  if (!buf) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  mr_status st = MR_OK;
  for (size_t done = 0; done < count && st == MR_OK;) {
    size_t n = count - done < SLICE ? count - done : SLICE;
    st = mr_gpu_download(ctx, &t->storage->alloc, off + done * es, buf, n * es);
    if (st == MR_OK) mr_convert(dst_type, (char *)dst + done * mr_dtype_size(dst_type), t->dtype, buf, n);
    done += n;
  }
  free(buf);
  return st;
}

/* ----------------------------------------------------------- views */

static mr_status view_of(mr_tensor *t, mr_tensor **out) {
  *out = malloc(sizeof **out);
  if (!*out) return mr_error(t->ctx, MR_ENOMEM, "out of host memory");
  **out = *t;
  t->storage->refs++;
  return MR_OK;
}

mr_status mr_tensor_reshape(mr_tensor *t, int ndim, const int64_t *shape, mr_tensor **out) {
  mr_ctx *ctx = t->ctx;
  *out = NULL;
  if (ndim < 1 || ndim > MR_MAX_DIMS) return mr_error(ctx, MR_EINVAL, "reshape to %d dims (1 to %d allowed)", ndim, MR_MAX_DIMS);
  int64_t s[MR_MAX_DIMS], known = 1, numel = mr_tensor_numel(t);
  int infer = -1;
  for (int i = 0; i < ndim; i++) {
    s[i] = shape[i];
    if (s[i] == -1 && infer < 0) infer = i;
    else if (s[i] < 0) return mr_error(ctx, MR_EINVAL, "reshape: bad size %lld at dim %d", (long long)s[i], i);
    else known *= s[i];
  }
  if (infer >= 0) {
    if (known == 0 || numel % known) return mr_error(ctx, MR_EINVAL, "reshape: cannot infer dim %d from %lld elements", infer, (long long)numel);
    s[infer] = numel / known;
    known = numel;
  }
  char a[64], b[64];
  if (known != numel)
    return mr_error(ctx, MR_EINVAL, "reshape: shape %s has %lld elements, tensor %s has %lld",
                    mr_shape_str(ndim, s, a, sizeof a), (long long)known, mr_shape_str(t->ndim, t->shape, b, sizeof b),
                    (long long)numel);
  if (!mr_tensor_is_contiguous(t))
    return mr_error(ctx, MR_EINVAL, "reshape: the tensor is a non-contiguous view; call contiguous() first");
  mr_status st = view_of(t, out);
  if (st != MR_OK) return st;
  (*out)->ndim = ndim;
  memcpy((*out)->shape, s, (size_t)ndim * sizeof *s);
  set_contiguous_strides(*out);
  return MR_OK;
}

mr_status mr_tensor_slice(mr_tensor *t, int dim, int64_t start, int64_t stop, int64_t step, mr_tensor **out) {
  mr_ctx *ctx = t->ctx;
  *out = NULL;
  int d = mr_dim_normalize(dim, t->ndim);
  if (d < 0) return mr_error(ctx, MR_EINVAL, "slice: dim %d out of range for %d dims", dim, t->ndim);
  if (step < 1) return mr_error(ctx, MR_EINVAL, "slice: step must be >= 1, got %lld", (long long)step);
  int64_t n = t->shape[d];
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  if (start < 0 || start > n || stop < start || stop > n)
    return mr_error(ctx, MR_EINVAL, "slice: range [%lld, %lld) out of bounds for dim %d of size %lld", (long long)start,
                    (long long)stop, d, (long long)n);
  mr_status st = view_of(t, out);
  if (st != MR_OK) return st;
  (*out)->offset += start * t->strides[d];
  (*out)->shape[d] = (stop - start + step - 1) / step;
  (*out)->strides[d] *= step;
  return MR_OK;
}

mr_status mr_tensor_permute(mr_tensor *t, const int *perm, mr_tensor **out) {
  mr_ctx *ctx = t->ctx;
  *out = NULL;
  bool seen[MR_MAX_DIMS] = {false};
  for (int i = 0; i < t->ndim; i++) {
    int p = perm[i];
    if (p < 0 || p >= t->ndim || seen[p]) return mr_error(ctx, MR_EINVAL, "permute: not a permutation of %d dims", t->ndim);
    seen[p] = true;
  }
  mr_status st = view_of(t, out);
  if (st != MR_OK) return st;
  for (int i = 0; i < t->ndim; i++) {
    (*out)->shape[i] = t->shape[perm[i]];
    (*out)->strides[i] = t->strides[perm[i]];
  }
  return MR_OK;
}

mr_status mr_tensor_contiguous(mr_tensor *t, mr_tensor **out) {
  if (mr_tensor_is_contiguous(t)) return view_of(t, out);
  return mr_tensor_cast(t, t->dtype, out);
}

mr_status mr_tensor_cast(mr_tensor *t, mr_dtype dtype, mr_tensor **out) {
  mr_status st = mr_tensor_empty(t->ctx, dtype, t->ndim, t->shape, out);
  if (st == MR_OK && (st = mr_tensor_copy(*out, t)) != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}
