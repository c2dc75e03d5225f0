/* The umT5 encoder against the conformance vectors (wan/t5_encoder_tiny*):
   f32 safetensors, the bf16 .pth, the f16/bf16 weight policies, the Hugging
   Face naming (written here from the official file), the relative position
   buckets, and the errors a broken checkpoint or a bad call gives.
   argv[1] is the conformance data folder. */
#include "testutil.h"

#include "models/t5_internal.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_file(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", tmpdir, name);
  return buf;
}

/* ------------------------------------------------------------ buckets */

static void test_buckets(void) {
  /* rel -> bucket pairs from docs/wan-architecture.md §1.2 (computed there with the official function) */
  static const int pairs[][2] = {{-1, 1},   {-8, 8},   {-16, 10}, {-32, 12}, {-64, 14}, {-100, 15}, {-127, 15},
                                 {-128, 15}, {-500, 15}, {0, 0},    {1, 17},   {7, 23},   {8, 24},    {16, 26},
                                 {32, 28},  {64, 30},  {100, 31}, {128, 31}, {1000, 31}};
  for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
    int got = mr_t5_rel_bucket(pairs[i][0], 32, MR_T5_MAX_DISTANCE);
    if (got != pairs[i][1]) fprintf(stderr, "bucket(%d) = %d, expected %d\n", pairs[i][0], got, pairs[i][1]);
    CHECK(got == pairs[i][1]);
  }
  /* monotone in |rel| within each direction, never past the direction's last bucket */
  for (int r = 1; r < 300; r++) {
    if (r > 1) CHECK(mr_t5_rel_bucket(r, 32, 128) >= mr_t5_rel_bucket(r - 1, 32, 128));
    CHECK(mr_t5_rel_bucket(-r, 32, 128) >= mr_t5_rel_bucket(-(r - 1), 32, 128));
    CHECK(mr_t5_rel_bucket(r, 32, 128) >= 17 && mr_t5_rel_bucket(r, 32, 128) <= 31);
    CHECK(mr_t5_rel_bucket(-r, 32, 128) >= 1 && mr_t5_rel_bucket(-r, 32, 128) <= 15);
  }
  /* the table is bucket(k - q) at [q, k] */
  int32_t tab[7 * 7];
  mr_t5_bucket_table(7, 32, 128, tab);
  for (int q = 0; q < 7; q++)
    for (int k = 0; k < 7; k++) CHECK(tab[q * 7 + k] == mr_t5_rel_bucket(k - q, 32, 128));
}

/* ------------------------------------------------------------ conformance */

typedef struct io_case {
  int n, n_valid, dim;
  int32_t ids[512];
  float *ref; /* [n, dim] */
} io_case;

static bool read_io(mr_ctx *ctx, const char *dir, io_case *io) {
  char path[512];
  snprintf(path, sizeof path, "%s/wan/t5_encoder_tiny.io.safetensors", dir);
  mr_weights *w;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  if (!w) return false;
  mr_weight_info ids, mask, out;
  int ii = mr_weights_find(w, "ids"), im = mr_weights_find(w, "mask"), io_ = mr_weights_find(w, "out");
  CHECK(ii >= 0 && im >= 0 && io_ >= 0);
  bool ok = ii >= 0 && im >= 0 && io_ >= 0 && mr_weights_get(w, ii, &ids) == MR_OK &&
            mr_weights_get(w, im, &mask) == MR_OK && mr_weights_get(w, io_, &out) == MR_OK;
  ok = ok && ids.dtype == MR_I64 && ids.ndim == 2 && ids.shape[0] == 1 && ids.shape[1] <= 512 &&
       mask.ndim == 2 && mask.shape[1] == ids.shape[1] && out.dtype == MR_F32 && out.ndim == 3 &&
       out.shape[1] == ids.shape[1];
  CHECK(ok);
  if (ok) {
    io->n = (int)ids.shape[1];
    io->dim = (int)out.shape[2];
    io->n_valid = 0;
    for (int i = 0; i < io->n; i++) {
      int64_t v;
      memcpy(&v, (const char *)ids.data + 8 * i, 8);
      io->ids[i] = (int32_t)v;
    }
    /* the mask: 1 = real token, in whichever numeric dtype the file has */
    for (int i = 0; i < io->n; i++) {
      double v = 0;
      if (mask.dtype == MR_I64) {
        int64_t x;
        memcpy(&x, (const char *)mask.data + 8 * i, 8);
        v = (double)x;
      } else if (mask.dtype == MR_F32) {
        float x;
        memcpy(&x, (const char *)mask.data + 4 * i, 4);
        v = x;
      } else if (mask.dtype == MR_I32) {
        int32_t x;
        memcpy(&x, (const char *)mask.data + 4 * i, 4);
        v = x;
      }
      io->n_valid += v != 0;
    }
    io->ref = malloc((size_t)io->n * io->dim * sizeof *io->ref);
    memcpy(io->ref, out.data, (size_t)io->n * io->dim * sizeof *io->ref);
  }
  mr_weights_free(w);
  return ok;
}

