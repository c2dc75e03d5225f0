/* A batch manifest (JSONL, one job a line: bindings/lua/batch.lua) and the
   report a run appends to. The input is read as jobs.jsonl by
   jobs_from_manifest, as recipes/effects.lua --manifest reads it; each job
   (the first 32) is then prepared against the templates beside it (t.json:
   i2v with a LoRA, variables and a variant; t2v.json: no image, WebP), which
   binds its variables, parses its seed, hashes its images and gives its id
   and output name, and turned into recipe options; nothing is generated. The
   same bytes are then read as a report (a run's report.jsonl, perhaps cut
   short by a kill), one record is appended, and reading it again must find
   that record done and every earlier line as before: a rerun resumes from
   whatever the report holds. */
#include "fuzz_lua.h"

static const char driver[] =
    "local B = require 'moonreel.batch'\n"
    "local T = require 'moonreel.template'\n"
    "local cjson = require 'cjson'\n"
    "local dir = TMP .. '/batch'\n"
    "assert(mr.mkdir(dir))\n"
    "local function write(path, s)\n"
    "  local f = assert(io.open(path, 'wb'))\n"
    "  f:write(s)\n"
    "  f:close()\n"
    "end\n"
    "write(dir .. '/a.safetensors', 'not read, only hashed')\n"
    "write(dir .. '/a.png', 'photo a')\n"
    "write(dir .. '/b.png', 'photo b')\n"
    "write(dir .. '/t.json', cjson.encode{schema = 'moonreel.template/1', id = 'fx', version = '1.0.0', title = 'fx', task = 'i2v',\n"
    "  model = {family = 'wan2.2'}, loras = {{file = 'a.safetensors', strength = 0.5}},\n"
    "  inputs = {images = {roles = {'subject'}, min_side = 16},\n"
    "            vars = {subject = {default = 'ball', max_len = 10}, mood = {choices = {'calm', 'wild'}, default = 'calm'}}},\n"
    "  prompt = {template = '{subject} {mood} {{x}}'}, sampling = {steps = 2, cfg = 4},\n"
    "  video = {width = 32, height = 32, frames = 5, fps = 8, orientation = 'follow_input'},\n"
    "  variants = {fast = {sampling = {steps = 1}}}})\n"
    "write(dir .. '/t2v.json', cjson.encode{schema = 'moonreel.template/1', id = 'plain', version = '2.0.0', title = 'plain', task = 't2v',\n"
    "  model = {family = 'wan2.1'}, inputs = {vars = {what = {}}}, prompt = {template = 'a {what}'},\n"
    "  output = {format = 'webp'}})\n"
    "local manifest, report = dir .. '/jobs.jsonl', dir .. '/report.jsonl'\n"
    "local function add(out, e)\n"
    "  out.n = out.n + 1\n"
    "  out[out.n] = e\n"
    "end\n"
    "local function lines(out, e, template)\n"
    "  -- a template with several errors is raised as one line each (Templates:get), each naming the file\n"
    "  if type(e) == 'string' and e:find('\\n') then\n"
    "    local name = T.shown(template) .. ': '\n"
    "    for l in (e .. '\\n'):gmatch('(.-)\\n') do\n"
    "      invariant(l:sub(1, #name) == name, 'each line names the template: ' .. l)\n"
    "      add(out, l)\n"
    "    end\n"
    "  else\n"
    "    add(out, e)\n"
    "  end\n"
    "end\n"
    "return function(input)\n"
    "  local out = {n = 0}\n"
    "  write(manifest, input)\n"
    "  local ok, jobs = pcall(B.jobs_from_manifest, manifest)\n"
    "  if not ok then\n"
    "    add(out, jobs)\n"
    "    invariant(type(jobs) ~= 'string' or (jobs:sub(1, #manifest + 1) == manifest .. ':'\n"
    "              and jobs:sub(#manifest + 2):match('^%d+: ')), 'names the line: ' .. tostring(jobs))\n"
    "  else\n"
    "    local templates = B.templates()\n"
    "    for i, job in ipairs(jobs) do\n"
    "      if i > 32 then break end\n"
    "      invariant(type(job.template) == 'string', 'a template path')\n"
    "      local pok, perr = pcall(B.prepare, job, templates)\n"
    "      if not pok then\n"
    "        lines(out, perr, job.template)\n"
    "      else\n"
    "        invariant(type(job.id) == 'string' and job.id:match('^[%w_.-]+%-%x+$'), 'an id: ' .. tostring(job.id))\n"
    "        invariant(type(job.seed) == 'string' and job.seed:match('^%d+$'), 'a seed: ' .. tostring(job.seed))\n"
    "        local o = job.output\n"
    "        invariant(type(o) == 'string' and o:sub(1, 1) ~= '/' and not ('/' .. o .. '/'):find('/%.%./')\n"
    "                  and (o:match('%.mp4$') or o:match('%.webp$')), 'an output inside --out: ' .. tostring(o))\n"
    "        if job.error then\n"
    "          add(out, job.error)\n"
    "        else\n"
    "          local opts = B.recipe_options(job, dir .. '/out.mp4')\n"
    "          invariant(type(opts.prompt) == 'string', 'a prompt')\n"
    "          for k, v in pairs(job.bound_vars) do invariant(type(v) == 'string', 'vars.' .. tostring(k)) end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  -- the same bytes as a report left by an earlier run\n"
    "  write(report, input)\n"
    "  local rok, rep = pcall(B.open_report, report, true)\n"
    "  if not rok then add(out, rep) return out end\n"
    "  local rec = {id = 'fx-00000000000000ff', status = 'done', output = 'fx.mp4', bytes = 3, seconds = 1.5}\n"
    "  local aok, aerr = pcall(rep.append, rep, rec)\n"
    "  if not aok then add(out, aerr) return out end\n"
    "  local again = B.open_report(report)\n"
    "  invariant(again.done[rec.id] and again.done[rec.id].bytes == 3, 'the appended record is done')\n"
    "  invariant(again.lines == rep.lines + 1, 'one line more: ' .. rep.lines .. ' then ' .. again.lines)\n"
    "  invariant(again.broken == rep.broken, 'as many broken lines: ' .. rep.broken .. ' then ' .. again.broken)\n"
    "  for id in pairs(rep.done) do invariant(again.done[id], 'still done: ' .. id) end\n"
    "  return out\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  mr_fuzz_lua_state("batch", driver);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mr_fuzz_lua_state("batch", driver);
  mr_fuzz_lua_run(data, size);
  return 0;
}
