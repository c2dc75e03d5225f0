/* Checkpoint readers and the safetensors writer (engine/io).
   argv[1]: the conformance data folder (tests/conformance/data).
   Broken files are built here in a temporary folder; .pth archives are built
   by hand (zip + a hand-written pickle), since torch is not available. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "tensor/dtype.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_path(const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
  return buf;
}

/* A safetensors file from header text and a data block. hlen_override
   (when non-zero) replaces the true header length. */
static void st_file(const char *path, const char *header, const void *data, size_t n, uint64_t hlen_override) {
  size_t hl = strlen(header);
  uint64_t len = hlen_override ? hlen_override : hl;
  size_t total = 8 + hl + n;
  uint8_t *buf = malloc(total);
  for (int k = 0; k < 8; k++) buf[k] = (uint8_t)(len >> (8 * k));
  memcpy(buf + 8, header, hl);
  if (n) memcpy(buf + 8 + hl, data, n);
  mr_test_write_bytes(path, buf, total);
  free(buf);
}

/* Opens path expecting failure with status want and a message naming the
   file (its base name) and containing word. */
static void expect_fail(mr_ctx *ctx, const char *name, mr_status want, const char *word, int line) {
  mr_weights *w = (mr_weights *)1;
  mr_status st = mr_weights_open(ctx, tmp_path(name), &w);
  const char *msg = mr_ctx_last_error(ctx);
  bool ok = st == want && w == NULL && strstr(msg, name) != NULL && strstr(msg, word) != NULL;
  if (!ok) {
    fprintf(stderr, "test_io.c:%d: %s: got %s \"%s\", want %s with \"%s\"\n", line, name, mr_status_name(st), msg,
            mr_status_name(want), word);
    mr_test_failures++;
    if (st == MR_OK) mr_weights_free(w);
  }
  unlink(tmp_path(name));
}
#define EXPECT_FAIL(ctx, name, st, word) expect_fail(ctx, name, st, word, __LINE__)

/* ------------------------------------------------------------ safetensors */

static void test_safetensors_all_dtypes(mr_ctx *ctx) {
  /* One tensor of every dtype, plus a scalar and an empty tensor, in an
     order unlike the name order. */
  uint8_t data[128];
  size_t off = 0;
  float f32[2] = {1.5f, -2.25f};
  uint16_t f16[2] = {mr_f32_to_f16(0.5f), mr_f32_to_f16(-3.0f)};
  uint16_t bf16[2] = {mr_f32_to_bf16(1.25f), mr_f32_to_bf16(100.0f)};
  double f64[1] = {3.141592653589793};
  int64_t i64[2] = {-5, 1LL << 40};
  int32_t i32[1] = {-7};
  uint8_t u8[3] = {1, 2, 255};
  float scalar = 42.0f;
#define PUT(x) (memcpy(data + off, x, sizeof x), off += sizeof x)
  PUT(f32); PUT(f16); PUT(bf16); PUT(f64); PUT(i64); PUT(i32); PUT(u8);
  memcpy(data + off, &scalar, 4);
  off += 4;
#undef PUT
  const char *header =
      "{\"z_f32\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"y_f16\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]},"
      "\"__metadata__\":{\"format\":\"pt\",\"note\":\"hi\"},"
      "\"x_bf16\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[12,16]},"
      "\"w_f64\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[16,24]},"
      "\"v_i64\":{\"dtype\":\"I64\",\"shape\":[2,1],\"data_offsets\":[24,40]},"
      "\"u_i32\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[40,44]},"
      "\"t_u8\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[44,47]},"
      "\"s_scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[47,51]},"
      "\"r_empty\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[51,51]}}";
  st_file(tmp_path("all.safetensors"), header, data, off, 0);
  mr_weights *w;
  REQUIRE(mr_weights_open(ctx, tmp_path("all.safetensors"), &w) == MR_OK);
  CHECK(mr_weights_count(w) == 9);
  static const char *names[] = {"r_empty", "s_scalar", "t_u8", "u_i32", "v_i64", "w_f64", "x_bf16", "y_f16", "z_f32"};
  static const mr_dtype types[] = {MR_F32, MR_F32, MR_U8, MR_I32, MR_I64, MR_F64, MR_BF16, MR_F16, MR_F32};
  for (int i = 0; i < 9; i++) {
    mr_weight_info info;
    REQUIRE(mr_weights_get(w, i, &info) == MR_OK);
    CHECK(strcmp(info.name, names[i]) == 0);
    CHECK(info.dtype == types[i]);
    CHECK(mr_weights_find(w, names[i]) == i);
  }
  CHECK(mr_weights_find(w, "nope") == -1);
  CHECK(mr_weights_find(w, "") == -1);
  mr_weight_info info;
  mr_weights_get(w, mr_weights_find(w, "v_i64"), &info);
  CHECK(info.ndim == 2 && info.shape[0] == 2 && info.shape[1] == 1 && info.nbytes == 16);
  CHECK(memcmp(info.data, i64, 16) == 0);
  mr_weights_get(w, mr_weights_find(w, "x_bf16"), &info);
  CHECK(memcmp(info.data, bf16, 4) == 0);
  mr_weights_get(w, mr_weights_find(w, "t_u8"), &info);
  CHECK(info.nbytes == 3 && memcmp(info.data, u8, 3) == 0);
  mr_weights_get(w, mr_weights_find(w, "s_scalar"), &info);
  CHECK(info.ndim == 0 && info.nbytes == 4);
  mr_weights_get(w, mr_weights_find(w, "r_empty"), &info);
  CHECK(info.ndim == 2 && info.shape[0] == 0 && info.nbytes == 0);
  const char *meta = mr_weights_metadata(w);
  CHECK(meta != NULL && strstr(meta, "\"format\":\"pt\"") != NULL && strstr(meta, "\"note\":\"hi\"") != NULL);
  CHECK(mr_weights_get(w, 9, &info) == MR_EINVAL);
  CHECK(mr_weights_get(w, -1, &info) == MR_EINVAL);
  mr_weights_free(w);
  mr_weights_free(NULL);
  unlink(tmp_path("all.safetensors"));
}

