-- Conformance runner: every vector set found in DIR, checked against the
-- engine through the Lua objects a recipe uses.
--
--   moonreel tests/conformance/run.lua DIR [--filter PATTERN]
--
-- DIR holds wan/ and tokenizer/ (or the files directly). Each set is found by
-- its file-name prefix (t5_encoder*, wan2?_dit_*, wan21_clip_vision*,
-- wan2?_vae*, their .pth twins, schedulers*.io.safetensors, tokenizer/*.json,
-- manifests.json), so other vector sets of the same kinds, shapes and seeds
-- run unchanged. One line per case with its relative L2 error (or the error
-- its note names) and PASS or FAIL; the last line is
-- "N passed, M failed"; the exit code is non-zero on any failure.
local mr = require "moonreel"
local cjson = require "cjson"

local dir = arg[1]
if not dir then
  io.stderr:write("usage: moonreel tests/conformance/run.lua DIR [--filter PATTERN]\n")
  os.exit(2)
end
local filter
for i = 2, #arg do
  if arg[i] == "--filter" then filter = arg[i + 1] end
end

-- Tolerances of the conformance README: f32 compute, 16-bit weights.
local TOL_F32, TOL_16 = 1e-4, 2e-2

local passed, failed = 0, 0

local function report(name, err, tol, note)
  local ok = err ~= nil and err <= tol
  if ok then passed = passed + 1 else failed = failed + 1 end
  print(string.format("%-48s rel L2 %-10s %s%s", name, err and string.format("%.3g", err) or "-",
    ok and "PASS" or "FAIL", note and ("  " .. note) or ""))
end

local function report_error(name, msg)
  failed = failed + 1
  print(string.format("%-48s %s  FAIL", name, tostring(msg):gsub("\n", " ")))
end

-- Runs fn(); a raised error counts as a failed case instead of ending the run.
local function case(name, fn)
  if filter and not name:find(filter) then return end
  local ok, err = pcall(fn, name)
  if not ok then report_error(name, err) end
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- ‖a − b‖ / ‖b‖ over all elements, computed on the device.
local function rel_l2(a, b)
  local n = a:numel()
  assert(n == b:numel(), string.format("element counts differ: %d vs %d", n, b:numel()))
  local fa, fb = a:contiguous():reshape{n}, b:contiguous():reshape{n}
  local d = fa - fb
  local num = mr.sum(d * d, 1):totable()[1]
  local den = mr.sum(fb * fb, 1):totable()[1]
  return den > 0 and math.sqrt(num / den) or math.sqrt(num)
end

-- The NAME.json of a set: its config (as JSON text, the loaders read it) and io notes.
local function set_json(base)
  local text = read_file(base .. ".json")
  return text, text and cjson.decode(text) or {}
end

local function io_of(base)
  local io_t, msg = mr.load(base .. ".io.safetensors")
  assert(io_t, msg)
  return io_t
end

-- The precision policies each model set runs under: f32 (tight), f16 and bf16 weights.
local POLICIES = {{"f32", TOL_F32}, {"f16", TOL_16}, {"bf16", TOL_16}}

------------------------------------------------------------------------ parameter tables
-- A component's parameter table lists every tensor of the checkpoint once,
-- with its shape, and :weight(name) gives the loaded values (docs/models.md).
local function check_weights(name, comp, path, probe)
  local file = assert(mr.load(path))
  local listed, n = {}, 0
  for k in pairs(file) do n = n + 1 end
  for _, w in ipairs(comp:weights()) do
    local t = file[w.name]
    assert(t, w.name .. " is not in the checkpoint")
    assert(not listed[w.name], w.name .. " is listed twice")
    assert(table.concat(w.shape, "x") == table.concat(t:shape(), "x"), w.name .. ": shape differs")
    listed[w.name] = true
  end
  assert(#comp:weights() == n, string.format("%d weights listed, %d in the checkpoint", #comp:weights(), n))
  report(name .. " weight()", rel_l2(comp:weight(probe), file[probe]), 0)
  local none, msg, code = comp:weight("no.such.weight")
  assert(none == nil and msg:find("no.such.weight") and code == "MR_ENOTFOUND")
end

------------------------------------------------------------------------ T5
-- policies: the weight dtypes to run with their tolerances (default POLICIES).
local function run_t5(path, base, label, policies)
  local io_t = io_of(base)
  local ids_t = io_t.ids:totable()[1]
  local mask = io_t.mask:totable()[1]
  local ids, n_valid = {}, 0
  for i = 1, #ids_t do ids[i] = math.tointeger(ids_t[i]); n_valid = n_valid + mask[i] end
  for _, pol in ipairs(policies or POLICIES) do
    case(string.format("%s [%s weights]", label, pol[1]), function(name)
      local te = assert(mr.t5(path, {weights = pol[1]}))
      if pol[1] == "f32" and path:find("%.safetensors$") then check_weights(name, te, path, "blocks.0.attn.q.weight") end
      report(name, rel_l2(te:encode(ids, math.tointeger(n_valid)), io_t.out), pol[2])
      te:close()
    end)
  end
end

------------------------------------------------------------------------ DiT
local function run_dit(path, base, label)
  local cfg_text, cfg = set_json(base)
  local io_t = io_of(base)
  local scale = cfg.io and cfg.io.vace_context_scale or 1.0
  local t = io_t.t:numel() == 1 and io_t.t:totable()[1] or io_t.t
  for _, pol in ipairs(POLICIES) do
    case(string.format("%s [%s weights]", label, pol[1]), function(name)
      local dit = assert(mr.wan_dit(path, {weights = pol[1], config = cfg_text}))
      if pol[1] == "f32" then check_weights(name, dit, path, "blocks.0.self_attn.q.weight") end
      local out = dit:forward{x = io_t.x, t = t, context = io_t.context, y = io_t.y, clip_fea = io_t.clip_fea,
                              vace_context = io_t.vace_context, vace_scale = scale}
      report(name, rel_l2(out, io_t.out), pol[2])
      dit:close()
      if pol[1] == "f32" then -- every block streamed from host memory: the same bits
        local sdit <close> = assert(mr.wan_dit(path, {weights = "f32", config = cfg_text, resident_blocks = 0}))
        local sout = sdit:forward{x = io_t.x, t = t, context = io_t.context, y = io_t.y, clip_fea = io_t.clip_fea,
                                  vace_context = io_t.vace_context, vace_scale = scale}
        report(name .. " streamed", rel_l2(sout, out), 0)
      end
    end)
  end
end

------------------------------------------------------------------------ CLIP vision
local function run_clip(path, base, label)
  local cfg_text = set_json(base)
  local io_t = io_of(base)
  for _, pol in ipairs(POLICIES) do
    case(string.format("%s [%s weights]", label, pol[1]), function(name)
      local clip = assert(mr.clip_vision(path, {weights = pol[1], config = cfg_text}))
      local px = clip:preprocess(io_t.frame)
      if pol[1] == "f32" then report(label .. " preprocess", rel_l2(px, io_t.pixels), TOL_F32) end
      report(name, rel_l2(clip:encode(io_t.frame), io_t.out), pol[2])
      clip:close()
    end)
  end
end

------------------------------------------------------------------------ VAE
-- io video/latent/decoded carry a leading batch of 1; the engine takes none.
local function unbatch(t)
  local s = t:shape()
  if #s == 5 and s[1] == 1 then return t:reshape{s[2], s[3], s[4], s[5]} end
  return t
end

local function run_vae(path, base, label, policies)
  local io_t = io_of(base)
  for _, pol in ipairs(policies or POLICIES) do
    case(string.format("%s encode [%s weights]", label, pol[1]), function(name)
      local vae = assert(mr.wan_vae(path, {weights = pol[1]}))
      if pol[1] == "f32" then check_weights(name, vae, path, "decoder.head.2.weight") end
      -- the set records the latent statistics its reference used; released
      -- VAEs have them built in, other z_dims need them given
      if io_t.mean and io_t.std then vae:set_latent_stats(io_t.mean, io_t.std) end
      report(name, rel_l2(vae:encode(unbatch(io_t.video)), unbatch(io_t.latent)), pol[2])
      report(string.format("%s decode [%s weights]", label, pol[1]),
        rel_l2(vae:decode(unbatch(io_t.latent)), unbatch(io_t.decoded)), pol[2])
      vae:close()
    end)
  end
end

------------------------------------------------------------------------ tokenizer
local function run_tokenizer(json_path, tdir)
  local spec = cjson.decode(assert(read_file(json_path)))
  for model_name, m in pairs(spec.models) do
    case("tokenizer " .. model_name, function(name)
      local tok = assert(mr.tokenizer(tdir .. "/" .. m.file))
      local bad = 0
      for i, text in ipairs(spec.cases) do
        local got, want = tok:encode(text), m.ids[i]
        local same = #got == #want
        for j = 1, #want do same = same and got[j] == want[j] end
        if not same then
          bad = bad + 1
          print(string.format("  mismatch in case %d: %q", i, text))
        end
      end
      -- ids are compared exactly: the "error" is the share of cases that differ
      report(string.format("%s (%d cases)", name, #spec.cases), bad / #spec.cases, 0)
      tok:close()
    end)
  end
end

------------------------------------------------------------------------ manifests
-- Each released checkpoint as a sparse file with its exact names and shapes
-- (one byte written at the end): the detector must name its kind and sizes.
local function run_manifests(path)
  local manifests = cjson.decode(assert(read_file(path)))
  local tmp = os.tmpname()
  for name, m in pairs(manifests) do
    case("manifest " .. name, function(cname)
      local names, entries, offset, params = {}, {}, 0, 0
      for k in pairs(m.tensors) do names[#names + 1] = k end
      table.sort(names)
      for _, k in ipairs(names) do
        local n = 1
        for _, d in ipairs(m.tensors[k]) do n = n * d end
        -- written by hand: a 0-d shape must stay the JSON array []
        entries[#entries + 1] = string.format('%s:{"dtype":"BF16","shape":[%s],"data_offsets":[%d,%d]}',
          cjson.encode(k), table.concat(m.tensors[k], ","), offset, offset + 2 * n)
        offset = offset + 2 * n
        params = params + n
      end
      local text = "{" .. table.concat(entries, ",") .. "}"
      local f = assert(io.open(tmp, "wb"))
      f:write(string.pack("<I8", #text), text)
      f:seek("set", 8 + #text + offset - 1)
      f:write("\0")
      f:close()
      local info, msg = mr.detect(tmp)
      assert(info, msg)
      local c = m.config
      local ok = info.n_params == params
      if c.model_type then
        ok = ok and info.kind == "wan-dit" and info.variant == c.model_type and info.dim == c.dim
          and info.layers == c.num_layers and info.heads == c.num_heads
      elseif c.vocab then
        ok = ok and info.kind == "umt5" and info.dim == c.dim and info.layers == c.num_layers
      elseif c.z_dim then
        ok = ok and info.kind == "wan-vae" and info.z_dim == c.z_dim and info.variant == (c.dec_dim and "2.2" or "2.1")
      else
        ok = ok and info.kind == "clip-vision" and info.dim == c.vision_dim and info.layers == c.vision_layers
      end
      report(string.format("%s (%s %s, %d params)", cname, info.kind, info.variant, info.n_params), ok and 0 or 1, 0)
    end)
  end
  os.remove(tmp)
end

------------------------------------------------------------------------ schedulers
-- Every <solver>_<steps>_<shift> set in the file: the sampler's timesteps
-- (identical), sigmas (max abs error) and the sample after the whole loop
-- from x_init with the toy model v = tanh(x*a + b*t/1000), on the device.
local TOL_SIGMA, TOL_SCHED = 1e-6, 1e-5

local function run_schedulers(path)
  local io_t = io_of((path:gsub("%.io%.safetensors$", "")))
  local sets = {}
  for k in pairs(io_t) do
    local key, solver, steps, shift = k:match("^((.-)_(%d+)_(.+))%.timesteps$")
    if key then sets[#sets + 1] = {key = key, solver = solver, steps = tonumber(steps), shift = tonumber(shift)} end
  end
  table.sort(sets, function(p, q) return p.key < q.key end)
  for _, set in ipairs(sets) do
    case("scheduler " .. set.key, function(name)
      local s <close> = mr.sampler.new(set.solver, {steps = set.steps, shift = set.shift})
      local ts, want_t = s:timesteps(), io_t[set.key .. ".timesteps"]:totable()
      local differ = #ts == #want_t and 0 or 1
      for i = 1, #want_t do
        if ts[i] ~= want_t[i] then differ = 1 end
      end
      report(name .. " timesteps", differ, 0, "exact")
      local sg, want_s = s:sigmas(), io_t[set.key .. ".sigmas"]:totable()
      local sig_err = #sg == #want_s and 0 or math.huge
      for i = 1, #want_s do sig_err = math.max(sig_err, math.abs(sg[i] - want_s[i])) end
      report(name .. " sigmas", sig_err, TOL_SIGMA, "max abs")
      local x = io_t.x_init
      for _, t in ipairs(ts) do
        x = s:step(mr.tanh(x * io_t.a + io_t.b * (t / 1000)), t, x)
      end
      report(name .. " final", rel_l2(x, io_t[set.key .. ".final"]), TOL_SCHED)
    end)
  end
end

------------------------------------------------------------------------ LoRA
-- lora/<set>.lora_<naming>.safetensors on the DiT vector set <set>, with
-- lora/<set>.lora.json (strength, which expected output) and
-- lora/<set>.lora.io.safetensors: merged and on the fly, every weight
-- policy; strength 0 and removal must give the base output exactly.
local function run_lora(lora_path, set, naming, d)
  local meta = cjson.decode(assert(read_file(d .. "/" .. set .. ".lora.json")))
  local io_t = assert(mr.load(d .. "/" .. set .. ".lora.io.safetensors"))
  local key = assert(meta.expect["lora_" .. naming], "no expected output for lora_" .. naming):match("^(%S+)")
  local base_path = dir .. "/" .. meta.base:match("^(%S+)")
  local cfg_text = set_json(base_path:gsub("%.safetensors$", ""))
  local inp = {x = io_t.x, t = io_t.t:totable()[1], context = io_t.context}
  for _, pol in ipairs(POLICIES) do
    for _, mode in ipairs({"merge", "on_the_fly"}) do
      case(string.format("%s lora_%s [%s weights, %s]", set, naming, pol[1], mode), function(name)
        local dit <close> = assert(mr.wan_dit(base_path, {weights = pol[1], config = cfg_text}))
        local base = dit:forward(inp)
        local l = assert(dit:lora_add(lora_path, {strength = meta.strength, mode = mode}))
        assert(l:info().mode == mode and l:info().unmatched == 0, "mode or matching differs")
        report(name, rel_l2(dit:forward(inp), io_t[key]), pol[2])
        l:set_strength(0)
        report(name .. " at strength 0", rel_l2(dit:forward(inp), base), 0)
        l:set_strength(meta.strength)
        l:remove()
        report(name .. " removed", rel_l2(dit:forward(inp), base), 0)
      end)
    end
  end
end

------------------------------------------------------------------------ discovery
local function list(d)
  local p = io.popen('ls -1 "' .. d .. '" 2>/dev/null')
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  table.sort(out)
  return out
end

local function scan(d)
  for _, f in ipairs(list(d)) do
    local path = d .. "/" .. f
    local base = path:match("^(.*)%.safetensors$")
    local pth_base = path:match("^(.*)%.pth$")
    local lora_set, lora_naming = f:match("^(.*)%.lora_(%w+)%.safetensors$")
    if f == "wan" or f == "tokenizer" or f == "lora" then
      scan(path)
    elseif lora_set then
      run_lora(path, lora_set, lora_naming, d)
    elseif f == "tokenizer_cases.json" then
      run_tokenizer(path, d)
    elseif f == "manifests.json" then
      run_manifests(path)
    elseif base and not base:match("%.io$") and read_file(base .. ".io.safetensors") then
      local name = f:gsub("%.safetensors$", "")
      if name:match("^t5_encoder") then run_t5(path, base, name)
      elseif name:match("^wan2%d_dit_") then run_dit(path, base, name)
      elseif name:match("^wan21_clip_vision") then run_clip(path, base, name)
      elseif name:match("^wan2%d_vae") then run_vae(path, base, name)
      end
    elseif pth_base then
      -- a .pth twin of a safetensors set: "<set>-bf16.pth" holds bf16 weights,
      -- "<set>.pth" the same dtype as the set
      local set = pth_base:gsub("%-bf16$", "")
      local tol = pth_base:match("%-bf16$") and TOL_16 or TOL_F32
      local name = f
      if read_file(set .. ".io.safetensors") then
        local short = set:match("[^/]*$")
        -- the twin's weights as stored, computed in f32
        local policies = {{"f32", tol}}
        if short:match("^t5_encoder") then run_t5(path, set, name, policies)
        elseif short:match("^wan2%d_vae") then run_vae(path, set, name, policies)
        end
      end
    elseif f:match("^schedulers.*%.io%.safetensors$") then
      run_schedulers(path)
    end
  end
end

scan(dir)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and passed > 0 and 0 or 1)
