/* mr.Tensor: the box around an engine tensor, its constructors, views and
   host round trips. Dims and indices are 1-based in Lua (negative counts from
   the end); the conversion to the engine's 0-based dims happens here. */
#include <string.h>

#include "l_internal.h"
#include "moonreel_lua.h"

/* ------------------------------------------------------------------ boxes */

mrl_tensor_box *mrl_push_box(lua_State *L) {
  mrl_state *s = mrl_state_get(L);
  mrl_ctx(L); /* the context exists before any box (see mrl_state_get) */
  mrl_tensor_box *b = lua_newuserdatauv(L, sizeof *b, 1);
  b->t = NULL;
  b->bytes = 0;
  b->state = s;
  luaL_setmetatable(L, MRL_TENSOR);
  return b;
}

mrl_tensor_box *mrl_push_view_box(lua_State *L, int base) {
  base = lua_absindex(L, base);
  mrl_tensor_box *b = mrl_push_box(L);
  lua_pushvalue(L, base);
  lua_setiuservalue(L, -2, 1);
  return b;
}

void mrl_box_set(lua_State *L, mrl_tensor_box *b, mr_tensor *t, bool owning) {
  b->t = t;
  if (!owning) return;
  mrl_state *s = b->state;
  b->bytes = mr_tensor_device_bytes(t);
  s->live += b->bytes;
  s->since_gc += b->bytes;
  /* Lua's collector only sees the small box, so step it by device bytes. */
  if (s->since_gc >= s->threshold) mrl_collect(L);
}

static mrl_tensor_box *check_box(lua_State *L, int arg) {
  return luaL_checkudata(L, arg, MRL_TENSOR);
}

mr_tensor *mrl_check_tensor(lua_State *L, int arg) {
  mrl_tensor_box *b = check_box(L, arg);
  if (b->t == NULL) luaL_argerror(L, arg, "tensor is closed");
  return b->t;
}

mr_tensor *mrl_opt_tensor(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NULL : mrl_check_tensor(L, arg);
}

bool mrl_is_tensor(lua_State *L, int arg) { return luaL_testudata(L, arg, MRL_TENSOR) != NULL; }

mr_tensor *moonreel_lua_totensor(lua_State *L, int idx) {
  mrl_tensor_box *b = luaL_testudata(L, idx, MRL_TENSOR);
  return b ? b->t : NULL;
}

