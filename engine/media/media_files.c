/* Files and tensors for engine/media: whole-file reads and the conversion of
   frame tensors to the bytes Wan writes (atomic writes are in core/fileio.c). */
#define _POSIX_C_SOURCE 200809L
#include "media/media_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* FFmpeg logs process-wide, at "info" by default: libx264 prints its
   settings for every video and the mp4 muxer its second pass. Messages of
   ours say what failed, so the default is lowered to errors, once; a level a
   host has chosen is left alone. */
static void quiet_ffmpeg(void) {
  if (av_log_get_level() == AV_LOG_INFO) av_log_set_level(AV_LOG_ERROR);
}

void mr_media_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, quiet_ffmpeg);
}

uint64_t mr_media_max_pixels(void) {
  const char *e = getenv("MOONREEL_MAX_PIXELS");
  char *end;
  unsigned long long v = e && *e ? strtoull(e, &end, 10) : 0;
  return v > 0 && e && *end == '\0' ? (uint64_t)v : (uint64_t)8192 * 8192;
}

mr_status mr_media_check_pixels(mr_ctx *ctx, const char *path, int64_t w, int64_t h) {
  uint64_t limit = mr_media_max_pixels();
  if (w > 0 && h > 0 && (uint64_t)w * (uint64_t)h <= limit) return MR_OK;
  if (w <= 0 || h <= 0) return mr_error(ctx, MR_EFORMAT, "'%s' declares a %lldx%lld picture", path, (long long)w, (long long)h);
  return mr_error(ctx, MR_EFORMAT,
                  "'%s' declares %lldx%lld pixels, over the limit of %llu a frame (MOONREEL_MAX_PIXELS)", path,
                  (long long)w, (long long)h, (unsigned long long)limit);
}

const char *mr_media_av_err(int err, char *buf, size_t cap) {
  if (av_strerror(err, buf, cap) < 0) snprintf(buf, cap, "FFmpeg error %d", err);
  return buf;
}

mr_status mr_media_check_file(mr_ctx *ctx, const char *path) {
  struct stat sb;
  if (stat(path, &sb) != 0) {
    int e = errno;
    return mr_error(ctx, mr_file_errno_status(e), "cannot open '%s': %s", path, strerror(e));
  }
  if (S_ISDIR(sb.st_mode)) return mr_error(ctx, MR_EIO, "cannot read '%s': it is a directory", path);
  if (sb.st_size == 0) return mr_error(ctx, MR_EFORMAT, "'%s' is empty (0 bytes)", path);
  return MR_OK;
}

mr_status mr_media_slurp(mr_ctx *ctx, const char *path, uint8_t **data, size_t *n) {
  *data = NULL;
  *n = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return mr_error(ctx, mr_file_errno_status(e), "cannot open '%s': %s", path, strerror(e));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return mr_error(ctx, MR_EIO, "cannot read '%s': %s", path, strerror(e));
  }
  if (S_ISDIR(sb.st_mode)) {
    close(fd);
    return mr_error(ctx, MR_EIO, "cannot read '%s': it is a directory", path);
  }
  if (sb.st_size == 0) {
    close(fd);
    return mr_error(ctx, MR_EFORMAT, "'%s' is empty (0 bytes)", path);
  }
  size_t size = (size_t)sb.st_size;
  uint8_t *buf = malloc(size);
  if (buf == NULL) {
    close(fd);
    return mr_error(ctx, MR_ENOMEM, "'%s': out of memory reading %zu bytes", path, size);
  }
  size_t got = 0;
  while (got < size) {
    ssize_t k = read(fd, buf + got, size - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      int e = k < 0 ? errno : 0;
      close(fd);
      free(buf);
      return mr_error(ctx, MR_EIO, "cannot read '%s': %s", path, e ? strerror(e) : "file shrank while reading");
    }
    got += (size_t)k;
  }
  close(fd);
  *data = buf;
  *n = size;
  return MR_OK;
}

void mr_media_ext(const char *path, char *ext, size_t cap) {
  ext[0] = '\0';
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *dot = strrchr(base, '.');
  if (dot == NULL || dot == base) return;
  size_t i = 0;
  for (const char *p = dot + 1; *p && i + 1 < cap; p++) ext[i++] = (char)tolower((unsigned char)*p);
  ext[i] = '\0';
}

