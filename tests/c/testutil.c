#include "testutil.h"

#include "tensor/dtype.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

int mr_test_failures = 0;

int mr_test_finish(const char *name) {
  if (mr_test_failures) fprintf(stderr, "%s: %d check(s) failed\n", name, mr_test_failures);
  else printf("%s: all checks passed\n", name);
  return mr_test_failures ? 1 : 0;
}

mr_ctx *mr_test_ctx(void) {
  mr_ctx *ctx;
  if (mr_ctx_new(NULL, &ctx) != MR_OK) {
    fprintf(stderr, "cannot create a moonreel context\n");
    exit(1);
  }
  return ctx;
}

float mr_rng_uniform(mr_rng *r, float lo, float hi) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 7;
  r->s ^= r->s << 17;
  return lo + (hi - lo) * (float)((r->s >> 40) * (1.0 / 16777216.0));
}

void mr_rng_fill(mr_rng *r, float *x, size_t n, float lo, float hi) {
  for (size_t i = 0; i < n; i++) x[i] = mr_rng_uniform(r, lo, hi);
}

double mr_rel_l2(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

void mr_test_round(mr_dtype dt, float *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (dt == MR_F16) x[i] = mr_f16_to_f32(mr_f32_to_f16(x[i]));
    else if (dt == MR_BF16) x[i] = mr_bf16_to_f32(mr_f32_to_bf16(x[i]));
  }
}

float *mr_test_read(mr_ctx *ctx, mr_tensor *t) {
  size_t n = (size_t)mr_tensor_numel(t);
  float *x = malloc((n ? n : 1) * sizeof *x);
  if (!x) return NULL;
  if (mr_tensor_read(t, MR_F32, x, n) != MR_OK) {
    fprintf(stderr, "read failed: %s\n", mr_ctx_last_error(ctx));
    mr_test_failures++;
  }
  return x;
}

void *mr_test_read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  rewind(f);
  char *p = len >= 0 ? malloc((size_t)len + 1) : NULL;
  if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
    free(p);
    p = NULL;
  }
  fclose(f);
  if (p == NULL) return NULL;
  p[len] = '\0';
  if (n) *n = (size_t)len;
  return p;
}

char *mr_test_read_text(const char *path) { return mr_test_read_bytes(path, NULL); }

void mr_test_write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f == NULL || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

uint64_t mr_test_write_sparse(const char *path, const cJSON *tensors, const char *dtype, int elem_size,
                              int64_t *params) {
  cJSON *hdr = cJSON_CreateObject();
  uint64_t off = 0;
  int64_t count = 0;
  const cJSON *t;
  cJSON_ArrayForEach(t, tensors) {
    cJSON *e = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    uint64_t n = 1;
    const cJSON *d;
    cJSON_ArrayForEach(d, t) {
      cJSON_AddItemToArray(shape, cJSON_CreateNumber(d->valuedouble));
      n *= (uint64_t)d->valuedouble;
    }
    cJSON_AddStringToObject(e, "dtype", dtype);
    cJSON_AddItemToObject(e, "shape", shape);
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + (uint64_t)elem_size * n)));
    cJSON_AddItemToObject(e, "data_offsets", offs);
    cJSON_AddItemToObject(hdr, t->string, e);
    off += (uint64_t)elem_size * n;
    count += (int64_t)n;
  }
  char *text = cJSON_PrintUnformatted(hdr);
  uint64_t len = strlen(text);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  CHECK(fd >= 0);
  CHECK(write(fd, &len, 8) == 8 && write(fd, text, len) == (ssize_t)len);
  CHECK(ftruncate(fd, (off_t)(8 + len + off)) == 0); /* a hole: nothing is stored */
  if (fd >= 0) close(fd);
  free(text);
  cJSON_Delete(hdr);
  if (params) *params = count;
  return off;
}

void mr_test_check_params(mr_ctx *ctx, const mr_params *p, const mr_weights *w, int expect, const char *probe) {
  int n = mr_params_count(p);
  if (expect < 0) expect = mr_weights_count(w);
  if (n != expect) {
    fprintf(stderr, "parameter table lists %d tensors, expected %d\n", n, expect);
    mr_test_failures++;
  }
  for (int i = 0; i < n; i++) {
    mr_param_info pi;
    CHECK_OK(ctx, mr_params_get(p, i, &pi));
    CHECK(mr_params_find(p, pi.name) == i);
    int k = mr_weights_find(w, pi.name);
    mr_weight_info wi;
    if (k < 0 || mr_weights_get(w, k, &wi) != MR_OK) {
      fprintf(stderr, "parameter '%s' is not in the checkpoint\n", pi.name);
      mr_test_failures++;
      continue;
    }
    CHECK(wi.ndim == pi.ndim && memcmp(wi.shape, pi.shape, (size_t)pi.ndim * sizeof *pi.shape) == 0);
    CHECK(pi.tensor != NULL && mr_tensor_numel(pi.tensor) > 0);
  }
  CHECK(mr_params_find(p, probe) >= 0);
  CHECK(mr_params_find(p, "no.such.weight") == -1);
  mr_param_info none;
  CHECK(mr_params_get(p, n, &none) == MR_ENOTFOUND);
}

const cJSON *mr_test_real_checkpoint(const char *dir, const char *name, const char *dtype, int elem_size, char *path,
                                     size_t cap, cJSON **root, uint64_t *bytes) {
  char mpath[1024];
  snprintf(mpath, sizeof mpath, "%s/wan/manifests.json", dir);
  char *text = mr_test_read_text(mpath);
  *root = text ? cJSON_Parse(text) : NULL;
  free(text);
  const cJSON *entry = *root ? cJSON_GetObjectItemCaseSensitive(*root, name) : NULL;
  CHECK(entry != NULL);
  if (!entry) return NULL;
  snprintf(path, cap, "/tmp/mr_real_XXXXXX");
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return NULL;
  close(fd);
  uint64_t n = mr_test_write_sparse(path, cJSON_GetObjectItemCaseSensitive(entry, "tensors"), dtype, elem_size, NULL);
  if (bytes) *bytes = n;
  return entry;
}
