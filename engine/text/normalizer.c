/* SentencePiece text normalization.

   The model carries its Unicode normalization (nmt_nfkc for umT5) compiled
   into `precompiled_charsmap`: a little-endian uint32 byte count, a
   darts-clone double-array trie of that many bytes, then a pool of
   NUL-terminated replacement strings. At each input position the longest key
   of the trie that prefixes the input is replaced by its pool string; where
   nothing matches, one UTF-8 character is copied (or U+FFFD for a malformed
   byte). Whitespace handling follows: drop leading, repeated and trailing
   spaces, add the dummy prefix, and write spaces as U+2581. */
#include "text/text_impl.h"

#include <stdlib.h>
#include <string.h>

static const char kSpaceSymbol[] = "\xe2\x96\x81"; /* U+2581 LOWER ONE EIGHTH BLOCK */
static const char kReplacement[] = "\xef\xbf\xbd"; /* U+FFFD */

/* ---- darts-clone units: bit 8 = a leaf hangs below, low 8 bits (+bit 31)
   = label, bits 10.. (shifted 8 more when bit 9 is set) = offset to children.
   A leaf unit holds the value in its low 31 bits. */

static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t unit_value(uint32_t u) { return u & 0x7fffffffu; }
static uint32_t unit_label(uint32_t u) { return u & (0x80000000u | 0xffu); }

/* Longest trie key that prefixes s[0..n): returns its length, 0 if none.
   Every index is checked, since the array comes from a file. */
static size_t charsmap_longest(const mr_spm_normalizer *nz, const char *s, size_t n, uint32_t *value) {
  size_t best = 0;
  uint32_t id = unit_offset(nz->units[0]);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    id ^= c;
    if (id >= nz->n_units) break;
    uint32_t u = nz->units[id];
    if (unit_label(u) != c) break;
    id ^= unit_offset(u);
    if (id >= nz->n_units) break;
    if (unit_has_leaf(u)) {
      best = i + 1;
      *value = unit_value(nz->units[id]);
    }
  }
  return best;
}

