/* The moonreel Lua module: luaopen_moonreel, the per-state context, device
   queries and the GC-pressure accounting that lets Lua's collector see VRAM. */
#define _GNU_SOURCE /* dladdr1: where the module was loaded from */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "l_internal.h"
#include "moonreel_lua.h"

#define STATE_KEY "moonreel.state"
#define STATE_MT "mr.State"

/* ------------------------------------------------------------------ state */

static int state_gc(lua_State *L) {
  mrl_state *s = luaL_checkudata(L, 1, STATE_MT);
  if (s->ctx && s->owned) {
    if (s->on_ctx) s->on_ctx(NULL, s->on_ctx_user);
    mr_ctx_free(s->ctx);
  }
  s->ctx = NULL;
  return 0;
}

/* Created by luaopen (or by an embedding call before it), so it is marked for
   finalization before any tensor: lua_close finalizes in reverse order, and
   the context is freed after every tensor. */
mrl_state *mrl_state_get(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY) == LUA_TUSERDATA) {
    mrl_state *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
  }
  lua_pop(L, 1);
  mrl_state *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->threshold = 256u << 20;
  if (luaL_newmetatable(L, STATE_MT)) {
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);
  return s;
}

/* A quarter of the device heap, within [64 MiB, 1 GiB]: on a CPU device the
   "heap" is host RAM, and a lazy collector there would swap first. */
static size_t pick_threshold(mr_ctx *ctx) {
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  uint64_t t = info.heap_bytes / 4;
  if (t < (64u << 20)) t = 64u << 20;
  if (t > (1u << 30)) t = 1u << 30;
  return (size_t)t;
}

mr_ctx *mrl_ctx(lua_State *L) {
  mrl_state *s = mrl_state_get(L);
  if (s->ctx) return s->ctx;
  if (s->failed) luaL_error(L, "moonreel: no usable device (context creation failed earlier)");
  mr_ctx *ctx = NULL;
  mr_status st = mr_ctx_new(NULL, &ctx);
  if (st != MR_OK) {
    s->failed = true;
    return luaL_error(L, "moonreel: cannot create a context: %s (%s)", mr_status_str(st), mr_status_name(st)), NULL;
  }
  s->ctx = ctx;
  s->owned = true;
  s->threshold = pick_threshold(ctx);
  if (s->on_ctx) s->on_ctx(ctx, s->on_ctx_user);
  return ctx;
}

void mrl_collect(lua_State *L) {
  mrl_state *s = mrl_state_get(L);
  s->since_gc = 0;
  s->collections++;
  lua_gc(L, LUA_GCCOLLECT); /* the freed bytes serve the next allocation at once */
}

/* ------------------------------------------------------- embedding API */

void moonreel_lua_set_ctx(lua_State *L, mr_ctx *ctx) {
  mrl_state *s = mrl_state_get(L);
  if (s->ctx) return; /* too late: tensors may already live on the current one */
  s->ctx = ctx;
  s->owned = false;
  s->failed = false;
  if (ctx) s->threshold = pick_threshold(ctx);
}

mr_ctx *moonreel_lua_ctx(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    return NULL;
  }
  mrl_state *s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return s->ctx;
}

void moonreel_lua_on_ctx(lua_State *L, moonreel_lua_ctx_fn fn, void *user) {
  mrl_state *s = mrl_state_get(L);
  s->on_ctx = fn;
  s->on_ctx_user = user;
}

/* ------------------------------------------------------------- helpers */

/* The engine's message names what failed; the Lua line that called is not
   added (it would be a line of the recipe, not of the user's script). */
int mrl_raise(lua_State *L, mr_ctx *ctx) {
  const char *msg = mr_ctx_last_error(ctx);
  lua_pushstring(L, msg && *msg ? msg : "moonreel: engine call failed");
  return lua_error(L);
}

int mrl_fail(lua_State *L, mr_ctx *ctx, mr_status st) {
  const char *msg = ctx ? mr_ctx_last_error(ctx) : "";
  lua_pushnil(L);
  lua_pushstring(L, msg && *msg ? msg : mr_status_str(st));
  lua_pushstring(L, mr_status_name(st));
  return 3;
}

