#version 450
// Linear layer for GPUs: out = x · wᵀ + bias, shared-memory tiled. A
// workgroup computes a BM x BN output tile, walking K in steps of BK: the
// x and w tiles are staged in shared memory (stored k-major, padded by one
// word per row against bank conflicts), then each thread accumulates a
// TM x TN block whose rows and columns are strided by the workgroup shape,
// so neighbouring threads read neighbouring shared words and write
// neighbouring outputs. Out-of-range elements load as zero.
// spec: 0 x dtype, 1 w dtype, 2 bias dtype, 3 out dtype, 4 BM, 5 BN, 6 BK,
//       7 TM, 8 TN, 9 HAS_BIAS, 10 workgroup x (= BN / TN), 11 workgroup y (= BM / TM), 12 ACT
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 10, local_size_y_id = 11) in;
MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, w, 1)
MR_TENSOR_RO(2, bias, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 4) const uint BM = 64u;
layout(constant_id = 5) const uint BN = 64u;
layout(constant_id = 6) const uint BK = 16u;
layout(constant_id = 7) const uint TM = 4u;
layout(constant_id = 8) const uint TN = 4u;
layout(constant_id = 9) const bool HAS_BIAS = false;
layout(constant_id = 12) const uint ACT = 0u; // activation on the outputs (MR_ACT)

layout(push_constant) uniform Push {
  uint M, N, K, nbatch;
  uint x_off, w_off, b_off, o_off;
  uint x_bs, w_bs, o_bs;
  uint tiles_n, tiles_m;
  uint o_rs;                  // output row stride (N unless a chunk of the columns)
} p;

shared float As[BK * (BM + 1u)]; // As[k * (BM + 1) + m]
shared float Bs[BK * (BN + 1u)]; // Bs[k * (BN + 1) + n]

void main() {
  uint g = mr_group_id(), per_batch = p.tiles_n * p.tiles_m;
  uint batch = g / per_batch; // uniform over the workgroup: returning keeps barriers legal
  if (batch >= p.nbatch) return;
  uint rem = g - batch * per_batch;
  uint m0 = (rem / p.tiles_n) * BM, n0 = (rem % p.tiles_n) * BN;
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
  uint nthreads = gl_WorkGroupSize.x * gl_WorkGroupSize.y, tid = ty * gl_WorkGroupSize.x + tx;
  uint xb = p.x_off + batch * p.x_bs, wb = p.w_off + batch * p.w_bs;

  float acc[TM * TN];
  for (uint i = 0u; i < TM * TN; i++) acc[i] = 0.0;
  float a[TM], b[TN];

  for (uint k0 = 0u; k0 < p.K; k0 += BK) {
    for (uint e = tid; e < BM * BK; e += nthreads) {
      uint r = e / BK, c = e % BK, gr = m0 + r, gk = k0 + c;
      As[c * (BM + 1u) + r] = (gr < p.M && gk < p.K) ? x_load(xb + gr * p.K + gk) : 0.0;
    }
    for (uint e = tid; e < BN * BK; e += nthreads) {
      uint r = e / BK, c = e % BK, gr = n0 + r, gk = k0 + c;
      Bs[c * (BN + 1u) + r] = (gr < p.N && gk < p.K) ? w_load(wb + gr * p.K + gk) : 0.0;
    }
    barrier();
    for (uint kk = 0u; kk < BK; kk++) {
      for (uint i = 0u; i < TM; i++) a[i] = As[kk * (BM + 1u) + ty + i * gl_WorkGroupSize.y];
      for (uint j = 0u; j < TN; j++) b[j] = Bs[kk * (BN + 1u) + tx + j * gl_WorkGroupSize.x];
      for (uint i = 0u; i < TM; i++)
        for (uint j = 0u; j < TN; j++) acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]);
    }
    barrier();
  }

  uint ob = p.o_off + batch * p.o_bs;
  for (uint j = 0u; j < TN; j++) {
    uint col = n0 + tx + j * gl_WorkGroupSize.x;
    if (col >= p.N) continue;
    float bv = HAS_BIAS ? bias_load(p.b_off + col) : 0.0;
    for (uint i = 0u; i < TM; i++) {
      uint row = m0 + ty + i * gl_WorkGroupSize.y;
      if (row < p.M) o_store(ob + row * p.o_rs + col, MR_ACT(ACT, acc[i * TN + j] + bv));
    }
  }
}
