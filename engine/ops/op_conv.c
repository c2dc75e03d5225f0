/* The convolution family: 3-D convolution as an implicit GEMM
   (shaders/conv3d.comp), nearest upsampling (upsample_nearest.comp) and the
   channels-first RMS norm of convolutional nets (channel_rms_norm.comp).

   conv3d has two kernels in one shader, chosen per device: a barrier-free
   register-tiled path for CPU-type devices (lavapipe) and a shared-memory
   tiled path for GPUs. Both gather the input through its strides, so views
   (a chunk of frames, a sub-sampled grid) need no copy. */
#include "ops/op_common.h"
#include "ops/op_conv.h"

#include <math.h>
#include <string.h>

typedef struct conv_push {
  uint32_t C, T, H, W;
  uint32_t O, To, Ho, Wo;
  uint32_t kt, kh, kw;
  uint32_t st, sh, sw;
  uint32_t pt, ph, pw;
  uint32_t xs_c, xs_t, xs_h, xs_w;
  uint32_t x_off, w_off, b_off;
  uint32_t tiles_n;
} conv_push;

/* Shared-memory tile configurations: channels x positions x depth, per-thread block. */
typedef struct conv_tile { uint32_t bm, bn, bk, tm, tn; } conv_tile;
static const conv_tile TILE_WIDE = {64, 64, 16, 4, 4};   /* O > 16 */
static const conv_tile TILE_NARROW = {16, 64, 16, 1, 4}; /* few output channels (RGB heads, 1x1 to z) */

static mr_status conv_check(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, const int *stride,
                            const int *pad, int64_t *out_shape) {
  mr_ctx *ctx = x->ctx;
  char a[64], b[64];
  mr_status st = mr_op_same_ctx(x, w, "conv3d");
  if (st == MR_OK && bias) st = mr_op_same_ctx(x, bias, "conv3d");
  if (st != MR_OK) return st;
  if (x->ndim != 4 || mr_tensor_numel(x) == 0)
    return mr_error(ctx, MR_EINVAL, "conv3d: x must be a non-empty [C, T, H, W], got %s",
                    mr_shape_str(x->ndim, x->shape, a, sizeof a));
  if (w->ndim != 5 || w->shape[1] != x->shape[0])
    return mr_error(ctx, MR_EINVAL, "conv3d: w must be [O, %lld, kt, kh, kw] for x %s, got %s", (long long)x->shape[0],
                    mr_shape_str(x->ndim, x->shape, a, sizeof a), mr_shape_str(w->ndim, w->shape, b, sizeof b));
  if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))
    return mr_error(ctx, MR_EINVAL, "conv3d: bias must be [%lld], got %s", (long long)w->shape[0],
                    mr_shape_str(bias->ndim, bias->shape, b, sizeof b));
  out_shape[0] = w->shape[0];
  for (int d = 0; d < 3; d++) {
    if (stride[d] < 1 || pad[2 * d] < 0 || pad[2 * d + 1] < 0)
      return mr_error(ctx, MR_EINVAL, "conv3d: axis %d has stride %d and padding %d/%d (stride >= 1, padding >= 0)", d,
                      stride[d], pad[2 * d], pad[2 * d + 1]);
    int64_t padded = x->shape[d + 1] + pad[2 * d] + pad[2 * d + 1], k = w->shape[d + 2];
    if (k < 1 || padded < k)
      return mr_error(ctx, MR_EINVAL, "conv3d: kernel %s does not fit the padded input along axis %d (%lld < %lld)",
                      mr_shape_str(w->ndim, w->shape, b, sizeof b), d, (long long)padded, (long long)k);
    out_shape[d + 1] = (padded - k) / stride[d] + 1;
  }
  return MR_OK;
}

