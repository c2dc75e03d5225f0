/* CPU references for matmul and attention: the obvious loops, in double. */
#include "ref_linear.h"

#include <math.h>
#include <stdlib.h>

void mr_ref_matmul(const float *x, const float *w, const float *bias, float *out, int64_t batch, int64_t M,
                   int64_t N, int64_t K, bool w_batched) {
  for (int64_t b = 0; b < batch; b++) {
    const float *xb = x + b * M * K, *wb = w + (w_batched ? b * N * K : 0);
    float *ob = out + b * M * N;
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        double s = bias ? bias[n] : 0.0;
        for (int64_t k = 0; k < K; k++) s += (double)xb[m * K + k] * wb[n * K + k];
        ob[m * N + n] = (float)s;
      }
  }
}

bool mr_ref_attention(const float *q, const float *k, const float *v, float *out, int64_t B, int64_t Lq,
                      int64_t Lk, int64_t H, int64_t D, float scale, const int32_t *k_lens) {
  double *p = malloc((size_t)(Lk > 0 ? Lk : 1) * sizeof *p);
  double *acc = malloc((size_t)D * sizeof *acc);
  if (!p || !acc) {
    free(p);
    free(acc);
    return false;
  }
  for (int64_t b = 0; b < B; b++) {
    int64_t n = Lk;
    if (k_lens) n = k_lens[b] < 0 ? 0 : (k_lens[b] < Lk ? k_lens[b] : Lk);
    for (int64_t i = 0; i < Lq; i++)
      for (int64_t h = 0; h < H; h++) {
        const float *qr = q + ((b * Lq + i) * H + h) * D;
        float *o = out + ((b * Lq + i) * H + h) * D;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; j++) {
          const float *kr = k + ((b * Lk + j) * H + h) * D;
          double s = 0;
          for (int64_t d = 0; d < D; d++) s += (double)qr[d] * kr[d];
          p[j] = s * scale;
          if (p[j] > mx) mx = p[j];
        }
        for (int64_t d = 0; d < D; d++) acc[d] = 0;
        for (int64_t j = 0; j < n; j++) {
          double e = exp(p[j] - mx);
          sum += e;
          const float *vr = v + ((b * Lk + j) * H + h) * D;
          for (int64_t d = 0; d < D; d++) acc[d] += e * vr[d];
        }
        for (int64_t d = 0; d < D; d++) o[d] = n > 0 ? (float)(acc[d] / sum) : 0.0f;
      }
  }
  free(p);
  free(acc);
  return true;
}
