// The bindings and push constants every CPU-type attention kernel shares
// (attention_rows.glsl, attention_dlanes.comp); op_attention.c's attn_push
// mirrors the block. q, o: [B, Lq, H, D]; k, v: [B, Lk, H, D]; heads
// contiguous, items and rows at the strides below (a window of a larger
// tensor).
layout(std430, binding = 4) readonly buffer kl_block { uint kl_buf[]; };

layout(push_constant) uniform Push {
  uint B, Lq, Lk, H;
  uint q_off, k_off, v_off, o_off;
  float scale;
  uint n;                // attention_rows: B * H * Lq invocations; dlanes: subgroups, B * H * ceil(Lq / SG)
  uint q_bs, q_rs;       // q and o: batch item and row strides (heads are D apart)
  uint kv_bs, kv_rs;     // k and v: the same
  uint kl[16];           // KL_MODE 1: keys per batch item (already clamped to Lk)
} p;
