/* Multi-head attention: softmax(q·kᵀ · scale) · v per (batch item, head), in
   Wan's [B, L, H, D] layout, with an optional per-batch key length.

   Three kernels, chosen per device:
   - attention_reg (CPU-type devices): one invocation per (query row, head),
     an online softmax over every key with the output row in private memory;
     no barriers, which are very costly on lavapipe.
   - attention_lanes (CPU-type devices with the texel formats and subgroups
     matmul_lanes needs; the default there): attention_reg with the keys and
     values read through texel buffers, one hardware gather per fetch where
     a storage-buffer load is a loop over the lanes.
   - attention_dlanes (the same devices, head dims from 2·SG and key and
     value rows starting on texels of 4 elements; the default there): a subgroup takes
     SG query rows of one head and its lanes split the head dim, so a fetch
     reads SG different texels of a key where attention_lanes's lanes all
     fetch the same one.
   - attention (GPUs): FlashAttention-2 style tiles; K/V tiles in shared
     memory, query rows split across the workgroup.
   All keep softmax statistics and the output accumulator in f32 and never
   store the Lq x Lk score matrix. A batch item whose key length is 0 gets an
   all-zero output. */
#include "ops/op_common.h"
#include "ops/op_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KL_PUSH_MAX 16 /* key lengths for up to this many batch items travel in push constants */

typedef struct attn_push {
  uint32_t B, Lq, Lk, H;
  uint32_t q_off, k_off, v_off, o_off;
  float scale;
  uint32_t u;                /* reg/lanes: B * H * Lq invocations; dlanes: B * H * ceil(Lq / SG) subgroups;
                                attention: query tiles per head */
  uint32_t q_bs, q_rs;       /* batch item and row strides of q and o (elements; heads are D apart) */
  uint32_t kv_bs, kv_rs;     /* the same for k and v */
  uint32_t kl[KL_PUSH_MAX];
} attn_push;

enum { KL_NONE, KL_IN_PUSH, KL_IN_BUFFER };

mr_attention_opts mr_attention_opts_default(void) { return (mr_attention_opts){.scale = 0.0f, .k_lens = NULL}; }

static mr_status check_shapes(const mr_tensor *q, const mr_tensor *k, const mr_tensor *v) {
  mr_ctx *ctx = q->ctx;
  char a[64], b[64], c[64];
  mr_status st = mr_op_same_ctx(q, k, "attention");
  if (st == MR_OK) st = mr_op_same_ctx(q, v, "attention");
  if (st != MR_OK) return st;
  bool ok = q->ndim == 4 && k->ndim == 4 && v->ndim == 4;
  for (int i = 0; ok && i < 4; i++) ok = k->shape[i] == v->shape[i] && (i == 1 || q->shape[i] == k->shape[i]);
  if (!ok)
    return mr_error(ctx, MR_EINVAL, "attention: q must be [B, Lq, H, D] and k, v [B, Lk, H, D]; got q %s, k %s, v %s",
                    mr_shape_str(q->ndim, q->shape, a, sizeof a), mr_shape_str(k->ndim, k->shape, b, sizeof b),
                    mr_shape_str(v->ndim, v->shape, c, sizeof c));
  int64_t D = q->shape[3];
  if (D < 8 || D > 256 || D % 8 != 0)
    return mr_error(ctx, MR_EINVAL, "attention: head dim D = %lld is not supported (a multiple of 8 from 8 to 256)",
                    (long long)D);
  return MR_OK;
}

/* Tile sizes whose shared memory fits the device: 16 query rows with the
   largest key tile of at least 16, else 8 rows with the largest that fits.
   The caller checks the result (8 x 8 needs 25 KiB at D = 256). */
static uint32_t tile_bytes(uint32_t D, uint32_t br, uint32_t bc) {
  return 4 * (br * (D + 1) + bc * (D + 1) + bc * D + br * bc);
}

static void pick_tiles(uint32_t D, uint32_t smem, uint32_t *br, uint32_t *bc) {
  static const uint32_t bcs[4] = {64, 32, 16, 8};
  for (int j = 0; j < 3; j++)
    if (tile_bytes(D, 16, bcs[j]) <= smem) {
      *br = 16;
      *bc = bcs[j];
      return;
    }
  *br = 8;
  *bc = 8;
  for (int j = 0; j < 4; j++)
    if (tile_bytes(D, 8, bcs[j]) <= smem) {
      *bc = bcs[j];
      return;
    }
}