mr_dtype mrl_check_dtype(lua_State *L, int arg, mr_dtype def, bool storage_only) {
  if (lua_isnoneornil(L, arg)) return def;
  const char *name = luaL_checkstring(L, arg);
  mr_dtype dt;
  if (!mr_dtype_parse(name, &dt))
    return luaL_argerror(L, arg, lua_pushfstring(L, "unknown dtype '%s' (f32, f16, bf16, f64, i64, i32, u8)", name)),
           MR_F32;
  if (storage_only && !mr_dtype_is_storage(dt))
    return luaL_argerror(L, arg, lua_pushfstring(L, "dtype '%s' cannot be stored on the device (use f32, f16 or bf16)",
                                                 name)),
           MR_F32;
  return dt;
}

int mrl_check_dim(lua_State *L, int arg, int ndim) {
  lua_Integer d = luaL_checkinteger(L, arg);
  if (d == 0) return luaL_argerror(L, arg, "dim 0 is invalid (dims are 1-based; -1 is the last)");
  if (d > ndim || d < -ndim)
    return luaL_argerror(L, arg, lua_pushfstring(L, "dim %d out of range for a %d-dim tensor", (int)d, ndim));
  return d > 0 ? (int)d - 1 : ndim + (int)d;
}

int mrl_opt_dim(lua_State *L, int arg, int ndim, int def0) {
  return lua_isnoneornil(L, arg) ? def0 : mrl_check_dim(L, arg, ndim);
}

int mrl_check_shape(lua_State *L, int arg, int64_t *shape, bool allow_infer) {
  if (lua_isinteger(L, arg)) {
    shape[0] = lua_tointeger(L, arg);
    if (shape[0] < 0 && !(allow_infer && shape[0] == -1)) luaL_argerror(L, arg, "sizes must be >= 0");
    return 1;
  }
  luaL_argexpected(L, lua_istable(L, arg), arg, "shape table");
  lua_Integer n = luaL_len(L, arg);
  if (n < 1 || n > MR_MAX_DIMS)
    luaL_argerror(L, arg, lua_pushfstring(L, "shape has %d dims (1 to %d allowed)", (int)n, MR_MAX_DIMS));
  for (int i = 0; i < n; i++) {
    lua_geti(L, arg, i + 1);
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    lua_pop(L, 1);
    if (!ok) luaL_argerror(L, arg, lua_pushfstring(L, "shape[%d] is not an integer", i + 1));
    if (v < 0 && !(allow_infer && v == -1))
      luaL_argerror(L, arg, lua_pushfstring(L, "shape[%d] is %d (sizes must be >= 0)", i + 1, (int)v));
    shape[i] = v;
  }
  return (int)n;
}

const char *mrl_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < ndim && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, i ? "x%lld" : "%lld", (long long)shape[i]);
  return buf;
}

/* ------------------------------------------------------- module functions */

static void push_device(lua_State *L, const mr_device_info *d, const mr_ctx *ctx) {
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, d->index);
  lua_setfield(L, -2, "index");
  lua_pushstring(L, d->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, mr_device_type_name(d->type));
  lua_setfield(L, -2, "type");
  lua_pushstring(L, d->driver);
  lua_setfield(L, -2, "driver");
  lua_pushinteger(L, (lua_Integer)d->heap_bytes);
  lua_setfield(L, -2, "heap_bytes");
  lua_pushinteger(L, (lua_Integer)d->max_buffer_bytes);
  lua_setfield(L, -2, "max_buffer_bytes");
  lua_pushinteger(L, d->subgroup_size);
  lua_setfield(L, -2, "subgroup_size");
  lua_pushinteger(L, d->shared_memory_bytes);
  lua_setfield(L, -2, "shared_memory_bytes");
  lua_pushboolean(L, d->coopmat_nv);
  lua_setfield(L, -2, "coopmat_nv");
  if (ctx) {
    lua_pushinteger(L, (lua_Integer)mr_ctx_validation_messages(ctx));
    lua_setfield(L, -2, "validation_messages");
  }
}

static int l_device(lua_State *L) {
  mr_ctx *ctx = mrl_ctx(L);
  mr_device_info info;
  mr_ctx_device_info(ctx, &info);
  push_device(L, &info, ctx);
  return 1;
}

