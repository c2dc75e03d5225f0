#version 450
// Attention for CPU-type devices (lavapipe): the walk of attention_rows.glsl
// (one invocation per query row, head and batch item, an online softmax,
// no barriers) with q, k and v read as storage buffers, vec4 at a time when
// aligned.
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

layout(std430, binding = 0) readonly buffer q_v4_block { vec4 q_v4[]; };
layout(std430, binding = 0) readonly buffer q_h4_block { uvec2 q_h4[]; };
layout(std430, binding = 1) readonly buffer k_v4_block { vec4 k_v4[]; };
layout(std430, binding = 1) readonly buffer k_h4_block { uvec2 k_h4[]; };
layout(std430, binding = 2) readonly buffer v_v4_block { vec4 v_v4[]; };
layout(std430, binding = 2) readonly buffer v_h4_block { uvec2 v_h4[]; };

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

#include "attention_rows.glsl"
