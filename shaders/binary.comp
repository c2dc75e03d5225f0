#version 450
// out[i] = a[..] op b[..] with numpy broadcasting (the geometry: broadcast.glsl).
// spec: 0 a dtype, 1 b dtype, 2 out dtype, 3 op (mr_binary_op), 4 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "broadcast.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO(0, a, 0)
MR_TENSOR_RO(1, b, 1)
MR_TENSOR_RW(2, y, 2)
layout(constant_id = 3) const uint OP = 0u;

#define OP_ADD 0u
#define OP_SUB 1u
#define OP_MUL 2u
#define OP_DIV 3u

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  uvec3 at = mr_bcast_index(i);  // one unravel serves both inputs
  float x = a_load(at.x), z = b_load(at.y), v;
  if (OP == OP_ADD) v = x + z;
  else if (OP == OP_SUB) v = x - z;
  else if (OP == OP_MUL) v = x * z;
  else v = x / z;
  y_store(p.y_off + i, v);
}
