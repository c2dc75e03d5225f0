/* Fields of the Vulkan state, shared by engine/gpu/vk_*.c only. */
#ifndef MR_GPU_IMPL_H
#define MR_GPU_IMPL_H

#include "core/ctx_impl.h"
#include "gpu/gpu.h"

#define MR_MAX_BINDINGS 8
#define MR_PIPELINE_BUCKETS 256
#define MR_PROFILE_QUERIES 4096
#define MR_MAX_PROFILE_KINDS 64

struct mr_block {
  VkDeviceMemory memory;
  VkBuffer buffer;
  VkDeviceSize size;
  void *mapped;          /* whole block mapped when host-visible */
  bool large;            /* serves the large size class (vk_memory.c) */
  VkDeviceSize used;     /* bytes handed out */
  /* Free ranges, sorted by offset, coalesced on release. */
  struct mr_range { VkDeviceSize offset, size; } *free;
  int nfree, capfree;
  struct mr_block *next;
};

struct mr_pipeline {
  uint32_t hash;                /* of shader, nbind and spec (vk_pipeline.c) */
  char shader[64];
  uint32_t spec[16];
  int nspec;
  int nbind;
  uint32_t texel_mask;          /* bindings declared as uniform texel buffers */
  uint32_t push_size;
  VkDescriptorSetLayout set_layout;
  VkPipelineLayout layout;
  VkPipeline pipeline;
  struct mr_pipeline *next;
};

/* A range some recorded dispatch touched since the last barrier. */
typedef struct mr_hazard {
  VkBuffer buffer;
  VkDeviceSize offset, end;
  bool write;
} mr_hazard;

typedef struct mr_profile_kind {
  const char *op;
  uint64_t count;
  double ms;
  double flops;                 /* useful FLOPs counted for these dispatches */
} mr_profile_kind;

struct mr_gpu {
  mr_ctx *ctx;
  VkInstance instance;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  VkDevice device;
  VkQueue queue;
  uint32_t queue_family;
  mr_gpu_caps caps;
  VkPhysicalDeviceMemoryProperties memprops;
  uint32_t memtype;             /* the type tensors live in */
  bool memtype_host_visible;
  uint32_t staging_type;        /* host-visible type for uploads/downloads */
  VkDeviceSize max_allocation;  /* maxMemoryAllocationSize */
  PFN_vkCmdPushDescriptorSetKHR push_descriptor;
  /* On a host's device (mr_vk_host): instance, device and queue are the
     host's, never destroyed here; submissions take the host's queue lock and
     are bracketed by full memory barriers (vk_stream.c). */
  bool host;
  void (*lock)(void *user);
  void (*unlock)(void *user);
  void *lock_user;

  /* memory */
  mr_block *blocks;
  VkDeviceSize live, held;      /* bytes handed to tensors; bytes of the blocks (tensor memory type) */
  VkDeviceSize peak_live, peak_held;
  VkDeviceSize budget;          /* held never passes it */
  const char *budget_source;
  uint64_t vk_allocations;      /* vkAllocateMemory calls */
  uint64_t fail_at, alloc_attempts; /* mr_ctx_memory_fail_at */
  mr_alloc staging;             /* grows on demand */

  /* pipelines */
  VkPipelineCache cache;
  char cache_path[1024];
  VkShaderModule *modules;      /* by index in mr_shader_blobs */
  int nmodules;
  mr_pipeline *pipeline_table[MR_PIPELINE_BUCKETS]; /* chained by hash */

  /* command stream */
  VkCommandPool pool;
  VkCommandBuffer cmd;
  VkFence fence;
  bool recording;
  uint32_t ndispatch;           /* dispatches recorded since the last submit */
  mr_hazard *hazards;
  int nhazards, caphazards;
  VkBufferView *views;          /* texel buffer views of the recorded dispatches, destroyed at the sync */
  int nviews, capviews;

  /* work accounting */
  double flops;                 /* useful FLOPs of every dispatch counted so far */

  /* profile */
  bool profile;
  VkQueryPool queries;
  uint32_t nqueries;
  const char *query_op[MR_PROFILE_QUERIES / 2];
  double query_flops[MR_PROFILE_QUERIES / 2];
  int last_query;               /* query pair of the last dispatch recorded, -1 if none since the submit */
  double ns_per_tick;
  mr_profile_kind kinds[MR_MAX_PROFILE_KINDS];
  int nkinds;
};

mr_status mr_gpu_staging(mr_gpu *g, VkDeviceSize n, mr_alloc **out);
mr_status mr_vk_check(mr_ctx *ctx, VkResult r, const char *what);
mr_status mr_gpu_memory_trim(mr_gpu *g);
mr_status mr_gpu_memory_init(mr_gpu *g);
void mr_gpu_memory_free_all(mr_gpu *g);
mr_status mr_gpu_pipelines_init(mr_gpu *g, const char *cache_dir);
void mr_gpu_pipelines_free_all(mr_gpu *g);
mr_status mr_gpu_stream_init(mr_gpu *g);
void mr_gpu_stream_free_all(mr_gpu *g);

#endif
