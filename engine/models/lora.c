/* LoRA adapters in the namings Wan adapters ship in (docs/wan-architecture.md §9),
   resolved against a component's parameter table:
   - original / ComfyUI: `diffusion_model.` (or no prefix) + the official
     module name, `.lora_A.weight` / `.lora_B.weight` or `.lora_down` /
     `.lora_up`, `.alpha`; `.diff` (a full delta of any parameter) and
     `.diff_b` (of a bias);
   - kohya / musubi: `lora_unet_` + the module path with `.` as `_`;
   - diffusers / PEFT: `transformer.` + diffusers module names, mapped back;
   - LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`) and LoKr
     (`lokr_w1` or `lokr_w1_a`·`lokr_w1_b`, `lokr_w2` or its factors), made
     into full deltas at load; DoRA (`dora_scale` beside A/B), merged by
     ComfyUI's rule (dora_apply).
   W' = W + strength · (alpha / rank) · B A (scale 1 without alpha);
   W' = W + strength · diff. Merged adapters rewrite the weights from a
   kept base copy, in f32, so strengths change and adapters come off exactly;
   on-the-fly ones leave the weights alone and the forward adds
   strength · scale · (x Aᵀ) Bᵀ. */
#include "models/lora.h"

#include "tensor/dtype.h"
#include "tensor/shape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum entry_kind {
  E_LOWRANK, /* a, b: A [r, in], B [out, r] */
  E_DELTA,   /* a: the full delta, the parameter's shape (diff, diff_b, LoHa, LoKr) */
  E_DORA     /* a, b as LOWRANK, m: the magnitude (dora_scale), [out] or [in] values */
} entry_kind;

typedef struct lora_entry {
  int param;
  entry_kind kind;
  mr_tensor *a, *b, *m;
  float scale;               /* alpha / rank, or 1 */
} lora_entry;

struct mr_lora {
  mr_lora_set *set;
  char *name;
  const char *naming;
  float strength;
  mr_lora_mode mode;         /* resolved: MERGE or ON_THE_FLY */
  bool chosen;               /* the caller chose the mode (not AUTO) */
  lora_entry *e;
  int n;
  int keys, unmatched;
  mr_lora *next;
};

mr_lora_opts mr_lora_opts_default(void) { return (mr_lora_opts){.strength = 1.0f, .mode = MR_LORA_AUTO}; }

void mr_lora_set_init(mr_lora_set *set, mr_ctx *ctx, mr_params *params) {
  *set = (mr_lora_set){.ctx = ctx, .params = params};
}

/* ------------------------------------------------------------------ naming */

typedef enum part {
  P_A, P_B, P_ALPHA, P_DIFF, P_DIFF_B, P_H1A, P_H1B, P_H2A, P_H2B, P_K1, P_K1A, P_K1B, P_K2, P_K2A, P_K2B, P_DORA,
  P_COUNT
} part;

static const struct { const char *suffix; part p; } SUFFIXES[] = {
    {".lora_A.weight", P_A},       {".lora_B.weight", P_B},     {".lora_down.weight", P_A}, {".lora_up.weight", P_B},
    {".alpha", P_ALPHA},           {".diff_b", P_DIFF_B},       {".diff", P_DIFF},          {".hada_w1_a", P_H1A},
    {".hada_w1_b", P_H1B},         {".hada_w2_a", P_H2A},       {".hada_w2_b", P_H2B},      {".lokr_w1_a", P_K1A},
    {".lokr_w1_b", P_K1B},         {".lokr_w1", P_K1},          {".lokr_w2_a", P_K2A},      {".lokr_w2_b", P_K2B},
    {".lokr_w2", P_K2},            {".dora_scale", P_DORA},
};

/* diffusers module names -> official (substring replacements, in order). */
static const char *const DIFFUSERS[][2] = {
    {"attn1.to_out.0", "self_attn.o"}, {"attn2.to_out.0", "cross_attn.o"}, {"attn1.to_q", "self_attn.q"},
    {"attn1.to_k", "self_attn.k"},     {"attn1.to_v", "self_attn.v"},      {"attn2.to_q", "cross_attn.q"},
    {"attn2.to_k", "cross_attn.k"},    {"attn2.to_v", "cross_attn.v"},     {"attn2.add_k_proj", "cross_attn.k_img"},
    {"attn2.add_v_proj", "cross_attn.v_img"}, {"ffn.net.0.proj", "ffn.0"}, {"ffn.net.2", "ffn.2"},
    {"condition_embedder.time_embedder.linear_1", "time_embedding.0"},
    {"condition_embedder.time_embedder.linear_2", "time_embedding.2"},
    {"condition_embedder.text_embedder.linear_1", "text_embedding.0"},
    {"condition_embedder.text_embedder.linear_2", "text_embedding.2"},
    {"condition_embedder.time_proj", "time_projection.1"},
    {"condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"},
    {"condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"},
    {"proj_in", "before_proj"},
};

