#version 450
// LayerNorm over each row: y = (x - mean) / sqrt(var + eps) * w + b, with
// biased variance. Two passes for the statistics (mean, then the squared
// deviations), both Kahan-compensated, so rows thousands wide stay within
// ~1e-6 of a double-precision reference. Row geometry: rows.glsl.
// The weight and bias may change with the row (a DiT's modulation, fused
// with its norm: mr_op_layer_norm_modulate): row r reads them w_rs and b_rs
// elements on per step of r % period (period 1: the same for every row), and
// w_add is added to the weight (modulate's 1 + scale).
// spec: 0 x dtype, 1 w dtype, 2 b dtype, 3 out dtype, 4 has weight,
//       5 has bias, 6 one workgroup per row, 7 workgroup size, 8 X4: four
//       elements at a time (one row per invocation, rows dense and aligned:
//       mr_rows_x4)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define MR_WG_ID 7
#include "rows.glsl"

MR_TENSOR_RO4(0, x, 0)
MR_TENSOR_RO4(1, w, 1)
MR_TENSOR_RO4(2, b, 2)
MR_TENSOR_RW4(3, y, 3)
layout(constant_id = 4) const bool has_w = false;
layout(constant_id = 5) const bool has_b = false;
layout(constant_id = 6) const bool per_wg = false;
layout(constant_id = 8) const bool X4 = false;

layout(push_constant) uniform Push {
  MR_ROWS_PUSH;
  uint w_off, w_step, b_off, b_step;
  float eps;
  uint period, w_rs, b_rs;
  float w_add;
} p;

void main() {
  uint r = mr_row_id(per_wg);
  if (r >= p.rows) return;  // uniform across the workgroup when per_wg
  uvec2 base = mr_row_base(r, p.x_off, p.o_off, p.ondim, p.oshape, p.x_ostr, p.o_ostr);
  uint xb = base.x, n = p.len, pr = r % p.period, wb = p.w_off + pr * p.w_rs, bb = p.b_off + pr * p.b_rs;
  float mean, rstd;
  if (per_wg) {
    uint i0 = gl_LocalInvocationID.x;
    float s = 0.0, c = 0.0;
    for (uint i = i0; i < n; i += WG) mr_kahan_add(s, c, x_load(xb + i * p.x_step));
    mean = mr_wg_sum(s - c) / float(n);
    s = 0.0;
    c = 0.0;
    for (uint i = i0; i < n; i += WG) {
      float d = x_load(xb + i * p.x_step) - mean;
      mr_kahan_add(s, c, d * d);
    }
    rstd = 1.0 / sqrt(mr_wg_sum(s - c) / float(n) + p.eps);
  } else {  // four partial sums (rows.glsl)
    uint n4 = n & ~3u, st = p.x_step;
    vec4 s = vec4(0.0), c = vec4(0.0);
    for (uint i = 0u; i < n4; i += 4u)
      mr_kahan_add4(s, c, MR_ROW4(xb, i, st));
    for (uint i = n4; i < n; i++) mr_kahan_add(s[i - n4], c[i - n4], x_load(xb + i * st));
    mean = mr_sum4(s, c) / float(n);
    s = vec4(0.0);
    c = vec4(0.0);
    for (uint i = 0u; i < n4; i += 4u) {
      vec4 d = MR_ROW4(xb, i, st) - mean;
      mr_kahan_add4(s, c, d * d);
    }
    for (uint i = n4; i < n; i++) {
      float d = x_load(xb + i * st) - mean;
      mr_kahan_add(s[i - n4], c[i - n4], d * d);
    }
    rstd = 1.0 / sqrt(mr_sum4(s, c) / float(n) + p.eps);
  }

  if (X4) {
    for (uint i = 0u; i < n; i += 4u) {
      vec4 v = (x_load4(xb + i) - mean) * rstd;
      if (has_w) v *= w_load4(wb + i) + p.w_add;
      if (has_b) v += b_load4(bb + i);
      y_store4(base.y + i, v);
    }
    return;
  }
  uint i0 = per_wg ? gl_LocalInvocationID.x : 0u, di = per_wg ? WG : 1u;
  for (uint i = i0; i < n; i += di) {
    float v = (x_load(xb + i * p.x_step) - mean) * rstd;
    if (has_w) v *= w_load(wb + i * p.w_step) + p.w_add;
    if (has_b) v += b_load(bb + i * p.b_step);
    y_store(base.y + i * p.o_step, v);
  }
}
