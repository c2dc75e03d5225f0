/* Model components as Lua objects: mr.Tokenizer, mr.T5, mr.WanDiT,
   mr.WanVAE, mr.ClipVision, plus mr.detect. Each loader opens the checkpoint,
   builds the component and closes the file again, so only device copies
   stay. Expected failures (missing or malformed file) return nil, msg, code;
   misuse raises. */
#include "l_internal.h"

#include <stdlib.h>
#include <string.h>

#define MRL_TOKENIZER "mr.Tokenizer"
#define MRL_T5 "mr.T5"
#define MRL_DIT "mr.WanDiT"
#define MRL_VAE "mr.WanVAE"
#define MRL_CLIP "mr.ClipVision"

/* One box type for every component: the engine pointer and its destructor. */
typedef struct model_box {
  void *p;
  void (*free_fn)(void *);
} model_box;

static model_box *check_box(lua_State *L, int i, const char *tname) {
  model_box *b = luaL_checkudata(L, i, tname);
  if (!b->p) luaL_argerror(L, i, "object is closed");
  return b;
}

static int box_gc(lua_State *L) {
  model_box *b = lua_touserdata(L, 1);
  if (b && b->p) {
    b->free_fn(b->p);
    b->p = NULL;
  }
  return 0;
}

static int box_tostring(lua_State *L) {
  model_box *b = lua_touserdata(L, 1);
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__name");
  const char *name = lua_tostring(L, -1);
  if (b->p) lua_pushfstring(L, "%s (%p)", name, b->p);
  else lua_pushfstring(L, "%s (closed)", name);
  return 1;
}

/* Two-phase create: the box exists (closed) before the engine object. */
static model_box *push_box(lua_State *L, const char *tname, void (*free_fn)(void *)) {
  model_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  b->free_fn = free_fn;
  luaL_setmetatable(L, tname);
  return b;
}

/* {weights = "f32"|"f16"|"bf16", config = "<json text or path>"} at arg. The
   returned config text is malloc'd (or NULL); the caller frees it. */
static mr_model_opts check_model_opts(lua_State *L, int arg, char **config_text) {
  mr_model_opts o = mr_model_opts_default();
  *config_text = NULL;
  if (lua_isnoneornil(L, arg)) return o;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_getfield(L, arg, "weights");
  if (!lua_isnil(L, -1)) o.weights = mrl_check_dtype(L, lua_gettop(L), MR_F32, true);
  lua_pop(L, 1);
  lua_getfield(L, arg, "resident_blocks");
  if (!lua_isnil(L, -1)) {
    lua_Integer n = luaL_checkinteger(L, -1);
    luaL_argcheck(L, n >= 0 && n <= 100000, arg, "resident_blocks must be a block count >= 0");
    o.resident_blocks = (int)n;
  }
  lua_pop(L, 1);
  lua_getfield(L, arg, "config");
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *c = lua_tostring(L, -1);
    while (*c == ' ' || *c == '\n' || *c == '\t') c++;
    if (*c == '{') {
      *config_text = strdup(c);
    } else { /* a path to config.json */
      FILE *f = fopen(c, "rb");
      if (!f) luaL_error(L, "cannot open config '%s'", lua_tostring(L, -1));
      fseek(f, 0, SEEK_END);
      long n = ftell(f);
      rewind(f);
      char *s = malloc((size_t)n + 1);
      size_t got = s ? fread(s, 1, (size_t)n, f) : 0;
      fclose(f);
      if (!s || got != (size_t)n) {
        free(s);
        luaL_error(L, "cannot read config '%s'", lua_tostring(L, -1));
      }
      s[n] = 0;
      *config_text = s;
    }
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option 'config' must be JSON text or a path");
  }
  lua_pop(L, 1);
  o.config_json = *config_text;
  return o;
}

typedef mr_status (*load_fn)(mr_ctx *, const mr_weights *, const mr_model_opts *, void **);

#define MRL_MAX_SHARDS 64

/* A checkpoint at arg: one path, or an array of shard paths opened as one.
   Checks the argument (raises on misuse) before anything is opened. */
