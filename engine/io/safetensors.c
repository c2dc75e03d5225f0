/* safetensors reader: an 8-byte little-endian header length, a JSON header
   {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
   {...}}, then the data block the offsets are relative to. Tensors point
   straight into the mapping; nothing is copied. */
#include "io/io_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Real headers are a few MB at most (a 14B DiT has ~1,100 tensors); a larger
   length is corruption, and refusing it bounds the copy we parse. */
#define HEADER_MAX (100u * 1024u * 1024u)

static const struct {
  const char *name;
  mr_dtype dtype;
} dtypes[] = {
    {"F32", MR_F32}, {"F16", MR_F16}, {"BF16", MR_BF16}, {"F64", MR_F64},
    {"I64", MR_I64}, {"I32", MR_I32}, {"U8", MR_U8},
};

/* A JSON number that is an exact integer in [0, 2^53] (doubles hold those
   exactly; anything beyond cannot be a real offset or dim anyway). */
static bool json_uint(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return false;
  double v = j->valuedouble;
  if (!(v >= 0.0 && v <= 9007199254740992.0) || v != (double)(uint64_t)v) return false;
  *out = (uint64_t)v;
  return true;
}

typedef struct span {
  uint64_t begin, end;
  const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
  const span *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static mr_status parse_entry(const mr_io_source *src, mr_weights *w, const cJSON *item, const uint8_t *base,
                             uint64_t data_size, span *sp) {
  const char *name = item->string;
  if (!cJSON_IsObject(item))
    return mr_error(src->ctx, MR_EFORMAT, "%s: header entry '%s' is not an object", src->path, name);
  const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
  const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
  const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
  if (!cJSON_IsString(jd))
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has a missing or non-string dtype", src->path, name);
  if (!cJSON_IsArray(js))
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has a missing or non-array shape", src->path, name);
  if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has missing or ill-typed data_offsets (need [begin, end])",
                    src->path, name);

  mr_dtype dtype = MR_DTYPE_COUNT;
  for (size_t k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++) {
    if (strcmp(jd->valuestring, dtypes[k].name) == 0) dtype = dtypes[k].dtype;
  }
  if (dtype == MR_DTYPE_COUNT)
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has unknown dtype '%.32s'", src->path, name,
                    jd->valuestring);

  int ndim = cJSON_GetArraySize(js);
  if (ndim > MR_WEIGHT_MAX_DIMS)
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has too many dims (%d, at most %d)", src->path, name,
                    ndim, MR_WEIGHT_MAX_DIMS);
  int64_t shape[MR_WEIGHT_MAX_DIMS];
  int d = 0;
  const cJSON *dim;
  cJSON_ArrayForEach(dim, js) {
    if (cJSON_IsNumber(dim) && dim->valuedouble < 0)
      return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has a negative dim in its shape", src->path, name);
    uint64_t v;
    if (!json_uint(dim, &v))
      return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has a shape entry that is not a non-negative integer",
                      src->path, name);
    shape[d++] = (int64_t)v;
  }

  uint64_t begin, end;
  if (!json_uint(cJSON_GetArrayItem(jo, 0), &begin) || !json_uint(cJSON_GetArrayItem(jo, 1), &end))
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has data_offsets that are not non-negative integers",
                    src->path, name);
  if (end < begin)
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has data_offsets end %llu < begin %llu", src->path,
                    name, (unsigned long long)end, (unsigned long long)begin);
  if (end > data_size)
    return mr_error(src->ctx, MR_EFORMAT,
                    "%s: tensor '%s' has data_offsets [%llu, %llu] out of range (data block is %llu bytes)",
                    src->path, name, (unsigned long long)begin, (unsigned long long)end,
                    (unsigned long long)data_size);
  size_t nbytes;
  if (!mr_io_nbytes(ndim, shape, mr_dtype_size(dtype), &nbytes))
    return mr_error(src->ctx, MR_EFORMAT, "%s: tensor '%s' has a shape whose size overflows", src->path, name);
  if ((uint64_t)nbytes != end - begin)
    return mr_error(src->ctx, MR_EFORMAT,
                    "%s: tensor '%s' byte length %llu does not match its shape and dtype (%zu bytes)", src->path,
                    name, (unsigned long long)(end - begin), nbytes);
  sp->begin = begin;
  sp->end = end;
  sp->name = name;
  return mr_io_weights_add(src, w, name, strlen(name), dtype, ndim, shape, base + begin, nbytes, NULL);
}

