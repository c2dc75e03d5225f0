/* Images and videos: mr.image.load / save, mr.video.writer (mr.VideoWriter),
   mr.video.save / load / probe. Options are checked here (a bad option, an
   unknown key or a wrong tensor raises); what depends on the file (missing,
   unreadable, unsupported, truncated, a full disk) returns nil, msg, code. */
#include "l_internal.h"

#include <stdio.h>
#include <string.h>

#define MRL_WRITER "mr.VideoWriter"

/* ------------------------------------------------------------ options */

/* Raises for a key of the options table at arg that is not in allowed. */
static void check_keys(lua_State *L, int arg, const char *const *allowed) {
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    lua_pop(L, 1);
    bool ok = false;
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, k) == 0;
    }
    if (!ok) {
      const char *k = luaL_tolstring(L, -1, NULL);
      luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s'", k));
    }
  }
}

/* Field name of the options table at arg pushed; true unless nil. */
static bool opt_field(lua_State *L, int arg, const char *name) {
  if (lua_isnoneornil(L, arg)) {
    lua_pushnil(L);
    return false;
  }
  return lua_getfield(L, arg, name) != LUA_TNIL;
}

static lua_Integer opt_int(lua_State *L, int arg, const char *name, lua_Integer def, lua_Integer lo, lua_Integer hi) {
  lua_Integer v = def;
  if (opt_field(L, arg, name)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be an integer", name));
    if (v < lo || v > hi)
      luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' is %I (%I..%I)", name, v, lo, hi));
  }
  lua_pop(L, 1);
  return v;
}

static bool opt_bool(lua_State *L, int arg, const char *name) {
  bool v = false;
  if (opt_field(L, arg, name)) {
    if (!lua_isboolean(L, -1)) luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a boolean", name));
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* One of names (a NULL-terminated list) -> its index; def when absent. */
static int opt_enum(lua_State *L, int arg, const char *name, const char *const *names, int def) {
  int v = def;
  if (opt_field(L, arg, name)) {
    const char *s = lua_tostring(L, -1);
    v = -1;
    for (int i = 0; s && names[i]; i++)
      if (strcmp(names[i], s) == 0) v = i;
    if (v < 0) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (int i = 0; names[i]; i++) {
        luaL_addstring(&b, i ? ", " : "");
        luaL_addstring(&b, names[i]);
      }
      luaL_pushresult(&b);
      luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be one of %s", name, lua_tostring(L, -1)));
    }
  }
  lua_pop(L, 1);
  return v;
}

static int hexdigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* pad_color = {r, g, b} (0..255) or "#rrggbb". */
static void opt_color(lua_State *L, int arg, uint8_t rgb[3]) {
  if (opt_field(L, arg, "pad_color")) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *s = lua_tostring(L, -1);
      bool ok = s[0] == '#' && strlen(s) == 7;
      for (int i = 0; ok && i < 3; i++) {
        int hi = hexdigit(s[1 + 2 * i]), lo = hexdigit(s[2 + 2 * i]);
        ok = hi >= 0 && lo >= 0;
        rgb[i] = (uint8_t)(hi * 16 + lo);
      }
      if (!ok) luaL_argerror(L, arg, lua_pushfstring(L, "pad_color '%s' is not #rrggbb", s));
    } else if (lua_istable(L, -1) && luaL_len(L, -1) == 3) {
      for (int i = 0; i < 3; i++) {
        lua_geti(L, -1, i + 1);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || v < 0 || v > 255) luaL_argerror(L, arg, "pad_color components must be integers 0..255");
        rgb[i] = (uint8_t)v;
      }
    } else {
      luaL_argerror(L, arg, "pad_color must be {r, g, b} or \"#rrggbb\"");
    }
  }
  lua_pop(L, 1);
}

static const char *const fit_names[] = {"crop", "pad", "stretch", NULL};
static const char *const filter_names[] = {"bicubic", "lanczos", "bilinear", "area", "nearest", NULL};
static const char *const alpha_names[] = {"composite", "drop", NULL};

