/* A context on the host's own Vulkan device (mr_vk_host): the test plays a
   host that makes its instance and device as moonreel.h asks, shares its
   queue under a lock with a thread of its own, runs an op, reads the result
   through the tensor's VkBuffer with its own command buffer, and goes on
   using its device after the context is gone. Also the refusals: a device
   without what the engine needs gives MR_EUNSUPPORTED naming it. */
#include "testutil.h"

#include "ref_linear.h"

#include <pthread.h>
#include <string.h>
#include <vulkan/vulkan.h>

/* ------------------------------------------------------------ the host */

static int validation_messages;

static VkBool32 VKAPI_PTR on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                     VkDebugUtilsMessageTypeFlagsEXT types,
                                     const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
  (void)types;
  (void)user;
  if (severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
    fprintf(stderr, "validation: %s\n", data->pMessage);
    validation_messages++;
  }
  return VK_FALSE;
}

typedef struct host {
  VkInstance instance;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  uint32_t family;
  VkDevice device;
  VkQueue queue;
  pthread_mutex_t queue_mutex;
  int locks, unlocks;   /* calls of the engine's lock callbacks */
  bool held;
} host;

static void host_lock(void *user) {
  host *h = user;
  pthread_mutex_lock(&h->queue_mutex);
  h->locks++;
  if (h->held) fprintf(stderr, "lock taken twice\n"), mr_test_failures++;
  h->held = true;
}

static void host_unlock(void *user) {
  host *h = user;
  if (!h->held) fprintf(stderr, "unlock without lock\n"), mr_test_failures++;
  h->held = false;
  h->unlocks++;
  pthread_mutex_unlock(&h->queue_mutex);
}

/* Like the engine: the validation layer when MOONREEL_VALIDATION asks for it. */
static bool host_instance(host *h) {
  const char *v = getenv("MOONREEL_VALIDATION");
  bool validation = v && *v && strcmp(v, "0") != 0;
  const char *layer = "VK_LAYER_KHRONOS_validation";
  const char *ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
  VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "test_host_vulkan",
                           .apiVersion = VK_API_VERSION_1_2};
  VkDebugUtilsMessengerCreateInfoEXT mi = {
      .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
      .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
      .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
      .pfnUserCallback = on_message};
  VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                             .pNext = validation ? &mi : NULL,
                             .pApplicationInfo = &app,
                             .enabledLayerCount = validation ? 1 : 0,
                             .ppEnabledLayerNames = &layer,
                             .enabledExtensionCount = validation ? 1 : 0,
                             .ppEnabledExtensionNames = &ext};
  if (vkCreateInstance(&ci, NULL, &h->instance) != VK_SUCCESS) return false;
  if (validation) {
    PFN_vkCreateDebugUtilsMessengerEXT create =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(h->instance, "vkCreateDebugUtilsMessengerEXT");
    if (!create || create(h->instance, &mi, NULL, &h->messenger) != VK_SUCCESS) return false;
  }
  printf("host instance, validation %s\n", validation ? "on" : "off");
  /* lavapipe (a CPU device) when there is one, as every test runs; else the first */
  uint32_t n = 8;
  VkPhysicalDevice pds[8];
  vkEnumeratePhysicalDevices(h->instance, &n, pds);
  if (n == 0) return false;
  h->phys = pds[0];
  for (uint32_t i = 0; i < n; i++) {
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(pds[i], &p);
    if (p.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU) h->phys = pds[i];
  }
  uint32_t nq = 8;
  VkQueueFamilyProperties qf[8];
  vkGetPhysicalDeviceQueueFamilyProperties(h->phys, &nq, qf);
  h->family = UINT32_MAX;
  for (uint32_t i = 0; i < nq && h->family == UINT32_MAX; i++)
    if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) h->family = i;
  return h->family != UINT32_MAX;
}

/* The device as moonreel.h asks (full = true), or a bare one. */
static bool host_device(host *h, bool full, VkDevice *dev, VkQueue *queue) {
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = h->family,
                                .queueCount = 1, .pQueuePriorities = &prio};
  VkPhysicalDeviceVulkan11Features f11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                          .storageBuffer16BitAccess = VK_TRUE};
  const char *ext = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
  VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                           .pNext = full ? &f11 : NULL,
                           .queueCreateInfoCount = 1,
                           .pQueueCreateInfos = &qi,
                           .enabledExtensionCount = full ? 1 : 0,
                           .ppEnabledExtensionNames = &ext};
  if (vkCreateDevice(h->phys, &ci, NULL, dev) != VK_SUCCESS) return false;
  vkGetDeviceQueue(*dev, h->family, 0, queue);
  return true;
}