/* ------------------------------------------------------ tensors -> bytes */

mr_status mr_media_check_dtype(mr_ctx *ctx, const char *what, mr_dtype dt) {
  if (dt == MR_F32 || dt == MR_F16 || dt == MR_BF16) return MR_OK;
  return mr_error(ctx, MR_EINVAL, "%s: dtype %s cannot be stored on the device (f32, f16 or bf16)", what,
                  (unsigned)dt < MR_DTYPE_COUNT ? mr_dtype_name(dt) : "?");
}

mr_status mr_media_check_frames(mr_ctx *ctx, const char *what, const mr_tensor *t, int64_t *f, int64_t *h,
                                int64_t *w) {
  int nd = mr_tensor_ndim(t);
  const int64_t *s = mr_tensor_shape(t);
  if ((nd != 3 && nd != 4) || s[0] != 3) {
    char buf[96];
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < nd && len < sizeof buf; i++)
      len += (size_t)snprintf(buf + len, sizeof buf - len, i ? "x%lld" : "%lld", (long long)s[i]);
    return mr_error(ctx, MR_EINVAL, "%s: frames must be [3, H, W] or [3, F, H, W] (RGB first), got %s", what, buf);
  }
  *f = nd == 4 ? s[1] : 1;
  *h = s[nd - 2];
  *w = s[nd - 1];
  if (*h <= 0 || *w <= 0 || *h > 65535 || *w > 65535)
    return mr_error(ctx, MR_EINVAL, "%s: frame size %lldx%lld is out of range (1..65535)", what, (long long)*w,
                    (long long)*h);
  return MR_OK;
}

mr_status mr_media_tensor_frames(mr_ctx *ctx, const char *what, const mr_tensor *t, mr_frame_fn fn, void *user) {
  int64_t nf, h, w;
  mr_status s = mr_media_check_frames(ctx, what, t, &nf, &h, &w);
  if (s != MR_OK) return s;
  size_t plane = (size_t)h * (size_t)w;
  /* Frames are read in batches of about 32 MiB of f32, so a long video never
     needs its whole f32 copy in host memory. */
  int64_t batch = (int64_t)((32u << 20) / (plane * 3 * sizeof(float)));
  if (batch < 1) batch = 1;
  float *buf = malloc((size_t)(batch < nf ? batch : nf) * plane * 3 * sizeof(float));
  uint8_t *rgb = malloc(plane * 3);
  if (buf == NULL || rgb == NULL) {
    free(buf);
    free(rgb);
    return mr_error(ctx, MR_ENOMEM, "%s: out of memory for %lldx%lld frames", what, (long long)w, (long long)h);
  }
  mr_tensor *src = (mr_tensor *)t; /* reading does not change it */
  for (int64_t f0 = 0; f0 < nf && s == MR_OK; f0 += batch) {
    int64_t n = nf - f0 < batch ? nf - f0 : batch;
    mr_tensor *view = NULL;
    if (mr_tensor_ndim(t) == 4 && n != nf) s = mr_tensor_slice(src, 1, f0, f0 + n, 1, &view);
    if (s == MR_OK) s = mr_tensor_read(view ? view : src, MR_F32, buf, (size_t)n * plane * 3);
    mr_tensor_free(view);
    /* buf is [3][n][h][w] */
    for (int64_t k = 0; k < n && s == MR_OK; k++) {
      if (mr_ctx_take_interrupt(ctx)) {
        s = mr_error(ctx, MR_ECANCELED, "%s: interrupted", what);
        break;
      }
      for (int c = 0; c < 3; c++) {
        const float *p = buf + ((size_t)c * (size_t)n + (size_t)k) * plane;
        uint8_t *q = rgb + c;
        for (size_t i = 0; i < plane; i++, q += 3) *q = mr_media_to_byte(p[i]);
      }
      s = fn(user, rgb, (int)w, (int)h);
    }
  }
  free(buf);
  free(rgb);
  return s;
}
