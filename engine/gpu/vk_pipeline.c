/* Compute pipelines: embedded SPIR-V, specialization constants, push
   descriptors, and a VkPipelineCache persisted on disk per device. */
#include "gpu/gpu_impl.h"
#include "gpu/shader_registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mkdir_p(const char *path) {
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  return mkdir(tmp, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static void cache_path(mr_gpu *g, const char *dir, char *out, size_t cap) {
  char base[900];
  out[0] = 0;
  if (dir && !*dir) return; /* "" turns the on-disk cache off */
  if (dir) {
    snprintf(base, sizeof base, "%s", dir);
  } else if (getenv("XDG_CACHE_HOME") && *getenv("XDG_CACHE_HOME")) {
    snprintf(base, sizeof base, "%s/moonreel", getenv("XDG_CACHE_HOME"));
  } else if (getenv("HOME") && *getenv("HOME")) {
    snprintf(base, sizeof base, "%s/.cache/moonreel", getenv("HOME"));
  } else {
    return;
  }
  if (mkdir_p(base) != 0) return;
  VkPhysicalDeviceIDProperties id = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &id};
  vkGetPhysicalDeviceProperties2(g->phys, &p2);
  char uuid[33];
  for (int i = 0; i < 16; i++) snprintf(uuid + 2 * i, 3, "%02x", id.deviceUUID[i]);
  snprintf(out, cap, "%s/pipelines-%04x-%04x-%s.bin", base, p2.properties.vendorID, p2.properties.deviceID, uuid);
}

mr_status mr_gpu_pipelines_init(mr_gpu *g, const char *cache_dir) {
  int n = 0;
  while (mr_shader_blobs[n].name) n++;
  g->nmodules = n;
  g->modules = calloc(n ? (size_t)n : 1, sizeof *g->modules);
  if (!g->modules) return mr_error(g->ctx, MR_ENOMEM, "out of host memory");

  cache_path(g, cache_dir, g->cache_path, sizeof g->cache_path);
  void *data = NULL;
  size_t size = 0;
  FILE *f = g->cache_path[0] ? fopen(g->cache_path, "rb") : NULL;
  if (f) {
    if (fseek(f, 0, SEEK_END) == 0) {
      long len = ftell(f);
      if (len > 0 && len < (64l << 20) && (data = malloc((size_t)len)) != NULL) {
        rewind(f);
        size = fread(data, 1, (size_t)len, f);
      }
    }
    fclose(f);
  }
  /* The driver checks the header (vendor, device, UUID) and ignores a stale cache. */
  VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                  .initialDataSize = size, .pInitialData = data};
  VkResult r = vkCreatePipelineCache(g->device, &ci, NULL, &g->cache);
  if (r != VK_SUCCESS && size) { /* a corrupt file: start empty */
    ci.initialDataSize = 0;
    ci.pInitialData = NULL;
    r = vkCreatePipelineCache(g->device, &ci, NULL, &g->cache);
  }
  free(data);
  return mr_vk_check(g->ctx, r, "vkCreatePipelineCache");
}

static void save_cache(mr_gpu *g) {
  if (!g->cache || !g->cache_path[0]) return;
  size_t size = 0;
  if (vkGetPipelineCacheData(g->device, g->cache, &size, NULL) != VK_SUCCESS || size == 0) return;
  void *data = malloc(size);
  if (!data) return;
  if (vkGetPipelineCacheData(g->device, g->cache, &size, data) == VK_SUCCESS) {
    /* temp file + rename: a crash never leaves a torn cache under the real name */
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", g->cache_path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f) {
      bool ok = fwrite(data, 1, size, f) == size;
      ok = (fclose(f) == 0) && ok;
      if (!ok || rename(tmp, g->cache_path) != 0) remove(tmp);
    }
  }
  free(data);
}

void mr_gpu_pipelines_free_all(mr_gpu *g) {
  if (!g->device) return;
  save_cache(g);
  for (int b = 0; b < MR_PIPELINE_BUCKETS; b++)
    while (g->pipeline_table[b]) {
      mr_pipeline *p = g->pipeline_table[b];
      g->pipeline_table[b] = p->next;
      vkDestroyPipeline(g->device, p->pipeline, NULL);
      vkDestroyPipelineLayout(g->device, p->layout, NULL);
      vkDestroyDescriptorSetLayout(g->device, p->set_layout, NULL);
      free(p);
    }
  for (int i = 0; i < g->nmodules; i++)
    if (g->modules[i]) vkDestroyShaderModule(g->device, g->modules[i], NULL);
  free(g->modules);
  if (g->cache) vkDestroyPipelineCache(g->device, g->cache, NULL);
}

static mr_status shader_module(mr_gpu *g, const char *name, VkShaderModule *out) {
  for (int i = 0; i < g->nmodules; i++) {
    if (strcmp(mr_shader_blobs[i].name, name) != 0) continue;
    if (!g->modules[i]) {
      VkShaderModuleCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                     .codeSize = mr_shader_blobs[i].size, .pCode = mr_shader_blobs[i].words};
      mr_status st = mr_vk_check(g->ctx, vkCreateShaderModule(g->device, &ci, NULL, &g->modules[i]),
                                 "vkCreateShaderModule");
      if (st != MR_OK) return st;
    }
    *out = g->modules[i];
    return MR_OK;
  }
  return mr_error(g->ctx, MR_ENOTFOUND, "no shader named '%s' is built in", name);
}

