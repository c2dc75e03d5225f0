/* Multi-head attention: softmax(q·kᵀ · scale) · v per (batch item, head), in
   Wan's [B, L, H, D] layout, with an optional per-batch key length.

   Two kernels, chosen per device:
   - attention_reg (CPU-type devices): one invocation per (query row, head),
     an online softmax over every key with the output row in private memory;
     no barriers, which are very costly on lavapipe.
   - attention (GPUs): FlashAttention-2 style tiles; K/V tiles in shared
     memory, query rows split across the workgroup.
   Both keep softmax statistics and the output accumulator in f32 and never
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
  uint32_t u;                /* attention_reg: B * H * Lq invocations; attention: query tiles per head */
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

static mr_status dispatch(mr_ctx *ctx, int variant, const mr_tensor *q, const mr_tensor *k, const mr_tensor *v,
                          mr_tensor *o, float scale, int kl_mode, attn_push *pc, mr_binding kl_binding,
                          const uint32_t *kl) {
  const mr_gpu_caps *caps = mr_gpu_caps_get(ctx);
  uint32_t D = (uint32_t)q->shape[3];
  uint64_t groups;
  const char *shader;
  uint32_t spec[10];
  int nspec;
  pc->B = (uint32_t)q->shape[0];
  pc->Lq = (uint32_t)q->shape[1];
  pc->Lk = (uint32_t)k->shape[1];
  pc->H = (uint32_t)q->shape[2];
  pc->q_off = (uint32_t)q->offset;
  pc->k_off = (uint32_t)k->offset;
  pc->v_off = (uint32_t)v->offset;
  pc->o_off = (uint32_t)o->offset;
  pc->scale = scale;
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
  } else {
    const uint32_t wg = 64;
    bool aligned = q->offset % 4 == 0 && k->offset % 4 == 0 && v->offset % 4 == 0;
    shader = "attention_reg";
    uint32_t sp[8] = {q->dtype, k->dtype, v->dtype, o->dtype, D, wg, aligned, (uint32_t)kl_mode};
    memcpy(spec, sp, sizeof sp);
    nspec = 8;
    pc->u = pc->B * pc->H * pc->Lq;
    groups = (pc->u + wg - 1) / wg;
  }
  if (groups > (uint64_t)caps->max_groups[0] * caps->max_groups[1])
    return mr_error(ctx, MR_EUNSUPPORTED, "attention: %llu workgroups exceed the device grid", (unsigned long long)groups);
  mr_pipeline *p;
  mr_status st = mr_gpu_pipeline(ctx, shader, 5, sizeof *pc, spec, nspec, &p);
  if (st != MR_OK) return st;
  mr_binding b[5] = {mr_tensor_binding(q, false), mr_tensor_binding(k, false), mr_tensor_binding(v, false),
                     mr_tensor_binding(o, true), kl_binding};
  uint32_t gx, gy;
  mr_gpu_grid(ctx, groups, &gx, &gy);
  st = mr_gpu_dispatch(ctx, p, b, 5, pc, gx, gy, 1, "attention");
  if (st == MR_OK) mr_gpu_count_flops(ctx, attention_flops(pc, D, kl_mode, kl));
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
  if (variant == MR_ATTENTION_AUTO) variant = mr_gpu_caps_get(ctx)->is_cpu ? MR_ATTENTION_REG : MR_ATTENTION_TILED;
  int64_t B = q->shape[0], Lk = k->shape[1];
  float scale = o_.scale != 0.0f ? o_.scale : 1.0f / sqrtf((float)q->shape[3]);

  /* Key lengths clamped to Lk; when none is short the mask is dropped. */
  attn_push pc = {0};
  uint32_t *kl = NULL;
  int kl_mode = KL_NONE;
  if (o_.k_lens) {
    for (int64_t b = 0; b < B; b++)
      if (o_.k_lens[b] < 0)
        return mr_error(ctx, MR_EINVAL, "attention: k_lens[%lld] = %d is negative", (long long)b, (int)o_.k_lens[b]);
    for (int64_t b = 0; b < B && kl_mode == KL_NONE; b++)
      if (o_.k_lens[b] < Lk) kl_mode = B <= KL_PUSH_MAX ? KL_IN_PUSH : KL_IN_BUFFER;
    if (kl_mode == KL_IN_PUSH)
      for (int64_t b = 0; b < B; b++) pc.kl[b] = (uint32_t)(o_.k_lens[b] < Lk ? o_.k_lens[b] : Lk);
    if (kl_mode == KL_IN_BUFFER) {
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
  /* Unused, the key-length binding points at q: every binding must be valid. */
  mr_binding klb = mr_tensor_binding(qc, false);
  if (kl_mode == KL_IN_BUFFER) {
    /* The upload waits for recorded work: this path (more than KL_PUSH_MAX batch items) is rare. */
    if ((st = mr_gpu_alloc(ctx, (VkDeviceSize)B * 4, &kl_alloc)) != MR_OK ||
        (st = mr_gpu_upload(ctx, &kl_alloc, 0, kl, (VkDeviceSize)B * 4)) != MR_OK)
      goto done;
    klb = (mr_binding){.buffer = kl_alloc.buffer, .offset = kl_alloc.offset, .range = kl_alloc.size, .write = false};
  }
  st = dispatch(ctx, variant, qc, kc, vc, o, scale, kl_mode, &pc, klb, kl);
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
