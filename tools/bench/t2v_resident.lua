-- The engine side of tools/bench/t2v_vs_torch.py: the default text-to-video
-- run with the model resident, as a batch, the REPL or a host embedding the
-- engine runs it. Loads the pack once, runs one warm-up generation (the
-- process's first use of each kernel builds its pipeline), prints "ready",
-- then for each line "SEED OUT" on stdin runs recipes/t2v.lua's mode with
-- that seed, writes OUT, and prints one line of phase seconds:
-- "text T denoise D decode C". --steps, --width, --height and --frames
-- override the pack's defaults (the test runs it small).
--
--   build/moonreel tools/bench/t2v_resident.lua [--model DIR] [--prompt TEXT] [--steps N] [--width W]
--     [--height H] [--frames F]
local mr = require "moonreel"
local R = mr.recipe

local USAGE = "usage: tools/bench/t2v_resident.lua [--model DIR] [--prompt TEXT] [--steps N] [--width W] [--height H] "
  .. "[--frames F]"
local o = {model = "models/default", prompt = "a yellow square moving up on a gray background"}
local sizes = {steps = true, width = true, height = true, frames = true}
local i = 1
while arg[i] do
  local k = arg[i]:match("^%-%-(%w+)$")
  if not k or not (o[k] or sizes[k]) or arg[i + 1] == nil then error(USAGE, 0) end
  o[k] = arg[i + 1]
  if sizes[k] then o[k] = math.tointeger(tonumber(o[k])) or error("--" .. k .. ": an integer", 0) end
  i = i + 2
end

local pack = mr.pack.load(o.model)
local function generate(seed, out)
  local r = R.run("t2v", {pack = pack, prompt = o.prompt, seed = seed, out = out, quiet = true, no_sidecar = true,
                         steps = o.steps, width = o.width, height = o.height, frames = o.frames})
  local s = r.seconds
  return string.format("text %.4f denoise %.4f decode %.4f", s.text, s.denoise, s.decode)
end

generate(1, false)
io.write("ready\n")
io.flush()
for line in io.lines() do
  local seed, out = line:match("^(%d+) (.+)$")
  if not seed then error("t2v_resident: expected \"SEED OUT\", got " .. line, 0) end
  io.write(generate(math.tointeger(tonumber(seed)), out), "\n")
  io.flush()
end
