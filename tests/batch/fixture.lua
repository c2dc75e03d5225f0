-- What the batch specs share (not a spec): the conformance packs
-- (tests/e2e/fixture.lua), photos, LoRAs made for the tiny TI2V DiT,
-- templates for them, and running the CLI.
--
--   local BF = dofile(SRC .. "/tests/batch/fixture.lua")
--   local f = BF.build(tmp)   -- {packs=, photos=, tpl_a=, tpl_b=, ...}
local mr = require "moonreel"
local cjson = require "cjson"

local BIN = assert(os.getenv("MOONREEL_BIN"), "MOONREEL_BIN (the moonreel CLI) must be set")
local DATA = os.getenv("MOONREEL_DATA") or "conformance/data"
local SRC = os.getenv("MOONREEL_SOURCE") or ".."
local H = dofile(SRC .. "/tests/lua/helpers.lua")

local F = {BIN = BIN, DATA = DATA, SRC = SRC, H = H}
local q = H.q

function F.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- A photo of w x h: noise of the given seed (every photo's bytes differ).
function F.photo(path, w, h, seed)
  local img = mr.randn({3, h, w}, seed) * 0.5 -- writing clamps to [-1, 1]
  assert(mr.image.save(path, img))
  return path
end

-- A rank-2 LoRA on every self-attention `module` (q, k, v, o) of the pack's DiT.
function F.lora(pack, path, module, seed)
  local t = {}
  for _, w in ipairs(pack.dit:weights()) do
    local m = w.name:match("^(blocks%.%d+%.self_attn%." .. module .. ")%.weight$")
    if m then
      t["diffusion_model." .. m .. ".lora_A.weight"] = mr.randn({2, w.shape[2]}, seed) * 0.3
      t["diffusion_model." .. m .. ".lora_B.weight"] = mr.randn({w.shape[1], 2}, seed + 1) * 0.3
    end
  end
  assert(next(t), "no " .. module .. " weights in the DiT")
  assert(mr.save(path, t))
  return path
end

-- An i2v template for the tiny TI2V pack (its prompts must stay under 16 tokens).
function F.template(over)
  local t = {
    schema = "moonreel.template/1", id = "fx", version = "1.0.0", title = "An effect", task = "i2v",
    model = {family = "wan2.2"},
    loras = {{file = "a.safetensors", strength = 1}},
    inputs = {images = {roles = {"subject"}, min_side = 16, max_aspect = 3},
              vars = {subject = {default = "ball", max_len = 10}}},
    prompt = {template = "{subject} zq", trigger = "zq"},
    sampling = {steps = 2, cfg = 4, shift = 3},
    video = {width = 32, height = 32, frames = 5, fps = 8},
    variants = {fast = {sampling = {steps = 1, cfg = 1}}},
  }
  for k, v in pairs(over or {}) do t[k] = v end
  return t
end

function F.write_json(path, v) return F.write(path, cjson.encode(v)) end

function F.read_json(path) return cjson.decode((assert(H.read(path), "cannot read " .. path))) end

-- s with the magic characters of Lua patterns escaped
function F.esc(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- The packs, two LoRAs, photos and templates under dir.
function F.build(dir)
  local fixture = dofile(SRC .. "/tests/e2e/fixture.lua")
  local f = {dir = dir}
  f.packs = fixture.build(DATA, dir .. "/packs")
  assert(mr.mkdir(dir .. "/tpl"))
  assert(mr.mkdir(dir .. "/photos"))
  local pack <close> = mr.pack.load(f.packs.ti2v)
  F.lora(pack, dir .. "/tpl/a.safetensors", "q", 5)
  F.lora(pack, dir .. "/tpl/b.safetensors", "k", 7)
  f.tpl_a = F.write_json(dir .. "/tpl/a.json", F.template())
  f.tpl_b = F.write_json(dir .. "/tpl/b.json", F.template{id = "fy", loras = {{file = "b.safetensors", strength = 0.8}},
    prompt = {template = "{subject} qz", trigger = "qz"}})
  f.photos = {}
  for i, size in ipairs{{48, 32}, {32, 48}, {40, 40}} do
    f.photos[i] = F.photo(string.format("%s/photos/p%d.png", dir, i), size[1], size[2], 100 + i)
  end
  return f
end

-- Runs the CLI (argv: a list); returns exit code, stdout, stderr.
function F.run(argv, opts)
  opts = opts or {}
  local parts = {}
  for _, a in ipairs(argv) do parts[#parts + 1] = q(a) end
  local out, err = os.tmpname(), os.tmpname()
  local cmd = string.format("%s%s %s >%s 2>%s", opts.env or "", q(BIN), table.concat(parts, " "), q(out), q(err))
  if opts.cwd then cmd = "cd " .. q(opts.cwd) .. " && " .. cmd end
  local _, _, code = os.execute(cmd)
  local o, e = H.read(out), H.read(err)
  os.remove(out)
  os.remove(err)
  return code, o, e
end

-- Runs a shell command line; returns exit code, stdout, stderr.
function F.sh(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local _, _, code = os.execute(string.format("%s >%s 2>%s", cmd, q(out), q(err)))
  local o, e = H.read(out), H.read(err)
  os.remove(out)
  os.remove(err)
  return code, o, e
end

-- Starts the CLI in the background; returns its pid (stdout and stderr to
-- log). A shell waits for it, so a killed one is reaped at once (a zombie
-- would keep its temporary files looking alive to the next run).
function F.start(argv, log, env)
  local parts = {}
  for _, a in ipairs(argv) do parts[#parts + 1] = q(a) end
  local pidfile = log .. ".pid"
  os.remove(pidfile)
  local inner = string.format("%s%s %s >%s 2>&1 </dev/null & echo $! >%s; wait", env or "", q(BIN),
    table.concat(parts, " "), q(log), q(pidfile))
  assert(os.execute(string.format("sh -c %s >/dev/null 2>&1 </dev/null &", q(inner))))
  local t0 = mr.clock()
  while mr.clock() - t0 < 60 do
    local s = H.read(pidfile)
    if s and s:match("^%d+\n") then return tonumber(s:match("^%d+")) end
    os.execute("sleep 0.05")
  end
  error("the background run did not start: " .. inner)
end

function F.alive(pid)
  -- a zombie counts as gone: its state in /proc is Z
  local s = H.read("/proc/" .. pid .. "/stat")
  return s ~= nil and not s:match("^%d+ %b() Z")
end

-- Waits until pid has exited (at most `limit` seconds); returns whether it did.
function F.wait_gone(pid, limit)
  local t0 = mr.clock()
  while F.alive(pid) do
    if mr.clock() - t0 > (limit or 60) then return false end
    os.execute("sleep 0.1")
  end
  return true
end

function F.sleep(s) os.execute(string.format("sleep %.2f", s)) end

-- The report's lines, decoded (broken ones as false).
function F.report(path)
  local out = {}
  local s = H.read(path)
  if not s then return out end
  for line in s:gmatch("[^\n]+") do
    local ok, v = pcall(cjson.decode, line)
    out[#out + 1] = ok and v or false
  end
  return out
end

-- Files of a folder whose names match a Lua pattern.
function F.files(dir, pat)
  local out = {}
  for _, n in ipairs(mr.listdir(dir) or {}) do if n:match(pat) then out[#out + 1] = n end end
  return out
end

function F.ffprobe(path)
  local p = io.popen("ffprobe -v error -count_frames -select_streams v:0 -show_entries " ..
    "stream=width,height,nb_read_frames -of json " .. q(path) .. " 2>/dev/null")
  local s = p:read("a")
  p:close()
  local ok, v = pcall(cjson.decode, s)
  return ok and v.streams and v.streams[1] or nil
end

return F
