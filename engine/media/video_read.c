/* Video in: MP4 / WebM / MKV / GIF through libavformat + libavcodec (the
   frame converted to RGB with its own YUV matrix and range, a rotation tag
   applied), animated WebP through libwebp's WebPAnimDecoder (FFmpeg cannot
   decode WebP animations). Frames are fitted as images are, kept as bytes
   [F][3][H][W] while decoding (a quarter of f32), and uploaded once; the
   device permutes them to [3, F, H, W] and maps them to [-1, 1]. */
#include "media/media_internal.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/demux.h>

mr_video_read_opts mr_video_read_opts_default(void) {
  mr_video_read_opts o;
  memset(&o, 0, sizeof o);
  o.resize.fit = MR_FIT_CROP;
  o.resize.filter = MR_FILTER_BICUBIC;
  o.dtype = MR_F32;
  return o;
}

static void set_str(char *dst, size_t cap, const char *s) { snprintf(dst, cap, "%s", s ? s : ""); }

static bool webp_magic(const uint8_t *d, size_t n) {
  return n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0;
}

/* The first 12 bytes of path; false when it cannot be read (the real open reports why). */
static bool head12(const char *path, uint8_t *buf) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return false;
  bool ok = fread(buf, 1, 12, f) == 12;
  fclose(f);
  return ok;
}

/* ------------------------------------------------------ frame collector */

typedef struct collector {
  mr_ctx *ctx;
  const char *path;
  const mr_video_read_opts *o;
  mr_fit_opts fit;          /* o->resize, then the first frame's output size for later ones */
  int out_w, out_h;         /* 0 until the first kept frame */
  uint8_t *buf;             /* [n][3][out_h][out_w] bytes */
  int64_t cap, n;
  int64_t seen;             /* frames decoded so far */
  bool full;                /* max_frames reached */
  float *scratch;
} collector;

static mr_status collect(collector *c, const mr_rgba8 *img) {
  if (mr_ctx_take_interrupt(c->ctx)) return mr_error(c->ctx, MR_ECANCELED, "'%s': interrupted", c->path);
  int64_t i = c->seen++;
  if (i < c->o->start) return MR_OK;
  if (c->o->max_frames > 0 && c->n >= c->o->max_frames) {
    c->full = true;
    return MR_OK;
  }
  mr_fit_plan plan;
  mr_status s = mr_media_plan(c->ctx, c->path, img->w, img->h, &c->fit, &plan);
  if (s != MR_OK) return s;
  if (c->out_w == 0) {
    c->out_w = plan.out_w;
    c->out_h = plan.out_h;
    /* A later frame of another size is fitted to this one's output size. */
    c->fit.width = plan.out_w;
    c->fit.height = plan.out_h;
    c->fit.multiple = 0;
  }
  size_t plane = (size_t)c->out_w * (size_t)c->out_h;
  if (c->n == c->cap) {
    int64_t cap = c->cap ? c->cap * 2 : (c->o->max_frames > 0 && c->o->max_frames < 64 ? c->o->max_frames : 16);
    uint8_t *b = realloc(c->buf, (size_t)cap * plane * 3);
    if (b == NULL)
      return mr_error(c->ctx, MR_ENOMEM, "'%s': out of memory holding %lld frames of %dx%d", c->path, (long long)cap,
                      c->out_w, c->out_h);
    c->buf = b;
    c->cap = cap;
  }
  uint8_t *dst = c->buf + (size_t)c->n * plane * 3;
  if (mr_media_plan_is_identity(&plan, img->w, img->h)) {
    /* Same size: bytes straight through, alpha composited in bytes. */
    const mr_fit_opts *f = &c->fit;
    const uint8_t *p = img->px;
    for (size_t k = 0; k < plane; k++, p += 4) {
      if (f->drop_alpha || p[3] == 255) {
        dst[k] = p[0];
        dst[plane + k] = p[1];
        dst[2 * plane + k] = p[2];
      } else {
        float a = p[3] * (1.0f / 255.0f);
        for (int ch = 0; ch < 3; ch++)
          dst[ch * plane + k] = (uint8_t)(p[ch] * a + f->pad_color[ch] * (1.0f - a) + 0.5f);
      }
    }
  } else {
    if (c->scratch == NULL && (c->scratch = malloc(plane * 3 * sizeof(float))) == NULL)
      return mr_error(c->ctx, MR_ENOMEM, "'%s': out of memory", c->path);
    if (!mr_media_render(img, &plan, &c->fit, c->scratch)) return mr_error(c->ctx, MR_ENOMEM, "'%s': out of memory", c->path);
    for (size_t k = 0; k < plane * 3; k++) {
      float v = c->scratch[k] + 0.5f;
      dst[k] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
    }
  }
  c->n++;
  if (c->o->max_frames > 0 && c->n >= c->o->max_frames) c->full = true; /* decode no further */
  return MR_OK;
}