static int l_devices(lua_State *L) {
  mr_device_info infos[16];
  int count = 0;
  mr_status st = mr_devices_list(infos, 16, &count);
  if (st != MR_OK) return mrl_fail(L, NULL, st);
  if (count > 16) count = 16;
  lua_createtable(L, count, 0);
  for (int i = 0; i < count; i++) {
    push_device(L, &infos[i], NULL);
    lua_seti(L, -2, i + 1);
  }
  return 1;
}

static int l_sync(lua_State *L) {
  mr_ctx *ctx = mrl_ctx(L);
  if (mr_ctx_sync(ctx) != MR_OK) return mrl_raise(L, ctx);
  return 0;
}

/* Makes the running or next engine call fail with "interrupted" (what the
   CLI's Ctrl-C does). */
static int l_interrupt(lua_State *L) {
  mr_ctx_interrupt(mrl_ctx(L));
  return 0;
}

static int l_profile(lua_State *L) {
  mr_ctx *ctx = mrl_ctx(L);
  size_t need = mr_ctx_profile_report(ctx, NULL, 0);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, need + 1);
  mr_ctx_profile_report(ctx, p, need + 1);
  luaL_pushresultsize(&b, strlen(p));
  return 1;
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* mr.memory() -> the binding's view (tensors Lua holds, the GC stepping) and
   the context's device memory (every tensor, Lua's or not, and the blocks). */
static int l_memory(lua_State *L) {
  mrl_state *s = mrl_state_get(L);
  mr_memory_stats m;
  mr_ctx_memory_stats(mrl_ctx(L), &m);
  lua_createtable(L, 0, 11);
  set_int(L, "device_live", m.live_bytes);
  set_int(L, "device_held", m.held_bytes);
  set_int(L, "device_peak_live", m.peak_live_bytes);
  set_int(L, "device_peak_held", m.peak_held_bytes);
  set_int(L, "device_budget", m.budget_bytes);
  lua_pushstring(L, m.budget_source);
  lua_setfield(L, -2, "budget_source");
  set_int(L, "device_blocks", (uint64_t)m.blocks);
  lua_pushinteger(L, (lua_Integer)s->live);
  lua_setfield(L, -2, "live_bytes");
  lua_pushinteger(L, (lua_Integer)s->since_gc);
  lua_setfield(L, -2, "since_gc");
  lua_pushinteger(L, (lua_Integer)s->threshold);
  lua_setfield(L, -2, "threshold");
  lua_pushinteger(L, (lua_Integer)s->collections);
  lua_setfield(L, -2, "collections");
  return 1;
}

/* mr.trim([reset_peak]) -> gives unused device blocks back to Vulkan (after
   the work recorded so far); with true, the peaks start over too. */
static int l_trim(lua_State *L) {
  mr_ctx *ctx = mrl_ctx(L);
  bool reset = lua_toboolean(L, 1);
  if (mr_ctx_memory_trim(ctx) != MR_OK) return mrl_raise(L, ctx);
  if (reset) mr_ctx_memory_reset_peak(ctx);
  return 0;
}

static int l_gc_threshold(lua_State *L) {
  mrl_state *s = mrl_state_get(L);
  lua_Integer old = (lua_Integer)s->threshold;
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer v = luaL_checkinteger(L, 1);
    luaL_argcheck(L, v > 0, 1, "threshold must be > 0 bytes");
    s->threshold = (size_t)v;
  }
  lua_pushinteger(L, old);
  return 1;
}

/* mr.is_terminal([stream]) -> whether "stdout" or "stderr" (default) is a
   terminal: recipes draw a progress bar there, and plain lines into a log. */
static int l_is_terminal(lua_State *L) {
  static const char *const names[] = {"stderr", "stdout", NULL};
  int which = luaL_checkoption(L, 1, "stderr", names);
  lua_pushboolean(L, isatty(which == 0 ? STDERR_FILENO : STDOUT_FILENO));
  return 1;
}

/* mr.sha256(path) -> 64 hex digits | nil, message, code */
static int l_sha256(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mr_ctx *ctx = mrl_ctx(L);
  char hex[65];
  mr_status st = mr_file_sha256(ctx, path, hex);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushstring(L, hex);
  return 1;
}

