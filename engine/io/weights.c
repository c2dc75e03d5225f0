/* The mr_weights object: a checkpoint file mapped read-only, and a table of
   its tensors sorted by name. The format parsers (safetensors.c, pth.c) fill
   the table through mr_io_weights_add; everything here is format-neutral. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* madvise(MADV_DONTNEED): glibc makes posix_madvise's DONTNEED a no-op */
#include "io/io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct entry {
  char *name;
  mr_dtype dtype;
  int ndim;
  int64_t shape[MR_WEIGHT_MAX_DIMS];
  const void *data;
  size_t nbytes;
  void *owned; /* host copy for tensors that are not contiguous in the file */
  int file;    /* index of the file (shard) it came from, for messages */
} entry;

typedef struct mapping {
  void *addr; /* the whole file, MAP_PRIVATE read-only */
  size_t size;
} mapping;

struct mr_weights {
  mapping *maps; /* one per file: a sharded checkpoint maps every shard */
  int nmaps;
  entry *entries;
  int count, cap;
  char *metadata;
};

bool mr_io_nbytes(int ndim, const int64_t *shape, size_t elem_size, size_t *out) {
  size_t n = elem_size;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0) return false;
    /* A zero dim makes the product 0 however large the others are, but an
       absurd dim next to it is still malformed, so check each on its own. */
    if ((uint64_t)shape[d] > SIZE_MAX / (elem_size ? elem_size : 1)) return false;
  }
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 0) { *out = 0; return true; }
  }
  for (int d = 0; d < ndim; d++) {
    if (n > SIZE_MAX / (size_t)shape[d]) return false;
    n *= (size_t)shape[d];
  }
  *out = n;
  return true;
}

mr_status mr_io_weights_add(const mr_io_source *src, mr_weights *w, const char *name, size_t name_len,
                            mr_dtype dtype, int ndim, const int64_t *shape, const void *data,
                            size_t nbytes, void *owned) {
  if (ndim < 0 || ndim > MR_WEIGHT_MAX_DIMS) {
    free(owned);
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%.*s' has %d dims (at most %d)", src->path,
                    (int)(name_len > 200 ? 200 : name_len), name, ndim, MR_WEIGHT_MAX_DIMS);
  }
  if (memchr(name, '\0', name_len) != NULL) {
    free(owned);
    return mr_error(src->ctx, MR_EFORMAT, "%s: a tensor name contains a NUL byte", src->path);
  }
  if (w->count == w->cap) {
    int cap = w->cap ? w->cap * 2 : 64;
    entry *e = realloc(w->entries, (size_t)cap * sizeof *e);
    if (e == NULL) {
      free(owned);
      return mr_error(src->ctx, MR_ENOMEM, "%s: out of memory for the tensor table", src->path);
    }
    w->entries = e;
    w->cap = cap;
  }
  char *copy = malloc(name_len + 1);
  if (copy == NULL) {
    free(owned);
    return mr_error(src->ctx, MR_ENOMEM, "%s: out of memory for tensor names", src->path);
  }
  memcpy(copy, name, name_len);
  copy[name_len] = '\0';
  entry *e = &w->entries[w->count++];
  memset(e, 0, sizeof *e);
  e->name = copy;
  e->dtype = dtype;
  e->ndim = ndim;
  for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
  e->data = data;
  e->nbytes = nbytes;
  e->owned = owned;
  return MR_OK;
}

void mr_io_weights_set_metadata(mr_weights *w, char *json) {
  free(w->metadata);
  w->metadata = json;
}