static uint32_t host_visible_type(host *h, uint32_t bits) {
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(h->phys, &mp);
  VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
    if ((bits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want) return i;
  return UINT32_MAX;
}

/* A buffer of the host's in host-visible memory, mapped. */
typedef struct host_buffer {
  VkBuffer buffer;
  VkDeviceMemory memory;
  void *mapped;
} host_buffer;

static bool host_buffer_new(host *h, VkDeviceSize size, host_buffer *b) {
  VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                           .usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT, .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  if (vkCreateBuffer(h->device, &bi, NULL, &b->buffer) != VK_SUCCESS) return false;
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(h->device, b->buffer, &req);
  VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                             .memoryTypeIndex = host_visible_type(h, req.memoryTypeBits)};
  if (ai.memoryTypeIndex == UINT32_MAX || vkAllocateMemory(h->device, &ai, NULL, &b->memory) != VK_SUCCESS)
    return false;
  vkBindBufferMemory(h->device, b->buffer, b->memory, 0);
  return vkMapMemory(h->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped) == VK_SUCCESS;
}

static void host_buffer_free(host *h, host_buffer *b) {
  if (b->memory) vkFreeMemory(h->device, b->memory, NULL);
  if (b->buffer) vkDestroyBuffer(h->device, b->buffer, NULL);
}

/* Records with record(), submits on the shared queue under the host's lock
   and waits, as a host's renderer would. */
static bool host_submit(host *h, void (*record)(VkCommandBuffer, void *), void *arg) {
  VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, .queueFamilyIndex = h->family};
  VkCommandPool pool;
  if (vkCreateCommandPool(h->device, &pi, NULL, &pool) != VK_SUCCESS) return false;
  VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = pool,
                                    .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
  VkCommandBuffer cmd;
  vkAllocateCommandBuffers(h->device, &ai, &cmd);
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  vkBeginCommandBuffer(cmd, &bi);
  record(cmd, arg);
  vkEndCommandBuffer(cmd);
  VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  vkCreateFence(h->device, &fi, NULL, &fence);
  VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
  pthread_mutex_lock(&h->queue_mutex);
  VkResult r = vkQueueSubmit(h->queue, 1, &si, fence);
  pthread_mutex_unlock(&h->queue_mutex);
  if (r == VK_SUCCESS) r = vkWaitForFences(h->device, 1, &fence, VK_TRUE, UINT64_MAX);
  vkDestroyFence(h->device, fence, NULL);
  vkDestroyCommandPool(h->device, pool, NULL);
  return r == VK_SUCCESS;
}

/* The host's own work beside the engine's: empty submissions with a fence,
   on the shared queue, until told to stop. */
typedef struct busy_thread {
  host *h;
  volatile bool stop;
  int submits;
} busy_thread;

static void *busy_main(void *arg) {
  busy_thread *b = arg;
  host *h = b->h;
  VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  vkCreateFence(h->device, &fi, NULL, &fence);
  while (!b->stop) {
    pthread_mutex_lock(&h->queue_mutex);
    VkResult r = vkQueueSubmit(h->queue, 0, NULL, fence);
    pthread_mutex_unlock(&h->queue_mutex);
    if (r != VK_SUCCESS) break;
    vkWaitForFences(h->device, 1, &fence, VK_TRUE, UINT64_MAX);
    vkResetFences(h->device, 1, &fence);
    b->submits++;
  }
  vkDestroyFence(h->device, fence, NULL);
  return NULL;
}

/* ------------------------------------------------------------ the tests */

typedef struct copy_args {
  VkBuffer src, dst;
  VkDeviceSize offset, size;
} copy_args;

static void record_copy(VkCommandBuffer cmd, void *arg) {
  copy_args *c = arg;
  VkBufferCopy region = {.srcOffset = c->offset, .dstOffset = 0, .size = c->size};
  vkCmdCopyBuffer(cmd, c->src, c->dst, 1, &region);
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
  vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
}

