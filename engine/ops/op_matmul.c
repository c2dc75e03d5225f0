/* Linear layers: out[..., N] = x[..., K] · w[N, K]ᵀ + bias[N].

   Three kernels, chosen per device:
   - matmul_lanes (CPU-type devices such as lavapipe, when they have subgroup
     shuffles): no shared memory and no barriers; x and w are read through
     texel buffers (a hardware gather per fetch, where a storage-buffer load
     that differs per lane is a loop over the lanes) and the rows of x a
     subgroup shares are fetched once and shuffled to every lane.
     docs/performance.md ("CPU-type kernels") has the measurements.
   - matmul_reg (CPU-type devices without subgroup shuffles; selectable as
     a variant): no shared memory and no barriers, 4x4 outputs per invocation
     (1x4 when M < 4) with vector loads. Barriers cost far more than
     arithmetic there.
   - matmul_smem (GPUs): workgroup tiles staged in shared memory, tile sizes
     as specialization constants (a 64x64 and a 128x128 configuration).
   Both read contiguous row-major rows; strided inputs are copied first. */
#include "ops/op_common.h"
#include "ops/op_internal.h"

#include <string.h>

typedef struct matmul_push {
  uint32_t M, N, K, nbatch;
  uint32_t x_off, w_off, b_off, o_off;
  uint32_t x_bs, w_bs, o_bs;   /* batch strides in elements; w_bs 0 = w shared by the batch */
  uint32_t tiles_n, tiles_m;   /* workgroups per batch item along n and m */
  uint32_t o_rs;               /* output row stride: N, or more when a chunk has fewer columns */
} matmul_push;

/* Shared-memory tile configurations, indexed by variant. */
typedef struct smem_cfg { uint32_t bm, bn, bk, tm, tn; } smem_cfg;
static const smem_cfg SMEM_SMALL = {64, 64, 16, 4, 4};
static const smem_cfg SMEM_LARGE = {128, 128, 8, 8, 8};

/* The matmul problem after shape checks: x is [batch, M, K], w [N, K] or [batch, N, K]. */
typedef struct mm_shape {
  int64_t batch, M, N, K;
  bool w_batched;
  int out_ndim;
  int64_t out_shape[MR_MAX_DIMS];
} mm_shape;

static mr_status check_shapes(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, mm_shape *s) {
  mr_ctx *ctx = x->ctx;
  char a[64], b[64];
  mr_status st = mr_op_same_ctx(x, w, "matmul");
  if (st == MR_OK && bias) st = mr_op_same_ctx(x, bias, "matmul");
  if (st != MR_OK) return st;
  int64_t K = x->shape[x->ndim - 1];
  if (w->ndim < 2)
    return mr_error(ctx, MR_EINVAL, "matmul: w must be [N, K] or batched [..., N, K], got %s",
                    mr_shape_str(w->ndim, w->shape, b, sizeof b));
  if (w->shape[w->ndim - 1] != K)
    return mr_error(ctx, MR_EINVAL, "matmul: K mismatch: x %s has K = %lld, w %s has K = %lld",
                    mr_shape_str(x->ndim, x->shape, a, sizeof a), (long long)K,
                    mr_shape_str(w->ndim, w->shape, b, sizeof b), (long long)w->shape[w->ndim - 1]);
  s->K = K;
  s->N = w->shape[w->ndim - 2];
  s->w_batched = w->ndim > 2;
  if (s->w_batched) {
    bool ok = w->ndim == x->ndim;
    for (int i = 0; ok && i < x->ndim - 2; i++) ok = w->shape[i] == x->shape[i];
    if (!ok)
      return mr_error(ctx, MR_EINVAL, "matmul: batched w %s must have the leading dims of x %s",
                      mr_shape_str(w->ndim, w->shape, b, sizeof b), mr_shape_str(x->ndim, x->shape, a, sizeof a));
    s->M = x->shape[x->ndim - 2];
    s->batch = 1;
    for (int i = 0; i < x->ndim - 2; i++) s->batch *= x->shape[i];
  } else {
    s->batch = 1;
    s->M = 1;
    for (int i = 0; i < x->ndim - 1; i++) s->M *= x->shape[i];
  }
  if (bias && (bias->ndim != 1 || bias->shape[0] != s->N))
    return mr_error(ctx, MR_EINVAL, "matmul: bias must be [%lld], got %s", (long long)s->N,
                    mr_shape_str(bias->ndim, bias->shape, b, sizeof b));
  s->out_ndim = x->ndim;
  for (int i = 0; i < x->ndim - 1; i++) s->out_shape[i] = x->shape[i];
  s->out_shape[x->ndim - 1] = s->N;
  return MR_OK;
}

/* matmul_lanes reads x and w through texel buffer views (mr_op_bind_texels):
   texels of 4 elements when K and both offsets are multiples of 4, else of 1. */
static bool lanes_aligned(const matmul_push *pc) { return pc->K % 4 == 0 && pc->x_off % 4 == 0 && pc->w_off % 4 == 0; }

/* Records one kernel over the batch items, rows and columns of the chunk
   pc describes (sizes M, N, nbatch and offsets already set). */
