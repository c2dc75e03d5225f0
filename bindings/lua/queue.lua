-- moonreel.queue (mr.queue): batch jobs through a Redis stream, for workers
-- on machines that come and go (docs/templates.md, "A queue").
--
--   moonreel recipes/effects.lua --manifest jobs.jsonl --enqueue redis://HOST:PORT/STREAM
--   moonreel recipes/effects.lua --queue redis://HOST:PORT/STREAM --out out/     # on each worker
--
-- Each job is one stream entry (field "job": the job as JSON, its paths
-- absolute). Workers read it through a consumer group (XREADGROUP), so each
-- entry goes to one worker and stays pending until that worker acknowledges
-- it (XACK) after the output is written and recorded. A worker that dies
-- (kill -9, a lost machine) leaves its entry pending; a live worker takes it
-- over (XAUTOCLAIM) once it has been idle --claim-after seconds. A running
-- job keeps its entry fresh (XCLAIM ... JUSTID on each step), so only a dead
-- worker's jobs are taken. Delivery is at least once, outputs are idempotent
-- (named by the job's id, written atomically), and a finished job is
-- recorded in the hash STREAM:done before its entry is acknowledged, so a
-- job taken over after it was finished is not run again. Results go to the
-- stream STREAM:results (one entry per finished delivery: dedupe by id) and
-- to the worker's report file.
local mr = require "moonreel"
local cjson = require "cjson"
local B = require "moonreel.batch"
local T = require "moonreel.template"

local M = {}

M.MAX_DELIVERIES = 3 -- a job whose worker died this many times fails instead of taking down more
M.BLOCK_MS = 1000    -- how long one read waits for new entries
M.HEARTBEAT_S = 2    -- at most one refresh of a running job's entry this often

-- "redis://HOST[:PORT]/STREAM" -> {host, port, stream, url}; raises one line.
function M.parse_url(url, flag)
  flag = flag or "--queue"
  local rest = type(url) == "string" and url:match("^redis://(.*)$")
  if not rest then error(string.format("%s %s: must be redis://HOST:PORT/STREAM", flag, tostring(url)), 0) end
  if rest:find("@", 1, true) then error(string.format("%s %s: passwords in the URL are not supported", flag, url), 0) end
  local host, port, stream = rest:match("^%[([^%]]+)%]:?(%d*)/(.*)$")
  if not host then host, port, stream = rest:match("^([^/:]+):?(%d*)/(.*)$") end
  if not host then error(string.format("%s %s: must be redis://HOST:PORT/STREAM", flag, url), 0) end
  port = port == "" and 6379 or tonumber(port)
  if port < 1 or port > 65535 then error(string.format("%s %s: the port must be 1 .. 65535", flag, url), 0) end
  if stream == "" or #stream > 200 or not stream:match("^[%w_.:%-]+$") then
    error(string.format("%s %s: the stream name must be letters, digits, '_', '.', ':' or '-'", flag, url), 0)
  end
  return {host = host, port = math.tointeger(port), stream = stream, url = url,
          results = stream .. ":results", done = stream .. ":done"}
end

local function connect(u)
  local c, err = mr.redis.connect(u.host, u.port, {timeout = 30})
  if not c then error(err, 0) end
  return c
end

-- A call that must work; raises its message (a lost server ends the worker).
local function call(c, ...)
  local r, err = c:call(...)
  if r == nil then error(string.format("redis %s: %s", (...), err), 0) end
  return r
end

local function ensure_group(c, u, group)
  local r, err, code = c:call("XGROUP", "CREATE", u.stream, group, "0", "MKSTREAM")
  if r == nil and code ~= "BUSYGROUP" then error(string.format("redis XGROUP CREATE %s %s: %s", u.stream, group, err), 0) end
end

-- The fields of a stream entry {"k1", "v1", ...} as a table.
local function fields(list)
  local t = {}
  if type(list) ~= "table" then return t end
  for i = 1, #list - 1, 2 do t[list[i]] = list[i + 1] end
  return t
end

------------------------------------------------------------------ enqueue

-- Puts the jobs of the options on the stream; returns the exit code.
function M.enqueue_main(o)
  local u = M.parse_url(o.enqueue, "--enqueue")
  if o.queue then error("--enqueue and --queue: give one", 0) end
  if o.shard then error("--shard goes with a local batch, not --enqueue (every worker takes from one stream)", 0) end
  local jobs = B.jobs_of(o)
  local templates = B.templates()
  local prepared = B.prepare_all(jobs, templates, {seed = o.seed})
  local c <close> = connect(u)
  ensure_group(c, u, o.group or "moonreel")
  local n = 0
  for _, j in ipairs(prepared) do
    if j.error then io.stderr:write(string.format("effects: job %d (%s) will fail: %s\n", j.index, j.source, j.error)) end
    local images = {}
    for i, im in ipairs(j.images or {}) do images[i] = B.absolute(im) end
    local msg = {template = B.absolute(j.template), variant = j.variant, images = images, vars = j.vars, seed = j.seed,
                 output = j.output, id = j.id, source = j.source}
    call(c, "XADD", u.stream, "*", "id", j.id, "job", cjson.encode(msg))
    n = n + 1
  end
  io.stdout:write(string.format("enqueued %d jobs on %s (group %s)\n", n, u.url, o.group or "moonreel"))
  return 0
end

------------------------------------------------------------------ work

local function default_consumer()
  local host = os.getenv("HOSTNAME")
  if not host or host == "" then
    local f = io.open("/etc/hostname", "rb")
    host = f and f:read("l") or "worker"
    if f then f:close() end
  end
  local f = io.open("/proc/self/stat", "rb")
  local pid = f and f:read("n")
  if f then f:close() end
  return string.format("%s-%s", host, pid and math.tointeger(pid) or mr.random_seed():sub(-6))
end

-- The next entry for this consumer: a dead worker's first (pending longer
-- than claim_ms), else a new one (waiting up to BLOCK_MS). Returns
-- {id, fields, claimed}, or nil.
local function next_entry(c, u, group, consumer, claim_ms)
  local a = call(c, "XAUTOCLAIM", u.stream, group, consumer, math.floor(claim_ms), "0-0", "COUNT", 1)
  local entries = type(a[2]) == "table" and a[2] or {}
  for _, e in ipairs(entries) do
    if type(e) == "table" and type(e[1]) == "string" then return {id = e[1], fields = fields(e[2]), claimed = true} end
  end
  local r = call(c, "XREADGROUP", "GROUP", group, consumer, "COUNT", 1, "BLOCK", M.BLOCK_MS, "STREAMS", u.stream, ">")
  if r == mr.redis.null or type(r) ~= "table" then return nil end
  local stream = r[1]
  local e = stream and stream[2] and stream[2][1]
  if type(e) == "table" then return {id = e[1], fields = fields(e[2]), claimed = false} end
  return nil
