/* The command stream: dispatches are recorded into one command buffer with a
   barrier only where a real hazard exists, and submitted at sync points
   (downloads, uploads, explicit syncs). Optional per-dispatch timestamps feed
   the profile. */
#include "gpu/gpu_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Submit after this many dispatches so interrupts are seen and the device
   starts on work while more is recorded. */
#define MAX_DISPATCHES_PER_SUBMIT 512
#define STAGING_CHUNK ((VkDeviceSize)32 << 20)

mr_status mr_gpu_stream_init(mr_gpu *g) {
  mr_ctx *ctx = g->ctx;
  VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                .queueFamilyIndex = g->queue_family};
  mr_status st = mr_vk_check(ctx, vkCreateCommandPool(g->device, &pi, NULL, &g->pool), "vkCreateCommandPool");
  if (st != MR_OK) return st;
  VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = g->pool,
                                    .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
  st = mr_vk_check(ctx, vkAllocateCommandBuffers(g->device, &ai, &g->cmd), "vkAllocateCommandBuffers");
  if (st != MR_OK) return st;
  VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  st = mr_vk_check(ctx, vkCreateFence(g->device, &fi, NULL, &g->fence), "vkCreateFence");
  if (st != MR_OK) return st;
  if (g->profile) {
    VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = MR_PROFILE_QUERIES};
    st = mr_vk_check(ctx, vkCreateQueryPool(g->device, &qi, NULL, &g->queries), "vkCreateQueryPool");
  }
  return st;
}

void mr_gpu_stream_free_all(mr_gpu *g) {
  if (!g->device) return;
  if (g->recording) mr_gpu_sync(g->ctx);
  if (g->queries) vkDestroyQueryPool(g->device, g->queries, NULL);
  if (g->fence) vkDestroyFence(g->device, g->fence, NULL);
  if (g->pool) vkDestroyCommandPool(g->device, g->pool, NULL);
  free(g->hazards);
  free(g->views);
}

/* On a host's device the host's own work touches tensors' buffers (through
   mr_tensor_vk_buffer) in the same queue: a barrier over all memory at each
   end of the engine's command buffer orders that work against the engine's
   without the host knowing which stages the engine used. */
static void full_barrier(mr_gpu *g) {
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT};
  vkCmdPipelineBarrier(g->cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 1, &mb, 0,
                       NULL, 0, NULL);
}

static mr_status begin(mr_gpu *g) {
  if (g->recording) return MR_OK;
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  mr_status st = mr_vk_check(g->ctx, vkBeginCommandBuffer(g->cmd, &bi), "vkBeginCommandBuffer");
  if (st != MR_OK) return st;
  if (g->host) full_barrier(g); /* after whatever the host submitted before */
  if (g->queries) vkCmdResetQueryPool(g->cmd, g->queries, 0, MR_PROFILE_QUERIES);
  g->recording = true;
  g->ndispatch = 0;
  g->nqueries = 0;
  g->nhazards = 0;
  g->last_query = -1;
  return MR_OK;
}

bool mr_gpu_busy(const mr_ctx *ctx) { return ctx->gpu->recording; }

static void collect_profile(mr_gpu *g) {
  if (!g->queries || g->nqueries == 0) return;
  uint64_t *t = malloc(g->nqueries * sizeof *t);
  if (!t) return;
  if (vkGetQueryPoolResults(g->device, g->queries, 0, g->nqueries, g->nqueries * sizeof *t, t, sizeof *t,
                            VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
    for (uint32_t i = 0; i + 1 < g->nqueries; i += 2) {
      const char *op = g->query_op[i / 2];
      int k = 0;
      while (k < g->nkinds && strcmp(g->kinds[k].op, op) != 0) k++;
      if (k == g->nkinds) {
        if (g->nkinds == MR_MAX_PROFILE_KINDS) continue;
        g->kinds[g->nkinds++] = (mr_profile_kind){.op = op};
      }
      g->kinds[k].count++;
      g->kinds[k].ms += (double)(t[i + 1] - t[i]) * g->ns_per_tick * 1e-6;
      g->kinds[k].flops += g->query_flops[i / 2];
    }
  }
  free(t);
}

mr_status mr_gpu_sync(mr_ctx *ctx) {
  mr_gpu *g = ctx->gpu;
  if (!g->recording) return MR_OK;
  g->recording = false;
  if (g->host) full_barrier(g); /* before whatever the host submits next */
  mr_status st = mr_vk_check(ctx, vkEndCommandBuffer(g->cmd), "vkEndCommandBuffer");
  if (st == MR_OK) {
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &g->cmd};
    /* A host's queue may be shared with its other threads: Vulkan wants
       submissions to one queue externally synchronised. */
    if (g->lock) g->lock(g->lock_user);
    VkResult r = vkQueueSubmit(g->queue, 1, &si, g->fence);
    if (g->unlock) g->unlock(g->lock_user);
    st = mr_vk_check(ctx, r, "vkQueueSubmit");
  }
  if (st == MR_OK) {
    /* Submitted work cannot be aborted; the interrupt is honoured at the next dispatch. */
    VkResult r;
    while ((r = vkWaitForFences(g->device, 1, &g->fence, VK_TRUE, 100000000ull)) == VK_TIMEOUT) {}
    st = mr_vk_check(ctx, r, "vkWaitForFences");
    vkResetFences(g->device, 1, &g->fence);
    if (st == MR_OK) collect_profile(g);
  }
  vkResetCommandBuffer(g->cmd, 0);
  for (int i = 0; i < g->nviews; i++) vkDestroyBufferView(g->device, g->views[i], NULL);
  g->nviews = 0;
  return st;
}

