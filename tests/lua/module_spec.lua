-- The module table, devices, and memory: <close>, GC pressure from device bytes.
local mr = require "moonreel"

describe("module", function()
  it("has a version", function()
    assert.are.equal("0.1.0", mr.version)
  end)

  it("describes its device", function()
    local d = mr.device()
    assert.is_string(d.name)
    assert.is_string(d.driver)
    assert.truthy(({ discrete = 1, integrated = 1, virtual = 1, cpu = 1, other = 1 })[d.type])
    assert.is_true(d.heap_bytes > 0)
    assert.is_true(d.max_buffer_bytes > 0)
    assert.is_number(d.subgroup_size)
    assert.is_number(d.shared_memory_bytes)
    assert.is_boolean(d.coopmat_nv)
    assert.is_number(d.validation_messages)
  end)

  it("lists devices", function()
    local list = mr.devices()
    assert.is_true(#list >= 1)
    local names = {}
    for _, d in ipairs(list) do names[d.name] = true end
    assert.is_true(names[mr.device().name])
  end)

  it("syncs and reports a profile", function()
    local _ = mr.tensor { 1 } + 1
    mr.sync()
    assert.is_string(mr.profile())
  end)
end)

describe("interrupt", function()
  it("makes the next engine call raise, once", function()
    local x = mr.ones { 8 }
    mr.interrupt()
    assert.has_error(function() local _ = x + 1 end, "interrupted")
    assert.are.same({ 2, 2 }, (x + 1):slice(1, 1, 2):totable())
  end)
end)

describe("memory", function()
  it("<close> and :close() give device bytes back at once", function()
    collectgarbage()
    local before = mr.memory().live_bytes
    do
      local a <close> = mr.zeros { 256, 1024 }
      local b = mr.zeros { 256, 1024 }
      assert.are.equal(before + 2 * 1024 * 1024, mr.memory().live_bytes)
      b:close()
      assert.are.equal(before + 1024 * 1024, mr.memory().live_bytes)
    end
    assert.are.equal(before, mr.memory().live_bytes)
  end)

  it("views hold no bytes of their own", function()
    local t <close> = mr.zeros { 64, 64 }
    local live = mr.memory().live_bytes
    local v <close> = t:slice(1, 1, 32):permute(2, 1)
    assert.are.equal(live, mr.memory().live_bytes)
    assert.are.equal(t:device_bytes(), v:device_bytes())
  end)

  it("collects dropped tensors under device-memory pressure #slow", function()
    -- More than the whole device heap in 16 MiB tensors, none closed: only
    -- the byte-driven collections keep this from running out.
    local heap = mr.device().heap_bytes
    local n = math.min(math.ceil(heap * 1.25 / (16 << 20)), 400)
    local start = mr.memory().collections
    local x
    for i = 1, n do
      x = mr.zeros { 4 << 20 }
    end
    assert.are.same({ 4 << 20 }, x:shape())
    assert.is_true(mr.memory().collections > start)
    assert.is_true(mr.memory().live_bytes <= mr.memory().threshold + (64 << 20))
  end)

  it("reports the device's live, held and peak bytes and trims (docs/lua-api.md)", function()
    collectgarbage()
    mr.trim(true)
    local m0 = mr.memory()
    assert.is_true(m0.device_held >= m0.device_live)
    assert.are.equal(m0.device_live, m0.device_peak_live)
    assert.are.equal(m0.device_held, m0.device_peak_held)
    do
      -- the docs' example
      local x <close> = mr.tensor({{1, 2}, {3, 4}})
      local y <close> = mr.matmul(x, x)
    end
    local m = mr.memory()
    assert.is_true(m.device_peak_live > m0.device_live)
    assert.is_true(m.device_held >= m.device_live)
    assert.are.equal(mr.device().type == "cpu" and "host memory available" or "device heap", m.budget_source)
    assert.is_true(m.device_budget > 0)
    -- a chain of 100 adds on 4 MiB tensors, each closed, holds a few of them
    mr.trim(true)
    local x = mr.zeros { 1 << 20 }
    local one <close> = mr.full({ 1 << 20 }, 1)
    for _ = 1, 100 do
      local nx = x + one
      x:close()
      x = nx
    end
    assert.are.same({ 100, 100 }, x:slice(1, 1, 2):totable())
    x:close()
    m = mr.memory()
    assert.is_true(m.device_peak_held <= m.device_peak_live + (4 << 20))
    assert.is_true(m.device_peak_live <= m0.device_live + 3 * (4 << 20))
    local before = mr.memory().device_held
    mr.trim()
    -- the chain's blocks (4 MiB tensors, a block each) go back; blocks with live tensors stay
    assert.is_true(mr.memory().device_held <= before - (4 << 20))
    assert.is_true(mr.memory().device_held >= mr.memory().device_live)
  end)

  it("hashes a file with SHA-256", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write("abc")
    f:close()
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", mr.sha256(path))
    os.remove(path)
    local none, msg, code = mr.sha256(path)
    assert.is_nil(none)
    assert.truthy(msg:find(path, 1, true))
    assert.are.equal("MR_ENOTFOUND", code)
  end)

  it("hashes a string with SHA-256 (FIPS 180-2 vectors, and bytes past a NUL)", function()
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", mr.sha256_string("abc"))
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", mr.sha256_string(""))
    assert.are.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      mr.sha256_string("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.are_not.equal(mr.sha256_string("a\0b"), mr.sha256_string("a\0c"))
  end)

  it("lists a folder sorted and makes folders with their parents", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert.is_true(mr.mkdir(dir .. "/b/c"))
    assert.is_true(mr.mkdir(dir .. "/b/c")) -- there already: fine
    for _, n in ipairs{"z.png", "a.png", ".hidden", "B.jpg"} do assert(io.open(dir .. "/" .. n, "wb")):close() end
    assert.are.same({".hidden", "B.jpg", "a.png", "b", "z.png"}, mr.listdir(dir))
    local none, msg, code = mr.listdir(dir .. "/nothing")
    assert.is_nil(none)
    assert.truthy(msg:find(dir .. "/nothing", 1, true))
    assert.are.equal("MR_ENOTFOUND", code)
    local no, merr = mr.mkdir(dir .. "/a.png/x") -- a file in the way
    assert.is_nil(no)
    assert.truthy(merr:find("a.png", 1, true))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("lets the threshold be tuned", function()
    local old = mr.gc_threshold(8 << 20)
    assert.are.equal(8 << 20, mr.gc_threshold(old))
    assert.has_error(function() mr.gc_threshold(0) end)
  end)
end)

describe("validation", function()
  it("saw no Vulkan validation messages", function()
    collectgarbage()
    mr.sync()
    assert.are.equal(0, mr.device().validation_messages)
  end)
end)
