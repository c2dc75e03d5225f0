/* engine/media: still images in and out, EXIF orientation, fitting, the
   streaming video writer (MP4, animated WebP, PNG sequences), video input,
   atomic writes, and the errors for missing, garbage and truncated files.
   Files are made in a temporary folder by the engine, by byte surgery here
   (EXIF segments, WebP chunks) and by the ffmpeg CLI; MP4 files are checked
   with ffprobe, animated WebP by walking its RIFF chunks here. */
#define _GNU_SOURCE
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Expects failure st with a message containing each given word. */
#define CHECK_FAIL(ctx, expr, want, w1, w2)                                        \
  do {                                                                             \
    mr_status s_ = (expr);                                                         \
    const char *m_ = mr_ctx_last_error(ctx);                                       \
    if (s_ != (want) || strstr(m_, (w1)) == NULL || strstr(m_, (w2)) == NULL) {    \
      fprintf(stderr, "%s:%d: %s -> %s '%s'; wanted %s with '%s', '%s'\n",         \
              __FILE__, __LINE__, #expr, mr_status_name(s_), m_,                   \
              mr_status_name(want), (w1), (w2));                                   \
      mr_test_failures++;                                                          \
    }                                                                              \
  } while (0)

static char tmpdir[256];

static const char *tmp_path(const char *name) {
  static char bufs[4][512];
  static int k;
  char *b = bufs[k++ % 4];
  snprintf(b, 512, "%s/%s", tmpdir, name);
  return b;
}

static bool exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

/* Entries of a folder (without . and ..), and whether any is a temporary. */
static int count_entries(const char *dir, int *temps) {
  DIR *d = opendir(dir);
  if (d == NULL) return -1;
  int n = 0;
  if (temps) *temps = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    n++;
    if (temps && strstr(e->d_name, ".tmp-")) (*temps)++;
  }
  closedir(d);
  return n;
}

/* A fresh empty folder under tmpdir. */
static const char *fresh_dir(const char *name) {
  const char *p = tmp_path(name);
  mkdir(p, 0755);
  if (count_entries(p, NULL) != 0) {
    fprintf(stderr, "%s is not empty\n", p);
    exit(1);
  }
  return p;
}

/* Runs a shell command and returns its stdout (malloc'd). */
static char *run(const char *cmd) {
  FILE *p = popen(cmd, "r");
  if (p == NULL) return NULL;
  size_t cap = 4096, n = 0;
  char *s = malloc(cap);
  size_t k;
  while ((k = fread(s + n, 1, cap - n - 1, p)) > 0) {
    n += k;
    if (n + 1 >= cap) s = realloc(s, cap *= 2);
  }
  s[n] = '\0';
  int rc = pclose(p);
  if (rc != 0) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
  return s;
}

/* The value after "key=" in ffprobe's default output, or "". */
static const char *field(const char *out, const char *key, char *buf, size_t cap) {
  char pat[64];
  snprintf(pat, sizeof pat, "%s=", key);
  const char *p = out;
  buf[0] = '\0';
  while ((p = strstr(p, pat)) != NULL) {
    if (p == out || p[-1] == '\n') {
      p += strlen(pat);
      size_t i = 0;
      while (p[i] && p[i] != '\n' && i + 1 < cap) buf[i] = p[i], i++;
      buf[i] = '\0';
      return buf;
    }
    p++;
  }
  return buf;
}

/* Wan's byte for a value: clamp to [-1, 1], (x + 1) / 2 * 255, truncate. */
static uint8_t wan_byte(float x) {
  if (!(x >= -1.0f)) x = -1.0f;
  if (x > 1.0f) x = 1.0f;
  return (uint8_t)((x + 1.0f) / 2.0f * 255.0f);
}

static float from_byte(uint8_t b) { return ((float)b / 255.0f - 0.5f) / 0.5f; }

/* A [3, F, H, W] (ndim 4) or [3, H, W] tensor from fn(c, f, y, x) in [-1, 1]. */
typedef float (*pixel_fn)(int c, int f, int y, int x);

static mr_tensor *make_frames(mr_ctx *ctx, int nd, int f, int h, int w, pixel_fn fn) {
  size_t n = (size_t)3 * f * h * w;
  float *x = malloc(n * sizeof *x);
  for (int c = 0; c < 3; c++)
    for (int k = 0; k < f; k++)
      for (int y = 0; y < h; y++)
        for (int i = 0; i < w; i++) x[(((size_t)c * f + k) * h + y) * w + i] = fn(c, k, y, i);
  int64_t s4[4] = {3, f, h, w}, s3[3] = {3, h, w};
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, nd, nd == 4 ? s4 : s3, MR_F32, x, &t));
  free(x);
  return t;
}

/* Smooth colours with a little out-of-range overshoot at the corners. */
static float smooth(int c, int f, int y, int x) {
  return -1.1f + 2.2f * (float)((x * (c + 1) + y * (3 - c) + 5 * f) % 97) / 96.0f;
}

/* Detail in brightness, little in colour: what lossy codecs keep well. */
static float gentle(int c, int f, int y, int x) {
  return 0.7f * sinf(0.2f * x + 0.15f * y + 0.3f * f) + 0.1f * (c - 1);
}

/* Smooth everywhere, changing from frame to frame. */
static float moving(int c, int f, int y, int x) {
  return 0.8f * sinf(0.15f * x + 0.1f * y * (c + 1) + 0.3f * f + c);
}

static uint32_t noise_state = 12345;
static float noise(int c, int f, int y, int x) {
  (void)c, (void)f, (void)y, (void)x;
  noise_state = noise_state * 1664525u + 1013904223u;
  return (float)(noise_state >> 8) / 8388608.0f - 1.0f;
}

/* Reads an image expecting success; returns its values (malloc'd). */
static float *load(mr_ctx *ctx, const char *path, const mr_image_read_opts *o, int64_t *h, int64_t *w,
                   mr_image_info *info) {
  mr_tensor *t = NULL;
  mr_status st = mr_image_read(ctx, path, o, &t, info);
  if (st != MR_OK) {
    fprintf(stderr, "mr_image_read(%s): %s\n", path, mr_ctx_last_error(ctx));
    mr_test_failures++;
    return NULL;
  }
  CHECK(mr_tensor_ndim(t) == 3 && mr_tensor_shape(t)[0] == 3);
  *h = mr_tensor_shape(t)[1];
  *w = mr_tensor_shape(t)[2];
  float *v = mr_test_read(ctx, t);
  mr_tensor_free(t);
  return v;
}

/* ----------------------------------------------------------- stills */

