/* Fitting pictures: EXIF orientation, the crop / pad / stretch plan, and a
   separable resampler in f32 with PIL's kernels (box, triangle, Keys cubic
   a = -0.5, Lanczos-3), widened by the scale factor when shrinking so a
   downscale averages instead of aliasing. Transparency is composited over
   the pad colour row by row as the source is read. */
#include "media/media_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ orientation */

bool mr_media_orient(mr_rgba8 *img, int o) {
  if (o < 2 || o > 8) return true;
  int w = img->w, h = img->h;
  bool swap = o >= 5;
  int ow = swap ? h : w, oh = swap ? w : h;
  uint32_t *dst = malloc((size_t)w * (size_t)h * 4);
  if (dst == NULL) return false;
  const uint32_t *src = (const uint32_t *)(const void *)img->px;
  /* For each displayed pixel (x, y), the stored pixel (sx, sy) per TIFF 6.0:
     2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
     7 transverse, 8 rotate 90 counter-clockwise. */
  for (int y = 0; y < oh; y++) {
    for (int x = 0; x < ow; x++) {
      int sx, sy;
      switch (o) {
      case 2: sx = w - 1 - x; sy = y; break;
      case 3: sx = w - 1 - x; sy = h - 1 - y; break;
      case 4: sx = x; sy = h - 1 - y; break;
      case 5: sx = y; sy = x; break;
      case 6: sx = y; sy = h - 1 - x; break;
      case 7: sx = w - 1 - y; sy = h - 1 - x; break;
      default: sx = w - 1 - y; sy = x; break; /* 8 */
      }
      dst[(size_t)y * (size_t)ow + (size_t)x] = src[(size_t)sy * (size_t)w + (size_t)sx];
    }
  }
  free(img->px);
  img->px = (uint8_t *)dst;
  img->w = ow;
  img->h = oh;
  return true;
}

/* ------------------------------------------------------------------ plan */

mr_status mr_media_plan(mr_ctx *ctx, const char *what, int src_w, int src_h, const mr_fit_opts *o, mr_fit_plan *p) {
  static const mr_fit_opts none = {0};
  if (o == NULL) o = &none;
  memset(p, 0, sizeof *p);
  if (src_w <= 0 || src_h <= 0)
    return mr_error(ctx, MR_EFORMAT, "'%s' has zero size (%dx%d)", what, src_w, src_h);
  if (o->width < 0 || o->height < 0 || o->width > 65535 || o->height > 65535)
    return mr_error(ctx, MR_EINVAL, "'%s': target size %dx%d is out of range (0..65535)", what, o->width, o->height);
  if (o->multiple < 0 || o->multiple > 4096)
    return mr_error(ctx, MR_EINVAL, "'%s': multiple %d is out of range (0..4096)", what, o->multiple);
  if ((unsigned)o->fit > MR_FIT_STRETCH) return mr_error(ctx, MR_EINVAL, "'%s': unknown fit mode %d", what, (int)o->fit);
  if ((unsigned)o->filter > MR_FILTER_NEAREST)
    return mr_error(ctx, MR_EINVAL, "'%s': unknown filter %d", what, (int)o->filter);
  bool keep = o->width == 0 && o->height == 0;
  int W = o->width, H = o->height;
  if (keep) {
    W = src_w;
    H = src_h;
  } else if (W == 0) {
    W = (int)lround((double)H * src_w / src_h);
  } else if (H == 0) {
    H = (int)lround((double)W * src_h / src_w);
  }
  if (W < 1) W = 1;
  if (H < 1) H = 1;
  if (o->multiple > 1) {
    W -= W % o->multiple;
    H -= H % o->multiple;
    if (W == 0 || H == 0)
      return mr_error(ctx, MR_EFORMAT, "'%s': %dx%d rounds to zero size with multiple %d", what,
                      keep ? src_w : (o->width ? o->width : src_w), keep ? src_h : (o->height ? o->height : src_h),
                      o->multiple);
  }
  p->out_w = W;
  p->out_h = H;
  p->dw = W;
  p->dh = H;
  p->sw = src_w;
  p->sh = src_h;
  if (o->fit == MR_FIT_CROP) {
    double scale = keep ? 1.0 : fmax((double)W / src_w, (double)H / src_h);
    p->sw = W / scale;
    p->sh = H / scale;
    p->sx = (src_w - p->sw) / 2;
    p->sy = (src_h - p->sh) / 2;
    if (fabs(scale - 1.0) < 1e-12) { /* a pure crop stays on whole pixels: no half-pixel blur */
      p->sx = floor(p->sx);
      p->sy = floor(p->sy);
    }
  } else if (o->fit == MR_FIT_PAD) {
    double scale = fmin((double)W / src_w, (double)H / src_h);
    p->dw = (int)lround(src_w * scale);
    p->dh = (int)lround(src_h * scale);
    if (p->dw < 1) p->dw = 1;
    if (p->dh < 1) p->dh = 1;
    if (p->dw > W) p->dw = W;
    if (p->dh > H) p->dh = H;
    p->dx = (W - p->dw) / 2;
    p->dy = (H - p->dh) / 2;
  }
  return MR_OK;
}