static void record_fill(VkCommandBuffer cmd, void *arg) {
  copy_args *c = arg;
  vkCmdFillBuffer(cmd, c->dst, 0, c->size, 0x5eed1234u);
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
  vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
}

static mr_vk_host host_statement(host *h) {
  static const char *const exts[] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  mr_vk_host vh = {.instance = h->instance, .physical_device = h->phys, .device = h->device, .queue = h->queue,
                   .queue_family = h->family, .api_version = VK_API_VERSION_1_2, .device_extensions = exts,
                   .device_extension_count = 1, .storage_buffer_16bit = true,
                   .lock = host_lock, .unlock = host_unlock, .lock_user = h};
  return vh;
}

static void test_shared_device(host *h) {
  mr_vk_host vh = host_statement(h);
  mr_ctx_opts o = mr_ctx_opts_default();
  o.vk_host = &vh;
  mr_ctx *ctx = NULL;
  CHECK(mr_ctx_new(&o, &ctx) == MR_OK);
  REQUIRE(ctx != NULL);
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  printf("context on the host's device: %s\n", info.name);

  /* the host keeps submitting on the same queue while the engine works */
  busy_thread busy = {.h = h};
  pthread_t thread;
  CHECK(pthread_create(&thread, NULL, busy_main, &busy) == 0);

  enum { B = 2, M = 9, N = 11, K = 13 };
  float x[B * M * K], w[N * K], bias[N], want[B * M * N], got[B * M * N];
  mr_rng rng = {0x9e3779b97f4a7c15ull};
  mr_rng_fill(&rng, x, B * M * K, -1, 1);
  mr_rng_fill(&rng, w, N * K, -1, 1);
  mr_rng_fill(&rng, bias, N, -1, 1);
  mr_ref_matmul(x, w, bias, want, B, M, N, K, false);
  int64_t xs[3] = {B, M, K}, ws[2] = {N, K}, bs[1] = {N};
  mr_tensor *tx = NULL, *tw = NULL, *tb = NULL, *ty = NULL;
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 3, xs, MR_F32, x, &tx));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 2, ws, MR_F32, w, &tw));
  CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 1, bs, MR_F32, bias, &tb));
  CHECK_OK(ctx, mr_op_matmul(tx, tw, tb, &ty));
  CHECK_OK(ctx, mr_ctx_sync(ctx)); /* the op was only recorded: this submits it */
  busy.stop = true;
  pthread_join(thread, NULL);
  printf("host thread submitted %d times beside the engine\n", busy.submits);
  REQUIRE(ty != NULL);

  /* the result through the host's own command buffer, no copy through host memory by the engine */
  mr_vk_buffer vb;
  CHECK_OK(ctx, mr_tensor_vk_buffer(ty, &vb));
  CHECK(vb.buffer != 0 && vb.size == sizeof got);
  host_buffer hb = {0};
  CHECK(host_buffer_new(h, sizeof got, &hb));
  copy_args c = {.src = (VkBuffer)(uintptr_t)vb.buffer, .dst = hb.buffer, .offset = vb.offset, .size = vb.size};
  CHECK(host_submit(h, record_copy, &c));
  CHECK_OK(ctx, mr_tensor_read(ty, MR_F32, got, B * M * N));
  CHECK(memcmp(hb.mapped, got, sizeof got) == 0);
  double err = mr_rel_l2(got, want, B * M * N);
  printf("matmul on the host's device: rel l2 %.3g\n", err);
  CHECK(err < 1e-5);

  /* a view: contiguous ones from their first element, strided ones refused */
  mr_tensor *row = NULL, *tt = NULL;
  CHECK_OK(ctx, mr_tensor_slice(ty, 0, 1, 2, 1, &row));
  mr_vk_buffer vr;
  CHECK_OK(ctx, mr_tensor_vk_buffer(row, &vr));
  CHECK(vr.buffer == vb.buffer && vr.offset == vb.offset + M * N * sizeof(float) && vr.size == M * N * sizeof(float));
  int perm[3] = {0, 2, 1};
  CHECK_OK(ctx, mr_tensor_permute(ty, perm, &tt));
  CHECK(mr_tensor_vk_buffer(tt, &vr) == MR_EINVAL && vr.buffer == 0 && vr.size == 0);
  printf("strided view: %s\n", mr_ctx_last_error(ctx));
  mr_tensor_free(tt);
  mr_tensor_free(row);

  mr_tensor_free(ty);
  mr_tensor_free(tb);
  mr_tensor_free(tw);
  mr_tensor_free(tx);
  CHECK(mr_ctx_validation_messages(ctx) == 0); /* the host's instance reports, not the engine */
  mr_ctx_free(ctx);
  printf("engine queue lock: %d locks, %d unlocks\n", h->locks, h->unlocks);
  CHECK(h->locks > 0 && h->locks == h->unlocks && !h->held);

  /* the host's device goes on after the context */
  c.size = sizeof got;
  memset(hb.mapped, 0, sizeof got);
  CHECK(host_submit(h, record_fill, &c));
  CHECK(((uint32_t *)hb.mapped)[0] == 0x5eed1234u && ((uint32_t *)hb.mapped)[B * M * N - 1] == 0x5eed1234u);
  host_buffer_free(h, &hb);
}

