/* The Vulkan layer: device, memory, pipelines and the command stream.
   Internal to the engine; ops talk to the GPU only through this header. */
#ifndef MR_GPU_H
#define MR_GPU_H

#include "core/core.h"

#include <vulkan/vulkan.h>

/* ---------------------------------------------------------------- memory */

/* A range of a VkDeviceMemory block with one VkBuffer over all of it
   (vk_memory.c says how blocks are carved and reused). */
typedef struct mr_block mr_block;

typedef struct mr_alloc {
  mr_block *block;
  VkBuffer buffer;       /* the block's buffer */
  VkDeviceSize offset;   /* bytes into the buffer, aligned for storage binding */
  VkDeviceSize size;
  void *mapped;          /* host pointer to offset when the memory is host-visible, else NULL */
} mr_alloc;

mr_status mr_gpu_alloc(mr_ctx *ctx, VkDeviceSize size, mr_alloc *out);
/* Safe while recorded work still uses it: the range serves later work in the
   same stream at once, ordered after the earlier uses by the hazard barriers. */
void mr_gpu_free(mr_ctx *ctx, mr_alloc *a);
/* Bytes currently handed to tensors. */
VkDeviceSize mr_gpu_bytes_in_use(const mr_ctx *ctx);

/* ---------------------------------------------------------------- pipelines */

typedef struct mr_pipeline mr_pipeline;

/* The compute pipeline for shaders/<shader>.comp with specialization
   constants spec[0..nspec) at constant_id 0..nspec-1. nbind storage buffers at
   bindings 0..nbind-1, push_size bytes of push constants. Pipelines are cached
   in the context (and on disk through the VkPipelineCache); the result is
   borrowed from ctx. */
mr_status mr_gpu_pipeline(mr_ctx *ctx, const char *shader, int nbind, uint32_t push_size,
                          const uint32_t *spec, int nspec, mr_pipeline **out);
/* The same with the bindings whose bit is set in texel_mask declared as
   uniform texel buffers (samplerBuffer / usamplerBuffer in the shader); their
   mr_binding names the view's format. */
mr_status mr_gpu_pipeline_texel(mr_ctx *ctx, const char *shader, int nbind, uint32_t texel_mask, uint32_t push_size,
                                const uint32_t *spec, int nspec, mr_pipeline **out);

/* ---------------------------------------------------------------- command stream */

typedef struct mr_binding {
  VkBuffer buffer;
  VkDeviceSize offset;   /* bytes, multiple of minStorageBufferOffsetAlignment */
  VkDeviceSize range;    /* bytes */
  bool write;            /* the dispatch writes this range */
  VkFormat texel;        /* for a uniform texel buffer binding: the view's format (offset and range
                            multiples of its texel size); else VK_FORMAT_UNDEFINED */
} mr_binding;

/* Records one dispatch. A barrier is recorded first only when this dispatch
   touches a range an earlier unsynchronised dispatch wrote (or writes one it
   read). op names the op kind for the profile (a string literal). */
mr_status mr_gpu_dispatch(mr_ctx *ctx, mr_pipeline *p, const mr_binding *b, int nbind, const void *push,
                          uint32_t gx, uint32_t gy, uint32_t gz, const char *op);

/* Records a buffer-to-buffer copy of n regions (offsets in bytes from the
   buffers' starts) in the stream, ordered against dispatches like one: src
   and dst are the byte ranges the regions read and write, for the hazard
   tracker (their texel format is ignored). op names it for the profile. */
mr_status mr_gpu_copy_regions(mr_ctx *ctx, const mr_binding *src, const mr_binding *dst, const VkBufferCopy *regions,
                              uint32_t n, const char *op);

/* Adds the useful FLOPs (2 per multiply-add) of the dispatch just recorded to
   the context's total and, when profiling, to that dispatch's op kind. Call it
   right after a successful mr_gpu_dispatch. */
void mr_gpu_count_flops(mr_ctx *ctx, double flops);

/* Splits a count of workgroups over x and y so neither exceeds the device
   limit. Shaders rebuild the linear id as y * gl_NumWorkGroups.x + x. */
void mr_gpu_grid(const mr_ctx *ctx, uint64_t groups, uint32_t *gx, uint32_t *gy);

/* Submits what is recorded and waits; polls the interrupt flag while waiting. */
mr_status mr_gpu_sync(mr_ctx *ctx);
/* True if recorded or in-flight work may touch memory. */
bool mr_gpu_busy(const mr_ctx *ctx);

/* Host <-> device byte copies through mapped memory or a staging buffer.
   Both wait for recorded work first, so they see (and are seen by) all of it. */
mr_status mr_gpu_upload(mr_ctx *ctx, const mr_alloc *dst, VkDeviceSize offset, const void *src, VkDeviceSize n);
mr_status mr_gpu_download(mr_ctx *ctx, const mr_alloc *src, VkDeviceSize offset, void *dst, VkDeviceSize n);

/* ---------------------------------------------------------------- device facts ops use */

typedef struct mr_gpu_caps {
  mr_device_info info;
  uint32_t max_groups[3];      /* maxComputeWorkGroupCount */
  uint32_t max_invocations;    /* maxComputeWorkGroupInvocations */
  VkDeviceSize align;          /* minStorageBufferOffsetAlignment */
  VkDeviceSize max_binding;    /* bytes one binding may span: maxStorageBufferRange, or less when
                                  MOONREEL_MAX_BINDING or mr_gpu_set_max_binding asks; ops split
                                  larger operands into windows of at most this */
  bool is_cpu;                 /* prefer barrier-free register-tiled kernels */
  uint32_t max_texels;         /* maxTexelBufferElements: texels one uniform texel buffer view may span */
  uint32_t lanes_sg;           /* the subgroup size the *_lanes kernels (matmul, conv3d) run with: the device
                                  has compute subgroup shuffles, subgroups of 4, 8 or 16, uniform texel
                                  buffers of R32, R16, R32G32B32A32 and R16G16B16A16 uints and a texel
                                  offset alignment that divides align; else 0 */
  /* On CPU devices kernels also keep each invocation under MR_CPU_LOOP_LIMIT
     loop iterations: llvmpipe stops a shader's loops there without an error. */
} mr_gpu_caps;

const mr_gpu_caps *mr_gpu_caps_get(const mr_ctx *ctx);

#define MR_CPU_LOOP_LIMIT 65535u
/* The most keys attention walks on a CPU device: the limit less room for the
   kernel's other loops (measured right at 40,000 keys, wrong at 70,000). */
#define MR_CPU_ATTENTION_KEYS 64000u

/* Test hook: sets the binding limit ops split at to min(bytes, the device's),
   at least 256 bytes (4 offset alignments); 0 restores the device's. Returns
   the previous limit. */
VkDeviceSize mr_gpu_set_max_binding(mr_ctx *ctx, VkDeviceSize bytes);

/* ---------------------------------------------------------------- context plumbing */

typedef struct mr_gpu mr_gpu;
mr_status mr_gpu_new(mr_ctx *ctx, const mr_ctx_opts *opts, mr_gpu **out);
void mr_gpu_free_all(mr_gpu *g);
size_t mr_gpu_profile_report(mr_gpu *g, char *buf, size_t cap);

/* Name for a VkResult in messages. */
const char *mr_vk_result_name(VkResult r);

#endif
