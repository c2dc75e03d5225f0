/* The subset of Python's pickle VM that torch.save uses for state dicts.
   It builds plain values (dicts, tuples, strings, ints) and the few torch
   objects a state dict holds (storages by persistent id, tensors from
   _rebuild_tensor_v2). Nothing is ever executed: only the globals named in
   resolve_global are honoured, and any other global or opcode is refused.
   The VM has no recursion and every read is bounded by the pickle's length. */
#include "io/io_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits against hostile pickles. Real state dicts never come close: the
   umT5 pickle nests marks 3 deep and keeps a few dozen values on the stack. */
#define MAX_MARKS 4096
#define MAX_STACK (1u << 22)

/* Standard opcode names, so a refusal says which opcode it was. */
static const char *const opcode_names[256] = {
    ['(' ] = "MARK", ['.'] = "STOP", ['0'] = "POP", ['1'] = "POP_MARK", ['2'] = "DUP", ['F'] = "FLOAT",
    ['I'] = "INT", ['J'] = "BININT", ['K'] = "BININT1", ['L'] = "LONG", ['M'] = "BININT2", ['N'] = "NONE",
    ['P'] = "PERSID", ['Q'] = "BINPERSID", ['R'] = "REDUCE", ['S'] = "STRING", ['T'] = "BINSTRING",
    ['U'] = "SHORT_BINSTRING", ['V'] = "UNICODE", ['X'] = "BINUNICODE", ['a'] = "APPEND", ['b'] = "BUILD",
    ['c'] = "GLOBAL", ['d'] = "DICT", ['}'] = "EMPTY_DICT", ['e'] = "APPENDS", ['g'] = "GET", ['h'] = "BINGET",
    ['i'] = "INST", ['j'] = "LONG_BINGET", ['l'] = "LIST", [']'] = "EMPTY_LIST", ['o'] = "OBJ", ['p'] = "PUT",
    ['q'] = "BINPUT", ['r'] = "LONG_BINPUT", ['s'] = "SETITEM", ['t'] = "TUPLE", [')'] = "EMPTY_TUPLE",
    ['u'] = "SETITEMS", ['G'] = "BINFLOAT", [0x80] = "PROTO", [0x81] = "NEWOBJ", [0x82] = "EXT1",
    [0x83] = "EXT2", [0x84] = "EXT4", [0x85] = "TUPLE1", [0x86] = "TUPLE2", [0x87] = "TUPLE3",
    [0x88] = "NEWTRUE", [0x89] = "NEWFALSE", [0x8a] = "LONG1", [0x8b] = "LONG4", [0x8c] = "SHORT_BINUNICODE",
    [0x8d] = "BINUNICODE8", [0x8e] = "BINBYTES8", [0x8f] = "EMPTY_SET", [0x90] = "ADDITEMS",
    [0x91] = "FROZENSET", [0x92] = "NEWOBJ_EX", [0x93] = "STACK_GLOBAL", [0x94] = "MEMOIZE", [0x95] = "FRAME",
    [0x96] = "BYTEARRAY8", [0x97] = "NEXT_BUFFER", [0x98] = "READONLY_BUFFER", ['B'] = "BINBYTES",
    ['C'] = "SHORT_BINBYTES",
};

struct mr_io_pickle {
  const mr_io_source *src;
  const char *what;
  const uint8_t *b;
  size_t len, pos, op_off;
  int op;
  mr_io_pval **all; /* every value made, so free can release them in one pass */
  size_t nall, capall;
  mr_io_pval **stack;
  size_t sp, scap;
  size_t marks[MAX_MARKS];
  size_t nmarks;
  mr_io_pval **memo;
  size_t memo_cap, memo_count;
};

static mr_status perr(mr_io_pickle *p, mr_status st, const char *fmt, ...) MR_PRINTF(3, 4);
static mr_status perr(mr_io_pickle *p, mr_status st, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *name = opcode_names[p->op & 0xff];
  if (name != NULL)
    return mr_error(p->src->ctx, st, "%s: %s: %s at offset %zu (opcode %s)", p->src->path, p->what, msg,
                    p->op_off, name);
  return mr_error(p->src->ctx, st, "%s: %s: %s at offset %zu (opcode byte 0x%02x)", p->src->path, p->what, msg,
                  p->op_off, p->op & 0xff);
}