static void test_safetensors_broken(mr_ctx *ctx) {
  uint8_t data[64] = {0};
  char h[2048];
#define ONE(dt, shape, offs) "{\"a\":{\"dtype\":" dt ",\"shape\":" shape ",\"data_offsets\":" offs "}}"
  mr_test_write_bytes(tmp_path("short.safetensors"), "\x02\0\0\0\0", 5);
  EXPECT_FAIL(ctx, "short.safetensors", MR_EFORMAT, "too short");
  mr_test_write_bytes(tmp_path("empty.safetensors"), "", 0);
  EXPECT_FAIL(ctx, "empty.safetensors", MR_EFORMAT, "too short");
  st_file(tmp_path("hlen_big.safetensors"), "{}", data, 16, 1000);
  EXPECT_FAIL(ctx, "hlen_big.safetensors", MR_EFORMAT, "larger than the file");
  st_file(tmp_path("hlen_absurd.safetensors"), "{}", data, 16, 200000000);
  EXPECT_FAIL(ctx, "hlen_absurd.safetensors", MR_EFORMAT, "absurd");
  st_file(tmp_path("hlen_huge.safetensors"), "{}", data, 16, UINT64_MAX);
  EXPECT_FAIL(ctx, "hlen_huge.safetensors", MR_EFORMAT, "absurd");
  st_file(tmp_path("badjson.safetensors"), "{\"a\": ", data, 16, 0);
  EXPECT_FAIL(ctx, "badjson.safetensors", MR_EFORMAT, "invalid JSON");
  st_file(tmp_path("notobj.safetensors"), "[1, 2]", data, 16, 0);
  EXPECT_FAIL(ctx, "notobj.safetensors", MR_EFORMAT, "not an object");
  st_file(tmp_path("entry_num.safetensors"), "{\"a\": 5}", data, 16, 0);
  EXPECT_FAIL(ctx, "entry_num.safetensors", MR_EFORMAT, "not an object");
  st_file(tmp_path("nodtype.safetensors"), "{\"a\":{\"shape\":[4],\"data_offsets\":[0,16]}}", data, 16, 0);
  EXPECT_FAIL(ctx, "nodtype.safetensors", MR_EFORMAT, "dtype");
  st_file(tmp_path("dtype_num.safetensors"), ONE("5", "[4]", "[0,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "dtype_num.safetensors", MR_EFORMAT, "dtype");
  st_file(tmp_path("noshape.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", data, 16, 0);
  EXPECT_FAIL(ctx, "noshape.safetensors", MR_EFORMAT, "shape");
  st_file(tmp_path("shape_str.safetensors"), ONE("\"F32\"", "\"4\"", "[0,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "shape_str.safetensors", MR_EFORMAT, "shape");
  st_file(tmp_path("shape_frac.safetensors"), ONE("\"F32\"", "[1.5]", "[0,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "shape_frac.safetensors", MR_EFORMAT, "shape");
  st_file(tmp_path("nooffsets.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", data, 16, 0);
  EXPECT_FAIL(ctx, "nooffsets.safetensors", MR_EFORMAT, "data_offsets");
  st_file(tmp_path("offsets3.safetensors"), ONE("\"F32\"", "[4]", "[0,8,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "offsets3.safetensors", MR_EFORMAT, "data_offsets");
  st_file(tmp_path("offsets_neg.safetensors"), ONE("\"F32\"", "[4]", "[-16,0]"), data, 16, 0);
  EXPECT_FAIL(ctx, "offsets_neg.safetensors", MR_EFORMAT, "data_offsets");
  st_file(tmp_path("unknown.safetensors"), ONE("\"F8_E4M3\"", "[4]", "[0,4]"), data, 16, 0);
  EXPECT_FAIL(ctx, "unknown.safetensors", MR_EFORMAT, "unknown dtype 'F8_E4M3'");
  st_file(tmp_path("range.safetensors"), ONE("\"F32\"", "[8]", "[0,32]"), data, 16, 0);
  EXPECT_FAIL(ctx, "range.safetensors", MR_EFORMAT, "out of range");
  st_file(tmp_path("range_huge.safetensors"), ONE("\"U8\"", "[16]", "[9007199254740000,9007199254740016]"), data, 16, 0);
  EXPECT_FAIL(ctx, "range_huge.safetensors", MR_EFORMAT, "out of range");
  st_file(tmp_path("endbegin.safetensors"), ONE("\"F32\"", "[1]", "[8,4]"), data, 16, 0);
  EXPECT_FAIL(ctx, "endbegin.safetensors", MR_EFORMAT, "end 4 < begin 8");
  st_file(tmp_path("len.safetensors"), ONE("\"F32\"", "[3]", "[0,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "len.safetensors", MR_EFORMAT, "does not match");
  st_file(tmp_path("overflow.safetensors"),
          ONE("\"F32\"", "[4294967296,4294967296,4294967296]", "[0,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "overflow.safetensors", MR_EFORMAT, "overflows");
  st_file(tmp_path("overlap.safetensors"),
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
          data, 16, 0);
  EXPECT_FAIL(ctx, "overlap.safetensors", MR_EFORMAT, "overlapping");
  st_file(tmp_path("dims9.safetensors"), ONE("\"F32\"", "[1,1,1,1,1,1,1,1,4]", "[0,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "dims9.safetensors", MR_EFORMAT, "too many dims");
  st_file(tmp_path("negdim.safetensors"), ONE("\"F32\"", "[-4]", "[0,16]"), data, 16, 0);
  EXPECT_FAIL(ctx, "negdim.safetensors", MR_EFORMAT, "negative");
  st_file(tmp_path("meta_bad.safetensors"), "{\"__metadata__\": 5}", data, 16, 0);
  EXPECT_FAIL(ctx, "meta_bad.safetensors", MR_EFORMAT, "__metadata__");
  st_file(tmp_path("dup.safetensors"),
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
          data, 16, 0);
  EXPECT_FAIL(ctx, "dup.safetensors", MR_EFORMAT, "duplicate");
  /* 1,200 nested arrays: deeper than cJSON's nesting limit (1,000). */
  size_t k = 0;
  h[k++] = '{';
  memcpy(h + k, "\"a\":", 4);
  k += 4;
  while (k < 1205) h[k++] = '[';
  while (k < 1300) h[k++] = ']';
  h[k++] = '}';
  h[k] = '\0';
  st_file(tmp_path("deep.safetensors"), h, data, 16, 0);
  EXPECT_FAIL(ctx, "deep.safetensors", MR_EFORMAT, "JSON");
#undef ONE

  /* A header of 0x4B50 bytes makes the file start with "PK", like a zip. */
  char *pk = malloc(0x4B50 + 1);
  memset(pk, ' ', 0x4B50);
  pk[0x4B50] = '\0';
  static const char pk_json[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
  memcpy(pk, pk_json, sizeof pk_json - 1);
  st_file(tmp_path("pk.safetensors"), pk, data, 4, 0);
  free(pk);
  mr_weights *w = (mr_weights *)1;
  CHECK(mr_weights_open(ctx, tmp_path("pk.safetensors"), &w) == MR_OK && mr_weights_count(w) == 1);
  mr_weights_free(w);
  unlink(tmp_path("pk.safetensors"));

  w = (mr_weights *)1;
  CHECK(mr_weights_open(ctx, tmp_path("missing.safetensors"), &w) == MR_ENOTFOUND && w == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "missing.safetensors") != NULL);
  w = (mr_weights *)1;
  CHECK(mr_weights_open(ctx, tmpdir, &w) == MR_EIO && w == NULL);
}

/* ------------------------------------------------------------ writer */

static bool no_temp_files(void) {
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  bool ok = true;
  while ((e = readdir(d)) != NULL) {
    if (strstr(e->d_name, ".tmp-") != NULL) ok = false; /* mr_file_temp_name */
  }
  closedir(d);
  return ok;
}

static void test_writer_roundtrip(mr_ctx *ctx) {
  float v[24];
  for (int i = 0; i < 24; i++) v[i] = (float)(i - 7) * 0.25f; /* exact in f16 and bf16 */
  const int64_t s_a[2] = {2, 3}, s_b[1] = {5}, s_c[3] = {2, 2, 2}, s_d[5] = {1, 2, 1, 2, 1}, s_e[1] = {24};
  mr_tensor *t[5] = {0};
  REQUIRE(mr_tensor_from_host(ctx, MR_F32, 2, s_a, MR_F32, v, &t[0]) == MR_OK);
  REQUIRE(mr_tensor_from_host(ctx, MR_F16, 1, s_b, MR_F32, v, &t[1]) == MR_OK);
  REQUIRE(mr_tensor_from_host(ctx, MR_BF16, 3, s_c, MR_F32, v, &t[2]) == MR_OK);
  REQUIRE(mr_tensor_from_host(ctx, MR_F32, 5, s_d, MR_F32, v, &t[3]) == MR_OK);
  REQUIRE(mr_tensor_from_host(ctx, MR_BF16, 1, s_e, MR_F32, v, &t[4]) == MR_OK);
  const char *names[5] = {"zeta.weight", "alpha", "mid.bias", "blocks.0.x", "b\"quoted\\name"};
  char path[512]; /* a copy: tmp_path's buffer is reused by later calls */
  snprintf(path, sizeof path, "%s", tmp_path("out.safetensors"));
  REQUIRE(mr_safetensors_write(ctx, path, 5, names, t, "{\"format\":\"pt\",\"k\":\"v\"}") == MR_OK);
  CHECK(no_temp_files());

  /* Raw layout: 8-byte length, header padded to 8, keys in name order. */
  size_t n;
  uint8_t *raw = mr_test_read_bytes(path, &n);
  REQUIRE(raw != NULL && n >= 8);
  uint64_t hl = 0;
  for (int k = 7; k >= 0; k--) hl = (hl << 8) | raw[k];
  CHECK((8 + hl) % 8 == 0);
  CHECK(n == 8 + hl + 6 * 4 + 5 * 2 + 8 * 2 + 4 * 4 + 24 * 2);
  char *hdr = calloc(1, hl + 1);
  memcpy(hdr, raw + 8, hl);
  const char *pa = strstr(hdr, "\"alpha\""), *pq = strstr(hdr, "\"b\\\"quoted"), *pb = strstr(hdr, "\"blocks.0.x\"");
  const char *pm = strstr(hdr, "\"mid.bias\""), *pz = strstr(hdr, "\"zeta.weight\""), *pmeta = strstr(hdr, "__metadata__");
  CHECK(pa && pq && pb && pm && pz && pmeta);
  CHECK(pa < pq && pq < pb && pb < pm && pm < pz);
  free(hdr);
  free(raw);

  mr_weights *w;
  REQUIRE(mr_weights_open(ctx, path, &w) == MR_OK);
  CHECK(mr_weights_count(w) == 5);
  CHECK(mr_weights_metadata(w) && strstr(mr_weights_metadata(w), "\"k\":\"v\""));
  for (int i = 0; i < 5; i++) {
    int j = mr_weights_find(w, names[i]);
    REQUIRE(j >= 0);
    mr_weight_info info;
    mr_weights_get(w, j, &info);
    CHECK(info.dtype == mr_tensor_dtype(t[i]));
    CHECK(info.ndim == mr_tensor_ndim(t[i]));
    for (int d = 0; d < info.ndim; d++) CHECK(info.shape[d] == mr_tensor_shape(t[i])[d]);
    int64_t numel = mr_tensor_numel(t[i]);
    float back[24];
    mr_convert(MR_F32, back, info.dtype, info.data, (size_t)numel);
    for (int64_t e = 0; e < numel; e++) CHECK(back[e] == v[e]);
    /* and up to the device again */
    mr_tensor *u;
    REQUIRE(mr_weights_to_tensor(ctx, w, j, MR_F32, &u) == MR_OK);
    float dev[24];
    REQUIRE(mr_tensor_read(u, MR_F32, dev, (size_t)numel) == MR_OK);
    CHECK(memcmp(dev, v, (size_t)numel * 4) == 0);
    mr_tensor_free(u);
  }
  mr_tensor *u = (mr_tensor *)1;
  CHECK(mr_weights_to_tensor(ctx, w, 0, MR_I32, &u) == MR_EINVAL && u == NULL);
  u = (mr_tensor *)1;
  CHECK(mr_weights_to_tensor(ctx, w, 99, MR_F32, &u) == MR_EINVAL && u == NULL);
  mr_weights_free(w);

  /* Refusals leave neither the target nor a temp file behind. */
  const char *dup[2] = {"same", "same"};
  mr_tensor *two[2] = {t[0], t[1]};
  CHECK(mr_safetensors_write(ctx, tmp_path("dup.safetensors"), 2, dup, two, NULL) == MR_EINVAL);
  CHECK(strstr(mr_ctx_last_error(ctx), "same") != NULL);
  CHECK(access(tmp_path("dup.safetensors"), F_OK) != 0);
  CHECK(mr_safetensors_write(ctx, tmp_path("meta.safetensors"), 1, names, t, "[1]") == MR_EINVAL);
  CHECK(mr_safetensors_write(ctx, tmp_path("meta.safetensors"), 1, names, t, "{\"a\": 1}") == MR_EINVAL);
  CHECK(access(tmp_path("meta.safetensors"), F_OK) != 0);
  CHECK(mr_safetensors_write(ctx, "/nonexistent-dir/x.safetensors", 1, names, t, NULL) == MR_ENOTFOUND);
  CHECK(no_temp_files());

  /* Zero tensors is a valid (empty) file. */
  CHECK(mr_safetensors_write(ctx, tmp_path("none.safetensors"), 0, NULL, NULL, NULL) == MR_OK);
  REQUIRE(mr_weights_open(ctx, tmp_path("none.safetensors"), &w) == MR_OK);
  CHECK(mr_weights_count(w) == 0 && mr_weights_metadata(w) == NULL);
  mr_weights_free(w);

  /* 6-dim entries cannot become device tensors; the message names them. */
  uint8_t zero[4] = {0};
  st_file(tmp_path("dims6.safetensors"),
          "{\"six.dims\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1],\"data_offsets\":[0,4]}}", zero, 4, 0);
  REQUIRE(mr_weights_open(ctx, tmp_path("dims6.safetensors"), &w) == MR_OK);
  u = (mr_tensor *)1;
  CHECK(mr_weights_to_tensor(ctx, w, 0, MR_F32, &u) == MR_EINVAL && u == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "six.dims") != NULL);
  mr_weights_free(w);

  unlink(path);
  unlink(tmp_path("none.safetensors"));
  unlink(tmp_path("dims6.safetensors"));
  for (int i = 0; i < 5; i++) mr_tensor_free(t[i]);
}

/* ------------------------------------------------------------ hand-made .pth */

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}
static void put8(buf *b, unsigned v) {
  uint8_t c = (uint8_t)v;
  put(b, &c, 1);
}
static void putle(buf *b, uint64_t v, int n) {
  for (int k = 0; k < n; k++) put8(b, (unsigned)(v >> (8 * k)) & 0xff);
}
static void pk_str(buf *b, const char *s) {
  put8(b, 'X');
  putle(b, strlen(s), 4);
  put(b, s, strlen(s));
}
static void pk_global(buf *b, const char *mod, const char *name) {
  put8(b, 'c');
  put(b, mod, strlen(mod));
  put8(b, '\n');
  put(b, name, strlen(name));
  put8(b, '\n');
}
static void pk_int(buf *b, long long v) {
  if (v >= 0 && v < 256) {
    put8(b, 'K');
    put8(b, (unsigned)v);
  } else {
    put8(b, 'J');
    putle(b, (uint64_t)v, 4);
  }
}
static void pk_ints(buf *b, int n, const long long *v) {
  put8(b, '(');
  for (int i = 0; i < n; i++) pk_int(b, v[i]);
  put8(b, 't');
}
/* _rebuild_tensor_v2(storage(key, numel), offset, size, stride, False, OrderedDict()) */
static void pk_tensor(buf *b, const char *storage_type, const char *key, long long numel, long long offset, int nd,
                      const long long *size, const long long *stride) {
  pk_global(b, "torch._utils", "_rebuild_tensor_v2");
  put8(b, '(');
  put8(b, '(');
  pk_str(b, "storage");
  pk_global(b, "torch", storage_type);
  pk_str(b, key);
  pk_str(b, "cpu");
  pk_int(b, numel);
  put8(b, 't');
  put8(b, 'Q');
  pk_int(b, offset);
  pk_ints(b, nd, size);
  pk_ints(b, nd, stride);
  put8(b, 0x89);
  pk_global(b, "collections", "OrderedDict");
  put8(b, ')');
  put8(b, 'R');
  put8(b, 't');
  put8(b, 'R');
}

typedef struct zentry {
  const char *name;
  const void *data;
  size_t n;
  int method;
} zentry;

/* A zip of stored entries (CRCs left 0: the reader does not check them).
   zip64 writes the ZIP64 end records and extra fields even though the file
   is small, which exercises the same paths an 11 GB archive takes. */
static void zip_file(const char *path, int n, const zentry *e, bool zip64) {
  buf b = {0};
  uint64_t *offs = calloc((size_t)n, sizeof *offs);
  for (int i = 0; i < n; i++) {
    offs[i] = b.n;
    putle(&b, 0x04034b50, 4);
    putle(&b, 20, 2);
    putle(&b, 0, 2);
    putle(&b, (uint64_t)e[i].method, 2);
    putle(&b, 0, 4); /* time, date */
    putle(&b, 0, 4); /* crc */
    putle(&b, e[i].n, 4);
    putle(&b, e[i].n, 4);
    putle(&b, strlen(e[i].name), 2);
    putle(&b, 3, 2); /* a little local extra, as torch pads */
    put(&b, e[i].name, strlen(e[i].name));
    put(&b, "\0\0\0", 3);
    put(&b, e[i].data, e[i].n);
  }
  uint64_t cd = b.n;
  for (int i = 0; i < n; i++) {
    putle(&b, 0x02014b50, 4);
    putle(&b, 45, 2);
    putle(&b, 45, 2);
    putle(&b, 0, 2);
    putle(&b, (uint64_t)e[i].method, 2);
    putle(&b, 0, 4);
    putle(&b, 0, 4);
    putle(&b, zip64 ? 0xFFFFFFFFu : e[i].n, 4);
    putle(&b, zip64 ? 0xFFFFFFFFu : e[i].n, 4);
    putle(&b, strlen(e[i].name), 2);
    putle(&b, zip64 ? 28 : 0, 2);
    putle(&b, 0, 2);
    putle(&b, 0, 2);
    putle(&b, 0, 2);
    putle(&b, 0, 4);
    putle(&b, zip64 ? 0xFFFFFFFFu : offs[i], 4);
    put(&b, e[i].name, strlen(e[i].name));
    if (zip64) {
      putle(&b, 1, 2);
      putle(&b, 24, 2);
      putle(&b, e[i].n, 8);
      putle(&b, e[i].n, 8);
      putle(&b, offs[i], 8);
    }
  }
  uint64_t cd_size = b.n - cd;
  if (zip64) {
    uint64_t eocd64 = b.n;
    putle(&b, 0x06064b50, 4);
    putle(&b, 44, 8);
    putle(&b, 45, 2);
    putle(&b, 45, 2);
    putle(&b, 0, 4);
    putle(&b, 0, 4);
    putle(&b, (uint64_t)n, 8);
    putle(&b, (uint64_t)n, 8);
    putle(&b, cd_size, 8);
    putle(&b, cd, 8);
    putle(&b, 0x07064b50, 4);
    putle(&b, 0, 4);
    putle(&b, eocd64, 8);
    putle(&b, 1, 4);
  }
  putle(&b, 0x06054b50, 4);
  putle(&b, 0, 2);
  putle(&b, 0, 2);
  putle(&b, zip64 ? 0xFFFF : (uint64_t)n, 2);
  putle(&b, zip64 ? 0xFFFF : (uint64_t)n, 2);
  putle(&b, zip64 ? 0xFFFFFFFFu : cd_size, 4);
  putle(&b, zip64 ? 0xFFFFFFFFu : cd, 4);
  putle(&b, 0, 2);
  mr_test_write_bytes(path, b.p, b.n);
  free(b.p);
  free(offs);
}

static float storage0[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

/* A .pth of one storage and a pickle; the storage entry's method may be set
   to pretend it is deflated. */
static void pth_file(const char *path, const buf *pkl, int storage_method, bool zip64) {
  zentry e[3] = {
      {"arch/data.pkl", pkl->p, pkl->n, 0},
      {"arch/data/0", storage0, sizeof storage0, storage_method},
      {"arch/version", "3\n", 2, 0},
  };
  zip_file(path, 3, e, zip64);
}

static const long long sz34[2] = {3, 4}, st41[2] = {4, 1}, sz43[2] = {4, 3}, st14[2] = {1, 4};
static const long long one4[1] = {4}, one1[1] = {1}, one3[1] = {3};

/* {"state_dict": {views of one storage}, "epoch": 3} with protocol-4
   opcodes mixed in (FRAME, MEMOIZE, STACK_GLOBAL, LONG1, BINGET). */
static void build_good_pickle(buf *b) {
  put8(b, 0x80);
  put8(b, 4);
  put8(b, 0x95);
  putle(b, 0, 8);
  put8(b, '}');
  put8(b, 0x94); /* memo 0: top dict */
  pk_str(b, "state_dict");
  put8(b, 0x8c); /* SHORT_BINUNICODE + STACK_GLOBAL for OrderedDict */
  put8(b, 11);
  put(b, "collections", 11);
  put8(b, 0x8c);
  put8(b, 11);
  put(b, "OrderedDict", 11);
  put8(b, 0x93);
  put8(b, ')');
  put8(b, 'R');
  put8(b, 'q'); /* BINPUT 1: inner dict */
  put8(b, 1);
  put8(b, '(');
  pk_str(b, "w");
  pk_tensor(b, "FloatStorage", "0", 12, 0, 2, sz34, st41);
  pk_str(b, "wt");
  pk_tensor(b, "FloatStorage", "0", 12, 0, 2, sz43, st14);
  pk_str(b, "row");
  pk_tensor(b, "FloatStorage", "0", 12, 4, 1, one4, one1);
  pk_str(b, "col");
  pk_tensor(b, "FloatStorage", "0", 12, 1, 1, one3, one4);
  pk_str(b, "p");
  pk_global(b, "torch._utils", "_rebuild_parameter");
  put8(b, '(');
  pk_tensor(b, "FloatStorage", "0", 12, 8, 1, one4, one1);
  put8(b, 0x88);
  pk_global(b, "collections", "OrderedDict");
  put8(b, ')');
  put8(b, 'R');
  put8(b, 't');
  put8(b, 'R');
  put8(b, 'u'); /* SETITEMS into the inner dict */
  put8(b, 's'); /* top["state_dict"] = inner */
  put8(b, 'h'); /* BINGET 0 = top dict, to leave it as the result */
  put8(b, 0);
  pk_str(b, "epoch");
  put8(b, 0x8a); /* LONG1 */
  put8(b, 2);
  putle(b, 300, 2);
  put8(b, 's');
  put8(b, 'N'); /* a None left on the stack ... */
  put8(b, 'h'); /* ... and the top dict above it as the result */
  put8(b, 0);
  put8(b, '.');
}

static void check_good_pth(mr_ctx *ctx, const char *name) {
  mr_weights *w;
  mr_status st = mr_weights_open(ctx, tmp_path(name), &w);
  if (st != MR_OK) fprintf(stderr, "%s: %s\n", name, mr_ctx_last_error(ctx));
  REQUIRE(st == MR_OK);
  CHECK(mr_weights_count(w) == 5);
  mr_weight_info info;
  int i = mr_weights_find(w, "state_dict.w");
  REQUIRE(i >= 0);
  mr_weights_get(w, i, &info);
  CHECK(info.dtype == MR_F32 && info.ndim == 2 && info.shape[0] == 3 && info.shape[1] == 4 && info.nbytes == 48);
  CHECK(memcmp(info.data, storage0, 48) == 0);
  i = mr_weights_find(w, "state_dict.wt");
  REQUIRE(i >= 0);
  mr_weights_get(w, i, &info);
  CHECK(info.ndim == 2 && info.shape[0] == 4 && info.shape[1] == 3);
  float wt[12];
  memcpy(wt, info.data, 48);
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 3; c++) CHECK(wt[r * 3 + c] == storage0[c * 4 + r]);
  i = mr_weights_find(w, "state_dict.row");
  REQUIRE(i >= 0);
  mr_weights_get(w, i, &info);
  CHECK(info.nbytes == 16 && memcmp(info.data, storage0 + 4, 16) == 0);
  i = mr_weights_find(w, "state_dict.col");
  REQUIRE(i >= 0);
  mr_weights_get(w, i, &info);
  float col[3];
  memcpy(col, info.data, 12);
  CHECK(col[0] == 1 && col[1] == 5 && col[2] == 9);
  i = mr_weights_find(w, "state_dict.p");
  REQUIRE(i >= 0);
  mr_weights_get(w, i, &info);
  CHECK(info.nbytes == 16 && memcmp(info.data, storage0 + 8, 16) == 0);
  CHECK(mr_weights_find(w, "epoch") == -1);
  mr_weights_free(w);
  unlink(tmp_path(name));
}

static void test_pth_handmade(mr_ctx *ctx) {
  buf good = {0};
  build_good_pickle(&good);
  pth_file(tmp_path("good.pth"), &good, 0, false);
  check_good_pth(ctx, "good.pth");
  pth_file(tmp_path("good64.pth"), &good, 0, true);
  check_good_pth(ctx, "good64.pth");

  zentry be[3] = {{"arch/data.pkl", good.p, good.n, 0}, {"arch/data/0", storage0, sizeof storage0, 0},
                  {"arch/byteorder", "big", 3, 0}};
  zip_file(tmp_path("bigendian.pth"), 3, be, false);
  EXPECT_FAIL(ctx, "bigendian.pth", MR_EUNSUPPORTED, "little-endian");
  be[2].data = "little";
  be[2].n = 6;
  zip_file(tmp_path("little.pth"), 3, be, false);
  check_good_pth(ctx, "little.pth");

  pth_file(tmp_path("deflated.pth"), &good, 8, false);
  EXPECT_FAIL(ctx, "deflated.pth", MR_EUNSUPPORTED, "arch/data/0");

  buf b = {0};
  /* a global outside the allowed set */
  put8(&b, 0x80); put8(&b, 2);
  pk_global(&b, "os", "system");
  pk_str(&b, "echo hi");
  put8(&b, 0x85); put8(&b, 'R'); put8(&b, '.');
  pth_file(tmp_path("global.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "global.pth", MR_EUNSUPPORTED, "'os.system'");
  pth_file(tmp_path("global.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "global.pth", MR_EUNSUPPORTED, "offset 2 (opcode GLOBAL)");

  /* an opcode outside the subset (INT, text protocol 0) */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}');
  put(&b, "I5\n", 3);
  put8(&b, '.');
  pth_file(tmp_path("opcode.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "opcode.pth", MR_EUNSUPPORTED, "offset 3 (opcode INT)");
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, 0xfe); put8(&b, '.');
  pth_file(tmp_path("opbyte.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "opbyte.pth", MR_EUNSUPPORTED, "0xfe");

  /* a view reaching past its storage */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}');
  pk_str(&b, "bad");
  pk_tensor(&b, "FloatStorage", "0", 12, 10, 1, one4, one1);
  put8(&b, 's'); put8(&b, '.');
  pth_file(tmp_path("past.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "past.pth", MR_EFORMAT, "past the end");

  /* a zero-stride view of 2^30 elements over 12 (issue 15: a 4 GiB copy
     from a few hundred bytes): refused before anything is allocated */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}');
  pk_str(&b, "wide");
  static const long long huge[1] = {1ll << 30}, zero[1] = {0};
  pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, huge, zero);
  put8(&b, 's'); put8(&b, '.');
  pth_file(tmp_path("stride0.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "stride0.pth", MR_EFORMAT, "may not be larger than its storage");

  /* a dict reached through the memo from 4 keys at each of 16 levels: 4^16
     names from a few hundred bytes (issue 15), refused by the entry bound */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2);
  put8(&b, '}'); put8(&b, 'q'); put8(&b, 0); /* memo 0: the innermost dict */
  pk_str(&b, "w");
  pk_tensor(&b, "FloatStorage", "0", 12, 0, 1, one4, one1);
  put8(&b, 's');
  for (int level = 1; level <= 15; level++) {
    put8(&b, '}');
    put8(&b, '(');
    for (int k = 0; k < 4; k++) {
      char key[2] = {(char)('a' + k), 0};
      pk_str(&b, key);
      put8(&b, 'h'); put8(&b, (unsigned)(level - 1)); /* the previous level's dict */
    }
    put8(&b, 'u');
    put8(&b, 'q'); put8(&b, (unsigned)level);
  }
  put8(&b, '.');
  pth_file(tmp_path("fanout.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "fanout.pth", MR_EFORMAT, "reaches a dict more than once");

  /* a storage claiming more elements than its entry holds */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}');
  pk_str(&b, "bad");
  pk_tensor(&b, "FloatStorage", "0", 13, 0, 1, one4, one1);
  put8(&b, 's'); put8(&b, '.');
  pth_file(tmp_path("claims.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "claims.pth", MR_EFORMAT, "claims 13");

  /* a storage key with no entry */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}');
  pk_str(&b, "bad");
  pk_tensor(&b, "FloatStorage", "7", 4, 0, 1, one4, one1);
  put8(&b, 's'); put8(&b, '.');
  pth_file(tmp_path("nokey.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "nokey.pth", MR_EFORMAT, "arch/data/7");

  /* a storage type outside the set */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}');
  pk_str(&b, "bad");
  pk_tensor(&b, "ComplexFloatStorage", "0", 4, 0, 1, one4, one1);
  put8(&b, 's'); put8(&b, '.');
  pth_file(tmp_path("stype.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "stype.pth", MR_EUNSUPPORTED, "torch.ComplexFloatStorage");

  /* a list at the top */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, ']'); put8(&b, '.');
  pth_file(tmp_path("list.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "list.pth", MR_EFORMAT, "dict");

  /* no STOP */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}');
  pth_file(tmp_path("nostop.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "nostop.pth", MR_EFORMAT, "STOP");

  /* a dict that contains itself through the memo */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}'); put8(&b, 'q'); put8(&b, 0);
  pk_str(&b, "a");
  put8(&b, 'h'); put8(&b, 0); put8(&b, 's'); put8(&b, '.');
  pth_file(tmp_path("cycle.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "cycle.pth", MR_EFORMAT, "reaches a dict more than once");

  /* 18 distinct dicts nested in each other: deeper than any state dict */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2);
  for (int i = 0; i < 18; i++) {
    put8(&b, '}');
    pk_str(&b, "a");
  }
  put8(&b, '}');
  for (int i = 0; i < 18; i++) put8(&b, 's');
  put8(&b, '.');
  pth_file(tmp_path("deep.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "deep.pth", MR_EFORMAT, "nested deeper");

  /* stack underflow, memo misuse, a string past the end, marks too deep */
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, 's'); put8(&b, '.');
  pth_file(tmp_path("under.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "under.pth", MR_EFORMAT, "underflow");
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, 'j'); putle(&b, 77, 4); put8(&b, '.');
  pth_file(tmp_path("memo.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "memo.pth", MR_EFORMAT, "memo index 77");
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, '}'); put8(&b, 'r'); putle(&b, 0xFFFFFFFFu, 4); put8(&b, '.');
  pth_file(tmp_path("memobig.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "memobig.pth", MR_EFORMAT, "memo index");
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2); put8(&b, 'X'); putle(&b, 1000, 4); put(&b, "abc.", 4);
  pth_file(tmp_path("strlen.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "strlen.pth", MR_EFORMAT, "past the end");
  b.n = 0;
  put8(&b, 0x80); put8(&b, 2);
  for (int i = 0; i < 5000; i++) put8(&b, '(');
  put8(&b, '.');
  pth_file(tmp_path("marks.pth"), &b, 0, false);
  EXPECT_FAIL(ctx, "marks.pth", MR_EFORMAT, "MARK");

  /* zips without a pickle, or with a broken directory */
  zentry e1[1] = {{"x/other.txt", "hi", 2, 0}};
  zip_file(tmp_path("nopkl.pth"), 1, e1, false);
  EXPECT_FAIL(ctx, "nopkl.pth", MR_EFORMAT, "data.pkl");
  mr_test_write_bytes(tmp_path("pk.pth"), "PK\3\4 not really a zip file", 27);
  EXPECT_FAIL(ctx, "pk.pth", MR_EFORMAT, "end-of-central-directory");

  free(b.p);
  free(good.p);
}

/* ------------------------------------------------------------ conformance */

static bool load_pair(mr_ctx *ctx, const char *dir, const char *a, const char *b, mr_weights **wa, mr_weights **wb,
                      double *ms) {
  char pa[1024], pb[1024];
  snprintf(pa, sizeof pa, "%s/%s", dir, a);
  snprintf(pb, sizeof pb, "%s/%s", dir, b);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  mr_status sa = mr_weights_open(ctx, pa, wa);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
  if (sa != MR_OK) fprintf(stderr, "%s: %s\n", a, mr_ctx_last_error(ctx));
  mr_status sb = mr_weights_open(ctx, pb, wb);
  if (sb != MR_OK) fprintf(stderr, "%s: %s\n", b, mr_ctx_last_error(ctx));
  return sa == MR_OK && sb == MR_OK;
}

/* Same names and shapes; values equal after rounding the f32 reference to
   the .pth's dtype (exactly equal when both are f32). */
static void compare_pth(mr_ctx *ctx, const char *dir, const char *pth, const char *ref, mr_dtype want) {
  mr_weights *wp = NULL, *wr = NULL;
  double ms;
  bool ok = load_pair(ctx, dir, pth, ref, &wp, &wr, &ms);
  CHECK(ok);
  if (!ok) {
    mr_weights_free(wp);
    mr_weights_free(wr);
    return;
  }
  printf("  opened %s in %.2f ms (%d tensors)\n", pth, ms, mr_weights_count(wp));
  CHECK(mr_weights_count(wp) == mr_weights_count(wr));
  size_t checked = 0, bad = 0;
  for (int i = 0; i < mr_weights_count(wp) && i < mr_weights_count(wr); i++) {
    mr_weight_info a, b;
    mr_weights_get(wp, i, &a);
    mr_weights_get(wr, i, &b);
    CHECK(strcmp(a.name, b.name) == 0);
    CHECK(a.dtype == want);
    CHECK(b.dtype == MR_F32);
    CHECK(a.ndim == b.ndim);
    bool same_shape = a.ndim == b.ndim;
    for (int d = 0; same_shape && d < a.ndim; d++) same_shape = a.shape[d] == b.shape[d];
    CHECK(same_shape);
    if (!same_shape || a.dtype != want || b.dtype != MR_F32) continue;
    size_t n = b.nbytes / 4;
    float *fa = malloc(n * 4 + 4), *fb = malloc(n * 4 + 4);
    mr_convert(MR_F32, fa, a.dtype, a.data, n);
    memcpy(fb, b.data, n * 4);
    for (size_t k = 0; k < n; k++) {
      /* bf16 keeps 8 significant bits: rounding moves a value by at most
         2^-8 of itself (2^-9 for round-to-nearest, with slack). */
      bool close = want == MR_F32 ? fa[k] == fb[k] : fabsf(fa[k] - fb[k]) <= ldexpf(fabsf(fb[k]), -8);
      if (!close && bad++ < 5) fprintf(stderr, "  %s[%zu]: %g vs %g\n", a.name, k, fa[k], fb[k]);
    }
    checked += n;
    free(fa);
    free(fb);
  }
  CHECK(bad == 0);
  CHECK(checked > 0);
  printf("  %s vs %s: %zu values, %zu outside tolerance\n", pth, ref, checked, bad);
  mr_weights_free(wp);
  mr_weights_free(wr);
}

/* ------------------------------------------------------------ fuzz-ish */

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
  rng_state = rng_state * 1664525u + 1013904223u;
  return rng_state >> 8;
}

/* Opens a corrupted copy: must succeed or fail cleanly; on success every
   byte of every tensor is read so an out-of-range pointer would show (and
   valgrind would name it). */
static int try_open(mr_ctx *ctx, const uint8_t *p, size_t n, unsigned *sum) {
  const char *path = tmp_path("fuzz.bin");
  mr_test_write_bytes(path, p, n);
  mr_weights *w = (mr_weights *)1;
  mr_status st = mr_weights_open(ctx, path, &w);
  if (st != MR_OK) {
    if (w != NULL) mr_test_failures++;
    if (st != MR_EFORMAT && st != MR_EUNSUPPORTED && st != MR_ENOMEM) {
      fprintf(stderr, "fuzz: unexpected %s: %s\n", mr_status_name(st), mr_ctx_last_error(ctx));
      mr_test_failures++;
    }
    return 0;
  }
  for (int i = 0; i < mr_weights_count(w); i++) {
    mr_weight_info info;
    mr_weights_get(w, i, &info);
    const uint8_t *d = info.data;
    for (size_t k = 0; k < info.nbytes; k++) *sum += d[k];
  }
  mr_weights_free(w);
  return 1;
}

static void fuzz_file(mr_ctx *ctx, const char *dir, const char *name, size_t hot_begin, size_t hot_end) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (dir == NULL) snprintf(path, sizeof path, "%s", name);
  size_t n;
  uint8_t *orig = mr_test_read_bytes(path, &n);
  REQUIRE(orig != NULL);
  uint8_t *p = malloc(n);
  unsigned sum = 0;
  int opened = 0, tries = 0;
  if (hot_end > n) hot_end = n;
  /* Truncations: every length in the hot region (header, pickle), a spread
     elsewhere, and every length near the end (a zip's directory). */
  for (size_t len = 0; len < n; len++) {
    bool hot = len >= hot_begin && len < hot_end;
    bool tail = len + 600 >= n;
    if (!(hot || tail || len % 997 == 0)) continue;
    opened += try_open(ctx, orig, len, &sum);
    tries++;
  }
  /* Byte flips in the hot region and near the end. */
  for (int k = 0; k < 1500; k++) {
    memcpy(p, orig, n);
    size_t pos = k % 3 == 2 ? n - 1 - rnd() % (n < 600 ? n : 600) : hot_begin + rnd() % (hot_end - hot_begin);
    p[pos] ^= (uint8_t)(1 + rnd() % 255);
    if (k % 5 == 0) {
      size_t pos2 = hot_begin + rnd() % (hot_end - hot_begin);
      p[pos2] = (uint8_t)rnd();
    }
    opened += try_open(ctx, p, n, &sum);
    tries++;
  }
  printf("  fuzz %s: %d variants, %d opened, the rest refused cleanly (checksum %u)\n", name, tries, opened, sum);
  unlink(tmp_path("fuzz.bin"));
  free(p);
  free(orig);
}

/* A checkpoint split in shards opens as one table: every tensor found with its
   data, a missing shard named, a name in two shards named with both files. */
static void test_shards(mr_ctx *ctx) {
  float v[6] = {1, 2, 3, 4, 5, 6};
  const int64_t s2[1] = {2}, s3[1] = {3};
  mr_tensor *a, *b, *c;
  REQUIRE(mr_tensor_from_host(ctx, MR_F32, 1, s2, MR_F32, v, &a) == MR_OK);
  REQUIRE(mr_tensor_from_host(ctx, MR_F16, 1, s3, MR_F32, v + 2, &b) == MR_OK);
  REQUIRE(mr_tensor_from_host(ctx, MR_F32, 1, s3, MR_F32, v + 3, &c) == MR_OK);
  char p1[512], p2[512], p3[512];
  snprintf(p1, sizeof p1, "%s", tmp_path("model-00001-of-00002.safetensors"));
  snprintf(p2, sizeof p2, "%s", tmp_path("model-00002-of-00002.safetensors"));
  snprintf(p3, sizeof p3, "%s", tmp_path("model-dup.safetensors"));
  const char *n1[1] = {"blocks.0.w"}, *n2[2] = {"blocks.1.w", "head.b"}, *n3[1] = {"blocks.0.w"};
  mr_tensor *t2[2] = {b, c};
  REQUIRE(mr_safetensors_write(ctx, p1, 1, n1, &a, NULL) == MR_OK);
  REQUIRE(mr_safetensors_write(ctx, p2, 2, n2, t2, NULL) == MR_OK);
  REQUIRE(mr_safetensors_write(ctx, p3, 1, n3, &c, NULL) == MR_OK);

  const char *both[2] = {p2, p1};
  mr_weights *w = NULL;
  REQUIRE(mr_weights_open_files(ctx, 2, both, &w) == MR_OK);
  CHECK(mr_weights_count(w) == 3);
  const char *names[3] = {"blocks.0.w", "blocks.1.w", "head.b"};
  const float *want[3] = {v, v + 2, v + 3};
  const int64_t lens[3] = {2, 3, 3};
  for (int i = 0; i < 3; i++) {
    int j = mr_weights_find(w, names[i]);
    REQUIRE(j >= 0);
    mr_tensor *u;
    REQUIRE(mr_weights_to_tensor(ctx, w, j, MR_F32, &u) == MR_OK);
    float got[3];
    REQUIRE(mr_tensor_read(u, MR_F32, got, (size_t)lens[i]) == MR_OK);
    for (int e = 0; e < lens[i]; e++) CHECK(got[e] == want[i][e]);
    mr_tensor_free(u);
  }
  mr_weights_free(w);

  const char *dup[3] = {p1, p2, p3};
  w = (mr_weights *)1;
  CHECK(mr_weights_open_files(ctx, 3, dup, &w) == MR_EFORMAT && w == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "blocks.0.w") && strstr(mr_ctx_last_error(ctx), "model-00001-of") &&
        strstr(mr_ctx_last_error(ctx), "model-dup"));

  const char *missing[2] = {p1, tmp_path("model-00003-of-00003.safetensors")};
  w = (mr_weights *)1;
  CHECK(mr_weights_open_files(ctx, 2, missing, &w) == MR_ENOTFOUND && w == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "model-00003-of-00003") != NULL);
  CHECK(mr_weights_open_files(ctx, 0, missing, &w) == MR_EINVAL && w == NULL);

  unlink(p1);
  unlink(p2);
  unlink(p3);
  mr_tensor_free(a);
  mr_tensor_free(b);
  mr_tensor_free(c);
}

int main(int argc, char **argv) {
  const char *data = argc > 1 ? argv[1] : "tests/conformance/data";
  snprintf(tmpdir, sizeof tmpdir, "/tmp/mr_test_io.XXXXXX");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  mr_ctx *ctx = mr_test_ctx();
  printf("safetensors: all dtypes\n");
  test_safetensors_all_dtypes(ctx);
  printf("safetensors: broken files\n");
  test_safetensors_broken(ctx);
  printf("safetensors: write round trip\n");
  test_writer_roundtrip(ctx);
  printf("safetensors: shards\n");
  test_shards(ctx);
  printf("pth: hand-made archives\n");
  test_pth_handmade(ctx);
  printf("pth: conformance copies\n");
  compare_pth(ctx, data, "wan/t5_encoder_tiny-bf16.pth", "wan/t5_encoder_tiny.safetensors", MR_BF16);
  compare_pth(ctx, data, "wan/wan21_vae_tiny.pth", "wan/wan21_vae_tiny.safetensors", MR_F32);
  printf("fuzz: truncations and flipped bytes\n");
  fuzz_file(ctx, data, "wan/t5_encoder_tiny.safetensors", 0, 4096);
  fuzz_file(ctx, data, "wan/t5_encoder_tiny-bf16.pth", 0, 2100);
  /* the hand-made archive has strided views, so corrupt strides and
     offsets reach the gather path */
  buf good = {0};
  build_good_pickle(&good);
  char good_path[512];
  snprintf(good_path, sizeof good_path, "%s", tmp_path("fuzz_good.pth"));
  pth_file(good_path, &good, 0, true);
  fuzz_file(ctx, NULL, good_path, 0, (size_t)-1);
  unlink(good_path);
  free(good.p);

  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  rmdir(tmpdir);
  return mr_test_finish("test_io");
}
