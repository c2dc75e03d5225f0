/* Helpers of the fuzz targets over the module's Lua parsers (fuzz_lua.h). */
#define _GNU_SOURCE /* nftw's FTW_PHYS */
#include "fuzz_lua.h"

#include "moonreel_lua.h"

#include <ctype.h>
#include <ftw.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Per input: at most this many VM instructions (MR_FUZZ_LUA_BUDGET, in
   thousands; a template of 64 KB takes about 1 million to validate) and
   this much Lua heap. Work in C (JSON decoding, hashing) is not counted:
   libFuzzer's -timeout covers it. */
#define HOOK_EVERY 1000
#define DEFAULT_BUDGET_K 20000
#define HEAP_LIMIT ((size_t)256 << 20)

static lua_State *L;
static int driver_ref = LUA_NOREF;
static long budget_k, used_k;
static size_t heap;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    free(ptr);
    heap -= osize;
    return NULL;
  }
  if (nsize > osize && heap + (nsize - osize) > HEAP_LIMIT) {
    fprintf(stderr, "fuzz: the Lua heap would pass %zu MB (%zu bytes in use, %zu asked)\n", HEAP_LIMIT >> 20, heap,
            nsize);
    abort();
  }
  void *p = realloc(ptr, nsize);
  if (p != NULL) heap = heap - osize + nsize;
  return p;
}

static void count_hook(lua_State *l, lua_Debug *ar) {
  (void)ar;
  if (++used_k > budget_k) {
    luaL_traceback(l, l, NULL, 0);
    fprintf(stderr, "fuzz: one input ran past %ld thousand Lua instructions\n%s\n", budget_k, lua_tostring(l, -1));
    abort();
  }
}

static int l_invariant(lua_State *l) {
  if (lua_toboolean(l, 1)) return 0;
  const char *what = luaL_optstring(l, 2, "(no description)");
  luaL_traceback(l, l, NULL, 1);
  fprintf(stderr, "fuzz invariant failed: %s\n%s\n", what, lua_tostring(l, -1));
  abort();
}

/* Whether s has a Lua position "NAME.lua:LINE:" (a runtime error's
   prefix, or one passed through) or "[C]:" that the input itself does not
   hold (a message may quote what the input says; a traceback is several
   lines, caught as such). */
static const uint8_t *input;
static size_t input_size;

static bool in_input(const char *p, size_t n) {
  return n > 0 && input_size >= n && memmem(input, input_size, p, n) != NULL;
}

static bool has_lua_position(const char *s) {
  if (strncmp(s, "[C]:", 4) == 0 && !in_input(s, 4)) return true;
  for (const char *p = strstr(s, ".lua:"); p != NULL; p = strstr(p + 1, ".lua:")) {
    const char *d = p + 5;
    if (!isdigit((unsigned char)*d)) continue;
    while (isdigit((unsigned char)*d)) d++;
    if (*d != ':') continue;
    const char *b = p; /* the chunk name before it */
    while (b > s && (isalnum((unsigned char)b[-1]) || strchr("_/.-", b[-1]) != NULL)) b--;
    /* quoted from the input (its chunk name may be escaped in the message,
       "\n" for a newline, so the ".lua:N:" itself is enough) */
    if (!in_input(b, (size_t)(d + 1 - b)) && !in_input(p, (size_t)(d + 1 - p))) return true;
  }
  return false;
}

static void check_message(lua_State *l, int idx, const char *what) {
  static int verbose = -1;
  if (verbose < 0) verbose = getenv("MR_FUZZ_VERBOSE") != NULL;
  if (lua_type(l, idx) != LUA_TSTRING) {
    fprintf(stderr, "fuzz: %s is a %s, not a message\n", what, luaL_typename(l, idx));
    abort();
  }
  size_t n;
  const char *s = lua_tolstring(l, idx, &n);
  if (verbose) fprintf(stderr, "  refused: %s\n", s);
  if (n == 0) {
    fprintf(stderr, "fuzz: %s is empty\n", what);
    abort();
  }
  if (memchr(s, '\n', n) != NULL || memchr(s, '\r', n) != NULL || strlen(s) != n) {
    fprintf(stderr, "fuzz: %s is not one line: [[%s]]\n", what, s);
    abort();
  }
  if (has_lua_position(s)) {
    fprintf(stderr, "fuzz: %s names a Lua file and line: %s\n", what, s);
    abort();
  }
}

lua_State *mr_fuzz_lua_state(const char *name, const char *src) {
  if (L != NULL) return L;
  const char *b = getenv("MR_FUZZ_LUA_BUDGET");
  budget_k = b ? atol(b) : DEFAULT_BUDGET_K;
  if (budget_k <= 0) budget_k = DEFAULT_BUDGET_K;
  L = lua_newstate(limited_alloc, NULL);
  if (L == NULL) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "moonreel", luaopen_moonreel, 0);
  lua_setglobal(L, "mr");
  lua_pushcfunction(L, l_invariant);
  lua_setglobal(L, "invariant");
  lua_pushstring(L, mr_fuzz_temp_dir());
  lua_setglobal(L, "TMP");
  lua_pushstring(L, mr_fuzz_source_path(""));
  lua_setglobal(L, "SRC");
  char chunk[128];
  snprintf(chunk, sizeof chunk, "=fuzz/%s", name);
  if (luaL_loadbuffer(L, src, strlen(src), chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK ||
      !lua_isfunction(L, -1)) {
    fprintf(stderr, "fuzz_%s: the driver does not load: %s\n", name, lua_tostring(L, -1));
    exit(1);
  }
  driver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return L;
}

void mr_fuzz_lua_run(const uint8_t *data, size_t size) {
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, driver_ref);
  lua_pushlstring(L, (const char *)data, size);
  input = data;
  input_size = size;
  used_k = 0;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
  int rc = lua_pcall(L, 1, 1, 0);
  lua_sethook(L, NULL, 0, 0);
  if (rc != LUA_OK) {
    check_message(L, -1, "an error the driver did not catch");
  } else if (lua_istable(L, -1)) {
    /* out.n when set: a list that may hold nil (an error raised as nil) */
    lua_Integer n = lua_getfield(L, -1, "n") == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    if (n == 0) n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, -1, i);
      check_message(L, -1, "a refusal");
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  lua_gc(L, LUA_GCCOLLECT);
}

/* ------------------------------------------------------------ temp files */

static char temp_dir[256];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static void temp_dir_remove(void) {
  if (temp_dir[0]) nftw(temp_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *mr_fuzz_temp_dir(void) {
  if (temp_dir[0] == '\0') {
    const char *t = getenv("TMPDIR");
    snprintf(temp_dir, sizeof temp_dir, "%s/mr-fuzz-XXXXXX", t && *t ? t : "/tmp");
    if (mkdtemp(temp_dir) == NULL) {
      perror("fuzz: mkdtemp");
      exit(1);
    }
    atexit(temp_dir_remove);
  }
  return temp_dir;
}

void mr_fuzz_write(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
    perror(path);
    abort();
  }
}
