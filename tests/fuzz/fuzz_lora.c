/* LoRA files (engine/models/lora.c): the three namings, lora_A/B and
   lora_down/up with alpha, .diff and .diff_b, LoHa, LoKr and DoRA, resolved
   against the tiny t2v DiT's parameters with every shape checked, merged or
   applied on the fly, then removed, through mr_weights_open and
   mr_wan_dit_lora_add as the CLI's --lora reaches them.

   The input is the safetensors header (JSON). This target lays out the data
   itself: each entry with a known dtype and a sane shape gets data_offsets
   for its exact size and a block of small finite values, so mutating a name,
   a shape or a dtype reaches the adapter code instead of the safetensors
   range checks (those have their own target). After a successful attach and
   remove, every parameter of the DiT must be the base's again, bit for bit. */
#include "fuzz.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATA_MAX (4u << 20) /* bytes of tensor data one input may lay out */

static mr_wan_dit *dit;
static int n_params;
static float **base; /* every parameter as loaded, f32 */
static size_t *base_n;

static float *read_param(mr_ctx *ctx, int i, size_t *n) {
  mr_param_info pi;
  if (mr_params_get(mr_wan_dit_params(dit), i, &pi) != MR_OK || pi.tensor == NULL) return NULL;
  *n = (size_t)mr_tensor_numel(pi.tensor);
  float *v = malloc(*n * sizeof *v);
  if (v == NULL || mr_tensor_read(pi.tensor, MR_F32, v, *n) != MR_OK) {
    fprintf(stderr, "fuzz_lora: reading parameter %d: %s\n", i, mr_ctx_last_error(ctx));
    abort();
  }
  return v;
}

/* Before the context goes (atexit runs this first: it is registered later). */
static void free_model(void) {
  for (int i = 0; i < n_params; i++) free(base[i]);
  free(base);
  free(base_n);
  mr_wan_dit_free(dit);
  dit = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  mr_ctx *ctx = mr_fuzz_device_ctx();
  /* the tiny DiT's 64-wide heads need its config (num_heads) */
  FILE *cf = fopen(mr_fuzz_source_path("tests/conformance/data/wan/wan21_dit_t2v_tiny.json"), "rb");
  static char config[8192];
  size_t cn = cf ? fread(config, 1, sizeof config - 1, cf) : 0;
  if (cf) fclose(cf);
  config[cn] = '\0';
  mr_model_opts mo = mr_model_opts_default();
  mo.config_json = config;
  mr_weights *w = NULL;
  if (mr_weights_open(ctx, mr_fuzz_source_path("tests/conformance/data/wan/wan21_dit_t2v_tiny.safetensors"), &w) !=
          MR_OK ||
      mr_wan_dit_load(ctx, w, &mo, &dit) != MR_OK) {
    fprintf(stderr, "fuzz_lora: %s\n", mr_ctx_last_error(ctx));
    exit(1);
  }
  mr_weights_free(w);
  n_params = mr_params_count(mr_wan_dit_params(dit));
  base = calloc((size_t)n_params, sizeof *base);
  base_n = calloc((size_t)n_params, sizeof *base_n);
  if (base == NULL || base_n == NULL) abort();
  for (int i = 0; i < n_params; i++) base[i] = read_param(ctx, i, &base_n[i]);
  atexit(free_model);
  return 0;
}

static size_t dtype_size(const char *s) {
  static const struct { const char *name; size_t size; } t[] = {
      {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8}, {"I32", 4}, {"U8", 1}};
  for (size_t i = 0; i < sizeof t / sizeof *t; i++)
    if (strcmp(s, t[i].name) == 0) return t[i].size;
  return 0;
}

/* Gives each well-formed entry data_offsets for its size; returns the data
   bytes needed, or SIZE_MAX when the input asks for too much. */
