#version 450
// Sum, mean or max along one dim (rows.glsl); one output element per row,
// written at the row's output base. Sums are Kahan-compensated.
// spec: 0 x dtype, 1 out dtype, 2 op (mr_reduce_op), 3 one workgroup per row,
//       4 workgroup size
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define MR_WG_ID 4
#include "rows.glsl"

MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RW(1, y, 1)
layout(constant_id = 2) const uint OP = 0u;
layout(constant_id = 3) const bool per_wg = false;

#define OP_SUM 0u
#define OP_MEAN 1u
#define OP_MAX 2u

layout(push_constant) uniform Push {
  MR_ROWS_PUSH;
} p;

void main() {
  uint r = mr_row_id(per_wg);
  if (r >= p.rows) return;  // uniform across the workgroup when per_wg
  uvec2 base = mr_row_base(r, p.x_off, p.o_off, p.ondim, p.oshape, p.x_ostr, p.o_ostr);
  uint xb = base.x, n = p.len;
  uint i0 = per_wg ? gl_LocalInvocationID.x : 0u, di = per_wg ? WG : 1u;

  float v;
  if (OP == OP_MAX) {
    v = uintBitsToFloat(0xff800000u);  // -inf
    for (uint i = i0; i < n; i += di) v = max(v, x_load(xb + i * p.x_step));
    if (per_wg) v = mr_wg_max(v);
  } else {
    float s = 0.0, c = 0.0;
    for (uint i = i0; i < n; i += di) mr_kahan_add(s, c, x_load(xb + i * p.x_step));
    v = s - c;
    if (per_wg) v = mr_wg_sum(v);
    if (OP == OP_MEAN) v /= float(n);
  }
  if (!per_wg || gl_LocalInvocationID.x == 0u) y_store(base.y, v);
}