bool mr_media_plan_is_identity(const mr_fit_plan *p, int src_w, int src_h) {
  return p->out_w == src_w && p->out_h == src_h && p->dx == 0 && p->dy == 0 && p->dw == src_w && p->dh == src_h &&
         p->sx == 0 && p->sy == 0 && p->sw == src_w && p->sh == src_h;
}

/* ------------------------------------------------------------- resampling */

static double filter_support(mr_filter f) {
  switch (f) {
  case MR_FILTER_AREA: return 0.5;
  case MR_FILTER_BILINEAR: return 1.0;
  case MR_FILTER_LANCZOS: return 3.0;
  case MR_FILTER_NEAREST: return 0.5;
  default: return 2.0;
  }
}

static double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= 3.14159265358979323846;
  return sin(x) / x;
}

static double filter_eval(mr_filter f, double x) {
  switch (f) {
  case MR_FILTER_AREA: return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
  case MR_FILTER_BILINEAR: x = fabs(x); return x < 1.0 ? 1.0 - x : 0.0;
  case MR_FILTER_LANCZOS: return x > -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
  default: { /* Keys cubic convolution, a = -0.5 */
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
  }
  }
}

/* For each output sample i: the taps start[i] .. start[i] + count[i] - 1 of
   the input with weights w[i * maxn + k], summing to 1. */
typedef struct taps {
  int *start, *count;
  float *w;
  int maxn;
} taps;

static void taps_free(taps *t) {
  free(t->start);
  free(t->count);
  free(t->w);
  t->start = t->count = NULL;
  t->w = NULL;
}

static bool taps_make(taps *t, int in_size, double b0, double bsize, int out_size, mr_filter f) {
  double scale = bsize / out_size;
  double fscale = scale > 1.0 ? scale : 1.0;
  double support = filter_support(f) * fscale;
  t->maxn = f == MR_FILTER_NEAREST ? 1 : (int)ceil(support) * 2 + 2;
  t->start = malloc((size_t)out_size * sizeof(int));
  t->count = malloc((size_t)out_size * sizeof(int));
  t->w = malloc((size_t)out_size * (size_t)t->maxn * sizeof(float));
  if (!t->start || !t->count || !t->w) {
    taps_free(t);
    return false;
  }
  for (int i = 0; i < out_size; i++) {
    double center = b0 + (i + 0.5) * scale;
    float *w = t->w + (size_t)i * (size_t)t->maxn;
    int lo = (int)floor(center - support + 0.5), hi = (int)floor(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in_size) hi = in_size;
    if (hi - lo > t->maxn) hi = lo + t->maxn;
    double sum = 0;
    if (f != MR_FILTER_NEAREST) {
      for (int j = lo; j < hi; j++) {
        double v = filter_eval(f, (j - center + 0.5) / fscale);
        w[j - lo] = (float)v;
        sum += v;
      }
    }
    if (f == MR_FILTER_NEAREST || hi <= lo || sum == 0.0) { /* one tap, the nearest sample */
      int n = (int)floor(center);
      lo = n < 0 ? 0 : n >= in_size ? in_size - 1 : n;
      hi = lo + 1;
      w[0] = 1.0f;
      sum = 1.0;
    }
    for (int j = 0; j < hi - lo; j++) w[j] = (float)(w[j] / sum);
    t->start[i] = lo;
    t->count[i] = hi - lo;
  }
  return true;
}

