-- Reference images to video: several references (people, objects, a scene)
-- kept in one video. Two methods; the pack says which (docs/recipes.md):
--
--   phantom  (Phantom-Wan; packs whose moonreel_pack.json says so): each reference is VAE-encoded
--            alone and appended after the video's latent frames, held clean
--            (t = 0 on models with per-token timesteps) and cut off before
--            decoding. Three forwards a step:
--              v = v_none + cfg_img (v_refs - v_none) + cfg (v_refs_text - v_refs)
--            (v_none: the references zeroed and no text).
--   vace     (Wan2.1-VACE packs): each reference is VAE-encoded alone and
--            prepended to the VACE context as its own latent frame; the
--            hints are scaled by --vace-scale within [--vace-start, --vace-end)
--            of the schedule.
--
-- Each reference is fitted on a white canvas (--ref-fit). The prompt can name
-- a reference as @1, @2, ...: its role text (--ref face.png:"the woman"), else
-- the pack's name for that position (its references.names).
--
--   moonreel recipes/r2v.lua --ref a.png --ref b.png \
--     --prompt "the first object moving right and the second object moving down on a gray background"
local mr = require "moonreel"
local R = mr.recipe

local MAX_REFS = 16 -- the most any method takes here; a pack may allow fewer

-- "FILE[:ROLE]": a readable file as given, else split at the first ':' whose
-- left part is a readable file (so paths with colons work).
local function parse_ref(spec, i)
  if type(spec) ~= "string" or spec == "" then error(string.format("--ref %d: must be FILE[:ROLE]", i), 0) end
  local function readable(f)
    local h = io.open(f, "rb")
    if h then h:close() end
    return h ~= nil
  end
  if readable(spec) then return {file = spec} end
  local at = 1
  while true do
    local c = spec:find(":", at, true)
    if not c then break end
    local file, role = spec:sub(1, c - 1), spec:sub(c + 1)
    if readable(file) then
      if role == "" then role = nil end
      return {file = file, role = role}
    end
    at = c + 1
  end
  local _, err = io.open(spec:match("^[^:]*"), "rb")
  error(string.format("--ref %s: cannot read it: %s", spec, tostring(err)), 0)
end