static mr_status dispatch(mr_ctx *ctx, int variant, mr_matmul_act act, matmul_push *pc, const mr_tensor *x,
                          const mr_tensor *w, const mr_tensor *bias, const mr_tensor *o, const mr_binding *b) {
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  if (variant == MR_MATMUL_LANES) { /* a view past the device's texel limit: the other CPU kernel */
    bool al = lanes_aligned(pc);
    if (b[0].range / mr_op_texel_bytes(x->dtype, al) > caps->max_texels ||
        b[1].range / mr_op_texel_bytes(w->dtype, al) > caps->max_texels)
      variant = MR_MATMUL_REG;
  }
  uint32_t bias_dt = bias ? bias->dtype : x->dtype;
  const char *shader;
  uint32_t spec[13];
  int nspec;
  if (variant == MR_MATMUL_SMEM || variant == MR_MATMUL_SMEM_LARGE) {
    const smem_cfg *c = variant == MR_MATMUL_SMEM ? &SMEM_SMALL : &SMEM_LARGE;
    uint32_t wx = c->bn / c->tn, wy = c->bm / c->tm;
    uint32_t smem = 4 * c->bk * (c->bm + c->bn + 2);
    if (wx * wy > caps->max_invocations || smem > caps->info.shared_memory_bytes)
      return mr_error(ctx, MR_EUNSUPPORTED, "matmul: the %ux%u tile needs %u threads and %u bytes of shared memory",
                      c->bm, c->bn, wx * wy, smem);
    shader = "matmul_smem";
    uint32_t sp[13] = {x->dtype, w->dtype, bias_dt, o->dtype, c->bm, c->bn, c->bk, c->tm, c->tn, bias != NULL, wx, wy,
                       act};
    memcpy(spec, sp, sizeof sp);
    nspec = 13;
    pc->tiles_n = (pc->N + c->bn - 1) / c->bn;
    pc->tiles_m = (pc->M + c->bm - 1) / c->bm;
  } else if (variant == MR_MATMUL_LANES) {
    /* One subgroup per workgroup: its lanes own SG columns in each of TN
       groups, its TM rows (up to 16, in equal parts of M) are shared. */
    uint32_t sg = caps->lanes_sg, parts = (pc->M + 15) / 16, tm = (pc->M + parts - 1) / parts;
    uint32_t tn = tm >= 8 ? 2 : 4, col_groups = (pc->N + sg - 1) / sg;
    if (tn > col_groups) tn = col_groups;
    shader = "matmul_lanes";
    uint32_t sp[12] = {x->dtype, w->dtype, bias_dt, o->dtype, sg, 1, lanes_aligned(pc), bias != NULL, tm, tn, sg, act};
    memcpy(spec, sp, sizeof sp);
    nspec = 12;
    pc->tiles_n = (pc->N + sg * tn - 1) / (sg * tn);
    pc->tiles_m = (pc->M + tm - 1) / tm;
  } else {
    /* 64 invocations of TM x 4 outputs; with few rows (GEMV-like calls) one
       row per invocation and the workgroup spread along n. */
    uint32_t tm = pc->M < 4 ? 1 : 4, rows = (pc->M + tm - 1) / tm, wy = 1;
    while (wy < 8 && wy < rows) wy *= 2;
    uint32_t wx = 64 / wy;
    bool aligned = pc->K % 4 == 0 && pc->x_off % 4 == 0 && pc->w_off % 4 == 0;
    shader = "matmul_reg";
    uint32_t sp[10] = {x->dtype, w->dtype, bias_dt, o->dtype, wx, wy, aligned, bias != NULL, tm, act};
    memcpy(spec, sp, sizeof sp);
    nspec = 10;
    pc->tiles_n = (pc->N + 4 * wx - 1) / (4 * wx);
    pc->tiles_m = (pc->M + tm * wy - 1) / (tm * wy);
  }
  uint64_t groups = (uint64_t)pc->tiles_n * pc->tiles_m * (uint64_t)pc->nbatch;
  if (groups > (uint64_t)caps->max_groups[0] * caps->max_groups[1])
    return mr_error(ctx, MR_EUNSUPPORTED, "matmul: %llu workgroups exceed the device grid", (unsigned long long)groups);
  mr_pipeline *p;
  mr_binding bt[4];
  memcpy(bt, b, sizeof bt);
  uint32_t texel_mask = 0;
  if (variant == MR_MATMUL_LANES) { /* x and w as uniform texel buffers */
    texel_mask = 3;
    for (int i = 0; i < 2; i++) mr_op_bind_texels(&bt[i], i == 0 ? x->dtype : w->dtype, spec[6]);
    b = bt;
  }
  mr_status st = mr_gpu_pipeline_texel(ctx, shader, 4, texel_mask, sizeof *pc, spec, nspec, &p);
  if (st != MR_OK) return st;
  uint32_t gx, gy;
  mr_gpu_grid(ctx, groups, &gx, &gy);
  st = mr_gpu_dispatch(ctx, p, b, 4, pc, gx, gy, 1, "matmul");
  if (st == MR_OK) mr_gpu_count_flops(ctx, 2.0 * (double)pc->nbatch * (double)pc->M * (double)pc->N * (double)pc->K);
  return st;
}