/* mr.sleep(seconds): waits without spinning (mr.repl.show paces frames with it). */
static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s <= 86400, 1, "seconds must be 0 .. 86400");
  struct timespec ts = {(time_t)s, (long)((s - (lua_Number)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  return 0;
}

/* mr.sha256_string(s) -> 64 hex digits of the bytes of s */
static int l_sha256_string(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  mr_ctx *ctx = mrl_ctx(L);
  char hex[65];
  mr_status st = mr_sha256(ctx, s, n, hex);
  if (st != MR_OK) return mrl_raise(L, ctx);
  lua_pushstring(L, hex);
  return 1;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* An open directory held by a userdata, so a raise while the names are
   collected (no Lua memory) cannot leak it. */
#define DIR_BOX "mr.Dir"
static int dir_release(lua_State *L) {
  DIR **d = luaL_checkudata(L, 1, DIR_BOX);
  if (*d) closedir(*d);
  *d = NULL;
  return 0;
}

/* mr.listdir(path) -> the names in a folder (no . and ..), sorted bytewise |
   nil, message, code */
static int l_listdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR **box = lua_newuserdatauv(L, sizeof *box, 0); /* box first, then opendir */
  *box = NULL;
  if (luaL_newmetatable(L, DIR_BOX)) {
    lua_pushcfunction(L, dir_release);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  *box = opendir(path);
  if (!*box) {
    int err = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "cannot open folder '%s': %s", path, strerror(err));
    lua_pushstring(L, err == ENOENT ? "MR_ENOTFOUND" : "MR_EIO");
    return 3;
  }
  lua_createtable(L, 16, 0);
  int n = 0, err;
  struct dirent *e;
  for (;;) {
    errno = 0;
    if ((e = readdir(*box)) == NULL) break;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -2, ++n);
  }
  err = errno;
  closedir(*box);
  *box = NULL;
  if (err) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot read folder '%s': %s", path, strerror(err));
    lua_pushliteral(L, "MR_EIO");
    return 3;
  }
  /* sorted in C (bytewise, whatever the locale) through a scratch array the GC owns */
  const char **names = lua_newuserdatauv(L, (size_t)n * sizeof *names + 1, 0);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -2, i);
    names[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive in the table */
  }
  qsort(names, (size_t)n, sizeof *names, cmp_names);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* mr.mkdir(path) -> true | nil, message, code: the folder and its parents
   (as mkdir -p); one that exists already is fine. */
static int l_mkdir(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  luaL_argcheck(L, n > 0 && strlen(path) == n, 1, "a folder path");
  char *p = lua_newuserdatauv(L, n + 1, 0); /* a copy to cut at each '/', owned by the GC */
  memcpy(p, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != 0) continue;
    char c = p[i];
    p[i] = 0;
    struct stat st;
    if (mkdir(p, 0777) != 0 && !(errno == EEXIST && stat(p, &st) == 0 && S_ISDIR(st.st_mode))) {
      int err = errno == EEXIST ? ENOTDIR : errno;
      lua_pushnil(L);
      lua_pushfstring(L, "cannot make folder '%s': %s", p, strerror(err));
      lua_pushstring(L, err == ENOENT ? "MR_ENOTFOUND" : "MR_EIO");
      return 3;
    }
    p[i] = c;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* mr.write_file(path, data) -> true | nil, message, code: the whole file,
   atomically (mr_file_write_atomic). */
static int l_write_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  mr_ctx *ctx = mrl_ctx(L);
  mr_status st = mr_file_write_atomic(ctx, path, data, n);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushboolean(L, 1);
  return 1;
}

/* mr.append_line(path, line) -> true | nil, message, code: appends line
   (which ends in "\n") to the file, created when missing, in one write
   (O_APPEND: appenders beside each other never interleave within a line).
   A write cut short (a full disk, a file-size limit) is taken back, the file
   cut to the size it had, so the file never ends in part of a line; when
   another process appended after the cut line, that cannot be done and the
   cut line stays, unterminated, for a reader to skip. */