static char last_log[2048];

static void capture_log(mr_log_level level, const char *msg, void *user) {
  (void)user;
  if (level == MR_LOG_ERROR) snprintf(last_log, sizeof last_log, "%s", msg);
}

/* One statement of the host's; the refusal's message must name `what`. */
static void expect_refusal(const mr_vk_host *vh, mr_status want, const char *what) {
  mr_ctx_opts o = mr_ctx_opts_default();
  o.vk_host = vh;
  o.log = capture_log;
  last_log[0] = 0;
  mr_ctx *ctx = (mr_ctx *)1;
  CHECK(mr_ctx_new(&o, &ctx) == want && ctx == NULL);
  printf("refused: %s\n", last_log);
  CHECK(strstr(last_log, what) != NULL);
}

static void test_refusals(host *h) {
  int locks = h->locks;
  mr_vk_host vh = host_statement(h);
  vh.device_extension_count = 0;
  expect_refusal(&vh, MR_EUNSUPPORTED, "VK_KHR_push_descriptor");
  vh = host_statement(h);
  vh.storage_buffer_16bit = false;
  expect_refusal(&vh, MR_EUNSUPPORTED, "storageBuffer16BitAccess");
  vh = host_statement(h);
  vh.api_version = VK_API_VERSION_1_1;
  expect_refusal(&vh, MR_EUNSUPPORTED, "Vulkan 1.2");
  vh = host_statement(h);
  vh.queue_family = 77;
  expect_refusal(&vh, MR_EUNSUPPORTED, "queue family 77");
  vh = host_statement(h);
  vh.unlock = NULL;
  expect_refusal(&vh, MR_EINVAL, "lock and unlock");
  vh = host_statement(h);
  vh.device = NULL;
  expect_refusal(&vh, MR_EINVAL, "required");

  /* a real device made without the extension and the feature, stated truthfully */
  VkDevice bare;
  VkQueue bare_queue;
  REQUIRE(host_device(h, false, &bare, &bare_queue));
  vh = host_statement(h);
  vh.device = bare;
  vh.queue = bare_queue;
  vh.device_extensions = NULL;
  vh.device_extension_count = 0;
  vh.storage_buffer_16bit = false;
  expect_refusal(&vh, MR_EUNSUPPORTED, "VK_KHR_push_descriptor");
  CHECK(strstr(last_log, "storageBuffer16BitAccess") != NULL); /* everything missing, in one message */
  vkDestroyDevice(bare, NULL);
  CHECK(h->locks == locks); /* nothing was submitted */
}

int main(void) {
  host h = {0};
  pthread_mutex_init(&h.queue_mutex, NULL);
  if (!host_instance(&h) || !host_device(&h, true, &h.device, &h.queue)) {
    fprintf(stderr, "the test's own Vulkan instance or device could not be made\n");
    return 1;
  }
  test_shared_device(&h);
  test_refusals(&h);
  vkDeviceWaitIdle(h.device);
  vkDestroyDevice(h.device, NULL);
  if (h.messenger) {
    PFN_vkDestroyDebugUtilsMessengerEXT destroy =
        (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(h.instance, "vkDestroyDebugUtilsMessengerEXT");
    destroy(h.instance, h.messenger, NULL);
  }
  vkDestroyInstance(h.instance, NULL);
  pthread_mutex_destroy(&h.queue_mutex);
  printf("validation messages: %d\n", validation_messages);
  CHECK(validation_messages == 0);
  return mr_test_finish("test_host_vulkan");
}
