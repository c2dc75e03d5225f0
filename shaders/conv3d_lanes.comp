#version 450
// 3-D convolution (cross-correlation) for CPU-type devices (lavapipe), second
// form: the implicit GEMM of conv3d.comp,
//   out[o, n] = bias[o] + sum over (c, dt, dh, dw) of w[o, c, dt, dh, dw] * x[c, at tap (dt, dh, dw) of n]
// with the loads shaped for a CPU driver (see matmul_lanes.comp for the
// measured costs): x and w are uniform texel buffers (one fetch is one
// hardware gather), and the weights, which all lanes share, are fetched once
// and passed around the register with subgroupShuffle.
// - the lanes of a subgroup own SG consecutive output positions, TN such
//   groups per subgroup; each lane fetches its own input values (with a
//   stride-1 conv, neighbouring lanes read neighbouring elements of a row).
// - the TM output channels are the same for the whole subgroup: for a block
//   of SG input channels, lane l fetches w[o, c0 + l, tap] for each of the TM
//   channels and the shuffles hand every value to every lane.
// The kernel taps are the outer loop (one loop, not three), so each
// position's input offset and padding mask are computed once per tap; per tap and block of SG input
// channels an invocation issues TM weight fetches and SG·TN input fetches for
// SG·TM·TN multiply-adds.
//
// A workgroup is one subgroup (workgroup x = SG, y = 1 from the op), lane =
// gl_SubgroupInvocationID, and every lane must be active at each shuffle:
// channels and positions past the end are clamped to the last one, computed
// and not stored, and no invocation returns early.
// spec: 0 x dtype, 1 w dtype, 2 bias dtype, 3 out dtype, 4 HAS_BIAS,
//       5 workgroup x (a multiple of SG), 6 workgroup y, 7 TM, 8 TN, 9 SG
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 5, local_size_y_id = 6) in;
layout(constant_id = 0) const uint x_dt = 0u;
layout(constant_id = 1) const uint w_dt = 0u;
layout(binding = 0) uniform usamplerBuffer x_tb; // texels of one 32-bit (f32) or 16-bit (f16, bf16) element
layout(binding = 1) uniform usamplerBuffer w_tb;
MR_TENSOR_RO(2, bias, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 4) const bool HAS_BIAS = false;
layout(constant_id = 7) const uint TM = 8u;  // output channels per invocation (shared by the subgroup)
layout(constant_id = 8) const uint TN = 1u;  // groups of SG positions per subgroup
layout(constant_id = 9) const uint SG = 8u;  // subgroup size

layout(push_constant) uniform Push {
  uint C, T, H, W;             // input sizes
  uint O, To, Ho, Wo;          // output sizes
  uint kt, kh, kw;
  uint st, sh, sw;             // strides
  uint pt, ph, pw;             // zero padding in front of each axis
  uint xs_c, xs_t, xs_h, xs_w; // input strides (elements)
  uint x_off, w_off, b_off;
  uint tiles_n;                // workgroups along the positions
} p;

float to_f32(uint dt, uint u) { return dt == DT_F32 ? uintBitsToFloat(u) : mr_from16(dt, u); }
float x1(uint i) { return to_f32(x_dt, texelFetch(x_tb, int(i)).x); }
float w1(uint i) { return to_f32(w_dt, texelFetch(w_tb, int(i)).x); }

void main() {
  uint N = p.To * p.Ho * p.Wo, KK = p.kt * p.kh * p.kw, K = p.C * KK;
  uint g = mr_group_id();
  uint lane = gl_SubgroupInvocationID, sub = gl_LocalInvocationID.x / SG;
  uint nb = ((g % p.tiles_n) * (gl_WorkGroupSize.x / SG) + sub) * (SG * TN); // first position of the subgroup
  uint m0 = ((g / p.tiles_n) * gl_WorkGroupSize.y + gl_LocalInvocationID.y) * TM;
  bool live = g < gl_NumWorkGroups.x * gl_NumWorkGroups.y && m0 < p.O; // (grid padding repeats work, unstored)

  uint wr[TM]; // weight row of each output channel
  [[unroll]] for (uint i = 0u; i < TM; i++) wr[i] = p.w_off + min(m0 + i, p.O - 1u) * K;
  uint to[TN], ho[TN], wo[TN];
  [[unroll]] for (uint j = 0u; j < TN; j++) {
    uint n = min(nb + j * SG + lane, N - 1u);
    wo[j] = n % p.Wo;
    uint r = n / p.Wo;
    ho[j] = r % p.Ho;
    to[j] = r / p.Ho;
  }

  float acc[TM * TN]; // acc[i * TN + j]: channel m0 + i, position nb + j * SG + lane
  [[unroll]] for (uint t = 0u; t < TM * TN; t++) acc[t] = 0.0;
  for (uint tap = 0u; tap < KK; tap++) { // one loop over the taps (each loop level of variable length costs mask updates)
    uint dw = tap % p.kw, dh = (tap / p.kw) % p.kh, dt = tap / (p.kw * p.kh);
    uint off[TN];
    bool valid[TN];
    [[unroll]] for (uint j = 0u; j < TN; j++) {
      // unsigned wrap-around turns a position in the front padding into a huge value
      uint ti = to[j] * p.st + dt - p.pt, hi = ho[j] * p.sh + dh - p.ph, wi = wo[j] * p.sw + dw - p.pw;
      valid[j] = ti < p.T && hi < p.H && wi < p.W;
      off[j] = valid[j] ? p.x_off + ti * p.xs_t + hi * p.xs_h + wi * p.xs_w : p.x_off;
    }
    for (uint c0 = 0u; c0 < p.C; c0 += SG) {
      // the last block may pass C: its weights and inputs there are zero (a loop of constant
      // length keeps the accumulators in registers; one of variable length masks every update)
      float wv[TM]; // lane l: w[channel, c0 + l, tap]
      bool cin = c0 + lane < p.C;
      uint wc = min(c0 + lane, p.C - 1u) * KK + tap;
      [[unroll]] for (uint i = 0u; i < TM; i++) {
        float v = w1(wr[i] + wc);
        wv[i] = cin ? v : 0.0;
      }
      [[unroll]] for (uint l = 0u; l < SG; l++) {
        bool cok = c0 + l < p.C;
        uint xc = min(c0 + l, p.C - 1u) * p.xs_c;
        float xv[TN];
        [[unroll]] for (uint j = 0u; j < TN; j++) {
          float v = x1(off[j] + xc);
          xv[j] = valid[j] && cok ? v : 0.0;
        }
        [[unroll]] for (uint i = 0u; i < TM; i++) {
          float a = subgroupShuffle(wv[i], l);
          [[unroll]] for (uint j = 0u; j < TN; j++) acc[i * TN + j] += a * xv[j];
        }
      }
    }
  }

  if (!live) return;
  [[unroll]] for (uint j = 0u; j < TN; j++) {
    uint n = nb + j * SG + lane;
    if (n >= N) continue;
    [[unroll]] for (uint i = 0u; i < TM; i++) {
      uint m = m0 + i;
      if (m >= p.O) break;
      float bv = HAS_BIAS ? bias_load(p.b_off + m) : 0.0;
      o_store(m * N + n, acc[i * TN + j] + bv);
    }
  }
}
