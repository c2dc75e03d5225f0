/* Tensor ops as module functions (mr.add(a, b)), methods (a:add(b)) and
   arithmetic metamethods (a + b). Each returns a new tensor; a shape the
   engine rejects raises its message. */
#include "l_internal.h"

/* ------------------------------------------------------- elementwise */

static int scale_op(lua_State *L, mr_tensor *a, float scale, float bias) {
  mr_ctx *ctx = mr_tensor_ctx(a);
  MRL_RUN_OP(L, ctx, mr_op_scale(a, scale, bias, &out_));
}

/* number op tensor for division: the number becomes a 1-element tensor of
   b's dtype that broadcasts. It is freed before any raise. */
static int number_div(lua_State *L, double x, mr_tensor *b) {
  mr_ctx *ctx = mr_tensor_ctx(b);
  mrl_tensor_box *box = mrl_push_box(L);
  int64_t one = 1;
  mr_tensor *s = NULL, *out = NULL;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_tensor_from_host(ctx, mr_tensor_dtype(b), 1, &one, MR_F64, &x, &s));
  if (st == MR_OK) st = mr_op_binary(MR_BINARY_DIV, s, b, &out);
  mr_tensor_free(s);
  if (st != MR_OK) return mrl_raise(L, ctx);
  mrl_box_set(L, box, out, true);
  return 1;
}

static int binary(lua_State *L, mr_binary_op op) {
  bool ta = mrl_is_tensor(L, 1), tb = mrl_is_tensor(L, 2);
  if (ta && tb) {
    mr_tensor *a = mrl_check_tensor(L, 1), *b = mrl_check_tensor(L, 2);
    mr_ctx *ctx = mr_tensor_ctx(a);
    MRL_RUN_OP(L, ctx, mr_op_binary(op, a, b, &out_));
  }
  if (ta) {
    mr_tensor *a = mrl_check_tensor(L, 1);
    double x = luaL_checknumber(L, 2);
    switch (op) {
    case MR_BINARY_ADD: return scale_op(L, a, 1.0f, (float)x);
    case MR_BINARY_SUB: return scale_op(L, a, 1.0f, (float)-x);
    case MR_BINARY_MUL: return scale_op(L, a, (float)x, 0.0f);
    case MR_BINARY_DIV: return scale_op(L, a, (float)(1.0 / x), 0.0f);
    }
  }
  if (tb) {
    double x = luaL_checknumber(L, 1);
    mr_tensor *b = mrl_check_tensor(L, 2);
    switch (op) {
    case MR_BINARY_ADD: return scale_op(L, b, 1.0f, (float)x);
    case MR_BINARY_SUB: return scale_op(L, b, -1.0f, (float)x);
    case MR_BINARY_MUL: return scale_op(L, b, (float)x, 0.0f);
    case MR_BINARY_DIV: return number_div(L, x, b);
    }
  }
  return luaL_typeerror(L, ta ? 2 : 1, "mr.Tensor or number");
}

static int l_add(lua_State *L) { return binary(L, MR_BINARY_ADD); }
static int l_sub(lua_State *L) { return binary(L, MR_BINARY_SUB); }
static int l_mul(lua_State *L) { return binary(L, MR_BINARY_MUL); }
static int l_div(lua_State *L) { return binary(L, MR_BINARY_DIV); }

/* mr.scale(x, s [, bias]) = x * s + bias */
static int l_scale(lua_State *L) {
  mr_tensor *a = mrl_check_tensor(L, 1);
  float s = (float)luaL_checknumber(L, 2), bias = (float)luaL_optnumber(L, 3, 0.0);
  return scale_op(L, a, s, bias);
}

/* mr.mul_add(a, b, c [, beta = 0]) = a * (b + beta) + c, broadcasting, one pass */
static int l_mul_add(lua_State *L) {
  mr_tensor *a = mrl_check_tensor(L, 1), *b = mrl_check_tensor(L, 2), *c = mrl_check_tensor(L, 3);
  float beta = (float)luaL_optnumber(L, 4, 0.0);
  mr_ctx *ctx = mr_tensor_ctx(a);
  MRL_RUN_OP(L, ctx, mr_op_mul_add(a, b, beta, c, &out_));
}

static int unary(lua_State *L, mr_unary_op op) {
  mr_tensor *a = mrl_check_tensor(L, 1);
  mr_ctx *ctx = mr_tensor_ctx(a);
  MRL_RUN_OP(L, ctx, mr_op_unary(op, a, &out_));
}

