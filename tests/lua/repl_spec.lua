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
    R.show(v, {width = 4, fps = 1000, out = f})
    f:close()
    local s = io.open(path, "rb"):read("a")
    os.remove(path)
    local _, blocks = s:gsub("\u{2580}", "")
    assert.are.equal(2 * 4 * 2, blocks)                  -- 2 frames of 2 rows x 4 columns
    assert.truthy(s:find("\27[2A", 1, true))             -- the second frame goes back up 2 rows
    assert.truthy(s:find("\27[38;2;128;128;128m", 1, true)) -- frame 1 gray (0 in [-1, 1])
    assert.truthy(s:find("\27[38;2;255;128;128m", 1, true)) -- frame 2 red
    assert.are.equal(mr.repl.show, mr.show)
  end)
end)
