/* Reads a SentencePiece model file (a serialized ModelProto) with a minimal
   protobuf wire-format reader. Only the fields the encoder needs are kept;
   everything else is skipped by wire type, so newer files with extra fields
   still load. Field numbers follow sentencepiece_model.proto. */
#include "text/text_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---- wire format */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct pb {
  const uint8_t *p, *end;
  const char *err; /* first problem met; parsing stops there */
} pb;

static bool pb_varint(pb *r, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) {
      r->err = "truncated varint";
      return false;
    }
    uint8_t b = *r->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return true;
    }
  }
  r->err = "varint longer than 10 bytes";
  return false;
}

/* Reads the next tag; false at the end of the message or on error (r->err). */
static bool pb_tag(pb *r, uint32_t *field, int *wt) {
  if (r->err || r->p >= r->end) return false;
  uint64_t tag;
  if (!pb_varint(r, &tag)) return false;
  *field = (uint32_t)(tag >> 3);
  *wt = (int)(tag & 7);
  if (*field == 0) {
    r->err = "field number 0";
    return false;
  }
  return true;
}

static bool pb_len(pb *r, pb *sub) {
  uint64_t n;
  if (!pb_varint(r, &n)) return false;
  if (n > (uint64_t)(r->end - r->p)) {
    r->err = "truncated length-delimited field";
    return false;
  }
  sub->p = r->p;
  sub->end = r->p + n;
  sub->err = NULL;
  r->p += n;
  return true;
}

static bool pb_fixed32(pb *r, uint32_t *v) {
  if (r->end - r->p < 4) {
    r->err = "truncated fixed32 field";
    return false;
  }
  *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
  r->p += 4;
  return true;
}

static bool pb_skip(pb *r, int wt) {
  uint64_t v;
  pb sub;
  switch (wt) {
  case WT_VARINT: return pb_varint(r, &v);
  case WT_LEN: return pb_len(r, &sub);
  case WT_I32:
  case WT_I64:
    if (r->end - r->p < (wt == WT_I32 ? 4 : 8)) {
      r->err = "truncated fixed-size field";
      return false;
    }
    r->p += wt == WT_I32 ? 4 : 8;
    return true;
  default: r->err = "unsupported wire type (groups are not used by ModelProto)"; return false;
  }
}

/* A field read with the wrong wire type means a damaged or foreign file. */
static bool pb_expect(pb *r, int wt, int want) {
  if (wt == want) return true;
  r->err = "field has an unexpected wire type";
  return false;
}

static bool pb_bool(pb *r, int wt, bool *out) {
  uint64_t v;
  if (!pb_expect(r, wt, WT_VARINT) || !pb_varint(r, &v)) return false;
  *out = v != 0;
  return true;
}

static bool pb_int32(pb *r, int wt, int32_t *out) {
  uint64_t v;
  if (!pb_expect(r, wt, WT_VARINT) || !pb_varint(r, &v)) return false;
  *out = (int32_t)(uint32_t)v; /* int32 negatives are sign-extended to 64 bits */
  return true;
}

/* ---- string arena: piece texts stay put while the arena grows, so we store
   offsets while parsing and turn them into pointers at the end. */

typedef struct arena {
  char *p;
  size_t len, cap;
} arena;

static bool arena_add(arena *a, const uint8_t *s, size_t n, size_t *off) {
  if (a->len + n + 1 > a->cap) {
    size_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + n + 1) cap *= 2;
    char *p = realloc(a->p, cap);
    if (!p) return false;
    a->p = p;
    a->cap = cap;
  }
  *off = a->len;
  if (n) memcpy(a->p + a->len, s, n);
  a->p[a->len + n] = '\0';
  a->len += n + 1;
  return true;
}

typedef struct parse_state {
  mr_spm_model *m;
  arena strings;
  size_t *text_off;  /* per piece */
  int cap_pieces;
  size_t special_off[4]; /* unk, bos, eos, pad names; SIZE_MAX = default */
} parse_state;

