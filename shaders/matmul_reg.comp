#version 450
// Linear layer for CPU-type devices (lavapipe): out = x · wᵀ + bias with no
// shared memory and no barriers. Each invocation computes a 4x4 block of
// outputs (4 rows of x against 4 rows of w) with a dot product over K in
// steps of 4, so every loaded value is used four times. Rows past M or N are
// clamped to the last row, computed and not stored: the inner loop has no
// bounds checks. x, w and out are contiguous row-major per batch item.
// spec: 0 x dtype, 1 w dtype, 2 bias dtype, 3 out dtype, 4 workgroup size in
//       n (columns of 4), 5 workgroup size in m (rows of 4), 6 ALIGNED (K and
//       the x/w offsets are multiples of 4: vector loads), 7 HAS_BIAS
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 4, local_size_y_id = 5) in;
MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, w, 1)
MR_TENSOR_RO(2, bias, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 6) const bool ALIGNED = false;
layout(constant_id = 7) const bool HAS_BIAS = false;

// The same bindings seen four elements at a time (f32: vec4, 16-bit: uvec2).
layout(std430, binding = 0) readonly buffer x_v4_block { vec4 x_v4[]; };
layout(std430, binding = 0) readonly buffer x_h4_block { uvec2 x_h4[]; };
layout(std430, binding = 1) readonly buffer w_v4_block { vec4 w_v4[]; };
layout(std430, binding = 1) readonly buffer w_h4_block { uvec2 w_h4[]; };

layout(push_constant) uniform Push {
  uint M, N, K, nbatch;
  uint x_off, w_off, b_off, o_off;
  uint x_bs, w_bs, o_bs;      // batch strides in elements (w_bs 0: w shared)
  uint tiles_n, tiles_m;      // workgroups per batch item along n and m
} p;

vec4 unpack4(uint dt, uvec2 h) {
  if (dt == DT_F16) return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
  return vec4(uintBitsToFloat(h.x << 16), uintBitsToFloat(h.x & 0xffff0000u), uintBitsToFloat(h.y << 16),
              uintBitsToFloat(h.y & 0xffff0000u));
}

vec4 x4(uint i) {
  if (ALIGNED) return x_dt == DT_F32 ? x_v4[i >> 2] : unpack4(x_dt, x_h4[i >> 2]);
  return vec4(x_load(i), x_load(i + 1u), x_load(i + 2u), x_load(i + 3u));
}

vec4 w4(uint i) {
  if (ALIGNED) return w_dt == DT_F32 ? w_v4[i >> 2] : unpack4(w_dt, w_h4[i >> 2]);
  return vec4(w_load(i), w_load(i + 1u), w_load(i + 2u), w_load(i + 3u));
}

void main() {
  uint g = mr_group_id(), per_batch = p.tiles_n * p.tiles_m;
  uint batch = g / per_batch;
  if (batch >= p.nbatch) return;
  uint rem = g - batch * per_batch;
  uint m0 = ((rem / p.tiles_n) * gl_WorkGroupSize.y + gl_LocalInvocationID.y) * 4u;
  uint n0 = ((rem % p.tiles_n) * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * 4u;
  if (m0 >= p.M || n0 >= p.N) return;

  uint xb = p.x_off + batch * p.x_bs, wb = p.w_off + batch * p.w_bs;
  uint xr0 = xb + min(m0, p.M - 1u) * p.K, xr1 = xb + min(m0 + 1u, p.M - 1u) * p.K;
  uint xr2 = xb + min(m0 + 2u, p.M - 1u) * p.K, xr3 = xb + min(m0 + 3u, p.M - 1u) * p.K;
  uint wr0 = wb + min(n0, p.N - 1u) * p.K, wr1 = wb + min(n0 + 1u, p.N - 1u) * p.K;
  uint wr2 = wb + min(n0 + 2u, p.N - 1u) * p.K, wr3 = wb + min(n0 + 3u, p.N - 1u) * p.K;

  vec4 acc0 = vec4(0.0), acc1 = vec4(0.0), acc2 = vec4(0.0), acc3 = vec4(0.0); // acc_i[j]: row i, column j
  uint K4 = p.K & ~3u, k = 0u;
  for (; k < K4; k += 4u) {
    vec4 b0 = w4(wr0 + k), b1 = w4(wr1 + k), b2 = w4(wr2 + k), b3 = w4(wr3 + k);
    vec4 a = x4(xr0 + k);
    acc0 += vec4(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
    a = x4(xr1 + k);
    acc1 += vec4(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
    a = x4(xr2 + k);
    acc2 += vec4(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
    a = x4(xr3 + k);
    acc3 += vec4(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
  }
  for (; k < p.K; k++) {
    vec4 b = vec4(w_load(wr0 + k), w_load(wr1 + k), w_load(wr2 + k), w_load(wr3 + k));
    acc0 += x_load(xr0 + k) * b;
    acc1 += x_load(xr1 + k) * b;
    acc2 += x_load(xr2 + k) * b;
    acc3 += x_load(xr3 + k) * b;
  }

  vec4 bv = vec4(0.0);
  if (HAS_BIAS)
    for (uint j = 0u; j < 4u; j++) bv[j] = bias_load(p.b_off + min(n0 + j, p.N - 1u));
  vec4 acc[4] = vec4[4](acc0 + bv, acc1 + bv, acc2 + bv, acc3 + bv);
  uint ob = p.o_off + batch * p.o_bs;
  for (uint i = 0u; i < 4u; i++) {
    if (m0 + i >= p.M) break;
    for (uint j = 0u; j < 4u; j++)
      if (n0 + j < p.N) o_store(ob + (m0 + i) * p.N + n0 + j, acc[i][j]);
  }
}
