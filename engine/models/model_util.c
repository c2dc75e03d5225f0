/* Shared weight lookup and upload for the model loaders. */
#include "models/model_util.h"

#include "tensor/dtype.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mr_model_opts mr_model_opts_default(void) {
  mr_model_opts o;
  memset(&o, 0, sizeof o);
  o.weights = MR_F32;
  o.resident_blocks = -1;
  return o;
}

static const char *const known_prefixes[] = {
    "", "model.diffusion_model.", "diffusion_model.", "model.", "module.", "transformer.", "vae.", "first_stage_model.",
    "text_encoder.", "encoder.", "visual.", NULL};

int mr_loader_find(const mr_loader *L, const char *name) {
  char full[512];
  snprintf(full, sizeof full, "%s%s", L->prefix, name);
  return mr_weights_find(L->w, full);
}

bool mr_loader_has(const mr_loader *L, const char *name) { return mr_loader_find(L, name) >= 0; }

int mr_loader_shape(const mr_loader *L, const char *name, int64_t *shape) {
  int i = mr_loader_find(L, name);
  mr_weight_info info;
  if (i < 0 || mr_weights_get(L->w, i, &info) != MR_OK) return 0;
  for (int d = 0; d < info.ndim && d < MR_WEIGHT_MAX_DIMS; d++) shape[d] = info.shape[d];
  return info.ndim;
}

mr_status mr_loader_init(mr_loader *L, mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts,
                         const char *what, const char *probe_key) {
  memset(L, 0, sizeof *L);
  L->ctx = ctx;
  L->w = w;
  L->what = what;
  L->opts = opts ? *opts : mr_model_opts_default();
  if (!mr_dtype_is_storage(L->opts.weights))
    return mr_error(ctx, MR_EINVAL, "%s: weights must be f32, f16 or bf16, not %s", what, mr_dtype_name(L->opts.weights));
  for (int i = 0; known_prefixes[i]; i++) {
    L->prefix = known_prefixes[i];
    if (mr_loader_has(L, probe_key)) return MR_OK;
  }
  L->prefix = "";
  return mr_error(ctx, MR_EFORMAT, "not a %s checkpoint: tensor '%s' is missing", what, probe_key);
}

static void shape_text(int ndim, const int64_t *s, char *buf, size_t cap) {
  size_t len = 0;
  len += (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, i ? ", %lld" : "%lld", (long long)s[i]);
  if (len < cap) snprintf(buf + len, cap - len, "]");
}

/* Finds prefix+name and checks its shape against expect: *info describes it. */
static mr_status find_checked(mr_loader *L, const char *name, int ndim, const int64_t *expect, int *index,
                              mr_weight_info *info) {
  int i = mr_loader_find(L, name);
  if (i < 0) return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%s%s' is missing", L->what, L->prefix, name);
  mr_status st = mr_weights_get(L->w, i, info);
  if (st != MR_OK) return st;
  bool ok = !expect || info->ndim == ndim;
  for (int d = 0; ok && expect && d < ndim; d++) ok = expect[d] < 0 || expect[d] == info->shape[d];
  if (!ok) {
    char want[128], got[128];
    int64_t w[MR_WEIGHT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) w[d] = expect[d];
    shape_text(ndim, w, want, sizeof want);
    shape_text(info->ndim, info->shape, got, sizeof got);
    return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%s' has shape %s, expected %s", L->what, info->name, got, want);
  }
  if (info->ndim > MR_MAX_DIMS)
    return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%s' has %d dims (at most %d)", L->what, info->name, info->ndim,
                    MR_MAX_DIMS);
  *index = i;
  return MR_OK;
}

mr_status mr_loader_take(mr_loader *L, const char *name, mr_dtype dtype, int ndim, const int64_t *expect,
                         mr_tensor **out) {
  *out = NULL;
  int i;
  mr_weight_info info;
  mr_status st = find_checked(L, name, ndim, expect, &i, &info);
  if (st == MR_OK) st = mr_weights_to_tensor(L->ctx, L->w, i, dtype, out);
  if (st == MR_OK) L->n_params += mr_tensor_numel(*out);
  return st;
}

mr_status mr_loader_weight(mr_loader *L, const char *name, int ndim, const int64_t *expect, mr_tensor **out) {
  return mr_loader_take(L, name, L->opts.weights, ndim, expect, out);
}

mr_status mr_loader_f32(mr_loader *L, const char *name, int ndim, const int64_t *expect, mr_tensor **out) {
  return mr_loader_take(L, name, MR_F32, ndim, expect, out);
}

const char *mr_loader_name(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
  return buf;
}

/* ------------------------------------------------------------ parameter tables */

void mr_params_init(mr_params *P, mr_ctx *ctx) { *P = (mr_params){.ctx = ctx, .st = MR_OK}; }

static void params_vadd(mr_params *P, mr_tensor **slot, mr_param_kind kind, int ndim, const int64_t *shape,
                        const char *fmt, va_list ap) {
  if (P->st != MR_OK) return;
  MR_ASSERT(ndim >= 1 && ndim <= MR_MAX_DIMS);
  if (P->n == P->cap) {
    int cap = P->cap ? 2 * P->cap : 64;
    mr_param *np = realloc(P->p, (size_t)cap * sizeof *np);
    if (!np) {
      P->st = mr_error(P->ctx, MR_ENOMEM, "out of host memory");
      return;
    }
    P->p = np;
    P->cap = cap;
  }
  char name[256];
  vsnprintf(name, sizeof name, fmt, ap);
  mr_param *e = &P->p[P->n];
  *e = (mr_param){.ndim = ndim, .kind = kind, .slot = slot, .name = malloc(strlen(name) + 1)};
  if (!e->name) {
    P->st = mr_error(P->ctx, MR_ENOMEM, "out of host memory");
    return;
  }
  strcpy(e->name, name);
  memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
  *slot = NULL;
  P->n++;
}