static void check_fit(lua_State *L, int arg, mr_fit_opts *o) {
  o->width = (int)opt_int(L, arg, "width", 0, 0, 65535);
  o->height = (int)opt_int(L, arg, "height", 0, 0, 65535);
  o->fit = (mr_fit)opt_enum(L, arg, "fit", fit_names, MR_FIT_CROP);
  o->multiple = (int)opt_int(L, arg, "multiple", 0, 0, 4096);
  o->filter = (mr_filter)opt_enum(L, arg, "filter", filter_names, MR_FILTER_BICUBIC);
  opt_color(L, arg, o->pad_color);
  o->drop_alpha = opt_enum(L, arg, "alpha", alpha_names, 0) == 1;
}

static mr_dtype opt_dtype(lua_State *L, int arg) {
  mr_dtype dt = MR_F32;
  if (opt_field(L, arg, "dtype")) dt = mrl_check_dtype(L, lua_gettop(L), MR_F32, true);
  lua_pop(L, 1);
  return dt;
}

static void opt_table(lua_State *L, int arg, const char *const *allowed) {
  if (lua_isnoneornil(L, arg)) return;
  luaL_checktype(L, arg, LUA_TTABLE);
  check_keys(L, arg, allowed);
}

/* ------------------------------------------------------------- images */

static void push_image_info(lua_State *L, const mr_image_info *i) {
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, i->width);
  lua_setfield(L, -2, "width");
  lua_pushinteger(L, i->height);
  lua_setfield(L, -2, "height");
  lua_pushinteger(L, i->orientation);
  lua_setfield(L, -2, "orientation");
  lua_pushboolean(L, i->has_alpha);
  lua_setfield(L, -2, "has_alpha");
  lua_pushboolean(L, i->animated);
  lua_setfield(L, -2, "animated");
  lua_pushstring(L, i->format);
  lua_setfield(L, -2, "format");
}

static const char *const image_load_keys[] = {"width", "height", "fit", "multiple", "filter", "pad_color",
                                              "alpha", "dtype", NULL};

/* mr.image.load(path [, opts]) -> tensor [3, H, W], info | nil, msg, code */
static int l_image_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  opt_table(L, 2, image_load_keys);
  mr_image_read_opts o = mr_image_read_opts_default();
  check_fit(L, 2, &o.resize);
  o.dtype = opt_dtype(L, 2);
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *t = NULL;
  mr_image_info info;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_image_read(ctx, path, &o, &t, &info));
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  mrl_box_set(L, b, t, true);
  push_image_info(L, &info);
  return 2;
}

static const char *const image_save_keys[] = {"format", "quality", "lossless", NULL};
static const char *const image_format_names[] = {"auto", "png", "jpeg", "webp", NULL};

