/* The SentencePiece tokenizer against the ids the sentencepiece library gives
   (tokenizer/tokenizer_cases.json), bad model files, and Wan's text path.
   Usage: test_tokenizer <conformance data dir> */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <time.h>

static const char *piece_or(const mr_tokenizer *tok, int32_t id) {
  const char *p = mr_tokenizer_piece(tok, id);
  return p ? p : "?";
}

/* Every case of one model; returns the number that match. */
static int check_model(mr_ctx *ctx, const char *dir, const char *name, const cJSON *model, const cJSON *cases) {
  const cJSON *file = cJSON_GetObjectItem(model, "file");
  const cJSON *all_ids = cJSON_GetObjectItem(model, "ids");
  const cJSON *all_pieces = cJSON_GetObjectItem(model, "pieces");
  CHECK(cJSON_IsString(file) && cJSON_IsArray(all_ids));
  if (!cJSON_IsString(file) || !cJSON_IsArray(all_ids)) return 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer/%s", dir, file->valuestring);
  mr_tokenizer *tok = NULL;
  CHECK_OK(ctx, mr_tokenizer_load(ctx, path, &tok));
  if (!tok) return 0;
  CHECK(mr_tokenizer_vocab_size(tok) > 0);
  CHECK(mr_tokenizer_piece(tok, -1) == NULL);
  CHECK(mr_tokenizer_piece(tok, mr_tokenizer_vocab_size(tok)) == NULL);
  CHECK(mr_tokenizer_unk_id(tok) >= 0);

  int pass = 0, n_cases = cJSON_GetArraySize(cases);
  for (int c = 0; c < n_cases; c++) {
    const char *text = cJSON_GetArrayItem(cases, c)->valuestring;
    const cJSON *want = cJSON_GetArrayItem(all_ids, c);
    const cJSON *want_pieces = cJSON_GetArrayItem(all_pieces, c);
    int n_want = cJSON_GetArraySize(want), n = -1;
    mr_status st = mr_tokenizer_encode(tok, text, NULL, 0, &n); /* size query */
    CHECK(st == MR_OK);
    int32_t *got = malloc(((size_t)n + 1) * sizeof *got);
    st = mr_tokenizer_encode(tok, text, got, n, &n);
    CHECK(st == MR_OK);
    int first_bad = n == n_want ? -1 : (n < n_want ? n : n_want);
    for (int i = 0; i < n && i < n_want; i++)
      if (got[i] != (int32_t)cJSON_GetArrayItem(want, i)->valuedouble) {
        first_bad = i;
        break;
      }
    if (st == MR_OK && first_bad < 0) {
      pass++;
    } else {
      mr_test_failures++;
      fprintf(stderr, "%s case %d %s: first mismatch at id %d of %d (expected %d):\n  text: \"%s\"\n", name, c,
              st == MR_OK ? "ids differ" : "failed", first_bad, n, n_want, text);
      fprintf(stderr, "  expected:");
      for (int i = 0; i < n_want; i++) {
        const cJSON *p = cJSON_GetArrayItem(want_pieces, i);
        fprintf(stderr, " %s%s", i == first_bad ? ">>" : "", cJSON_IsString(p) ? p->valuestring : "?");
      }
      fprintf(stderr, "\n  got:     ");
      for (int i = 0; i < n; i++) fprintf(stderr, " %s%s", i == first_bad ? ">>" : "", piece_or(tok, got[i]));
      fprintf(stderr, "\n");
    }
    /* a short buffer gets a prefix and the full count */
    if (n_want > 2) {
      int32_t two[2];
      int m = -1;
      CHECK(mr_tokenizer_encode(tok, text, two, 2, &m) == MR_OK && m == n_want && two[0] == got[0]);
    }
    free(got);
  }
  printf("%s: %d/%d cases give the library's ids\n", name, pass, n_cases);
  mr_tokenizer_free(tok);
  return pass;
}

