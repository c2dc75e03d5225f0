/*
 * moonreel.h — the public C API of the moonreel engine.
 *
 * A scriptable video-generation engine on Vulkan compute. Everything hangs off
 * an mr_ctx (device, memory, pipelines, command stream, last error); there is
 * no global state, so two hosts in one process do not see each other.
 *
 *   mr_ctx *ctx;
 *   if (mr_ctx_new(NULL, &ctx) != MR_OK) return 1;          // auto device
 *   int64_t shape[2] = {2, 3};
 *   float host[6] = {1, 2, 3, 4, 5, 6};
 *   mr_tensor *a, *b;
 *   mr_tensor_from_host(ctx, MR_F32, 2, shape, MR_F32, host, &a);
 *   if (mr_op_unary(MR_UNARY_SILU, a, &b) != MR_OK)
 *     fprintf(stderr, "%s\n", mr_ctx_last_error(ctx));
 *   mr_tensor_read(b, MR_F32, host, 6);                      // waits for the GPU
 *   mr_tensor_free(b);
 *   mr_tensor_free(a);
 *   mr_ctx_free(ctx);
 *
 * Conventions, applied to every function:
 *  - Fallible calls return mr_status (MR_OK = 0, errors < 0). The message is
 *    in mr_ctx_last_error(ctx). A caller's mistake never aborts the process.
 *  - Constructors write their result through a last `out` parameter and set
 *    *out = NULL on failure. Each _new/_open/_load has exactly one _free, and
 *    _free(NULL) is a no-op.
 *  - "Borrowed" results stay valid while their owner lives; "new" results are
 *    the caller's to free.
 *  - Options structs come from *_opts_default(); passing NULL means defaults.
 */
#ifndef MOONREEL_H
#define MOONREEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared here is the library's interface; everything else in
   it is built hidden (CMakeLists.txt), so a shared object linking the
   engine (the Lua module) exports only these names. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define MR_VERSION_MAJOR 0
#define MR_VERSION_MINOR 1
#define MR_VERSION_PATCH 0
#define MR_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ status */

typedef enum mr_status {
  MR_OK = 0,
  MR_EINVAL = -1,       /* bad argument: shape, dtype, range */
  MR_ENOMEM = -2,       /* host memory exhausted */
  MR_EDEVMEM = -3,      /* device memory exhausted (message gives size and budget) */
  MR_EIO = -4,          /* file could not be opened, read or written */
  MR_EFORMAT = -5,      /* file is malformed (message names file and problem) */
  MR_EUNSUPPORTED = -6, /* valid but not supported (dtype, opcode, device feature) */
  MR_EVULKAN = -7,      /* a Vulkan call failed */
  MR_ECANCELED = -8,    /* interrupted by mr_ctx_interrupt or a progress callback */
  MR_ENOTFOUND = -9,    /* named thing (tensor, file, device) does not exist */
  MR_ENODEVICE = -10,   /* no usable Vulkan device */
} mr_status;

/* "MR_EINVAL" etc.; never NULL. */
const char *mr_status_name(mr_status st);
/* A short English description of the code alone; never NULL. */
const char *mr_status_str(mr_status st);

/* ----------------------------------------------------------------- context */

typedef struct mr_ctx mr_ctx;

typedef enum mr_log_level { MR_LOG_DEBUG, MR_LOG_INFO, MR_LOG_WARN, MR_LOG_ERROR } mr_log_level;
typedef void (*mr_log_fn)(mr_log_level level, const char *msg, void *user);
/* Progress of a long call; return false to cancel (the call returns MR_ECANCELED). */
typedef bool (*mr_progress_fn)(float done, void *user);

/* ------------------------------------------------------ the host's Vulkan */

/* A host that already runs Vulkan (a game, an editor) can give the engine its
   own device, so generated frames stay on the GPU the host draws with (see
   mr_tensor_vk_buffer). The Vulkan handles are passed as void * (dispatchable
   handles are pointers on every platform), so this header needs no
   <vulkan/vulkan.h>; cast them back in the host.

   What the engine needs of the host's objects; a context refuses with
   MR_EUNSUPPORTED and a message naming the first thing missing:
   - Vulkan 1.2: the instance made with VkApplicationInfo.apiVersion at least
     MR_VK_API_VERSION (stated in api_version) and a physical device of 1.2 or
     later (the shaders are SPIR-V 1.5).
   - The device extension VK_KHR_push_descriptor, enabled at vkCreateDevice
     and listed in device_extensions (the engine manages no descriptor pools).
   - The feature storageBuffer16BitAccess (VkPhysicalDevice16BitStorageFeatures
     or VkPhysicalDeviceVulkan11Features), enabled and stated in
     storage_buffer_16bit (f16 and bf16 tensors are 16-bit storage words).
   - queue from queue_family, a family with VK_QUEUE_COMPUTE_BIT.
   Nothing else is required. What the engine uses when present is read from
   the physical device, never enabled: subgroup shuffles and uniform texel
   buffer formats (faster matmul and conv3d kernels, else plain ones) and
   compute timestamps (MOONREEL_PROFILE, else profiling is off with a warning).
   VK_NV_cooperative_matrix is only reported in mr_device_info.
   Vulkan cannot tell the engine which extensions and features another
   party's VkDevice has enabled; that is why the host states them. A false
   statement is undefined behaviour in Vulkan terms, which the validation
   layer reports.

   The handles must come from the system Vulkan loader (libvulkan) the engine
   links; the engine calls the loader's entry points on them. */
#define MR_VK_API_VERSION ((1u << 22) | (2u << 12)) /* VK_API_VERSION_1_2 */

typedef struct mr_vk_host {
  void *instance;          /* VkInstance */
  void *physical_device;   /* VkPhysicalDevice the device was made on */
  void *device;            /* VkDevice */
  void *queue;             /* VkQueue the engine submits to; may be one the host uses too */
  uint32_t queue_family;   /* the queue's family index */
  uint32_t api_version;    /* VkApplicationInfo.apiVersion of the instance (VK_MAKE_API_VERSION form) */
  const char *const *device_extensions; /* the names enabled at vkCreateDevice; read during mr_ctx_new only */
  uint32_t device_extension_count;
  bool storage_buffer_16bit;            /* storageBuffer16BitAccess was enabled */
  /* When the host uses queue itself from other threads: the engine calls
     lock before and unlock after each vkQueueSubmit it makes on queue (its
     only calls that need the queue externally synchronised; it waits on its
     own fence, never on the queue, and never calls vkDeviceWaitIdle). Both
     set or both NULL; NULL means the host never touches queue while an engine
     call runs. The lock is never held across an engine return. */
  void (*lock)(void *user);
  void (*unlock)(void *user);
  void *lock_user;
} mr_vk_host;

typedef struct mr_ctx_opts {
  const char *device;     /* index ("1") or name substring ("llvmpipe"); NULL = $MOONREEL_DEVICE, else
                             discrete, integrated, then CPU */
  const char *cache_dir;  /* pipeline cache folder; NULL = $XDG_CACHE_HOME/moonreel or ~/.cache/moonreel;
                             "" = no on-disk cache */
  mr_log_fn log;          /* NULL = warnings and errors to stderr */
  void *log_user;
  int validation;         /* Vulkan validation layer: -1 = from $MOONREEL_VALIDATION, 0 off, 1 on */
  int profile;            /* per-op GPU timestamps: -1 = from $MOONREEL_PROFILE, 0 off, 1 on */
  const mr_vk_host *vk_host; /* NULL = the engine makes its own instance and device. Else the context
                               runs on the host's device (read during mr_ctx_new; the struct need not
                               outlive it): device and validation above are ignored (validation is
                               the host's instance's: the engine adds no layer and no messenger, so
                               mr_ctx_validation_messages stays 0), and mr_ctx_free destroys only
                               what the engine made on that device, never the host's objects. */
} mr_ctx_opts;

mr_ctx_opts mr_ctx_opts_default(void);

