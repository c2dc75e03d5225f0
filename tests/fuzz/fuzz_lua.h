/* What the fuzz targets over the module's Lua parsers share (fuzz_pack.c,
   fuzz_template.c, fuzz_batch.c): one Lua state for the process with the
   moonreel module opened on a context without a device, a driver written in
   Lua that feeds each input to the validator, and the checks of what the
   module promises about a refusal.

   A driver is a Lua chunk that returns function(input) -> list. The list
   (its length list.n when set, so that it may hold nil) holds what the validators said (each raised error, caught with pcall, and
   each message they returned), and each must be a refusal as the module
   promises it: a string of one line that names the field, never a Lua file
   and line ("moonreel/pack.lua:170:") nor a traceback. An error the driver
   does not catch is checked the same way. An input that runs past the
   instruction budget or grows the Lua heap past its limit is a finding too,
   as is a failed invariant the driver checks (mr_fuzz_lua_invariant, called
   from Lua as `invariant(cond, what)`). */
#ifndef MR_FUZZ_LUA_H
#define MR_FUZZ_LUA_H

#include "fuzz.h"

#include <lua.h>

/* The state, made on first call: standard libraries, `mr` (the module; its
   context is made on first engine use, which these parsers never make),
   `invariant`, TMP (mr_fuzz_temp_dir), SRC (the source tree), and the driver: src run once as chunk
   `name`, its function kept for mr_fuzz_lua_run. Exits when the driver does
   not load (the target cannot run at all). */
lua_State *mr_fuzz_lua_state(const char *name, const char *src);

/* Runs the driver on one input and checks every message it returns. */
void mr_fuzz_lua_run(const uint8_t *data, size_t size);

/* A folder of its own under $TMPDIR (or /tmp), removed with its files at
   exit (one level of subfolders). */
const char *mr_fuzz_temp_dir(void);
/* Writes n bytes to path (created or truncated); aborts on failure. */
void mr_fuzz_write(const char *path, const void *data, size_t n);

#endif
