// Shared by the row-wise kernels (layer_norm, rms_norm, softmax, reduce).
//
// A "row" is the run of elements along the reduced dim; every other dim is an
// outer dim. The host merges outer dims where it can (engine/ops/op_rows.c)
// and passes at most 4 of them. Row r starts at
//   x_off + sum_k c_k * x_ostr[k]   in the input  and
//   o_off + sum_k c_k * o_ostr[k]   in the output,
// where c is r unravelled over oshape; element i of the row is x_step * i
// (input) and o_step * i (output) further on.
//
// Two kernel shapes, chosen by the host per device:
//  - per_wg false: one row per invocation, no barriers (CPU devices; many
//    short rows; non-last dims where neighbouring rows are adjacent in memory);
//  - per_wg true: one workgroup per row, each invocation strides over the row
//    and the partial results meet in a shared-memory tree (long rows on GPUs).
//
// Before including: declare the push block `p` with MR_ROWS_PUSH first, and
// #define MR_WG_ID (the constant_id of the workgroup size, a power of two).
#define MR_ROWS_PUSH                 \
  uint rows, len, x_off, x_step, o_step, ondim; \
  uint oshape[4];                    \
  uint x_ostr[4];                    \
  uint o_ostr[4];                    \
  uint o_off

layout(local_size_x_id = MR_WG_ID) in;
layout(constant_id = MR_WG_ID) const uint WG = 64u;
shared float mr_red[WG];

// Start of row r in the input (x) and the output (y), from their first
// elements x_off and o_off.
uvec2 mr_row_base(uint r, uint x_off, uint o_off, uint ondim, uint oshape[4], uint x_ostr[4], uint o_ostr[4]) {
  uvec2 b = uvec2(x_off, o_off);
  for (int d = int(ondim) - 1; d >= 0; d--) {
    uint c = r % oshape[d];
    r /= oshape[d];
    b += c * uvec2(x_ostr[d], o_ostr[d]);
  }
  return b;
}

// Compensated (Kahan) accumulation: s += v, keeping the lost low bits in c.
// `precise` stops the compiler from reassociating the correction away.
// mr_kahan_add4 does it on four partial sums at once: a kernel with one row
// per invocation sums element i into partial i % 4 and adds them at the end
// (mr_sum4), whether it loads four elements at a time (X4) or one: both
// forms give the same bits, so a strided row equals its compact copy.
#define MR_KAHAN_ADD(NAME, T)                 \
  void NAME(inout T s, inout T c, T v) {      \
    precise T y = v - c;                      \
    precise T t = s + y;                      \
    precise T e = (t - s) - y;                \
    c = e;                                    \
    s = t;                                    \
  }
MR_KAHAN_ADD(mr_kahan_add, float)
MR_KAHAN_ADD(mr_kahan_add4, vec4)

// Elements i .. i+3 of the row at xb, x_step apart: one 16-byte load in the
// X4 form, four loads in the other (a macro: the kernel declares x and X4).
#define MR_ROW4(xb, i, st)                                                                   \
  (X4 ? x_load4((xb) + (i))                                                                  \
      : vec4(x_load((xb) + (i) * (st)), x_load((xb) + ((i) + 1u) * (st)), x_load((xb) + ((i) + 2u) * (st)), \
             x_load((xb) + ((i) + 3u) * (st))))

float mr_sum4(vec4 s, vec4 c) {
  s -= c;
  return (s.x + s.y) + (s.z + s.w);
}

// OUT = the mean of the squares of the n elements of the row at xb, st
// apart, in four partial sums (one row per invocation; rms_norm, rms_rope;
// a macro: the kernel declares x and X4).
#define MR_ROW_MEAN_SQUARES(xb, n, st, OUT)                                    \
  {                                                                            \
    vec4 s_ = vec4(0.0), c_ = vec4(0.0);                                       \
    uint n4_ = (n) & ~3u;                                                      \
    for (uint i_ = 0u; i_ < n4_; i_ += 4u) {                                   \
      vec4 v_ = MR_ROW4(xb, i_, st);                                           \
      mr_kahan_add4(s_, c_, v_ * v_);                                          \
    }                                                                          \
    for (uint i_ = n4_; i_ < (n); i_++) {                                      \
      float v_ = x_load((xb) + i_ * (st));                                     \
      mr_kahan_add(s_[i_ - n4_], c_[i_ - n4_], v_ * v_);                       \
    }                                                                          \
    OUT = mr_sum4(s_, c_) / float(n);                                          \
  }

// Sum / max of one value per invocation over the workgroup. Every invocation
// must call these (they contain barriers) and gets the result.
float mr_wg_sum(float v) {
  uint t = gl_LocalInvocationID.x;
  mr_red[t] = v;
  barrier();
  for (uint k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) mr_red[t] += mr_red[t + k];
    barrier();
  }
  float r = mr_red[0];
  barrier();  // mr_red is reused by the next reduction
  return r;
}

float mr_wg_max(float v) {
  uint t = gl_LocalInvocationID.x;
  mr_red[t] = v;
  barrier();
  for (uint k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) mr_red[t] = max(mr_red[t], mr_red[t + k]);
    barrier();
  }
  float r = mr_red[0];
  barrier();
  return r;
}

// The row this invocation (per_wg false) or workgroup (per_wg true) handles.
uint mr_row_id(bool per_wg) {
  return per_wg ? mr_group_id() : mr_group_id() * WG + gl_LocalInvocationID.x;
}
