#version 450
// 3-D convolution (cross-correlation) as an implicit GEMM:
//   out[o, n] = bias[o] + sum_k w[o, k] * im2col(x)[k, n]
// with n = (to, ho, wo) over the output positions and k = (c, dt, dh, dw)
// over the weight row [O, C, kt, kh, kw]. The im2col matrix is never built:
// each input element is gathered from x (any strides) with zero padding.
//
// Two variants, chosen by the SMEM specialization constant:
// - register-tiled (SMEM false; CPU devices such as lavapipe): no shared
//   memory, no barriers. An invocation computes 4 output channels x 4
//   consecutive output positions. It walks the kernel taps outermost, so the
//   4 input offsets and their padding masks are computed once per tap, and
//   the innermost loop over input channels is 8 loads and 16 FMAs.
// - shared-memory tiled (SMEM true; GPUs): a workgroup computes a BM x BN
//   tile (channels x positions), staging BK-deep slices of the weight rows
//   and of the gathered input in shared memory; each thread accumulates
//   TM x TN outputs strided by the workgroup shape.
// spec: 0 x dtype, 1 w dtype, 2 bias dtype, 3 out dtype, 4 SMEM, 5 HAS_BIAS,
//       6 workgroup x, 7 workgroup y, 8 BM, 9 BN, 10 BK, 11 TM, 12 TN
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 6, local_size_y_id = 7) in;
MR_TENSOR_RO(0, x, 0)
MR_TENSOR_RO(1, w, 1)
MR_TENSOR_RO(2, bias, 2)
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 4) const bool SMEM = false;
layout(constant_id = 5) const bool HAS_BIAS = false;
layout(constant_id = 8) const uint BM = 1u;
layout(constant_id = 9) const uint BN = 1u;
layout(constant_id = 10) const uint BK = 1u;
layout(constant_id = 11) const uint TM = 1u;
layout(constant_id = 12) const uint TN = 1u;

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

shared float As[BK * (BM + 1u)]; // As[k * (BM + 1) + m]: weights
shared float Bs[BK * (BN + 1u)]; // Bs[k * (BN + 1) + n]: gathered input

// Input offset of output position n at tap (dt, dh, dw); false in the padding.
bool tap_offset(uint n, uint dt, uint dh, uint dw, out uint off) {
  uint wo = n % p.Wo, r = n / p.Wo;
  uint ho = r % p.Ho, to = r / p.Ho;
  // Unsigned wrap-around turns a position in the front padding into a huge value.
  uint ti = to * p.st + dt - p.pt, hi = ho * p.sh + dh - p.ph, wi = wo * p.sw + dw - p.pw;
  off = p.x_off + ti * p.xs_t + hi * p.xs_h + wi * p.xs_w;
  return ti < p.T && hi < p.H && wi < p.W;
}