/* Creates a context on one Vulkan device. opts may be NULL. */
mr_status mr_ctx_new(const mr_ctx_opts *opts, mr_ctx **out);
/* Waits for the device, saves the pipeline cache, prints the profile if enabled.
   On a host's device it waits only for the engine's own work and leaves the
   instance, device and queue to the host, which may go on using them (and
   must destroy them only after this). */
void mr_ctx_free(mr_ctx *ctx);

/* The message of the last failed call on this context (borrowed; "" if none). */
const char *mr_ctx_last_error(const mr_ctx *ctx);
/* The status that failure returned (MR_OK if none yet), so a layer that sees
   only the message (a Lua error, say) can still tell MR_ECANCELED apart. */
mr_status mr_ctx_last_status(const mr_ctx *ctx);
/* Records a failure as the engine does (printf-style message, which may quote
   mr_ctx_last_error): for libraries built on the engine that report through
   the context. Returns st. */
mr_status mr_ctx_set_error(mr_ctx *ctx, mr_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Submits recorded work and waits for it. */
mr_status mr_ctx_sync(mr_ctx *ctx);
/* Thread-safe, signal-safe: makes the running or next engine call return MR_ECANCELED. */
void mr_ctx_interrupt(mr_ctx *ctx);
/* Number of Vulkan validation messages seen so far (0 when validation is off). */
uint64_t mr_ctx_validation_messages(const mr_ctx *ctx);
/* Formats the per-op profile into buf (always NUL-terminated); returns the length it needed. */
size_t mr_ctx_profile_report(mr_ctx *ctx, char *buf, size_t cap);
/* Useful FLOPs (2 per multiply-add) of the matmul, attention and conv3d work recorded so far. */
double mr_ctx_flops(const mr_ctx *ctx);

/* Device memory. A freed tensor's bytes serve later work at once (the command
   stream orders the new owner after the old one's uses); blocks stay held for
   reuse until an allocation would pass the budget or mr_ctx_memory_trim. The
   budget is $MOONREEL_DEVICE_BUDGET ("6G", "512M" or bytes) if set, else the
   host's available memory on a CPU-type device (lavapipe), else the size of
   the device heap tensors live in. */
typedef struct mr_memory_stats {
  uint64_t live_bytes;          /* held by tensors now */
  uint64_t held_bytes;          /* taken from Vulkan now: live bytes plus free ranges kept for reuse */
  uint64_t peak_live_bytes;     /* since the context was made or mr_ctx_memory_reset_peak */
  uint64_t peak_held_bytes;
  uint64_t budget_bytes;        /* held bytes never pass it: past it an allocation fails with MR_EDEVMEM */
  const char *budget_source;    /* "MOONREEL_DEVICE_BUDGET", "host memory available" or "device heap" (static) */
  int blocks;                   /* device memory blocks held */
  uint64_t device_allocations;  /* vkAllocateMemory calls so far */
} mr_memory_stats;

void mr_ctx_memory_stats(const mr_ctx *ctx, mr_memory_stats *out);
/* Starts the peaks over from the current figures. */
void mr_ctx_memory_reset_peak(mr_ctx *ctx);
/* Waits for recorded work, then gives every block no tensor uses back to Vulkan. */
mr_status mr_ctx_memory_trim(mr_ctx *ctx);
/* Fault injection for tests: the n-th device allocation from now (1-based;
   every tensor's storage counts) fails as if the device were out of memory;
   0 turns it off. */
void mr_ctx_memory_fail_at(mr_ctx *ctx, uint64_t n);

typedef enum mr_device_type {
  MR_DEVICE_OTHER, MR_DEVICE_DISCRETE, MR_DEVICE_INTEGRATED, MR_DEVICE_VIRTUAL, MR_DEVICE_CPU
} mr_device_type;

typedef struct mr_device_info {
  int index;                    /* position in the Vulkan physical-device list */
  char name[256];
  char driver[256];             /* driver name and version string */
  mr_device_type type;
  uint32_t vendor_id, device_id;
  uint64_t heap_bytes;          /* size of the largest device-local heap */
  uint64_t max_buffer_bytes;    /* maxStorageBufferRange: largest tensor one binding can see */
  uint32_t subgroup_size;
  uint32_t shared_memory_bytes; /* maxComputeSharedMemorySize */
  bool coopmat_nv;              /* VK_NV_cooperative_matrix is available */
} mr_device_info;

/* "discrete", "integrated", "virtual", "cpu", "other". */
const char *mr_device_type_name(mr_device_type t);
/* The device this context runs on. */
void mr_ctx_device_info(const mr_ctx *ctx, mr_device_info *out);
/* Lists the Vulkan devices without creating a context: fills up to cap entries,
   sets *count to the number present. */
mr_status mr_devices_list(mr_device_info *out, int cap, int *count);

/* ----------------------------------------------------------------- tensors */

/* Element types. Device tensors store F32, F16 or BF16 (BF16 as 16-bit words,
   widened to f32 in shaders). The others appear in files and host buffers. */
typedef enum mr_dtype {
  MR_F32, MR_F16, MR_BF16, MR_F64, MR_I64, MR_I32, MR_U8, MR_DTYPE_COUNT
} mr_dtype;

#define MR_MAX_DIMS 5

/* "f32", "f16", "bf16", "f64", "i64", "i32", "u8". */
const char *mr_dtype_name(mr_dtype dt);
/* Parses a name as above; returns false if unknown. */
bool mr_dtype_parse(const char *name, mr_dtype *out);
size_t mr_dtype_size(mr_dtype dt);
/* True for the dtypes a device tensor can store. */
bool mr_dtype_is_storage(mr_dtype dt);

typedef struct mr_tensor mr_tensor;

/* A new zero-filled tensor of 1..MR_MAX_DIMS dims. */
mr_status mr_tensor_new(mr_ctx *ctx, mr_dtype dtype, int ndim, const int64_t *shape, mr_tensor **out);
/* A new tensor filled from host data of type src_type (any mr_dtype), converted to dtype.
   data holds numel elements, row-major. The data is copied before return. */
mr_status mr_tensor_from_host(mr_ctx *ctx, mr_dtype dtype, int ndim, const int64_t *shape,
                              mr_dtype src_type, const void *data, mr_tensor **out);
/* Releases this handle. Storage shared with views lives until the last handle is freed. */
void mr_tensor_free(mr_tensor *t);

mr_ctx *mr_tensor_ctx(const mr_tensor *t);
mr_dtype mr_tensor_dtype(const mr_tensor *t);
int mr_tensor_ndim(const mr_tensor *t);
/* Borrowed; ndim entries. */
const int64_t *mr_tensor_shape(const mr_tensor *t);
/* Borrowed; ndim entries, in elements. */
const int64_t *mr_tensor_strides(const mr_tensor *t);
int64_t mr_tensor_numel(const mr_tensor *t);
/* Bytes of device memory held by the storage behind t (shared by its views). */
size_t mr_tensor_device_bytes(const mr_tensor *t);
bool mr_tensor_is_contiguous(const mr_tensor *t);

/* Copies host data (numel elements of src_type) into t, converting. Waits for
   work already recorded that uses t. */
mr_status mr_tensor_write(mr_tensor *t, mr_dtype src_type, const void *data, size_t count);
/* Reads t into dst as dst_type (F32, F16, BF16 or F64), count = numel. Waits for the GPU. */
mr_status mr_tensor_read(mr_tensor *t, mr_dtype dst_type, void *dst, size_t count);

/* Where a tensor's bytes live on the device, for a host that made the
   context on its own device (mr_vk_host) and uses them there without a copy
   through host memory: a generated frame drawn as a texture source, say. */
typedef struct mr_vk_buffer {
  uint64_t buffer;   /* VkBuffer: (VkBuffer)(uintptr_t)buffer where handles are pointers (64-bit) */
  uint64_t offset;   /* bytes into buffer of element 0 */
  uint64_t size;     /* numel * the dtype's size: the elements row-major, in mr_tensor_dtype(t) (BF16 as
                        16-bit words) */
} mr_vk_buffer;

/* Fills *out for a contiguous t (MR_EINVAL for other views: take
   mr_tensor_contiguous first); on failure *out is zeroed.
   Ownership: the buffer is the engine's; the host never destroys, binds
   memory to or frees it. The range is valid while t's storage lives (t or a
   view of it not yet freed); after that its bytes serve later engine work at
   once, so the host must have finished its own GPU use of the range (waited
   its fence) before the last mr_tensor_free.
   Synchronisation: engine work that writes t is only recorded, so call
   mr_ctx_sync (or any sync point) before submitting host work that reads the
   range, and do not call into the engine for t until host work that writes
   it has completed (waited its fence). The engine's buffers are
   VK_SHARING_MODE_EXCLUSIVE: use them in the context's queue family. On a
   host's device the engine begins and ends each of its submissions with a
   full memory barrier, so host work on the same queue, ordered as above,
   needs no barrier of its own for these bytes. The engine signals no
   semaphores: host work on another queue of the family is ordered only by
   the waits above, and should begin with its own memory barrier (srcStage
   COMPUTE_SHADER | TRANSFER, srcAccess SHADER_WRITE | TRANSFER_WRITE: the
   engine writes with dispatches and buffer copies). The buffer was made with STORAGE_BUFFER,
   UNIFORM_TEXEL_BUFFER, TRANSFER_SRC and TRANSFER_DST usage. */
mr_status mr_tensor_vk_buffer(const mr_tensor *t, mr_vk_buffer *out);

/* Views share storage with t; each is a new handle the caller frees. */
/* Reshape a contiguous tensor; one entry of shape may be -1. */
mr_status mr_tensor_reshape(mr_tensor *t, int ndim, const int64_t *shape, mr_tensor **out);
/* Elements start, start+step, ... < stop along dim (negative dim counts from the end). */
mr_status mr_tensor_slice(mr_tensor *t, int dim, int64_t start, int64_t stop, int64_t step, mr_tensor **out);
/* Reorders dims: out dim i is t's dim perm[i]. */
mr_status mr_tensor_permute(mr_tensor *t, const int *perm, mr_tensor **out);
/* A contiguous tensor with t's values: a new view of t if it already is one, else a copy. */
mr_status mr_tensor_contiguous(mr_tensor *t, mr_tensor **out);
/* A contiguous copy converted to dtype. */
mr_status mr_tensor_cast(mr_tensor *t, mr_dtype dtype, mr_tensor **out);
/* dst <- src elementwise (same shapes, any strides and storage dtypes). */
mr_status mr_tensor_copy(mr_tensor *dst, const mr_tensor *src);
/* Sets every element of t to value. */
mr_status mr_tensor_fill(mr_tensor *t, float value);

/* --------------------------------------------------------------------- ops */
/* Each op records into the context's command stream and returns a new tensor
   (dtype of the first input unless stated). Inputs may be views. Arithmetic
   is f32 whatever the storage dtype. */

typedef enum mr_binary_op { MR_BINARY_ADD, MR_BINARY_SUB, MR_BINARY_MUL, MR_BINARY_DIV } mr_binary_op;
typedef enum mr_unary_op {
  MR_UNARY_SILU, MR_UNARY_GELU_TANH, MR_UNARY_EXP, MR_UNARY_TANH, MR_UNARY_NEG, MR_UNARY_SQUARE,
  MR_UNARY_GELU /* exact, with erf */
} mr_unary_op;
typedef enum mr_reduce_op { MR_REDUCE_SUM, MR_REDUCE_MEAN, MR_REDUCE_MAX } mr_reduce_op;

/* a op b with numpy broadcasting (shapes aligned from the right). */
mr_status mr_op_binary(mr_binary_op op, const mr_tensor *a, const mr_tensor *b, mr_tensor **out);
/* a * (b + beta) + c with numpy broadcasting over all three, in one dispatch:
   a DiT's modulation LN(x) * (1 + scale) + shift (beta 1) and its gated
   residual x + y * gate (beta 0). */
mr_status mr_op_mul_add(const mr_tensor *a, const mr_tensor *b, float beta, const mr_tensor *c, mr_tensor **out);
/* a * scale + bias. */
mr_status mr_op_scale(const mr_tensor *a, float scale, float bias, mr_tensor **out);
mr_status mr_op_unary(mr_unary_op op, const mr_tensor *a, mr_tensor **out);

/* Linear layer: out[..., N] = x[..., K] · w[N, K]ᵀ + bias[N]. w is 2-D (shared
   across the batch) or has x's leading dims (batched). bias may be NULL. */
mr_status mr_op_matmul(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, mr_tensor **out);

/* Normalises over the last dim. weight/bias ([last dim]) may be NULL. */
mr_status mr_op_layer_norm(const mr_tensor *x, const mr_tensor *weight, const mr_tensor *bias, float eps,
                           mr_tensor **out);
mr_status mr_op_rms_norm(const mr_tensor *x, const mr_tensor *weight, float eps, mr_tensor **out);
/* Softmax along dim (negative counts from the end). */
mr_status mr_op_softmax(const mr_tensor *x, int dim, mr_tensor **out);

typedef struct mr_attention_opts {
  float scale;              /* multiplies q·k; 0 = 1/sqrt(head_dim) */
  const int32_t *k_lens;    /* per batch item, keys at index >= k_lens[b] are masked; NULL = all */
} mr_attention_opts;
mr_attention_opts mr_attention_opts_default(void);
/* Multi-head attention. q [B, Lq, H, D], k and v [B, Lk, H, D] -> [B, Lq, H, D].
   D a multiple of 8 up to 256. opts may be NULL. */
mr_status mr_op_attention(const mr_tensor *q, const mr_tensor *k, const mr_tensor *v,
                          const mr_attention_opts *opts, mr_tensor **out);

/* Joins n tensors along dim; all other dims equal. */
mr_status mr_op_concat(mr_tensor *const *ts, int n, int dim, mr_tensor **out);
/* Constant padding: pads[2*i], pads[2*i+1] = elements before/after along dim i (>= 0). */
mr_status mr_op_pad(const mr_tensor *x, const int64_t *pads, float value, mr_tensor **out);
/* Reduces along dim; keepdim keeps it with size 1. */
mr_status mr_op_reduce(mr_reduce_op op, const mr_tensor *x, int dim, bool keepdim, mr_tensor **out);

/* Rotary position embedding on adjacent pairs (x[2i], x[2i+1]) of the last dim:
   (a, b) -> (a cos θ - b sin θ, a sin θ + b cos θ) with θ from per-token tables.
   x [B, L, H, D] (D even); cos and sin [L, D/2] (f32 recommended: angles need the precision).
   Tokens past the tables' rows (L_table < L) are passed through unrotated. */
mr_status mr_op_rope(const mr_tensor *x, const mr_tensor *cos, const mr_tensor *sin, mr_tensor **out);

/* 3-D convolution (cross-correlation, as torch's conv3d) by implicit GEMM.
   x [C, T, H, W] (any view), w [O, C, kt, kh, kw], bias [O] or NULL.
   stride[3] (t, h, w; NULL = 1) and pad[6] = zeros before/after along t, h, w
   (NULL = none) -> out [O, To, Ho, Wo], To = (T + pad[0] + pad[1] - kt) / stride[0] + 1
   (likewise H, W). Causal temporal padding is pad[0] = kt - 1, pad[1] = 0; a
   per-frame 2-D convolution is kt = 1. */
mr_status mr_op_conv3d(const mr_tensor *x, const mr_tensor *w, const mr_tensor *bias, const int *stride,
                       const int *pad, mr_tensor **out);
/* Nearest-neighbour upsampling of the last two dims: [..., H, W] -> [..., H*fh, W*fw]. */
mr_status mr_op_upsample_nearest(const mr_tensor *x, int fh, int fw, mr_tensor **out);
/* Channels-first RMS norm over dim 0, in F.normalize form:
   out[c, i] = x[c, i] / max(||x[:, i]||_2, eps) * sqrt(C) * gamma[c]. gamma (C elements) may be NULL. */
mr_status mr_op_channel_rms_norm(const mr_tensor *x, const mr_tensor *gamma, float eps, mr_tensor **out);
/* The same norm, then SiLU, in one pass (the Wan VAE's norm and nonlinearity). */
mr_status mr_op_channel_rms_norm_silu(const mr_tensor *x, const mr_tensor *gamma, float eps, mr_tensor **out);

/* Row gather (embedding lookup): out[i, :] = table[ids[i], :] for i < n.
   table [V, D], any strides; ids are n host values in [0, V) (MR_EINVAL
   otherwise), copied before return. out is a new contiguous [n, D] tensor. */
mr_status mr_op_gather_rows(const mr_tensor *table, const int32_t *ids, int n, mr_tensor **out);

#define MR_LINCOMB_MAX 4
/* Linear combination out = Σ coeffs[i]·xs[i], i < n (1..MR_LINCOMB_MAX), of
   tensors of one shape (any storage dtypes, any strides; non-contiguous
   inputs are copied first), accumulated in f32. out is a new contiguous
   tensor of xs[0]'s dtype. */
mr_status mr_op_lincomb(int n, const mr_tensor *const *xs, const float *coeffs, mr_tensor **out);

/* --------------------------------------------------------- checkpoint files */
/* A checkpoint file read into host memory (mmap where possible): names to
   tensors. Data stays valid until mr_weights_free. */

typedef struct mr_weights mr_weights;

#define MR_WEIGHT_MAX_DIMS 8

typedef struct mr_weight_info {
  const char *name;                     /* borrowed */
  mr_dtype dtype;
  int ndim;
  int64_t shape[MR_WEIGHT_MAX_DIMS];
  const void *data;                     /* contiguous, row-major, little-endian; borrowed */
  size_t nbytes;
} mr_weight_info;

/* Opens a .safetensors file or a PyTorch .pth/.pt zip archive (chosen by content).
   ctx is used for the error message only. */
mr_status mr_weights_open(mr_ctx *ctx, const char *path, mr_weights **out);
/* Opens n files as one checkpoint: the shards of a split model
   (diffusion_pytorch_model-00001-of-00006.safetensors, ...). A tensor name
   found in two files is an error naming both. */
mr_status mr_weights_open_files(mr_ctx *ctx, int n, const char *const *paths, mr_weights **out);
void mr_weights_free(mr_weights *w);
int mr_weights_count(const mr_weights *w);
/* Fills info for entry i (0 <= i < count); entries are sorted by name. */
mr_status mr_weights_get(const mr_weights *w, int i, mr_weight_info *info);
/* Index of name, or -1. */
int mr_weights_find(const mr_weights *w, const char *name);
/* The file's string metadata (safetensors __metadata__ as JSON text), or NULL. Borrowed. */
const char *mr_weights_metadata(const mr_weights *w);
/* Uploads entry i as a device tensor of dtype (F32, F16 or BF16). */
mr_status mr_weights_to_tensor(mr_ctx *ctx, const mr_weights *w, int i, mr_dtype dtype, mr_tensor **out);

/* The SHA-256 of a file's bytes as 64 lowercase hex digits (NUL-terminated). */
mr_status mr_file_sha256(mr_ctx *ctx, const char *path, char hex[65]);
/* The SHA-256 of size bytes at data, the same way. */
mr_status mr_sha256(mr_ctx *ctx, const void *data, size_t size, char hex[65]);

/* Writes tensors to a .safetensors file atomically (temp file + rename).
   metadata_json: a JSON object of string values, or NULL. */
mr_status mr_safetensors_write(mr_ctx *ctx, const char *path, int n, const char *const *names,
                               mr_tensor *const *tensors, const char *metadata_json);

/* -------------------------------------------------------------------- text */
/* A SentencePiece unigram tokenizer read from a spiece.model file (umT5's
   tokenizer for Wan). Encoding gives exactly the ids the sentencepiece
   library's EncodeAsIds gives: the model's own normalization (nmt_nfkc
   precompiled map), Viterbi segmentation, byte fallback when the model has it.
   Encoding does not modify the tokenizer; calls on one tokenizer from several
   threads are safe, error messages aside (they go to the ctx). */

typedef struct mr_tokenizer mr_tokenizer;

/* Reads a SentencePiece model (protobuf ModelProto; unigram models only).
   ctx receives error messages and must outlive the tokenizer; it may be NULL
   (messages then go to stderr). MR_EIO if the file cannot be read, MR_EFORMAT
   if it is not a valid model, MR_EUNSUPPORTED for BPE/word/char models. */
mr_status mr_tokenizer_load(mr_ctx *ctx, const char *spiece_model_path, mr_tokenizer **out);
void mr_tokenizer_free(mr_tokenizer *tok);

/* Number of pieces, control and byte pieces included. */
int mr_tokenizer_vocab_size(const mr_tokenizer *tok);
/* The text of piece id (spaces appear as U+2581); borrowed from tok; NULL if
   id is out of range. */
const char *mr_tokenizer_piece(const mr_tokenizer *tok, int32_t id);
/* Special ids, or -1 when the model has no such piece: "</s>", "<pad>" (as
   named by the model's trainer spec, and only when they are control pieces,
   as sentencepiece reports them), and the unknown piece. */
int32_t mr_tokenizer_eos_id(const mr_tokenizer *tok);
int32_t mr_tokenizer_pad_id(const mr_tokenizer *tok);
int32_t mr_tokenizer_unk_id(const mr_tokenizer *tok);

/* Encodes UTF-8 text (malformed bytes are read as U+FFFD, as the library
   does) into ids, no EOS added. Writes the first min(cap, needed) ids to ids
   (which may be NULL when cap is 0) and sets *n to the number needed, so a
   caller can size a buffer with a first call. */
mr_status mr_tokenizer_encode(mr_tokenizer *tok, const char *text, int32_t *ids, int cap, int *n);

/* Wan's text path, as the reference feeds umT5: cleans the prompt (curly
   quotes straightened, HTML entities decoded twice, whitespace runs collapsed
   to one space, ends trimmed), encodes it, keeps at most text_len - 1 ids,
   appends EOS, and pads with the pad id to text_len. ids has room for
   text_len entries (Wan uses 512); *n_tokens = ids before the padding (the
   attention-mask length, EOS included). */
mr_status mr_tokenizer_encode_wan(mr_tokenizer *tok, const char *prompt, int text_len, int32_t *ids,
                                  int32_t *n_tokens);

/* ------------------------------------------------------------------ models */
/* Model components load from an open checkpoint (mr_weights) with a
   precision policy; the variant and sizes are detected from tensor names and
   shapes, and the official names, the ComfyUI `model.diffusion_model.` prefix
   and similar prefixes all load. A component holds its own device copies:
   the mr_weights may be freed right after loading. */

typedef struct mr_model_opts {
  mr_dtype weights;          /* storage of matmul/conv weights: MR_F32 (default; conformance),
                                MR_F16 or MR_BF16. Norms, biases and modulation stay f32. */
  const char *config_json;   /* optional config.json text; NULL = detect from the tensors */
  int resident_blocks;       /* DiT: blocks kept on the device; the rest stay in host memory and are put
                                on the device while they run. -1 (default) = as many as fit the budget
                                (mr_memory_stats) less a reserve for activations of a fifth of it, at
                                least 512 MiB; the plan is logged at load (a warning when it streams). */
} mr_model_opts;

mr_model_opts mr_model_opts_default(void);

/* Every model component keeps its parameters in one table under the
   official names (as the released checkpoints spell them, without a
   "model.diffusion_model." style prefix): listing, lookup and LoRA read it. */
typedef struct mr_params mr_params;

typedef struct mr_param_info {
  const char *name;             /* borrowed from the table */
  mr_tensor *tensor;            /* borrowed: the component owns it; NULL for a streamed weight off the device */
  mr_dtype dtype;
  int ndim;
  int64_t shape[MR_MAX_DIMS];
  bool is_weight;               /* a matmul/conv weight (stored in the model's weight dtype; a LoRA target) */
  bool streamed;                /* kept in host memory, put on the device only while its block runs */
} mr_param_info;

int mr_params_count(const mr_params *params);
/* Fills out for entry i (0-based); MR_ENOTFOUND past the end. */
mr_status mr_params_get(const mr_params *params, int i, mr_param_info *out);
/* The index of the parameter called name, or -1. */
int mr_params_find(const mr_params *params, const char *name);

/* umT5 encoder (Wan's text encoder). */
typedef struct mr_t5 mr_t5;
mr_status mr_t5_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_t5 **out);
void mr_t5_free(mr_t5 *t5);
/* Encodes n token ids; only the first n_valid are real (the rest padding, masked as
   keys). Returns new [n, dim] f32 states. */