static mr_status oom(mr_io_pickle *p) { return perr(p, MR_ENOMEM, "out of memory"); }

static bool grow(void **items, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return true;
  size_t n = *cap ? *cap : 8;
  while (n < need) n *= 2;
  void *q = realloc(*items, n * elem);
  if (q == NULL) return false;
  *items = q;
  *cap = n;
  return true;
}

static mr_io_pval *pnew(mr_io_pickle *p, mr_io_pkind kind) {
  if (!grow((void **)&p->all, &p->capall, p->nall + 1, sizeof *p->all)) return NULL;
  mr_io_pval *v = calloc(1, sizeof *v);
  if (v == NULL) return NULL;
  v->kind = kind;
  p->all[p->nall++] = v;
  return v;
}

void mr_io_pickle_free(mr_io_pickle *p) {
  if (p == NULL) return;
  for (size_t i = 0; i < p->nall; i++) {
    mr_io_pval *v = p->all[i];
    if (v->kind == MR_PK_TUPLE || v->kind == MR_PK_LIST) free(v->u.seq.items);
    if (v->kind == MR_PK_DICT) {
      free(v->u.dict.keys);
      free(v->u.dict.vals);
    }
    free(v);
  }
  free(p->all);
  free(p->stack);
  free(p->memo);
  free(p);
}

/* ---------------------------------------------------------------- stack */

static mr_status push(mr_io_pickle *p, mr_io_pval *v) {
  if (v == NULL) return oom(p);
  if (p->sp >= MAX_STACK) return perr(p, MR_EFORMAT, "stack deeper than %u", MAX_STACK);
  if (!grow((void **)&p->stack, &p->scap, p->sp + 1, sizeof *p->stack)) return oom(p);
  p->stack[p->sp++] = v;
  return MR_OK;
}

/* Values above the innermost mark may be popped; the mark guards the rest. */
static size_t floor_of(const mr_io_pickle *p) { return p->nmarks ? p->marks[p->nmarks - 1] : 0; }

static mr_status pop(mr_io_pickle *p, mr_io_pval **v) {
  if (p->sp <= floor_of(p)) return perr(p, MR_EFORMAT, "stack underflow");
  *v = p->stack[--p->sp];
  return MR_OK;
}

static mr_status top(mr_io_pickle *p, mr_io_pval **v) {
  if (p->sp <= floor_of(p)) return perr(p, MR_EFORMAT, "stack underflow");
  *v = p->stack[p->sp - 1];
  return MR_OK;
}

/* Pops the innermost mark; the values above it are stack[*first .. sp). */
static mr_status pop_mark(mr_io_pickle *p, size_t *first) {
  if (p->nmarks == 0) return perr(p, MR_EFORMAT, "no MARK on the stack");
  *first = p->marks[--p->nmarks];
  return MR_OK;
}

static mr_status seq_append(mr_io_pickle *p, mr_io_pval *seq, mr_io_pval *item) {
  if (!grow((void **)&seq->u.seq.items, &seq->u.seq.cap, seq->u.seq.n + 1, sizeof *seq->u.seq.items))
    return oom(p);
  seq->u.seq.items[seq->u.seq.n++] = item;
  return MR_OK;
}

/* Python would replace an existing key; state dicts never repeat one, and
   a repeat surfaces later as a duplicate tensor name, so append is enough. */
static mr_status dict_set(mr_io_pickle *p, mr_io_pval *d, mr_io_pval *k, mr_io_pval *v) {
  size_t cap = d->u.dict.cap;
  if (!grow((void **)&d->u.dict.keys, &cap, d->u.dict.n + 1, sizeof *d->u.dict.keys)) return oom(p);
  cap = d->u.dict.cap;
  if (!grow((void **)&d->u.dict.vals, &cap, d->u.dict.n + 1, sizeof *d->u.dict.vals)) return oom(p);
  d->u.dict.cap = cap;
  d->u.dict.keys[d->u.dict.n] = k;
  d->u.dict.vals[d->u.dict.n] = v;
  d->u.dict.n++;
  return MR_OK;
}

