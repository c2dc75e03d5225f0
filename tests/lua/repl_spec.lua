-- mr.repl: how the REPL shows values, completes names, finds help and plays a clip.
local mr = require "moonreel"

describe("repl", function()
  local R = mr.repl

  it("prints nested tables cut at a depth and a count", function()
    assert.are.equal('{1, 2, {a = 3, b = {... 1 item}}}', R.pretty({1, 2, {a = 3, b = {c = {d = 1}}}}))
    assert.are.equal('{["two words"] = true, x = "s"}', R.pretty({x = "s", ["two words"] = true}))
    local big = {}
    for i = 1, 40 do big[i] = i end
    assert.truthy(R.pretty(big):find("... (24 more)", 1, true))
    local cyc = {}
    cyc.self = cyc
    assert.are.equal("{self = <cycle>}", R.pretty(cyc))
    assert.are.equal("{}", R.pretty({}))
    assert.are.equal("0.333333", R.pretty(1 / 3))
    assert.are.equal('"a\\nb"', R.pretty("a\nb"))
  end)

  it("prints a tensor with dtype, shape, device bytes and its first values", function()
    local t = mr.tensor{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}
    local s = R.pretty(t)
    assert.truthy(s:match("^Tensor f32 %[3, 3%] [%d.]+ %a+ {1, 2, 3, 4, 5, 6, %.%.%.}$"), s)
    assert.truthy(R.pretty(t:slice(2, 2, 3)):find("{2, 3, 5, 6, 8, 9}", 1, true)) -- a strided view
    t:close()
    assert.are.equal("Tensor (closed)", R.pretty(t))
  end)

  it("names the module's functions", function()
    assert.are.equal("function mr.zeros", R.pretty(mr.zeros))
    assert.are.equal("function mr.recipe.run", R.pretty(mr.recipe.run))
  end)

  it("completes globals, fields, embedded modules, modes and methods", function()
    assert.are.same({"mr.recipe", "mr.recipes_path"}, R.complete("mr.reci", {mr = mr}))
    assert.are.same({"mr.repl"}, R.complete("mr.rep", {mr = mr}))
    assert.are.same({"mr.zeros"}, R.complete("x = mr.zer", {mr = mr}))
    local env = {pack = {encode_text = function() end, name = "p"}, print = print}
    assert.are.same({"pack:encode_text"}, R.complete("pack:e", env))
    assert.are.same({"pack.encode_text"}, R.complete("pack.enc", env))
    assert.are.same({"print"}, R.complete("pri", env))
    local t = mr.zeros({2})
    assert.are.same({"t:reshape"}, R.complete("t:resh", {t = t}))
    assert.are.same({}, R.complete("nothing.here", env))
    local modes = R.complete("mr.recipe.r2", {mr = mr})
    assert.are.same({"mr.recipe.r2v"}, modes)
  end)

  it("finds help in docs/lua-api.md", function()
    local s = assert(R.help(mr.zeros))
    assert.truthy(s:find("mr.zeros(shape", 1, true), s)
    assert.truthy(assert(R.help("t:reshape")):find("contiguous", 1, true))
    assert.truthy(assert(R.help(mr.recipe.step_cache)):find("reuses the last velocity", 1, true))
    local none, err = R.help(function() end)
    assert.is_nil(none)
    assert.truthy(err:find("no documentation"))
  end)

  it("shows a clip as truecolor half blocks, redrawn in place", function()
    local v = mr.zeros({3, 2, 4, 4})
    v:slice(1, 1, 1):slice(2, 2, 2):fill_(1) -- frame 2 red
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    R.show(v, {width = 4, fps = 1000, out = f, mode = "blocks"})
    f:close()
    local s = io.open(path, "rb"):read("a")
    os.remove(path)
    local _, blocks = s:gsub("\u{2580}", "")
    assert.are.equal(2 * 4 * 2, blocks)                  -- 2 frames of 2 rows x 4 columns
    assert.truthy(s:find("\27[2A", 1, true))             -- the second frame goes back up 2 rows
    -- converted as the writers convert: (x + 1) / 2 * 255, truncated
    assert.truthy(s:find("\27[38;2;127;127;127m", 1, true)) -- frame 1 gray (0 in [-1, 1])
    assert.truthy(s:find("\27[38;2;255;127;127m", 1, true)) -- frame 2 red
    assert.are.equal(mr.repl.show, mr.show)
  end)

  -- what a terminal would get, read back
  local function shown(v, opts)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    opts.out, opts.fps = f, 1000
    R.show(v, opts)
    f:close()
    local s = io.open(path, "rb"):read("a")
    os.remove(path)
    return s
  end

  local function unbase64(s)
    local A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    local out = {}
    for i = 1, #s, 4 do
      local n, pad = 0, 0
      for k = 0, 3 do
        local ch = s:sub(i + k, i + k)
        if ch == "=" then pad = pad + 1 n = n * 64 else n = n * 64 + (A:find(ch, 1, true) - 1) end
      end
      local bytes = string.char(n >> 16 & 255, n >> 8 & 255, n & 255)
      out[#out + 1] = bytes:sub(1, 3 - pad)
    end
    return table.concat(out)
  end

  local function random_clip(F, H, W, seed)
    return mr.tanh(mr.randn({3, F, H, W}, seed))
  end

  it("shows a clip as kitty graphics: each frame's RGB as sent, in chunks, drawn over the last", function()
    local v = random_clip(2, 41, 37, 3) -- 41 x 37 x 3 bytes: more than one 4096-byte chunk of base64
    local s = shown(v, {mode = "kitty", width = 20})
    local rgb = mr.video.rgb8(v)
    local frames, cur = {}, nil
    for ctl, payload in s:gmatch("\27_G([^;]*);([^\27]*)\27\\") do
      if ctl:find("a=T", 1, true) then
        assert.truthy(ctl:find("f=24,s=37,v=41,c=20,r=11,i=1,C=1", 1, true), ctl)
        cur = {}
        frames[#frames + 1] = cur
      end
      cur[#cur + 1] = payload
      assert.are.equal(ctl:find("m=1", 1, true) ~= nil, #payload == 4096)
    end
    assert.are.equal(2, #frames)
    assert.is_true(#frames[1] > 1)
    local frame = 41 * 37 * 3
    for f = 1, 2 do assert.are.equal(rgb:sub((f - 1) * frame + 1, f * frame), unbase64(table.concat(frames[f]))) end
    assert.truthy(s:find("\0278\27_G", 1, true)) -- frame 2 from the saved cursor
  end)

  it("shows a clip as sixel: every pixel in its colour of the 6x6x6 cube, scaled", function()
    local v = random_clip(1, 5, 7, 9) -- odd sizes; width 2 characters -> each pixel 2 x 2
    local s = shown(v, {mode = "sixel", width = 2})
    local rgb = mr.video.rgb8(v)
    local body = assert(s:match("\27Pq(.-)\27\\"))
    local W, H = body:match('^"1;1;(%d+);(%d+)')
    assert.are.same({"14", "10"}, {W, H})
    -- decode: #n selects a colour (#n;2;r;g;b defines it), ? .. ~ are six
    -- pixels, !n repeats, $ returns to the band's start, - starts a band
    local px, colour, x, y0, i = {}, nil, 0, 0, #('"1;1;14;10') + 1
    while i <= #body do
      local c = body:sub(i, i)
      if c == "#" then
        local n, def = body:match("^#(%d+)(;2;%d+;%d+;%d+)", i)
        if def then i = i + #n + #def + 1 else n = body:match("^#(%d+)", i) i = i + #n + 1 end
        colour = tonumber(n)
      elseif c == "!" then
        local n = body:match("^!(%d+)", i)
        local ch = body:byte(i + #n + 1) - 63
        for _ = 1, tonumber(n) do
          for k = 0, 5 do if ch & (1 << k) ~= 0 then px[(y0 + k) * 14 + x] = colour end end
          x = x + 1
        end
        i = i + #n + 2
      elseif c == "$" then x, i = 0, i + 1
      elseif c == "-" then x, y0, i = 0, y0 + 6, i + 1
      else
        local ch = body:byte(i) - 63
        for k = 0, 5 do if ch & (1 << k) ~= 0 then px[(y0 + k) * 14 + x] = colour end end
        x, i = x + 1, i + 1
      end
    end
    for yy = 0, 9 do
      for xx = 0, 13 do
        local o = ((yy // 2) * 7 + xx // 2) * 3
        local r, g, b = rgb:byte(o + 1, o + 3)
        assert.are.equal((r * 6 // 256) * 36 + (g * 6 // 256) * 6 + b * 6 // 256, px[yy * 14 + xx], xx .. "," .. yy)
      end
    end
  end)

  it("takes the terminal's word for its graphics", function()
    local gfx = require "moonreel.termgfx"
    assert.are.equal("kitty", gfx.detect{TERM = "xterm-kitty"})
    assert.are.equal("kitty", gfx.detect{TERM = "xterm-256color", TERM_PROGRAM = "WezTerm"})
    assert.are.equal("sixel", gfx.detect{TERM = "foot"})
    assert.are.equal("blocks", gfx.detect{TERM = "xterm-256color"})
    assert.are.equal("blocks", gfx.detect{TERM = "xterm-kitty", MOONREEL_GRAPHICS = "blocks"})
    assert.are.equal("sixel", gfx.detect{MOONREEL_GRAPHICS = "sixel"})
    assert.has_error(function() R.show(mr.zeros({3, 2, 2}), {mode = "ascii"}) end)
  end)
end)
