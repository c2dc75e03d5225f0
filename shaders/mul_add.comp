#version 450
// out[i] = a[..] * (b[..] + beta) + c[..] with numpy broadcasting over all
// three (the geometry: broadcast.glsl). One dispatch for what the DiT did in
// three (modulation: LN(x) * (1 + scale) + shift) or two (gated residual:
// x + y * gate); the product and the sum round as the separate ops did.
// spec: 0 a dtype, 1 b dtype, 2 c dtype, 3 out dtype, 4 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "broadcast.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO(0, a, 0)
MR_TENSOR_RO(1, b, 1)
MR_TENSOR_RO(2, c, 2)
MR_TENSOR_RW(3, y, 3)

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  uvec3 at = mr_bcast_index(i);
  precise float g = b_load(at.y) + p.beta;
  precise float m = a_load(at.x) * g;
  y_store(p.y_off + i, m + c_load(at.z));
}
