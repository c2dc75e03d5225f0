/* Sampling from Lua: mr.sampler.{unipc, dpmpp, euler, new} (mr.Sampler
   objects), seeded noise (mr.randn), 64-bit seeds as integers or decimal
   strings (mr.seed_string, mr.random_seed), and the tensor combinations of
   a denoising loop (mr.guidance, mr.lincomb). Misuse raises; reading the
   OS random source is the one expected failure (nil, message, code). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "l_internal.h"

#define MRL_SAMPLER "mr.Sampler"

typedef struct sampler_box {
  mr_sampler *s; /* NULL once closed (or before the engine call filled it) */
} sampler_box;

static mr_sampler *check_sampler(lua_State *L, int arg) {
  sampler_box *b = luaL_checkudata(L, arg, MRL_SAMPLER);
  if (!b->s) luaL_argerror(L, arg, "sampler is closed");
  return b->s;
}

/* ------------------------------------------------------------------ seeds */

/* A seed at arg: a Lua integer (negative values are their two's complement,
   so every uint64 has an integer form) or a decimal string of 0 ..
   18446744073709551615. Raises on anything else. */
static uint64_t check_seed(lua_State *L, int arg) {
  int t = lua_type(L, arg);
  if (t == LUA_TNUMBER) {
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok) luaL_argerror(L, arg, "seed must be an integer or a decimal string");
    return (uint64_t)v;
  }
  if (t == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, arg, &len);
    uint64_t v = 0;
    bool ok = len > 0 && len <= 20;
    for (size_t i = 0; ok && i < len; i++) {
      unsigned d = (unsigned)(s[i] - '0');
      ok = d <= 9 && v <= (UINT64_MAX - d) / 10;
      v = v * 10 + d;
    }
    if (!ok)
      luaL_argerror(L, arg, lua_pushfstring(L, "seed '%s' is not a decimal number in 0 .. 18446744073709551615", s));
    return v;
  }
  return luaL_typeerror(L, arg, "integer or decimal string seed"), 0;
}

static void push_seed_string(lua_State *L, uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  lua_pushstring(L, buf);
}

/* mr.seed_string(seed) -> the seed's canonical decimal string (JSON keeps it exactly) */
static int l_seed_string(lua_State *L) {
  push_seed_string(L, check_seed(L, 1));
  return 1;
}

/* mr.random_seed() -> a fresh seed from the OS, as a decimal string */
static int l_random_seed(lua_State *L) {
  mr_ctx *ctx = mrl_state_get(L)->ctx; /* for the message only; no device needed */
  uint64_t v;
  mr_status st = mr_noise_random_seed(ctx, &v);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  push_seed_string(L, v);
  return 1;
}

/* ------------------------------------------------------------------ tensors */

/* mr.randn(shape, seed [, dtype [, offset]]): standard normal noise; element
   i of the flattened tensor is a function of (seed, offset + i) only. */
static int l_randn(lua_State *L) {
  int64_t shape[MR_MAX_DIMS];
  int ndim = mrl_check_shape(L, 1, shape, false);
  uint64_t seed = check_seed(L, 2);
  mr_dtype dt = mrl_check_dtype(L, 3, MR_F32, true);
  lua_Integer offset = luaL_optinteger(L, 4, 0);
  luaL_argcheck(L, offset >= 0, 4, "offset must be >= 0");
  mr_ctx *ctx = mrl_ctx(L);
  MRL_RUN_OP(L, ctx, mr_noise_randn_offset(ctx, seed, (uint64_t)offset, ndim, shape, dt, &out_));
}

/* mr.guidance(v_cond, v_uncond, g) = v_uncond + g·(v_cond − v_uncond) */
static int l_guidance(lua_State *L) {
  mr_tensor *vc = mrl_check_tensor(L, 1), *vu = mrl_check_tensor(L, 2);
  float g = (float)luaL_checknumber(L, 3);
  mr_ctx *ctx = mr_tensor_ctx(vc);
  MRL_RUN_OP(L, ctx, mr_guidance(vc, vu, g, &out_));
}

