-- moonreel.pack (mr.pack): a model pack is a folder, or files named one by one;
-- load() finds its parts, builds tokenizer, text encoder, DiT(s), VAE (and the
-- CLIP encoder where the variant has one), and gives the variant's defaults.
--
-- Layouts recognised (docs/models.md):
--   official   config.json + diffusion_pytorch_model.safetensors (or its shards,
--              listed by diffusion_pytorch_model.safetensors.index.json or named
--              -0000i-of-0000n), Wan2.1_VAE.pth / Wan2.2_VAE.pth,
--              models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/spiece.model,
--              models_clip_*.pth; Wan 2.2 A14B: high_noise_model/ + low_noise_model/.
--   moonreel   the same names, plus moonreel_pack.json: {"files": {...}, "defaults": {...}}
--              (files may rename any part; defaults override the variant's).
--   files      mr.pack.load{dit = "wan2.1_t2v_1.3B.safetensors", vae = ..., t5 = ...,
--              tokenizer = ...}: single files as ComfyUI users keep them
--              (a "model.diffusion_model." prefix is fine), or a dit shard list.
local mr = require "moonreel"
local cjson = require "cjson"

local M = {}

-- Sampling defaults of the released variants (docs/wan-architecture.md §5.5).
-- guide_high and boundary: Wan 2.2 A14B's high-noise expert and its switch point.
local BASE_NEGATIVE = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，" ..
  "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，" ..
  "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
M.BASE_NEGATIVE = BASE_NEGATIVE

local VARIANTS = {
  ["t2v-1.3B"] = {steps = 50, shift = 5.0, guide = 5.0, frames = 81, fps = 16, width = 832, height = 480},
  ["t2v-14B"] = {steps = 50, shift = 5.0, guide = 5.0, frames = 81, fps = 16, width = 1280, height = 720},
  ["i2v-14B"] = {steps = 40, shift = 5.0, guide = 5.0, frames = 81, fps = 16, width = 1280, height = 720,
                 negative = "镜头晃动，" .. BASE_NEGATIVE},
  ["flf2v-14B"] = {steps = 50, shift = 16.0, guide = 5.0, frames = 81, fps = 16, width = 1280, height = 720,
                   negative = "镜头切换，镜头晃动，" .. BASE_NEGATIVE},
  ["vace-1.3B"] = {steps = 50, shift = 16.0, guide = 5.0, frames = 81, fps = 16, width = 832, height = 480},
  ["vace-14B"] = {steps = 50, shift = 16.0, guide = 5.0, frames = 81, fps = 16, width = 1280, height = 720},
  ["ti2v-5B"] = {steps = 50, shift = 5.0, guide = 5.0, frames = 121, fps = 24, width = 1280, height = 704},
  ["t2v-A14B"] = {steps = 40, shift = 12.0, guide = 3.0, guide_high = 4.0, boundary = 0.875, frames = 81,
                  fps = 16, width = 1280, height = 720},
  ["i2v-A14B"] = {steps = 40, shift = 5.0, guide = 3.5, guide_high = 3.5, boundary = 0.900, frames = 81,
                  fps = 16, width = 1280, height = 720},
}
M.VARIANTS = VARIANTS

-- Widths of the released DiTs name their size.
local SIZE_OF_DIM = {[1536] = "1.3B", [3072] = "5B", [5120] = "14B"}

-- A model of a size we do not know (a small one of our own, a test model) gets
-- its model type's defaults at a small resolution.
local FALLBACK = {steps = 30, shift = 5.0, guide = 5.0, frames = 17, fps = 16, width = 256, height = 256}

local OFFICIAL = {
  dit = "diffusion_pytorch_model.safetensors",
  dit_index = "diffusion_pytorch_model.safetensors.index.json",
  -- each .pth may also be kept converted, as .safetensors under the same stem
  vae = {"Wan2.1_VAE.pth", "Wan2.2_VAE.pth", "Wan2.1_VAE.safetensors", "Wan2.2_VAE.safetensors"},
  t5 = {"models_t5_umt5-xxl-enc-bf16.pth", "models_t5_umt5-xxl-enc-bf16.safetensors"},
  tokenizer = "google/umt5-xxl/spiece.model",
  clip = {"models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
          "models_clip_open-clip-xlm-roberta-large-vit-huge-14.safetensors"},
  config = "config.json",
  manifest = "moonreel_pack.json",
}

------------------------------------------------------------------ files

local function exists(path)
  local f = io.open(path, "rb")
  if not f then return false end
  f:close()
  return true
end

-- A directory opens for reading on Linux but does not read.
local function is_dir(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local ok, _, code = f:read(0)
  f:close()
  return ok == nil and code == 21 -- EISDIR
end

local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function read_json(path)
  local text, err = read_text(path)
  if not text then return nil, err end
  local ok, v = pcall(cjson.decode, text)
  if not ok then return nil, string.format("%s: not valid JSON (%s)", path, tostring(v)) end
  return v
end

local function join(dir, name)
  if name:sub(1, 1) == "/" then return name end
  return (dir:gsub("/+$", "")) .. "/" .. name
end

-- A path or value from a file in a message: its control characters (a
-- newline above all) as \xNN, so the message stays one line.
local function shown(v)
  return (tostring(v):gsub("%c", function(c) return string.format("\\x%02x", c:byte()) end))
end

-- The shards of diffusion_pytorch_model in dir: from the index's weight_map,
-- or by the -0000i-of-0000n naming. nil when there are none.
local function find_shards(dir, stem)
  local index = join(dir, stem .. ".safetensors.index.json")
  if exists(index) then
    local j, err = read_json(index)
    if j == nil then error(err, 0) end -- (false and null are JSON too: refused below)
    if type(j) ~= "table" or type(j.weight_map) ~= "table" then error(index .. ": no weight_map", 0) end
    local seen, files = {}, {}
    for name, file in pairs(j.weight_map) do
      if type(file) ~= "string" or file == "" or file:sub(1, 1) == "/" or ("/" .. file .. "/"):find("/%.%./") then
        error(string.format("%s: weight_map[%s] must name a shard file inside the pack", index,
          cjson.encode(tostring(name))), 0)
      end
      if not seen[file] then
        seen[file] = true
        files[#files + 1] = file
      end
    end
    table.sort(files)
    for i, f in ipairs(files) do
      files[i] = join(dir, f)
      if not exists(files[i]) then error(string.format("%s: shard '%s' is missing", index, shown(f)), 0) end
    end
    return files
  end
  for n = 1, 99 do
    if exists(join(dir, string.format("%s-%05d-of-%05d.safetensors", stem, 1, n))) then
      local files = {}
      for i = 1, n do
        files[i] = join(dir, string.format("%s-%05d-of-%05d.safetensors", stem, i, n))
        if not exists(files[i]) then error(string.format("shard '%s' is missing", files[i]), 0) end
      end
      return files
    end
  end
  return nil
end

-- The DiT checkpoint of dir: one file or a shard list; nil when absent.
local function find_dit(dir)
  local one = join(dir, OFFICIAL.dit)
  if exists(one) then return one end
  return find_shards(dir, "diffusion_pytorch_model")
end

local function first_existing(dir, names)
  for _, n in ipairs(type(names) == "table" and names or {names}) do
    local p = join(dir, n)
    if exists(p) then return p end
  end
  return nil
end

------------------------------------------------------------------ resolving

-- The fields of moonreel_pack.json the loader reads, checked one by one so a
-- bad manifest is one line naming the field, not a Lua error later. Other
-- top-level fields (training records) are not read. Files must stay inside
-- the pack: a relative path without "..".
local DEFAULT_FIELDS = {
  steps = {"integer", 1, 10000}, frames = {"integer", 1, 4097}, width = {"integer", 1, 16384},
  height = {"integer", 1, 16384}, fps = {"number", 0.001, 1000}, guide = {"number", -1000, 1000},
  guide_high = {"number", -1000, 1000}, shift = {"number", 0.001, 1000}, boundary = {"number", 0, 1},
  sampler = {"string"}, negative = {"string"}, prompt = {"string"},
}
-- "references": how the pack takes reference images (recipes/r2v.lua).
local REFERENCE_FIELDS = {method = true, max = true, canvas = true, guide_img = true, guide_text = true, names = true}
local FILE_FIELDS = {dit = true, vae = true, t5 = true, tokenizer = true, clip = true, clip_config = true, config = true}
-- "preview": the pack's latent-to-RGB projection (Pack:preview); "fit" is a
-- record of how it was made, not read.
local PREVIEW_FIELDS = {rgb_factors = true, rgb_bias = true, fit = true}

-- A field's name in a message: a.b for a plain key, a["..."] (JSON-quoted)
-- for any other, so a key holding a newline or a quote stays on one line.
local function field_name(prefix, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return prefix .. "." .. k end
  return string.format("%s[%s]", prefix, type(k) == "string" and cjson.encode(k) or tostring(k))
end

local function check_manifest(m, path)
  local function bad(field, what) error(string.format("%s: %s %s", path, field, what), 0) end
  if type(m) ~= "table" or #m > 0 then bad("the manifest", "must be a JSON object") end
  if m.name ~= nil and type(m.name) ~= "string" then bad("name", "must be a string") end
  local function inside(field, f)
    if type(f) ~= "string" or f == "" then bad(field, "must be a file name (a string)") end
    if f:sub(1, 1) == "/" or ("/" .. f .. "/"):find("/%.%./") then
      bad(field, string.format("'%s' names a file outside the pack (pass it to mr.pack.load{...} instead)",
        shown(f)))
    end
  end
  if m.files ~= nil then
    if type(m.files) ~= "table" or #m.files > 0 then bad("files", "must be an object of part = file") end
    for k, v in pairs(m.files) do
      if not FILE_FIELDS[k] then bad(field_name("files", k), "is not a part (dit, vae, t5, tokenizer, clip, clip_config, config)") end
      if type(v) == "table" then
        if #v == 0 then bad("files." .. k, "must be a file or a list of shard files") end
        for i, f in ipairs(v) do inside(string.format("files.%s[%d]", k, i), f) end
      else
        inside("files." .. k, v)
      end
    end
  end
  if m.references ~= nil then
    local r = m.references
    if type(r) ~= "table" or #r > 0 then bad("references", "must be an object") end
    for k in pairs(r) do
      if not REFERENCE_FIELDS[k] then bad(field_name("references", k), "is not a reference setting (method, max, canvas, guide_img, guide_text, names)") end
    end
    if r.method ~= "phantom" and r.method ~= "vace" then bad("references.method", "must be \"phantom\" or \"vace\"") end
    if r.max ~= nil and (math.tointeger(r.max) == nil or r.max < 1 or r.max > 16) then
      bad("references.max", "must be an integer 1 .. 16")
    end
    if r.canvas ~= nil and (type(r.canvas) ~= "string" or not r.canvas:match("^#%x%x%x%x%x%x$")) then
      bad("references.canvas", "must be a colour #rrggbb")
    end
    for _, k in ipairs{"guide_img", "guide_text"} do
      local v = r[k]
      if v ~= nil and (type(v) ~= "number" or v ~= v or v < -1000 or v > 1000) then
        bad("references." .. k, "must be a number -1000 .. 1000")
      end
    end
    if r.names ~= nil then
      if type(r.names) ~= "table" or (next(r.names) ~= nil and #r.names == 0) or #r.names > 16 then
        bad("references.names", "must be a list of at most 16 strings")
      end
      for i, v in ipairs(r.names) do
        if type(v) ~= "string" then bad(string.format("references.names[%d]", i), "must be a string") end
      end
    end
  end
  if m.preview ~= nil then
    local pv = m.preview
    if type(pv) ~= "table" or (next(pv) ~= nil and #pv > 0) then
      bad("preview", "must be an object {rgb_factors = [[r, g, b] per latent channel], rgb_bias = [r, g, b]}")
    end
    for k in pairs(pv) do
      if not PREVIEW_FIELDS[k] then bad("preview." .. tostring(k), "is not a preview setting (rgb_factors, rgb_bias, fit)") end
    end
    local function rgb(field, v)
      if type(v) ~= "table" or #v ~= 3 then bad(field, "must be 3 numbers [r, g, b]") end
      for i = 1, 3 do
        local x = v[i]
        if type(x) ~= "number" or x ~= x or x < -1000 or x > 1000 then
          bad(field, string.format("must be 3 numbers [r, g, b] -1000 .. 1000 (entry %d is %s)", i, tostring(x)))
        end
      end
    end
    local f = pv.rgb_factors
    if type(f) ~= "table" or #f == 0 or #f > 1024 then
      bad("preview.rgb_factors", "must be a list of [r, g, b], one per latent channel")
    end
    for i, row in ipairs(f) do rgb(string.format("preview.rgb_factors[%d]", i), row) end
    if pv.rgb_bias ~= nil then rgb("preview.rgb_bias", pv.rgb_bias) end
  end
  if m.defaults ~= nil then
    if type(m.defaults) ~= "table" or #m.defaults > 0 then bad("defaults", "must be an object") end
    for k, v in pairs(m.defaults) do
      local spec = DEFAULT_FIELDS[k]
      if not spec then bad(field_name("defaults", k), "is not a setting a recipe reads") end
      local field = "defaults." .. k
      if spec[1] == "string" then
        if type(v) ~= "string" then bad(field, "must be a string") end
      else
        local num = type(v) == "number" and v == v and v >= spec[2] and v <= spec[3]
        if not num or (spec[1] == "integer" and math.tointeger(v) == nil) then
          bad(field, string.format("must be %s %s .. %s, not %s", spec[1] == "integer" and "an integer" or "a number",
            tostring(spec[2]), tostring(spec[3]), tostring(v)))
        end
      end
    end
  end
end

-- Finds every part of the pack described by spec; returns a plan (paths,
-- layout, manifest) without loading anything.
local function resolve(spec)
  local plan = {files = {}}
  if type(spec) == "string" then
    if not exists(spec) then error(string.format("model pack '%s' does not exist", spec), 0) end
    if not is_dir(spec) then
      error(string.format("model '%s' is a file: name the VAE and text encoder too, " ..
        "mr.pack.load{dit = ..., vae = ..., t5 = ..., tokenizer = ...}", spec), 0)
    end
    plan.dir = spec
    local manifest_path = join(spec, OFFICIAL.manifest)
    if exists(manifest_path) then
      local m, err = read_json(manifest_path)
      if m == nil then error(err, 0) end -- a manifest `false` is JSON, refused by check_manifest
      check_manifest(m, manifest_path)
      plan.manifest, plan.layout, plan.manifest_path = m, "moonreel", manifest_path
    else
      plan.layout = "official"
    end
    local named = plan.manifest and plan.manifest.files or {}
    local function part(key, default)
      if named[key] ~= nil then
        local v = named[key]
        if type(v) == "table" then
          local out = {}
          for i, f in ipairs(v) do out[i] = join(spec, f) end
          return out
        end
        return join(spec, v)
      end
      return default
    end
    -- Wan 2.2 A14B: two experts in subfolders, one VAE/T5 beside them.
    if is_dir(join(spec, "high_noise_model")) and is_dir(join(spec, "low_noise_model")) then
      plan.files.dit = find_dit(join(spec, "low_noise_model"))
      plan.files.dit_high = find_dit(join(spec, "high_noise_model"))
      plan.files.config = first_existing(join(spec, "low_noise_model"), OFFICIAL.config)
    else
      plan.files.dit = part("dit", find_dit(spec))
      plan.files.config = part("config", first_existing(spec, OFFICIAL.config))
    end
    plan.files.vae = part("vae", first_existing(spec, OFFICIAL.vae))
    plan.files.t5 = part("t5", first_existing(spec, OFFICIAL.t5))
    plan.files.tokenizer = part("tokenizer", first_existing(spec, OFFICIAL.tokenizer))
    plan.files.clip = part("clip", first_existing(spec, OFFICIAL.clip))
    plan.files.clip_config = part("clip_config", nil) -- the CLIP tower's sizes, when its tensors do not tell
    if not plan.files.dit then
      error(string.format("model pack '%s': no DiT (%s, its shards, or a moonreel_pack.json naming one)",
        spec, OFFICIAL.dit), 0)
    end
  elseif type(spec) == "table" then
    plan.layout = "files"
    plan.dir = spec.dir
    for _, k in ipairs{"dit", "dit_high", "vae", "t5", "tokenizer", "clip", "clip_config", "config"} do
      local v = spec[k]
      if v ~= nil and type(v) ~= "string" and type(v) ~= "table" then
        error(string.format("mr.pack.load: field '%s' must be a path", k), 2)
      end
      plan.files[k] = v
    end
    if not plan.files.dit then error("mr.pack.load: field 'dit' (the diffusion model file) is required", 2) end
  else
    error("mr.pack.load: expected a folder path or a table of files", 2)
  end
  for _, k in ipairs{"vae", "t5", "tokenizer"} do
    if not plan.files[k] then
      error(string.format("model pack '%s': no %s file (%s)", plan.dir or "(files)",
        k == "t5" and "text encoder" or k, k == "vae" and "Wan2.1_VAE.pth or Wan2.2_VAE.pth" or
        k == "t5" and OFFICIAL.t5[1] or OFFICIAL.tokenizer), 0)
    end
  end
  for k, v in pairs(plan.files) do
    for _, p in ipairs(type(v) == "table" and v or {v}) do
      if not exists(p) then error(string.format("model pack: %s file '%s' does not exist", k, shown(p)), 0) end
    end
  end
  return plan
end

------------------------------------------------------------------ the pack object

local Pack = {}
Pack.__index = Pack

-- A loader's result, or its (nil, message) raised as one line.
local function check(v, msg)
  if v == nil then error(msg or "failed", 0) end
  return v
end

local function copy(t)
  local o = {}
  for k, v in pairs(t) do o[k] = v end
  return o
end

-- mr.pack.load(dir | {files} [, opts]) -> pack. opts.weights: "f32" | "f16" | "bf16"
-- (storage of the weights; default f32 on a CPU device, else bf16); opts.clip = false
-- skips the CLIP encoder.
function M.load(spec, opts)
  opts = opts or {}
  local plan = resolve(spec)
  local weights = opts.weights
  if weights == nil then
    weights = mr.device().type == "cpu" and "f32" or "bf16"
  end
  local config_text = plan.files.config and assert(read_text(plan.files.config)) or nil
  local mopts = {weights = weights, config = config_text}

  local p = setmetatable({layout = plan.layout, dir = plan.dir, files = plan.files, weights = weights,
                          manifest = plan.manifest}, Pack)
  local info = check(mr.detect(plan.files.dit, config_text))
  if info.kind ~= "wan-dit" then
    error(string.format("model pack: '%s' is not a Wan DiT (detected %s)", tostring(plan.files.dit), info.kind), 0)
  end
  p.tokenizer = check(mr.tokenizer(plan.files.tokenizer))
  p.t5 = check(mr.t5(plan.files.t5, {weights = weights}))
  p.dit = check(mr.wan_dit(plan.files.dit, mopts))
  if plan.files.dit_high then p.dit_high = check(mr.wan_dit(plan.files.dit_high, mopts)) end
  p.vae = check(mr.wan_vae(plan.files.vae, {weights = weights}))
  p.config = p.dit:config()
  p.model_type = p.config.model_type
  if p.model_type == "i2v" or p.model_type == "flf2v" then
    if opts.clip ~= false then
      if not plan.files.clip then
        error(string.format("model pack '%s': the %s model needs the CLIP image encoder (%s)",
          plan.dir or "(files)", p.model_type, OFFICIAL.clip[1]), 0)
      end
      local cc = plan.files.clip_config and assert(read_text(plan.files.clip_config)) or nil
      p.clip = check(mr.clip_vision(plan.files.clip, {weights = weights, config = cc}))
    end
  end
  local vi = p.vae:info()
  p.z_dim, p.vae_stride, p.vae_tstride, p.vae_version = vi.z_dim, vi.spatial_stride, vi.temporal_stride, vi.version
  local pv = plan.manifest and plan.manifest.preview
  if pv and #pv.rgb_factors ~= p.z_dim then
    error(string.format("%s: preview.rgb_factors has %d rows; the VAE makes %d latent channels", plan.manifest_path,
      #pv.rgb_factors, p.z_dim), 0)
  end
  local expect_in = (p.model_type == "i2v" or p.model_type == "flf2v") and 2 * p.z_dim + 4 or p.z_dim
  if p.model_type ~= "vace" and p.config.in_dim ~= expect_in then
    error(string.format("model pack: the DiT takes %d latent channels but the VAE makes %d (a %s DiT needs %d)",
      p.config.in_dim, p.z_dim, p.model_type, expect_in), 0)
  end
  if p.t5:dim() ~= p.config.text_dim then
    error(string.format("model pack: the text encoder is %d wide but the DiT expects %d", p.t5:dim(),
      p.config.text_dim), 0)
  end

  -- the variant and its defaults
  local size = SIZE_OF_DIM[p.config.dim]
  if p.dit_high and size == "14B" then size = "A14B" end
  p.variant = size and (p.model_type .. "-" .. size) or (p.model_type .. "-" .. p.config.dim .. "d")
  local d = copy(VARIANTS[p.variant] or FALLBACK)
  d.negative = d.negative or BASE_NEGATIVE
  d.sampler = d.sampler or "unipc"
  if plan.manifest and type(plan.manifest.defaults) == "table" then
    for k, v in pairs(plan.manifest.defaults) do
      d[k] = math.type(v) == "float" and math.tointeger(v) or v -- JSON numbers arrive as floats
    end
  end
  p.defaults = d
  if plan.manifest and plan.manifest.references then
    local r = copy(plan.manifest.references)
    r.max = r.max and math.tointeger(r.max)
    p.references = r
  end
  p.name = plan.manifest and plan.manifest.name or (plan.dir and plan.dir:match("([^/]+)/*$")) or p.variant
  return p
end

-- Spatial multiple a size must have: VAE stride times the DiT patch.
function Pack:size_multiple()
  return self.vae_stride * self.config.patch_size[2]
end

-- Checks width/height/frames against the model; raises with the reason.
function Pack:check_size(width, height, frames)
  local m = self:size_multiple()
  if width < m or height < m or width % m ~= 0 or height % m ~= 0 then
    error(string.format("size %dx%d: this model needs width and height multiples of %d (e.g. %dx%d)",
      width, height, m, math.max(m, width // m * m), math.max(m, height // m * m)), 0)
  end
  local ts = self.vae_tstride
  if frames < 1 or (frames - 1) % ts ~= 0 then
    error(string.format("%d frames: this model needs %dk+1 frames (e.g. %d or %d)", frames, ts,
      math.max(1, (frames - 1) // ts * ts + 1), ((frames - 1) // ts + 1) * ts + 1), 0)
  end
end

-- The latent shape {C, T, H, W} of a video of that size.
function Pack:latent_shape(width, height, frames)
  self:check_size(width, height, frames)
  return {self.z_dim, (frames - 1) // self.vae_tstride + 1, height // self.vae_stride, width // self.vae_stride}
end

-- Text states [n, text_dim] of a prompt (the valid tokens only; the DiT pads).
-- A prompt longer than the model's text length is an error, not a silent cut.
-- what names the text in the message ("prompt" by default).
function Pack:encode_text(prompt, what)
  local len = self.config.text_len
  local ids, n = self.tokenizer:encode_wan(prompt, len + 1)
  if n > len then
    error(string.format("%s too long: it is more than %d tokens (with the end mark), the model takes at most %d",
      what or "prompt", len, len), 0)
  end
  local valid = table.move(ids, 1, n, 1, {})
  return self.t5:encode(valid, n)
end

------------------------------------------------------------------ previews

-- Latent-to-RGB factors published for the released VAEs, as ComfyUI ships
-- them (comfy/latent_formats.py, classes Wan21 and Wan22: latent_rgb_factors,
-- one [r, g, b] row per latent channel, and latent_rgb_factors_bias).
-- Convention: ComfyUI's Latent2RGB previewer applies them to the sampler's
-- x0 in its model space, which for Wan is process_in(latent) =
-- (mu - latents_mean) / latents_std (scale_factor 1), with the same
-- statistics the engine builds in (engine/models/wan_vae.c), so they apply to
-- this engine's latents as they are; the result is in [-1, 1] (ComfyUI maps
-- it to bytes by (v + 1) / 2), the range of this engine's videos.
local PUBLISHED = {
  {version = 21, z_dim = 16, name = "Wan 2.1 VAE (published)", bias = {-0.1835, -0.0868, -0.3360}, factors = {
    {-0.1299, -0.1692, 0.2932}, {0.0671, 0.0406, 0.0442}, {0.3568, 0.2548, 0.1747}, {0.0372, 0.2344, 0.1420},
    {0.0313, 0.0189, -0.0328}, {0.0296, -0.0956, -0.0665}, {-0.3477, -0.4059, -0.2925}, {0.0166, 0.1902, 0.1975},
    {-0.0412, 0.0267, -0.1364}, {-0.1293, 0.0740, 0.1636}, {0.0680, 0.3019, 0.1128}, {0.0032, 0.0581, 0.0639},
    {-0.1251, 0.0927, 0.1699}, {0.0060, -0.0633, 0.0005}, {0.3477, 0.2275, 0.2950}, {0.1984, 0.0913, 0.1861}}},
  {version = 22, z_dim = 48, name = "Wan 2.2 VAE (published)", bias = {0.0317, -0.0878, -0.1388}, factors = {
    {0.0119, 0.0103, 0.0046}, {-0.1062, -0.0504, 0.0165}, {0.0140, 0.0409, 0.0491}, {-0.0813, -0.0677, 0.0607},
    {0.0656, 0.0851, 0.0808}, {0.0264, 0.0463, 0.0912}, {0.0295, 0.0326, 0.0590}, {-0.0244, -0.0270, 0.0025},
    {0.0443, -0.0102, 0.0288}, {-0.0465, -0.0090, -0.0205}, {0.0359, 0.0236, 0.0082}, {-0.0776, 0.0854, 0.1048},
    {0.0564, 0.0264, 0.0561}, {0.0006, 0.0594, 0.0418}, {-0.0319, -0.0542, -0.0637}, {-0.0268, 0.0024, 0.0260},
    {0.0539, 0.0265, 0.0358}, {-0.0359, -0.0312, -0.0287}, {-0.0285, -0.1032, -0.1237}, {0.1041, 0.0537, 0.0622},
    {-0.0086, -0.0374, -0.0051}, {0.0390, 0.0670, 0.2863}, {0.0069, 0.0144, 0.0082}, {0.0006, -0.0167, 0.0079},
    {0.0313, -0.0574, -0.0232}, {-0.1454, -0.0902, -0.0481}, {0.0714, 0.0827, 0.0447}, {-0.0304, -0.0574, -0.0196},
    {0.0401, 0.0384, 0.0204}, {-0.0758, -0.0297, -0.0014}, {0.0568, 0.1307, 0.1372}, {-0.0055, -0.0310, -0.0380},
    {0.0239, -0.0305, 0.0325}, {-0.0663, -0.0673, -0.0140}, {-0.0416, -0.0047, -0.0023}, {0.0166, 0.0112, -0.0093},
    {-0.0211, 0.0011, 0.0331}, {0.1833, 0.1466, 0.2250}, {-0.0368, 0.0370, 0.0295}, {-0.3441, -0.3543, -0.2008},
    {-0.0479, -0.0489, -0.0420}, {-0.0660, -0.0153, 0.0800}, {-0.0101, 0.0068, 0.0156}, {-0.0690, -0.0452, -0.0927},
    {-0.0145, 0.0041, 0.0015}, {0.0421, 0.0451, 0.0373}, {0.0504, -0.0483, -0.0356}, {-0.0837, 0.0168, 0.0055}}},
}
M.PUBLISHED_PREVIEW = PUBLISHED

-- The latent-to-RGB factors for a VAE: the manifest's "preview" field, else
-- the published ones of a released VAE (2.1 with z_dim 16, 2.2 with 48: the
-- VAEs whose latent statistics the engine builds in), else nil and why.
-- Returns {factors = {{r, g, b} per channel}, bias = {r, g, b}, source = text}.
function M.preview_factors(z_dim, version, manifest)
  local pv = manifest and manifest.preview
  if pv then
    return {factors = pv.rgb_factors, bias = pv.rgb_bias or {0, 0, 0}, source = "the pack's manifest"}
  end
  for _, f in ipairs(PUBLISHED) do
    if f.z_dim == z_dim and f.version == version then
      return {factors = f.factors, bias = f.bias, source = f.name}
    end
  end
  return nil, string.format("no latent preview for this VAE (Wan %d.%d, z_dim %d): the published factors are for " ..
    "the Wan 2.1 VAE (z_dim 16) and the Wan 2.2 VAE (z_dim 48); give others in moonreel_pack.json as " ..
    "\"preview\": {\"rgb_factors\": [[r, g, b] per channel], \"rgb_bias\": [r, g, b]}", version // 10, version % 10, z_dim)
end

-- rgb = clamp(Fᵀ z + b, -1, 1) for each latent pixel z of latent [C, T, h, w]
-- (or [C, h, w]), on the device: a matmul over the channels, then a clamp
-- made of two max reductions (max(x, -1), then -max(-x, -1)). factors: C
-- rows {r, g, b}; bias {r, g, b} (default 0); scale (integer >= 1) repeats
-- each pixel scale x scale times (nearest). Returns a new [3, T, h*scale,
-- w*scale] (or [3, h*scale, w*scale]) tensor of the latent's dtype.
function M.project_rgb(latent, factors, bias, scale)
  local s = latent:shape()
  local C = #factors
  if not ((#s == 4 or #s == 3) and s[1] == C) then
    error(string.format("preview: a latent [%d, T, h, w] or [%d, h, w], got [%s]", C, C, table.concat(s, ", ")), 2)
  end
  local image = #s == 3
  local T, h, w = image and 1 or s[2], s[#s - 1], s[#s]
  local n = T * h * w * 3
  local rows = {{}, {}, {}}
  for c, r in ipairs(factors) do
    for k = 1, 3 do rows[k][c] = r[k] end
  end
  bias = bias or {0, 0, 0}
  local wt <close> = mr.tensor(rows) -- [3, C]
  local b <close> = mr.tensor({bias[1], bias[2], bias[3]})
  local src <close> = latent:contiguous()
  local z <close> = src:reshape(C, T, h, w):permute{2, 3, 4, 1} -- [T, h, w, C]
  local lin <close> = mr.matmul(z, wt, b) -- [T, h, w, 3]
  local flat <close> = lin:reshape(1, n)
  local lo <close> = mr.full({1, n}, -1, flat:dtype())
  local both <close> = mr.concat({flat, lo}, 1)
  local above <close> = mr.max(both, 1) -- max(x, -1)
  local neg <close> = mr.neg(above)
  local neg2 <close> = neg:reshape(1, n)
  local both2 <close> = mr.concat({neg2, lo}, 1)
  local m <close> = mr.max(both2, 1) -- max(-x, -1) = -min(x, 1)
  local clamped <close> = mr.neg(m)
  local hwc <close> = clamped:reshape(T, h, w, 3)
  scale = scale or 1
  if scale == 1 then
    local out <close> = hwc:permute{4, 1, 2, 3}:contiguous() -- [3, T, h, w]
    return out:reshape(table.unpack(image and {3, h, w} or {3, T, h, w}))
  end
  local chw <close> = hwc:permute{4, 1, 2, 3}:contiguous()
  local grid <close> = chw:reshape(3 * T * h, 1, w, 1)
  local ones <close> = mr.ones({1, scale, 1, scale}, grid:dtype())
  local big <close> = grid * ones -- [3 T h, scale, w, scale]
  local H, W = h * scale, w * scale
  return big:reshape(table.unpack(image and {3, H, W} or {3, T, H, W}))
end

-- The preview of a latent of this pack [z_dim, T, h, w] (or [z_dim, h, w]):
-- its RGB at latent resolution, [3, T, h, w] in [-1, 1], by the pack's
-- latent-to-RGB factors (M.preview_factors). opts.scale (integer 1 .. 64)
-- repeats each pixel scale x scale times. The caller closes the result.
function Pack:preview(latent, opts)
  opts = opts or {}
  local scale = opts.scale or 1
  if math.tointeger(scale) == nil or scale < 1 or scale > 64 then
    error(string.format("preview: scale must be an integer 1 .. 64, not %s", tostring(scale)), 2)
  end
  local f, err = M.preview_factors(self.z_dim, self.vae_version, self.manifest)
  if not f then error(err, 2) end
  return M.project_rgb(latent, f.factors, f.bias, math.tointeger(scale))
end

-- What a sidecar records about the model.
function Pack:describe()
  return {name = self.name, variant = self.variant, layout = self.layout, dir = self.dir, weights = self.weights,
          files = self.files}
end

function Pack:close()
  for _, k in ipairs{"dit", "dit_high", "vae", "t5", "tokenizer", "clip"} do
    if self[k] then
      self[k]:close()
      self[k] = nil
    end
  end
end
Pack.__close = Pack.close

M.resolve = resolve
return M
