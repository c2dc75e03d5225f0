/* mr_gen (moonreel_gen.h): one-call generation for C hosts. Each generator
   owns a private Lua state with the moonreel module on the host's context,
   and runs the recipe modes there (mr.recipe.run), so every mode has one
   implementation whether it is called from the CLI, Lua or C. The C
   callbacks reach the recipe as its progress, after_step and on_frames
   hooks; everything here is per generator or per run, nothing global. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "moonreel_gen.h"
#include "moonreel_lua.h"

struct mr_gen {
  mr_ctx *ctx;
  lua_State *L;
  char *model_json;
};

/* The Lua half: the pack loaded once, and a run that turns the C parameters
   (a plain table) into recipe options. Kept small: the recipes do the work. */
static const char GLUE[] =
  "local mr = require 'moonreel'\n"
  "local recipe = require 'moonreel.recipe'\n"
  "local pack_mod = require 'moonreel.pack'\n"
  "local cjson = require 'cjson'\n"
  "local G = {}\n"
  "function G.open(model, weights)\n"
  "  G.pack = pack_mod.load(model or recipe.default_model_dir(), {weights = weights})\n"
  "  return cjson.encode(G.pack:describe())\n"
  "end\n"
  "function G.run(opts, json, hooks)\n"
  "  if json then\n"
  "    local ok, extra = pcall(cjson.decode, json)\n"
  "    if not ok or type(extra) ~= 'table' then error('options_json: not a JSON object: ' .. tostring(extra), 0) end\n"
  "    for k, v in pairs(extra) do\n"
  "      if opts[k] ~= nil then error(string.format(\"options_json: '%s' is also set in the params\", k), 0) end\n"
  "      opts[k] = v\n"
  "    end\n"
  "  end\n"
  "  local mode = opts.mode or 't2v'\n"
  "  opts.mode, opts.pack, opts.quiet = nil, G.pack, true\n"
  "  opts.progress = hooks.progress\n"
  "  opts.on_frames = hooks.frame\n"
  "  if hooks.preview then\n"
  "    opts.after_step = function(step)\n"
  "      local rgb <close> = step:preview()\n"
  "      return hooks.preview(step.index, step.steps, rgb)\n"
  "    end\n"
  "  end\n"
  "  if opts.out == nil then opts.out = false end\n"
  "  local r = recipe.run(mode, opts)\n"
  "  if r.frames then r.frames:close() end\n"
  "  local p = r.params\n"
  "  return {out = r.out, sidecar = r.sidecar, seed = r.seed, plan = cjson.encode(p), frames = p.frames,\n"
  "          width = p.width, height = p.height, fps = p.fps, seconds = r.seconds.total}\n"
  "end\n"
  "return G\n";

mr_gen_opts mr_gen_opts_default(void) { return (mr_gen_opts){0}; }

mr_gen_params mr_gen_params_default(void) { return (mr_gen_params){.mode = "t2v"}; }

const char *mr_gen_stage_name(mr_gen_stage stage) {
  switch (stage) {
  case MR_GEN_TEXT: return "text";
  case MR_GEN_IMAGE: return "image";
  case MR_GEN_DENOISE: return "denoise";
  case MR_GEN_DECODE: return "decode";
  case MR_GEN_WRITE: return "write";
  }
  return "?";
}

static char *dup_str(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* A failure in the Lua state as the context's error. A message the engine
   left keeps the engine's status (MR_ECANCELED for mr_ctx_interrupt, MR_EIO
   for a file); one raised by the recipe itself is a bad parameter. */
static mr_status lua_failure(mr_gen *g, bool canceled) {
  const char *msg = lua_tostring(g->L, -1);
  if (msg == NULL) msg = "moonreel: a recipe failed without a message";
  const char *engine = mr_ctx_last_error(g->ctx);
  mr_status st = MR_EINVAL;
  if (canceled) st = MR_ECANCELED;
  else if (engine[0] != '\0' && strstr(msg, engine) != NULL) st = mr_ctx_last_status(g->ctx);
  if (st == MR_OK) st = MR_EINVAL;
  mr_ctx_set_error(g->ctx, st, "%s", msg);
  lua_pop(g->L, 1);
  return st;
}

/* ------------------------------------------------------------------ open */

typedef struct open_args {
  mr_gen *g;
  const mr_gen_opts *opts;
} open_args;

/* Runs protected: any allocation failure or error becomes a message. */
static int open_protected(lua_State *L) {
  open_args *a = lua_touserdata(L, 1);
  luaL_openlibs(L);
  moonreel_lua_set_ctx(L, a->g->ctx);
  luaL_requiref(L, "moonreel", luaopen_moonreel, 0);
  lua_pop(L, 1);
  if (luaL_loadbufferx(L, GLUE, sizeof GLUE - 1, "=moonreel_gen", "t") != LUA_OK) return lua_error(L);
  lua_call(L, 0, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "moonreel.gen");
  lua_getfield(L, -1, "open");
  lua_pushstring(L, a->opts->model);
  lua_pushstring(L, a->opts->weights);
  lua_call(L, 2, 1);
  a->g->model_json = dup_str(lua_tostring(L, -1));
  if (a->g->model_json == NULL) return luaL_error(L, "out of memory");
  return 0;
}