static void test_stills(mr_ctx *ctx) {
  const int H = 23, W = 37; /* odd on purpose */
  mr_tensor *img = make_frames(ctx, 3, 1, H, W, smooth);
  mr_tensor *soft = make_frames(ctx, 3, 1, H, W, gentle); /* for the lossy codecs */
  float *src = mr_test_read(ctx, img), *src_soft = mr_test_read(ctx, soft);
  size_t n = (size_t)3 * H * W;
  struct {
    const char *name;
    bool lossless;
    int quality;
    double max_mean; /* mean |error| in bytes */
  } cases[] = {{"a.png", true, 0, 0}, {"a.webp", true, 0, 0}, {"b.webp", false, 0, 2.0}, {"a.jpg", false, 0, 1.2},
               {"q40.jpeg", false, 40, 3.0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    const char *path = tmp_path(cases[k].name);
    mr_image_write_opts wo = mr_image_write_opts_default();
    wo.lossless = cases[k].lossless;
    wo.quality = cases[k].quality;
    const float *ref = cases[k].lossless ? src : src_soft;
    CHECK_OK(ctx, mr_image_write(ctx, path, cases[k].lossless ? img : soft, &wo));
    int64_t h, w;
    mr_image_info info;
    float *got = load(ctx, path, NULL, &h, &w, &info);
    if (got == NULL) continue;
    CHECK(h == H && w == W);
    CHECK(info.width == W && info.height == H && info.orientation == 1 && !info.animated);
    double sum = 0;
    int exact = 0;
    for (size_t i = 0; i < n; i++) {
      float want = from_byte(wan_byte(ref[i]));
      sum += fabs(got[i] - want) * 127.5;
      exact += fabsf(got[i] - want) < 1e-6f;
    }
    double mean = sum / n;
    if (cases[k].lossless) {
      if (exact != (int)n) fprintf(stderr, "%s: %d of %zu values exact\n", cases[k].name, exact, n);
      CHECK(exact == (int)n);
    } else {
      if (mean > cases[k].max_mean || getenv("MR_TEST_VERBOSE"))
        fprintf(stderr, "%s: mean error %.2f bytes\n", cases[k].name, mean);
      CHECK(mean <= cases[k].max_mean);
    }
    free(got);
  }
  /* [3, 1, H, W] is an image too; f16 storage reads the same bytes. */
  int64_t s4[4] = {3, 1, H, W};
  mr_tensor *v4 = NULL, *h16 = NULL;
  CHECK_OK(ctx, mr_tensor_reshape(img, 4, s4, &v4));
  CHECK_OK(ctx, mr_tensor_cast(img, MR_F16, &h16));
  CHECK_OK(ctx, mr_image_write(ctx, tmp_path("v4.png"), v4, NULL));
  CHECK_OK(ctx, mr_image_write(ctx, tmp_path("f16.png"), h16, NULL));
  size_t na, nb;
  uint8_t *a = mr_test_read_bytes(tmp_path("v4.png"), &na), *b = mr_test_read_bytes(tmp_path("a.png"), &nb);
  CHECK(a && b && na == nb && memcmp(a, b, na) == 0);
  free(a);
  free(b);
  mr_image_read_opts ro = mr_image_read_opts_default();
  ro.dtype = MR_BF16;
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_image_read(ctx, tmp_path("a.png"), &ro, &t, NULL));
  CHECK(t && mr_tensor_dtype(t) == MR_BF16);
  mr_tensor_free(t);
  /* misuse */
  int64_t bad_shape[3] = {4, 5, 6};
  mr_tensor *bad = NULL;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 3, bad_shape, &bad));
  CHECK_FAIL(ctx, mr_image_write(ctx, tmp_path("bad.png"), bad, NULL), MR_EINVAL, "bad.png", "4x5x6");
  CHECK_FAIL(ctx, mr_image_write(ctx, tmp_path("x.bmp"), img, NULL), MR_EUNSUPPORTED, "x.bmp", ".bmp");
  CHECK_FAIL(ctx, mr_image_write(ctx, tmp_path("nodir/x.png"), img, NULL), MR_ENOTFOUND, "nodir/x.png", "No such");
  CHECK(!exists(tmp_path("bad.png")) && !exists(tmp_path("x.bmp")));
  mr_tensor_free(bad);
  mr_tensor_free(v4);
  mr_tensor_free(h16);
  mr_tensor_free(img);
  mr_tensor_free(soft);
  free(src);
  free(src_soft);
}

/* ------------------------------------------------------------ EXIF */

/* A 3x2 grid of 16-pixel blocks, a different pure colour each. */
static const uint8_t grid_colors[6][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255},
                                         {255, 255, 0}, {0, 255, 255}, {255, 0, 255}};
static float grid(int c, int f, int y, int x) {
  (void)f;
  return from_byte(grid_colors[(y / 16) * 3 + x / 16][c]);
}

