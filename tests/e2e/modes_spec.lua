-- The recipe modes beyond t2v/ti2v (recipes/r2v.lua, recipes/flf2v.lua) and
-- the stages' hooks, on packs assembled from the conformance models
-- (fixture.lua). Each method is checked against a short re-implementation
-- written here from docs/wan-architecture.md (§6 FLF2V, §7.1 VACE, §7.2
-- Phantom) with the engine's primitives: the recipe must give the same bits.
local mr = require "moonreel"
local cjson = require "cjson"

local BIN = assert(os.getenv("MOONREEL_BIN"), "MOONREEL_BIN (the moonreel CLI) must be set")
local DATA = os.getenv("MOONREEL_DATA") or "conformance/data"
local SRC = os.getenv("MOONREEL_SOURCE") or ".."

local H = dofile(SRC .. "/tests/lua/helpers.lua")
local q, read, ls = H.q, H.read, H.ls

-- Runs the CLI with a recipe and flags; returns exit code, stdout, stderr.
local function run(recipe, flags, prefix) return H.run_recipe(BIN, SRC, recipe, flags, prefix) end

local function max_abs(a, b)
  local d = mr.sub(a, b):reshape(-1)
  return math.sqrt(mr.max(mr.square(d), 1):item())
end

-- Euler steps of the pack's schedule: t_i and sigma_i, as mr.sampler.euler takes them.
local function euler(p, steps, shift)
  local s = mr.sampler.euler{steps = steps, shift = shift}
  return s, s:timesteps()
end