static int check_paths(lua_State *L, int arg, const char **paths) {
  if (lua_type(L, arg) == LUA_TSTRING) {
    paths[0] = lua_tostring(L, arg);
    return 1;
  }
  luaL_argexpected(L, lua_type(L, arg) == LUA_TTABLE, arg, "path or array of shard paths");
  int n = (int)luaL_len(L, arg);
  luaL_argcheck(L, n >= 1 && n <= MRL_MAX_SHARDS, arg, "between 1 and 64 shard paths");
  for (int i = 0; i < n; i++) {
    lua_geti(L, arg, i + 1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "bad argument #%d (shard %d is not a string)", arg, i + 1);
    paths[i] = lua_tostring(L, -1); /* stays alive: the table holds it */
    lua_pop(L, 1);
  }
  return n;
}

/* mr.<component>(path | {shard paths}[, opts]) */
static int load_component(lua_State *L, const char *tname, load_fn load, void (*free_fn)(void *)) {
  const char *paths[MRL_MAX_SHARDS];
  int n = check_paths(L, 1, paths);
  char *config = NULL;
  mr_model_opts o = check_model_opts(L, 2, &config);
  mr_ctx *ctx = mrl_ctx(L);
  model_box *b = push_box(L, tname, free_fn);
  mr_weights *w = NULL;
  mr_status st = mr_weights_open_files(ctx, n, paths, &w);
  if (st == MR_OK) MRL_RETRY_DEVMEM(L, st, load(ctx, w, &o, &b->p));
  mr_weights_free(w);
  free(config);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  return 1;
}

/* ------------------------------------------------------------------ tokenizer */

static void tok_free(void *p) { mr_tokenizer_free(p); }

static int l_tokenizer(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mr_ctx *ctx = mrl_ctx(L);
  model_box *b = push_box(L, MRL_TOKENIZER, tok_free);
  mr_status st = mr_tokenizer_load(ctx, path, (mr_tokenizer **)&b->p);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  return 1;
}

static void push_ids(lua_State *L, const int32_t *ids, int n) {
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, ids[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/* tok:encode(text) -> {ids...} (sentencepiece's ids, no EOS) */
static int tok_encode(lua_State *L) {
  mr_tokenizer *t = check_box(L, 1, MRL_TOKENIZER)->p;
  const char *text = luaL_checkstring(L, 2);
  int n = 0;
  mr_ctx *ctx = mrl_ctx(L);
  mr_status st = mr_tokenizer_encode(t, text, NULL, 0, &n);
  int32_t *ids = st == MR_OK ? malloc((size_t)(n ? n : 1) * sizeof *ids) : NULL;
  if (st == MR_OK && !ids) return luaL_error(L, "out of memory");
  if (st == MR_OK) st = mr_tokenizer_encode(t, text, ids, n, &n);
  if (st != MR_OK) {
    free(ids);
    return mrl_raise(L, ctx);
  }
  push_ids(L, ids, n);
  free(ids);
  return 1;
}

/* tok:encode_wan(prompt[, text_len = 512]) -> ids (padded), n_tokens */
static int tok_encode_wan(lua_State *L) {
  mr_tokenizer *t = check_box(L, 1, MRL_TOKENIZER)->p;
  const char *text = luaL_checkstring(L, 2);
  lua_Integer len = luaL_optinteger(L, 3, 512);
  luaL_argcheck(L, len > 0 && len <= 65536, 3, "text length must be 1..65536");
  int32_t *ids = malloc((size_t)len * sizeof *ids), n = 0;
  if (!ids) return luaL_error(L, "out of memory");
  mr_status st = mr_tokenizer_encode_wan(t, text, (int)len, ids, &n);
  if (st != MR_OK) {
    free(ids);
    return mrl_raise(L, mrl_ctx(L));
  }
  push_ids(L, ids, (int)len);
  free(ids);
  lua_pushinteger(L, n);
  return 2;
}

static int tok_piece(lua_State *L) {
  mr_tokenizer *t = check_box(L, 1, MRL_TOKENIZER)->p;
  const char *p = mr_tokenizer_piece(t, (int32_t)luaL_checkinteger(L, 2));
  if (p) lua_pushstring(L, p);
  else lua_pushnil(L);
  return 1;
}

static int tok_vocab_size(lua_State *L) {
  lua_pushinteger(L, mr_tokenizer_vocab_size(check_box(L, 1, MRL_TOKENIZER)->p));
  return 1;
}

/* ------------------------------------------------------------------ T5 */

static void t5_free(void *p) { mr_t5_free(p); }
static mr_status t5_load(mr_ctx *c, const mr_weights *w, const mr_model_opts *o, void **out) {
  return mr_t5_load(c, w, o, (mr_t5 **)out);
}
static int l_t5(lua_State *L) { return load_component(L, MRL_T5, t5_load, t5_free); }

/* te:encode(ids[, n_valid]) -> tensor [n, dim] */
static int t5_encode(lua_State *L) {
  mr_t5 *t5 = check_box(L, 1, MRL_T5)->p;
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)luaL_len(L, 2);
  luaL_argcheck(L, n > 0, 2, "no token ids");
  int n_valid = (int)luaL_optinteger(L, 3, n);
  luaL_argcheck(L, n_valid >= 0 && n_valid <= n, 3, "n_valid must be within the ids");
  int32_t *ids = malloc((size_t)n * sizeof *ids);
  if (!ids) return luaL_error(L, "out of memory");
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum) {
      free(ids);
      return luaL_argerror(L, 2, "token ids must be integers");
    }
    ids[i] = (int32_t)v;
  }
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *out = NULL;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_t5_encode(t5, ids, n, n_valid, &out));
  free(ids);
  if (st != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, b, out, true);
  return 1;
}

