/* Internals of the SentencePiece tokenizer, shared by the files of engine/text:
   spiece_model.c reads the protobuf, normalizer.c turns raw text into the
   string the model segments, unigram.c segments it, tokenizer.c is the
   public object and Wan's text path, prompt_clean.c is Wan's prompt cleaning. */
#ifndef MR_TEXT_IMPL_H
#define MR_TEXT_IMPL_H

#include "core/core.h"

/* ---- model file (spiece_model.c) */

/* ModelProto.SentencePiece.Type; the numbers are the protobuf's. */
typedef enum mr_spm_piece_type {
  SPM_NORMAL = 1,
  SPM_UNKNOWN = 2,
  SPM_CONTROL = 3,
  SPM_USER_DEFINED = 4,
  SPM_UNUSED = 5,
  SPM_BYTE = 6,
} mr_spm_piece_type;

/* TrainerSpec.ModelType. */
enum { SPM_MODEL_UNIGRAM = 1, SPM_MODEL_BPE = 2, SPM_MODEL_WORD = 3, SPM_MODEL_CHAR = 4 };

typedef struct mr_spm_piece {
  const char *text; /* NUL-terminated, in mr_spm_model.strings */
  uint32_t len;     /* bytes, without the NUL */
  float score;
  mr_spm_piece_type type;
} mr_spm_piece;

typedef struct mr_spm_model {
  mr_spm_piece *pieces;
  int n_pieces;
  char *strings;                /* every piece text and the special-piece names */

  /* trainer_spec */
  int model_type;
  bool byte_fallback;
  bool treat_whitespace_as_suffix;
  const char *unk_piece, *bos_piece, *eos_piece, *pad_piece; /* in strings */

  /* normalizer_spec */
  char name[64];                /* "nmt_nfkc", "identity", ... (truncated if longer) */
  uint8_t *charsmap;            /* precompiled_charsmap bytes (own copy), NULL if empty */
  size_t charsmap_len;
  bool add_dummy_prefix;
  bool remove_extra_whitespaces;
  bool escape_whitespaces;
} mr_spm_model;

/* Parses a serialized ModelProto. `what` names the source in error messages. */
mr_status mr_spm_model_parse(mr_ctx *ctx, const char *what, const uint8_t *buf, size_t len, mr_spm_model *m);
void mr_spm_model_release(mr_spm_model *m);

/* ---- growable byte and id buffers */

typedef struct mr_spm_bytes {
  char *p;
  size_t len, cap;
} mr_spm_bytes;

typedef struct mr_spm_ids {
  int32_t *p;
  size_t len, cap;
} mr_spm_ids;

bool mr_spm_bytes_append(mr_spm_bytes *b, const char *s, size_t n);
bool mr_spm_ids_push(mr_spm_ids *v, int32_t id);

/* Length of the UTF-8 sequence a lead byte announces, as SentencePiece
   counts it: continuation and invalid lead bytes count 1, 0xF8..0xFF count 4. */
int mr_spm_utf8_char_len(unsigned char lead);
/* Decodes one well-formed UTF-8 character (no overlongs, no surrogates,
   <= U+10FFFF) of at most n bytes; returns its length, or 0 if malformed. */
int mr_spm_utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
int mr_spm_utf8_encode(uint32_t cp, char *out);

/* ---- normalizer (normalizer.c) */

typedef struct mr_spm_normalizer {
  const uint32_t *units;   /* darts-clone double array, host order; NULL = identity */
  size_t n_units;
  const char *pool;        /* NUL-terminated replacement strings */
  size_t pool_len;
  uint32_t *units_owned;
  /* user-defined pieces pass through normalization untouched */
  const mr_spm_model *model;
  const struct mr_spm_trie *user_defined; /* NULL if the model has none */
  bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces, ws_as_suffix;
} mr_spm_normalizer;

mr_status mr_spm_normalizer_init(mr_ctx *ctx, const char *what, const mr_spm_model *m,
                              const struct mr_spm_trie *user_defined, mr_spm_normalizer *nz);
void mr_spm_normalizer_release(mr_spm_normalizer *nz);
/* Appends the normalized form of text[0..len) to out. False on out of memory. */
bool mr_spm_normalize(const mr_spm_normalizer *nz, const char *text, size_t len, mr_spm_bytes *out);

/* ---- piece trie and unigram segmentation (unigram.c) */

typedef struct mr_spm_trie mr_spm_trie;

/* A byte trie over the pieces whose type passes `keep`; values are piece ids.
   A piece text that appears twice is a format error naming `what`. */
mr_status mr_spm_trie_build(mr_ctx *ctx, const char *what, const mr_spm_model *m, bool (*keep)(mr_spm_piece_type),
                         mr_spm_trie **out);
void mr_spm_trie_free(mr_spm_trie *t);
/* Longest piece that is a prefix of s[0..n); returns its length (0 = none). */
size_t mr_spm_trie_longest_prefix(const mr_spm_trie *t, const char *s, size_t n);

typedef struct mr_spm_unigram {
  const mr_spm_model *model;
  mr_spm_trie *trie;       /* NORMAL, USER_DEFINED and UNUSED pieces, as the library builds it */
  int32_t unk_id;
  float min_score, max_score;
  float unk_score;      /* min_score - 10: what an unknown character costs */
  int32_t byte_id[256]; /* <0xNN> piece per byte (unk_id where absent) */
} mr_spm_unigram;

mr_status mr_spm_unigram_init(mr_ctx *ctx, const char *what, const mr_spm_model *m, mr_spm_unigram *u);
void mr_spm_unigram_release(mr_spm_unigram *u);
/* Viterbi segmentation of a normalized string, then the processor's
   post-processing (byte fallback or merging runs of unknowns). Appends ids. */
bool mr_spm_unigram_encode(const mr_spm_unigram *u, const char *s, size_t n, mr_spm_ids *out);
/* Piece id of text, or -1. */
int32_t mr_spm_unigram_find(const mr_spm_unigram *u, const char *text, size_t len);

/* ---- Wan prompt cleaning (prompt_clean.c) */

/* Wan's 'whitespace' clean: the subset of ftfy.fix_text that changes
   well-formed text (curly quotes), html.unescape twice, strip, collapse each
   whitespace run to one space, strip. Appends to out. */
bool mr_wan_prompt_clean(const char *prompt, mr_spm_bytes *out);

#endif