/* mr.image.save(path, t [, {format=, quality=, lossless=}]) -> true | nil, msg, code */
static int l_image_save(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mr_tensor *t = mrl_check_tensor(L, 2);
  opt_table(L, 3, image_save_keys);
  mr_image_write_opts o = mr_image_write_opts_default();
  int f = opt_enum(L, 3, "format", image_format_names, 0);
  o.format = f == 1 ? MR_FORMAT_PNG : f == 2 ? MR_FORMAT_JPEG : f == 3 ? MR_FORMAT_WEBP : MR_FORMAT_AUTO;
  o.quality = (int)opt_int(L, 3, "quality", 0, 0, 100);
  o.lossless = opt_bool(L, 3, "lossless");
  mr_ctx *ctx = mrl_ctx(L);
  mr_status st = mr_image_write(ctx, path, t, &o);
  if (st == MR_EINVAL) return mrl_raise(L, ctx);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------------ writer */

/* The box of mr.VideoWriter. User value 1: the destination path. */
typedef struct writer_box {
  mr_video_writer *w;  /* NULL once closed or aborted */
  int64_t frames;      /* frames written, kept after close */
  bool closed;         /* closed successfully */
} writer_box;

static writer_box *check_writer(lua_State *L, int i) {
  writer_box *b = luaL_checkudata(L, i, MRL_WRITER);
  if (b->w == NULL) luaL_argerror(L, i, b->closed ? "writer is closed" : "writer was aborted");
  return b;
}

/* __gc, __close and :abort(): a writer not closed is aborted (its temporary deleted). */
static int writer_abort(lua_State *L) {
  writer_box *b = luaL_checkudata(L, 1, MRL_WRITER);
  mr_video_writer_free(b->w);
  b->w = NULL;
  return 0;
}

static const char *const writer_keys[] = {"format", "fps", "crf", "preset", "quality", "lossless", "loop", "odd", NULL};
static const char *const video_format_names[] = {"auto", "mp4", "webp", "png", NULL};
static const char *const odd_names[] = {"error", "pad", "crop", NULL};

/* fps = 16 | 12.5 | "30000/1001" | {30000, 1001} */
static void opt_fps(lua_State *L, int arg, mr_video_writer_opts *o) {
  if (opt_field(L, arg, "fps")) {
    bool ok = true;
    if (lua_type(L, -1) == LUA_TNUMBER) {
      o->fps = lua_tonumber(L, -1);
      ok = o->fps > 0 && o->fps <= 1000;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      long num = 0, den = 1;
      char extra;
      int n = sscanf(lua_tostring(L, -1), "%ld/%ld%c", &num, &den, &extra);
      ok = (n == 1 || n == 2) && num > 0 && den > 0 && num <= 1000000 && den <= 1000000;
      o->fps_num = (int)num;
      o->fps_den = (int)den;
    } else if (lua_istable(L, -1) && luaL_len(L, -1) == 2) {
      lua_geti(L, -1, 1);
      lua_geti(L, -2, 2);
      int a, c;
      lua_Integer num = lua_tointegerx(L, -2, &a), den = lua_tointegerx(L, -1, &c);
      lua_pop(L, 2);
      ok = a && c && num > 0 && den > 0 && num <= 1000000 && den <= 1000000;
      o->fps_num = (int)num;
      o->fps_den = (int)den;
    } else {
      ok = false;
    }
    if (!ok) luaL_argerror(L, arg, "fps must be a number in (0, 1000], \"num/den\" or {num, den}");
  }
  lua_pop(L, 1);
}

static mr_video_writer_opts check_writer_opts(lua_State *L, int arg) {
  opt_table(L, arg, writer_keys);
  mr_video_writer_opts o = mr_video_writer_opts_default();
  int f = opt_enum(L, arg, "format", video_format_names, 0);
  o.format = f == 1 ? MR_FORMAT_MP4 : f == 2 ? MR_FORMAT_WEBP : f == 3 ? MR_FORMAT_PNG_SEQUENCE : MR_FORMAT_AUTO;
  opt_fps(L, arg, &o);
  o.crf = (int)opt_int(L, arg, "crf", 0, 0, 51);
  o.quality = (int)opt_int(L, arg, "quality", 0, 0, 100);
  o.lossless = opt_bool(L, arg, "lossless");
  o.loop = (int)opt_int(L, arg, "loop", 0, 0, 65535);
  o.odd = (mr_odd_size)opt_enum(L, arg, "odd", odd_names, MR_ODD_ERROR);
  if (opt_field(L, arg, "preset")) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, arg, "option 'preset' must be a string");
    o.preset = lua_tostring(L, -1); /* stays alive in the options table during the call */
  }
  lua_pop(L, 1);
  return o;
}

/* mr.video.check_output(path [, opts]) -> true | nil, msg, code: what opening
   a writer would refuse, without creating anything. */
static int l_video_check_output(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mr_video_writer_opts o = check_writer_opts(L, 2);
  mr_ctx *ctx = mrl_ctx(L);
  mr_status st = mr_video_writer_check(ctx, path, &o);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushboolean(L, 1);
  return 1;
}

/* mr.video.writer(path [, opts]) -> writer | nil, msg, code */
static int l_video_writer(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mr_video_writer_opts o = check_writer_opts(L, 2);
  mr_ctx *ctx = mrl_ctx(L);
  /* the box exists before the engine object, so a raise cannot leak it */
  writer_box *b = lua_newuserdatauv(L, sizeof *b, 1);
  b->w = NULL;
  b->frames = 0;
  b->closed = false;
  luaL_setmetatable(L, MRL_WRITER);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  mr_status st = mr_video_writer_open(ctx, path, &o, &b->w);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  return 1;
}

