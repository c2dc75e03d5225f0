#version 450
// Row gather (embedding lookup): dst[i, c] = table[ids[i], c]; one invocation
// per output element. The host checks every id against the table's rows.
// spec: 0 = table dtype, 1 = out dtype, 2 = workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 2) in;
MR_TENSOR_RO(0, table, 0)
layout(std430, binding = 1) readonly buffer ids_block { uint ids[]; };
MR_TENSOR_RW(2, dst, 1)

layout(push_constant) uniform Push {
  uint n;                 // rows * D output elements
  uint D;                 // row length
  uint t_off, t_rs, t_cs; // table offset, row and column strides (elements)
  uint i_off, y_off;      // first id and first output element (windows of larger buffers)
} p;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  uint r = i / p.D, c = i - r * p.D;
  dst_store(p.y_off + i, table_load(p.t_off + ids[p.i_off + r] * p.t_rs + c * p.t_cs));
}