/* One module of the adapter file: its key indices per part. */
typedef struct module {
  char name[192];      /* as in the file, prefix and suffix removed */
  int key[P_COUNT];    /* -1 when absent */
} module;

static void replace_all(char *s, size_t cap, const char *from, const char *to) {
  char out[256];
  size_t n = 0, fl = strlen(from), tl = strlen(to);
  for (const char *p = s; *p && n + 1 < sizeof out;) {
    if (strncmp(p, from, fl) == 0 && n + tl < sizeof out) {
      memcpy(out + n, to, tl);
      n += tl;
      p += fl;
    } else {
      out[n++] = *p++;
    }
  }
  out[n] = 0;
  snprintf(s, cap, "%s", out);
}

/* The parameter a module's weight (bias: want_bias) is, or -1. */
static int resolve(const mr_params *P, const char *module_name, const char *naming, bool want_bias) {
  char name[256];
  snprintf(name, sizeof name, "%s", module_name);
  if (strcmp(naming, "diffusers") == 0) {
    for (size_t i = 0; i < sizeof DIFFUSERS / sizeof *DIFFUSERS; i++) replace_all(name, sizeof name, DIFFUSERS[i][0], DIFFUSERS[i][1]);
    /* proj_out is the head outside the VACE blocks, after_proj inside them */
    if (strncmp(name, "vace_blocks.", 12) == 0) replace_all(name, sizeof name, "proj_out", "after_proj");
    else if (strcmp(name, "proj_out") == 0) snprintf(name, sizeof name, "head.head");
  }
  char full[300];
  if (strcmp(naming, "kohya") == 0) { /* dots became underscores: compare in that form */
    for (int i = 0; i < P->n; i++) {
      const char *pn = P->p[i].name;
      size_t pl = strlen(pn), sl = want_bias ? 5 : 7; /* ".bias" / ".weight" */
      if (pl <= sl || strcmp(pn + pl - sl, want_bias ? ".bias" : ".weight") != 0) continue;
      if (pl - sl != strlen(name)) continue;
      bool same = true;
      for (size_t k = 0; same && k < pl - sl; k++) same = (pn[k] == '.' ? '_' : pn[k]) == name[k];
      if (same) return i;
    }
    return -1;
  }
  snprintf(full, sizeof full, "%s%s", name, want_bias ? ".bias" : ".weight");
  return mr_params_find(P, full);
}

/* ------------------------------------------------------------------ loading */

static mr_status upload(mr_ctx *ctx, const mr_weights *w, int key, mr_tensor **out) {
  return mr_weights_to_tensor(ctx, w, key, MR_F32, out);
}

/* A scalar entry (alpha) as a float, whatever its stored dtype. */
static float scalar(const mr_weights *w, int key, float dflt) {
  mr_weight_info info;
  if (key < 0 || mr_weights_get(w, key, &info) != MR_OK || info.nbytes != mr_dtype_size(info.dtype)) return dflt;
  float v;
  mr_convert(MR_F32, &v, info.dtype, info.data, 1);
  return isfinite(v) ? v : dflt;
}

/* a · b as matrices ([m, k] · [k, n]) through mr_op_matmul, which takes bᵀ.
   full_delta has checked the factors' shapes (factors_fit). */
static mr_status matprod(const mr_tensor *a, const mr_tensor *b, mr_tensor **out) {
  MR_ASSERT(mr_tensor_ndim(a) == 2 && mr_tensor_ndim(b) == 2);
  mr_tensor *bt = NULL;
  int perm[2] = {1, 0};
  mr_status st = mr_tensor_permute((mr_tensor *)b, perm, &bt);
  if (st == MR_OK) st = mr_op_matmul(a, bt, NULL, out);
  mr_tensor_free(bt);
  return st;
}

/* The shape of a factor in the file, if it is a matrix with no empty side. */
static bool factor_shape(const mr_weights *w, int key, int64_t *rows, int64_t *cols) {
  mr_weight_info info;
  if (key < 0 || mr_weights_get(w, key, &info) != MR_OK || info.ndim != 2) return false;
  *rows = info.shape[0];
  *cols = info.shape[1];
  return *rows > 0 && *cols > 0;
}

/* The shape of a factor given whole (key full) or as key_a · key_b. */
static bool product_shape(const mr_weights *w, int full, int key_a, int key_b, int64_t *rows, int64_t *cols) {
  if (full >= 0) return factor_shape(w, full, rows, cols);
  int64_t r1, c1, r2, c2;
  if (!factor_shape(w, key_a, &r1, &c1) || !factor_shape(w, key_b, &r2, &c2) || c1 != r2) return false;
  *rows = r1;
  *cols = c2;
  return true;
}

/* Whether a LoHa or LoKr module's factors, as the file declares them, make
   exactly the [rows, cols] delta of the parameter. Checked before anything
   is uploaded: the delta is computed at the size its factors declare, and a
   LoKr of two 512K-element factors would declare 2^38 elements. */
