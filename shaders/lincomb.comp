#version 450
// out[i] = Σ c_k · x_k[off_k + i] for k < N (1..4): the samplers' updates and
// classifier-free guidance. Inputs are contiguous (the host copies strided
// views first); slots k >= N are bound to x0 and never read. Arithmetic f32.
// spec: 0..3 x0..x3 dtypes, 4 out dtype, 5 N, 6 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 6) in;
MR_TENSOR_RO(0, x0, 0)
MR_TENSOR_RO(1, x1, 1)
MR_TENSOR_RO(2, x2, 2)
MR_TENSOR_RO(3, x3, 3)
MR_TENSOR_RW(4, y, 4)
layout(constant_id = 5) const uint N = 1u;

layout(push_constant) uniform Push {
  uint n;
  uint off[4];
  float c[4];
  uint y_off;  // the output's first element (a window of a larger output)
} p;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  float v = p.c[0] * x0_load(p.off[0] + i);
  if (N > 1u) v += p.c[1] * x1_load(p.off[1] + i);
  if (N > 2u) v += p.c[2] * x2_load(p.off[2] + i);
  if (N > 3u) v += p.c[3] * x3_load(p.off[3] + i);
  y_store(p.y_off + i, v);
}