mr_status mr_gen_new(mr_ctx *ctx, const mr_gen_opts *opts, mr_gen **out) {
  if (out == NULL) return MR_EINVAL;
  *out = NULL;
  if (ctx == NULL) return MR_EINVAL;
  mr_gen_opts defaults = mr_gen_opts_default();
  if (opts == NULL) opts = &defaults;
  mr_gen *g = calloc(1, sizeof *g);
  if (g == NULL) return mr_ctx_set_error(ctx, MR_ENOMEM, "mr_gen_new: out of memory");
  g->ctx = ctx;
  g->L = luaL_newstate();
  if (g->L == NULL) {
    free(g);
    return mr_ctx_set_error(ctx, MR_ENOMEM, "mr_gen_new: out of memory for a Lua state");
  }
  mr_ctx_set_error(ctx, MR_OK, "%s", "");
  open_args a = {g, opts};
  lua_pushcfunction(g->L, open_protected);
  lua_pushlightuserdata(g->L, &a);
  if (lua_pcall(g->L, 1, 0, 0) != LUA_OK) {
    mr_status st = lua_failure(g, false);
    mr_gen_free(g);
    return st;
  }
  *out = g;
  return MR_OK;
}

void mr_gen_free(mr_gen *g) {
  if (g == NULL) return;
  lua_close(g->L); /* closes the pack and every tensor; the context stays the host's */
  free(g->model_json);
  free(g);
}

const char *mr_gen_model_json(const mr_gen *g) { return g ? g->model_json : NULL; }

/* ------------------------------------------------------------------- run */

typedef struct run_state {
  mr_gen *g;
  const mr_gen_params *params;
  const mr_gen_callbacks *cb;
  bool canceled;  /* a callback said stop */
  int count;      /* the video's frame count, for the frame callback */
  int first;      /* index of the frame the chunk starts with */
  uint8_t *buf;   /* a preview's frames, gathered into one buffer */
  size_t cap;
  int frames, width, height;
  mr_gen_result *result;
} run_state;

