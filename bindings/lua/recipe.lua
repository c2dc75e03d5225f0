-- moonreel.recipe (mr.recipe): the stages every generation recipe shares.
-- A run is a plan (every parameter, plain data: the sidecar records it), the
-- text, the mode's conditioning, the denoising loop with its hooks, and the
-- finish (decode, write, sidecar). Each mode is one file under recipes/
-- (t2v, ti2v, flf2v, r2v) holding only what is its own: its flags, its checks
-- and its conditioning (docs/recipes.md: writing a mode).
--
--   mr.recipe.t2v{prompt = "...", seed = 7, out = "a.mp4"}      -- from a script or the REPL
--   mr.recipe.ti2v{prompt = "...", image = "cat.jpg", out = "b.webp"}
--   mr.recipe.r2v{prompt = "...", ref = {"a.png", "b.png"}}
--   moonreel recipes/t2v.lua --prompt ...                        -- a command line (flags below)
local mr = require "moonreel"
local cjson = require "cjson"
local pack_mod = require "moonreel.pack"

local M = {}

------------------------------------------------------------------ command line

-- Flags of the generation recipes: name, type, help. Defaults come from the
-- model pack unless stated.
local FLAGS = {
  {"prompt", "string", "what the video shows (required)"},
  {"negative", "string", "negative prompt (default: the model's)"},
  {"model", "string", "model pack folder (default: $MOONREEL_MODEL, else models/default)"},
  {"steps", "integer", "sampling steps"},
  {"cfg", "number", "classifier-free guidance scale (1 = no guidance, one forward per step)"},
  {"shift", "number", "sigma shift of the schedule"},
  {"sampler", "string", "unipc (Wan's default), dpmpp or euler"},
  {"seed", "seed", "64-bit seed 0 .. 2^64-1; -1 or random draws one (default: random, printed)"},
  {"frames", "integer", "frame count, 4k+1"},
  {"width", "integer", "width in pixels"},
  {"height", "integer", "height in pixels"},
  {"fps", "number", "frames per second of the file"},
  {"out", "string", "output: .mp4, .webp or a PNG pattern like frames/%04d.png (default: <recipe>-<seed>.mp4)"},
  {"crf", "integer", "H.264 quality for .mp4, 0 (lossless) .. 51 (default 10, as Wan writes)"},
  {"quality", "number", "WebP quality 0..100 (default 90)"},
  {"weights", "string", "weight storage: f32, f16 or bf16 (default: f32 on a CPU device, else bf16)"},
  {"lora", "list", "a LoRA FILE[:STRENGTH] on the DiT (strength default 1; repeat the flag to stack)", "FILE[:STRENGTH]"},
  {"lora-high", "list", "a LoRA FILE[:STRENGTH] on the high-noise expert of a Wan 2.2 A14B pack", "FILE[:STRENGTH]"},
  {"no-sidecar", "boolean", "do not write <out>.json"},
  {"quiet", "boolean", "no progress output"},
  {"help", "boolean", "this text"},
}
M.FLAGS = FLAGS

-- The flags of an image-conditioned mode (ti2v, flf2v), for its flags list.
M.IMAGE_FLAGS = {
  {"image", "string", "first frame (required): PNG, JPEG or WebP"},
  {"fit", "string", "how an image meets the size: crop (default), pad or stretch"},
  {"pad-color", "string", "colour of --fit pad borders, #rrggbb (default #000000)"},
}