static bool factors_fit(const mr_weights *w, const module *m, bool loha, int ndim, const int64_t *shape) {
  int64_t xr, xc, yr, yc;
  if (ndim != 2) return false;
  if (loha)
    return product_shape(w, -1, m->key[P_H1A], m->key[P_H1B], &xr, &xc) &&
           product_shape(w, -1, m->key[P_H2A], m->key[P_H2B], &yr, &yc) && xr == shape[0] && xc == shape[1] &&
           yr == shape[0] && yc == shape[1];
  /* kron(w1, w2) is [xr yr, xc yc]; each side at most the weight's, so the products cannot overflow */
  return product_shape(w, m->key[P_K1], m->key[P_K1A], m->key[P_K1B], &xr, &xc) &&
         product_shape(w, m->key[P_K2], m->key[P_K2A], m->key[P_K2B], &yr, &yc) && xr <= shape[0] &&
         yr <= shape[0] && xc <= shape[1] && yc <= shape[1] && xr * yr == shape[0] && xc * yc == shape[1];
}

/* The full delta of a LoHa or LoKr module, f32, in the parameter's shape. */
static mr_status full_delta(mr_ctx *ctx, const mr_weights *w, const module *m, bool loha, int ndim,
                            const int64_t *shape, float *scale, mr_tensor **out) {
  mr_tensor *t[6] = {NULL}, *x = NULL, *y = NULL, *d = NULL;
  mr_status st = MR_OK;
  *out = NULL;
  int rank = 0;
  if (!factors_fit(w, m, loha, ndim, shape)) {
    char b[64];
    return mr_error(ctx, MR_EFORMAT,
                    "%s '%s': its factors (matrices, %s) do not make the delta of a %s weight", loha ? "LoHa" : "LoKr",
                    m->name, loha ? "(w1_a w1_b) * (w2_a w2_b)" : "kron(w1, w2), each whole or as _a _b",
                    mr_shape_str(ndim, shape, b, sizeof b));
  }
  if (loha) {
    const part ps[4] = {P_H1A, P_H1B, P_H2A, P_H2B};
    for (int i = 0; i < 4 && st == MR_OK; i++) st = upload(ctx, w, m->key[ps[i]], &t[i]);
    if (st == MR_OK) rank = (int)mr_tensor_shape(t[1])[0];
    if (st == MR_OK) st = matprod(t[0], t[1], &x);
    if (st == MR_OK) st = matprod(t[2], t[3], &y);
    if (st == MR_OK) st = mr_op_binary(MR_BINARY_MUL, x, y, &d);
  } else {
    /* w1 [a, b] (or w1_a w1_b), w2 [c, d] (or w2_a w2_b): kron(w1, w2)[i c + k, j d + l] = w1[i, j] w2[k, l] */
    if (m->key[P_K1] >= 0) st = upload(ctx, w, m->key[P_K1], &x);
    else if ((st = upload(ctx, w, m->key[P_K1A], &t[0])) == MR_OK && (st = upload(ctx, w, m->key[P_K1B], &t[1])) == MR_OK) {
      rank = (int)mr_tensor_shape(t[1])[0];
      st = matprod(t[0], t[1], &x);
    }
    if (st == MR_OK && m->key[P_K2] >= 0) st = upload(ctx, w, m->key[P_K2], &y);
    else if (st == MR_OK && (st = upload(ctx, w, m->key[P_K2A], &t[2])) == MR_OK &&
             (st = upload(ctx, w, m->key[P_K2B], &t[3])) == MR_OK) {
      rank = (int)mr_tensor_shape(t[3])[0];
      st = matprod(t[2], t[3], &y);
    }
    if (st == MR_OK && (mr_tensor_ndim(x) != 2 || mr_tensor_ndim(y) != 2))
      st = mr_error(ctx, MR_EFORMAT, "LoKr '%s': factors must be 2-D", m->name);
    if (st == MR_OK) {
      const int64_t *a = mr_tensor_shape(x), *c = mr_tensor_shape(y);
      int64_t s1[4] = {a[0], 1, a[1], 1}, s2[4] = {1, c[0], 1, c[1]}, s4[2] = {a[0] * c[0], a[1] * c[1]};
      mr_tensor *x4 = NULL, *y4 = NULL, *k4 = NULL;
      st = mr_tensor_reshape(x, 4, s1, &x4);
      if (st == MR_OK) st = mr_tensor_reshape(y, 4, s2, &y4);
      if (st == MR_OK) st = mr_op_binary(MR_BINARY_MUL, x4, y4, &k4);
      if (st == MR_OK) st = mr_tensor_reshape(k4, 2, s4, &d);
      mr_tensor_free(x4);
      mr_tensor_free(y4);
      mr_tensor_free(k4);
    }
  }
  /* alpha / rank where a low-rank factor gives the rank (LoKr with full factors: 1) */
  float alpha = scalar(w, m->key[P_ALPHA], (float)rank);
  *scale = rank > 0 ? alpha / (float)rank : 1.0f;
  if (st == MR_OK && (mr_tensor_ndim(d) != ndim ||
                      memcmp(mr_tensor_shape(d), shape, (size_t)ndim * sizeof *shape) != 0)) {
    char a[64], b[64];
    st = mr_error(ctx, MR_EFORMAT, "%s '%s' makes a %s delta for a %s weight", loha ? "LoHa" : "LoKr", m->name,
                  mr_shape_str(mr_tensor_ndim(d), mr_tensor_shape(d), a, sizeof a), mr_shape_str(ndim, shape, b, sizeof b));
  }
  for (int i = 0; i < 6; i++) mr_tensor_free(t[i]);
  mr_tensor_free(x);
  mr_tensor_free(y);
  if (st != MR_OK) mr_tensor_free(d);
  else *out = d;
  return st;
}