/* __gc, __close and :close(): one idempotent release. */
static int t_release(lua_State *L) {
  mrl_tensor_box *b = check_box(L, 1);
  if (b->t) {
    mr_tensor_free(b->t);
    b->t = NULL;
    b->state->live -= b->bytes;
    b->bytes = 0;
  }
  lua_pushnil(L); /* a closed view no longer needs its base */
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int t_tostring(lua_State *L) {
  mrl_tensor_box *b = check_box(L, 1);
  if (!b->t) {
    lua_pushliteral(L, "mr.Tensor(closed)");
    return 1;
  }
  char shape[128];
  lua_pushfstring(L, "mr.Tensor(%s, %s)", mr_dtype_name(mr_tensor_dtype(b->t)),
                  mrl_shape_str(mr_tensor_ndim(b->t), mr_tensor_shape(b->t), shape, sizeof shape));
  return 1;
}

/* ------------------------------------------------------------ constructors */

/* Reading a nested Lua table: the shape comes from the first entry at each
   depth; every other entry must match it. */
typedef struct nest {
  double *buf;
  int64_t pos;
  int ndim;
  int64_t shape[MR_MAX_DIMS];
  lua_Integer idx[MR_MAX_DIMS];
} nest;

static const char *nest_path(lua_State *L, const nest *n, int depth) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "t");
  for (int i = 0; i < depth; i++) {
    lua_pushfstring(L, "[%d]", (int)n->idx[i]);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

static void nest_fill(lua_State *L, nest *n, int tbl, int depth) {
  lua_Integer len = (lua_Integer)lua_rawlen(L, tbl);
  if (len != n->shape[depth]) {
    const char *path = nest_path(L, n, depth);
    luaL_argerror(L, 1, lua_pushfstring(L, "ragged table: %s has %d entries, expected %d", path, (int)len,
                                        (int)n->shape[depth]));
  }
  luaL_checkstack(L, 4, "nested table");
  for (lua_Integer i = 1; i <= len; i++) {
    n->idx[depth] = i;
    int type = lua_rawgeti(L, tbl, i);
    if (depth == n->ndim - 1) {
      int ok;
      double v = (double)lua_tonumberx(L, -1, &ok);
      if (!ok || type == LUA_TSTRING) {
        const char *path = nest_path(L, n, depth + 1);
        luaL_argerror(L, 1, lua_pushfstring(L, "%s is a %s, expected a number", path, luaL_typename(L, -2)));
      }
      n->buf[n->pos++] = v;
    } else {
      if (type != LUA_TTABLE) {
        const char *path = nest_path(L, n, depth + 1);
        luaL_argerror(L, 1, lua_pushfstring(L, "%s is a %s, expected a table of %d entries", path,
                                            luaL_typename(L, -2), (int)n->shape[depth + 1]));
      }
      nest_fill(L, n, lua_gettop(L), depth + 1);
    }
    lua_pop(L, 1);
  }
}

/* mr.tensor(t [, dtype]): t is a number or a nested table of numbers. */
static int l_tensor(lua_State *L) {
  lua_settop(L, 2);
  mr_dtype dt = mrl_check_dtype(L, 2, MR_F32, true);
  nest n = {0};
  if (lua_type(L, 1) == LUA_TNUMBER) {
    n.ndim = 1;
    n.shape[0] = 1;
  } else {
    luaL_argexpected(L, lua_istable(L, 1), 1, "table or number");
    lua_pushvalue(L, 1);
    for (;;) {
      if (n.ndim == MR_MAX_DIMS)
        luaL_argerror(L, 1, lua_pushfstring(L, "table nests deeper than %d dims", MR_MAX_DIMS));
      int64_t len = (int64_t)lua_rawlen(L, -1);
      n.shape[n.ndim++] = len;
      if (len == 0 || lua_rawgeti(L, -1, 1) != LUA_TTABLE) break;
      lua_remove(L, -2);
    }
    lua_settop(L, 2);
  }
  int64_t numel = 1;
  for (int i = 0; i < n.ndim; i++) numel *= n.shape[i];
  /* the scratch buffer is a userdata, so a raise below cannot leak it */
  n.buf = lua_newuserdatauv(L, (size_t)numel * sizeof(double) + 1, 0);
  if (lua_type(L, 1) == LUA_TNUMBER) n.buf[0] = lua_tonumber(L, 1);
  else nest_fill(L, &n, 1, 0);

  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *t;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_tensor_from_host(ctx, dt, n.ndim, n.shape, MR_F64, n.buf, &t));
  if (st != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, b, t, true);
  return 1;
}

static int new_filled(lua_State *L, int shape_arg, double value, int dtype_arg) {
  int64_t shape[MR_MAX_DIMS];
  int ndim = mrl_check_shape(L, shape_arg, shape, false);
  mr_dtype dt = mrl_check_dtype(L, dtype_arg, MR_F32, true);
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *t;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_tensor_new(ctx, dt, ndim, shape, &t));
  if (st == MR_OK && value != 0.0 && (st = mr_tensor_fill(t, (float)value)) != MR_OK) {
    mr_tensor_free(t);
    t = NULL;
  }
  if (st != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, b, t, true);
  return 1;
}

/* mr.zeros(shape [, dtype]) */
static int l_zeros(lua_State *L) { return new_filled(L, 1, 0.0, 2); }
/* mr.ones(shape [, dtype]) */
static int l_ones(lua_State *L) { return new_filled(L, 1, 1.0, 2); }
/* mr.full(shape, value [, dtype]) */
static int l_full(lua_State *L) { return new_filled(L, 1, luaL_checknumber(L, 2), 3); }