/* mr.lincomb({t1, t2, ..}, {c1, c2, ..}) = Σ c_i·t_i (1 to 4 same-shape tensors) */
static int l_lincomb(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1 && n <= MR_LINCOMB_MAX, 1, "1 to 4 tensors");
  luaL_argcheck(L, luaL_len(L, 2) == n, 2, "one coefficient per tensor");
  const mr_tensor *xs[MR_LINCOMB_MAX];
  float c[MR_LINCOMB_MAX];
  for (int i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    xs[i] = luaL_testudata(L, -1, MRL_TENSOR) ? ((mrl_tensor_box *)lua_touserdata(L, -1))->t : NULL;
    if (!xs[i]) luaL_argerror(L, 1, lua_pushfstring(L, "entry %d is not an open mr.Tensor", i + 1));
    lua_pop(L, 1); /* the table keeps the tensor alive */
    lua_geti(L, 2, i + 1);
    int ok;
    lua_Number v = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_argerror(L, 2, lua_pushfstring(L, "entry %d is not a number", i + 1));
    c[i] = (float)v;
    lua_pop(L, 1);
  }
  mr_ctx *ctx = mr_tensor_ctx(xs[0]);
  MRL_RUN_OP(L, ctx, mr_op_lincomb((int)n, xs, c, &out_));
}

/* ------------------------------------------------------------------ samplers */

/* {steps = N, shift = s} at arg (nil = defaults); unknown keys raise. */
static mr_sampler_opts check_opts(lua_State *L, int arg, mr_sampler_kind kind) {
  mr_sampler_opts o = mr_sampler_opts_default();
  o.kind = kind;
  if (lua_isnoneornil(L, arg)) return o;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "steps") == 0) {
      int ok;
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      if (!ok || v < 1 || v > 100000) luaL_argerror(L, arg, "steps must be an integer from 1 to 100000");
      o.steps = (int)v;
    } else if (strcmp(k, "shift") == 0) {
      int ok;
      lua_Number v = lua_tonumberx(L, -1, &ok);
      if (!ok || !(v > 0) || !isfinite(v)) luaL_argerror(L, arg, "shift must be a positive number");
      o.shift = v;
    } else {
      luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s' (steps, shift)", *k ? k : luaL_typename(L, -2)));
    }
    lua_pop(L, 1);
  }
  return o;
}

static int new_sampler(lua_State *L, mr_sampler_kind kind, int opts_arg) {
  mr_sampler_opts o = check_opts(L, opts_arg, kind);
  mr_ctx *ctx = mrl_ctx(L);
  sampler_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* closed until the engine fills it */
  b->s = NULL;
  luaL_setmetatable(L, MRL_SAMPLER);
  if (mr_sampler_new(ctx, &o, &b->s) != MR_OK) return mrl_raise(L, ctx);
  return 1;
}

static int l_unipc(lua_State *L) { return new_sampler(L, MR_SAMPLER_UNIPC, 1); }
static int l_dpmpp(lua_State *L) { return new_sampler(L, MR_SAMPLER_DPMPP, 1); }
static int l_euler(lua_State *L) { return new_sampler(L, MR_SAMPLER_EULER, 1); }

/* mr.sampler.new(name [, opts]) with name "unipc", "dpmpp" (or "dpm++"), "euler" */
static int l_new(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  mr_sampler_kind kind;
  if (!mr_sampler_kind_parse(name, &kind))
    return luaL_argerror(L, 1, lua_pushfstring(L, "unknown sampler '%s' (unipc, dpmpp or euler)", name));
  return new_sampler(L, kind, 2);
}

static int s_release(lua_State *L) {
  sampler_box *b = luaL_checkudata(L, 1, MRL_SAMPLER);
  mr_sampler_free(b->s);
  b->s = NULL;
  return 0;
}

