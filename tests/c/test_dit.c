/* The Wan DiT against the reference: every DiT vector set in the conformance
   data (t2v, i2v, vace, ti2v), with f32 weights and the 16-bit policies. */
#include "testutil.h"

#include "tensor/dtype.h"

#include <string.h>

/* Uploads io tensor `name` as f32, or NULL when absent. */
static mr_tensor *io_tensor(mr_ctx *ctx, const mr_weights *io, const char *name) {
  int i = mr_weights_find(io, name);
  if (i < 0) return NULL;
  mr_tensor *t = NULL;
  CHECK_OK(ctx, mr_weights_to_tensor(ctx, io, i, MR_F32, &t));
  return t;
}

static float *io_floats(const mr_weights *io, const char *name, size_t *n) {
  int i = mr_weights_find(io, name);
  mr_weight_info info;
  if (i < 0 || mr_weights_get(io, i, &info) != MR_OK) return NULL;
  *n = 1;
  for (int d = 0; d < info.ndim; d++) *n *= (size_t)info.shape[d];
  float *x = malloc(*n * sizeof *x);
  mr_convert(MR_F32, x, info.dtype, info.data, *n);
  return x;
}

/* The same latent with two contexts as one batch (classifier-free guidance's
   pair): the prompt's, and another one with fewer rows (each is padded on
   its own); each output is what the single forward gives for its context. */
static void check_batch(mr_ctx *ctx, mr_wan_dit *dit, const mr_wan_dit_input *in, const float *single, size_t n,
                        const char *name, mr_dtype policy) {
  const int64_t *cs = mr_tensor_shape(in->context);
  int nd = mr_tensor_ndim(in->context);
  mr_tensor *part = NULL, *other = NULL, *outs[2] = {NULL, NULL}, *alone = NULL;
  CHECK_OK(ctx, mr_tensor_slice((mr_tensor *)in->context, nd - 2, 0, cs[nd - 2] > 1 ? cs[nd - 2] - 1 : 1, 1, &part));
  CHECK_OK(ctx, mr_op_scale(part, -0.5f, 0.25f, &other));
  const mr_tensor *contexts[2] = {in->context, other};
  CHECK_OK(ctx, mr_wan_dit_forward_batch(dit, in, 2, contexts, outs));
  mr_wan_dit_input in2 = *in;
  in2.context = other;
  CHECK_OK(ctx, mr_wan_dit_forward(dit, &in2, &alone));
  if (outs[0] && outs[1] && alone) {
    float *b0 = mr_test_read(ctx, outs[0]), *b1 = mr_test_read(ctx, outs[1]), *a1 = mr_test_read(ctx, alone);
    double e0 = mr_rel_l2(b0, single, n), e1 = mr_rel_l2(b1, a1, n), apart = mr_rel_l2(a1, single, n);
    printf("%-24s %-5s batch of 2: rel L2 %.3g and %.3g against single forwards (the two differ by %.3g)\n", name,
           mr_dtype_name(policy), e0, e1, apart);
    CHECK(e0 <= 1e-6 && e1 <= 1e-6 && apart > 1e-3);
    free(b0);
    free(b1);
    free(a1);
  }
  mr_tensor_free(outs[0]);
  mr_tensor_free(outs[1]);
  /* the batch's size is held to its range, and every output is NULL on failure */
  CHECK(mr_wan_dit_forward_batch(dit, in, 0, contexts, outs) == MR_EINVAL);
  CHECK(strstr(mr_ctx_last_error(ctx), "1 to 4") != NULL);
  const mr_tensor *many[MR_WAN_DIT_MAX_BATCH + 1];
  mr_tensor *many_out[MR_WAN_DIT_MAX_BATCH + 1];
  for (int i = 0; i <= MR_WAN_DIT_MAX_BATCH; i++) many[i] = in->context;
  CHECK(mr_wan_dit_forward_batch(dit, in, MR_WAN_DIT_MAX_BATCH + 1, many, many_out) == MR_EINVAL);
  const mr_tensor *bad[2] = {in->context, NULL};
  mr_tensor *bad_out[2] = {(mr_tensor *)1, (mr_tensor *)1};
  CHECK(mr_wan_dit_forward_batch(dit, in, 2, bad, bad_out) == MR_EINVAL && !bad_out[0] && !bad_out[1]);
  /* a context of the wrong width is named by its place in the batch */
  mr_tensor *narrow = NULL;
  CHECK_OK(ctx, mr_tensor_slice((mr_tensor *)in->context, nd - 1, 0, cs[nd - 1] - 1, 1, &narrow));
  const mr_tensor *wrong[2] = {in->context, narrow};
  bad_out[0] = bad_out[1] = (mr_tensor *)1;
  CHECK(mr_wan_dit_forward_batch(dit, in, 2, wrong, bad_out) == MR_EINVAL && !bad_out[0] && !bad_out[1]);
  CHECK(strstr(mr_ctx_last_error(ctx), "context 2 of 2 must be") != NULL);
  mr_tensor_free(narrow);
  mr_tensor_free(part);
  mr_tensor_free(other);
  mr_tensor_free(alone);
}