-- A mode's flags: the prompts, its own (mode.flags), then the common ones.
local function mode_flags(mode)
  local all = {FLAGS[1], FLAGS[2]}
  for _, f in ipairs(mode and mode.flags or {}) do all[#all + 1] = f end
  for i = 3, #FLAGS do all[#all + 1] = FLAGS[i] end
  return all
end

local function usage(mode)
  if type(mode) == "string" then mode = M.load_mode(mode) end
  local lines = {string.format("usage: moonreel recipes/%s.lua %s [options]", mode.name, mode.synopsis or "--prompt TEXT"),
                 "", mode.about or "", "", "options:"}
  for _, f in ipairs(mode_flags(mode)) do
    local arg_name = f[2] == "boolean" and "" or f[2] == "list" and " " .. (f[4] or "VALUE") or " " .. f[2]:upper()
    lines[#lines + 1] = string.format("  --%-20s %s", f[1] .. arg_name, f[3])
  end
  return table.concat(lines, "\n") .. "\n"
end
M.usage = usage

-- Parses argv into an options table keyed like flags, a list of {name,
-- type, help} ("no-sidecar" becomes no_sidecar). once: a string flag given
-- twice is an error (otherwise the last wins). Raises with a one-line message.
function M.parse_flags(argv, flags, once)
  local by_name = {}
  for _, f in ipairs(flags) do by_name[f[1]] = f end
  local opts, i = {}, 1
  while argv[i] ~= nil do
    local a = argv[i]
    local name, value = a:match("^%-%-([%w%-_]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-_]+)$") end
    if not name then error(string.format("unexpected argument '%s' (flags start with --; see --help)", a), 0) end
    local f = by_name[name]
    if not f and by_name[name:gsub("_", "-")] then
      error(string.format("unknown flag --%s: flags use dashes (--%s)", name, name:gsub("_", "-")), 0)
    end
    if not f then error(string.format("unknown flag --%s (see --help)", name), 0) end
    local key = name:gsub("%-", "_")
    if f[2] == "boolean" then
      if value ~= nil then error(string.format("--%s takes no value", name), 0) end
      opts[key] = true
      i = i + 1
    else
      if value == nil then
        value = argv[i + 1]
        if value == nil then error(string.format("--%s needs a value", name), 0) end
        i = i + 2
      else
        i = i + 1
      end
      if f[2] == "list" then
        opts[key] = opts[key] or {}
        table.insert(opts[key], value)
      elseif f[2] == "integer" then
        local v = math.tointeger(tonumber(value))
        if not v then error(string.format("--%s: '%s' is not an integer", name, value), 0) end
        opts[key] = v
      elseif f[2] == "number" then
        local v = tonumber(value)
        if not v then error(string.format("--%s: '%s' is not a number", name, value), 0) end
        opts[key] = v
      else
        if once and opts[key] ~= nil then error(string.format("--%s is given twice", name), 0) end
        opts[key] = value
      end
    end
  end
  return opts
end

-- The options of a mode's command line (default: the common flags).
function M.parse_args(argv, mode) return M.parse_flags(argv, mode_flags(mode)) end

-- "FILE[:STRENGTH]" -> {file=, strength=}: the strength is what follows the
-- last ':' when it reads as a number, so paths with colons still work.
-- Checks the file can be read, before any model loads.
function M.parse_lora(spec, flag)
  if type(spec) == "table" then
    return {file = spec.file, strength = spec.strength or 1, mode = spec.mode}
  end
  local file, strength = spec, 1
  local f, s = spec:match("^(.*):([^:]*)$")
  if f and tonumber(s) then file, strength = f, tonumber(s) end
  if strength ~= strength or strength == math.huge or strength == -math.huge then
    error(string.format("--%s %s: the strength must be a finite number", flag, spec), 0)
  end
  local fh, err = io.open(file, "rb")
  if not fh then error(string.format("--%s: cannot read '%s': %s", flag, file, err), 0) end
  fh:close()
  return {file = file, strength = strength}
end

-- The flag values that can be judged without the model, each refused in one
-- line naming the flag and what it takes, before anything loads. (Sizes and
-- frame counts the model must divide are checked once the pack is known,
-- still before any sampling.)
function M.check_values(opts)
  local function one_of(flag, v, set)
    if v == nil then return end
    for _, x in ipairs(set) do if v == x then return end end
    error(string.format("--%s %s: must be %s", flag, tostring(v), table.concat(set, ", ")), 0)
  end
  local function range(flag, v, lo, hi, int)
    if v == nil then return end
    if type(v) ~= "number" or v ~= v or v < lo or v > hi or (int and math.tointeger(v) == nil) then
      error(string.format("--%s %s: must be %s %s .. %s", flag, tostring(v), int and "an integer" or "a number",
        tostring(lo), tostring(hi)), 0)
    end
  end
  one_of("weights", opts.weights, {"f32", "f16", "bf16"})
  one_of("fit", opts.fit, {"crop", "pad", "stretch"})
  one_of("sampler", opts.sampler, {"unipc", "dpmpp", "euler"})
  if opts.pad_color ~= nil and not tostring(opts.pad_color):match("^#%x%x%x%x%x%x$") then
    error(string.format("--pad-color %s: must be #rrggbb", tostring(opts.pad_color)), 0)
  end
  range("crf", opts.crf, 0, 51, true)
  range("quality", opts.quality, 0, 100, false)
  range("steps", opts.steps, 1, 10000, true)
  range("frames", opts.frames, 1, 4097, true) -- 4097: 1025 latent frames, past any released setting
  range("width", opts.width, 1, 16384, true)
  range("height", opts.height, 1, 16384, true)
  range("fps", opts.fps, 0.001, 1000, false)
  range("cfg", opts.cfg, -1000, 1000, false)
  range("shift", opts.shift, 0.001, 1000, false)
end

------------------------------------------------------------------ output helpers

-- Writes a table as JSON atomically (mr.write_file: a temporary, fsync, rename).
function M.write_json(path, value)
  -- atomic and synced, as the engine writes videos (a sidecar is never half a file)
  local ok, err = mr.write_file(path, cjson.encode(value) .. "\n")
  if not ok then error(err, 0) end
end

local function fmt_time(s)
  if s >= 3600 then return string.format("%dh%02dm", s // 3600, s % 3600 // 60) end
  if s >= 60 then return string.format("%dm%02ds", s // 60, math.floor(s % 60)) end
  return string.format("%.1fs", s)
end

-- A progress line on stderr: a bar redrawn in place on a terminal, one line
-- per update at most every few seconds otherwise (a log stays readable).
-- progress(label, total) -> object with :update(done) and :done().
function M.progress(label, total, quiet)
  local tty = mr.is_terminal("stderr")
  local t0, last_line = mr.clock(), -1e9
  local p = {}
  local function elapsed() return mr.clock() - t0 end
  function p:update(done)
    if quiet then return end
    local e = elapsed()
    local frac = total > 0 and done / total or 1
    local left = done > 0 and e / done * (total - done) or nil
    local width = 24
    local fill = math.floor(frac * width + 0.5)
    local line = string.format("%-8s [%s%s] %3d/%d  %s elapsed%s", label, string.rep("#", fill),
      string.rep("-", width - fill), math.floor(done + 0.5), total, fmt_time(e),
      left and ("  " .. fmt_time(left) .. " left") or "")
    if tty then
      io.stderr:write("\r", line, "\27[K")
    elseif done >= total or e - last_line >= 5 then
      io.stderr:write(line, "\n")
      last_line = e
    end
  end
  function p:done()
    if quiet then return end
    if tty then io.stderr:write("\n") end
  end
  return p
end

------------------------------------------------------------------ defaults

local function is_pack(dir)
  local f = io.open(dir .. "/moonreel_pack.json", "rb")
  if f then f:close() end
  return f ~= nil
end

-- The pack a run uses: opts.model, else $MOONREEL_MODEL, else models/default
-- beside the recipes folder of the running script, else ./models/default,
-- else the default model installed beside the module's recipes
-- (share/moonreel/models/default), so a script or host outside any tree
-- finds it.
local function default_model_dir()
  local env = os.getenv("MOONREEL_MODEL")
  if env and env ~= "" then return env end
  local script = arg and arg[0]
  local dir = script and script:match("^(.*)/recipes/[^/]+$")
  if dir then return dir .. "/models/default" end
  if is_pack("models/default") then return "models/default" end
  for d in (mr.recipes_path or ""):gmatch("[^;]+") do
    local m = d:gsub("/recipes/?$", "") .. "/models/default"
    if is_pack(m) then return m end
  end
  return "models/default"
end
M.default_model_dir = default_model_dir

-- The run's seed as a decimal string. None, "random" or -1 (Wan's and
-- stable-diffusion.cpp's convention) draw a fresh one; a bad seed is one line.
local function seed_value(seed)
  if seed == nil or seed == "random" or seed == "-1" or seed == -1 then return mr.random_seed() end
  local ok, s = pcall(mr.seed_string, seed)
  if not ok then
    error(string.format("--seed %s: an integer 0 .. 18446744073709551615 (or -1 / random for a fresh one)",
      tostring(seed)), 0)
  end
  return s
end

------------------------------------------------------------------ modes

-- A mode is a table {name, about, synopsis, flags, check, condition}; each
-- recipes/<name>.lua builds one with M.mode and ends with M.script(mode, ...),
-- which runs it as a command, or hands it over when the module loads it.
M.LOADING = setmetatable({}, {__tostring = function() return "moonreel.recipe.LOADING" end})

-- Options a caller may pass beside the flags (not on a command line).
-- attached_loras: adapters the caller attached to the pack and keeps across
-- runs (a batch keeps a template's while its jobs run), each {handle=, file=,
-- strength=, sha256=, high=}: recorded in the plan and the sidecar, not removed.
-- progress(stage, done, total): each stage's progress ("text", "image",
-- "denoise", "decode", "write"); return false to cancel the run.
-- on_frames(frames, first, count): each decoded chunk [3, n, H, W] (closed
-- after the call; clone it to keep it), the 1-based index of its first frame
-- and the video's frame count; return false to cancel.
-- preview = true: each step's preview drawn in the terminal (M.preview_hook).
local PROGRAM_KEYS = {mode = true, pack = true, on_step = true, after_step = true, attached_loras = true,
                      progress = true, on_frames = true, preview = true}

function M.mode(def)
  assert(type(def) == "table" and type(def.name) == "string", "mode{name = ..., condition = function(run) ... end}")
  assert(type(def.condition) == "function", "mode " .. def.name .. ": condition(run) is required")
  def.flags = def.flags or {}
  def.keys = {}
  for _, f in ipairs(mode_flags(def)) do def.keys[(f[1]:gsub("%-", "_"))] = f end
  return def
end

function M.script(mode, first, ...)
  if first == M.LOADING then return mode end
  os.exit(M.main(mode, arg), true)
end

-- Where the recipes are: $MOONREEL_RECIPES (folders separated by ';'), the
-- folder of the running recipe, ./recipes, and the module's own (the source
-- tree it was built from, and its installed share/moonreel/recipes).
function M.recipe_dirs()
  local dirs = {}
  local env = os.getenv("MOONREEL_RECIPES")
  if env and env ~= "" then for d in env:gmatch("[^;]+") do dirs[#dirs + 1] = d end end
  local script = arg and arg[0]
  local here = script and script:match("^(.*/recipes)/[^/]+$")
  if here then dirs[#dirs + 1] = here end
  dirs[#dirs + 1] = "recipes"
  for d in (mr.recipes_path or ""):gmatch("[^;]+") do dirs[#dirs + 1] = d end
  return dirs
end

local loaded_modes = {}

local function load_mode_file(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local mode = chunk(M.LOADING)
  if type(mode) ~= "table" or type(mode.name) ~= "string" or not mode.keys then
    error(string.format("%s is not a recipe mode (it must end with mr.recipe.script(mode, ...))", path), 0)
  end
  return mode
end

-- The mode of recipes/<name>.lua (loaded once), or of a file path ending in .lua.
function M.load_mode(name)
  if type(name) == "table" then return name end
  if loaded_modes[name] then return loaded_modes[name] end
  if type(name) == "string" and name:match("%.lua$") then
    local mode, err = load_mode_file(name)
    if not mode then error(string.format("cannot load recipe %s: %s", name, err), 0) end
    loaded_modes[name] = mode
    return mode
  end
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    error(string.format("unknown recipe mode '%s'", tostring(name)), 0)
  end
  local tried = {}
  for _, d in ipairs(M.recipe_dirs()) do
    local path = d .. "/" .. name .. ".lua"
    local h = io.open(path, "rb")
    if h then
      h:close()
      local mode, err = load_mode_file(path)
      if not mode then error(string.format("cannot load recipe %s: %s", path, err), 0) end
      loaded_modes[name] = mode
      return mode
    end
    tried[#tried + 1] = d
  end
  error(string.format("no recipe mode '%s' (looked in %s; set MOONREEL_RECIPES)", name, table.concat(tried, ", ")), 0)
end

------------------------------------------------------------------ the stages

-- An engine result, or its failure (nil, message) raised as one line.
local function check(v, msg)
  if v == nil or v == false then error(msg or "failed", 0) end
  return v
end
M.check = check

local function writer_opts(p) return {fps = p.fps, crf = p.crf, quality = p.quality} end

-- Options a mode does not know are an error, not silently ignored.
local function check_keys(mode, opts)
  for k in pairs(opts) do
    if not mode.keys[k] and not PROGRAM_KEYS[k] then
      local names = {}
      for name in pairs(mode.keys) do names[#names + 1] = name end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (it takes %s)", mode.name, tostring(k), table.concat(names, ", ")), 0)
    end
  end
end

-- Everything judged before a model loads: option names, values, UTF-8 text,
-- the mode's own checks, LoRA files. Returns the LoRA specs.
function M.check_options(mode, opts)
  check_keys(mode, opts)
  if opts.preview ~= nil and type(opts.preview) ~= "boolean" then
    error(string.format("preview = %s: must be true or false (mr.recipe.preview_hook{...} as after_step sets more)",
      tostring(opts.preview)), 0)
  end
  if opts.prompt ~= nil and (type(opts.prompt) ~= "string" or opts.prompt == "") then
    error("the prompt must be a non-empty string", 0)
  end
  M.check_values(opts)
  for _, k in ipairs({"prompt", "negative"}) do -- text goes into JSON and the tokenizer: UTF-8 only
    if type(opts[k]) == "string" then
      local ok, bad = utf8.len(opts[k])
      if not ok then error(string.format("the %s is not valid UTF-8 (byte %d)", k, bad), 0) end
    end
  end
  if mode.check then mode.check(opts) end
  local lora_specs = {}
  for _, flag in ipairs{"lora", "lora_high"} do
    for _, spec in ipairs(opts[flag] or {}) do
      local l = M.parse_lora(spec, flag:gsub("_", "-"))
      l.high = flag == "lora_high"
      lora_specs[#lora_specs + 1] = l
    end
  end
  return lora_specs
end

-- The image of an image-conditioned run, fitted to its size, as [3, H, W]:
-- a file, or a tensor [3, H, W] in [-1, 1] of that size already.
function M.load_image(run, image, opts)
  local p = run.p
  opts = opts or {}
  if type(image) ~= "string" then
    local s = image:shape()
    if #s ~= 3 or s[1] ~= 3 or s[2] ~= p.height or s[3] ~= p.width then
      error(string.format("image tensor is %s; this run needs 3x%dx%d", table.concat(s, "x"), p.height, p.width), 0)
    end
    return image:contiguous()
  end
  local img, msg = mr.image.load(image, {width = p.width, height = p.height, fit = opts.fit or p.fit or "crop",
                                         pad_color = opts.pad_color or p.pad_color})
  if not img then error(msg, 0) end
  return img
end

-- The size of an image-conditioned video when none is given: the default
-- area at the image's aspect, in the model's multiples (as Wan's
-- best_output_size does for TI2V).
local function size_for_image(pack, image, d)
  local ih, iw
  if type(image) == "string" then
    local probe, msg = mr.image.load(image)
    if not probe then error(msg, 0) end
    ih, iw = probe:shape(2), probe:shape(3)
    probe:close()
  else
    ih, iw = image:shape(2), image:shape(3)
  end
  local m = pack:size_multiple()
  local area = d.width * d.height
  local aspect = ih / iw
  local h = math.max(m, math.floor(math.sqrt(area * aspect) / m) * m)
  local w = math.max(m, math.floor(math.sqrt(area / aspect) / m) * m)
  return w, h
end

-- An image [3, H, W] of the run's size as one latent frame [C, 1, h, w]
-- (encoded alone: the causal VAE makes latent frame 0 from frame 0 alone).
function M.encode_image(run, img)
  local p = run.p
  local video <close> = img:reshape(3, 1, p.height, p.width)
  return check(run.pack.vae:encode(video))
end

-- Wan 2.1 I2V / FLF2V and Wan 2.2 I2V-A14B conditioning: CLIP features of
-- the image(s) where the pack has CLIP (FLF2V: both, [2 x 257, D]), and
-- y = mask (4) + the latent of [first, 0, ..., 0, (last)]: the mask's latent
-- frame 0 is all ones; with a last image, channel 3 of the last latent frame
-- (the last of the four pixel frames it holds) is one (docs/wan-architecture.md §6).
function M.i2v_condition(run, first, last)
  local p, s, pack = run.p, run.shape, run.pack
  if pack.clip then
    if last then
      local a <close> = pack.clip:encode(first)
      local b <close> = pack.clip:encode(last)
      run.extra.clip_fea = mr.concat({a, b}, 1)
    else
      run.extra.clip_fea = pack.clip:encode(first)
    end
  end
  local cond <close> = mr.zeros({3, p.frames, p.height, p.width})
  cond:slice(2, 1, 1):copy_(first:reshape(3, 1, p.height, p.width))
  if last then cond:slice(2, p.frames, p.frames):copy_(last:reshape(3, 1, p.height, p.width)) end
  local y_lat <close> = check(pack.vae:encode(cond))
  local mask <close> = mr.zeros({4, s[2], s[3], s[4]})
  mask:slice(2, 1, 1):fill_(1)
  if last then mask:slice(1, 4, 4):slice(2, s[2], s[2]):fill_(1) end
  run.extra.y = mr.concat({mask, y_lat}, 1)
end

-- Stage 1, the plan: every parameter of the run as plain data (the sidecar
-- records it), from the options, the mode and the pack's defaults.
function M.plan(mode, opts, pack)
  local d = pack.defaults
  local prompt = opts.prompt or d.prompt -- a pack may carry a sample prompt (the default model does)
  if not prompt then error("a prompt is required (--prompt TEXT)", 0) end
  local width, height = opts.width, opts.height
  if opts.image and (width == nil or height == nil) then
    local w, h = size_for_image(pack, opts.image, d)
    width, height = width or w, height or h
  end
  local p = {
    recipe = mode.name, prompt = prompt, negative = opts.negative or d.negative,
    steps = opts.steps or d.steps, cfg = opts.cfg or d.guide, shift = opts.shift or d.shift,
    sampler = opts.sampler or d.sampler, seed = seed_value(opts.seed),
    frames = opts.frames or d.frames, width = width or d.width, height = height or d.height,
    fps = opts.fps or d.fps, crf = opts.crf, quality = opts.quality,
  }
  if opts.image then
    p.image = type(opts.image) == "string" and opts.image or nil
    p.fit = opts.fit or "crop"
    p.pad_color = opts.fit == "pad" and (opts.pad_color or "#000000") or nil
  end
  if p.steps < 1 then error(string.format("--steps %d: at least 1", p.steps), 0) end
  if p.fps <= 0 then error(string.format("--fps %s: must be positive", tostring(p.fps)), 0) end
  if not mr.sampler[p.sampler] then error(string.format("unknown sampler '%s' (unipc, dpmpp or euler)", p.sampler), 0) end
  -- Wan 2.2 A14B: the high-noise expert has its own guidance (the pack's, or --cfg for both)
  p.cfg_high = pack.dit_high and (opts.cfg or d.guide_high or p.cfg) or nil
  return p
end

-- A run: the plan and what the stages build on it. A mode's condition(run)
-- sets what is its own:
--   run.extra      forward arguments of every pass (y, clip_fea, vace_context, vace_scale)
--   run:hold(k, z) latent frame k held clean: put back after every step, its
--                  tokens at t = 0 on models with per-token timesteps
--   run.lead, run.trail   latent frames before / after the video (references),
--                  sampled with it and cut off before decoding
--   run.guide      function(run, pass) -> velocity; default: classifier-free guidance
local Run = {}
Run.__index = Run

function Run:hold(k, z)
  self.held[k] = z
  self:own(z)
end

-- A tensor the run closes when it ends.
function Run:own(t)
  if t then self.owned[#self.owned + 1] = t end
  return t
end

-- The latent [C, lead + F + trail, h, w] the loop samples.
function Run:latent_shape()
  local s = self.shape
  return {s[1], self.lead + s[2] + self.trail, s[3], s[4]}
end

-- One forward of the DiT on x at timesteps t (a number or per-token list)
-- with context ctx; extra overrides run.extra's arguments for this pass.
-- ctx may be a list of contexts: one batched forward, one result each.
function Run:forward(pass, ctx, x, extra)
  local args = {x = x or pass.x, t = pass.t, context = ctx}
  for k, v in pairs(self.extra) do args[k] = v end
  for k, v in pairs(pass.extra or {}) do args[k] = v end
  for k, v in pairs(extra or {}) do args[k] = v end
  return pass.dit:forward(args)
end

-- Classifier-free guidance: v_u + g (v_c - v_u), or v_c alone when g == 1.
-- The two predictions come from one batched forward (each weight read once,
-- each op one dispatch for both).
function M.cfg_guide(run, pass)
  if pass.cfg == 1 then return run:forward(pass, run.ctx_c) end
  local v_c, v_u <close> = run:forward(pass, {run.ctx_c, run.ctx_u})
  local v = mr.guidance(v_c, v_u, pass.cfg)
  v_c:close()
  return v
end

-- Stage 2, the text: the prompt, and the negative prompt when any guidance needs it.
-- Tells opts.progress where the run is; a false answer cancels the run.
local function report(run, stage, done, total)
  local fn = run.opts.progress
  if fn and fn(stage, done, total) == false then
    error(string.format("canceled by the progress callback (%s %d/%d)", stage, done, total), 0)
  end
end
M.report = report

function M.encode_text(run)
  local t0 = mr.clock()
  local p = run.p
  local need_uncond = p.cfg ~= 1 or (p.cfg_high ~= nil and p.cfg_high ~= 1) or run.mode.always_uncond
  local n = need_uncond and 2 or 1
  report(run, "text", 0, n)
  run.ctx_c = run:own(run.pack:encode_text(p.prompt_expanded or p.prompt))
  report(run, "text", 1, n)
  if need_uncond then
    run.ctx_u = run:own(run.pack:encode_text(p.negative, "negative prompt"))
    report(run, "text", 2, n)
  end
  run.timings.text = mr.clock() - t0
end

-- The per-token timesteps of a step: held frames and the lead/trail frames the
-- mode marks clean get t = 0 on models that take per-token timesteps (Wan 2.2
-- TI2V); others get one t for every token (as Phantom-Wan on a T2V model).
local function step_timesteps(run, t)
  if not run.per_token or (next(run.held) == nil) then return t end
  local tok = run.tok_per_frame
  local frames = run.lead + run.shape[2] + run.trail
  local tt, n = {}, 0
  for f = 1, frames do
    local v = run.held[f] and 0 or t
    for _ = 1, tok do
      n = n + 1
      tt[n] = v
    end
  end
  return tt
end

local function put_held(run, x)
  for k, z in pairs(run.held) do x:slice(2, k, k):copy_(z) end
end

-- step:preview([opts]) in after_step: the RGB preview of step.x0 (the
-- clean latent the step predicts), the video's frames only (the mode's lead
-- and trail frames cut off): [3, T, h, w] in [-1, 1] at latent resolution,
-- by pack:preview (opts.scale as there). The caller closes it.
local function step_preview(step, opts)
  local run, x0 = step.run, step.x0
  if x0 == nil or x0:is_closed() then error("step:preview() works in after_step (it previews step.x0)", 2) end
  local video <close> = (run.lead > 0 or run.trail > 0) and x0:slice(2, run.lead + 1, run.lead + run.shape[2]) or nil
  return run.pack:preview(video or x0, opts)
end

-- An after_step hook that draws each step's preview in the terminal, in
-- place: up to opts.frames (4) latent frames side by side, evenly spaced,
-- opts.width (80) characters wide at most, on opts.out (io.stdout), as
-- mr.show draws. opts.then_(step) runs first (return false to stop).
-- preview = true on a run sets it, chained after the run's own after_step.
function M.preview_hook(opts)
  opts = opts or {}
  local out = opts.out or io.stdout
  local rows = 0
  return function(step)
    if opts.then_ and opts.then_(step) == false then return false end
    local rgb <close> = step:preview()
    local T = rgb:shape(2)
    local k = math.min(opts.frames or 4, T)
    local parts = {}
    for j = 1, k do
      local f = k == 1 and 1 or 1 + math.floor((j - 1) * (T - 1) / (k - 1) + 0.5)
      parts[j] = rgb:slice(2, f, f)
    end
    local strip <close> = mr.concat(parts, 4) -- [3, 1, h, k w]
    for _, v in ipairs(parts) do v:close() end
    -- over the last picture (the progress bar, on its line below, follows)
    out:write(rows > 0 and string.format("\27[%dA\r", rows) or "\r\27[K")
    rows = require("moonreel.repl").show(strip, {width = opts.width or 80, out = out})
  end
end

-- Stage 4, the denoising loop. Hooks (options):
--   on_step(step) before each step, step = {index, steps, t, cfg, loras, run}:
--     set step.cfg, call step.loras[i]:set_strength(s), or return false to stop;
--   after_step(step) after it, with step.x (the latent) and step.x0 (the
--     clean latent the step predicts, x - sigma v), and step:preview() (its
--     RGB, see step_preview): save a preview, or return false to stop;
--   preview = true: M.preview_hook draws each step, after any after_step.
function M.denoise(run)
  local p, d, opts = run.p, run.pack.defaults, run.opts
  if opts.preview then -- a pack with no preview factors fails here, not after its first step
    local ok, err = pack_mod.preview_factors(run.pack.z_dim, run.pack.vae_version, run.pack.manifest)
    if not ok then error("preview = true: " .. err, 0) end
  end
  local sampler <close> = mr.sampler[p.sampler]{steps = p.steps, shift = p.shift}
  local x = mr.randn(run:latent_shape(), p.seed)
  put_held(run, x)
  local timesteps = sampler:timesteps()
  local bar = M.progress("denoise", #timesteps, opts.quiet)
  bar:update(0)
  report(run, "denoise", 0, #timesteps)
  local t0 = mr.clock()
  local guide = run.guide or M.cfg_guide
  local after_step = opts.preview and M.preview_hook{then_ = opts.after_step} or opts.after_step
  local last_v
  for i, t in ipairs(timesteps) do
    local step = {index = i, steps = #timesteps, t = t, cfg = p.cfg, loras = run.loras, run = run, x = x,
                  preview = step_preview}
    if opts.on_step then
      if opts.on_step(step) == false then
        x:close()
        if last_v then last_v:close() end
        error("stopped by on_step at step " .. i, 0)
      end
      p.cfg = step.cfg
    end
    local pass = {dit = run.pack.dit, cfg = step.cfg, x = x, t = step_timesteps(run, t), index = i, raw_t = t}
    if run.pack.dit_high and t >= (d.boundary or 0.875) * 1000 then
      pass.dit, pass.cfg = run.pack.dit_high, p.cfg_high
    end
    -- step.reuse (set by a hook, e.g. mr.recipe.step_cache): this step takes
    -- the last computed velocity instead of running the DiT
    local v
    if step.reuse and last_v then
      v = last_v
      run.reused = (run.reused or 0) + 1
    else
      if last_v then last_v:close() end
      v = guide(run, pass)
      last_v = v
    end
    local nx = sampler:step(v, t, x)
    if after_step then
      step.x = nx
      step.x0 = x - v * (t / 1000) -- flow matching: x_t = (1 - s) x0 + s eps, v = eps - x0
      local go = after_step(step)
      step.x0:close()
      if go == false then x:close() nx:close() last_v:close() error("stopped by after_step at step " .. i, 0) end
    end
    x:close()
    x = nx
    put_held(run, x)
    -- the engine records work and runs it asynchronously: wait for the step,
    -- so the bar and the timings tell the truth (a step is long; this costs nothing)
    mr.sync()
    bar:update(i)
    if opts.progress and opts.progress("denoise", i, #timesteps) == false then
      x:close()
      if last_v then last_v:close() end
      error(string.format("canceled by the progress callback (denoise %d/%d)", i, #timesteps), 0)
    end
  end
  bar:done()
  if last_v then last_v:close() end
  run.timings.denoise = mr.clock() - t0
  run.p.steps_reused = run.reused
  return x
end

-- A step cache written as an on_step hook (TeaCache's idea on the latent): a
-- step whose input latent has changed little since the last step the DiT ran
-- reuses that step's velocity. The relative change |x_i - x_(i-1)| / |x_(i-1)|
-- is summed over the steps since the DiT last ran; below threshold the step
-- reuses, and the sum restarts when the DiT runs. The first and last steps
-- always run. Returns the hook; chain your own with opts.then_(step).
function M.step_cache(opts)
  opts = opts or {}
  local threshold = opts.threshold or 0.1
  local prev, acc = nil, 0
  local function rel_change(a, b)
    local d <close> = mr.sub(a, b)
    local dd <close> = mr.square(d):reshape(-1)
    local bb <close> = mr.square(b):reshape(-1)
    local num <close> = mr.sum(dd, 1)
    local den <close> = mr.sum(bb, 1)
    return math.sqrt(num:item() / math.max(den:item(), 1e-30))
  end
  return function(step)
    if opts.then_ and opts.then_(step) == false then return false end
    if prev then
      acc = acc + rel_change(step.x, prev)
      prev:close()
    end
    prev = step.x:clone()
    if step.index > 1 and step.index < step.steps and acc < threshold then
      step.reuse = true
    else
      acc = 0
    end
    if step.index == step.steps then prev:close() prev = nil end
  end
end

-- Stage 5, the finish: the video's frames decoded (lead and trail cut off),
-- written, and the sidecar after a whole video.
function M.finish(run, x)
  local p, opts = run.p, run.opts
  local t0 = mr.clock()
  local video = x
  if run.lead > 0 or run.trail > 0 then
    video = x:slice(2, run.lead + 1, run.lead + run.shape[2]):contiguous()
    x:close()
  end
  local dbar = M.progress("decode", 100, opts.quiet)
  local n = video:shape(2) -- progress counts latent frames decoded (the VAE's chunks hold one or more)
  report(run, "decode", 0, n)
  local on_frames = opts.on_frames and function(chunk, first)
    local go = opts.on_frames(chunk, first, p.frames)
    chunk:close()
    return go
  end
  local frames = check(run.pack.vae:decode(video, function(done)
    dbar:update(done * 100)
    return not opts.progress or opts.progress("decode", math.floor(done * n + 0.5), n) ~= false
  end, on_frames))
  dbar:done()
  video:close()
  run.timings.decode = mr.clock() - t0
  if opts.out == false then
    run.timings.total = mr.clock() - run.clock0
    return {frames = frames, seed = p.seed, params = p, seconds = run.timings}
  end
  t0 = mr.clock()
  report(run, "write", 0, 1)
  local writer <close> = check(mr.video.writer(p.out, writer_opts(p)))
  local wok, werr = writer:write(frames)
  frames:close()
  check(wok, werr)
  check(writer:close())
  -- the sidecar follows a whole video: a failed write leaves any earlier
  -- run's video and sidecar as they were
  local sidecar = not opts.no_sidecar and M.sidecar_path(p.out) or nil
  run.timings.write = mr.clock() - t0
  run.timings.total = mr.clock() - run.clock0
  if sidecar then
    local ok, err = pcall(M.write_json, sidecar, {
      moonreel = mr.version, recipe = run.mode.name, params = p, model = run.pack:describe(),
      device = mr.device().name, seconds = run.timings, command = M.command_line(run.mode, p, run.pack),
    })
    if not ok then
      -- an earlier run's sidecar would now describe this run's video: better none
      os.remove(sidecar)
      error(err, 0)
    end
  end
  -- the video is whole: a false answer here no longer cancels anything
  if opts.progress then opts.progress("write", 1, 1) end
  return {out = p.out, sidecar = sidecar, seed = p.seed, params = p, seconds = run.timings}
end

-- Attaches the run's LoRAs (checked files) to the pack's DiT(s).
local function attach_loras(run, lora_specs)
  local loras = {}
  for _, l in ipairs(run.opts.attached_loras or {}) do
    local info = l.handle:info()
    loras[#loras + 1] = {file = l.file, sha256 = l.sha256 or assert(mr.sha256(l.file)), strength = l.strength,
                         mode = info.mode, naming = info.naming, targets = info.targets, high = l.high or nil}
  end
  for _, l in ipairs(lora_specs) do
    local dit = run.pack.dit
    if l.high then dit = run.pack.dit_high end
    if not dit then error(string.format("--lora-high %s: model %s has no high-noise expert", l.file, run.pack.name), 0) end
    local h, err = dit:lora_add(l.file, {strength = l.strength, mode = l.mode})
    if not h then error(string.format("--%s %s: %s", l.high and "lora-high" or "lora", l.file, err), 0) end
    run.loras[#run.loras + 1] = h
    local info = h:info()
    loras[#loras + 1] = {file = l.file, sha256 = assert(mr.sha256(l.file)), strength = l.strength,
                         mode = info.mode, naming = info.naming, targets = info.targets, high = l.high or nil}
    run.say("LoRA %s: %d weights (%s naming, %s, strength %g)%s", l.file, info.targets, info.naming, info.mode,
      l.strength, info.unmatched > 0 and string.format("; %d modules match nothing", info.unmatched) or "")
  end
  return #loras > 0 and loras or nil
end

-- Runs one generation of mode (a name or a mode table). opts: the mode's
-- flags by name (prompt, seed, ... as in --help; no-sidecar is no_sidecar)
-- plus pack (a loaded pack to reuse), on_step / after_step (hooks, see
-- M.denoise); lora entries are "FILE[:STRENGTH]" strings or
-- {file=, strength=, mode=} tables; image may be a tensor [3, H, W] in
-- [-1, 1]; out = false writes no file and returns the decoded video as
-- result.frames ([3, F, H, W]). Returns {out=, sidecar=, seed=, params=,
-- seconds=}; raises with a one-line message on any failure, leaving no
-- partial file behind.
function M.run(mode, opts)
  mode = M.load_mode(mode)
  opts = opts or {}
  local lora_specs = M.check_options(mode, opts)
  local say = opts.quiet and function() end or function(...) io.stderr:write(string.format(...), "\n") end
  local pack, own_pack = opts.pack, false
  if not pack then
    local dir = opts.model or default_model_dir()
    say("loading model %s", dir)
    pack = pack_mod.load(dir, {weights = opts.weights})
    own_pack = true
  end
  local run = setmetatable({mode = mode, opts = opts, pack = pack, say = say, timings = {}, clock0 = mr.clock(),
                            extra = {}, held = {}, lead = 0, trail = 0, owned = {}, loras = {}}, Run)
  local ok, result = pcall(function()
    run.p = M.plan(mode, opts, pack)
    local p = run.p
    p.loras = attach_loras(run, lora_specs)
    if mode.plan then mode.plan(run) end -- the mode's own parameters and model checks
    run.shape = pack:latent_shape(p.width, p.height, p.frames) -- checks the size
    local ps = pack.config.patch_size
    run.tok_per_frame = (run.shape[3] // ps[2]) * (run.shape[4] // ps[3])
    run.per_token = pack.model_type == "ti2v"
    p.out = opts.out ~= false and (opts.out or string.format("%s-%s.mp4", mode.name, p.seed)) or nil
    say("%s %dx%d, %d frames at %s fps, %d steps (%s, shift %g, cfg %g), seed %s", mode.name, p.width, p.height,
      p.frames, tostring(p.fps), p.steps, p.sampler, p.shift, p.cfg, p.seed)
    M.encode_text(run)
    -- the output is checked first, so a path that cannot be written fails
    -- before minutes of sampling; its writer (and its temporary file) opens
    -- only when there are frames to write, so a run killed while sampling
    -- leaves nothing behind
    if p.out then check(mr.video.check_output(p.out, writer_opts(p))) end
    local t0 = mr.clock()
    report(run, "image", 0, 1)
    mode.condition(run)
    report(run, "image", 1, 1)
    run.timings.condition = mr.clock() - t0
    local x = M.denoise(run)
    for k, v in pairs(run.extra) do -- the conditioning is done with; free it before decoding
      if type(v) == "userdata" and v.close then v:close() end
      run.extra[k] = nil
    end
    return M.finish(run, x)
  end)
  for _, t in ipairs(run.owned) do if not t:is_closed() then t:close() end end
  for _, h in ipairs(run.loras) do h:remove() end -- a reused pack is left as it came
  if own_pack then pack:close() end
  if not ok then error(result, 0) end
  return result
end

-- mr.recipe.generate{mode = "t2v", ...}: M.run by the mode's name.
function M.generate(opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do if k ~= "mode" then o[k] = v end end
  return M.run(opts.mode or "t2v", o)
end

-- Where the settings of an output go: "a.mp4" -> "a.mp4.json"; a frame
-- pattern "frames/f_%04d.png" -> "frames/f.json" ("frames/%04d.png" ->
-- "frames/moonreel.json"); a folder "frames/" -> "frames/moonreel.json".
function M.sidecar_path(out)
  if out:sub(-1) == "/" then return out .. "moonreel.json" end
  local dir, base = out:match("^(.-)([^/]*)$")
  if base:find("%%") then
    local stem = base:gsub("%%[-0-9]*d.*$", ""):gsub("[_%-. ]+$", "")
    return dir .. (stem ~= "" and stem or "moonreel") .. ".json"
  end
  return out .. ".json"
end

-- The command that repeats a run exactly (recorded in the sidecar).
function M.command_line(mode, p, pack)
  mode = M.load_mode(mode)
  local function q(v)
    v = tostring(v)
    if v:match("^[%w%./_%-,:=+]+$") then return v end
    return "'" .. v:gsub("'", "'\\''") .. "'"
  end
  local parts = {"moonreel", "recipes/" .. mode.name .. ".lua", "--prompt", q(p.prompt), "--negative", q(p.negative)}
  if pack.dir then
    parts[#parts + 1] = "--model"
    parts[#parts + 1] = q(pack.dir)
  end
  local skip = {prompt = true, negative = true, model = true, weights = true, lora = true, ["lora-high"] = true}
  for _, f in ipairs(mode_flags(mode)) do
    local v = p[(f[1]:gsub("%-", "_"))]
    if not skip[f[1]] and f[2] ~= "boolean" and v ~= nil then
      for _, item in ipairs(type(v) == "table" and v or {v}) do
        parts[#parts + 1] = "--" .. f[1]
        parts[#parts + 1] = q(item)
      end
    end
  end
  for _, l in ipairs(p.loras or {}) do
    parts[#parts + 1] = l.high and "--lora-high" or "--lora"
    parts[#parts + 1] = q(string.format("%s:%s", l.file, l.strength))
  end
  parts[#parts + 1] = "--weights"
  parts[#parts + 1] = q(pack.weights)
  return table.concat(parts, " ")
end

-- mr.recipe.t2v{...}, mr.recipe.r2v{...}: any mode by its name.
setmetatable(M, {__index = function(_, name)
  if type(name) ~= "string" or not name:match("^[%w_]+$") then return nil end
  return function(opts) return M.run(name, opts) end
end})

-- The command-line entry of a recipe: parses argv, runs, prints where the
-- video is. Every failure is one line on stderr and a non-zero exit: 2 for
-- a usage error, 130 when interrupted (Ctrl-C), 1 otherwise.
function M.main(mode, argv)
  local lok, m = pcall(M.load_mode, mode)
  if not lok then
    io.stderr:write(tostring(mode), ": ", tostring(m), "\n")
    return 2
  end
  mode = m
  -- a bad command line (an unknown flag, a value out of range) exits 2
  local ok, opts = pcall(function()
    local o = M.parse_args(argv or {}, mode)
    if not o.help then
      M.check_values(o)
      if mode.check then mode.check(o) end
    end
    return o
  end)
  if not ok then
    io.stderr:write(mode.name, ": ", tostring(opts), "\n")
    return 2
  end
  if opts.help then
    io.stdout:write(usage(mode))
    return 0
  end
  opts.help = nil
  local gok, res = pcall(M.run, mode, opts)
  if not gok then
    local msg = tostring(res):gsub("\n.*", "")
    if msg:find("interrupted") then
      io.stderr:write("\n", mode.name, ": interrupted; no output written\n")
      return 130
    end
    io.stderr:write(mode.name, ": ", msg, "\n")
    return 1
  end
  io.stdout:write(string.format("wrote %s (%.1f s: text %.1f, denoise %.1f, decode %.1f)\n", res.out,
    res.seconds.total, res.seconds.text or 0, res.seconds.denoise or 0, res.seconds.decode or 0))
  if res.sidecar then io.stdout:write("settings in ", res.sidecar, "\n") end
  return 0
end

return M
