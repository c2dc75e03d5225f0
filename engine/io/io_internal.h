/* Internal interface of the checkpoint readers: the mapped file, the builder
   the format parsers fill, the zip directory and the pickle VM's result.
   Not part of the public API. */
#ifndef MR_IO_INTERNAL_H
#define MR_IO_INTERNAL_H

#include "core/core.h"

#include <stddef.h>
#include <stdint.h>

/* A file mapped read-only. Every parser reads through it and checks each
   offset against size before touching data. */
typedef struct mr_io_source {
  mr_ctx *ctx;         /* for messages only */
  const char *path;    /* named in every message */
  const uint8_t *data; /* the whole file */
  size_t size;
} mr_io_source;

/* ---------------------------------------------------------------- builder */
/* Adds one tensor to w. name is copied (name_len bytes, no NUL needed).
   data points into the mapping, or into `owned` (a malloc'd copy that w
   frees; NULL when data is borrowed from the mapping). On failure `owned`
   is freed here, so the caller never has to. */
mr_status mr_io_weights_add(const mr_io_source *src, mr_weights *w, const char *name, size_t name_len,
                            mr_dtype dtype, int ndim, const int64_t *shape, const void *data,
                            size_t nbytes, void *owned);
/* Takes ownership of a malloc'd NUL-terminated JSON string. */
void mr_io_weights_set_metadata(mr_weights *w, char *json);

/* Product of shape[0..ndim) times elem_size in *out; false on overflow or
   a negative dim. */
bool mr_io_nbytes(int ndim, const int64_t *shape, size_t elem_size, size_t *out);

/* ---------------------------------------------------------------- formats */
mr_status mr_io_safetensors_parse(const mr_io_source *src, mr_weights *w);
mr_status mr_io_pth_parse(const mr_io_source *src, mr_weights *w);

/* ---------------------------------------------------------------- zip */
typedef struct mr_io_zip_entry {
  const char *name; /* points into the mapping; not NUL-terminated */
  size_t name_len;
  uint64_t offset;  /* of the entry's data in the file */
  uint64_t size;    /* uncompressed size */
  int method;       /* 0 = stored */
} mr_io_zip_entry;

typedef struct mr_io_zip {
  mr_io_zip_entry *entries;
  size_t count;
} mr_io_zip;

/* Reads the central directory (ZIP64 included). Each entry's data range is
   checked to lie inside the file. */
mr_status mr_io_zip_open(const mr_io_source *src, mr_io_zip *zip);
void mr_io_zip_close(mr_io_zip *zip);
/* The entry named exactly name (name_len bytes), or NULL. */
const mr_io_zip_entry *mr_io_zip_find(const mr_io_zip *zip, const char *name, size_t name_len);
/* The stored data of e, or an error naming the entry if it is compressed. */
mr_status mr_io_zip_data(const mr_io_source *src, const mr_io_zip_entry *e, const uint8_t **data);

/* ---------------------------------------------------------------- pickle */
/* The values a torch state-dict pickle builds. Everything belongs to the
   mr_io_pickle that made it and is freed with it. */
typedef enum mr_io_pkind {
  MR_PK_NONE, MR_PK_BOOL, MR_PK_INT, MR_PK_FLOAT, MR_PK_STR, MR_PK_TUPLE, MR_PK_LIST, MR_PK_DICT,
  MR_PK_GLOBAL,  /* one of the honoured callables or storage types */
  MR_PK_STORAGE, /* a persistent id: a storage in data/<key> */
  MR_PK_TENSOR,  /* the result of _rebuild_tensor(_v2) */
} mr_io_pkind;

typedef enum mr_io_pglobal {
  MR_PG_ORDERED_DICT, MR_PG_REBUILD_TENSOR, MR_PG_REBUILD_TENSOR_V2, MR_PG_REBUILD_PARAMETER,
  MR_PG_STORAGE_TYPE,
} mr_io_pglobal;

typedef struct mr_io_pval mr_io_pval;
struct mr_io_pval {
  mr_io_pkind kind;
  union {
    bool b;
    int64_t i;
    double f;
    struct { const char *s; size_t len; } str;          /* points into the pickle bytes */
    struct { mr_io_pval **items; size_t n, cap; } seq;  /* tuple, list */
    struct { mr_io_pval **keys, **vals; size_t n, cap; } dict;
    struct { mr_io_pglobal which; mr_dtype dtype; } global; /* dtype for storage types */
    struct { mr_dtype dtype; const char *key; size_t key_len; int64_t numel; } storage;
    struct {
      const mr_io_pval *storage;
      int64_t offset; /* in elements */
      int ndim;
      int64_t shape[MR_WEIGHT_MAX_DIMS];
      int64_t stride[MR_WEIGHT_MAX_DIMS];
    } tensor;
  } u;
};

typedef struct mr_io_pickle mr_io_pickle;

/* Runs the pickle in bytes[0..len) (the data.pkl entry, named `what` in
   messages). On success *root is the unpickled object and *out owns it. */
mr_status mr_io_pickle_load(const mr_io_source *src, const char *what, const uint8_t *bytes, size_t len,
                            mr_io_pickle **out, const mr_io_pval **root);
void mr_io_pickle_free(mr_io_pickle *p);

#endif
