#version 450
// Softmax along one dim, max-subtracted: y = exp(x - max) / sum(exp(x - max)).
// Rows run along the softmax dim at any stride (rows.glsl), so a non-last
// dim needs no permute or copy: one row per invocation then reads
// neighbouring rows from neighbouring addresses.
// spec: 0 x dtype, 1 out dtype, 2 one workgroup per row, 3 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define MR_WG_ID 3
#include "rows.glsl"

MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RW(1, y, 1)
layout(constant_id = 2) const bool per_wg = false;

layout(push_constant) uniform Push {
  MR_ROWS_PUSH;
} p;

void main() {
  uint r = mr_row_id(per_wg);
  if (r >= p.rows) return;  // uniform across the workgroup when per_wg
  uvec2 base = mr_row_base(r, p.x_off, p.o_off, p.ondim, p.oshape, p.x_ostr, p.o_ostr);
  uint xb = base.x, n = p.len;
  uint i0 = per_wg ? gl_LocalInvocationID.x : 0u, di = per_wg ? WG : 1u;

  float m = uintBitsToFloat(0xff800000u);  // -inf
  for (uint i = i0; i < n; i += di) m = max(m, x_load(xb + i * p.x_step));
  if (per_wg) m = mr_wg_max(m);

  float s = 0.0, c = 0.0;
  for (uint i = i0; i < n; i += di) mr_kahan_add(s, c, exp(x_load(xb + i * p.x_step) - m));
  s -= c;
  if (per_wg) s = mr_wg_sum(s);
  float inv = 1.0 / s;

  for (uint i = i0; i < n; i += di) y_store(base.y + i * p.o_step, exp(x_load(xb + i * p.x_step) - m) * inv);
}
