-- The Redis queue end to end: a redis-server of its own on a free local port
-- (no persistence), jobs enqueued, two workers, one killed with SIGKILL in
-- the middle of a job; every job must end with exactly one output. Also: a
-- job taken over after it was finished is not run again, a failing job is
-- acknowledged with its reason, and bad URLs are refused in one line.
local mr = require "moonreel"
local cjson = require "cjson"

local SRC = os.getenv("MOONREEL_SOURCE") or ".."
local F = dofile(SRC .. "/tests/batch/fixture.lua")
local H = F.H
local EFFECTS = SRC .. "/recipes/effects.lua"

-- A redis-server on a free port: a random port is tried, and another while
-- the server cannot bind it. Returns {port, pid, url(stream), call(...)}.
local function start_redis(dir)
  math.randomseed(os.time() + math.floor(mr.clock() * 1000))
  for _ = 1, 20 do
    local port = math.random(20000, 60000)
    local log = dir .. "/redis-" .. port .. ".log"
    local p = assert(io.popen(string.format("exec redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no " ..
      "--dir %s >%s 2>&1 </dev/null & echo $!", port, H.q(dir), H.q(log))))
    local pid = assert(tonumber(p:read("l")))
    p:close()
    local t0 = mr.clock()
    while mr.clock() - t0 < 20 do
      local c = mr.redis.connect("127.0.0.1", port, {timeout = 2})
      if c then
        local pong = c:call("PING")
        c:close()
        if pong == "PONG" then
          local conn = assert(mr.redis.connect("127.0.0.1", port))
          return {port = port, pid = pid, conn = conn,
                  url = function(stream) return string.format("redis://127.0.0.1:%d/%s", port, stream) end}
        end
      end
      if not F.alive(pid) then break end -- the port was taken: try another
      F.sleep(0.1)
    end
    os.execute("kill " .. pid .. " 2>/dev/null")
    F.wait_gone(pid, 10)
  end
  error("could not start redis-server on a free port")
end