/* ------------------------------------------------------------------ WebP */

static mr_status webp_bad(mr_ctx *ctx, const char *path, const uint8_t *d, size_t n) {
  WebPBitstreamFeatures feat;
  VP8StatusCode st = WebPGetFeatures(d, n, &feat);
  uint32_t riff = (uint32_t)d[4] | (uint32_t)d[5] << 8 | (uint32_t)d[6] << 16 | (uint32_t)d[7] << 24;
  if (st == VP8_STATUS_NOT_ENOUGH_DATA || (size_t)riff + 8 > n)
    return mr_error(ctx, MR_EFORMAT, "'%s': truncated WebP (%zu bytes)", path, n);
  return mr_error(ctx, MR_EFORMAT, "'%s': not a valid WebP file", path);
}

static mr_status webp_probe(mr_ctx *ctx, const char *path, const uint8_t *d, size_t n, mr_video_info *info) {
  WebPData wd = {d, n};
  WebPDemuxer *dmx = WebPDemux(&wd);
  if (dmx == NULL) return webp_bad(ctx, path, d, n);
  info->width = (int)WebPDemuxGetI(dmx, WEBP_FF_CANVAS_WIDTH);
  info->height = (int)WebPDemuxGetI(dmx, WEBP_FF_CANVAS_HEIGHT);
  info->frames = WebPDemuxGetI(dmx, WEBP_FF_FRAME_COUNT);
  bool anim = (WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS) & ANIMATION_FLAG) != 0;
  info->loop = anim ? (int)WebPDemuxGetI(dmx, WEBP_FF_LOOP_COUNT) : 0;
  int64_t ms = 0;
  WebPIterator it;
  if (anim && WebPDemuxGetFrame(dmx, 1, &it)) {
    do ms += it.duration;
    while (WebPDemuxNextFrame(&it));
    WebPDemuxReleaseIterator(&it);
  }
  WebPDemuxDelete(dmx);
  info->duration = ms / 1000.0;
  info->fps_num = 0;
  info->fps_den = 1;
  if (ms > 0 && info->frames > 0) av_reduce(&info->fps_num, &info->fps_den, info->frames * 1000, ms, 1 << 30);
  set_str(info->codec, sizeof info->codec, "webp");
  set_str(info->container, sizeof info->container, "webp");
  return MR_OK;
}

static mr_status webp_decode(collector *c, const uint8_t *d, size_t n) {
  WebPData wd = {d, n};
  /* the decoder allocates two canvases at once: their size is checked first */
  WebPDemuxer *dmx = WebPDemux(&wd);
  if (dmx == NULL) return webp_bad(c->ctx, c->path, d, n);
  mr_status cs = mr_media_check_pixels(c->ctx, c->path, WebPDemuxGetI(dmx, WEBP_FF_CANVAS_WIDTH),
                                       WebPDemuxGetI(dmx, WEBP_FF_CANVAS_HEIGHT));
  WebPDemuxDelete(dmx);
  if (cs != MR_OK) return cs;
  WebPAnimDecoderOptions o;
  WebPAnimDecoderOptionsInit(&o);
  o.color_mode = MODE_RGBA;
  WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &o);
  if (dec == NULL) return webp_bad(c->ctx, c->path, d, n);
  WebPAnimInfo ai;
  mr_status s = MR_OK;
  mr_rgba8 img = {0};
  if (!WebPAnimDecoderGetInfo(dec, &ai)) s = mr_error(c->ctx, MR_EFORMAT, "'%s': not a valid WebP file", c->path);
  img.w = (int)ai.canvas_width;
  img.h = (int)ai.canvas_height;
  while (s == MR_OK && !c->full && WebPAnimDecoderHasMoreFrames(dec)) {
    int ts;
    if (!WebPAnimDecoderGetNext(dec, &img.px, &ts)) {
      s = mr_error(c->ctx, MR_EFORMAT, "'%s': cannot decode WebP frame %lld", c->path, (long long)c->seen + 1);
      break;
    }
    s = collect(c, &img); /* img.px is the decoder's canvas: read, never freed here */
  }
  WebPAnimDecoderDelete(dec);
  return s;
}