mr_status mr_t5_encode(mr_t5 *t5, const int32_t *ids, int n, int n_valid, mr_tensor **out);
int mr_t5_dim(const mr_t5 *t5);
/* The encoder's parameters under the official names (borrowed from t5). */
const mr_params *mr_t5_params(const mr_t5 *t5);

/* Wan VAE, 2.1 (z 16, x8 space) or 2.2 (z 48, x16 space, patchified). */
typedef struct mr_wan_vae mr_wan_vae;
mr_status mr_wan_vae_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_wan_vae **out);
void mr_wan_vae_free(mr_wan_vae *vae);
/* video [3, T, H, W] in [-1, 1] (T = 4k+1) -> new normalised latent [z, 1+(T-1)/4, H/s, W/s]. */
mr_status mr_wan_vae_encode(mr_wan_vae *vae, const mr_tensor *video, mr_progress_fn progress, void *user,
                            mr_tensor **out);
/* latent [z, T', h, w] -> new video [3, 1+4(T'-1), h*s, w*s], not clamped. */
mr_status mr_wan_vae_decode(mr_wan_vae *vae, const mr_tensor *latent, mr_progress_fn progress, void *user,
                            mr_tensor **out);
/* Frames as they are ready: a borrowed [3, n, H, W] view of the output (valid
   during the call) holding video frames [first, first + n). Return false to
   cancel (the call returns MR_ECANCELED). */
