/* Internal entry points of the convolution family (op_conv.c): kernel
   variant selection for tests and benchmarks. Engine-internal. */
#ifndef MR_OP_CONV_H
#define MR_OP_CONV_H

#include "moonreel.h"

/* AUTO picks per device (LANES on CPU-type devices with subgroup shuffles,
   REG on other CPU-type devices, SMEM otherwise); the others force one kernel
   so tests run them all. */
typedef enum mr_conv_variant {
  MR_CONV_AUTO,
  MR_CONV_REG,  /* barrier-free, 4 channels x 4 positions per invocation */
  MR_CONV_SMEM, /* shared-memory tiles of channels x positions */
  MR_CONV_LANES, /* conv3d_lanes.comp: barrier-free, channels shared by a subgroup (subgroupShuffle), x and w
                    as texel buffers; REG where the device has no usable subgroup shuffle */
  MR_CONV_VARIANTS
} mr_conv_variant;

/* mr_op_conv3d with a chosen kernel. */
mr_status mr_op_conv3d_variant(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, const int *stride,
                               const int *pad, int variant, mr_tensor **out);

#endif
