/* Vulkan instance and device choice, validation messages, device facts. */
#include "gpu/gpu_impl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mr_vk_result_name(VkResult r) {
  switch (r) {
  case VK_SUCCESS: return "VK_SUCCESS";
  case VK_NOT_READY: return "VK_NOT_READY";
  case VK_TIMEOUT: return "VK_TIMEOUT";
  case VK_INCOMPLETE: return "VK_INCOMPLETE";
  case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
  case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
  case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
  case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
  case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
  case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
  case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
  case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
  case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
  case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
  case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
  default: return "VkResult";
  }
}

mr_status mr_vk_check(mr_ctx *ctx, VkResult r, const char *what) {
  if (r == VK_SUCCESS) return MR_OK;
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY)
    return mr_error(ctx, MR_EDEVMEM, "%s: out of device memory (%s)", what, mr_vk_result_name(r));
  if (r == VK_ERROR_OUT_OF_HOST_MEMORY) return mr_error(ctx, MR_ENOMEM, "%s: out of host memory", what);
  if (r == VK_ERROR_DEVICE_LOST) return mr_error(ctx, MR_EVULKAN, "%s: the Vulkan device was lost", what);
  return mr_error(ctx, MR_EVULKAN, "%s failed: %s (%d)", what, mr_vk_result_name(r), (int)r);
}

const char *mr_device_type_name(mr_device_type t) {
  switch (t) {
  case MR_DEVICE_DISCRETE: return "discrete";
  case MR_DEVICE_INTEGRATED: return "integrated";
  case MR_DEVICE_VIRTUAL: return "virtual";
  case MR_DEVICE_CPU: return "cpu";
  default: return "other";
  }
}

static mr_device_type map_type(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return MR_DEVICE_DISCRETE;
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return MR_DEVICE_INTEGRATED;
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return MR_DEVICE_VIRTUAL;
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return MR_DEVICE_CPU;
  default: return MR_DEVICE_OTHER;
  }
}

static bool has_extension(VkPhysicalDevice pd, const char *name) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL);
  VkExtensionProperties *ext = calloc(n ? n : 1, sizeof *ext);
  if (!ext) return false;
  vkEnumerateDeviceExtensionProperties(pd, NULL, &n, ext);
  bool found = false;
  for (uint32_t i = 0; i < n && !found; i++) found = strcmp(ext[i].extensionName, name) == 0;
  free(ext);
  return found;
}

static void describe(VkPhysicalDevice pd, int index, mr_device_info *info) {
  memset(info, 0, sizeof *info);
  VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, .pNext = &sub};
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &drv};
  vkGetPhysicalDeviceProperties2(pd, &p2);
  const VkPhysicalDeviceProperties *p = &p2.properties;
  info->index = index;
  snprintf(info->name, sizeof info->name, "%s", p->deviceName);
  snprintf(info->driver, sizeof info->driver, "%.120s %.120s", drv.driverName, drv.driverInfo);
  info->type = map_type(p->deviceType);
  info->vendor_id = p->vendorID;
  info->device_id = p->deviceID;
  info->max_buffer_bytes = p->limits.maxStorageBufferRange;
  info->subgroup_size = sub.subgroupSize;
  info->shared_memory_bytes = p->limits.maxComputeSharedMemorySize;
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(pd, &mp);
  for (uint32_t h = 0; h < mp.memoryHeapCount; h++)
    if ((mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) && mp.memoryHeaps[h].size > info->heap_bytes)
      info->heap_bytes = mp.memoryHeaps[h].size;
  info->coopmat_nv = has_extension(pd, "VK_NV_cooperative_matrix");
}

/* What every kernel needs: 16-bit storage for f16/bf16 tensors and push
   descriptors, so no descriptor pools are ever managed. */
static bool usable(VkPhysicalDevice pd) {
  VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
  vkGetPhysicalDeviceFeatures2(pd, &f2);
  return s16.storageBuffer16BitAccess && has_extension(pd, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
}

static int type_rank(mr_device_type t) {
  switch (t) {
  case MR_DEVICE_DISCRETE: return 4;
  case MR_DEVICE_INTEGRATED: return 3;
  case MR_DEVICE_VIRTUAL: return 2;
  case MR_DEVICE_CPU: return 1;
  default: return 0;
  }
}

static bool contains_nocase(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
    if (i == n) return true;
  }
  return n == 0;
}

