#version 450
// out[i] = a[..] op b[..] with numpy broadcasting. The output is contiguous;
// a and b are strided views whose strides are 0 along broadcast dims. The host
// merges dims both inputs walk contiguously, so ndim is usually 1 or 2.
// spec: 0 a dtype, 1 b dtype, 2 out dtype, 3 op (mr_binary_op), 4 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO(0, a, 0)
MR_TENSOR_RO(1, b, 1)
MR_TENSOR_RW(2, y, 2)
layout(constant_id = 3) const uint OP = 0u;

#define OP_ADD 0u
#define OP_SUB 1u
#define OP_MUL 2u
#define OP_DIV 3u

layout(push_constant) uniform Push {
  uint ndim, n, a_off, b_off;
  uint shape[MR_MAX_DIMS];
  uint a_strides[MR_MAX_DIMS];
  uint b_strides[MR_MAX_DIMS];
  uint y_off;  // the output's first element (a window of a larger output)
} p;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  // one unravel serves both inputs
  uint ia = p.a_off, ib = p.b_off, r = i;
  for (int d = int(p.ndim) - 1; d >= 0; d--) {
    uint c = r % p.shape[d];
    r /= p.shape[d];
    ia += c * p.a_strides[d];
    ib += c * p.b_strides[d];
  }
  float x = a_load(ia), z = b_load(ib), v;
  if (OP == OP_ADD) v = x + z;
  else if (OP == OP_SUB) v = x - z;
  else if (OP == OP_MUL) v = x * z;
  else v = x / z;
  y_store(p.y_off + i, v);
}