static int entry_cmp(const void *a, const void *b) {
  return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* Sorting makes find a binary search; equal neighbours are duplicates,
   which no format allows (and which would make find ambiguous). A name in
   two shards is the same error, named with both files. */
static mr_status weights_finish(mr_ctx *ctx, mr_weights *w, const char *const *paths) {
  if (w->count > 1) qsort(w->entries, (size_t)w->count, sizeof *w->entries, entry_cmp);
  for (int i = 1; i < w->count; i++) {
    const entry *a = &w->entries[i - 1], *b = &w->entries[i];
    if (strcmp(a->name, b->name) != 0) continue;
    if (a->file == b->file)
      return mr_error(ctx, MR_EFORMAT, "%s: duplicate tensor name '%s'", paths[a->file], a->name);
    return mr_error(ctx, MR_EFORMAT, "tensor '%s' is in both '%s' and '%s'", a->name, paths[a->file],
                    paths[b->file]);
  }
  return MR_OK;
}

void mr_weights_free(mr_weights *w) {
  if (w == NULL) return;
  for (int i = 0; i < w->count; i++) {
    free(w->entries[i].name);
    free(w->entries[i].owned);
  }
  free(w->entries);
  free(w->metadata);
  for (int i = 0; i < w->nmaps; i++) munmap(w->maps[i].addr, w->maps[i].size);
  free(w->maps);
  free(w);
}

/* Maps path read-only into *m. */
static mr_status map_file(mr_ctx *ctx, const char *path, mapping *m) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return mr_error(ctx, e == ENOENT ? MR_ENOTFOUND : MR_EIO, "cannot open '%s': %s", path, strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return mr_error(ctx, MR_EIO, "cannot stat '%s': %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return mr_error(ctx, MR_EIO, "'%s' is not a regular file", path);
  }
  /* Both formats need at least 8 bytes (safetensors' length word; a zip's
     end record is 22), and mmap refuses an empty file. */
  if (st.st_size < 8) {
    close(fd);
    return mr_error(ctx, MR_EFORMAT, "%s: file is too short (%lld bytes) to be a checkpoint", path,
                    (long long)st.st_size);
  }
  if ((uint64_t)st.st_size > SIZE_MAX) {
    close(fd);
    return mr_error(ctx, MR_EFORMAT, "%s: file is too large to map", path);
  }
  size_t size = (size_t)st.st_size;
  /* Read-only private mapping: pages come from the page cache on demand, so
     opening an 11 GB checkpoint costs address space, not memory. */
  void *addr = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (addr == MAP_FAILED) return mr_error(ctx, MR_EIO, "cannot map '%s': %s", path, strerror(map_errno));
  m->addr = addr;
  m->size = size;
  return MR_OK;
}

mr_status mr_weights_open_files(mr_ctx *ctx, int n, const char *const *paths, mr_weights **out) {
  if (out == NULL) return mr_error(ctx, MR_EINVAL, "mr_weights_open: out is NULL");
  *out = NULL;
  if (n < 1 || paths == NULL) return mr_error(ctx, MR_EINVAL, "mr_weights_open: no file given");
  for (int i = 0; i < n; i++)
    if (paths[i] == NULL) return mr_error(ctx, MR_EINVAL, "mr_weights_open: path %d is NULL", i);

  mr_weights *w = calloc(1, sizeof *w);
  if (w != NULL) w->maps = calloc((size_t)n, sizeof *w->maps);
  if (w == NULL || w->maps == NULL) {
    free(w);
    return mr_error(ctx, MR_ENOMEM, "%s: out of memory", paths[0]);
  }
  mr_status s = MR_OK;
  for (int i = 0; i < n && s == MR_OK; i++) {
    s = map_file(ctx, paths[i], &w->maps[i]);
    if (s != MR_OK) break;
    w->nmaps++;
    mr_io_source src = {ctx, paths[i], w->maps[i].addr, w->maps[i].size};
    int first = w->count;
    /* The full local-header magic, not just "PK": a safetensors file whose
       header is 19,280 bytes (0x4B50) also starts with "PK". */
    if (memcmp(src.data, "PK\x03\x04", 4) == 0)
      s = mr_io_pth_parse(&src, w);
    else
      s = mr_io_safetensors_parse(&src, w);
    for (int e = first; e < w->count; e++) w->entries[e].file = i;
  }
  if (s == MR_OK) s = weights_finish(ctx, w, paths);
  if (s != MR_OK) {
    mr_weights_free(w);
    return s;
  }
  *out = w;
  return MR_OK;
}

mr_status mr_weights_open(mr_ctx *ctx, const char *path, mr_weights **out) {
  if (out != NULL) *out = NULL;
  if (path == NULL) return mr_error(ctx, MR_EINVAL, "mr_weights_open: path is NULL");
  return mr_weights_open_files(ctx, 1, &path, out);
}

int mr_weights_count(const mr_weights *w) { return w ? w->count : 0; }

mr_status mr_weights_get(const mr_weights *w, int i, mr_weight_info *info) {
  /* No context to hold a message, and printing would spam a host's
     stderr; the status alone says the index was bad. */
  if (w == NULL || info == NULL || i < 0 || i >= w->count) return MR_EINVAL;
  const entry *e = &w->entries[i];
  memset(info, 0, sizeof *info);
  info->name = e->name;
  info->dtype = e->dtype;
  info->ndim = e->ndim;
  for (int d = 0; d < e->ndim; d++) info->shape[d] = e->shape[d];
  info->data = e->data;
  info->nbytes = e->nbytes;
  return MR_OK;
}

int mr_weights_find(const mr_weights *w, const char *name) {
  if (w == NULL || name == NULL) return -1;
  int lo = 0, hi = w->count - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(w->entries[mid].name, name);
    if (c == 0) return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return -1;
}

const char *mr_weights_metadata(const mr_weights *w) { return w ? w->metadata : NULL; }

/* Streaming: once a tensor is on the device its file pages are dropped from
   this process (they were read-only and stay in the page cache), so loading a
   checkpoint keeps host memory near one tensor instead of growing to the file
   size. Only whole pages inside the mapping are released. */
static void release_pages(const mr_weights *w, const entry *e) {
  if (e->owned || !e->data || e->nbytes == 0) return; /* a host copy, not the mapping */
  const mapping *m = &w->maps[e->file];
  uintptr_t base = (uintptr_t)m->addr, lo = (uintptr_t)e->data, hi = lo + e->nbytes;
  if (lo < base || hi > base + m->size) return;
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  lo = (lo + page - 1) / page * page;
  hi = hi / page * page;
  if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

mr_status mr_weights_to_tensor(mr_ctx *ctx, const mr_weights *w, int i, mr_dtype dtype, mr_tensor **out) {
  if (out == NULL) return mr_error(ctx, MR_EINVAL, "mr_weights_to_tensor: out is NULL");
  *out = NULL;
  if (w == NULL) return mr_error(ctx, MR_EINVAL, "mr_weights_to_tensor: weights is NULL");
  if (i < 0 || i >= w->count)
    return mr_error(ctx, MR_EINVAL, "mr_weights_to_tensor: index %d out of range (0..%d)", i, w->count - 1);
  const entry *e = &w->entries[i];
  if (e->ndim > MR_MAX_DIMS)
    return mr_error(ctx, MR_EINVAL, "tensor '%s' has %d dims; device tensors have at most %d", e->name,
                    e->ndim, MR_MAX_DIMS);
  if (!mr_dtype_is_storage(dtype))
    return mr_error(ctx, MR_EINVAL, "tensor '%s': %s is not a device storage dtype (f32, f16, bf16)", e->name,
                    mr_dtype_name(dtype));
  /* A 0-dim (scalar) entry becomes a 1-element vector: device tensors have
     at least one dim. */
  static const int64_t scalar_shape[1] = {1};
  int ndim = e->ndim ? e->ndim : 1;
  const int64_t *shape = e->ndim ? e->shape : scalar_shape;
  mr_status st = mr_tensor_from_host(ctx, dtype, ndim, shape, e->dtype, e->data, out);
  release_pages(w, e);
  return st;
}