static bool parse_piece(pb *r, parse_state *st) {
  mr_spm_model *m = st->m;
  if (m->n_pieces == st->cap_pieces) {
    int cap = st->cap_pieces ? st->cap_pieces * 2 : 1024;
    mr_spm_piece *p = realloc(m->pieces, (size_t)cap * sizeof *p);
    if (!p) return false;
    m->pieces = p;
    size_t *o = realloc(st->text_off, (size_t)cap * sizeof *o);
    if (!o) return false;
    st->text_off = o;
    st->cap_pieces = cap;
  }
  mr_spm_piece *pc = &m->pieces[m->n_pieces];
  pc->score = 0.0f;
  pc->type = SPM_NORMAL;
  pc->len = 0;
  size_t off = SIZE_MAX;
  uint32_t field;
  int wt;
  while (pb_tag(r, &field, &wt)) {
    if (field == 1) { /* piece */
      pb s;
      if (!pb_expect(r, wt, WT_LEN) || !pb_len(r, &s)) return false;
      if (memchr(s.p, 0, (size_t)(s.end - s.p))) {
        r->err = "piece text contains a NUL byte";
        return false;
      }
      if (!arena_add(&st->strings, s.p, (size_t)(s.end - s.p), &off)) return false;
      pc->len = (uint32_t)(s.end - s.p);
    } else if (field == 2) { /* score */
      uint32_t bits;
      if (!pb_expect(r, wt, WT_I32) || !pb_fixed32(r, &bits)) return false;
      memcpy(&pc->score, &bits, sizeof bits);
    } else if (field == 3) { /* type */
      int32_t t;
      if (!pb_int32(r, wt, &t)) return false;
      if (t < SPM_NORMAL || t > SPM_BYTE) {
        r->err = "piece has an unknown type";
        return false;
      }
      pc->type = (mr_spm_piece_type)t;
    } else if (!pb_skip(r, wt)) {
      return false;
    }
  }
  if (r->err) return false;
  if (off == SIZE_MAX || pc->len == 0) {
    r->err = "empty piece";
    return false;
  }
  st->text_off[m->n_pieces++] = off;
  return true;
}

static bool parse_trainer(pb *r, parse_state *st) {
  mr_spm_model *m = st->m;
  uint32_t field;
  int wt;
  while (pb_tag(r, &field, &wt)) {
    int32_t v;
    bool ok;
    switch (field) {
    case 3: /* model_type */
      if (!(ok = pb_int32(r, wt, &v))) return false;
      m->model_type = v;
      break;
    case 24: ok = pb_bool(r, wt, &m->treat_whitespace_as_suffix); break;
    case 35: ok = pb_bool(r, wt, &m->byte_fallback); break;
    case 45: case 46: case 47: case 48: { /* unk, bos, eos, pad piece names */
      pb s;
      ok = pb_expect(r, wt, WT_LEN) && pb_len(r, &s);
      if (ok && !arena_add(&st->strings, s.p, (size_t)(s.end - s.p), &st->special_off[field - 45]))
        return false;
      break;
    }
    default: ok = pb_skip(r, wt); break;
    }
    if (!ok) return false;
  }
  return r->err == NULL;
}

