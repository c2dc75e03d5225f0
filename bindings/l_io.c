/* Checkpoint files: mr.load (safetensors, PyTorch .pth) and mr.save
   (safetensors). A missing or malformed file is an expected failure and
   returns nil, message, code; wrong argument types raise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l_internal.h"

#define WEIGHTS_BOX "mr.WeightsFile"

/* An open checkpoint held by a userdata, so a raise between open and free
   (out of Lua memory while building the result) cannot leak it. */
typedef struct weights_box {
  mr_weights *w;
} weights_box;

static int weights_release(lua_State *L) {
  weights_box *b = luaL_checkudata(L, 1, WEIGHTS_BOX);
  mr_weights_free(b->w);
  b->w = NULL;
  return 0;
}

/* ---------------------------------------------------- metadata as JSON */

/* Safetensors metadata is a flat JSON object of string values. Parses it into
   a table on the stack; returns false (pushing nothing) if it is not one. */
static const char *json_string(luaL_Buffer *b, const char *p) {
  if (*p++ != '"') return NULL;
  while (*p && *p != '"') {
    if (*p != '\\') {
      luaL_addchar(b, *p++);
      continue;
    }
    p++;
    switch (*p) {
    case '"': case '\\': case '/': luaL_addchar(b, *p); break;
    case 'b': luaL_addchar(b, '\b'); break;
    case 'f': luaL_addchar(b, '\f'); break;
    case 'n': luaL_addchar(b, '\n'); break;
    case 'r': luaL_addchar(b, '\r'); break;
    case 't': luaL_addchar(b, '\t'); break;
    case 'u': {
      unsigned cp = 0;
      for (int i = 1; i <= 4; i++) {
        char c = p[i];
        cp <<= 4;
        if (c >= '0' && c <= '9') cp |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') cp |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') cp |= (unsigned)(c - 'A' + 10);
        else return NULL;
      }
      p += 4;
      /* a surrogate pair */
      if (cp >= 0xD800 && cp < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
        unsigned lo = (unsigned)strtoul((char[5]){p[3], p[4], p[5], p[6], 0}, NULL, 16);
        if (lo >= 0xDC00 && lo < 0xE000) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
      }
      char u[8];
      int n = 0;
      if (cp < 0x80) u[n++] = (char)cp;
      else if (cp < 0x800) {
        u[n++] = (char)(0xC0 | (cp >> 6));
        u[n++] = (char)(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        u[n++] = (char)(0xE0 | (cp >> 12));
        u[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[n++] = (char)(0x80 | (cp & 0x3F));
      } else {
        u[n++] = (char)(0xF0 | (cp >> 18));
        u[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[n++] = (char)(0x80 | (cp & 0x3F));
      }
      luaL_addlstring(b, u, (size_t)n);
      break;
    }
    default: return NULL;
    }
    p++;
  }
  return *p == '"' ? p + 1 : NULL;
}

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  return p;
}

static bool push_metadata(lua_State *L, const char *json) {
  int top = lua_gettop(L);
  lua_newtable(L);
  const char *p = skip_ws(json);
  if (*p++ != '{') goto bad;
  p = skip_ws(p);
  if (*p == '}') return true;
  for (;;) {
    luaL_Buffer k, v;
    luaL_buffinit(L, &k);
    if (!(p = json_string(&k, skip_ws(p)))) goto bad;
    luaL_pushresult(&k);
    p = skip_ws(p);
    if (*p++ != ':') goto bad;
    luaL_buffinit(L, &v);
    if (!(p = json_string(&v, skip_ws(p)))) goto bad;
    luaL_pushresult(&v);
    lua_rawset(L, top + 1);
    p = skip_ws(p);
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p == '}') return true;
    goto bad;
  }
bad:
  lua_settop(L, top);
  return false;
}

static void add_json_string(luaL_Buffer *b, const char *s, size_t len) {
  luaL_addchar(b, '"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(b, '\\');
      luaL_addchar(b, (char)c);
    } else if (c < 0x20) {
      char e[8];
      snprintf(e, sizeof e, "\\u%04x", c);
      luaL_addstring(b, e);
    } else {
      luaL_addchar(b, (char)c);
    }
  }
  luaL_addchar(b, '"');
}

typedef struct kv {
  const char *k, *v;
  size_t kl, vl;
} kv;

static int kv_cmp(const void *a, const void *b) { return strcmp(((const kv *)a)->k, ((const kv *)b)->k); }

typedef struct named_tensor {
  const char *name;
  mr_tensor *t;
} named_tensor;

static int named_cmp(const void *a, const void *b) {
  return strcmp(((const named_tensor *)a)->name, ((const named_tensor *)b)->name);
}

/* Encodes the metadata table at arg as a JSON object, keys sorted so the
   file is reproducible; pushes the string. */
