/* JSON for the module's embedded Lua parts (moonreel.pack reads manifests
   and shard indexes, moonreel.recipe writes sidecars, moonreel.template and
   moonreel.batch read templates and manifests). They `require "cjson"`; the
   module hands them this table under that name (l_module.c), so an installed
   module never depends on lua-cjson being on the host's path.

   It offers the part of lua-cjson 2.1's interface they use (encode, decode,
   null, new, decode_max_depth, decode_invalid_numbers) and behaves as
   lua-cjson does where they can tell: decode (cJSON's parser) gives every
   number as a float and null as `null` (a NULL light userdata, as
   cjson.null); encode escapes strings byte for byte as lua-cjson does
   (including "\/" and "\u007f"), writes an empty table as {}, a table whose
   keys are 1..n as an array, and refuses NaN, infinities, cycles past 1000
   levels and values JSON has no form for. Where it differs: integers are
   written exactly and floats with the fewest digits (14 to 17) that read
   back the same (lua-cjson: 14 digits for both), object keys come out
   sorted (so a sidecar's text is the same on every run), and NaN, Infinity
   and hexadecimal numbers are never accepted (cJSON's grammar), whatever
   decode_invalid_numbers says. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l_internal.h"

#define JSON_MAX_DEPTH 1000

/* An instance's settings (lua-cjson's cjson.new() makes one with its own). */
typedef struct json_cfg {
  int decode_max_depth;
  bool decode_invalid_numbers; /* recorded; cJSON's grammar refuses them regardless */
} json_cfg;

/* ------------------------------------------------------------------ decode */

static void push_value(lua_State *L, const cJSON *v, int depth, int max_depth) {
  luaL_checkstack(L, 3, "JSON nested too deep");
  /* depth counts arrays and objects, as lua-cjson's decode_max_depth */
  if ((cJSON_IsArray(v) || cJSON_IsObject(v)) && depth > max_depth)
    luaL_error(L, "found too many nested data structures (more than %d)", max_depth);
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

static int json_decode(lua_State *L) {
  const json_cfg *cfg = lua_touserdata(L, lua_upvalueindex(1));
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
  lua_pushinteger(L, cfg->decode_max_depth);
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
    case '/': luaL_addstring(b, "\\/"); break;
    case 0x7f: luaL_addstring(b, "\\u007f"); break;
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

/* cjson.decode_max_depth([n]) -> the depth in force */
static int json_decode_max_depth(lua_State *L) {
  json_cfg *cfg = lua_touserdata(L, lua_upvalueindex(1));
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= JSON_MAX_DEPTH, 1, "a depth of 1 .. 1000");
    cfg->decode_max_depth = (int)n;
  }
  lua_pushinteger(L, cfg->decode_max_depth);
  return 1;
}

/* cjson.decode_invalid_numbers([on]) -> the setting (NaN, Infinity and hex
   numbers are refused either way: cJSON's grammar has none of them) */
static int json_decode_invalid_numbers(lua_State *L) {
  json_cfg *cfg = lua_touserdata(L, lua_upvalueindex(1));
  if (!lua_isnoneornil(L, 1)) cfg->decode_invalid_numbers = lua_toboolean(L, 1);
  lua_pushboolean(L, cfg->decode_invalid_numbers);
  return 1;
}

static int json_new(lua_State *L);

/* Pushes an instance {encode, decode, null, new, decode_max_depth,
   decode_invalid_numbers} with settings of its own. */
static void push_instance(lua_State *L) {
  lua_createtable(L, 0, 6);
  json_cfg *cfg = lua_newuserdatauv(L, sizeof *cfg, 0);
  cfg->decode_max_depth = JSON_MAX_DEPTH;
  cfg->decode_invalid_numbers = true;
  static const struct { const char *name; lua_CFunction fn; } with_cfg[] = {
    {"decode", json_decode}, {"decode_max_depth", json_decode_max_depth},
    {"decode_invalid_numbers", json_decode_invalid_numbers}};
  for (size_t i = 0; i < sizeof with_cfg / sizeof *with_cfg; i++) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, with_cfg[i].fn, 1);
    lua_setfield(L, -3, with_cfg[i].name);
  }
  lua_pop(L, 1); /* cfg, held by the closures */
  lua_pushcfunction(L, json_encode);
  lua_setfield(L, -2, "encode");
  lua_pushcfunction(L, json_new);
  lua_setfield(L, -2, "new");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}

static int json_new(lua_State *L) {
  push_instance(L);
  return 1;
}

/* Pushes the JSON table the Lua parts get as "cjson". */
void mrl_push_json(lua_State *L) { push_instance(L); }