static void run_set(mr_ctx *ctx, const char *dir, const char *name, mr_dtype policy, double tol) {
  char path[1024];
  snprintf(path, sizeof path, "%s/wan/%s.json", dir, name);
  char *json = mr_test_read_text(path);
  CHECK(json != NULL);
  mr_weights *w = NULL, *io = NULL;
  snprintf(path, sizeof path, "%s/wan/%s.safetensors", dir, name);
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  snprintf(path, sizeof path, "%s/wan/%s.io.safetensors", dir, name);
  CHECK_OK(ctx, mr_weights_open(ctx, path, &io));
  if (!json || !w || !io) goto done;
  mr_model_opts o = mr_model_opts_default();
  o.weights = policy;
  o.config_json = json;
  mr_wan_dit *dit = NULL;
  CHECK_OK(ctx, mr_wan_dit_load(ctx, w, &o, &dit));
  if (!dit) goto done;

  mr_test_check_params(ctx, mr_wan_dit_params(dit), w, -1, "blocks.0.self_attn.q.weight");

  mr_wan_dit_input in = {0};
  in.x = io_tensor(ctx, io, "x");
  in.context = io_tensor(ctx, io, "context");
  in.y = io_tensor(ctx, io, "y");
  in.clip_fea = io_tensor(ctx, io, "clip_fea");
  in.vace_context = io_tensor(ctx, io, "vace_context");
  in.vace_scale = 1.0f;
  /* the scale the reference used is recorded in the json */
  const char *sc = strstr(json, "\"vace_context_scale\":");
  if (sc) in.vace_scale = strtof(sc + strlen("\"vace_context_scale\":"), NULL);
  size_t nt = 0, nref = 0;
  float *t = io_floats(io, "t", &nt);
  if (nt == 1) in.t = t[0];
  else {
    in.t_tokens = t;
    in.n_t_tokens = (int)nt;
  }
  float *ref = io_floats(io, "out", &nref);
  mr_tensor *out = NULL;
  CHECK_OK(ctx, mr_wan_dit_forward(dit, &in, &out));
  if (out && ref) {
    CHECK((size_t)mr_tensor_numel(out) == nref);
    float *got = mr_test_read(ctx, out);
    double err = mr_rel_l2(got, ref, nref);
    printf("%-24s %-5s rel L2 %.3g %s\n", name, mr_dtype_name(policy), err, err <= tol ? "PASS" : "FAIL");
    CHECK(err <= tol);
    /* With every block streamed from host memory the numbers are the same bits. */
    mr_model_opts so = o;
    so.resident_blocks = 0;
    mr_wan_dit *sdit = NULL;
    CHECK_OK(ctx, mr_wan_dit_load(ctx, w, &so, &sdit));
    mr_tensor *sout = NULL;
    if (sdit) {
      mr_param_info pi;
      const mr_params *sp = mr_wan_dit_params(sdit);
      CHECK_OK(ctx, mr_params_get(sp, mr_params_find(sp, "blocks.0.ffn.0.weight"), &pi));
      CHECK(pi.streamed && pi.tensor == NULL && pi.ndim == 2 && pi.dtype == policy);
      CHECK_OK(ctx, mr_params_get(sp, mr_params_find(sp, "head.head.weight"), &pi));
      CHECK(!pi.streamed && pi.tensor != NULL);
      CHECK_OK(ctx, mr_wan_dit_forward(sdit, &in, &sout));
      /* twice: the blocks come and go every forward */
      mr_tensor_free(sout);
      sout = NULL;
      CHECK_OK(ctx, mr_wan_dit_forward(sdit, &in, &sout));
    }
    float *sgot = sout ? mr_test_read(ctx, sout) : NULL;
    CHECK(sgot && memcmp(sgot, got, nref * sizeof *got) == 0);
    free(sgot);
    mr_tensor_free(sout);
    mr_wan_dit_free(sdit);
    check_batch(ctx, dit, &in, got, nref, name, policy);
    free(got);
  }
  mr_tensor_free(out);
  mr_tensor_free((mr_tensor *)in.x);
  mr_tensor_free((mr_tensor *)in.context);
  mr_tensor_free((mr_tensor *)in.y);
  mr_tensor_free((mr_tensor *)in.clip_fea);
  mr_tensor_free((mr_tensor *)in.vace_context);
  free(t);
  free(ref);
  mr_wan_dit_free(dit);
done:
  mr_weights_free(w);
  mr_weights_free(io);
  free(json);
}

