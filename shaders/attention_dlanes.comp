#version 450
// Attention for CPU-type devices (lavapipe), third form: a subgroup takes SG
// query rows of one (batch item, head) and its lanes split the head dim D.
//
// attention_lanes gives each lane its own query row, so every lane fetches
// the same key and value texels (a hardware gather each, D/4 of them per key
// for keys and as many for values). Here lane l holds texels l, l + SG, ...
// of every row (query, key, value and output accumulator), so one fetch per
// lane and block of SG texels reads a whole key: a gather now serves SG
// different texels instead of one. What a lane's texels contribute to a
// score is a partial sum; a butterfly of subgroupShuffleXor (a register
// permute on lavapipe) sums the partials so that lane r ends with row r's
// score, which is the layout the softmax wants (lane r keeps row r's running
// max and sum). Keys go in blocks of SG with one rescale per block, and the
// block loop of constant length keeps the accumulators out of the masked
// updates of the variable-length key loop (matmul_lanes.comp has the costs).
//
// A workgroup is one subgroup; rows past Lq are clamped, computed and not
// stored, and every lane stays active at every shuffle. Needs the key and
// value rows to start on texels of 4 elements (the host checks), SG a power
// of two.
// spec: 0 q dtype, 1 k dtype, 2 v dtype, 3 out dtype, 4 D, 5 KL_MODE, 6 SG
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 6) in;
MR_TENSOR_RO(0, q, 0)
layout(constant_id = 1) const uint k_dt = 0u;
layout(constant_id = 2) const uint v_dt = 0u;
layout(binding = 1) uniform usamplerBuffer k_tb; // texels of 4 32-bit (f32) or 16-bit (f16, bf16) elements
layout(binding = 2) uniform usamplerBuffer v_tb;
MR_TENSOR_RW(3, o, 3)
layout(constant_id = 4) const uint D = 64u;
layout(constant_id = 5) const uint KL_MODE = 0u;
layout(constant_id = 6) const uint SG = 8u;
#include "attention_push.glsl"

const uint D4 = D / 4u;             // texels per row
const uint NB = (D4 + SG - 1u) / SG; // texels per lane and row
// a counted loop: the driver did not unroll one that halves its counter
const uint LOG2_SG = SG == 16u ? 4u : (SG == 8u ? 3u : 2u);

float to_f32(uint dt, uint u) { return dt == DT_F32 ? uintBitsToFloat(u) : mr_from16(dt, u); }
vec4 to_vec4(uint dt, uvec4 u) {
  return vec4(to_f32(dt, u.x), to_f32(dt, u.y), to_f32(dt, u.z), to_f32(dt, u.w));
}