static mr_status conv_dispatch(mr_ctx *ctx, int variant, const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias,
                               const int *stride, const int *pad, mr_tensor *o) {
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  conv_push pc = {.C = (uint32_t)x->shape[0], .T = (uint32_t)x->shape[1], .H = (uint32_t)x->shape[2],
                  .W = (uint32_t)x->shape[3], .O = (uint32_t)o->shape[0], .To = (uint32_t)o->shape[1],
                  .Ho = (uint32_t)o->shape[2], .Wo = (uint32_t)o->shape[3], .kt = (uint32_t)w->shape[2],
                  .kh = (uint32_t)w->shape[3], .kw = (uint32_t)w->shape[4], .st = (uint32_t)stride[0],
                  .sh = (uint32_t)stride[1], .sw = (uint32_t)stride[2], .pt = (uint32_t)pad[0],
                  .ph = (uint32_t)pad[2], .pw = (uint32_t)pad[4], .xs_c = (uint32_t)x->strides[0],
                  .xs_t = (uint32_t)x->strides[1], .xs_h = (uint32_t)x->strides[2], .xs_w = (uint32_t)x->strides[3],
                  .x_off = (uint32_t)x->offset, .w_off = (uint32_t)w->offset,
                  .b_off = bias ? (uint32_t)bias->offset : 0};
  uint64_t N = (uint64_t)pc.To * pc.Ho * pc.Wo;
  uint32_t spec[13] = {x->dtype, w->dtype, bias ? bias->dtype : x->dtype, o->dtype, variant == MR_CONV_SMEM,
                       bias != NULL, 1, 1, 1, 1, 1, 1, 1};
  uint64_t tiles_m;
  if (variant == MR_CONV_SMEM) {
    const conv_tile *t = pc.O > 16 ? &TILE_WIDE : &TILE_NARROW;
    uint32_t wx = t->bn / t->tn, wy = t->bm / t->tm, smem = 4 * t->bk * (t->bm + t->bn + 2);
    if (wx * wy > caps->max_invocations || smem > caps->info.shared_memory_bytes)
      return mr_error(ctx, MR_EUNSUPPORTED, "conv3d: the %ux%u tile needs %u threads and %u bytes of shared memory",
                      t->bm, t->bn, wx * wy, smem);
    uint32_t s[7] = {wx, wy, t->bm, t->bn, t->bk, t->tm, t->tn};
    memcpy(spec + 6, s, sizeof s);
    pc.tiles_n = (uint32_t)((N + t->bn - 1) / t->bn);
    tiles_m = (pc.O + t->bm - 1) / t->bm;
  } else {
    /* 64 invocations; fewer rows of channels when there are few channels. */
    uint32_t rows4 = (pc.O + 3) / 4, wy = 1;
    while (wy < 4 && wy < rows4) wy *= 2;
    spec[6] = 64 / wy;
    spec[7] = wy;
    pc.tiles_n = (uint32_t)((N + 4 * spec[6] - 1) / (4 * spec[6]));
    tiles_m = (pc.O + 4 * wy - 1) / (4 * wy);
  }
  uint64_t groups = (uint64_t)pc.tiles_n * tiles_m;
  if (groups > (uint64_t)caps->max_groups[0] * caps->max_groups[1])
    return mr_error(ctx, MR_EUNSUPPORTED, "conv3d: %llu workgroups exceed the device grid", (unsigned long long)groups);
  mr_pipeline *p;
  mr_status st = mr_gpu_pipeline(ctx, "conv3d", 4, sizeof pc, spec, 13, &p);
  if (st != MR_OK) return st;
  mr_binding b[4] = {mr_tensor_binding(x, false), mr_tensor_binding(w, false),
                     mr_tensor_binding(bias ? bias : x, false), mr_tensor_binding(o, true)};
  uint32_t gx, gy;
  mr_gpu_grid(ctx, groups, &gx, &gy);
  st = mr_gpu_dispatch(ctx, p, b, 4, &pc, gx, gy, 1, "conv3d");
  /* every output sums C x kt x kh x kw products, padding taps included */
  if (st == MR_OK)
    mr_gpu_count_flops(ctx, 2.0 * (double)pc.O * (double)N * (double)pc.C * (double)pc.kt * (double)pc.kh * (double)pc.kw);
  return st;
}

mr_status mr_op_conv3d_variant(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, const int *stride,
                               const int *pad, int variant, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = x->ctx;
  if (variant < 0 || variant >= MR_CONV_VARIANTS) return mr_error(ctx, MR_EINVAL, "conv3d: unknown variant %d", variant);
  static const int ones[3] = {1, 1, 1}, zeros[6] = {0, 0, 0, 0, 0, 0};
  if (!stride) stride = ones;
  if (!pad) pad = zeros;
  int64_t oshape[4];
  mr_status st = conv_check(x, w, bias, stride, pad, oshape);
  if (st != MR_OK) return st;
  if (variant == MR_CONV_AUTO) variant = mr_gpu_caps_get(ctx)->is_cpu ? MR_CONV_REG : MR_CONV_SMEM;
  mr_tensor *wc = NULL, *bc = NULL, *o = NULL;
  /* a view (no copy) when already contiguous */
  if ((st = mr_tensor_contiguous((mr_tensor *)w, &wc)) != MR_OK) goto done;
  if (bias && (st = mr_tensor_contiguous((mr_tensor *)bias, &bc)) != MR_OK) goto done;
  if ((st = mr_tensor_empty(ctx, x->dtype, 4, oshape, &o)) != MR_OK) goto done;
  if ((st = mr_tensor_check_index_range(x, "conv3d")) != MR_OK || (st = mr_tensor_check_index_range(wc, "conv3d")) != MR_OK ||
      (st = mr_tensor_check_index_range(o, "conv3d")) != MR_OK)
    goto done;
  if (mr_tensor_numel(o) > 0) st = conv_dispatch(ctx, variant, x, wc, bc, stride, pad, o);
done:
  mr_tensor_free(wc);
  mr_tensor_free(bc);
  if (st != MR_OK) mr_tensor_free(o);
  else *out = o;
  return st;
}

mr_status mr_op_conv3d(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, const int *stride, const int *pad,
                       mr_tensor **out) {
  return mr_op_conv3d_variant(x, w, bias, stride, pad, MR_CONV_AUTO, out);
}

/* ---------------------------------------------------------------- nearest upsampling */

