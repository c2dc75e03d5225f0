/* Still images out: PNG (libavcodec's png encoder, RGB 8-bit), JPEG
   (libavcodec's mjpeg encoder, JFIF full-range BT.601 YCbCr, 4:4:4 from
   quality 90 up, else 4:2:0) and WebP (libwebp), each encoded in memory and
   written atomically. The PNG encoder is also kept open for PNG sequences. */
#include "media/media_internal.h"

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <webp/encode.h>

mr_image_write_opts mr_image_write_opts_default(void) {
  mr_image_write_opts o;
  memset(&o, 0, sizeof o);
  o.format = MR_FORMAT_AUTO;
  return o;
}

/* Sends one frame (or NULL) and takes the one packet an intra encoder gives. */
static mr_status encode_one(mr_ctx *ctx, const char *path, AVCodecContext *cc, AVFrame *frame, AVPacket *pkt,
                            const char *name, uint8_t **out, size_t *n) {
  char eb[128];
  int r = avcodec_send_frame(cc, frame);
  if (r >= 0) r = avcodec_receive_packet(cc, pkt);
  if (r < 0) return mr_error(ctx, MR_EIO, "'%s': the %s encoder failed: %s", path, name, mr_media_av_err(r, eb, sizeof eb));
  *out = malloc(pkt->size ? (size_t)pkt->size : 1);
  if (*out == NULL) {
    av_packet_unref(pkt);
    return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  }
  memcpy(*out, pkt->data, (size_t)pkt->size);
  *n = (size_t)pkt->size;
  av_packet_unref(pkt);
  return MR_OK;
}

/* ------------------------------------------------------------------ PNG */

struct mr_png_encoder {
  mr_ctx *ctx;
  const char *path;
  AVCodecContext *cc;
  AVFrame *frame;
  AVPacket *pkt;
  int64_t pts;
};

void mr_png_encoder_free(mr_png_encoder *e) {
  if (e == NULL) return;
  avcodec_free_context(&e->cc);
  av_frame_free(&e->frame);
  av_packet_free(&e->pkt);
  free(e);
}

mr_status mr_png_encoder_new(mr_ctx *ctx, const char *path, int w, int h, mr_png_encoder **out) {
  *out = NULL;
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
  if (codec == NULL) return mr_error(ctx, MR_EUNSUPPORTED, "'%s': this FFmpeg has no PNG encoder", path);
  mr_png_encoder *e = calloc(1, sizeof *e);
  if (e == NULL) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  e->ctx = ctx;
  e->path = path;
  e->cc = avcodec_alloc_context3(codec);
  e->frame = av_frame_alloc();
  e->pkt = av_packet_alloc();
  if (!e->cc || !e->frame || !e->pkt) {
    mr_png_encoder_free(e);
    return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  }
  e->cc->width = w;
  e->cc->height = h;
  e->cc->pix_fmt = AV_PIX_FMT_RGB24;
  e->cc->time_base = (AVRational){1, 25};
  e->cc->thread_count = 1; /* one packet out per frame in */
  char eb[128];
  int r = avcodec_open2(e->cc, codec, NULL);
  if (r >= 0) {
    e->frame->format = AV_PIX_FMT_RGB24;
    e->frame->width = w;
    e->frame->height = h;
    r = av_frame_get_buffer(e->frame, 0);
  }
  if (r < 0) {
    mr_png_encoder_free(e);
    return mr_error(ctx, MR_EIO, "'%s': cannot open the PNG encoder: %s", path, mr_media_av_err(r, eb, sizeof eb));
  }
  *out = e;
  return MR_OK;
}

mr_status mr_png_encoder_encode(mr_png_encoder *e, const uint8_t *rgb, uint8_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (av_frame_make_writable(e->frame) < 0) return mr_error(e->ctx, MR_ENOMEM, "'%s': out of memory", e->path);
  size_t row = (size_t)e->cc->width * 3;
  for (int y = 0; y < e->cc->height; y++)
    memcpy(e->frame->data[0] + (size_t)y * (size_t)e->frame->linesize[0], rgb + (size_t)y * row, row);
  e->frame->pts = e->pts++;
  return encode_one(e->ctx, e->path, e->cc, e->frame, e->pkt, "PNG", out, n);
}

/* ----------------------------------------------------------------- JPEG */