typedef bool (*mr_frames_fn)(const mr_tensor *frames, int64_t first, void *user);
/* mr_wan_vae_decode, handing each chunk's frames to on_frames once computed
   (after the progress call), so a host can show a video while it decodes. */
mr_status mr_wan_vae_decode_each(mr_wan_vae *vae, const mr_tensor *latent, mr_progress_fn progress,
                                 mr_frames_fn on_frames, void *user, mr_tensor **out);
/* Latent frames per decode chunk after the first (always one frame, as the
   reference decodes it). Each later chunk continues the causal caches, so any
   chunking gives the same bits; larger chunks take fewer dispatches and more
   memory. 0, the default, takes as many as keep a chunk within
   MR_WAN_VAE_CHUNK_PIXELS output pixels (frames x height x width): every
   latent frame alone from 256x256 up, as the reference; a whole 64x64 clip
   of 17 frames in two chunks. */
#define MR_WAN_VAE_CHUNK_PIXELS (1 << 18)
void mr_wan_vae_set_decode_chunk(mr_wan_vae *vae, int latent_frames);
int mr_wan_vae_z_dim(const mr_wan_vae *vae);
int mr_wan_vae_spatial_stride(const mr_wan_vae *vae);   /* 8 or 16 */
int mr_wan_vae_version(const mr_wan_vae *vae);          /* 21 or 22 */
/* The VAE's parameters under the official names ("decoder.upsamples.0.residual.0.gamma",
   "conv1.weight"): every tensor of the checkpoint, conv1 whole (mu and log_var rows). Borrowed. */
