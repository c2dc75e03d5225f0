#version 450
// RMSNorm over each row: y = x / sqrt(mean(x^2) + eps) * w. The sum of
// squares is Kahan-compensated. Row geometry: rows.glsl.
// spec: 0 x dtype, 1 w dtype, 2 out dtype, 3 has weight, 4 one workgroup per
//       row, 5 workgroup size, 6 X4: four elements at a time (one row per
//       invocation, rows dense and aligned: mr_rows_x4)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define MR_WG_ID 5
#include "rows.glsl"

MR_TENSOR_RO4(0, x, 0)
MR_TENSOR_RO4(1, w, 1)
MR_TENSOR_RW4(2, y, 2)
layout(constant_id = 3) const bool has_w = false;
layout(constant_id = 4) const bool per_wg = false;
layout(constant_id = 6) const bool X4 = false;

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
  float rrms;
  if (per_wg) {
    float s = 0.0, c = 0.0;
    for (uint i = gl_LocalInvocationID.x; i < n; i += WG) {
      float v = x_load(xb + i * p.x_step);
      mr_kahan_add(s, c, v * v);
    }
    rrms = 1.0 / sqrt(mr_wg_sum(s - c) / float(n) + p.eps);
  } else {  // four partial sums (rows.glsl)
    float ms;
    MR_ROW_MEAN_SQUARES(xb, n, p.x_step, ms);
    rrms = 1.0 / sqrt(ms + p.eps);
  }

  if (X4) {
    for (uint i = 0u; i < n; i += 4u) {
      vec4 v = x_load4(xb + i) * rrms;
      if (has_w) v *= w_load4(p.w_off + i);
      y_store4(base.y + i, v);
    }
    return;
  }
  uint i0 = per_wg ? gl_LocalInvocationID.x : 0u, di = per_wg ? WG : 1u;
  for (uint i = i0; i < n; i += di) {
    float v = x_load(xb + i * p.x_step) * rrms;
    if (has_w) v *= w_load(p.w_off + i * p.w_step);
    y_store(base.y + i * p.o_step, v);
  }
}