describe("the effects queue", function()
  local tmp, f, redis

  setup(function()
    tmp = H.tmpdir()
    f = F.build(tmp)
    redis = start_redis(tmp)
  end)

  teardown(function()
    if redis then
      redis.conn:close()
      os.execute("kill " .. redis.pid)
      F.wait_gone(redis.pid, 20)
    end
    if tmp then H.rm(tmp) end
  end)

  local function effects(args, opts)
    local argv = {EFFECTS}
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return F.run(argv, opts)
  end

  local function call(...) return assert(redis.conn:call(...)) end

  -- the stream's pending entries by consumer: {name = count}
  local function pending_by_consumer(stream)
    local p = call("XPENDING", stream, "moonreel")
    local out = {}
    if type(p[4]) == "table" then
      for _, c in ipairs(p[4]) do out[c[1]] = tonumber(c[2]) end
    end
    return out, tonumber(p[1])
  end

  it("survives a worker killed mid-job: the other takes its job over and every job has exactly one output", function()
    local d = tmp .. "/kill"
    assert(mr.mkdir(d))
    local t = F.template()
    t.sampling.steps = 8 -- long enough to be caught in the middle
    local tpl = F.write_json(f.dir .. "/tpl/q.json", t)
    local lines = {}
    for i = 1, 6 do lines[i] = cjson.encode{template = tpl, images = {f.photos[(i - 1) % 3 + 1]}, seed = tostring(i)} end
    F.write(d .. "/jobs.jsonl", table.concat(lines, "\n") .. "\n")
    local url = redis.url("fx")
    local code, o, e = effects({"--manifest", d .. "/jobs.jsonl", "--enqueue", url})
    assert.are.equal(0, code, e)
    assert.truthy(o:find("enqueued 6 jobs on " .. url .. " (group moonreel)", 1, true), o)
    assert.are.equal(6, call("XLEN", "fx"))
    local out = d .. "/out"
    local function worker(name)
      return F.start({EFFECTS, "--queue", url, "--out", out, "--model", f.packs.ti2v, "--consumer", name,
                      "--claim-after", "3"}, d .. "/" .. name .. ".log")
    end
    local w1 = worker("w1")
    local w2 = worker("w2")
    -- wait until w1 holds a job and has been at it a moment, then kill it
    local t0 = mr.clock()
    local held
    while mr.clock() - t0 < 300 do
      local by = pending_by_consumer("fx")
      if (by.w1 or 0) > 0 then
        held = true
        break
      end
      F.sleep(0.05)
    end
    assert.is_true(held, "w1 never took a job: " .. (H.read(d .. "/w1.log") or ""))
    F.sleep(0.3)
    local entry = call("XPENDING", "fx", "moonreel", "-", "+", 10, "w1")
    assert.are.equal(1, #entry, "w1 holds one job")
    local killed_entry = entry[1][1]
    os.execute("kill -9 " .. w1)
    assert.is_true(F.wait_gone(w1, 30))
    -- w2 works the rest, then takes over w1's job and exits when the stream is drained
    assert.is_true(F.wait_gone(w2, 600), "w2 did not finish")
    local log2 = assert(H.read(d .. "/w2.log"))
    assert.truthy(log2:find("taking over", 1, true), log2)
    assert.truthy(log2:find("worker w2: ", 1, true), log2)
    -- every job: one output under its id, whole, recorded once in the done hash
    local ids = {}
    for _, l in ipairs(lines) do
      local job = cjson.decode(l)
      local j = mr.batch.prepare({index = 0, source = "x", template = job.template, images = job.images, seed = job.seed},
        mr.batch.templates())
      ids[j.id] = true
    end
    local clips = F.files(out, "%.mp4$")
    assert.are.equal(6, #clips, table.concat(clips, " "))
    for _, c in ipairs(clips) do
      local id = c:match("^(.*)%.mp4$")
      assert.is_true(ids[id], c)
      assert.are.equal("5", assert(F.ffprobe(out .. "/" .. c)).nb_read_frames)
    end
    assert.are.same({}, F.files(out, "tmp"))
    assert.are.equal(6, call("HLEN", "fx:done"))
    -- every job has a done result; the one w1 died on was finished by w2
    local results = call("XRANGE", "fx:results", "-", "+")
    local by_id = {}
    for _, r in ipairs(results) do
      local fl = {}
      for i = 1, #r[2], 2 do fl[r[2][i]] = r[2][i + 1] end
      local rec = cjson.decode(fl.result)
      if fl.status == "done" then by_id[fl.id] = by_id[fl.id] or rec end
      if rec.entry == killed_entry then assert.are.equal("w2", rec.consumer) end
    end
    for id in pairs(ids) do assert.is_table(by_id[id], id) end
    local _, total = pending_by_consumer("fx")
    assert.are.equal(0, total)
  end)

  it("does not run again a job taken over after it was finished, and acknowledges a failing job with its reason", function()
    local d = tmp .. "/idem"
    assert(mr.mkdir(d))
    F.photo(d .. "/small.png", 8, 8, 2)
    F.write(d .. "/jobs.jsonl", cjson.encode{template = f.tpl_a, images = {f.photos[1]}, seed = "1"} .. "\n" ..
      cjson.encode{template = f.tpl_a, images = {d .. "/small.png"}, seed = "2"} .. "\n")
    local url = redis.url("idem")
    local out = d .. "/out"
    assert.are.equal(0, (effects({"--manifest", d .. "/jobs.jsonl", "--enqueue", url})))
    local code, o, e = effects({"--queue", url, "--out", out, "--model", f.packs.ti2v, "--consumer", "a"})
    assert.are.equal(1, code, e) -- one job failed
    assert.truthy(o:find("worker a: 1 done, 1 failed, 0 already done", 1, true), o)
    local clip = F.files(out, "%.mp4$")[1]
    local before = H.read(out .. "/" .. clip)
    -- the same job again, delivered to a consumer that never acknowledges it (as if it died after writing)
    assert.are.equal(0, (effects({"--manifest", d .. "/jobs.jsonl", "--enqueue", url})))
    local got = call("XREADGROUP", "GROUP", "moonreel", "ghost", "COUNT", 1, "STREAMS", "idem", ">")
    assert.are.equal(1, #got[1][2])
    F.sleep(0.6)
    code, o, e = effects({"--queue", url, "--out", out, "--model", f.packs.ti2v, "--consumer", "b", "--claim-after", "0.5"})
    assert.are.equal(1, code, e) -- the small photo's job fails again
    assert.truthy(o:find("worker b: 0 done, 1 failed, 1 already done", 1, true), o)
    assert.truthy(e:find("already done", 1, true), e)
    assert.are.equal(before, H.read(out .. "/" .. clip)) -- not written again
    assert.are.equal(1, #F.files(out, "%.mp4$"))
    local _, total = pending_by_consumer("idem")
    assert.are.equal(0, total)
    -- the failure is in the results with its reason
    local found
    for _, r in ipairs(call("XRANGE", "idem:results", "-", "+")) do
      local rec = cjson.decode(r[2][6])
      if rec.status == "failed" then
        found = rec.error
        assert.truthy(rec.error:find("is 8x8; the template needs at least 16 pixels", 1, true), rec.error)
      end
    end
    assert.is_string(found)
  end)

  it("refuses bad queue flags in one line", function()
    for _, c in ipairs{
      {{"--queue", "http://x/y", "--out", tmp .. "/o"}, "--queue http://x/y: must be redis://HOST:PORT/STREAM"},
      {{"--queue", "redis://127.0.0.1:1/s", "--out", tmp .. "/o"}, "cannot connect to redis at 127.0.0.1:1"},
      {{"--queue", "redis://h:99999/s", "--out", tmp .. "/o"}, "the port must be 1 .. 65535"},
      {{"--queue", "redis://h/bad name", "--out", tmp .. "/o"}, "the stream name must be"},
      {{"--queue", redis.url("s")}, "--out DIR is required"},
      {{"--enqueue", redis.url("s")}, "no jobs: give --template"},
      {{"--queue", redis.url("s"), "--out", tmp .. "/o", "--shard", "0/2"}, "--shard goes with a local batch"},
      {{"--queue", redis.url("s"), "--out", tmp .. "/o", "--seed", "3"}, "--seed goes with a local batch or --enqueue"},
    } do
      local code, _, e = effects(c[1])
      assert.is_true(code == 2 or code == 1, e)
      assert.truthy(e:find(c[2], 1, true), e)
      assert.are.equal(1, select(2, e:gsub("\n", "")), e)
    end
  end)
end)
