// The walk shared by attention_reg.comp and attention_lanes.comp, which
// differ only in how they read: one invocation per (query row, head, batch
// item), no shared memory and no barriers. The query row (pre-scaled) and a
// D-sized f32 output accumulator live in private memory; the keys are walked
// once with an online softmax (running max m and sum l; the accumulator is
// rescaled only when the max grows). Neighbouring invocations are
// neighbouring query rows of one head, so they read the same K/V rows.
// q, o: [B, Lq, H, D]; k, v: [B, Lk, H, D]; heads contiguous, items and rows
// at the strides in the push constants (a window of a larger tensor).
//
// Before including: the output o (MR_TENSOR_RW), the constants D and KL_MODE
// (0 all keys, 1 lengths in push constants, 2 lengths in the buffer at
// binding 4), and q4(i), k4(i), v4(i): elements i .. i+3 of q, k, v.
#include "attention_push.glsl"

const uint D4 = D / 4u;

void main() {
  uint id = mr_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (id >= p.n) return;
  uint row = id % p.Lq, bh = id / p.Lq, h = bh % p.H, b = bh / p.H;
  uint nk = KL_MODE == 0u ? p.Lk : (KL_MODE == 1u ? p.kl[b] : kl_buf[b]);
  uint ob = p.o_off + b * p.q_bs + row * p.q_rs + h * D;

  vec4 qv[D4], acc[D4];
  uint qb = p.q_off + b * p.q_bs + row * p.q_rs + h * D;
  for (uint d = 0u; d < D4; d++) {
    qv[d] = q4(qb + 4u * d) * p.scale;
    acc[d] = vec4(0.0);
  }
  float m = uintBitsToFloat(0xff800000u), l = 0.0; // m = -inf
  uint kstep = p.kv_rs;
  uint kb = p.k_off + b * p.kv_bs + h * D, vb = p.v_off + b * p.kv_bs + h * D;
  for (uint j = 0u; j < nk; j++, kb += kstep, vb += kstep) {
    float s = 0.0;
    for (uint d = 0u; d < D4; d++) s += dot(qv[d], k4(kb + 4u * d));
    if (s > m) { // a new max: rescale what is summed so far (exp(-inf) = 0 the first time)
      float c = exp(m - s);
      l *= c;
      for (uint d = 0u; d < D4; d++) acc[d] *= c;
      m = s;
    }
    float e = exp(s - m);
    l += e;
    for (uint d = 0u; d < D4; d++) acc[d] += e * v4(vb + 4u * d);
  }
  float inv = l > 0.0 ? 1.0 / l : 0.0; // no keys: zeros
  for (uint d = 0u; d < D4; d++) {
    vec4 r = acc[d] * inv;
    for (uint c = 0u; c < 4u; c++) o_store(ob + 4u * d + c, r[c]);
  }
}
