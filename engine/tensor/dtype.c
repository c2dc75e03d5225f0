/* Element types and host-side conversion between them. */
#include "tensor/dtype.h"

#include <math.h>
#include <string.h>

static const char *const dtype_names[MR_DTYPE_COUNT] = {"f32", "f16", "bf16", "f64", "i64", "i32", "u8"};
static const size_t dtype_sizes[MR_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 1};

const char *mr_dtype_name(mr_dtype dt) { return (unsigned)dt < MR_DTYPE_COUNT ? dtype_names[dt] : "?"; }
size_t mr_dtype_size(mr_dtype dt) { return (unsigned)dt < MR_DTYPE_COUNT ? dtype_sizes[dt] : 0; }
bool mr_dtype_is_storage(mr_dtype dt) { return dt == MR_F32 || dt == MR_F16 || dt == MR_BF16; }

bool mr_dtype_parse(const char *name, mr_dtype *out) {
  for (int i = 0; i < MR_DTYPE_COUNT; i++)
    if (name && strcmp(name, dtype_names[i]) == 0) {
      *out = (mr_dtype)i;
      return true;
    }
  return false;
}

float mr_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: renormalise */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) { man <<= 1; exp--; }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t mr_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds past 65504: inf */
  if (ax < 0x38800000u) {                                  /* below the smallest normal half */
    if (ax < 0x33000000u) return (uint16_t)sign;           /* under half the smallest subnormal */
    /* value / 2^-24, rounded to nearest even: the 24-bit significand shifted right */
    uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;
    uint32_t v = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    uint32_t r = v + (rem > half || (rem == half && (v & 1)));
    return (uint16_t)(sign | r);
  }
  uint32_t r = ax + 0xfff + ((ax >> 13) & 1); /* round to nearest even on the 13 dropped bits */
  return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

float mr_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t mr_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* keep NaN a NaN */
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

static double load_elem(mr_dtype t, const void *p, size_t i) {
  switch (t) {
  case MR_F32: { float v; memcpy(&v, (const char *)p + 4 * i, 4); return v; }
  case MR_F16: { uint16_t v; memcpy(&v, (const char *)p + 2 * i, 2); return mr_f16_to_f32(v); }
  case MR_BF16: { uint16_t v; memcpy(&v, (const char *)p + 2 * i, 2); return mr_bf16_to_f32(v); }
  case MR_F64: { double v; memcpy(&v, (const char *)p + 8 * i, 8); return v; }
  case MR_I64: { int64_t v; memcpy(&v, (const char *)p + 8 * i, 8); return (double)v; }
  case MR_I32: { int32_t v; memcpy(&v, (const char *)p + 4 * i, 4); return v; }
  case MR_U8: return ((const uint8_t *)p)[i];
  default: return 0;
  }
}

static void store_elem(mr_dtype t, void *p, size_t i, double v) {
  switch (t) {
  case MR_F32: { float f = (float)v; memcpy((char *)p + 4 * i, &f, 4); break; }
  case MR_F16: { uint16_t h = mr_f32_to_f16((float)v); memcpy((char *)p + 2 * i, &h, 2); break; }
  case MR_BF16: { uint16_t h = mr_f32_to_bf16((float)v); memcpy((char *)p + 2 * i, &h, 2); break; }
  case MR_F64: memcpy((char *)p + 8 * i, &v, 8); break;
  case MR_I64: { int64_t x = (int64_t)llround(v); memcpy((char *)p + 8 * i, &x, 8); break; }
  case MR_I32: { int32_t x = (int32_t)lround(v); memcpy((char *)p + 4 * i, &x, 4); break; }
  case MR_U8: ((uint8_t *)p)[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lround(v)); break;
  default: break;
  }
}

void mr_convert(mr_dtype dst_type, void *dst, mr_dtype src_type, const void *src, size_t n) {
  if (dst_type == src_type) {
    memmove(dst, src, n * mr_dtype_size(src_type));
    return;
  }
  if (src_type == MR_F32 && dst_type == MR_F16) { /* the hot paths, without the double detour */
    for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = mr_f32_to_f16(((const float *)src)[i]);
    return;
  }
  if (src_type == MR_F32 && dst_type == MR_BF16) {
    for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = mr_f32_to_bf16(((const float *)src)[i]);
    return;
  }
  for (size_t i = 0; i < n; i++) store_elem(dst_type, dst, i, load_elem(src_type, src, i));
}
