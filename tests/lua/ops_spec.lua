-- Every op against a small expectation computed here in Lua.
local mr = require "moonreel"

local function map(t, f)
  local r = {}
  for i, v in ipairs(t) do r[i] = type(v) == "table" and map(v, f) or f(v) end
  return r
end

local function near(expected, got, tol)
  tol = tol or 1e-5
  if type(expected) == "table" then
    assert.are.equal(#expected, #got)
    for i = 1, #expected do near(expected[i], got[i], tol) end
  else
    local err = math.abs(expected - got)
    assert(err <= tol * (1 + math.abs(expected)), ("expected %.7g, got %.7g"):format(expected, got))
  end
end

local A = { { 1, -2, 3 }, { 0.5, 4, -6 } }
local B = { { 2, 1, -1 }, { 3, 0.25, 2 } }

describe("elementwise", function()
  local a, b
  before_each(function() a, b = mr.tensor(A), mr.tensor(B) end)

  local cases = {
    { "add", function(x, y) return x + y end },
    { "sub", function(x, y) return x - y end },
    { "mul", function(x, y) return x * y end },
    { "div", function(x, y) return x / y end },
  }
  for _, c in ipairs(cases) do
    local name, f = c[1], c[2]
    it(name .. " tensor-tensor, function, method and metamethod", function()
      local want = {}
      for i = 1, 2 do
        want[i] = {}
        for j = 1, 3 do want[i][j] = f(A[i][j], B[i][j]) end
      end
      near(want, mr[name](a, b):totable())
      near(want, a[name](a, b):totable())
      near(want, f(a, b):totable())
    end)
    it(name .. " with numbers on either side", function()
      near(map(A, function(x) return f(x, 2) end), f(a, 2):totable())
      near(map(B, function(x) return f(3, x) end), f(3, b):totable())
      near(map(A, function(x) return f(x, 0.5) end), mr[name](a, 0.5):totable())
    end)
  end

  it("broadcasts from the right", function()
    local row = mr.tensor { 10, 20, 30 }
    near({ { 11, 18, 33 }, { 10.5, 24, 24 } }, (a + row):totable())
    local col = mr.tensor { { 2 }, { -1 } }
    near({ { 2, -4, 6 }, { -0.5, -4, 6 } }, (a * col):totable())
  end)

  it("raises the engine's message on shapes that do not broadcast", function()
    local ok, err = pcall(mr.add, a, mr.zeros { 4 })
    assert.is_false(ok)
    assert.truthy(err:find("2x3") and err:find("4"), err)
  end)

  it("mul_add: a * (b + beta) + c, broadcasting over all three", function()
    local row, col = mr.tensor { 10, 20, 30 }, mr.tensor { { 2 }, { -1 } }
    local want = {}
    for i = 1, 2 do
      want[i] = {}
      for j = 1, 3 do want[i][j] = A[i][j] * (({ 10, 20, 30 })[j] + 1) + ({ 2, -1 })[i] end
    end
    near(want, mr.mul_add(a, row, col, 1):totable())
    near(want, a:mul_add(row, col, 1):totable())
    -- beta defaults to 0: the gated residual b + a * row
    near(map(B, function() return 0 end), (mr.mul_add(a, row, b) - (b + a * row)):totable())
    local ok, err = pcall(mr.mul_add, a, row, mr.zeros { 4 })
    assert.is_false(ok)
    assert.truthy(err:find("do not broadcast"), err)
  end)

  it("scale, neg, square", function()
    near(map(A, function(x) return x * 3 - 1 end), mr.scale(a, 3, -1):totable())
    near(map(A, function(x) return x * 2 end), a:scale(2):totable())
    near(map(A, function(x) return -x end), (-a):totable())
    near(map(A, function(x) return -x end), mr.neg(a):totable())
    near(map(A, function(x) return x * x end), mr.square(a):totable())
  end)

  it("silu, gelu (tanh), exp, tanh", function()
    local function gelu(x) return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ^ 3))) end
    local function tanh(x) local e = math.exp(2 * x) return (e - 1) / (e + 1) end
    near(map(A, function(x) return x / (1 + math.exp(-x)) end), mr.silu(a):totable(), 1e-5)
    near(map(A, gelu), a:gelu():totable(), 1e-4)
    near(map(A, math.exp), mr.exp(a):totable(), 1e-5)
    near(map(A, tanh), mr.tanh(a):totable(), 1e-5)
  end)

  it("works in bf16 within its rounding", function()
    local h = mr.tensor(A, "bf16")
    local r = h + h
    assert.are.equal("bf16", r:dtype())
    near(map(A, function(x) return 2 * x end), r:totable(), 1 / 128)
  end)
