/* JSON for the module's embedded Lua parts (moonreel.pack reads manifests
   and shard indexes, moonreel.recipe writes sidecars). They `require "cjson"`;
   the module hands them this table under that name (l_module.c), so an
   installed module never depends on lua-cjson being on the host's path.

   It behaves as lua-cjson 2.1 does where the Lua parts can tell: decode
   (cJSON's parser) gives every number as a float and null as `null` (a NULL
   light userdata, as cjson.null); encode writes an empty table as {}, a table
   whose keys are 1..n as an array, integers as integers, and refuses NaN,
   infinities, cycles past 1000 levels and values JSON has no form for.
   Unlike lua-cjson, object keys come out sorted, so a sidecar's text is the
   same on every run. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l_internal.h"

#define JSON_MAX_DEPTH 1000

/* ------------------------------------------------------------------ decode */

static void push_value(lua_State *L, const cJSON *v, int depth, int max_depth) {
  luaL_checkstack(L, 3, "JSON nested too deep");
  if (depth > max_depth) luaL_error(L, "JSON nested deeper than %d levels", max_depth);
  if (cJSON_IsNumber(v)) {
    lua_pushnumber(L, (lua_Number)v->valuedouble);
  } else if (cJSON_IsString(v)) {
    lua_pushstring(L, v->valuestring);
  } else if (cJSON_IsBool(v)) {
    lua_pushboolean(L, cJSON_IsTrue(v));
  } else if (cJSON_IsArray(v)) {
    lua_createtable(L, cJSON_GetArraySize(v), 0);
    lua_Integer i = 1;
    for (const cJSON *e = v->child; e; e = e->next) {
      push_value(L, e, depth + 1, max_depth);
      lua_rawseti(L, -2, i++);
    }
  } else if (cJSON_IsObject(v)) {
    lua_newtable(L);
    for (const cJSON *e = v->child; e; e = e->next) {
      lua_pushstring(L, e->string);
      push_value(L, e, depth + 1, max_depth);
      lua_rawset(L, -3);
    }
  } else { /* null */
    lua_pushlightuserdata(L, NULL);
  }
}

/* The root is converted in a protected call, so the parsed tree is freed
   even when the conversion raises (out of memory, nesting). */
static int decode_tree(lua_State *L) {
  push_value(L, lua_touserdata(L, 1), 1, (int)lua_tointeger(L, 2));
  return 1;
}

/* The nesting limit of a decoder: its upvalue (a decoder made by new()), else
   JSON_MAX_DEPTH. */
static int decoder_depth(lua_State *L) {
  int *limit = lua_touserdata(L, lua_upvalueindex(1));
  return limit ? *limit : JSON_MAX_DEPTH;
}

static int json_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
  if (root == NULL) {
    size_t at = end && end >= text ? (size_t)(end - text) + 1 : 1;
    return luaL_error(L, "invalid JSON at character %d", (int)at);
  }
  while (end && (size_t)(end - text) < len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
  if (end && (size_t)(end - text) < len) {
    cJSON_Delete(root);
    return luaL_error(L, "invalid JSON at character %d: text after the value", (int)(end - text) + 1);
  }
  lua_pushcfunction(L, decode_tree);
  lua_pushlightuserdata(L, root);
  lua_pushinteger(L, decoder_depth(L));
  int st = lua_pcall(L, 2, 1, 0);
  cJSON_Delete(root);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

/* ------------------------------------------------------------------ encode */

static void add_number(lua_State *L, luaL_Buffer *b, int idx) {
  char s[64];
  if (lua_isinteger(L, idx)) {
    snprintf(s, sizeof s, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
  } else {
    double d = (double)lua_tonumber(L, idx);
    if (!isfinite(d)) luaL_error(L, "cannot encode %s as JSON", isnan(d) ? "NaN" : "an infinity");
    /* the shortest of 14..17 significant digits that reads back the same */
    for (int prec = 14; prec <= 17; prec++) {
      snprintf(s, sizeof s, "%.*g", prec, d);
      if (strtod(s, NULL) == d) break;
    }
  }
  luaL_addstring(b, s);
}

static void add_string(luaL_Buffer *b, const char *s, size_t len) {
  luaL_addchar(b, '"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '"': luaL_addstring(b, "\\\""); break;
    case '\\': luaL_addstring(b, "\\\\"); break;
    case '\n': luaL_addstring(b, "\\n"); break;
    case '\r': luaL_addstring(b, "\\r"); break;
    case '\t': luaL_addstring(b, "\\t"); break;
    case '\b': luaL_addstring(b, "\\b"); break;
    case '\f': luaL_addstring(b, "\\f"); break;
    default:
      if (c < 0x20) {
        char u[8];
        snprintf(u, sizeof u, "\\u%04x", c);
        luaL_addstring(b, u);
      } else {
        luaL_addchar(b, (char)c);
      }
    }
  }
  luaL_addchar(b, '"');
}

