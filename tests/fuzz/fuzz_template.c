/* An effect template, moonreel.template/1 (bindings/lua/template.lua): read,
   decoded and validated by T.load as a batch reads one, then, when it
   passes, used as the batch runner uses it: each variant overlaid (it must
   validate as well), its task's mode, its image slots, its variables bound
   to their defaults and its prompt expanded, its canonical JSON (the digest
   of a job's id) decoded back to the same text. Each error line must name
   the file. */
#include "fuzz_lua.h"

static const char driver[] =
    "local T = require 'moonreel.template'\n"
    "local path = TMP .. '/template.json'\n"
    "return function(input)\n"
    "  local f = assert(io.open(path, 'wb'))\n"
    "  f:write(input)\n"
    "  f:close()\n"
    "  local out = {}\n"
    "  local tpl, errs = T.load(path)\n"
    "  if not tpl then\n"
    "    invariant(type(errs) == 'table' and #errs > 0, 'a refused template says why')\n"
    "    for _, e in ipairs(errs) do\n"
    "      invariant(type(e) ~= 'string' or e:sub(1, #path + 2) == path .. ': ', 'an error line names the file')\n"
    "      out[#out + 1] = e\n"
    "    end\n"
    "    return out\n"
    "  end\n"
    "  local doc = tpl.doc\n"
    "  local names = {''}\n"
    "  for k in pairs(doc.variants or {}) do names[#names + 1] = k end\n"
    "  table.sort(names)\n"
    "  for _, name in ipairs(names) do\n"
    "    local d, oerr = T.overlay(doc, name)\n"
    "    invariant(d ~= nil, 'variant ' .. name .. ' overlays: ' .. tostring(oerr))\n"
    "    local ok, verrs = T.validate(d)\n"
    "    invariant(ok, 'variant ' .. name .. ' validates: ' .. table.concat(verrs or {}, '; '))\n"
    "    invariant(T.TASK_MODE[d.task] ~= nil, 'a task with a mode')\n"
    "    local slots = T.image_slots(d)\n"
    "    invariant(math.type(slots.min) and math.type(slots.max) and slots.min <= slots.max, 'image slots')\n"
    "    local vars, berr = T.bind_vars(d, nil)\n"
    "    if vars then\n"
    "      invariant(type(T.expand(d.prompt.template, vars)) == 'string', 'the prompt expands')\n"
    "    else\n"
    "      out[#out + 1] = berr\n"
    "    end\n"
    "    local c = T.canonical_json(d)\n"
    "    local back = T.decode_json(c)\n"
    "    invariant(back ~= nil and T.canonical_json(back) == c, 'canonical JSON reads back: ' .. c:sub(1, 200))\n"
    "  end\n"
    "  return out\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  mr_fuzz_lua_state("template", driver);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_fuzz_lua_state("template", driver);
  mr_fuzz_lua_run(data, size);
  return 0;
}
