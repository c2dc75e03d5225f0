#version 450
// Attention for CPU-type devices (lavapipe): one invocation per (query row,
// head, batch item), no shared memory and no barriers. The query row (pre-
// scaled) and a D-sized f32 output accumulator live in private memory; the
// keys are walked once with an online softmax (running max m and sum l; the
// accumulator is rescaled only when the max grows). Neighbouring invocations
// are neighbouring query rows of one head, so they read the same K/V rows.
// q, o: [B, Lq, H, D]; k, v: [B, Lk, H, D]; heads contiguous, items and rows
// at the strides in the push constants (a window of a larger tensor).
// spec: 0 q dtype, 1 k dtype, 2 v dtype, 3 out dtype, 4 D, 5 workgroup size,
//       6 ALIGNED (offsets multiples of 4: vector loads), 7 KL_MODE (0 all
//       keys, 1 lengths in push constants, 2 lengths in the buffer at binding 4)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 5) in;
MR_TENSOR_RO(0, q, 0)
MR_TENSOR_RO(1, k, 1)
MR_TENSOR_RO(2, v, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 4) const uint D = 64u;
layout(constant_id = 6) const bool ALIGNED = false;
layout(constant_id = 7) const uint KL_MODE = 0u;
layout(std430, binding = 4) readonly buffer kl_block { uint kl_buf[]; };

layout(std430, binding = 0) readonly buffer q_v4_block { vec4 q_v4[]; };
layout(std430, binding = 0) readonly buffer q_h4_block { uvec2 q_h4[]; };
layout(std430, binding = 1) readonly buffer k_v4_block { vec4 k_v4[]; };
layout(std430, binding = 1) readonly buffer k_h4_block { uvec2 k_h4[]; };
layout(std430, binding = 2) readonly buffer v_v4_block { vec4 v_v4[]; };
layout(std430, binding = 2) readonly buffer v_h4_block { uvec2 v_h4[]; };

layout(push_constant) uniform Push {
  uint B, Lq, Lk, H;
  uint q_off, k_off, v_off, o_off;
  float scale;
  uint n;                // B * H * Lq
  uint q_bs, q_rs;       // q and o: batch item and row strides (heads are D apart)
  uint kv_bs, kv_rs;     // k and v: the same
  uint kl[16];           // KL_MODE 1: keys per batch item (already clamped to Lk)
} p;

const uint D4 = D / 4u;

vec4 unpack4(uint dt, uvec2 h) {
  if (dt == DT_F16) return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
  return vec4(uintBitsToFloat(h.x << 16), uintBitsToFloat(h.x & 0xffff0000u), uintBitsToFloat(h.y << 16),
              uintBitsToFloat(h.y & 0xffff0000u));
}
vec4 q4(uint i) {
  if (ALIGNED) return q_dt == DT_F32 ? q_v4[i >> 2] : unpack4(q_dt, q_h4[i >> 2]);
  return vec4(q_load(i), q_load(i + 1u), q_load(i + 2u), q_load(i + 3u));
}
vec4 k4(uint i) {
  if (ALIGNED) return k_dt == DT_F32 ? k_v4[i >> 2] : unpack4(k_dt, k_h4[i >> 2]);
  return vec4(k_load(i), k_load(i + 1u), k_load(i + 2u), k_load(i + 3u));
}
vec4 v4(uint i) {
  if (ALIGNED) return v_dt == DT_F32 ? v_v4[i >> 2] : unpack4(v_dt, v_h4[i >> 2]);
  return vec4(v_load(i), v_load(i + 1u), v_load(i + 2u), v_load(i + 3u));
}

void main() {
  uint id = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (id >= p.n) return;
  uint row = id % p.Lq, bh = id / p.Lq, h = bh % p.H, b = bh / p.H;
  uint nk = KL_MODE == 0u ? p.Lk : (KL_MODE == 1u ? p.kl[b] : kl_buf[b]);
  uint ob = p.o_off + b * p.q_bs + row * p.q_rs + h * D;

  vec4 qv[D4], acc[D4];
  uint qb = p.q_off + b * p.q_bs + row * p.q_rs + h * D;
  for (uint d = 0u; d < D4; d++) {
    qv[d] = q4(qb + 4u * d) * p.scale;
    acc[d] = vec4(0.0);
  }
  float m = uintBitsToFloat(0xff800000u), l = 0.0; // m = -inf
  uint kstep = p.kv_rs;
  uint kb = p.k_off + b * p.kv_bs + h * D, vb = p.v_off + b * p.kv_bs + h * D;
  for (uint j = 0u; j < nk; j++, kb += kstep, vb += kstep) {
    float s = 0.0;
    for (uint d = 0u; d < D4; d++) s += dot(qv[d], k4(kb + 4u * d));
    if (s > m) { // a new max: rescale what is summed so far (exp(-inf) = 0 the first time)
      float c = exp(m - s);
      l *= c;
      for (uint d = 0u; d < D4; d++) acc[d] *= c;
      m = s;
    }
    float e = exp(s - m);
    l += e;
    for (uint d = 0u; d < D4; d++) acc[d] += e * v4(vb + 4u * d);
  }
  float inv = l > 0.0 ? 1.0 / l : 0.0; // no keys: zeros
  for (uint d = 0u; d < D4; d++) {
    vec4 r = acc[d] * inv;
    for (uint c = 0u; c < 4u; c++) o_store(ob + 4u * d + c, r[c]);
  }
}