/* Useful FLOPs: q·kᵀ and p·v, 2 x 2 per (query, unmasked key, head dim) per head. */
static double attention_flops(const attn_push *pc, uint32_t D, int kl_mode, const uint32_t *kl) {
  double keys = 0;
  for (uint32_t b = 0; b < pc->B; b++)
    keys += kl_mode == KL_IN_PUSH ? pc->kl[b] : kl_mode == KL_IN_BUFFER ? kl[b] : pc->Lk;
  return 4.0 * keys * pc->H * pc->Lq * D;
}

/* Every key and value row of the chunk starts on a texel of 4 elements. */
static bool kv_texels4(const attn_push *pc) {
  return pc->k_off % 4 == 0 && pc->v_off % 4 == 0 && pc->kv_rs % 4 == 0 && pc->kv_bs % 4 == 0;
}

/* The k and v windows in texels (of 4 elements or 1) are within the device's texel-buffer limit. */
static bool texels_fit(const mr_gpu_caps *caps, const mr_binding *b, const mr_tensor *k, const mr_tensor *v, bool four) {
  return b[1].range / mr_op_texel_bytes(k->dtype, four) <= caps->max_texels &&
         b[2].range / mr_op_texel_bytes(v->dtype, four) <= caps->max_texels;
}

/* Records one kernel over the chunk pc describes (sizes, offsets, strides and
   key lengths already set). */
static mr_status dispatch(mr_ctx *ctx, int variant, const mr_tensor *q, const mr_tensor *k, const mr_tensor *v,
                          const mr_tensor *o, int kl_mode, attn_push *pc, const mr_binding *b, const uint32_t *kl) {
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  uint32_t D = (uint32_t)q->shape[3];
  uint64_t groups;
  /* dlanes needs texels of 4 elements; lanes then picks its own texels */
  if (variant == MR_ATTENTION_DLANES && !(kv_texels4(pc) && texels_fit(caps, b, k, v, true))) variant = MR_ATTENTION_LANES;
  const char *shader;
  uint32_t spec[10];
  int nspec;
  if (variant == MR_ATTENTION_TILED) {
    uint32_t br, bc, t = 8;
    pick_tiles(D, caps->info.shared_memory_bytes, &br, &bc);
    uint32_t bytes = tile_bytes(D, br, bc);
    if (bytes > caps->info.shared_memory_bytes || br * t > caps->max_invocations)
      return mr_error(ctx, MR_EUNSUPPORTED, "attention: D = %u needs %u bytes of shared memory, the device has %u", D,
                      bytes, caps->info.shared_memory_bytes);
    shader = "attention";
    uint32_t sp[10] = {q->dtype, k->dtype, v->dtype, o->dtype, D, br, bc, t, (uint32_t)kl_mode, br * t};
    memcpy(spec, sp, sizeof sp);
    nspec = 10;
    pc->u = (pc->Lq + br - 1) / br;
    groups = (uint64_t)pc->u * pc->H * pc->B;
  } else if (variant == MR_ATTENTION_DLANES) {
    uint32_t sg = caps->lanes_sg;
    shader = "attention_dlanes";
    uint32_t sp[7] = {q->dtype, k->dtype, v->dtype, o->dtype, D, (uint32_t)kl_mode, sg};
    memcpy(spec, sp, sizeof sp);
    nspec = 7;
    pc->u = pc->B * pc->H * ((pc->Lq + sg - 1) / sg);
    groups = pc->u;
  } else {
    const uint32_t wg = 64;
    bool aligned = pc->q_off % 4 == 0 && pc->k_off % 4 == 0 && pc->v_off % 4 == 0;
    if (variant == MR_ATTENTION_LANES) {
      /* texels of 4 elements need every key and value row to start on one */
      aligned = kv_texels4(pc);
      if (!texels_fit(caps, b, k, v, aligned))
        variant = MR_ATTENTION_REG, aligned = pc->q_off % 4 == 0 && pc->k_off % 4 == 0 && pc->v_off % 4 == 0;
    }
    shader = variant == MR_ATTENTION_LANES ? "attention_lanes" : "attention_reg";
    uint32_t sp[8] = {q->dtype, k->dtype, v->dtype, o->dtype, D, wg, aligned, (uint32_t)kl_mode};
    memcpy(spec, sp, sizeof sp);
    nspec = 8;
    pc->u = pc->B * pc->H * pc->Lq;
    groups = (pc->u + wg - 1) / wg;
  }
  if (groups > (uint64_t)caps->max_groups[0] * caps->max_groups[1])
    return mr_error(ctx, MR_EUNSUPPORTED, "attention: %llu workgroups exceed the device grid", (unsigned long long)groups);
  mr_pipeline *p;
  mr_binding bt[5];
  memcpy(bt, b, sizeof bt);
  uint32_t texel_mask = 0;
  if (variant == MR_ATTENTION_LANES || variant == MR_ATTENTION_DLANES) { /* k and v as uniform texel buffers */
    bool four = variant == MR_ATTENTION_DLANES || spec[6];
    texel_mask = 6;
    mr_op_bind_texels(&bt[1], k->dtype, four);
    mr_op_bind_texels(&bt[2], v->dtype, four);
  }
  mr_status st = mr_gpu_pipeline_texel(ctx, shader, 5, texel_mask, sizeof *pc, spec, nspec, &p);
  if (st != MR_OK) return st;
  uint32_t gx, gy;
  mr_gpu_grid(ctx, groups, &gx, &gy);
  st = mr_gpu_dispatch(ctx, p, bt, 5, pc, gx, gy, 1, "attention");
  if (st == MR_OK) mr_gpu_count_flops(ctx, attention_flops(pc, D, kl_mode, kl));
  return st;
}