static VkBool32 VKAPI_PTR on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                        VkDebugUtilsMessageTypeFlagsEXT types,
                                        const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
  (void)types;
  mr_ctx *ctx = user;
  if (!(severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)))
    return VK_FALSE;
  atomic_fetch_add(&ctx->validation_messages, 1);
  mr_log(ctx, MR_LOG_ERROR, "Vulkan validation: %s", data->pMessage);
  if (ctx->validation_strict) {
    /* Test suites run strict: a validation message is a failure, at the place it happened. */
    fprintf(stderr, "moonreel: aborting on a validation message (MOONREEL_VALIDATION=1)\n");
    abort();
  }
  return VK_FALSE;
}

static bool layer_present(const char *name) {
  uint32_t n = 0;
  vkEnumerateInstanceLayerProperties(&n, NULL);
  VkLayerProperties *l = calloc(n ? n : 1, sizeof *l);
  if (!l) return false;
  vkEnumerateInstanceLayerProperties(&n, l);
  bool found = false;
  for (uint32_t i = 0; i < n && !found; i++) found = strcmp(l[i].layerName, name) == 0;
  free(l);
  return found;
}

static mr_status create_instance(mr_ctx *ctx, bool validation, VkInstance *out, VkDebugUtilsMessengerEXT *msgr) {
  const char *layer = "VK_LAYER_KHRONOS_validation";
  const char *ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
  if (validation && !layer_present(layer))
    return mr_error(ctx, MR_EUNSUPPORTED,
                    "Vulkan validation was asked for but %s is not installed (Debian: vulkan-validationlayers)", layer);
  VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                           .pApplicationName = "moonreel",
                           .pEngineName = "moonreel",
                           .engineVersion = VK_MAKE_VERSION(MR_VERSION_MAJOR, MR_VERSION_MINOR, MR_VERSION_PATCH),
                           .apiVersion = VK_API_VERSION_1_2};
  VkDebugUtilsMessengerCreateInfoEXT mi = {
      .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
      .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
      .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
      .pfnUserCallback = on_validation,
      .pUserData = ctx};
  VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                             .pNext = validation ? &mi : NULL,
                             .pApplicationInfo = &app,
                             .enabledLayerCount = validation ? 1 : 0,
                             .ppEnabledLayerNames = &layer,
                             .enabledExtensionCount = validation ? 1 : 0,
                             .ppEnabledExtensionNames = &ext};
  VkResult r = vkCreateInstance(&ci, NULL, out);
  if (r != VK_SUCCESS) {
    *out = VK_NULL_HANDLE;
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
      return mr_error(ctx, MR_ENODEVICE, "no Vulkan driver found (install mesa-vulkan-drivers for the CPU device)");
    return mr_vk_check(ctx, r, "vkCreateInstance");
  }
  *msgr = VK_NULL_HANDLE;
  if (validation) {
    PFN_vkCreateDebugUtilsMessengerEXT create =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(*out, "vkCreateDebugUtilsMessengerEXT");
    if (create) create(*out, &mi, NULL, msgr);
  }
  return MR_OK;
}

mr_status mr_devices_list(mr_device_info *out, int cap, int *count) {
  *count = 0;
  VkInstance inst;
  VkDebugUtilsMessengerEXT m;
  mr_status st = create_instance(NULL, false, &inst, &m);
  if (st != MR_OK) return st;
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(inst, &n, NULL);
  VkPhysicalDevice *pds = calloc(n ? n : 1, sizeof *pds);
  if (!pds) {
    vkDestroyInstance(inst, NULL);
    return MR_ENOMEM;
  }
  vkEnumeratePhysicalDevices(inst, &n, pds);
  for (uint32_t i = 0; i < n && (int)i < cap; i++) describe(pds[i], (int)i, &out[i]);
  *count = (int)n;
  free(pds);
  vkDestroyInstance(inst, NULL);
  return MR_OK;
}