/* ---------------------------------------------------------------- FFmpeg */

typedef struct av_in {
  AVFormatContext *fc;
  AVStream *st;
  const AVCodec *dec;
  int idx;
  int orientation;  /* from the display matrix: 1, 3, 6 or 8 */
} av_in;

static void av_in_close(av_in *in) { avformat_close_input(&in->fc); }

/* The demuxers of the formats moonreel reads (FFmpeg's names). Probing
   alone would also pick, by content, demuxers that open other files: an HLS
   playlist or an ffconcat list saved as "x.mp4" would make a read of it
   read whatever local files it names. */
#define VIDEO_DEMUXERS "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,gif"

static mr_status av_in_open(mr_ctx *ctx, const char *path, av_in *in) {
  memset(in, 0, sizeof *in);
  in->orientation = 1;
  char eb[128];
  mr_status s = mr_media_bmff_check(ctx, path);
  if (s != MR_OK) return s;
  AVDictionary *opts = NULL;
  av_dict_set(&opts, "format_whitelist", VIDEO_DEMUXERS, 0);
  av_dict_set(&opts, "protocol_whitelist", "file", 0);
  int r = avformat_open_input(&in->fc, path, NULL, &opts);
  av_dict_free(&opts);
  if (r == AVERROR(ENOENT)) return mr_error(ctx, MR_ENOTFOUND, "cannot open '%s': No such file or directory", path);
  if (r == AVERROR_INVALIDDATA)
    return mr_error(ctx, MR_EFORMAT, "'%s' is not a video FFmpeg can read (MP4, WebM, MKV, GIF; WebP by libwebp)", path);
  if (r == AVERROR(EINVAL)) /* what a demuxer off the list gives */
    return mr_error(ctx, MR_EUNSUPPORTED, "'%s' is not in a video format moonreel reads (MP4/MOV, WebM, MKV, GIF, WebP)",
                    path);
  if (r < 0) return mr_error(ctx, MR_EIO, "cannot open '%s': %s", path, mr_media_av_err(r, eb, sizeof eb));
  if ((r = avformat_find_stream_info(in->fc, NULL)) < 0) {
    av_in_close(in);
    return mr_error(ctx, MR_EFORMAT, "'%s': cannot read the streams: %s", path, mr_media_av_err(r, eb, sizeof eb));
  }
  r = av_find_best_stream(in->fc, AVMEDIA_TYPE_VIDEO, -1, -1, &in->dec, 0);
  if (r < 0) {
    bool nodec = r == AVERROR_DECODER_NOT_FOUND;
    int st = nodec ? av_find_best_stream(in->fc, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0) : -1;
    const char *codec = st >= 0 ? avcodec_get_name(in->fc->streams[st]->codecpar->codec_id) : "";
    av_in_close(in);
    if (nodec) return mr_error(ctx, MR_EUNSUPPORTED, "'%s': this FFmpeg cannot decode its %s video", path, codec);
    return mr_error(ctx, MR_EFORMAT, "'%s' has no video stream", path);
  }
  in->idx = r;
  in->st = in->fc->streams[r];
  const uint8_t *m = av_stream_get_side_data(in->st, AV_PKT_DATA_DISPLAYMATRIX, NULL);
  if (m) {
    /* av_display_rotation_get is counter-clockwise; players turn clockwise by its negation. */
    double turn = -av_display_rotation_get((const int32_t *)(const void *)m);
    int q = ((int)lround(turn / 90.0) % 4 + 4) % 4;
    in->orientation = q == 1 ? 6 : q == 2 ? 3 : q == 3 ? 8 : 1;
  }
  return MR_OK;
}

static void av_info(const av_in *in, mr_video_info *info) {
  const AVCodecParameters *par = in->st->codecpar;
  bool swap = in->orientation >= 5;
  info->width = swap ? par->height : par->width;
  info->height = swap ? par->width : par->height;
  AVRational fr = in->st->avg_frame_rate;
  if (fr.num <= 0 || fr.den <= 0) fr = in->st->r_frame_rate;
  if (fr.num <= 0 || fr.den <= 0) fr = (AVRational){0, 1};
  info->fps_num = fr.num;
  info->fps_den = fr.den;
  info->frames = in->st->nb_frames;
  if (in->st->duration != AV_NOPTS_VALUE && in->st->duration > 0)
    info->duration = (double)in->st->duration * av_q2d(in->st->time_base);
  else if (in->fc->duration != AV_NOPTS_VALUE && in->fc->duration > 0)
    info->duration = (double)in->fc->duration / AV_TIME_BASE;
  info->loop = 0;
  set_str(info->codec, sizeof info->codec, avcodec_get_name(par->codec_id));
  set_str(info->container, sizeof info->container, in->fc->iformat->name);
}

