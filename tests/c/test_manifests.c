/* Every released checkpoint in manifests.json: a sparse file with exactly its
   tensor names and shapes (no data is ever written or read) must be detected
   as the right component and variant, with the sizes of its config and the
   parameter count its shapes add up to. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static int cfg_int(const cJSON *cfg, const char *key) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
  return cJSON_IsNumber(j) ? j->valueint : -1;
}

static void check_entry(mr_ctx *ctx, const char *tmpdir, const cJSON *entry) {
  const char *name = entry->string;
  const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(entry, "config");
  const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(entry, "tensors");
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.safetensors", tmpdir, name);
  int64_t params = 0;
  mr_test_write_sparse(path, tensors, "BF16", 2, &params);
  mr_weights *w = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  if (!w) return;
  mr_model_info mi;
  CHECK_OK(ctx, mr_model_detect(ctx, w, NULL, &mi)); /* shapes alone, no config.json */
  printf("%-56s %-12s %-5s %14lld params\n", name, mr_model_kind_name(mi.kind), mi.variant, (long long)mi.n_params);
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
  if (cJSON_IsString(mt)) { /* a DiT */
    CHECK(mi.kind == MR_MODEL_WAN_DIT);
    CHECK(strcmp(mi.variant, mt->valuestring) == 0);
    CHECK(mi.dit.dim == cfg_int(cfg, "dim") && mi.dit.ffn_dim == cfg_int(cfg, "ffn_dim"));
    CHECK(mi.dit.num_heads == cfg_int(cfg, "num_heads") && mi.dit.num_layers == cfg_int(cfg, "num_layers"));
    CHECK(mi.dit.in_dim == cfg_int(cfg, "in_dim") && mi.dit.out_dim == cfg_int(cfg, "out_dim"));
    CHECK(mi.dit.text_dim == cfg_int(cfg, "text_dim") && mi.dit.freq_dim == cfg_int(cfg, "freq_dim"));
    const cJSON *vl = cJSON_GetObjectItemCaseSensitive(cfg, "vace_layers");
    if (cJSON_IsArray(vl)) {
      CHECK(mi.dit.n_vace_layers == cJSON_GetArraySize(vl));
      for (int i = 0; i < mi.dit.n_vace_layers && i < cJSON_GetArraySize(vl); i++)
        CHECK(mi.dit.vace_layers[i] == cJSON_GetArrayItem(vl, i)->valueint);
      CHECK(mi.dit.vace_in_dim == cfg_int(cfg, "vace_in_dim"));
    }
  } else if (cfg_int(cfg, "vocab") > 0) {
    CHECK(mi.kind == MR_MODEL_UMT5);
    CHECK(mi.dim == cfg_int(cfg, "dim") && mi.layers == cfg_int(cfg, "num_layers") && mi.heads == cfg_int(cfg, "num_heads"));
  } else if (cfg_int(cfg, "z_dim") > 0) {
    CHECK(mi.kind == MR_MODEL_WAN_VAE);
    CHECK(mi.dim == cfg_int(cfg, "dim") && mi.z_dim == cfg_int(cfg, "z_dim"));
    /* 2.2 is the one with a separate decoder width */
    CHECK(strcmp(mi.variant, cfg_int(cfg, "dec_dim") > 0 ? "2.2" : "2.1") == 0);
  } else {
    CHECK(mi.kind == MR_MODEL_CLIP_VISION);
    CHECK(mi.dim == cfg_int(cfg, "vision_dim") && mi.layers == cfg_int(cfg, "vision_layers") &&
          mi.heads == cfg_int(cfg, "vision_heads"));
  }
  CHECK(mi.n_params == params);
  mr_weights_free(w);
  unlink(path);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  char path[1024];
  snprintf(path, sizeof path, "%s/wan/manifests.json", dir);
  char *text = mr_test_read_text(path);
  CHECK(text != NULL);
  cJSON *root = text ? cJSON_Parse(text) : NULL;
  CHECK(root != NULL);
  char tmpdir[] = "/tmp/mr_manifests_XXXXXX";
  CHECK(mkdtemp(tmpdir) != NULL);
  mr_ctx *ctx = mr_test_ctx();
  int n = 0;
  const cJSON *entry;
  cJSON_ArrayForEach(entry, root) {
    check_entry(ctx, tmpdir, entry);
    n++;
  }
  CHECK(n >= 9);
  rmdir(tmpdir);
  cJSON_Delete(root);
  free(text);
  mr_ctx_free(ctx);
  return mr_test_finish("test_manifests");
}
