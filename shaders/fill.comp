#version 450
// Sets every element of a strided view to one value.
// spec: 0 = dtype, 1 = workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 1) in;
MR_TENSOR_RW(0, dst, 0)

layout(push_constant) uniform Push {
  uint ndim, n, off;
  float value;
  uint shape[MR_MAX_DIMS];
  uint strides[MR_MAX_DIMS];
} p;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  dst_store(p.off + mr_strided(i, p.ndim, p.shape, p.strides), p.value);
}