static void lora_free(mr_lora *l) {
  if (!l) return;
  for (int i = 0; i < l->n; i++) {
    mr_tensor_free(l->e[i].a);
    mr_tensor_free(l->e[i].b);
    mr_tensor_free(l->e[i].m);
  }
  free(l->e);
  free(l->name);
  free(l);
}

static mr_status add_entry(mr_lora *l, lora_entry e) {
  lora_entry *ne = realloc(l->e, (size_t)(l->n + 1) * sizeof *ne);
  if (!ne) {
    mr_tensor_free(e.a);
    mr_tensor_free(e.b);
    mr_tensor_free(e.m);
    return mr_error(l->set->ctx, MR_ENOMEM, "out of host memory");
  }
  l->e = ne;
  l->e[l->n++] = e;
  return MR_OK;
}

/* Elements of a parameter, from its declared shape. */
static int64_t param_numel(const mr_param *pp) {
  int64_t n = 1;
  for (int d = 0; d < pp->ndim; d++) n *= pp->shape[d];
  return n;
}

/* Turns module m into entries of l; *matched says whether it hit a parameter. */
static mr_status add_module(mr_lora *l, const mr_weights *w, const module *m, const char *what, bool *matched) {
  mr_ctx *ctx = l->set->ctx;
  const mr_params *P = l->set->params;
  *matched = false;
  mr_status st = MR_OK;
  if (m->key[P_DORA] >= 0 && (m->key[P_A] < 0 || m->key[P_B] < 0))
    return mr_error(ctx, MR_EUNSUPPORTED, "LoRA '%s': '%s' has a dora_scale without lora_A/B (down/up)", l->name,
                    m->name);
  bool lowrank = m->key[P_A] >= 0 || m->key[P_B] >= 0;
  bool loha = m->key[P_H1A] >= 0, lokr = m->key[P_K1] >= 0 || m->key[P_K1A] >= 0;
  if (lowrank || loha || lokr || m->key[P_DIFF] >= 0) {
    int p = resolve(P, m->name, l->naming, false);
    if (p >= 0) {
      *matched = true;
      const mr_param *pp = &P->p[p];
      char want[64], got[64];
      if (lowrank) {
        lora_entry e = {.param = p, .kind = E_LOWRANK};
        if (m->key[P_A] < 0 || m->key[P_B] < 0)
          return mr_error(ctx, MR_EFORMAT, "LoRA '%s': '%s' has %s but not %s", l->name, m->name,
                          m->key[P_A] < 0 ? "B (up)" : "A (down)", m->key[P_A] < 0 ? "A (down)" : "B (up)");
        if ((st = upload(ctx, w, m->key[P_A], &e.a)) != MR_OK || (st = upload(ctx, w, m->key[P_B], &e.b)) != MR_OK) {
          mr_tensor_free(e.a);
          return st;
        }
        const int64_t *as = mr_tensor_shape(e.a), *bs = mr_tensor_shape(e.b);
        /* conv-shaped factors ([r, in, 1, 1, 1]) of a linear are accepted as matrices */
        /* a rank of 0 (an empty A) is refused by the check, not divided by */
        int64_t r = as[0], in = r > 0 ? mr_tensor_numel(e.a) / r : 0, out = bs[0];
        bool ok = r > 0 && pp->ndim >= 2 && mr_tensor_numel(e.b) == out * r && out == pp->shape[0] &&
                  in * pp->shape[0] == param_numel(pp);
        if (!ok) {
          int64_t ws[2] = {out, in};
          st = mr_error(ctx, MR_EFORMAT, "LoRA '%s': '%s' is %s (B A, rank %lld) in the adapter but %s in the %s",
                        l->name, m->name, mr_shape_str(2, ws, got, sizeof got), (long long)r,
                        mr_shape_str(pp->ndim, pp->shape, want, sizeof want), what);
          mr_tensor_free(e.a);
          mr_tensor_free(e.b);
          return st;
        }
        int64_t a2[2] = {r, in}, b2[2] = {out, r};
        mr_tensor *av = NULL, *bv = NULL;
        if ((st = mr_tensor_reshape(e.a, 2, a2, &av)) == MR_OK) st = mr_tensor_reshape(e.b, 2, b2, &bv);
        mr_tensor_free(e.a);
        mr_tensor_free(e.b);
        e.a = av;
        e.b = bv;
        if (st != MR_OK) {
          mr_tensor_free(av);
          return st;
        }
        e.scale = m->key[P_ALPHA] >= 0 ? scalar(w, m->key[P_ALPHA], (float)r) / (float)r : 1.0f;
        if (m->key[P_DORA] >= 0) { /* DoRA: the magnitude per output row or per input column */
          e.kind = E_DORA;
          if ((st = upload(ctx, w, m->key[P_DORA], &e.m)) == MR_OK && mr_tensor_numel(e.m) != out &&
              mr_tensor_numel(e.m) != in) {
            st = mr_error(ctx, MR_EFORMAT, "LoRA '%s': '%s.dora_scale' has %lld values; the weight has %lld rows, "
                          "%lld columns", l->name, m->name, (long long)mr_tensor_numel(e.m), (long long)out,
                          (long long)in);
          }
          if (st != MR_OK) {
            mr_tensor_free(e.a);
            mr_tensor_free(e.b);
            mr_tensor_free(e.m);
            return st;
          }
        }
        if ((st = add_entry(l, e)) != MR_OK) return st;
      }
      if (loha || lokr) {
        lora_entry e = {.param = p, .kind = E_DELTA};
        if ((st = full_delta(ctx, w, m, loha, pp->ndim, pp->shape, &e.scale, &e.a)) != MR_OK) return st;
        if ((st = add_entry(l, e)) != MR_OK) return st;
      }
      if (m->key[P_DIFF] >= 0) {
        lora_entry e = {.param = p, .kind = E_DELTA, .scale = 1.0f};
        if ((st = upload(ctx, w, m->key[P_DIFF], &e.a)) != MR_OK) return st;
        if (mr_tensor_numel(e.a) != param_numel(pp)) {
          st = mr_error(ctx, MR_EFORMAT, "LoRA '%s': '%s.diff' is %s, the %s's '%s' is %s", l->name, m->name,
                        mr_shape_str(mr_tensor_ndim(e.a), mr_tensor_shape(e.a), got, sizeof got), what, pp->name,
                        mr_shape_str(pp->ndim, pp->shape, want, sizeof want));
          mr_tensor_free(e.a);
          return st;
        }
        if ((st = add_entry(l, e)) != MR_OK) return st;
      }
    }
  }
  if (m->key[P_DIFF_B] >= 0) {
    int p = resolve(P, m->name, l->naming, true);
    if (p >= 0) {
      *matched = true;
      lora_entry e = {.param = p, .kind = E_DELTA, .scale = 1.0f};
      if ((st = upload(ctx, w, m->key[P_DIFF_B], &e.a)) != MR_OK) return st;
      int64_t values = mr_tensor_numel(e.a);
      if (values != P->p[p].shape[0]) {
        mr_tensor_free(e.a); /* the message is made from `values`, not from the freed tensor */
        return mr_error(ctx, MR_EFORMAT, "LoRA '%s': '%s.diff_b' has %lld values for a bias of %lld", l->name, m->name,
                        (long long)values, (long long)P->p[p].shape[0]);
      }
      if ((st = add_entry(l, e)) != MR_OK) return st;
    }
  }
  return MR_OK;
}

