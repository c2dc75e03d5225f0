/* Device memory: shared blocks carved by a first-fit free list, dedicated
   blocks for large tensors, a budget check before every allocation, and frees
   deferred until recorded work is done with the memory. */
#include "gpu/gpu_impl.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK_BYTES ((VkDeviceSize)64 << 20)     /* shared block size */
#define DEDICATED_BYTES ((VkDeviceSize)16 << 20) /* at or above this, a block of its own */
#define ALLOC_ALIGN ((VkDeviceSize)256)          /* covers minStorageBufferOffsetAlignment everywhere */

static VkDeviceSize round_up(VkDeviceSize v, VkDeviceSize a) { return (v + a - 1) / a * a; }

static int find_type(const VkPhysicalDeviceMemoryProperties *mp, uint32_t bits, VkMemoryPropertyFlags want) {
  for (uint32_t i = 0; i < mp->memoryTypeCount; i++)
    if ((bits & (1u << i)) && (mp->memoryTypes[i].propertyFlags & want) == want) return (int)i;
  return -1;
}

mr_status mr_gpu_memory_init(mr_gpu *g) {
  vkGetPhysicalDeviceMemoryProperties(g->phys, &g->memprops);
  const VkMemoryPropertyFlags local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  /* On CPU and integrated devices device memory is host memory: map it and skip staging copies. */
  int t = -1;
  if (g->caps.info.type == MR_DEVICE_CPU || g->caps.info.type == MR_DEVICE_INTEGRATED)
    t = find_type(&g->memprops, ~0u, local | host);
  if (t < 0) t = find_type(&g->memprops, ~0u, local);
  if (t < 0) t = find_type(&g->memprops, ~0u, 0);
  int s = find_type(&g->memprops, ~0u, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  if (s < 0) s = find_type(&g->memprops, ~0u, host);
  if (t < 0 || s < 0) return mr_error(g->ctx, MR_ENODEVICE, "device '%s' has no usable memory type", g->caps.info.name);
  g->memtype = (uint32_t)t;
  g->staging_type = (uint32_t)s;
  g->memtype_host_visible = (g->memprops.memoryTypes[t].propertyFlags & host) == host;
  g->heap_budget = g->memprops.memoryHeaps[g->memprops.memoryTypes[t].heapIndex].size;
  return MR_OK;
}

static mr_status block_new(mr_gpu *g, VkDeviceSize size, uint32_t type, bool dedicated, mr_block **out) {
  mr_ctx *ctx = g->ctx;
  *out = NULL;
  if (type == g->memtype && g->in_use + size > g->heap_budget)
    return mr_error(ctx, MR_EDEVMEM,
                    "out of device memory: asked for %.1f MiB, %.1f MiB of the %.1f MiB budget in use",
                    size / 1048576.0, g->in_use / 1048576.0, g->heap_budget / 1048576.0);
  mr_block *b = calloc(1, sizeof *b);
  if (!b) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                           .size = size,
                           .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                    VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                           .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  VkResult r = vkCreateBuffer(g->device, &bi, NULL, &b->buffer);
  if (r != VK_SUCCESS) {
    free(b);
    return mr_vk_check(ctx, r, "vkCreateBuffer");
  }
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(g->device, b->buffer, &req);
  if (!(req.memoryTypeBits & (1u << type))) {
    vkDestroyBuffer(g->device, b->buffer, NULL);
    free(b);
    return mr_error(ctx, MR_EUNSUPPORTED, "storage buffers cannot use the chosen memory type");
  }
  VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                             .memoryTypeIndex = type};
  r = vkAllocateMemory(g->device, &ai, NULL, &b->memory);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(g->device, b->buffer, NULL);
    free(b);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      return mr_error(ctx, MR_EDEVMEM, "out of device memory: asked for %.1f MiB, %.1f MiB of %.1f MiB in use (%s)",
                      size / 1048576.0, g->in_use / 1048576.0, g->heap_budget / 1048576.0, mr_vk_result_name(r));
    return mr_vk_check(ctx, r, "vkAllocateMemory");
  }
  vkBindBufferMemory(g->device, b->buffer, b->memory, 0);
  if (g->memprops.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
    r = vkMapMemory(g->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped);
    if (r != VK_SUCCESS) b->mapped = NULL;
  }
  b->size = size;
  b->dedicated = dedicated;
  if (!dedicated) {
    b->capfree = 8;
    b->free = malloc(b->capfree * sizeof *b->free);
    if (!b->free) {
      vkDestroyBuffer(g->device, b->buffer, NULL);
      vkFreeMemory(g->device, b->memory, NULL);
      free(b);
      return mr_error(ctx, MR_ENOMEM, "out of host memory");
    }
    b->free[0].offset = 0;
    b->free[0].size = size;
    b->nfree = 1;
  }
  if (type == g->memtype) g->in_use += size;
  *out = b;
  return MR_OK;
}

static void block_destroy(mr_gpu *g, mr_block *b) {
  if (b->mapped) vkUnmapMemory(g->device, b->memory);
  vkDestroyBuffer(g->device, b->buffer, NULL);
  vkFreeMemory(g->device, b->memory, NULL);
  free(b->free);
  free(b);
}

/* First fit in one shared block; false if nothing fits. */
static bool block_take(mr_block *b, VkDeviceSize size, VkDeviceSize *offset) {
  for (int i = 0; i < b->nfree; i++) {
    if (b->free[i].size < size) continue;
    *offset = b->free[i].offset;
    b->free[i].offset += size;
    b->free[i].size -= size;
    if (b->free[i].size == 0) {
      memmove(&b->free[i], &b->free[i + 1], (size_t)(b->nfree - i - 1) * sizeof *b->free);
      b->nfree--;
    }
    return true;
  }
  return false;
}

