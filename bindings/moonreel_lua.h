/*
 * moonreel_lua.h — embedding the moonreel Lua module in a host's lua_State.
 *
 *   lua_State *L = luaL_newstate();
 *   luaL_openlibs(L);
 *   moonreel_lua_set_ctx(L, my_ctx);               // optional: share the host's context
 *   luaL_requiref(L, "moonreel", luaopen_moonreel, 0);
 *   lua_pop(L, 1);
 *   ... run scripts that `require "moonreel"` ...
 *   lua_close(L);                                  // frees tensors, then the module's own context
 *   mr_ctx_free(my_ctx);                           // an injected context stays the host's
 *
 * Without moonreel_lua_set_ctx the module creates its context on first use
 * (mr_ctx_new with default options, so $MOONREEL_DEVICE and
 * $MOONREEL_VALIDATION apply) and frees it when the state closes.
 */
#ifndef MOONREEL_LUA_H
#define MOONREEL_LUA_H

#include <lua.h>

#include "moonreel.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default) /* the module's interface; the rest is hidden */
#endif

/* The module entry point: pushes the module table. */
int luaopen_moonreel(lua_State *L);

/* Makes the module use ctx instead of creating its own. Call before the first
   engine use (normally before require); once the module has a context the
   call does nothing, since tensors may live on it. The module never frees
   ctx; ctx must outlive L. */
void moonreel_lua_set_ctx(lua_State *L, mr_ctx *ctx);

/* The context the module uses, or NULL when none exists yet (it is created
   lazily). Never raises. */
mr_ctx *moonreel_lua_ctx(lua_State *L);

/* The tensor of the moonreel tensor value at idx (borrowed: it lives while
   that value is open), or NULL when idx holds no open tensor. Never raises. */
mr_tensor *moonreel_lua_totensor(lua_State *L, int idx);

/* Called with the context when the module creates its own, and with NULL just
   before it frees it (a CLI keeps the pointer for its SIGINT handler). */
typedef void (*moonreel_lua_ctx_fn)(mr_ctx *ctx, void *user);
void moonreel_lua_on_ctx(lua_State *L, moonreel_lua_ctx_fn fn, void *user);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* MOONREEL_LUA_H */
