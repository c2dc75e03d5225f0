#version 450
// Attention for GPUs, FlashAttention-2 style: one workgroup per (tile of BR
// query rows, head, batch item). The Q tile (pre-scaled) stays in shared
// memory; K and V are walked in tiles of BC keys staged in shared memory.
// Each query row belongs to T consecutive threads: they split the row's
// scores for a key tile, then each keeps D/T of the row's output dims
// (interleaved, so neighbours read neighbouring shared words) in f32
// registers, with the running max m and sum l of an online softmax. Rows are
// split across the workgroup, never keys, so no cross-thread reduction is
// needed beyond the score tile. The Lq x Lk matrix is never stored.
// q, o: [B, Lq, H, D]; k, v: [B, Lk, H, D]; heads contiguous, items and rows
// at the strides in the push constants (a window of a larger tensor).
// spec: 0 q dtype, 1 k dtype, 2 v dtype, 3 out dtype, 4 D, 5 BR, 6 BC, 7 T,
//       8 KL_MODE (as attention_reg), 9 workgroup size (= BR * T)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 9) in;
MR_TENSOR_RO(0, q, 0)
MR_TENSOR_RO(1, k, 1)
MR_TENSOR_RO(2, v, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 4) const uint D = 64u;
layout(constant_id = 5) const uint BR = 16u;
layout(constant_id = 6) const uint BC = 16u;
layout(constant_id = 7) const uint T = 8u;
layout(constant_id = 8) const uint KL_MODE = 0u;
layout(std430, binding = 4) readonly buffer kl_block { uint kl_buf[]; };

layout(push_constant) uniform Push {
  uint B, Lq, Lk, H;
  uint q_off, k_off, v_off, o_off;
  float scale;
  uint tiles_q;          // ceil(Lq / BR)
  uint q_bs, q_rs;       // q and o: batch item and row strides (heads are D apart)
  uint kv_bs, kv_rs;     // k and v: the same
  uint kl[16];
} p;

const uint DP = D + 1u;  // padded row stride: rows start in different banks
const uint DT = D / T;   // output dims per thread
shared float Qs[BR * DP];
shared float Ks[BC * DP];
shared float Vs[BC * D];
shared float Ss[BR * BC];

void main() {
  uint g = mr_group_id();
  uint qt = g % p.tiles_q, bh = g / p.tiles_q, h = bh % p.H, b = bh / p.H;
  if (b >= p.B) return; // uniform over the workgroup
  uint tid = gl_LocalInvocationID.x, r = tid / T, tr = tid % T;
  uint nk = KL_MODE == 0u ? p.Lk : (KL_MODE == 1u ? p.kl[b] : kl_buf[b]);
  uint q0 = qt * BR, kstep = p.kv_rs;

  for (uint e = tid; e < BR * D; e += gl_WorkGroupSize.x) {
    uint rr = e / D, d = e % D, row = q0 + rr;
    Qs[rr * DP + d] = row < p.Lq ? q_load(p.q_off + b * p.q_bs + row * p.q_rs + h * D + d) * p.scale : 0.0;
  }

  float acc[DT];
  for (uint i = 0u; i < DT; i++) acc[i] = 0.0;
  float m = uintBitsToFloat(0xff800000u), l = 0.0; // m = -inf
  uint kb = b * p.kv_bs + h * D;

  for (uint j0 = 0u; j0 < nk; j0 += BC) {
    barrier(); // the previous tile is consumed (and the Q tile written, the first time)
    for (uint e = tid; e < BC * D; e += gl_WorkGroupSize.x) {
      uint c = e / D, d = e % D;
      bool ok = j0 + c < nk;
      uint idx = kb + (j0 + c) * kstep + d;
      Ks[c * DP + d] = ok ? k_load(p.k_off + idx) : 0.0;
      Vs[c * D + d] = ok ? v_load(p.v_off + idx) : 0.0;
    }
    barrier();
    for (uint c = tr; c < BC; c += T) {
      float s = 0.0;
      for (uint d = 0u; d < D; d++) s = fma(Qs[r * DP + d], Ks[c * DP + d], s);
      Ss[r * BC + c] = j0 + c < nk ? s : uintBitsToFloat(0xff800000u);
    }
    barrier();
    float mt = m;
    for (uint c = 0u; c < BC; c++) mt = max(mt, Ss[r * BC + c]);
    float corr = exp(m - mt); // 0 on the first tile (m = -inf); mt is finite: the tile has a valid key
    l *= corr;
    for (uint i = 0u; i < DT; i++) acc[i] *= corr;
    for (uint c = 0u; c < BC; c++) {
      float e = exp(Ss[r * BC + c] - mt);
      l += e;
      for (uint i = 0u; i < DT; i++) acc[i] = fma(e, Vs[c * D + tr + i * T], acc[i]);
    }
    m = mt;
  }

  uint row = q0 + r;
  if (row < p.Lq) {
    float inv = l > 0.0 ? 1.0 / l : 0.0; // no keys: zeros
    uint ob = p.o_off + b * p.q_bs + row * p.q_rs + h * D;
    for (uint i = 0u; i < DT; i++) o_store(ob + tr + i * T, acc[i] * inv);
  }
}
