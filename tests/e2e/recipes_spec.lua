-- The generation recipes end to end: recipes/t2v.lua and recipes/ti2v.lua run
-- as a user runs them (the moonreel CLI in a subprocess) on packs assembled
-- from the conformance models (fixture.lua). Files are checked with ffprobe
-- (MP4) and by reading the RIFF chunks (animated WebP, which FFmpeg's demuxer
-- does not decode); every error case must exit non-zero with one line and
-- leave nothing behind.
local mr = require "moonreel"
local cjson = require "cjson"

local BIN = assert(os.getenv("MOONREEL_BIN"), "MOONREEL_BIN (the moonreel CLI) must be set")
local DATA = os.getenv("MOONREEL_DATA") or "conformance/data"
local SRC = os.getenv("MOONREEL_SOURCE") or ".."

local H = dofile(SRC .. "/tests/lua/helpers.lua")
local q, read, ls = H.q, H.read, H.ls

-- Runs the CLI with a recipe and flags; returns exit code, stdout, stderr.
local function run(recipe, flags, prefix) return H.run_recipe(BIN, SRC, recipe, flags, prefix) end

local function ffprobe(path)
  local p = io.popen("ffprobe -v error -count_frames -select_streams v:0 -show_entries " ..
    "stream=codec_name,width,height,pix_fmt,r_frame_rate,nb_read_frames -of json " .. q(path))
  local s = p:read("a")
  p:close()
  return cjson.decode(s).streams[1]
end

