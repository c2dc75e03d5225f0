#version 450
// out[i] = a[..] op b[..] with numpy broadcasting (the geometry: broadcast.glsl).
// spec: 0 a dtype, 1 b dtype, 2 out dtype, 3 op (mr_binary_op), 4 workgroup size,
//       5 X4 (four elements a lane)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "broadcast.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO4(0, a, 0)
MR_TENSOR_RO4(1, b, 1)
MR_TENSOR_RW4(2, y, 2)
layout(constant_id = 3) const uint OP = 0u;
layout(constant_id = 5) const bool X4 = false;

#define OP_ADD 0u
#define OP_SUB 1u
#define OP_MUL 2u
#define OP_DIV 3u

vec4 apply(vec4 x, vec4 z) {
  if (OP == OP_ADD) return x + z;
  if (OP == OP_SUB) return x - z;
  if (OP == OP_MUL) return x * z;
  return x / z;
}

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (X4) {
    i *= 4u;
    if (i >= p.n) return;
    uvec3 at = mr_bcast_index(i);
    vec4 x = mr_bcast_splat(0u) ? vec4(a_load(at.x)) : a_load4(at.x);
    vec4 z = mr_bcast_splat(1u) ? vec4(b_load(at.y)) : b_load4(at.y);
    y_store4(p.y_off + i, apply(x, z));
    return;
  }
  if (i >= p.n) return;
  uvec3 at = mr_bcast_index(i);  // one unravel serves both inputs
  y_store(p.y_off + i, apply(vec4(a_load(at.x)), vec4(b_load(at.y))).x);
}
