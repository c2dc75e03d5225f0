-- Test packs assembled from the conformance models (tests/conformance/data):
-- the real tiny DiTs, VAEs, umT5 encoder and SentencePiece model, in the
-- folder layouts mr.pack.load reads. The conformance sets were made one by
-- one, so three interface tensors are adapted to join them, keeping their
-- trained-layout values:
--   * the DiT's patch embedding keeps the input channels of the VAE's z_dim
--     (the tiny VAEs have 4, the tiny DiTs take 16) and its head the matching
--     output channels ((p, q, r, c) order, c fastest, as Wan unpatchifies);
--   * umT5's token embedding is extended to the tokenizer's vocabulary by
--     repeating its rows (the tiny encoder has 300 rows, the tokenizer 800).
--
--   local fixture = dofile("tests/e2e/fixture.lua")
--   local packs = fixture.build(DATA_DIR, OUT_DIR)   -- {t2v=, ti2v=, sharded=, files={...}}
local mr = require "moonreel"
local cjson = require "cjson"

local F = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  assert(ok, "command failed: " .. cmd)
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function copy_file(from, to)
  sh("mkdir -p " .. q(to:match("^(.*)/[^/]*$")) .. " && cp " .. q(from) .. " " .. q(to))
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return cjson.decode(s)
end

-- The DiT's tensors with in/out channels cut to z. An i2v DiT's input is
-- [latent (c), mask (4), condition latent (c)]: each part keeps its first z
-- (mask: all 4) channels; its CLIP projection (LayerNorm, Linear(in, in), GELU,
-- Linear(in, dim), LayerNorm) keeps the first clip_dim of its CLIP-wide axes.
local function adapt_dit(t, z, clip_dim)
  local pe = t["patch_embedding.weight"]
  local cin = pe:shape(2)
  if clip_dim then
    local c = (cin - 4) // 2
    t["patch_embedding.weight"] = mr.concat({pe:slice(2, 1, z), pe:slice(2, c + 1, c + 4),
                                             pe:slice(2, c + 5, c + 4 + z)}, 2)
    t["img_emb.proj.0.weight"] = t["img_emb.proj.0.weight"]:slice(1, 1, clip_dim):contiguous()
    t["img_emb.proj.0.bias"] = t["img_emb.proj.0.bias"]:slice(1, 1, clip_dim):contiguous()
    t["img_emb.proj.1.weight"] = t["img_emb.proj.1.weight"]:slice(1, 1, clip_dim):slice(2, 1, clip_dim):contiguous()
    t["img_emb.proj.1.bias"] = t["img_emb.proj.1.bias"]:slice(1, 1, clip_dim):contiguous()
    t["img_emb.proj.3.weight"] = t["img_emb.proj.3.weight"]:slice(2, 1, clip_dim):contiguous()
  else
    t["patch_embedding.weight"] = pe:slice(2, 1, z):contiguous()
  end
  local hw, hb = t["head.head.weight"], t["head.head.bias"]
  local dim = hw:shape(2)
  local patch = pe:shape(3) * pe:shape(4) * pe:shape(5)
  local cout = hw:shape(1) // patch
  t["head.head.weight"] = hw:reshape(patch, cout, dim):slice(2, 1, z):contiguous():reshape(patch * z, dim)
  t["head.head.bias"] = hb:reshape(patch, cout):slice(2, 1, z):contiguous():reshape(patch * z)
  return t
end

local function dit_config(json_path, z)
  local c = read_json(json_path).config
  c.in_dim = c.model_type == "i2v" and 2 * z + 4 or z
  c.out_dim = z
  if c.vace_in_dim then c.vace_in_dim = 2 * z + 64 end
  return c
end

-- A VACE DiT's context embedding keeps, of its 96 input channels
-- (inactive 16, reactive 16, mask 64), the first z of each latent and the mask.
local function adapt_vace(t, z)
  local w = t["vace_patch_embedding.weight"]
  t["vace_patch_embedding.weight"] = mr.concat({w:slice(2, 1, z), w:slice(2, 17, 16 + z), w:slice(2, 33, 96)}, 2)
  return t
end