-- Animated WebP facts from its chunks: canvas size, frame count, loop count,
-- frame durations (ms).
local function webp_info(path)
  local s = assert(read(path))
  assert(s:sub(1, 4) == "RIFF" and s:sub(9, 12) == "WEBP", "not a WebP file")
  local info = {frames = 0, durations = {}}
  local pos = 13
  while pos + 8 <= #s do
    local tag, size = s:sub(pos, pos + 3), string.unpack("<I4", s, pos + 4)
    local body = pos + 8
    if tag == "VP8X" then
      info.width = string.unpack("<I3", s, body + 4) + 1
      info.height = string.unpack("<I3", s, body + 7) + 1
    elseif tag == "ANIM" then
      info.loop = string.unpack("<I2", s, body + 4)
    elseif tag == "ANMF" then
      info.frames = info.frames + 1
      info.durations[#info.durations + 1] = string.unpack("<I3", s, body + 12)
    end
    pos = body + size + (size % 2)
  end
  return info
end

describe("recipes end to end", function()
  local tmp, packs

  setup(function()
    tmp = H.tmpdir()
    local fixture = dofile(SRC .. "/tests/e2e/fixture.lua")
    packs = fixture.build(DATA, tmp .. "/packs")
    assert(os.execute("mkdir -p " .. q(tmp .. "/out")))
  end)

  teardown(function()
    if tmp then H.rm(tmp) end
  end)

  local function out(name) return tmp .. "/out/" .. name end

  it("t2v writes an MP4 with the asked frames, size and fps, and a sidecar", function()
    local code, o, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "42",
      "--frames", "9", "--width", "48", "--height", "32", "--fps", "12", "--out", out("a.mp4")})
    assert.are.equal(0, code, e)
    assert.truthy(o:find("wrote " .. out("a.mp4"), 1, true))
    local st = ffprobe(out("a.mp4"))
    assert.are.equal("h264", st.codec_name)
    assert.are.equal("yuv420p", st.pix_fmt)
    assert.are.equal(48, st.width)
    assert.are.equal(32, st.height)
    assert.are.equal("12/1", st.r_frame_rate)
    assert.are.equal("9", st.nb_read_frames)
    local side = cjson.decode((assert(read(out("a.mp4") .. ".json"))))
    assert.are.equal("42", side.params.seed)
    assert.are.equal("a red ball", side.params.prompt)
    assert.are.equal(9, side.params.frames)
    assert.are.equal("t2v-64d", side.model.variant)
    assert.is_string(side.command)
  end)

  it("t2v writes an animated WebP with the pack's defaults", function()
    local code, _, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1",
      "--out", out("b.webp")})
    assert.are.equal(0, code, e)
    local w = webp_info(out("b.webp"))
    assert.are.equal(32, w.width)
    assert.are.equal(32, w.height)
    assert.are.equal(5, w.frames)         -- fixture default frames
    assert.are.equal(0, w.loop)           -- forever
    assert.are.equal(125, w.durations[1]) -- 8 fps
  end)

  it("the same seed gives the same frames, another seed others, and the sidecar's command repeats the run", function()
    local function frames(name, seed)
      local dir = out(name)
      assert(os.execute("mkdir -p " .. q(dir)))
      local code, _, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", seed,
        "--out", dir .. "/f_%03d.png"})
      assert.are.equal(0, code, e)
      local names = {}
      for _, n in ipairs(ls(dir)) do
        if n:match("%.png$") then names[#names + 1] = n end
      end
      local data = {}
      for _, n in ipairs(names) do data[#data + 1] = read(dir .. "/" .. n) end
      return names, data
    end
    local n1, d1 = frames("s1", "18446744073709551615")
    local n2, d2 = frames("s2", "18446744073709551615")
    local _, d3 = frames("s3", "7")
    assert.are.same({"f_001.png", "f_002.png", "f_003.png", "f_004.png", "f_005.png"}, n1)
    assert.are.same(n1, n2)
    for i = 1, #d1 do assert.is_true(d1[i] == d2[i], "frame " .. i .. " differs") end
    local differs = false
    for i = 1, #d1 do differs = differs or d1[i] ~= d3[i] end
    assert.is_true(differs)
    -- the sidecar records the 64-bit seed exactly
    local side = cjson.decode((assert(read(out("s1") .. "/f.json"))))
    assert.are.equal("18446744073709551615", side.params.seed)
  end)

  it("loads the official layout with a sharded DiT, and single files", function()
    -- no manifest: Wan's defaults, and its negative prompt is longer than the tiny model's text
    local code, _, e = run("t2v", {"--model", packs.sharded, "--prompt", "a red ball", "--negative", "", "--seed", "3",
      "--frames", "5", "--width", "32", "--height", "32", "--steps", "2", "--out", out("c.mp4")})
    assert.are.equal(0, code, e)
    assert.are.equal("5", ffprobe(out("c.mp4")).nb_read_frames)
    local p = mr.pack.load(packs.files)
    assert.are.equal("files", p.layout)
    assert.are.equal("t2v", p.model_type)
    local r = mr.recipe.t2v{pack = p, prompt = "a red ball", negative = "", seed = 3, frames = 5, width = 32, height = 32,
                            steps = 2, out = out("c2.mp4"), quiet = true}
    -- out = false: no file, the frames come back (the same as the written ones' source)
    local r2 = mr.recipe.t2v{pack = p, prompt = "a red ball", negative = "", seed = 3, frames = 5, width = 32,
                             height = 32, steps = 2, out = false, quiet = true}
    p:close()
    assert.are.same({3, 5, 32, 32}, r2.frames:shape())
    assert.is_nil(r2.out)
    assert.are.equal(out("c2.mp4"), r.out)
    assert.are.equal("5", ffprobe(out("c2.mp4")).nb_read_frames)
  end)

  it("two experts (A14B layout): the high-noise one runs above the boundary", function()
    local p = mr.pack.load(packs.experts)
    assert.truthy(p.dit_high)
    assert.are.equal("moonreel", p.layout)
    local function frames(pack)
      return mr.recipe.t2v{pack = pack, prompt = "a red ball", seed = 6, steps = 3, out = false, quiet = true}.frames
    end
    local lo = mr.pack.load(packs.t2v)
    local a, b = frames(p), frames(lo)
    lo:close()
    p:close()
    -- the first step (t = 999 >= 875) ran the scaled expert: the results differ
    assert.is_true(mr.mean(mr.square(mr.sub(a, b)):reshape(-1), 1):item() > 1e-6)
    local code, _, e = run("t2v", {"--model", packs.experts, "--prompt", "a red ball", "--seed", "6",
      "--out", out("experts.mp4")})
    assert.are.equal(0, code, e)
    local side = cjson.decode((assert(read(out("experts.mp4") .. ".json"))))
    assert.is_number(side.params.cfg_high)
    assert.truthy(side.model.files.dit_high:find("high_noise_model", 1, true))
  end)

  it("--lora changes the video and is recorded; a reused pack comes back without it, bit for bit", function()
    local lora = DATA .. "/lora/wan21_dit_t2v_tiny.lora_kohya.safetensors"
    local code, o, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "3",
      "--lora", lora .. ":0.5", "--out", out("lora.mp4")})
    assert.are.equal(0, code, e)
    assert.truthy(e:find("LoRA " .. lora .. ": 20 weights (kohya naming, merge, strength 0.5)", 1, true), e)
    local side = cjson.decode((assert(read(out("lora.mp4") .. ".json"))))
    assert.are.equal(1, #side.params.loras)
    assert.are.equal(lora, side.params.loras[1].file)
    assert.are.equal(0.5, side.params.loras[1].strength)
    assert.are.equal(mr.sha256(lora), side.params.loras[1].sha256)
    assert.truthy(side.command:find("--lora " .. lora .. ":0.5", 1, true))
    -- in one process, on one pack: base, with the adapter, base again
    local pack <close> = mr.pack.load(packs.t2v)
    local function gen(loras)
      return mr.recipe.t2v{pack = pack, prompt = "a red ball", seed = 3, out = false, quiet = true, lora = loras}.frames
    end
    local base = gen(nil)
    local with = gen({lora .. ":0.5"})
    local again = gen(nil)
    assert.is_true(mr.max(mr.max(mr.max(mr.max((with - base):square(), -1), -1), -1), -1):item() > 1e-6)
    assert.are.same(base:totable(), again:totable())
    -- a step hook sets the strength per step: 0 throughout is the base exactly
    local seen = 0
    local off = mr.recipe.t2v{pack = pack, prompt = "a red ball", seed = 3, out = false, quiet = true,
      lora = {{file = lora, strength = 0.5, mode = "on_the_fly"}},
      on_step = function(step)
        seen = seen + 1
        step.loras[1]:set_strength(0)
      end}.frames
    assert.are.equal(3, seen)
    assert.are.same(base:totable(), off:totable())
  end)

  it("a LoRA in each naming changes the default model's video; without it the base comes back", function()
    local pack <close> = mr.pack.load(SRC .. "/models/default")
    local dit = pack.dit
    -- rank-2 adapters on every self-attention q of the default model, written in the three namings
    local function write_adapter(naming, path)
      local t = {}
      for _, w in ipairs(dit:weights()) do
        local module = w.name:match("^(blocks%.%d+%.self_attn%.q)%.weight$")
        if module then
          local a = mr.randn({2, w.shape[2]}, 5) * 0.1
          local b = mr.randn({w.shape[1], 2}, 6) * 0.1
          if naming == "original" then
            t["diffusion_model." .. module .. ".lora_A.weight"], t["diffusion_model." .. module .. ".lora_B.weight"] = a, b
            t["diffusion_model." .. module .. ".alpha"] = mr.tensor({2})
          elseif naming == "kohya" then
            local k = "lora_unet_" .. module:gsub("%.", "_")
            t[k .. ".lora_down.weight"], t[k .. ".lora_up.weight"] = a, b
          else
            local k = "transformer." .. module:gsub("self_attn%.q", "attn1.to_q")
            t[k .. ".lora_A.weight"], t[k .. ".lora_B.weight"] = a, b
          end
        end
      end
      assert(mr.save(path, t))
    end
    local function gen(loras)
      return mr.recipe.t2v{pack = pack, prompt = "a red square moving left on a black background", seed = 9,
        steps = 3, frames = 5, out = false, quiet = true, lora = loras}.frames
    end
    local base = gen(nil)
    for _, naming in ipairs({"original", "kohya", "diffusers"}) do
      local path = out("default_" .. naming .. ".safetensors")
      write_adapter(naming, path)
      local with = gen({path .. ":1"})
      assert.is_true(mr.max(mr.max(mr.max(mr.max((with - base):square(), -1), -1), -1), -1):item() > 1e-6, naming)
      assert.are.same(base:totable(), gen(nil):totable())
    end
  end)

  it("--seed -1 draws a fresh seed and records it", function()
    local code, _, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "-1",
      "--out", out("rnd.mp4")})
    assert.are.equal(0, code, e)
    local side = cjson.decode((assert(read(out("rnd.mp4") .. ".json"))))
    assert.truthy(side.params.seed:match("^%d+$"))
    assert.truthy(e:find("seed " .. side.params.seed, 1, true))
  end)

  it("every sampler runs", function()
    for _, s in ipairs{"unipc", "dpmpp", "euler"} do
      local code, _, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--sampler", s, "--seed", "5",
        "--out", out("smp_" .. s .. ".mp4")})
      assert.are.equal(0, code, e)
    end
  end)

  it("ti2v starts from the image: its first frame is the image", function()
    -- an image: left half red, right half blue, 64x48 (fitted to 32x32 by crop)
    local img = mr.zeros({3, 48, 64})
    img:slice(1, 1, 1):slice(3, 1, 32):fill_(1)
    img:slice(1, 3, 3):slice(3, 33, 64):fill_(1)
    assert(mr.image.save(out("in.png"), img - 0.5))
    local code, _, e = run("ti2v", {"--model", packs.ti2v, "--prompt", "a red ball", "--image", out("in.png"),
      "--seed", "9", "--width", "32", "--height", "32", "--out", out("d_%02d.png")})
    assert.are.equal(0, code, e)
    local side = cjson.decode((assert(read(out("d.json")))))
    assert.are.equal(out("in.png"), side.params.image)
    assert.are.equal("crop", side.params.fit)
    local first = assert(mr.image.load(out("d_01.png")))
    assert.are.same({3, 32, 32}, first:shape())
    -- the image's latent is put back after every step, and the VAE decoder
    -- is causal, so frame 1 is the VAE's round trip of the fitted image:
    -- written through the same 8-bit path, the two PNGs must agree
    local p = mr.pack.load(packs.ti2v)
    local fitted = assert(mr.image.load(out("in.png"), {width = 32, height = 32, fit = "crop"}))
    local rec = p.vae:decode(p.vae:encode(fitted:reshape(3, 1, 32, 32)))
    p:close()
    assert(mr.image.save(tmp .. "/rec.png", rec:slice(2, 1, 1):contiguous():reshape(3, 32, 32)))
    local want = assert(mr.image.load(tmp .. "/rec.png"))
    local mse = mr.mean(mr.square(mr.sub(first, want)):reshape(-1), 1):item()
    assert.is_true(mse < 1e-4, "first frame differs from the image's VAE round trip: mse " .. mse)
    -- and it is not just any frame: the last one differs
    local last = assert(mr.image.load(out("d_05.png")))
    assert.is_true(mr.mean(mr.square(mr.sub(last, want)):reshape(-1), 1):item() > mse)
  end)

  it("ti2v on a Wan 2.1 I2V pack: CLIP features and the masked condition", function()
    local img = mr.zeros({3, 40, 56})
    img:slice(1, 2, 2):fill_(0.8)
    assert(mr.image.save(out("in2.png"), img))
    local code, _, e = run("ti2v", {"--model", packs.i2v, "--prompt", "a red ball", "--image", out("in2.png"),
      "--seed", "2", "--frames", "9", "--out", out("i2v.mp4")})
    assert.are.equal(0, code, e)
    local st = ffprobe(out("i2v.mp4"))
    assert.are.equal("9", st.nb_read_frames)
    -- no size given: the pack's area at the image's aspect (40:56), in multiples of 16
    assert.are.equal(32, st.width)
    assert.are.equal(16, st.height)
  end)

  it("ti2v --fit pad puts the image on bars of the chosen colour", function()
    -- a wide white image into a square frame: bars above and below
    assert(mr.image.save(out("wide.png"), mr.ones({3, 16, 64})))
    local code, _, e = run("ti2v", {"--model", packs.ti2v, "--prompt", "a red ball", "--image", out("wide.png"),
      "--fit", "pad", "--pad-color", "#00ff00", "--width", "32", "--height", "32", "--seed", "4",
      "--out", out("pad_%02d.png")})
    assert.are.equal(0, code, e)
    local side = cjson.decode((assert(read(out("pad.json")))))
    assert.are.equal("#00ff00", side.params.pad_color)
    assert.truthy(side.command:find("--pad-color '#00ff00'", 1, true), side.command)
  end)

  describe("errors: one line, non-zero exit, nothing written", function()
    local function expect_error(recipe, flags, pattern, prefix)
      local before = ls(tmp .. "/out")
      local code, o, e = run(recipe, flags, prefix)
      assert.are_not.equal(0, code)
      -- progress and what is being loaded may come first; the failure is
      -- one line, the last, starting with the recipe's name
      local lines, last = {}, nil
      for l in e:gmatch("[^\n]+") do
        if l:match("^" .. recipe .. ": ") then lines[#lines + 1] = l end
        last = l
      end
      assert.are.equal(1, #lines, "expected one error line, got:\n" .. e)
      assert.are.equal(lines[1], last)
      assert.truthy(lines[1]:find(pattern), "'" .. lines[1] .. "' does not match " .. pattern)
      assert.are.same(before, ls(tmp .. "/out"))
      return o
    end

    it("a missing model", function()
      expect_error("t2v", {"--model", tmp .. "/nowhere", "--prompt", "x", "--out", out("e.mp4")},
        "nowhere.*does not exist")
    end)

    it("a model part missing", function()
      assert(os.execute("cp -r " .. q(packs.t2v) .. " " .. q(tmp .. "/broken") .. " && rm " ..
        q(tmp .. "/broken/Wan2.1_VAE.pth")))
      expect_error("t2v", {"--model", tmp .. "/broken", "--prompt", "x", "--out", out("e.mp4")}, "no vae file")
    end)

    it("a pack manifest or config that is out of bounds names its field", function()
      local function pack_with(manifest, config)
        local dir = tmp .. "/badpack"
        os.execute("rm -rf " .. q(dir) .. " && cp -r " .. q(packs.t2v) .. " " .. q(dir))
        if manifest then
          local f = assert(io.open(dir .. "/moonreel_pack.json", "wb"))
          f:write(manifest)
          f:close()
        end
        if config then
          local c = cjson.decode((assert(read(dir .. "/config.json"))))
          for k, v in pairs(config) do c[k] = v end
          local f = assert(io.open(dir .. "/config.json", "wb"))
          f:write(cjson.encode(c))
          f:close()
        end
        return dir
      end
      local function fails(dir, pattern)
        expect_error("t2v", {"--model", dir, "--prompt", "x", "--out", out("e.mp4")}, pattern)
      end
      fails(pack_with('{"files": 5}'), "moonreel_pack%.json: files must be an object")
      fails(pack_with('{"defaults": {"steps": 1e300}}'), "defaults%.steps must be an integer 1 %.%. 10000")
      fails(pack_with('{"defaults": {"colour": "red"}}'), "defaults%.colour is not a setting")
      fails(pack_with('{"files": {"dit": "../../etc/passwd"}}'), "files%.dit '%.%./%.%./etc/passwd' names a file outside")
      fails(pack_with('[1, 2]'), "the manifest must be a JSON object")
      fails(pack_with(nil, {text_len = 2147483647}), "config%.json: text_len 2147483647 is out of range")
    end)

    it("a prompt too long", function()
      expect_error("t2v", {"--model", packs.t2v, "--prompt", string.rep("a red ball and ", 10), "--out",
        out("e.mp4")}, "prompt too long")
      expect_error("t2v", {"--model", packs.sharded, "--prompt", "a red ball", "--out", out("e.mp4")},
        "negative prompt too long")
    end)

    it("an image that cannot be read", function()
      local f = assert(io.open(tmp .. "/garbage.png", "wb"))
      f:write("this is not a png")
      f:close()
      expect_error("ti2v", {"--model", packs.ti2v, "--prompt", "x", "--image", tmp .. "/garbage.png", "--out",
        out("e.mp4")}, "garbage%.png")
      expect_error("ti2v", {"--model", packs.ti2v, "--prompt", "x", "--image", tmp .. "/none.png", "--out",
        out("e.mp4")}, "none%.png")
    end)

    it("a size the model cannot take", function()
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--width", "40", "--out", out("e.mp4")},
        "multiples of 16")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--frames", "6", "--out", out("e.mp4")},
        "4k%+1")
    end)

    it("a full disk", function()
      -- a file-size limit makes writes fail as a full disk does (SIGXFSZ ignored, EFBIG)
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1", "--out",
        out("big.mp4")}, "big%.mp4", "trap '' XFSZ; ulimit -f 2; ")
      -- without a sidecar the video itself is what cannot be written
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1", "--no-sidecar", "--out",
        out("big.mp4")}, "big%.mp4': File too large", "trap '' XFSZ; ulimit -f 1; ")
      -- an animated WebP (assembled at close) and a PNG sequence (a temporary folder): nothing left
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1", "--no-sidecar", "--out",
        out("big.webp")}, "big%.webp'", "trap '' XFSZ; ulimit -f 1; ")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1", "--no-sidecar", "--out",
        out("big_%02d.png")}, "big_%%02d%.png'", "trap '' XFSZ; ulimit -f 1; ")
    end)

    it("a full disk at the sidecar leaves the whole video and no sidecar, not even an earlier run's", function()
      -- one 16x16 frame (a WebP of about 250 bytes, a PNG of about 850) fits in
      -- 1024 bytes; the sidecar, which records the long folder twice, does not
      local dir = tmp .. "/full-sidecar-" .. string.rep("x", 200)
      assert(mr.mkdir(dir))
      for _, c in ipairs({{"s.webp", "s.webp.json"}, {"s_%02d.png", "s.json", "s_01.png"}}) do
        -- an earlier run's sidecar of that name would describe the new video: it goes
        local stale = assert(io.open(dir .. "/" .. c[2], "wb"))
        stale:write('{"params": {"seed": "999"}}\n')
        stale:close()
        local code, _, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1", "--frames", "1",
          "--width", "16", "--height", "16", "--quiet", "--out", dir .. "/" .. c[1]}, "trap '' XFSZ; ulimit -f 2; ")
        assert.are_not.equal(0, code)
        local last = e:match("([^\n]*)\n?$")
        assert.truthy(last:find("^t2v: cannot write '.*/" .. c[2]:gsub("%.", "%%.") .. "': File too large$"), e)
        local video = c[3] or c[1]
        assert.are.same({video}, ls(dir))
        -- whole: a WebP's RIFF size is its file's, and the picture decodes
        local bytes = assert(read(dir .. "/" .. video))
        if video:match("%.webp$") then assert.are.equal(#bytes, string.unpack("<I4", bytes, 5) + 8) end
        local img, info = mr.image.load(dir .. "/" .. video)
        assert.truthy(img, info)
        assert.are.same({16, 16}, {info.width, info.height})
        img:close()
        os.remove(dir .. "/" .. video)
      end
    end)

    it("a run killed while sampling leaves nothing; the next run clears a killed run's temporary", function()
      local dir = tmp .. "/killed"
      assert(os.execute("mkdir -p " .. q(dir)))
      -- many steps, so the kill lands while sampling
      local cmd = string.format("%s %s --model %s --prompt 'a red ball' --steps 5000 --out %s >/dev/null 2>&1 & echo $!",
        q(BIN), q(SRC .. "/recipes/t2v.lua"), q(packs.t2v), q(dir .. "/k.mp4"))
      local pid = assert(io.popen(cmd)):read("l")
      os.execute("sleep 2")
      os.execute("kill -9 " .. pid .. " 2>/dev/null; sleep 0.2")
      assert.are.same({}, ls(dir))
      -- a dead run's temporary is removed by the next write of that name; a live process's is not
      local dead = dir .. "/.k.mp4.tmp-999999"
      local live = dir .. "/.k.mp4.tmp-1"
      for _, f in ipairs({dead, live}) do assert(io.open(f, "wb")):close() end
      local code, _, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1", "--out",
        dir .. "/k.mp4"})
      assert.are.equal(0, code, e)
      assert.are.same({".k.mp4.tmp-1", "k.mp4", "k.mp4.json"}, ls(dir))
    end)

    it("a video that cannot be written leaves the earlier run's video and sidecar as they were", function()
      local code, _, e = run("t2v", {"--model", packs.t2v, "--prompt", "a red ball", "--seed", "1", "--out",
        out("keep.mp4")})
      assert.are.equal(0, code, e)
      local video, side = read(out("keep.mp4")), read(out("keep.mp4") .. ".json")
      code = run("t2v", {"--model", packs.t2v, "--prompt", "a blue ball", "--seed", "2", "--out", out("keep.mp4")},
        "trap '' XFSZ; ulimit -f 1; ")
      assert.are_not.equal(0, code)
      assert.are.equal(video, read(out("keep.mp4")))
      assert.are.equal(side, read(out("keep.mp4") .. ".json"))
    end)

    it("bad flags", function()
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--steps", "many"}, "not an integer")
      expect_error("t2v", {"--model", packs.t2v}, "prompt is required")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--sampler", "ddim"}, "%-%-sampler ddim: must be unipc")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--seed", "-x"}, "%-%-seed %-x: an integer")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--seed", "18446744073709551616"}, "%-%-seed")
      -- values refused before anything loads (a missing model would be the error otherwise)
      local none = tmp .. "/no-model-here"
      for _, c in ipairs({{"--weights", "f8", "%-%-weights f8: must be f32, f16, bf16"},
                          {"--fit", "weird", "%-%-fit weird: must be crop, pad, stretch", "ti2v"},
                          {"--pad-color", "red", "%-%-pad%-color red: must be #rrggbb", "ti2v"},
                          {"--fit", "pad", "unknown flag %-%-fit"},
                          {"--crf", "99", "%-%-crf 99: must be an integer 0 .. 51"},
                          {"--quality", "200", "%-%-quality 200: must be a number 0 .. 100"},
                          {"--frames", "100001", "%-%-frames 100001: must be an integer 1 .. 4097"},
                          {"--ref-fit", "x", "%-%-ref%-fit x: must be pad, crop or keep", "r2v"},
                          {"--vace-start", "2", "%-%-vace%-start 2: must be a number 0 .. 1", "r2v"},
                          {"--steps", "0", "%-%-steps 0"}, {"--sampler", "ddim", "%-%-sampler ddim"}}) do
        local recipe = c[4] or "t2v"
        local extra = recipe == "ti2v" and {"--image", "photo.png"} or
          recipe == "r2v" and {"--ref", DATA .. "/tokenizer/unigram.model"} or {}
        local flags = {"--model", none, "--prompt", "x", c[1], c[2], table.unpack(extra)}
        expect_error(recipe, flags, c[3])
        local code = run(recipe, flags)
        assert.are.equal(2, code) -- a bad command line, as docs/cli.md says
      end
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "a red \xff ball"}, "prompt is not valid UTF%-8 %(byte 7%)")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--negative", "\xc3"}, "negative is not valid UTF%-8 %(byte 1%)")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--guidance_scale", "5"}, "unknown flag %-%-guidance_scale")
      expect_error("ti2v", {"--model", packs.t2v, "--prompt", "x", "--pad_color", "#ff0000"}, "flags use dashes %(%-%-pad%-color%)")
      -- from Lua, an option a mode does not take raises rather than being ignored
      local ok, err = pcall(mr.recipe.t2v, {model = none, prompt = "x", num_inference_steps = 2})
      assert.is_false(ok)
      assert.truthy(tostring(err):find("t2v: unknown option 'num_inference_steps'", 1, true), err)
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--lora", tmp .. "/none.safetensors"},
        "%-%-lora: cannot read '.*none%.safetensors'")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--lora", DATA .. "/wan/t5_encoder_tiny.safetensors"},
        "matches no parameter of the Wan DiT")
      expect_error("t2v", {"--model", packs.t2v, "--prompt", "x", "--lora-high",
        DATA .. "/lora/wan21_dit_t2v_tiny.lora_kohya.safetensors"}, "no high%-noise expert")
    end)
  end)
end)
