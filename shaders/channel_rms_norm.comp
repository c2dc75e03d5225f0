#version 450
// Channels-first RMS norm of a contiguous x [C, N]:
//   out[c, n] = x[c, n] / max(||x[:, n]||_2, eps) * sqrt(C) * gamma[c]
// (F.normalize over the channels, as Wan's VAE writes it), then SiLU when
// SILU (the VAE's norm is always followed by it: one pass over the
// activation instead of two). One invocation per position n; neighbouring
// invocations read neighbouring words. With X4 (N and the start multiples of
// 4) an invocation takes four neighbouring positions with one 16-byte load
// and store per channel: on lavapipe each load is a loop over the lanes.
// spec: 0 x dtype, 1 gamma dtype, 2 out dtype, 3 HAS_GAMMA, 4 workgroup size, 5 SILU, 6 X4
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO4(0, x, 0)
MR_TENSOR_RO(1, gamma, 1)
MR_TENSOR_RW4(2, y, 2)
layout(constant_id = 3) const bool HAS_GAMMA = false;
layout(constant_id = 5) const bool SILU = false;
layout(constant_id = 6) const bool X4 = false;

layout(push_constant) uniform Push {
  uint C, N, x_off, g_off;
  float eps, scale;  // scale = sqrt(C)
} p;

vec4 silu4(vec4 v) { return SILU ? v / (1.0 + exp(-v)) : v; }

void main() {
  uint n = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (X4) {
    n *= 4u;
    if (n >= p.N) return;
    vec4 ss = vec4(0.0);
    for (uint c = 0u, i = p.x_off + n; c < p.C; c++, i += p.N) {
      vec4 v = x_load4(i);
      ss = fma(v, v, ss);
    }
    vec4 inv = p.scale / max(sqrt(ss), vec4(p.eps));
    for (uint c = 0u, i = p.x_off + n; c < p.C; c++, i += p.N) {
      float g = HAS_GAMMA ? gamma_load(p.g_off + c) : 1.0;
      y_store4(c * p.N + n, silu4(x_load4(i) * inv * g));
    }
    return;
  }
  if (n >= p.N) return;
  float ss = 0.0;
  for (uint c = 0u, i = p.x_off + n; c < p.C; c++, i += p.N) {
    float v = x_load(i);
    ss = fma(v, v, ss);
  }
  float inv = p.scale / max(sqrt(ss), p.eps);
  for (uint c = 0u, i = p.x_off + n; c < p.C; c++, i += p.N) {
    float g = HAS_GAMMA ? gamma_load(p.g_off + c) : 1.0;
    float v = x_load(i) * inv * g;
    if (SILU) v = v / (1.0 + exp(-v));  // as unary.comp computes it
    y_store(c * p.N + n, v);
  }
}
