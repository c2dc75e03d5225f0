/* PyTorch .pth/.pt archives (torch.save since 1.6): a zip holding
   <root>/data.pkl, the pickled state dict, and <root>/data/<key>, one entry
   per storage. Tensors that cover their storage contiguously point into the
   mapping; views (an offset slice or a transposed stride) get a host copy of
   just that tensor, so memory stays near one tensor, never the whole file. */
#include "io/io_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {"state_dict": {"model": {...}}} is as deep as real checkpoints go; the
   limit also ends a dict that contains itself through the memo. */
#define MAX_NESTING 16

typedef struct pth {
  const mr_io_source *src;
  mr_weights *w;
  mr_io_zip zip;
  const char *root; /* "<root>/" prefix of data.pkl, in the mapping */
  size_t root_len;
  size_t entries, max_entries; /* dict entries walked; the bound (pickle bytes / 2) */
} pth;

/* The archive's data.pkl: torch writes "<name>/data.pkl"; if several
   match (an archive of archives), the shortest path is the outer one. */
static const mr_io_zip_entry *find_pickle(const mr_io_zip *zip) {
  static const char tail[] = "data.pkl";
  const size_t tl = sizeof tail - 1;
  const mr_io_zip_entry *best = NULL;
  for (size_t i = 0; i < zip->count; i++) {
    const mr_io_zip_entry *e = &zip->entries[i];
    if (e->name_len < tl || memcmp(e->name + e->name_len - tl, tail, tl) != 0) continue;
    if (e->name_len > tl && e->name[e->name_len - tl - 1] != '/') continue;
    if (best == NULL || e->name_len < best->name_len) best = e;
  }
  return best;
}

/* The bytes of tensor t: a pointer into the storage when t covers a dense
   row-major range of it, else a gathered copy in *owned. */
static mr_status tensor_data(pth *x, const char *name, const mr_io_pval *t, const void **data, size_t *nbytes,
                             void **owned) {
  const mr_io_source *src = x->src;
  const mr_io_pval *st = t->u.tensor.storage;
  *owned = NULL;

  char key[512];
  if (x->root_len + 5 + st->u.storage.key_len >= sizeof key)
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' names a storage key that is too long", src->path, name);
  memcpy(key, x->root, x->root_len);
  memcpy(key + x->root_len, "data/", 5);
  memcpy(key + x->root_len + 5, st->u.storage.key, st->u.storage.key_len);
  size_t key_len = x->root_len + 5 + st->u.storage.key_len;
  const mr_io_zip_entry *e = mr_io_zip_find(&x->zip, key, key_len);
  if (e == NULL)
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s': storage '%.*s' is missing from the archive", src->path,
                    name, (int)key_len, key);
  const uint8_t *base;
  mr_status s = mr_io_zip_data(src, e, &base);
  if (s != MR_OK) return s;

  mr_dtype dt = st->u.storage.dtype;
  size_t es = mr_dtype_size(dt);
  size_t storage_bytes;
  int64_t storage_numel = st->u.storage.numel;
  if (!mr_io_nbytes(1, &storage_numel, es, &storage_bytes) || storage_bytes > e->size)
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s': storage '%.*s' claims %lld elements but holds %llu bytes",
                    src->path, name, (int)key_len, key, (long long)storage_numel, (unsigned long long)e->size);

  int nd = t->u.tensor.ndim;
  const int64_t *shape = t->u.tensor.shape, *stride = t->u.tensor.stride;
  if (!mr_io_nbytes(nd, shape, es, nbytes))
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has a shape whose size overflows", src->path, name);
  if (*nbytes == 0) {
    *data = base;
    return MR_OK;
  }
  /* The last element sits at offset + sum((shape-1)*stride); it must lie in
     the storage. Each step is checked so a hostile stride cannot wrap. */
  int64_t last = t->u.tensor.offset;
  for (int d = 0; d < nd; d++) {
    int64_t span = shape[d] - 1;
    if (span > 0 && stride[d] > 0 && span > (INT64_MAX - last) / stride[d]) last = INT64_MAX;
    else last += span * stride[d];
  }
  if (last >= storage_numel)
    return mr_error(src->ctx, MR_EFORMAT,
                    "%s: tensor '%s' (offset %lld) reaches past the end of its storage (%lld elements)", src->path,
                    name, (long long)t->u.tensor.offset, (long long)storage_numel);

  bool dense = true;
  int64_t expect = 1;
  for (int d = nd - 1; d >= 0; d--) {
    if (shape[d] != 1 && stride[d] != expect) dense = false;
    expect *= shape[d];
  }
  /* A view with more elements than its storage repeats elements (a zero or
     overlapping stride): its copy would cost more than the file holds (a
     4-element storage viewed as 2^30 elements is 4 GiB), and a state dict
     never has one. */
  if (!dense && *nbytes > storage_bytes)
    return mr_error(src->ctx, MR_EFORMAT,
                    "%s: tensor '%s' views %zu bytes of a %zu-byte storage (a zero or overlapping stride); "
                    "a view may not be larger than its storage",
                    src->path, name, *nbytes, storage_bytes);
  const uint8_t *first = base + (size_t)t->u.tensor.offset * es;
  if (dense) {
    *data = first;
    return MR_OK;
  }

  uint8_t *copy = malloc(*nbytes);
  if (copy == NULL)
    return mr_error(src->ctx, MR_ENOMEM, "%s: out of memory copying strided tensor '%s' (%zu bytes)", src->path, name,
                    *nbytes);
  /* An odometer over the index; the innermost dim is copied as a run when
     it is unit-stride, element by element otherwise. */
  int64_t idx[MR_WEIGHT_MAX_DIMS] = {0};
  int inner = nd - 1;
  size_t run = stride[inner] == 1 ? (size_t)shape[inner] : 1;
  size_t out_off = 0;
  for (;;) {
    int64_t el = t->u.tensor.offset;
    for (int d = 0; d < nd; d++) el += idx[d] * stride[d];
    memcpy(copy + out_off, base + (size_t)el * es, run * es);
    out_off += run * es;
    int d = run > 1 ? inner - 1 : inner;
    if (run > 1) idx[inner] = 0;
    for (; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
    if (d < 0) break;
  }
  *data = copy;
  *owned = copy;
  return MR_OK;
}