/* Counts the stream's packets (one per frame for the codecs read here). */
static mr_status av_count(mr_ctx *ctx, const char *path, av_in *in, int64_t *count) {
  AVPacket *pkt = av_packet_alloc();
  if (pkt == NULL) return mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
  int64_t n = 0;
  while (av_read_frame(in->fc, pkt) >= 0) {
    if (pkt->stream_index == in->idx) n++;
    av_packet_unref(pkt);
  }
  av_packet_free(&pkt);
  *count = n;
  return MR_OK;
}

mr_status mr_video_probe(mr_ctx *ctx, const char *path, mr_video_info *info) {
  if (info) memset(info, 0, sizeof *info);
  if (path == NULL || info == NULL) return mr_error(ctx, MR_EINVAL, "mr_video_probe: path and info are required");
  mr_media_init();
  uint8_t head[12];
  if (head12(path, head) && webp_magic(head, 12)) {
    uint8_t *d;
    size_t n;
    mr_status s = mr_media_slurp(ctx, path, &d, &n);
    if (s == MR_OK) s = webp_probe(ctx, path, d, n, info);
    free(d);
    return s;
  }
  mr_status s = mr_media_check_file(ctx, path); /* the same missing / empty / folder messages as images */
  if (s != MR_OK) return s;
  av_in in;
  if ((s = av_in_open(ctx, path, &in)) != MR_OK) return s;
  av_info(&in, info);
  if (info->frames <= 0) s = av_count(ctx, path, &in, &info->frames);
  if (s == MR_OK && info->duration == 0 && info->fps_num > 0)
    info->duration = (double)info->frames * info->fps_den / info->fps_num;
  av_in_close(&in);
  return s;
}

static mr_status av_decode(collector *c, av_in *in) {
  mr_ctx *ctx = c->ctx;
  const char *path = c->path;
  char eb[128];
  AVCodecContext *cc = avcodec_alloc_context3(in->dec);
  AVPacket *pkt = av_packet_alloc();
  AVFrame *frame = av_frame_alloc();
  struct SwsContext *sws = NULL;
  mr_rgba8 img = {0};
  mr_status s = MR_OK;
  int r;
  if (!cc || !pkt || !frame) {
    s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
    goto done;
  }
  if ((s = mr_media_check_pixels(ctx, path, in->st->codecpar->width, in->st->codecpar->height)) != MR_OK) goto done;
  if ((r = avcodec_parameters_to_context(cc, in->st->codecpar)) < 0 ||
      (cc->max_pixels = (int64_t)mr_media_max_pixels(), r = avcodec_open2(cc, in->dec, NULL)) < 0) {
    s = mr_error(ctx, MR_EUNSUPPORTED, "'%s': cannot open the %s decoder: %s", path, in->dec->name,
                 mr_media_av_err(r, eb, sizeof eb));
    goto done;
  }
  bool eof = false;
  while (s == MR_OK && !c->full) {
    if (!eof) {
      r = av_read_frame(in->fc, pkt);
      if (r == AVERROR_EOF) {
        eof = true;
        r = avcodec_send_packet(cc, NULL);
      } else if (r < 0) {
        s = mr_error(ctx, MR_EFORMAT, "'%s': truncated or damaged after %lld frames: %s", path, (long long)c->seen,
                     mr_media_av_err(r, eb, sizeof eb));
        break;
      } else {
        if (pkt->stream_index == in->idx) r = avcodec_send_packet(cc, pkt);
        av_packet_unref(pkt);
      }
      if (r < 0 && r != AVERROR(EAGAIN) && r != AVERROR_EOF) {
        s = mr_error(ctx, MR_EFORMAT, "'%s': truncated or damaged at frame %lld: %s", path, (long long)c->seen + 1,
                     mr_media_av_err(r, eb, sizeof eb));
        break;
      }
    }
    for (;;) {
      r = avcodec_receive_frame(cc, frame);
      if (r == AVERROR(EAGAIN)) break;
      if (r == AVERROR_EOF) goto finished;
      if (r < 0) {
        s = mr_error(ctx, MR_EFORMAT, "'%s': truncated or damaged at frame %lld: %s", path, (long long)c->seen + 1,
                     mr_media_av_err(r, eb, sizeof eb));
        break;
      }
      bool keep = c->seen >= c->o->start;
      if (keep) {
        s = mr_media_frame_to_rgba(ctx, path, frame, &sws, &img);
        if (s == MR_OK && in->orientation != 1 && !mr_media_orient(&img, in->orientation))
          s = mr_error(ctx, MR_ENOMEM, "'%s': out of memory", path);
      }
      if (s == MR_OK) s = keep ? collect(c, &img) : (c->seen++, MR_OK);
      av_frame_unref(frame);
      if (s != MR_OK || c->full) break;
    }
  }
finished:
  if (s == MR_OK && !c->full && in->st->nb_frames > 0 && c->seen < in->st->nb_frames)
    s = mr_error(ctx, MR_EFORMAT, "'%s': truncated: its header lists %lld frames, %lld could be decoded", path,
                 (long long)in->st->nb_frames, (long long)c->seen);
done:
  free(img.px);
  sws_freeContext(sws);
  av_frame_free(&frame);
  av_packet_free(&pkt);
  avcodec_free_context(&cc);
  return s;
}

