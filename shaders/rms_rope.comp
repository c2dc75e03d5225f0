#version 450
// RMSNorm over each row of x [B, L, H, D] (all heads together, as Wan's q and
// k norms), times the weight, then the rotary embedding of rope.comp on
// adjacent pairs of every head: one pass where rms_norm then rope make two
// (mr_op_rms_norm_rope). One row (position) per invocation, four elements at
// a time: the host runs it for contiguous x with D a multiple of 4 on CPU-type
// devices and the two ops elsewhere. The norm sums as rms_norm.comp's X4 form
// does and the rotation is rope.comp's, so the result has their bits.
// spec: 0 x dtype, 1 w dtype, 2 cos dtype, 3 sin dtype, 4 out dtype, 5 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define MR_WG_ID 5
#include "rows.glsl"

MR_TENSOR_RO4(0, x, 0)
MR_TENSOR_RO4(1, w, 1)
MR_TENSOR_RO(2, tcos, 2)
MR_TENSOR_RO(3, tsin, 3)
MR_TENSOR_RW4(4, y, 4)
const bool X4 = true;

layout(push_constant) uniform Push {
  uint rows, len, x_off, w_off; // rows B * L of len H * D elements, contiguous
  uint L, half_d, table_rows;   // positions; pairs per head; rows of the angle tables
  uint cos_off, sin_off;
  float eps;
} p;

// pair (a, c) at position l, frequency j, rotated (rows past the table pass through)
vec2 rotate(float a, float c, uint l, uint j) {
  if (l >= p.table_rows) return vec2(a, c);
  float cs = tcos_load(p.cos_off + l * p.half_d + j), sn = tsin_load(p.sin_off + l * p.half_d + j);
  return vec2(a * cs - c * sn, a * sn + c * cs);
}

void main() {
  uint r = mr_row_id(false);
  if (r >= p.rows) return;
  uint n = p.len, xb = p.x_off + r * n, l = r % p.L, d = 2u * p.half_d;
  float ms;
  MR_ROW_MEAN_SQUARES(xb, n, 1u, ms);
  float rrms = 1.0 / sqrt(ms + p.eps);
  uint i = 0u; // heads, then pairs j and j + 1 of the head (no division: on a CPU driver each is a loop over the lanes)
  for (uint h = 0u; h < n; h += d)
    for (uint j = 0u; j < p.half_d; j += 2u, i += 4u) {
      vec4 v = x_load4(xb + i) * rrms * w_load4(p.w_off + i);
      y_store4(r * n + i, vec4(rotate(v.x, v.y, l, j), rotate(v.z, v.w, l, j + 1u)));
    }
}
