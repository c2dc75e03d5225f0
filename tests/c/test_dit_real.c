/* The engine at a released model's size: Wan2.1-T2V-1.3B's DiT (the exact
   names and shapes of the release, 30 blocks, f16, as a sparse file: 2.8 GB
   of zeros that are never written).
   - Under a 2 GiB budget (below its weights) it loads with the blocks that do
     not fit streamed from host memory, runs a forward, and never holds more
     than the budget.
   - Under 4 GiB everything is resident, and the memory a forward holds beyond
     the weights stays within one block's temporaries: freed temporaries serve
     the next block at once instead of piling up until a submit.
   - A budget that cannot hold one block is refused by name before any upload. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024.0 * 1024.0)

static mr_ctx *ctx_with_budget(const char *budget) {
  setenv("MOONREEL_DEVICE_BUDGET", budget, 1);
  mr_ctx *ctx = mr_test_ctx();
  unsetenv("MOONREEL_DEVICE_BUDGET");
  return ctx;
}

/* The release's config.json with a short text length: the cross-attention
   keys are text_len rows whatever the prompt, and 512 of them would make this
   test slow without changing what it measures. */
static char *config_text(const cJSON *cfg, int text_len) {
  cJSON *c = cJSON_Duplicate(cfg, 1);
  cJSON_ReplaceItemInObjectCaseSensitive(c, "text_len", cJSON_CreateNumber(text_len));
  char *s = cJSON_PrintUnformatted(c);
  cJSON_Delete(c);
  return s;
}

static mr_tensor *constant(mr_ctx *ctx, int ndim, const int64_t *shape, float v) {
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, ndim, shape, &t));
  if (t) CHECK_OK(ctx, mr_tensor_fill(t, v));
  return t;
}

/* Opens the checkpoint and loads the DiT with f16 weights; returns the
   status (the message is in ctx). */
static mr_status load(mr_ctx *ctx, const char *file, const char *json, mr_wan_dit **dit) {
  mr_weights *w = NULL;
  *dit = NULL;
  mr_status st = mr_weights_open(ctx, file, &w);
  if (st != MR_OK) return st;
  mr_model_opts mo = mr_model_opts_default();
  mo.weights = MR_F16;
  mo.config_json = json;
  st = mr_wan_dit_load(ctx, w, &mo, dit);
  mr_weights_free(w);
  return st;
}

/* One forward on one latent frame of 16x16 (64 tokens); checks the output's
   shape and that it is finite. */
