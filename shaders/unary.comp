#version 450
// out[i] = f(x[..]) for a strided x; the output is contiguous.
// spec: 0 x dtype, 1 out dtype, 2 op (mr_unary_op, or 15 = x * scale + bias),
//       3 workgroup size, 4 X4: a lane takes elements 4j .. 4j+3 (the host sets
//       it when x's rows are dense, a multiple of 4 long and start at multiples
//       of 4; common.glsl's *4 forms)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 3) in;
MR_TENSOR_RO4(0, x, 0)
MR_TENSOR_RW4(1, y, 1)
layout(constant_id = 2) const uint OP = 0u;
layout(constant_id = 4) const bool X4 = false;

#define OP_SILU 0u
#define OP_GELU_TANH 1u
#define OP_EXP 2u
#define OP_TANH 3u
#define OP_NEG 4u
#define OP_SQUARE 5u
#define OP_GELU 6u
#define OP_SCALE 15u

layout(push_constant) uniform Push {
  uint ndim, n, off;
  float scale, bias;
  uint shape[MR_MAX_DIMS];
  uint strides[MR_MAX_DIMS];
  uint y_off;  // the output's first element (a window of a larger output)
} p;

// tanh that neither overflows (exp of a large argument) nor loses relative
// accuracy near 0 (1 - 2/(e^2x + 1) cancels there, so a series takes over).
float mr_tanh(float x) {
  float ax = abs(x);
  if (ax < 0.0625) {
    float x2 = x * x;
    return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 - x2 * (17.0 / 315.0))));
  }
  float e = exp(-2.0 * ax);
  return sign(x) * (1.0 - e) / (1.0 + e);
}

// erfc(z) for z >= 0 with a fractional error under 1.2e-7 everywhere (the
// Chebyshev fit of Press et al.), so the exact GELU keeps its relative
// accuracy far into the negative tail, where 1 + erf(x) would cancel.
float mr_erfc_pos(float z) {
  float t = 1.0 / (1.0 + 0.5 * z);
  float r = -z * z - 1.26551223 +
            t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 +
            t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(r);
}

float f(float x) {
  if (OP == OP_SILU) return x / (1.0 + exp(-x));
  if (OP == OP_GELU_TANH) return mr_gelu_tanh(x);
  if (OP == OP_EXP) return exp(x);
  if (OP == OP_TANH) return mr_tanh(x);
  if (OP == OP_NEG) return -x;
  if (OP == OP_SQUARE) return x * x;
  if (OP == OP_GELU) {  // 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2)
    float q = mr_erfc_pos(abs(x) * 0.7071067811865476);
    return x >= 0.0 ? x - 0.5 * x * q : 0.5 * x * q;
  }
  return x * p.scale + p.bias;
}

void main() {
  uint i = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (X4) {
    i *= 4u;
    if (i >= p.n) return;
    vec4 x = x_load4(p.off + mr_strided(i, p.ndim, p.shape, p.strides));
    y_store4(p.y_off + i, vec4(f(x.x), f(x.y), f(x.z), f(x.w)));
    return;
  }
  if (i >= p.n) return;
  y_store(p.y_off + i, f(x_load(p.off + mr_strided(i, p.ndim, p.shape, p.strides))));
}
