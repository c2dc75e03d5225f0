/* Seeded noise: Philox4x32-10 against Random123's known-answer vectors, the
   sample moments of a million values, bit equality between the device
   tensor and the host definition (every dtype, across the upload slices),
   slices made alone, seeds, and the argument errors. */
#include "testutil.h"

#include <math.h>
#include <string.h>

/* Random123 1.14, tests/kat_vectors, the three "philox4x32 10" lines
   (counter[4] key[2] -> output[4]). */
static void test_philox_kat(void) {
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6,
       0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
       0x24126ea1},
  };
  for (int k = 0; k < 3; k++) {
    uint32_t out[4];
    mr_philox4x32_10(kat[k], kat[k] + 4, out);
    if (memcmp(out, kat[k] + 6, sizeof out) != 0) {
      fprintf(stderr, "philox KAT %d: got %08x %08x %08x %08x\n", k, out[0], out[1], out[2], out[3]);
      mr_test_failures++;
    }
  }
}

/* Mean, variance and fourth moment of n draws, each within 5 standard errors
   of N(0, 1)'s (0, 1, 3): the errors are sqrt(1/n), sqrt(2/n), sqrt(96/n). */
static void test_moments(void) {
  enum { N = 1000000 };
  float *z = malloc(N * sizeof *z);
  mr_noise_fill(20240607u, 0, z, N);
  double s1 = 0, s2 = 0, s4 = 0;
  for (int i = 0; i < N; i++) {
    double v = z[i];
    s1 += v;
    s2 += v * v;
    s4 += v * v * v * v;
  }
  double mean = s1 / N, var = s2 / N - mean * mean, m4 = s4 / N;
  printf("noise moments over %d: mean %.5f var %.5f m4 %.4f\n", N, mean, var, m4);
  CHECK(fabs(mean) <= 5 * sqrt(1.0 / N));
  CHECK(fabs(var - 1) <= 5 * sqrt(2.0 / N));
  CHECK(fabs(m4 - 3) <= 5 * sqrt(96.0 / N));
  free(z);
}

/* The definition written out once more, independently of noise.c's loop:
   pins the mapping from Philox words to the normal value. */
static float definition(uint64_t seed, uint64_t i) {
  uint32_t ctr[4] = {(uint32_t)i, (uint32_t)(i >> 32), 0, 0}, key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, r[4];
  mr_philox4x32_10(ctr, key, r);
  uint64_t a = ((uint64_t)r[0] << 32 | r[1]) >> 11, b = ((uint64_t)r[2] << 32 | r[3]) >> 11;
  double u1 = ldexp((double)(a + 1), -53), u2 = ldexp((double)b, -53);
  return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * 3.141592653589793 * u2));
}

static void test_definition(void) {
  const uint64_t seeds[4] = {0, 1, 0x100000000ull, UINT64_MAX};
  const uint64_t offs[3] = {0, 4294967295ull, 1ull << 40};
  float got[5];
  for (int s = 0; s < 4; s++)
    for (int o = 0; o < 3; o++) {
      mr_noise_fill(seeds[s], offs[o], got, 5);
      for (int j = 0; j < 5; j++) CHECK(got[j] == definition(seeds[s], offs[o] + j));
    }
  /* the key's high word matters */
  float a[4], b[4];
  mr_noise_fill(1, 0, a, 4);
  mr_noise_fill(1 + (1ull << 32), 0, b, 4);
  CHECK(memcmp(a, b, sizeof a) != 0);
}

static void test_tensors(mr_ctx *ctx) {
  /* more than one upload slice (2^20 elements), so the slicing is covered */
  int64_t shape[3] = {3, 349527, 1}, n = 3 * 349527;
  float *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
  mr_noise_fill(777, 0, want, (size_t)n);
  const mr_dtype dts[3] = {MR_F32, MR_F16, MR_BF16};
  for (int d = 0; d < 3; d++) {
    mr_tensor *t = NULL;
    CHECK_OK(ctx, mr_noise_randn(ctx, 777, 3, shape, dts[d], &t));
    if (!t) continue;
    CHECK(mr_tensor_dtype(t) == dts[d] && mr_tensor_numel(t) == n);
    CHECK_OK(ctx, mr_tensor_read(t, MR_F32, got, (size_t)n));
    float *w = malloc((size_t)n * sizeof *w);
    memcpy(w, want, (size_t)n * sizeof *w);
    mr_test_round(dts[d], w, (size_t)n);
    CHECK(memcmp(got, w, (size_t)n * sizeof *got) == 0);
    free(w);
    mr_tensor_free(t);
  }
  /* a slice [k, k + m) made alone equals that slice of the whole */
  int64_t whole[3] = {7, 13, 11}, k = 123, m = 457;
  mr_tensor *all = NULL, *part = NULL;
  CHECK_OK(ctx, mr_noise_randn(ctx, 99, 3, whole, MR_F32, &all));
  CHECK_OK(ctx, mr_noise_randn_offset(ctx, 99, (uint64_t)k, 1, &m, MR_F32, &part));
  if (all && part) {
    CHECK_OK(ctx, mr_tensor_read(all, MR_F32, got, 7 * 13 * 11));
    CHECK_OK(ctx, mr_tensor_read(part, MR_F32, want, (size_t)m));
    CHECK(memcmp(got + k, want, (size_t)m * sizeof *got) == 0);
  }
  mr_tensor_free(all);
  mr_tensor_free(part);
  /* an empty tensor is fine; bad dtypes and shapes are errors */
  int64_t empty[2] = {0, 5}, neg[1] = {-1};
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_noise_randn(ctx, 1, 2, empty, MR_F32, &t));
  mr_tensor_free(t);
  t = (mr_tensor *)1;
  CHECK(mr_noise_randn(ctx, 1, 1, &m, MR_I32, &t) == MR_EINVAL && t == NULL);
  t = (mr_tensor *)1;
  CHECK(mr_noise_randn(ctx, 1, 1, neg, MR_F32, &t) == MR_EINVAL && t == NULL);
  free(want);
  free(got);
}

static void test_random_seed(mr_ctx *ctx) {
  uint64_t a = 0, b = 0;
  CHECK_OK(ctx, mr_noise_random_seed(ctx, &a));
  CHECK_OK(ctx, mr_noise_random_seed(ctx, &b));
  CHECK(a != b);
}

int main(void) {
  test_philox_kat();
  test_moments();
  test_definition();
  mr_ctx *ctx = mr_test_ctx();
  test_tensors(ctx);
  test_random_seed(ctx);
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  return mr_test_finish("test_noise");
}
