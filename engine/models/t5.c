/* umT5 encoder, Wan's text encoder (docs/wan-architecture.md §1).

   Loads the official `models_t5_umt5-xxl-enc-bf16.pth` naming and the Hugging
   Face / ComfyUI `encoder.block.N.layer.M...` naming; the sizes come from
   tensor shapes. The forward pass is composed from the generic ops:
   attention is q·kᵀ (no 1/sqrt scaling, T5's convention) plus a per-layer
   relative position bias gathered from the layer's [buckets, heads] table and
   a key mask, softmax, ·v. Activations are f32 whatever the weight dtype:
   T5's activations overflow f16. */
#include "models/t5_internal.h"

#include "models/model_util.h"
#include "models/scope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T5_WHAT "umT5 encoder"
#define T5_EPS 1e-6f
/* Added to the logits of padded keys. The reference fills them with
   finfo(f32).min; any value this negative gives them probability 0. */
#define T5_MASKED (-1e30f)

/* ------------------------------------------------------------------ buckets */

int mr_t5_rel_bucket(int rel, int num_buckets, int max_distance) {
  int half = num_buckets / 2, exact = half / 2;
  int bucket = rel > 0 ? half : 0;
  int n = rel < 0 ? -rel : rel;
  if (n < exact) return bucket + n;
  /* f32 as in the reference: log(n / exact) / log(max_distance / exact) * (half - exact), truncated */
  float ratio = logf((float)n / (float)exact) / (float)log((double)max_distance / exact);
  int large = exact + (int)(ratio * (float)(half - exact));
  return bucket + (large < half - 1 ? large : half - 1);
}

void mr_t5_bucket_table(int n, int num_buckets, int max_distance, int32_t *out) {
  /* bucket(k - q) depends on k - q only: compute the 2n-1 distinct values once */
  int32_t *by_rel = malloc((size_t)(2 * n - 1) * sizeof *by_rel);
  if (by_rel) {
    for (int r = -(n - 1); r <= n - 1; r++) by_rel[r + n - 1] = mr_t5_rel_bucket(r, num_buckets, max_distance);
    for (int q = 0; q < n; q++) memcpy(&out[(size_t)q * n], &by_rel[n - 1 - q], (size_t)n * sizeof *out);
    free(by_rel);
    return;
  }
  for (int q = 0; q < n; q++)
    for (int k = 0; k < n; k++) out[(size_t)q * n + k] = mr_t5_rel_bucket(k - q, num_buckets, max_distance);
}

/* ------------------------------------------------------------------ loading */

typedef struct t5_block {
  mr_tensor *norm1, *q, *k, *v, *o, *pos, *norm2, *gate, *fc1, *fc2;
} t5_block;

struct mr_t5 {
  mr_ctx *ctx;
  int vocab, dim, dim_attn, heads, head_dim, ffn, layers, buckets;
  mr_tensor *embed, *norm; /* embed [vocab, dim] in the weight dtype; norm [dim] f32 */
  t5_block *blocks;
  mr_params params;        /* every tensor above, under the official names */
  int32_t *table;          /* bucket table of the last length encoded, [table_n, table_n] */
  int table_n;
};

/* The tensor names of one checkpoint naming; %d is the block index. */
typedef struct t5_names {
  const char *kind;  /* for messages */
  const char *probe; /* a tensor every checkpoint of this naming has */
  const char *stem;  /* what block names start with, before the index */
  const char *embed, *norm;
  const char *norm1, *q, *k, *v, *o, *pos, *norm2, *gate, *fc1, *fc2;
} t5_names;

/* Wan's official state dict (plain names). */
static const t5_names NAMES_OFFICIAL = {
    "official", "blocks.0.attn.q.weight", "blocks.", "token_embedding.weight", "norm.weight",
    "blocks.%d.norm1.weight", "blocks.%d.attn.q.weight", "blocks.%d.attn.k.weight", "blocks.%d.attn.v.weight",
    "blocks.%d.attn.o.weight", "blocks.%d.pos_embedding.embedding.weight", "blocks.%d.norm2.weight",
    "blocks.%d.ffn.gate.0.weight", "blocks.%d.ffn.fc1.weight", "blocks.%d.ffn.fc2.weight"};

