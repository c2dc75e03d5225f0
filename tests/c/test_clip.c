/* CLIP vision against the reference: Wan's preprocessing (bicubic resize,
   CLIP mean/std) and the tower's states before the last block. */
#include "testutil.h"

#include <string.h>

static float *io_floats(const mr_weights *io, const char *name, size_t *n) {
  mr_weight_info info;
  int i = mr_weights_find(io, name);
  if (i < 0 || mr_weights_get(io, i, &info) != MR_OK) return NULL;
  *n = info.nbytes / 4;
  float *x = malloc(info.nbytes);
  memcpy(x, info.data, info.nbytes);
  return x;
}

static void compare(mr_ctx *ctx, mr_tensor *t, const float *ref, size_t n, double tol, const char *what) {
  CHECK((size_t)mr_tensor_numel(t) == n);
  float *got = mr_test_read(ctx, t);
  double err = mr_rel_l2(got, ref, n);
  printf("%-32s rel L2 %.3g %s\n", what, err, err <= tol ? "PASS" : "FAIL");
  CHECK(err <= tol);
  free(got);
}

static void run(mr_ctx *ctx, const char *dir, mr_dtype policy, double tol) {
  char path[1024];
  snprintf(path, sizeof path, "%s/wan/wan21_clip_vision_tiny.json", dir);
  char *json = mr_test_read_text(path);
  mr_weights *w = NULL, *io = NULL;
  snprintf(path, sizeof path, "%s/wan/wan21_clip_vision_tiny.safetensors", dir);
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  snprintf(path, sizeof path, "%s/wan/wan21_clip_vision_tiny.io.safetensors", dir);
  CHECK_OK(ctx, mr_weights_open(ctx, path, &io));
  mr_model_opts o = mr_model_opts_default();
  o.weights = policy;
  o.config_json = json;
  mr_clip_vision *clip = NULL;
  CHECK_OK(ctx, mr_clip_vision_load(ctx, w, &o, &clip));
  if (clip) { /* the table: the tower's five leading tensors and 12 per block run (all but the last) */
    int blocks = 0;
    char name[96];
    while (snprintf(name, sizeof name, "visual.transformer.%d.norm1.weight", blocks), mr_weights_find(w, name) >= 0)
      blocks++;
    mr_test_check_params(ctx, mr_clip_vision_params(clip), w, 5 + 12 * (blocks - 1), "visual.transformer.0.attn.to_qkv.weight");
    snprintf(name, sizeof name, "visual.transformer.%d.norm1.weight", blocks - 1);
    CHECK(mr_params_find(mr_clip_vision_params(clip), name) == -1);
  }
  if (clip && io) {
    size_t nf, np, no;
    float *frame = io_floats(io, "frame", &nf), *pixels = io_floats(io, "pixels", &np), *ref = io_floats(io, "out", &no);
    mr_weight_info fi;
    mr_weights_get(io, mr_weights_find(io, "frame"), &fi);
    mr_tensor *img = NULL, *px = NULL, *out = NULL, *out2 = NULL, *pin = NULL;
    CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, fi.ndim, fi.shape, MR_F32, frame, &img));
    CHECK_OK(ctx, mr_clip_vision_preprocess(clip, img, &px));
    if (px) compare(ctx, px, pixels, np, 1e-5, "clip preprocess");
    int S = mr_clip_vision_image_size(clip);
    int64_t ps[3] = {3, S, S};
    CHECK_OK(ctx, mr_tensor_from_host(ctx, MR_F32, 3, ps, MR_F32, pixels, &pin));
    CHECK_OK(ctx, mr_clip_vision_forward(clip, pin, &out));
    char what[64];
    snprintf(what, sizeof what, "clip tower (%s weights)", mr_dtype_name(policy));
    if (out) compare(ctx, out, ref, no, tol, what);
    CHECK_OK(ctx, mr_clip_vision_encode(clip, img, &out2));
    snprintf(what, sizeof what, "clip encode (%s weights)", mr_dtype_name(policy));
    if (out2) compare(ctx, out2, ref, no, tol, what);
    mr_tensor_free(img);
    mr_tensor_free(px);
    mr_tensor_free(pin);
    mr_tensor_free(out);
    mr_tensor_free(out2);
    free(frame);
    free(pixels);
    free(ref);
  }
  /* a bad image shape is refused with a message */
  if (clip) {
    int64_t bad[3] = {4, 8, 8};
    mr_tensor *t = NULL, *o2 = (mr_tensor *)1;
    CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 3, bad, &t));
    CHECK(mr_clip_vision_encode(clip, t, &o2) == MR_EINVAL && o2 == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "[3, H, W]") != NULL);
    mr_tensor_free(t);
  }
  mr_clip_vision_free(clip);
  mr_weights_free(w);
  mr_weights_free(io);
  free(json);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  mr_ctx *ctx = mr_test_ctx();
  run(ctx, dir, MR_F32, 1e-4);
  run(ctx, dir, MR_F16, 2e-2);
  run(ctx, dir, MR_BF16, 2e-2);
  mr_ctx_free(ctx);
  return mr_test_finish("test_clip");
}