describe("recipe modes", function()
  local tmp, packs, imgs

  setup(function()
    tmp = H.tmpdir()
    packs = dofile(SRC .. "/tests/e2e/fixture.lua").build(DATA, tmp .. "/packs")
    assert(os.execute("mkdir -p " .. q(tmp .. "/out")))
    -- three reference images of different sizes and colours, on white
    imgs = {}
    for i, c in ipairs{{1, -1, -1}, {-1, 1, -1}, {-1, -1, 1}} do
      local h, w = 24 + 8 * i, 40 - 4 * i
      local img = mr.ones({3, h, w})
      for ch = 1, 3 do img:slice(1, ch, ch):slice(2, 5, h - 4):slice(3, 6, w - 6):fill_(c[ch]) end
      imgs[i] = tmp .. "/ref" .. i .. ".png"
      assert(mr.image.save(imgs[i], img))
    end
  end)

  teardown(function()
    if tmp then H.rm(tmp) end
  end)

  local SIZE = {frames = 5, width = 32, height = 32, steps = 3, sampler = "euler", shift = 3.0, cfg = 4.0,
                negative = "", quiet = true, out = false}
  local function opts(extra)
    local o = {}
    for k, v in pairs(SIZE) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  -- each reference fitted on the white canvas and encoded alone: [C, 1, h, w]
  local function ref_latents(pack, files)
    local out = {}
    for i, f in ipairs(files) do
      local img = assert(mr.image.load(f, {width = 32, height = 32, fit = "pad", pad_color = "#ffffff"}))
      out[i] = assert(pack.vae:encode(img:reshape(3, 1, 32, 32)))
    end
    return out
  end

  it("r2v Phantom-style: references appended clean (t = 0), three passes, cut before decoding", function()
    local pack <close> = mr.pack.load(packs.phantom)
    local prompt = "a red ball"
    local got = mr.recipe.r2v(opts{pack = pack, prompt = prompt, ref = {imgs[1], imgs[2]}, seed = 5, cfg_img = 2.5})
    -- by hand
    local refs = ref_latents(pack, {imgs[1], imgs[2]})
    local shape = pack:latent_shape(32, 32, 5)
    local F, R = shape[2], #refs
    local tok = (shape[3] // 2) * (shape[4] // 2)
    local ctx_c, ctx_u = pack:encode_text(prompt), pack:encode_text("")
    local sampler, ts = euler(pack, 3, 3.0)
    local x = mr.randn({shape[1], F + R, shape[3], shape[4]}, "5")
    local function put(z) for i = 1, R do z:slice(2, F + i, F + i):copy_(refs[i]) end end
    put(x)
    for _, t in ipairs(ts) do
      local tt = {}
      for f = 1, F + R do for _ = 1, tok do tt[#tt + 1] = f > F and 0 or t end end
      local v_it = pack.dit:forward{x = x, t = tt, context = ctx_c}
      local v_i = pack.dit:forward{x = x, t = tt, context = ctx_u}
      local none = x:clone()
      none:slice(2, F + 1, F + R):fill_(0)
      local v_n = pack.dit:forward{x = none, t = tt, context = ctx_u}
      local v = v_n + (v_i - v_n) * 2.5 + (v_it - v_i) * 4.0
      x = sampler:step(v, t, x)
      put(x)
    end
    local want = pack.vae:decode(x:slice(2, 1, F):contiguous())
    assert.are.same(want:shape(), got.frames:shape())
    assert.is_true(max_abs(want, got.frames) < 1e-4, "phantom r2v differs from the method: " .. max_abs(want, got.frames))
    -- the references' order matters
    local swapped = mr.recipe.r2v(opts{pack = pack, prompt = prompt, ref = {imgs[2], imgs[1]}, seed = 5, cfg_img = 2.5})
    assert.is_true(max_abs(swapped.frames, got.frames) > 1e-3)
  end)

  it("r2v VACE: references prepended to the context, hints scaled within [start, end)", function()
    local pack <close> = mr.pack.load(packs.vace)
    local prompt = "a red ball"
    local files = {imgs[1], imgs[2], imgs[3]}
    local got = mr.recipe.r2v(opts{pack = pack, prompt = prompt, ref = files, seed = 7, vace_scale = 0.8,
                                   vace_end = 0.5})
    local refs = ref_latents(pack, files)
    local shape = pack:latent_shape(32, 32, 5)
    local C, T, h, w = shape[1], shape[2], shape[3], shape[4]
    local R = #refs
    local zv = pack.vae:encode(mr.zeros({3, 5, 32, 32}))
    local z0 = {}
    for i, z in ipairs(refs) do z0[i] = mr.concat({z, mr.zeros({C, 1, h, w})}, 1) end
    z0[R + 1] = mr.concat({zv, zv}, 1)
    local mask = mr.concat({mr.zeros({64, R, h, w}), mr.ones({64, T, h, w})}, 2)
    local vace = mr.concat({mr.concat(z0, 2), mask}, 1)
    local ctx_c, ctx_u = pack:encode_text(prompt), pack:encode_text("")
    local sampler, ts = euler(pack, 3, 3.0)
    local x = mr.randn({C, R + T, h, w}, "7")
    for i, t in ipairs(ts) do
      local scale = (i - 1) / 3 < 0.5 and 0.8 or 0
      local v_c = pack.dit:forward{x = x, t = t, context = ctx_c, vace_context = vace, vace_scale = scale}
      local v_u = pack.dit:forward{x = x, t = t, context = ctx_u, vace_context = vace, vace_scale = scale}
      x = sampler:step(v_u + (v_c - v_u) * 4.0, t, x)
    end
    local want = pack.vae:decode(x:slice(2, R + 1, R + T):contiguous())
    assert.are.same(want:shape(), got.frames:shape())
    assert.is_true(max_abs(want, got.frames) < 1e-4, "vace r2v differs from the method: " .. max_abs(want, got.frames))
  end)

  it("dit:forward with a list of contexts: one batched forward, each prediction the single forward's bits", function()
    for _, name in ipairs{"phantom", "vace"} do
      local pack <close> = mr.pack.load(packs[name])
      local shape = pack:latent_shape(32, 32, 5)
      local x = mr.randn(shape, "11")
      local ctx_c, ctx_u = pack:encode_text("a red ball"), pack:encode_text("")
      local args = {x = x, t = 700}
      if name == "vace" then
        args.vace_context = mr.randn({pack.dit:config().vace_in_dim, shape[2], shape[3], shape[4]}, "12")
      end
      local function with(ctx)
        local a = {}
        for k, v in pairs(args) do a[k] = v end
        a.context = ctx
        return a
      end
      local v_c, v_u = pack.dit:forward(with{ctx_c, ctx_u})
      assert.are.equal(0, max_abs(v_c, pack.dit:forward(with(ctx_c))), name)
      assert.are.equal(0, max_abs(v_u, pack.dit:forward(with(ctx_u))), name)
      assert.is_true(max_abs(v_c, v_u) > 1e-4, name)
      local ok, err = pcall(pack.dit.forward, pack.dit, with{ctx_c, ctx_u, ctx_c, ctx_u, ctx_c})
      assert.is_false(ok)
      assert.truthy(err:find("lists 5 contexts; 1 to 4 are allowed", 1, true), err)
      ok, err = pcall(pack.dit.forward, pack.dit, with{ctx_c, "text"})
      assert.is_false(ok)
      assert.truthy(err:find("context[2] must be a tensor", 1, true), err)
    end
  end)

  it("r2v VACE takes 1 and 7 references from the command line, each recorded with its hash", function()
    for _, n in ipairs{1, 7} do
      local flags = {"--model", packs.vace, "--prompt", "@1 rolls", "--seed", "3", "--out", tmp .. "/out/v" .. n .. ".mp4"}
      for i = 1, n do
        flags[#flags + 1] = "--ref"
        flags[#flags + 1] = imgs[(i - 1) % 3 + 1] .. (i == 1 and ":the ball" or "")
      end
      local code, _, e = run("r2v", flags)
      assert.are.equal(0, code, e)
      local side = cjson.decode((assert(read(tmp .. "/out/v" .. n .. ".mp4.json"))))
      assert.are.equal(n, #side.params.refs)
      assert.are.equal("the ball rolls", side.params.prompt_expanded)
      assert.are.equal(64, #side.params.refs[1].sha256)
      assert.are.equal("vace", side.params.method)
      assert.truthy(side.command:find("--ref " .. imgs[1] .. ":the ball", 1, true) or
                    side.command:find("--ref '" .. imgs[1] .. ":the ball'", 1, true), side.command)
    end
  end)

  it("flf2v: CLIP of both frames, and the mask and latent of [first, 0, ..., last]", function()
    local pack <close> = mr.pack.load(packs.i2v)
    local got = mr.recipe.flf2v(opts{pack = pack, prompt = "a red ball", image = imgs[1], last_image = imgs[3],
                                     seed = 2, frames = 9})
    local first = assert(mr.image.load(imgs[1], {width = 32, height = 32, fit = "crop"}))
    local last = assert(mr.image.load(imgs[3], {width = 32, height = 32, fit = "crop"}))
    local shape = pack:latent_shape(32, 32, 9)
    local clip = mr.concat({pack.clip:encode(first), pack.clip:encode(last)}, 1)
    local cond = mr.zeros({3, 9, 32, 32})
    cond:slice(2, 1, 1):copy_(first:reshape(3, 1, 32, 32))
    cond:slice(2, 9, 9):copy_(last:reshape(3, 1, 32, 32))
    local mask = mr.zeros({4, shape[2], shape[3], shape[4]})
    mask:slice(2, 1, 1):fill_(1)
    mask:slice(1, 4, 4):slice(2, shape[2], shape[2]):fill_(1)
    local y = mr.concat({mask, pack.vae:encode(cond)}, 1)
    local ctx_c, ctx_u = pack:encode_text("a red ball"), pack:encode_text("")
    local sampler, ts = euler(pack, 3, 3.0)
    local x = mr.randn(shape, "2")
    for _, t in ipairs(ts) do
      local v_c = pack.dit:forward{x = x, t = t, context = ctx_c, y = y, clip_fea = clip}
      local v_u = pack.dit:forward{x = x, t = t, context = ctx_u, y = y, clip_fea = clip}
      x = sampler:step(v_u + (v_c - v_u) * 4.0, t, x)
    end
    local want = pack.vae:decode(x)
    assert.is_true(max_abs(want, got.frames) < 1e-4, "flf2v differs from the method: " .. max_abs(want, got.frames))
    -- the last image conditions the video: another one gives another video
    local other = mr.recipe.flf2v(opts{pack = pack, prompt = "a red ball", image = imgs[1], last_image = imgs[2],
                                       seed = 2, frames = 9})
    assert.is_true(max_abs(other.frames, got.frames) > 1e-3)
  end)

  it("hooks: after_step sees the latent and its x0 prediction, on_step and after_step can stop", function()
    local pack <close> = mr.pack.load(packs.t2v)
    local seen = {}
    local r = mr.recipe.t2v(opts{pack = pack, prompt = "a red ball", seed = 1, after_step = function(step)
      seen[#seen + 1] = {step.index, step.x:shape(), step.x0:shape()}
    end})
    assert.are.equal(3, #seen)
    assert.are.same(pack:latent_shape(32, 32, 5), seen[3][2])
    assert.are.same(seen[3][2], seen[3][3])
    -- the last step lands at sigma 0: its x0 prediction is the final latent
    local x0_last
    mr.recipe.t2v(opts{pack = pack, prompt = "a red ball", seed = 1, after_step = function(step)
      if step.index == 3 then x0_last = pack.vae:decode(step.x0) end
    end})
    assert.is_true(max_abs(x0_last, r.frames) < 1e-4)
    for _, hook in ipairs{"on_step", "after_step"} do
      local ok, err = pcall(mr.recipe.t2v, opts{pack = pack, prompt = "a red ball", seed = 1,
                                                [hook] = function(step) return step.index < 2 end})
      assert.is_false(ok)
      assert.truthy(tostring(err):find("stopped by " .. hook .. " at step 2", 1, true), err)
    end
  end)

  it("hooks: progress reports every stage in order, on_frames hands over the decoded video chunk by chunk", function()
    local pack <close> = mr.pack.load(packs.t2v)
    local stages, chunks, count = {}, {}, nil
    local r = mr.recipe.t2v(opts{pack = pack, prompt = "a red ball", seed = 2,
      progress = function(stage, done, total) stages[#stages + 1] = string.format("%s %d/%d", stage, done, total) end,
      on_frames = function(frames, first, n)
        chunks[#chunks + 1] = {first, frames:clone()}
        count = n
      end})
    -- out = false: no write stage
    assert.are.same({"text 0/2", "text 1/2", "text 2/2", "image 0/1", "image 1/1", "denoise 0/3", "denoise 1/3",
                     "denoise 2/3", "denoise 3/3", "decode 0/2", "decode 1/2", "decode 2/2"}, stages)
    assert.are.equal(5, count)
    assert.are.equal(2, #chunks) -- 5 frames = latent frames of 1 and 4
    assert.are.same({1, 2}, {chunks[1][1], chunks[2][1]})
    assert.are.equal(0, max_abs(chunks[1][2], r.frames:slice(2, 1, 1)))
    assert.are.equal(0, max_abs(chunks[2][2], r.frames:slice(2, 2, 5)))
    for _, hook in ipairs{"progress", "on_frames"} do
      local ok, err = pcall(mr.recipe.t2v, opts{pack = pack, prompt = "a red ball", seed = 2,
                                                [hook] = function(_, done) return done ~= 1 and hook ~= "on_frames" end})
      assert.is_false(ok)
      assert.truthy(tostring(err):find("cancel", 1, true), err)
    end
  end)

  it("the mode written in docs/recipes.md (Writing a mode) runs as a command and from Lua", function()
    local doc = assert(read(SRC .. "/docs/recipes.md"))
    local code = doc:match("## Writing a mode.-```lua test=e2e\n(.-)```")
    assert.truthy(code and code:find("R.mode{", 1, true), "no mode example in docs/recipes.md")
    assert(os.execute("mkdir -p " .. q(tmp .. "/recipes")))
    local f = assert(io.open(tmp .. "/recipes/fade.lua", "wb"))
    f:write(code)
    f:close()
    -- as a command: its --help, and its own check
    local p = io.popen(q(BIN) .. " " .. q(tmp .. "/recipes/fade.lua") .. " --help")
    local help = p:read("a")
    p:close()
    assert.truthy(help:find("The image is the first frame for the first half of the steps", 1, true), help)
    local pack <close> = mr.pack.load(packs.ti2v)
    local faded = mr.recipe.run(tmp .. "/recipes/fade.lua", opts{pack = pack, prompt = "a red ball", image = imgs[1],
                                                                  seed = 4})
    local held = mr.recipe.ti2v(opts{pack = pack, prompt = "a red ball", image = imgs[1], seed = 4})
    assert.are.same(held.frames:shape(), faded.frames:shape())
    assert.is_true(max_abs(held.frames, faded.frames) > 1e-4) -- the image was let go
  end)

  it("the step cache hook reuses the last velocity where the latent changed little", function()
    local pack <close> = mr.pack.load(packs.t2v)
    local base = mr.recipe.t2v(opts{pack = pack, prompt = "a red ball", seed = 8, steps = 6})
    -- threshold 0: every step runs the DiT, bit for bit the run without the hook
    local none = mr.recipe.t2v(opts{pack = pack, prompt = "a red ball", seed = 8, steps = 6,
                                    on_step = mr.recipe.step_cache{threshold = 0}})
    assert.is_nil(none.params.steps_reused)
    assert.are.equal(0, max_abs(base.frames, none.frames))
    -- a large threshold: every step but the first and the last reuses
    local all = mr.recipe.t2v(opts{pack = pack, prompt = "a red ball", seed = 8, steps = 6,
                                   on_step = mr.recipe.step_cache{threshold = 1e9}})
    assert.are.equal(4, all.params.steps_reused)
    assert.is_true(max_abs(base.frames, all.frames) > 1e-4)
    -- a hook chained behind it still runs and can stop the run
    local ok, err = pcall(mr.recipe.t2v, opts{pack = pack, prompt = "a red ball", seed = 8, steps = 6,
      on_step = mr.recipe.step_cache{threshold = 1e9, then_ = function(step) return step.index < 3 end}})
    assert.is_false(ok)
    assert.truthy(tostring(err):find("stopped by on_step at step 3", 1, true), err)
  end)

  describe("errors: one line, exit non-zero, nothing written", function()
    local function expect(recipe, flags, pattern, code_want)
      local before = ls(tmp .. "/out")
      local code, _, e = run(recipe, flags)
      assert.are.equal(code_want or 1, code, e)
      local last = e:match("([^\n]+)\n?$")
      assert.truthy(last and last:find(pattern), "'" .. tostring(last) .. "' does not match " .. pattern)
      assert.are.same(before, ls(tmp .. "/out"))
    end
    local out = function() return tmp .. "/out/x.mp4" end

    it("r2v", function()
      expect("r2v", {"--model", packs.vace, "--prompt", "x", "--out", out()}, "needs at least one reference", 2)
      expect("r2v", {"--model", packs.vace, "--prompt", "x", "--ref", tmp .. "/nope.png", "--out", out()},
        "%-%-ref .*nope%.png: cannot read it", 2)
      expect("r2v", {"--model", packs.vace, "--prompt", "@1 and @3", "--ref", imgs[1], "--ref", imgs[2],
        "--out", out()}, "the prompt names @3, but there are 2 references", 2)
      local many = {"--model", packs.phantom, "--prompt", "x", "--out", out()}
      for i = 1, 5 do many[#many + 1] = "--ref"; many[#many + 1] = imgs[(i - 1) % 3 + 1] end
      expect("r2v", many, "5 references; model tiny%-phantom takes at most 4")
      local all = {"--model", packs.vace, "--prompt", "x", "--out", out()}
      for i = 1, 17 do all[#all + 1] = "--ref"; all[#all + 1] = imgs[1] end
      expect("r2v", all, "17 references; at most 16", 2)
      expect("r2v", {"--model", packs.t2v, "--prompt", "x", "--ref", imgs[1], "--out", out()},
        "takes no reference images")
      expect("r2v", {"--model", packs.vace, "--prompt", "@1 x", "--ref", imgs[1], "--out", out()},
        "the prompt names @1: give it a role")
      -- an image that is not an image: refused when it is read, before sampling
      expect("r2v", {"--model", packs.vace, "--prompt", "x", "--ref", DATA .. "/tokenizer/unigram.model",
        "--out", out()}, "unigram%.model")
    end)

    it("flf2v", function()
      expect("flf2v", {"--model", packs.i2v, "--prompt", "x", "--image", imgs[1], "--out", out()},
        "needs a last frame", 2)
      expect("flf2v", {"--model", packs.ti2v, "--prompt", "x", "--image", imgs[1], "--last-image", imgs[2],
        "--out", out()}, "has no last%-frame conditioning")
    end)
  end)
end)