/* n > 0 when the table at idx is an array 1..n; 0 for an object (or empty). */
static lua_Integer array_length(lua_State *L, int idx) {
  lua_Integer count = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return 0;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k > max) max = k;
    count++;
  }
  return count == max ? count : 0;
}

static int compare_keys(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Encoding pushes values while it walks the tables, which a luaL_Buffer open
   across the walk does not allow; so each piece of text goes into a Lua table
   of pieces, joined at the end. */
typedef struct enc {
  int pieces; /* stack index of the table of pieces */
  lua_Integer n;
} enc;

static void put(lua_State *L, enc *e, const char *s, size_t len) {
  lua_pushlstring(L, s, len);
  lua_rawseti(L, e->pieces, ++e->n);
}
#define PUT(L, e, lit) put(L, e, lit, sizeof lit - 1)

static void put_buffer(lua_State *L, enc *e, void (*fill)(lua_State *, luaL_Buffer *, int), int idx) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  fill(L, &b, idx);
  luaL_pushresult(&b);
  lua_rawseti(L, e->pieces, ++e->n);
}

static void fill_number(lua_State *L, luaL_Buffer *b, int idx) { add_number(L, b, idx); }
static void fill_string(lua_State *L, luaL_Buffer *b, int idx) {
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  add_string(b, s, len);
}

