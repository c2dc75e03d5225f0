/* spiece.model files: the protobuf, the pieces, the normalizer's
   precompiled character map (a darts-clone trie and its string pool) and the
   piece tries (engine/text/spiece_model.c, normalizer.c, unigram.c), through
   mr_tokenizer_load; a model that loads then encodes a few prompts, among
   them those that once crashed the normalizer (issue 15: a one-letter
   prompt that normalizes to nothing). */
#include "fuzz.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

static void encode_checked(mr_ctx *ctx, mr_tokenizer *tok, const char *text) {
  int vocab = mr_tokenizer_vocab_size(tok);
  int n = 0;
  int32_t ids[256];
  mr_fuzz_clear_error(ctx);
  mr_status st = mr_tokenizer_encode(tok, text, ids, 256, &n);
  mr_fuzz_check_refusal(ctx, st, NULL);
  if (st != MR_OK) return;
  MR_FUZZ_CHECK(n >= 0);
  for (int i = 0; i < n && i < 256; i++) MR_FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab);
  for (int i = 0; i < n && i < 256; i++) MR_FUZZ_CHECK(mr_tokenizer_piece(tok, ids[i]) != NULL);

  /* Wan's path: EOS after at most text_len - 1 ids, then padding */
  enum { TEXT_LEN = 16 };
  int32_t wan[TEXT_LEN], nt = 0;
  mr_fuzz_clear_error(ctx);
  st = mr_tokenizer_encode_wan(tok, text, TEXT_LEN, wan, &nt);
  mr_fuzz_check_refusal(ctx, st, NULL);
  if (st != MR_OK) return;
  MR_FUZZ_CHECK(nt >= 1 && nt <= TEXT_LEN);
  MR_FUZZ_CHECK(wan[nt - 1] == mr_tokenizer_eos_id(tok));
  for (int i = nt; i < TEXT_LEN; i++) MR_FUZZ_CHECK(wan[i] == mr_tokenizer_pad_id(tok));
  for (int i = 0; i < nt; i++) MR_FUZZ_CHECK(wan[i] >= 0 && wan[i] < vocab);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_ctx *ctx = mr_fuzz_host_ctx();
  mr_fuzz_file f;
  mr_fuzz_file_open(&f, data, size);
  mr_tokenizer *tok = NULL;
  mr_fuzz_clear_error(ctx);
  mr_status st = mr_tokenizer_load(ctx, f.path, &tok);
  mr_fuzz_check_refusal(ctx, st, f.path);
  mr_fuzz_file_close(&f);
  if (st != MR_OK) {
    MR_FUZZ_CHECK(tok == NULL);
    return 0;
  }
  MR_FUZZ_CHECK(mr_tokenizer_vocab_size(tok) > 0);
  static const char *const texts[] = {
      "A", "", " ", "a red ball moving left", "  two\tspaces  \n", "\xef\xbc\xa1\xe2\x80\x9cquoted\xe2\x80\x9d",
      "\xff\xfe bad utf-8 \xc3", "<pad></s><unk>", "\x01", "\x01\x01 \x7f",
  };
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) encode_checked(ctx, tok, texts[i]);
  mr_tokenizer_free(tok);
  return 0;
}