static int t5_dim(lua_State *L) {
  lua_pushinteger(L, mr_t5_dim(check_box(L, 1, MRL_T5)->p));
  return 1;
}

/* ------------------------------------------------------------------ DiT */

static void dit_free(void *p) { mr_wan_dit_free(p); }
static mr_status dit_load(mr_ctx *c, const mr_weights *w, const mr_model_opts *o, void **out) {
  return mr_wan_dit_load(c, w, o, (mr_wan_dit **)out);
}
static int l_dit(lua_State *L) { return load_component(L, MRL_DIT, dit_load, dit_free); }

static void push_dit_config(lua_State *L, const mr_wan_dit_config *c) {
  lua_createtable(L, 0, 20);
  lua_pushstring(L, c->model_type);
  lua_setfield(L, -2, "model_type");
#define F(name)                  \
  lua_pushinteger(L, c->name);   \
  lua_setfield(L, -2, #name)
  F(dim); F(ffn_dim); F(freq_dim); F(text_dim); F(text_len); F(in_dim); F(out_dim); F(num_layers); F(num_heads);
  F(img_dim); F(img_tokens); F(vace_in_dim); F(n_params);
#undef F
  lua_pushnumber(L, c->eps);
  lua_setfield(L, -2, "eps");
  lua_createtable(L, 3, 0);
  for (int i = 0; i < 3; i++) {
    lua_pushinteger(L, c->patch[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "patch_size");
  lua_createtable(L, c->n_vace_layers, 0);
  for (int i = 0; i < c->n_vace_layers; i++) {
    lua_pushinteger(L, c->vace_layers[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "vace_layers");
}

static int dit_config(lua_State *L) {
  push_dit_config(L, mr_wan_dit_config_get(check_box(L, 1, MRL_DIT)->p));
  return 1;
}

/* component:weights() -> the parameter table as a list of {name=, shape=,
   dtype=, weight=} in declaration order, under the official names. */
static int push_params(lua_State *L, const mr_params *p) {
  int n = mr_params_count(p);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    mr_param_info pi;
    mr_params_get(p, i, &pi);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, pi.name);
    lua_setfield(L, -2, "name");
    lua_createtable(L, pi.ndim, 0);
    for (int d = 0; d < pi.ndim; d++) {
      lua_pushinteger(L, (lua_Integer)pi.shape[d]);
      lua_rawseti(L, -2, d + 1);
    }
    lua_setfield(L, -2, "shape");
    lua_pushstring(L, mr_dtype_name(pi.dtype));
    lua_setfield(L, -2, "dtype");
    lua_pushboolean(L, pi.is_weight);
    lua_setfield(L, -2, "weight");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* component:weight(name) -> a tensor sharing the parameter's storage (valid
   after the component is freed), or nil, message, "MR_ENOTFOUND". */
static int push_param(lua_State *L, const mr_params *p, const char *name) {
  mr_ctx *ctx = mrl_ctx(L);
  int i = mr_params_find(p, name);
  if (i < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "no parameter named '%s'", name);
    lua_pushstring(L, mr_status_name(MR_ENOTFOUND));
    return 3;
  }
  mr_param_info pi;
  mr_params_get(p, i, &pi);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *t = NULL;
  if (mr_tensor_reshape(pi.tensor, pi.ndim, pi.shape, &t) != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, b, t, false);
  return 1;
}

/* weights() and weight(name) of one component type, from its params getter. */
#define PARAMS_METHODS(prefix, tname, getter)                                                              \
  static int prefix##_weights(lua_State *L) { return push_params(L, getter(check_box(L, 1, tname)->p)); } \
  static int prefix##_weight(lua_State *L) {                                                              \
    const mr_params *p = getter(check_box(L, 1, tname)->p);                                               \
    return push_param(L, p, luaL_checkstring(L, 2));                                                      \
  }
PARAMS_METHODS(dit, MRL_DIT, mr_wan_dit_params)
PARAMS_METHODS(t5, MRL_T5, mr_t5_params)
PARAMS_METHODS(clip, MRL_CLIP, mr_clip_vision_params)
PARAMS_METHODS(vae, MRL_VAE, mr_wan_vae_params)

/* ------------------------------------------------------------------ LoRA */

#define MRL_LORA "mr.Lora"

/* A handle on an adapter attached to a DiT (user value 1: the DiT's box).
   The DiT owns the adapter: the handle is valid while the DiT is open and
   the adapter attached; collecting the handle leaves the adapter on. */
typedef struct lora_box {
  mr_lora *p;
} lora_box;

static mr_lora *check_lora(lua_State *L, int i) {
  lora_box *b = luaL_checkudata(L, i, MRL_LORA);
  lua_getiuservalue(L, i, 1);
  model_box *dit = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!b->p) luaL_argerror(L, i, "the LoRA was removed");
  if (!dit || !dit->p) luaL_argerror(L, i, "the DiT it was added to is closed");
  return b->p;
}

static const char *const LORA_MODES[] = {"auto", "merge", "on_the_fly", NULL};

static void push_lora_info(lua_State *L, const mr_lora *l) {
  mr_lora_info li;
  mr_lora_get_info(l, &li);
  lua_createtable(L, 0, 7);
  lua_pushstring(L, li.name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, li.naming);
  lua_setfield(L, -2, "naming");
  lua_pushnumber(L, li.strength);
  lua_setfield(L, -2, "strength");
  lua_pushstring(L, LORA_MODES[li.mode]);
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, li.targets);
  lua_setfield(L, -2, "targets");
  lua_pushinteger(L, li.modules);
  lua_setfield(L, -2, "modules");
  lua_pushinteger(L, li.unmatched);
  lua_setfield(L, -2, "unmatched");
}