static void encode_value(lua_State *L, enc *e, int idx, int depth) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 6, "JSON nested too deep");
  switch (lua_type(L, idx)) {
  case LUA_TNIL: PUT(L, e, "null"); return;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx)) PUT(L, e, "true");
    else PUT(L, e, "false");
    return;
  case LUA_TNUMBER: put_buffer(L, e, fill_number, idx); return;
  case LUA_TSTRING: put_buffer(L, e, fill_string, idx); return;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      PUT(L, e, "null");
      return;
    }
    break;
  case LUA_TTABLE: {
    if (depth > JSON_MAX_DEPTH) luaL_error(L, "cannot encode as JSON: nested deeper than %d levels (a cycle?)", JSON_MAX_DEPTH);
    lua_Integer n = array_length(L, idx);
    if (n > 0) {
      PUT(L, e, "[");
      for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) PUT(L, e, ",");
        lua_rawgeti(L, idx, i);
        encode_value(L, e, -1, depth + 1);
        lua_pop(L, 1);
      }
      PUT(L, e, "]");
      return;
    }
    /* an object: keys as strings (numbers converted), sorted */
    lua_newtable(L); /* key text -> original key */
    int keys = lua_gettop(L);
    lua_Integer nkeys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      int kt = lua_type(L, -1);
      if (kt == LUA_TNUMBER) {
        int key = lua_gettop(L);
        luaL_Buffer b;
        luaL_buffinit(L, &b); /* pushes a placeholder in Lua 5.4 */
        add_number(L, &b, key);
        luaL_pushresult(&b);
      } else if (kt == LUA_TSTRING) {
        lua_pushvalue(L, -1);
      } else {
        luaL_error(L, "cannot encode a table with a %s key as JSON", lua_typename(L, kt));
      }
      lua_pushvalue(L, -2);
      lua_rawset(L, keys);
      nkeys++;
    }
    const char **names = lua_newuserdatauv(L, (size_t)(nkeys ? nkeys : 1) * sizeof *names, 0);
    lua_Integer i = 0;
    lua_pushnil(L);
    while (lua_next(L, keys)) {
      lua_pop(L, 1);
      names[i++] = lua_tostring(L, -1); /* anchored as keys of the keys table */
    }
    qsort(names, (size_t)nkeys, sizeof *names, compare_keys);
    PUT(L, e, "{");
    for (i = 0; i < nkeys; i++) {
      if (i > 0) PUT(L, e, ",");
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      add_string(&b, names[i], strlen(names[i]));
      luaL_addchar(&b, ':');
      luaL_pushresult(&b);
      lua_rawseti(L, e->pieces, ++e->n);
      lua_getfield(L, keys, names[i]); /* the original key */
      lua_gettable(L, idx);
      encode_value(L, e, -1, depth + 1);
      lua_pop(L, 1);
    }
    PUT(L, e, "}");
    lua_pop(L, 2); /* names, keys */
    return;
  }
  default: break;
  }
  luaL_error(L, "cannot encode a %s value as JSON", luaL_typename(L, idx));
}

static int json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  lua_newtable(L);
  enc e = {lua_gettop(L), 0};
  encode_value(L, &e, 1, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= e.n; i++) {
    lua_rawgeti(L, e.pieces, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return 1;
}

/* decoder:decode_max_depth(n): the nesting a decoder made by new() accepts. */
static int json_decode_max_depth(lua_State *L) {
  int *limit = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= JSON_MAX_DEPTH, 1, "depth must be 1 .. 1000");
  *limit = (int)n;
  return 0;
}

/* decoder:decode_invalid_numbers(on): cJSON never reads NaN, Infinity or hex,
   so off is what every decoder does; on cannot be honoured and is refused. */
static int json_decode_invalid_numbers(lua_State *L) {
  luaL_argcheck(L, !lua_toboolean(L, 1), 1, "NaN and Infinity are never accepted here");
  return 0;
}

static void push_json_table(lua_State *L, bool with_limit);

/* new(): a decoder of its own settings, as lua-cjson's cjson.new() (a template
   reader bounds its nesting this way). */
static int json_new(lua_State *L) {
  push_json_table(L, true);
  return 1;
}

static void push_json_table(lua_State *L, bool with_limit) {
  lua_newtable(L);
  if (with_limit) {
    int *limit = lua_newuserdatauv(L, sizeof *limit, 0);
    *limit = JSON_MAX_DEPTH;
    int ud = lua_gettop(L);
    lua_pushvalue(L, ud);
    lua_pushcclosure(L, json_decode, 1);
    lua_setfield(L, -3, "decode");
    lua_pushvalue(L, ud);
    lua_pushcclosure(L, json_decode_max_depth, 1);
    lua_setfield(L, -3, "decode_max_depth");
    lua_pop(L, 1);
  } else {
    lua_pushcfunction(L, json_decode);
    lua_setfield(L, -2, "decode");
  }
  lua_pushcfunction(L, json_decode_invalid_numbers);
  lua_setfield(L, -2, "decode_invalid_numbers");
  lua_pushcfunction(L, json_encode);
  lua_setfield(L, -2, "encode");
  lua_pushcfunction(L, json_new);
  lua_setfield(L, -2, "new");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}

/* Pushes the JSON table {encode, decode, null, new, decode_invalid_numbers}. */
void mrl_push_json(lua_State *L) { push_json_table(L, false); }