/* The whole product, in chunks of batch items x rows x columns whose windows
   fit the binding limit: rows of x and of the output when x or the output is
   over it, rows of w (columns of the output, written with row stride N) when
   w is. One chunk when everything fits. */
static mr_status record(mr_ctx *ctx, int variant, mr_matmul_act act, const mm_shape *s, const mr_tensor *x,
                        const mr_tensor *w, const mr_tensor *bias, const mr_tensor *o) {
  int64_t M = s->M, N = s->N, K = s->K, w_bs = s->w_batched ? N * K : 0;
  mr_split sp = {.ndim = 3, .shape = {s->batch, M, N}, .unit = "row of x or w"};
  const int64_t xs[3] = {M * K, K, 0}, ws[3] = {w_bs, 0, K}, bs[3] = {0, 0, 1}, os[3] = {M * N, N, 1};
  int ix = mr_split_add(&sp, x, false, x->offset, xs, K - 1);
  int iw = mr_split_add(&sp, w, false, w->offset, ws, K - 1);
  int ib = bias ? mr_split_add(&sp, bias, false, bias->offset, bs, 0) : ix;
  int io = mr_split_add(&sp, o, true, o->offset, os, 0);
  mr_status st = mr_split_plan(ctx, &sp, "matmul");
  while (st == MR_OK && mr_split_next(&sp)) {
    matmul_push pc = {.M = (uint32_t)sp.size[1], .N = (uint32_t)sp.size[2], .K = (uint32_t)K,
                      .nbatch = (uint32_t)sp.size[0], .x_off = (uint32_t)sp.rel[ix], .w_off = (uint32_t)sp.rel[iw],
                      .b_off = bias ? (uint32_t)sp.rel[ib] : 0, .o_off = (uint32_t)sp.rel[io],
                      .x_bs = (uint32_t)(M * K), .w_bs = (uint32_t)w_bs, .o_bs = (uint32_t)(M * N),
                      .o_rs = (uint32_t)N};
    mr_binding b[4] = {sp.bind[ix], sp.bind[iw], sp.bind[ib], sp.bind[io]};
    st = dispatch(ctx, variant, act, &pc, x, w, bias, o, b);
  }
  return st;
}

mr_status mr_op_matmul_act(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, mr_matmul_act act,
                           int variant, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = x->ctx;
  if (variant < 0 || variant >= MR_MATMUL_VARIANTS) return mr_error(ctx, MR_EINVAL, "matmul: unknown variant %d", variant);
  if ((unsigned)act > MR_MATMUL_ACT_GELU_TANH) return mr_error(ctx, MR_EINVAL, "matmul: unknown activation %d", (int)act);
  mm_shape s;
  mr_status st = check_shapes(x, w, bias, &s);
  if (st != MR_OK) return st;
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  if (variant == MR_MATMUL_LANES && !caps->lanes_sg) variant = MR_MATMUL_REG;
  if (variant == MR_MATMUL_AUTO) {
    if (caps->is_cpu) variant = caps->lanes_sg ? MR_MATMUL_LANES : MR_MATMUL_REG;
    else variant = (s.M >= 256 && s.N >= 128) ? MR_MATMUL_SMEM_LARGE : MR_MATMUL_SMEM;
  }
  mr_tensor *xc = NULL, *wc = NULL, *bc = NULL, *o = NULL;
  /* mr_tensor_contiguous returns a view (no copy) when the input already is contiguous. */
  if ((st = mr_tensor_contiguous((mr_tensor *)x, &xc)) != MR_OK) goto done;
  if ((st = mr_tensor_contiguous((mr_tensor *)w, &wc)) != MR_OK) goto done;
  if (bias && (st = mr_tensor_contiguous((mr_tensor *)bias, &bc)) != MR_OK) goto done;
  if ((st = mr_tensor_empty(ctx, x->dtype, s.out_ndim, s.out_shape, &o)) != MR_OK) goto done;
  if ((st = mr_tensor_check_index_range(xc, "matmul")) != MR_OK || (st = mr_tensor_check_index_range(wc, "matmul")) != MR_OK ||
      (bc && (st = mr_tensor_check_index_range(bc, "matmul")) != MR_OK) ||
      (st = mr_tensor_check_index_range(o, "matmul")) != MR_OK)
    goto done;
  if (mr_tensor_numel(o) > 0) st = record(ctx, variant, act, &s, xc, wc, bc, o);
done:
  mr_tensor_free(xc);
  mr_tensor_free(wc);
  mr_tensor_free(bc);
  if (st != MR_OK) mr_tensor_free(o);
  else *out = o;
  return st;
}

mr_status mr_op_matmul_variant(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, int variant,
                               mr_tensor **out) {
  return mr_op_matmul_act(x, w, bias, MR_MATMUL_ACT_NONE, variant, out);
}

mr_status mr_op_matmul(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, mr_tensor **out) {
  return mr_op_matmul_variant(x, w, bias, MR_MATMUL_AUTO, out);
}
