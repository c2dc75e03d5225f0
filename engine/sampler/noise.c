/* Seeded standard normal noise: Philox4x32-10 keyed by the seed, one block
   per element, Box-Muller in double (the definition is in moonreel.h). The
   values are made on the host and uploaded, so they do not depend on the
   device, and any slice can be made alone. */
#include "tensor/tensor_impl.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

/* Random123's Philox4x32 constants: multipliers and Weyl key increments. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void mr_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    if (round > 0) { /* the key is bumped before every round but the first */
      k0 += PHILOX_W0;
      k1 += PHILOX_W1;
    }
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/* z(seed, i) of the header's definition. */
static float normal_at(const uint32_t key[2], uint64_t i) {
  uint32_t ctr[4] = {(uint32_t)i, (uint32_t)(i >> 32), 0, 0}, r[4];
  mr_philox4x32_10(ctr, key, r);
  const double two_pow_m53 = 1.0 / 9007199254740992.0;
  double u1 = (double)(((((uint64_t)r[0] << 32) | r[1]) >> 11) + 1) * two_pow_m53; /* (0, 1] */
  double u2 = (double)((((uint64_t)r[2] << 32) | r[3]) >> 11) * two_pow_m53;       /* [0, 1) */
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void mr_noise_fill(uint64_t seed, uint64_t offset, float *dst, size_t n) {
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  for (size_t j = 0; j < n; j++) dst[j] = normal_at(key, offset + j);
}

mr_status mr_noise_randn_offset(mr_ctx *ctx, uint64_t seed, uint64_t offset, int ndim, const int64_t *shape,
                                mr_dtype dtype, mr_tensor **out) {
  mr_status st = mr_tensor_empty(ctx, dtype, ndim, shape, out);
  if (st != MR_OK) return st;
  /* generated and uploaded in slices, so host memory stays bounded */
  enum { SLICE = 1 << 20 };
  size_t count = (size_t)mr_tensor_numel(*out), es = mr_dtype_size(dtype);
  float *buf = count ? malloc((count < SLICE ? count : SLICE) * (sizeof(float) + es)) : NULL;
  if (count && !buf) st = mr_error(ctx, MR_ENOMEM, "randn: out of host memory");
  for (size_t done = 0; done < count && st == MR_OK;) {
    size_t n = count - done < SLICE ? count - done : SLICE;
    void *conv = buf + n;
    mr_noise_fill(seed, offset + done, buf, n);
    mr_convert(dtype, conv, MR_F32, buf, n);
    st = mr_gpu_upload(ctx, &(*out)->storage->alloc, (VkDeviceSize)(done * es), conv, (VkDeviceSize)(n * es));
    done += n;
  }
  free(buf);
  if (st != MR_OK) {
    mr_tensor_free(*out);
    *out = NULL;
  }
  return st;
}

mr_status mr_noise_randn(mr_ctx *ctx, uint64_t seed, int ndim, const int64_t *shape, mr_dtype dtype,
                         mr_tensor **out) {
  return mr_noise_randn_offset(ctx, seed, 0, ndim, shape, dtype, out);
}

mr_status mr_noise_random_seed(mr_ctx *ctx, uint64_t *out) {
  *out = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mr_error(ctx, MR_EIO, "random seed: cannot open /dev/urandom");
  unsigned char b[8];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = read(fd, b + got, sizeof b - got);
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got < sizeof b) return mr_error(ctx, MR_EIO, "random seed: short read from /dev/urandom");
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | b[i];
  *out = v;
  return MR_OK;
}
