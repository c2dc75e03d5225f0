/* Device memory, reused in stream order.

   Every block is one VkDeviceMemory with one VkBuffer over it, carved by a
   free list. A freed range goes back to its block at once, even while
   recorded work still reads it: all work runs in one stream, and the hazard
   tracker (vk_stream.c) puts a barrier before any later dispatch that
   touches a range an earlier one used, so the next owner of the bytes waits
   for the last one. Host copies sync first (mr_gpu_upload/download). Only
   giving a block back to Vulkan has to wait for the fence, because a
   recorded command buffer names its VkBuffer: that happens in
   mr_gpu_memory_trim, which syncs first, when an allocation would pass the
   budget or when the caller asks.

   Two size classes keep large tensors from being split by small ones:
   small requests share blocks that grow with what is held (4 to 64 MiB);
   large ones take the best-fitting free range of the large blocks, so a
   DiT step's FFN hidden state lands in the block the last step freed. */
#include "gpu/gpu_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SMALL_BLOCK_MIN ((VkDeviceSize)4 << 20)
#define SMALL_BLOCK_MAX ((VkDeviceSize)64 << 20)
#define LARGE_BYTES ((VkDeviceSize)16 << 20)     /* at or above this, the large class */
#define LARGE_GRAIN ((VkDeviceSize)1 << 20)      /* large blocks are whole MiB */
#define ALLOC_ALIGN ((VkDeviceSize)256)          /* covers minStorageBufferOffsetAlignment everywhere */

static VkDeviceSize round_up(VkDeviceSize v, VkDeviceSize a) { return (v + a - 1) / a * a; }

static int find_type(const VkPhysicalDeviceMemoryProperties *mp, uint32_t bits, VkMemoryPropertyFlags want) {
  for (uint32_t i = 0; i < mp->memoryTypeCount; i++)
    if ((bits & (1u << i)) && (mp->memoryTypes[i].propertyFlags & want) == want) return (int)i;
  return -1;
}

/* "3G", "512M", "1.5GiB", "1073741824": bytes, or 0 if it does not parse. */
static VkDeviceSize parse_bytes(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || !(v > 0)) return 0;
  while (*end == ' ') end++;
  double unit = 1;
  switch (*end) {
  case 'k': case 'K': unit = 1024.0; end++; break;
  case 'm': case 'M': unit = 1048576.0; end++; break;
  case 'g': case 'G': unit = 1073741824.0; end++; break;
  case 't': case 'T': unit = 1099511627776.0; end++; break;
  default: break;
  }
  if (*end == 'i') end++;
  if (*end == 'B' || *end == 'b') end++;
  if (*end) return 0;
  double b = v * unit;
  return b >= 1.8e19 ? 0 : (VkDeviceSize)b;
}

/* Host memory the kernel says can be taken without swapping (MemAvailable). */
static VkDeviceSize host_available(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (f) {
    char line[256];
    unsigned long long kb;
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
        fclose(f);
        return (VkDeviceSize)kb * 1024;
      }
    fclose(f);
  }
  long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
  return pages > 0 && size > 0 ? (VkDeviceSize)pages * (VkDeviceSize)size : 0;
}

/* The budget: MOONREEL_DEVICE_BUDGET if set; on a CPU-type device (its
   device memory is host memory, and lavapipe reports a nominal 2 GiB heap)
   the host's available memory; otherwise the heap the tensors live in. */
static mr_status choose_budget(mr_gpu *g, VkDeviceSize heap) {
  const char *env = getenv("MOONREEL_DEVICE_BUDGET");
  if (env && *env) {
    g->budget = parse_bytes(env);
    if (!g->budget)
      return mr_error(g->ctx, MR_EINVAL, "MOONREEL_DEVICE_BUDGET: '%s' is not a size (bytes, or with K, M, G: \"6G\")",
                      env);
    g->budget_source = "MOONREEL_DEVICE_BUDGET";
    return MR_OK;
  }
  VkDeviceSize host = g->caps.info.type == MR_DEVICE_CPU ? host_available() : 0;
  if (host) {
    g->budget = host;
    g->budget_source = "host memory available";
  } else {
    g->budget = heap;
    g->budget_source = "device heap";
  }
  return MR_OK;
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

  VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
  vkGetPhysicalDeviceProperties2(g->phys, &p2);
  g->max_allocation = m3.maxMemoryAllocationSize;
  return choose_budget(g, g->memprops.memoryHeaps[g->memprops.memoryTypes[t].heapIndex].size);
}