static size_t lay_out(cJSON *root) {
  size_t cursor = 0;
  cJSON *item;
  cJSON_ArrayForEach(item, root) {
    if (item->string == NULL || strcmp(item->string, "__metadata__") == 0 || !cJSON_IsObject(item)) continue;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape)) continue;
    size_t n = dtype_size(dt->valuestring);
    if (n == 0) continue;
    const cJSON *d;
    bool sane = true;
    cJSON_ArrayForEach(d, shape) {
      if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > DATA_MAX || d->valuedouble != (double)(size_t)d->valuedouble) {
        sane = false;
        break;
      }
      n *= (size_t)d->valuedouble;
      if (n > DATA_MAX) return SIZE_MAX;
    }
    if (!sane) continue;
    if (cursor + n > DATA_MAX) return SIZE_MAX;
    cJSON *offs = cJSON_CreateArray();
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)cursor));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(cursor + n)));
    if (cJSON_GetObjectItemCaseSensitive(item, "data_offsets"))
      cJSON_ReplaceItemInObjectCaseSensitive(item, "data_offsets", offs);
    else
      cJSON_AddItemToObject(item, "data_offsets", offs);
    cursor += n;
  }
  return cursor;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_ctx *ctx = mr_fuzz_device_ctx();
  char *text = malloc(size + 1);
  if (text == NULL) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  cJSON *root = cJSON_Parse(text);
  free(text);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return 0;
  }
  size_t nbytes = lay_out(root);
  char *header = nbytes == SIZE_MAX ? NULL : cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (header == NULL) return 0;
  size_t hlen = strlen(header);
  uint8_t *file = malloc(8 + hlen + nbytes);
  if (file == NULL) {
    free(header);
    return 0;
  }
  for (int k = 0; k < 8; k++) file[k] = (uint8_t)((uint64_t)hlen >> (8 * k));
  memcpy(file + 8, header, hlen);
  free(header);
  /* bytes 0x00..0x3c: small finite values in every float width */
  for (size_t k = 0; k < nbytes; k++) file[8 + hlen + k] = (uint8_t)((k * 7 + 3) % 0x3d);
  mr_fuzz_file f;
  mr_fuzz_file_open(&f, file, 8 + hlen + nbytes);
  free(file);

  mr_weights *w = NULL;
  mr_fuzz_clear_error(ctx);
  mr_status st = mr_weights_open(ctx, f.path, &w);
  mr_fuzz_check_refusal(ctx, st, f.path);
  mr_fuzz_file_close(&f);
  if (st != MR_OK) return 0;

  mr_lora_opts o = mr_lora_opts_default();
  o.mode = (mr_lora_mode)(size % 3);
  o.strength = 0.75f;
  mr_lora *l = NULL;
  mr_fuzz_clear_error(ctx);
  st = mr_wan_dit_lora_add(dit, w, "fuzz.safetensors", &o, &l);
  mr_weights_free(w);
  mr_fuzz_check_refusal(ctx, st, NULL);
  if (st != MR_OK) {
    MR_FUZZ_CHECK(l == NULL && mr_wan_dit_lora_first(dit) == NULL);
    return 0;
  }
  mr_lora_info info;
  mr_lora_get_info(l, &info);
  MR_FUZZ_CHECK(info.targets >= 1 && info.modules >= info.unmatched && info.unmatched >= 0);
  MR_FUZZ_CHECK(mr_wan_dit_lora_first(dit) == l);
  mr_fuzz_clear_error(ctx);
  st = mr_lora_set_strength(l, 0.25f);
  mr_fuzz_check_refusal(ctx, st, NULL);
  mr_lora_remove(l);
  MR_FUZZ_CHECK(mr_wan_dit_lora_first(dit) == NULL);
  MR_FUZZ_CHECK(mr_ctx_sync(ctx) == MR_OK);
  for (int i = 0; i < n_params; i++) {
    if (base[i] == NULL) continue;
    size_t n;
    float *now = read_param(ctx, i, &n);
    MR_FUZZ_CHECK(n == base_n[i] && memcmp(now, base[i], n * sizeof *now) == 0);
    free(now);
  }
  return 0;
}