/* Builds a tuple or list from stack[first .. sp) and replaces them with it. */
static mr_status collect(mr_io_pickle *p, size_t first, mr_io_pkind kind) {
  mr_io_pval *v = pnew(p, kind);
  if (v == NULL) return oom(p);
  size_t n = p->sp - first;
  if (n > 0) {
    v->u.seq.items = malloc(n * sizeof *v->u.seq.items);
    if (v->u.seq.items == NULL) return oom(p);
    memcpy(v->u.seq.items, p->stack + first, n * sizeof *v->u.seq.items);
    v->u.seq.n = v->u.seq.cap = n;
  }
  p->sp = first;
  return push(p, v);
}

/* ---------------------------------------------------------------- memo */

static mr_status memo_put(mr_io_pickle *p, uint64_t idx, mr_io_pval *v) {
  /* A pickler numbers memo slots 0, 1, 2, ... one per put opcode, so an
     index at or past the pickle's length cannot be honest; refusing it keeps
     a hostile index from sizing our array. */
  if (idx >= p->len) return perr(p, MR_EFORMAT, "memo index %llu out of range", (unsigned long long)idx);
  size_t old = p->memo_cap;
  if (!grow((void **)&p->memo, &p->memo_cap, (size_t)idx + 1, sizeof *p->memo)) return oom(p);
  if (p->memo_cap > old) memset(p->memo + old, 0, (p->memo_cap - old) * sizeof *p->memo);
  if (p->memo[idx] == NULL) p->memo_count++;
  p->memo[idx] = v;
  return MR_OK;
}

static mr_status memo_get(mr_io_pickle *p, uint64_t idx) {
  if (idx >= p->memo_cap || p->memo[idx] == NULL)
    return perr(p, MR_EFORMAT, "memo index %llu was never set", (unsigned long long)idx);
  return push(p, p->memo[idx]);
}

/* ---------------------------------------------------------------- reads */

static mr_status need(mr_io_pickle *p, size_t n) {
  if (n > p->len - p->pos) return perr(p, MR_EFORMAT, "truncated (needs %zu more bytes)", n);
  return MR_OK;
}

static uint64_t rd_le(const uint8_t *b, int n) {
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; k--) v = (v << 8) | b[k];
  return v;
}

/* Reads an n-byte little-endian length, then that many bytes as a string. */
static mr_status read_str(mr_io_pickle *p, int nlen) {
  mr_status s = need(p, (size_t)nlen);
  if (s != MR_OK) return s;
  uint64_t n = rd_le(p->b + p->pos, nlen);
  p->pos += (size_t)nlen;
  if (n > p->len - p->pos) return perr(p, MR_EFORMAT, "string of %llu bytes runs past the end", (unsigned long long)n);
  mr_io_pval *v = pnew(p, MR_PK_STR);
  if (v == NULL) return oom(p);
  v->u.str.s = (const char *)p->b + p->pos;
  v->u.str.len = (size_t)n;
  p->pos += (size_t)n;
  return push(p, v);
}

static mr_status push_int(mr_io_pickle *p, int64_t i) {
  mr_io_pval *v = pnew(p, MR_PK_INT);
  if (v == NULL) return oom(p);
  v->u.i = i;
  return push(p, v);
}

/* One "\n"-terminated line of a GLOBAL opcode. */
static mr_status read_line(mr_io_pickle *p, const char **s, size_t *n) {
  const uint8_t *start = p->b + p->pos;
  const uint8_t *nl = memchr(start, '\n', p->len - p->pos);
  if (nl == NULL) return perr(p, MR_EFORMAT, "GLOBAL name not terminated");
  *s = (const char *)start;
  *n = (size_t)(nl - start);
  p->pos += *n + 1;
  return MR_OK;
}

/* ---------------------------------------------------------------- globals */

static bool str_is(const char *s, size_t n, const char *lit) { return strlen(lit) == n && memcmp(s, lit, n) == 0; }

