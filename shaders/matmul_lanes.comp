#version 450
// Linear layer for CPU-type devices (lavapipe), second form:
// out = x · wᵀ + bias, no shared memory, no barriers.
//
// A CPU driver runs the SG invocations of a subgroup as the lanes of one SIMD
// register, and what a load costs there decides this kernel's shape (Mesa
// lavapipe 22.3, read from the generated code): a storage-buffer load whose
// address differs per lane is a loop over the lanes with a bounds check and a
// branch each (about 20 instructions a lane); a texel-buffer fetch is one
// hardware gather for all lanes; a subgroupShuffle is one register permute.
// So x and w are bound as uniform texel buffers (usamplerBuffer; texels of 4
// elements when ALIGNED, else of 1; 32-bit for f32, 16-bit for f16/bf16), and
// the operand all lanes share is fetched once and shuffled to every lane:
// - the lanes own SG consecutive output columns (rows of w) in each of TN
//   groups; each lane fetches its own w rows.
// - the TM output rows (rows of x) are the same for all lanes. Lane l fetches
//   a piece of each x row and subgroupShuffle hands it to every lane.
// Per block of 4·SG values along K (ALIGNED) an invocation issues TM x
// fetches and SG·TN w fetches of 4 elements for 4·SG·TM·TN multiply-adds.
// Loops over lanes have constant length (unrolled): in a loop of variable
// length the driver masks every accumulator update.
//
// A workgroup is one subgroup (workgroup x = SG, y = 1 from the op), lane =
// gl_SubgroupInvocationID, and every lane must be active at each shuffle:
// rows and columns past M or N are clamped to the last one, computed and not
// stored, and no invocation returns early.
// spec: 0 x dtype, 1 w dtype, 2 bias dtype, 3 out dtype, 4 workgroup x
//       (a multiple of SG), 5 workgroup y, 6 ALIGNED (K and the x/w offsets
//       multiples of 4), 7 HAS_BIAS, 8 TM, 9 TN, 10 SG, 11 ACT
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 4, local_size_y_id = 5) in;
layout(constant_id = 0) const uint x_dt = 0u;
layout(constant_id = 1) const uint w_dt = 0u;
layout(binding = 0) uniform usamplerBuffer x_tb; // texels of 32-bit (f32) or 16-bit (f16, bf16) elements
layout(binding = 1) uniform usamplerBuffer w_tb;
MR_TENSOR_RO(2, bias, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 6) const bool ALIGNED = false;
layout(constant_id = 7) const bool HAS_BIAS = false;
layout(constant_id = 8) const uint TM = 8u;  // rows per invocation (shared by the subgroup)
layout(constant_id = 9) const uint TN = 1u;  // groups of SG columns per subgroup
layout(constant_id = 10) const uint SG = 8u; // subgroup size
layout(constant_id = 11) const uint ACT = 0u; // activation on the outputs (MR_ACT)

layout(push_constant) uniform Push {
  uint M, N, K, nbatch;
  uint x_off, w_off, b_off, o_off;
  uint x_bs, w_bs, o_bs;
  uint tiles_n, tiles_m;
  uint o_rs;
} p;

float to_f32(uint dt, uint u) { return dt == DT_F32 ? uintBitsToFloat(u) : mr_from16(dt, u); }
vec4 to_f32x4(uint dt, uvec4 u) {
  return vec4(to_f32(dt, u.x), to_f32(dt, u.y), to_f32(dt, u.z), to_f32(dt, u.w));
}
// element i (texels of one element) or texel i (texels of four: elements 4i..4i+3)
float x1(uint i) { return to_f32(x_dt, texelFetch(x_tb, int(i)).x); }
float w1(uint i) { return to_f32(w_dt, texelFetch(w_tb, int(i)).x); }
vec4 x4(uint i) { return to_f32x4(x_dt, texelFetch(x_tb, int(i))); }
vec4 w4(uint i) { return to_f32x4(w_dt, texelFetch(w_tb, int(i))); }

