-- mr.load / mr.save: checkpoint files, expected failures as nil, msg, code.
local mr = require "moonreel"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local wan = here .. "../conformance/data/wan/"

local function tmpname(suffix)
  local p = os.tmpname()
  os.remove(p)
  return p .. suffix
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("mr.load", function()
  it("returns nil, message, code for a missing file", function()
    local t, msg, code = mr.load("/nonexistent/dir/weights.safetensors")
    assert.is_nil(t)
    assert.truthy(msg:find("weights.safetensors", 1, true), msg)
    assert.truthy(code == "MR_ENOTFOUND" or code == "MR_EIO", code)
  end)

  it("returns nil, message, MR_EFORMAT for a garbage file", function()
    local path = tmpname(".safetensors")
    local f = assert(io.open(path, "wb"))
    f:write(("garbage, not a checkpoint\n"):rep(20))
    f:close()
    local t, msg, code = mr.load(path)
    os.remove(path)
    assert.is_nil(t)
    assert.is_string(msg)
    assert.are.equal("MR_EFORMAT", code)
  end)

  it("raises on misuse", function()
    assert.has_error(function() mr.load() end)
    assert.has_error(function() mr.load("x", { dtype = "i64" }) end)
  end)

  it("reads safetensors and the bf16 .pth alike, within bf16 rounding", function()
    local a = assert(mr.load(wan .. "t5_encoder_tiny.safetensors"))
    local b = assert(mr.load(wan .. "t5_encoder_tiny-bf16.pth"))
    assert.is_true(count(a) > 0)
    assert.are.equal(count(a), count(b))
    for name, ta in pairs(a) do
      local tb = assert(b[name], name)
      assert.are.equal("f32", ta:dtype())
      assert.are.equal("bf16", tb:dtype())
      assert.are.same(ta:shape(), tb:shape())
      local x = ta:reshape(-1):totable()
      local y = tb:reshape(-1):totable()
      for i = 1, #x do
        assert(math.abs(x[i] - y[i]) <= math.abs(x[i]) * 2 ^ -8 + 1e-30,
          ("%s[%d]: %g vs %g"):format(name, i, x[i], y[i]))
      end
    end
  end)

  it("converts on request with {dtype=}", function()
    local t = assert(mr.load(wan .. "t5_encoder_tiny-bf16.pth", { dtype = "f32" }))
    local _, any = next(t)
    assert.are.equal("f32", any:dtype())
  end)
end)

describe("mr.save", function()
  it("round trips tensors, dtypes, views and metadata", function()
    local path = tmpname(".safetensors")
    local base = mr.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
    local tensors = {
      a = base,
      half = mr.tensor({ 0.5, -2 }, "f16"),
      brain = mr.tensor({ { 3 } }, "bf16"),
      col = base:slice(2, 2, 2), -- a non-contiguous view
    }
    assert.is_true(mr.save(path, tensors, { format = "pt", note = "quote \" and \\ and é", steps = 30 }))
    local back, meta = mr.load(path)
    os.remove(path)
    assert.is_table(back)
    assert.are.equal(4, count(back))
    for name, t in pairs(tensors) do
      assert.are.equal(t:dtype(), back[name]:dtype())
      assert.are.same(t:totable(), back[name]:totable())
    end
    assert.are.same({ format = "pt", note = "quote \" and \\ and é", steps = "30" }, meta)
  end)

  it("returns nil, message, code when the file cannot be written", function()
    local ok, msg, code = mr.save("/nonexistent/dir/x.safetensors", { a = mr.zeros { 1 } })
    assert.is_nil(ok)
    assert.is_string(msg)
    assert.is_string(code)
  end)

  it("raises on misuse", function()
    assert.has_error(function() mr.save("x.safetensors", { a = 1 }) end,
      "bad argument #2 to 'save' ('a' is a number, expected mr.Tensor)")
    assert.has_error(function() mr.save("x.safetensors", { mr.zeros { 1 } }) end)
    local closed = mr.zeros { 1 }
    closed:close()
    assert.has_error(function() mr.save("x.safetensors", { c = closed }) end)
  end)
end)
