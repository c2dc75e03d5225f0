/* Unigram segmentation: the most probable split of a normalized string into
   pieces (Viterbi over the pieces' log-probability scores), as SentencePiece's
   unigram model encodes, plus the processor's handling of unknown pieces.

   Pieces sit in a byte trie whose edges live in one open-addressing hash table
   keyed by (node, byte): one probe per input byte, whatever the vocabulary
   size (umT5 has 256k pieces). */
#include "text/text_impl.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What SentencePiece charges an unknown character, below the worst piece. */
#define UNK_PENALTY 10.0f

/* One 64-bit slot per edge: (parent + 1) in bits 36..63, the byte in
   28..35, the child node in 0..27; 0 marks an empty slot. Eight bytes an
   edge at a load of at most 0.7 keeps a 256k-piece vocabulary near 20 MB. */
#define NODE_BITS 28
#define MAX_NODES ((1u << NODE_BITS) - 2)

struct mr_spm_trie {
  int32_t *value;   /* per node: piece id ending here, or -1 */
  uint32_t n_nodes, cap_nodes;
  uint64_t *slots;
  size_t mask;      /* slot count - 1 (a power of two) */
  size_t used;
};

static uint64_t edge_key(uint32_t node, unsigned char b) { return (uint64_t)(node + 1) << 8 | b; }

static size_t edge_hash(uint64_t key, size_t mask) {
  key *= 0x9E3779B97F4A7C15ull; /* Fibonacci hashing spreads consecutive parents */
  return (size_t)(key >> 24) & mask;
}

static int32_t trie_child(const mr_spm_trie *t, uint32_t node, unsigned char b) {
  uint64_t key = edge_key(node, b);
  for (size_t i = edge_hash(key, t->mask);; i = (i + 1) & t->mask) {
    uint64_t s = t->slots[i];
    if (s >> NODE_BITS == key) return (int32_t)(s & ((1u << NODE_BITS) - 1));
    if (s == 0) return -1;
  }
}

static bool trie_grow_slots(mr_spm_trie *t) {
  size_t n = (t->mask + 1) * 2;
  uint64_t *slots = calloc(n, sizeof *slots);
  if (!slots) return false;
  for (size_t i = 0; i <= t->mask; i++) {
    uint64_t s = t->slots[i];
    if (!s) continue;
    size_t h = edge_hash(s >> NODE_BITS, n - 1);
    while (slots[h]) h = (h + 1) & (n - 1);
    slots[h] = s;
  }
  free(t->slots);
  t->slots = slots;
  t->mask = n - 1;
  return true;
}

/* The child of node along b, created if missing; -1 on out of memory or
   when the trie would pass MAX_NODES. */
static int32_t trie_insert_edge(mr_spm_trie *t, uint32_t node, unsigned char b) {
  int32_t c = trie_child(t, node, b);
  if (c >= 0) return c;
  if (t->n_nodes >= MAX_NODES) return -1;
  if ((t->used + 1) * 10 > (t->mask + 1) * 7 && !trie_grow_slots(t)) return -1;
  if (t->n_nodes == t->cap_nodes) {
    uint32_t cap = t->cap_nodes * 2;
    int32_t *v = realloc(t->value, cap * sizeof *v);
    if (!v) return -1;
    t->value = v;
    t->cap_nodes = cap;
  }
  uint64_t key = edge_key(node, b);
  size_t h = edge_hash(key, t->mask);
  while (t->slots[h]) h = (h + 1) & t->mask;
  c = (int32_t)t->n_nodes++;
  t->slots[h] = key << NODE_BITS | (uint64_t)c;
  t->used++;
  t->value[c] = -1;
  return c;
}

