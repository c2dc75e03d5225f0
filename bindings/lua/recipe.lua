-- moonreel.recipe (mr.recipe): what the generation recipes share. The
-- denoising loop, guidance and conditioning live here in Lua (docs/recipes.md);
-- recipes/t2v.lua and recipes/ti2v.lua are a few lines on top.
--
--   mr.recipe.t2v{prompt = "...", seed = 7, out = "a.mp4"}      -- from a script or the REPL
--   mr.recipe.ti2v{prompt = "...", image = "cat.jpg", out = "b.webp"}
--   mr.recipe.main("t2v", arg)                                  -- a command line (flags below)
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
  {"image", "string", "first frame (ti2v; required there): PNG, JPEG or WebP"},
  {"fit", "string", "how the image meets the size: crop (default), pad or stretch"},
  {"pad-color", "string", "colour of --fit pad borders, #rrggbb (default #000000)"},
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
  {"lora", "list", "a LoRA FILE[:STRENGTH] on the DiT (strength default 1; repeat the flag to stack)"},
  {"lora-high", "list", "a LoRA FILE[:STRENGTH] on the high-noise expert of a Wan 2.2 A14B pack"},
  {"no-sidecar", "boolean", "do not write <out>.json"},
  {"quiet", "boolean", "no progress output"},
  {"help", "boolean", "this text"},
}
M.FLAGS = FLAGS

