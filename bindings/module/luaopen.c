/* The loadable Lua module (build/lua/moonreel.so). luaopen_moonreel lives in
   the bindings library; referencing it here makes the linker take it (and
   everything it needs) from the static archive, and export it from the .so. */
#include "moonreel_lua.h"

int (*const moonreel_lua_module_entry)(lua_State *L) = luaopen_moonreel;