static bool block_give(mr_block *b, VkDeviceSize offset, VkDeviceSize size) {
  int i = 0;
  while (i < b->nfree && b->free[i].offset < offset) i++;
  bool merge_prev = i > 0 && b->free[i - 1].offset + b->free[i - 1].size == offset;
  bool merge_next = i < b->nfree && offset + size == b->free[i].offset;
  if (merge_prev && merge_next) {
    b->free[i - 1].size += size + b->free[i].size;
    memmove(&b->free[i], &b->free[i + 1], (size_t)(b->nfree - i - 1) * sizeof *b->free);
    b->nfree--;
  } else if (merge_prev) {
    b->free[i - 1].size += size;
  } else if (merge_next) {
    b->free[i].offset = offset;
    b->free[i].size += size;
  } else {
    if (b->nfree == b->capfree) {
      struct mr_range *nf = realloc(b->free, (size_t)b->capfree * 2 * sizeof *nf);
      if (!nf) return false; /* the range leaks until the block is destroyed; never corrupts */
      b->free = nf;
      b->capfree *= 2;
    }
    memmove(&b->free[i + 1], &b->free[i], (size_t)(b->nfree - i) * sizeof *b->free);
    b->free[i].offset = offset;
    b->free[i].size = size;
    b->nfree++;
  }
  return true;
}

mr_status mr_gpu_alloc(mr_ctx *ctx, VkDeviceSize size, mr_alloc *out) {
  mr_gpu *g = ctx->gpu;
  memset(out, 0, sizeof *out);
  size = round_up(size ? size : 1, ALLOC_ALIGN);
  mr_block *b = NULL;
  VkDeviceSize offset = 0;
  if (size >= DEDICATED_BYTES) {
    mr_status st = block_new(g, size, g->memtype, true, &b);
    if (st != MR_OK) return st;
    b->next = g->blocks;
    g->blocks = b;
  } else {
    for (b = g->blocks; b; b = b->next)
      if (!b->dedicated && block_take(b, size, &offset)) break;
    if (!b) {
      mr_status st = block_new(g, BLOCK_BYTES, g->memtype, false, &b);
      if (st != MR_OK) return st;
      b->next = g->blocks;
      g->blocks = b;
      block_take(b, size, &offset);
    }
  }
  out->block = b;
  out->buffer = b->buffer;
  out->offset = offset;
  out->size = size;
  out->mapped = b->mapped ? (char *)b->mapped + offset : NULL;
  return MR_OK;
}

static void release_now(mr_gpu *g, mr_alloc *a) {
  mr_block *b = a->block;
  if (b->dedicated) {
    for (mr_block **p = &g->blocks; *p; p = &(*p)->next)
      if (*p == b) {
        *p = b->next;
        break;
      }
    g->in_use -= b->size;
    block_destroy(g, b);
  } else {
    block_give(b, a->offset, a->size);
  }
}

void mr_gpu_free(mr_ctx *ctx, mr_alloc *a) {
  if (!a || !a->block) return;
  mr_gpu *g = ctx->gpu;
  if (mr_gpu_busy(ctx)) {
    /* Recorded dispatches may still read this memory: release after the next sync. */
    if (g->ndeferred == g->capdeferred) {
      int cap = g->capdeferred ? g->capdeferred * 2 : 64;
      mr_alloc *d = realloc(g->deferred, (size_t)cap * sizeof *d);
      if (!d) {
        mr_gpu_sync(ctx); /* cannot defer: make it safe to release now */
        release_now(g, a);
        memset(a, 0, sizeof *a);
        return;
      }
      g->deferred = d;
      g->capdeferred = cap;
    }
    g->deferred[g->ndeferred++] = *a;
  } else {
    release_now(g, a);
  }
  memset(a, 0, sizeof *a);
}

void mr_gpu_release_deferred(mr_gpu *g) {
  for (int i = 0; i < g->ndeferred; i++) release_now(g, &g->deferred[i]);
  g->ndeferred = 0;
}

VkDeviceSize mr_gpu_bytes_in_use(const mr_ctx *ctx) { return ctx->gpu->in_use; }

void mr_gpu_memory_free_all(mr_gpu *g) {
  mr_gpu_release_deferred(g);
  free(g->deferred);
  if (g->staging.block) block_destroy(g, g->staging.block);
  while (g->blocks) {
    mr_block *b = g->blocks;
    g->blocks = b->next;
    block_destroy(g, b);
  }
}

/* The staging buffer, grown to at least n bytes (capped by the caller's chunking). */
mr_status mr_gpu_staging(mr_gpu *g, VkDeviceSize n, mr_alloc **out) {
  if (!g->staging.block || g->staging.size < n) {
    if (g->staging.block) block_destroy(g, g->staging.block);
    memset(&g->staging, 0, sizeof g->staging);
    mr_block *b;
    mr_status st = block_new(g, round_up(n, ALLOC_ALIGN), g->staging_type, true, &b);
    if (st != MR_OK) return st;
    if (!b->mapped) {
      block_destroy(g, b);
      return mr_error(g->ctx, MR_EVULKAN, "could not map the staging buffer");
    }
    g->staging.block = b;
    g->staging.buffer = b->buffer;
    g->staging.size = b->size;
    g->staging.mapped = b->mapped;
  }
  *out = &g->staging;
  return MR_OK;
}