/* w:write(frames) -> true | nil, msg, code. frames [3, F, H, W] or [3, H, W]. */
static int writer_write(lua_State *L) {
  writer_box *b = check_writer(L, 1);
  mr_tensor *t = mrl_check_tensor(L, 2);
  mr_ctx *ctx = mrl_ctx(L);
  mr_status st = mr_video_writer_write(b->w, t);
  b->frames = mr_video_writer_frames(b->w);
  if (st == MR_EINVAL) return mrl_raise(L, ctx);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushboolean(L, 1);
  return 1;
}

/* w:close() -> true | nil, msg, code. Either way the writer is done. */
static int writer_close(lua_State *L) {
  writer_box *b = check_writer(L, 1);
  mr_ctx *ctx = mrl_ctx(L);
  mr_status st = mr_video_writer_close(b->w);
  b->frames = mr_video_writer_frames(b->w);
  mr_video_writer_free(b->w);
  b->w = NULL;
  b->closed = st == MR_OK;
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushboolean(L, 1);
  return 1;
}

static int writer_path(lua_State *L) {
  luaL_checkudata(L, 1, MRL_WRITER);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int writer_frames(lua_State *L) {
  writer_box *b = luaL_checkudata(L, 1, MRL_WRITER);
  lua_pushinteger(L, b->w ? mr_video_writer_frames(b->w) : b->frames);
  return 1;
}

static int writer_is_open(lua_State *L) {
  writer_box *b = luaL_checkudata(L, 1, MRL_WRITER);
  lua_pushboolean(L, b->w != NULL);
  return 1;
}

static int writer_tostring(lua_State *L) {
  writer_box *b = luaL_checkudata(L, 1, MRL_WRITER);
  lua_getiuservalue(L, 1, 1);
  const char *path = lua_tostring(L, -1);
  if (b->w) lua_pushfstring(L, "mr.VideoWriter(%s, %I frames)", path, (lua_Integer)mr_video_writer_frames(b->w));
  else lua_pushfstring(L, "mr.VideoWriter(%s, %s)", path, b->closed ? "closed" : "aborted");
  return 1;
}

/* mr.video.save(path, frames [, opts]) -> true | nil, msg, code: a writer
   opened, written and closed in one call, with the writer's rules. */
static int l_video_save(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mr_tensor *t = mrl_check_tensor(L, 2);
  mr_video_writer_opts o = check_writer_opts(L, 3);
  mr_ctx *ctx = mrl_ctx(L);
  mr_video_writer *w = NULL;
  mr_status st = mr_video_writer_open(ctx, path, &o, &w);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  st = mr_video_writer_write(w, t);
  bool misuse = st == MR_EINVAL;
  if (st == MR_OK) st = mr_video_writer_close(w);
  mr_video_writer_free(w); /* aborts after a failed write: nothing is left behind */
  if (misuse) return mrl_raise(L, ctx);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------------- video in */

static void push_video_info(lua_State *L, const mr_video_info *i) {
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, i->width);
  lua_setfield(L, -2, "width");
  lua_pushinteger(L, i->height);
  lua_setfield(L, -2, "height");
  lua_pushinteger(L, (lua_Integer)i->frames);
  lua_setfield(L, -2, "frames");
  lua_pushnumber(L, i->fps_num > 0 && i->fps_den > 0 ? (double)i->fps_num / i->fps_den : 0.0);
  lua_setfield(L, -2, "fps");
  lua_pushinteger(L, i->fps_num);
  lua_setfield(L, -2, "fps_num");
  lua_pushinteger(L, i->fps_den);
  lua_setfield(L, -2, "fps_den");
  lua_pushnumber(L, i->duration);
  lua_setfield(L, -2, "duration");
  lua_pushinteger(L, i->loop);
  lua_setfield(L, -2, "loop");
  lua_pushstring(L, i->codec);
  lua_setfield(L, -2, "codec");
  lua_pushstring(L, i->container);
  lua_setfield(L, -2, "container");
}

static const char *const video_load_keys[] = {"start", "max_frames", "width", "height", "fit", "multiple",
                                              "filter", "pad_color", "alpha", "dtype", NULL};

/* mr.video.load(path [, opts]) -> tensor [3, F, H, W], info | nil, msg, code.
   opts.start is the first frame kept, 1-based like every Lua index. */
static int l_video_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  opt_table(L, 2, video_load_keys);
  mr_video_read_opts o = mr_video_read_opts_default();
  o.start = opt_int(L, 2, "start", 1, 1, INT64_MAX) - 1;
  o.max_frames = opt_int(L, 2, "max_frames", 0, 0, INT64_MAX);
  check_fit(L, 2, &o.resize);
  o.dtype = opt_dtype(L, 2);
  mr_ctx *ctx = mrl_ctx(L);
  mrl_tensor_box *b = mrl_push_box(L);
  mr_tensor *t = NULL;
  mr_video_info info;
  mr_status st;
  MRL_RETRY_DEVMEM(L, st, mr_video_read(ctx, path, &o, &t, &info));
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  mrl_box_set(L, b, t, true);
  push_video_info(L, &info);
  return 2;
}

