/* The convolution family: 3-D convolution as an implicit GEMM
   (shaders/conv3d.comp), nearest upsampling (upsample_nearest.comp) and the
   channels-first RMS norm of convolutional nets (channel_rms_norm.comp).

   conv3d has three kernels, chosen per device: on CPU-type devices
   (lavapipe) conv3d_lanes.comp when the device has subgroup shuffles (input
   and weights through texel buffers, the weights a subgroup shares fetched
   once and shuffled; docs/performance.md, "CPU-type kernels"), else the
   barrier-free register-tiled path of conv3d.comp; on GPUs the shared-memory
   tiled path of conv3d.comp. All gather the input through its strides, so
   views (a chunk of frames, a sub-sampled grid) need no copy. */
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
                  .tiles_n = 0};
  /* every operand fits one binding here (conv_split makes pieces that do);
     o is a new tensor, bound from its first element */
  mr_binding b[4];
  memset(b, 0, sizeof b);
  int64_t lo, hi, base;
  mr_tensor_span(x, &lo, &hi);
  mr_tensor_window(x, lo, hi, false, &b[0], &base);
  pc.x_off = (uint32_t)(x->offset - base);
  mr_tensor_span(w, &lo, &hi);
  mr_tensor_window(w, lo, hi, false, &b[1], &base);
  pc.w_off = (uint32_t)(w->offset - base);
  b[2] = b[0];
  if (bias) {
    mr_tensor_span(bias, &lo, &hi);
    mr_tensor_window(bias, lo, hi, false, &b[2], &base);
    pc.b_off = (uint32_t)(bias->offset - base);
  }
  mr_tensor_window(o, 0, mr_tensor_numel(o), true, &b[3], &base);
  uint64_t N = (uint64_t)pc.To * pc.Ho * pc.Wo;
  /* conv3d_lanes views x and w as texel buffers; past the device's texel limit the other CPU kernel runs */
  if (variant == MR_CONV_LANES &&
      (b[0].range / mr_dtype_size(x->dtype) > caps->max_texels || b[1].range / mr_dtype_size(w->dtype) > caps->max_texels))
    variant = MR_CONV_REG;
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
  mr_status st;
  if (variant == MR_CONV_LANES) {
    /* One subgroup per workgroup: its lanes own SG positions in each of TN
       groups, its TM output channels (up to 16, in equal parts of O) are shared. */
    uint32_t sg = caps->lanes_sg, parts = (pc.O + 15) / 16, tm = (pc.O + parts - 1) / parts;
    uint64_t pos_groups = (N + sg - 1) / sg;
    uint32_t tn = tm >= 8 ? 8 : 16; /* measured: more positions per lane win despite the spilled accumulators */
    if (tn > pos_groups) tn = (uint32_t)pos_groups;
    uint32_t ls[10] = {x->dtype, w->dtype, bias ? bias->dtype : x->dtype, o->dtype, bias != NULL, sg, 1, tm, tn, sg};
    pc.tiles_n = (uint32_t)((N + sg * tn - 1) / (sg * tn));
    groups = (uint64_t)pc.tiles_n * ((pc.O + tm - 1) / tm);
    if (groups > (uint64_t)caps->max_groups[0] * caps->max_groups[1])
      return mr_error(ctx, MR_EUNSUPPORTED, "conv3d: %llu workgroups exceed the device grid", (unsigned long long)groups);
    for (int i = 0; i < 2; i++) mr_op_bind_texels(&b[i], i == 0 ? x->dtype : w->dtype, false);
    st = mr_gpu_pipeline_texel(ctx, "conv3d_lanes", 4, 3, sizeof pc, ls, 10, &p);
  } else {
    st = mr_gpu_pipeline(ctx, "conv3d", 4, sizeof pc, spec, 13, &p);
  }
  if (st != MR_OK) return st;
  uint32_t gx, gy;
  mr_gpu_grid(ctx, groups, &gx, &gy);
  st = mr_gpu_dispatch(ctx, p, b, 4, &pc, gx, gy, 1, "conv3d");
  /* every output sums C x kt x kh x kw products, padding taps included */
  if (st == MR_OK)
    mr_gpu_count_flops(ctx, 2.0 * (double)pc.O * (double)N * (double)pc.C * (double)pc.kt * (double)pc.kh * (double)pc.kw);
  return st;
}

/* Output positions along one axis (size n, kernel k, stride s, front
   padding p) in chunks of c: the input range a chunk [o0, o0 + c) reads and
   the padding that makes a conv over just that range give exactly c outputs. */