static void block_destroy(mr_gpu *g, mr_block *b) {
  if (b->mapped) vkUnmapMemory(g->device, b->memory);
  vkDestroyBuffer(g->device, b->buffer, NULL);
  vkFreeMemory(g->device, b->memory, NULL);
  free(b->free);
  free(b);
}

static mr_status out_of_memory(mr_gpu *g, VkDeviceSize size, const char *why) {
  return mr_error(g->ctx, MR_EDEVMEM,
                  "out of device memory: asked for %.1f MiB with %.1f MiB in use and %.1f MiB held, budget %.1f MiB "
                  "(%s)%s%s",
                  size / 1048576.0, g->live / 1048576.0, g->held / 1048576.0, g->budget / 1048576.0,
                  g->budget_source, why ? ": " : "", why ? why : "");
}

static mr_status block_new(mr_gpu *g, VkDeviceSize size, uint32_t type, bool large, mr_block **out) {
  mr_ctx *ctx = g->ctx;
  *out = NULL;
  bool counted = type == g->memtype;
  if (g->max_allocation && size > g->max_allocation)
    return mr_error(ctx, MR_EDEVMEM, "a %.1f MiB tensor is larger than this device's %.1f MiB allocation limit "
                    "(maxMemoryAllocationSize)", size / 1048576.0, g->max_allocation / 1048576.0);
  if (counted && g->held + size > g->budget) return out_of_memory(g, size, NULL);
  mr_block *b = calloc(1, sizeof *b);
  if (!b) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  b->capfree = 8;
  b->free = malloc((size_t)b->capfree * sizeof *b->free);
  if (!b->free) {
    free(b);
    return mr_error(ctx, MR_ENOMEM, "out of host memory");
  }
  VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                           .size = size,
                           .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                                    VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                    VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                           .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  VkResult r = vkCreateBuffer(g->device, &bi, NULL, &b->buffer);
  if (r != VK_SUCCESS) {
    free(b->free);
    free(b);
    return mr_vk_check(ctx, r, "vkCreateBuffer");
  }
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(g->device, b->buffer, &req);
  if (!(req.memoryTypeBits & (1u << type))) {
    vkDestroyBuffer(g->device, b->buffer, NULL);
    free(b->free);
    free(b);
    return mr_error(ctx, MR_EUNSUPPORTED, "storage buffers cannot use the chosen memory type");
  }
  VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                             .memoryTypeIndex = type};
  r = vkAllocateMemory(g->device, &ai, NULL, &b->memory);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(g->device, b->buffer, NULL);
    free(b->free);
    free(b);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      return out_of_memory(g, size, mr_vk_result_name(r));
    return mr_vk_check(ctx, r, "vkAllocateMemory");
  }
  g->vk_allocations++;
  vkBindBufferMemory(g->device, b->buffer, b->memory, 0);
  if (g->memprops.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
    r = vkMapMemory(g->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped);
    if (r != VK_SUCCESS) b->mapped = NULL;
  }
  b->size = size;
  b->large = large;
  b->free[0].offset = 0;
  b->free[0].size = size;
  b->nfree = 1;
  if (counted) {
    g->held += size;
    if (g->held > g->peak_held) g->peak_held = g->held;
  }
  *out = b;
  return MR_OK;
}

static void take_range(mr_block *b, int i, VkDeviceSize size, VkDeviceSize *offset) {
  *offset = b->free[i].offset;
  b->free[i].offset += size;
  b->free[i].size -= size;
  if (b->free[i].size == 0) {
    memmove(&b->free[i], &b->free[i + 1], (size_t)(b->nfree - i - 1) * sizeof *b->free);
    b->nfree--;
  }
  b->used += size;
}

static bool give_range(mr_block *b, VkDeviceSize offset, VkDeviceSize size) {
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
      if (!nf) return false; /* the range stays taken until the block is destroyed; never corrupts */
      b->free = nf;
      b->capfree *= 2;
    }
    memmove(&b->free[i + 1], &b->free[i], (size_t)(b->nfree - i) * sizeof *b->free);
    b->free[i].offset = offset;
    b->free[i].size = size;
    b->nfree++;
  }
  b->used -= size;
  return true;
}