/* TIFF data with IFD0 holding only the orientation. */
static size_t tiff_orientation(uint8_t *p, int o, bool le) {
  static const uint8_t be[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
  static const uint8_t li[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  memcpy(p, le ? li : be, sizeof be);
  p[le ? 18 : 19] = (uint8_t)o;
  return sizeof be;
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}
static void put_le32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

/* JPEG: an APP1 "Exif" segment right after SOI. */
static void jpeg_with_exif(const char *src, const char *dst, int o, bool le) {
  size_t n;
  uint8_t *d = mr_test_read_bytes(src, &n);
  uint8_t seg[64];
  size_t t = tiff_orientation(seg + 10, o, le);
  seg[0] = 0xFF, seg[1] = 0xE1;
  seg[2] = (uint8_t)((2 + 6 + t) >> 8), seg[3] = (uint8_t)(2 + 6 + t);
  memcpy(seg + 4, "Exif\0\0", 6);
  uint8_t *out = malloc(n + 10 + t);
  memcpy(out, d, 2);
  memcpy(out + 2, seg, 10 + t);
  memcpy(out + 12 + t, d + 2, n - 2);
  mr_test_write_bytes(dst, out, n + 10 + t);
  free(out);
  free(d);
}

/* PNG: an eXIf chunk right after IHDR. */
static void png_with_exif(const char *src, const char *dst, int o) {
  size_t n;
  uint8_t *d = mr_test_read_bytes(src, &n);
  uint8_t chunk[64];
  size_t t = tiff_orientation(chunk + 8, o, false);
  put_be32(chunk, (uint32_t)t);
  memcpy(chunk + 4, "eXIf", 4);
  put_be32(chunk + 8 + t, crc32_png(chunk + 4, 4 + t));
  size_t cut = 8 + 25; /* signature + IHDR */
  uint8_t *out = malloc(n + 12 + t);
  memcpy(out, d, cut);
  memcpy(out + cut, chunk, 12 + t);
  memcpy(out + cut + 12 + t, d + cut, n - cut);
  mr_test_write_bytes(dst, out, n + 12 + t);
  free(out);
  free(d);
}

/* WebP: a simple (VP8L) file rewritten as VP8X + the image chunk + EXIF. */
static void webp_with_exif(const char *src, const char *dst, int o, int w, int h) {
  size_t n;
  uint8_t *d = mr_test_read_bytes(src, &n);
  if (memcmp(d + 12, "VP8", 3) != 0 || d[15] == 'X') {
    fprintf(stderr, "%s: expected a simple WebP\n", src);
    exit(1);
  }
  uint8_t *out = malloc(n + 128);
  size_t k = 0;
  memcpy(out, "RIFF\0\0\0\0WEBPVP8X", 16);
  k = 16;
  put_le32(out + k, 10), k += 4;
  uint8_t x[10] = {0x08, 0, 0, 0, (uint8_t)(w - 1), (uint8_t)((w - 1) >> 8), 0, (uint8_t)(h - 1), (uint8_t)((h - 1) >> 8), 0};
  memcpy(out + k, x, 10), k += 10;
  memcpy(out + k, d + 12, n - 12), k += n - 12;
  memcpy(out + k, "EXIF", 4), k += 4;
  size_t t = tiff_orientation(out + k + 4, o, true);
  put_le32(out + k, (uint32_t)t), k += 4 + t;
  if (t & 1) out[k++] = 0;
  put_le32(out + 4, (uint32_t)(k - 8));
  mr_test_write_bytes(dst, out, k);
  free(out);
  free(d);
}

/* Where the stored top-left, top-right and bottom-left corners appear for
   each orientation (TIFF 6.0 / EXIF: 0 TL, 1 TR, 2 BL, 3 BR). */
static const int corner_dest[9][3] = {
  {0, 0, 0}, {0, 1, 2}, {1, 0, 3}, {3, 2, 1}, {2, 3, 0}, {0, 2, 1}, {1, 3, 0}, {3, 1, 2}, {2, 0, 3}};

static void check_corners(const float *v, int64_t h, int64_t w, int o, const char *what) {
  const int stored[3] = {0, 2, 3}; /* block colours at the stored TL, TR, BL */
  for (int k = 0; k < 3; k++) {
    int corner = corner_dest[o][k];
    int64_t x = corner & 1 ? w - 8 : 7, y = corner & 2 ? h - 8 : 7;
    bool ok = true;
    for (int c = 0; c < 3; c++) {
      float want = from_byte(grid_colors[stored[k]][c]);
      float got = v[(size_t)c * h * w + (size_t)y * w + (size_t)x];
      ok = ok && fabsf(got - want) < 0.12f;
    }
    if (!ok) {
      fprintf(stderr, "%s orientation %d: stored corner %d not at displayed corner %d\n", what, o, k, corner);
      mr_test_failures++;
    }
  }
}

static void test_exif(mr_ctx *ctx) {
  mr_tensor *img = make_frames(ctx, 3, 1, 32, 48, grid);
  mr_image_write_opts wo = mr_image_write_opts_default();
  CHECK_OK(ctx, mr_image_write(ctx, tmp_path("grid.jpg"), img, &wo));
  CHECK_OK(ctx, mr_image_write(ctx, tmp_path("grid.png"), img, &wo));
  wo.lossless = true;
  CHECK_OK(ctx, mr_image_write(ctx, tmp_path("grid.webp"), img, &wo));
  for (int o = 1; o <= 8; o++) {
    for (int kind = 0; kind < 4; kind++) {
      const char *dst = tmp_path("exif.img");
      if (kind == 0) jpeg_with_exif(tmp_path("grid.jpg"), dst, o, false);
      else if (kind == 1) jpeg_with_exif(tmp_path("grid.jpg"), dst, o, true);
      else if (kind == 2) png_with_exif(tmp_path("grid.png"), dst, o);
      else webp_with_exif(tmp_path("grid.webp"), dst, o, 48, 32);
      int64_t h, w;
      mr_image_info info;
      float *v = load(ctx, dst, NULL, &h, &w, &info);
      if (v == NULL) continue;
      bool swap = o >= 5;
      CHECK(h == (swap ? 48 : 32) && w == (swap ? 32 : 48));
      CHECK(info.orientation == o && info.width == w && info.height == h);
      static const char *names[] = {"JPEG (MM)", "JPEG (II)", "PNG eXIf", "WebP EXIF"};
      check_corners(v, h, w, o, names[kind]);
      free(v);
    }
  }
  mr_tensor_free(img);
}

/* ------------------------------------------------------------- fitting */

/* 64x32: left half red, right half blue, a green column at x = 0. */
static float halves(int c, int f, int y, int x) {
  (void)f, (void)y;
  if (x == 0) return c == 1 ? 1.0f : -1.0f;
  return (x < 32 ? c == 0 : c == 2) ? 1.0f : -1.0f;
}

static float at(const float *v, int64_t h, int64_t w, int c, int64_t y, int64_t x) {
  return v[(size_t)c * h * w + (size_t)y * w + (size_t)x];
}

static void test_fit(mr_ctx *ctx) {
  mr_tensor *img = make_frames(ctx, 3, 1, 32, 64, halves);
  const char *path = tmp_path("halves.png");
  CHECK_OK(ctx, mr_image_write(ctx, path, img, NULL));
  mr_tensor_free(img);
  int64_t h, w;
  mr_image_read_opts o = mr_image_read_opts_default();

  /* crop 32x32: the centre, whole pixels (scale 1): columns 16..47 */
  o.resize.width = 32, o.resize.height = 32;
  float *v = load(ctx, path, &o, &h, &w, NULL);
  REQUIRE(v && h == 32 && w == 32);
  CHECK(at(v, h, w, 0, 5, 0) == 1.0f && at(v, h, w, 2, 5, 0) == -1.0f);   /* x 16: red */
  CHECK(at(v, h, w, 0, 5, 15) == 1.0f && at(v, h, w, 2, 5, 16) == 1.0f);  /* x 31 red, x 32 blue */
  CHECK(at(v, h, w, 1, 5, 0) == -1.0f);                                    /* the green column is cut */
  free(v);

  /* crop with a scale: 16x16 from 64x32 covers 32x32 source pixels, halved */
  o.resize.width = 16, o.resize.height = 16;
  v = load(ctx, path, &o, &h, &w, NULL);
  REQUIRE(v && h == 16 && w == 16);
  CHECK(fabsf(at(v, h, w, 0, 8, 2) - 1.0f) < 1e-3f && fabsf(at(v, h, w, 2, 8, 13) - 1.0f) < 1e-3f);
  free(v);

  /* pad 64x64 on white: the picture in rows 16..47, white above and below */
  o.resize.width = 64, o.resize.height = 64;
  o.resize.fit = MR_FIT_PAD;
  o.resize.pad_color[0] = o.resize.pad_color[1] = o.resize.pad_color[2] = 255;
  v = load(ctx, path, &o, &h, &w, NULL);
  REQUIRE(v && h == 64 && w == 64);
  for (int c = 0; c < 3; c++) {
    CHECK(at(v, h, w, c, 0, 10) == 1.0f && at(v, h, w, c, 15, 40) == 1.0f && at(v, h, w, c, 48, 5) == 1.0f &&
          at(v, h, w, c, 63, 63) == 1.0f);
  }
  CHECK(at(v, h, w, 1, 16, 0) == 1.0f && at(v, h, w, 0, 16, 0) == -1.0f); /* green column, first picture row */
  CHECK(at(v, h, w, 0, 47, 10) == 1.0f && at(v, h, w, 2, 47, 50) == 1.0f);
  free(v);

  /* pad with a scale: 32x32 -> picture 32x16 in rows 8..23 */
  o.resize.width = 32, o.resize.height = 32;
  o.resize.pad_color[0] = 0, o.resize.pad_color[1] = 128, o.resize.pad_color[2] = 0;
  v = load(ctx, path, &o, &h, &w, NULL);
  REQUIRE(v && h == 32 && w == 32);
  CHECK(at(v, h, w, 1, 7, 16) == from_byte(128) && at(v, h, w, 1, 24, 16) == from_byte(128));
  CHECK(fabsf(at(v, h, w, 0, 15, 8) - 1.0f) < 1e-3f && fabsf(at(v, h, w, 2, 15, 24) - 1.0f) < 1e-3f);
  free(v);

  /* stretch: any size */
  o.resize.fit = MR_FIT_STRETCH;
  o.resize.width = 20, o.resize.height = 50;
  v = load(ctx, path, &o, &h, &w, NULL);
  REQUIRE(v && h == 50 && w == 20);
  CHECK(fabsf(at(v, h, w, 0, 25, 5) - 1.0f) < 1e-3f && fabsf(at(v, h, w, 2, 25, 15) - 1.0f) < 1e-3f);
  free(v);

  /* one side given: the other follows the aspect ratio */
  o = mr_image_read_opts_default();
  o.resize.width = 32;
  v = load(ctx, path, &o, &h, &w, NULL);
  CHECK(v && h == 16 && w == 32);
  free(v);
  o.resize.width = 0, o.resize.height = 8;
  v = load(ctx, path, &o, &h, &w, NULL);
  CHECK(v && h == 8 && w == 16);
  free(v);

  /* area filter: a 2x2 checkerboard shrunk by 2 is flat grey */
  mr_tensor *cb = NULL;
  {
    float data[3 * 8 * 8];
    for (int c = 0; c < 3; c++)
      for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) data[(c * 8 + y) * 8 + x] = (x + y) % 2 ? 1.0f : -1.0f;
    int64_t s[3] = {3, 8, 8};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 3, s, MR_F32, data, &cb));
  }
  CHECK_OK(ctx, mr_image_write(ctx, tmp_path("cb.png"), cb, NULL));
  mr_tensor_free(cb);
  for (int f = MR_FILTER_BICUBIC; f <= MR_FILTER_AREA; f++) {
    o = mr_image_read_opts_default();
    o.resize.width = 4, o.resize.height = 4;
    o.resize.filter = (mr_filter)f;
    v = load(ctx, tmp_path("cb.png"), &o, &h, &w, NULL);
    REQUIRE(v && h == 4 && w == 4);
    /* the mean of -1 and 1: everywhere for the box, inside for the others
       (the border clamps their taps) */
    bool flat = true;
    for (int i = 0; i < 48; i++) {
      int y = (i / 4) % 4, x = i % 4;
      bool inner = x >= 1 && x <= 2 && y >= 1 && y <= 2;
      if (f == MR_FILTER_AREA || inner) flat = flat && fabsf(v[i]) < (f == MR_FILTER_LANCZOS ? 0.05f : f == MR_FILTER_BICUBIC ? 1e-3f : 1e-5f);
    }
    if (!flat) fprintf(stderr, "filter %d: checkerboard not flat (%g %g %g)\n", f, v[0], v[5], v[6]);
    CHECK(flat);
    free(v);
  }

  /* multiple with the image's own size: centre crop, no resampling */
  mr_tensor *sm = make_frames(ctx, 3, 1, 23, 37, smooth);
  float *src = mr_test_read(ctx, sm);
  CHECK_OK(ctx, mr_image_write(ctx, tmp_path("odd.png"), sm, NULL));
  o = mr_image_read_opts_default();
  o.resize.multiple = 16;
  v = load(ctx, tmp_path("odd.png"), &o, &h, &w, NULL);
  REQUIRE(v && h == 16 && w == 32);
  bool same = true;
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < 16; y++)
      for (int x = 0; x < 32; x++)
        same = same && at(v, h, w, c, y, x) == from_byte(wan_byte(src[(size_t)c * 23 * 37 + (size_t)(y + 3) * 37 + x + 2]));
  CHECK(same);
  free(v);
  /* with a target size too: rounded down */
  o.resize.width = 50, o.resize.height = 40;
  v = load(ctx, tmp_path("odd.png"), &o, &h, &w, NULL);
  CHECK(v && h == 32 && w == 48);
  free(v);
  mr_tensor *t = NULL;
  o.resize.width = 0, o.resize.height = 0, o.resize.multiple = 64;
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("odd.png"), &o, &t, NULL), MR_EFORMAT, "odd.png", "zero size");
  CHECK(t == NULL);
  o.resize.multiple = 0, o.resize.width = -4;
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("odd.png"), &o, &t, NULL), MR_EINVAL, "odd.png", "-4");
  mr_tensor_free(sm);
  free(src);
}

