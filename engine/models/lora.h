/* LoRA adapters on a component's parameter table (lora.c). Engine-internal:
   the component (the DiT) owns its adapters and calls these. */
#ifndef MR_LORA_H
#define MR_LORA_H

#include "models/model_util.h"

/* The adapters attached to one component, and the base copies of the
   parameters merged ones changed (so removing restores them exactly). */
typedef struct mr_lora_set {
  mr_ctx *ctx;
  mr_params *params;
  mr_lora *first;          /* attached adapters, newest first */
  mr_tensor **base;        /* per parameter: its value before any merge, or NULL */
  int nbase;
} mr_lora_set;

void mr_lora_set_init(mr_lora_set *set, mr_ctx *ctx, mr_params *params);
/* Removes every adapter (restoring the base) and frees the set's memory. */
void mr_lora_set_release(mr_lora_set *set);
/* Parses w against the set's parameters and attaches it. what names the
   component in messages ("Wan DiT"), name the adapter (its file). */
mr_status mr_lora_attach(mr_lora_set *set, const mr_weights *w, const char *what, const char *name,
                         const mr_lora_opts *opts, mr_lora **out);

/* On-the-fly terms of parameter `param` (a linear weight): y += coef · (x Aᵀ) Bᵀ
   for each, in attach order. Iterate with mr_lora_terms_next from NULL. */
typedef struct mr_lora_term {
  const mr_tensor *a, *b;  /* A [r, in], B [out, r], f32 */
  float coef;              /* strength · alpha / rank */
} mr_lora_term;
bool mr_lora_term_next(const mr_lora_set *set, int param, const mr_lora **cursor, int *entry, mr_lora_term *out);
/* True when some adapter is applied on the fly (the forward then asks). */
bool mr_lora_any_on_the_fly(const mr_lora_set *set);

#endif