/* dit:lora_add(path [, {strength = 1, mode = "auto"|"merge"|"on_the_fly"}]) -> handle | nil, msg, code */
static int dit_lora_add(lua_State *L) {
  mr_wan_dit *dit = check_box(L, 1, MRL_DIT)->p;
  const char *path = luaL_checkstring(L, 2);
  mr_lora_opts o = mr_lora_opts_default();
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "strength");
    if (!lua_isnil(L, -1)) o.strength = (float)luaL_checknumber(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 3, "mode");
    if (!lua_isnil(L, -1)) o.mode = (mr_lora_mode)luaL_checkoption(L, -1, NULL, LORA_MODES);
    lua_pop(L, 1);
  }
  mr_ctx *ctx = mrl_ctx(L);
  lora_box *b = lua_newuserdatauv(L, sizeof *b, 1);
  b->p = NULL;
  luaL_setmetatable(L, MRL_LORA);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  mr_weights *w = NULL;
  mr_status st = mr_weights_open(ctx, path, &w);
  if (st == MR_OK) MRL_RETRY_DEVMEM(L, st, mr_wan_dit_lora_add(dit, w, path, &o, &b->p));
  mr_weights_free(w);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  return 1;
}

static int lora_set_strength(lua_State *L) {
  mr_lora *l = check_lora(L, 1);
  float s = (float)luaL_checknumber(L, 2);
  if (mr_lora_set_strength(l, s) != MR_OK) return mrl_raise(L, mrl_ctx(L));
  lua_settop(L, 1);
  return 1;
}

