#version 450
// Attention for CPU-type devices (lavapipe), second form: attention_reg's
// algorithm (one invocation per (query row, head, batch item), the keys
// walked once with an online softmax, no shared memory, no barriers) with
// the keys and values read through uniform texel buffers. On a CPU driver the
// lanes of a subgroup are one SIMD register, and a storage-buffer load whose
// address the compiler cannot prove uniform is a loop over the lanes (about
// 20 instructions each: matmul_lanes.comp has the measured costs), while a
// texel fetch is one hardware gather. Every key and value is read once per
// lane and step, so those loads were the kernel's cost; the query row and
// the output, read and written once per invocation, stay storage buffers.
// q, o: [B, Lq, H, D]; k, v: [B, Lk, H, D]; heads contiguous, items and rows
// at the strides in the push constants (a window of a larger tensor).
// spec: 0 q dtype, 1 k dtype, 2 v dtype, 3 out dtype, 4 D, 5 workgroup size,
//       6 ALIGNED (offsets multiples of 4: texels of 4 elements, else of 1),
//       7 KL_MODE (0 all keys, 1 lengths in push constants, 2 lengths in the
//       buffer at binding 4)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 5) in;
MR_TENSOR_RO(0, q, 0)
layout(constant_id = 1) const uint k_dt = 0u;
layout(constant_id = 2) const uint v_dt = 0u;
layout(binding = 1) uniform usamplerBuffer k_tb; // texels of 32-bit (f32) or 16-bit (f16, bf16) elements
layout(binding = 2) uniform usamplerBuffer v_tb;
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 4) const uint D = 64u;
layout(constant_id = 6) const bool ALIGNED = false;
layout(constant_id = 7) const uint KL_MODE = 0u;
layout(std430, binding = 4) readonly buffer kl_block { uint kl_buf[]; };

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

float to_f32(uint dt, uint u) { return dt == DT_F32 ? uintBitsToFloat(u) : mr_from16(dt, u); }
vec4 to_vec4(uint dt, uvec4 u) {
  return vec4(to_f32(dt, u.x), to_f32(dt, u.y), to_f32(dt, u.z), to_f32(dt, u.w));
}
// Elements i .. i+3 (i a multiple of 4 when ALIGNED).
vec4 k4(uint i) {
  if (ALIGNED) return to_vec4(k_dt, texelFetch(k_tb, int(i >> 2)));
  return to_vec4(k_dt, uvec4(texelFetch(k_tb, int(i)).x, texelFetch(k_tb, int(i + 1u)).x,
                             texelFetch(k_tb, int(i + 2u)).x, texelFetch(k_tb, int(i + 3u)).x));
}
vec4 v4(uint i) {
  if (ALIGNED) return to_vec4(v_dt, texelFetch(v_tb, int(i >> 2)));
  return to_vec4(v_dt, uvec4(texelFetch(v_tb, int(i)).x, texelFetch(v_tb, int(i + 1u)).x,
                             texelFetch(v_tb, int(i + 2u)).x, texelFetch(v_tb, int(i + 3u)).x));
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
    qv[d] = vec4(q_load(qb + 4u * d), q_load(qb + 4u * d + 1u), q_load(qb + 4u * d + 2u), q_load(qb + 4u * d + 3u)) *
            p.scale;
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