static mr_status resolve_global(mr_io_pickle *p, const char *mod, size_t mlen, const char *name, size_t nlen) {
  static const struct {
    const char *name;
    mr_dtype dtype;
  } storages[] = {
      {"FloatStorage", MR_F32}, {"HalfStorage", MR_F16}, {"BFloat16Storage", MR_BF16}, {"DoubleStorage", MR_F64},
      {"LongStorage", MR_I64},  {"IntStorage", MR_I32},  {"ByteStorage", MR_U8},
  };
  mr_io_pval *v = pnew(p, MR_PK_GLOBAL);
  if (v == NULL) return oom(p);
  if (str_is(mod, mlen, "collections") && str_is(name, nlen, "OrderedDict")) {
    v->u.global.which = MR_PG_ORDERED_DICT;
    return push(p, v);
  }
  if (str_is(mod, mlen, "torch._utils")) {
    if (str_is(name, nlen, "_rebuild_tensor_v2")) v->u.global.which = MR_PG_REBUILD_TENSOR_V2;
    else if (str_is(name, nlen, "_rebuild_tensor")) v->u.global.which = MR_PG_REBUILD_TENSOR;
    else if (str_is(name, nlen, "_rebuild_parameter")) v->u.global.which = MR_PG_REBUILD_PARAMETER;
    else goto refuse;
    return push(p, v);
  }
  if (str_is(mod, mlen, "torch")) {
    for (size_t k = 0; k < sizeof storages / sizeof storages[0]; k++) {
      if (str_is(name, nlen, storages[k].name)) {
        v->u.global.which = MR_PG_STORAGE_TYPE;
        v->u.global.dtype = storages[k].dtype;
        return push(p, v);
      }
    }
  }
refuse:
  return perr(p, MR_EUNSUPPORTED, "global '%.*s.%.*s' is not allowed in a state dict", (int)(mlen > 100 ? 100 : mlen),
              mod, (int)(nlen > 100 ? 100 : nlen), name);
}

/* A (size or stride) tuple of non-negative ints into out[]. */
static mr_status int_tuple(mr_io_pickle *p, const mr_io_pval *t, int64_t *out, int *n, const char *what) {
  if (t->kind != MR_PK_TUPLE) return perr(p, MR_EFORMAT, "tensor %s is not a tuple", what);
  if (t->u.seq.n > MR_WEIGHT_MAX_DIMS)
    return perr(p, MR_EFORMAT, "tensor has %zu dims (at most %d)", t->u.seq.n, MR_WEIGHT_MAX_DIMS);
  for (size_t k = 0; k < t->u.seq.n; k++) {
    const mr_io_pval *x = t->u.seq.items[k];
    if (x->kind != MR_PK_INT || x->u.i < 0) return perr(p, MR_EFORMAT, "tensor %s holds a non-integer or negative", what);
    out[k] = x->u.i;
  }
  *n = (int)t->u.seq.n;
  return MR_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
   backward_hooks[, metadata]); _rebuild_tensor takes the first four. */
static mr_status rebuild_tensor(mr_io_pickle *p, const mr_io_pval *args) {
  if (args->u.seq.n < 4) return perr(p, MR_EFORMAT, "_rebuild_tensor with %zu arguments", args->u.seq.n);
  const mr_io_pval *storage = args->u.seq.items[0], *off = args->u.seq.items[1];
  if (storage->kind != MR_PK_STORAGE) return perr(p, MR_EFORMAT, "_rebuild_tensor without a storage");
  if (off->kind != MR_PK_INT || off->u.i < 0) return perr(p, MR_EFORMAT, "_rebuild_tensor with a bad storage offset");
  mr_io_pval *t = pnew(p, MR_PK_TENSOR);
  if (t == NULL) return oom(p);
  t->u.tensor.storage = storage;
  t->u.tensor.offset = off->u.i;
  int nstride = 0;
  mr_status s = int_tuple(p, args->u.seq.items[2], t->u.tensor.shape, &t->u.tensor.ndim, "size");
  if (s == MR_OK) s = int_tuple(p, args->u.seq.items[3], t->u.tensor.stride, &nstride, "stride");
  if (s != MR_OK) return s;
  if (nstride != t->u.tensor.ndim) return perr(p, MR_EFORMAT, "tensor size and stride differ in length");
  return push(p, t);
}