static int lora_remove(lua_State *L) {
  lora_box *b = luaL_checkudata(L, 1, MRL_LORA);
  lua_getiuservalue(L, 1, 1);
  model_box *dit = lua_touserdata(L, -1);
  if (b->p && dit && dit->p) mr_lora_remove(b->p); /* a closed DiT freed it already */
  b->p = NULL;
  return 0;
}

static int lora_info(lua_State *L) {
  push_lora_info(L, check_lora(L, 1));
  return 1;
}

static int lora_tostring(lua_State *L) {
  lora_box *b = luaL_checkudata(L, 1, MRL_LORA);
  lua_getiuservalue(L, 1, 1);
  model_box *dit = lua_touserdata(L, -1);
  if (!b->p || !dit || !dit->p) {
    lua_pushliteral(L, "mr.Lora(removed)");
    return 1;
  }
  mr_lora_info li;
  mr_lora_get_info(b->p, &li);
  lua_pushfstring(L, "mr.Lora(%s, strength %f, %s, %d targets)", li.name, (double)li.strength, LORA_MODES[li.mode],
                  li.targets);
  return 1;
}

/* dit:loras() -> info tables of the attached adapters, oldest first. */
static int dit_loras(lua_State *L) {
  mr_wan_dit *dit = check_box(L, 1, MRL_DIT)->p;
  int n = 0;
  for (const mr_lora *l = mr_wan_dit_lora_first(dit); l; l = mr_lora_next(l)) n++;
  lua_createtable(L, n, 0);
  int i = n;
  for (const mr_lora *l = mr_wan_dit_lora_first(dit); l; l = mr_lora_next(l)) {
    push_lora_info(L, l);
    lua_rawseti(L, -2, i--);
  }
  return 1;
}

static const mr_tensor *field_tensor(lua_State *L, int tbl, const char *name) {
  lua_getfield(L, tbl, name);
  const mr_tensor *t = lua_isnil(L, -1) ? NULL : mrl_check_tensor(L, lua_gettop(L));
  lua_pop(L, 1); /* the argument table keeps the tensor alive */
  return t;
}

/* The field context: one tensor, or a list of 1..MR_WAN_DIT_MAX_BATCH (one
   batched forward). Returns how many, 0 when absent. */
