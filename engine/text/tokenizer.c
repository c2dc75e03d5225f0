/* The public tokenizer object: a parsed spiece.model, its normalizer and its
   unigram segmenter, plus Wan's text path (clean, encode, EOS, pad). */
#include "text/text_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mr_tokenizer {
  mr_ctx *ctx;
  mr_spm_model model;
  mr_spm_unigram unigram;
  mr_spm_trie *user_defined; /* NULL when the model has no user-defined pieces */
  mr_spm_normalizer normalizer;
  int32_t eos_id, pad_id;
};

static bool is_user_defined(mr_spm_piece_type t) { return t == SPM_USER_DEFINED; }

static const char *model_type_name(int t) {
  switch (t) {
  case SPM_MODEL_BPE: return "BPE";
  case SPM_MODEL_WORD: return "word";
  case SPM_MODEL_CHAR: return "char";
  default: return "unknown";
  }
}

static mr_status read_file(mr_ctx *ctx, const char *path, uint8_t **buf, size_t *len) {
  *buf = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return mr_error(ctx, MR_EIO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 20, n = 0;
  uint8_t *p = malloc(cap);
  while (p) {
    n += fread(p + n, 1, cap - n, f);
    if (n < cap) break;
    uint8_t *q = realloc(p, cap * 2);
    if (!q) {
      free(p);
      p = NULL;
      break;
    }
    p = q;
    cap *= 2;
  }
  bool err = ferror(f);
  fclose(f);
  if (!p) return mr_error(ctx, MR_ENOMEM, "%s: out of memory reading the file", path);
  if (err) {
    free(p);
    return mr_error(ctx, MR_EIO, "%s: read error", path);
  }
  *buf = p;
  *len = n;
  return MR_OK;
}

/* The id sentencepiece reports for a special piece: its id if it is a
   control piece, else -1. */
static int32_t control_id(const mr_tokenizer *tok, const char *name) {
  int32_t id = mr_spm_unigram_find(&tok->unigram, name, strlen(name));
  return id >= 0 && tok->model.pieces[id].type == SPM_CONTROL ? id : -1;
}

mr_status mr_tokenizer_load(mr_ctx *ctx, const char *path, mr_tokenizer **out) {
  if (!out) return mr_error(ctx, MR_EINVAL, "mr_tokenizer_load: out is NULL");
  *out = NULL;
  if (!path) return mr_error(ctx, MR_EINVAL, "mr_tokenizer_load: path is NULL");
  uint8_t *buf;
  size_t len = 0;
  mr_status st = read_file(ctx, path, &buf, &len);
  if (st != MR_OK) return st;
  mr_tokenizer *tok = calloc(1, sizeof *tok);
  if (!tok) {
    free(buf);
    return mr_error(ctx, MR_ENOMEM, "%s: out of memory", path);
  }
  tok->ctx = ctx;
  st = mr_spm_model_parse(ctx, path, buf, len, &tok->model);
  free(buf); /* the model keeps copies of what it needs */
  if (st != MR_OK) {
    free(tok);
    return st;
  }
  if (tok->model.model_type != SPM_MODEL_UNIGRAM) {
    st = mr_error(ctx, MR_EUNSUPPORTED, "%s: %s model (type %d): only unigram SentencePiece models are supported",
                  path, model_type_name(tok->model.model_type), tok->model.model_type);
    goto fail;
  }
  if ((st = mr_spm_unigram_init(ctx, path, &tok->model, &tok->unigram)) != MR_OK) goto fail;
  bool any_user = false;
  for (int i = 0; i < tok->model.n_pieces && !any_user; i++) any_user = tok->model.pieces[i].type == SPM_USER_DEFINED;
  if (any_user && (st = mr_spm_trie_build(ctx, path, &tok->model, is_user_defined, &tok->user_defined)) != MR_OK) goto fail;
  if ((st = mr_spm_normalizer_init(ctx, path, &tok->model, tok->user_defined, &tok->normalizer)) != MR_OK) goto fail;
  tok->eos_id = control_id(tok, tok->model.eos_piece);
  tok->pad_id = control_id(tok, tok->model.pad_piece);
  *out = tok;
  return MR_OK;
fail:
  mr_tokenizer_free(tok);
  return st;
}

void mr_tokenizer_free(mr_tokenizer *tok) {
  if (!tok) return;
  mr_spm_normalizer_release(&tok->normalizer);
  mr_spm_trie_free(tok->user_defined);
  mr_spm_unigram_release(&tok->unigram);
  mr_spm_model_release(&tok->model);
  free(tok);
}

int mr_tokenizer_vocab_size(const mr_tokenizer *tok) { return tok ? tok->model.n_pieces : 0; }

const char *mr_tokenizer_piece(const mr_tokenizer *tok, int32_t id) {
  if (!tok || id < 0 || id >= tok->model.n_pieces) return NULL;
  return tok->model.pieces[id].text;
}

int32_t mr_tokenizer_eos_id(const mr_tokenizer *tok) { return tok ? tok->eos_id : -1; }
int32_t mr_tokenizer_pad_id(const mr_tokenizer *tok) { return tok ? tok->pad_id : -1; }
int32_t mr_tokenizer_unk_id(const mr_tokenizer *tok) { return tok ? tok->unigram.unk_id : -1; }

/* Normalizes and segments; ids->p is the caller's to free. */
static mr_status encode_ids(mr_tokenizer *tok, const char *text, size_t len, mr_spm_ids *ids) {
  mr_spm_bytes norm = {0};
  bool ok = mr_spm_normalize(&tok->normalizer, text, len, &norm) && mr_spm_unigram_encode(&tok->unigram, norm.p, norm.len, ids);
  free(norm.p);
  if (!ok) return mr_error(tok->ctx, MR_ENOMEM, "tokenizer: out of memory encoding %zu bytes of text", len);
  if (ids->len > INT32_MAX) return mr_error(tok->ctx, MR_EINVAL, "tokenizer: text too long (%zu ids)", ids->len);
  return MR_OK;
}

mr_status mr_tokenizer_encode(mr_tokenizer *tok, const char *text, int32_t *ids, int cap, int *n) {
  if (n) *n = 0;
  if (!tok || !text || !n || cap < 0 || (cap > 0 && !ids))
    return mr_error(tok ? tok->ctx : NULL, MR_EINVAL, "mr_tokenizer_encode: %s",
                    !tok ? "tok is NULL" : !text ? "text is NULL" : !n ? "n is NULL" : "ids is NULL or cap < 0");
  mr_spm_ids v = {0};
  mr_status st = encode_ids(tok, text, strlen(text), &v);
  if (st == MR_OK) {
    size_t w = v.len < (size_t)cap ? v.len : (size_t)cap;
    if (w) memcpy(ids, v.p, w * sizeof *ids);
    *n = (int)v.len;
  }
  free(v.p);
  return st;
}

mr_status mr_tokenizer_encode_wan(mr_tokenizer *tok, const char *prompt, int text_len, int32_t *ids,
                                  int32_t *n_tokens) {
  if (n_tokens) *n_tokens = 0;
  if (!tok || !prompt || !ids || !n_tokens || text_len < 1)
    return mr_error(tok ? tok->ctx : NULL, MR_EINVAL, "mr_tokenizer_encode_wan: %s",
                    !tok ? "tok is NULL" : !prompt ? "prompt is NULL" : !ids ? "ids is NULL"
                    : !n_tokens ? "n_tokens is NULL" : "text_len < 1");
  if (tok->eos_id < 0 || tok->pad_id < 0)
    return mr_error(tok->ctx, MR_EUNSUPPORTED, "tokenizer: the model has no %s control piece",
                    tok->eos_id < 0 ? tok->model.eos_piece : tok->model.pad_piece);
  mr_spm_bytes clean = {0};
  if (!mr_wan_prompt_clean(prompt, &clean)) {
    free(clean.p);
    return mr_error(tok->ctx, MR_ENOMEM, "tokenizer: out of memory cleaning the prompt");
  }
  mr_spm_ids v = {0};
  mr_status st = encode_ids(tok, clean.p ? clean.p : "", clean.len, &v);
  free(clean.p);
  if (st == MR_OK) {
    /* HF truncation keeps room for the EOS it appends: at most text_len - 1
       text ids, then EOS, then padding. */
    size_t keep = v.len < (size_t)text_len - 1 ? v.len : (size_t)text_len - 1;
    if (keep) memcpy(ids, v.p, keep * sizeof *ids);
    ids[keep] = tok->eos_id;
    for (size_t i = keep + 1; i < (size_t)text_len; i++) ids[i] = tok->pad_id;
    *n_tokens = (int32_t)(keep + 1);
  }
  free(v.p);
  return st;
}