/* Hugging Face UMT5EncoderModel and ComfyUI: these names sit under "encoder."
   (the loader finds that prefix); the embedding is "encoder.embed_tokens.weight"
   or the top-level "shared.weight". wi_0 is the activated (gate) branch. */
static const t5_names NAMES_HF = {
    "Hugging Face", "block.0.layer.0.SelfAttention.q.weight", "block.", "embed_tokens.weight",
    "final_layer_norm.weight", "block.%d.layer.0.layer_norm.weight", "block.%d.layer.0.SelfAttention.q.weight",
    "block.%d.layer.0.SelfAttention.k.weight", "block.%d.layer.0.SelfAttention.v.weight",
    "block.%d.layer.0.SelfAttention.o.weight", "block.%d.layer.0.SelfAttention.relative_attention_bias.weight",
    "block.%d.layer.1.layer_norm.weight", "block.%d.layer.1.DenseReluDense.wi_0.weight",
    "block.%d.layer.1.DenseReluDense.wi_1.weight", "block.%d.layer.1.DenseReluDense.wo.weight"};

/* 1 + the largest block index among names prefix+stem+N+"." (0 if none). */
static int count_blocks(const mr_loader *L, const char *stem) {
  char head[256];
  snprintf(head, sizeof head, "%s%s", L->prefix, stem);
  size_t hl = strlen(head);
  int n = 0;
  for (int i = 0; i < mr_weights_count(L->w); i++) {
    mr_weight_info info;
    if (mr_weights_get(L->w, i, &info) != MR_OK || strncmp(info.name, head, hl) != 0) continue;
    char *end;
    long b = strtol(info.name + hl, &end, 10);
    if (end != info.name + hl && *end == '.' && b >= 0 && b < 100000 && b + 1 > n) n = (int)b + 1;
  }
  return n;
}

/* The 2-D shape of a tensor that sizes the model. */
static mr_status shape_2d(mr_loader *L, const char *name, int64_t *s) {
  int64_t shape[MR_WEIGHT_MAX_DIMS];
  int nd = mr_loader_shape(L, name, shape);
  if (nd == 0) return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%s%s' is missing", T5_WHAT, L->prefix, name);
  if (nd != 2)
    return mr_error(L->ctx, MR_EFORMAT, "%s: tensor '%s%s' has %d dims, expected 2", T5_WHAT, L->prefix, name, nd);
  s[0] = shape[0];
  s[1] = shape[1];
  return MR_OK;
}

void mr_t5_free(mr_t5 *t5) {
  if (!t5) return;
  mr_params_release(&t5->params);
  free(t5->blocks);
  free(t5->table);
  free(t5);
}

/* Declares every parameter under the official name, read from the
   checkpoint's naming nm. */