/* The modules of w: keys grouped by their name without the naming's prefix
   and the part suffix. Returns the count; *naming says which prefix. */
static mr_status collect(mr_ctx *ctx, const mr_weights *w, const char *file, module **out, int *n, const char **naming) {
  static const struct { const char *prefix, *naming; } PREFIXES[] = {
      {"model.diffusion_model.", "original"}, {"diffusion_model.", "original"}, {"base_model.model.", "diffusers"},
      {"transformer.", "diffusers"}, {"lora_unet_", "kohya"}, {"", "original"}};
  *out = NULL;
  *n = 0;
  *naming = NULL;
  int cap = 0, count = mr_weights_count(w);
  module *ms = NULL;
  for (int i = 0; i < count; i++) {
    mr_weight_info info;
    if (mr_weights_get(w, i, &info) != MR_OK) continue;
    const char *k = info.name;
    size_t kl = strlen(k);
    int sfx = -1;
    for (size_t s = 0; s < sizeof SUFFIXES / sizeof *SUFFIXES && sfx < 0; s++) {
      size_t sl = strlen(SUFFIXES[s].suffix);
      if (kl > sl && strcmp(k + kl - sl, SUFFIXES[s].suffix) == 0) sfx = (int)s;
    }
    if (sfx < 0) continue; /* not a part of an adapter */
    size_t pi = 0;
    while (strncmp(k, PREFIXES[pi].prefix, strlen(PREFIXES[pi].prefix)) != 0) pi++;
    const char *nm = PREFIXES[pi].naming;
    if (*naming && strcmp(*naming, nm) != 0 && pi + 1 < sizeof PREFIXES / sizeof *PREFIXES) {
      free(ms);
      return mr_error(ctx, MR_EFORMAT, "LoRA '%s' mixes the %s and %s namings ('%s')", file, *naming, nm, k);
    }
    if (!*naming) *naming = nm;
    size_t plen = strlen(PREFIXES[pi].prefix), mlen = kl - plen - strlen(SUFFIXES[sfx].suffix);
    if (mlen == 0 || mlen >= sizeof ms->name) continue;
    int j = 0;
    while (j < *n && !(strlen(ms[j].name) == mlen && strncmp(ms[j].name, k + plen, mlen) == 0)) j++;
    if (j == *n) {
      if (*n == cap) {
        cap = cap ? 2 * cap : 64;
        module *nms = realloc(ms, (size_t)cap * sizeof *nms);
        if (!nms) {
          free(ms);
          return mr_error(ctx, MR_ENOMEM, "out of host memory");
        }
        ms = nms;
      }
      memset(&ms[j], 0, sizeof ms[j]);
      for (int q = 0; q < P_COUNT; q++) ms[j].key[q] = -1;
      memcpy(ms[j].name, k + plen, mlen);
      (*n)++;
    }
    ms[j].key[SUFFIXES[sfx].p] = i;
  }
  *out = ms;
  return MR_OK;
}

