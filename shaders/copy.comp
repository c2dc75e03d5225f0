#version 450
// dst[strided] = src[strided], converting between storage dtypes. Serves
// contiguous copies, casts, and the slices written by concat and pad.
// spec: 0 = src dtype, 1 = dst dtype, 2 = workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 2) in;
MR_TENSOR_RO(0, src, 0)
MR_TENSOR_RW(1, dst, 1)

layout(push_constant) uniform Push {
  uint ndim, n, src_off, dst_off;
  uint shape[MR_MAX_DIMS];
  uint src_strides[MR_MAX_DIMS];
  uint dst_strides[MR_MAX_DIMS];
} p;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  float v = src_load(p.src_off + mr_strided(i, p.ndim, p.shape, p.src_strides));
  dst_store(p.dst_off + mr_strided(i, p.ndim, p.shape, p.dst_strides), v);
}