static bool parse_normalizer(pb *r, mr_spm_model *m) {
  uint32_t field;
  int wt;
  while (pb_tag(r, &field, &wt)) {
    bool ok;
    pb s;
    switch (field) {
    case 1: /* name */
      ok = pb_expect(r, wt, WT_LEN) && pb_len(r, &s);
      if (ok) {
        size_t n = (size_t)(s.end - s.p);
        if (n >= sizeof m->name) n = sizeof m->name - 1;
        memcpy(m->name, s.p, n);
        m->name[n] = '\0';
      }
      break;
    case 2: /* precompiled_charsmap */
      ok = pb_expect(r, wt, WT_LEN) && pb_len(r, &s);
      if (ok) {
        free(m->charsmap);
        m->charsmap = NULL;
        m->charsmap_len = (size_t)(s.end - s.p);
        if (m->charsmap_len) {
          if (!(m->charsmap = malloc(m->charsmap_len))) return false;
          memcpy(m->charsmap, s.p, m->charsmap_len);
        }
      }
      break;
    case 3: ok = pb_bool(r, wt, &m->add_dummy_prefix); break;
    case 4: ok = pb_bool(r, wt, &m->remove_extra_whitespaces); break;
    case 5: ok = pb_bool(r, wt, &m->escape_whitespaces); break;
    default: ok = pb_skip(r, wt); break;
    }
    if (!ok) return false;
  }
  return r->err == NULL;
}

static const char *const special_default[4] = {"<unk>", "<s>", "</s>", "<pad>"};

mr_status mr_spm_model_parse(mr_ctx *ctx, const char *what, const uint8_t *buf, size_t len, mr_spm_model *m) {
  memset(m, 0, sizeof *m);
  /* proto2 defaults */
  m->model_type = SPM_MODEL_UNIGRAM;
  m->add_dummy_prefix = m->remove_extra_whitespaces = m->escape_whitespaces = true;
  parse_state st = {.m = m};
  for (int i = 0; i < 4; i++) st.special_off[i] = SIZE_MAX;

  pb r = {buf, buf + len, NULL};
  bool oom = false;
  uint32_t field;
  int wt;
  while (!oom && pb_tag(&r, &field, &wt)) {
    pb sub;
    if (field >= 1 && field <= 3) {
      if (!pb_expect(&r, wt, WT_LEN) || !pb_len(&r, &sub)) break;
      bool ok = field == 1 ? parse_piece(&sub, &st) : field == 2 ? parse_trainer(&sub, &st) : parse_normalizer(&sub, m);
      if (!ok) {
        if (sub.err) r.err = sub.err;
        else oom = true;
      }
    } else if (!pb_skip(&r, wt)) {
      break;
    }
  }
  mr_status st_out = MR_OK;
  if (oom) st_out = mr_error(ctx, MR_ENOMEM, "%s: out of memory reading the model", what);
  else if (r.err)
    st_out = mr_error(ctx, MR_EFORMAT, "%s: not a SentencePiece model: %s at byte %zu", what, r.err,
                      (size_t)(r.p - buf));
  else if (m->n_pieces == 0)
    st_out = mr_error(ctx, MR_EFORMAT, "%s: not a SentencePiece model: no pieces", what);
  if (st_out == MR_OK) {
    /* special names default when the file leaves them out */
    size_t def_off[4];
    for (int i = 0; i < 4 && st_out == MR_OK; i++) {
      if (st.special_off[i] != SIZE_MAX) continue;
      if (!arena_add(&st.strings, (const uint8_t *)special_default[i], strlen(special_default[i]), &def_off[i]))
        st_out = mr_error(ctx, MR_ENOMEM, "%s: out of memory reading the model", what);
      else st.special_off[i] = def_off[i];
    }
  }
  if (st_out != MR_OK) {
    free(st.text_off);
    free(st.strings.p);
    m->strings = NULL;
    mr_spm_model_release(m);
    return st_out;
  }
  m->strings = st.strings.p;
  for (int i = 0; i < m->n_pieces; i++) m->pieces[i].text = m->strings + st.text_off[i];
  m->unk_piece = m->strings + st.special_off[0];
  m->bos_piece = m->strings + st.special_off[1];
  m->eos_piece = m->strings + st.special_off[2];
  m->pad_piece = m->strings + st.special_off[3];
  free(st.text_off);
  return MR_OK;
}

void mr_spm_model_release(mr_spm_model *m) {
  free(m->pieces);
  free(m->strings);
  free(m->charsmap);
  memset(m, 0, sizeof *m);
}