static void axis_piece(int64_t o0, int64_t c, int64_t n, int64_t k, int64_t s, int64_t p, int64_t *i0, int64_t *i1,
                       int *pf, int *pb) {
  int64_t s0 = o0 * s - p, need = (c - 1) * s + k;
  *i0 = s0 > 0 ? s0 : 0;
  *i1 = s0 + need < n ? s0 + need : n;
  *pf = (int)(*i0 - s0);
  int64_t back = need - *pf - (*i1 - *i0);
  *pb = back > 0 ? (int)back : 0;
}

/* The convolution when some operand is over the binding limit: output
   chunks of channels x frames x rows x columns (as many frames as fit, then
   rows, then columns) computed from compact copies of the input they read,
   each piece a conv whose operands all fit, copied into the output. */
static mr_status conv_split(mr_ctx *ctx, int variant, const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias,
                            const int *stride, const int *pad, mr_tensor *o) {
  int64_t C = x->shape[0], O = o->shape[0], in[3], out[3], k[3], KK = 1;
  for (int d = 0; d < 3; d++) {
    in[d] = x->shape[d + 1];
    out[d] = o->shape[d + 1];
    k[d] = w->shape[d + 2];
    KK *= k[d];
  }
  int64_t limit = (int64_t)mr_op_max_binding(ctx), xes = (int64_t)mr_dtype_size(x->dtype);
  int64_t oes = (int64_t)mr_dtype_size(o->dtype);
  /* output channels: as many weight rows as one window holds */
  int64_t co = O, wrows = mr_op_window_budget(w) / (C * KK);
  if (wrows < co) co = wrows;
  if (co > limit / oes) co = limit / oes;
  int64_t c[3] = {out[0], out[1], out[2]};
  bool fits = false;
  for (int a = 0; a < 3 && !fits && co >= 1; a++) {
    /* the most outputs along axis a (the later axes whole) whose input and output pieces fit */
    int64_t lo = 1, hi = out[a];
    while (lo <= hi) {
      int64_t mid = lo + (hi - lo) / 2, inb = C * xes, outb = co * oes;
      c[a] = mid;
      for (int d = 0; d < 3; d++) {
        inb *= (c[d] - 1) * stride[d] + k[d];
        outb *= c[d];
      }
      if (inb <= limit && outb <= limit) {
        fits = true;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    c[a] = hi >= 1 ? hi : 1;
  }
  if (!fits)
    return mr_error(ctx, MR_EUNSUPPORTED,
                    "conv3d: the input one output position reads (%lld channels x %lldx%lldx%lld taps) is over this "
                    "device's binding limit of %lld bytes",
                    (long long)C, (long long)k[0], (long long)k[1], (long long)k[2], (long long)limit);
  mr_status st = MR_OK;
  int64_t o0[4];
  for (o0[0] = 0; o0[0] < O && st == MR_OK; o0[0] += co)
    for (o0[1] = 0; o0[1] < out[0] && st == MR_OK; o0[1] += c[0])
      for (o0[2] = 0; o0[2] < out[1] && st == MR_OK; o0[2] += c[1])
        for (o0[3] = 0; o0[3] < out[2] && st == MR_OK; o0[3] += c[2]) {
          int64_t n[4] = {O - o0[0] < co ? O - o0[0] : co, 0, 0, 0}, i0[3], i1[3];
          int ppad[6];
          bool inside = true; /* false: the chunk reads only padding along some axis */
          for (int d = 0; d < 3; d++) {
            n[d + 1] = out[d] - o0[d + 1] < c[d] ? out[d] - o0[d + 1] : c[d];
            axis_piece(o0[d + 1], n[d + 1], in[d], k[d], stride[d], pad[2 * d], &i0[d], &i1[d], &ppad[2 * d],
                       &ppad[2 * d + 1]);
            inside &= i1[d] > i0[d];
          }
          mr_tensor *views[3] = {NULL}, *xt = NULL, *ot = NULL, *ws = NULL, *bs = NULL, *ov[4] = {NULL};
          mr_tensor *cur = o;
          for (int d = 0; d < 4 && st == MR_OK; d++)
            if ((st = mr_tensor_slice(cur, d, o0[d], o0[d] + n[d], 1, &ov[d])) == MR_OK) cur = ov[d];
          if (st == MR_OK && bias) st = mr_tensor_slice((mr_tensor *)bias, 0, o0[0], o0[0] + n[0], 1, &bs);
          if (st == MR_OK && inside) {
            cur = (mr_tensor *)x;
            for (int d = 0; d < 3 && st == MR_OK; d++)
              if ((st = mr_tensor_slice(cur, d + 1, i0[d], i1[d], 1, &views[d])) == MR_OK) cur = views[d];
            if (st == MR_OK) st = mr_tensor_cast(cur, cur->dtype, &xt); /* compact: its frames of every channel */
            if (st == MR_OK) st = mr_tensor_slice((mr_tensor *)w, 0, o0[0], o0[0] + n[0], 1, &ws);
            if (st == MR_OK) st = mr_op_conv3d_variant(xt, ws, bs, stride, ppad, variant, &ot);
            if (st == MR_OK) st = mr_tensor_copy(ov[3], ot);
          } else if (st == MR_OK && bs) {
            /* every tap in the padding: the outputs are the bias, broadcast over the positions */
            mr_tensor bv = *bs;
            bv.ndim = 4;
            memcpy(bv.shape, n, sizeof n);
            bv.strides[1] = bv.strides[2] = bv.strides[3] = 0;
            st = mr_tensor_copy(ov[3], &bv);
          } else if (st == MR_OK) {
            st = mr_tensor_fill(ov[3], 0.0f);
          }
          for (int d = 0; d < 3; d++) mr_tensor_free(views[d]);
          for (int d = 0; d < 4; d++) mr_tensor_free(ov[d]);
          mr_tensor_free(xt);
          mr_tensor_free(ot);
          mr_tensor_free(ws);
          mr_tensor_free(bs);
        }
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
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  if (variant == MR_CONV_LANES && !caps->lanes_sg) variant = MR_CONV_REG;
  if (variant == MR_CONV_AUTO) variant = !caps->is_cpu ? MR_CONV_SMEM : caps->lanes_sg ? MR_CONV_LANES : MR_CONV_REG;
  mr_tensor *wc = NULL, *bc = NULL, *o = NULL;
  /* a view (no copy) when already contiguous */
  if ((st = mr_tensor_contiguous((mr_tensor *)w, &wc)) != MR_OK) goto done;
  if (bias && (st = mr_tensor_contiguous((mr_tensor *)bias, &bc)) != MR_OK) goto done;
  if ((st = mr_tensor_empty(ctx, x->dtype, 4, oshape, &o)) != MR_OK) goto done;
  if ((st = mr_tensor_check_index_range(x, "conv3d")) != MR_OK || (st = mr_tensor_check_index_range(wc, "conv3d")) != MR_OK ||
      (st = mr_tensor_check_index_range(o, "conv3d")) != MR_OK)
    goto done;
  if (mr_tensor_numel(o) > 0) {
    bool fits = mr_op_view_fits(x) && mr_op_view_fits(wc) && (!bc || mr_op_view_fits(bc)) && mr_op_view_fits(o);
    st = fits ? conv_dispatch(ctx, variant, x, wc, bc, stride, pad, o) : conv_split(ctx, variant, x, wc, bc, stride, pad, o);
  }
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
  uint32_t y_off;
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
  uint32_t spec[4] = {x->dtype, x->dtype, MR_ELEMWISE_WG, 0};
  mr_pipeline *p;
  /* runs of input rows (every dim but the last), each fh output rows: the
     kernel writes the output at y_off + i */
  int nd = x->ndim;
  int64_t W = x->shape[nd - 1], os[MR_MAX_DIMS], run = fh * W * fw;
  mr_split sp = {.ndim = nd - 1, .runs = true, .unit = "row"};
  for (int k = nd - 2; k >= 0; k--) {
    sp.shape[k] = x->shape[k];
    os[k] = k == nd - 2 ? run : os[k + 1] * x->shape[k + 1]; /* the output's strides per input row */
  }
  mr_split_add(&sp, x, false, x->offset, x->strides, (W - 1) * x->strides[nd - 1]);
  mr_split_add(&sp, *out, true, 0, os, run - 1);
  /* W2 (four outputs a lane) needs output rows of a multiple of 4 (W even) and a chunk starting on one */
  bool w2 = fw == 2 && W % 2 == 0;
  if ((st = mr_tensor_check_index_range(*out, "upsample_nearest")) == MR_OK)
    st = mr_split_plan(ctx, &sp, "upsample_nearest");
  while (st == MR_OK && mr_split_next(&sp)) {
    spec[3] = w2 && sp.rel[1] % 4 == 0;
    if ((st = mr_gpu_pipeline(ctx, "upsample_nearest", 2, sizeof(upsample_push), spec, 4, &p)) != MR_OK) break;
    int64_t cshape[MR_MAX_DIMS];
    memcpy(cshape, shape, sizeof cshape);
    for (int k = 0; k < nd - 1; k++) cshape[k] = sp.size[k];
    cshape[nd - 2] *= fh;
    uint64_t cn = (uint64_t)(sp.points * run);
    upsample_push pc = {.ndim = (uint32_t)nd, .n = (uint32_t)cn, .off = (uint32_t)sp.rel[0], .fh = (uint32_t)fh,
                        .fw = (uint32_t)fw, .y_off = (uint32_t)sp.rel[1]};
    mr_op_dims_u32(pc.shape, cshape, nd, 1);
    mr_op_dims_u32(pc.strides, x->strides, nd, 0);
    st = mr_op_dispatch_1d(ctx, p, sp.bind, 2, &pc, spec[3] ? cn / 4 : cn, "upsample_nearest");
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

/* The norm when x or the output is over the binding limit: each channel
   column is read at stride N, so every window of x spans nearly all of it.
   Chunks of positions are copied into compact [C, n] tensors, normalised,
   and copied into the output. */
static mr_status chnorm_run(const mr_tensor *x, const mr_tensor *gamma, float eps, bool silu, mr_tensor **out);

static mr_status chnorm_split(mr_tensor *xc, const mr_tensor *gc, float eps, bool silu, mr_tensor *out) {
  mr_ctx *ctx = xc->ctx;
  int64_t C = xc->shape[0], N = mr_tensor_numel(xc) / C, es = (int64_t)mr_dtype_size(xc->dtype);
  int64_t cn = (int64_t)mr_op_max_binding(ctx) / (C * es), shape[2] = {C, N};
  if (cn < 1)
    return mr_error(ctx, MR_EUNSUPPORTED, "channel_rms_norm: %lld channels of one position are over this device's "
                    "binding limit of %llu bytes", (long long)C, (unsigned long long)mr_op_max_binding(ctx));
  mr_tensor *x2 = NULL, *o2 = NULL;
  mr_status st = mr_tensor_reshape(xc, 2, shape, &x2);
  if (st == MR_OK) st = mr_tensor_reshape(out, 2, shape, &o2);
  for (int64_t n0 = 0; n0 < N && st == MR_OK; n0 += cn) {
    int64_t n1 = N - n0 < cn ? N : n0 + cn;
    mr_tensor *xs = NULL, *xt = NULL, *yt = NULL, *os = NULL;
    if ((st = mr_tensor_slice(x2, 1, n0, n1, 1, &xs)) == MR_OK && (st = mr_tensor_cast(xs, xs->dtype, &xt)) == MR_OK &&
        (st = chnorm_run(xt, gc, eps, silu, &yt)) == MR_OK && (st = mr_tensor_slice(o2, 1, n0, n1, 1, &os)) == MR_OK)
      st = mr_tensor_copy(os, yt);
    mr_tensor_free(xs);
    mr_tensor_free(xt);
    mr_tensor_free(yt);
    mr_tensor_free(os);
  }
  mr_tensor_free(x2);
  mr_tensor_free(o2);
  return st;
}

static mr_status chnorm_run(const mr_tensor *x, const mr_tensor *gamma, float eps, bool silu, mr_tensor **out) {
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
    uint32_t spec[7] = {x->dtype, gc ? gc->dtype : x->dtype, x->dtype, gc != NULL, MR_ELEMWISE_WG, silu, 0};
    mr_pipeline *p;
    chnorm_push pc = {.C = (uint32_t)C, .N = (uint32_t)N, .eps = eps, .scale = sqrtf((float)C)};
    mr_binding bind[3];
    if (mr_op_view_fits(xc) && (!gc || mr_op_view_fits(gc)) && mr_op_view_fits(*out)) {
      bind[0] = mr_op_window(xc, (int64_t)(C * N), false, &pc.x_off);
      spec[6] = N % 4 == 0 && pc.x_off % 4 == 0; /* X4: four positions a lane */
      if ((st = mr_gpu_pipeline(ctx, "channel_rms_norm", 3, sizeof(chnorm_push), spec, 7, &p)) != MR_OK) goto done;
      bind[1] = bind[0];
      if (gc) bind[1] = mr_op_window(gc, (int64_t)C, false, &pc.g_off);
      uint32_t unused;
      bind[2] = mr_op_window(*out, (int64_t)(C * N), true, &unused); /* whole: the kernel writes from 0 */
      st = mr_op_dispatch_1d(ctx, p, bind, 3, &pc, spec[6] ? N / 4 : N, "channel_rms_norm");
    } else {
      st = chnorm_split(xc, gc, eps, silu, *out);
    }
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

mr_status mr_op_channel_rms_norm(const mr_tensor *x, const mr_tensor *gamma, float eps, mr_tensor **out) {
  return chnorm_run(x, gamma, eps, false, out);
}

mr_status mr_op_channel_rms_norm_silu(const mr_tensor *x, const mr_tensor *gamma, float eps, mr_tensor **out) {
  return chnorm_run(x, gamma, eps, true, out);
}
