-- The quick-start sample: what the engine is and that it computes what the
-- reference computes. Runs in a few seconds on any Vulkan device, lavapipe
-- included.
--
--   build/moonreel recipes/hello.lua [conformance-data-dir]
local mr = require "moonreel"

local here = (arg and arg[0] or "recipes/hello.lua"):match("^(.*)/recipes/[^/]*$") or "."
local data = arg[1] or (here .. "/tests/conformance/data")

local dev = mr.device()
print(string.format("moonreel %s on %s (%s, %s)", mr.version, dev.name, dev.type, dev.driver))

-- Tensors and ops: a Linear layer with bf16 weights, then attention.
local x <close> = mr.tensor({{1, 2, 3}, {4, 5, 6}})
local w <close> = mr.tensor({{0.5, 0, 0}, {0, 1, 0}}, "bf16")
local y = mr.matmul(x, w)
print("matmul:", y, "=", table.concat(y:totable()[1], ", "), "/", table.concat(y:totable()[2], ", "))

local function elapsed(fn)
  local t0 = os.clock()
  local r = fn()
  mr.sync()
  return r, os.clock() - t0
end

-- A Wan 2.1 DiT forward on the small reference model shipped with the tests,
-- compared with the official code's output for the same inputs.
local ckpt = data .. "/wan/wan21_dit_t2v_tiny"
local f = io.open(ckpt .. ".json", "rb")
if not f then
  print("no conformance data at " .. data .. " (pass its folder as the first argument)")
  return
end
local config = f:read("a")
f:close()
local dit = assert(mr.wan_dit(ckpt .. ".safetensors", {config = config}))
local c = dit:config()
print(string.format("Wan DiT (%s): dim %d, %d heads, %d blocks, %d parameters",
  c.model_type, c.dim, c.num_heads, c.num_layers, c.n_params))
local io_t = assert(mr.load(ckpt .. ".io.safetensors"))
local out, seconds = elapsed(function()
  return dit:forward{x = io_t.x, t = io_t.t:totable()[1], context = io_t.context}
end)
local n = out:numel()
local d = out:reshape{n} - io_t.out:reshape{n}
local err = math.sqrt(mr.sum(d * d, 1):totable()[1] / mr.sum(io_t.out:reshape{n} * io_t.out:reshape{n}, 1):totable()[1])
print(string.format("forward: latent %s -> flow %s in %.2f s CPU time; relative error against the reference %.2e",
  table.concat(io_t.x:shape(), "x"), table.concat(out:shape(), "x"), seconds, err))
print(err < 1e-4 and "moonreel works." or "MISMATCH: see docs/building.md")
