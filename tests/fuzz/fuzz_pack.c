/* A model pack's manifest, moonreel_pack.json (bindings/lua/pack.lua): the
   JSON, then every field the loader reads (files that must stay inside the
   pack, defaults in range, references). Reached as a user's pack reaches it,
   through mr.pack.resolve on a folder, which finds every part and loads no
   weight: the folder (under a temporary one) holds the input as its
   manifest and an empty file under each official name, so a manifest that
   passes resolves to a plan. What a plan promises: every file it names lies
   inside the pack, and the defaults and references M.load copies are the
   kinds it expects. */
#include "fuzz_lua.h"

static const char driver[] =
    "local dir = TMP .. '/pack'\n"
    "assert(mr.mkdir(dir .. '/google/umt5-xxl'))\n"
    "local function write(path, s)\n"
    "  local f = assert(io.open(path, 'wb'))\n"
    "  f:write(s)\n"
    "  f:close()\n"
    "end\n"
    "for _, n in ipairs{'diffusion_pytorch_model.safetensors', 'Wan2.1_VAE.pth', 'models_t5_umt5-xxl-enc-bf16.pth',\n"
    "                   'google/umt5-xxl/spiece.model', 'config.json', 'clip.safetensors', 'clip.json', 'a.safetensors'} do\n"
    "  write(dir .. '/' .. n, '')\n"
    "end\n"
    "local manifest = dir .. '/moonreel_pack.json'\n"
    "local INTEGER = {steps = true, frames = true, width = true, height = true}\n"
    "return function(input)\n"
    "  write(manifest, input)\n"
    "  local ok, plan = pcall(mr.pack.resolve, dir)\n"
    "  if not ok then return {n = 1, plan} end\n"
    "  invariant(type(plan) == 'table' and plan.layout == 'moonreel' and type(plan.manifest) == 'table', 'a plan')\n"
    "  for k, v in pairs(plan.files) do\n"
    "    for _, p in ipairs(type(v) == 'table' and v or {v}) do\n"
    "      invariant(type(p) == 'string' and p:sub(1, #dir + 1) == dir .. '/', 'files.' .. k .. ' inside the pack')\n"
    "      invariant(not ('/' .. p:sub(#dir + 2) .. '/'):find('/%.%./'), 'files.' .. k .. ' without ..')\n"
    "    end\n"
    "  end\n"
    "  local m = plan.manifest\n"
    "  invariant(m.name == nil or type(m.name) == 'string', 'name')\n"
    "  for k, v in pairs(m.defaults or {}) do\n"
    "    invariant(type(k) == 'string', 'defaults: a name')\n"
    "    invariant(type(v) == 'string' or (type(v) == 'number' and v == v), 'defaults.' .. k)\n"
    "    if INTEGER[k] then invariant(math.tointeger(v) ~= nil, 'defaults.' .. k .. ' an integer') end\n"
    "  end\n"
    "  local r = m.references\n"
    "  if r ~= nil then\n"
    "    invariant(r.method == 'phantom' or r.method == 'vace', 'references.method')\n"
    "    invariant(r.max == nil or math.tointeger(r.max) ~= nil, 'references.max')\n"
    "    for _, n in ipairs(r.names or {}) do invariant(type(n) == 'string', 'references.names') end\n"
    "  end\n"
    "  return {}\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  mr_fuzz_lua_state("pack", driver);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_fuzz_lua_state("pack", driver);
  mr_fuzz_lua_run(data, size);
  return 0;
}
