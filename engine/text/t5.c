/* umT5 encoder, Wan's text encoder (wan-architecture.md §1).

   Loads the official `models_t5_umt5-xxl-enc-bf16.pth` naming and the Hugging
   Face / ComfyUI `encoder.block.N.layer.M...` naming; the sizes come from
   tensor shapes. The forward pass is composed from the generic ops:
   attention is q·kᵀ (no 1/sqrt scaling, T5's convention) plus a per-layer
   relative position bias gathered from the layer's [buckets, heads] table and
   a key mask, softmax, ·v. Activations are f32 whatever the weight dtype:
   T5's activations overflow f16. */
#include "text/t5_internal.h"

#include "models/model_util.h"

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
  mr_tensor_free(t5->embed);
  mr_tensor_free(t5->norm);
  for (int i = 0; t5->blocks && i < t5->layers; i++) {
    t5_block *b = &t5->blocks[i];
    mr_tensor *ts[] = {b->norm1, b->q, b->k, b->v, b->o, b->pos, b->norm2, b->gate, b->fc1, b->fc2};
    for (size_t j = 0; j < sizeof ts / sizeof *ts; j++) mr_tensor_free(ts[j]);
  }
  free(t5->blocks);
  free(t5->table);
  free(t5);
}

static mr_status load_block(mr_loader *L, const t5_names *nm, mr_t5 *t5, int i) {
  t5_block *b = &t5->blocks[i];
  int64_t D = t5->dim, A = t5->dim_attn, F = t5->ffn;
  struct {
    mr_tensor **dst;
    const char *fmt;
    bool weight; /* matmul weight (policy dtype) or f32 */
    int ndim;
    int64_t shape[2];
  } items[] = {
      {&b->norm1, nm->norm1, false, 1, {D}},     {&b->q, nm->q, true, 2, {A, D}},
      {&b->k, nm->k, true, 2, {A, D}},           {&b->v, nm->v, true, 2, {A, D}},
      {&b->o, nm->o, true, 2, {D, A}},           {&b->pos, nm->pos, false, 2, {t5->buckets, t5->heads}},
      {&b->norm2, nm->norm2, false, 1, {D}},     {&b->gate, nm->gate, true, 2, {F, D}},
      {&b->fc1, nm->fc1, true, 2, {F, D}},       {&b->fc2, nm->fc2, true, 2, {D, F}},
  };
  for (size_t j = 0; j < sizeof items / sizeof *items; j++) {
    char name[256];
    mr_loader_name(name, sizeof name, items[j].fmt, i);
    mr_status st = items[j].weight ? mr_loader_weight(L, name, items[j].ndim, items[j].shape, items[j].dst)
                                   : mr_loader_f32(L, name, items[j].ndim, items[j].shape, items[j].dst);
    if (st != MR_OK) return st;
  }
  return MR_OK;
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

  int64_t e_shape[2] = {t5->vocab, t5->dim}, n_shape[1] = {t5->dim};
  if (embed_name != nm->embed) L.prefix = outer;
  st = mr_loader_weight(&L, embed_name, 2, e_shape, &t5->embed);
  L.prefix = inner_prefix;
  for (int i = 0; st == MR_OK && i < t5->layers; i++) st = load_block(&L, nm, t5, i);
  if (st == MR_OK) st = mr_loader_f32(&L, nm->norm, 1, n_shape, &t5->norm);
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

int mr_t5_dim(const mr_t5 *t5) { return t5 ? t5->dim : 0; }

/* ------------------------------------------------------------------ forward */

/* Self-attention of one block on the normalised states h [n, dim]:
   o( softmax(q kᵀ + bias + mask) v ), heads split from the projections. */
static mr_status attention(const mr_t5 *t5, const t5_block *b, const mr_tensor *h, const int32_t *buckets,
                           const mr_tensor *mask, mr_tensor **out) {
  int64_t n = mr_tensor_shape(h)[0];
  int64_t split[3] = {n, t5->heads, t5->head_dim}, rows[3] = {n, n, t5->heads}, joined[2] = {n, t5->dim_attn};
  int to_heads[3] = {1, 0, 2}; /* [n, H, Dh] <-> [H, n, Dh] */
  int to_vt[3] = {1, 2, 0};    /* [n, H, Dh] -> [H, Dh, n] */
  int to_bias[3] = {2, 0, 1};  /* [q, k, H] -> [H, q, k] */
  mr_tensor *q = NULL, *k = NULL, *v = NULL, *q3 = NULL, *k3 = NULL, *v3 = NULL, *qh = NULL, *kh = NULL, *vt = NULL;
  mr_tensor *logits = NULL, *brows = NULL, *b3 = NULL, *bh = NULL, *bias = NULL, *scores = NULL, *p = NULL;
  mr_tensor *oh = NULL, *ol = NULL, *oc = NULL, *o2 = NULL;
  mr_status st = mr_op_matmul(h, b->q, NULL, &q);
  if (st == MR_OK) st = mr_op_matmul(h, b->k, NULL, &k);
  if (st == MR_OK) st = mr_op_matmul(h, b->v, NULL, &v);
  if (st == MR_OK) st = mr_tensor_reshape(q, 3, split, &q3);
  if (st == MR_OK) st = mr_tensor_reshape(k, 3, split, &k3);
  if (st == MR_OK) st = mr_tensor_reshape(v, 3, split, &v3);
  if (st == MR_OK) st = mr_tensor_permute(q3, to_heads, &qh);
  if (st == MR_OK) st = mr_tensor_permute(k3, to_heads, &kh);
  if (st == MR_OK) st = mr_tensor_permute(v3, to_vt, &vt);
  /* batched over heads: [H, n, Dh] · [H, n, Dh]ᵀ -> [H, n, n]; no 1/sqrt(Dh) in T5 */
  if (st == MR_OK) st = mr_op_matmul(qh, kh, NULL, &logits);
  /* the layer's bias: rows of its [buckets, H] table per (query, key), as [H, n, n], plus the key mask */
  if (st == MR_OK) st = mr_op_gather_rows(b->pos, buckets, (int)(n * n), &brows);
  if (st == MR_OK) st = mr_tensor_reshape(brows, 3, rows, &b3);
  if (st == MR_OK) st = mr_tensor_permute(b3, to_bias, &bh);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, bh, mask, &bias);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, logits, bias, &scores);
  if (st == MR_OK) st = mr_op_softmax(scores, -1, &p);
  /* [H, n, n] · ([H, Dh, n])ᵀ -> [H, n, Dh] */
  if (st == MR_OK) st = mr_op_matmul(p, vt, NULL, &oh);
  if (st == MR_OK) st = mr_tensor_permute(oh, to_heads, &ol);
  if (st == MR_OK) st = mr_tensor_contiguous(ol, &oc);
  if (st == MR_OK) st = mr_tensor_reshape(oc, 2, joined, &o2);
  if (st == MR_OK) st = mr_op_matmul(o2, b->o, NULL, out);
  mr_tensor *tmp[] = {q, k, v, q3, k3, v3, qh, kh, vt, logits, brows, b3, bh, bias, scores, p, oh, ol, oc, o2};
  for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) mr_tensor_free(tmp[i]);
  return st;
}

