-- Runs scoring jobs through the engine for tools/score (python): reads a JSON
-- job list, writes each result as raw little-endian float32 [3, F, H, W].
--
--   moonreel tools/score/jobs.lua JOBS.json
--
-- JOBS.json: {"pack": DIR, "weights": "f32", "jobs": [
--   {"kind": "t2v",  "prompt": ..., "seed": "7", "out": PATH},
--   {"kind": "ti2v", "prompt": ..., "seed": "7", "image": RAW, "shape": [3, H, W], "out": PATH},
--   {"kind": "r2v",  "prompt": ..., "seed": "7", "refs": [PNG, ...], "out": PATH},
--   {"kind": "vae",  "video": RAW, "shape": [3, F, H, W], "out": PATH}]}
-- Generation settings not in a job are the pack's defaults. "step_cache": T
-- generates with mr.recipe.step_cache{threshold = T}.
local mr = require "moonreel"
local cjson = require "cjson"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_raw(path, t)
  local f = assert(io.open(path, "wb"))
  f:write(t:data("f32"))
  f:close()
end

local function raw_tensor(path, shape)
  return mr.tensor_from_string(read(path), shape, "f32")
end

local spec = cjson.decode(read(assert(arg[1], "usage: moonreel tools/score/jobs.lua JOBS.json")))
local pack <close> = mr.pack.load(spec.pack, {weights = spec.weights})
local t0 = mr.clock()
local reused, steps = 0, 0
for i, job in ipairs(spec.jobs) do
  if job.kind == "vae" then
    local video <close> = raw_tensor(job.video, job.shape)
    local z <close> = assert(pack.vae:encode(video))
    local back <close> = assert(pack.vae:decode(z))
    write_raw(job.out, back)
  else
    local image = job.image and raw_tensor(job.image, job.shape) or nil
    local hook = spec.step_cache ~= cjson.null and spec.step_cache and mr.recipe.step_cache{threshold = spec.step_cache}
    local r = mr.recipe.generate{pack = pack, mode = job.kind, prompt = job.prompt, seed = job.seed, image = image,
                                 ref = job.refs, cfg_img = job.cfg_img, out = false, quiet = true, on_step = hook or nil}
    reused, steps = reused + (r.params.steps_reused or 0), steps + r.params.steps
    write_raw(job.out, r.frames)
    r.frames:close()
    if image then image:close() end
  end
  io.stderr:write(string.format("\rjob %d/%d (%.0f s)", i, #spec.jobs, mr.clock() - t0))
end
io.stderr:write("\n")
print(string.format("seconds per job: %.2f on %s", (mr.clock() - t0) / math.max(1, #spec.jobs), mr.device().name))
if steps > 0 then print(string.format("steps reused: %d of %d", reused, steps)) end
