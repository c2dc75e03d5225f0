/* A host with its own lua_State and its own context: the module opened on
   the host's context with luaL_requiref, a recipe run from Lua, and the
   frames it returns used from C on the same context (no copy through the
   host: the tensor stays on the device until the writer reads it). */
#include <lauxlib.h>
#include <lualib.h>
#include <moonreel_lua.h>
#include <stdio.h>

static const char *const SCRIPT =
  "local mr = require 'moonreel'\n"
  "local r = mr.recipe.t2v{prompt = 'a yellow square moving up on a gray background',\n"
  "                        seed = 3, steps = 8, frames = 9, out = false, quiet = true}\n"
  "return r.frames";

int main(int argc, char **argv) {
  const char *out = argc > 1 ? argv[1] : "host.webp";
  mr_ctx *ctx;
  if (mr_ctx_new(NULL, &ctx) != MR_OK) return 1;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  moonreel_lua_set_ctx(L, ctx); /* the module works on the host's context */
  luaL_requiref(L, "moonreel", luaopen_moonreel, 0);
  lua_pop(L, 1);
  int ok = luaL_dostring(L, SCRIPT) == LUA_OK;
  if (!ok) fprintf(stderr, "%s\n", lua_tostring(L, -1));
  mr_tensor *video = ok ? moonreel_lua_totensor(L, -1) : NULL; /* borrowed from the Lua value */
  if (video && mr_video_write(ctx, out, video, NULL) == MR_OK) {
    const int64_t *s = mr_tensor_shape(video);
    printf("%s: %lld frames of %lldx%lld, generated in Lua, written from C\n", out, (long long)s[1],
           (long long)s[3], (long long)s[2]);
  } else if (video) {
    fprintf(stderr, "%s\n", mr_ctx_last_error(ctx));
    ok = 0;
  }
  lua_close(L);      /* frees the state's tensors, video included */
  mr_ctx_free(ctx);  /* the context stays the host's to free */
  return ok && video ? 0 : 1;
}
