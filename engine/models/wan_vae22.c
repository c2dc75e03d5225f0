/* Wan 2.2 VAE extras (docs/wan-architecture.md §3.2), all weightless and
   written as strided copies between views:
   - 2x2 patchify / unpatchify of the pixels (channel c*4 + r*2 + q, q the
     row offset, r the column offset);
   - AvgDown3D: space/time-to-channel, then the mean of channel groups;
   - DupUp3D: channel repeat, then channel-to-space/time. */
#include "models/wan_vae.h"

#include "tensor/tensor_impl.h"

/* x[c0 : c0 + n*cstep : cstep, t0 :: ft, h0 :: fs, w0 :: fs] as a new view. */
static mr_status sub_view(mr_tensor *x, int64_t c0, int64_t nc, int64_t cstep, int64_t t0, int64_t ft, int64_t h0,
                          int64_t fs_h, int64_t w0, int64_t fs_w, mr_tensor **out) {
  *out = NULL;
  mr_tensor *a = NULL, *b = NULL, *c = NULL;
  mr_status st = mr_tensor_slice(x, 0, c0, c0 + (nc - 1) * cstep + 1, cstep, &a);
  if (st == MR_OK) st = mr_tensor_slice(a, 1, t0, x->shape[1], ft, &b);
  if (st == MR_OK) st = mr_tensor_slice(b, 2, h0, x->shape[2], fs_h, &c);
  if (st == MR_OK) st = mr_tensor_slice(c, 3, w0, x->shape[3], fs_w, out);
  mr_tensor_free(a);
  mr_tensor_free(b);
  mr_tensor_free(c);
  return st;
}