end

-- Entries of the group delivered and not acknowledged, by anyone.
local function pending_count(c, u, group)
  local p = call(c, "XPENDING", u.stream, group)
  return type(p) == "table" and tonumber(p[1]) or 0
end

local function deliveries(c, u, group, id)
  local p = c:call("XPENDING", u.stream, group, id, id, 1)
  local e = type(p) == "table" and p[1]
  return type(e) == "table" and tonumber(e[4]) or 1
end

-- Works jobs from the stream until it is drained (or forever with --wait);
-- returns the exit code.
function M.work_main(o)
  local u = M.parse_url(o.queue, "--queue")
  for _, k in ipairs{"manifest", "template", "images", "var", "variant", "seed", "dry_run"} do
    if o[k] then error(string.format("--queue takes its jobs from the stream: --%s goes with a local batch or --enqueue",
      k:gsub("_", "-")), 0) end
  end
  if o.shard then error("--shard goes with a local batch; queue workers share one stream", 0) end
  if not o.out then error("--out DIR is required", 0) end
  local claim_ms = (o.claim_after or 600) * 1000
  if claim_ms < 100 then error("--claim-after: at least 0.1 seconds", 0) end
  local group = o.group or "moonreel"
  local consumer = o.consumer or default_consumer()
  local ok, merr = mr.mkdir(o.out)
  if not ok then error("--out: " .. merr, 0) end
  local c <close> = connect(u)
  ensure_group(c, u, group)
  local report = B.open_report(o.report or B.join(o.out, "report.jsonl"), true)
  local templates = B.templates()
  local runner = B.runner(o)
  local say = o.quiet and function() end or function(fmt, ...) io.stderr:write(string.format(fmt, ...), "\n") end
  local counts = {done = 0, failed = 0, skipped = 0}
  local t0 = mr.clock()

  local function finish(entry, rec)
    rec.consumer, rec.entry = consumer, entry.id
    if rec.status == "done" then
      call(c, "HSET", u.done, rec.id, cjson.encode({output = rec.output, bytes = rec.bytes, consumer = consumer}))
    end
    call(c, "XADD", u.results, "*", "id", rec.id or "", "status", rec.status, "result", cjson.encode(rec))
    report:append(rec)
    call(c, "XACK", u.stream, group, entry.id)
  end

  local function handle(entry)
    local raw = entry.fields.job and T.decode_json(entry.fields.job)
    if type(raw) ~= "table" or type(raw.template) ~= "string" then
      counts.failed = counts.failed + 1
      return finish(entry, {id = entry.fields.id, status = "failed", error = "the entry holds no job (field 'job')"})
    end
    local job = {index = -1, source = raw.source or entry.id, template = raw.template, variant = raw.variant,
                 images = type(raw.images) == "table" and raw.images or {}, vars = raw.vars, seed = raw.seed,
                 output = raw.output}
    local pok, perr = pcall(B.prepare, job, templates)
    if not pok then
      counts.failed = counts.failed + 1
      return finish(entry, {id = raw.id, source = job.source, status = "failed", error = tostring(perr):gsub("\n.*", "")})
    end
    -- a job some worker finished already (this entry was taken over, or enqueued twice)
    local d = c:call("HGET", u.done, job.id)
    local whole, local_rec = report:is_done(job, o.out)
    if not whole and type(d) == "string" then
      local rec = cjson.decode(d)
      local f = io.open(B.join(o.out, rec.output or job.output), "rb")
      whole = f ~= nil and f:seek("end") == rec.bytes
      if f then f:close() end
    end
    if whole then
      counts.skipped = counts.skipped + 1
      if type(d) ~= "string" and local_rec then -- done by a local batch into this --out: tell the other workers
        call(c, "HSET", u.done, job.id, cjson.encode({output = local_rec.output, bytes = local_rec.bytes, consumer = consumer}))
      end
      say("effects: %s already done; %s acknowledged", job.id, entry.id)
      call(c, "XADD", u.results, "*", "id", job.id, "status", "done", "result",
        cjson.encode({id = job.id, status = "done", output = job.output, consumer = consumer, entry = entry.id,
                      already = true}))
      call(c, "XACK", u.stream, group, entry.id)
      return
    end
    if entry.claimed and deliveries(c, u, group, entry.id) > M.MAX_DELIVERIES then
      counts.failed = counts.failed + 1
      return finish(entry, {id = job.id, source = job.source, status = "failed", output = job.output,
        error = string.format("given up: delivered more than %d times (its workers died running it)", M.MAX_DELIVERIES)})
    end
    say("effects: %s %s (%s)%s", entry.claimed and "taking over" or "running", job.id, job.source,
      entry.claimed and " from a worker that stopped" or "")
    local last = mr.clock()
    local function heartbeat()
      if mr.clock() - last >= M.HEARTBEAT_S then
        c:call("XCLAIM", u.stream, group, consumer, 0, entry.id, "JUSTID")
        last = mr.clock()
      end
    end
    local rec = runner:run(job, o.out, heartbeat)
    if rec.status == "done" then counts.done = counts.done + 1 else counts.failed = counts.failed + 1 end
    if rec.status ~= "done" then say("effects: %s failed: %s", job.id, rec.error) end
    finish(entry, rec)
  end

  local rok, rerr = pcall(function()
    runner:load_pack()
    say("effects: worker %s on %s (group %s)", consumer, u.url, group)
    while true do
      local entry = next_entry(c, u, group, consumer, claim_ms)
      if entry then
        handle(entry)
      elseif not o.wait and pending_count(c, u, group) == 0 then
        break -- nothing new, nothing in flight anywhere: the stream is drained
      end
    end
  end)
  runner:close()
  if not rok then
    if tostring(rerr):find("interrupted") then
      io.stderr:write("effects: interrupted; the job in hand stays pending for another worker\n")
      return 130
    end
    io.stderr:write("effects: ", (tostring(rerr):gsub("\n.*", "")), "\n")
    return 1
  end
  io.stdout:write(string.format("worker %s: %d done, %d failed, %d already done, in %s\n", consumer, counts.done,
    counts.failed, counts.skipped, B.fmt_time(mr.clock() - t0)))
  return counts.failed > 0 and 1 or 0
end

return M
