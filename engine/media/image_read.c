/* Still images in: PNG and JPEG through libavcodec's decoders, WebP (and the
   first frame of an animated WebP) through libwebp. The file is read whole,
   its format told from its first bytes, its chunks / markers walked to find
   EXIF and to tell a truncated file from a complete one (decoders conceal
   missing data), then decoded to RGBA, oriented, fitted and uploaded. */
#include "media/media_internal.h"

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/demux.h>

mr_image_read_opts mr_image_read_opts_default(void) {
  mr_image_read_opts o;
  memset(&o, 0, sizeof o);
  o.resize.fit = MR_FIT_CROP;
  o.resize.filter = MR_FILTER_BICUBIC;
  o.dtype = MR_F32;
  return o;
}

/* -------------------------------------------------------------- sniffing */

typedef enum kind { KIND_NONE, KIND_PNG, KIND_JPEG, KIND_WEBP } kind;

static kind sniff(const uint8_t *d, size_t n) {
  if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return KIND_PNG;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return KIND_JPEG;
  if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return KIND_WEBP;
  return KIND_NONE;
}

/* Formats people hand us by mistake, named so the message says what it is. */
static const char *sniff_other(const uint8_t *d, size_t n) {
  if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) return "a GIF";
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "a BMP image";
  if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) return "a TIFF image";
  if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0) {
    if (memcmp(d + 8, "avif", 4) == 0 || memcmp(d + 8, "heic", 4) == 0 || memcmp(d + 8, "mif1", 4) == 0)
      return "an AVIF/HEIF image";
    return "an MP4/MOV video (use the video reader)";
  }
  if (n >= 4 && memcmp(d, "\x1a\x45\xdf\xa3", 4) == 0) return "a WebM/Matroska video (use the video reader)";
  if (n >= 2 && d[0] == 0xFF && d[1] == 0x0A) return "a JPEG XL image";
  if (n >= 12 && memcmp(d, "\0\0\0\x0cJXL ", 8) == 0) return "a JPEG XL image";
  return NULL;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Walks PNG chunks: IEND must be reached inside the file; eXIf is EXIF. */
static mr_status scan_png(mr_ctx *ctx, const char *path, const uint8_t *d, size_t n, int *orientation) {
  size_t off = 8;
  bool first = true;
  while (off + 12 <= n) {
    uint32_t len = be32(d + off);
    const uint8_t *type = d + off + 4;
    if (first && memcmp(type, "IHDR", 4) != 0)
      return mr_error(ctx, MR_EFORMAT, "'%s': not a valid PNG (no IHDR chunk first)", path);
    if (first && len >= 8 && off + 16 <= n) { /* the declared size, before anything is decoded */
      mr_status st = mr_media_check_pixels(ctx, path, be32(d + off + 8), be32(d + off + 12));
      if (st != MR_OK) return st;
    }
    first = false;
    if (len > n - off - 12) break;
    if (memcmp(type, "eXIf", 4) == 0) *orientation = mr_exif_orientation(d + off + 8, len);
    if (memcmp(type, "IEND", 4) == 0) return MR_OK;
    off += 12 + (size_t)len;
  }
  return mr_error(ctx, MR_EFORMAT, "'%s': truncated PNG (%zu bytes, no IEND chunk)", path, n);
}

/* Walks JPEG marker segments up to the first scan (APP1 "Exif" gives the
   orientation), then looks for the EOI marker after it. */
static mr_status scan_jpeg(mr_ctx *ctx, const char *path, const uint8_t *d, size_t n, int *orientation) {
  size_t off = 2;
  for (;;) {
    while (off < n && d[off] == 0xFF && off + 1 < n && d[off + 1] == 0xFF) off++; /* fill bytes */
    if (off + 4 > n) return mr_error(ctx, MR_EFORMAT, "'%s': truncated JPEG (%zu bytes, ends in its header)", path, n);
    if (d[off] != 0xFF) return mr_error(ctx, MR_EFORMAT, "'%s': not a valid JPEG (bad marker at byte %zu)", path, off);
    uint8_t m = d[off + 1];
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { /* no length */
      off += 2;
      continue;
    }
    if (m == 0xD9) return mr_error(ctx, MR_EFORMAT, "'%s': not a valid JPEG (no image data)", path);
    size_t len = (size_t)d[off + 2] << 8 | d[off + 3];
    if (len < 2 || off + 2 + len > n)
      return mr_error(ctx, MR_EFORMAT, "'%s': truncated JPEG (%zu bytes, ends in a header segment)", path, n);
    if (m == 0xE1 && len >= 8 && memcmp(d + off + 4, "Exif\0\0", 6) == 0 && *orientation == 1)
      *orientation = mr_exif_orientation(d + off + 4, len - 2);
    /* a start-of-frame (C0..CF but DHT C4, JPG C8, DAC CC): precision, height, width */
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && len >= 7) {
      int64_t h = (int64_t)d[off + 5] << 8 | d[off + 6], w = (int64_t)d[off + 7] << 8 | d[off + 8];
      mr_status st = h > 0 && w > 0 ? mr_media_check_pixels(ctx, path, w, h) : MR_OK; /* 0: a DNL marker says later */
      if (st != MR_OK) return st;
    }
    off += 2 + len;
    if (m == 0xDA) break; /* start of scan: entropy-coded data follows */
  }
  /* In entropy-coded data 0xFF is always followed by 0x00 or a restart
     marker, so the first FF D9 is the end of the image. */
  for (size_t i = off; i + 1 < n; i++)
    if (d[i] == 0xFF && d[i + 1] == 0xD9) return MR_OK;
  return mr_error(ctx, MR_EFORMAT, "'%s': truncated JPEG (%zu bytes, no end-of-image marker)", path, n);
}

