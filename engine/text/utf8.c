/* UTF-8 helpers and the growable buffers the text code builds its output in. */
#include "text/text_impl.h"

#include <stdlib.h>
#include <string.h>

int mr_spm_utf8_char_len(unsigned char lead) {
  /* SentencePiece's table, indexed by the high nibble: it steps over a
     stray continuation byte as one character rather than failing. */
  static const unsigned char len_of_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return len_of_nibble[lead >> 4];
}

static bool is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }

static bool is_valid_codepoint(uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

int mr_spm_utf8_decode(const char *str, size_t n, uint32_t *cp) {
  const unsigned char *s = (const unsigned char *)str;
  if (n == 0) return 0;
  if (s[0] < 0x80) {
    *cp = s[0];
    return 1;
  }
  uint32_t c;
  if (n >= 2 && (s[0] & 0xE0) == 0xC0) {
    c = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    if (is_trail(s[1]) && c >= 0x80) {
      *cp = c;
      return 2;
    }
  } else if (n >= 3 && (s[0] & 0xF0) == 0xE0) {
    c = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    if (is_trail(s[1]) && is_trail(s[2]) && c >= 0x800 && is_valid_codepoint(c)) {
      *cp = c;
      return 3;
    }
  } else if (n >= 4 && (s[0] & 0xF8) == 0xF0) {
    c = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 |
        (s[3] & 0x3F);
    if (is_trail(s[1]) && is_trail(s[2]) && is_trail(s[3]) && c >= 0x10000 && is_valid_codepoint(c)) {
      *cp = c;
      return 4;
    }
  }
  return 0;
}

int mr_spm_utf8_encode(uint32_t cp, char *out) {
  unsigned char *o = (unsigned char *)out;
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | cp >> 6);
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | cp >> 12);
    o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | cp >> 18);
  o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

bool mr_spm_bytes_append(mr_spm_bytes *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0'; /* always a C string, for callers that want one */
  return true;
}

bool mr_spm_ids_push(mr_spm_ids *v, int32_t id) {
  if (v->len == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    int32_t *p = realloc(v->p, cap * sizeof *p);
    if (!p) return false;
    v->p = p;
    v->cap = cap;
  }
  v->p[v->len++] = id;
  return true;
}