/* FNV-1a over the shader name, the binding count and the specialization
   words: every dispatch looks its pipeline up, so the lookup is one hash
   and, on a hit, one comparison, not a walk over every pipeline built. */
static uint32_t pipeline_hash(const char *shader, int nbind, const uint32_t *spec, int nspec) {
  uint32_t h = 2166136261u;
  for (const unsigned char *c = (const unsigned char *)shader; *c; c++) h = (h ^ *c) * 16777619u;
  h = (h ^ (uint32_t)nbind) * 16777619u;
  for (int i = 0; i < nspec; i++)
    for (int b = 0; b < 32; b += 8) h = (h ^ ((spec[i] >> b) & 0xffu)) * 16777619u;
  return h;
}

mr_status mr_gpu_pipeline(mr_ctx *ctx, const char *shader, int nbind, uint32_t push_size,
                          const uint32_t *spec, int nspec, mr_pipeline **out) {
  return mr_gpu_pipeline_texel(ctx, shader, nbind, 0, push_size, spec, nspec, out);
}

mr_status mr_gpu_pipeline_texel(mr_ctx *ctx, const char *shader, int nbind, uint32_t texel_mask, uint32_t push_size,
                                const uint32_t *spec, int nspec, mr_pipeline **out) {
  mr_gpu *g = ctx->gpu;
  *out = NULL;
  MR_ASSERT(nbind <= MR_MAX_BINDINGS && nspec <= 16 && strlen(shader) < 64);
  uint32_t h = pipeline_hash(shader, nbind, spec, nspec) ^ texel_mask * 2654435761u;
  mr_pipeline **bucket = &g->pipeline_table[h % MR_PIPELINE_BUCKETS];
  for (mr_pipeline *p = *bucket; p; p = p->next)
    if (p->hash == h && p->nspec == nspec && p->nbind == nbind && p->texel_mask == texel_mask &&
        strcmp(p->shader, shader) == 0 &&
        (nspec == 0 || memcmp(p->spec, spec, (size_t)nspec * sizeof *spec) == 0)) {
      *out = p;
      return MR_OK;
    }

  VkShaderModule module = VK_NULL_HANDLE;
  mr_status st = shader_module(g, shader, &module);
  if (st != MR_OK) return st;
  mr_pipeline *p = calloc(1, sizeof *p);
  if (!p) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  snprintf(p->shader, sizeof p->shader, "%s", shader);
  if (nspec) memcpy(p->spec, spec, (size_t)nspec * sizeof *spec);
  p->nspec = nspec;
  p->nbind = nbind;
  p->texel_mask = texel_mask;
  p->push_size = push_size;

  VkDescriptorSetLayoutBinding b[MR_MAX_BINDINGS];
  for (int i = 0; i < nbind; i++)
    b[i] = (VkDescriptorSetLayoutBinding){.binding = (uint32_t)i,
                                          .descriptorType = (texel_mask >> i) & 1
                                                                ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                                                                : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                          .descriptorCount = 1,
                                          .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
  VkDescriptorSetLayoutCreateInfo dl = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                        .flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR,
                                        .bindingCount = (uint32_t)nbind, .pBindings = b};
  VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = push_size};
  VkPipelineLayoutCreateInfo pl = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                   .setLayoutCount = 1, .pSetLayouts = &p->set_layout,
                                   .pushConstantRangeCount = push_size ? 1 : 0, .pPushConstantRanges = &pr};
  VkSpecializationMapEntry map[16];
  for (int i = 0; i < nspec; i++)
    map[i] = (VkSpecializationMapEntry){.constantID = (uint32_t)i, .offset = (uint32_t)(4 * i), .size = 4};
  VkSpecializationInfo si = {.mapEntryCount = (uint32_t)nspec, .pMapEntries = map,
                             .dataSize = (size_t)nspec * 4, .pData = p->spec};
  VkComputePipelineCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
      .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = module, .pName = "main",
                .pSpecializationInfo = nspec ? &si : NULL}};

  st = mr_vk_check(ctx, vkCreateDescriptorSetLayout(g->device, &dl, NULL, &p->set_layout), "vkCreateDescriptorSetLayout");
  if (st == MR_OK) st = mr_vk_check(ctx, vkCreatePipelineLayout(g->device, &pl, NULL, &p->layout), "vkCreatePipelineLayout");
  if (st == MR_OK) {
    ci.layout = p->layout;
    st = mr_vk_check(ctx, vkCreateComputePipelines(g->device, g->cache, 1, &ci, NULL, &p->pipeline),
                     "vkCreateComputePipelines");
  }
  if (st != MR_OK) {
    if (p->layout) vkDestroyPipelineLayout(g->device, p->layout, NULL);
    if (p->set_layout) vkDestroyDescriptorSetLayout(g->device, p->set_layout, NULL);
    free(p);
    return st;
  }
  p->hash = h;
  p->next = *bucket;
  *bucket = p;
  *out = p;
  return MR_OK;
}