static mr_status choose_device(mr_gpu *g, const char *want) {
  mr_ctx *ctx = g->ctx;
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(g->instance, &n, NULL);
  if (n == 0) return mr_error(ctx, MR_ENODEVICE, "no Vulkan device found (install mesa-vulkan-drivers for the CPU device)");
  VkPhysicalDevice *pds = calloc(n, sizeof *pds);
  if (!pds) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  vkEnumeratePhysicalDevices(g->instance, &n, pds);
  int best = -1, best_rank = -1;
  mr_device_info info;
  bool by_index = want && *want && strspn(want, "0123456789") == strlen(want);
  for (uint32_t i = 0; i < n; i++) {
    describe(pds[i], (int)i, &info);
    bool ok = usable(pds[i]);
    if (want && *want) {
      bool match = by_index ? (uint32_t)atoi(want) == i : contains_nocase(info.name, want);
      if (match) {
        if (!ok) {
          free(pds);
          return mr_error(ctx, MR_EUNSUPPORTED,
                          "device %u '%s' lacks 16-bit storage buffers or VK_KHR_push_descriptor", i, info.name);
        }
        best = (int)i;
        break;
      }
    } else if (ok && type_rank(info.type) > best_rank) {
      best = (int)i;
      best_rank = type_rank(info.type);
    }
  }
  if (best < 0) {
    free(pds);
    if (want && *want) return mr_error(ctx, MR_ENOTFOUND, "no Vulkan device matches '%s' (MOONREEL_DEVICE)", want);
    return mr_error(ctx, MR_ENODEVICE, "no Vulkan device has 16-bit storage buffers and push descriptors");
  }
  g->phys = pds[best];
  describe(g->phys, best, &g->caps.info);
  free(pds);
  return MR_OK;
}

/* The device facts ops use, for the queue family g->queue_family (qf). */
static void read_caps(mr_gpu *g, const VkQueueFamilyProperties *qf) {
  mr_ctx *ctx = g->ctx;
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(g->phys, &props);
  g->ns_per_tick = props.limits.timestampPeriod;
  bool timestamps = props.limits.timestampComputeAndGraphics && qf->timestampValidBits > 0;
  if (g->profile && !timestamps) {
    mr_log(ctx, MR_LOG_WARN, "device '%s' has no compute timestamps; profiling is off", g->caps.info.name);
    g->profile = false;
  }
  for (int i = 0; i < 3; i++) g->caps.max_groups[i] = props.limits.maxComputeWorkGroupCount[i];
  g->caps.max_invocations = props.limits.maxComputeWorkGroupInvocations;
  g->caps.align = props.limits.minStorageBufferOffsetAlignment;
  g->caps.max_texels = props.limits.maxTexelBufferElements;
  const char *mb = getenv("MOONREEL_MAX_BINDING"); /* tests run the ops split this way */
  mr_gpu_set_max_binding(ctx, mb ? strtoull(mb, NULL, 0) : 0);
  g->caps.is_cpu = g->caps.info.type == MR_DEVICE_CPU;
  /* the *_lanes kernels: subgroup shuffles in compute shaders, and x and w
     read as uniform texel buffers of 32- and 16-bit uints, 1 or 4 a texel,
     whose views start at binding offsets */
  VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sub};
  vkGetPhysicalDeviceProperties2(g->phys, &p2);
  VkDeviceSize talign = props.limits.minTexelBufferOffsetAlignment; /* views start where bindings do */
  bool lanes = talign > 0 && g->caps.align % talign == 0 && (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
               (sub.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT) &&
               (sub.subgroupSize == 4 || sub.subgroupSize == 8 || sub.subgroupSize == 16);
  const VkFormat texel_formats[4] = {VK_FORMAT_R32_UINT, VK_FORMAT_R16_UINT, VK_FORMAT_R32G32B32A32_UINT,
                                     VK_FORMAT_R16G16B16A16_UINT};
  for (int i = 0; i < 4 && lanes; i++) {
    VkFormatProperties fp;
    vkGetPhysicalDeviceFormatProperties(g->phys, texel_formats[i], &fp);
    lanes = (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
  }
  g->caps.lanes_sg = lanes ? sub.subgroupSize : 0;
}

static mr_status create_device(mr_gpu *g) {
  mr_ctx *ctx = g->ctx;
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(g->phys, &nq, NULL);
  VkQueueFamilyProperties qf[16];
  if (nq > 16) nq = 16;
  vkGetPhysicalDeviceQueueFamilyProperties(g->phys, &nq, qf);
  int family = -1;
  /* A compute queue; one that also does graphics is fine (and is all lavapipe has). */
  for (uint32_t i = 0; i < nq && family < 0; i++)
    if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family = (int)i;
  if (family < 0) return mr_error(ctx, MR_ENODEVICE, "device '%s' has no compute queue", g->caps.info.name);
  g->queue_family = (uint32_t)family;
  read_caps(g, &qf[family]);

  float prio = 1.0f;
  VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                .queueFamilyIndex = g->queue_family,
                                .queueCount = 1,
                                .pQueuePriorities = &prio};
  VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
                                              .storageBuffer16BitAccess = VK_TRUE};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
  const char *exts[2] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME, "VK_NV_cooperative_matrix"};
  VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                           .pNext = &f2,
                           .queueCreateInfoCount = 1,
                           .pQueueCreateInfos = &qi,
                           .enabledExtensionCount = g->caps.info.coopmat_nv ? 2 : 1,
                           .ppEnabledExtensionNames = exts};
  mr_status st = mr_vk_check(ctx, vkCreateDevice(g->phys, &ci, NULL, &g->device), "vkCreateDevice");
  if (st != MR_OK) return st;
  vkGetDeviceQueue(g->device, g->queue_family, 0, &g->queue);
  g->push_descriptor = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(g->device, "vkCmdPushDescriptorSetKHR");
  if (!g->push_descriptor) return mr_error(ctx, MR_EUNSUPPORTED, "vkCmdPushDescriptorSetKHR is missing");
  return MR_OK;
}