mr_status mr_media_video_decode(mr_ctx *ctx, const char *path, const mr_video_read_opts *o, mr_media_frames *out,
                                mr_video_info *info) {
  memset(out, 0, sizeof *out);
  mr_video_info inf;
  mr_status s = mr_video_probe(ctx, path, &inf);
  if (s != MR_OK) return s;
  collector c = {.ctx = ctx, .path = path, .o = o, .fit = o->resize};
  uint8_t head[12];
  if (head12(path, head) && webp_magic(head, 12)) {
    uint8_t *d;
    size_t n;
    s = mr_media_slurp(ctx, path, &d, &n);
    if (s == MR_OK) s = webp_decode(&c, d, n);
    free(d);
  } else {
    av_in in;
    s = av_in_open(ctx, path, &in);
    if (s == MR_OK) {
      s = av_decode(&c, &in);
      av_in_close(&in);
    }
  }
  if (s == MR_OK && c.n == 0)
    s = mr_error(ctx, MR_EINVAL, "'%s': no frames to read (start %lld, the file has %lld)", path, (long long)o->start,
                 (long long)c.seen);
  free(c.scratch);
  if (s != MR_OK) {
    free(c.buf);
    return s;
  }
  out->px = c.buf;
  out->n = c.n;
  out->w = c.out_w;
  out->h = c.out_h;
  if (info) *info = inf;
  return MR_OK;
}

/* Uploads the bytes and makes the [3, F, H, W] tensor in [-1, 1]. */
static mr_status frames_tensor(mr_ctx *ctx, const mr_media_frames *f, mr_dtype dtype, mr_tensor **out) {
  int64_t shape[4] = {f->n, 3, f->h, f->w};
  mr_tensor *raw = NULL, *view = NULL;
  mr_status s = mr_tensor_from_host(ctx, dtype, 4, shape, MR_U8, f->px, &raw);
  static const int perm[4] = {1, 0, 2, 3};
  if (s == MR_OK) s = mr_tensor_permute(raw, perm, &view);
  if (s == MR_OK) s = mr_op_scale(view, 2.0f / 255.0f, -1.0f, out);
  mr_tensor_free(view);
  mr_tensor_free(raw);
  return s;
}

mr_status mr_video_read(mr_ctx *ctx, const char *path, const mr_video_read_opts *opts, mr_tensor **out,
                        mr_video_info *info) {
  if (out) *out = NULL;
  if (info) memset(info, 0, sizeof *info);
  if (path == NULL || out == NULL) return mr_error(ctx, MR_EINVAL, "mr_video_read: path and out are required");
  mr_media_init();
  mr_video_read_opts o = opts ? *opts : mr_video_read_opts_default();
  mr_status s = mr_media_check_dtype(ctx, path, o.dtype);
  if (s != MR_OK) return s;
  if (o.start < 0 || o.max_frames < 0)
    return mr_error(ctx, MR_EINVAL, "'%s': start %lld and max_frames %lld must be >= 0", path, (long long)o.start,
                    (long long)o.max_frames);
  mr_media_frames f;
  mr_video_info inf;
  if ((s = mr_media_video_decode(ctx, path, &o, &f, &inf)) != MR_OK) return s;
  s = frames_tensor(ctx, &f, o.dtype, out);
  free(f.px);
  if (s == MR_OK && info) *info = inf;
  return s;
}
