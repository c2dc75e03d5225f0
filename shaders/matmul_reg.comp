#version 450
// Linear layer for CPU-type devices (lavapipe): out = x · wᵀ + bias with no
// shared memory and no barriers. Each invocation computes a 4x4 block of
// outputs (TM = 4 rows of x against 4 rows of w; TM = 1 when M is tiny)
// with dot products over K in steps of 4, so a loaded value is used up to
// four times. Rows past M or N are
// clamped to the last row, computed and not stored: the inner loop has no
// bounds checks. x and w are contiguous row-major per batch item; output rows
// are o_rs apart (N, or more for a chunk of the columns).
// spec: 0 x dtype, 1 w dtype, 2 bias dtype, 3 out dtype, 4 workgroup size in
//       n (columns of 4), 5 workgroup size in m (rows of 4), 6 ALIGNED (K and
//       the x/w offsets are multiples of 4: vector loads), 7 HAS_BIAS, 8 TM, 9 ACT
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 4, local_size_y_id = 5) in;
MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, w, 1)
MR_TENSOR_RO(2, bias, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 6) const bool ALIGNED = false;
layout(constant_id = 7) const bool HAS_BIAS = false;
layout(constant_id = 8) const uint TM = 4u; // rows per invocation: 4, or 1 for GEMV-like calls
layout(constant_id = 9) const uint ACT = 0u; // activation on the outputs (MR_ACT)

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
  uint o_rs;                  // output row stride (N unless a chunk of the columns)
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
  uint m0 = ((rem / p.tiles_n) * gl_WorkGroupSize.y + gl_LocalInvocationID.y) * TM;
  uint n0 = ((rem % p.tiles_n) * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * 4u;
  if (m0 >= p.M || n0 >= p.N) return;

  uint xb = p.x_off + batch * p.x_bs, wb = p.w_off + batch * p.w_bs;
  uint xr[TM];
  for (uint i = 0u; i < TM; i++) xr[i] = xb + min(m0 + i, p.M - 1u) * p.K;
  uint wr0 = wb + min(n0, p.N - 1u) * p.K, wr1 = wb + min(n0 + 1u, p.N - 1u) * p.K;
  uint wr2 = wb + min(n0 + 2u, p.N - 1u) * p.K, wr3 = wb + min(n0 + 3u, p.N - 1u) * p.K;

  vec4 acc[TM]; // acc[i][j]: row m0 + i, column n0 + j
  for (uint i = 0u; i < TM; i++) acc[i] = vec4(0.0);
  uint K4 = p.K & ~3u, k = 0u;
  for (; k < K4; k += 4u) {
    vec4 b0 = w4(wr0 + k), b1 = w4(wr1 + k), b2 = w4(wr2 + k), b3 = w4(wr3 + k);
    for (uint i = 0u; i < TM; i++) {
      vec4 a = x4(xr[i] + k);
      acc[i] += vec4(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
    }
  }
  for (; k < p.K; k++) {
    vec4 b = vec4(w_load(wr0 + k), w_load(wr1 + k), w_load(wr2 + k), w_load(wr3 + k));
    for (uint i = 0u; i < TM; i++) acc[i] += x_load(xr[i] + k) * b;
  }

  vec4 bv = vec4(0.0);
  if (HAS_BIAS)
    for (uint j = 0u; j < 4u; j++) bv[j] = bias_load(p.b_off + min(n0 + j, p.N - 1u));
  uint ob = p.o_off + batch * p.o_bs;
  for (uint i = 0u; i < TM; i++) {
    if (m0 + i >= p.M) break;
    for (uint j = 0u; j < 4u; j++)
      if (n0 + j < p.N) o_store(ob + (m0 + i) * p.o_rs + n0 + j, MR_ACT(ACT, acc[i][j] + bv[j]));
  }
}