/* REDUCE and NEWOBJ: apply an honoured callable to an argument tuple. */
static mr_status call(mr_io_pickle *p, const mr_io_pval *fn, const mr_io_pval *args) {
  if (fn->kind != MR_PK_GLOBAL) return perr(p, MR_EUNSUPPORTED, "call of a non-global object");
  if (args->kind != MR_PK_TUPLE) return perr(p, MR_EFORMAT, "call arguments are not a tuple");
  switch (fn->u.global.which) {
  case MR_PG_ORDERED_DICT:
    if (args->u.seq.n != 0) return perr(p, MR_EUNSUPPORTED, "OrderedDict built from arguments");
    return push(p, pnew(p, MR_PK_DICT));
  case MR_PG_REBUILD_TENSOR:
  case MR_PG_REBUILD_TENSOR_V2:
    return rebuild_tensor(p, args);
  case MR_PG_REBUILD_PARAMETER:
    /* (data, requires_grad, backward_hooks): a Parameter is its data here. */
    if (args->u.seq.n < 1 || args->u.seq.items[0]->kind != MR_PK_TENSOR)
      return perr(p, MR_EFORMAT, "_rebuild_parameter without a tensor");
    return push(p, args->u.seq.items[0]);
  case MR_PG_STORAGE_TYPE:
    break;
  }
  return perr(p, MR_EUNSUPPORTED, "a storage type called as a function");
}

/* BINPERSID: torch's persistent id ('storage', type, key, location, numel)
   names a storage kept in data/<key>. */
static mr_status persistent_id(mr_io_pickle *p, const mr_io_pval *pid) {
  if (pid->kind != MR_PK_TUPLE || pid->u.seq.n < 5) return perr(p, MR_EFORMAT, "persistent id is not a 5-tuple");
  mr_io_pval *const *it = pid->u.seq.items;
  if (it[0]->kind != MR_PK_STR || !str_is(it[0]->u.str.s, it[0]->u.str.len, "storage"))
    return perr(p, MR_EUNSUPPORTED, "persistent id is not a storage");
  if (it[1]->kind != MR_PK_GLOBAL || it[1]->u.global.which != MR_PG_STORAGE_TYPE)
    return perr(p, MR_EFORMAT, "persistent id without a storage type");
  if (it[2]->kind != MR_PK_STR) return perr(p, MR_EFORMAT, "persistent id key is not a string");
  if (it[4]->kind != MR_PK_INT || it[4]->u.i < 0) return perr(p, MR_EFORMAT, "persistent id size is not a count");
  mr_io_pval *v = pnew(p, MR_PK_STORAGE);
  if (v == NULL) return oom(p);
  v->u.storage.dtype = it[1]->u.global.dtype;
  v->u.storage.key = it[2]->u.str.s;
  v->u.storage.key_len = it[2]->u.str.len;
  v->u.storage.numel = it[4]->u.i;
  return push(p, v);
}

/* ---------------------------------------------------------------- the VM */