/* Transparency: composited over the pad colour, or dropped. */
static void test_alpha(mr_ctx *ctx) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "ffmpeg -v error -y -f lavfi -i 'color=c=0xFF000080:s=8x6,format=rgba' -frames:v 1 '%s' && "
           "ffmpeg -v error -y -f lavfi -i 'color=c=0xFF000080:s=8x6,format=rgba' -frames:v 1 -c:v libwebp "
           "-lossless 1 '%s'",
           tmp_path("alpha.png"), tmp_path("alpha.webp"));
  free(run(cmd));
  const char *files[2] = {tmp_path("alpha.png"), tmp_path("alpha.webp")};
  for (int k = 0; k < 2; k++) {
    mr_image_read_opts o = mr_image_read_opts_default();
    o.resize.pad_color[0] = o.resize.pad_color[1] = o.resize.pad_color[2] = 255;
    int64_t h, w;
    mr_image_info info;
    float *v = load(ctx, files[k], &o, &h, &w, &info);
    if (v == NULL) continue;
    CHECK(info.has_alpha && h == 6 && w == 8);
    /* red at alpha 128/255 over white: (255, 127, 127) */
    CHECK(fabsf(v[0] - 1.0f) < 1e-5f && fabsf(v[48] - from_byte(127)) < 0.01f && fabsf(v[96] - from_byte(127)) < 0.01f);
    free(v);
    o.resize.drop_alpha = true;
    v = load(ctx, files[k], &o, &h, &w, &info);
    if (v) CHECK(v[0] == 1.0f && v[48] == -1.0f && v[96] == -1.0f);
    free(v);
  }
}

/* ---------------------------------------------------------------- video */


/* Reads a whole video expecting success; returns its values. */
static float *load_video(mr_ctx *ctx, const char *path, const mr_video_read_opts *o, int64_t shape[4],
                         mr_video_info *info) {
  mr_tensor *t = NULL;
  mr_status st = mr_video_read(ctx, path, o, &t, info);
  if (st != MR_OK) {
    fprintf(stderr, "mr_video_read(%s): %s\n", path, mr_ctx_last_error(ctx));
    mr_test_failures++;
    return NULL;
  }
  CHECK(mr_tensor_ndim(t) == 4 && mr_tensor_shape(t)[0] == 3);
  memcpy(shape, mr_tensor_shape(t), 4 * sizeof(int64_t));
  float *v = mr_test_read(ctx, t);
  mr_tensor_free(t);
  return v;
}

/* Mean |a - Wan's bytes of src| in bytes. */
static double mean_err(const float *got, const float *src, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += fabs(got[i] - from_byte(wan_byte(src[i]))) * 127.5;
  return n ? s / (double)n : 0;
}

/* Exactly Wan's bytes (values within float rounding of b / 127.5 - 1). */
static bool same_bytes(const float *got, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (fabsf(got[i] - from_byte(wan_byte(src[i]))) > 1e-6f) return false;
  return true;
}

static char *ffprobe(const char *path) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -select_streams v:0 -count_frames -show_entries "
           "stream=codec_name,width,height,pix_fmt,r_frame_rate,nb_read_frames,color_space,color_range "
           "-of default=nw=1 '%s'",
           path);
  return run(cmd);
}

static void check_probe(const char *path, const char *codec, int w, int h, const char *pix, const char *rate, int n) {
  int before = mr_test_failures;
  char *out = ffprobe(path);
  char b[64], want[32];
  CHECK(strcmp(field(out, "codec_name", b, sizeof b), codec) == 0);
  snprintf(want, sizeof want, "%d", w);
  CHECK(strcmp(field(out, "width", b, sizeof b), want) == 0);
  snprintf(want, sizeof want, "%d", h);
  CHECK(strcmp(field(out, "height", b, sizeof b), want) == 0);
  CHECK(strcmp(field(out, "pix_fmt", b, sizeof b), pix) == 0);
  CHECK(strcmp(field(out, "r_frame_rate", b, sizeof b), rate) == 0);
  snprintf(want, sizeof want, "%d", n);
  CHECK(strcmp(field(out, "nb_read_frames", b, sizeof b), want) == 0);
  if (mr_test_failures != before) fprintf(stderr, "ffprobe %s:\n%s", path, out);
  free(out);
}