local function t5_tensors(data, vocab)
  local t = assert(mr.load(data .. "/wan/t5_encoder_tiny.safetensors"))
  local e = t["token_embedding.weight"]
  local parts, rows = {}, 0
  while rows < vocab do
    local take = math.min(e:shape(1), vocab - rows)
    parts[#parts + 1] = e:slice(1, 1, take)
    rows = rows + take
  end
  t["token_embedding.weight"] = mr.concat(parts, 1)
  return t
end

local function with_prefix(t, prefix)
  local o = {}
  for k, v in pairs(t) do o[prefix .. k] = v end
  return o
end

-- Splits tensors into n shards by sorted name; writes the index json.
local function save_shards(dir, t, n)
  local names = {}
  for k in pairs(t) do names[#names + 1] = k end
  table.sort(names)
  local map = {}
  for s = 1, n do
    local file = string.format("diffusion_pytorch_model-%05d-of-%05d.safetensors", s, n)
    local part = {}
    for i = s, #names, n do
      part[names[i]] = t[names[i]]
      map[names[i]] = file
    end
    assert(mr.save(dir .. "/" .. file, part))
  end
  write(dir .. "/diffusion_pytorch_model.safetensors.index.json",
    cjson.encode({metadata = {total_size = 0}, weight_map = map}))
end

-- defaults small enough for lavapipe in a test
F.DEFAULTS = {steps = 3, shift = 3.0, guide = 4.0, frames = 5, fps = 8, width = 32, height = 32, negative = ""}

function F.build(data, out)
  sh("mkdir -p " .. q(out))
  local tok_path = data .. "/tokenizer/unigram.model"
  local vocab = mr.tokenizer(tok_path):vocab_size()
  local t5 = t5_tensors(data, vocab)
  local packs = {}

  local function common(dir, vae_src, vae_name)
    sh("mkdir -p " .. q(dir .. "/google/umt5-xxl"))
    copy_file(tok_path, dir .. "/google/umt5-xxl/spiece.model")
    copy_file(vae_src, dir .. "/" .. vae_name)
    assert(mr.save(dir .. "/models_t5_umt5-xxl-enc-bf16.safetensors", t5))
  end

  -- t2v: Wan 2.1 DiT + 2.1 VAE (.pth), official names + our manifest (defaults)
  local z21 = 4
  local dir = out .. "/t2v"
  common(dir, data .. "/wan/wan21_vae_tiny.pth", "Wan2.1_VAE.pth")
  local dit = adapt_dit(assert(mr.load(data .. "/wan/wan21_dit_t2v_tiny.safetensors")), z21)
  assert(mr.save(dir .. "/diffusion_pytorch_model.safetensors", dit))
  local cfg = dit_config(data .. "/wan/wan21_dit_t2v_tiny.json", z21)
  write(dir .. "/config.json", cjson.encode(cfg))
  write(dir .. "/moonreel_pack.json", cjson.encode({name = "tiny-t2v", defaults = F.DEFAULTS}))
  packs.t2v = dir

  -- sharded: the same model in the official layout only, DiT in 2 shards
  dir = out .. "/sharded"
  common(dir, data .. "/wan/wan21_vae_tiny.pth", "Wan2.1_VAE.pth")
  save_shards(dir, dit, 2)
  write(dir .. "/config.json", cjson.encode(cfg))
  packs.sharded = dir

  -- two experts (the Wan 2.2 A14B layout): the low-noise model is the t2v pack's DiT,
  -- the high-noise one the same with its output head scaled, so a test can tell it ran
  dir = out .. "/experts"
  common(dir, data .. "/wan/wan21_vae_tiny.pth", "Wan2.1_VAE.pth")
  local high = {}
  for k, v in pairs(dit) do high[k] = v end
  high["head.head.weight"] = dit["head.head.weight"] * 0.25
  for sub, weights in pairs{high_noise_model = high, low_noise_model = dit} do
    sh("mkdir -p " .. q(dir .. "/" .. sub))
    assert(mr.save(dir .. "/" .. sub .. "/diffusion_pytorch_model.safetensors", weights))
    write(dir .. "/" .. sub .. "/config.json", cjson.encode(cfg))
  end
  write(dir .. "/moonreel_pack.json", cjson.encode({name = "tiny-experts", defaults = F.DEFAULTS}))
  packs.experts = dir

  -- files: a single ComfyUI-style DiT file (prefixed names) and separate parts
  dir = out .. "/comfy"
  sh("mkdir -p " .. q(dir))
  assert(mr.save(dir .. "/wan_tiny_t2v.safetensors", with_prefix(dit, "model.diffusion_model.")))
  copy_file(data .. "/wan/wan21_vae_tiny.pth", dir .. "/wan_2.1_vae.pth")
  assert(mr.save(dir .. "/umt5_tiny.safetensors", t5))
  copy_file(tok_path, dir .. "/spiece.model")
  packs.files = {dit = dir .. "/wan_tiny_t2v.safetensors", vae = dir .. "/wan_2.1_vae.pth",
                 t5 = dir .. "/umt5_tiny.safetensors", tokenizer = dir .. "/spiece.model",
                 config = dir .. "/config.json"}
  write(dir .. "/config.json", cjson.encode(cfg))

  -- ti2v: Wan 2.2 TI2V DiT + 2.2 VAE (spatial stride 16)
  dir = out .. "/ti2v"
  common(dir, data .. "/wan/wan22_vae_tiny.safetensors", "Wan2.2_VAE.safetensors")
  local z22 = 4
  local dit22 = adapt_dit(assert(mr.load(data .. "/wan/wan22_dit_ti2v_tiny.safetensors")), z22)
  assert(mr.save(dir .. "/diffusion_pytorch_model.safetensors", dit22))
  write(dir .. "/config.json", cjson.encode(dit_config(data .. "/wan/wan22_dit_ti2v_tiny.json", z22)))
  write(dir .. "/moonreel_pack.json", cjson.encode({name = "tiny-ti2v", defaults = F.DEFAULTS}))
  packs.ti2v = dir

  -- i2v: Wan 2.1 I2V DiT + 2.1 VAE + the CLIP vision tower (its sizes in a json)
  dir = out .. "/i2v"
  common(dir, data .. "/wan/wan21_vae_tiny.pth", "Wan2.1_VAE.pth")
  local clip_cfg = read_json(data .. "/wan/wan21_clip_vision_tiny.json").config
  local dit_i2v = adapt_dit(assert(mr.load(data .. "/wan/wan21_dit_i2v_tiny.safetensors")), z21, clip_cfg.vision_dim)
  assert(mr.save(dir .. "/diffusion_pytorch_model.safetensors", dit_i2v))
  write(dir .. "/config.json", cjson.encode(dit_config(data .. "/wan/wan21_dit_i2v_tiny.json", z21)))
  copy_file(data .. "/wan/wan21_clip_vision_tiny.safetensors", dir .. "/clip.safetensors")
  copy_file(data .. "/wan/wan21_clip_vision_tiny.json", dir .. "/clip.json")
  write(dir .. "/moonreel_pack.json", cjson.encode({name = "tiny-i2v", defaults = F.DEFAULTS,
    files = {clip = "clip.safetensors", clip_config = "clip.json"}}))
  packs.i2v = dir

  -- vace: Wan 2.1 VACE DiT + 2.1 VAE (reference-to-video by VACE)
  dir = out .. "/vace"
  common(dir, data .. "/wan/wan21_vae_tiny.pth", "Wan2.1_VAE.pth")
  local dit_vace = adapt_vace(adapt_dit(assert(mr.load(data .. "/wan/wan21_dit_vace_tiny.safetensors")), z21), z21)
  assert(mr.save(dir .. "/diffusion_pytorch_model.safetensors", dit_vace))
  write(dir .. "/config.json", cjson.encode(dit_config(data .. "/wan/wan21_dit_vace_tiny.json", z21)))
  write(dir .. "/moonreel_pack.json", cjson.encode({name = "tiny-vace", defaults = F.DEFAULTS}))
  packs.vace = dir

  -- phantom: the ti2v pack's model taking references Phantom-style (per-token t)
  dir = out .. "/phantom"
  sh("cp -r " .. q(packs.ti2v) .. " " .. q(dir))
  write(dir .. "/moonreel_pack.json", cjson.encode({name = "tiny-phantom", defaults = F.DEFAULTS,
    references = {method = "phantom", max = 4, guide_img = 2.0, names = {"the first object", "the second object"}}}))
  packs.phantom = dir
  return packs
end

-- As a script: moonreel tests/e2e/fixture.lua DATA OUT
if arg and arg[0] and arg[0]:match("fixture%.lua$") and arg[1] and arg[2] then
  for k, v in pairs(F.build(arg[1], arg[2])) do print(k, type(v) == "table" and v.dit or v) end
end
return F
