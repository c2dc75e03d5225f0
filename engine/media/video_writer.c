/* The streaming video writer. Three back ends share one lifecycle (open,
   write frames as they come, close = finish + fsync + rename, free = abort
   if not closed):
   - MP4: libx264 through libavcodec, yuv420p, BT.709 limited range (tagged),
     muxed by libavformat into ".<name>.tmp-<pid>" with the index moved to
     the front (faststart), so the file plays while it downloads.
   - WebP: libwebp's WebPAnimEncoder; frames are encoded as they come and
     the animation is assembled and written at close.
   - PNG sequence: frames encoded and synced into a temporary folder, moved
     into place at close (see moonreel.h for which moves are atomic). */
#define _POSIX_C_SOURCE 200809L
#include "media/media_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <webp/encode.h>
#include <webp/mux.h>

struct mr_video_writer {
  mr_ctx *ctx;
  char *path;           /* the destination, as given */
  mr_media_format fmt;
  int fps_num, fps_den;
  int crf, quality, loop;
  char *preset;
  mr_odd_size odd;
  bool lossless;
  int w, h;             /* frame size (0 before the first frame) */
  int ew, eh;           /* encoded size (MP4 may pad or crop to even) */
  int64_t frames;
  bool failed;          /* a write failed: only close and free remain */
  bool done;            /* closed (or aborted): nothing on disk is ours any more */
  char *tmp;            /* temporary file or folder */
  int fd;               /* MP4 / WebP temporary file, -1 when none */
  uint8_t *even;        /* MP4: the frame padded or cropped to even */
  /* MP4 */
  AVFormatContext *oc;
  AVCodecContext *cc;
  AVStream *st;
  AVFrame *frame;
  AVPacket *pkt;
  struct SwsContext *sws;
  /* WebP */
  WebPAnimEncoder *anim;
  WebPConfig wcfg;
  /* PNG sequence */
  mr_png_encoder *png;
  char *dir;            /* the folder the frames end in */
  char *pattern;        /* file name pattern of one frame, one %d conversion */
  bool dir_mode;        /* the path names a folder (else a pattern) */
};

mr_video_writer_opts mr_video_writer_opts_default(void) {
  mr_video_writer_opts o;
  memset(&o, 0, sizeof o);
  o.format = MR_FORMAT_AUTO;
  o.odd = MR_ODD_ERROR;
  return o;
}

const char *mr_video_writer_path(const mr_video_writer *w) { return w ? w->path : NULL; }
int64_t mr_video_writer_frames(const mr_video_writer *w) { return w ? w->frames : 0; }

/* ---------------------------------------------------------------- paths */

/* True when name holds exactly one %d conversion (%d, %4d, %04d; %% is a
   literal), so it can be given to snprintf with one int. */
static bool is_frame_pattern(const char *name) {
  int conv = 0;
  for (const char *p = name; *p; p++) {
    if (*p != '%') continue;
    if (p[1] == '%') {
      p++;
      continue;
    }
    p++;
    if (*p == '0') p++;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 3) p++, digits++;
    if (*p != 'd') return false;
    conv++;
  }
  return conv == 1;
}

static bool has_percent(const char *s) { return strchr(s, '%') != NULL; }

static bool is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Splits "a/b/c" into "a/b" and "c" (".", name when there is no slash). */
static bool split_path(const char *path, char **dir, char **base) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    *dir = strdup(".");
    *base = strdup(path);
  } else {
    size_t n = (size_t)(slash - path);
    *dir = malloc(n + 2);
    if (*dir) {
      if (n == 0) strcpy(*dir, "/");
      else {
        memcpy(*dir, path, n);
        (*dir)[n] = '\0';
      }
    }
    *base = strdup(slash + 1);
  }
  return *dir && *base;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s/%s", dir, name);
  return s;
}