end)

describe("layers", function()
  it("matmul with and without bias", function()
    local x = mr.tensor(A)                            -- 2x3
    local w = mr.tensor { { 1, 0, 2 }, { -1, 1, 0.5 } } -- N=2, K=3
    local bias = mr.tensor { 0.5, -1 }
    local want = {}
    for i = 1, 2 do
      want[i] = {}
      for n = 1, 2 do
        local s = 0
        for k = 1, 3 do s = s + A[i][k] * w:totable()[n][k] end
        want[i][n] = s
      end
    end
    near(want, mr.matmul(x, w):totable())
    near(map(want, function(v) return v end), x:matmul(w):totable())
    local wb = mr.matmul(x, w, bias):totable()
    near({ { want[1][1] + 0.5, want[1][2] - 1 }, { want[2][1] + 0.5, want[2][2] - 1 } }, wb)
  end)

  local function norm_rows(rows, f)
    local r = {}
    for i, row in ipairs(rows) do r[i] = f(row) end
    return r
  end

  it("layer_norm over the last dim, with and without affine", function()
    local w, b = { 1, 2, 0.5 }, { 0, 1, -1 }
    local function ln(row, affine)
      local m, v = 0, 0
      for _, x in ipairs(row) do m = m + x / #row end
      for _, x in ipairs(row) do v = v + (x - m) ^ 2 / #row end
      local r = {}
      for j, x in ipairs(row) do
        r[j] = (x - m) / math.sqrt(v + 1e-5)
        if affine then r[j] = r[j] * w[j] + b[j] end
      end
      return r
    end
    local x = mr.tensor(A)
    near(norm_rows(A, function(r) return ln(r, false) end), mr.layer_norm(x):totable(), 1e-4)
    near(norm_rows(A, function(r) return ln(r, true) end),
      mr.layer_norm(x, mr.tensor(w), mr.tensor(b), 1e-5):totable(), 1e-4)
  end)

  it("rms_norm over the last dim", function()
    local w = { 1, 2, 0.5 }
    local function rms(row)
      local s = 0
      for _, x in ipairs(row) do s = s + x * x / #row end
      local r = {}
      for j, x in ipairs(row) do r[j] = x / math.sqrt(s + 1e-6) * w[j] end
      return r
    end
    near(norm_rows(A, rms), mr.rms_norm(mr.tensor(A), mr.tensor(w), 1e-6):totable(), 1e-4)
  end)

  it("softmax along a dim", function()
    local function sm(v)
      local mx, s, r = -math.huge, 0, {}
      for _, x in ipairs(v) do mx = math.max(mx, x) end
      for i, x in ipairs(v) do r[i] = math.exp(x - mx); s = s + r[i] end
      for i in ipairs(r) do r[i] = r[i] / s end
      return r
    end
    local x = mr.tensor(A)
    near(norm_rows(A, sm), mr.softmax(x):totable(), 1e-5)
    near(norm_rows(A, sm), x:softmax(-1):totable(), 1e-5)
    local cols = mr.softmax(x, 1):totable()
    for j = 1, 3 do
      local c = sm { A[1][j], A[2][j] }
      near(c, { cols[1][j], cols[2][j] }, 1e-5)
    end
  end)

  it("attention with scale and k_lens", function()
    -- B=1, Lq=2, Lk=3, H=1, D=8
    local function rnd(n, seed)
      local r, s = {}, seed
      for i = 1, n do s = (s * 1103515245 + 12345) % 2147483648; r[i] = (s / 2147483648) * 2 - 1 end
      return r
    end
    local function rows(flat, L, D)
      local r = {}
      for i = 1, L do r[i] = { {} } for d = 1, D do r[i][1][d] = flat[(i - 1) * D + d] end end
      return r
    end
    local D = 8
    local q, k, v = rows(rnd(2 * D, 1), 2, D), rows(rnd(3 * D, 2), 3, D), rows(rnd(3 * D, 3), 3, D)
    local function ref(scale, nk)
      local out = {}
      for i = 1, 2 do
        local s, mx = {}, -math.huge
        for j = 1, nk do
          local dot = 0
          for d = 1, D do dot = dot + q[i][1][d] * k[j][1][d] end
          s[j] = dot * scale
          mx = math.max(mx, s[j])
        end
        local z = 0
        for j = 1, nk do s[j] = math.exp(s[j] - mx); z = z + s[j] end
        out[i] = { {} }
        for d = 1, D do
          local acc = 0
          for j = 1, nk do acc = acc + s[j] / z * v[j][1][d] end
          out[i][1][d] = acc
        end
      end
      return { out }
    end
    local tq, tk, tv = mr.tensor { q }, mr.tensor { k }, mr.tensor { v }
    near(ref(1 / math.sqrt(D), 3), mr.attention(tq, tk, tv):totable(), 1e-4)
    near(ref(0.5, 3), mr.attention(tq, tk, tv, { scale = 0.5 }):totable(), 1e-4)
    near(ref(1 / math.sqrt(D), 2), tq:attention(tk, tv, { k_lens = { 2 } }):totable(), 1e-4)
    assert.has_error(function() mr.attention(tq, tk, tv, { k_lens = { 1, 2 } }) end,
      "bad argument #4 to 'attention' (k_lens has 2 entries, batch is 1)")
  end)
end)

