/* Wan's prompt cleaning ('whitespace' mode of its HuggingfaceTokenizer):
     ftfy.fix_text -> html.unescape -> html.unescape -> strip
     -> every run of whitespace (Python's \s) becomes one space -> strip.
   ftfy has no C equivalent. We keep the parts of it that change well-formed
   text and that umT5's own NFKC normalization would not undo: decoding of
   HTML entities (ftfy's own pass, repeated to a fixed point, skipped from the
   first line that holds a '<'), C1 controls read as Windows-1252, curly
   quotes straightened, control characters removed. Mojibake repair is not
   attempted. The entity table covers HTML 4's names (Latin-1, typography,
   arrows, a few symbols); other names are left as written. Input is UTF-8;
   malformed bytes pass through. */
#include "text/text_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---- entities */

/* Latin-1 names, U+00A0 onward in order. HTML5 also accepts these without the
   final ';' (the "legacy" names), which Python's html.unescape honours. */
static const char *const latin1_names[96] = {
  "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf", "laquo",
  "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro", "para", "middot",
  "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",
  "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute", "Ecirc", "Euml", "Igrave", "Iacute",
  "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute", "Ocirc", "Otilde", "Ouml", "times", "Oslash",
  "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute", "THORN", "szlig", "agrave", "aacute", "acirc", "atilde",
  "auml", "aring", "aelig", "ccedil", "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc",
  "iuml", "eth", "ntilde", "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave",
  "uacute", "ucirc", "uuml", "yacute", "thorn", "yuml",
};

typedef struct named_entity {
  const char *name;
  uint32_t cp;
  bool legacy; /* also recognised without ';' */
} named_entity;

static const named_entity other_entities[] = {
  {"amp", '&', true}, {"lt", '<', true}, {"gt", '>', true}, {"quot", '"', true},
  {"AMP", '&', true}, {"LT", '<', true}, {"GT", '>', true}, {"QUOT", '"', true},
  {"COPY", 0xA9, true}, {"REG", 0xAE, true}, {"apos", '\'', false},
  {"OElig", 0x152, false}, {"oelig", 0x153, false}, {"Scaron", 0x160, false}, {"scaron", 0x161, false},
  {"Yuml", 0x178, false}, {"fnof", 0x192, false}, {"circ", 0x2C6, false}, {"tilde", 0x2DC, false},
  {"ensp", 0x2002, false}, {"emsp", 0x2003, false}, {"thinsp", 0x2009, false}, {"zwnj", 0x200C, false},
  {"zwj", 0x200D, false}, {"lrm", 0x200E, false}, {"rlm", 0x200F, false}, {"ndash", 0x2013, false},
  {"mdash", 0x2014, false}, {"lsquo", 0x2018, false}, {"rsquo", 0x2019, false}, {"sbquo", 0x201A, false},
  {"ldquo", 0x201C, false}, {"rdquo", 0x201D, false}, {"bdquo", 0x201E, false}, {"dagger", 0x2020, false},
  {"Dagger", 0x2021, false}, {"bull", 0x2022, false}, {"hellip", 0x2026, false}, {"permil", 0x2030, false},
  {"prime", 0x2032, false}, {"Prime", 0x2033, false}, {"lsaquo", 0x2039, false}, {"rsaquo", 0x203A, false},
  {"euro", 0x20AC, false}, {"trade", 0x2122, false}, {"larr", 0x2190, false}, {"uarr", 0x2191, false},
  {"rarr", 0x2192, false}, {"darr", 0x2193, false}, {"harr", 0x2194, false}, {"minus", 0x2212, false},
  {"infin", 0x221E, false}, {"asymp", 0x2248, false}, {"ne", 0x2260, false}, {"le", 0x2264, false},
  {"ge", 0x2265, false}, {"spades", 0x2660, false}, {"clubs", 0x2663, false}, {"hearts", 0x2665, false},
  {"diams", 0x2666, false}, {"star", 0x2606, false}, {"starf", 0x2605, false}, {"check", 0x2713, false},
  {"Tab", '\t', false}, {"NewLine", '\n', false},
};

/* Windows-1252 for 0x80..0x9F: what html.unescape gives for &#128;..&#159;
   and what ftfy reads stray C1 controls as. 0 = undefined there, kept as is. */
static const uint16_t cp1252_c1[32] = {
  0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017D, 0,
  0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
};

