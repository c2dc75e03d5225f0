/* Host-side dtype conversion (engine/tensor/dtype.c): how the engine turns
   file data into storage and back. Engine-internal. */
#ifndef MR_DTYPE_H
#define MR_DTYPE_H

#include "core/core.h"

/* Host-side dtype conversion of n contiguous elements (any mr_dtype to any).
   Floats round to nearest even; integers convert through double. */
void mr_convert(mr_dtype dst_type, void *dst, mr_dtype src_type, const void *src, size_t n);
float mr_f16_to_f32(uint16_t h);
uint16_t mr_f32_to_f16(float f);
float mr_bf16_to_f32(uint16_t h);
uint16_t mr_f32_to_bf16(float f);

#endif