/* One attention problem over B items x Lq query rows x H heads: q and o
   from q_off / o_off with strides qs (item, row; heads D apart), k and v
   from k_off / v_off with strides kvs, keys of item b counted by kl[b0 + b].
   Recorded in chunks of items x rows x heads whose windows fit the binding
   limit (ops/op_common.h); one chunk when everything fits. */
typedef struct attn_part {
  const mr_tensor *q, *k, *v, *o;
  int64_t q_off, k_off, v_off, o_off, B, H, b0;
  int64_t qs[2], kvs[2];
} attn_part;

static mr_status run_part(mr_ctx *ctx, int variant, const attn_part *a, float scale, int kl_mode, const uint32_t *kl,
                          mr_binding kl_binding) {
  int64_t Lq = a->q->shape[1], Lk = a->k->shape[1], D = a->q->shape[3];
  mr_split sp = {.ndim = 3, .shape = {a->B, Lq, a->H}, .unit = "query row"};
  const int64_t qs[3] = {a->qs[0], a->qs[1], D}, kvs[3] = {a->kvs[0], 0, D};
  int64_t kv_extent = (Lk - 1) * a->kvs[1] + D - 1;
  mr_split_add(&sp, a->q, false, a->q_off, qs, D - 1);
  mr_split_add(&sp, a->k, false, a->k_off, kvs, kv_extent);
  mr_split_add(&sp, a->v, false, a->v_off, kvs, kv_extent);
  mr_split_add(&sp, a->o, true, a->o_off, qs, D - 1);
  mr_status st = mr_split_plan(ctx, &sp, "attention");
  if (st == MR_OK && kl_mode == KL_IN_BUFFER && !mr_split_single(&sp)) {
    /* split chunks take their items' key lengths in push constants */
    sp.max_tile[0] = KL_PUSH_MAX;
    kl_mode = KL_IN_PUSH;
    st = mr_split_plan(ctx, &sp, "attention");
  }
  while (st == MR_OK && mr_split_next(&sp)) {
    attn_push pc = {.B = (uint32_t)sp.size[0], .Lq = (uint32_t)sp.size[1], .Lk = (uint32_t)Lk,
                    .H = (uint32_t)sp.size[2], .q_off = (uint32_t)sp.rel[0], .k_off = (uint32_t)sp.rel[1],
                    .v_off = (uint32_t)sp.rel[2], .o_off = (uint32_t)sp.rel[3], .scale = scale,
                    .q_bs = (uint32_t)a->qs[0], .q_rs = (uint32_t)a->qs[1], .kv_bs = (uint32_t)a->kvs[0],
                    .kv_rs = (uint32_t)a->kvs[1]};
    if (kl_mode == KL_IN_PUSH)
      for (int64_t b = 0; b < sp.size[0]; b++) pc.kl[b] = kl[a->b0 + sp.start[0] + b];
    /* unused, the key-length binding points at q: every binding must be valid */
    mr_binding b[5] = {sp.bind[0], sp.bind[1], sp.bind[2], sp.bind[3], kl_mode == KL_IN_BUFFER ? kl_binding : sp.bind[0]};
    st = dispatch(ctx, variant, a->q, a->k, a->v, a->o, kl_mode, &pc, b, kl);
  }
  return st;
}