/* mr.video.probe(path) -> info | nil, msg, code */
static int l_video_probe(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mr_ctx *ctx = mrl_ctx(L);
  mr_video_info info;
  mr_status st = mr_video_probe(ctx, path, &info);
  if (st != MR_OK) return mrl_fail(L, ctx, st);
  push_video_info(L, &info);
  return 1;
}

/* --------------------------------------------------------- registration */

/* mr.video.rgb8(frames) -> bytes, count, width, height: the frames of a
   [3, F, H, W] (or [3, H, W]) tensor as packed RGB bytes, frame after frame,
   converted as the writers convert (what a terminal or a window shows). */
typedef struct rgb8_buf {
  luaL_Buffer b;
  int64_t count;
  int w, h;
} rgb8_buf;

static bool add_rgb8(const uint8_t *rgb, int w, int h, int64_t index, void *user) {
  rgb8_buf *r = user;
  luaL_addlstring(&r->b, (const char *)rgb, (size_t)w * (size_t)h * 3);
  r->count = index + 1;
  r->w = w;
  r->h = h;
  return true;
}

static int l_video_rgb8(lua_State *L) {
  mr_tensor *t = mrl_check_tensor(L, 1);
  mr_ctx *ctx = mrl_ctx(L);
  lua_settop(L, 1);
  rgb8_buf r = {.count = 0};
  luaL_buffinit(L, &r.b);
  mr_status st = mr_tensor_frames_rgb8(t, add_rgb8, &r);
  luaL_pushresult(&r.b);
  if (st != MR_OK) return mrl_raise(L, ctx);
  lua_pushinteger(L, (lua_Integer)r.count);
  lua_pushinteger(L, r.w);
  lua_pushinteger(L, r.h);
  return 4;
}

void mrl_open_media(lua_State *L, int module) {
  static const luaL_Reg writer_meta[] = {{"__gc", writer_abort}, {"__close", writer_abort},
                                         {"__tostring", writer_tostring}, {NULL, NULL}};
  static const luaL_Reg writer_methods[] = {{"write", writer_write}, {"close", writer_close},
                                            {"abort", writer_abort}, {"path", writer_path},
                                            {"frames", writer_frames}, {"is_open", writer_is_open},
                                            {NULL, NULL}};
  luaL_newmetatable(L, MRL_WRITER);
  luaL_setfuncs(L, writer_meta, 0);
  luaL_newlib(L, writer_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  static const luaL_Reg image_fns[] = {{"load", l_image_load}, {"save", l_image_save}, {NULL, NULL}};
  static const luaL_Reg video_fns[] = {{"writer", l_video_writer}, {"check_output", l_video_check_output}, {"save", l_video_save}, {"load", l_video_load},
                                       {"probe", l_video_probe}, {"rgb8", l_video_rgb8}, {NULL, NULL}};
  luaL_newlib(L, image_fns);
  lua_setfield(L, module, "image");
  luaL_newlib(L, video_fns);
  lua_setfield(L, module, "video");
}