static mr_status step(mr_io_pickle *p, bool *stop) {
  mr_status s = MR_OK;
  mr_io_pval *a = NULL, *b = NULL, *c = NULL; /* set before use; -O2 cannot see through pop */
  size_t first = 0;
  int op = p->op;
  switch (op) {
  case 0x80: /* PROTO */
    if ((s = need(p, 1)) != MR_OK) return s;
    if (p->b[p->pos] > 5) return perr(p, MR_EUNSUPPORTED, "pickle protocol %d", p->b[p->pos]);
    p->pos += 1;
    return MR_OK;
  case 0x95: /* FRAME: a length hint for buffered readers; we hold it all */
    if ((s = need(p, 8)) != MR_OK) return s;
    p->pos += 8;
    return MR_OK;
  case '}': return push(p, pnew(p, MR_PK_DICT));
  case ']': return push(p, pnew(p, MR_PK_LIST));
  case ')': return push(p, pnew(p, MR_PK_TUPLE));
  case 'N': return push(p, pnew(p, MR_PK_NONE));
  case 0x88:
  case 0x89:
    if ((a = pnew(p, MR_PK_BOOL)) == NULL) return oom(p);
    a->u.b = op == 0x88;
    return push(p, a);
  case '(':
    if (p->nmarks >= MAX_MARKS) return perr(p, MR_EFORMAT, "MARKs nested deeper than %d", MAX_MARKS);
    p->marks[p->nmarks++] = p->sp;
    return MR_OK;
  case 'q':
  case 'r': {
    int n = op == 'q' ? 1 : 4;
    if ((s = need(p, (size_t)n)) != MR_OK) return s;
    uint64_t idx = rd_le(p->b + p->pos, n);
    p->pos += (size_t)n;
    if ((s = top(p, &a)) != MR_OK) return s;
    return memo_put(p, idx, a);
  }
  case 0x94: /* MEMOIZE */
    if ((s = top(p, &a)) != MR_OK) return s;
    return memo_put(p, p->memo_count, a);
  case 'h':
  case 'j': {
    int n = op == 'h' ? 1 : 4;
    if ((s = need(p, (size_t)n)) != MR_OK) return s;
    uint64_t idx = rd_le(p->b + p->pos, n);
    p->pos += (size_t)n;
    return memo_get(p, idx);
  }
  case 'X': return read_str(p, 4);
  case 0x8c: return read_str(p, 1);
  case 0x8d: return read_str(p, 8);
  case 'U': return read_str(p, 1);
  case 'T':
    /* BINSTRING's length is signed; a negative one is corruption. */
    if ((s = need(p, 4)) != MR_OK) return s;
    if (p->b[p->pos + 3] & 0x80) return perr(p, MR_EFORMAT, "negative string length");
    return read_str(p, 4);
  case 'c': {
    const char *mod, *name;
    size_t ml, nl;
    if ((s = read_line(p, &mod, &ml)) != MR_OK || (s = read_line(p, &name, &nl)) != MR_OK) return s;
    return resolve_global(p, mod, ml, name, nl);
  }
  case 0x93: /* STACK_GLOBAL */
    if ((s = pop(p, &b)) != MR_OK || (s = pop(p, &a)) != MR_OK) return s;
    if (a->kind != MR_PK_STR || b->kind != MR_PK_STR) return perr(p, MR_EFORMAT, "STACK_GLOBAL needs two strings");
    return resolve_global(p, a->u.str.s, a->u.str.len, b->u.str.s, b->u.str.len);
  case 'J':
    if ((s = need(p, 4)) != MR_OK) return s;
    p->pos += 4;
    return push_int(p, (int32_t)(uint32_t)rd_le(p->b + p->pos - 4, 4));
  case 'K':
    if ((s = need(p, 1)) != MR_OK) return s;
    p->pos += 1;
    return push_int(p, p->b[p->pos - 1]);
  case 'M':
    if ((s = need(p, 2)) != MR_OK) return s;
    p->pos += 2;
    return push_int(p, (int64_t)rd_le(p->b + p->pos - 2, 2));
  case 0x8a: { /* LONG1: n-byte two's complement */
    if ((s = need(p, 1)) != MR_OK) return s;
    int n = p->b[p->pos];
    if (n > 8) return perr(p, MR_EUNSUPPORTED, "integer of %d bytes (more than 64 bits)", n);
    p->pos += 1;
    if ((s = need(p, (size_t)n)) != MR_OK) return s;
    uint64_t u = rd_le(p->b + p->pos, n);
    if (n > 0 && n < 8 && (p->b[p->pos + n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    p->pos += (size_t)n;
    return push_int(p, (int64_t)u);
  }
  case 'G': { /* BINFLOAT: big-endian IEEE double */
    if ((s = need(p, 8)) != MR_OK) return s;
    uint64_t u = 0;
    for (int k = 0; k < 8; k++) u = (u << 8) | p->b[p->pos + k];
    p->pos += 8;
    if ((a = pnew(p, MR_PK_FLOAT)) == NULL) return oom(p);
    memcpy(&a->u.f, &u, sizeof u);
    return push(p, a);
  }
  case 't':
    if ((s = pop_mark(p, &first)) != MR_OK) return s;
    return collect(p, first, MR_PK_TUPLE);
  case 0x85:
  case 0x86:
  case 0x87: {
    size_t n = (size_t)(op - 0x84);
    if (p->sp < floor_of(p) + n) return perr(p, MR_EFORMAT, "stack underflow");
    return collect(p, p->sp - n, MR_PK_TUPLE);
  }
  case 'l':
    if ((s = pop_mark(p, &first)) != MR_OK) return s;
    return collect(p, first, MR_PK_LIST);
  case 'a':
    if ((s = pop(p, &b)) != MR_OK || (s = top(p, &a)) != MR_OK) return s;
    if (a->kind != MR_PK_LIST) return perr(p, MR_EFORMAT, "APPEND to a non-list");
    return seq_append(p, a, b);
  case 'e':
    if ((s = pop_mark(p, &first)) != MR_OK) return s;
    if (first <= floor_of(p) || p->stack[first - 1]->kind != MR_PK_LIST)
      return perr(p, MR_EFORMAT, "APPENDS to a non-list");
    for (size_t k = first; k < p->sp; k++) {
      if ((s = seq_append(p, p->stack[first - 1], p->stack[k])) != MR_OK) return s;
    }
    p->sp = first;
    return MR_OK;
  case 'd':
  case 'u': {
    if ((s = pop_mark(p, &first)) != MR_OK) return s;
    if ((p->sp - first) % 2 != 0) return perr(p, MR_EFORMAT, "odd number of dict items");
    mr_io_pval *d;
    if (op == 'd') {
      if ((d = pnew(p, MR_PK_DICT)) == NULL) return oom(p);
    } else {
      if (first <= floor_of(p) || p->stack[first - 1]->kind != MR_PK_DICT)
        return perr(p, MR_EFORMAT, "SETITEMS on a non-dict");
      d = p->stack[first - 1];
    }
    for (size_t k = first; k < p->sp; k += 2) {
      if ((s = dict_set(p, d, p->stack[k], p->stack[k + 1])) != MR_OK) return s;
    }
    p->sp = first;
    return op == 'd' ? push(p, d) : MR_OK;
  }
  case 's':
    if ((s = pop(p, &c)) != MR_OK || (s = pop(p, &b)) != MR_OK || (s = top(p, &a)) != MR_OK) return s;
    if (a->kind != MR_PK_DICT) return perr(p, MR_EFORMAT, "SETITEM on a non-dict");
    return dict_set(p, a, b, c);
  case 'Q':
    if ((s = pop(p, &a)) != MR_OK) return s;
    return persistent_id(p, a);
  case 'R':
  case 0x81: /* NEWOBJ: cls.__new__(cls, *args); only OrderedDict makes sense */
    if ((s = pop(p, &b)) != MR_OK || (s = pop(p, &a)) != MR_OK) return s;
    if (op == 0x81 && !(a->kind == MR_PK_GLOBAL && a->u.global.which == MR_PG_ORDERED_DICT))
      return perr(p, MR_EUNSUPPORTED, "NEWOBJ of something other than OrderedDict");
    return call(p, a, b);
  case 'b':
    /* BUILD sets an object's state. torch uses it for an OrderedDict's
       _metadata (per-module versions) and a tensor's Python attributes;
       neither affects the weights, so the state is dropped. */
    if ((s = pop(p, &b)) != MR_OK || (s = top(p, &a)) != MR_OK) return s;
    if (a->kind != MR_PK_DICT && a->kind != MR_PK_TENSOR)
      return perr(p, MR_EUNSUPPORTED, "BUILD on an object that is not a dict or tensor");
    return MR_OK;
  case '.':
    *stop = true;
    return MR_OK;
  default:
    return perr(p, MR_EUNSUPPORTED, "opcode not supported in a state dict");
  }
}

mr_status mr_io_pickle_load(const mr_io_source *src, const char *what, const uint8_t *bytes, size_t len,
                            mr_io_pickle **out, const mr_io_pval **root) {
  *out = NULL;
  *root = NULL;
  mr_io_pickle *p = calloc(1, sizeof *p);
  if (p == NULL) return mr_error(src->ctx, MR_ENOMEM, "%s: out of memory", src->path);
  p->src = src;
  p->what = what;
  p->b = bytes;
  p->len = len;
  bool stop = false;
  mr_status s = MR_OK;
  while (!stop) {
    if (p->pos >= p->len) {
      s = mr_error(src->ctx, MR_EFORMAT, "%s: %s: pickle ends without STOP at offset %zu", src->path, what, p->pos);
      break;
    }
    p->op_off = p->pos;
    p->op = p->b[p->pos++];
    s = step(p, &stop);
    if (s != MR_OK) break;
  }
  mr_io_pval *v = NULL;
  if (s == MR_OK) s = pop(p, &v);
  if (s != MR_OK) {
    mr_io_pickle_free(p);
    return s;
  }
  *out = p;
  *root = v;
  return MR_OK;
}