static int l_append_line(lua_State *L) {
  size_t n, pn;
  const char *path = luaL_checklstring(L, 1, &pn);
  const char *line = luaL_checklstring(L, 2, &n);
  luaL_argcheck(L, pn > 0 && strlen(path) == pn, 1, "a file path");
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "cannot append to '%s': %s", path, strerror(e));
    lua_pushstring(L, e == ENOENT ? "MR_ENOTFOUND" : "MR_EIO");
    return 3;
  }
  struct stat st;
  off_t before = fstat(fd, &st) == 0 ? st.st_size : -1;
  size_t done = 0;
  int e = 0;
  while (done < n) { /* a short write is followed by one that says why */
    ssize_t w = write(fd, line + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      e = w < 0 ? errno : EIO;
      break;
    }
    done += (size_t)w;
  }
  if (e == 0) {
    int c = close(fd);
    fd = -1;
    if (c != 0) e = errno;
  }
  if (e != 0) {
    /* take the part back when it is the file's end (no one appended since) */
    if (fd >= 0 && done > 0 && before >= 0 && fstat(fd, &st) == 0 && st.st_size == before + (off_t)done)
      (void)!ftruncate(fd, before);
    if (fd >= 0) close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot append to '%s': %s", path, strerror(e));
    lua_pushstring(L, "MR_EIO");
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* mr.clock() -> seconds on a monotonic wall clock (os.clock is CPU time,
   which a multi-threaded device driver makes run faster than the wall). */
static int l_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static const luaL_Reg module_funcs[] = {
  {"device", l_device}, {"devices", l_devices}, {"sync", l_sync}, {"interrupt", l_interrupt},
  {"profile", l_profile}, {"memory", l_memory}, {"trim", l_trim}, {"sha256", l_sha256},
  {"sha256_string", l_sha256_string}, {"gc_threshold", l_gc_threshold}, {"is_terminal", l_is_terminal},
  {"clock", l_clock}, {"sleep", l_sleep}, {"listdir", l_listdir}, {"mkdir", l_mkdir},
  {"append_line", l_append_line}, {"write_file", l_write_file},
  {NULL, NULL}};

/* The embedded pure-Lua modules (generated from the files in bindings/lua). */
struct mrl_lua_chunk {
  const char *name, *chunkname, *bytes;
  size_t size;
};
extern const struct mrl_lua_chunk mrl_lua_chunks[];

#define JSON_KEY "moonreel.json"

/* require as the embedded parts see it: "cjson" is the module's own JSON
   (l_json.c), so they never depend on lua-cjson being installed where the
   host looks; any other name goes to the global require. */
static int embedded_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (strcmp(name, "cjson") == 0) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, JSON_KEY) != LUA_TTABLE) {
      lua_pop(L, 1);
      mrl_push_json(L);
      lua_pushvalue(L, -1);
      lua_setfield(L, LUA_REGISTRYINDEX, JSON_KEY);
    }
    return 1;
  }
  lua_getglobal(L, "require");
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int load_embedded(lua_State *L) {
  const struct mrl_lua_chunk *c = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbuffer(L, c->bytes, c->size, c->chunkname) != LUA_OK) return lua_error(L);
  /* its _ENV: the globals, read and written through, with that require */
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, embedded_require);
  lua_setfield(L, -2, "require");
  lua_createtable(L, 0, 2);
  lua_pushglobaltable(L);
  lua_setfield(L, -2, "__index");
  lua_pushglobaltable(L);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2);
  lua_setupvalue(L, -2, 1);
  lua_pushvalue(L, 1); /* the module name, as require passes it */
  lua_call(L, 1, 1);
  return 1;
}

/* mr.<name> for an embedded module: required on first use (mr.pack is
   require "moonreel.pack"), then kept in the module table. */
static int module_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char *key = lua_tostring(L, 2);
  if (strcmp(key, "show") == 0) { /* mr.show(video): mr.repl.show */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moonreel.repl");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "show");
    return 1;
  }
  for (const struct mrl_lua_chunk *c = mrl_lua_chunks; c->name; c++) {
    if (strcmp(c->name + sizeof "moonreel." - 1, key) != 0) continue;
    lua_getglobal(L, "require");
    lua_pushstring(L, c->name);
    lua_call(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
  }
  return 0;
}

/* package.preload["moonreel.<name>"] for each embedded module, so they load
   on require from this state whatever its package.path. */