static bool listed(const char *const *names, uint32_t n, const char *name) {
  for (uint32_t i = 0; i < n; i++)
    if (names && names[i] && strcmp(names[i], name) == 0) return true;
  return false;
}

/* The host's device (mr_vk_host): checks what the engine needs, then takes
   the handles as they are. Vulkan cannot report which extensions and features
   another party enabled on a VkDevice, so those come from the host's
   statement; what the physical device can tell is checked on it. */
static mr_status adopt_device(mr_gpu *g, const mr_vk_host *h) {
  mr_ctx *ctx = g->ctx;
  if (!h->instance || !h->physical_device || !h->device || !h->queue)
    return mr_error(ctx, MR_EINVAL, "mr_vk_host: instance, physical_device, device and queue are all required");
  if (!h->lock != !h->unlock)
    return mr_error(ctx, MR_EINVAL, "mr_vk_host: lock and unlock are both set or both NULL");
  g->instance = (VkInstance)h->instance;
  g->phys = (VkPhysicalDevice)h->physical_device;
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(g->instance, &n, NULL);
  VkPhysicalDevice *pds = calloc(n ? n : 1, sizeof *pds);
  if (!pds) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  vkEnumeratePhysicalDevices(g->instance, &n, pds);
  int index = -1;
  for (uint32_t i = 0; i < n && index < 0; i++)
    if (pds[i] == g->phys) index = (int)i;
  free(pds);
  if (index < 0) return mr_error(ctx, MR_EINVAL, "mr_vk_host: physical_device is not one of instance's devices");
  describe(g->phys, index, &g->caps.info);

  /* Everything missing in one message, so a host fixes it in one go. */
  char missing[1024] = "";
  size_t len = 0;
#define MISSING(...)                                                                                         \
  do {                                                                                                       \
    if (len < sizeof missing) len += (size_t)snprintf(missing + len, sizeof missing - len, __VA_ARGS__);     \
  } while (0)
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(g->phys, &props);
  if (h->api_version < VK_API_VERSION_1_2)
    MISSING("; Vulkan 1.2 (the instance was made for %u.%u: mr_vk_host.api_version)",
            VK_API_VERSION_MAJOR(h->api_version), VK_API_VERSION_MINOR(h->api_version));
  if (props.apiVersion < VK_API_VERSION_1_2)
    MISSING("; Vulkan 1.2 (the device has %u.%u)", VK_API_VERSION_MAJOR(props.apiVersion),
            VK_API_VERSION_MINOR(props.apiVersion));
  if (!listed(h->device_extensions, h->device_extension_count, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME))
    MISSING("; the device extension " VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME
            " (enable it at vkCreateDevice and list it in mr_vk_host.device_extensions)");
  if (!h->storage_buffer_16bit)
    MISSING("; the feature storageBuffer16BitAccess (enable it at vkCreateDevice and set "
            "mr_vk_host.storage_buffer_16bit)");
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(g->phys, &nq, NULL);
  VkQueueFamilyProperties qf[16];
  if (nq > 16) nq = 16;
  vkGetPhysicalDeviceQueueFamilyProperties(g->phys, &nq, qf);
  if (h->queue_family >= nq || !(qf[h->queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT))
    MISSING("; a compute queue (queue family %u %s)", h->queue_family,
            h->queue_family >= nq ? "does not exist" : "has no VK_QUEUE_COMPUTE_BIT");
#undef MISSING
  if (len > 0)
    return mr_error(ctx, MR_EUNSUPPORTED, "the host's Vulkan device '%s' lacks what moonreel needs: %s",
                    g->caps.info.name, missing + 2);

  g->queue_family = h->queue_family;
  read_caps(g, &qf[h->queue_family]);
  g->device = (VkDevice)h->device;
  g->queue = (VkQueue)h->queue;
  g->lock = h->lock;
  g->unlock = h->unlock;
  g->lock_user = h->lock_user;
  g->push_descriptor = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(g->device, "vkCmdPushDescriptorSetKHR");
  if (!g->push_descriptor)
    return mr_error(ctx, MR_EUNSUPPORTED, "the host's Vulkan device '%s' has no vkCmdPushDescriptorSetKHR "
                    "(is " VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME " enabled?)", g->caps.info.name);
  return MR_OK;
}

/* "1", "on", "strict" and the like turn a switch on; unset gives dflt. */
static int env_switch(const char *name, int dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  return !(strcmp(v, "0") == 0 || strcmp(v, "off") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0);
}

mr_status mr_gpu_new(mr_ctx *ctx, const mr_ctx_opts *opts, mr_gpu **out) {
  *out = NULL;
  mr_gpu *g = calloc(1, sizeof *g);
  if (!g) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  g->ctx = ctx;
  ctx->gpu = g;
  bool validation = opts->validation < 0 ? env_switch("MOONREEL_VALIDATION", 0) : opts->validation != 0;
  /* Asked for by the environment, validation is strict: the test suites run this way. */
  ctx->validation_strict = opts->validation < 0 && validation;
  g->profile = opts->profile < 0 ? env_switch("MOONREEL_PROFILE", 0) : opts->profile != 0;
  const char *want = opts->device ? opts->device : getenv("MOONREEL_DEVICE");
  const char *cache_dir = opts->cache_dir ? opts->cache_dir : getenv("MOONREEL_CACHE_DIR");

  mr_status st;
  if (opts->vk_host) {
    /* The host's instance carries (or not) its own validation layer. */
    g->host = true;
    ctx->validation_strict = false;
    st = adopt_device(g, opts->vk_host);
  } else {
    st = create_instance(ctx, validation, &g->instance, &g->messenger);
    if (st == MR_OK) st = choose_device(g, want);
    if (st == MR_OK) st = create_device(g);
  }
  if (st == MR_OK) st = mr_gpu_memory_init(g);
  if (st == MR_OK) st = mr_gpu_pipelines_init(g, cache_dir);
  if (st == MR_OK) st = mr_gpu_stream_init(g);
  if (st != MR_OK) {
    mr_gpu_free_all(g);
    ctx->gpu = NULL;
    return st;
  }
  mr_log(ctx, MR_LOG_INFO, "device %d: %s (%s, %s)", g->caps.info.index, g->caps.info.name,
         mr_device_type_name(g->caps.info.type), g->caps.info.driver);
  *out = g;
  return MR_OK;
}

void mr_gpu_free_all(mr_gpu *g) {
  if (!g) return;
  /* vkDeviceWaitIdle would want every queue of a host's device locked; the
     engine's own work is waited for by its fence at each submit (and the
     stream's last sync below), which is all it has to wait for. */
  if (g->device && !g->host) vkDeviceWaitIdle(g->device);
  if (g->profile && g->nkinds > 0) {
    char report[8192];
    mr_gpu_profile_report(g, report, sizeof report);
    fputs(report, stderr);
  }
  mr_gpu_stream_free_all(g);
  mr_gpu_pipelines_free_all(g);
  mr_gpu_memory_free_all(g);
  if (g->host) {
    free(g); /* the instance, device and queue are the host's */
    return;
  }
  if (g->device) vkDestroyDevice(g->device, NULL);
  if (g->messenger) {
    PFN_vkDestroyDebugUtilsMessengerEXT destroy =
        (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(g->instance, "vkDestroyDebugUtilsMessengerEXT");
    if (destroy) destroy(g->instance, g->messenger, NULL);
  }
  if (g->instance) vkDestroyInstance(g->instance, NULL);
  free(g);
}

const mr_gpu_caps *mr_gpu_caps_get(const mr_ctx *ctx) { return &ctx->gpu->caps; }

VkDeviceSize mr_gpu_set_max_binding(mr_ctx *ctx, VkDeviceSize bytes) {
  mr_gpu_caps *c = &ctx->gpu->caps;
  VkDeviceSize prev = c->max_binding, dev = c->info.max_buffer_bytes, least = c->align > 64 ? 4 * c->align : 256;
  c->max_binding = bytes == 0 || bytes > dev ? dev : bytes < least ? least : bytes;
  return prev;
}

void mr_ctx_device_info(const mr_ctx *ctx, mr_device_info *out) { *out = ctx->gpu->caps.info; }