static int l_silu(lua_State *L) { return unary(L, MR_UNARY_SILU); }
static int l_gelu(lua_State *L) { return unary(L, MR_UNARY_GELU_TANH); }
static int l_exp(lua_State *L) { return unary(L, MR_UNARY_EXP); }
static int l_tanh(lua_State *L) { return unary(L, MR_UNARY_TANH); }
static int l_neg(lua_State *L) { return unary(L, MR_UNARY_NEG); }
static int l_square(lua_State *L) { return unary(L, MR_UNARY_SQUARE); }

/* ------------------------------------------------------------ layers */

/* mr.matmul(x, w [, bias]): x[..., K] · w[N, K]ᵀ + bias[N] */
static int l_matmul(lua_State *L) {
  mr_tensor *x = mrl_check_tensor(L, 1), *w = mrl_check_tensor(L, 2), *bias = mrl_opt_tensor(L, 3);
  mr_ctx *ctx = mr_tensor_ctx(x);
  MRL_RUN_OP(L, ctx, mr_op_matmul(x, w, bias, &out_));
}

/* mr.layer_norm(x [, w [, b [, eps]]]) over the last dim */
static int l_layer_norm(lua_State *L) {
  mr_tensor *x = mrl_check_tensor(L, 1), *w = mrl_opt_tensor(L, 2), *b = mrl_opt_tensor(L, 3);
  float eps = (float)luaL_optnumber(L, 4, 1e-5);
  mr_ctx *ctx = mr_tensor_ctx(x);
  MRL_RUN_OP(L, ctx, mr_op_layer_norm(x, w, b, eps, &out_));
}

/* mr.rms_norm(x [, w [, eps]]) over the last dim */
static int l_rms_norm(lua_State *L) {
  mr_tensor *x = mrl_check_tensor(L, 1), *w = mrl_opt_tensor(L, 2);
  float eps = (float)luaL_optnumber(L, 3, 1e-5);
  mr_ctx *ctx = mr_tensor_ctx(x);
  MRL_RUN_OP(L, ctx, mr_op_rms_norm(x, w, eps, &out_));
}

/* mr.softmax(x [, dim = -1]) */
static int l_softmax(lua_State *L) {
  mr_tensor *x = mrl_check_tensor(L, 1);
  int ndim = mr_tensor_ndim(x);
  int d = mrl_opt_dim(L, 2, ndim, ndim - 1);
  mr_ctx *ctx = mr_tensor_ctx(x);
  MRL_RUN_OP(L, ctx, mr_op_softmax(x, d, &out_));
}

/* mr.attention(q, k, v [, {scale = s, k_lens = {...}}]) */
static int l_attention(lua_State *L) {
  lua_settop(L, 4);
  mr_tensor *q = mrl_check_tensor(L, 1), *k = mrl_check_tensor(L, 2), *v = mrl_check_tensor(L, 3);
  mr_attention_opts o = mr_attention_opts_default();
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    if (lua_getfield(L, 4, "scale") != LUA_TNIL) {
      int ok;
      o.scale = (float)lua_tonumberx(L, -1, &ok);
      if (!ok) luaL_argerror(L, 4, "scale must be a number");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 4, "k_lens") != LUA_TNIL) {
      if (!lua_istable(L, -1)) luaL_argerror(L, 4, "k_lens must be a table of integers");
      int64_t batch = mr_tensor_shape(q)[0];
      lua_Integer n = luaL_len(L, -1);
      if (n != batch)
        luaL_argerror(L, 4, lua_pushfstring(L, "k_lens has %d entries, batch is %d", (int)n, (int)batch));
      int32_t *lens = lua_newuserdatauv(L, (size_t)n * sizeof *lens + 1, 0);
      for (lua_Integer i = 0; i < n; i++) {
        int ok;
        lua_geti(L, -2, i + 1);
        lua_Integer len = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || len < 0) luaL_argerror(L, 4, lua_pushfstring(L, "k_lens[%d] must be an integer >= 0", (int)i + 1));
        lens[i] = (int32_t)len;
      }
      o.k_lens = lens; /* the scratch userdata stays on the stack until return */
    } else {
      lua_pop(L, 1);
    }
  }
  mr_ctx *ctx = mr_tensor_ctx(q);
  MRL_RUN_OP(L, ctx, mr_op_attention(q, k, v, &o, &out_));
}

/* ---------------------------------------------------------- structure */