static void test_mp4(mr_ctx *ctx) {
  const char *dir = fresh_dir("mp4");
  char path[600];
  snprintf(path, sizeof path, "%s/a.mp4", dir);
  mr_tensor *all = make_frames(ctx, 4, 9, 48, 64, moving);
  float *src = mr_test_read(ctx, all);
  /* as a chunked VAE decode writes: frame 0, then 8 more (views of one tensor) */
  mr_tensor *c0 = NULL, *c1 = NULL;
  CHECK_OK(ctx, mr_tensor_slice(all, 1, 0, 1, 1, &c0));
  CHECK_OK(ctx, mr_tensor_slice(all, 1, 1, 9, 1, &c1));
  mr_video_writer *w = NULL;
  CHECK_OK(ctx, mr_video_writer_open(ctx, path, NULL, &w));
  REQUIRE(w);
  CHECK(strcmp(mr_video_writer_path(w), path) == 0);
  CHECK_OK(ctx, mr_video_writer_write(w, c0));
  CHECK_OK(ctx, mr_video_writer_write(w, c1));
  CHECK(mr_video_writer_frames(w) == 9);
  int temps;
  CHECK(!exists(path) && count_entries(dir, &temps) == 1 && temps == 1); /* only ".a.mp4.tmp-<pid>" */
  CHECK_OK(ctx, mr_video_writer_close(w));
  CHECK_FAIL(ctx, mr_video_writer_write(w, c0), MR_EINVAL, "a.mp4", "closed");
  mr_video_writer_free(w);
  CHECK(exists(path) && count_entries(dir, &temps) == 1 && temps == 0);
  check_probe(path, "h264", 64, 48, "yuv420p", "16/1", 9);
  char *out = ffprobe(path), b[64];
  CHECK(strcmp(field(out, "color_space", b, sizeof b), "bt709") == 0);
  CHECK(strcmp(field(out, "color_range", b, sizeof b), "tv") == 0);
  free(out);

  mr_video_info info;
  CHECK_OK(ctx, mr_video_probe(ctx, path, &info));
  CHECK(info.width == 64 && info.height == 48 && info.frames == 9 && info.fps_num == 16 && info.fps_den == 1);
  CHECK(strcmp(info.codec, "h264") == 0 && fabs(info.duration - 9.0 / 16) < 0.01);
  int64_t shape[4];
  float *v = load_video(ctx, path, NULL, shape, &info);
  REQUIRE(v);
  CHECK(shape[1] == 9 && shape[2] == 48 && shape[3] == 64 && info.frames == 9);
  double e = mean_err(v, src, (size_t)3 * 9 * 48 * 64);
  if (e > 2.0) fprintf(stderr, "mp4 read back: mean error %.2f bytes\n", e);
  CHECK(e <= 2.0);
  /* start / max_frames pick the same decoded frames */
  mr_video_read_opts ro = mr_video_read_opts_default();
  ro.start = 2;
  ro.max_frames = 3;
  int64_t s2[4];
  float *part = load_video(ctx, path, &ro, s2, NULL);
  if (part) {
    CHECK(s2[1] == 3);
    bool same = true;
    for (int c = 0; c < 3; c++)
      same = same && memcmp(part + (size_t)c * 3 * 48 * 64, v + ((size_t)c * 9 + 2) * 48 * 64, 3 * 48 * 64 * 4) == 0;
    CHECK(same);
  }
  free(part);
  ro = mr_video_read_opts_default();
  ro.resize.width = 32;
  ro.resize.height = 32;
  ro.dtype = MR_F16;
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_video_read(ctx, path, &ro, &t, NULL));
  CHECK(t && mr_tensor_shape(t)[1] == 9 && mr_tensor_shape(t)[2] == 32 && mr_tensor_shape(t)[3] == 32 &&
        mr_tensor_dtype(t) == MR_F16);
  mr_tensor_free(t);
  ro = mr_video_read_opts_default();
  ro.start = 20;
  CHECK_FAIL(ctx, mr_video_read(ctx, path, &ro, &t, NULL), MR_EINVAL, "a.mp4", "start 20");
  free(v);

  /* frame rates: a fraction, and a double */
  mr_video_writer_opts o = mr_video_writer_opts_default();
  o.fps_num = 30000, o.fps_den = 1001;
  o.preset = "ultrafast";
  snprintf(path, sizeof path, "%s/ntsc.mp4", dir);
  CHECK_OK(ctx, mr_video_write(ctx, path, c1, &o));
  check_probe(path, "h264", 64, 48, "yuv420p", "30000/1001", 8);
  CHECK_OK(ctx, mr_video_probe(ctx, path, &info));
  CHECK(info.fps_num == 30000 && info.fps_den == 1001);
  o = mr_video_writer_opts_default();
  o.fps = 12.5;
  o.crf = 30;
  snprintf(path, sizeof path, "%s/pal.mp4", dir);
  CHECK_OK(ctx, mr_video_write(ctx, path, c1, &o));
  check_probe(path, "h264", 64, 48, "yuv420p", "25/2", 8);

  /* odd sizes: refused naming the size, or padded / cropped to even */
  mr_tensor *odd = make_frames(ctx, 4, 2, 25, 33, moving);
  snprintf(path, sizeof path, "%s/odd.mp4", dir);
  CHECK_OK(ctx, mr_video_writer_open(ctx, path, NULL, &w));
  CHECK_FAIL(ctx, mr_video_writer_write(w, odd), MR_EINVAL, "odd.mp4", "33x25");
  CHECK_FAIL(ctx, mr_video_writer_close(w), MR_EINVAL, "odd.mp4", "no frames");
  mr_video_writer_free(w);
  CHECK(!exists(path));
  o = mr_video_writer_opts_default();
  o.odd = MR_ODD_PAD;
  CHECK_OK(ctx, mr_video_write(ctx, path, odd, &o));
  check_probe(path, "h264", 34, 26, "yuv420p", "16/1", 2);
  o.odd = MR_ODD_CROP;
  CHECK_OK(ctx, mr_video_write(ctx, path, odd, &o));
  check_probe(path, "h264", 32, 24, "yuv420p", "16/1", 2);
  mr_tensor_free(odd);

  /* bad options */
  o = mr_video_writer_opts_default();
  o.preset = "warp9";
  snprintf(path, sizeof path, "%s/preset.mp4", dir);
  CHECK_OK(ctx, mr_video_writer_open(ctx, path, &o, &w));
  CHECK_FAIL(ctx, mr_video_writer_write(w, c0), MR_EINVAL, "preset.mp4", "warp9");
  mr_video_writer_free(w);
  o = mr_video_writer_opts_default();
  o.crf = 60;
  CHECK_FAIL(ctx, mr_video_writer_open(ctx, path, &o, &w), MR_EINVAL, "preset.mp4", "crf 60");
  CHECK(w == NULL);
  snprintf(path, sizeof path, "%s/a.avi", dir);
  CHECK_FAIL(ctx, mr_video_writer_open(ctx, path, NULL, &w), MR_EUNSUPPORTED, "a.avi", ".avi");
  CHECK(count_entries(dir, &temps) == 4 && temps == 0); /* a, ntsc, pal, odd */

  mr_tensor_free(c0);
  mr_tensor_free(c1);
  mr_tensor_free(all);
  free(src);
}

static uint32_t le24(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16; }
static uint32_t le32(const uint8_t *p) { return le24(p) | (uint32_t)p[3] << 24; }

/* Walks an animated WebP's RIFF chunks. */
typedef struct webp_walk {
  int canvas_w, canvas_h, loop, frames, durations[64];
  bool anim_flag;
} webp_walk;

static bool walk_webp(const char *path, webp_walk *r) {
  memset(r, 0, sizeof *r);
  size_t n;
  uint8_t *d = mr_test_read_bytes(path, &n);
  bool ok = d && n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0 && le32(d + 4) + 8 == n;
  for (size_t off = 12; ok && off + 8 <= n;) {
    uint32_t len = le32(d + off + 4);
    const uint8_t *p = d + off + 8;
    if (off + 8 + len > n) ok = false;
    else if (memcmp(d + off, "VP8X", 4) == 0) {
      r->anim_flag = (p[0] & 0x02) != 0;
      r->canvas_w = (int)le24(p + 4) + 1;
      r->canvas_h = (int)le24(p + 7) + 1;
    } else if (memcmp(d + off, "ANIM", 4) == 0) {
      r->loop = p[4] | p[5] << 8;
    } else if (memcmp(d + off, "ANMF", 4) == 0) {
      if (r->frames < 64) r->durations[r->frames] = (int)le24(p + 12);
      r->frames++;
    }
    off += 8 + len + (len & 1);
  }
  free(d);
  return ok;
}

