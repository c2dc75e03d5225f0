#version 450
// Attention for CPU-type devices (lavapipe), second form: the walk of
// attention_rows.glsl, as attention_reg runs it, with the keys and values
// read through uniform texel buffers. On a CPU driver the lanes of a
// subgroup are one SIMD register, and a storage-buffer load whose
// address the compiler cannot prove uniform is a loop over the lanes (about
// 20 instructions each: matmul_lanes.comp has the measured costs), while a
// texel fetch is one hardware gather. Every key and value is read once per
// lane and step, so those loads were the kernel's cost; the query row and
// the output, read and written once per invocation, stay storage buffers.
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
vec4 q4(uint i) { return vec4(q_load(i), q_load(i + 1u), q_load(i + 2u), q_load(i + 3u)); }
vec4 v4(uint i) {
  if (ALIGNED) return to_vec4(v_dt, texelFetch(v_tb, int(i >> 2)));
  return to_vec4(v_dt, uvec4(texelFetch(v_tb, int(i)).x, texelFetch(v_tb, int(i + 1u)).x,
                             texelFetch(v_tb, int(i + 2u)).x, texelFetch(v_tb, int(i + 3u)).x));
}

#include "attention_rows.glsl"