/* mr.tensor_from_string(bytes, shape [, src_dtype [, dtype]]) */
static int l_tensor_from_string(lua_State *L) {
  size_t len;
  const char *bytes = luaL_checklstring(L, 1, &len);
  int64_t shape[MR_MAX_DIMS];
  int ndim = mrl_check_shape(L, 2, shape, false);
  mr_dtype src = mrl_check_dtype(L, 3, MR_F32, false);
  mr_dtype dt = mrl_check_dtype(L, 4, mr_dtype_is_storage(src) ? src : MR_F32, true);
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= shape[i];
  size_t need = (size_t)numel * mr_dtype_size(src);
  if (len != need) {
    char s[128];
    return luaL_argerror(L, 1, lua_pushfstring(L, "%d bytes given; shape %s of %s needs %d", (int)len,
                                               mrl_shape_str(ndim, shape, s, sizeof s), mr_dtype_name(src), (int)need));
  }
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *t;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_tensor_from_host(ctx, dt, ndim, shape, src, bytes, &t));
  if (st != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, b, t, true);
  return 1;
}

/* ----------------------------------------------------------- inspection */

static void push_dims(lua_State *L, int ndim, const int64_t *v) {
  lua_createtable(L, ndim, 0);
  for (int i = 0; i < ndim; i++) {
    lua_pushinteger(L, (lua_Integer)v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

static int t_shape(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    int d = mrl_check_dim(L, 2, mr_tensor_ndim(t));
    lua_pushinteger(L, (lua_Integer)mr_tensor_shape(t)[d]);
    return 1;
  }
  push_dims(L, mr_tensor_ndim(t), mr_tensor_shape(t));
  return 1;
}

static int t_strides(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  push_dims(L, mr_tensor_ndim(t), mr_tensor_strides(t));
  return 1;
}

static int t_ndim(lua_State *L) {
  lua_pushinteger(L, mr_tensor_ndim(mrl_check_tensor(L, 1)));
  return 1;
}

static int t_dtype(lua_State *L) {
  lua_pushstring(L, mr_dtype_name(mr_tensor_dtype(mrl_check_tensor(L, 1))));
  return 1;
}

static int t_numel(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mr_tensor_numel(mrl_check_tensor(L, 1)));
  return 1;
}

static int t_bytes(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  lua_pushinteger(L, (lua_Integer)((size_t)mr_tensor_numel(t) * mr_dtype_size(mr_tensor_dtype(t))));
  return 1;
}

static int t_device_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mr_tensor_device_bytes(mrl_check_tensor(L, 1)));
  return 1;
}

static int t_is_contiguous(lua_State *L) {
  lua_pushboolean(L, mr_tensor_is_contiguous(mrl_check_tensor(L, 1)));
  return 1;
}

static int t_is_closed(lua_State *L) {
  lua_pushboolean(L, check_box(L, 1)->t == NULL);
  return 1;
}

/* Reads t as f64 into a GC-owned scratch userdata left on the stack. */
static double *read_f64(lua_State *L, mr_tensor *t) {
  size_t n = (size_t)mr_tensor_numel(t);
  double *d = lua_newuserdatauv(L, n * sizeof *d + 1, 0);
  if (mr_tensor_read(t, MR_F64, d, n) != MR_OK) mrl_raise(L, mr_tensor_ctx(t));
  return d;
}

