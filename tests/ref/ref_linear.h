/* Plain CPU references for the linear-algebra ops (matmul, attention), used
   by the op tests and the benchmark. Host f32 arrays, row-major, contiguous;
   sums in double. Deliberately naive: they define the result, not the speed. */
#ifndef MR_REF_LINEAR_H
#define MR_REF_LINEAR_H

#include <stdbool.h>
#include <stdint.h>

/* out[b, m, n] = sum_k x[b, m, k] * w[b', n, k] + bias[n], for b < batch,
   m < M, n < N. x is [batch, M, K]; w is [N, K] (w_batched false, shared by
   every b) or [batch, N, K] (w_batched true); bias is [N] or NULL; out is
   [batch, M, N]. FLOPs: 2 * batch * M * N * K. */
void mr_ref_matmul(const float *x, const float *w, const float *bias, float *out, int64_t batch, int64_t M,
                   int64_t N, int64_t K, bool w_batched);

/* Multi-head attention with a softmax over each full row of scores.
   q and out are [B, Lq, H, D]; k and v are [B, Lk, H, D]. scale multiplies
   q·k (pass 1/sqrt(D) for the usual). k_lens (NULL = all keys) gives per
   batch item the number of keys attended; a row with no keys is zeros.
   FLOPs: 4 * B * H * Lq * Lk * D. Returns false when out of host memory. */
bool mr_ref_attention(const float *q, const float *k, const float *v, float *out, int64_t B, int64_t Lq,
                      int64_t Lk, int64_t H, int64_t D, float scale, const int32_t *k_lens);

#endif