local function usage(recipe)
  local lines = {string.format("usage: moonreel recipes/%s.lua --prompt TEXT [options]", recipe), "", "options:"}
  for _, f in ipairs(FLAGS) do
    if recipe == "ti2v" or (f[1] ~= "image" and f[1] ~= "fit" and f[1] ~= "pad-color") then
      local arg_name = f[2] == "boolean" and "" or f[2] == "list" and " FILE[:STRENGTH]" or " " .. f[2]:upper()
      lines[#lines + 1] = string.format("  --%-20s %s", f[1] .. arg_name, f[3])
    end
  end
  return table.concat(lines, "\n") .. "\n"
end
M.usage = usage

-- Parses argv (the CLI's arg) into an options table keyed like the flags
-- ("no-sidecar" becomes no_sidecar). Raises with a one-line message.
function M.parse_args(argv)
  local by_name = {}
  for _, f in ipairs(FLAGS) do by_name[f[1]] = f end
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
        opts[key] = value
      end
    end
  end
  return opts
end

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

-- Writes a table as JSON atomically: a temporary file, then a rename.
function M.write_json(path, value)
  local tmp = string.format("%s.tmp-%d", path, math.random(1, 1 << 30))
  local f, err = io.open(tmp, "wb")
  if not f then error(string.format("cannot write '%s': %s", path, err), 0) end
  local ok, werr = f:write(cjson.encode(value), "\n")
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    error(string.format("cannot write '%s': %s", path, tostring(werr or cerr)), 0)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    error(string.format("cannot write '%s': %s", path, rerr), 0)
  end
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

-- The pack a run uses: opts.model, else $MOONREEL_MODEL, else models/default
-- beside the recipes folder of the running script.
local function default_model_dir()
  local env = os.getenv("MOONREEL_MODEL")
  if env and env ~= "" then return env end
  local script = arg and arg[0]
  local dir = script and script:match("^(.*)/recipes/[^/]+$")
  if dir then return dir .. "/models/default" end
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

------------------------------------------------------------------ generation

-- An engine result, or its failure (nil, message) raised as one line.
local function check(v, msg)
  if v == nil or v == false then error(msg or "failed", 0) end
  return v
end

-- Opens the video writer for p.out; a failure is one line naming the file.
local function writer_opts(p) return {fps = p.fps, crf = p.crf, quality = p.quality} end

local function open_writer(out, p)
  local w, msg = mr.video.writer(out, writer_opts(p))
  if not w then error(msg, 0) end
  return w
end

local function close_all(list)
  for _, t in ipairs(list) do
    if t and not t:is_closed() then t:close() end
  end
end

-- One guided velocity: v_u + g (v_c - v_u), or v_c alone when g == 1.
local function velocity(dit, x, t, ctx_c, ctx_u, g, extra)
  local args = {x = x, t = t, context = ctx_c}
  for k, v in pairs(extra) do args[k] = v end
  local v_c = dit:forward(args)
  if g == 1 then return v_c end
  args.context = ctx_u
  local v_u <close> = dit:forward(args)
  local v = mr.guidance(v_c, v_u, g)
  v_c:close()
  return v
end

-- The image for image-conditioned modes, fitted to width x height, as [3, H, W]:
-- a file, or a tensor [3, H, W] in [-1, 1] of that size already.
local function load_image(image, width, height, fit, pad_color)
  if type(image) ~= "string" then
    local s = image:shape()
    if #s ~= 3 or s[1] ~= 3 or s[2] ~= height or s[3] ~= width then
      error(string.format("image tensor is %s; this run needs 3x%dx%d", table.concat(s, "x"), height, width), 0)
    end
    return image:contiguous()
  end
  local img, info_or_msg = mr.image.load(image, {width = width, height = height, fit = fit or "crop",
                                                 pad_color = pad_color})
  if not img then error(info_or_msg, 0) end
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

-- Runs one generation. opts: the flags' names (prompt, negative, image, fit,
-- model or pack, steps, cfg, shift, sampler, seed, frames, width, height, fps,
-- out, crf, quality, weights, no_sidecar, quiet, lora, lora_high) plus mode
-- ("t2v" | "ti2v"). lora entries are "FILE[:STRENGTH]" strings or
-- {file=, strength=, mode=} tables. on_step(step), if given, runs before each
-- step with {index, steps, t, cfg, loras}: it may set step.cfg, call
-- step.loras[i]:set_strength(s), or return false to stop the run.
-- image may also be a tensor [3, H, W] in [-1, 1]; out = false writes no file
-- and returns the decoded video as result.frames ([3, F, H, W]).
-- Returns {out=, sidecar=, seed=, seconds=, ...}; raises with a one-line
-- message on any failure, leaving no partial file behind.
function M.generate(opts)
  local mode = opts.mode or "t2v"
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
  if mode == "ti2v" and not opts.image then error("ti2v needs an image (--image FILE)", 0) end
  if mode == "t2v" and opts.image then error("t2v takes no image: use recipes/ti2v.lua", 0) end
  local quiet = opts.quiet
  local say = quiet and function() end or function(...) io.stderr:write(string.format(...), "\n") end
  local timings = {}
  local clock0 = mr.clock()

  -- adapters: files checked now, attached once the model is loaded
  local lora_specs = {}
  for _, flag in ipairs{"lora", "lora_high"} do
    for _, spec in ipairs(opts[flag] or {}) do
      local l = M.parse_lora(spec, flag:gsub("_", "-"))
      l.high = flag == "lora_high"
      lora_specs[#lora_specs + 1] = l
    end
  end

  -- the model
  local pack, own_pack = opts.pack, false
  if not pack then
    local dir = opts.model or default_model_dir()
    say("loading model %s", dir)
    pack = pack_mod.load(dir, {weights = opts.weights})
    own_pack = true
  end
  local attached = {}
  local ok, result = pcall(function()
    local d = pack.defaults
    local loras = {}
    for _, l in ipairs(lora_specs) do
      local dit = pack.dit
      if l.high then dit = pack.dit_high end
      if not dit then error(string.format("--lora-high %s: model %s has no high-noise expert", l.file, pack.name), 0) end
      local h, err = dit:lora_add(l.file, {strength = l.strength, mode = l.mode})
      if not h then error(string.format("--%s %s: %s", l.high and "lora-high" or "lora", l.file, err), 0) end
      attached[#attached + 1] = h
      local info = h:info()
      loras[#loras + 1] = {file = l.file, sha256 = assert(mr.sha256(l.file)), strength = l.strength,
                           mode = info.mode, naming = info.naming, targets = info.targets, high = l.high or nil}
      say("LoRA %s: %d weights (%s naming, %s, strength %g)%s", l.file, info.targets, info.naming, info.mode,
          l.strength, info.unmatched > 0 and string.format("; %d modules match nothing", info.unmatched) or "")
    end
    -- a pack may carry a sample prompt (the default model does: the quick start)
    local prompt = opts.prompt or d.prompt
    if not prompt then error("a prompt is required (--prompt TEXT)", 0) end
    local image_mode = mode == "ti2v"
    local mt = pack.model_type
    if image_mode and mt ~= "ti2v" and mt ~= "i2v" then
      error(string.format("model %s (%s) cannot start from an image", pack.name, mt), 0)
    end
    if not image_mode and mt ~= "t2v" and mt ~= "ti2v" then
      error(string.format("model %s is a %s model: use recipes/ti2v.lua with --image", pack.name, mt), 0)
    end
    local width, height = opts.width, opts.height
    if image_mode and (width == nil or height == nil) then
      local w, h = size_for_image(pack, opts.image, d)
      width, height = width or w, height or h
    end
    local p = {
      recipe = mode, prompt = prompt, negative = opts.negative or d.negative,
      steps = opts.steps or d.steps, cfg = opts.cfg or d.guide, shift = opts.shift or d.shift,
      sampler = opts.sampler or d.sampler, seed = seed_value(opts.seed),
      frames = opts.frames or d.frames, width = width or d.width, height = height or d.height,
      fps = opts.fps or d.fps, image = type(opts.image) == "string" and opts.image or nil,
      fit = image_mode and (opts.fit or "crop") or nil,
      pad_color = image_mode and opts.fit == "pad" and (opts.pad_color or "#000000") or nil,
      crf = opts.crf, quality = opts.quality, loras = #loras > 0 and loras or nil,
    }
    if p.steps < 1 then error(string.format("--steps %d: at least 1", p.steps), 0) end
    if p.fps <= 0 then error(string.format("--fps %s: must be positive", tostring(p.fps)), 0) end
    if not mr.sampler[p.sampler] then
      error(string.format("unknown sampler '%s' (unipc, dpmpp or euler)", p.sampler), 0)
    end
    local shape = pack:latent_shape(p.width, p.height, p.frames) -- checks the size
    local to_file = opts.out ~= false
    p.out = to_file and (opts.out or string.format("%s-%s.mp4", mode, p.seed)) or nil
    say("%s %dx%d, %d frames at %s fps, %d steps (%s, shift %g, cfg %g), seed %s", mode, p.width, p.height,
      p.frames, tostring(p.fps), p.steps, p.sampler, p.shift, p.cfg, p.seed)

    -- text
    local t0 = mr.clock()
    local ctx_c <close> = pack:encode_text(p.prompt)
    -- Wan 2.2 A14B: the high-noise expert has its own guidance (the pack's, or --cfg for both)
    p.cfg_high = pack.dit_high and (opts.cfg or d.guide_high or p.cfg) or nil
    local need_uncond = p.cfg ~= 1 or (p.cfg_high ~= nil and p.cfg_high ~= 1)
    local ctx_u <close> = need_uncond and pack:encode_text(p.negative, "negative prompt") or nil
    timings.text = mr.clock() - t0

    -- the output is checked first, so a path that cannot be written fails
    -- before minutes of sampling; its writer (and its temporary file) opens
    -- only when there are frames to write, so a run killed while sampling
    -- leaves nothing behind
    if to_file then check(mr.video.check_output(p.out, writer_opts(p))) end

    -- conditioning
    local extra, first = {}, nil
    local tok_per_frame = (shape[3] // pack.config.patch_size[2]) * (shape[4] // pack.config.patch_size[3])
    if image_mode then
      t0 = mr.clock()
      local img <close> = load_image(opts.image, p.width, p.height, p.fit, p.pad_color)
      if mt == "ti2v" then
        local video <close> = img:reshape(3, 1, p.height, p.width)
        first = check(pack.vae:encode(video))                      -- [z, 1, h, w]
      else -- Wan 2.1 I2V: CLIP features, and y = mask (4) + latent of [image, 0, 0, ...]
        extra.clip_fea = pack.clip:encode(img)
        local cond <close> = mr.zeros({3, p.frames, p.height, p.width})
        cond:slice(2, 1, 1):copy_(img:reshape(3, 1, p.height, p.width))
        local y_lat <close> = check(pack.vae:encode(cond))
        local mask <close> = mr.zeros({4, shape[2], shape[3], shape[4]})
        mask:slice(2, 1, 1):fill_(1)
        extra.y = mr.concat({mask, y_lat}, 1)
      end
      timings.image = mr.clock() - t0
    end

    -- sampling
    local sampler <close> = mr.sampler[p.sampler]{steps = p.steps, shift = p.shift}
    local x = mr.randn(shape, p.seed)
    if first then x:slice(2, 1, 1):copy_(first) end
    local timesteps = sampler:timesteps()
    local bar = M.progress("denoise", #timesteps, quiet)
    bar:update(0)
    t0 = mr.clock()
    for i, t in ipairs(timesteps) do
      if opts.on_step then -- a hook per step: change adapter strengths, guidance; false stops
        local step = {index = i, steps = #timesteps, t = t, cfg = p.cfg, loras = attached}
        if opts.on_step(step) == false then error("stopped by on_step at step " .. i, 0) end
        p.cfg = step.cfg
      end
      local tt = t
      if first then -- per-token timesteps: the image's tokens are clean (t = 0)
        tt = {}
        local n = shape[2] * tok_per_frame
        for k = 1, n do tt[k] = k <= tok_per_frame and 0 or t end
      end
      local dit, g = pack.dit, p.cfg
      if pack.dit_high and t >= (d.boundary or 0.875) * 1000 then
        dit, g = pack.dit_high, p.cfg_high
      end
      local v <close> = velocity(dit, x, tt, ctx_c, ctx_u, g, extra)
      local nx = sampler:step(v, t, x)
      x:close()
      x = nx
      if first then x:slice(2, 1, 1):copy_(first) end
      -- the engine records work and runs it asynchronously: wait for the step,
      -- so the bar and the timings tell the truth (a step is long; this costs nothing)
      mr.sync()
      bar:update(i)
    end
    bar:done()
    timings.denoise = mr.clock() - t0
    close_all{first, extra.clip_fea, extra.y}

    -- decoding
    t0 = mr.clock()
    local dbar = M.progress("decode", 100, quiet)
    local frames = check(pack.vae:decode(x, function(done)
      dbar:update(done * 100)
      return true
    end))
    dbar:done()
    x:close()
    timings.decode = mr.clock() - t0
    if not to_file then
      timings.total = mr.clock() - clock0
      return {frames = frames, seed = p.seed, params = p, seconds = timings}
    end

    t0 = mr.clock()
    local writer <close> = open_writer(p.out, p)
    local wok, werr = writer:write(frames)
    frames:close()
    check(wok, werr)
    check(writer:close())
    -- the sidecar follows a whole video: a failed write leaves any earlier
    -- run's video and sidecar as they were
    local sidecar = not opts.no_sidecar and M.sidecar_path(p.out) or nil
    timings.write = mr.clock() - t0
    timings.total = mr.clock() - clock0
    if sidecar then
      M.write_json(sidecar, {
        moonreel = mr.version, recipe = mode, params = p, model = pack:describe(), device = mr.device().name,
        seconds = timings, command = M.command_line(mode, p, pack),
      })
    end
    return {out = p.out, sidecar = sidecar, seed = p.seed, params = p, seconds = timings}
  end)
  for _, h in ipairs(attached) do h:remove() end -- a reused pack is left as it came
  if own_pack then pack:close() end
  if not ok then error(result, 0) end
  return result
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
  local function q(s)
    s = tostring(s)
    if s:match("^[%w%./_%-,:=+]+$") then return s end
    return "'" .. s:gsub("'", "'\\''") .. "'"
  end
  local parts = {"moonreel", "recipes/" .. mode .. ".lua", "--prompt", q(p.prompt), "--negative", q(p.negative)}
  if pack.dir then
    parts[#parts + 1] = "--model"
    parts[#parts + 1] = q(pack.dir)
  end
  for _, k in ipairs{"image", "fit", "pad_color", "steps", "cfg", "shift", "sampler", "seed", "frames", "width", "height", "fps",
                     "crf", "quality", "out"} do
    if p[k] ~= nil then
      parts[#parts + 1] = "--" .. k:gsub("_", "-")
      parts[#parts + 1] = q(p[k])
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

function M.t2v(opts)
  opts = opts or {}
  opts.mode = "t2v"
  return M.generate(opts)
end

function M.ti2v(opts)
  opts = opts or {}
  opts.mode = "ti2v"
  return M.generate(opts)
end

-- The command-line entry of a recipe: parses argv, runs, prints where the
-- video is. Every failure is one line on stderr and a non-zero exit: 2 for
-- a usage error, 130 when interrupted (Ctrl-C), 1 otherwise.
function M.main(mode, argv)
  -- a bad command line (an unknown flag, a value out of range) exits 2
  local ok, opts = pcall(function()
    local o = M.parse_args(argv or {})
    M.check_values(o)
    return o
  end)
  if not ok then
    io.stderr:write(mode, ": ", tostring(opts), "\n")
    return 2
  end
  if opts.help then
    io.stdout:write(usage(mode))
    return 0
  end
  opts.mode = mode
  local gok, res = pcall(M.generate, opts)
  if not gok then
    local msg = tostring(res):gsub("\n.*", "")
    if msg:find("interrupted") then
      io.stderr:write("\n", mode, ": interrupted; no output written\n")
      return 130
    end
    io.stderr:write(mode, ": ", msg, "\n")
    return 1
  end
  io.stdout:write(string.format("wrote %s (%.1f s: text %.1f, denoise %.1f, decode %.1f)\n", res.out,
    res.seconds.total, res.seconds.text or 0, res.seconds.denoise or 0, res.seconds.decode or 0))
  if res.sidecar then io.stdout:write("settings in ", res.sidecar, "\n") end
  return 0
end

return M