static void test_webp_anim(mr_ctx *ctx) {
  const char *dir = fresh_dir("webp");
  char path[600];
  snprintf(path, sizeof path, "%s/a.webp", dir);
  mr_tensor *frames = make_frames(ctx, 4, 5, 31, 41, moving);
  float *src = mr_test_read(ctx, frames);
  mr_video_writer_opts o = mr_video_writer_opts_default();
  o.lossless = true;
  o.loop = 3;
  o.fps = 10;
  CHECK_OK(ctx, mr_video_write(ctx, path, frames, &o));
  webp_walk r;
  CHECK(walk_webp(path, &r));
  CHECK(r.anim_flag && r.canvas_w == 41 && r.canvas_h == 31 && r.loop == 3 && r.frames == 5);
  for (int i = 0; i < 5 && i < r.frames; i++) CHECK(r.durations[i] == 100);
  mr_video_info info;
  CHECK_OK(ctx, mr_video_probe(ctx, path, &info));
  CHECK(info.width == 41 && info.height == 31 && info.frames == 5 && info.loop == 3 && info.fps_num == 10 &&
        info.fps_den == 1 && fabs(info.duration - 0.5) < 1e-9 && strcmp(info.container, "webp") == 0);
  int64_t shape[4];
  float *v = load_video(ctx, path, NULL, shape, NULL);
  if (v) {
    CHECK(shape[1] == 5 && shape[2] == 31 && shape[3] == 41);
    CHECK(same_bytes(v, src, (size_t)3 * 5 * 31 * 41));
  }
  free(v);
  /* the first frame, as an image */
  int64_t h, w;
  mr_image_info ii;
  v = load(ctx, path, NULL, &h, &w, &ii);
  if (v) {
    CHECK(ii.animated && h == 31 && w == 41);
    bool same = true;
    for (int c = 0; c < 3; c++)
      for (int i = 0; i < 31 * 41; i++) same = same && v[c * 31 * 41 + i] == from_byte(wan_byte(src[(size_t)c * 5 * 31 * 41 + i]));
    CHECK(same);
  }
  free(v);

  /* lossy at 16 fps: 62 / 63 ms frames, loop forever */
  snprintf(path, sizeof path, "%s/b.webp", dir);
  CHECK_OK(ctx, mr_video_write(ctx, path, frames, NULL));
  CHECK(walk_webp(path, &r));
  CHECK(r.frames == 5 && r.loop == 0);
  int total = 0;
  for (int i = 0; i < 5; i++) {
    CHECK(r.durations[i] == 62 || r.durations[i] == 63);
    total += r.durations[i];
  }
  CHECK(total == 313); /* round(5000 / 16) */
  v = load_video(ctx, path, NULL, shape, &info);
  if (v) {
    double e = mean_err(v, src, (size_t)3 * 5 * 31 * 41);
    if (e > 4) fprintf(stderr, "lossy WebP read back: mean error %.2f bytes\n", e);
    CHECK(e <= 4);
  }
  free(v);
  mr_tensor_free(frames);
  free(src);
}

static void test_png_sequence(mr_ctx *ctx) {
  const char *dir = fresh_dir("seq");
  char path[600], name[700];
  snprintf(path, sizeof path, "%s/frame_%%03d.png", dir);
  mr_tensor *frames = make_frames(ctx, 4, 4, 15, 21, moving);
  float *src = mr_test_read(ctx, frames);
  mr_video_writer *w = NULL;
  CHECK_OK(ctx, mr_video_writer_open(ctx, path, NULL, &w));
  REQUIRE(w);
  CHECK_OK(ctx, mr_video_writer_write(w, frames));
  int temps;
  CHECK(count_entries(dir, &temps) == 1 && temps == 1); /* the temporary folder only */
  CHECK_OK(ctx, mr_video_writer_close(w));
  mr_video_writer_free(w);
  CHECK(count_entries(dir, &temps) == 4 && temps == 0);
  snprintf(name, sizeof name, "%s/frame_003.png", dir);
  int64_t h, wd;
  float *v = load(ctx, name, NULL, &h, &wd, NULL);
  if (v) {
    bool same = h == 15 && wd == 21;
    for (int c = 0; same && c < 3; c++)
      for (int i = 0; i < 15 * 21; i++)
        same = same && v[c * 15 * 21 + i] == from_byte(wan_byte(src[((size_t)c * 4 + 2) * 15 * 21 + i]));
    CHECK(same);
  }
  free(v);

  /* a folder that does not exist yet appears with all frames in one rename */
  snprintf(path, sizeof path, "%s/seqdir/", tmpdir);
  mr_video_writer_opts o = mr_video_writer_opts_default();
  CHECK_OK(ctx, mr_video_write(ctx, path, frames, &o));
  snprintf(name, sizeof name, "%s/seqdir", tmpdir);
  CHECK(count_entries(name, &temps) == 4 && temps == 0);
  snprintf(name, sizeof name, "%s/seqdir/frame_00004.png", tmpdir);
  CHECK(exists(name));
  /* into the existing folder: frames replaced one by one */
  mr_tensor *two = NULL;
  CHECK_OK(ctx, mr_tensor_slice(frames, 1, 0, 2, 1, &two));
  snprintf(path, sizeof path, "%s/seqdir", tmpdir);
  CHECK_OK(ctx, mr_video_write(ctx, path, two, NULL));
  CHECK(count_entries(path, &temps) == 4 && temps == 0);
  mr_tensor_free(two);
  /* a pattern needs one %d; its folder must exist */
  snprintf(path, sizeof path, "%s/frame_%%s.png", dir);
  CHECK_FAIL(ctx, mr_video_writer_open(ctx, path, NULL, &w), MR_EINVAL, "frame_%s.png", "%d");
  snprintf(path, sizeof path, "%s/nodir/f_%%02d.png", dir);
  CHECK_FAIL(ctx, mr_video_writer_open(ctx, path, NULL, &w), MR_ENOTFOUND, "nodir", "does not exist");
  CHECK(w == NULL && count_entries(dir, &temps) == 4 && temps == 0);
  mr_tensor_free(frames);
  free(src);
}

/* A writer freed before close leaves nothing: no file, no temporary. */
static void test_abort(mr_ctx *ctx) {
  const char *dir = fresh_dir("abort");
  mr_tensor *frames = make_frames(ctx, 4, 2, 16, 16, moving);
  const char *names[] = {"x.mp4", "x.webp", "f_%02d.png", "newdir/"};
  for (int k = 0; k < 4; k++) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, names[k]);
    mr_video_writer *w = NULL;
    CHECK_OK(ctx, mr_video_writer_open(ctx, path, NULL, &w));
    REQUIRE(w);
    CHECK_OK(ctx, mr_video_writer_write(w, frames));
    int temps;
    CHECK(count_entries(dir, &temps) == 1 && temps == 1);
    mr_video_writer_free(w);
    if (count_entries(dir, &temps) != 0) {
      fprintf(stderr, "abort of %s left %d entries\n", names[k], count_entries(dir, NULL));
      mr_test_failures++;
    }
    /* closing without frames fails and leaves nothing either */
    CHECK_OK(ctx, mr_video_writer_open(ctx, path, NULL, &w));
    CHECK_FAIL(ctx, mr_video_writer_close(w), MR_EINVAL, names[k][0] == 'n' ? "newdir" : names[k], "no frames");
    mr_video_writer_free(w);
    CHECK(count_entries(dir, NULL) == 0);
  }
  mr_video_writer_free(NULL);
  mr_tensor_free(frames);
}

/* A full disk, played by RLIMIT_FSIZE with SIGXFSZ ignored: writes past the
   limit fail with EFBIG. Every writer must name the path and leave nothing. */