static int field_contexts(lua_State *L, int tbl, const mr_tensor **out) {
  lua_getfield(L, tbl, "context");
  int n = 0;
  if (lua_istable(L, -1) && !mrl_is_tensor(L, -1)) {
    int len = (int)luaL_len(L, -1);
    if (len < 1 || len > MR_WAN_DIT_MAX_BATCH)
      return luaL_error(L, "forward: field 'context' lists %d contexts; 1 to %d are allowed", len, MR_WAN_DIT_MAX_BATCH);
    for (int i = 0; i < len; i++) {
      lua_rawgeti(L, -1, i + 1);
      if (!mrl_is_tensor(L, -1)) return luaL_error(L, "forward: context[%d] must be a tensor", i + 1);
      out[n++] = mrl_check_tensor(L, lua_gettop(L));
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    out[n++] = mrl_check_tensor(L, lua_gettop(L));
  }
  lua_pop(L, 1); /* the argument table keeps the tensors alive */
  return n;
}

/* dit:forward{x=, t=, context=, y=, clip_fea=, vace_context=, vace_scale=} -> tensor.
   t is a number, or a table of per-token timesteps (ti2v). context = {c1, c2, ...}
   runs the latent with each as one batch and returns one tensor per context. */
static int dit_forward(lua_State *L) {
  mr_wan_dit *dit = check_box(L, 1, MRL_DIT)->p;
  luaL_checktype(L, 2, LUA_TTABLE);
  mr_wan_dit_input in = {0};
  in.x = field_tensor(L, 2, "x");
  const mr_tensor *contexts[MR_WAN_DIT_MAX_BATCH];
  int nctx = field_contexts(L, 2, contexts);
  in.context = nctx ? contexts[0] : NULL;
  in.y = field_tensor(L, 2, "y");
  in.clip_fea = field_tensor(L, 2, "clip_fea");
  in.vace_context = field_tensor(L, 2, "vace_context");
  if (!in.x) return luaL_error(L, "forward: field 'x' (the latent) is required");
  if (!in.context) return luaL_error(L, "forward: field 'context' (text states) is required");
  lua_getfield(L, 2, "vace_scale");
  in.vace_scale = (float)luaL_optnumber(L, -1, 1.0);
  lua_pop(L, 1);
  float *tt = NULL;
  lua_getfield(L, 2, "t");
  if (lua_istable(L, -1)) {
    int n = (int)luaL_len(L, -1);
    tt = malloc((size_t)(n ? n : 1) * sizeof *tt);
    if (!tt) return luaL_error(L, "out of memory");
    for (int i = 0; i < n; i++) {
      lua_rawgeti(L, -1, i + 1);
      tt[i] = (float)lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
    in.t_tokens = tt;
    in.n_t_tokens = n;
  } else if (mrl_is_tensor(L, -1)) {
    mr_tensor *t = mrl_check_tensor(L, lua_gettop(L));
    int64_t n = mr_tensor_numel(t);
    tt = malloc((size_t)(n ? n : 1) * sizeof *tt);
    if (!tt) return luaL_error(L, "out of memory");
    if (mr_tensor_read(t, MR_F32, tt, (size_t)n) != MR_OK) {
      free(tt);
      return mrl_raise(L, mrl_ctx(L));
    }
    if (n == 1) in.t = tt[0];
    else {
      in.t_tokens = tt;
      in.n_t_tokens = (int)n;
    }
  } else if (lua_isnumber(L, -1)) {
    in.t = (float)lua_tonumber(L, -1);
  } else {
    return luaL_error(L, "forward: field 't' must be a number, a table or a tensor of timesteps");
  }
  lua_pop(L, 1);
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *boxes[MR_WAN_DIT_MAX_BATCH];
  for (int i = 0; i < nctx; i++) boxes[i] = mrl_push_box(L);
  mr_tensor *outs[MR_WAN_DIT_MAX_BATCH];
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_wan_dit_forward_batch(dit, &in, nctx, contexts, outs));
  free(tt);
  if (st != MR_OK) return mrl_raise(L, ctx);
  for (int i = 0; i < nctx; i++) mrl_box_set(L, boxes[i], outs[i], true);
  return nctx;
}

/* ------------------------------------------------------------------ VAE */

static void vae_free(void *p) { mr_wan_vae_free(p); }
static mr_status vae_load(mr_ctx *c, const mr_weights *w, const mr_model_opts *o, void **out) {
  return mr_wan_vae_load(c, w, o, (mr_wan_vae **)out);
}
static int l_vae(lua_State *L) { return load_component(L, MRL_VAE, vae_load, vae_free); }

/* The one trampoline from engine progress (and decoded frames) to Lua
   functions: a Lua error cancels the engine call and is re-raised after it
   returns. */
typedef struct progress_tramp {
  lua_State *L;
  int fn;        /* stack index of the progress function, 0 = none */
  int frames_fn; /* stack index of the frames function, 0 = none */
  bool errored;
} progress_tramp;

/* Calls the function at fn with the nargs values on top of the stack. */
static bool tramp_call(progress_tramp *p, int nargs) {
  if (lua_pcall(p->L, nargs, 1, 0) != LUA_OK) {
    p->errored = true; /* the message stays on the stack for the re-raise */
    return false;
  }
  bool go_on = lua_isnil(p->L, -1) || lua_toboolean(p->L, -1);
  lua_pop(p->L, 1);
  return go_on;
}

static bool on_progress(float done, void *user) {
  progress_tramp *p = user;
  if (!p->fn) return true;
  lua_pushvalue(p->L, p->fn);
  lua_pushnumber(p->L, done);
  return tramp_call(p, 1);
}

/* The chunk is handed over as a tensor of its own (a copy: the engine's view
   lives only during the call, a Lua value may be kept), first frame 1-based. */
static bool on_frames(const mr_tensor *frames, int64_t first, void *user) {
  progress_tramp *p = user;
  lua_State *L = p->L;
  lua_pushvalue(L, p->frames_fn);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *copy = NULL;
  if (mr_tensor_cast((mr_tensor *)frames, MR_F32, &copy) != MR_OK) {
    lua_pop(L, 2);
    return false; /* the context holds the message */
  }
  mrl_box_set(L, b, copy, true);
  lua_pushinteger(L, (lua_Integer)first + 1);
  return tramp_call(p, 2);
}

/* vae:encode(video[, progress]) / vae:decode(latent[, progress[, on_frames]]) */
static int vae_call(lua_State *L, bool decode) {
  mr_wan_vae *vae = check_box(L, 1, MRL_VAE)->p;
  mr_tensor *in = mrl_check_tensor(L, 2);
  progress_tramp p = {L, 0, 0, false};
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TFUNCTION);
    p.fn = 3;
  }
  if (decode && !lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TFUNCTION);
    p.frames_fn = 4;
  }
  lua_settop(L, 4);
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *out = NULL;
  mr_status st = decode ? mr_wan_vae_decode_each(vae, in, on_progress, p.frames_fn ? on_frames : NULL, &p, &out)
                        : mr_wan_vae_encode(vae, in, on_progress, &p, &out);
  if (p.errored) return lua_error(L); /* the callback's own error, on top of the stack */
  if (st == MR_ECANCELED) return mrl_fail(L, ctx, st);
  if (st != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, b, out, true);
  return 1;
}

