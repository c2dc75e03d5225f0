-- Runs effect-template jobs through the engine for tools/score --effects: each
-- job is a template (recipes/templates/*.json), a photo, variables and a seed,
-- prepared and run as the batch runner runs it (mr.batch: the template's prompt,
-- settings and LoRAs, checked against their sha256), but handing back the
-- frames as raw little-endian float32 [3, F, H, W] instead of an MP4, so the
-- checker sees what the engine decoded. "lora": false runs the same job with
-- the template's LoRAs left off: the base model on the same prompt and photo.
--
--   moonreel tools/score/effects.lua JOBS.json
--
-- JOBS.json: {"pack": DIR, "weights": "f32", "jobs": [
--   {"template": PATH, "image": PNG, "vars": {...}, "seed": "7", "lora": true, "out": PATH}, ...]}
local mr = require "moonreel"
local cjson = require "cjson"
local B, R = mr.batch, mr.recipe

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local spec = cjson.decode(read(assert(arg[1], "usage: moonreel tools/score/effects.lua JOBS.json")))
local runner = B.runner{model = spec.pack, weights = spec.weights}
local pack = runner:load_pack()
local templates = B.templates()
local t0 = mr.clock()
for i, j in ipairs(spec.jobs) do
  local job = B.prepare({index = i - 1, template = j.template, images = {j.image}, vars = j.vars, seed = j.seed},
                        templates)
  if not job.error then B.check_images(job) end
  if job.error then error(string.format("job %d: %s", i, job.error), 0) end
  local problem = runner:model_problem(job.r)
  if problem then error(problem, 0) end
  local attached = {}
  if j.lora then
    attached = assert(runner:use_loras(job.r))
  else
    runner:drop_loras()
  end
  local o = B.recipe_options(job, nil)
  o.out, o.pack, o.attached_loras, o.quiet = false, pack, attached, true
  local r = R.run(job.r.mode, o)
  local f = assert(io.open(j.out, "wb"))
  f:write(r.frames:data("f32"))
  f:close()
  r.frames:close()
  io.stderr:write(string.format("\rjob %d/%d (%.0f s)", i, #spec.jobs, mr.clock() - t0))
end
io.stderr:write("\n")
runner:close()
print(string.format("seconds per job: %.2f on %s", (mr.clock() - t0) / math.max(1, #spec.jobs), mr.device().name))