-- The prompt with @N replaced by reference N's role text (or the pack's name for it).
local function expand(prompt, refs, names)
  return (prompt:gsub("@(%d+)", function(n)
    local i = tonumber(n)
    local r = refs[i]
    if not r then error(string.format("the prompt names @%d, but there %s %d reference%s", i,
      #refs == 1 and "is" or "are", #refs, #refs == 1 and "" or "s"), 0) end
    local text = r.role or (names and names[i])
    if not text then error(string.format("the prompt names @%d: give it a role (--ref FILE:ROLE)", i), 0) end
    return text
  end))
end

local FITS = {pad = "pad", crop = "crop", keep = "stretch"}

local mode = R.mode{
  name = "r2v",
  about = "Reference images to video: the references' subjects kept in one video.",
  synopsis = "--ref FILE[:ROLE] [--ref ...] --prompt TEXT",
  always_uncond = true,
  flags = {
    {"ref", "list", "a reference image FILE[:ROLE] (repeat, in order; @N in the prompt is ROLE N)", "FILE[:ROLE]"},
    {"ref-fit", "string", "how a reference meets the size: pad (on the white canvas, default), crop, " ..
      "or keep (its own background, stretched)"},
    {"cfg-img", "number", "phantom: guidance of the references (default: the pack's)"},
    {"vace-scale", "number", "vace: strength of the reference hints (default 1)"},
    {"vace-start", "number", "vace: fraction of the schedule where the hints start (default 0)"},
    {"vace-end", "number", "vace: fraction of the schedule where the hints end (default 1)"},
  },
  check = function(opts)
    local specs = opts.ref
    if type(specs) == "string" then specs = {specs} end
    if type(specs) ~= "table" or #specs == 0 then error("r2v needs at least one reference (--ref FILE)", 0) end
    if #specs > MAX_REFS then error(string.format("--ref: %d references; at most %d", #specs, MAX_REFS), 0) end
    local refs = {}
    for i, s in ipairs(specs) do refs[i] = parse_ref(s, i) end
    if opts.ref_fit ~= nil and not FITS[opts.ref_fit] then
      error(string.format("--ref-fit %s: must be pad, crop or keep", tostring(opts.ref_fit)), 0)
    end
    for _, k in ipairs{"vace_start", "vace_end"} do
      local v = opts[k]
      if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0 or v > 1) then
        error(string.format("--%s %s: must be a number 0 .. 1", k:gsub("_", "-"), tostring(v)), 0)
      end
    end
    for _, k in ipairs{"cfg_img", "vace_scale"} do
      local v = opts[k]
      if v ~= nil and (type(v) ~= "number" or v ~= v or math.abs(v) > 1000) then
        error(string.format("--%s %s: must be a number -1000 .. 1000", k:gsub("_", "-"), tostring(v)), 0)
      end
    end
    if type(opts.prompt) == "string" then -- @N past the references (role texts are judged with the pack)
      for n in opts.prompt:gmatch("@(%d+)") do
        if not refs[tonumber(n)] then expand("@" .. n, refs) end
      end
    end
  end,
  plan = function(run)
    local p, pack, opts = run.p, run.pack, run.opts
    local rc = pack.references
    local method = rc and rc.method or (pack.model_type == "vace" and "vace") or nil
    if not method then
      error(string.format("model %s (%s) takes no reference images: r2v needs a VACE pack or a pack whose " ..
        "moonreel_pack.json names a reference method", pack.name, pack.model_type), 0)
    end
    local specs = type(opts.ref) == "string" and {opts.ref} or opts.ref
    local limit = rc and rc.max or MAX_REFS
    if #specs > limit then
      error(string.format("--ref: %d references; model %s takes at most %d", #specs, pack.name, limit), 0)
    end
    p.ref, p.refs = {}, {}
    for i, s in ipairs(specs) do
      local r = parse_ref(s, i)
      p.ref[i] = s
      p.refs[i] = {file = r.file, role = r.role, sha256 = assert(mr.sha256(r.file))}
    end
    p.method = method
    p.ref_fit = opts.ref_fit or "pad"
    p.prompt_expanded = expand(p.prompt, p.refs, rc and rc.names)
    if p.prompt_expanded == p.prompt then p.prompt_expanded = nil end
    if method == "phantom" then
      p.cfg_img = opts.cfg_img or (rc and rc.guide_img) or 5.0
    else
      p.vace_scale = opts.vace_scale or 1.0
      p.vace_start, p.vace_end = opts.vace_start or 0, opts.vace_end or 1
    end
  end,
  condition = function(run)
    local p, pack, F = run.p, run.pack, run.shape[2]
    local canvas = pack.references and pack.references.canvas or "#ffffff"
    local lat = {}
    for i, r in ipairs(p.refs) do
      local img <close> = R.load_image(run, r.file, {fit = FITS[p.ref_fit], pad_color = canvas})
      lat[i] = run:own(R.encode_image(run, img)) -- [C, 1, h, w]
    end
    if p.method == "phantom" then
      run.trail = #lat
      for i, z in ipairs(lat) do run:hold(F + i, z) end
      run.guide = function(_, pass)
        local pair = {run:forward(pass, {run.ctx_c, run.ctx_u})}  -- one batched forward
        local v_it <close> = pair[1]
        local v_i <close> = pair[2]
        local none <close> = pass.x:clone()
        none:slice(2, F + 1, F + #lat):fill_(0)
        local v_n <close> = run:forward(pass, run.ctx_u, none)
        local a <close> = mr.guidance(v_i, v_n, p.cfg_img)   -- v_none + cfg_img (v_refs - v_none)
        local d <close> = v_it - v_i
        local b <close> = d * pass.cfg
        return a + b
      end
    else
      -- VACE context [2C + 64, R + T, h, w]: each reference [its latent; 0] with a
      -- zero mask, then the video part: no source video, so inactive = reactive =
      -- the latent of zeros (not zero after normalisation), and a mask of ones.
      local s = run.shape
      run.lead = #lat
      local zero_video <close> = mr.zeros({3, p.frames, p.height, p.width})
      local zv <close> = R.check(pack.vae:encode(zero_video))
      local parts = {}
      for i, z in ipairs(lat) do
        local pad <close> = mr.zeros(z:shape())
        parts[i] = mr.concat({z, pad}, 1)
      end
      parts[#parts + 1] = mr.concat({zv, zv}, 1)
      local z0 <close> = mr.concat(parts, 2)
      for _, t in ipairs(parts) do t:close() end
      local mask <close> = mr.zeros({64, #lat + s[2], s[3], s[4]})
      mask:slice(2, #lat + 1, #lat + s[2]):fill_(1)
      run.extra.vace_context = mr.concat({z0, mask}, 1)
      run.guide = function(_, pass)
        local f = (pass.index - 1) / p.steps
        pass.extra = {vace_scale = (f >= p.vace_start and f < p.vace_end) and p.vace_scale or 0}
        return R.cfg_guide(run, pass)
      end
    end
  end,
}
return R.script(mode, ...)
