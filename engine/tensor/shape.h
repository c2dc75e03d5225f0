/* "2x3x4" for messages: what every file that names a shape in an error
   prints (engine/tensor/tensor.c). Engine-internal. */
#ifndef MR_SHAPE_H
#define MR_SHAPE_H

#include <stddef.h>
#include <stdint.h>

/* Writes the shape into buf (cap bytes, always terminated; "scalar" for 0 dims) and returns buf. */
const char *mr_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

#endif