mr_status mr_spm_normalizer_init(mr_ctx *ctx, const char *what, const mr_spm_model *m, const mr_spm_trie *user_defined,
                              mr_spm_normalizer *nz) {
  memset(nz, 0, sizeof *nz);
  nz->model = m;
  nz->user_defined = user_defined;
  nz->add_dummy_prefix = m->add_dummy_prefix;
  nz->remove_extra_whitespaces = m->remove_extra_whitespaces;
  nz->escape_whitespaces = m->escape_whitespaces;
  nz->ws_as_suffix = m->treat_whitespace_as_suffix;
  if (!m->charsmap) return MR_OK; /* identity normalization */

  const uint8_t *b = m->charsmap;
  if (m->charsmap_len <= 4)
    return mr_error(ctx, MR_EFORMAT, "%s: precompiled_charsmap is broken (%zu bytes)", what, m->charsmap_len);
  uint32_t trie_size = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  if ((size_t)trie_size >= m->charsmap_len - 4 || trie_size < 4 || trie_size % 4)
    return mr_error(ctx, MR_EFORMAT, "%s: precompiled_charsmap trie size %u does not fit its %zu bytes", what,
                    trie_size, m->charsmap_len);
  nz->n_units = trie_size / 4;
  nz->units_owned = malloc(trie_size);
  if (!nz->units_owned) return mr_error(ctx, MR_ENOMEM, "%s: out of memory for the charsmap", what);
  /* copied out so the units are aligned and in host order */
  for (size_t i = 0; i < nz->n_units; i++) {
    const uint8_t *p = b + 4 + 4 * i;
    nz->units_owned[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  }
  nz->units = nz->units_owned;
  nz->pool = (const char *)b + 4 + trie_size;
  nz->pool_len = m->charsmap_len - 4 - trie_size;
  if (nz->pool[nz->pool_len - 1] != '\0') {
    mr_spm_normalizer_release(nz);
    return mr_error(ctx, MR_EFORMAT, "%s: precompiled_charsmap strings are not NUL-terminated", what);
  }
  return MR_OK;
}

void mr_spm_normalizer_release(mr_spm_normalizer *nz) {
  free(nz->units_owned);
  memset(nz, 0, sizeof *nz);
}

/* The normalized text of the longest rule at s, and how many input bytes it
   consumes (SentencePiece's NormalizePrefix). */
static size_t normalize_prefix(const mr_spm_normalizer *nz, const char *s, size_t n, const char **out, size_t *out_len) {
  if (nz->user_defined) {
    size_t k = mr_spm_trie_longest_prefix(nz->user_defined, s, n);
    if (k) {
      *out = s;
      *out_len = k;
      return k;
    }
  }
  if (nz->units) {
    uint32_t value = 0;
    size_t k = charsmap_longest(nz, s, n, &value);
    if (k && value < nz->pool_len) { /* the pool ends with a NUL, so strlen stays inside */
      *out = nz->pool + value;
      *out_len = strlen(*out);
      return k;
    }
  }
  uint32_t cp;
  int k = mr_spm_utf8_decode(s, n, &cp);
  if (k == 0) {
    /* a malformed byte becomes U+FFFD and only that byte is consumed */
    *out = kReplacement;
    *out_len = 3;
    return 1;
  }
  *out = s;
  *out_len = (size_t)k;
  return (size_t)k;
}

static bool add_ws(const mr_spm_normalizer *nz, mr_spm_bytes *out) {
  return nz->escape_whitespaces ? mr_spm_bytes_append(out, kSpaceSymbol, 3) : mr_spm_bytes_append(out, " ", 1);
}

bool mr_spm_normalize(const mr_spm_normalizer *nz, const char *text, size_t len, mr_spm_bytes *out) {
  size_t base = out->len;
  const char *s = text, *end = text + len;
  const char *piece;
  size_t piece_len;
  if (nz->remove_extra_whitespaces) {
    while (s < end) {
      size_t k = normalize_prefix(nz, s, (size_t)(end - s), &piece, &piece_len);
      if (!(piece_len == 1 && piece[0] == ' ')) break;
      s += k;
    }
  }
  if (s == end) return mr_spm_bytes_append(out, "", 0);

  if (!nz->ws_as_suffix && nz->add_dummy_prefix && !add_ws(nz, out)) return false;
  bool prev_space = nz->remove_extra_whitespaces;
  while (s < end) {
    size_t k = normalize_prefix(nz, s, (size_t)(end - s), &piece, &piece_len);
    /* a rule's leading spaces are dropped after a space */
    while (prev_space && piece_len && piece[0] == ' ') {
      piece++;
      piece_len--;
    }
    if (piece_len) {
      size_t run = 0; /* copy runs without spaces in one append */
      for (size_t i = 0; i < piece_len; i++) {
        if (nz->escape_whitespaces && piece[i] == ' ') {
          if (!mr_spm_bytes_append(out, piece + run, i - run) || !mr_spm_bytes_append(out, kSpaceSymbol, 3)) return false;
          run = i + 1;
        }
      }
      if (!mr_spm_bytes_append(out, piece + run, piece_len - run)) return false;
      prev_space = piece[piece_len - 1] == ' ';
    }
    s += k;
    if (!nz->remove_extra_whitespaces) prev_space = false;
  }
  if (nz->remove_extra_whitespaces) {
    const char *sp = nz->escape_whitespaces ? kSpaceSymbol : " ";
    size_t sl = nz->escape_whitespaces ? 3 : 1;
    while (out->len - base >= sl && memcmp(out->p + out->len - sl, sp, sl) == 0) out->len -= sl;
    /* through append: out has no buffer yet when every piece was empty */
    if (!mr_spm_bytes_append(out, "", 0)) return false;
  }
  if (nz->ws_as_suffix && nz->add_dummy_prefix && !add_ws(nz, out)) return false;
  return true;
}