/* Source row y as float RGB (byte units), composited over the pad colour. */
static void load_row(const mr_rgba8 *src, int y, const mr_fit_opts *o, float *row) {
  const uint8_t *p = src->px + (size_t)y * (size_t)src->w * 4;
  float pr = o->pad_color[0], pg = o->pad_color[1], pb = o->pad_color[2];
  for (int x = 0; x < src->w; x++, p += 4, row += 3) {
    if (o->drop_alpha || p[3] == 255) {
      row[0] = p[0];
      row[1] = p[1];
      row[2] = p[2];
    } else {
      float a = p[3] * (1.0f / 255.0f);
      row[0] = p[0] * a + pr * (1.0f - a);
      row[1] = p[1] * a + pg * (1.0f - a);
      row[2] = p[2] * a + pb * (1.0f - a);
    }
  }
}

bool mr_media_render(const mr_rgba8 *src, const mr_fit_plan *p, const mr_fit_opts *opts, float *out) {
  static const mr_fit_opts none = {0};
  const mr_fit_opts *o = opts ? opts : &none;
  size_t plane = (size_t)p->out_w * (size_t)p->out_h;
  for (int c = 0; c < 3; c++) {
    float v = o->pad_color[c];
    for (size_t i = 0; i < plane; i++) out[c * plane + i] = v;
  }
  taps tx = {0}, ty = {0};
  float *row = malloc((size_t)src->w * 3 * sizeof(float));
  bool ok = row && taps_make(&tx, src->w, p->sx, p->sw, p->dw, o->filter) &&
            taps_make(&ty, src->h, p->sy, p->sh, p->dh, o->filter);
  /* Rows of the source the vertical taps use. */
  int y0 = 0, y1 = 0;
  if (ok) {
    y0 = ty.start[0];
    y1 = ty.start[p->dh - 1] + ty.count[p->dh - 1];
    for (int i = 0; i < p->dh; i++) {
      if (ty.start[i] < y0) y0 = ty.start[i];
      if (ty.start[i] + ty.count[i] > y1) y1 = ty.start[i] + ty.count[i];
    }
  }
  float *mid = ok ? malloc((size_t)(y1 - y0) * (size_t)p->dw * 3 * sizeof(float)) : NULL;
  ok = ok && mid;
  if (ok) {
    /* Horizontal pass: source rows y0..y1 -> mid [y1 - y0][dw][3]. */
    for (int y = y0; y < y1; y++) {
      load_row(src, y, o, row);
      float *m = mid + (size_t)(y - y0) * (size_t)p->dw * 3;
      for (int x = 0; x < p->dw; x++) {
        const float *w = tx.w + (size_t)x * (size_t)tx.maxn;
        const float *s = row + (size_t)tx.start[x] * 3;
        float r = 0, g = 0, b = 0;
        for (int k = 0; k < tx.count[x]; k++, s += 3) {
          r += w[k] * s[0];
          g += w[k] * s[1];
          b += w[k] * s[2];
        }
        m[x * 3 + 0] = r;
        m[x * 3 + 1] = g;
        m[x * 3 + 2] = b;
      }
    }
    /* Vertical pass into the canvas rectangle. */
    for (int y = 0; y < p->dh; y++) {
      const float *w = ty.w + (size_t)y * (size_t)ty.maxn;
      size_t orow = (size_t)(p->dy + y) * (size_t)p->out_w + (size_t)p->dx;
      for (int x = 0; x < p->dw; x++) {
        float r = 0, g = 0, b = 0;
        const float *s = mid + ((size_t)(ty.start[y] - y0) * (size_t)p->dw + (size_t)x) * 3;
        for (int k = 0; k < ty.count[y]; k++, s += (size_t)p->dw * 3) {
          r += w[k] * s[0];
          g += w[k] * s[1];
          b += w[k] * s[2];
        }
        out[orow + (size_t)x] = r;
        out[plane + orow + (size_t)x] = g;
        out[2 * plane + orow + (size_t)x] = b;
      }
    }
  }
  free(mid);
  free(row);
  taps_free(&tx);
  taps_free(&ty);
  return ok;
}