static mr_status encode_jpeg(mr_ctx *ctx, const char *path, const uint8_t *rgb, int w, int h, int quality,
                             uint8_t **out, size_t *n) {
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
  if (codec == NULL) return mr_error(ctx, MR_EUNSUPPORTED, "'%s': this FFmpeg has no JPEG encoder", path);
  enum AVPixelFormat pf = quality >= 90 ? AV_PIX_FMT_YUV444P : AV_PIX_FMT_YUV420P; /* full range, below */
  AVCodecContext *cc = avcodec_alloc_context3(codec);
  AVFrame *frame = av_frame_alloc();
  AVPacket *pkt = av_packet_alloc();
  struct SwsContext *sws = NULL;
  mr_status s = MR_OK;
  char eb[128];
  if (!cc || !frame || !pkt) {
    s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
    goto done;
  }
  /* libavcodec's JPEG tables are the standard ones times qscale / 8;
     libjpeg's quality q scales them by (q < 50 ? 5000 / q : 200 - 2q)
     percent. So quality means what it means to libjpeg and PIL, down to
     qscale 1 (about libjpeg's 94). */
  double pct = quality < 50 ? 5000.0 / quality : 200.0 - 2.0 * quality;
  int q = (int)lround(pct * 8.0 / 100.0);
  if (q < 1) q = 1;
  if (q > 31) q = 31;
  cc->width = w;
  cc->height = h;
  cc->pix_fmt = pf;
  cc->color_range = AVCOL_RANGE_JPEG;
  cc->time_base = (AVRational){1, 25};
  cc->flags |= AV_CODEC_FLAG_QSCALE;
  cc->global_quality = FF_QP2LAMBDA * q;
  cc->qmin = 1;
  cc->qmax = 31;
  int r = avcodec_open2(cc, codec, NULL);
  if (r >= 0) {
    frame->format = pf;
    frame->width = w;
    frame->height = h;
    frame->color_range = AVCOL_RANGE_JPEG;
    r = av_frame_get_buffer(frame, 0);
  }
  if (r < 0) {
    s = mr_error(ctx, MR_EIO, "'%s': cannot open the JPEG encoder: %s", path, mr_media_av_err(r, eb, sizeof eb));
    goto done;
  }
  sws = sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, pf, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, NULL,
                       NULL, NULL);
  if (sws == NULL) {
    s = mr_error(ctx, MR_EUNSUPPORTED, "'%s': cannot convert RGB to YCbCr", path);
    goto done;
  }
  /* JFIF: BT.601 matrix, full range. */
  sws_setColorspaceDetails(sws, sws_getCoefficients(SWS_CS_DEFAULT), 1, sws_getCoefficients(SWS_CS_ITU601), 1, 0,
                           1 << 16, 1 << 16);
  const uint8_t *src[4] = {rgb, NULL, NULL, NULL};
  int stride[4] = {w * 3, 0, 0, 0};
  sws_scale(sws, src, stride, 0, h, frame->data, frame->linesize);
  frame->quality = cc->global_quality;
  frame->pts = 0;
  s = encode_one(ctx, path, cc, frame, pkt, "JPEG", out, n);
done:
  sws_freeContext(sws);
  av_packet_free(&pkt);
  av_frame_free(&frame);
  avcodec_free_context(&cc);
  return s;
}

/* ----------------------------------------------------------------- WebP */

static mr_status encode_webp(mr_ctx *ctx, const char *path, const uint8_t *rgb, int w, int h, int quality,
                             bool lossless, uint8_t **out, size_t *n) {
  uint8_t *buf = NULL;
  size_t size = lossless ? WebPEncodeLosslessRGB(rgb, w, h, w * 3, &buf)
                         : WebPEncodeRGB(rgb, w, h, w * 3, (float)quality, &buf);
  if (size == 0) {
    WebPFree(buf);
    return mr_error(ctx, MR_EIO, "'%s': the WebP encoder failed (%dx%d; WebP allows up to 16383)", path, w, h);
  }
  *out = malloc(size);
  if (*out == NULL) {
    WebPFree(buf);
    return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  }
  memcpy(*out, buf, size);
  *n = size;
  WebPFree(buf);
  return MR_OK;
}