static run_state *upstate(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static int stop(lua_State *L, run_state *r) {
  r->canceled = true;
  lua_pushboolean(L, 0);
  return 1;
}

/* progress(stage, done, total) */
static int hook_progress(lua_State *L) {
  run_state *r = upstate(L);
  static const char *const names[] = {"text", "image", "denoise", "decode", "write", NULL};
  int stage = luaL_checkoption(L, 1, NULL, names); /* the order of mr_gen_stage */
  int done = (int)luaL_checkinteger(L, 2), total = (int)luaL_checkinteger(L, 3);
  if (r->cb->progress && !r->cb->progress((mr_gen_stage)stage, done, total, r->cb->user)) return stop(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static bool give_frame(const uint8_t *rgb, int w, int h, int64_t index, void *user) {
  run_state *r = user;
  if (r->cb->frame(r->first + (int)index, r->count, rgb, w, h, r->cb->user)) return true;
  r->canceled = true;
  return false;
}

/* frame(chunk [3, n, H, W], first (1-based), count) */
static int hook_frame(lua_State *L) {
  run_state *r = upstate(L);
  mr_tensor *t = moonreel_lua_totensor(L, 1);
  if (t == NULL) return luaL_argerror(L, 1, "a tensor of frames expected");
  r->first = (int)luaL_checkinteger(L, 2) - 1;
  r->count = (int)luaL_checkinteger(L, 3);
  mr_status st = mr_tensor_frames_rgb8(t, give_frame, r);
  if (st == MR_ECANCELED && r->canceled) return stop(L, r);
  if (st != MR_OK) return luaL_error(L, "%s", mr_ctx_last_error(r->g->ctx));
  lua_pushboolean(L, 1);
  return 1;
}

static bool gather_frame(const uint8_t *rgb, int w, int h, int64_t index, void *user) {
  run_state *r = user;
  size_t frame = (size_t)w * (size_t)h * 3;
  size_t need = frame * (size_t)(index + 1);
  if (need > r->cap) {
    uint8_t *nb = realloc(r->buf, need);
    if (nb == NULL) return false;
    r->buf = nb;
    r->cap = need;
  }
  memcpy(r->buf + frame * (size_t)index, rgb, frame);
  r->frames = (int)index + 1;
  r->width = w;
  r->height = h;
  return true;
}

/* preview(step, steps, rgb [3, T, h, w]) */
static int hook_preview(lua_State *L) {
  run_state *r = upstate(L);
  int step = (int)luaL_checkinteger(L, 1), steps = (int)luaL_checkinteger(L, 2);
  mr_tensor *t = moonreel_lua_totensor(L, 3);
  if (t == NULL) return luaL_argerror(L, 3, "a preview tensor expected");
  r->frames = 0;
  if (mr_tensor_frames_rgb8(t, gather_frame, r) != MR_OK)
    return luaL_error(L, "preview: %s", mr_ctx_last_error(r->g->ctx));
  if (!r->cb->preview(step, steps, r->buf, r->frames, r->width, r->height, r->cb->user)) return stop(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static void set_str(lua_State *L, const char *key, const char *v) {
  if (v == NULL) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, key);
}

static void set_int(lua_State *L, const char *key, int v) {
  if (v == 0) return;
  lua_pushinteger(L, v);
  lua_setfield(L, -2, key);
}

static void set_num(lua_State *L, const char *key, double v) {
  if (v == 0) return;
  lua_pushnumber(L, v);
  lua_setfield(L, -2, key);
}

static void push_hook(lua_State *L, run_state *r, const char *key, lua_CFunction fn) {
  lua_pushlightuserdata(L, r);
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, key);
}

static char *field_str(lua_State *L, int t, const char *key) {
  lua_getfield(L, t, key);
  char *s = lua_type(L, -1) == LUA_TSTRING ? dup_str(lua_tostring(L, -1)) : NULL;
  lua_pop(L, 1);
  return s;
}

static double field_num(lua_State *L, int t, const char *key) {
  lua_getfield(L, t, key);
  double v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Runs protected: builds the options, runs the recipe, copies the result. */
static int run_protected(lua_State *L) {
  run_state *r = lua_touserdata(L, 1);
  const mr_gen_params *p = r->params;
  lua_getfield(L, LUA_REGISTRYINDEX, "moonreel.gen");
  lua_getfield(L, -1, "run");
  lua_newtable(L); /* opts */
  set_str(L, "mode", p->mode);
  set_str(L, "prompt", p->prompt);
  set_str(L, "negative", p->negative);
  set_str(L, "image", p->image);
  set_str(L, "last_image", p->last_image);
  if (p->n_refs < 0 || (p->n_refs > 0 && p->refs == NULL)) return luaL_error(L, "params.refs: %d references given without a list", p->n_refs);
  if (p->n_refs > 0) {
    lua_createtable(L, p->n_refs, 0);
    for (int i = 0; i < p->n_refs; i++) {
      if (p->refs[i] == NULL) return luaL_error(L, "params.refs[%d] is NULL", i);
      lua_pushstring(L, p->refs[i]);
      lua_seti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "ref");
  }
  set_int(L, "width", p->width);
  set_int(L, "height", p->height);
  set_int(L, "frames", p->frames);
  set_int(L, "steps", p->steps);
  set_num(L, "cfg", p->cfg);
  set_num(L, "shift", p->shift);
  set_str(L, "seed", p->seed);
  set_num(L, "fps", p->fps);
  set_str(L, "out", p->out);
  if (p->options_json) lua_pushstring(L, p->options_json);
  else lua_pushnil(L);
  lua_newtable(L); /* hooks */
  push_hook(L, r, "progress", hook_progress);
  if (r->cb->frame) push_hook(L, r, "frame", hook_frame);
  if (r->cb->preview) push_hook(L, r, "preview", hook_preview);
  lua_call(L, 3, 1);

  int t = lua_gettop(L);
  mr_gen_result *res = calloc(1, sizeof *res);
  if (res == NULL) return luaL_error(L, "out of memory");
  r->result = res;
  res->out = field_str(L, t, "out");
  res->sidecar = field_str(L, t, "sidecar");
  res->seed = field_str(L, t, "seed");
  res->plan_json = field_str(L, t, "plan");
  res->frames = (int)field_num(L, t, "frames");
  res->width = (int)field_num(L, t, "width");
  res->height = (int)field_num(L, t, "height");
  res->fps = field_num(L, t, "fps");
  res->seconds = field_num(L, t, "seconds");
  if (res->seed == NULL || res->plan_json == NULL || (p->out && res->out == NULL))
    return luaL_error(L, "out of memory");
  return 0;
}

mr_status mr_gen_run(mr_gen *g, const mr_gen_params *params, const mr_gen_callbacks *cb, mr_gen_result **out) {
  if (out == NULL) return MR_EINVAL;
  *out = NULL;
  if (g == NULL) return MR_EINVAL;
  if (params == NULL) return mr_ctx_set_error(g->ctx, MR_EINVAL, "mr_gen_run: params is NULL");
  mr_gen_callbacks none = {0};
  run_state r = {.g = g, .params = params, .cb = cb ? cb : &none};
  mr_ctx_set_error(g->ctx, MR_OK, "%s", "");
  lua_pushcfunction(g->L, run_protected);
  lua_pushlightuserdata(g->L, &r);
  mr_status st = MR_OK;
  if (lua_pcall(g->L, 1, 0, 0) != LUA_OK) st = lua_failure(g, r.canceled);
  lua_settop(g->L, 0);
  lua_gc(g->L, LUA_GCCOLLECT); /* the run's tensors go back to the device now, not at some later step */
  free(r.buf);
  if (st != MR_OK) {
    mr_gen_result_free(r.result);
    return st;
  }
  *out = r.result;
  return MR_OK;
}

void mr_gen_result_free(mr_gen_result *res) {
  if (res == NULL) return;
  free(res->out);
  free(res->sidecar);
  free(res->seed);
  free(res->plan_json);
  free(res);
}
