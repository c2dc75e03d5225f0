/* Tensors: dtypes, host round trips, views, copies, and the allocator. */
#include "testutil.h"

#include "tensor/dtype.h"

#include <math.h>
#include <string.h>

static void test_dtype_conversion(void) {
  /* f16: exact values, rounding to nearest even, subnormals, overflow */
  CHECK(mr_f16_to_f32(mr_f32_to_f16(1.0f)) == 1.0f);
  CHECK(mr_f16_to_f32(mr_f32_to_f16(-2.5f)) == -2.5f);
  CHECK(mr_f32_to_f16(65504.0f) == 0x7bff);
  CHECK(mr_f32_to_f16(1e6f) == 0x7c00);
  CHECK(mr_f32_to_f16(5.9604645e-8f) == 0x0001);     /* smallest subnormal */
  CHECK(mr_f16_to_f32(0x0001) == 5.9604645e-8f);
  CHECK(mr_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie goes to even */
  CHECK(mr_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
  /* every half round-trips exactly */
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
    if (mr_f32_to_f16(mr_f16_to_f32((uint16_t)h)) != h) bad++;
  }
  CHECK(bad == 0);
  /* bf16 */
  CHECK(mr_bf16_to_f32(mr_f32_to_bf16(3.0f)) == 3.0f);
  CHECK(mr_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80); /* tie to even */
  CHECK(isnan(mr_bf16_to_f32(mr_f32_to_bf16(NAN))));
  mr_dtype d;
  CHECK(mr_dtype_parse("bf16", &d) && d == MR_BF16);
  CHECK(!mr_dtype_parse("f8", &d));
}

static void test_roundtrip(mr_ctx *ctx) {
  mr_rng rng = {7};
  const mr_dtype dts[3] = {MR_F32, MR_F16, MR_BF16};
  for (int k = 0; k < 3; k++) {
    int64_t shape[3] = {3, 5, 7};
    float x[105], y[105];
    mr_rng_fill(&rng, x, 105, -4, 4);
    mr_tensor *t;
    CHECK_OK(ctx, mr_tensor_from_host(ctx, dts[k], 3, shape, MR_F32, x, &t));
    CHECK_OK(ctx, mr_tensor_read(t, MR_F32, y, 105));
    mr_test_round(dts[k], x, 105);
    CHECK(memcmp(x, y, sizeof x) == 0);
    /* f64 reads and i32 writes convert on the host */
    double z[105];
    CHECK_OK(ctx, mr_tensor_read(t, MR_F64, z, 105));
    CHECK(z[17] == (double)y[17]);
    int32_t ints[105];
    for (int i = 0; i < 105; i++) ints[i] = i - 50;
    CHECK_OK(ctx, mr_tensor_write(t, MR_I32, ints, 105));
    CHECK_OK(ctx, mr_tensor_read(t, MR_F32, y, 105));
    CHECK(y[0] == -50.0f && y[104] == 54.0f);
    mr_tensor_free(t);
  }
  /* zero-filled new */
  int64_t shape[1] = {1000};
  mr_tensor *t;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_BF16, 1, shape, &t));
  float y[1000];
  CHECK_OK(ctx, mr_tensor_read(t, MR_F32, y, 1000));
  int nonzero = 0;
  for (int i = 0; i < 1000; i++) nonzero += y[i] != 0;
  CHECK(nonzero == 0);
  mr_tensor_free(t);
}