static void forward(mr_ctx *ctx, mr_wan_dit *dit, int text_len) {
  int64_t xs[4] = {16, 1, 16, 16}, cs[2] = {text_len, 4096};
  mr_tensor *x = constant(ctx, 4, xs, 0.5f), *context = constant(ctx, 2, cs, 0.25f), *y = NULL;
  mr_wan_dit_input in = {.x = x, .context = context, .t = 500.0f};
  CHECK_OK(ctx, mr_wan_dit_forward(dit, &in, &y));
  if (y) {
    const int64_t *s = mr_tensor_shape(y);
    CHECK(s[0] == 16 && s[1] == 1 && s[2] == 16 && s[3] == 16);
    float *v = mr_test_read(ctx, y);
    bool finite = true;
    for (int64_t i = 0; v && i < mr_tensor_numel(y); i++) finite = finite && isfinite(v[i]);
    CHECK(v && finite);
    free(v);
  }
  mr_tensor_free(x);
  mr_tensor_free(context);
  mr_tensor_free(y);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  cJSON *root = NULL;
  char file[64];
  uint64_t bytes = 0;
  const cJSON *entry = mr_test_real_checkpoint(dir, "Wan2.1-T2V-1.3B", "F16", 2, file, sizeof file, &root, &bytes);
  if (!entry) {
    cJSON_Delete(root);
    return mr_test_finish("test_dit_real");
  }
  const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(entry, "config");
  const int text_len = 32;
  char *json = config_text(cfg, text_len);
  printf("Wan2.1-T2V-1.3B DiT: %.0f MB of f16 weights\n", bytes / 1e6);

  /* Under 600 MiB not even one block fits next to the reserve: refused at once. */
  {
    mr_ctx *ctx = ctx_with_budget("600M");
    mr_wan_dit *dit = NULL;
    mr_status st = load(ctx, file, json, &dit);
    printf("under 600 MiB: %s\n", mr_ctx_last_error(ctx));
    CHECK(st == MR_EDEVMEM && dit == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "600 MiB budget (MOONREEL_DEVICE_BUDGET)") != NULL);
    mr_memory_stats m;
    mr_ctx_memory_stats(ctx, &m);
    CHECK(m.live_bytes == 0); /* refused before anything was uploaded */
    mr_ctx_free(ctx);
  }

  /* Under 2 GiB: part of the blocks stream from host memory. */
  {
    mr_ctx *ctx = ctx_with_budget("2G");
    mr_wan_dit *dit = NULL;
    CHECK_OK(ctx, load(ctx, file, json, &dit));
    if (dit) {
      const mr_params *p = mr_wan_dit_params(dit);
      int streamed = 0, first = -1;
      for (int i = 0; i < mr_params_count(p); i++) {
        mr_param_info pi;
        mr_params_get(p, i, &pi);
        if (pi.streamed && first < 0) first = i;
        streamed += pi.streamed;
      }
      mr_param_info pi;
      mr_params_get(p, first, &pi);
      printf("under 2 GiB: %d parameters streamed, from '%s'\n", streamed, pi.name);
      CHECK(streamed > 0 && strstr(pi.name, "blocks.") == pi.name && strcmp(strchr(pi.name + 7, '.'), ".modulation") == 0);
      CHECK(mr_params_find(p, "blocks.0.ffn.0.weight") < first); /* the first blocks stay */
      forward(ctx, dit, text_len);
      mr_memory_stats m;
      mr_ctx_memory_stats(ctx, &m);
      printf("under 2 GiB: peak held %.0f MiB of the %.0f MiB budget\n", m.peak_held_bytes / MiB, m.budget_bytes / MiB);
      CHECK(m.peak_held_bytes <= m.budget_bytes);
      mr_wan_dit_free(dit);
    }
    CHECK(mr_ctx_validation_messages(ctx) == 0);
    mr_ctx_free(ctx);
  }

  /* Under 4 GiB: loads (the driver's nominal 2 GiB heap is not the limit) and runs. */
  mr_ctx *ctx = ctx_with_budget("4G");
  mr_wan_dit *dit = NULL;
  CHECK_OK(ctx, load(ctx, file, json, &dit));
  if (dit) {
    const mr_wan_dit_config *c = mr_wan_dit_config_get(dit);
    CHECK(c->num_layers == 30 && c->dim == 1536 && c->ffn_dim == 8960);
    CHECK_OK(ctx, mr_ctx_memory_trim(ctx));
    mr_ctx_memory_reset_peak(ctx);
    mr_memory_stats m0, m;
    mr_ctx_memory_stats(ctx, &m0);
    forward(ctx, dit, text_len);
    mr_ctx_memory_stats(ctx, &m);
    double tokens = 8 * 8, grew = (m.peak_held_bytes - m0.held_bytes) / MiB;
    /* One block's temporaries, generously: a handful of [L, ffn] and a few
       dozen [L, dim] f32 tensors, plus one shared block of small ones. Piled
       up for 512 dispatches (a dozen blocks) they would be several times it. */
    double block = (4 * tokens * c->ffn_dim * 4 + 32 * tokens * c->dim * 4) / MiB + 64;
    printf("weights %.0f MiB live, %.0f MiB held after loading; the forward's peak: %.1f MiB live over the weights, "
           "held grew %.1f MiB (bound %.1f); budget %.0f MiB; %d blocks\n",
           m0.live_bytes / MiB, m0.held_bytes / MiB, (m.peak_live_bytes - m0.live_bytes) / MiB, grew, block,
           m.budget_bytes / MiB, m.blocks);
    CHECK(grew <= block);
    CHECK(m.peak_held_bytes <= m.budget_bytes);
    mr_wan_dit_free(dit);
  }
  CHECK(mr_ctx_validation_messages(ctx) == 0);
  mr_ctx_free(ctx);
  unlink(file);
  free(json);
  cJSON_Delete(root);
  return mr_test_finish("test_dit_real");
}
