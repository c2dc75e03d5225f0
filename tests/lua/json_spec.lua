-- The JSON the module's Lua parts use (bindings/l_json.c): they `require
-- "cjson"` and get the module's own, so an installed module needs no
-- lua-cjson. Held here to lua-cjson's behaviour and interface (the system's,
-- which the tests have) wherever the Lua parts can tell the difference.
require "moonreel"
local pack = require "moonreel.pack" -- loading it hands it the JSON table
local cjson = require "cjson"         -- lua-cjson, the reference

local json = debug.getregistry()["moonreel.json"]

describe("the Lua parts' JSON", function()
  it("is the module's own, not lua-cjson", function()
    assert.is_table(json)
    assert.are_not.equal(cjson, json)
    assert.are_not.equal(cjson.encode, json.encode)
    assert.is_table(pack.VARIANTS) -- the part that required it loaded
  end)

  it("decodes as lua-cjson does", function()
    local texts = {
      '{"a": 1, "b": [1, 2.5, -3e2, true, false], "c": {"d": "x\\ny\\u00e9\\"/"}, "e": []}',
      '[1, 2, 3]', '"just a string"', '12', '{"steps": 8, "guide": 5.0, "shift": 1e0}',
      '{"name": "tiny", "defaults": {"frames": 17}, "files": {"dit": ["a", "b"]}}',
    }
    for _, t in ipairs(texts) do
      assert.are.same(cjson.decode(t), json.decode(t))
    end
    -- numbers come as floats, as from lua-cjson (pack.lua relies on it)
    assert.are.equal("float", math.type(json.decode('{"n": 8}').n))
    assert.are.equal(math.type(cjson.decode('{"n": 8}').n), math.type(json.decode('{"n": 8}').n))
  end)

  it("decodes null as a null light userdata, as cjson.null", function()
    local v = json.decode('{"a": null, "b": [null, 1]}')
    assert.are.equal(json.null, v.a)
    assert.are.equal("userdata", type(v.a))
    assert.are.equal(json.null, v.b[1])
    assert.are.equal(cjson.null, v.a) -- both are the NULL light userdata
  end)

  it("refuses text that is not JSON, as an error", function()
    for _, t in ipairs{"", "{", "{\"a\": }", "[1, 2", "nul", "{} x", "'a'"} do
      assert.has_error(function() json.decode(t) end)
      assert.has_error(function() cjson.decode(t) end)
    end
  end)

  it("encodes what the sidecars hold, read back equal by lua-cjson", function()
    local v = {
      moonreel = "0.1.0", recipe = "t2v", device = "llvmpipe (LLVM 15.0.6, 256 bits)",
      params = {prompt = "a \"red\" circle\nmoving\tright é", steps = 8, cfg = 5.0, shift = 1.25, seed = "18446744073709551615",
                frames = 17, fps = 16, loras = {{file = "a.safetensors", strength = 0.8}}},
      seconds = {total = 1.2345678901234567, text = 0.1},
      model = {files = {dit = {"x-00001-of-00002.safetensors", "x-00002-of-00002.safetensors"}, vae = "v.pth"}},
      list = {1, 2, 3}, empty = {}, yes = true, no = false,
    }
    local text = json.encode(v)
    -- lua-cjson reads back every value, floats exactly (its own encoder
    -- keeps 14 digits; this one the fewest that read back the same)
    assert.are.same(v, cjson.decode(text))
    assert.are.same(v, json.decode(text))
  end)

  it("writes arrays, empty tables, integers and keys as lua-cjson does", function()
    assert.are.equal("[1,2,3]", json.encode({1, 2, 3}))
    assert.are.equal("{}", json.encode({}))
    assert.are.equal(cjson.encode({}), json.encode({}))
    assert.are.equal("8", json.encode(8))
    assert.are.equal("5", json.encode(5.0))
    assert.are.equal("0.1", json.encode(0.1))
    assert.are.equal('{"1":"a","3":"b"}', json.encode({[1] = "a", [3] = "b"}))
    assert.are.equal('"a\\\\b\\"c\\u0001"', json.encode("a\\b\"c\1"))
    assert.are.equal("null", json.encode(json.null))
  end)

  it("escapes every byte of a string as lua-cjson does", function()
    for b = 0, 255 do
      local s = "a" .. string.char(b) .. "z"
      assert.are.equal(cjson.encode(s), json.encode(s), "byte " .. b)
    end
    local path = "/models/default/x.json"
    assert.are.equal(cjson.encode(path), json.encode(path))
  end)

  it("has lua-cjson's new, decode_max_depth and decode_invalid_numbers (moonreel.template uses them)", function()
    local j = json.new()
    assert.are_not.equal(json, j)
    assert.are.equal(json.null, j.null)
    assert.are.equal(1000, j.decode_max_depth())
    assert.are.equal(3, j.decode_max_depth(3))
    assert.are.same({{{1}}}, j.decode("[[[1]]]"))
    local ok, msg = pcall(j.decode, "[[[[1]]]]")
    assert.is_false(ok)
    assert.truthy(tostring(msg):find("nest", 1, true), msg)
    assert.are.same({{{{1}}}}, json.decode("[[[[1]]]]")) -- the module's own instance keeps its depth
    assert.are.same({{{{1}}}}, json.new().decode("[[[[1]]]]"))
    assert.is_false(j.decode_invalid_numbers(false))
    for _, t in ipairs{"[NaN]", "[Infinity]", "[-Infinity]", "[0x10]"} do
      assert.has_error(function() j.decode(t) end)
      assert.has_error(function() json.decode(t) end) -- never accepted
    end
    assert.are.equal('[1,"\\/"]', j.encode({1, "/"}))
  end)

  it("sorts object keys, so a sidecar's text is the same every run", function()
    assert.are.equal('{"a":1,"b":2,"c":{"x":true,"y":false}}', json.encode({c = {y = false, x = true}, b = 2, a = 1}))
  end)

  it("refuses what JSON cannot hold", function()
    assert.has_error(function() json.encode(0 / 0) end)
    assert.has_error(function() json.encode(math.huge) end)
    assert.has_error(function() json.encode({f = print}) end)
    assert.has_error(function() json.encode({[true] = 1}) end)
    local cycle = {}
    cycle.self = cycle
    assert.has_error(function() json.encode(cycle) end)
  end)
end)