/* A truncated model, a random file, a missing file, a BPE model. */
static void check_bad_files(mr_ctx *ctx, const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer/unigram.model", dir);
  size_t len;
  char *model = mr_test_read_bytes(path, &len);
  CHECK(model != NULL);
  if (!model) return;
  const char *tmp = "test_tokenizer_bad.model";
  mr_tokenizer *tok = (mr_tokenizer *)1;

  mr_test_write_bytes(tmp, model, len / 2);
  CHECK(mr_tokenizer_load(ctx, tmp, &tok) == MR_EFORMAT && tok == NULL);
  if (ctx) CHECK(strstr(mr_ctx_last_error(ctx), tmp) && strstr(mr_ctx_last_error(ctx), "truncated"));

  uint64_t x = 0x9E3779B97F4A7C15ull;
  char noise[4096];
  for (size_t i = 0; i < sizeof noise; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    noise[i] = (char)(x >> 24);
  }
  mr_test_write_bytes(tmp, noise, sizeof noise);
  tok = (mr_tokenizer *)1;
  CHECK(mr_tokenizer_load(ctx, tmp, &tok) == MR_EFORMAT && tok == NULL);
  if (ctx) CHECK(strstr(mr_ctx_last_error(ctx), tmp) != NULL);

  mr_test_write_bytes(tmp, "", 0);
  CHECK(mr_tokenizer_load(ctx, tmp, &tok) == MR_EFORMAT && tok == NULL);

  /* the same model with trainer_spec.model_type = BPE appended: the last
     occurrence of an embedded message's field wins, as protobuf merges them */
  char *bpe = malloc(len + 4);
  memcpy(bpe, model, len);
  const unsigned char spec[4] = {0x12, 0x02, 0x18, 0x02}; /* field 2 (trainer_spec) { field 3 = 2 } */
  memcpy(bpe + len, spec, 4);
  mr_test_write_bytes(tmp, bpe, len + 4);
  CHECK(mr_tokenizer_load(ctx, tmp, &tok) == MR_EUNSUPPORTED && tok == NULL);
  if (ctx) CHECK(strstr(mr_ctx_last_error(ctx), "BPE") != NULL);
  free(bpe);

  /* normalizer_spec.add_dummy_prefix = false merged in: a text that
     normalizes to nothing (a control character the charsmap drops) gives no
     pieces. This wrote a NUL through a NULL buffer once (issue 15). */
  char *nodummy = malloc(len + 4);
  memcpy(nodummy, model, len);
  const unsigned char ns[4] = {0x1a, 0x02, 0x18, 0x00}; /* field 3 (normalizer_spec) { field 3 = false } */
  memcpy(nodummy + len, ns, 4);
  mr_test_write_bytes(tmp, nodummy, len + 4);
  tok = NULL;
  CHECK_OK(ctx, mr_tokenizer_load(ctx, tmp, &tok));
  if (tok) {
    int32_t ids[8];
    int n = -1;
    CHECK_OK(ctx, mr_tokenizer_encode(tok, "\x01", ids, 8, &n));
    CHECK(n == 0);
    CHECK_OK(ctx, mr_tokenizer_encode(tok, "\x01\x01 \x7f", ids, 8, &n));
    CHECK(n == 0);
    CHECK_OK(ctx, mr_tokenizer_encode(tok, "a", ids, 8, &n));
    CHECK(n >= 1 && strcmp(mr_tokenizer_piece(tok, ids[0]), "a") == 0); /* no dummy "▁" in front */
    mr_tokenizer_free(tok);
  }
  free(nodummy);

  CHECK(mr_tokenizer_load(ctx, "no/such/dir/spiece.model", &tok) == MR_EIO && tok == NULL);
  if (ctx) CHECK(strstr(mr_ctx_last_error(ctx), "no/such/dir/spiece.model") != NULL);
  remove(tmp);
  free(model);
  mr_tokenizer_free(NULL);
}

/* Encodes with the plain API, for building expectations from the rules. */
static int plain(mr_tokenizer *tok, const char *text, int32_t *ids, int cap) {
  int n = 0;
  CHECK(mr_tokenizer_encode(tok, text, ids, cap, &n) == MR_OK && n <= cap);
  return n;
}

static bool same(const int32_t *a, const int32_t *b, int n) { return n == 0 || memcmp(a, b, (size_t)n * sizeof *a) == 0; }

/* Wan's path: clean, encode, EOS, truncate keeping EOS, pad. The expected
   cleaned strings are written out by hand from the rules of §1.3. */
