/* What every model loader shares: finding weights under a prefix, uploading
   them with a shape check and the precision policy, and clear messages.
   Engine-internal. */
#ifndef MR_MODEL_UTIL_H
#define MR_MODEL_UTIL_H

#include "core/core.h"

/* A loading session over one checkpoint. */
typedef struct mr_loader {
  mr_ctx *ctx;
  const mr_weights *w;
  const char *prefix;    /* stripped-name prefix the checkpoint uses ("" if none) */
  const char *what;      /* "umT5 encoder", "Wan VAE", ... for messages */
  mr_model_opts opts;
  int64_t n_params;      /* counted as tensors are taken */
} mr_loader;

/* Starts a session: finds which of the known prefixes ("", "model.diffusion_model.",
   "diffusion_model.", "model.", "encoder." ...) makes probe_key present. Fails with
   MR_EFORMAT naming `what` and the missing key. */
mr_status mr_loader_init(mr_loader *L, mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts,
                         const char *what, const char *probe_key);

/* Index of prefix+name in the checkpoint, or -1. */
int mr_loader_find(const mr_loader *L, const char *name);
bool mr_loader_has(const mr_loader *L, const char *name);
/* The shape of prefix+name (ndim 0 if absent). */
int mr_loader_shape(const mr_loader *L, const char *name, int64_t *shape);

/* Uploads prefix+name as dtype. expect (ndim entries, -1 = any) is checked
   when not NULL; a missing tensor or a wrong shape is MR_EFORMAT naming the
   tensor, the expected and the found shape. Tensors of more than MR_MAX_DIMS
   dims are refused. */
mr_status mr_loader_take(mr_loader *L, const char *name, mr_dtype dtype, int ndim, const int64_t *expect,
                         mr_tensor **out);
/* As take, with dtype = the policy's weight dtype (for matmul/conv weights). */
mr_status mr_loader_weight(mr_loader *L, const char *name, int ndim, const int64_t *expect, mr_tensor **out);
/* As take with MR_F32 (norms, biases, modulation). */
mr_status mr_loader_f32(mr_loader *L, const char *name, int ndim, const int64_t *expect, mr_tensor **out);

/* ------------------------------------------------------------ parameter tables */

/* How a parameter is stored: matmul/conv weights in the policy's dtype (and
   the targets of LoRA); norms, biases, modulation and tables in f32. */
typedef enum mr_param_kind { MR_PARAM_WEIGHT, MR_PARAM_F32 } mr_param_kind;

/* One parameter: its official name (without the checkpoint's prefix), the
   shape the architecture declares (-1 = any), how it is stored, and the
   slot of the model struct that model code reads it from. */
typedef struct mr_param {
  char *name;
  char *src;            /* the checkpoint's name when its naming differs (NULL: name) */
  bool src_absolute;    /* src is not under the loader's prefix */
  int ndim;
  int64_t shape[MR_MAX_DIMS];
  mr_param_kind kind;
  mr_dtype dtype;       /* storage, set at load */
  mr_tensor **slot;
  bool streamed;        /* kept in host memory (host) and put on the device around its use */
  void *host;
} mr_param;

/* A component's parameters: one declaration per weight gives loading with
   the shape check, freeing, listing (mr_params_get) and lookup by name. */
struct mr_params {
  mr_ctx *ctx;
  mr_param *p;
  int n, cap;
  mr_status st;   /* the first declaration failure (out of host memory) */
};

void mr_params_init(mr_params *P, mr_ctx *ctx);
/* Declares the parameter named fmt... to be loaded into *slot. */
void mr_params_add(mr_params *P, mr_tensor **slot, mr_param_kind kind, int ndim, const int64_t *shape,
                   const char *fmt, ...) MR_PRINTF(6, 7);
/* Declares a parameter by its official name that this checkpoint spells src
   (another naming: Hugging Face's for umT5); absolute: src is not under the
   loader's prefix. */
void mr_params_add_from(mr_params *P, mr_tensor **slot, mr_param_kind kind, int ndim, const int64_t *shape,
                        const char *name, const char *src, bool absolute);
/* Loads every declared parameter from L's checkpoint into its slot, in order.
   On failure the ones loaded are freed again and the error names the tensor. */
mr_status mr_params_load(mr_params *P, mr_loader *L);
/* Streaming, for weights past the device budget: entries [first, last) are
   loaded into host memory instead (mark them before mr_params_load), put on
   the device by fetch and taken off again by evict. Between the two their
   slots hold device tensors; otherwise NULL. */
void mr_params_stream(mr_params *P, int first, int last);
mr_status mr_params_fetch(mr_params *P, int first, int last);
void mr_params_evict(mr_params *P, int first, int last);
/* Device bytes of entries [first, last) with matmul weights stored as `weights`. */
size_t mr_params_bytes(const mr_params *P, int first, int last, mr_dtype weights);

/* Frees every loaded tensor (the slots become NULL) and the table. */
void mr_params_release(mr_params *P);

/* printf-style name building into a small static-free buffer owned by the caller. */
const char *mr_loader_name(char *buf, size_t cap, const char *fmt, ...) MR_PRINTF(3, 4);

#endif