static mr_status flatten(pth *x, const mr_io_pval *dict, const char *prefix, int depth) {
  const mr_io_source *src = x->src;
  if (depth > MAX_NESTING)
    return mr_error(src->ctx, MR_EFORMAT, "%s: state dict nested deeper than %d", src->path, MAX_NESTING);
  size_t plen = strlen(prefix);
  for (size_t i = 0; i < dict->u.dict.n; i++) {
    const mr_io_pval *k = dict->u.dict.keys[i], *v = dict->u.dict.vals[i];
    if (k->kind != MR_PK_STR) continue; /* e.g. optimizer state keyed by int: not weights */
    if (v->kind != MR_PK_TENSOR && v->kind != MR_PK_DICT) continue; /* "epoch": 3 and the like */
    /* Every entry of every dict costs the pickle at least two bytes (a key
       and a value reference), so a walk past that count reaches a dict
       twice through the memo: a few hundred bytes could fan out into 4^16
       names. A state dict never shares a sub-dict. */
    if (++x->entries > x->max_entries)
      return mr_error(src->ctx, MR_EFORMAT,
                      "%s: the state dict reaches a dict more than once (more than %zu entries from a %zu-byte "
                      "pickle)", src->path, x->max_entries, 2 * x->max_entries);
    char *name = malloc(plen + k->u.str.len + 2);
    if (name == NULL) return mr_error(src->ctx, MR_ENOMEM, "%s: out of memory", src->path);
    memcpy(name, prefix, plen);
    size_t n = plen;
    if (plen) name[n++] = '.';
    memcpy(name + n, k->u.str.s, k->u.str.len);
    n += k->u.str.len;
    name[n] = '\0';
    mr_status s;
    if (memchr(k->u.str.s, '\0', k->u.str.len) != NULL) {
      s = mr_error(src->ctx, MR_EFORMAT, "%s: a state dict key contains a NUL byte", src->path);
    } else if (v->kind == MR_PK_DICT) {
      s = flatten(x, v, name, depth + 1);
    } else {
      const void *data;
      size_t nbytes;
      void *owned;
      s = tensor_data(x, name, v, &data, &nbytes, &owned);
      if (s == MR_OK)
        s = mr_io_weights_add(src, x->w, name, n, v->u.tensor.storage->u.storage.dtype, v->u.tensor.ndim,
                              v->u.tensor.shape, data, nbytes, owned);
    }
    free(name);
    if (s != MR_OK) return s;
  }
  return MR_OK;
}

mr_status mr_io_pth_parse(const mr_io_source *src, mr_weights *w) {
  pth x = {.src = src, .w = w};
  mr_status s = mr_io_zip_open(src, &x.zip);
  if (s != MR_OK) return s;
  mr_io_pickle *pk = NULL;
  const mr_io_pval *root;
  const uint8_t *bytes;
  char what[256];

  const mr_io_zip_entry *pe = find_pickle(&x.zip);
  if (pe == NULL) {
    s = mr_error(src->ctx, MR_EFORMAT, "%s: zip archive has no data.pkl; not a PyTorch checkpoint", src->path);
    goto done;
  }
  x.root = pe->name;
  x.root_len = pe->name_len - strlen("data.pkl");
  snprintf(what, sizeof what, "%.*s", (int)(pe->name_len > 200 ? 200 : pe->name_len), pe->name);
  /* torch >= 2.1 records the byte order of the storages; older archives
     are always little-endian, as is every host we run on. */
  char bo_name[512];
  if (x.root_len + 9 < sizeof bo_name) {
    memcpy(bo_name, x.root, x.root_len);
    memcpy(bo_name + x.root_len, "byteorder", 9);
    const mr_io_zip_entry *bo = mr_io_zip_find(&x.zip, bo_name, x.root_len + 9);
    /* zip_open checked that a stored entry's bytes lie in the file. */
    if (bo != NULL && (bo->method != 0 || bo->size != 6 || memcmp(src->data + bo->offset, "little", 6) != 0)) {
      s = mr_error(src->ctx, MR_EUNSUPPORTED, "%s: storages are not little-endian", src->path);
      goto done;
    }
  }
  if ((s = mr_io_zip_data(src, pe, &bytes)) != MR_OK) goto done;
  if ((s = mr_io_pickle_load(src, what, bytes, (size_t)pe->size, &pk, &root)) != MR_OK) goto done;
  x.max_entries = (size_t)pe->size / 2;
  if (root->kind != MR_PK_DICT) {
    s = mr_error(src->ctx, MR_EFORMAT, "%s: %s does not hold a dict of tensors", src->path, what);
    goto done;
  }
  s = flatten(&x, root, "", 0);

done:
  mr_io_pickle_free(pk);
  mr_io_zip_close(&x.zip);
  return s;
}