static void push_metadata_json(lua_State *L, int arg) {
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_argerror(L, arg, lua_pushfstring(L, "metadata key is a %s, expected a string", luaL_typename(L, -2)));
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_argerror(L, arg, lua_pushfstring(L, "metadata value of '%s' is a %s, expected a string",
                                            lua_tostring(L, -2), luaL_typename(L, -1)));
    lua_pop(L, 1);
    n++;
  }
  kv *e = lua_newuserdatauv(L, (size_t)n * sizeof *e + 1, 0);
  lua_newtable(L); /* anchors number values turned into strings */
  int anchor = lua_gettop(L);
  int i = 0;
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    e[i].k = lua_tolstring(L, -2, &e[i].kl); /* a string key: no conversion in place */
    if (lua_type(L, -1) == LUA_TNUMBER) {
      luaL_tolstring(L, -1, NULL);
      lua_rawseti(L, anchor, i + 1);
      lua_rawgeti(L, anchor, i + 1);
      lua_replace(L, -2);
    }
    e[i].v = lua_tolstring(L, -1, &e[i].vl);
    i++;
    lua_pop(L, 1);
  }
  qsort(e, (size_t)n, sizeof *e, kv_cmp);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '{');
  for (i = 0; i < n; i++) {
    if (i) luaL_addchar(&b, ',');
    add_json_string(&b, e[i].k, e[i].kl);
    luaL_addchar(&b, ':');
    add_json_string(&b, e[i].v, e[i].vl);
  }
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
}

/* ----------------------------------------------------------------- load */

/* mr.load(path [, {dtype = "bf16"}]) -> {name = tensor, ...}, metadata | nil, msg, code */
static int l_load(lua_State *L) {
  lua_settop(L, 2);
  const char *path = luaL_checkstring(L, 1);
  mr_dtype want = MR_DTYPE_COUNT;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "dtype");
    want = mrl_check_dtype(L, -1, MR_DTYPE_COUNT, true);
    lua_pop(L, 1);
  }
  mr_ctx *ctx = mrl_ctx(L);
  weights_box *wb = lua_newuserdatauv(L, sizeof *wb, 0);
  wb->w = NULL;
  luaL_setmetatable(L, WEIGHTS_BOX);
  mr_status st = mr_weights_open(ctx, path, &wb->w);
  if (st != MR_OK) return mrl_fail(L, ctx, st);

  int n = mr_weights_count(wb->w);
  lua_createtable(L, 0, n);
  for (int i = 0; i < n; i++) {
    mr_weight_info info;
    if ((st = mr_weights_get(wb->w, i, &info)) != MR_OK) break;
    mr_dtype dt = want != MR_DTYPE_COUNT ? want : mr_dtype_is_storage(info.dtype) ? info.dtype : MR_F32;
    mrl_tensor_box *tb = mrl_push_box(L);
    mr_tensor *t;
    MRL_RETRY_DEVMEM(L, st, mr_weights_to_tensor(ctx, wb->w, i, dt, &t));
    if (st != MR_OK) break;
    mrl_box_set(L, tb, t, true);
    lua_setfield(L, -2, info.name);
  }
  if (st != MR_OK) {
    mr_weights_free(wb->w);
    wb->w = NULL;
    return mrl_fail(L, ctx, st); /* tensors already made are the GC's */
  }
  const char *meta = mr_weights_metadata(wb->w);
  if (!meta || !push_metadata(L, meta)) lua_newtable(L);
  mr_weights_free(wb->w); /* tensors are device copies; the file can go */
  wb->w = NULL;
  return 2;
}

/* ----------------------------------------------------------------- save */

/* mr.save(path, {name = tensor, ...} [, metadata]) -> true | nil, msg, code */
static int l_save(lua_State *L) {
  lua_settop(L, 3);
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_argerror(L, 2, lua_pushfstring(L, "tensor name is a %s, expected a string", luaL_typename(L, -2)));
    mrl_tensor_box *b = luaL_testudata(L, -1, MRL_TENSOR);
    if (!b) luaL_argerror(L, 2, lua_pushfstring(L, "'%s' is a %s, expected mr.Tensor", lua_tostring(L, -2), luaL_typename(L, -1)));
    if (!b->t) luaL_argerror(L, 2, lua_pushfstring(L, "'%s' is a closed tensor", lua_tostring(L, -2)));
    lua_pop(L, 1);
    n++;
  }
  luaL_argcheck(L, n > 0, 2, "no tensors to save");
  /* names and tensors stay anchored by the table at 2 during the call */
  named_tensor *e = lua_newuserdatauv(L, (size_t)n * sizeof *e, 0);
  int i = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    e[i].name = lua_tostring(L, -2);
    e[i].t = ((mrl_tensor_box *)lua_touserdata(L, -1))->t;
    i++;
    lua_pop(L, 1);
  }
  qsort(e, (size_t)n, sizeof *e, named_cmp);
  const char **cnames = lua_newuserdatauv(L, (size_t)n * sizeof *cnames + 1, 0);
  mr_tensor **ts = lua_newuserdatauv(L, (size_t)n * sizeof *ts + 1, 0);
  for (i = 0; i < n; i++) {
    cnames[i] = e[i].name;
    ts[i] = e[i].t;
  }
  const char *meta = NULL;
  if (!lua_isnoneornil(L, 3)) {
    push_metadata_json(L, 3);
    meta = lua_tostring(L, -1);
  }
  mr_ctx *ctx = mrl_ctx(L);
  mr_status st = mr_safetensors_write(ctx, path, n, cnames, ts, meta);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg io_funcs[] = {{"load", l_load}, {"save", l_save}, {NULL, NULL}};

void mrl_open_io(lua_State *L, int module) {
  if (luaL_newmetatable(L, WEIGHTS_BOX)) {
    lua_pushcfunction(L, weights_release);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, weights_release);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, io_funcs, 0);
  lua_pop(L, 1);
}