static bool overlaps(const mr_hazard *h, const mr_binding *b) {
  return h->buffer == b->buffer && b->offset < h->end && h->offset < b->offset + b->range;
}

static mr_status note_hazards(mr_gpu *g, const mr_binding *b, int nbind) {
  bool conflict = false;
  for (int i = 0; i < nbind && !conflict; i++)
    for (int j = 0; j < g->nhazards && !conflict; j++)
      conflict = overlaps(&g->hazards[j], &b[i]) && (g->hazards[j].write || b[i].write);
  if (conflict) {
    /* Between dispatches and transfers (mr_gpu_copy_regions), either way: every
       earlier write visible, every earlier read done. */
    const VkAccessFlags rw = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                             VK_ACCESS_TRANSFER_READ_BIT;
    const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = rw, .dstAccessMask = rw};
    vkCmdPipelineBarrier(g->cmd, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
    g->nhazards = 0;
  }
  if (g->nhazards + nbind > g->caphazards) {
    int cap = g->caphazards ? g->caphazards * 2 : 64;
    while (cap < g->nhazards + nbind) cap *= 2;
    mr_hazard *h = realloc(g->hazards, (size_t)cap * sizeof *h);
    if (!h) return mr_error(g->ctx, MR_ENOMEM, "out of host memory");
    g->hazards = h;
    g->caphazards = cap;
  }
  for (int i = 0; i < nbind; i++)
    g->hazards[g->nhazards++] =
        (mr_hazard){.buffer = b[i].buffer, .offset = b[i].offset, .end = b[i].offset + b[i].range, .write = b[i].write};
  return MR_OK;
}

/* Submits when the command buffer is full, begins one, and orders the next
   command after the earlier ones that touch its ranges. */
static mr_status next_command(mr_gpu *g, const mr_binding *b, int nbind) {
  if (g->recording && (g->ndispatch >= MAX_DISPATCHES_PER_SUBMIT || g->nqueries + 2 > MR_PROFILE_QUERIES)) {
    mr_status st = mr_gpu_sync(g->ctx);
    if (st != MR_OK) return st;
  }
  mr_status st = begin(g);
  if (st != MR_OK) return st;
  return note_hazards(g, b, nbind);
}

/* Timestamps around the command recorded between them, for the profile. */
static void time_begin(mr_gpu *g, const char *op) {
  g->last_query = -1;
  if (!g->queries) return;
  g->last_query = (int)(g->nqueries / 2);
  g->query_op[g->last_query] = op;
  g->query_flops[g->last_query] = 0;
  vkCmdWriteTimestamp(g->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, g->queries, g->nqueries++);
}

static void time_end(mr_gpu *g) {
  if (g->queries) vkCmdWriteTimestamp(g->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, g->queries, g->nqueries++);
  g->ndispatch++;
}