/* ------------------------------------------------------------------ applying */

/* DoRA on the weight so far, w [out, in] f32, as ComfyUI computes it (the
   reference the Wan ecosystem's DoRA adapters are made for):
     c = w + scale·B·A
     norm = |rows of w| (a magnitude per output row) or |columns of c| (per
            input column), plus f32's epsilon
     w' = w + strength·(c·(m / norm) − w)
   The norms are taken on the host in double (one pass over the weight). */
static mr_status dora_apply(mr_ctx *ctx, const lora_entry *e, float strength, mr_tensor **w) {
  const int64_t *ws = mr_tensor_shape(*w);
  int64_t out = ws[0], in = mr_tensor_numel(*w) / ws[0];
  /* as ComfyUI decides: the magnitude's first dimension is the weight's rows */
  bool per_row = mr_tensor_shape(e->m)[0] == out && mr_tensor_numel(e->m) == out;
  mr_tensor *ba = NULL, *sba = NULL, *c = NULL, *f = NULL, *cf = NULL, *next = NULL;
  float *host = malloc((size_t)(out * in) * sizeof *host), *fac = malloc((size_t)(per_row ? out : in) * sizeof *fac),
        *mag = malloc((size_t)(per_row ? out : in) * sizeof *mag);
  mr_status st = host && fac && mag ? MR_OK : mr_error(ctx, MR_ENOMEM, "out of host memory");
  if (st == MR_OK) st = matprod(e->b, e->a, &ba);
  if (st == MR_OK) st = mr_op_scale(ba, e->scale, 0.0f, &sba);
  mr_tensor *sbr = NULL;
  if (st == MR_OK) st = mr_tensor_reshape(sba, mr_tensor_ndim(*w), ws, &sbr);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, *w, sbr, &c);
  if (st == MR_OK) st = mr_tensor_read(per_row ? *w : c, MR_F32, host, (size_t)(out * in));
  if (st == MR_OK) st = mr_tensor_read(e->m, MR_F32, mag, (size_t)(per_row ? out : in));
  if (st == MR_OK) {
    int64_t n = per_row ? out : in;
    for (int64_t k = 0; k < n; k++) {
      double ss = 0;
      for (int64_t j = 0; j < (per_row ? in : out); j++) {
        double v = per_row ? host[k * in + j] : host[j * in + k];
        ss += v * v;
      }
      fac[k] = (float)(mag[k] / (sqrt(ss) + 1.1920929e-7));
    }
    int64_t fs[2] = {per_row ? out : 1, per_row ? 1 : in};
    st = mr_tensor_from_host(ctx, MR_F32, 2, fs, MR_F32, fac, &f);
  }
  mr_tensor *c2 = NULL;
  int64_t c2s[2] = {out, in};
  if (st == MR_OK) st = mr_tensor_reshape(c, 2, c2s, &c2);
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_MUL, c2, f, &cf);
  mr_tensor *cfr = NULL;
  if (st == MR_OK) st = mr_tensor_reshape(cf, mr_tensor_ndim(*w), ws, &cfr);
  const mr_tensor *parts[2] = {*w, cfr};
  const float coef[2] = {1.0f - strength, strength};
  if (st == MR_OK) st = mr_op_lincomb(2, parts, coef, &next);
  if (st == MR_OK) {
    mr_tensor_free(*w);
    *w = next;
  }
  mr_tensor *all[] = {ba, sba, sbr, c, c2, f, cf, cfr};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) mr_tensor_free(all[i]);
  free(host);
  free(fac);
  free(mag);
  return st;
}