/* Encodes io with a loaded encoder; returns [n, dim] host values (malloc'd) or NULL. */
static float *encode(mr_ctx *ctx, mr_t5 *t5, const io_case *io) {
  mr_tensor *out = NULL;
  CHECK_OK(ctx, mr_t5_encode(t5, io->ids, io->n, io->n_valid, &out));
  if (!out) return NULL;
  CHECK(mr_tensor_dtype(out) == MR_F32 && mr_tensor_ndim(out) == 2);
  CHECK(mr_tensor_shape(out)[0] == io->n && mr_tensor_shape(out)[1] == io->dim);
  float *y = mr_test_read(ctx, out);
  mr_tensor_free(out);
  return y;
}

/* Loads path with a weight policy, encodes, compares; returns the error on the valid rows. */
static double run_case(mr_ctx *ctx, const char *path, mr_dtype policy, const io_case *io, double tol) {
  mr_weights *w = NULL;
  mr_t5 *t5 = NULL;
  double err = 1e9;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  mr_model_opts opts = mr_model_opts_default();
  opts.weights = policy;
  if (w) CHECK_OK(ctx, mr_t5_load(ctx, w, &opts, &t5));
  mr_weights_free(w); /* the encoder keeps its own device copies */
  if (t5) {
    CHECK(mr_t5_dim(t5) == io->dim);
    float *y = encode(ctx, t5, io);
    if (y) {
      size_t valid = (size_t)io->n_valid * io->dim, all = (size_t)io->n * io->dim;
      err = mr_rel_l2(y, io->ref, valid);
      double err_all = mr_rel_l2(y, io->ref, all);
      double err_pad = io->n_valid < io->n ? mr_rel_l2(y + valid, io->ref + valid, all - valid) : 0;
      printf("%-28s weights %-4s: rel L2 %.3g on the %d valid rows (padded rows %.3g, all %.3g), tol %g\n",
             strrchr(path, '/') + 1, mr_dtype_name(policy), err, io->n_valid, err_pad, err_all, tol);
      CHECK(err < tol);
      /* Padded rows are the pad token's states attending to the valid keys:
         the reference computed them the same way, so they agree too. */
      CHECK(err_all < tol);
      free(y);
    }
  }
  mr_t5_free(t5);
  return err;
}

/* ------------------------------------------------------------ renamed / broken checkpoints */

/* The Hugging Face name of an official name; NULL if unknown. */
static const char *hf_name(const char *name, bool shared, char *buf, size_t cap) {
  static const char *const map[][2] = {
      {"norm1.weight", "layer.0.layer_norm.weight"},
      {"attn.q.weight", "layer.0.SelfAttention.q.weight"},
      {"attn.k.weight", "layer.0.SelfAttention.k.weight"},
      {"attn.v.weight", "layer.0.SelfAttention.v.weight"},
      {"attn.o.weight", "layer.0.SelfAttention.o.weight"},
      {"pos_embedding.embedding.weight", "layer.0.SelfAttention.relative_attention_bias.weight"},
      {"norm2.weight", "layer.1.layer_norm.weight"},
      {"ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"},
      {"ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"},
      {"ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"},
  };
  if (strcmp(name, "token_embedding.weight") == 0) return shared ? "shared.weight" : "encoder.embed_tokens.weight";
  if (strcmp(name, "norm.weight") == 0) return "encoder.final_layer_norm.weight";
  int b, used = 0;
  if (sscanf(name, "blocks.%d.%n", &b, &used) != 1 || used == 0) return NULL;
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (strcmp(name + used, map[i][0]) == 0) {
      snprintf(buf, cap, "encoder.block.%d.%s", b, map[i][1]);
      return buf;
    }
  return NULL;
}

typedef enum naming { NAMING_OFFICIAL, NAMING_HF_SHARED, NAMING_HF_EMBED_TOKENS } naming;

/* Writes the checkpoint w under a naming to path, leaving out `drop` and
   giving `reshape` (official names) a transposed shape. */