mr_status mr_gpu_copy_regions(mr_ctx *ctx, const mr_binding *src, const mr_binding *dst, const VkBufferCopy *regions,
                              uint32_t n, const char *op) {
  mr_gpu *g = ctx->gpu;
  if (mr_ctx_take_interrupt(ctx)) return mr_error(ctx, MR_ECANCELED, "interrupted");
  if (n == 0) return MR_OK;
  mr_binding b[2] = {*src, *dst};
  b[0].write = false;
  b[1].write = true;
  mr_status st = next_command(g, b, 2);
  if (st != MR_OK) return st;
  time_begin(g, op);
  vkCmdCopyBuffer(g->cmd, src->buffer, dst->buffer, n, regions);
  time_end(g);
  return MR_OK;
}

mr_status mr_gpu_dispatch(mr_ctx *ctx, mr_pipeline *p, const mr_binding *b, int nbind, const void *push,
                          uint32_t gx, uint32_t gy, uint32_t gz, const char *op) {
  mr_gpu *g = ctx->gpu;
  MR_ASSERT(nbind == p->nbind);
  if (mr_ctx_take_interrupt(ctx)) return mr_error(ctx, MR_ECANCELED, "interrupted");
  if (gx == 0 || gy == 0 || gz == 0) return MR_OK;
  if (gx > g->caps.max_groups[0] || gy > g->caps.max_groups[1] || gz > g->caps.max_groups[2])
    return mr_error(ctx, MR_EINVAL, "%s: grid %ux%ux%u exceeds the device limit", op, gx, gy, gz);
  /* Ops split their work into binding-sized windows (ops/op_common.h): a
     binding over the limit is a bug in the op, not the caller's mistake. */
  for (int i = 0; i < nbind; i++)
    if (b[i].range > g->caps.max_binding)
      return mr_error(ctx, MR_EUNSUPPORTED, "%s: internal: binding %d over the limit (%llu > %llu bytes)", op, i,
                      (unsigned long long)b[i].range, (unsigned long long)g->caps.max_binding);
  mr_status st = next_command(g, b, nbind);
  if (st != MR_OK) return st;

  VkDescriptorBufferInfo bi[MR_MAX_BINDINGS];
  VkWriteDescriptorSet w[MR_MAX_BINDINGS];
  if (g->nviews + nbind > g->capviews) {
    int cap = g->capviews ? g->capviews * 2 : 64;
    while (cap < g->nviews + nbind) cap *= 2;
    VkBufferView *v = realloc(g->views, (size_t)cap * sizeof *v);
    if (!v) return mr_error(ctx, MR_ENOMEM, "out of host memory");
    g->views = v;
    g->capviews = cap;
  }
  for (int i = 0; i < nbind; i++) {
    MR_ASSERT(((p->texel_mask >> i) & 1) == (b[i].texel != VK_FORMAT_UNDEFINED));
    w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstBinding = (uint32_t)i,
                                  .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                  .pBufferInfo = &bi[i]};
    bi[i] = (VkDescriptorBufferInfo){.buffer = b[i].buffer, .offset = b[i].offset, .range = b[i].range};
    if (b[i].texel != VK_FORMAT_UNDEFINED) {
      /* views live until the sync that waits for this dispatch */
      VkBufferViewCreateInfo vi = {.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO, .buffer = b[i].buffer,
                                   .format = b[i].texel, .offset = b[i].offset, .range = b[i].range};
      VkBufferView *view = &g->views[g->nviews];
      st = mr_vk_check(ctx, vkCreateBufferView(g->device, &vi, NULL, view), "vkCreateBufferView");
      if (st != MR_OK) return st;
      g->nviews++;
      w[i].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
      w[i].pBufferInfo = NULL;
      w[i].pTexelBufferView = view;
    }
  }
  vkCmdBindPipeline(g->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
  g->push_descriptor(g->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, (uint32_t)nbind, w);
  if (p->push_size) vkCmdPushConstants(g->cmd, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p->push_size, push);
  time_begin(g, op);
  vkCmdDispatch(g->cmd, gx, gy, gz);
  time_end(g);
  return MR_OK;
}

void mr_gpu_count_flops(mr_ctx *ctx, double flops) {
  mr_gpu *g = ctx->gpu;
  g->flops += flops;
  if (g->recording && g->last_query >= 0) g->query_flops[g->last_query] += flops;
}

double mr_ctx_flops(const mr_ctx *ctx) { return ctx->gpu->flops; }

void mr_gpu_grid(const mr_ctx *ctx, uint64_t groups, uint32_t *gx, uint32_t *gy) {
  uint64_t maxx = ctx->gpu->caps.max_groups[0];
  if (groups <= maxx) {
    *gx = (uint32_t)groups;
    *gy = 1;
  } else {
    *gy = (uint32_t)((groups + maxx - 1) / maxx);
    *gx = (uint32_t)((groups + *gy - 1) / *gy);
  }
}