void main() {
  uint g = mr_group_id();
  if (g >= p.n) return; // the whole subgroup
  uint lane = gl_SubgroupInvocationID;
  uint nrb = (p.Lq + SG - 1u) / SG, rb = g % nrb, bh = g / nrb, h = bh % p.H, b = bh / p.H;
  uint nk = KL_MODE == 0u ? p.Lk : (KL_MODE == 1u ? p.kl[b] : kl_buf[b]);
  uint r0 = rb * SG;

  // lane's texel t of a row: t * SG + lane, clamped (lanes past D4 hold zero queries)
  uint tx[NB];
  bool in_d[NB];
  [[unroll]] for (uint t = 0u; t < NB; t++) {
    in_d[t] = t * SG + lane < D4;
    tx[t] = min(t * SG + lane, D4 - 1u);
  }
  vec4 qv[SG * NB], acc[SG * NB]; // [row r][texel t]
  [[unroll]] for (uint r = 0u; r < SG; r++) {
    uint qb = p.q_off + b * p.q_bs + min(r0 + r, p.Lq - 1u) * p.q_rs + h * D;
    [[unroll]] for (uint t = 0u; t < NB; t++) {
      uint i = qb + 4u * tx[t];
      vec4 x = vec4(q_load(i), q_load(i + 1u), q_load(i + 2u), q_load(i + 3u)) * p.scale;
      qv[r * NB + t] = in_d[t] ? x : vec4(0.0);
      acc[r * NB + t] = vec4(0.0);
    }
  }
  float m = uintBitsToFloat(0xff800000u), l = 0.0; // lane r: row r's running max (-inf) and sum
  uint kb = (p.k_off + b * p.kv_bs + h * D) >> 2, vb = (p.v_off + b * p.kv_bs + h * D) >> 2, rs = p.kv_rs >> 2;
  for (uint j0 = 0u; j0 < nk; j0 += SG) {
    float s[SG]; // lane r: row r's scores of keys j0 .. j0 + SG - 1 (-inf past nk)
    [[unroll]] for (uint kk = 0u; kk < SG; kk++) {
      uint j = min(j0 + kk, nk - 1u);
      vec4 kt[NB];
      [[unroll]] for (uint t = 0u; t < NB; t++) kt[t] = to_vec4(k_dt, texelFetch(k_tb, int(kb + j * rs + tx[t])));
      float part[SG];
      [[unroll]] for (uint r = 0u; r < SG; r++) {
        float a = 0.0;
        [[unroll]] for (uint t = 0u; t < NB; t++) a += dot(qv[r * NB + t], kt[t]);
        part[r] = a;
      }
      // Sum the partials over the lanes so that lane r ends with row r's: each
      // round a lane keeps the half of its rows that its lane bit names and
      // trades the other half with the lane across that bit.
      [[unroll]] for (uint round = 0u; round < LOG2_SG; round++) {
        uint w = (SG / 2u) >> round;
        bool hi = (lane & w) != 0u;
        [[unroll]] for (uint i = 0u; i < w; i++) {
          float keep = hi ? part[i + w] : part[i], send = hi ? part[i] : part[i + w];
          part[i] = keep + subgroupShuffleXor(send, w);
        }
      }
      float sc = part[0];
      s[kk] = j0 + kk < nk ? sc : uintBitsToFloat(0xff800000u);
    }
    float mb = m;
    [[unroll]] for (uint kk = 0u; kk < SG; kk++) mb = max(mb, s[kk]);
    float c = exp(m - mb); // 0 the first time (m = -inf); mb is finite, key j0 is live
    l *= c;
    m = mb;
    [[unroll]] for (uint r = 0u; r < SG; r++) {
      float cr = subgroupShuffle(c, r);
      [[unroll]] for (uint t = 0u; t < NB; t++) acc[r * NB + t] *= cr;
    }
    [[unroll]] for (uint kk = 0u; kk < SG; kk++) {
      float e = exp(s[kk] - m); // 0 past nk
      l += e;
      uint j = min(j0 + kk, nk - 1u);
      vec4 vt[NB];
      [[unroll]] for (uint t = 0u; t < NB; t++) vt[t] = to_vec4(v_dt, texelFetch(v_tb, int(vb + j * rs + tx[t])));
      [[unroll]] for (uint r = 0u; r < SG; r++) {
        float er = subgroupShuffle(e, r);
        [[unroll]] for (uint t = 0u; t < NB; t++) acc[r * NB + t] += er * vt[t];
      }
    }
  }
  float inv = l > 0.0 ? 1.0 / l : 0.0; // no keys: zeros
  [[unroll]] for (uint r = 0u; r < SG; r++) {
    float ir = subgroupShuffle(inv, r);
    if (r0 + r >= p.Lq) continue;
    uint ob = p.o_off + b * p.q_bs + (r0 + r) * p.q_rs + h * D;
    [[unroll]] for (uint t = 0u; t < NB; t++) {
      if (!in_d[t]) continue;
      vec4 y = acc[r * NB + t] * ir;
      uint i = ob + 4u * tx[t];
      o_store(i, y.x);
      o_store(i + 1u, y.y);
      o_store(i + 2u, y.z);
      o_store(i + 3u, y.w);
    }
  }
}