static void open_embedded(lua_State *L, int module) {
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return; /* a host state without the package library: nothing to register */
  }
  lua_getfield(L, -1, "preload");
  for (const struct mrl_lua_chunk *c = mrl_lua_chunks; c->name; c++) {
    lua_pushlightuserdata(L, (void *)c);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, c->name);
  }
  lua_pop(L, 2);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, module_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, module);
}

/* ------------------------------------------------------------ recipes path */

/* The file this code was loaded from: the CLI executable, moonreel.so or
   libmoonreel_lua.so, as an absolute path; false when it cannot be told. */
static bool own_file(char *out, size_t size) {
  Dl_info info;
  struct link_map *map = NULL;
  if (dladdr1((void *)luaopen_moonreel, &info, (void **)&map, RTLD_DL_LINKMAP) == 0 || map == NULL) return false;
  const char *name = map->l_name;
  if (name == NULL || name[0] == '\0') name = "/proc/self/exe"; /* the main program */
  char resolved[PATH_MAX];
  if (realpath(name, resolved) == NULL || strlen(resolved) >= size) return false;
  memcpy(out, resolved, strlen(resolved) + 1);
  return true;
}

/* mr.recipes_path: the recipes installed beside the file the module runs
   from (share/moonreel/recipes relative to the Lua module folder, the library
   folder or bin/, so any prefix given at install time works), then the source
   tree it was built from, then the prefix it was configured for. Relative
   candidates that do not exist are left out; the last two always stand
   (messages name them). Existing folders appear once, resolved. */
static void push_recipes_path(lua_State *L) {
  enum { MAX_DIRS = 5 };
  char dirs[MAX_DIRS][PATH_MAX + 1];
  bool always[MAX_DIRS] = {false};
  int n = 0;
  char file[PATH_MAX];
  if (own_file(file, sizeof file)) {
    static const char *const relative[] = {MR_RECIPES_FROM_CMOD, MR_RECIPES_FROM_LIB, MR_RECIPES_FROM_BIN};
    char *slash = strrchr(file, '/');
    if (slash) *slash = '\0';
    for (size_t i = 0; i < sizeof relative / sizeof *relative; i++)
      if (snprintf(dirs[n], sizeof dirs[n], "%s/%s", file, relative[i]) < (int)sizeof dirs[n]) n++;
  }
  snprintf(dirs[n], sizeof dirs[n], "%s", MR_RECIPES_SOURCE);
  always[n++] = true;
  snprintf(dirs[n], sizeof dirs[n], "%s", MR_RECIPES_INSTALLED);
  always[n++] = true;

  char listed[MAX_DIRS][PATH_MAX];
  int n_listed = 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 0; i < n; i++) {
    char real[PATH_MAX];
    struct stat st;
    const char *dir = NULL;
    if (realpath(dirs[i], real) != NULL && stat(real, &st) == 0 && S_ISDIR(st.st_mode)) {
      bool dup = false;
      for (int j = 0; j < n_listed; j++) dup = dup || strcmp(listed[j], real) == 0;
      if (dup) continue;
      memcpy(listed[n_listed++], real, sizeof real);
      dir = real;
    } else if (always[i]) {
      dir = dirs[i];
    } else {
      continue;
    }
    if (luaL_bufflen(&b) > 0) luaL_addchar(&b, ';');
    luaL_addstring(&b, dir);
  }
  luaL_pushresult(&b);
}

int luaopen_moonreel(lua_State *L) {
  mrl_state_get(L);
  luaL_newlib(L, module_funcs);
  int module = lua_gettop(L);
  lua_pushliteral(L, MR_VERSION_STRING);
  lua_setfield(L, module, "version");
  /* where mr.recipe finds the recipe modes after $MOONREEL_RECIPES and ./recipes */
  push_recipes_path(L);
  lua_setfield(L, module, "recipes_path");

  luaL_newmetatable(L, MRL_TENSOR);
  int meta = lua_gettop(L);
  lua_newtable(L); /* methods */
  int methods = lua_gettop(L);
  mrl_open_tensor(L, module, meta, methods);
  mrl_open_ops(L, module, meta, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1); /* metatable */
  mrl_open_io(L, module);
  mrl_open_models(L, module);
  mrl_open_sample(L, module);
  mrl_open_media(L, module);
  mrl_open_redis(L, module);
  open_embedded(L, module);
  lua_settop(L, module);
  return 1;
}
