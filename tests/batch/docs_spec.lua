-- docs/templates.md as written: its templates are valid and in step with the
-- example file, and its commands run, read out of the page, in a folder laid
-- out as the page assumes (build/moonreel, recipes/, models/default, photos/)
-- on the default model: the blocks tagged ```sh test=batch and ```json
-- test=batch (tests/docs/doc_examples.py checks that every block of the page
-- is one of these or marked as not run, as the Remade squish on a Wan 2.1 I2V
-- 14B pack is). The 50-clip benchmark runs with 1 clip of 2 steps. The Redis
-- commands use a server of the test's own, on a free port, in place of 6379.
local mr = require "moonreel"
local cjson = require "cjson"

local SRC = os.getenv("MOONREEL_SOURCE") or ".."
local F = dofile(SRC .. "/tests/batch/fixture.lua")
local H = F.H
local T = mr.template

local DOC = assert(H.read(SRC .. "/docs/templates.md"))

-- The page's commands: each line of a ```sh test=batch block, "\" continuations joined.
local function doc_commands()
  local out = {}
  for block in DOC:gmatch("```sh test=batch\n(.-)```") do
    local cur = ""
    for line in block:gmatch("[^\n]+") do
      if line:sub(-1) == "\\" then
        cur = cur .. line:sub(1, -2):gsub("%s+$", "") .. " "
      else
        out[#out + 1] = (cur .. line:gsub("^%s+", ""))
        cur = ""
      end
    end
  end
  return out
end

describe("docs/templates.md", function()
  local tmp, redis_pid, port

  setup(function()
    tmp = H.tmpdir()
  end)

  teardown(function()
    if redis_pid then
      os.execute("kill " .. redis_pid)
      F.wait_gone(redis_pid, 20)
    end
    if tmp then H.rm(tmp) end
  end)

  it("shows valid templates, the first as docs/templates/remade-squish.json has it", function()
    local blocks = {}
    for block in DOC:gmatch("```json test=batch\n(.-)```") do
      local v = T.decode_json(block)
      assert.is_not_nil(v, block)
      if v.schema then blocks[#blocks + 1] = v end
    end
    assert.is_true(#blocks >= 1)
    for i, b in ipairs(blocks) do assert.is_true(T.validate(b), "block " .. i) end
    local file = T.decode_json(assert(H.read(SRC .. "/docs/templates/remade-squish.json")))
    assert.are.equal(T.canonical_json(file), T.canonical_json(blocks[1]))
    -- the validator's lines quoted in the page are its own
    local doc = T.overlay(file)
    doc.loras[1].strength = "1"
    doc.prompt.template = doc.prompt.template:gsub("{subject}", "{subjet}", 1)
    doc.variants = {fast = {sampling = {steps = 0}}}
    local _, errs = T.validate(doc)
    for _, e in ipairs(errs) do assert.truthy(DOC:find("squish.json: " .. e, 1, true), e) end
    assert.are.equal(3, #errs)
  end)

  it("runs its commands as written", function()
    -- the folder the page assumes
    local d = tmp .. "/work"
    assert(mr.mkdir(d .. "/build"))
    assert(mr.mkdir(d .. "/photos"))
    for _, l in ipairs{{F.BIN, "build/moonreel"}, {SRC .. "/recipes", "recipes"}, {SRC .. "/models", "models"},
                       {SRC .. "/tools", "tools"}} do
      assert(os.execute(string.format("ln -s %s %s", H.q(l[1]), H.q(d .. "/" .. l[2]))))
    end
    F.photo(d .. "/photos/a.png", 64, 64, 1)
    F.photo(d .. "/photos/b.png", 24, 24, 2) -- under move.json's min_side 32
    -- the manifest line the page shows
    local manifest
    for block in DOC:gmatch("```json test=batch\n(.-)```") do
      local v = T.decode_json(block)
      if v.template then manifest = block end
    end
    F.write(d .. "/jobs.jsonl", assert(manifest, "the page shows a manifest line"))
    -- a redis-server of our own
    math.randomseed(os.time())
    for _ = 1, 20 do
      port = math.random(20000, 60000)
      local p = assert(io.popen(string.format("exec redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no " ..
        "--dir %s >%s/redis.log 2>&1 </dev/null & echo $!", port, H.q(tmp), H.q(tmp))))
      redis_pid = assert(tonumber(p:read("l")))
      p:close()
      local up = false
      for _ = 1, 100 do
        local c = mr.redis.connect("127.0.0.1", port, {timeout = 1})
        if c and c:call("PING") == "PONG" then
          c:close()
          up = true
          break
        end
        if not F.alive(redis_pid) then break end
        F.sleep(0.1)
      end
      if up then break end
      redis_pid = nil
    end
    assert.is_number(redis_pid)

    local ran = {}
    local function run(cmd)
      cmd = cmd:gsub("6379", tostring(port)):gsub("%-%-jobs 50", "--jobs 1 --steps 2 --memory-at 1")
      local code, o, e = F.sh("cd " .. H.q(d) .. " && " .. cmd)
      ran[#ran + 1] = cmd
      return code, o or "", e or ""
    end
    for _, cmd in ipairs(doc_commands()) do
      if cmd:find("^build/moonreel recipes/effects.lua") or cmd:find("^build/moonreel tools/") or cmd:find("^redis%-cli") then
        local code, o, e = run(cmd)
        if cmd:find("--dry-run", 1, true) then
          assert.are.equal(1, code, e) -- b.png would fail
          assert.truthy(o:find("FAIL images[1]: photos/b.png is 24x24; the template needs at least 32 pixels", 1, true), o)
          assert.truthy(o:find("2 jobs: 0 to run, 1 done, 1 would fail", 1, true), o)
        elseif cmd:find("--images photos/", 1, true) then
          assert.are.equal(1, code, e) -- b.png fails alone
          -- the page runs the first command twice: the second finds both clips done
          assert.truthy(o:find("2 jobs: 1 done now", 1, true) or o:find("2 jobs: 0 done now, 1 done before", 1, true),
            cmd .. "\n" .. o .. e)
        elseif cmd:find("--enqueue", 1, true) then
          assert.are.equal(0, code, e)
          assert.truthy(o:find("enqueued 1 jobs", 1, true), o)
        elseif cmd:find("--queue", 1, true) then
          assert.are.equal(0, code, e)
          assert.truthy(o:find("0 done, 0 failed, 1 already done", 1, true), o) -- the manifest's job was run just before
        elseif cmd:find("--manifest jobs.jsonl --out", 1, true) then
          assert.are.equal(0, code, e)
          assert.is_true(H.exists(d .. "/out/a-left.mp4"))
        elseif cmd:find("HLEN", 1, true) then
          assert.are.equal(0, code, e)
          assert.are.equal("1", o:match("%d+"))
        elseif cmd:find("XRANGE", 1, true) then
          assert.are.equal(0, code, e)
          assert.truthy(o:find('"already":true', 1, true), o)
        elseif cmd:find("tools/bench/batch.lua", 1, true) then
          assert.are.equal(0, code, e)
          assert.truthy(o:find("ratio %(resident / per process%)"), o)
        else
          error("a command of the page no case covers: " .. cmd)
        end
      else
        error("a command of the page no case covers: " .. cmd)
      end
    end
    assert.is_true(#ran >= 9, table.concat(ran, "\n"))
    -- what the runs left: clips named by id, the manifest's own name, one report line each
    local rep = F.report(d .. "/out/report.jsonl")
    local done = 0
    for _, r in ipairs(rep) do if r.status == "done" then done = done + 1 end end
    assert.are.equal(#F.files(d .. "/out", "%.mp4$"), done)
    assert.is_true(done >= 3)
  end)
end)
