#version 450
// LayerNorm over each row: y = (x - mean) / sqrt(var + eps) * w + b, with
// biased variance. Two passes for the statistics (mean, then the squared
// deviations), both Kahan-compensated, so rows thousands wide stay within
// ~1e-6 of a double-precision reference. Row geometry: rows.glsl.
// spec: 0 x dtype, 1 w dtype, 2 b dtype, 3 out dtype, 4 has weight,
//       5 has bias, 6 one workgroup per row, 7 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define MR_WG_ID 7
#include "rows.glsl"

MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, w, 1)
MR_TENSOR_RO(2, b, 2)
MR_TENSOR_RW(3, y, 3)
layout(constant_id = 4) const bool has_w = false;
layout(constant_id = 5) const bool has_b = false;
layout(constant_id = 6) const bool per_wg = false;

layout(push_constant) uniform Push {
  MR_ROWS_PUSH;
  uint w_off, w_step, b_off, b_step;
  float eps;
} p;

void main() {
  uint r = mr_row_id(per_wg);
  if (r >= p.rows) return;  // uniform across the workgroup when per_wg
  uvec2 base = mr_row_base(r, p.x_off, p.o_off, p.ondim, p.oshape, p.x_ostr, p.o_ostr);
  uint xb = base.x, n = p.len;
  uint i0 = per_wg ? gl_LocalInvocationID.x : 0u, di = per_wg ? WG : 1u;

  float s = 0.0, c = 0.0;
  for (uint i = i0; i < n; i += di) mr_kahan_add(s, c, x_load(xb + i * p.x_step));
  s -= c;
  if (per_wg) s = mr_wg_sum(s);
  float mean = s / float(n);

  s = 0.0;
  c = 0.0;
  for (uint i = i0; i < n; i += di) {
    float d = x_load(xb + i * p.x_step) - mean;
    mr_kahan_add(s, c, d * d);
  }
  s -= c;
  if (per_wg) s = mr_wg_sum(s);
  float rstd = 1.0 / sqrt(s / float(n) + p.eps);

  for (uint i = i0; i < n; i += di) {
    float v = (x_load(xb + i * p.x_step) - mean) * rstd;
    if (has_w) v *= w_load(p.w_off + i * p.w_step);
    if (has_b) v += b_load(p.b_off + i * p.b_step);
    y_store(base.y + i * p.o_step, v);
  }
}