mr_status mr_media_encode_still(mr_ctx *ctx, const char *path, mr_media_format fmt, const uint8_t *rgb, int w,
                                int h, int quality, bool lossless, uint8_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  switch (fmt) {
  case MR_FORMAT_PNG: {
    mr_png_encoder *e;
    mr_status s = mr_png_encoder_new(ctx, path, w, h, &e);
    if (s == MR_OK) s = mr_png_encoder_encode(e, rgb, out, n);
    mr_png_encoder_free(e);
    return s;
  }
  case MR_FORMAT_JPEG: return encode_jpeg(ctx, path, rgb, w, h, quality, out, n);
  case MR_FORMAT_WEBP: return encode_webp(ctx, path, rgb, w, h, quality, lossless, out, n);
  default: return mr_error(ctx, MR_EUNSUPPORTED, "'%s': not a still image format", path);
  }
}

/* ------------------------------------------------------------ mr_image_write */

typedef struct still_job {
  mr_ctx *ctx;
  const char *path;
  mr_media_format fmt;
  int quality;
  bool lossless;
} still_job;

static mr_status write_still(void *user, const uint8_t *rgb, int w, int h) {
  still_job *j = user;
  uint8_t *data;
  size_t n;
  mr_status s = mr_media_encode_still(j->ctx, j->path, j->fmt, rgb, w, h, j->quality, j->lossless, &data, &n);
  if (s == MR_OK) s = mr_file_write_atomic(j->ctx, j->path, data, n);
  free(data);
  return s;
}

mr_status mr_image_write(mr_ctx *ctx, const char *path, const mr_tensor *image, const mr_image_write_opts *opts) {
  if (path == NULL || image == NULL) return mr_error(ctx, MR_EINVAL, "mr_image_write: path and image are required");
  mr_media_init();
  mr_image_write_opts o = opts ? *opts : mr_image_write_opts_default();
  mr_media_format fmt = o.format;
  if (fmt == MR_FORMAT_AUTO) {
    char ext[16];
    mr_media_ext(path, ext, sizeof ext);
    if (strcmp(ext, "png") == 0) fmt = MR_FORMAT_PNG;
    else if (strcmp(ext, "jpg") == 0 || strcmp(ext, "jpeg") == 0) fmt = MR_FORMAT_JPEG;
    else if (strcmp(ext, "webp") == 0) fmt = MR_FORMAT_WEBP;
    else
      return mr_error(ctx, MR_EUNSUPPORTED, "'%s': unknown image extension '%s%s' (png, jpg, jpeg, webp)", path,
                      ext[0] ? "." : "", ext);
  }
  if (fmt != MR_FORMAT_PNG && fmt != MR_FORMAT_JPEG && fmt != MR_FORMAT_WEBP)
    return mr_error(ctx, MR_EINVAL, "'%s': format %d is not a still image format", path, (int)fmt);
  if (o.quality < 0 || o.quality > 100)
    return mr_error(ctx, MR_EINVAL, "'%s': quality %d is out of range (1..100, 0 = default)", path, o.quality);
  if (o.quality == 0) o.quality = fmt == MR_FORMAT_JPEG ? 95 : 90;
  int64_t f, h, w;
  mr_status s = mr_media_check_frames(ctx, path, image, &f, &h, &w);
  if (s != MR_OK) return s;
  if (f != 1) return mr_error(ctx, MR_EINVAL, "'%s': an image is one frame, the tensor has %lld", path, (long long)f);
  still_job j = {ctx, path, fmt, o.quality, o.lossless};
  return mr_media_tensor_frames(ctx, path, image, write_still, &j);
}

/* mr_tensor_frames_rgb8: the writers' conversion, handed to the caller. */
typedef struct rgb8_job {
  mr_ctx *ctx;
  mr_rgb8_fn fn;
  void *user;
  int64_t index;
} rgb8_job;

static mr_status give_rgb8(void *user, const uint8_t *rgb, int w, int h) {
  rgb8_job *j = user;
  if (!j->fn(rgb, w, h, j->index, j->user))
    return mr_error(j->ctx, MR_ECANCELED, "frames to RGB: stopped by the callback at frame %lld", (long long)j->index);
  j->index++;
  return MR_OK;
}

mr_status mr_tensor_frames_rgb8(const mr_tensor *frames, mr_rgb8_fn fn, void *user) {
  if (frames == NULL || fn == NULL) return MR_EINVAL;
  rgb8_job j = {mr_tensor_ctx(frames), fn, user, 0};
  return mr_media_tensor_frames(j.ctx, "frames to RGB", frames, give_rgb8, &j);
}