static void declare(mr_t5 *t5, const t5_names *nm, const char *embed_src, bool embed_outside) {
  mr_params *P = &t5->params;
  int64_t D = t5->dim, A = t5->dim_attn, F = t5->ffn;
  mr_params_add_from(P, &t5->embed, MR_PARAM_WEIGHT, 2, (int64_t[]){t5->vocab, D}, NAMES_OFFICIAL.embed, embed_src,
                     embed_outside);
  for (int i = 0; i < t5->layers; i++) {
    t5_block *b = &t5->blocks[i];
    struct {
      mr_tensor **slot;
      const char *official, *src; /* formats of the block index */
      mr_param_kind kind;
      int ndim;
      int64_t shape[2];
    } items[] = {
        {&b->norm1, NAMES_OFFICIAL.norm1, nm->norm1, MR_PARAM_F32, 1, {D}},
        {&b->q, NAMES_OFFICIAL.q, nm->q, MR_PARAM_WEIGHT, 2, {A, D}},
        {&b->k, NAMES_OFFICIAL.k, nm->k, MR_PARAM_WEIGHT, 2, {A, D}},
        {&b->v, NAMES_OFFICIAL.v, nm->v, MR_PARAM_WEIGHT, 2, {A, D}},
        {&b->o, NAMES_OFFICIAL.o, nm->o, MR_PARAM_WEIGHT, 2, {D, A}},
        {&b->pos, NAMES_OFFICIAL.pos, nm->pos, MR_PARAM_F32, 2, {t5->buckets, t5->heads}},
        {&b->norm2, NAMES_OFFICIAL.norm2, nm->norm2, MR_PARAM_F32, 1, {D}},
        {&b->gate, NAMES_OFFICIAL.gate, nm->gate, MR_PARAM_WEIGHT, 2, {F, D}},
        {&b->fc1, NAMES_OFFICIAL.fc1, nm->fc1, MR_PARAM_WEIGHT, 2, {F, D}},
        {&b->fc2, NAMES_OFFICIAL.fc2, nm->fc2, MR_PARAM_WEIGHT, 2, {D, F}},
    };
    for (size_t j = 0; j < sizeof items / sizeof *items; j++) {
      char name[256], src[256];
      mr_loader_name(name, sizeof name, items[j].official, i);
      mr_loader_name(src, sizeof src, items[j].src, i);
      mr_params_add_from(P, items[j].slot, items[j].kind, items[j].ndim, items[j].shape, name, src, false);
    }
  }
  mr_params_add_from(P, &t5->norm, MR_PARAM_F32, 1, (int64_t[]){D}, NAMES_OFFICIAL.norm, nm->norm, false);
}

mr_status mr_t5_load(mr_ctx *ctx, const mr_weights *w, const mr_model_opts *opts, mr_t5 **out) {
  *out = NULL;
  if (!w) return mr_error(ctx, MR_EINVAL, "%s: no checkpoint given", T5_WHAT);
  mr_loader L;
  const t5_names *nm = &NAMES_OFFICIAL;
  mr_status st = mr_loader_init(&L, ctx, w, opts, T5_WHAT, nm->probe);
  if (st == MR_EFORMAT) {
    nm = &NAMES_HF;
    st = mr_loader_init(&L, ctx, w, opts, T5_WHAT, nm->probe);
    if (st == MR_EFORMAT)
      return mr_error(ctx, MR_EFORMAT,
                      "not a %s checkpoint: found neither '%s' (official naming) nor 'encoder.%s' (Hugging Face naming)",
                      T5_WHAT, NAMES_OFFICIAL.probe, NAMES_HF.probe);
  }
  if (st != MR_OK) return st;

  /* The embedding: under the prefix, or (Hugging Face) the shared table one level up. */
  const char *embed_name = nm->embed;
  char outer[256] = "";
  const char *inner_prefix = L.prefix;
  if (nm == &NAMES_HF && !mr_loader_has(&L, embed_name)) {
    size_t pl = strlen(L.prefix), el = strlen("encoder.");
    if (pl >= el && strcmp(L.prefix + pl - el, "encoder.") == 0) snprintf(outer, sizeof outer, "%.*s", (int)(pl - el), L.prefix);
    embed_name = "shared.weight";
  }

  mr_t5 *t5 = calloc(1, sizeof *t5);
  if (!t5) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  t5->ctx = ctx;
  mr_params_init(&t5->params, ctx);
  int64_t es[2], qs[2], ps[2], gs[2];
  if (embed_name != nm->embed) L.prefix = outer;
  st = shape_2d(&L, embed_name, es);
  L.prefix = inner_prefix;
  char name[256];
  if (st == MR_OK) st = shape_2d(&L, mr_loader_name(name, sizeof name, nm->q, 0), qs);
  if (st == MR_OK) st = shape_2d(&L, mr_loader_name(name, sizeof name, nm->pos, 0), ps);
  if (st == MR_OK) st = shape_2d(&L, mr_loader_name(name, sizeof name, nm->gate, 0), gs);
  if (st != MR_OK) goto fail;
  t5->vocab = (int)es[0];
  t5->dim = (int)es[1];
  t5->dim_attn = (int)qs[0];
  t5->buckets = (int)ps[0];
  t5->heads = (int)ps[1];
  t5->ffn = (int)gs[0];
  t5->layers = count_blocks(&L, nm->stem);
  if (t5->heads < 1 || t5->dim_attn % t5->heads != 0) {
    st = mr_error(ctx, MR_EFORMAT, "%s: attention width %d is not a multiple of the %d heads of the position table",
                  T5_WHAT, t5->dim_attn, t5->heads);
    goto fail;
  }
  if (t5->buckets < 4 || t5->buckets % 2) {
    st = mr_error(ctx, MR_EFORMAT, "%s: %d relative position buckets (need an even number, at least 4)", T5_WHAT,
                  t5->buckets);
    goto fail;
  }
  t5->head_dim = t5->dim_attn / t5->heads;
  t5->blocks = calloc((size_t)t5->layers, sizeof *t5->blocks);
  if (!t5->blocks) {
    st = mr_error(ctx, MR_ENOMEM, "out of host memory");
    goto fail;
  }

  /* Hugging Face's shared table sits one level above "encoder.": named in full */
  bool outside = embed_name != nm->embed;
  char embed_src[512];
  snprintf(embed_src, sizeof embed_src, "%s%s", outside ? outer : "", embed_name);
  declare(t5, nm, embed_src, outside);
  st = mr_params_load(&t5->params, &L);
  if (st != MR_OK) goto fail;
  mr_log(ctx, MR_LOG_DEBUG,
         "%s (%s naming): vocab %d, dim %d, attention %d (%d heads x %d), ffn %d, %d layers, %d buckets, "
         "%.1f M parameters as %s",
         T5_WHAT, nm->kind, t5->vocab, t5->dim, t5->dim_attn, t5->heads, t5->head_dim, t5->ffn, t5->layers,
         t5->buckets, (double)L.n_params / 1e6, mr_dtype_name(L.opts.weights));
  *out = t5;
  return MR_OK;
fail:
  mr_t5_free(t5);
  return st;
}

