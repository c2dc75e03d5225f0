/* Prompts: Wan's cleaning (curly quotes, HTML entities twice, whitespace;
   engine/text/prompt_clean.c), the normalizer and the unigram segmenter,
   through mr_tokenizer_encode and mr_tokenizer_encode_wan on the three real
   models of the tree (the conformance tokenizers with and without byte
   fallback, and the default model's spiece.model). The input is the prompt;
   its length picks the model and the text length. */
#include "fuzz.h"

#include "text/text_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mr_tokenizer *toks[3];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  static const char *const files[3] = {
      "tests/conformance/data/tokenizer/unigram.model",
      "tests/conformance/data/tokenizer/unigram_bytefallback.model",
      "models/default/google/umt5-xxl/spiece.model",
  };
  mr_ctx *ctx = mr_fuzz_host_ctx();
  for (int i = 0; i < 3; i++) {
    if (mr_tokenizer_load(ctx, mr_fuzz_source_path(files[i]), &toks[i]) != MR_OK) {
      fprintf(stderr, "fuzz_prompt: %s\n", mr_ctx_last_error(ctx));
      exit(1);
    }
  }
  return 0;
}

static bool is_space(char c) { return c == ' '; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_ctx *ctx = mr_fuzz_host_ctx();
  char *text = malloc(size + 1);
  if (text == NULL) return 0;
  memcpy(text, data, size);
  text[size] = '\0'; /* the API takes C strings: an inner NUL ends the prompt */
  mr_tokenizer *tok = toks[size % 3];
  int vocab = mr_tokenizer_vocab_size(tok);

  /* cleaning alone: Wan collapses whitespace runs and strips the ends */
  mr_spm_bytes clean = {0};
  MR_FUZZ_CHECK(mr_wan_prompt_clean(text, &clean));
  for (size_t i = 0; i < clean.len; i++) {
    MR_FUZZ_CHECK(clean.p[i] != '\0');
    if (i + 1 < clean.len) MR_FUZZ_CHECK(!(is_space(clean.p[i]) && is_space(clean.p[i + 1])));
  }
  if (clean.len) MR_FUZZ_CHECK(!is_space(clean.p[0]) && !is_space(clean.p[clean.len - 1]));
  free(clean.p);

  /* encode: a first call sizes the buffer, the second fills it the same way */
  int n = 0, n2 = 0;
  mr_fuzz_clear_error(ctx);
  mr_status st = mr_tokenizer_encode(tok, text, NULL, 0, &n);
  mr_fuzz_check_refusal(ctx, st, NULL);
  if (st == MR_OK) {
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (ids != NULL) {
      st = mr_tokenizer_encode(tok, text, ids, n, &n2);
      MR_FUZZ_CHECK(st == MR_OK && n2 == n);
      for (int i = 0; i < n; i++) MR_FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab);
      free(ids);
    }
  }

  /* Wan's text path at a text length from 1 up */
  int text_len = 1 + (int)(size % 64);
  int32_t wan[64], nt = 0;
  mr_fuzz_clear_error(ctx);
  st = mr_tokenizer_encode_wan(tok, text, text_len, wan, &nt);
  mr_fuzz_check_refusal(ctx, st, NULL);
  if (st == MR_OK) {
    MR_FUZZ_CHECK(nt >= 1 && nt <= text_len);
    MR_FUZZ_CHECK(wan[nt - 1] == mr_tokenizer_eos_id(tok));
    for (int i = 0; i < nt; i++) MR_FUZZ_CHECK(wan[i] >= 0 && wan[i] < vocab);
    for (int i = nt; i < text_len; i++) MR_FUZZ_CHECK(wan[i] == mr_tokenizer_pad_id(tok));
  }
  free(text);
  return 0;
}