/* One transfer through the staging buffer, submitted and waited for. */
static mr_status staged_copy(mr_gpu *g, VkBuffer src, VkDeviceSize so, VkBuffer dst, VkDeviceSize dof,
                             VkDeviceSize n) {
  mr_status st = begin(g);
  if (st != MR_OK) return st;
  VkBufferCopy c = {.srcOffset = so, .dstOffset = dof, .size = n};
  vkCmdCopyBuffer(g->cmd, src, dst, 1, &c);
  return mr_gpu_sync(g->ctx);
}

mr_status mr_gpu_upload(mr_ctx *ctx, const mr_alloc *dst, VkDeviceSize offset, const void *src, VkDeviceSize n) {
  mr_gpu *g = ctx->gpu;
  mr_status st = mr_gpu_sync(ctx);
  if (st != MR_OK) return st;
  if (dst->mapped) {
    memcpy((char *)dst->mapped + offset, src, n);
    return MR_OK;
  }
  for (VkDeviceSize done = 0; done < n;) {
    VkDeviceSize chunk = n - done < STAGING_CHUNK ? n - done : STAGING_CHUNK;
    mr_alloc *s;
    if ((st = mr_gpu_staging(g, chunk, &s)) != MR_OK) return st;
    memcpy(s->mapped, (const char *)src + done, chunk);
    if ((st = staged_copy(g, s->buffer, 0, dst->buffer, dst->offset + offset + done, chunk)) != MR_OK) return st;
    done += chunk;
  }
  return MR_OK;
}

mr_status mr_gpu_download(mr_ctx *ctx, const mr_alloc *src, VkDeviceSize offset, void *dst, VkDeviceSize n) {
  mr_gpu *g = ctx->gpu;
  mr_status st = mr_gpu_sync(ctx);
  if (st != MR_OK) return st;
  if (src->mapped) {
    memcpy(dst, (const char *)src->mapped + offset, n);
    return MR_OK;
  }
  for (VkDeviceSize done = 0; done < n;) {
    VkDeviceSize chunk = n - done < STAGING_CHUNK ? n - done : STAGING_CHUNK;
    mr_alloc *s;
    if ((st = mr_gpu_staging(g, chunk, &s)) != MR_OK) return st;
    if ((st = staged_copy(g, src->buffer, src->offset + offset + done, s->buffer, 0, chunk)) != MR_OK) return st;
    memcpy((char *)dst + done, s->mapped, chunk);
    done += chunk;
  }
  return MR_OK;
}

size_t mr_gpu_profile_report(mr_gpu *g, char *buf, size_t cap) {
  size_t len = 0;
  double total = 0;
  for (int k = 0; k < g->nkinds; k++) total += g->kinds[k].ms;
#define EMIT(...) len += (size_t)snprintf(buf + (len < cap ? len : cap), len < cap ? cap - len : 0, __VA_ARGS__)
  if (cap) buf[0] = 0;
  if (!g->profile) {
    EMIT("profile off (set MOONREEL_PROFILE=1)\n");
    return len;
  }
  EMIT("moonreel profile (%s)\n%-24s %10s %12s %8s %10s %10s\n", g->caps.info.name, "op", "dispatches", "ms",
       "share", "GFLOP", "GFLOP/s");
  double total_flops = 0;
  for (int k = 0; k < g->nkinds; k++) {
    const mr_profile_kind *pk = &g->kinds[k];
    EMIT("%-24s %10llu %12.3f %7.1f%%", pk->op, (unsigned long long)pk->count, pk->ms,
         total > 0 ? 100.0 * pk->ms / total : 0.0);
    /* only the ops that count their FLOPs (matmul, attention, conv3d) get the columns */
    if (pk->flops > 0) EMIT(" %10.3f %10.2f", pk->flops * 1e-9, pk->ms > 0 ? pk->flops / (pk->ms * 1e6) : 0.0);
    EMIT("\n");
    total_flops += pk->flops;
  }
  EMIT("%-24s %10s %12.3f %8s", "total", "", total, "");
  if (total_flops > 0) EMIT(" %10.3f %10.2f", total_flops * 1e-9, total > 0 ? total_flops / (total * 1e6) : 0.0);
  EMIT("\n");
#undef EMIT
  return len;
}
