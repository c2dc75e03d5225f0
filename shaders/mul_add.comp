#version 450
// out[i] = a[..] * (b[..] + beta) + c[..] with numpy broadcasting over all
// three (the geometry: broadcast.glsl). One dispatch for what the DiT did in
// three (modulation: LN(x) * (1 + scale) + shift) or two (gated residual:
// x + y * gate); the product and the sum round as the separate ops did.
// spec: 0 a dtype, 1 b dtype, 2 c dtype, 3 out dtype, 4 workgroup size,
//       5 X4 (four elements a lane)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "broadcast.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO4(0, a, 0)
MR_TENSOR_RO4(1, b, 1)
MR_TENSOR_RO4(2, c, 2)
MR_TENSOR_RW4(3, y, 3)
layout(constant_id = 5) const bool X4 = false;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (X4) {
    i *= 4u;
    if (i >= p.n) return;
    uvec3 at = mr_bcast_index(i);
    vec4 a = mr_bcast_splat(0u) ? vec4(a_load(at.x)) : a_load4(at.x);
    vec4 b = mr_bcast_splat(1u) ? vec4(b_load(at.y)) : b_load4(at.y);
    vec4 c = mr_bcast_splat(2u) ? vec4(c_load(at.z)) : c_load4(at.z);
    precise vec4 g = b + p.beta;
    precise vec4 m = a * g;
    y_store4(p.y_off + i, m + c);
    return;
  }
  if (i >= p.n) return;
  uvec3 at = mr_bcast_index(i);
  precise float g = b_load(at.y) + p.beta;
  precise float m = a_load(at.x) * g;
  y_store(p.y_off + i, m + c_load(at.z));
}
