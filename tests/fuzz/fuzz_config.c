/* A DiT's config.json (engine/models/wan_dit_load.c, mr_wan_dit_detect): the
   JSON and the numbers it gives what shapes cannot tell (heads, text length,
   eps, VACE hint layers, model type), detected against each of the tree's
   DiT checkpoints (t2v, i2v, VACE, TI2V), opened once. Pack manifests
   (moonreel_pack.json) are read by the Lua side (bindings/lua/pack.lua), not
   by a C parser, and are checked by tests/e2e. */
#include "fuzz.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_DITS 4
static mr_weights *dits[N_DITS];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const char *const files[N_DITS] = {
      "tests/conformance/data/wan/wan21_dit_t2v_tiny.safetensors",
      "tests/conformance/data/wan/wan21_dit_i2v_tiny.safetensors",
      "tests/conformance/data/wan/wan21_dit_vace_tiny.safetensors",
      "tests/conformance/data/wan/wan22_dit_ti2v_tiny.safetensors",
  };
  mr_ctx *ctx = mr_fuzz_host_ctx();
  for (int i = 0; i < N_DITS; i++) {
    if (mr_weights_open(ctx, mr_fuzz_source_path(files[i]), &dits[i]) != MR_OK) {
      fprintf(stderr, "fuzz_config: %s\n", mr_ctx_last_error(ctx));
      exit(1);
    }
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_ctx *ctx = mr_fuzz_host_ctx();
  char *json = malloc(size + 1);
  if (json == NULL) return 0;
  memcpy(json, data, size);
  json[size] = '\0';
  for (int i = 0; i < N_DITS; i++) {
    mr_wan_dit_config c;
    mr_fuzz_clear_error(ctx);
    mr_status st = mr_wan_dit_detect(ctx, dits[i], json, &c);
    mr_fuzz_check_refusal(ctx, st, NULL);
    if (st == MR_OK) {
      /* what a detected config promises the loader and the forward */
      MR_FUZZ_CHECK(c.text_len >= 1 && c.text_len <= 65536);
      MR_FUZZ_CHECK(c.num_heads >= 0 && c.num_heads <= 4096);
      MR_FUZZ_CHECK(c.num_heads == 0 || (c.dim % c.num_heads == 0 && (c.dim / c.num_heads) % 2 == 0));
      MR_FUZZ_CHECK(memchr(c.model_type, '\0', sizeof c.model_type) != NULL);
      MR_FUZZ_CHECK(isfinite(c.eps) && c.eps >= 0);
      MR_FUZZ_CHECK(c.n_vace_layers >= 0 && c.n_vace_layers <= MR_WAN_MAX_VACE_LAYERS);
      /* a hint is added after block vace_layers[k]: one outside the blocks would be computed and dropped */
      for (int k = 0; k < c.n_vace_layers; k++) MR_FUZZ_CHECK(c.vace_layers[k] >= 0 && c.vace_layers[k] < c.num_layers);
    }
    mr_model_info info;
    mr_fuzz_clear_error(ctx);
    st = mr_model_detect(ctx, dits[i], json, &info);
    mr_fuzz_check_refusal(ctx, st, NULL);
  }
  free(json);
  return 0;
}