void main() {
  uint g = mr_group_id(), per_batch = p.tiles_n * p.tiles_m;
  uint batch = min(g / per_batch, p.nbatch - 1u); // a group past the end repeats the last one's work, unstored
  bool live = g < per_batch * p.nbatch;
  uint rem = g - (g / per_batch) * per_batch;
  uint lane = gl_SubgroupInvocationID;
  uint sub = gl_LocalInvocationID.x / SG; // subgroup index along x
  uint m0 = ((rem / p.tiles_n) * gl_WorkGroupSize.y + gl_LocalInvocationID.y) * TM;
  uint nb = ((rem % p.tiles_n) * (gl_WorkGroupSize.x / SG) + sub) * (SG * TN); // first column of the subgroup

  uint xb = p.x_off + batch * p.x_bs, wb = p.w_off + batch * p.w_bs;
  uint xr[TM], wr[TN]; // first element of each row
  [[unroll]] for (uint i = 0u; i < TM; i++) xr[i] = xb + min(m0 + i, p.M - 1u) * p.K;
  [[unroll]] for (uint j = 0u; j < TN; j++) wr[j] = wb + min(nb + j * SG + lane, p.N - 1u) * p.K;

  float acc[TM * TN]; // acc[i * TN + j]: row m0 + i, column nb + j * SG + lane
  [[unroll]] for (uint t = 0u; t < TM * TN; t++) acc[t] = 0.0;
  if (ALIGNED) {
    // in texels of 4: row starts xr/4, wr/4; K4 texels per row
    uint K4 = p.K >> 2, KB = K4 - K4 % SG, k = 0u;
    for (; k < KB; k += SG) {
      vec4 xv[TM]; // lane l: x[row, 4(k + l) .. 4(k + l) + 3]
      [[unroll]] for (uint i = 0u; i < TM; i++) xv[i] = x4((xr[i] >> 2) + k + lane);
      [[unroll]] for (uint l = 0u; l < SG; l++) {
        vec4 wv[TN];
        [[unroll]] for (uint j = 0u; j < TN; j++) wv[j] = w4((wr[j] >> 2) + k + l);
        [[unroll]] for (uint c = 0u; c < 4u; c++)
          [[unroll]] for (uint i = 0u; i < TM; i++) {
            float a = subgroupShuffle(xv[i][c], l);
            [[unroll]] for (uint j = 0u; j < TN; j++) acc[i * TN + j] += a * wv[j][c];
          }
      }
    }
    if (k < K4) { // the last K4 % SG texels; lanes past the row read its last texel, never used
      vec4 xv[TM];
      [[unroll]] for (uint i = 0u; i < TM; i++) xv[i] = x4((xr[i] >> 2) + min(k + lane, K4 - 1u));
      for (uint l = 0u; l < K4 - k; l++) {
        vec4 wv[TN];
        [[unroll]] for (uint j = 0u; j < TN; j++) wv[j] = w4((wr[j] >> 2) + k + l);
        [[unroll]] for (uint c = 0u; c < 4u; c++)
          [[unroll]] for (uint i = 0u; i < TM; i++) {
            float a = subgroupShuffle(xv[i][c], l);
            [[unroll]] for (uint j = 0u; j < TN; j++) acc[i * TN + j] += a * wv[j][c];
          }
      }
    }
  } else {
    uint KB = p.K - p.K % SG, k = 0u;
    for (; k < KB; k += SG) { // whole blocks: a loop of constant length keeps the accumulators in registers
      float xv[TM];
      [[unroll]] for (uint i = 0u; i < TM; i++) xv[i] = x1(xr[i] + k + lane);
      [[unroll]] for (uint l = 0u; l < SG; l++)
        [[unroll]] for (uint j = 0u; j < TN; j++) {
          float b = w1(wr[j] + k + l);
          [[unroll]] for (uint i = 0u; i < TM; i++) acc[i * TN + j] += subgroupShuffle(xv[i], l) * b;
        }
    }
    if (k < p.K) { // the last K % SG elements; lanes past the row read its last element, never used
      float xv[TM];
      [[unroll]] for (uint i = 0u; i < TM; i++) xv[i] = x1(xr[i] + min(k + lane, p.K - 1u));
      for (uint l = 0u; l < p.K - k; l++)
        [[unroll]] for (uint j = 0u; j < TN; j++) {
          float b = w1(wr[j] + k + l);
          [[unroll]] for (uint i = 0u; i < TM; i++) acc[i * TN + j] += subgroupShuffle(xv[i], l) * b;
        }
    }
  }

  if (!live) return;
  uint ob = p.o_off + batch * p.o_bs;
  [[unroll]] for (uint j = 0u; j < TN; j++) {
    uint n = nb + j * SG + lane;
    if (n >= p.N) continue;
    float bv = HAS_BIAS ? bias_load(p.b_off + n) : 0.0;
    [[unroll]] for (uint i = 0u; i < TM; i++)
      if (m0 + i < p.M) o_store(ob + (m0 + i) * p.o_rs + n, MR_ACT(ACT, acc[i * TN + j] + bv));
  }
}