static void check_wan(mr_ctx *ctx, const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer/unigram.model", dir);
  mr_tokenizer *tok = NULL;
  CHECK_OK(ctx, mr_tokenizer_load(ctx, path, &tok));
  if (!tok) return;
  const int32_t eos = mr_tokenizer_eos_id(tok), pad = mr_tokenizer_pad_id(tok);
  CHECK(eos == 1 && pad == 0 && mr_tokenizer_unk_id(tok) == 2); /* umT5's ids, and this model's */
  enum { L = 64 };
  int32_t ids[L], want[L];
  int32_t n_tokens = -1;

  static const struct { const char *raw, *clean; } cases[] = {
    {"  a red\t\tfox\n runs  ", "a red fox runs"},
    {"Tom &amp; Jerry &lt;3 &#233;t&#xE9; &quot;x&quot;", "Tom & Jerry <3 \xc3\xa9t\xc3\xa9 \"x\""},
    {"double &amp;amp; escaped", "double & escaped"},
    {"\xe2\x80\x9cquoted\xe2\x80\x9d and \xe2\x80\x98single\xe2\x80\x99", "\"quoted\" and 'single'"},
    {"ideographic\xe3\x80\x80space\xc2\xa0nbsp\xe2\x80\x83" "em", "ideographic space nbsp em"},
    {"&ampersand &unknown; a&b", "&ersand &unknown; a&b"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int n = plain(tok, cases[c].clean, want, L - 1);
    CHECK_OK(ctx, mr_tokenizer_encode_wan(tok, cases[c].raw, L, ids, &n_tokens));
    bool ok = n_tokens == n + 1 && same(ids, want, n) && ids[n] == eos;
    for (int i = n + 1; i < L; i++) ok = ok && ids[i] == pad;
    if (!ok) fprintf(stderr, "encode_wan case %zu: \"%s\" does not encode as \"%s\" + EOS + padding\n", c,
                     cases[c].raw, cases[c].clean);
    CHECK(ok);
  }

  /* empty and whitespace-only prompts: EOS alone */
  CHECK_OK(ctx, mr_tokenizer_encode_wan(tok, " \t\n ", L, ids, &n_tokens));
  CHECK(n_tokens == 1 && ids[0] == eos && ids[1] == pad && ids[L - 1] == pad);

  /* truncation keeps room for EOS: text_len - 1 text ids, then EOS */
  const char *longp = "a red fox runs across a snowy forest, cinematic lighting, a red fox runs across";
  int n = plain(tok, longp, want, L);
  CHECK(n > 8);
  CHECK_OK(ctx, mr_tokenizer_encode_wan(tok, longp, 8, ids, &n_tokens));
  CHECK(n_tokens == 8 && same(ids, want, 7) && ids[7] == eos);
  CHECK_OK(ctx, mr_tokenizer_encode_wan(tok, longp, 1, ids, &n_tokens));
  CHECK(n_tokens == 1 && ids[0] == eos);
  /* exactly fitting: n ids + EOS in n + 1 slots, no padding */
  CHECK_OK(ctx, mr_tokenizer_encode_wan(tok, longp, n + 1, ids, &n_tokens));
  CHECK(n_tokens == n + 1 && same(ids, want, n) && ids[n] == eos);

  CHECK(mr_tokenizer_encode_wan(tok, longp, 0, ids, &n_tokens) == MR_EINVAL);
  CHECK(mr_tokenizer_encode_wan(tok, NULL, L, ids, &n_tokens) == MR_EINVAL);
  mr_tokenizer_free(tok);
}

/* Encode speed on a long mixed prompt, printed for the record (never a check). */
static void bench(mr_ctx *ctx, const char *dir, const cJSON *cases) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer/unigram_bytefallback.model", dir);
  mr_tokenizer *tok = NULL;
  if (mr_tokenizer_load(ctx, path, &tok) != MR_OK) return;
  size_t cap = 1 << 16, len = 0;
  char *text = malloc(cap);
  for (int c = 0; len < cap / 2; c = (c + 1) % cJSON_GetArraySize(cases)) {
    const char *s = cJSON_GetArrayItem(cases, c)->valuestring;
    size_t k = strlen(s);
    memcpy(text + len, s, k);
    len += k;
    text[len++] = ' ';
  }
  text[len] = '\0';
  size_t chars = 0;
  for (size_t i = 0; i < len; i++) chars += ((unsigned char)text[i] & 0xC0) != 0x80;
  int n = 0, reps = 20;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int r = 0; r < reps; r++) mr_tokenizer_encode(tok, text, NULL, 0, &n);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  printf("encode: %zu chars -> %d ids, %.1f us per 1k chars\n", chars, n, 1e6 * s / reps / ((double)chars / 1000));
  free(text);
  mr_tokenizer_free(tok);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s <conformance data dir>\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  /* The tokenizer needs no GPU: without a device the checks still run, only
     the error-message checks are skipped. */
  mr_ctx *ctx = NULL;
  if (mr_ctx_new(NULL, &ctx) != MR_OK) {
    fprintf(stderr, "no Vulkan context; error messages go to stderr\n");
    ctx = NULL;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer/tokenizer_cases.json", dir);
  char *json = mr_test_read_text(path);
  cJSON *root = json ? cJSON_Parse(json) : NULL;
  CHECK(root != NULL);
  if (root) {
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    const cJSON *models = cJSON_GetObjectItem(root, "models");
    CHECK(cJSON_GetArraySize(models) >= 2);
    const cJSON *m;
    cJSON_ArrayForEach(m, models) check_model(ctx, dir, m->string, m, cases);
    check_bad_files(ctx, dir);
    check_wan(ctx, dir);
    bench(ctx, dir, cases);
  }
  cJSON_Delete(root);
  free(json);
  mr_ctx_free(ctx);
  return mr_test_finish("test_tokenizer");
}
