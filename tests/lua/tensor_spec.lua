-- mr.Tensor: construction, host round trips, views and their lifetime, closing.
local mr = require "moonreel"

local function close_all(a, b, tol)
  tol = tol or 0
  if type(a) == "table" then
    assert.are.equal(#a, #b)
    for i = 1, #a do close_all(a[i], b[i], tol) end
  else
    assert(math.abs(a - b) <= tol, ("%s vs %s (tolerance %g)"):format(a, b, tol))
  end
end

describe("construction", function()
  for _, dt in ipairs { "f32", "f16", "bf16" } do
    it("round trips a nested table as " .. dt, function()
      local t = mr.tensor({ { 1, 2, 3 }, { -4, 0.5, 6 } }, dt)
      assert.are.equal(dt, t:dtype())
      assert.are.same({ 2, 3 }, t:shape())
      assert.are.same({ { 1, 2, 3 }, { -4, 0.5, 6 } }, t:totable())
      assert.are.equal(6, t:numel())
      assert.are.equal(2, t:ndim())
    end)
  end

  it("rounds to the storage dtype", function()
    assert.are.same({ 1.0 }, mr.tensor({ 1.001 }, "bf16"):totable())
    close_all({ 1.0009765625 }, mr.tensor({ 1.001 }, "f16"):totable())
    close_all({ 1.001 }, mr.tensor({ 1.001 }):totable(), 1e-7)
  end)

  it("makes a 1-element tensor from a number and reads it with item()", function()
    local t = mr.tensor(2.5)
    assert.are.same({ 1 }, t:shape())
    assert.are.equal(2.5, t:item())
  end)

  it("builds 3 to 5 dims", function()
    local t = mr.tensor { { { { { 1, 2 } } } } }
    assert.are.same({ 1, 1, 1, 1, 2 }, t:shape())
  end)

  it("zeros, ones, full", function()
    assert.are.same({ { 0, 0 }, { 0, 0 } }, mr.zeros({ 2, 2 }):totable())
    assert.are.same({ 1, 1, 1 }, mr.ones(3, "f16"):totable())
    local f = mr.full({ 2, 1 }, 7, "bf16")
    assert.are.equal("bf16", f:dtype())
    assert.are.same({ { 7 }, { 7 } }, f:totable())
  end)

  it("tensor_from_string reads host bytes of any dtype", function()
    local f32 = mr.tensor_from_string(string.pack("<fff", 1.5, -2, 3), { 3 })
    assert.are.same({ 1.5, -2, 3 }, f32:totable())
    local i32 = mr.tensor_from_string(string.pack("<i4i4", 7, -9), { 2 }, "i32")
    assert.are.equal("f32", i32:dtype())
    assert.are.same({ 7, -9 }, i32:totable())
    local u8 = mr.tensor_from_string("\0\1\255\2", { 2, 2 }, "u8", "f16")
    assert.are.equal("f16", u8:dtype())
    assert.are.same({ { 0, 1 }, { 255, 2 } }, u8:totable())
    local f64 = mr.tensor_from_string(string.pack("<dd", 0.25, 8), { 2 }, "f64", "bf16")
    assert.are.same({ 0.25, 8 }, f64:totable())
  end)

  it("data() returns the elements as bytes", function()
    local t = mr.tensor { { 1, 2 }, { 3, 4 } }
    assert.are.equal(string.pack("<ffff", 1, 2, 3, 4), t:data())
    assert.are.equal(string.pack("<dddd", 1, 2, 3, 4), t:data("f64"))
    assert.are.equal(8, #t:data("bf16"))
    assert.are.equal(16, t:bytes())
    assert.are.equal(8, t:cast("f16"):bytes())
  end)
end)

describe("tostring", function()
  it("names dtype and shape, or closed", function()
    local t = mr.zeros({ 2, 3 })
    assert.are.equal("mr.Tensor(f32, 2x3)", tostring(t))
    assert.are.equal("mr.Tensor(bf16, 4)", tostring(mr.zeros(4, "bf16")))
    t:close()
    assert.are.equal("mr.Tensor(closed)", tostring(t))
  end)
end)

describe("misuse raises", function()
  it("ragged nesting", function()
    assert.has_error(function() mr.tensor { { 1, 2 }, { 3 } } end,
      "bad argument #1 to 'tensor' (ragged table: t[2] has 1 entries, expected 2)")
  end)
  it("non-numbers", function()
    assert.has_error(function() mr.tensor { 1, "x" } end,
      "bad argument #1 to 'tensor' (t[2] is a string, expected a number)")
  end)
  it("unknown and non-storage dtypes", function()
    assert.has_error(function() mr.zeros({ 2 }, "f8") end)
    assert.has_error(function() mr.zeros({ 2 }, "i64") end,
      "bad argument #2 to 'zeros' (dtype 'i64' cannot be stored on the device (use f32, f16 or bf16))")
  end)
  it("reshape to the wrong element count", function()
    local t = mr.zeros { 2, 4 }
    assert.has_error(function() t:reshape(2, 3) end,
      "bad argument #1 to 'reshape' (shape 2x3 has 6 elements, tensor has 8)")
  end)
  it("dim 0", function()
    local t = mr.zeros { 2, 4 }
    assert.has_error(function() t:slice(0, 1, 1) end)
    assert.has_error(function() mr.sum(t, 3) end, "bad argument #2 to 'sum' (dim 3 out of range for a 2-dim tensor)")
  end)
  it("a wrong type", function()
    assert.has_error(function() mr.add("a", 1) end)
    assert.has_error(function() mr.zeros { 2 }:copy_(3) end)
  end)
end)

describe("views", function()
  local t
  before_each(function() t = mr.tensor { { 1, 2, 3, 4 }, { 5, 6, 7, 8 }, { 9, 10, 11, 12 } } end)

  it("reshape with varargs, a table, and -1", function()
    assert.are.same({ 4, 3 }, t:reshape(4, 3):shape())
    assert.are.same({ 2, 6 }, t:reshape { 2, -1 }:shape())
    assert.are.same({ { 1, 2, 3, 4, 5, 6 }, { 7, 8, 9, 10, 11, 12 } }, t:reshape(2, -1):totable())
  end)

  it("slice is 1-based and inclusive, negatives from the end", function()
    assert.are.same({ { 5, 6, 7, 8 } }, t:slice(1, 2, 2):totable())
    assert.are.same({ { 2, 3 }, { 6, 7 }, { 10, 11 } }, t:slice(2, 2, 3):totable())
    assert.are.same({ { 4 }, { 8 }, { 12 } }, t:slice(-1, -1):totable())
    assert.are.same({ { 1, 3 }, { 5, 7 }, { 9, 11 } }, t:slice(2, 1, -1, 2):totable())
    assert.are.same({ { 9, 10, 11, 12 } }, t:slice(1, 3):totable())
    assert.has_error(function() t:slice(1, 4, 4) end)
    assert.has_error(function() t:slice(2, 0, 2) end)
  end)

  it("permute and contiguous", function()
    local p = t:permute(2, 1)
    assert.are.same({ 4, 3 }, p:shape())
    assert.is_false(p:is_contiguous())
    assert.are.same({ { 1, 5, 9 }, { 2, 6, 10 }, { 3, 7, 11 }, { 4, 8, 12 } }, p:totable())
    assert.has_error(function() p:reshape(12) end)
    local c = p:contiguous()
    assert.is_true(c:is_contiguous())
    assert.are.same({ 1, 5, 9, 2 }, c:reshape(12):slice(1, 1, 4):totable())
    assert.are.same({ 3, 4 }, t:permute { -1, 1 }:permute(2, 1):shape())
  end)

  it("writes through a view with fill_ and copy_", function()
    t:slice(2, 2, 3):fill_(0)
    assert.are.same({ { 1, 0, 0, 4 }, { 5, 0, 0, 8 }, { 9, 0, 0, 12 } }, t:totable())
    t:slice(1, 1, 1):copy_(mr.tensor { { -1, -2, -3, -4 } })
    assert.are.same({ -1, -2, -3, -4 }, t:totable()[1])
    assert.has_error(function() t:copy_(mr.zeros { 2, 2 }) end,
      "bad argument #1 to 'copy_' (shape 2x2 does not match the destination's 3x4)")
  end)

  it("keep their base alive", function()
    local v = (function()
      local base = mr.tensor { 10, 20, 30 }
      return base:slice(1, 2)
    end)()
    collectgarbage()
    collectgarbage()
    assert.are.same({ 20, 30 }, v:totable())
  end)

  it("survive closing the base", function()
    local v = t:slice(1, 3)
    t:close()
    assert.are.same({ { 9, 10, 11, 12 } }, v:totable())
  end)

  it("cast copies to another dtype", function()
    local h = t:cast("f16")
    assert.are.equal("f16", h:dtype())
    assert.are.same(t:totable(), h:totable())
  end)
end)

describe("closing", function()
  it("is idempotent and later use raises", function()
    local t = mr.zeros { 4 }
    t:close()
    t:close()
    assert.is_true(t:is_closed())
    assert.has_error(function() t:totable() end, "calling 'totable' on bad self (tensor is closed)")
    assert.has_error(function() mr.add(t, 1) end, "bad argument #1 to 'add' (tensor is closed)")
  end)

  it("<close> releases device memory at scope end", function()
    collectgarbage()
    local before = mr.memory().live_bytes
    do
      local big <close> = mr.zeros { 1024, 1024 }
      assert.are.equal(before + 4 * 1024 * 1024, mr.memory().live_bytes)
    end
    assert.are.equal(before, mr.memory().live_bytes)
  end)
end)