/* ------------------------------------------------------------------ forward */

/* Self-attention of one block on the normalised states h [n, dim]:
   o( softmax(q kᵀ + bias + mask) v ), heads split from the projections. */
static mr_tensor *attention(mr_scope *s, const mr_t5 *t5, const t5_block *b, const mr_tensor *h,
                            const int32_t *buckets, const mr_tensor *mask) {
  if (!h) return NULL; /* an earlier op failed: the scope has its error */
  int64_t n = mr_tensor_shape(h)[0];
  int64_t split[3] = {n, t5->heads, t5->head_dim}, rows[3] = {n, n, t5->heads}, joined[2] = {n, t5->dim_attn};
  int to_heads[3] = {1, 0, 2}; /* [n, H, Dh] <-> [H, n, Dh] */
  int to_vt[3] = {1, 2, 0};    /* [n, H, Dh] -> [H, Dh, n] */
  int to_bias[3] = {2, 0, 1};  /* [q, k, H] -> [H, q, k] */
  mr_tensor *q = sc_permute(s, sc_reshape(s, sc_linear(s, h, b->q, NULL), 3, split), to_heads);
  mr_tensor *k = sc_permute(s, sc_reshape(s, sc_linear(s, h, b->k, NULL), 3, split), to_heads);
  mr_tensor *vt = sc_permute(s, sc_reshape(s, sc_linear(s, h, b->v, NULL), 3, split), to_vt);
  /* batched over heads: [H, n, Dh] · [H, n, Dh]ᵀ -> [H, n, n]; no 1/sqrt(Dh) in T5 */
  mr_tensor *logits = sc_linear(s, q, k, NULL);
  /* the layer's bias: rows of its [buckets, H] table per (query, key), as [H, n, n], plus the key mask */
  mr_tensor *bias = sc_permute(s, sc_reshape(s, sc_gather_rows(s, b->pos, buckets, (int)(n * n)), 3, rows), to_bias);
  mr_tensor *p = sc_softmax(s, sc_add(s, logits, sc_add(s, bias, mask)), -1);
  /* [H, n, n] · ([H, Dh, n])ᵀ -> [H, n, Dh] */
  mr_tensor *o = sc_contiguous(s, sc_permute(s, sc_linear(s, p, vt, NULL), to_heads));
  return sc_linear(s, sc_reshape(s, o, 2, joined), b->o, NULL);
}

