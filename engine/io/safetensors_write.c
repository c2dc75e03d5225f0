/* safetensors writer. The file appears whole or not at all: it is written to
   a temporary file beside path, synced, then renamed over path
   (mr_file_temp_create / mr_file_commit). Tensors are read back one at a
   time, so host memory stays near the largest tensor. */
#define _POSIX_C_SOURCE 200809L
#include "io/io_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct item {
  const char *name;
  mr_tensor *t;
  size_t nbytes;
} item;

static int item_cmp(const void *a, const void *b) {
  return strcmp(((const item *)a)->name, ((const item *)b)->name);
}

static const char *st_dtype(mr_dtype dt) {
  switch (dt) {
  case MR_F32: return "F32";
  case MR_F16: return "F16";
  case MR_BF16: return "BF16";
  default: return NULL;
  }
}

/* The header as JSON text: __metadata__ first, then tensors in name order
   with consecutive data offsets. */
static mr_status build_header(mr_ctx *ctx, const char *path, int n, const item *items, const char *metadata_json,
                              char **out) {
  *out = NULL;
  cJSON *root = cJSON_CreateObject();
  if (root == NULL) return mr_error(ctx, MR_ENOMEM, "%s: out of memory building the header", path);
  mr_status s = MR_OK;
  if (metadata_json != NULL) {
    cJSON *meta = cJSON_Parse(metadata_json);
    bool ok = cJSON_IsObject(meta);
    const cJSON *v;
    if (ok) cJSON_ArrayForEach(v, meta) ok = ok && cJSON_IsString(v);
    if (!ok) {
      cJSON_Delete(meta);
      cJSON_Delete(root);
      return mr_error(ctx, MR_EINVAL, "%s: metadata must be a JSON object of string values", path);
    }
    cJSON_AddItemToObject(root, "__metadata__", meta);
  }
  uint64_t off = 0;
  for (int i = 0; i < n && s == MR_OK; i++) {
    const mr_tensor *t = items[i].t;
    cJSON *e = cJSON_CreateObject();
    cJSON *shape = cJSON_CreateArray();
    cJSON *offs = cJSON_CreateArray();
    bool ok = e && shape && offs;
    for (int d = 0; ok && d < mr_tensor_ndim(t); d++) ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)mr_tensor_shape(t)[d]));
    ok = ok && cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    off += items[i].nbytes;
    ok = ok && cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    ok = ok && cJSON_AddStringToObject(e, "dtype", st_dtype(mr_tensor_dtype(t))) != NULL;
    if (ok) {
      cJSON_AddItemToObject(e, "shape", shape);
      cJSON_AddItemToObject(e, "data_offsets", offs);
      shape = offs = NULL;
      ok = cJSON_AddItemToObject(root, items[i].name, e);
      if (ok) e = NULL;
    }
    cJSON_Delete(shape);
    cJSON_Delete(offs);
    cJSON_Delete(e);
    if (!ok) s = mr_error(ctx, MR_ENOMEM, "%s: out of memory building the header", path);
  }
  if (s == MR_OK) {
    *out = cJSON_PrintUnformatted(root);
    if (*out == NULL) s = mr_error(ctx, MR_ENOMEM, "%s: out of memory building the header", path);
  }
  cJSON_Delete(root);
  return s;
}

static mr_status write_file(mr_ctx *ctx, const char *path, int fd, int n, const item *items, const char *header) {
  /* Pad with spaces so the data block starts 8-byte aligned, as the format
     recommends; JSON ignores trailing whitespace. */
  size_t hlen = strlen(header);
  size_t padded = (hlen + 7) & ~(size_t)7;
  uint8_t len8[8];
  for (int k = 0; k < 8; k++) len8[k] = (uint8_t)((uint64_t)padded >> (8 * k));
  static const char spaces[8] = "        ";
  if (!mr_file_write_all(fd, len8, 8) || !mr_file_write_all(fd, header, hlen) || !mr_file_write_all(fd, spaces, padded - hlen))
    return mr_error(ctx, MR_EIO, "cannot write '%s': %s", path, strerror(errno));
  for (int i = 0; i < n; i++) {
    size_t nb = items[i].nbytes;
    if (nb == 0) continue;
    void *buf = malloc(nb);
    if (buf == NULL)
      return mr_error(ctx, MR_ENOMEM, "%s: out of memory reading back tensor '%s' (%zu bytes)", path, items[i].name, nb);
    mr_tensor *t = items[i].t;
    mr_status s = mr_tensor_read(t, mr_tensor_dtype(t), buf, (size_t)mr_tensor_numel(t));
    if (s != MR_OK) {
      free(buf);
      return s;
    }
    bool ok = mr_file_write_all(fd, buf, nb);
    int e = errno;
    free(buf);
    if (!ok) return mr_error(ctx, MR_EIO, "cannot write '%s': %s", path, strerror(e));
  }
  return MR_OK;
}

mr_status mr_safetensors_write(mr_ctx *ctx, const char *path, int n, const char *const *names,
                               mr_tensor *const *tensors, const char *metadata_json) {
  if (path == NULL || n < 0 || (n > 0 && (names == NULL || tensors == NULL)))
    return mr_error(ctx, MR_EINVAL, "mr_safetensors_write: bad arguments");
  item *items = calloc(n ? (size_t)n : 1, sizeof *items);
  if (items == NULL) return mr_error(ctx, MR_ENOMEM, "%s: out of memory", path);
  mr_status s = MR_OK;
  char *header = NULL;
  char *tmp = NULL;
  for (int i = 0; i < n && s == MR_OK; i++) {
    if (names[i] == NULL || names[i][0] == '\0' || tensors[i] == NULL)
      s = mr_error(ctx, MR_EINVAL, "%s: tensor %d has no name or is NULL", path, i);
    else if (strcmp(names[i], "__metadata__") == 0)
      s = mr_error(ctx, MR_EINVAL, "%s: '__metadata__' is reserved and cannot name a tensor", path);
    else if (st_dtype(mr_tensor_dtype(tensors[i])) == NULL)
      s = mr_error(ctx, MR_EINVAL, "%s: tensor '%s' has dtype %s; only f32, f16 and bf16 are written", path,
                   names[i], mr_dtype_name(mr_tensor_dtype(tensors[i])));
    else {
      items[i].name = names[i];
      items[i].t = tensors[i];
      items[i].nbytes = (size_t)mr_tensor_numel(tensors[i]) * mr_dtype_size(mr_tensor_dtype(tensors[i]));
    }
  }
  if (s != MR_OK) goto done;
  if (n > 1) qsort(items, (size_t)n, sizeof *items, item_cmp);
  for (int i = 1; i < n; i++) {
    if (strcmp(items[i - 1].name, items[i].name) == 0) {
      s = mr_error(ctx, MR_EINVAL, "%s: tensor name '%s' appears twice", path, items[i].name);
      goto done;
    }
  }
  if ((s = build_header(ctx, path, n, items, metadata_json, &header)) != MR_OK) goto done;

  int fd;
  if ((s = mr_file_temp_create(ctx, path, &tmp, &fd)) != MR_OK) goto done;
  s = write_file(ctx, path, fd, n, items, header);
  if (s == MR_OK) s = mr_file_commit(ctx, fd, tmp, path); /* closes fd; removes tmp on failure */
  else mr_file_discard(fd, tmp);

done:
  free(tmp);
  free(header);
  free(items);
  return s;
}