/* Code point of name[0..n) (no ';'), or -1. with_semicolon: the text had one. */
static int64_t entity_lookup(const char *name, size_t n, bool with_semicolon) {
  for (int i = 0; i < 96; i++)
    if (strlen(latin1_names[i]) == n && memcmp(latin1_names[i], name, n) == 0) return 0xA0 + i;
  for (size_t i = 0; i < sizeof other_entities / sizeof other_entities[0]; i++) {
    const named_entity *e = &other_entities[i];
    if ((with_semicolon || e->legacy) && strlen(e->name) == n && memcmp(e->name, name, n) == 0) return e->cp;
  }
  return -1;
}

static bool put_cp(mr_spm_bytes *out, uint32_t cp) {
  char u[4];
  return mr_spm_bytes_append(out, u, (size_t)mr_spm_utf8_encode(cp, u));
}

/* What Python's html.unescape gives for numeric reference num (which may be
   saturated at a huge value); appends it. */
static bool put_numeric(mr_spm_bytes *out, uint64_t num) {
  if (num == 0) return put_cp(out, 0xFFFD);
  if (num == 0x0D) return put_cp(out, '\r');
  if (num >= 0x80 && num <= 0x9F) return put_cp(out, cp1252_c1[num - 0x80] ? cp1252_c1[num - 0x80] : (uint32_t)num);
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return put_cp(out, 0xFFFD);
  /* Python drops these "invalid code points" */
  if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) || (num >= 0x7F && num <= 0x9F) ||
      (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
    return true;
  return put_cp(out, (uint32_t)num);
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* One html.unescape pass over s[0..n), appended to out. ftfy_mode applies
   ftfy's narrower rule instead: only "&name;" / "&#...;" with 1..24 ASCII
   letters or digits, the ';' required. Returns false on out of memory. */
static bool unescape(const char *s, size_t n, bool ftfy_mode, mr_spm_bytes *out) {
  size_t i = 0, lit = 0; /* s[lit..i) is pending literal text */
  while (i < n) {
    if (s[i] != '&') {
      i++;
      continue;
    }
    size_t amp = i, j = i + 1;
    bool done = false;
    if (j < n && s[j] == '#') {
      bool hex = j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X');
      size_t d = j + 1 + hex, k = d;
      uint64_t num = 0;
      while (k < n && (hex ? hex_digit(s[k]) >= 0 : (s[k] >= '0' && s[k] <= '9'))) {
        num = num * (hex ? 16 : 10) + (uint64_t)(hex ? hex_digit(s[k]) : s[k] - '0');
        if (num > 0x7FFFFFFF) num = 0x7FFFFFFF; /* saturate: anything this big is U+FFFD */
        k++;
      }
      bool semi = k < n && s[k] == ';';
      /* ftfy keeps a reference whose result holds a ';' (only &#59; can) */
      if (k > d && (!ftfy_mode || (semi && k - (j + 1) <= 24 && num != ';'))) {
        if (!mr_spm_bytes_append(out, s + lit, amp - lit) || !put_numeric(out, num)) return false;
        i = lit = k + semi;
        done = true;
      }
    } else if (ftfy_mode) {
      size_t k = j;
      while (k < n && k - j < 25 && is_alnum(s[k])) k++;
      int64_t cp = k > j && k - j <= 24 && k < n && s[k] == ';' ? entity_lookup(s + j, k - j, true) : -1;
      if (cp >= 0) {
        if (!mr_spm_bytes_append(out, s + lit, amp - lit) || !put_cp(out, (uint32_t)cp)) return false;
        i = lit = k + 1;
        done = true;
      }
    } else {
      /* Python: [^\t\n\f <&#;]{1,32};? counted in characters */
      size_t k = j;
      int chars = 0;
      while (k < n && chars < 32) {
        char c = s[k];
        if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
        size_t cl = (size_t)mr_spm_utf8_char_len((unsigned char)c);
        k += cl <= n - k ? cl : n - k;
        chars++;
      }
      if (chars > 0) {
        bool semi = k < n && s[k] == ';';
        int64_t cp = entity_lookup(s + j, k - j, semi);
        size_t end = k + semi;
        if (cp < 0) { /* longest legacy name that prefixes the match, at least 2 chars */
          size_t ascii = 0;
          while (j + ascii < k && (unsigned char)s[j + ascii] < 0x80) ascii++;
          size_t full_chars = (size_t)chars + semi;
          for (size_t x = ascii < full_chars - 1 ? ascii : full_chars - 1; x >= 2 && cp < 0; x--)
            if ((cp = entity_lookup(s + j, x, false)) >= 0) end = j + x;
        }
        if (cp >= 0) {
          if (!mr_spm_bytes_append(out, s + lit, amp - lit) || !put_cp(out, (uint32_t)cp)) return false;
          i = lit = end;
          done = true;
        } else {
          i = end; /* Python consumed the whole match and gave it back unchanged */
          done = true;
        }
      }
    }
    if (!done) i = amp + 1;
  }
  return mr_spm_bytes_append(out, s + lit, n - lit);
}

/* ---- the ftfy subset */

static bool ftfy_drops(uint32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

/* Per character: C1 controls as Windows-1252, curly quotes straightened,
   control characters removed (ftfy's fix_c1_controls, uncurl_quotes,
   remove_control_chars, in that order). */
static bool ftfy_chars(const char *s, size_t n, mr_spm_bytes *out) {
  for (size_t i = 0; i < n;) {
    uint32_t c;
    int k = mr_spm_utf8_decode(s + i, n - i, &c);
    if (k == 0) { /* malformed: pass the byte through */
      if (!mr_spm_bytes_append(out, s + i, 1)) return false;
      i++;
      continue;
    }
    i += (size_t)k;
    if (c >= 0x80 && c <= 0x9F && cp1252_c1[c - 0x80]) c = cp1252_c1[c - 0x80];
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
    else if (c >= 0x201C && c <= 0x201F) c = '"';
    if (ftfy_drops(c)) continue;
    if (!put_cp(out, c)) return false;
  }
  return true;
}

static bool ftfy_fix(const char *s, size_t n, mr_spm_bytes *out) {
  /* ftfy works line by line and stops decoding entities for good at the
     first line that contains '<' (it looks like HTML then). */
  bool entities = true;
  mr_spm_bytes a = {0}, b = {0};
  bool ok = true;
  for (size_t pos = 0; pos < n && ok;) {
    const char *nl = memchr(s + pos, '\n', n - pos);
    size_t end = nl ? (size_t)(nl - s) + 1 : n;
    if (entities && memchr(s + pos, '<', end - pos)) entities = false;
    a.len = 0;
    ok = mr_spm_bytes_append(&a, s + pos, end - pos);
    /* ftfy repeats its fixes until the text stops changing */
    while (ok && entities) {
      b.len = 0;
      ok = unescape(a.p, a.len, true, &b);
      if (!ok || (b.len == a.len && memcmp(a.p, b.p, a.len) == 0)) break;
      mr_spm_bytes t = a;
      a = b;
      b = t;
    }
    ok = ok && ftfy_chars(a.p, a.len, out);
    pos = end;
  }
  free(a.p);
  free(b.p);
  return ok && mr_spm_bytes_append(out, "", 0);
}

/* ---- whitespace */

/* Python's str.isspace, which is what \s and strip() use. */
static bool py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static bool collapse_whitespace(const char *s, size_t n, mr_spm_bytes *out) {
  bool pending_space = false, any = false;
  for (size_t i = 0; i < n;) {
    uint32_t c;
    int k = mr_spm_utf8_decode(s + i, n - i, &c);
    size_t len = k ? (size_t)k : 1;
    if (k && py_isspace(c)) {
      pending_space = any; /* leading whitespace is stripped */
    } else {
      if (pending_space && !mr_spm_bytes_append(out, " ", 1)) return false;
      if (!mr_spm_bytes_append(out, s + i, len)) return false;
      pending_space = false;
      any = true;
    }
    i += len;
  }
  return mr_spm_bytes_append(out, "", 0); /* trailing whitespace is dropped */
}

bool mr_wan_prompt_clean(const char *prompt, mr_spm_bytes *out) {
  mr_spm_bytes a = {0}, b = {0};
  size_t n = strlen(prompt);
  bool ok = ftfy_fix(prompt, n, &a);
  ok = ok && unescape(a.p, a.len, false, &b);
  a.len = 0;
  ok = ok && unescape(b.p, b.len, false, &a);
  ok = ok && collapse_whitespace(a.p, a.len, out);
  free(a.p);
  free(b.p);
  return ok;
}