static void test_disk_full(mr_ctx *ctx) {
  const char *dir = fresh_dir("full");
  mr_tensor *still = make_frames(ctx, 3, 1, 160, 160, noise);
  mr_tensor *frames = make_frames(ctx, 4, 6, 128, 128, noise); /* every PNG frame > the limit too */
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  lim.rlim_cur = 40000;
  lim.rlim_max = old.rlim_max;
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
    perror("setrlimit");
    mr_test_failures++;
    return;
  }
  char path[600];
  snprintf(path, sizeof path, "%s/still.png", dir);
  CHECK_FAIL(ctx, mr_image_write(ctx, path, still, NULL), MR_EIO, "still.png", "File too large");
  const char *names[] = {"v.mp4", "v.webp", "f_%03d.png"};
  for (int k = 0; k < 3; k++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[k]);
    mr_video_writer_opts o = mr_video_writer_opts_default();
    o.crf = 1;
    o.lossless = k == 1;
    mr_video_writer *w = NULL;
    CHECK_OK(ctx, mr_video_writer_open(ctx, path, &o, &w));
    if (w == NULL) continue;
    mr_status s = mr_video_writer_write(w, frames);
    bool closed = s == MR_OK;
    if (closed) s = mr_video_writer_close(w); /* the WebP animation is written at close */
    const char *msg = mr_ctx_last_error(ctx);
    if (s != MR_EIO || strstr(msg, names[k]) == NULL || strstr(msg, "File too large") == NULL) {
      fprintf(stderr, "disk full, %s: %s '%s'\n", names[k], mr_status_name(s), msg);
      mr_test_failures++;
    }
    if (!closed) CHECK_FAIL(ctx, mr_video_writer_close(w), MR_EIO, names[k], "earlier write failed");
    mr_video_writer_free(w);
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);
  int temps;
  CHECK(count_entries(dir, &temps) == 0);
  mr_tensor_free(still);
  mr_tensor_free(frames);
}

/* ----------------------------------------------------------- bad inputs */

static void truncate_copy(const char *src, const char *dst, double keep) {
  size_t n;
  uint8_t *d = mr_test_read_bytes(src, &n);
  mr_test_write_bytes(dst, d, (size_t)(n * keep));
  free(d);
}

/* A copy of src with the entry count of its first `type` box set to count
   (at `at` bytes into the box's body). False if there is no such box. */
static bool patch_count(const char *src, const char *dst, const char *type, size_t at, uint32_t count) {
  size_t n;
  uint8_t *d = mr_test_read_bytes(src, &n);
  uint8_t *p = NULL;
  for (size_t i = 4; d && i + 4 + at + 4 <= n && !p; i++)
    if (memcmp(d + i, type, 4) == 0) p = d + i + 4 + at;
  if (p) {
    p[0] = (uint8_t)(count >> 24), p[1] = (uint8_t)(count >> 16), p[2] = (uint8_t)(count >> 8), p[3] = (uint8_t)count;
    mr_test_write_bytes(dst, d, n);
  }
  free(d);
  return p != NULL;
}

static void test_bad_inputs(mr_ctx *ctx) {
  mr_tensor *t = (mr_tensor *)1;
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("missing.png"), NULL, &t, NULL), MR_ENOTFOUND, "missing.png", "No such");
  CHECK(t == NULL);
  mr_test_write_bytes(tmp_path("empty.png"), "", 0);
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("empty.png"), NULL, &t, NULL), MR_EFORMAT, "empty.png", "empty");
  const char *text = "this is not an image, just some text in a file\n";
  mr_test_write_bytes(tmp_path("garbage.jpg"), text, strlen(text));
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("garbage.jpg"), NULL, &t, NULL), MR_EFORMAT, "garbage.jpg",
             "not an image");
  CHECK_FAIL(ctx, mr_image_read(ctx, tmpdir, NULL, &t, NULL), MR_EIO, tmpdir, "directory");
  mr_test_write_bytes(tmp_path("x.gif"), "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14);
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("x.gif"), NULL, &t, NULL), MR_EUNSUPPORTED, "x.gif", "GIF");
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("mp4/a.mp4"), NULL, &t, NULL), MR_EUNSUPPORTED, "a.mp4", "video");
  /* truncated files of each format (made in test_stills / test_exif) */
  const char *full[] = {"a.png", "a.jpg", "b.webp", "grid.png"};
  for (int k = 0; k < 4; k++) {
    char cut[64];
    snprintf(cut, sizeof cut, "cut_%s", full[k]);
    truncate_copy(tmp_path(full[k]), tmp_path(cut), 0.6);
    CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path(cut), NULL, &t, NULL), MR_EFORMAT, cut, "truncated");
    CHECK(t == NULL);
  }
  /* a header alone */
  truncate_copy(tmp_path("a.jpg"), tmp_path("head.jpg"), 0.05);
  CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("head.jpg"), NULL, &t, NULL), MR_EFORMAT, "head.jpg", "truncated");

  /* pictures declaring more pixels than the limit (issue 15: a few-KB file
     must not cost a gigabyte): refused from the header, naming the limit */
  {
    size_t n;
    uint8_t *png = mr_test_read_bytes(tmp_path("a.png"), &n);
    CHECK(png && n > 33);
    if (png && n > 33) {
      const uint8_t big[8] = {0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20}; /* 20000 x 20000 */
      memcpy(png + 16, big, 8);
      uint32_t crc = 0xffffffffu; /* the IHDR CRC over type and data, so only the size is wrong */
      for (int i = 12; i < 29; i++) {
        crc ^= png[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
      }
      crc = ~crc;
      const uint8_t cb[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
      memcpy(png + 29, cb, 4);
      mr_test_write_bytes(tmp_path("huge.png"), png, n);
      CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("huge.png"), NULL, &t, NULL), MR_EFORMAT, "huge.png",
                 "20000x20000 pixels, over the limit");
    }
    free(png);
    uint8_t *webp = mr_test_read_bytes(tmp_path("webp/a.webp"), &n);
    CHECK(webp && n > 30 && memcmp(webp + 12, "VP8X", 4) == 0);
    if (webp && n > 30) {
      const uint8_t canvas[6] = {0x7f, 0x3e, 0, 0x7f, 0x3e, 0}; /* 16000 x 16000, stored minus one */
      memcpy(webp + 24, canvas, 6);
      mr_test_write_bytes(tmp_path("huge.webp"), webp, n);
      CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("huge.webp"), NULL, &t, NULL), MR_EFORMAT, "huge.webp",
                 "16000x16000 pixels, over the limit");
      CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("huge.webp"), NULL, &t, NULL), MR_EFORMAT, "huge.webp",
                 "16000x16000 pixels, over the limit");
      /* the limit is adjustable */
      setenv("MOONREEL_MAX_PIXELS", "100", 1);
      CHECK_FAIL(ctx, mr_image_read(ctx, tmp_path("a.png"), NULL, &t, NULL), MR_EFORMAT, "a.png", "limit of 100");
      unsetenv("MOONREEL_MAX_PIXELS");
    }
    free(webp);
    CHECK(t == NULL);
  }

  /* videos */
  mr_video_info info;
  CHECK_FAIL(ctx, mr_video_probe(ctx, tmp_path("missing.mp4"), &info), MR_ENOTFOUND, "missing.mp4", "No such");
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("missing.mp4"), NULL, &t, &info), MR_ENOTFOUND, "missing.mp4", "No such");
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("empty.png"), NULL, &t, NULL), MR_EFORMAT, "empty.png", "empty");
  mr_test_write_bytes(tmp_path("garbage.mp4"), text, strlen(text));
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("garbage.mp4"), NULL, &t, NULL), MR_EFORMAT, "garbage.mp4", "not a video");
  truncate_copy(tmp_path("mp4/a.mp4"), tmp_path("cut.mp4"), 0.6);
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("cut.mp4"), NULL, &t, NULL), MR_EFORMAT, "cut.mp4", "truncated");
  truncate_copy(tmp_path("webp/a.webp"), tmp_path("cut_anim.webp"), 0.6);
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("cut_anim.webp"), NULL, &t, NULL), MR_EFORMAT, "cut_anim.webp",
             "truncated");
  CHECK(t == NULL);

  /* A sample table that declares more entries than its box holds: FFmpeg's
     mov demuxer would allocate them all first (67,108,865 chunk offsets are
     512 MiB; found by the video fuzz target on a 3 KB file). */
  REQUIRE(patch_count(tmp_path("mp4/a.mp4"), tmp_path("stco.mp4"), "stco", 4, 0x04000001));
  CHECK_FAIL(ctx, mr_video_probe(ctx, tmp_path("stco.mp4"), &info), MR_EFORMAT, "stco.mp4",
             "stco box declares 67108865 entries");
  /* FFmpeg finds the moov box after any first box, so the check does too */
  size_t nb;
  uint8_t *bytes = mr_test_read_bytes(tmp_path("stco.mp4"), &nb);
  REQUIRE(bytes && nb > 8);
  memcpy(bytes + 4, "WEBP", 4);
  mr_test_write_bytes(tmp_path("webp_first.mp4"), bytes, nb);
  free(bytes);
  CHECK_FAIL(ctx, mr_video_probe(ctx, tmp_path("webp_first.mp4"), &info), MR_EFORMAT, "webp_first.mp4",
             "stco box declares 67108865 entries");
  /* A table whose box its parents cut short: FFmpeg reads its count past
     the parent's end, so the check does too. moov > trak > mdia > minf >
     stbl, each ending 3 bytes into stco's body; the count follows. */
  {
    uint8_t f[96] = {0, 0, 0, 20, 'f', 't', 'y', 'p', 'q', 't', ' ', ' ', 0, 0, 2, 0, 'q', 't', ' ', ' '};
    size_t at = 20;
    const char *boxes[] = {"moov", "trak", "mdia", "minf", "stbl"};
    for (int k = 0; k < 5; k++, at += 8) {
      uint32_t size = (uint32_t)(8 * (5 - k) + 8 + 3);
      f[at] = 0, f[at + 1] = 0, f[at + 2] = 0, f[at + 3] = (uint8_t)size;
      memcpy(f + at + 4, boxes[k], 4);
    }
    memcpy(f + at, "\0\0\0\x14stco\0\0\0\0\x04\0\0\x01", 16);
    mr_test_write_bytes(tmp_path("cut_parent.mov"), f, at + 16 + 8);
    CHECK_FAIL(ctx, mr_video_probe(ctx, tmp_path("cut_parent.mov"), &info), MR_EFORMAT, "cut_parent.mov",
               "stco box declares 67108865 entries");
  }
  REQUIRE(patch_count(tmp_path("mp4/a.mp4"), tmp_path("stsz.mp4"), "stsz", 8, 1000));
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("stsz.mp4"), NULL, &t, NULL), MR_EFORMAT, "stsz.mp4",
             "stsz box declares 1000 entries");
  CHECK(t == NULL);

  /* A playlist (HLS) or a concat list saved as a video reads the files it
     names; only the demuxers of the formats moonreel reads are used. */
  char list[1024];
  snprintf(list, sizeof list, "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\n%s\n#EXT-X-ENDLIST\n",
           tmp_path("mp4/a.mp4"));
  mr_test_write_bytes(tmp_path("playlist.mp4"), list, strlen(list));
  CHECK_FAIL(ctx, mr_video_probe(ctx, tmp_path("playlist.mp4"), &info), MR_EUNSUPPORTED, "playlist.mp4",
             "not in a video format");
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("playlist.mp4"), NULL, &t, NULL), MR_EUNSUPPORTED, "playlist.mp4",
             "not in a video format");
  snprintf(list, sizeof list, "ffconcat version 1.0\nfile '%s'\n", tmp_path("mp4/a.mp4"));
  mr_test_write_bytes(tmp_path("concat.mp4"), list, strlen(list));
  CHECK_FAIL(ctx, mr_video_read(ctx, tmp_path("concat.mp4"), NULL, &t, NULL), MR_EUNSUPPORTED, "concat.mp4",
             "not in a video format");
  CHECK(t == NULL);
}