static bool write_variant(mr_ctx *ctx, const mr_weights *w, const char *path, naming nm, const char *drop,
                          const char *reshape) {
  int n = mr_weights_count(w), k = 0;
  const char **names = calloc((size_t)n + 1, sizeof *names);
  char(*bufs)[160] = calloc((size_t)n + 1, sizeof *bufs);
  mr_tensor **ts = calloc((size_t)n + 1, sizeof *ts);
  bool ok = true;
  for (int i = 0; i < n && ok; i++) {
    mr_weight_info info;
    CHECK_OK(ctx, mr_weights_get(w, i, &info));
    if (drop && strcmp(info.name, drop) == 0) continue;
    const char *nn = nm == NAMING_OFFICIAL ? info.name : hf_name(info.name, nm == NAMING_HF_SHARED, bufs[k], sizeof bufs[k]);
    CHECK(nn != NULL);
    if (!nn) {
      ok = false;
      break;
    }
    if (nn != bufs[k]) snprintf(bufs[k], sizeof bufs[k], "%s", nn);
    names[k] = bufs[k];
    mr_tensor *t = NULL;
    CHECK_OK(ctx, mr_weights_to_tensor(ctx, w, i, MR_F32, &t));
    if (t && reshape && strcmp(info.name, reshape) == 0 && info.ndim == 2) {
      int64_t s[2] = {info.shape[1], info.shape[0]};
      mr_tensor *r = NULL;
      CHECK_OK(ctx, mr_tensor_reshape(t, 2, s, &r));
      mr_tensor_free(t);
      t = r;
    }
    ok = t != NULL;
    ts[k++] = t;
  }
  if (ok && nm == NAMING_HF_EMBED_TOKENS) { /* a decoder tensor an encoder must ignore */
    int64_t s[1] = {4};
    names[k] = "decoder.block.0.layer.0.layer_norm.weight";
    CHECK_OK(ctx, mr_tensor_new(ctx, MR_F32, 1, s, &ts[k]));
    ok = ts[k++] != NULL;
  }
  if (ok) CHECK_OK(ctx, mr_safetensors_write(ctx, path, k, names, ts, NULL));
  for (int i = 0; i < k; i++) mr_tensor_free(ts[i]);
  free(names);
  free(bufs);
  free(ts);
  return ok;
}

/* Loading path fails with MR_EFORMAT and a message naming `needle`. */
static void expect_format_error(mr_ctx *ctx, const char *path, const char *needle) {
  mr_weights *w = NULL;
  mr_t5 *t5 = (mr_t5 *)1;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  if (!w) return;
  mr_status st = mr_t5_load(ctx, w, NULL, &t5);
  const char *msg = mr_ctx_last_error(ctx);
  if (st != MR_EFORMAT || !strstr(msg, needle))
    fprintf(stderr, "expected MR_EFORMAT naming '%s', got %s: %s\n", needle, mr_status_name(st), msg);
  CHECK(st == MR_EFORMAT && t5 == NULL && strstr(msg, needle) != NULL);
  mr_weights_free(w);
}