const mr_params *mr_wan_vae_params(const mr_wan_vae *vae);
/* Latents are (mu - mean) / std per channel. The released VAEs' statistics
   (2.1: z 16, 2.2: z 48) are built in; other z_dims start with none (raw mu).
   This sets z_dim values of each, or clears them with mean = NULL. */
mr_status mr_wan_vae_set_latent_stats(mr_wan_vae *vae, const float *mean, const float *std, int z_dim);

/* Wan DiT (WanModel): t2v, i2v (Wan 2.1 with CLIP tokens; Wan 2.2 without),
   ti2v (per-token timesteps), vace (hint blocks). */
typedef struct mr_wan_dit mr_wan_dit;

#define MR_WAN_MAX_VACE_LAYERS 64

typedef struct mr_wan_dit_config {
  char model_type[8];        /* "t2v", "i2v", "flf2v", "ti2v", "vace" */
  int dim, ffn_dim, freq_dim, text_dim, text_len, in_dim, out_dim, num_layers;
  int num_heads;             /* 0 = unknown: width not a multiple of 128 and no config.json */
  int patch[3];              /* (1, 2, 2) in every released model */
  float eps;
  int img_dim;               /* CLIP feature width when the model has img_emb (1280), else 0 */
  int img_tokens;            /* 257, or 514 with FLF2V's emb_pos; 0 without img_emb */
  int vace_in_dim, n_vace_layers;
  int vace_layers[MR_WAN_MAX_VACE_LAYERS];
  int64_t n_params;          /* parameters in the checkpoint's DiT tensors */
} mr_wan_dit_config;

/* Reads the variant and sizes from tensor names and shapes only (nothing is
   uploaded or read), with config_json (config.json text, or an object with a
   "config" member) filling what shapes cannot tell: num_heads (else dim/128),
   text_len (else 512), eps (else 1e-6), vace_layers (else evenly spaced),
   model_type "ti2v" for 48-channel models. */
mr_status mr_wan_dit_detect(mr_ctx *ctx, const mr_weights *w, const char *config_json, mr_wan_dit_config *out);

mr_status mr_wan_dit_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_wan_dit **out);
void mr_wan_dit_free(mr_wan_dit *dit);
/* Borrowed from dit. */
const mr_wan_dit_config *mr_wan_dit_config_get(const mr_wan_dit *dit);
/* The DiT's parameters (borrowed from dit). */
const mr_params *mr_wan_dit_params(const mr_wan_dit *dit);

typedef struct mr_wan_dit_input {
  const mr_tensor *x;             /* [C, F, H, W] noisy latent */
  float t;                        /* timestep (0..1000) of every token, unless t_tokens */
  const float *t_tokens;          /* per-token timesteps (ti2v), n_t_tokens = F*H*W/4 entries; NULL = t */
  int n_t_tokens;
  const mr_tensor *context;       /* [Lc, text_dim] text states, Lc <= text_len (zero-padded here) */
  const mr_tensor *y;             /* i2v: [in_dim - C, F, H, W] condition, concatenated after x */
  const mr_tensor *clip_fea;      /* i2v with img_emb: [img_tokens, img_dim] (a leading 1 is allowed) */
  const mr_tensor *vace_context;  /* vace: [vace_in_dim, F, H, W]; NULL skips the hints */
  float vace_scale;               /* context scale of the hints */
} mr_wan_dit_input;

/* One forward: returns the new flow prediction [out_dim, F, H, W] (f32). */
mr_status mr_wan_dit_forward(mr_wan_dit *dit, const mr_wan_dit_input *in, mr_tensor **out);

/* The most contexts one batched forward takes. */
#define MR_WAN_DIT_MAX_BATCH 4
/* The forward of in's latent with each of n contexts (in->context is not
   read), run as one batch: each weight is read once and each op is one
   dispatch for all n, which is what classifier-free guidance needs per step
   (the prompt and the negative prompt). outs[i] gets the prediction with
   contexts[i], as mr_wan_dit_forward would give it; on failure every outs[i]
   is NULL. */
mr_status mr_wan_dit_forward_batch(mr_wan_dit *dit, const mr_wan_dit_input *in, int n, const mr_tensor *const *contexts,
                                   mr_tensor **outs);