/* mr.concat({t1, t2, ...} [, dim = 1]) */
static int l_concat(lua_State *L) {
  lua_settop(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "needs at least one tensor");
  mr_tensor **ts = lua_newuserdatauv(L, (size_t)n * sizeof *ts, 0);
  for (lua_Integer i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    mrl_tensor_box *b = luaL_testudata(L, -1, MRL_TENSOR);
    if (!b) luaL_argerror(L, 1, lua_pushfstring(L, "entry %d is a %s, expected mr.Tensor", (int)i + 1, luaL_typename(L, -1)));
    if (!b->t) luaL_argerror(L, 1, lua_pushfstring(L, "entry %d is a closed tensor", (int)i + 1));
    ts[i] = b->t; /* the table keeps the tensors alive for the call */
    lua_pop(L, 1);
  }
  int d = mrl_opt_dim(L, 2, mr_tensor_ndim(ts[0]), 0);
  mr_ctx *ctx = mr_tensor_ctx(ts[0]);
  MRL_RUN_OP(L, ctx, mr_op_concat(ts, (int)n, d, &out_));
}

/* mr.pad(x, {before1, after1, before2, after2, ...} [, value = 0]) */
static int l_pad(lua_State *L) {
  mr_tensor *x = mrl_check_tensor(L, 1);
  int ndim = mr_tensor_ndim(x);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 2);
  if (n != 2 * ndim)
    luaL_argerror(L, 2, lua_pushfstring(L, "pads has %d entries; a %d-dim tensor needs %d (before, after per dim)",
                                        (int)n, ndim, 2 * ndim));
  int64_t pads[2 * MR_MAX_DIMS];
  for (int i = 0; i < n; i++) {
    int ok;
    lua_geti(L, 2, i + 1);
    lua_Integer p = lua_tointegerx(L, -1, &ok);
    lua_pop(L, 1);
    if (!ok || p < 0) luaL_argerror(L, 2, lua_pushfstring(L, "pads[%d] must be an integer >= 0", i + 1));
    pads[i] = p;
  }
  float value = (float)luaL_optnumber(L, 3, 0.0);
  mr_ctx *ctx = mr_tensor_ctx(x);
  MRL_RUN_OP(L, ctx, mr_op_pad(x, pads, value, &out_));
}

static int reduce(lua_State *L, mr_reduce_op op) {
  mr_tensor *x = mrl_check_tensor(L, 1);
  int d = mrl_check_dim(L, 2, mr_tensor_ndim(x));
  bool keepdim = lua_toboolean(L, 3);
  mr_ctx *ctx = mr_tensor_ctx(x);
  MRL_RUN_OP(L, ctx, mr_op_reduce(op, x, d, keepdim, &out_));
}

static int l_sum(lua_State *L) { return reduce(L, MR_REDUCE_SUM); }
static int l_mean(lua_State *L) { return reduce(L, MR_REDUCE_MEAN); }
static int l_max(lua_State *L) { return reduce(L, MR_REDUCE_MAX); }

/* ------------------------------------------------------- registration */

/* Module functions; all but concat are also tensor methods. */
static const luaL_Reg op_funcs[] = {
  {"add", l_add}, {"sub", l_sub}, {"mul", l_mul}, {"div", l_div}, {"scale", l_scale}, {"mul_add", l_mul_add},
  {"silu", l_silu}, {"gelu", l_gelu}, {"exp", l_exp}, {"tanh", l_tanh}, {"neg", l_neg}, {"square", l_square},
  {"matmul", l_matmul}, {"layer_norm", l_layer_norm}, {"rms_norm", l_rms_norm}, {"softmax", l_softmax},
  {"attention", l_attention}, {"pad", l_pad}, {"sum", l_sum}, {"mean", l_mean}, {"max", l_max},
  {NULL, NULL}};

static const luaL_Reg op_meta[] = {
  {"__add", l_add}, {"__sub", l_sub}, {"__mul", l_mul}, {"__div", l_div}, {"__unm", l_neg}, {NULL, NULL}};

void mrl_open_ops(lua_State *L, int module, int meta, int methods) {
  lua_pushvalue(L, module);
  luaL_setfuncs(L, op_funcs, 0);
  lua_pushcfunction(L, l_concat);
  lua_setfield(L, -2, "concat");
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, op_funcs, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, meta);
  luaL_setfuncs(L, op_meta, 0);
  lua_pop(L, 1);
}