static void build_table(lua_State *L, const double *d, const int64_t *shape, int ndim, int depth, int64_t *pos) {
  luaL_checkstack(L, 3, "totable");
  lua_createtable(L, (int)shape[depth], 0);
  for (int64_t i = 0; i < shape[depth]; i++) {
    if (depth == ndim - 1) lua_pushnumber(L, d[(*pos)++]);
    else build_table(L, d, shape, ndim, depth + 1, pos);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

static int t_totable(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  const double *d = read_f64(L, t);
  int64_t pos = 0;
  build_table(L, d, mr_tensor_shape(t), mr_tensor_ndim(t), 0, &pos);
  return 1;
}

static int t_item(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  int64_t n = mr_tensor_numel(t);
  if (n != 1) return luaL_argerror(L, 1, lua_pushfstring(L, "item() needs 1 element, tensor has %d", (int)n));
  lua_pushnumber(L, read_f64(L, t)[0]);
  return 1;
}

/* t:data([dtype]) -> the elements as a binary string (f32 unless told). */
static int t_data(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  mr_dtype dt = mrl_check_dtype(L, 2, MR_F32, false);
  luaL_argcheck(L, dt == MR_F32 || dt == MR_F16 || dt == MR_BF16 || dt == MR_F64, 2,
                "data() reads as f32, f16, bf16 or f64");
  size_t n = (size_t)mr_tensor_numel(t), nbytes = n * mr_dtype_size(dt);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, nbytes + 1);
  if (mr_tensor_read(t, dt, p, n) != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  luaL_pushresultsize(&b, nbytes);
  return 1;
}

/* ------------------------------------------------------------------ views */

/* Sizes or dims given either as a table at arg or as integers from arg on. */
static int check_int_list(lua_State *L, int arg, int64_t *out, const char *what) {
  if (lua_istable(L, arg)) return mrl_check_shape(L, arg, out, true);
  int n = lua_gettop(L) - arg + 1;
  if (n < 1 || n > MR_MAX_DIMS)
    return luaL_error(L, "%s: expected 1 to %d %s, got %d", what, MR_MAX_DIMS, what, n < 0 ? 0 : n);
  for (int i = 0; i < n; i++) out[i] = luaL_checkinteger(L, arg + i);
  return n;
}

static int t_reshape(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  int64_t shape[MR_MAX_DIMS];
  int ndim = check_int_list(L, 2, shape, "sizes");
  int64_t known = 1, numel = mr_tensor_numel(t);
  int infer = 0;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] == -1) {
      if (infer++) return luaL_argerror(L, 2, "only one size may be -1");
    } else if (shape[i] < 0) {
      return luaL_argerror(L, 2, lua_pushfstring(L, "size %d is negative", (int)shape[i]));
    } else {
      known *= shape[i];
    }
  }
  if (!infer && known != numel) {
    char s[128];
    return luaL_argerror(L, 2, lua_pushfstring(L, "shape %s has %d elements, tensor has %d",
                                               mrl_shape_str(ndim, shape, s, sizeof s), (int)known, (int)numel));
  }
  mrl_tensor_box *b = mrl_push_view_box(L, 1);
  mr_tensor *v;
  if (mr_tensor_reshape(t, ndim, shape, &v) != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  mrl_box_set(L, b, v, false);
  return 1;
}

/* t:slice(dim [, start [, stop [, step]]]): elements start..stop inclusive,
   1-based, negative counting from the end (-1 = last); stop < start gives an
   empty view. */