/* Whether entry e of l changes the weights (rather than the forward): every
   full delta, and low-rank ones merged, or on a parameter that is not a
   linear's 2-D weight (the forward adds terms only to linears). */
static bool merged(const mr_lora *l, const lora_entry *e) {
  return l->mode == MR_LORA_MERGE || e->kind != E_LOWRANK || l->set->params->p[e->param].ndim != 2;
}

/* Rewrites parameter p from its base and every merged adapter's entries on
   it; with none left, restores the base and drops the copy. */
static mr_status remerge(mr_lora_set *set, int p) {
  mr_tensor *w = *set->params->p[p].slot;
  mr_status st = MR_OK;
  bool any = false;
  for (mr_lora *l = set->first; l && !any; l = l->next)
    for (int i = 0; i < l->n && !any; i++)
      any = l->e[i].param == p && merged(l, &l->e[i]);
  if (!set->base[p]) {
    if (!any) return MR_OK;
    if ((st = mr_tensor_cast(w, mr_tensor_dtype(w), &set->base[p])) != MR_OK) return st; /* a copy */
  }
  if (!any) {
    st = mr_tensor_copy(w, set->base[p]);
    mr_tensor_free(set->base[p]);
    set->base[p] = NULL;
    return st;
  }
  mr_tensor *acc = NULL;
  if ((st = mr_tensor_cast(set->base[p], MR_F32, &acc)) != MR_OK) return st;
  /* oldest first, as they were attached: a DoRA module normalises what the
     adapters before it made */
  int count = 0;
  for (mr_lora *l = set->first; l; l = l->next) count++;
  mr_lora **order = malloc((size_t)(count ? count : 1) * sizeof *order);
  if (!order) {
    mr_tensor_free(acc);
    return mr_error(set->ctx, MR_ENOMEM, "out of host memory");
  }
  int k = count;
  for (mr_lora *l = set->first; l; l = l->next) order[--k] = l;
  for (int li = 0; li < count && st == MR_OK; li++) {
    mr_lora *l = order[li];
    for (int i = 0; i < l->n && st == MR_OK; i++) {
      const lora_entry *e = &l->e[i];
      if (e->param != p || !merged(l, e) || l->strength == 0.0f) continue;
      if (e->kind == E_DORA) {
        st = dora_apply(set->ctx, e, l->strength, &acc);
        continue;
      }
      mr_tensor *d = NULL, *dv = NULL, *dr = NULL, *sum = NULL;
      if (e->kind == E_LOWRANK) st = matprod(e->b, e->a, &d);
      else st = mr_tensor_contiguous(e->a, &d);
      if (st == MR_OK) st = mr_op_scale(d, l->strength * e->scale, 0.0f, &dv);
      if (st == MR_OK) st = mr_tensor_reshape(dv, mr_tensor_ndim(acc), mr_tensor_shape(acc), &dr);
      if (st == MR_OK) st = mr_op_binary(MR_BINARY_ADD, acc, dr, &sum);
      if (st == MR_OK) {
        mr_tensor_free(acc);
        acc = sum;
        sum = NULL;
      }
      mr_tensor_free(d);
      mr_tensor_free(dv);
      mr_tensor_free(dr);
      mr_tensor_free(sum);
    }
  }
  free(order);
  if (st == MR_OK) st = mr_tensor_copy(w, acc); /* back to the storage dtype */
  mr_tensor_free(acc);
  return st;
}

static mr_status remerge_all(mr_lora *l) {
  mr_status st = MR_OK;
  for (int i = 0; i < l->n && st == MR_OK; i++) {
    bool dup = false; /* each parameter once */
    for (int j = 0; j < i && !dup; j++) dup = l->e[j].param == l->e[i].param;
    if (!dup) st = remerge(l->set, l->e[i].param);
  }
  return st;
}