mr_status mr_io_safetensors_parse(const mr_io_source *src, mr_weights *w) {
  /* mr_weights_open guarantees at least 8 bytes. */
  uint64_t hlen = 0;
  for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | src->data[k];
  if (hlen > HEADER_MAX)
    return mr_error(src->ctx, MR_EFORMAT, "%s: header length %llu is absurd (more than %u bytes); not a safetensors file?",
                    src->path, (unsigned long long)hlen, HEADER_MAX);
  if (hlen > src->size - 8)
    return mr_error(src->ctx, MR_EFORMAT, "%s: header length %llu is larger than the file (%zu bytes)", src->path,
                    (unsigned long long)hlen, src->size);
  if (hlen < 2)
    return mr_error(src->ctx, MR_EFORMAT, "%s: header length %llu is too short for a JSON object", src->path,
                    (unsigned long long)hlen);

  /* Parse a NUL-terminated copy: the header may end exactly at the end of
     the mapping, and the parser must not depend on its length handling to
     stay inside it. The copy is bounded by HEADER_MAX and freed at once. */
  char *text = malloc((size_t)hlen + 1);
  if (text == NULL) return mr_error(src->ctx, MR_ENOMEM, "%s: out of memory for the header", src->path);
  memcpy(text, src->data + 8, (size_t)hlen);
  text[hlen] = '\0';
  cJSON *root = cJSON_ParseWithLength(text, (size_t)hlen + 1);
  free(text);
  if (root == NULL)
    return mr_error(src->ctx, MR_EFORMAT, "%s: header is invalid JSON", src->path);
  mr_status s = MR_OK;
  span *spans = NULL;
  if (!cJSON_IsObject(root)) {
    s = mr_error(src->ctx, MR_EFORMAT, "%s: header JSON is not an object", src->path);
    goto done;
  }

  int n = cJSON_GetArraySize(root);
  spans = calloc(n ? (size_t)n : 1, sizeof *spans);
  if (spans == NULL) {
    s = mr_error(src->ctx, MR_ENOMEM, "%s: out of memory", src->path);
    goto done;
  }
  const uint8_t *base = src->data + 8 + hlen;
  uint64_t data_size = src->size - 8 - hlen;
  int nspans = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, root) {
    if (item->string == NULL) continue;
    if (strcmp(item->string, "__metadata__") == 0) {
      if (!cJSON_IsObject(item)) {
        s = mr_error(src->ctx, MR_EFORMAT, "%s: __metadata__ is not an object", src->path);
        goto done;
      }
      char *json = cJSON_PrintUnformatted(item);
      if (json == NULL) {
        s = mr_error(src->ctx, MR_ENOMEM, "%s: out of memory for metadata", src->path);
        goto done;
      }
      /* cJSON allocates with malloc by default, so free() releases it. */
      mr_io_weights_set_metadata(w, json);
      continue;
    }
    s = parse_entry(src, w, item, base, data_size, &spans[nspans]);
    if (s != MR_OK) goto done;
    nspans++;
  }

  /* After sorting by begin, each tensor must start at or after the previous
     one's end; empty tensors occupy nothing and may sit anywhere. */
  qsort(spans, (size_t)nspans, sizeof *spans, span_cmp);
  uint64_t prev_end = 0;
  const char *prev_name = NULL;
  for (int k = 0; k < nspans; k++) {
    if (spans[k].begin == spans[k].end) continue;
    if (prev_name != NULL && spans[k].begin < prev_end) {
      s = mr_error(src->ctx, MR_EFORMAT, "%s: tensors '%s' and '%s' have overlapping data", src->path, prev_name,
                   spans[k].name);
      goto done;
    }
    prev_end = spans[k].end;
    prev_name = spans[k].name;
  }

done:
  free(spans);
  cJSON_Delete(root);
  return s;
}