describe("structure", function()
  it("concat along a dim", function()
    local a, b = mr.tensor { { 1, 2 } }, mr.tensor { { 3, 4 }, { 5, 6 } }
    assert.are.same({ { 1, 2 }, { 3, 4 }, { 5, 6 } }, mr.concat({ a, b }):totable())
    assert.are.same({ { 1, 2, 1, 2 } }, mr.concat({ a, a }, 2):totable())
    assert.are.same({ { 1, 2, 1, 2 } }, mr.concat({ a, a }, -1):totable())
    assert.has_error(function() mr.concat({ a, 3 }) end,
      "bad argument #1 to 'concat' (entry 2 is a number, expected mr.Tensor)")
    assert.has_error(function() mr.concat({ a, b }, 2) end)
  end)

  it("pad with before/after pairs per dim", function()
    local x = mr.tensor { { 1, 2 } }
    assert.are.same({ { 0, 0, 0, 0 }, { 0, 1, 2, 0 } }, mr.pad(x, { 1, 0, 1, 1 }):totable())
    assert.are.same({ { 1, 2, 9 } }, x:pad({ 0, 0, 0, 1 }, 9):totable())
    assert.has_error(function() mr.pad(x, { 1, 1 }) end,
      "bad argument #2 to 'pad' (pads has 2 entries; a 2-dim tensor needs 4 (before, after per dim))")
  end)

  it("sum, mean, max with keepdim", function()
    local x = mr.tensor(A)
    near({ 2, -1.5 }, mr.sum(x, 2):totable())
    near({ { 2 }, { -1.5 } }, mr.sum(x, -1, true):totable())
    near({ 0.75, 1, -1.5 }, mr.mean(x, 1):totable())
    near({ { 1, 4, 3 } }, x:max(1, true):totable())
    assert.are.same({ 3 }, mr.max(x, 1):shape())
  end)
end)