static int vae_encode(lua_State *L) { return vae_call(L, false); }
static int vae_decode(lua_State *L) { return vae_call(L, true); }

/* Reads a table of numbers or a tensor at arg into a malloc'd float array. */
static float *check_floats(lua_State *L, int arg, int *n) {
  if (mrl_is_tensor(L, arg)) {
    mr_tensor *t = mrl_check_tensor(L, arg);
    *n = (int)mr_tensor_numel(t);
    float *x = malloc((size_t)(*n ? *n : 1) * sizeof *x);
    if (!x) luaL_error(L, "out of memory");
    if (mr_tensor_read(t, MR_F32, x, (size_t)*n) != MR_OK) {
      free(x);
      mrl_raise(L, mrl_ctx(L));
    }
    return x;
  }
  luaL_checktype(L, arg, LUA_TTABLE);
  *n = (int)luaL_len(L, arg);
  float *x = malloc((size_t)(*n ? *n : 1) * sizeof *x);
  if (!x) luaL_error(L, "out of memory");
  for (int i = 0; i < *n; i++) {
    lua_rawgeti(L, arg, i + 1);
    x[i] = (float)lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  return x;
}

/* vae:set_latent_stats(mean, std) with tables or tensors of z_dim values; (nil) clears. */
static int vae_set_latent_stats(lua_State *L) {
  mr_wan_vae *v = check_box(L, 1, MRL_VAE)->p;
  mr_status st;
  if (lua_isnoneornil(L, 2)) {
    st = mr_wan_vae_set_latent_stats(v, NULL, NULL, 0);
  } else {
    int nm, ns;
    float *mean = check_floats(L, 2, &nm);
    float *sd = NULL;
    if (lua_isnoneornil(L, 3)) {
      free(mean);
      return luaL_argerror(L, 3, "std is required with mean");
    }
    sd = check_floats(L, 3, &ns);
    st = nm == ns ? mr_wan_vae_set_latent_stats(v, mean, sd, nm) : MR_EINVAL;
    free(mean);
    free(sd);
    if (nm != ns) return luaL_error(L, "mean has %d values, std %d", nm, ns);
  }
  if (st != MR_OK) return mrl_raise(L, mrl_ctx(L));
  return 0;
}

static int vae_info(lua_State *L) {
  mr_wan_vae *v = check_box(L, 1, MRL_VAE)->p;
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, mr_wan_vae_z_dim(v));
  lua_setfield(L, -2, "z_dim");
  lua_pushinteger(L, mr_wan_vae_spatial_stride(v));
  lua_setfield(L, -2, "spatial_stride");
  lua_pushinteger(L, 4);
  lua_setfield(L, -2, "temporal_stride");
  lua_pushinteger(L, mr_wan_vae_version(v));
  lua_setfield(L, -2, "version");
  return 1;
}

/* ------------------------------------------------------------------ CLIP vision */

static void clip_free(void *p) { mr_clip_vision_free(p); }
static mr_status clip_load(mr_ctx *c, const mr_weights *w, const mr_model_opts *o, void **out) {
  return mr_clip_vision_load(c, w, o, (mr_clip_vision **)out);
}
static int l_clip(lua_State *L) { return load_component(L, MRL_CLIP, clip_load, clip_free); }