mr_status mr_spm_trie_build(mr_ctx *ctx, const char *what, const mr_spm_model *m, bool (*keep)(mr_spm_piece_type),
                         mr_spm_trie **out) {
  *out = NULL;
  mr_spm_trie *t = calloc(1, sizeof *t);
  if (t) {
    t->cap_nodes = 1024;
    t->mask = 4096 - 1;
    t->value = malloc(t->cap_nodes * sizeof *t->value);
    t->slots = calloc(t->mask + 1, sizeof *t->slots);
  }
  if (!t || !t->value || !t->slots) {
    mr_spm_trie_free(t);
    return mr_error(ctx, MR_ENOMEM, "%s: out of memory for the piece trie", what);
  }
  t->n_nodes = 1;
  t->value[0] = -1;
  for (int i = 0; i < m->n_pieces; i++) {
    const mr_spm_piece *p = &m->pieces[i];
    if (!keep(p->type)) continue;
    int32_t node = 0;
    for (uint32_t k = 0; k < p->len && node >= 0; k++) node = trie_insert_edge(t, (uint32_t)node, (unsigned char)p->text[k]);
    if (node < 0) {
      uint32_t nodes = t->n_nodes;
      mr_spm_trie_free(t);
      return mr_error(ctx, MR_ENOMEM, "%s: out of memory for the piece trie (%u nodes)", what, nodes);
    }
    if (t->value[node] >= 0) { /* the library refuses such a model too */
      int32_t first = t->value[node];
      mr_spm_trie_free(t);
      return mr_error(ctx, MR_EFORMAT, "%s: piece \"%s\" is defined twice (ids %d and %d)", what, p->text, first, i);
    }
    t->value[node] = i;
  }
  *out = t;
  return MR_OK;
}

void mr_spm_trie_free(mr_spm_trie *t) {
  if (!t) return;
  free(t->value);
  free(t->slots);
  free(t);
}

size_t mr_spm_trie_longest_prefix(const mr_spm_trie *t, const char *s, size_t n) {
  size_t best = 0;
  int32_t node = 0;
  for (size_t i = 0; i < n; i++) {
    node = trie_child(t, (uint32_t)node, (unsigned char)s[i]);
    if (node < 0) break;
    if (t->value[node] >= 0) best = i + 1;
  }
  return best;
}

static int32_t trie_find(const mr_spm_trie *t, const char *s, size_t n) {
  int32_t node = 0;
  for (size_t i = 0; i < n && node >= 0; i++) node = trie_child(t, (uint32_t)node, (unsigned char)s[i]);
  return node < 0 ? -1 : t->value[node];
}

/* The library's vocabulary trie holds these; CONTROL, UNKNOWN and BYTE
   pieces never match text. */
static bool in_vocab_trie(mr_spm_piece_type ty) {
  return ty == SPM_NORMAL || ty == SPM_USER_DEFINED || ty == SPM_UNUSED;
}

mr_status mr_spm_unigram_init(mr_ctx *ctx, const char *what, const mr_spm_model *m, mr_spm_unigram *u) {
  memset(u, 0, sizeof *u);
  u->model = m;
  u->unk_id = -1;
  /* Score range over NORMAL pieces, with the library's starting values:
     max starts at FLT_MIN (the smallest positive float), so a vocabulary of
     negative scores leaves it there. User-defined pieces score from it. */
  float mn = FLT_MAX, mx = FLT_MIN;
  for (int i = 0; i < m->n_pieces; i++) {
    const mr_spm_piece *p = &m->pieces[i];
    if (p->type == SPM_UNKNOWN) {
      if (u->unk_id >= 0) return mr_error(ctx, MR_EFORMAT, "%s: more than one <unk> piece (ids %d and %d)", what, u->unk_id, i);
      u->unk_id = i;
    }
    if (p->type == SPM_BYTE && !m->byte_fallback)
      return mr_error(ctx, MR_EFORMAT, "%s: byte piece \"%s\" found although byte_fallback is false", what, p->text);
    if (p->type == SPM_NORMAL) {
      if (p->score < mn) mn = p->score;
      if (p->score > mx) mx = p->score;
    }
  }
  if (u->unk_id < 0) return mr_error(ctx, MR_EFORMAT, "%s: the model defines no <unk> piece", what);
  u->min_score = mn == FLT_MAX ? 0.0f : mn;
  u->max_score = mx == FLT_MIN ? 0.0f : mx;
  u->unk_score = u->min_score - UNK_PENALTY;
  mr_status st = mr_spm_trie_build(ctx, what, m, in_vocab_trie, &u->trie);
  if (st != MR_OK) return st;
  /* byte fallback pieces "<0x00>".."<0xFF>"; a missing one falls back to <unk>
     as the library's PieceToId does */
  for (int b = 0; b < 256; b++) u->byte_id[b] = u->unk_id;
  if (m->byte_fallback) {
    for (int i = 0; i < m->n_pieces; i++) {
      const mr_spm_piece *p = &m->pieces[i];
      unsigned v;
      char canon[8];
      if (p->type != SPM_BYTE || p->len != 6 || sscanf(p->text, "<0x%2X", &v) != 1) continue;
      snprintf(canon, sizeof canon, "<0x%02X>", v); /* only the exact spelling the library looks up */
      if (strcmp(canon, p->text) == 0 && u->byte_id[v] == u->unk_id) u->byte_id[v] = i;
    }
  }
  return MR_OK;
}