/* The file name of frame i (numbered from 1). */
static void frame_name(const mr_video_writer *w, int64_t i, char *buf, size_t cap) {
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#endif
  snprintf(buf, cap, w->pattern, (int)i); /* checked by is_frame_pattern */
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

/* ---------------------------------------------------------------- errors */

/* A failed write: the message names the destination and the system's reason. */
static mr_status write_error(mr_video_writer *w, int averr) {
  char eb[128];
  w->failed = true;
  if (w->oc && w->oc->pb && w->oc->pb->error < 0) averr = w->oc->pb->error;
  return mr_error(w->ctx, MR_EIO, "cannot write '%s': %s", w->path, mr_media_av_err(averr, eb, sizeof eb));
}

/* ------------------------------------------------------------------ MP4 */

static mr_status mp4_start(mr_video_writer *w) {
  mr_ctx *ctx = w->ctx;
  char eb[128];
  const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
  if (codec == NULL) return mr_error(ctx, MR_EUNSUPPORTED, "'%s': this FFmpeg has no libx264 encoder", w->path);
  char ext[16];
  mr_media_ext(w->path, ext, sizeof ext);
  int r = avformat_alloc_output_context2(&w->oc, NULL, strcmp(ext, "mov") == 0 ? "mov" : "mp4", w->tmp);
  if (r < 0 || w->oc == NULL) return mr_error(ctx, MR_ENOMEM, "'%s': cannot set up the MP4 muxer", w->path);
  w->cc = avcodec_alloc_context3(codec);
  w->frame = av_frame_alloc();
  w->pkt = av_packet_alloc();
  w->st = avformat_new_stream(w->oc, NULL);
  if (!w->cc || !w->frame || !w->pkt || !w->st) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  AVCodecContext *cc = w->cc;
  cc->width = w->ew;
  cc->height = w->eh;
  cc->pix_fmt = AV_PIX_FMT_YUV420P;
  cc->time_base = (AVRational){w->fps_den, w->fps_num};
  cc->framerate = (AVRational){w->fps_num, w->fps_den};
  cc->color_range = AVCOL_RANGE_MPEG;
  cc->colorspace = AVCOL_SPC_BT709;
  cc->color_primaries = AVCOL_PRI_BT709;
  cc->color_trc = AVCOL_TRC_BT709;
  if (w->oc->oformat->flags & AVFMT_GLOBALHEADER) cc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  AVDictionary *copts = NULL;
  char crf[16];
  snprintf(crf, sizeof crf, "%d", w->lossless ? 0 : w->crf);
  av_dict_set(&copts, "crf", crf, 0);
  av_dict_set(&copts, "preset", w->preset, 0);
  av_dict_set(&copts, "x264-params", "log=0", 0); /* x264's own chatter off; errors stay */
  r = avcodec_open2(cc, codec, &copts);
  av_dict_free(&copts);
  if (r == AVERROR(EINVAL) && strcmp(w->preset, "medium") != 0)
    return mr_error(ctx, MR_EINVAL, "'%s': libx264 refused preset '%s' (ultrafast, superfast, veryfast, faster, "
                    "fast, medium, slow, slower, veryslow, placebo)", w->path, w->preset);
  if (r < 0)
    return mr_error(ctx, MR_EIO, "'%s': cannot open libx264: %s", w->path, mr_media_av_err(r, eb, sizeof eb));
  if ((r = avcodec_parameters_from_context(w->st->codecpar, cc)) < 0)
    return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  w->st->time_base = cc->time_base;
  w->st->avg_frame_rate = cc->framerate;
  w->frame->format = AV_PIX_FMT_YUV420P;
  w->frame->width = w->ew;
  w->frame->height = w->eh;
  w->frame->color_range = cc->color_range;
  w->frame->colorspace = cc->colorspace;
  w->frame->color_primaries = cc->color_primaries;
  w->frame->color_trc = cc->color_trc;
  if (av_frame_get_buffer(w->frame, 0) < 0) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  w->sws = sws_getContext(w->ew, w->eh, AV_PIX_FMT_RGB24, w->ew, w->eh, AV_PIX_FMT_YUV420P,
                          SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, NULL, NULL, NULL);
  if (w->sws == NULL) return mr_error(ctx, MR_EUNSUPPORTED, "'%s': cannot convert RGB to yuv420p", w->path);
  /* Full-range RGB in, BT.709 limited-range YCbCr out (what the tags say). */
  sws_setColorspaceDetails(w->sws, sws_getCoefficients(SWS_CS_DEFAULT), 1, sws_getCoefficients(SWS_CS_ITU709), 0, 0,
                           1 << 16, 1 << 16);
  if ((r = avio_open(&w->oc->pb, w->tmp, AVIO_FLAG_WRITE)) < 0)
    return mr_error(ctx, MR_EIO, "cannot write '%s': %s", w->path, mr_media_av_err(r, eb, sizeof eb));
  AVDictionary *mopts = NULL;
  av_dict_set(&mopts, "movflags", "+faststart", 0);
  r = avformat_write_header(w->oc, &mopts);
  av_dict_free(&mopts);
  if (r < 0) return write_error(w, r);
  return MR_OK;
}

/* Moves every packet the encoder has ready into the file. */
static mr_status mp4_drain(mr_video_writer *w) {
  for (;;) {
    int r = avcodec_receive_packet(w->cc, w->pkt);
    if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return MR_OK;
    if (r < 0) {
      char eb[128];
      w->failed = true;
      return mr_error(w->ctx, MR_EIO, "'%s': libx264 failed: %s", w->path, mr_media_av_err(r, eb, sizeof eb));
    }
    av_packet_rescale_ts(w->pkt, w->cc->time_base, w->st->time_base);
    w->pkt->stream_index = w->st->index;
    r = av_interleaved_write_frame(w->oc, w->pkt); /* takes the packet's reference */
    if (r < 0) return write_error(w, r);
  }
}

static mr_status mp4_frame(mr_video_writer *w, const uint8_t *rgb) {
  if (av_frame_make_writable(w->frame) < 0) return mr_error(w->ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  const uint8_t *src[4] = {rgb, NULL, NULL, NULL};
  int stride[4] = {w->ew * 3, 0, 0, 0};
  sws_scale(w->sws, src, stride, 0, w->eh, w->frame->data, w->frame->linesize);
  w->frame->pts = w->frames;
  int r = avcodec_send_frame(w->cc, w->frame);
  if (r < 0) {
    char eb[128];
    w->failed = true;
    return mr_error(w->ctx, MR_EIO, "'%s': libx264 failed: %s", w->path, mr_media_av_err(r, eb, sizeof eb));
  }
  return mp4_drain(w);
}

static mr_status mp4_finish(mr_video_writer *w) {
  int r = avcodec_send_frame(w->cc, NULL);
  mr_status s = r < 0 && r != AVERROR_EOF ? write_error(w, r) : mp4_drain(w);
  if (s == MR_OK && (r = av_write_trailer(w->oc)) < 0) s = write_error(w, r);
  if (s == MR_OK && w->oc->pb->error < 0) s = write_error(w, w->oc->pb->error);
  if ((r = avio_closep(&w->oc->pb)) < 0 && s == MR_OK) s = write_error(w, r);
  return s;
}

static void mp4_release(mr_video_writer *w) {
  if (w->oc && w->oc->pb) avio_closep(&w->oc->pb);
  avformat_free_context(w->oc);
  w->oc = NULL;
  avcodec_free_context(&w->cc);
  av_frame_free(&w->frame);
  av_packet_free(&w->pkt);
  sws_freeContext(w->sws);
  w->sws = NULL;
}

/* ----------------------------------------------------------------- WebP */

static mr_status webp_start(mr_video_writer *w) {
  if (w->w > 16383 || w->h > 16383)
    return mr_error(w->ctx, MR_EINVAL, "'%s': WebP frames are at most 16383x16383, got %dx%d", w->path, w->w, w->h);
  WebPAnimEncoderOptions eo;
  if (!WebPAnimEncoderOptionsInit(&eo) || !WebPConfigInit(&w->wcfg))
    return mr_error(w->ctx, MR_EUNSUPPORTED, "'%s': libwebp version mismatch", w->path);
  eo.anim_params.loop_count = w->loop;
  w->wcfg.quality = (float)w->quality;
  w->wcfg.lossless = w->lossless;
  w->wcfg.method = 4;
  w->anim = WebPAnimEncoderNew(w->w, w->h, &eo);
  if (w->anim == NULL) return mr_error(w->ctx, MR_ENOMEM, "'%s': cannot start the WebP encoder", w->path);
  return MR_OK;
}

/* Frame i starts at round(i * 1000 / fps) ms: 16 fps alternates 62 and 63 ms. */
static int webp_ms(const mr_video_writer *w, int64_t i) {
  return (int)((i * 1000 * w->fps_den * 2 + w->fps_num) / (2 * (int64_t)w->fps_num));
}

static mr_status webp_frame(mr_video_writer *w, const uint8_t *rgb) {
  WebPPicture pic;
  if (!WebPPictureInit(&pic)) return mr_error(w->ctx, MR_EUNSUPPORTED, "'%s': libwebp version mismatch", w->path);
  pic.width = w->w;
  pic.height = w->h;
  pic.use_argb = 1;
  mr_status s = MR_OK;
  if (!WebPPictureImportRGB(&pic, rgb, w->w * 3)) s = mr_error(w->ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  else if (!WebPAnimEncoderAdd(w->anim, &pic, webp_ms(w, w->frames), &w->wcfg)) {
    w->failed = true;
    s = mr_error(w->ctx, MR_EIO, "'%s': the WebP encoder failed: %s", w->path, WebPAnimEncoderGetError(w->anim));
  }
  WebPPictureFree(&pic);
  return s;
}

static mr_status webp_finish(mr_video_writer *w) {
  WebPData data;
  WebPDataInit(&data);
  if (!WebPAnimEncoderAdd(w->anim, NULL, webp_ms(w, w->frames), NULL) || !WebPAnimEncoderAssemble(w->anim, &data)) {
    w->failed = true;
    return mr_error(w->ctx, MR_EIO, "'%s': the WebP encoder failed: %s", w->path, WebPAnimEncoderGetError(w->anim));
  }
  mr_status s = MR_OK;
  if (!mr_file_write_all(w->fd, data.bytes, data.size)) {
    w->failed = true;
    s = mr_error(w->ctx, MR_EIO, "cannot write '%s': %s", w->path, strerror(errno));
  }
  WebPDataClear(&data);
  return s;
}

/* --------------------------------------------------------- PNG sequence */

static mr_status png_frame(mr_video_writer *w, const uint8_t *rgb) {
  mr_status s = MR_OK;
  if (w->png == NULL && (s = mr_png_encoder_new(w->ctx, w->path, w->w, w->h, &w->png)) != MR_OK) return s;
  uint8_t *data;
  size_t n;
  if ((s = mr_png_encoder_encode(w->png, rgb, &data, &n)) != MR_OK) return s;
  char name[512];
  frame_name(w, w->frames + 1, name, sizeof name);
  char *file = join(w->tmp, name);
  int fd = file ? open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
  bool ok = fd >= 0 && mr_file_write_all(fd, data, n) && fsync(fd) == 0;
  int e = errno;
  if (fd >= 0 && close(fd) != 0 && ok) {
    ok = false;
    e = errno;
  }
  free(data);
  free(file);
  if (!ok) {
    w->failed = true;
    return mr_error(w->ctx, MR_EIO, "cannot write '%s' (frame %lld): %s", w->path, (long long)w->frames + 1, strerror(e));
  }
  return MR_OK;
}

/* Deletes what the temporary folder holds (our frames only), then the folder. */
static void png_remove_tmp(mr_video_writer *w) {
  char name[512];
  for (int64_t i = 1; i <= w->frames + 1; i++) {
    frame_name(w, i, name, sizeof name);
    char *file = join(w->tmp, name);
    if (file) unlink(file);
    free(file);
  }
  rmdir(w->tmp);
}

static mr_status png_finish(mr_video_writer *w) {
  mr_ctx *ctx = w->ctx;
  /* A folder that does not exist yet (or is empty) takes the whole set in one rename. */
  if (w->dir_mode && rename(w->tmp, w->dir) == 0) return MR_OK;
  if (w->dir_mode && errno != ENOTEMPTY && errno != EEXIST)
    return mr_error(ctx, MR_EIO, "cannot rename '%s' to '%s': %s", w->tmp, w->dir, strerror(errno));
  char name[512];
  for (int64_t i = 1; i <= w->frames; i++) {
    frame_name(w, i, name, sizeof name);
    char *from = join(w->tmp, name), *to = join(w->dir, name);
    int ok = from && to && rename(from, to) == 0;
    int e = errno;
    free(from);
    free(to);
    if (!ok) return mr_error(ctx, MR_EIO, "cannot move frame %lld into '%s': %s", (long long)i, w->dir, strerror(e));
  }
  rmdir(w->tmp);
  return MR_OK;
}

/* ----------------------------------------------------------------- open */

static mr_status resolve_fps(mr_ctx *ctx, const char *path, const mr_video_writer_opts *o, int *num, int *den) {
  if (o->fps_num != 0 || o->fps_den != 0) {
    if (o->fps_num <= 0 || o->fps_den < 0 || o->fps_num > 1000000 || o->fps_den > 1000000)
      return mr_error(ctx, MR_EINVAL, "'%s': frame rate %d/%d is invalid", path, o->fps_num, o->fps_den);
    *num = o->fps_num;
    *den = o->fps_den ? o->fps_den : 1;
  } else {
    double fps = o->fps == 0 ? 16.0 : o->fps;
    if (!(fps > 0 && fps <= 1000))
      return mr_error(ctx, MR_EINVAL, "'%s': frame rate %g is out of range (0..1000]", path, fps);
    if (fps == floor(fps)) {
      *num = (int)fps;
      *den = 1;
    } else {
      AVRational q = av_d2q(fps, 1001000);
      *num = q.num;
      *den = q.den;
    }
  }
  av_reduce(num, den, *num, *den, INT32_MAX);
  return MR_OK;
}

static mr_status pick_format(mr_ctx *ctx, const char *path, mr_media_format want, mr_media_format *fmt) {
  char ext[16];
  mr_media_ext(path, ext, sizeof ext);
  size_t len = strlen(path);
  bool dir_like = (len > 0 && path[len - 1] == '/') || is_dir(path);
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  mr_media_format f = want;
  if (f == MR_FORMAT_AUTO) {
    if (dir_like || (has_percent(base) && strcmp(ext, "png") == 0)) f = MR_FORMAT_PNG_SEQUENCE;
    else if (strcmp(ext, "mp4") == 0 || strcmp(ext, "m4v") == 0 || strcmp(ext, "mov") == 0) f = MR_FORMAT_MP4;
    else if (strcmp(ext, "webp") == 0) f = MR_FORMAT_WEBP;
    else
      return mr_error(ctx, MR_EUNSUPPORTED,
                      "'%s': cannot tell the video format from '%s%s' (mp4, mov, webp, a frame_%%04d.png pattern "
                      "or a folder)", path, ext[0] ? "." : "", ext);
  }
  if (f != MR_FORMAT_MP4 && f != MR_FORMAT_WEBP && f != MR_FORMAT_PNG_SEQUENCE)
    return mr_error(ctx, MR_EINVAL, "'%s': format %d is not a video format (mp4, webp, png sequence)", path, (int)f);
  if (f == MR_FORMAT_PNG_SEQUENCE && !dir_like && !is_frame_pattern(base))
    return mr_error(ctx, MR_EINVAL,
                    "'%s': a PNG sequence needs a folder or a file name with one %%d conversion (frame_%%04d.png)",
                    path);
  if (f != MR_FORMAT_PNG_SEQUENCE && dir_like)
    return mr_error(ctx, MR_EINVAL, "'%s' is a folder; only a PNG sequence can be written there", path);
  *fmt = f;
  return MR_OK;
}

static mr_status png_open(mr_video_writer *w) {
  mr_ctx *ctx = w->ctx;
  char *base = NULL;
  if (is_dir(w->path) || w->path[strlen(w->path) - 1] == '/') {
    w->dir_mode = true;
    w->dir = strdup(w->path);
    w->pattern = strdup("frame_%05d.png");
    if (w->dir) {
      size_t n = strlen(w->dir);
      while (n > 1 && w->dir[n - 1] == '/') w->dir[--n] = '\0';
    }
  } else if (!split_path(w->path, &w->dir, &base)) {
    free(base);
    return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  } else {
    w->pattern = base;
  }
  if (!w->dir || !w->pattern) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  struct stat sb;
  if (w->dir_mode && stat(w->dir, &sb) == 0 && !S_ISDIR(sb.st_mode))
    return mr_error(ctx, MR_EINVAL, "'%s' exists and is not a folder", w->dir);
  if (!w->dir_mode && !is_dir(w->dir))
    return mr_error(ctx, MR_ENOTFOUND, "cannot write '%s': folder '%s' does not exist", w->path, w->dir);
  for (int attempt = 1; attempt <= 100; attempt++) {
    free(w->tmp);
    w->tmp = mr_file_temp_name(w->dir_mode ? w->dir : w->path, attempt);
    if (w->tmp == NULL) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", w->path);
    if (mkdir(w->tmp, 0755) == 0) return MR_OK;
    if (errno != EEXIST) {
      int e = errno;
      free(w->tmp);
      w->tmp = NULL;
      return mr_error(ctx, mr_file_errno_status(e), "cannot create '%s': %s", w->path, strerror(e));
    }
  }
  free(w->tmp);
  w->tmp = NULL;
  return mr_error(ctx, MR_EIO, "cannot create '%s': 100 temporary names beside it are taken", w->path);
}

/* Releases encoders and removes anything temporary still on disk. */
static void writer_discard(mr_video_writer *w) {
  mp4_release(w);
  WebPAnimEncoderDelete(w->anim);
  w->anim = NULL;
  mr_png_encoder_free(w->png);
  w->png = NULL;
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  if (w->tmp && !w->done) {
    if (w->fmt == MR_FORMAT_PNG_SEQUENCE) png_remove_tmp(w);
    else unlink(w->tmp);
  }
  w->done = true;
}

void mr_video_writer_free(mr_video_writer *w) {
  if (w == NULL) return;
  writer_discard(w);
  free(w->path);
  free(w->preset);
  free(w->tmp);
  free(w->even);
  free(w->dir);
  free(w->pattern);
  free(w);
}

/* What opening checks before it creates anything: the path, the format it
   names, the options, and (check_dir) that the folder the output goes in
   exists and can be written. */
static mr_status validate(mr_ctx *ctx, const char *path, const mr_video_writer_opts *opts, bool check_dir,
                          mr_video_writer_opts *o, mr_media_format *fmt, int *num, int *den) {
  if (path == NULL || path[0] == '\0') return mr_error(ctx, MR_EINVAL, "a video writer needs a path");
  mr_media_init();
  *o = opts ? *opts : mr_video_writer_opts_default();
  *fmt = MR_FORMAT_AUTO;
  mr_status s = pick_format(ctx, path, o->format, fmt);
  if (s != MR_OK) return s;
  if ((s = resolve_fps(ctx, path, o, num, den)) != MR_OK) return s;
  if (o->crf < 0 || o->crf > 51) return mr_error(ctx, MR_EINVAL, "'%s': crf %d is out of range (1..51, 0 = 10)", path, o->crf);
  if (o->quality < 0 || o->quality > 100)
    return mr_error(ctx, MR_EINVAL, "'%s': quality %d is out of range (1..100, 0 = 90)", path, o->quality);
  if (o->loop < 0 || o->loop > 65535)
    return mr_error(ctx, MR_EINVAL, "'%s': loop %d is out of range (0 = forever .. 65535)", path, o->loop);
  if ((unsigned)o->odd > MR_ODD_CROP) return mr_error(ctx, MR_EINVAL, "'%s': unknown odd-size policy %d", path, (int)o->odd);
  if (check_dir) {
    /* the folder the file (or, for a folder of frames, the folder itself) goes in */
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t cut = len;
    while (cut > 0 && path[cut - 1] != '/') cut--;
    char dir[4096];
    if (cut == 0) snprintf(dir, sizeof dir, "."); /* a bare name: the working folder */
    else snprintf(dir, sizeof dir, "%.*s", (int)(cut > 1 ? cut - 1 : cut), path);
    if (!is_dir(dir)) return mr_error(ctx, MR_ENOTFOUND, "cannot write '%s': folder '%s' does not exist", path, dir);
    if (access(dir, W_OK | X_OK) != 0)
      return mr_error(ctx, MR_EIO, "cannot write '%s': folder '%s' is not writable", path, dir);
  }
  return MR_OK;
}

mr_status mr_video_writer_check(mr_ctx *ctx, const char *path, const mr_video_writer_opts *opts) {
  mr_video_writer_opts o;
  mr_media_format fmt;
  int num, den;
  return validate(ctx, path, opts, true, &o, &fmt, &num, &den);
}

mr_status mr_video_writer_open(mr_ctx *ctx, const char *path, const mr_video_writer_opts *opts,
                               mr_video_writer **out) {
  if (out) *out = NULL;
  if (out == NULL) return mr_error(ctx, MR_EINVAL, "mr_video_writer_open: out is required");
  mr_video_writer_opts o;
  mr_media_format fmt;
  int num, den;
  mr_status s = validate(ctx, path, opts, false, &o, &fmt, &num, &den);
  if (s != MR_OK) return s;
  mr_video_writer *w = calloc(1, sizeof *w);
  if (w == NULL) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  w->ctx = ctx;
  w->fd = -1;
  w->fmt = fmt;
  w->fps_num = num;
  w->fps_den = den;
  w->crf = o.crf ? o.crf : 10;
  w->quality = o.quality ? o.quality : 90;
  w->loop = o.loop;
  w->odd = o.odd;
  w->lossless = o.lossless;
  w->path = strdup(path);
  w->preset = strdup(o.preset ? o.preset : "medium");
  if (w->path == NULL || w->preset == NULL) s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  else if (fmt == MR_FORMAT_PNG_SEQUENCE) s = png_open(w);
  else s = mr_file_temp_create(ctx, path, &w->tmp, &w->fd);
  if (s != MR_OK) {
    mr_video_writer_free(w);
    return s;
  }
  *out = w;
  return MR_OK;
}

/* ---------------------------------------------------------------- write */

/* The first frame fixes the size and starts the encoder. */
static mr_status writer_start(mr_video_writer *w, int fw, int fh) {
  w->ew = fw;
  w->eh = fh;
  if (w->fmt == MR_FORMAT_MP4 && (fw % 2 || fh % 2)) {
    if (w->odd == MR_ODD_ERROR)
      return mr_error(w->ctx, MR_EINVAL, "'%s': H.264 in yuv420p needs an even width and height, frames are %dx%d "
                      "(pad or crop them, or set the odd-size option)", w->path, fw, fh);
    int d = w->odd == MR_ODD_PAD ? 1 : -1;
    if (fw % 2) w->ew += d;
    if (fh % 2) w->eh += d;
    if (w->ew < 2 || w->eh < 2)
      return mr_error(w->ctx, MR_EINVAL, "'%s': a %dx%d frame cannot be cropped to an even size", w->path, fw, fh);
    w->even = malloc((size_t)w->ew * (size_t)w->eh * 3);
    if (w->even == NULL) return mr_error(w->ctx, MR_ENOMEM, "'%s': out of memory", w->path);
  }
  w->w = fw;
  w->h = fh;
  mr_status s = MR_OK;
  if (w->fmt == MR_FORMAT_MP4) s = mp4_start(w);
  else if (w->fmt == MR_FORMAT_WEBP) s = webp_start(w);
  if (s != MR_OK) w->failed = true;
  return s;
}

/* The frame padded (last column / row repeated) or cropped to ew x eh. */
static const uint8_t *make_even(mr_video_writer *w, const uint8_t *rgb) {
  size_t src_row = (size_t)w->w * 3, dst_row = (size_t)w->ew * 3;
  size_t copy = src_row < dst_row ? src_row : dst_row;
  for (int y = 0; y < w->eh; y++) {
    int sy = y < w->h ? y : w->h - 1;
    uint8_t *d = w->even + (size_t)y * dst_row;
    memcpy(d, rgb + (size_t)sy * src_row, copy);
    if (dst_row > copy) memcpy(d + copy, d + copy - 3, 3);
  }
  return w->even;
}

static mr_status on_frame(void *user, const uint8_t *rgb, int fw, int fh) {
  mr_video_writer *w = user;
  mr_status s;
  if (w->w == 0 && (s = writer_start(w, fw, fh)) != MR_OK) return s;
  if (fw != w->w || fh != w->h)
    return mr_error(w->ctx, MR_EINVAL, "'%s': frames are %dx%d, this one is %dx%d", w->path, w->w, w->h, fw, fh);
  if (w->even) rgb = make_even(w, rgb);
  switch (w->fmt) {
  case MR_FORMAT_MP4: s = mp4_frame(w, rgb); break;
  case MR_FORMAT_WEBP: s = webp_frame(w, rgb); break;
  default: s = png_frame(w, rgb); break;
  }
  if (s == MR_OK) w->frames++;
  return s;
}

mr_status mr_video_writer_write(mr_video_writer *w, const mr_tensor *frames) {
  if (w == NULL || frames == NULL) return MR_EINVAL;
  if (w->done) return mr_error(w->ctx, MR_EINVAL, "'%s': the writer is closed", w->path);
  if (w->failed) return mr_error(w->ctx, MR_EIO, "'%s': an earlier write failed; close or free the writer", w->path);
  int64_t f, h, wd;
  mr_status s = mr_media_check_frames(w->ctx, w->path, frames, &f, &h, &wd);
  if (s != MR_OK) return s;
  if (w->w && (wd != w->w || h != w->h))
    return mr_error(w->ctx, MR_EINVAL, "'%s': frames are %dx%d, these are %lldx%lld", w->path, w->w, w->h,
                    (long long)wd, (long long)h);
  s = mr_media_tensor_frames(w->ctx, w->path, frames, on_frame, w);
  if (s == MR_ECANCELED) w->failed = true; /* part of a chunk went in */
  return s;
}

mr_status mr_video_writer_close(mr_video_writer *w) {
  if (w == NULL) return MR_EINVAL;
  if (w->done) return mr_error(w->ctx, MR_EINVAL, "'%s': the writer is already closed", w->path);
  mr_status s = MR_OK;
  if (w->failed) s = mr_error(w->ctx, MR_EIO, "'%s': not written, an earlier write failed", w->path);
  else if (w->frames == 0) s = mr_error(w->ctx, MR_EINVAL, "'%s': no frames were written", w->path);
  if (s == MR_OK) {
    switch (w->fmt) {
    case MR_FORMAT_MP4: s = mp4_finish(w); break;
    case MR_FORMAT_WEBP: s = webp_finish(w); break;
    default: s = png_finish(w); break;
    }
  }
  if (s == MR_OK && w->fmt != MR_FORMAT_PNG_SEQUENCE) {
    s = mr_file_commit(w->ctx, w->fd, w->tmp, w->path); /* closes fd; removes tmp on failure */
    w->fd = -1;
    w->done = true;
  } else if (s == MR_OK) {
    w->done = true;
  }
  writer_discard(w); /* on failure also removes the temporary file or folder */
  return s;
}

mr_status mr_video_write(mr_ctx *ctx, const char *path, const mr_tensor *frames, const mr_video_writer_opts *opts) {
  if (frames == NULL) return mr_error(ctx, MR_EINVAL, "mr_video_write: frames are required");
  mr_video_writer *w;
  mr_status s = mr_video_writer_open(ctx, path, opts, &w);
  if (s != MR_OK) return s;
  s = mr_video_writer_write(w, frames);
  if (s == MR_OK) s = mr_video_writer_close(w);
  mr_video_writer_free(w);
  return s;
}