static void test_namings_and_errors(mr_ctx *ctx, const char *dir, const io_case *io) {
  char path[512], tmp[512];
  snprintf(path, sizeof path, "%s/wan/t5_encoder_tiny.safetensors", dir);
  mr_weights *w = NULL;
  CHECK_OK(ctx, mr_weights_open(ctx, path, &w));
  if (!w) return;

  /* the official encoder's output, to compare the renamed files with */
  mr_t5 *t5 = NULL;
  float *want = NULL;
  CHECK_OK(ctx, mr_t5_load(ctx, w, NULL, &t5));
  if (t5) want = encode(ctx, t5, io);

  /* bad calls */
  if (t5) {
    mr_tensor *out = (mr_tensor *)1;
    int32_t bad[3] = {1, 300, 2};
    CHECK(mr_t5_encode(t5, bad, 3, 3, &out) == MR_EINVAL && out == NULL);
    CHECK(strstr(mr_ctx_last_error(ctx), "token id 300 at position 1") != NULL);
    CHECK(mr_t5_encode(t5, io->ids, io->n, 0, &out) == MR_EINVAL && out == NULL);
    CHECK(mr_t5_encode(t5, io->ids, io->n, io->n + 1, &out) == MR_EINVAL);
    CHECK(mr_t5_encode(t5, io->ids, 0, 0, &out) == MR_EINVAL);
    /* one token runs; then the full length again gives the same states
       (the bucket table is rebuilt for each new length) */
    CHECK_OK(ctx, mr_t5_encode(t5, io->ids, 1, 1, &out));
    mr_tensor_free(out);
    float *again = encode(ctx, t5, io);
    CHECK(again && want && memcmp(again, want, (size_t)io->n * io->dim * sizeof *want) == 0);
    free(again);
  }
  if (t5) mr_test_check_params(ctx, mr_t5_params(t5), w, -1, "blocks.0.attn.q.weight");
  mr_t5_free(t5);

  /* Hugging Face / ComfyUI naming, both places the embedding is found: same output */
  const naming hf[2] = {NAMING_HF_SHARED, NAMING_HF_EMBED_TOKENS};
  for (int i = 0; i < 2 && want; i++) {
    tmp_file(tmp, sizeof tmp, i ? "t5_hf_embed.safetensors" : "t5_hf_shared.safetensors");
    if (!write_variant(ctx, w, tmp, hf[i], NULL, NULL)) continue;
    mr_weights *wh = NULL;
    mr_t5 *th = NULL;
    CHECK_OK(ctx, mr_weights_open(ctx, tmp, &wh));
    if (wh) CHECK_OK(ctx, mr_t5_load(ctx, wh, NULL, &th));
    if (th) {
      /* the table keeps the official names whatever the file's naming */
      mr_test_check_params(ctx, mr_t5_params(th), w, -1, "token_embedding.weight");
      float *y = encode(ctx, th, io);
      if (y) {
        double e = mr_rel_l2(y, want, (size_t)io->n * io->dim);
        printf("Hugging Face naming (%s): rel L2 %.3g against the official naming\n",
               i ? "encoder.embed_tokens" : "shared", e);
        CHECK(e == 0);
      }
      free(y);
    }
    mr_t5_free(th);
    mr_weights_free(wh);
    unlink(tmp);
  }

  /* broken checkpoints name the tensor */
  tmp_file(tmp, sizeof tmp, "t5_broken.safetensors");
  if (write_variant(ctx, w, tmp, NAMING_OFFICIAL, "blocks.1.attn.k.weight", NULL))
    expect_format_error(ctx, tmp, "blocks.1.attn.k.weight");
  if (write_variant(ctx, w, tmp, NAMING_OFFICIAL, NULL, "blocks.0.ffn.fc2.weight"))
    expect_format_error(ctx, tmp, "blocks.0.ffn.fc2.weight");
  if (write_variant(ctx, w, tmp, NAMING_OFFICIAL, "norm.weight", NULL)) expect_format_error(ctx, tmp, "norm.weight");
  if (write_variant(ctx, w, tmp, NAMING_OFFICIAL, "token_embedding.weight", NULL))
    expect_format_error(ctx, tmp, "token_embedding.weight");
  if (write_variant(ctx, w, tmp, NAMING_HF_SHARED, "blocks.1.pos_embedding.embedding.weight", NULL))
    expect_format_error(ctx, tmp, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
  if (write_variant(ctx, w, tmp, NAMING_HF_SHARED, "token_embedding.weight", NULL))
    expect_format_error(ctx, tmp, "shared.weight");
  unlink(tmp);
  /* not a T5 checkpoint at all */
  snprintf(path, sizeof path, "%s/wan/wan21_vae_tiny.safetensors", dir);
  expect_format_error(ctx, path, "not a umT5 encoder checkpoint");
  /* a bad policy */
  mr_model_opts opts = mr_model_opts_default();
  opts.weights = MR_I64;
  t5 = (mr_t5 *)1;
  CHECK(mr_t5_load(ctx, w, &opts, &t5) == MR_EINVAL && t5 == NULL);
  mr_t5_free(NULL);
  free(want);
  mr_weights_free(w);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CONFORMANCE_DATA_DIR\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  const char *t = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/mr_test_t5_%d", t && *t ? t : "/tmp", (int)getpid());
  if (mkdir(tmpdir, 0700) != 0) {
    perror(tmpdir);
    return 1;
  }

  test_buckets();
  mr_ctx *ctx = mr_test_ctx();
  io_case io;
  if (read_io(ctx, dir, &io)) {
    char st[512], pth[512];
    snprintf(st, sizeof st, "%s/wan/t5_encoder_tiny.safetensors", dir);
    snprintf(pth, sizeof pth, "%s/wan/t5_encoder_tiny-bf16.pth", dir);
    run_case(ctx, st, MR_F32, &io, 1e-4);
    run_case(ctx, pth, MR_F32, &io, 2e-2);
    run_case(ctx, st, MR_F16, &io, 2e-2);
    run_case(ctx, st, MR_BF16, &io, 2e-2);
    run_case(ctx, pth, MR_BF16, &io, 2e-2);
    test_namings_and_errors(ctx, dir, &io);
    free(io.ref);
  }
  mr_ctx_free(ctx);
  rmdir(tmpdir);
  return mr_test_finish("test_t5");
}
