#version 450
// Rotary embedding on adjacent pairs of the last dim of x [B, L, H, D]; one
// invocation per pair. Rows at or past the table length pass through.
// spec: 0 = x dtype, 1 = cos dtype, 2 = sin dtype, 3 = out dtype, 4 = workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, tcos, 1)
MR_TENSOR_RO(2, tsin, 2)
MR_TENSOR_RW(3, dst, 3)

layout(push_constant) uniform Push {
  uint n;                        // B * L * H * D/2 pairs
  uint L, H, half_d, table_rows;
  uint x_off, cos_off, sin_off;
  uint xs_b, xs_l, xs_h, xs_d;   // x strides (elements)
  uint y_off;                    // the output's first element (a window of a larger output)
} p;

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i >= p.n) return;
  uint j = i % p.half_d;
  uint h = (i / p.half_d) % p.H;
  uint l = (i / (p.half_d * p.H)) % p.L;
  uint b = i / (p.half_d * p.H * p.L);
  uint src = p.x_off + b * p.xs_b + l * p.xs_l + h * p.xs_h + 2u * j * p.xs_d;
  float a = x_load(src), c = x_load(src + p.xs_d);
  uint o = p.y_off + 2u * i;  // output is contiguous [B, L, H, D]
  if (l < p.table_rows) {
    float cs = tcos_load(p.cos_off + l * p.half_d + j), sn = tsin_load(p.sin_off + l * p.half_d + j);
    dst_store(o, a * cs - c * sn);
    dst_store(o + 1u, a * sn + c * cs);
  } else {
    dst_store(o, a);
    dst_store(o + 1u, c);
  }
}
