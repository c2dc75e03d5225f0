/* Internal interface of engine/media: decoded pictures, fitting, EXIF,
   encoders shared by stills and sequences, atomic files, tensor <-> bytes.
   Not part of the public API. */
#ifndef MR_MEDIA_INTERNAL_H
#define MR_MEDIA_INTERNAL_H

#include "core/core.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ pictures */

/* A decoded picture: 8-bit RGBA, rows packed (stride w * 4). */
typedef struct mr_rgba8 {
  int w, h;
  uint8_t *px;
} mr_rgba8;

/* Turns src into the picture an EXIF orientation (1..8) says to display:
   a new buffer replaces src->px (w and h swap for 5..8). false when out of memory. */
bool mr_media_orient(mr_rgba8 *src, int orientation);

/* Where a picture of src_w x src_h lands on the output canvas. */
typedef struct mr_fit_plan {
  int out_w, out_h;        /* the canvas */
  double sx, sy, sw, sh;   /* source box resampled (pixel edges, may be fractional) */
  int dx, dy, dw, dh;      /* the canvas rectangle it fills; the rest is pad colour */
} mr_fit_plan;

/* Computes the plan for opts (NULL = keep the size). what names the file in
   messages. MR_EINVAL for a bad option or a size that rounds to zero. */
mr_status mr_media_plan(mr_ctx *ctx, const char *what, int src_w, int src_h, const mr_fit_opts *opts,
                        mr_fit_plan *plan);

/* Renders src through plan into out: planar RGB floats [3][out_h][out_w] in
   byte units (0..255, the filter may overshoot slightly). Transparency is
   composited over opts->pad_color unless opts->drop_alpha. false when out of
   memory. */
bool mr_media_render(const mr_rgba8 *src, const mr_fit_plan *plan, const mr_fit_opts *opts, float *out);

/* The picture as the file shows it: 1 unless opts change anything. */
bool mr_media_plan_is_identity(const mr_fit_plan *plan, int src_w, int src_h);

/* ---------------------------------------------------------------- EXIF */

/* The orientation tag (0x0112) of IFD0 in TIFF-structured data (an "Exif\0\0"
   prefix is skipped); 1 when absent or malformed. */
int mr_exif_orientation(const uint8_t *p, size_t n);

/* --------------------------------------------------------------- files */

/* A whole file in memory; messages name path. MR_ENOTFOUND, MR_EIO, or
   MR_EFORMAT for an empty file or a directory. */
mr_status mr_media_slurp(mr_ctx *ctx, const char *path, uint8_t **data, size_t *n);

/* stat checks with the messages of mr_media_slurp, without reading. */
mr_status mr_media_check_file(mr_ctx *ctx, const char *path);

/* An MP4/MOV file's tables against the bytes that hold them
   (media_bmff.c): MR_EFORMAT naming the file and the box when a table
   declares more entries than its box holds, since FFmpeg's mov demuxer
   allocates by the declared count; MR_EUNSUPPORTED for a compressed movie
   header. Files it cannot read pass: the demuxer's open reports those. */
mr_status mr_media_bmff_check(mr_ctx *ctx, const char *path);

/* The lower-case extension of path's last component ("png"), "" if none. */
void mr_media_ext(const char *path, char *ext, size_t cap);

/* ----------------------------------------------------- stills encoders */

/* Encodes packed RGB bytes (stride w * 3) as a whole file in memory: PNG and
   JPEG through libavcodec, WebP through libwebp. *out is malloc'd. quality
   and lossless as in mr_image_write_opts (already defaulted). */
mr_status mr_media_encode_still(mr_ctx *ctx, const char *path, mr_media_format fmt, const uint8_t *rgb, int w,
                                int h, int quality, bool lossless, uint8_t **out, size_t *n);

/* A libavcodec PNG encoder kept open for a sequence of frames. */
typedef struct mr_png_encoder mr_png_encoder;
mr_status mr_png_encoder_new(mr_ctx *ctx, const char *path, int w, int h, mr_png_encoder **out);
mr_status mr_png_encoder_encode(mr_png_encoder *e, const uint8_t *rgb, uint8_t **out, size_t *n);
void mr_png_encoder_free(mr_png_encoder *e);

/* ---------------------------------------------------- tensors <-> bytes */

/* Frames of a [3, H, W] or [3, F, H, W] tensor, converted to packed RGB
   bytes as Wan writes them (clamp to [-1, 1], (x + 1) / 2 * 255, truncate),
   read from the device a bounded batch at a time. */
typedef mr_status (*mr_frame_fn)(void *user, const uint8_t *rgb, int w, int h);
mr_status mr_media_tensor_frames(mr_ctx *ctx, const char *what, const mr_tensor *t, mr_frame_fn fn, void *user);

/* The shape check behind it: sets *f, *h, *w. MR_EINVAL naming what. */
mr_status mr_media_check_frames(mr_ctx *ctx, const char *what, const mr_tensor *t, int64_t *f, int64_t *h,
                                int64_t *w);

/* A storage dtype option (f32, f16, bf16), MR_EINVAL otherwise. */
mr_status mr_media_check_dtype(mr_ctx *ctx, const char *what, mr_dtype dt);

/* Writes one Wan byte per element: clamp(x, -1, 1) -> (x + 1) / 2 * 255, truncated; NaN -> 0. */
static inline uint8_t mr_media_to_byte(float x) {
  if (!(x >= -1.0f)) x = -1.0f; /* NaN too */
  if (x > 1.0f) x = 1.0f;
  return (uint8_t)((x + 1.0f) / 2.0f * 255.0f);
}

/* ---------------------------------------------------------------- FFmpeg */

struct AVFrame;
struct SwsContext;

/* Converts a decoded frame to RGBA (the file's own YUV matrix and range),
   reusing *sws and img's buffer when the size stays. Messages name path. */
mr_status mr_media_frame_to_rgba(mr_ctx *ctx, const char *path, const struct AVFrame *f, struct SwsContext **sws,
                                 mr_rgba8 *img);

/* Reads a PNG, JPEG or WebP file into img (RGBA, EXIF orientation applied;
   img->px is the caller's to free) and fills info. */
mr_status mr_media_decode_still(mr_ctx *ctx, const char *path, mr_rgba8 *img, mr_image_info *info);

/* A video's frames as decoded and fitted, before any device sees them:
   bytes [n][3][h][w]. */
typedef struct mr_media_frames {
  uint8_t *px; /* malloc'd; the caller frees it */
  int64_t n;
  int w, h;
} mr_media_frames;

/* The host half of mr_video_read: probes path, decodes the frames o selects
   and fits them (o is already checked). Needs no device, so the video fuzz
   target (tests/fuzz) runs the whole decoder on a context without one. */
mr_status mr_media_video_decode(mr_ctx *ctx, const char *path, const mr_video_read_opts *o, mr_media_frames *out,
                                mr_video_info *info);

/* Called by every public media entry point: lowers FFmpeg's default log
   level (info) to errors, once per process. */
void mr_media_init(void);

/* Decoded pictures are refused past this many pixels a frame, before any
   pixel is decoded: $MOONREEL_MAX_PIXELS, else 8192 x 8192 (a 64 MP photo
   fits; a few-KB file declaring 16383 x 16383 does not cost 1 GB). */
uint64_t mr_media_max_pixels(void);
/* MR_EFORMAT naming path, the size and the limit when w x h is past it. */
mr_status mr_media_check_pixels(mr_ctx *ctx, const char *path, int64_t w, int64_t h);

/* FFmpeg's error text for an AVERROR code into buf. */
const char *mr_media_av_err(int err, char *buf, size_t cap);

#endif
