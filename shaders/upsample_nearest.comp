#version 450
// Nearest-neighbour upsampling of the last two dims by integer factors:
// out[..., h, w] = x[..., h / fh, w / fw]. x is any strided view; out is
// contiguous. One invocation per output element, or with W2 (fw = 2,
// output rows a multiple of 4 long) four: two input elements each written
// twice with one 16-byte store (on lavapipe every load and store of an
// invocation is a loop over the lanes, so the count of them is the cost).
// spec: 0 x dtype, 1 out dtype, 2 workgroup size, 3 W2
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 2) in;
MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RW4(1, y, 1)
layout(constant_id = 3) const bool W2 = false;

layout(push_constant) uniform Push {
  uint ndim, n, off, fh, fw;
  uint shape[MR_MAX_DIMS];    // output shape
  uint strides[MR_MAX_DIMS];  // input strides
  uint y_off;                 // the output's first element (a window of a larger output)
} p;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (W2) i *= 4u;
  if (i >= p.n) return;
  uint r = i, src = p.off;
  for (int d = int(p.ndim) - 1; d >= 0; d--) {
    uint c = r % p.shape[d];
    r /= p.shape[d];
    if (d == int(p.ndim) - 1) c /= p.fw;
    else if (d == int(p.ndim) - 2) c /= p.fh;
    src += c * p.strides[d];
  }
  if (W2) { // outputs w .. w + 3 (w a multiple of 4) are inputs w / 2, w / 2, w / 2 + 1, w / 2 + 1
    float a = x_load(src), b = x_load(src + p.strides[p.ndim - 1u]);
    y_store4(p.y_off + i, vec4(a, a, b, b));
    return;
  }
  y_store(p.y_off + i, x_load(src));
}