typedef mr_status (*clip_fn)(mr_clip_vision *, const mr_tensor *, mr_tensor **);
static int clip_call(lua_State *L, clip_fn fn) {
  mr_clip_vision *c = check_box(L, 1, MRL_CLIP)->p;
  mr_tensor *in = mrl_check_tensor(L, 2);
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *out = NULL;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, fn(c, in, &out));
  if (st != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, b, out, true);
  return 1;
}
static int clip_encode(lua_State *L) { return clip_call(L, mr_clip_vision_encode); }
static int clip_preprocess(lua_State *L) { return clip_call(L, mr_clip_vision_preprocess); }
static int clip_forward(lua_State *L) { return clip_call(L, mr_clip_vision_forward); }

/* ------------------------------------------------------------------ detect */

/* mr.detect(path[, config]) -> {kind=, variant=, n_params=, dim=, layers=, heads=, z_dim=, config=} */
static int l_detect(lua_State *L) {
  const char *paths[MRL_MAX_SHARDS];
  int n = check_paths(L, 1, paths);
  const char *config = luaL_optstring(L, 2, NULL);
  mr_ctx *ctx = mrl_ctx(L);
  mr_weights *w = NULL;
  mr_model_info mi;
  mr_status st = mr_weights_open_files(ctx, n, paths, &w);
  if (st == MR_OK) st = mr_model_detect(ctx, w, config, &mi);
  mr_weights_free(w);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, mr_model_kind_name(mi.kind));
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, mi.variant);
  lua_setfield(L, -2, "variant");
#define F(name)                 \
  lua_pushinteger(L, mi.name);  \
  lua_setfield(L, -2, #name)
  F(n_params); F(dim); F(layers); F(heads); F(z_dim);
#undef F
  if (mi.kind == MR_MODEL_WAN_DIT) {
    push_dit_config(L, &mi.dit);
    lua_setfield(L, -2, "config");
  }
  return 1;
}

/* ------------------------------------------------------------------ registration */

static void register_type(lua_State *L, const char *tname, const luaL_Reg *methods) {
  static const luaL_Reg meta[] = {{"__gc", box_gc}, {"__close", box_gc}, {"__tostring", box_tostring}, {NULL, NULL}};
  luaL_newmetatable(L, tname);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "close");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

void mrl_open_models(lua_State *L, int module) {
  static const luaL_Reg tok_m[] = {{"encode", tok_encode}, {"encode_wan", tok_encode_wan}, {"piece", tok_piece},
                                   {"vocab_size", tok_vocab_size}, {NULL, NULL}};
  static const luaL_Reg t5_m[] = {{"encode", t5_encode}, {"dim", t5_dim},       {"weights", t5_weights},
                                  {"weight", t5_weight}, {NULL, NULL}};
  static const luaL_Reg dit_m[] = {{"forward", dit_forward}, {"config", dit_config}, {"weights", dit_weights},
                                   {"weight", dit_weight},   {"lora_add", dit_lora_add}, {"loras", dit_loras},
                                   {NULL, NULL}};
  static const luaL_Reg vae_m[] = {{"encode", vae_encode}, {"decode", vae_decode}, {"info", vae_info},
                                   {"set_latent_stats", vae_set_latent_stats}, {"weights", vae_weights},
                                   {"weight", vae_weight}, {NULL, NULL}};
  static const luaL_Reg clip_m[] = {{"encode", clip_encode}, {"preprocess", clip_preprocess},
                                    {"forward", clip_forward}, {"weights", clip_weights},
                                    {"weight", clip_weight},   {NULL, NULL}};
  register_type(L, MRL_TOKENIZER, tok_m);
  register_type(L, MRL_T5, t5_m);
  register_type(L, MRL_DIT, dit_m);
  register_type(L, MRL_VAE, vae_m);
  register_type(L, MRL_CLIP, clip_m);
  static const luaL_Reg lora_m[] = {{"set_strength", lora_set_strength}, {"remove", lora_remove}, {"info", lora_info},
                                    {NULL, NULL}};
  luaL_newmetatable(L, MRL_LORA);
  lua_pushcfunction(L, lora_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_newtable(L);
  luaL_setfuncs(L, lora_m, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"tokenizer", l_tokenizer}, {"t5", l_t5},           {"wan_dit", l_dit},
                                 {"wan_vae", l_vae},         {"clip_vision", l_clip}, {"detect", l_detect},
                                 {NULL, NULL}};
  lua_pushvalue(L, module);
  luaL_setfuncs(L, fns, 0);
  lua_pop(L, 1);
}