static void test_views(mr_ctx *ctx) {
  int64_t shape[3] = {2, 3, 4};
  float x[24], y[24];
  for (int i = 0; i < 24; i++) x[i] = (float)i;
  mr_tensor *t, *p, *s, *c, *r;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 3, shape, MR_F32, x, &t));
  int perm[3] = {2, 0, 1};
  CHECK_OK(ctx, mr_tensor_permute(t, perm, &p));
  CHECK(mr_tensor_shape(p)[0] == 4 && mr_tensor_shape(p)[1] == 2 && mr_tensor_shape(p)[2] == 3);
  CHECK(!mr_tensor_is_contiguous(p));
  CHECK_OK(ctx, mr_tensor_read(p, MR_F32, y, 24));
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 2; b++)
      for (int d = 0; d < 3; d++) CHECK(y[(a * 2 + b) * 3 + d] == x[(b * 3 + d) * 4 + a]);
  /* reshape of a non-contiguous view is refused with a message */
  int64_t flat[1] = {24};
  CHECK(mr_tensor_reshape(p, 1, flat, &r) == MR_EINVAL && r == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "contiguous") != NULL);
  CHECK_OK(ctx, mr_tensor_contiguous(p, &c));
  CHECK(mr_tensor_is_contiguous(c));
  int64_t inferred[2] = {-1, 6};
  CHECK_OK(ctx, mr_tensor_reshape(c, 2, inferred, &r));
  CHECK(mr_tensor_shape(r)[0] == 4);
  int64_t wrong[2] = {5, 5};
  mr_tensor *bad;
  CHECK(mr_tensor_reshape(c, 2, wrong, &bad) == MR_EINVAL && bad == NULL);
  /* slice with a step, then write through the view */
  CHECK_OK(ctx, mr_tensor_slice(t, 2, 1, 4, 2, &s)); /* columns 1 and 3 */
  CHECK(mr_tensor_shape(s)[2] == 2);
  float ones[12];
  for (int i = 0; i < 12; i++) ones[i] = -1;
  CHECK_OK(ctx, mr_tensor_write(s, MR_F32, ones, 12));
  CHECK_OK(ctx, mr_tensor_read(t, MR_F32, y, 24));
  for (int i = 0; i < 24; i++) CHECK(y[i] == ((i % 4 == 1 || i % 4 == 3) ? -1.0f : x[i]));
  CHECK(mr_tensor_slice(t, 5, 0, 1, 1, &bad) == MR_EINVAL);
  CHECK(mr_tensor_slice(t, 0, 0, 3, 1, &bad) == MR_EINVAL);
  /* a cast of a strided view into bf16 and back */
  mr_tensor *h;
  CHECK_OK(ctx, mr_tensor_cast(p, MR_BF16, &h));
  CHECK(mr_tensor_dtype(h) == MR_BF16);
  float z[24];
  CHECK_OK(ctx, mr_tensor_read(h, MR_F32, z, 24));
  CHECK_OK(ctx, mr_tensor_read(p, MR_F32, y, 24));
  CHECK(memcmp(y, z, sizeof y) == 0); /* small integers are exact in bf16 */
  /* the storage outlives the base handle while views hold it */
  mr_tensor_free(t);
  CHECK_OK(ctx, mr_tensor_read(s, MR_F32, ones, 12));
  mr_tensor_free(p);
  mr_tensor_free(s);
  mr_tensor_free(c);
  mr_tensor_free(r);
  mr_tensor_free(h);
  mr_tensor_free(NULL);
}

static void test_errors(mr_ctx *ctx) {
  mr_tensor *t = (mr_tensor *)1;
  int64_t shape[6] = {1, 1, 1, 1, 1, 1};
  CHECK(mr_tensor_new(ctx, MR_F32, 6, shape, &t) == MR_EINVAL && t == NULL);
  t = (mr_tensor *)1;
  CHECK(mr_tensor_new(ctx, MR_I64, 1, shape, &t) == MR_EINVAL && t == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "i64") != NULL);
  int64_t huge[2] = {1 << 20, 1 << 20};
  t = (mr_tensor *)1;
  mr_status st = mr_tensor_new(ctx, MR_F32, 2, huge, &t); /* 4 TiB */
  CHECK(st == MR_EDEVMEM && t == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "MiB") != NULL);
}

static void test_allocator_reuse(mr_ctx *ctx) {
  /* many small tensors share blocks; freeing and reallocating must not grow without bound */
  mr_tensor *ts[200];
  int64_t shape[1] = {1000};
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 200; i++) CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, shape, &ts[i]));
    for (int i = 0; i < 200; i += 2) mr_tensor_free(ts[i]);
    for (int i = 1; i < 200; i += 2) mr_tensor_free(ts[i]);
  }
  CHECK_OK(ctx, mr_ctx_sync(ctx));
}

int main(void) {
  test_dtype_conversion();
  mr_ctx *ctx = mr_test_ctx();
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  printf("device: %s (%s)\n", info.name, mr_device_type_name(info.type));
  test_roundtrip(ctx);
  test_views(ctx);
  test_errors(ctx);
  test_allocator_reuse(ctx);
  mr_ctx_free(ctx);
  return mr_test_finish("test_tensor");
}