/* LoRA adapters (docs/models.md, "LoRA"): the original/ComfyUI, kohya/musubi
   and diffusers namings, lora_A/B or lora_down/up with alpha, .diff and
   .diff_b deltas, LoHa, LoKr and DoRA (dora_scale, always merged). Merged: the weights are rewritten (in f32,
   from a kept copy of the base); on the fly: the weights stay and each
   linear adds strength·(alpha/rank)·(x Aᵀ)Bᵀ. Full deltas (.diff, LoHa, LoKr)
   and adapters of non-linear parameters are always merged. */
typedef struct mr_lora mr_lora;
typedef enum mr_lora_mode {
  MR_LORA_AUTO,        /* on the fly for 16-bit weights, merged for f32 */
  MR_LORA_MERGE,
  MR_LORA_ON_THE_FLY
} mr_lora_mode;
typedef struct mr_lora_opts {
  float strength;      /* default 1 */
  mr_lora_mode mode;   /* default AUTO */
} mr_lora_opts;
mr_lora_opts mr_lora_opts_default(void);

/* Attaches the adapter in w (any number stack, applied in sum) to dit. name
   (its file, for messages) is copied; w may be freed after. An adapter that
   matches no parameter, or one whose shapes differ from the model's, is
   refused with MR_EFORMAT naming the module; modules that match nothing (an
   I2V adapter's k_img on a T2V model) are counted and logged, not applied.
   The handle is owned by dit: mr_lora_remove or mr_wan_dit_free ends it. */
mr_status mr_wan_dit_lora_add(mr_wan_dit *dit, const mr_weights *w, const char *name, const mr_lora_opts *opts,
                              mr_lora **out);
/* A new strength, for the next forward. Merged adapters rewrite their
   weights; one attached with MR_LORA_AUTO goes on the fly at its first
   change (strength schedules change it every step). */
mr_status mr_lora_set_strength(mr_lora *lora, float strength);
typedef struct mr_lora_info {
  const char *name;    /* borrowed from the handle */
  const char *naming;  /* "original", "kohya" or "diffusers" (static) */
  float strength;
  mr_lora_mode mode;   /* as resolved: MERGE or ON_THE_FLY */
  int targets;         /* parameters it changes */
  int modules;         /* modules in the file */
  int unmatched;       /* of those, matching nothing in the model */
} mr_lora_info;
void mr_lora_get_info(const mr_lora *lora, mr_lora_info *out);
/* The attached adapters, newest first: mr_wan_dit_lora_first, then mr_lora_next until NULL. */
const mr_lora *mr_wan_dit_lora_first(const mr_wan_dit *dit);
const mr_lora *mr_lora_next(const mr_lora *lora);
/* Detaches and frees the adapter: the weights it changed are the base's
   (or the other adapters') again, bit for bit. NULL is a no-op. */
void mr_lora_remove(mr_lora *lora);

/* CLIP ViT image tower (Wan 2.1 I2V): only `visual.*` of the checkpoint is
   used. Output: the states before the last block, as I2V feeds the DiT. */
typedef struct mr_clip_vision mr_clip_vision;
mr_status mr_clip_vision_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_clip_vision **out);
void mr_clip_vision_free(mr_clip_vision *clip);
int mr_clip_vision_image_size(const mr_clip_vision *clip);  /* 224 for ViT-H/14 */
int mr_clip_vision_dim(const mr_clip_vision *clip);         /* 1280 for ViT-H/14 */
/* The tower's parameters under the official names ("visual.transformer.0.norm1.weight"); the
   checkpoint's last block and its text tower are not loaded (Wan never uses them). Borrowed. */
const mr_params *mr_clip_vision_params(const mr_clip_vision *clip);
/* Wan's preprocessing: image [3, H, W] (or [3, 1, H, W]) in [-1, 1] -> bicubic
   resize to the tower's size (align_corners false, no antialias, no crop) ->
   (x + 1) / 2 -> CLIP mean/std. Returns new pixels [3, S, S] (f32). */
mr_status mr_clip_vision_preprocess(mr_clip_vision *clip, const mr_tensor *image, mr_tensor **out);
/* Preprocess, then the tower: returns new [1 + (S/p)^2, dim] f32 states. */
mr_status mr_clip_vision_encode(mr_clip_vision *clip, const mr_tensor *image, mr_tensor **out);
/* The tower alone, on already preprocessed pixels [3, S, S]. */
mr_status mr_clip_vision_forward(mr_clip_vision *clip, const mr_tensor *pixels, mr_tensor **out);

/* What a checkpoint holds, read from names and shapes alone (no tensor data
   is touched, so a checkpoint of any size is detected instantly). */
typedef enum mr_model_kind {
  MR_MODEL_UNKNOWN, MR_MODEL_WAN_DIT, MR_MODEL_UMT5, MR_MODEL_WAN_VAE, MR_MODEL_CLIP_VISION
} mr_model_kind;

typedef struct mr_model_info {
  mr_model_kind kind;
  char variant[32];       /* DiT: model_type ("t2v", ...); VAE: "2.1" / "2.2"; "umt5"; "clip-vit" */
  int64_t n_params;       /* parameters of the checkpoint's tensors */
  int dim;                /* model width (DiT dim, T5 d_model, VAE base dim, CLIP width) */
  int layers;             /* blocks (DiT, T5, CLIP); 0 for the VAE */
  int heads;              /* attention heads, 0 where unknown */
  int z_dim;              /* VAE latent channels */
  mr_wan_dit_config dit;  /* filled for MR_MODEL_WAN_DIT */
} mr_model_info;

/* "wan-dit", "umt5", "wan-vae", "clip-vision", "unknown". */
const char *mr_model_kind_name(mr_model_kind k);
/* Detects the component in w. config_json may be NULL. MR_EFORMAT if nothing matches. */
mr_status mr_model_detect(mr_ctx *ctx, const mr_weights *w, const char *config_json, mr_model_info *out);

/* ---------------------------------------------------------------- sampling */
/* Flow matching as Wan samples: x_σ = (1 − σ)·x0 + σ·ε, the DiT predicts
   v = ε − x0 at the integer timestep t, x0 = x − σ·v. A sampler holds N
   timesteps (what the DiT sees, descending) and N+1 sigmas (the solver's,
   stored as f32 like the reference, the last exactly 0). Sigma rules, with
   linspace as numpy computes it (a + i·(b − a)/N) and the shift
   σ' = s·σ / (1 + (s − 1)·σ) in double:
     UNIPC:        σ_i = linspace(0.999f, 0, N+1)[i] (0.999f = 0.999 rounded to float)
     DPMPP, EULER: σ_i = linspace(1, 0, N+1)[i]      (Wan's sampling-sigma rule)
   t_i = (int64)(σ'_i · 1000), truncated; sigmas = (float)σ'_i, then 0.
   Coefficients are computed in double on the host from the f32 sigmas; the
   tensor updates are mr_op_lincomb calls (f32 accumulation). */

typedef enum mr_sampler_kind {
  MR_SAMPLER_UNIPC, /* FlowUniPCMultistepScheduler (Wan's default): bh2, order 2, predictor +
                         corrector, lower order on the first and last steps */
  MR_SAMPLER_DPMPP, /* FlowDPMSolverMultistepScheduler: dpmsolver++, order 2 midpoint, first and last
                         steps first order, no noise */
  MR_SAMPLER_EULER, /* x_next = x + (σ_next − σ)·v on the DPM++ sigmas (the rule the default model's
                         trainer samples with) */
} mr_sampler_kind;

typedef struct mr_sampler_opts {
  mr_sampler_kind kind; /* default MR_SAMPLER_UNIPC */
  int steps;              /* N >= 1; default 50 */
  double shift;           /* s > 0, finite; default 5.0 (1 = no shift) */
} mr_sampler_opts;