/* ----------------------------------------------------------- decoding */

/* The YUVJ formats are YUV with full range; swscale wants them said that way. */
static enum AVPixelFormat unjpeg(enum AVPixelFormat f, bool *full) {
  switch (f) {
  case AV_PIX_FMT_YUVJ420P: *full = true; return AV_PIX_FMT_YUV420P;
  case AV_PIX_FMT_YUVJ422P: *full = true; return AV_PIX_FMT_YUV422P;
  case AV_PIX_FMT_YUVJ444P: *full = true; return AV_PIX_FMT_YUV444P;
  case AV_PIX_FMT_YUVJ440P: *full = true; return AV_PIX_FMT_YUV440P;
  case AV_PIX_FMT_YUVJ411P: *full = true; return AV_PIX_FMT_YUV411P;
  default: return f;
  }
}

mr_status mr_media_frame_to_rgba(mr_ctx *ctx, const char *path, const AVFrame *f, struct SwsContext **sws,
                                 mr_rgba8 *img) {
  bool full = f->color_range == AVCOL_RANGE_JPEG;
  enum AVPixelFormat fmt = unjpeg(f->format, &full);
  const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(fmt);
  if (desc == NULL || f->width <= 0 || f->height <= 0)
    return mr_error(ctx, MR_EFORMAT, "'%s': decoded picture has no usable format", path);
  *sws = sws_getCachedContext(*sws, f->width, f->height, fmt, f->width, f->height, AV_PIX_FMT_RGBA,
                              SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
  if (*sws == NULL)
    return mr_error(ctx, MR_EUNSUPPORTED, "'%s': cannot convert pixel format %s to RGB", path, desc->name);
  bool yuv = !(desc->flags & AV_PIX_FMT_FLAG_RGB) && !(desc->flags & AV_PIX_FMT_FLAG_PAL) && desc->nb_components >= 3;
  if (yuv) {
    /* The file's own matrix and range (BT.601 when untagged, as JPEG is). */
    int cs = f->colorspace == AVCOL_SPC_UNSPECIFIED || f->colorspace == AVCOL_SPC_RGB ? SWS_CS_DEFAULT : f->colorspace;
    sws_setColorspaceDetails(*sws, sws_getCoefficients(cs), full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16,
                             1 << 16);
  }
  size_t bytes = (size_t)f->width * (size_t)f->height * 4;
  if (img->px == NULL || img->w != f->width || img->h != f->height) {
    free(img->px);
    img->px = malloc(bytes);
    img->w = f->width;
    img->h = f->height;
    if (img->px == NULL) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory for a %dx%d picture", path, f->width, f->height);
  }
  uint8_t *dst[4] = {img->px, NULL, NULL, NULL};
  int stride[4] = {f->width * 4, 0, 0, 0};
  if (sws_scale(*sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst, stride) != f->height)
    return mr_error(ctx, MR_EFORMAT, "'%s': cannot convert the picture to RGB", path);
  return MR_OK;
}

/* One whole file as one packet to a libavcodec image decoder. */
static mr_status decode_av(mr_ctx *ctx, const char *path, enum AVCodecID id, const char *name, const uint8_t *d,
                           size_t n, mr_rgba8 *img, bool *alpha) {
  const AVCodec *codec = avcodec_find_decoder(id);
  if (codec == NULL) return mr_error(ctx, MR_EUNSUPPORTED, "'%s': this FFmpeg has no %s decoder", path, name);
  AVCodecContext *cc = avcodec_alloc_context3(codec);
  AVPacket *pkt = av_packet_alloc();
  AVFrame *frame = av_frame_alloc();
  struct SwsContext *sws = NULL;
  mr_status s = MR_OK;
  char eb[128];
  int r;
  if (!cc || !pkt || !frame || n > INT32_MAX || av_new_packet(pkt, (int)n) < 0) {
    s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
    goto done;
  }
  memcpy(pkt->data, d, n); /* the copy brings the padding decoders read past the end */
  cc->thread_count = 1;
  cc->max_pixels = (int64_t)mr_media_max_pixels(); /* the decoder refuses larger headers before allocating */
  if ((r = avcodec_open2(cc, codec, NULL)) < 0) {
    s = mr_error(ctx, MR_EUNSUPPORTED, "'%s': cannot open the %s decoder: %s", path, name, mr_media_av_err(r, eb, sizeof eb));
    goto done;
  }
  r = avcodec_send_packet(cc, pkt);
  if (r >= 0) r = avcodec_send_packet(cc, NULL);
  if (r >= 0 || r == AVERROR_EOF) r = avcodec_receive_frame(cc, frame);
  if (r < 0) {
    if (cc->width > 0 && cc->height > 0 && mr_media_check_pixels(ctx, path, cc->width, cc->height) != MR_OK) {
      s = MR_EFORMAT; /* the header was read: the size is what was refused */
      goto done;
    }
    s = mr_error(ctx, MR_EFORMAT, "'%s': cannot decode the %s: %s", path, name, mr_media_av_err(r, eb, sizeof eb));
    goto done;
  }
  if (frame->width <= 0 || frame->height <= 0) {
    s = mr_error(ctx, MR_EFORMAT, "'%s' has zero size (%dx%d)", path, frame->width, frame->height);
    goto done;
  }
  const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(frame->format);
  *alpha = desc && (desc->flags & AV_PIX_FMT_FLAG_ALPHA);
  s = mr_media_frame_to_rgba(ctx, path, frame, &sws, img);
done:
  sws_freeContext(sws);
  av_frame_free(&frame);
  av_packet_free(&pkt);
  avcodec_free_context(&cc);
  return s;
}

static mr_status webp_invalid(mr_ctx *ctx, const char *path, const uint8_t *d, size_t n) {
  WebPBitstreamFeatures feat;
  VP8StatusCode st = WebPGetFeatures(d, n, &feat);
  if (st == VP8_STATUS_NOT_ENOUGH_DATA) return mr_error(ctx, MR_EFORMAT, "'%s': truncated WebP (%zu bytes)", path, n);
  uint32_t riff = n >= 8 ? (uint32_t)d[4] | (uint32_t)d[5] << 8 | (uint32_t)d[6] << 16 | (uint32_t)d[7] << 24 : 0;
  if (st == VP8_STATUS_OK && (size_t)riff + 8 > n)
    return mr_error(ctx, MR_EFORMAT, "'%s': truncated WebP (%zu of %zu bytes)", path, n, (size_t)riff + 8);
  return mr_error(ctx, MR_EFORMAT, "'%s': not a valid WebP file (libwebp status %d)", path, (int)st);
}

/* WebP: the demuxer gives flags and the EXIF chunk; stills decode directly,
   animations through the animation decoder (its first, composited frame). */
static mr_status decode_webp(mr_ctx *ctx, const char *path, const uint8_t *d, size_t n, mr_rgba8 *img,
                             mr_image_info *info) {
  WebPData wd = {d, n};
  WebPDemuxer *dmx = WebPDemux(&wd);
  if (dmx == NULL) return webp_invalid(ctx, path, d, n);
  uint32_t flags = WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS);
  /* the canvas an animation decoder would allocate (twice over), or the still's size */
  mr_status cs = mr_media_check_pixels(ctx, path, WebPDemuxGetI(dmx, WEBP_FF_CANVAS_WIDTH),
                                       WebPDemuxGetI(dmx, WEBP_FF_CANVAS_HEIGHT));
  if (cs != MR_OK) {
    WebPDemuxDelete(dmx);
    return cs;
  }
  info->has_alpha = (flags & ALPHA_FLAG) != 0;
  info->animated = (flags & ANIMATION_FLAG) != 0;
  WebPChunkIterator chunk;
  if ((flags & EXIF_FLAG) && WebPDemuxGetChunk(dmx, "EXIF", 1, &chunk)) {
    info->orientation = mr_exif_orientation(chunk.chunk.bytes, chunk.chunk.size);
    WebPDemuxReleaseChunkIterator(&chunk);
  }
  WebPDemuxDelete(dmx);
  mr_status s = MR_OK;
  if (info->animated) {
    WebPAnimDecoderOptions o;
    WebPAnimDecoderOptionsInit(&o);
    o.color_mode = MODE_RGBA;
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &o);
    WebPAnimInfo ai;
    uint8_t *buf;
    int ts;
    if (dec == NULL || !WebPAnimDecoderGetInfo(dec, &ai) || !WebPAnimDecoderGetNext(dec, &buf, &ts)) {
      s = mr_error(ctx, MR_EFORMAT, "'%s': cannot decode the first frame of the animated WebP", path);
    } else if ((img->px = malloc((size_t)ai.canvas_width * ai.canvas_height * 4)) == NULL) {
      s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
    } else {
      img->w = (int)ai.canvas_width;
      img->h = (int)ai.canvas_height;
      memcpy(img->px, buf, (size_t)img->w * (size_t)img->h * 4);
    }
    WebPAnimDecoderDelete(dec);
    return s;
  }
  int w = 0, h = 0;
  uint8_t *px = WebPDecodeRGBA(d, n, &w, &h);
  if (px == NULL) return webp_invalid(ctx, path, d, n);
  img->px = malloc((size_t)w * (size_t)h * 4);
  if (img->px == NULL) s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  else {
    memcpy(img->px, px, (size_t)w * (size_t)h * 4);
    img->w = w;
    img->h = h;
  }
  WebPFree(px);
  return s;
}