/* One block: x + attn(norm1(x)), then + fc2(fc1(h) * gelu_tanh(gate(h))) with h = norm2(x). */
static mr_tensor *block_forward(mr_scope *s, const mr_t5 *t5, const t5_block *b, mr_tensor *x, const int32_t *buckets,
                                const mr_tensor *mask) {
  x = sc_add(s, x, attention(s, t5, b, sc_rms_norm(s, x, b->norm1, T5_EPS), buckets, mask));
  mr_tensor *h = sc_rms_norm(s, x, b->norm2, T5_EPS);
  mr_tensor *g = sc_unary(s, MR_UNARY_GELU_TANH, sc_linear(s, h, b->gate, NULL));
  return sc_add(s, x, sc_linear(s, sc_mul(s, sc_linear(s, h, b->fc1, NULL), g), b->fc2, NULL));
}

mr_status mr_t5_encode(mr_t5 *t5, const int32_t *ids, int n, int n_valid, mr_tensor **out) {
  if (!out) return MR_EINVAL;
  *out = NULL;
  if (!t5) return MR_EINVAL;
  mr_ctx *ctx = t5->ctx;
  if (n < 1 || !ids) return mr_error(ctx, MR_EINVAL, "%s: no tokens to encode", T5_WHAT);
  if (n_valid < 1 || n_valid > n)
    return mr_error(ctx, MR_EINVAL, "%s: n_valid %d must be in 1..%d (the token count)", T5_WHAT, n_valid, n);
  if ((int64_t)n * n * t5->heads > UINT32_MAX)
    return mr_error(ctx, MR_EINVAL, "%s: %d tokens are too many (the [%d, n, n] attention logits exceed 2^32 elements)",
                    T5_WHAT, n, t5->heads);
  for (int i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= t5->vocab)
      return mr_error(ctx, MR_EINVAL, "%s: token id %d at position %d is outside the vocabulary of %d", T5_WHAT,
                      (int)ids[i], i, t5->vocab);

  /* the bucket table depends on the length only: kept for the next call (Wan
     encodes the prompt and the negative prompt at the same length) */
  if (t5->table_n != n) {
    free(t5->table);
    t5->table_n = 0;
    if (!(t5->table = malloc((size_t)n * n * sizeof *t5->table))) return mr_error(ctx, MR_ENOMEM, "out of host memory");
    mr_t5_bucket_table(n, t5->buckets, MR_T5_MAX_DISTANCE, t5->table);
    t5->table_n = n;
  }
  const int32_t *buckets = t5->table;
  float *maskv = malloc((size_t)n * sizeof *maskv);
  if (!maskv) return mr_error(ctx, MR_ENOMEM, "out of host memory");
  for (int i = 0; i < n; i++) maskv[i] = i < n_valid ? 0.0f : T5_MASKED;
  mr_scope scope, *s = &scope;
  mr_scope_begin(s, ctx);
  mr_tensor *mask = sc_from_host(s, 1, (int64_t[]){n}, maskv);
  free(maskv);
  /* embedding lookup, no scaling; widened to f32 when stored 16-bit */
  mr_tensor *x = sc_cast(s, sc_gather_rows(s, t5->embed, ids, n), MR_F32);
  for (int l = 0; l < t5->layers && mr_scope_ok(s); l++) {
    size_t mark = mr_scope_mark(s);
    x = mr_scope_collect(s, mark, block_forward(s, t5, &t5->blocks[l], x, buckets, mask), x);
  }
  mr_tensor *y = sc_rms_norm(s, x, t5->norm, T5_EPS);
  mr_status st = mr_scope_end(s, &y);
  *out = y;
  return st;
}

int mr_t5_dim(const mr_t5 *t5) { return t5 ? t5->dim : 0; }

const mr_params *mr_t5_params(const mr_t5 *t5) { return &t5->params; }