/* Other inputs made by the ffmpeg CLI: VP9 WebM, GIF, a rotation tag. */
static void test_other_inputs(mr_ctx *ctx) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "ffmpeg -v error -y -f lavfi -i testsrc=size=64x48:rate=10 -frames:v 6 -c:v libvpx-vp9 -b:v 200k '%s' && "
           "ffmpeg -v error -y -f lavfi -i testsrc=size=64x48:rate=10 -frames:v 5 '%s'",
           tmp_path("t.webm"), tmp_path("t.gif"));
  free(run(cmd));
  mr_video_info info;
  CHECK_OK(ctx, mr_video_probe(ctx, tmp_path("t.webm"), &info));
  CHECK(info.frames == 6 && info.width == 64 && info.height == 48 && strcmp(info.codec, "vp9") == 0 &&
        info.fps_num == 10 && info.fps_den == 1);
  int64_t shape[4];
  float *v = load_video(ctx, tmp_path("t.webm"), NULL, shape, NULL);
  CHECK(v && shape[1] == 6 && shape[2] == 48 && shape[3] == 64);
  free(v);
  CHECK_OK(ctx, mr_video_probe(ctx, tmp_path("t.gif"), &info));
  CHECK(info.frames == 5 && info.width == 64 && strcmp(info.codec, "gif") == 0);
  v = load_video(ctx, tmp_path("t.gif"), NULL, shape, NULL);
  CHECK(v && shape[1] == 5 && shape[2] == 48 && shape[3] == 64);
  free(v);

  /* a rotation tag (90 degrees clockwise to display) acts as EXIF 6 does */
  mr_tensor *g = make_frames(ctx, 4, 2, 32, 48, grid);
  mr_video_writer_opts o = mr_video_writer_opts_default();
  o.crf = 1;
  CHECK_OK(ctx, mr_video_write(ctx, tmp_path("grid.mp4"), g, &o));
  mr_tensor_free(g);
  snprintf(cmd, sizeof cmd, "ffmpeg -v error -y -i '%s' -c copy -metadata:s:v:0 rotate=-90 '%s'",
           tmp_path("grid.mp4"), tmp_path("rot.mp4"));
  free(run(cmd));
  CHECK_OK(ctx, mr_video_probe(ctx, tmp_path("rot.mp4"), &info));
  CHECK(info.width == 32 && info.height == 48);
  v = load_video(ctx, tmp_path("rot.mp4"), NULL, shape, NULL);
  if (v && shape[2] == 48 && shape[3] == 32) {
    float *f0 = malloc((size_t)3 * 48 * 32 * sizeof *f0);
    for (int c = 0; c < 3; c++) memcpy(f0 + (size_t)c * 48 * 32, v + (size_t)c * 2 * 48 * 32, 48 * 32 * sizeof *f0);
    check_corners(f0, 48, 32, 6, "MP4 rotation tag");
    free(f0);
  } else {
    CHECK(!"rotated read has the displayed size");
  }
  free(v);
}

int main(int argc, char **argv) {
  (void)argc, (void)argv;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/mr_test_media.XXXXXX");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  mr_ctx *ctx = mr_test_ctx();
  printf("stills: PNG, JPEG, WebP round trips\n");
  test_stills(ctx);
  printf("EXIF orientation: JPEG, PNG, WebP\n");
  test_exif(ctx);
  printf("fitting: crop, pad, stretch, multiple, filters\n");
  test_fit(ctx);
  printf("alpha\n");
  test_alpha(ctx);
  printf("MP4 writer and reader\n");
  test_mp4(ctx);
  printf("animated WebP\n");
  test_webp_anim(ctx);
  printf("PNG sequences\n");
  test_png_sequence(ctx);
  printf("aborted writers\n");
  test_abort(ctx);
  printf("full disk\n");
  test_disk_full(ctx);
  printf("bad inputs\n");
  test_bad_inputs(ctx);
  printf("WebM, GIF, rotation tags\n");
  test_other_inputs(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  if (mr_test_failures == 0) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    free(run(cmd));
  }
  return mr_test_finish("test_media");
}