/* The smallest free range of the class that holds size bytes (best fit). */
static bool best_fit(mr_gpu *g, VkDeviceSize size, bool large, mr_block **ob, int *oi) {
  VkDeviceSize best = 0;
  *ob = NULL;
  for (mr_block *b = g->blocks; b; b = b->next) {
    if (b->large != large) continue;
    for (int i = 0; i < b->nfree; i++)
      if (b->free[i].size >= size && (!*ob || b->free[i].size < best)) {
        *ob = b;
        *oi = i;
        best = b->free[i].size;
        if (best == size) return true;
      }
  }
  return *ob != NULL;
}

/* Gives every unused block back to Vulkan; syncs first, since recorded
   commands may still name their buffers. */
mr_status mr_gpu_memory_trim(mr_gpu *g) {
  mr_status st = mr_gpu_sync(g->ctx);
  for (mr_block **p = &g->blocks; *p;) {
    mr_block *b = *p;
    if (b->used == 0) {
      *p = b->next;
      g->held -= b->size;
      block_destroy(g, b);
    } else {
      p = &b->next;
    }
  }
  return st;
}

mr_status mr_gpu_alloc(mr_ctx *ctx, VkDeviceSize size, mr_alloc *out) {
  mr_gpu *g = ctx->gpu;
  memset(out, 0, sizeof *out);
  size = round_up(size ? size : 1, ALLOC_ALIGN);
  if (g->fail_at && ++g->alloc_attempts == g->fail_at)
    return out_of_memory(g, size, "failure injected by mr_ctx_memory_fail_at");
  bool large = size >= LARGE_BYTES;
  mr_block *b;
  int i = 0;
  if (!best_fit(g, size, large, &b, &i)) {
    VkDeviceSize want = large ? round_up(size, LARGE_GRAIN) : g->held / 8;
    if (!large) {
      if (want < SMALL_BLOCK_MIN) want = SMALL_BLOCK_MIN;
      if (want > SMALL_BLOCK_MAX) want = SMALL_BLOCK_MAX;
      want = round_up(want < size ? size : want, LARGE_GRAIN);
    }
    mr_status st = block_new(g, want, g->memtype, large, &b);
    if (st == MR_EDEVMEM && g->held > g->live) {
      /* Unused blocks (of either class) may make room once given back. */
      if ((st = mr_gpu_memory_trim(g)) == MR_OK) st = block_new(g, want, g->memtype, large, &b);
    }
    if (st != MR_OK) return st;
    b->next = g->blocks;
    g->blocks = b;
    i = 0;
  }
  VkDeviceSize offset;
  take_range(b, i, size, &offset);
  g->live += size;
  if (g->live > g->peak_live) g->peak_live = g->live;
  out->block = b;
  out->buffer = b->buffer;
  out->offset = offset;
  out->size = size;
  out->mapped = b->mapped ? (char *)b->mapped + offset : NULL;
  return MR_OK;
}

void mr_gpu_free(mr_ctx *ctx, mr_alloc *a) {
  if (!a || !a->block) return;
  mr_gpu *g = ctx->gpu;
  /* Stream order makes this safe at once: see the top of the file. */
  give_range(a->block, a->offset, a->size);
  g->live -= a->size;
  memset(a, 0, sizeof *a);
}

VkDeviceSize mr_gpu_bytes_in_use(const mr_ctx *ctx) { return ctx->gpu->live; }

void mr_gpu_memory_free_all(mr_gpu *g) {
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

/* ---------------------------------------------------------------- the public view */

void mr_ctx_memory_stats(const mr_ctx *ctx, mr_memory_stats *out) {
  const mr_gpu *g = ctx->gpu;
  int nblocks = 0;
  for (const mr_block *b = g->blocks; b; b = b->next) nblocks++;
  *out = (mr_memory_stats){.live_bytes = g->live,
                           .held_bytes = g->held,
                           .peak_live_bytes = g->peak_live,
                           .peak_held_bytes = g->peak_held,
                           .budget_bytes = g->budget,
                           .budget_source = g->budget_source,
                           .blocks = nblocks,
                           .device_allocations = g->vk_allocations};
}

void mr_ctx_memory_reset_peak(mr_ctx *ctx) {
  ctx->gpu->peak_live = ctx->gpu->live;
  ctx->gpu->peak_held = ctx->gpu->held;
}

mr_status mr_ctx_memory_trim(mr_ctx *ctx) { return mr_gpu_memory_trim(ctx->gpu); }

void mr_ctx_memory_fail_at(mr_ctx *ctx, uint64_t n) {
  ctx->gpu->fail_at = n;
  ctx->gpu->alloc_attempts = 0;
}