void main_reg() {
  uint N = p.To * p.Ho * p.Wo, KK = p.kt * p.kh * p.kw, K = p.C * KK;
  uint g = mr_group_id();
  uint n0 = ((g % p.tiles_n) * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * 4u;
  uint m0 = ((g / p.tiles_n) * gl_WorkGroupSize.y + gl_LocalInvocationID.y) * 4u;
  if (n0 >= N || m0 >= p.O) return;
  // Rows and positions past the end are clamped, computed and not stored.
  uint wr0 = p.w_off + min(m0, p.O - 1u) * K, wr1 = p.w_off + min(m0 + 1u, p.O - 1u) * K;
  uint wr2 = p.w_off + min(m0 + 2u, p.O - 1u) * K, wr3 = p.w_off + min(m0 + 3u, p.O - 1u) * K;
  uint na = n0, nb = min(n0 + 1u, N - 1u), nc = min(n0 + 2u, N - 1u), nd = min(n0 + 3u, N - 1u);
  vec4 acc0 = vec4(0.0), acc1 = vec4(0.0), acc2 = vec4(0.0), acc3 = vec4(0.0); // acc_j[i]: channel j, position i
  uint tap = 0u;
  for (uint dt = 0u; dt < p.kt; dt++)
    for (uint dh = 0u; dh < p.kh; dh++)
      for (uint dw = 0u; dw < p.kw; dw++, tap++) {
        uint oa, ob, oc, od;
        bool va = tap_offset(na, dt, dh, dw, oa), vb = tap_offset(nb, dt, dh, dw, ob);
        bool vc = tap_offset(nc, dt, dh, dw, oc), vd = tap_offset(nd, dt, dh, dw, od);
        if (!(va || vb || vc || vd)) continue;
        vec4 mask = vec4(va, vb, vc, vd);
        oa = va ? oa : p.x_off; ob = vb ? ob : p.x_off;
        oc = vc ? oc : p.x_off; od = vd ? od : p.x_off;
        uint wk = tap;
        for (uint c = 0u; c < p.C; c++, wk += KK) {
          uint xc = c * p.xs_c;
          vec4 xv = mask * vec4(x_load(oa + xc), x_load(ob + xc), x_load(oc + xc), x_load(od + xc));
          acc0 += w_load(wr0 + wk) * xv;
          acc1 += w_load(wr1 + wk) * xv;
          acc2 += w_load(wr2 + wk) * xv;
          acc3 += w_load(wr3 + wk) * xv;
        }
      }
  vec4 acc[4] = vec4[4](acc0, acc1, acc2, acc3);
  for (uint j = 0u; j < 4u; j++) {
    uint m = m0 + j;
    if (m >= p.O) break;
    float bv = HAS_BIAS ? bias_load(p.b_off + m) : 0.0;
    for (uint i = 0u; i < 4u; i++)
      if (n0 + i < N) o_store(m * N + n0 + i, acc[j][i] + bv);
  }
}

void main_smem() {
  uint N = p.To * p.Ho * p.Wo, KK = p.kt * p.kh * p.kw, K = p.C * KK;
  uint g = mr_group_id();
  uint n0 = (g % p.tiles_n) * BN, m0 = (g / p.tiles_n) * BM; // uniform over the workgroup
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
  uint nthreads = gl_WorkGroupSize.x * gl_WorkGroupSize.y, tid = ty * gl_WorkGroupSize.x + tx;
  float acc[TM * TN];
  for (uint i = 0u; i < TM * TN; i++) acc[i] = 0.0;
  float a[TM], b[TN];
  for (uint k0 = 0u; k0 < K; k0 += BK) {
    for (uint e = tid; e < BM * BK; e += nthreads) {
      uint r = e / BK, c = e % BK, gm = m0 + r, gk = k0 + c;
      As[c * (BM + 1u) + r] = (gm < p.O && gk < K) ? w_load(p.w_off + gm * K + gk) : 0.0;
    }
    for (uint e = tid; e < BN * BK; e += nthreads) {
      uint c = e / BN, r = e % BN, gn = n0 + r, gk = k0 + c; // neighbouring threads: neighbouring positions
      float v = 0.0;
      if (gn < N && gk < K) {
        uint ci = gk / KK, t = gk % KK;
        uint dw = t % p.kw, dh = (t / p.kw) % p.kh, dt = t / (p.kw * p.kh);
        uint off;
        if (tap_offset(gn, dt, dh, dw, off)) v = x_load(off + ci * p.xs_c);
      }
      Bs[c * (BN + 1u) + r] = v;
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
  for (uint i = 0u; i < TM; i++) {
    uint m = m0 + ty + i * gl_WorkGroupSize.y;
    if (m >= p.O) continue;
    float bv = HAS_BIAS ? bias_load(p.b_off + m) : 0.0;
    for (uint j = 0u; j < TN; j++) {
      uint n = n0 + tx + j * gl_WorkGroupSize.x;
      if (n < N) o_store(m * N + n, acc[i * TN + j] + bv);
    }
  }
}

void main() {
  if (SMEM) main_smem();
  else main_reg();
}