void mr_params_add(mr_params *P, mr_tensor **slot, mr_param_kind kind, int ndim, const int64_t *shape,
                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  params_vadd(P, slot, kind, ndim, shape, fmt, ap);
  va_end(ap);
}

void mr_params_add_from(mr_params *P, mr_tensor **slot, mr_param_kind kind, int ndim, const int64_t *shape,
                        const char *name, const char *src, bool absolute) {
  mr_params_add(P, slot, kind, ndim, shape, "%s", name);
  if (P->st != MR_OK || !src || (strcmp(src, name) == 0 && !absolute)) return;
  mr_param *e = &P->p[P->n - 1];
  if (!(e->src = malloc(strlen(src) + 1))) {
    P->st = mr_error(P->ctx, MR_ENOMEM, "out of host memory");
    return;
  }
  strcpy(e->src, src);
  e->src_absolute = absolute;
}

/* A streamed parameter's bytes in host memory, converted to its storage dtype. */
static mr_status load_host(mr_loader *L, mr_param *e, const char *name) {
  int i;
  mr_weight_info info;
  mr_status st = find_checked(L, name, e->ndim, e->shape, &i, &info);
  if (st != MR_OK) return st;
  size_t n = 1;
  for (int d = 0; d < info.ndim; d++) n *= (size_t)info.shape[d];
  if (!(e->host = malloc(n * mr_dtype_size(e->dtype)))) return mr_error(L->ctx, MR_ENOMEM, "out of host memory");
  mr_convert(e->dtype, e->host, info.dtype, info.data, n);
  memcpy(e->shape, info.shape, (size_t)e->ndim * sizeof *e->shape); /* -1 entries resolved */
  L->n_params += (int64_t)n;
  return MR_OK;
}

mr_status mr_params_load(mr_params *P, mr_loader *L) {
  mr_status st = P->st;
  for (int i = 0; st == MR_OK && i < P->n; i++) {
    mr_param *e = &P->p[i];
    e->dtype = e->kind == MR_PARAM_WEIGHT ? L->opts.weights : MR_F32;
    const char *prefix = L->prefix;
    if (e->src_absolute) L->prefix = "";
    const char *name = e->src ? e->src : e->name;
    st = e->streamed ? load_host(L, e, name) : mr_loader_take(L, name, e->dtype, e->ndim, e->shape, e->slot);
    L->prefix = prefix;
  }
  if (st != MR_OK)
    for (int i = 0; i < P->n; i++) {
      mr_tensor_free(*P->p[i].slot);
      *P->p[i].slot = NULL;
      free(P->p[i].host);
      P->p[i].host = NULL;
    }
  return st;
}

size_t mr_params_bytes(const mr_params *P, int first, int last, mr_dtype weights) {
  size_t total = 0;
  for (int i = first; i < last && i < P->n; i++) {
    const mr_param *e = &P->p[i];
    size_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (size_t)(e->shape[d] > 0 ? e->shape[d] : 1);
    total += n * mr_dtype_size(e->kind == MR_PARAM_WEIGHT ? weights : MR_F32);
  }
  return total;
}

void mr_params_stream(mr_params *P, int first, int last) {
  for (int i = first; i < last && i < P->n; i++) P->p[i].streamed = true;
}

mr_status mr_params_fetch(mr_params *P, int first, int last) {
  mr_status st = MR_OK;
  for (int i = first; st == MR_OK && i < last && i < P->n; i++) {
    mr_param *e = &P->p[i];
    if (e->streamed && !*e->slot)
      st = mr_tensor_from_host(P->ctx, e->dtype, e->ndim, e->shape, e->dtype, e->host, e->slot);
  }
  if (st != MR_OK) mr_params_evict(P, first, last);
  return st;
}

void mr_params_evict(mr_params *P, int first, int last) {
  for (int i = first; i < last && i < P->n; i++)
    if (P->p[i].streamed) {
      mr_tensor_free(*P->p[i].slot);
      *P->p[i].slot = NULL;
    }
}

void mr_params_release(mr_params *P) {
  for (int i = 0; i < P->n; i++) {
    mr_tensor_free(*P->p[i].slot);
    *P->p[i].slot = NULL;
    free(P->p[i].name);
    free(P->p[i].src);
    free(P->p[i].host);
  }
  free(P->p);
  *P = (mr_params){.ctx = P->ctx};
}

/* The public view (moonreel.h). */
int mr_params_count(const mr_params *P) { return P ? P->n : 0; }

mr_status mr_params_get(const mr_params *P, int i, mr_param_info *out) {
  memset(out, 0, sizeof *out);
  if (!P || i < 0 || i >= P->n) return MR_ENOTFOUND;
  const mr_param *e = &P->p[i];
  out->name = e->name;
  out->tensor = *e->slot;
  out->is_weight = e->kind == MR_PARAM_WEIGHT;
  out->streamed = e->streamed;
  out->dtype = e->dtype;
  out->ndim = e->ndim;
  memcpy(out->shape, e->shape, (size_t)e->ndim * sizeof *e->shape);
  if (out->tensor) memcpy(out->shape, mr_tensor_shape(out->tensor), (size_t)e->ndim * sizeof *e->shape);
  return MR_OK;
}

int mr_params_find(const mr_params *P, const char *name) {
  for (int i = 0; P && i < P->n; i++)
    if (strcmp(P->p[i].name, name) == 0) return i;
  return -1;
}