/* The whole attention: the tensors' own windows when one item's keys and
   values fit the binding limit; else, per item and group of heads, the
   group's keys and values copied into compact tensors that do, and the
   queries split over rows. */
static mr_status record(mr_ctx *ctx, int variant, const mr_tensor *q, const mr_tensor *k, const mr_tensor *v,
                        mr_tensor *o, float scale, int kl_mode, const uint32_t *kl, mr_binding kl_binding) {
  int64_t B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3], Lk = k->shape[1];
  attn_part a = {.q = q, .k = k, .v = v, .o = o, .q_off = q->offset, .k_off = k->offset, .v_off = v->offset,
                 .o_off = o->offset, .B = B, .H = H, .qs = {Lq * H * D, H * D}, .kvs = {Lk * H * D, H * D}};
  if (Lk * H * D <= mr_op_window_budget(k) && Lk * H * D <= mr_op_window_budget(v))
    return run_part(ctx, variant, &a, scale, kl_mode, kl, kl_binding);
  /* heads per group: the compact [1, Lk, hg, D] copies must fit whole */
  int64_t limit = (int64_t)mr_op_max_binding(ctx), es = (int64_t)mr_dtype_size(k->dtype);
  int64_t hg = limit / (Lk * D * es);
  if (hg > H) hg = H;
  if (hg < 1)
    return mr_error(ctx, MR_EUNSUPPORTED, "attention: the keys of one head (%lld x %lld) are over this device's binding "
                    "limit of %lld bytes", (long long)Lk, (long long)D, (long long)limit);
  mr_status st = MR_OK;
  for (int64_t b = 0; b < B && st == MR_OK; b++)
    for (int64_t h0 = 0; h0 < H && st == MR_OK; h0 += hg) {
      int64_t n = H - h0 < hg ? H - h0 : hg;
      mr_tensor *kb = NULL, *vb = NULL, *kh = NULL, *vh = NULL, *kt = NULL, *vt = NULL;
      if ((st = mr_tensor_slice((mr_tensor *)k, 0, b, b + 1, 1, &kb)) == MR_OK &&
          (st = mr_tensor_slice(kb, 2, h0, h0 + n, 1, &kh)) == MR_OK && (st = mr_tensor_cast(kh, kh->dtype, &kt)) == MR_OK &&
          (st = mr_tensor_slice((mr_tensor *)v, 0, b, b + 1, 1, &vb)) == MR_OK &&
          (st = mr_tensor_slice(vb, 2, h0, h0 + n, 1, &vh)) == MR_OK && (st = mr_tensor_cast(vh, vh->dtype, &vt)) == MR_OK) {
        attn_part g = {.q = q, .k = kt, .v = vt, .o = o, .q_off = q->offset + b * Lq * H * D + h0 * D,
                       .k_off = 0, .v_off = 0, .o_off = o->offset + b * Lq * H * D + h0 * D, .B = 1, .H = n, .b0 = b,
                       .qs = {Lq * H * D, H * D}, .kvs = {Lk * n * D, n * D}};
        st = run_part(ctx, variant, &g, scale, kl_mode == KL_NONE ? KL_NONE : KL_IN_PUSH, kl, kl_binding);
      }
      mr_tensor_free(kb);
      mr_tensor_free(vb);
      mr_tensor_free(kh);
      mr_tensor_free(vh);
      mr_tensor_free(kt); /* the allocator keeps it until the recorded work that reads it is done */
      mr_tensor_free(vt);
    }
  return st;
}

