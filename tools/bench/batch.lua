-- The batch benchmark (issue 18): clips per minute for a batch of N jobs with
-- the model resident (mr.batch, as recipes/effects.lua runs them), the same N
-- clips as one process each (recipes/<mode>.lua, loading the model every
-- time), their ratio, and device and host memory after chosen jobs (it should
-- stay flat). It prints figures; it asserts nothing.
--
--   build/moonreel tools/bench/batch.lua [--model DIR] [--jobs 50] [--memory-at 1,10,50]
--     [--steps N] [--width W] [--height H] [--frames F] [--prompt TEXT] [--per-process N] [--keep DIR]
local mr = require "moonreel"
local cjson = require "cjson"
local B = mr.batch
local R = mr.recipe

local function parse(argv)
  local o = {jobs = 50, memory_at = "1,10,50"}
  local i = 1
  while argv[i] do
    local k = argv[i]:match("^%-%-([%w%-]+)$")
    if not k or argv[i + 1] == nil then error("usage: tools/bench/batch.lua [--model DIR] [--jobs N] [--memory-at 1,10,50] "
      .. "[--steps N] [--width W] [--height H] [--frames F] [--prompt TEXT] [--per-process N] [--keep DIR]", 0) end
    o[k:gsub("%-", "_")] = argv[i + 1]
    i = i + 2
  end
  for _, k in ipairs{"jobs", "steps", "width", "height", "frames", "per_process"} do
    if o[k] then o[k] = assert(math.tointeger(tonumber(o[k])), "--" .. k .. ": an integer") end
  end
  return o
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function host_rss_mib()
  local f = io.open("/proc/self/status", "rb")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return (tonumber(s:match("VmRSS:%s*(%d+)")) or 0) / 1024
end

local o = parse(arg)
local model = o.model or R.default_model_dir()
local dir = o.keep
if not dir then
  dir = os.tmpname()
  os.remove(dir)
end
assert(mr.mkdir(dir .. "/photos"))

-- the pack decides the task: an image-to-video pack gets photos
local probe = mr.pack.load(model)
local task = (probe.model_type == "ti2v" or probe.model_type == "i2v") and "i2v" or "t2v"
local d = probe.defaults
local W, Hh, Fr, steps = o.width or d.width, o.height or d.height, o.frames or d.frames, o.steps or d.steps
local prompt = o.prompt or d.prompt or "a red circle moving right on a black background"
local desc = string.format("model %s (%s), %s, %dx%d, %d frames, %d steps, device %s", probe.name, probe.variant, task,
  W, Hh, Fr, steps, mr.device().name)
probe:close()

local template = {
  schema = "moonreel.template/1", id = "bench", version = "1", title = "benchmark", task = task,
  prompt = {template = (prompt:gsub("[{}]", "%0%0"))}, sampling = {steps = steps},
  video = {width = W, height = Hh, frames = Fr},
}
local tpl_path = dir .. "/bench.json"
local f = assert(io.open(tpl_path, "wb"))
f:write(cjson.encode(template))
f:close()
local jobs = {}
for i = 1, o.jobs do
  local images
  if task == "i2v" then
    local p = string.format("%s/photos/%03d.png", dir, i)
    assert(mr.image.save(p, mr.randn({3, Hh, W}, i) * 0.5))
    images = {p}
  end
  jobs[i] = {index = i - 1, source = "bench " .. i, template = tpl_path, images = images, seed = tostring(i)}
end

-- resident: one runner, the model loaded once (its load is in the time, as in a batch)
local memory_at = {}
for n in o.memory_at:gmatch("%d+") do memory_at[tonumber(n)] = true end
local mem_lines = {}
local templates = B.templates()
local t0 = mr.clock()
local runner = B.runner{model = model}
runner:load_pack()
for i, j in ipairs(jobs) do
  B.prepare(j, templates)
  local rec = runner:run(j, dir .. "/resident")
  if rec.status ~= "done" then error("job " .. i .. ": " .. tostring(rec.error), 0) end
  if memory_at[i] then
    collectgarbage()
    local m = mr.memory()
    mem_lines[#mem_lines + 1] = string.format("after job %d: device live %.1f MiB, held %.1f MiB, host rss %.1f MiB", i,
      m.device_live / 2 ^ 20, m.device_held / 2 ^ 20, host_rss_mib())
  end
end
runner:close()
local resident = mr.clock() - t0

-- one process per clip: the recipe of the task, from the command line
local n_pp = math.min(o.per_process or o.jobs, o.jobs)
local bin = arg[-1] or "moonreel" -- the interpreter running this script
local script = (arg[0]:match("^(.*)/tools/bench/[^/]+$") or ".") .. "/recipes/" .. (task == "i2v" and "ti2v" or "t2v") .. ".lua"
assert(mr.mkdir(dir .. "/per-process"))
t0 = mr.clock()
for i = 1, n_pp do
  local j = jobs[i]
  local cmd = string.format("%s %s --model %s --prompt %s --seed %s --steps %d --width %d --height %d --frames %d --quiet --out %s",
    q(bin), q(script), q(model), q(prompt), j.seed, steps, W, Hh, Fr, q(string.format("%s/per-process/%03d.mp4", dir, i)))
  if j.images then cmd = cmd .. " --image " .. q(j.images[1]) end
  local ok = os.execute(cmd .. " >/dev/null")
  if not ok then error("per-process clip " .. i .. " failed: " .. cmd, 0) end
end
local per = mr.clock() - t0

print(desc)
print(string.format("resident: %d clips in %.1f s, %.2f clips/min", #jobs, resident, #jobs / resident * 60))
print(string.format("one process per clip: %d clips in %.1f s, %.2f clips/min", n_pp, per, n_pp / per * 60))
print(string.format("ratio (resident / per process): %.2fx", (#jobs / resident) / (n_pp / per)))
for _, l in ipairs(mem_lines) do print(l) end
if not o.keep then os.execute("rm -rf " .. q(dir)) end