/* Decodes any supported file into img (RGBA, oriented) and fills info. */
mr_status mr_media_decode_still(mr_ctx *ctx, const char *path, mr_rgba8 *img, mr_image_info *info) {
  memset(info, 0, sizeof *info);
  info->orientation = 1;
  img->px = NULL;
  img->w = img->h = 0;
  uint8_t *d;
  size_t n;
  mr_status s = mr_media_slurp(ctx, path, &d, &n);
  if (s != MR_OK) return s;
  switch (sniff(d, n)) {
  case KIND_PNG:
    strcpy(info->format, "png");
    s = scan_png(ctx, path, d, n, &info->orientation);
    if (s == MR_OK) s = decode_av(ctx, path, AV_CODEC_ID_PNG, "PNG", d, n, img, &info->has_alpha);
    break;
  case KIND_JPEG:
    strcpy(info->format, "jpeg");
    s = scan_jpeg(ctx, path, d, n, &info->orientation);
    if (s == MR_OK) s = decode_av(ctx, path, AV_CODEC_ID_MJPEG, "JPEG", d, n, img, &info->has_alpha);
    break;
  case KIND_WEBP:
    strcpy(info->format, "webp");
    s = decode_webp(ctx, path, d, n, img, info);
    break;
  default: {
    const char *other = sniff_other(d, n);
    if (other) s = mr_error(ctx, MR_EUNSUPPORTED, "'%s' is %s; images are read from PNG, JPEG or WebP", path, other);
    else s = mr_error(ctx, MR_EFORMAT, "'%s' is not an image (PNG, JPEG or WebP)", path);
  }
  }
  free(d);
  if (s == MR_OK && (img->w <= 0 || img->h <= 0))
    s = mr_error(ctx, MR_EFORMAT, "'%s' has zero size (%dx%d)", path, img->w, img->h);
  if (s == MR_OK && !mr_media_orient(img, info->orientation)) s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  if (s != MR_OK) {
    free(img->px);
    img->px = NULL;
    return s;
  }
  info->width = img->w;
  info->height = img->h;
  return MR_OK;
}