typedef struct upsample_push {
  uint32_t ndim, n, off, fh, fw;
  uint32_t shape[MR_MAX_DIMS], strides[MR_MAX_DIMS]; /* output shape, input strides */
} upsample_push;

mr_status mr_op_upsample_nearest(const mr_tensor *x, int fh, int fw, mr_tensor **out) {
  mr_ctx *ctx = x->ctx;
  *out = NULL;
  char a[64];
  if (x->ndim < 2 || fh < 1 || fw < 1)
    return mr_error(ctx, MR_EINVAL, "upsample_nearest: needs [..., H, W] and factors >= 1, got %s and %dx%d",
                    mr_shape_str(x->ndim, x->shape, a, sizeof a), fh, fw);
  int64_t shape[MR_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 2] *= fh;
  shape[x->ndim - 1] *= fw;
  mr_status st = mr_tensor_check_index_range(x, "upsample_nearest");
  if (st != MR_OK || (st = mr_tensor_empty(ctx, x->dtype, x->ndim, shape, out)) != MR_OK) return st;
  uint64_t n = (uint64_t)mr_tensor_numel(*out);
  if (n == 0) return MR_OK;
  uint32_t spec[3] = {x->dtype, x->dtype, MR_ELEMWISE_WG};
  mr_pipeline *p;
  if ((st = mr_tensor_check_index_range(*out, "upsample_nearest")) == MR_OK &&
      (st = mr_gpu_pipeline(ctx, "upsample_nearest", 2, sizeof(upsample_push), spec, 3, &p)) == MR_OK) {
    upsample_push pc = {.ndim = (uint32_t)x->ndim, .n = (uint32_t)n, .off = (uint32_t)x->offset, .fh = (uint32_t)fh,
                        .fw = (uint32_t)fw};
    mr_op_dims_u32(pc.shape, shape, x->ndim, 1);
    mr_op_dims_u32(pc.strides, x->strides, x->ndim, 0);
    mr_binding b[2] = {mr_tensor_binding(x, false), mr_tensor_binding(*out, true)};
    st = mr_op_dispatch_1d(ctx, p, b, 2, &pc, n, "upsample_nearest");
  }
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

/* ---------------------------------------------------------------- channels-first RMS norm */

typedef struct chnorm_push {
  uint32_t C, N, x_off, g_off;
  float eps, scale;
} chnorm_push;

mr_status mr_op_channel_rms_norm(const mr_tensor *x, const mr_tensor *gamma, float eps, mr_tensor **out) {
  mr_ctx *ctx = x->ctx;
  *out = NULL;
  char a[64], b[64];
  mr_status st = gamma ? mr_op_same_ctx(x, gamma, "channel_rms_norm") : MR_OK;
  if (st != MR_OK) return st;
  if (x->ndim < 1 || x->shape[0] < 1)
    return mr_error(ctx, MR_EINVAL, "channel_rms_norm: x must be [C, ...] with C >= 1, got %s",
                    mr_shape_str(x->ndim, x->shape, a, sizeof a));
  if (gamma && mr_tensor_numel(gamma) != x->shape[0])
    return mr_error(ctx, MR_EINVAL, "channel_rms_norm: gamma %s must have %lld elements for x %s",
                    mr_shape_str(gamma->ndim, gamma->shape, b, sizeof b), (long long)x->shape[0],
                    mr_shape_str(x->ndim, x->shape, a, sizeof a));
  mr_tensor *xc = NULL, *gc = NULL;
  if ((st = mr_tensor_contiguous((mr_tensor *)x, &xc)) != MR_OK) return st;
  if (gamma && (st = mr_tensor_contiguous((mr_tensor *)gamma, &gc)) != MR_OK) goto done;
  if ((st = mr_tensor_check_index_range(xc, "channel_rms_norm")) != MR_OK) goto done;
  if ((st = mr_tensor_empty(ctx, x->dtype, x->ndim, x->shape, out)) != MR_OK) goto done;
  uint64_t C = (uint64_t)x->shape[0], N = (uint64_t)mr_tensor_numel(x) / C;
  if (N > 0) {
    uint32_t spec[5] = {x->dtype, gc ? gc->dtype : x->dtype, x->dtype, gc != NULL, MR_ELEMWISE_WG};
    mr_pipeline *p;
    if ((st = mr_gpu_pipeline(ctx, "channel_rms_norm", 3, sizeof(chnorm_push), spec, 5, &p)) != MR_OK) goto done;
    chnorm_push pc = {.C = (uint32_t)C, .N = (uint32_t)N, .x_off = (uint32_t)xc->offset,
                      .g_off = gc ? (uint32_t)gc->offset : 0, .eps = eps, .scale = sqrtf((float)C)};
    mr_binding bind[3] = {mr_tensor_binding(xc, false), mr_tensor_binding(gc ? gc : xc, false),
                          mr_tensor_binding(*out, true)};
    st = mr_op_dispatch_1d(ctx, p, bind, 3, &pc, N, "channel_rms_norm");
  }
done:
  mr_tensor_free(xc);
  mr_tensor_free(gc);
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}
