#version 450
// Channels-first RMS norm of a contiguous x [C, N]:
//   out[c, n] = x[c, n] / max(||x[:, n]||_2, eps) * sqrt(C) * gamma[c]
// (F.normalize over the channels, as Wan's VAE writes it), then SiLU when
// SILU (the VAE's norm is always followed by it: one pass over the
// activation instead of two). One invocation per position n; neighbouring
// invocations read neighbouring words.
// spec: 0 x dtype, 1 gamma dtype, 2 out dtype, 3 HAS_GAMMA, 4 workgroup size, 5 SILU
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, gamma, 1)
MR_TENSOR_RW(2, y, 2)
layout(constant_id = 3) const bool HAS_GAMMA = false;
layout(constant_id = 5) const bool SILU = false;

layout(push_constant) uniform Push {
  uint C, N, x_off, g_off;
  float eps, scale;  // scale = sqrt(C)
} p;

void main() {
  uint n = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
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