mr_sampler_opts mr_sampler_opts_default(void);
/* "unipc", "dpmpp", "euler"; "" for an unknown value. */
const char *mr_sampler_kind_name(mr_sampler_kind kind);
/* Parses "unipc", "dpmpp" (also "dpm++") or "euler"; false if unknown. */
bool mr_sampler_kind_parse(const char *name, mr_sampler_kind *out);

typedef struct mr_sampler mr_sampler;

/* A sampler on ctx (its tensors live there). opts may be NULL (defaults).
   MR_EINVAL for steps < 1 or a shift that is not a positive finite number. */
mr_status mr_sampler_new(mr_ctx *ctx, const mr_sampler_opts *opts, mr_sampler **out);
/* Frees the sampler and the history tensors it holds. */
void mr_sampler_free(mr_sampler *s);
mr_sampler_kind mr_sampler_get_kind(const mr_sampler *s);
double mr_sampler_shift(const mr_sampler *s);
/* N, the number of steps of a full run. */
int mr_sampler_steps(const mr_sampler *s);
/* Copies the N timesteps to out. */
void mr_sampler_timesteps(const mr_sampler *s, int64_t *out);
/* Copies the N+1 sigmas (f32 values widened; out[N] = 0) to out. */
void mr_sampler_sigmas(const mr_sampler *s, double *out);

/* One solver step: from sample at `timestep` and the model's output there
   (v, the same shape; any storage dtypes) returns the new next sample, in
   sample's dtype. After the last step it is the clean x0. The history the
   multistep solvers need (the last two x0 predictions and UniPC's last
   sample) is kept as the sampler's own f32 tensors.
   The first step after create or reset finds its index in the table (the
   first entry equal to timestep), so a run may start part-way through the
   schedule (image-to-image); every later step must pass the table's next
   timestep. MR_EINVAL, with the sampler unchanged, for a timestep not in
   the table, one out of order, a step after the last, model_output and
   sample of different shapes, or a shape that differs from the run's. */
mr_status mr_sampler_step(mr_sampler *s, const mr_tensor *model_output, int64_t timestep,
                            const mr_tensor *sample, mr_tensor **out);
/* Forgets the run (frees the history), so the sampler can start another. */
void mr_sampler_reset(mr_sampler *s);
/* Index in the table of the next step of the current run; -1 before a run starts. */
int mr_sampler_next_index(const mr_sampler *s);

/* Classifier-free guidance: v_uncond + scale·(v_cond − v_uncond), as one
   mr_op_lincomb (coefficients scale and 1 − scale). A new tensor in v_cond's dtype. */
mr_status mr_guidance(const mr_tensor *v_cond, const mr_tensor *v_uncond, float scale, mr_tensor **out);

/* Seeded noise, generated on the host and uploaded, so a seed gives the same
   bits on every device and for every chunking. Element i (the row-major
   index into the flattened tensor, plus offset) is a pure function of
   (seed, i):
     (r0, r1, r2, r3) = Philox4x32-10(counter = {lo32(i), hi32(i), 0, 0},
                                      key = {lo32(seed), hi32(seed)})
     u1 = (((r0·2^32 + r1) >> 11) + 1) · 2^-53      in (0, 1]
     u2 = ((r2·2^32 + r3) >> 11) · 2^-53            in [0, 1)
     z  = sqrt(−2·ln u1) · cos(2π·u2)               in double (C's log, cos)
   then z is rounded to float (to nearest) and stored in dtype. Values depend
   on the host only through libm's log and cos, whose last-bit differences
   almost never survive the rounding to float. */

/* A new tensor of standard normal noise (dtype F32, F16 or BF16). */
mr_status mr_noise_randn(mr_ctx *ctx, uint64_t seed, int ndim, const int64_t *shape, mr_dtype dtype,
                         mr_tensor **out);
/* The same with element j = z(seed, offset + j): a slice of a larger noise
   tensor (its elements [offset, offset + numel) in flattened order) alone. */
mr_status mr_noise_randn_offset(mr_ctx *ctx, uint64_t seed, uint64_t offset, int ndim, const int64_t *shape,
                                mr_dtype dtype, mr_tensor **out);
/* Host only: dst[j] = z(seed, offset + j) for j < n, as floats. */
void mr_noise_fill(uint64_t seed, uint64_t offset, float *dst, size_t n);
/* The Philox4x32-10 block function of Random123 (Salmon et al., SC'11). */
void mr_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* A fresh seed from the operating system's random source; MR_EIO if it cannot be read. */
mr_status mr_noise_random_seed(mr_ctx *ctx, uint64_t *out);

/* ------------------------------------------------------------------- media */
/* Images are tensors [3, H, W] and videos [3, F, H, W] (Wan's layout), RGB
   in [-1, 1]: a byte v reads as v / 127.5 - 1. Writing follows Wan: clamp to
   [-1, 1], (x + 1) / 2 * 255, truncated to a byte. PNG, JPEG, H.264, VP9 and
   GIF go through FFmpeg's libraries; WebP stills and animations through
   libwebp. Every write is atomic: the data goes to a temporary file beside
   the destination (".<name>.tmp-<pid>"), is synced, then renamed, so on any
   failure nothing appears under the final name. Messages name the file. */

typedef enum mr_fit {
  MR_FIT_CROP,    /* scale to cover the target, centre-crop the overflow (default) */
  MR_FIT_PAD,     /* scale to fit inside the target, centred on pad_color */
  MR_FIT_STRETCH  /* scale each axis on its own */
} mr_fit;

/* Resampling (our own separable filter, in f32, antialiased when shrinking:
   the kernels and supports of PIL's Image.resize). */
typedef enum mr_filter {
  MR_FILTER_BICUBIC,  /* cubic convolution, a = -0.5 (default) */
  MR_FILTER_LANCZOS,  /* Lanczos, 3 lobes */
  MR_FILTER_BILINEAR, /* triangle */
  MR_FILTER_AREA,     /* box: the mean of the covered source pixels */
  MR_FILTER_NEAREST
} mr_filter;

/* Fitting a decoded picture to a size (images and video frames alike). */
typedef struct mr_fit_opts {
  int width, height;     /* target size in pixels; 0 = the source's own. With only one of them 0,
                            it follows the source's aspect ratio. */
  mr_fit fit;            /* MR_FIT_CROP (default), MR_FIT_PAD, MR_FIT_STRETCH */
  int multiple;          /* the final width and height are rounded down to multiples of this
                            (16, 32); 0 or 1 = no rounding. With width = height = 0 and
                            MR_FIT_CROP the excess is centre-cropped without resampling. */
  mr_filter filter;      /* default MR_FILTER_BICUBIC */
  uint8_t pad_color[3];  /* RGB of MR_FIT_PAD borders and of what shows through transparency;
                            default black */
  bool drop_alpha;       /* ignore transparency instead of compositing over pad_color */
} mr_fit_opts;

typedef struct mr_image_read_opts {
  mr_fit_opts resize;
  mr_dtype dtype;        /* tensor storage: MR_F32 (default), MR_F16 or MR_BF16 */
} mr_image_read_opts;

mr_image_read_opts mr_image_read_opts_default(void);

typedef struct mr_image_info {
  int width, height;     /* the picture as displayed (EXIF orientation applied), before fitting */
  int orientation;       /* EXIF orientation found (1..8; 1 = none), already applied */
  bool has_alpha;        /* the file has an alpha channel */
  bool animated;         /* an animated WebP, of which the first frame was read */
  char format[8];        /* "png", "jpeg", "webp" */
} mr_image_info;

/* Reads a PNG, JPEG or WebP file (the first frame of an animated WebP) into a
   new [3, H, W] tensor. The EXIF orientation (JPEG APP1, WebP EXIF chunk, PNG
   eXIf) is applied, transparency is composited over opts->resize.pad_color,
   then the picture is fitted per opts->resize. opts may be NULL; info (may be
   NULL) describes the file. MR_ENOTFOUND: no such file; MR_EIO: cannot be
   read; MR_EFORMAT: empty, truncated, zero-sized or not an image;
   MR_EUNSUPPORTED: another image or a video format (GIF, BMP, TIFF, MP4...). */