static int s_tostring(lua_State *L) {
  sampler_box *b = luaL_checkudata(L, 1, MRL_SAMPLER);
  if (!b->s) lua_pushliteral(L, "mr.Sampler(closed)");
  else
    lua_pushfstring(L, "mr.Sampler(%s, %d steps, shift %f)", mr_sampler_kind_name(mr_sampler_get_kind(b->s)),
                    mr_sampler_steps(b->s), (lua_Number)mr_sampler_shift(b->s));
  return 1;
}

/* s:timesteps() -> {t1, ..., tN}: the integers the DiT sees, descending */
static int s_timesteps(lua_State *L) {
  mr_sampler *s = check_sampler(L, 1);
  int n = mr_sampler_steps(s);
  int64_t *t = lua_newuserdatauv(L, (size_t)n * sizeof *t, 0); /* scratch the GC owns */
  mr_sampler_timesteps(s, t);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushinteger(L, (lua_Integer)t[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* s:sigmas() -> {σ1, ..., σN, 0} */
static int s_sigmas(lua_State *L) {
  mr_sampler *s = check_sampler(L, 1);
  int n = mr_sampler_steps(s) + 1;
  double *sg = lua_newuserdatauv(L, (size_t)n * sizeof *sg, 0);
  mr_sampler_sigmas(s, sg);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushnumber(L, sg[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* s:step(model_output, t, sample) -> the next sample (a new tensor) */
static int s_step(lua_State *L) {
  mr_sampler *s = check_sampler(L, 1);
  mr_tensor *v = mrl_check_tensor(L, 2);
  lua_Integer t = luaL_checkinteger(L, 3);
  mr_tensor *x = mrl_check_tensor(L, 4);
  mr_ctx *ctx = mr_tensor_ctx(x);
  MRL_RUN_OP(L, ctx, mr_sampler_step(s, v, (int64_t)t, x, &out_));
}

static int s_reset(lua_State *L) {
  mr_sampler_reset(check_sampler(L, 1));
  return 0;
}

static int s_name(lua_State *L) {
  lua_pushstring(L, mr_sampler_kind_name(mr_sampler_get_kind(check_sampler(L, 1))));
  return 1;
}

static int s_steps(lua_State *L) {
  lua_pushinteger(L, mr_sampler_steps(check_sampler(L, 1)));
  return 1;
}

static int s_shift(lua_State *L) {
  lua_pushnumber(L, mr_sampler_shift(check_sampler(L, 1)));
  return 1;
}

/* s:next_index() -> 1-based position in :timesteps() of the next step, or nil before a run */
static int s_next_index(lua_State *L) {
  int i = mr_sampler_next_index(check_sampler(L, 1));
  if (i < 0) lua_pushnil(L);
  else lua_pushinteger(L, i + 1);
  return 1;
}

void mrl_open_sample(lua_State *L, int module) {
  static const luaL_Reg meta[] = {{"__gc", s_release}, {"__close", s_release}, {"__tostring", s_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg methods[] = {{"timesteps", s_timesteps}, {"sigmas", s_sigmas}, {"step", s_step},
                                     {"reset", s_reset},         {"name", s_name},     {"steps", s_steps},
                                     {"shift", s_shift},         {"next_index", s_next_index},
                                     {"close", s_release},       {NULL, NULL}};
  luaL_newmetatable(L, MRL_SAMPLER);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  static const luaL_Reg sampler_fns[] = {{"unipc", l_unipc}, {"dpmpp", l_dpmpp}, {"euler", l_euler},
                                         {"new", l_new},     {NULL, NULL}};
  luaL_newlib(L, sampler_fns);
  lua_setfield(L, module, "sampler");

  static const luaL_Reg fns[] = {{"randn", l_randn},       {"seed_string", l_seed_string},
                                 {"random_seed", l_random_seed}, {"guidance", l_guidance},
                                 {"lincomb", l_lincomb},   {NULL, NULL}};
  lua_pushvalue(L, module);
  luaL_setfuncs(L, fns, 0);
  lua_pop(L, 1);
}