mr_status mr_image_read(mr_ctx *ctx, const char *path, const mr_image_read_opts *opts, mr_tensor **out,
                        mr_image_info *info) {
  if (out) *out = NULL;
  if (info) memset(info, 0, sizeof *info);
  if (path == NULL || out == NULL) return mr_error(ctx, MR_EINVAL, "mr_image_read: path and out are required");
  mr_media_init();
  mr_image_read_opts o = opts ? *opts : mr_image_read_opts_default();
  mr_status s = mr_media_check_dtype(ctx, path, o.dtype);
  if (s != MR_OK) return s;
  mr_rgba8 img;
  mr_image_info inf;
  if ((s = mr_media_decode_still(ctx, path, &img, &inf)) != MR_OK) return s;
  mr_fit_plan plan;
  s = mr_media_plan(ctx, path, img.w, img.h, &o.resize, &plan);
  float *px = NULL;
  if (s == MR_OK) {
    size_t count = (size_t)3 * (size_t)plan.out_w * (size_t)plan.out_h;
    px = malloc(count * sizeof *px);
    if (px == NULL || !mr_media_render(&img, &plan, &o.resize, px))
      s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory fitting %dx%d to %dx%d", path, img.w, img.h, plan.out_w,
                   plan.out_h);
    for (size_t i = 0; s == MR_OK && i < count; i++) px[i] = (px[i] / 255.0f - 0.5f) / 0.5f; /* as to_tensor, sub, div */
  }
  if (s == MR_OK) {
    int64_t shape[3] = {3, plan.out_h, plan.out_w};
    s = mr_tensor_from_host(ctx, o.dtype, 3, shape, MR_F32, px, out);
  }
  free(px);
  free(img.px);
  if (s == MR_OK && info) *info = inf;
  return s;
}