static int t_slice(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  int d = mrl_check_dim(L, 2, mr_tensor_ndim(t));
  int64_t n = mr_tensor_shape(t)[d];
  lua_Integer start = luaL_optinteger(L, 3, 1), stop = luaL_optinteger(L, 4, -1), step = luaL_optinteger(L, 5, 1);
  luaL_argcheck(L, start != 0, 3, "index 0 is invalid (indices are 1-based; -1 is the last)");
  luaL_argcheck(L, step >= 1, 5, "step must be >= 1");
  int64_t s0 = start > 0 ? start - 1 : n + start;      /* first element, 0-based */
  int64_t e0 = stop >= 0 ? stop : n + stop + 1;        /* one past the last */
  if (s0 < 0 || s0 >= n)
    luaL_argerror(L, 3, lua_pushfstring(L, "start %d out of range for dim %d of size %d", (int)start, d + 1, (int)n));
  if (e0 < 0 || e0 > n)
    luaL_argerror(L, 4, lua_pushfstring(L, "stop %d out of range for dim %d of size %d", (int)stop, d + 1, (int)n));
  if (e0 < s0) e0 = s0;
  mrl_tensor_box *b = mrl_push_view_box(L, 1);
  mr_tensor *v;
  if (mr_tensor_slice(t, d, s0, e0, step, &v) != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  mrl_box_set(L, b, v, false);
  return 1;
}

/* t:permute(d1, d2, ...) or t:permute{...}: out dim i is t's dim d_i. */
static int t_permute(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  int ndim = mr_tensor_ndim(t);
  int64_t dims[MR_MAX_DIMS];
  int n = check_int_list(L, 2, dims, "dims");
  if (n != ndim)
    return luaL_argerror(L, 2, lua_pushfstring(L, "permute needs %d dims for a %d-dim tensor, got %d", ndim, ndim, n));
  int perm[MR_MAX_DIMS];
  bool seen[MR_MAX_DIMS] = {false};
  for (int i = 0; i < n; i++) {
    int64_t d = dims[i];
    if (d == 0 || d > ndim || d < -ndim)
      return luaL_argerror(L, 2, lua_pushfstring(L, "dim %d out of range for a %d-dim tensor", (int)d, ndim));
    perm[i] = d > 0 ? (int)d - 1 : ndim + (int)d;
    if (seen[perm[i]]) return luaL_argerror(L, 2, lua_pushfstring(L, "dim %d given twice", perm[i] + 1));
    seen[perm[i]] = true;
  }
  mrl_tensor_box *b = mrl_push_view_box(L, 1);
  mr_tensor *v;
  if (mr_tensor_permute(t, perm, &v) != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  mrl_box_set(L, b, v, false);
  return 1;
}

static int t_contiguous(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  bool already = mr_tensor_is_contiguous(t);
  mrl_tensor_box *b = already ? mrl_push_view_box(L, 1) : mrl_push_box(L);
  mr_tensor *v;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_tensor_contiguous(t, &v));
  if (st != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  mrl_box_set(L, b, v, !already);
  return 1;
}

static int t_cast(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  mr_dtype dt = mrl_check_dtype(L, 2, MR_F32, true);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *v;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_tensor_cast(t, dt, &v));
  if (st != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  mrl_box_set(L, b, v, true);
  return 1;
}

/* A contiguous copy that owns its storage. */
static int t_clone(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *v;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_tensor_cast(t, mr_tensor_dtype(t), &v));
  if (st != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  mrl_box_set(L, b, v, true);
  return 1;
}

/* -------------------------------------------------------------- in place */

static int t_copy_(lua_State *L) {
  mr_tensor *dst = mrl_check_tensor(L, 1);
  mr_tensor *src = mrl_check_tensor(L, 2);
  const int64_t *a = mr_tensor_shape(dst), *c = mr_tensor_shape(src);
  int na = mr_tensor_ndim(dst), nc = mr_tensor_ndim(src);
  if (na != nc || memcmp(a, c, (size_t)na * sizeof *a) != 0) {
    char s1[128], s2[128];
    return luaL_argerror(L, 2, lua_pushfstring(L, "shape %s does not match the destination's %s",
                                               mrl_shape_str(nc, c, s1, sizeof s1), mrl_shape_str(na, a, s2, sizeof s2)));
  }
  if (mr_tensor_copy(dst, src) != MR_OK) return mrl_raise(L, mr_tensor_ctx(dst));
  lua_settop(L, 1);
  return 1;
}

static int t_fill_(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  float v = (float)luaL_checknumber(L, 2);
  if (mr_tensor_fill(t, v) != MR_OK) return mrl_raise(L, mr_tensor_ctx(t));
  lua_settop(L, 1);
  return 1;
}

/* ------------------------------------------------------------ registration */

static const luaL_Reg tensor_methods[] = {
  {"shape", t_shape}, {"strides", t_strides}, {"ndim", t_ndim}, {"dtype", t_dtype},
  {"numel", t_numel}, {"bytes", t_bytes}, {"device_bytes", t_device_bytes},
  {"is_contiguous", t_is_contiguous}, {"is_closed", t_is_closed},
  {"totable", t_totable}, {"item", t_item}, {"data", t_data},
  {"reshape", t_reshape}, {"slice", t_slice}, {"permute", t_permute},
  {"contiguous", t_contiguous}, {"cast", t_cast}, {"clone", t_clone},
  {"copy_", t_copy_}, {"fill_", t_fill_}, {"close", t_release},
  {NULL, NULL}};

static const luaL_Reg tensor_meta[] = {
  {"__gc", t_release}, {"__close", t_release}, {"__tostring", t_tostring}, {NULL, NULL}};

static const luaL_Reg tensor_funcs[] = {
  {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
  {"tensor_from_string", l_tensor_from_string}, {NULL, NULL}};

void mrl_open_tensor(lua_State *L, int module, int meta, int methods) {
  lua_pushvalue(L, meta);
  luaL_setfuncs(L, tensor_meta, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, tensor_methods, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, tensor_funcs, 0);
  lua_pop(L, 1);
}