void mr_spm_unigram_release(mr_spm_unigram *u) {
  mr_spm_trie_free(u->trie);
  memset(u, 0, sizeof *u);
}

int32_t mr_spm_unigram_find(const mr_spm_unigram *u, const char *text, size_t len) {
  int32_t id = trie_find(u->trie, text, len);
  if (id >= 0) return id;
  /* control, unknown and byte pieces are not in the trie */
  for (int i = 0; i < u->model->n_pieces; i++) {
    const mr_spm_piece *p = &u->model->pieces[i];
    if (!in_vocab_trie(p->type) && p->len == len && memcmp(p->text, text, len) == 0) return i;
  }
  return -1;
}

typedef struct best_node {
  float score;     /* best total score of a path ending here */
  int32_t start;   /* where its last piece starts; -1 = unreached */
  int32_t id;
} best_node;

bool mr_spm_unigram_encode(const mr_spm_unigram *u, const char *s, size_t n, mr_spm_ids *out) {
  if (n == 0) return true;
  if (n > INT32_MAX - 1) return false;
  const mr_spm_model *m = u->model;
  best_node *best = malloc((n + 1) * sizeof *best);
  if (!best) return false;
  for (size_t i = 0; i <= n; i++) best[i] = (best_node){0.0f, -1, -1};

  /* Forward pass: from each character start, walk the trie along the input
     and relax every piece that ends. Ties keep the first candidate, and the
     order of visits is the library's, so equal-score splits agree. */
  for (size_t start = 0; start < n;) {
    const float here = best[start].score;
    size_t mblen = (size_t)mr_spm_utf8_char_len((unsigned char)s[start]);
    if (mblen > n - start) mblen = n - start;
    bool has_single = false;
    int32_t node = 0;
    for (size_t end = start; end < n;) {
      node = trie_child(u->trie, (uint32_t)node, (unsigned char)s[end]);
      end++;
      if (node < 0) break;
      int32_t id = u->trie->value[node];
      if (id < 0) continue;
      const mr_spm_piece *p = &m->pieces[id];
      if (p->type == SPM_UNUSED) continue;
      size_t length = end - start;
      /* User pieces get a bonus so they always win. The library's score
         expression is a double (its user-piece branch is), so sums are
         formed and compared in double and only stored as float; equal-score
         splits resolve as they do there only with this exact arithmetic. */
      double score = p->type == SPM_USER_DEFINED ? (double)((float)length * u->max_score) - 0.1 : (double)p->score;
      double cand = score + here;
      best_node *t = &best[end];
      if (t->start < 0 || cand > t->score) {
        t->score = (float)cand;
        t->start = (int32_t)start;
        t->id = id;
      }
      if (length == mblen) has_single = true;
    }
    if (!has_single) { /* no piece covers this character: it becomes <unk> */
      best_node *t = &best[start + mblen];
      float cand = u->unk_score + here;
      if (t->start < 0 || cand > t->score) {
        t->score = cand;
        t->start = (int32_t)start;
        t->id = u->unk_id;
      }
    }
    start += mblen;
  }

  /* Backtrack; count first so the ids can be written in order. */
  size_t count = 0;
  for (size_t e = n; e > 0; e = (size_t)best[e].start) count++;
  int32_t *path_end = malloc(count * sizeof *path_end);
  if (!path_end) {
    free(best);
    return false;
  }
  size_t k = count;
  for (size_t e = n; e > 0; e = (size_t)best[e].start) path_end[--k] = (int32_t)e;

  bool ok = true, prev_unk = false;
  for (size_t i = 0; i < count && ok; i++) {
    const best_node *b = &best[path_end[i]];
    bool is_unk = b->id == u->unk_id;
    if (is_unk && m->byte_fallback) {
      /* each byte of the unknown text becomes its <0xNN> piece */
      for (int32_t j = b->start; j < path_end[i] && ok; j++) {
        ok = mr_spm_ids_push(out, u->byte_id[(unsigned char)s[j]]);
      }
    } else if (!(is_unk && prev_unk)) {
      /* a run of unknowns is one <unk>: the library merges them */
      ok = mr_spm_ids_push(out, b->id);
    }
    prev_unk = is_unk;
  }
  free(path_end);
  free(best);
  return ok;
}