mr_status mr_image_read(mr_ctx *ctx, const char *path, const mr_image_read_opts *opts, mr_tensor **out,
                        mr_image_info *info);

typedef enum mr_media_format {
  MR_FORMAT_AUTO,         /* from the path: .png, .jpg/.jpeg, .webp, .mp4/.m4v/.mov, a printf
                             pattern ("frame_%04d.png") or a directory ("out/") */
  MR_FORMAT_PNG,
  MR_FORMAT_JPEG,
  MR_FORMAT_WEBP,         /* a still, or an animation from a video writer */
  MR_FORMAT_MP4,          /* H.264 (libx264), yuv420p, BT.709 limited range, tagged */
  MR_FORMAT_PNG_SEQUENCE  /* one PNG per frame */
} mr_media_format;

typedef struct mr_image_write_opts {
  mr_media_format format; /* MR_FORMAT_AUTO (from the extension), PNG, JPEG or WEBP */
  int quality;            /* JPEG and lossy WebP, 1..100; 0 = 95 (JPEG, 4:4:4) / 90 (WebP) */
  bool lossless;          /* WebP: lossless (PNG always is) */
} mr_image_write_opts;

mr_image_write_opts mr_image_write_opts_default(void);

/* Writes image [3, H, W] (or [3, 1, H, W]), any storage dtype, atomically.
   opts may be NULL. */
mr_status mr_image_write(mr_ctx *ctx, const char *path, const mr_tensor *image, const mr_image_write_opts *opts);

/* Writes n bytes as the whole file at path, atomically: a temporary file
   beside it, fsync, rename over path, then the folder synced. A reader sees
   the old file or the new one, never a part; on failure path is untouched
   and no temporary is left. (What the engine's own writers do; the Lua
   parts write sidecars and manifests with it.) */
mr_status mr_file_write_atomic(mr_ctx *ctx, const char *path, const void *data, size_t n);

/* Each frame of a [3, H, W] or [3, F, H, W] tensor (any storage dtype) as
   packed RGB bytes, rows top to bottom, stride width * 3, converted as the
   writers convert (clamp to [-1, 1], (x + 1) / 2 * 255, truncate). rgb is
   borrowed for the call. Return false to stop (the call returns MR_ECANCELED). */
typedef bool (*mr_rgb8_fn)(const uint8_t *rgb, int width, int height, int64_t index, void *user);
mr_status mr_tensor_frames_rgb8(const mr_tensor *frames, mr_rgb8_fn fn, void *user);

typedef enum mr_odd_size {
  MR_ODD_ERROR, /* an odd width or height is MR_EINVAL, naming the size (default) */
  MR_ODD_PAD,   /* repeat the last column / row */
  MR_ODD_CROP   /* drop the last column / row */
} mr_odd_size;

typedef struct mr_video_writer_opts {
  mr_media_format format; /* MR_FORMAT_AUTO (from the path), MP4, WEBP or PNG_SEQUENCE */
  int fps_num, fps_den;   /* frame rate as a fraction (30000/1001); fps_num 0 = use fps */
  double fps;             /* frames per second when fps_num is 0; 0 = 16 (Wan 2.1's rate) */
  int crf;                /* MP4: libx264 CRF 1..51; 0 = 10, what Wan's imageio quality 8 gives */
  const char *preset;     /* MP4: libx264 preset ("ultrafast" .. "veryslow"); NULL = "medium" */
  int quality;            /* WebP: 1..100; 0 = 90 */
  int loop;               /* WebP: times the animation plays; 0 = forever */
  mr_odd_size odd;        /* MP4: yuv420p needs even sizes */
  bool lossless;          /* MP4: CRF 0 (lossless H.264, High 4:4:4 profile, not for browsers);
                             WebP: lossless frames */
} mr_video_writer_opts;

mr_video_writer_opts mr_video_writer_opts_default(void);

/* A streaming video writer: frames are appended as they come (a chunked VAE
   decode writes each chunk), encoded at once, and the file appears under its
   name at mr_video_writer_close.
   MP4 and WebP go to ".<name>.tmp-<pid>" beside path. A PNG sequence goes to
   a temporary folder beside its destination; at close a directory path that
   does not exist yet (or is empty) is renamed into place in one step, while
   frames for a pattern ("out/frame_%04d.png", numbered from 1) or for an
   existing non-empty directory (frame_00001.png, ...) are renamed in one by
   one: each frame appears whole, the set within those renames. */
typedef struct mr_video_writer mr_video_writer;

/* Opens a writer; opts may be NULL. Nothing is created under path until
   close. MR_EUNSUPPORTED for an unknown extension, MR_ENOTFOUND when path's
   folder does not exist. */
/* What mr_video_writer_open would refuse, checked without creating anything:
   the path's format, the options, and that its folder exists and can be
   written. A recipe checks its output this way before sampling and opens
   the writer only when there are frames to write. */
mr_status mr_video_writer_check(mr_ctx *ctx, const char *path, const mr_video_writer_opts *opts);
mr_status mr_video_writer_open(mr_ctx *ctx, const char *path, const mr_video_writer_opts *opts,
                               mr_video_writer **out);
/* Appends frames [3, F, H, W] or one frame [3, H, W] (any storage dtype, any
   view). Every frame has the first frame's size. A write error (full disk)
   names the path; the writer then only accepts close or free. */
mr_status mr_video_writer_write(mr_video_writer *w, const mr_tensor *frames);
/* Finishes the file, syncs it and renames it into place. On failure the
   temporary file is deleted. Either way the writer is done: free it next. */
mr_status mr_video_writer_close(mr_video_writer *w);
/* Frees the writer; one that was not closed is aborted (its temporary file
   deleted, nothing under the final name). */
void mr_video_writer_free(mr_video_writer *w);
/* The destination path (borrowed from w). */
const char *mr_video_writer_path(const mr_video_writer *w);
/* Frames written so far. */
int64_t mr_video_writer_frames(const mr_video_writer *w);

/* open + write + close + free in one call. */
mr_status mr_video_write(mr_ctx *ctx, const char *path, const mr_tensor *frames, const mr_video_writer_opts *opts);

typedef struct mr_video_info {
  int width, height;      /* frame size as displayed (a rotation tag applied) */
  int64_t frames;         /* frames in the file */
  int fps_num, fps_den;   /* average frame rate; 0/1 when unknown */
  double duration;        /* seconds */
  int loop;               /* animated WebP: loop count (0 = forever); 0 for others */
  char codec[16];         /* "h264", "vp9", "gif", "webp", ... */
  char container[32];     /* FFmpeg's demuxer name ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm",
                             "gif"), or "webp" */
} mr_video_info;

typedef struct mr_video_read_opts {
  int64_t start;          /* first frame kept (0-based; the ones before are decoded and dropped) */
  int64_t max_frames;     /* frames kept at most; 0 = all */
  mr_fit_opts resize;     /* as for images, applied to every frame */
  mr_dtype dtype;         /* MR_F32 (default), MR_F16 or MR_BF16 */
} mr_video_read_opts;

mr_video_read_opts mr_video_read_opts_default(void);

/* Reads an MP4, WebM/MKV, GIF or (animated) WebP file into a new tensor
   [3, F, H, W]; opts may be NULL; info (may be NULL) describes the whole file
   as mr_video_probe does. Frames are taken in order, one per decoded picture
   (no frame-rate conversion). Errors as for mr_image_read; a file that ends
   before the frame count its header gives is MR_EFORMAT (truncated). */
mr_status mr_video_read(mr_ctx *ctx, const char *path, const mr_video_read_opts *opts, mr_tensor **out,
                        mr_video_info *info);
/* Describes a video file without decoding its pictures (frames are counted
   from packets when the container does not say). ctx receives the message
   and may be NULL. */
mr_status mr_video_probe(mr_ctx *ctx, const char *path, mr_video_info *info);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* MOONREEL_H */