mr_status mr_op_attention_variant(const mr_tensor *q, const mr_tensor *k, const mr_tensor *v,
                                  const mr_attention_opts *opts, int variant, mr_tensor **out) {
  *out = NULL;
  mr_ctx *ctx = q->ctx;
  if (variant < 0 || variant >= MR_ATTENTION_VARIANTS)
    return mr_error(ctx, MR_EINVAL, "attention: unknown variant %d", variant);
  mr_status st = check_shapes(q, k, v);
  if (st != MR_OK) return st;
  mr_attention_opts o_ = opts ? *opts : mr_attention_opts_default();
  int64_t B = q->shape[0], Lk = k->shape[1];
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  if ((variant == MR_ATTENTION_LANES || variant == MR_ATTENTION_DLANES) && !caps->lanes_sg) variant = MR_ATTENTION_REG;
  if (variant == MR_ATTENTION_AUTO)
    /* dlanes's lanes split the head dim: below 2·SG most of them would idle
       (D = 8 ran at 0.6x lanes's speed, D = 16 at 1.7x, D = 64 at 1.9x) */
    variant = !caps->is_cpu      ? MR_ATTENTION_TILED
              : !caps->lanes_sg ? MR_ATTENTION_REG
              : q->shape[3] >= 2 * (int64_t)caps->lanes_sg ? MR_ATTENTION_DLANES
                                                           : MR_ATTENTION_LANES;
  /* llvmpipe ends every loop of an invocation after 65,535 iterations in
     all, without an error, and both kernels walk all keys in one invocation
     (70,000 keys came out wrong): refuse rather than answer wrongly. */
  if (caps->is_cpu && Lk > MR_CPU_ATTENTION_KEYS)
    return mr_error(ctx, MR_EUNSUPPORTED,
                    "attention: %lld keys are past what one invocation may loop over on a CPU device (lavapipe stops "
                    "shader loops after 65,535 iterations); at most %u keys",
                    (long long)Lk, MR_CPU_ATTENTION_KEYS);
  float scale = o_.scale != 0.0f ? o_.scale : 1.0f / sqrtf((float)q->shape[3]);

  /* Key lengths clamped to Lk; when none is short the mask is dropped. */
  uint32_t *kl = NULL;
  int kl_mode = KL_NONE;
  if (o_.k_lens) {
    for (int64_t b = 0; b < B; b++)
      if (o_.k_lens[b] < 0)
        return mr_error(ctx, MR_EINVAL, "attention: k_lens[%lld] = %d is negative", (long long)b, (int)o_.k_lens[b]);
    for (int64_t b = 0; b < B && kl_mode == KL_NONE; b++)
      if (o_.k_lens[b] < Lk) kl_mode = B <= KL_PUSH_MAX ? KL_IN_PUSH : KL_IN_BUFFER;
    if (kl_mode != KL_NONE) {
      if (!(kl = malloc((size_t)B * sizeof *kl))) return mr_error(ctx, MR_ENOMEM, "out of host memory");
      for (int64_t b = 0; b < B; b++) kl[b] = (uint32_t)(o_.k_lens[b] < Lk ? o_.k_lens[b] : Lk);
    }
  }

  mr_tensor *qc = NULL, *kc = NULL, *vc = NULL, *o = NULL;
  mr_alloc kl_alloc = {0};
  if ((st = mr_tensor_contiguous((mr_tensor *)q, &qc)) != MR_OK || (st = mr_tensor_contiguous((mr_tensor *)k, &kc)) != MR_OK ||
      (st = mr_tensor_contiguous((mr_tensor *)v, &vc)) != MR_OK ||
      (st = mr_tensor_empty(ctx, q->dtype, 4, q->shape, &o)) != MR_OK)
    goto done;
  if ((st = mr_tensor_check_index_range(qc, "attention")) != MR_OK ||
      (st = mr_tensor_check_index_range(kc, "attention")) != MR_OK ||
      (st = mr_tensor_check_index_range(vc, "attention")) != MR_OK ||
      (st = mr_tensor_check_index_range(o, "attention")) != MR_OK)
    goto done;
  if (mr_tensor_numel(o) == 0) goto done;
  mr_binding klb = {0};
  if (kl_mode == KL_IN_BUFFER) {
    /* The upload waits for recorded work: this path (more than KL_PUSH_MAX batch items) is rare. */
    if ((st = mr_gpu_alloc(ctx, (VkDeviceSize)B * 4, &kl_alloc)) != MR_OK ||
        (st = mr_gpu_upload(ctx, &kl_alloc, 0, kl, (VkDeviceSize)B * 4)) != MR_OK)
      goto done;
    klb = (mr_binding){.buffer = kl_alloc.buffer, .offset = kl_alloc.offset, .range = kl_alloc.size, .write = false};
  }
  st = record(ctx, variant, qc, kc, vc, o, scale, kl_mode, kl, klb);
done:
  if (kl_alloc.block) mr_gpu_free(ctx, &kl_alloc); /* released after the work that reads it */
  free(kl);
  mr_tensor_free(qc);
  mr_tensor_free(kc);
  mr_tensor_free(vc);
  if (st != MR_OK) mr_tensor_free(o);
  else *out = o;
  return st;
}

mr_status mr_op_attention(const mr_tensor *q, const mr_tensor *k, const mr_tensor *v, const mr_attention_opts *opts,
                          mr_tensor **out) {
  return mr_op_attention_variant(q, k, v, opts, MR_ATTENTION_AUTO, out);
}