static void test_detect(mr_ctx *ctx, const char *dir) {
  char path[1024];
  const char *sets[4] = {"wan21_dit_t2v_tiny", "wan21_dit_i2v_tiny", "wan21_dit_vace_tiny", "wan22_dit_ti2v_tiny"};
  const char *types[4] = {"t2v", "i2v", "vace", "t2v"}; /* ti2v's tensors are t2v's: only its config says ti2v */
  for (int i = 0; i < 4; i++) {
    mr_weights *w = NULL;
    snprintf(path, sizeof path, "%s/wan/%s.safetensors", dir, sets[i]);
    CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
    mr_wan_dit_config c;
    CHECK_OK(ctx, mr_wan_dit_detect(ctx, w, NULL, &c));
    CHECK(strcmp(c.model_type, types[i]) == 0);
    CHECK(c.num_layers > 0 && c.dim > 0 && c.n_params > 0);
    mr_weights_free(w);
  }
  /* a file that is not a DiT is refused by name */
  mr_weights *w = NULL;
  snprintf(path, sizeof path, "%s/wan/t5_encoder_tiny.safetensors", dir);
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  mr_wan_dit *dit = (mr_wan_dit *)1;
  CHECK(mr_wan_dit_load(ctx, w, NULL, &dit) == MR_EFORMAT && dit == NULL);
  CHECK(strstr(mr_ctx_last_error(ctx), "patch_embedding") != NULL);
  mr_weights_free(w);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/conformance/data";
  mr_ctx *ctx = mr_test_ctx();
  test_detect(ctx, dir);
  const char *sets[4] = {"wan21_dit_t2v_tiny", "wan22_dit_ti2v_tiny", "wan21_dit_vace_tiny", "wan21_dit_i2v_tiny"};
  for (int i = 0; i < 4; i++) run_set(ctx, dir, sets[i], MR_F32, 1e-4);
  run_set(ctx, dir, "wan21_dit_t2v_tiny", MR_F16, 2e-2);
  run_set(ctx, dir, "wan21_dit_t2v_tiny", MR_BF16, 2e-2);
  mr_ctx_free(ctx);
  return mr_test_finish("test_dit");
}