mr_status mr_lora_attach(mr_lora_set *set, const mr_weights *w, const char *what, const char *name,
                         const mr_lora_opts *opts, mr_lora **out) {
  mr_ctx *ctx = set->ctx;
  *out = NULL;
  mr_lora_opts o = opts ? *opts : mr_lora_opts_default();
  if (!isfinite(o.strength)) return mr_error(ctx, MR_EINVAL, "LoRA '%s': strength must be a finite number", name);
  if ((unsigned)o.mode > MR_LORA_ON_THE_FLY) return mr_error(ctx, MR_EINVAL, "LoRA '%s': unknown mode %d", name, (int)o.mode);
  if (!set->base) {
    if (!(set->base = calloc((size_t)set->params->n, sizeof *set->base))) return mr_error(ctx, MR_ENOMEM, "out of host memory");
    set->nbase = set->params->n;
  }
  module *ms = NULL;
  int nm = 0;
  const char *naming = NULL;
  mr_status st = collect(ctx, w, name, &ms, &nm, &naming);
  if (st != MR_OK) return st;
  mr_lora *l = calloc(1, sizeof *l);
  if (!l || !(l->name = strdup(name))) {
    free(l);
    free(ms);
    return mr_error(ctx, MR_ENOMEM, "out of host memory");
  }
  l->set = set;
  l->naming = naming ? naming : "original";
  l->strength = o.strength;
  l->keys = nm;
  char first[3][200];
  int nfirst = 0;
  for (int i = 0; i < nm && st == MR_OK; i++) {
    bool matched;
    st = add_module(l, w, &ms[i], what, &matched);
    if (st == MR_OK && !matched) {
      if (nfirst < 3) snprintf(first[nfirst++], sizeof first[0], "%s", ms[i].name);
      l->unmatched++;
    }
  }
  free(ms);
  if (st == MR_OK && l->n == 0)
    st = mr_error(ctx, MR_EFORMAT, "LoRA '%s' matches no parameter of the %s (%d modules, %s naming; first: %s%s%s%s%s)",
                  name, what, nm, l->naming, nfirst ? first[0] : "none", nfirst > 1 ? ", " : "",
                  nfirst > 1 ? first[1] : "", nfirst > 2 ? ", " : "", nfirst > 2 ? first[2] : "");
  if (st != MR_OK) {
    lora_free(l);
    return st;
  }
  /* On the fly is the default for 16-bit weights (a merge would round the
     base into the delta); f32 weights merge exactly enough. */
  mr_dtype wt = MR_F32;
  for (int i = 0; i < l->n; i++)
    if (set->params->p[l->e[i].param].kind == MR_PARAM_WEIGHT) wt = set->params->p[l->e[i].param].dtype;
  l->mode = o.mode != MR_LORA_AUTO ? o.mode : wt == MR_F32 ? MR_LORA_MERGE : MR_LORA_ON_THE_FLY;
  l->chosen = o.mode != MR_LORA_AUTO;
  if (l->unmatched)
    mr_log(ctx, MR_LOG_WARN, "LoRA '%s': %d of %d modules match nothing in the %s and are not applied (first: %s)",
           name, l->unmatched, nm, what, first[0]);
  l->next = set->first;
  set->first = l;
  if ((st = remerge_all(l)) != MR_OK) {
    mr_lora_remove(l);
    return st;
  }
  *out = l;
  return MR_OK;
}

mr_status mr_lora_set_strength(mr_lora *l, float strength) {
  if (!isfinite(strength)) return mr_error(l->set->ctx, MR_EINVAL, "LoRA '%s': strength must be a finite number", l->name);
  if (strength == l->strength) return MR_OK;
  l->strength = strength;
  /* An adapter whose strength changes (a per-step schedule) goes on the fly
     unless its mode was chosen: a merge per step would rewrite the weights
     every step. Its full deltas and DoRA stay merged. */
  if (!l->chosen) l->mode = MR_LORA_ON_THE_FLY;
  return remerge_all(l);
}

void mr_lora_get_info(const mr_lora *l, mr_lora_info *out) {
  int targets = 0;
  for (int i = 0; i < l->n; i++) {
    bool dup = false;
    for (int j = 0; j < i && !dup; j++) dup = l->e[j].param == l->e[i].param;
    targets += !dup;
  }
  *out = (mr_lora_info){.name = l->name, .naming = l->naming, .strength = l->strength, .mode = l->mode,
                        .targets = targets, .modules = l->keys, .unmatched = l->unmatched};
}

void mr_lora_remove(mr_lora *l) {
  if (!l) return;
  mr_lora_set *set = l->set;
  for (mr_lora **p = &set->first; *p; p = &(*p)->next)
    if (*p == l) {
      *p = l->next;
      break;
    }
  remerge_all(l); /* without l: the others, or the base */
  lora_free(l);
}

void mr_lora_set_release(mr_lora_set *set) {
  while (set->first) mr_lora_remove(set->first);
  for (int i = 0; i < set->nbase; i++) mr_tensor_free(set->base[i]);
  free(set->base);
  set->base = NULL;
  set->nbase = 0;
}

bool mr_lora_any_on_the_fly(const mr_lora_set *set) {
  for (const mr_lora *l = set->first; l; l = l->next)
    if (l->mode == MR_LORA_ON_THE_FLY && l->strength != 0.0f) return true;
  return false;
}

bool mr_lora_term_next(const mr_lora_set *set, int param, const mr_lora **cursor, int *entry, mr_lora_term *out) {
  const mr_lora *l = *cursor ? *cursor : set->first;
  int i = *cursor ? *entry + 1 : 0;
  for (; l; l = l->next, i = 0) {
    if (l->mode != MR_LORA_ON_THE_FLY || l->strength == 0.0f) continue;
    for (; i < l->n; i++)
      if (l->e[i].param == param && !merged(l, &l->e[i])) {
        *cursor = l;
        *entry = i;
        *out = (mr_lora_term){.a = l->e[i].a, .b = l->e[i].b, .coef = l->strength * l->e[i].scale};
        return true;
      }
  }
  return false;
}

const mr_lora *mr_lora_next(const mr_lora *l) { return l ? l->next : NULL; }
