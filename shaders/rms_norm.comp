#version 450
// RMSNorm over each row: y = x / sqrt(mean(x^2) + eps) * w. The sum of
// squares is Kahan-compensated. Row geometry: rows.glsl.
// spec: 0 x dtype, 1 w dtype, 2 out dtype, 3 has weight, 4 one workgroup per
//       row, 5 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define MR_WG_ID 5
#include "rows.glsl"

MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, w, 1)
MR_TENSOR_RW(2, y, 2)
layout(constant_id = 3) const bool has_w = false;
layout(constant_id = 4) const bool per_wg = false;

layout(push_constant) uniform Push {
  MR_ROWS_PUSH;
  uint w_off, w_step, unused_b_off, unused_b_step;  // layer_norm's layout (one host struct)
  float eps;
} p;

void main() {
  uint r = mr_row_id(per_wg);
  if (r >= p.rows) return;  // uniform across the workgroup when per_wg
  uvec2 base = mr_row_base(r, p.x_off, p.o_off, p.ondim, p.oshape, p.x_ostr, p.o_ostr);
  uint xb = base.x, n = p.len;
  uint i0 = per_wg ? gl_LocalInvocationID.x : 0u, di = per_wg ? WG : 1u;

  float s = 0.0, c = 0.0;
  for (uint i = i0; i < n; i += di) {
    float v = x_load(xb + i * p.x_step);
    mr_kahan_add(s, c, v * v);
  }
  s -= c;
  if (per_wg) s = mr_wg_sum(s);
  float rrms = 1.0 / sqrt(s / float(n) + p.eps);

  for (uint i = i0; i < n; i += di) {
    float v = x_load(xb + i * p.x_step) * rrms;
    if (has_w) v *= w_load(p.w_off + i * p.w_step);
    y_store(base.y + i * p.o_step, v);
  }
}