/* One block: x + attn(norm1(x)), then + fc2(fc1(h) * gelu_tanh(gate(h))) with h = norm2(x). */
static mr_status block_forward(const mr_t5 *t5, const t5_block *b, const mr_tensor *x, const int32_t *buckets,
                               const mr_tensor *mask, mr_tensor **out) {
  mr_tensor *h = NULL, *a = NULL, *x1 = NULL, *h2 = NULL, *g = NULL, *ga = NULL, *f = NULL, *fg = NULL, *y = NULL;
  mr_status st = mr_op_rms_norm(x, b->norm1, T5_EPS, &h);
  if (st == MR_OK) st = attention(t5, b, h, buckets, mask, &a);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, x, a, &x1);
  if (st == MR_OK) st = mr_op_rms_norm(x1, b->norm2, T5_EPS, &h2);
  if (st == MR_OK) st = mr_op_matmul(h2, b->gate, NULL, &g);
  if (st == MR_OK) st = mr_op_unary(MR_UNARY_GELU_TANH, g, &ga);
  if (st == MR_OK) st = mr_op_matmul(h2, b->fc1, NULL, &f);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_MUL, f, ga, &fg);
  if (st == MR_OK) st = mr_op_matmul(fg, b->fc2, NULL, &y);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, x1, y, out);
  mr_tensor *tmp[] = {h, a, x1, h2, g, ga, f, fg, y};
  for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) mr_tensor_free(tmp[i]);
  return st;
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
  mr_tensor *mask = NULL, *e = NULL, *x = NULL;
  mr_status st = MR_OK;
  if (!maskv) {
    st = mr_error(ctx, MR_ENOMEM, "out of host memory");
    goto done;
  }
  for (int i = 0; i < n; i++) maskv[i] = i < n_valid ? 0.0f : T5_MASKED;
  int64_t mshape[1] = {n};
  st = mr_tensor_from_host(ctx, MR_F32, 1, mshape, MR_F32, maskv, &mask);
  /* embedding lookup, no scaling; widened to f32 when stored 16-bit */
  if (st == MR_OK) st = mr_op_gather_rows(t5->embed, ids, n, &e);
  if (st == MR_OK) st = mr_tensor_dtype(e) == MR_F32 ? mr_tensor_contiguous(e, &x) : mr_tensor_cast(e, MR_F32, &x);
  for (int l = 0; st == MR_OK && l < t5->layers; l++) {
    mr_tensor *next = NULL;
    st = block_forward(t5, &t5->blocks[l], x, buckets, mask, &next);
    mr_tensor_free(x);
    x = next;
    /* Submit each block: its temporaries are released before the next one
       allocates (an XXL block at 512 tokens holds several [64, 512, 512] f32
       tensors), and an interrupt is seen within one block. */
    if (st == MR_OK) st = mr_ctx_sync(ctx);
  }
  if (st == MR_OK) st = mr_op_rms_norm(x, t5->norm, T5_EPS, out);
done:
  mr_tensor_free(x);
  mr_tensor_free(e);
  mr_tensor_free(mask);
  free(maskv);
  return st;
}