mr_status vae_patchify(mr_tensor *x, mr_tensor **out) {
  int64_t C = x->shape[0], shape[4] = {C * 4, x->shape[1], x->shape[2] / 2, x->shape[3] / 2};
  mr_status st = mr_tensor_empty(x->ctx, MR_F32, 4, shape, out);
  for (int64_t c = 0; st == MR_OK && c < C; c++)
    for (int r = 0; st == MR_OK && r < 2; r++)
      for (int q = 0; st == MR_OK && q < 2; q++) {
        mr_tensor *src = NULL, *dst = NULL;
        if ((st = sub_view(x, c, 1, 1, 0, 1, q, 2, r, 2, &src)) == MR_OK &&
            (st = mr_tensor_slice(*out, 0, c * 4 + r * 2 + q, c * 4 + r * 2 + q + 1, 1, &dst)) == MR_OK)
          st = mr_tensor_copy(dst, src);
        mr_tensor_free(src);
        mr_tensor_free(dst);
      }
  if (st != MR_OK && *out) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status vae_unpatchify_into(mr_tensor *x, mr_tensor *dst) {
  mr_status st = MR_OK;
  int64_t C = x->shape[0] / 4;
  for (int64_t c = 0; st == MR_OK && c < C; c++)
    for (int r = 0; st == MR_OK && r < 2; r++)
      for (int q = 0; st == MR_OK && q < 2; q++) {
        mr_tensor *src = NULL, *d = NULL;
        if ((st = mr_tensor_slice(x, 0, c * 4 + r * 2 + q, c * 4 + r * 2 + q + 1, 1, &src)) == MR_OK &&
            (st = sub_view(dst, c, 1, 1, 0, 1, q, 2, r, 2, &d)) == MR_OK)
          st = mr_tensor_copy(d, src);
        mr_tensor_free(src);
        mr_tensor_free(d);
      }
  return st;
}

/* AvgDown3D: front-pad time with zeros to a multiple of ft; channel
   c*F + s (F = ft*fs*fs, s = it*fs*fs + ih*fs + iw) holds x[c, t*ft+it, h*fs+ih, w*fs+iw];
   output channel o is the mean of channels [o*g, (o+1)*g), g = in*F/out.
   With F = k*g, output channel c*k + kk averages sub-positions [kk*g, (kk+1)*g) of channel c. */
mr_status vae_avg_down(mr_tensor *x, int in, int out, int ft, int fs, mr_tensor **y) {
  *y = NULL;
  mr_ctx *ctx = x->ctx;
  int F = ft * fs * fs, g = in * F / out, k = F / g;
  int64_t T = x->shape[1], padt = (ft - T % ft) % ft;
  mr_tensor *xp = NULL, *y3 = NULL;
  mr_status st = MR_OK;
  if (padt) {
    int64_t ps[4] = {x->shape[0], T + padt, x->shape[2], x->shape[3]};
    mr_tensor *v = NULL;
    if ((st = mr_tensor_new(ctx, MR_F32, 4, ps, &xp)) != MR_OK) return st;
    if ((st = mr_tensor_slice(xp, 1, padt, T + padt, 1, &v)) == MR_OK) st = mr_tensor_copy(v, x);
    mr_tensor_free(v);
    if (st != MR_OK) goto done;
  } else {
    xp = x;
  }
  int64_t To = (T + padt) / ft, Ho = x->shape[2] / fs, Wo = x->shape[3] / fs;
  int64_t ys[4] = {out, To, Ho, Wo}, y3s[3] = {in, k, To * Ho * Wo}, r3[3] = {in, 1, To * Ho * Wo};
  if ((st = mr_tensor_empty(ctx, MR_F32, 4, ys, y)) != MR_OK) goto done;
  if ((st = mr_tensor_reshape(*y, 3, y3s, &y3)) != MR_OK) goto done;
  for (int kk = 0; kk < k && st == MR_OK; kk++) {
    mr_tensor *acc = NULL, *dst = NULL, *mean = NULL, *mean3 = NULL;
    for (int j = 0; j < g && st == MR_OK; j++) {
      int s = kk * g + j, it = s / (fs * fs), ih = (s / fs) % fs, iw = s % fs;
      mr_tensor *v = NULL, *sum = NULL;
      if ((st = sub_view(xp, 0, in, 1, it, ft, ih, fs, iw, fs, &v)) != MR_OK) break;
      if (!acc) st = mr_tensor_contiguous(v, &acc);
      else if ((st = mr_op_binary(MR_BINARY_ADD, acc, v, &sum)) == MR_OK) {
        mr_tensor_free(acc);
        acc = sum;
      }
      mr_tensor_free(v);
    }
    if (st == MR_OK) st = mr_op_scale(acc, 1.0f / (float)g, 0.0f, &mean);
    if (st == MR_OK) st = mr_tensor_reshape(mean, 3, r3, &mean3);
    if (st == MR_OK) st = mr_tensor_slice(y3, 1, kk, kk + 1, 1, &dst);
    if (st == MR_OK) st = mr_tensor_copy(dst, mean3);
    mr_tensor_free(acc);
    mr_tensor_free(dst);
    mr_tensor_free(mean);
    mr_tensor_free(mean3);
  }
done:
  if (xp != x) mr_tensor_free(xp);
  mr_tensor_free(y3);
  if (st != MR_OK) {
    mr_tensor_free(*y);
    *y = NULL;
  }
  return st;
}

/* DupUp3D: repeat each channel rep = out*F/in times; channel o*F + s of the
   result goes to [o, t*ft+it, h*fs+ih, w*fs+iw]. With F = k*rep that is input
   channel o*k + s/rep. */
mr_status vae_dup_up(mr_tensor *x, int in, int out, int ft, int fs, bool first_chunk, mr_tensor **y) {
  *y = NULL;
  mr_ctx *ctx = x->ctx;
  int F = ft * fs * fs, rep = out * F / in, k = F / rep;
  int64_t ys[4] = {out, x->shape[1] * ft, x->shape[2] * fs, x->shape[3] * fs};
  mr_tensor *full = NULL;
  mr_status st = mr_tensor_empty(ctx, MR_F32, 4, ys, &full);
  for (int s = 0; s < F && st == MR_OK; s++) {
    int it = s / (fs * fs), ih = (s / fs) % fs, iw = s % fs;
    mr_tensor *src = NULL, *dst = NULL;
    if ((st = mr_tensor_slice(x, 0, s / rep, s / rep + (int64_t)(out - 1) * k + 1, k, &src)) == MR_OK &&
        (st = sub_view(full, 0, out, 1, it, ft, ih, fs, iw, fs, &dst)) == MR_OK)
      st = mr_tensor_copy(dst, src);
    mr_tensor_free(src);
    mr_tensor_free(dst);
  }
  if (st == MR_OK && first_chunk && ft > 1) st = mr_tensor_slice(full, 1, ft - 1, ys[1], 1, y);
  else if (st == MR_OK) {
    *y = full;
    full = NULL;
  }
  mr_tensor_free(full);
  return st;
}
