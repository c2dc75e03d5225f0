/* Wan 2.2 VAE extras (docs/wan-architecture.md §3.2), all weightless and
   written as strided copies between views:
   - 2x2 patchify / unpatchify of the pixels (channel c*4 + r*2 + q, q the
     row offset, r the column offset);
   - AvgDown3D: space/time-to-channel, then the mean of channel groups;
   - DupUp3D: channel repeat, then channel-to-space/time. */
#include "models/wan_vae.h"

/* x[c0 : c0 + nc*cstep : cstep, t0 :: ft, h0 :: fh, w0 :: fw] as a view. */
static mr_tensor *sub_view(mr_scope *s, const mr_tensor *x, int64_t c0, int64_t nc, int64_t cstep, int64_t t0,
                           int64_t ft, int64_t h0, int64_t fh, int64_t w0, int64_t fw) {
  if (!x) return NULL;
  const int64_t *xs = mr_tensor_shape(x);
  mr_tensor *v = sc_slice_step(s, x, 0, c0, c0 + (nc - 1) * cstep + 1, cstep);
  v = sc_slice_step(s, v, 1, t0, xs[1], ft);
  v = sc_slice_step(s, v, 2, h0, xs[2], fh);
  return sc_slice_step(s, v, 3, w0, xs[3], fw);
}

mr_tensor *mr_vae_patchify(mr_scope *s, const mr_tensor *x) {
  if (!x) return NULL;
  MR_ASSERT(mr_tensor_shape(x)[0] == 3);
  size_t mark = mr_scope_mark(s);
  const mr_tensor *parts[12];
  for (int c = 0; c < 3; c++)
    for (int r = 0; r < 2; r++)
      for (int q = 0; q < 2; q++) parts[c * 4 + r * 2 + q] = sub_view(s, x, c, 1, 1, 0, 1, q, 2, r, 2);
  return mr_scope_collect(s, mark, sc_concat(s, parts, 12, 0), NULL);
}

void mr_vae_unpatchify_into(mr_scope *s, const mr_tensor *x, mr_tensor *dst) {
  if (!x) return;
  size_t mark = mr_scope_mark(s);
  int64_t C = mr_tensor_shape(x)[0] / 4;
  for (int64_t c = 0; c < C; c++)
    for (int r = 0; r < 2; r++)
      for (int q = 0; q < 2; q++) {
        int64_t i = c * 4 + r * 2 + q;
        sc_copy(s, sub_view(s, dst, c, 1, 1, 0, 1, q, 2, r, 2), sc_slice(s, x, 0, i, i + 1));
      }
  mr_scope_collect(s, mark, NULL, NULL);
}

/* AvgDown3D: front-pad time with zeros to a multiple of ft; channel
   c*F + s (F = ft*fs*fs, s = it*fs*fs + ih*fs + iw) holds x[c, t*ft+it, h*fs+ih, w*fs+iw];
   output channel o is the mean of channels [o*g, (o+1)*g), g = in*F/out.
   With F = k*g, output channel c*k + kk averages sub-positions [kk*g, (kk+1)*g) of channel c. */
mr_tensor *mr_vae_avg_down(mr_scope *s, const mr_tensor *x, int in, int out, int ft, int fs) {
  if (!x) return NULL;
  int F = ft * fs * fs, g = in * F / out, k = F / g;
  const int64_t *xs = mr_tensor_shape(x);
  int64_t T = xs[1], padt = (ft - T % ft) % ft;
  int64_t To = (T + padt) / ft, Ho = xs[2] / fs, Wo = xs[3] / fs;
  MR_ASSERT(k <= 8);
  size_t mark = mr_scope_mark(s);
  const mr_tensor *xp = padt ? sc_pad(s, x, (int64_t[8]){0, 0, padt, 0, 0, 0, 0, 0}, 0.0f) : x;
  const mr_tensor *means[8];
  for (int kk = 0; kk < k; kk++) {
    size_t m = mr_scope_mark(s);
    mr_tensor *acc = NULL;
    for (int j = 0; j < g; j++) {
      int sp = kk * g + j, it = sp / (fs * fs), ih = (sp / fs) % fs, iw = sp % fs;
      size_t mj = mr_scope_mark(s);
      mr_tensor *v = sub_view(s, xp, 0, in, 1, it, ft, ih, fs, iw, fs);
      acc = mr_scope_collect(s, mj, j ? sc_add(s, acc, v) : sc_contiguous(s, v), acc); /* the sum so far */
    }
    mr_tensor *mean = sc_reshape(s, sc_scale(s, acc, 1.0f / (float)g, 0.0f), 3, (int64_t[]){in, 1, To * Ho * Wo});
    means[kk] = mr_scope_collect(s, m, mean, NULL);
  }
  /* [in, k, N] is [out, To, Ho, Wo] */
  mr_tensor *y = k > 1 ? sc_concat(s, means, k, 1) : (mr_tensor *)means[0];
  return mr_scope_collect(s, mark, sc_reshape(s, y, 4, (int64_t[]){out, To, Ho, Wo}), NULL);
}

/* DupUp3D: repeat each channel rep = out*F/in times; channel o*F + s of the
   result goes to [o, t*ft+it, h*fs+ih, w*fs+iw]. With F = k*rep that is input
   channel o*k + s/rep. */
mr_tensor *mr_vae_dup_up(mr_scope *s, const mr_tensor *x, int in, int out, int ft, int fs, bool first_chunk) {
  if (!x) return NULL;
  int F = ft * fs * fs, rep = out * F / in, k = F / rep;
  const int64_t *xs = mr_tensor_shape(x);
  int64_t T = xs[1] * ft;
  size_t mark = mr_scope_mark(s);
  mr_tensor *full = sc_empty(s, MR_F32, 4, (int64_t[]){out, T, xs[2] * fs, xs[3] * fs});
  for (int sp = 0; sp < F; sp++) {
    int it = sp / (fs * fs), ih = (sp / fs) % fs, iw = sp % fs;
    sc_copy(s, sub_view(s, full, 0, out, 1, it, ft, ih, fs, iw, fs),
            sc_slice_step(s, x, 0, sp / rep, sp / rep + (int64_t)(out - 1) * k + 1, k));
  }
  mr_tensor *y = first_chunk && ft > 1 ? sc_slice(s, full, 1, ft - 1, T) : full;
  return mr_scope_collect(s, mark, y, NULL);
}
