#version 450
// Rotary embedding on adjacent pairs of the last dim of x [B, L, H, D]; one
// invocation per pair. Rows at or past the table length pass through.
// spec: 0 = x dtype, 1 = cos dtype, 2 = sin dtype, 3 = out dtype, 4 = workgroup size,
//       5 = X4: an invocation per two pairs, loaded and stored four elements
//       at a time (the host sets it when the pairs are dense and their rows
//       start at multiples of 4; common.glsl's *4 forms)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 4) in;
MR_TENSOR_RO4(0, x, 0)
MR_TENSOR_RO(1, tcos, 1)
MR_TENSOR_RO(2, tsin, 2)
MR_TENSOR_RW4(3, dst, 3)
layout(constant_id = 5) const bool X4 = false;

layout(push_constant) uniform Push {
  uint n;                        // B * L * H * D/2 pairs
  uint L, H, half_d, table_rows;
  uint x_off, cos_off, sin_off;
  uint xs_b, xs_l, xs_h, xs_d;   // x strides (elements)
  uint y_off;                    // the output's first element (a window of a larger output)
} p;

// pair (a, c) at position l, frequency j, rotated (rows past the table pass through)
vec2 rotate(float a, float c, uint l, uint j) {
  if (l >= p.table_rows) return vec2(a, c);
  float cs = tcos_load(p.cos_off + l * p.half_d + j), sn = tsin_load(p.sin_off + l * p.half_d + j);
  return vec2(a * cs - c * sn, a * sn + c * cs);
}

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  uint per = X4 ? 2u : 1u, hd = p.half_d / per;  // pairs per invocation, invocations per head
  if (i >= p.n / per) return;
  uint j = (i % hd) * per;
  uint h = (i / hd) % p.H;
  uint l = (i / (hd * p.H)) % p.L;
  uint b = i / (hd * p.H * p.L);
  uint src = p.x_off + b * p.xs_b + l * p.xs_l + h * p.xs_h + 2u * j * p.xs_d;
  uint o = p.y_off + 2u * per * i;  // output is contiguous [B, L, H, D]
  if (X4) {
    vec4 v = x_load4(src);  // (a, c) of pairs j and j + 1
    dst_store4(o, vec4(rotate(v.x, v.y, l, j), rotate(v.z, v.w, l, j + 1u)));
    return;
  }
  vec2 r = rotate(x_load(src), x_load(src + p.xs_d), l, j);
  dst_store(o, r.x);
  dst_store(o + 1u, r.y);
}
