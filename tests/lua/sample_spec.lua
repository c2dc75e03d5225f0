-- Samplers, seeded noise, seeds and the loop's tensor combinations from Lua.
local mr = require "moonreel"

local function near(want, got, tol)
  tol = tol or 1e-5
  assert.are.equal(#want, #got)
  for i = 1, #want do
    local err = math.abs(want[i] - got[i])
    assert(err <= tol * (1 + math.abs(want[i])), ("[%d] expected %.7g, got %.7g"):format(i, want[i], got[i]))
  end
end

local function same(a, b)
  assert.are.equal(#a, #b)
  for i = 1, #a do assert.are.equal(a[i], b[i]) end
end

describe("mr.sampler", function()
  it("builds Wan's UniPC table (shift 5, 50 steps)", function()
    local s <close> = mr.sampler.unipc { steps = 50, shift = 5 }
    local t = s:timesteps()
    assert.are.equal(50, #t)
    assert.are.equal("integer", math.type(t[1]))
    same({ 999, 995, 991, 987, 982, 978 }, { table.unpack(t, 1, 6) })
    same({ 302, 241, 172, 92 }, { table.unpack(t, 47, 50) })
    local sg = s:sigmas()
    assert.are.equal(51, #sg)
    assert.are.equal(0, sg[51])
    assert.are.equal("unipc", s:name())
    assert.are.equal(50, s:steps())
    assert.are.equal(5, s:shift())
    assert.matches("mr.Sampler%(unipc, 50 steps, shift 5", tostring(s))
  end)

  it("gives DPM++ and Euler the same sigma rule, starting at 1", function()
    local d = mr.sampler.dpmpp { steps = 8, shift = 3 }
    local e = mr.sampler.new("euler", { steps = 8, shift = 3 })
    same(d:timesteps(), e:timesteps())
    same(d:sigmas(), e:sigmas())
    assert.are.equal(1000, d:timesteps()[1])
    assert.are.equal(1, d:sigmas()[1])
    assert.are.equal("dpmpp", mr.sampler.new("dpm++"):name())
    assert.are.equal(50, mr.sampler.new("unipc"):steps()) -- defaults
  end)

  it("raises on bad names and options", function()
    assert.has_error(function() mr.sampler.new("ddim") end, "bad argument #1 to 'new' (unknown sampler 'ddim' (unipc, dpmpp or euler))")
    assert.has_error(function() mr.sampler.unipc { steps = 0 } end)
    assert.has_error(function() mr.sampler.unipc { steps = 2.5 } end)
    assert.has_error(function() mr.sampler.unipc { shift = -1 } end)
    assert.has_error(function() mr.sampler.unipc { step = 10 } end)
    local ok, err = pcall(mr.sampler.unipc, { steps = 100000, shift = 1000 })
    assert.is_false(ok)
    assert.matches("repeated f32 sigmas", err)
  end)

  it("steps Euler as x + (sigma_next - sigma) v", function()
    local s <close> = mr.sampler.euler { steps = 5, shift = 2 }
    local x0, v0 = { 0.5, -1, 2, 0.25 }, { 1, 0.5, -0.75, 2 }
    local x, v = mr.tensor(x0), mr.tensor(v0)
    local sg, want = s:sigmas(), { table.unpack(x0) }
    for i, t in ipairs(s:timesteps()) do
      if i == 1 then assert.is_nil(s:next_index()) else assert.are.equal(i, s:next_index()) end
      x = s:step(v, t, x)
      for k = 1, 4 do want[k] = want[k] + (sg[i + 1] - sg[i]) * v0[k] end
    end
    near(want, x:totable(), 1e-6)
  end)

  it("runs UniPC and DPM++ to the same result after reset", function()
    for _, name in ipairs { "unipc", "dpmpp" } do
      local s <close> = mr.sampler[name] { steps = 6, shift = 3 }
      local function run()
        local x = mr.randn({ 2, 3, 4 }, 11)
        for _, t in ipairs(s:timesteps()) do
          x = s:step(mr.tanh(x * 0.7 + t / 1000), t, x)
        end
        return x:reshape { 24 }:totable()
      end
      local a = run()
      s:reset()
      same(a, run())
    end
  end)

  it("raises on a timestep out of the table or out of order, and on shape changes", function()
    local s <close> = mr.sampler.unipc { steps = 4, shift = 1 }
    local t = s:timesteps()
    local x, v = mr.zeros { 2, 3 }, mr.ones { 2, 3 }
    assert.has_error(function() s:step(v, 12345, x) end)
    local ok, err = pcall(s.step, s, v, 12345, x)
    assert.matches("not in the schedule", err)
    x = s:step(v, t[1], x)
    ok, err = pcall(s.step, s, v, t[3], x)
    assert.is_false(ok)
    assert.matches("out of order", err)
    ok, err = pcall(s.step, s, mr.ones { 3, 2 }, t[2], mr.zeros { 3, 2 })
    assert.matches("the run started with 2x3", err)
    ok, err = pcall(s.step, s, mr.ones { 3, 2 }, t[2], x)
    assert.matches("model_output has shape 3x2", err)
    s:step(v, t[2], x) -- the failures changed nothing
  end)

  it("closes once, and reports use after close", function()
    local s = mr.sampler.euler { steps = 2 }
    s:close()
    s:close()
    assert.are.equal("mr.Sampler(closed)", tostring(s))
    assert.has_error(function() s:timesteps() end)
  end)
end)

describe("mr.randn and seeds", function()
  it("gives the same noise for the same seed, in any seed form", function()
    local a = mr.randn({ 4, 5 }, 123):reshape { 20 }:totable()
    same(a, mr.randn({ 4, 5 }, "123"):reshape { 20 }:totable())
    same(mr.randn(7, -1):totable(), mr.randn(7, "18446744073709551615"):totable())
    local b = mr.randn({ 20 }, 124):totable()
    assert.are_not.equal(a[1], b[1])
  end)

  it("makes a slice alone equal to that slice of the whole", function()
    local whole = mr.randn({ 3, 100 }, 9):reshape { 300 }:totable()
    local part = mr.randn({ 50 }, 9, "f32", 117):totable()
    for i = 1, 50 do assert.are.equal(whole[117 + i], part[i]) end
  end)

  it("stores in the requested dtype", function()
    local t = mr.randn({ 10 }, 5, "bf16")
    assert.are.equal("bf16", t:dtype())
    near(mr.randn({ 10 }, 5):totable(), t:totable(), 1e-2)
  end)

  it("keeps 64-bit seeds exactly as decimal strings", function()
    assert.are.equal("123", mr.seed_string(123))
    assert.are.equal("18446744073709551615", mr.seed_string(-1))
    assert.are.equal("9223372036854775808", mr.seed_string(math.mininteger))
    assert.are.equal("18446744073709551615", mr.seed_string("18446744073709551615"))
    assert.are.equal("7", mr.seed_string("007"))
    for _, bad in ipairs { "abc", "-1", "", "18446744073709551616", "1e3", " 1", 1.5, {} } do
      assert.has_error(function() mr.seed_string(bad) end)
      assert.has_error(function() mr.randn({ 2 }, bad) end)
    end
  end)

  it("draws fresh seeds from the OS", function()
    local a, b = mr.random_seed(), mr.random_seed()
    assert.matches("^%d+$", a)
    assert.are_not.equal(a, b)
    assert.are.equal(a, mr.seed_string(a))
  end)
end)

describe("guidance and lincomb", function()
  it("computes v_u + g (v_c - v_u)", function()
    local vc, vu = { 1, -2, 0.5 }, { 0.25, 1, -1 }
    local want = {}
    for i = 1, 3 do want[i] = vu[i] + 5 * (vc[i] - vu[i]) end
    near(want, mr.guidance(mr.tensor(vc), mr.tensor(vu), 5):totable())
  end)

  it("combines up to four tensors", function()
    local a, b, c, d = mr.tensor { 1, 2 }, mr.tensor { 3, 4 }, mr.tensor { -1, 0.5 }, mr.tensor { 2, 2 }
    near({ 1 * 2 + 3 * -1 + -1 * 0.5 + 2 * 0.25, 2 * 2 + 4 * -1 + 0.5 * 0.5 + 2 * 0.25 },
      mr.lincomb({ a, b, c, d }, { 2, -1, 0.5, 0.25 }):totable())
    assert.has_error(function() mr.lincomb({ a, b, c, d, a }, { 1, 1, 1, 1, 1 }) end)
    assert.has_error(function() mr.lincomb({ a, b }, { 1 }) end)
    assert.has_error(function() mr.lincomb({ a, "x" }, { 1, 1 }) end)
    local ok, err = pcall(mr.lincomb, { a, mr.tensor { 1, 2, 3 } }, { 1, 1 })
    assert.is_false(ok)
    assert.matches("tensor 1 has shape 3", err)
  end)
end)
