-- mr.image and mr.video: round trips, fitting options, the streaming writer
-- (close, abort, <close>, __gc), expected failures as nil, msg, code, misuse
-- raising, and a full disk (RLIMIT_FSIZE in a child process).
local mr = require "moonreel"

local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helpers.lua")
local exists, entries = H.exists, H.ls

-- A [3, F, H, W] (or [3, H, W] when f is nil) tensor of whole bytes b / 127.5 - 1.
local function frames(f, h, w, fn)
  local vals = {}
  for c = 1, 3 do
    for k = 1, f or 1 do
      for y = 1, h do
        for x = 1, w do
          vals[#vals + 1] = string.pack("<f", fn(c, k, y, x) / 127.5 - 1)
        end
      end
    end
  end
  local shape = f and { 3, f, h, w } or { 3, h, w }
  return mr.tensor_from_string(table.concat(vals), shape)
end

local function ramp(c, k, y, x) return (x * 20 + y * 7 * c + k * 30) % 256 end
local function smooth(c, k, y, x)
  return math.floor(127.5 + 100 * math.sin(0.15 * x + 0.1 * y * c + 0.3 * k + c))
end

-- Writing truncates (x + 1) / 2 * 255 as Wan does, so a byte read back may
-- come out one lower: one step is 1 / 127.5.
local STEP = 1 / 127.5 + 1e-6

local function flat(t) return t:contiguous():reshape(-1):totable() end

local function max_diff(a, b)
  local x, y = flat(a), flat(b)
  assert(#x == #y, ("sizes %d and %d"):format(#x, #y))
  local m = 0
  for i = 1, #x do m = math.max(m, math.abs(x[i] - y[i])) end
  return m
end

local function mean_diff(a, b)
  local x, y = flat(a), flat(b)
  local s = 0
  for i = 1, #x do s = s + math.abs(x[i] - y[i]) end
  return s / #x
end

describe("mr.image", function()
  local dir = H.tmpdir()
  teardown(function() H.rm(dir) end)
  local img = frames(nil, 9, 13, ramp)

  it("round trips PNG and lossless WebP exactly, JPEG closely", function()
    for _, name in ipairs { "a.png", "a.webp", "a.jpg" } do
      local opts = name == "a.webp" and { lossless = true } or nil
      assert.is_true(mr.image.save(dir .. "/" .. name, img, opts))
      local t, info = mr.image.load(dir .. "/" .. name)
      assert.is_not_nil(t, info)
      assert.are.same({ 3, 9, 13 }, t:shape())
      assert.are.equal(13, info.width)
      assert.are.equal(9, info.height)
      assert.are.equal(1, info.orientation)
      assert.is_false(info.animated)
      assert.are.equal(({ png = "png", webp = "webp", jpg = "jpeg" })[name:match("%.(%a+)$")], info.format)
      if name == "a.jpg" then
        local s = frames(nil, 9, 13, smooth)
        assert.is_true(mr.image.save(dir .. "/s.jpg", s, { quality = 95 }))
        local e = mean_diff(assert(mr.image.load(dir .. "/s.jpg")), s)
        assert.is_true(e < 0.03, e)
      else
        assert.is_true(max_diff(t, img) < STEP)
      end
    end
  end)

  it("fits to a size: crop, pad with a colour, stretch, multiple", function()
    local p = dir .. "/a.png"
    local t = assert(mr.image.load(p, { width = 8, height = 8 }))
    assert.are.same({ 3, 8, 8 }, t:shape())
    t = assert(mr.image.load(p, { width = 26, height = 26, fit = "pad", pad_color = "#ff8000" }))
    assert.are.same({ 3, 26, 26 }, t:shape())
    local corner = flat(t:slice(2, 1, 1):slice(3, 1, 1))
    assert.is_true(math.abs(corner[1] - 1) < 1e-6 and math.abs(corner[2] - (128 / 127.5 - 1)) < 1e-6
      and math.abs(corner[3] + 1) < 1e-6)
    local t2 = assert(mr.image.load(p, { width = 26, height = 26, fit = "pad", pad_color = { 255, 128, 0 } }))
    assert.are.equal(0, max_diff(t, t2))
    t = assert(mr.image.load(p, { width = 5, height = 20, fit = "stretch", filter = "area" }))
    assert.are.same({ 3, 20, 5 }, t:shape())
    t = assert(mr.image.load(p, { multiple = 4 }))
    assert.are.same({ 3, 8, 12 }, t:shape())
    t = assert(mr.image.load(p, { width = 26, dtype = "f16" }))
    assert.are.same({ 3, 18, 26 }, t:shape())
    assert.are.equal("f16", t:dtype())
  end)

  it("returns nil, message, code for files it cannot read", function()
    local t, msg, code = mr.image.load(dir .. "/missing.png")
    assert.is_nil(t)
    assert.truthy(msg:find("missing.png", 1, true), msg)
    assert.are.equal("MR_ENOTFOUND", code)
    local f = assert(io.open(dir .. "/garbage.png", "wb"))
    f:write("not an image at all\n")
    f:close()
    t, msg, code = mr.image.load(dir .. "/garbage.png")
    assert.is_nil(t)
    assert.truthy(msg:find("not an image", 1, true), msg)
    assert.are.equal("MR_EFORMAT", code)
    local ok
    ok, msg, code = mr.image.save(dir .. "/x.bmp", img)
    assert.is_nil(ok)
    assert.are.equal("MR_EUNSUPPORTED", code)
    ok, msg, code = mr.image.save(dir .. "/no/such/dir/x.png", img)
    assert.is_nil(ok)
    assert.truthy(msg:find("x.png", 1, true), msg)
    assert.are.equal("MR_ENOTFOUND", code)
  end)

  it("raises on misuse", function()
    local p = dir .. "/a.png"
    assert.has_error(function() mr.image.load() end)
    assert.has_error(function() mr.image.load(p, { fit = "zoom" }) end)
    assert.has_error(function() mr.image.load(p, { widht = 3 }) end)
    assert.has_error(function() mr.image.load(p, { width = -1 }) end)
    assert.has_error(function() mr.image.load(p, { pad_color = "red" }) end)
    assert.has_error(function() mr.image.load(p, { dtype = "i64" }) end)
    assert.has_error(function() mr.image.save(p, "not a tensor") end)
    assert.has_error(function() mr.image.save(dir .. "/b.png", mr.zeros { 4, 5, 6 }) end)
    assert.has_error(function() mr.image.save(p, img, { quality = 101 }) end)
    assert.is_false(exists(dir .. "/b.png"))
  end)
end)

describe("mr.video", function()
  local dir = H.tmpdir()
  teardown(function() H.rm(dir) end)
  local video = frames(5, 16, 24, smooth)

  it("streams chunks to an MP4 that appears at close", function()
    local p = dir .. "/a.mp4"
    local w = assert(mr.video.writer(p, { fps = 16, crf = 10, preset = "ultrafast" }))
    assert.are.equal(p, w:path())
    assert.is_true(w:write(video:slice(2, 1, 1)))
    assert.is_true(w:write(video:slice(2, 2, 5)))
    assert.are.equal(5, w:frames())
    assert.is_false(exists(p))
    assert.is_true(w:close())
    assert.is_true(exists(p))
    assert.is_false(w:is_open())
    assert.are.equal(5, w:frames())
    assert.has_error(function() w:write(video) end)
    assert.are.same({ "a.mp4" }, entries(dir))
    local info = assert(mr.video.probe(p))
    assert.are.equal(5, info.frames)
    assert.are.equal(24, info.width)
    assert.are.equal(16, info.height)
    assert.are.equal(16, info.fps)
    assert.are.equal("h264", info.codec)
    local back, info2 = mr.video.load(p)
    assert.is_not_nil(back, info2)
    assert.are.same({ 3, 5, 16, 24 }, back:shape())
    assert.are.equal(5, info2.frames)
    local e = mean_diff(back, video)
    assert.is_true(e < 0.03, e)
    local part = assert(mr.video.load(p, { start = 2, max_frames = 2 }))
    assert.are.same({ 3, 2, 16, 24 }, part:shape())
    assert.are.equal(0, max_diff(part, back:slice(2, 2, 3)))
    local small = assert(mr.video.load(p, { width = 12, height = 8 }))
    assert.are.same({ 3, 5, 8, 12 }, small:shape())
  end)

  it("writes animated WebP and PNG sequences, and fractional rates", function()
    assert.is_true(mr.video.save(dir .. "/a.webp", video, { lossless = true, loop = 2, fps = 8 }))
    local info = assert(mr.video.probe(dir .. "/a.webp"))
    assert.are.equal(5, info.frames)
    assert.are.equal(2, info.loop)
    assert.are.equal(8, info.fps)
    local back = assert(mr.video.load(dir .. "/a.webp"))
    assert.is_true(max_diff(back, video) < STEP)
    assert.is_true(mr.video.save(dir .. "/ntsc.mp4", video, { fps = "30000/1001" }))
    info = assert(mr.video.probe(dir .. "/ntsc.mp4"))
    assert.are.equal(30000, info.fps_num)
    assert.are.equal(1001, info.fps_den)
    assert.is_true(mr.video.save(dir .. "/f_%02d.png", video))
    local first = assert(mr.image.load(dir .. "/f_01.png"))
    assert.is_true(max_diff(first, video:slice(2, 1, 1):contiguous():reshape(3, 16, 24)) < STEP)
    assert.is_true(exists(dir .. "/f_05.png"))
    assert.is_false(exists(dir .. "/f_06.png"))
  end)

  it("aborts: :abort(), <close> and the collector leave nothing", function()
    local sub = dir .. "/abort"
    assert(os.execute("mkdir -p '" .. sub .. "'"))
    local w = assert(mr.video.writer(sub .. "/x.mp4"))
    assert.is_true(w:write(video))
    assert.are.equal(1, #entries(sub)) -- the temporary file
    w:abort()
    assert.are.same({}, entries(sub))
    assert.has_error(function() w:write(video) end)
    do
      local w2 <close> = assert(mr.video.writer(sub .. "/y.webp"))
      assert.is_true(w2:write(video))
    end
    assert.are.same({}, entries(sub))
    local function leak()
      local w3 = assert(mr.video.writer(sub .. "/z_%03d.png"))
      assert.is_true(w3:write(video))
    end
    leak()
    collectgarbage()
    collectgarbage()
    assert.are.same({}, entries(sub))
    -- closing with nothing written fails and leaves nothing
    local w4 = assert(mr.video.writer(sub .. "/e.mp4"))
    local ok, msg, code = w4:close()
    assert.is_nil(ok)
    assert.truthy(msg:find("no frames", 1, true), msg)
    assert.are.equal("MR_EINVAL", code)
    assert.are.same({}, entries(sub))
  end)

  it("returns nil, message, code for what depends on the file", function()
    local w, msg, code = mr.video.writer(dir .. "/x.avi")
    assert.is_nil(w)
    assert.truthy(msg:find("x.avi", 1, true), msg)
    assert.are.equal("MR_EUNSUPPORTED", code)
    w, msg, code = mr.video.writer(dir .. "/no/such/x.mp4")
    assert.is_nil(w)
    assert.are.equal("MR_ENOTFOUND", code)
    local t
    t, msg, code = mr.video.load(dir .. "/missing.mp4")
    assert.is_nil(t)
    assert.are.equal("MR_ENOTFOUND", code)
    local f = assert(io.open(dir .. "/garbage.mp4", "wb"))
    f:write(("not a video "):rep(40))
    f:close()
    t, msg, code = mr.video.probe(dir .. "/garbage.mp4")
    assert.is_nil(t)
    assert.truthy(msg:find("garbage.mp4", 1, true), msg)
    assert.are.equal("MR_EFORMAT", code)
  end)

  it("raises on misuse", function()
    assert.has_error(function() mr.video.writer(dir .. "/a.mp4", { fps = -1 }) end)
    assert.has_error(function() mr.video.writer(dir .. "/a.mp4", { fps = "fast" }) end)
    assert.has_error(function() mr.video.writer(dir .. "/a.mp4", { crf = 99 }) end)
    assert.has_error(function() mr.video.writer(dir .. "/a.mp4", { odd = "round" }) end)
    assert.has_error(function() mr.video.writer(dir .. "/a.mp4", { fsp = 16 }) end)
    assert.has_error(function() mr.video.load(dir .. "/a.mp4", { start = 0 }) end)
    local w <close> = assert(mr.video.writer(dir .. "/odd.mp4"))
    assert.has_error(function() w:write(mr.zeros { 3, 2, 5, 7 }) end) -- odd size for yuv420p
    assert.has_error(function() w:write(mr.zeros { 2, 5, 8 }) end)
    assert.has_error(function() w:write("frames") end)
    assert.has_error(function() mr.video.save(dir .. "/odd2.mp4", mr.zeros { 3, 5, 7 }) end)
    assert.is_false(exists(dir .. "/odd2.mp4"))
    assert.is_true(mr.video.save(dir .. "/odd2.mp4", mr.zeros { 3, 5, 7 }, { odd = "pad" }))
    assert.are.equal(6, mr.video.probe(dir .. "/odd2.mp4").height)
  end)

  it("reports a full disk naming the file and leaves nothing behind", function()
    local sub = dir .. "/full"
    assert(os.execute("mkdir -p '" .. sub .. "'"))
    local script = dir .. "/full.lua"
    local f = assert(io.open(script, "w"))
    f:write(("package.cpath = %q\n"):format(package.cpath), [[
local mr = require "moonreel"
local dir = ...
local noise = mr.randn({3, 128, 128}, 7)
print(mr.image.save(dir .. "/big.png", noise))
local w = assert(mr.video.writer(dir .. "/big_%02d.png"))
print(w:write(mr.randn({3, 2, 128, 128}, 8)))
w:abort()
]])
    f:close()
    -- 64 blocks: 32 KiB under dash's 512-byte blocks, 64 KiB under bash's
    -- 1 KiB ones; a PNG of this noise is about 49 KiB or more either way.
    local p = assert(io.popen(("sh -c \"trap '' XFSZ; ulimit -f 64; exec lua5.4 '%s' '%s'\" 2>&1")
      :format(script, sub)))
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("nil\tcannot write '" .. sub .. "/big.png': File too large\tMR_EIO", 1, true), out)
    assert.truthy(out:find("big_%02d.png", 1, true) and out:find("MR_EIO", 1, true), out)
    assert.are.same({}, entries(sub))
  end)
end)
