-- recipes/effects.lua end to end on the conformance packs: outputs named by
-- content, the report, resuming (after kill -9 at random moments), per-job
-- failures, shards, the dry run, bad input, LoRAs swapped between templates
-- on one loaded model, every task, and the benchmark.
local mr = require "moonreel"
local cjson = require "cjson"

local SRC = os.getenv("MOONREEL_SOURCE") or ".."
local F = dofile(SRC .. "/tests/batch/fixture.lua")
local H = F.H
local EFFECTS = SRC .. "/recipes/effects.lua"

local function effects(args, opts)
  local argv = {EFFECTS}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return F.run(argv, opts)
end

local function done_lines(report)
  local out = {}
  for _, r in ipairs(F.report(report)) do if r and r.status == "done" then out[#out + 1] = r end end
  return out
end

describe("effects batch", function()
  local tmp, f

  setup(function()
    tmp = H.tmpdir()
    f = F.build(tmp)
  end)

  teardown(function()
    if tmp then H.rm(tmp) end
  end)

  local n = 0
  local function fresh(name)
    n = n + 1
    local d = string.format("%s/%s-%d", tmp, name, n)
    assert(mr.mkdir(d))
    return d
  end

  it("turns a folder of photos into one clip each, named by content, with a report; a rerun skips them", function()
    local photos = fresh("photos")
    for i, p in ipairs(f.photos) do assert(os.execute("cp " .. H.q(p) .. " " .. H.q(photos .. "/" .. i .. ".png"))) end
    F.photo(photos .. "/small.png", 12, 12, 9)         -- under min_side 16
    F.write(photos .. "/broken.png", "not a picture")    -- not an image
    F.write(photos .. "/notes.txt", "left out")
    local out = fresh("out")
    local code, o, e = effects({"--template", f.tpl_a, "--images", photos, "--out", out, "--model", f.packs.ti2v})
    assert.are.equal(1, code, e) -- two jobs failed
    assert.truthy(e:find("1 file in --images is not .png/.jpg/.jpeg/.webp: left out", 1, true), e)
    assert.truthy(e:find("batch 5/5: 3 done, 2 failed, [%d.]+ clips/min, 0s left"), e)
    assert.truthy(o:find("5 jobs: 3 done now, 0 done before, 2 failed", 1, true), o)
    local rep = F.report(out .. "/report.jsonl")
    assert.are.equal(5, #rep)
    local done, failed = {}, {}
    for _, r in ipairs(rep) do
      assert.truthy(r.id:match("^fx%-%x+$") and #r.id == 3 + 16, r.id)
      if r.status == "done" then done[#done + 1] = r else failed[r.source:match("[^/]+$")] = r.error end
    end
    assert.are.equal(3, #done)
    assert.truthy(failed["small.png"]:find("is 12x12; the template needs at least 16 pixels on each side", 1, true))
    assert.truthy(failed["broken.png"]:find("is not an image", 1, true), failed["broken.png"])
    for _, r in ipairs(done) do
      assert.are.equal(r.id .. ".mp4", r.output)
      local st = assert(F.ffprobe(out .. "/" .. r.output))
      assert.are.equal("5", st.nb_read_frames)
      local file = assert(io.open(out .. "/" .. r.output, "rb"))
      assert.are.equal(r.bytes, file:seek("end"))
      file:close()
      local side = F.read_json(out .. "/" .. r.output .. ".json")
      assert.are.equal(r.seed, side.params.seed)
      assert.are.equal("ball zq", side.params.prompt)
      assert.are.equal(f.dir .. "/tpl/a.safetensors", side.params.loras[1].file)
      assert.are.equal(mr.sha256(f.dir .. "/tpl/a.safetensors"), side.params.loras[1].sha256)
      assert.truthy(side.command:find("--lora " .. f.dir .. "/tpl/a.safetensors:1", 1, true), side.command)
    end
    assert.are.equal(3, #F.files(out, "%.mp4$"))
    -- the rerun: the three done jobs are skipped, the two failed ones tried again
    code, o, e = effects({"--template", f.tpl_a, "--images", photos, "--out", out, "--model", f.packs.ti2v})
    assert.are.equal(1, code, e)
    assert.truthy(o:find("5 jobs: 0 done now, 3 done before, 2 failed", 1, true), o)
    assert.are.equal(3, #done_lines(out .. "/report.jsonl"))
    assert.are.equal(7, #F.report(out .. "/report.jsonl"))
    -- a clip whose file is gone (or cut short) is not done
    os.remove(out .. "/" .. done[1].output)
    code, o = effects({"--template", f.tpl_a, "--images", photos, "--out", out, "--model", f.packs.ti2v})
    assert.truthy(o:find("5 jobs: 1 done now, 2 done before, 2 failed", 1, true), o)
    assert.is_true(H.exists(out .. "/" .. done[1].output))
  end)

  it("gives a job the same id in every process and wherever its files are, and another id for other content", function()
    local B = mr.batch
    local templates = B.templates()
    local function id(job) return B.prepare(job, templates).id end
    local base = {template = f.tpl_a, images = {f.photos[1]}, vars = {subject = "cup"}, seed = "7"}
    local function with(k, v)
      local j = {}
      for key, x in pairs(base) do j[key] = x end
      if k then j[k] = v end
      return j
    end
    local a = id(with())
    -- the same bytes elsewhere, a copy of the template elsewhere: the same id
    local d = fresh("copy")
    assert(os.execute("cp " .. H.q(f.photos[1]) .. " " .. H.q(d .. "/other-name.png")))
    assert(os.execute("cp " .. H.q(f.tpl_a) .. " " .. H.q(f.dir .. "/tpl/a-copy.json")))
    assert.are.equal(a, id(with("images", {d .. "/other-name.png"})))
    assert.are.equal(a, id(with("template", f.dir .. "/tpl/a-copy.json")))
    -- a variable given as its default is the same job as one left to it
    assert.are.equal(id(with("vars", {subject = "ball"})), id(with("vars", nil)))
    -- other content, another id
    local ids = {[a] = true}
    for _, j in ipairs{with("seed", "8"), with("vars", {subject = "mug"}), with("images", {f.photos[2]}),
                       with("variant", "fast"), with("template", f.tpl_b)} do
      local other = id(j)
      assert.is_nil(ids[other], other)
      ids[other] = true
    end
    -- a setting changed without a new version, or a LoRA's bytes: another id too
    local t = F.template()
    t.sampling.steps = 3
    F.write_json(f.dir .. "/tpl/a-steps.json", t)
    assert.are_not.equal(a, id(with("template", f.dir .. "/tpl/a-steps.json")))
    t = F.template{title = "Another title", description = "words"}
    F.write_json(f.dir .. "/tpl/a-title.json", t)
    assert.are.equal(a, id(with("template", f.dir .. "/tpl/a-title.json"))) -- cosmetic fields are not content
    -- another process, the key order of a manifest line: the same id
    local man = fresh("man") .. "/jobs.jsonl"
    F.write(man, string.format('{"seed": "7", "vars": {"subject": "cup"}, "images": [%s], "template": %s}\n',
      cjson.encode(f.photos[1]), cjson.encode(f.tpl_a)))
    local code, o, e = effects({"--manifest", man, "--dry-run", "--out", fresh("o")})
    assert.are.equal(0, code, e)
    assert.truthy(o:find(" " .. a .. " ", 1, true), o)
    -- and an id fixed here, so a change to what goes into ids is seen (ID_VERSION)
    assert.are.equal("moonreel.job/1", B.ID_VERSION)
  end)

  it("fails a job alone with its reason: unreadable, missing or too small images, a variable too long", function()
    local d = fresh("fail")
    F.write(d .. "/broken.png", "\x89PNG\r\n\x1a\nnot really")
    F.photo(d .. "/wide.png", 64, 16, 3)
    F.photo(d .. "/tiny.png", 10, 30, 4)
    local function line(t) return cjson.encode(t) end
    local jobs = {
      line{template = f.tpl_a, images = {f.photos[1]}},
      line{template = f.tpl_a, images = {d .. "/broken.png"}},
      line{template = f.tpl_a, images = {d .. "/missing.png"}},
      line{template = f.tpl_a, images = {d .. "/tiny.png"}},
      line{template = f.tpl_a, images = {d .. "/wide.png"}},
      line{template = f.tpl_a, images = {f.photos[2]}, vars = {subject = "a very long subject"}},
      line{template = f.tpl_a, images = {f.photos[2]}, vars = {colour = "red"}},
      line{template = f.tpl_a, images = {f.photos[2], f.photos[3]}},
      line{template = f.tpl_b, images = {f.photos[3]}},
    }
    F.write(d .. "/jobs.jsonl", table.concat(jobs, "\n") .. "\n")
    local out = d .. "/out"
    local code, o, e = effects({"--manifest", d .. "/jobs.jsonl", "--out", out, "--model", f.packs.ti2v})
    assert.are.equal(1, code, e)
    assert.truthy(o:find("9 jobs: 2 done now, 0 done before, 7 failed", 1, true), o)
    local by = {}
    for _, r in ipairs(F.report(out .. "/report.jsonl")) do by[r.job] = r end
    assert.are.equal("done", by[0].status)
    assert.are.equal("done", by[8].status)
    local want = {
      [1] = "images[1]: '" .. d .. "/broken.png'",
      [2] = "images[1]: cannot open '" .. d .. "/missing.png'",
      [3] = "images[1]: " .. d .. "/tiny.png is 10x30; the template needs at least 16 pixels on each side",
      [4] = "images[1]: " .. d .. "/wide.png is 64x16; the template takes an aspect of at most 3:1",
      [5] = "vars.subject: 19 characters; the template takes at most 10",
      [6] = "vars.colour: the template has no such variable (it takes subject)",
      [7] = "images: the template takes 1 image (this job has 2)",
    }
    for i, msg in pairs(want) do
      assert.are.equal("failed", by[i].status, i)
      assert.truthy(by[i].error:find(msg, 1, true), by[i].error)
      assert.truthy(e:find(string.format("job %d (%s:%d) failed: ", i, d .. "/jobs.jsonl", i + 1), 1, true), e)
    end
    -- the failures came before the model loaded
    local first_fail = e:find("failed:", 1, true)
    local load = e:find("loading the model", 1, true)
    assert.is_true(first_fail < load)
  end)

  -- enough work that three runs die mid-batch however fast the machine is
  local N_KILL_JOBS = 12

  it("resumes after kill -9 at random moments with every clip made once and whole", function()
    local seed = os.time()
    math.randomseed(seed)
    local d = fresh("kill")
    local t = F.template()
    t.sampling.steps = 8 -- a job long enough to be killed inside
    local tpl = F.write_json(f.dir .. "/tpl/kill.json", t)
    local lines = {}
    for i = 1, N_KILL_JOBS do
      lines[i] = cjson.encode{template = tpl, images = {f.photos[(i - 1) % 3 + 1]}, seed = tostring(i)}
    end
    F.write(d .. "/jobs.jsonl", table.concat(lines, "\n") .. "\n")
    local out = d .. "/out"
    local argv = {EFFECTS, "--manifest", d .. "/jobs.jsonl", "--out", out, "--model", f.packs.ti2v}
    -- each run is killed at a random moment of a job: after it has finished
    -- one job (so every run makes progress), a random part of the shortest
    -- job's time later. A run's first job also warms up (it builds the
    -- pipelines), so it can be many times a later one: the first run waits
    -- for a second job, or its delay, timed by the warm-up alone, could
    -- outlast the whole batch. Runs go on until three died mid-batch, so at
    -- most three jobs finish per run and twelve jobs leave room for that
    -- however fast the machine is
    local kills, points = 0, {}
    for k = 1, 10 do
      if kills >= 3 then break end
      local before = #done_lines(out .. "/report.jsonl")
      local need = before == 0 and 2 or 1
      local pid = F.start(argv, d .. "/run" .. k .. ".log")
      local t0 = mr.clock()
      while F.alive(pid) and #done_lines(out .. "/report.jsonl") < before + need and mr.clock() - t0 < 300 do
        F.sleep(0.02)
      end
      local per_job = math.huge
      for _, r in ipairs(done_lines(out .. "/report.jsonl")) do per_job = math.min(per_job, r.seconds) end
      if per_job == math.huge then per_job = 0.5 end
      local delay = math.random() * per_job
      points[#points + 1] = string.format("%.2f of %.2f s", delay, per_job)
      F.sleep(delay)
      if F.alive(pid) then
        os.execute("kill -9 " .. pid)
        kills = kills + 1
      end
      assert.is_true(F.wait_gone(pid, 60))
    end
    local why = string.format("(math.randomseed %d; killed %s into a job)", seed, table.concat(points, ", "))
    assert.is_true(kills >= 3, "too few runs were killed mid-batch " .. why)
    local code, o, e = F.run(argv)
    assert.are.equal(0, code, e .. why)
    -- every job: one done line, one clip under its id, whole
    local ids = {}
    for _, r in ipairs(done_lines(out .. "/report.jsonl")) do
      assert.is_nil(ids[r.id], "two done lines for " .. r.id .. " " .. why)
      ids[r.id] = r
    end
    local clips = F.files(out, "%.mp4$")
    assert.are.equal(N_KILL_JOBS, #clips, why)
    for _, c in ipairs(clips) do
      local id = c:match("^(.*)%.mp4$")
      assert.is_table(ids[id], c .. " " .. why)
      assert.are.equal("5", assert(F.ffprobe(out .. "/" .. c)).nb_read_frames, why)
      assert.is_true(H.exists(out .. "/" .. c .. ".json"))
    end
    -- no temporaries left, and a broken line from a kill did not stop the resume
    assert.are.same({}, F.files(out, "tmp"), why)
    local broken = 0
    for _, r in ipairs(F.report(out .. "/report.jsonl")) do if not r then broken = broken + 1 end end
    assert.is_true(broken <= kills)
    assert.truthy(o:find(N_KILL_JOBS .. " jobs: ", 1, true), o)
  end)

  it("reads a report whose last line a kill cut short, and starts the next line on its own", function()
    local d = fresh("cut")
    local out = d .. "/out"
    local code, _, e = effects({"--template", f.tpl_a, "--images", f.dir .. "/photos", "--out", out, "--model",
      f.packs.ti2v})
    assert.are.equal(0, code, e)
    local rep = out .. "/report.jsonl"
    local text = assert(H.read(rep))
    local lines = {}
    for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    -- the last job's line cut in the middle, as a kill during its write leaves it
    F.write(rep, table.concat(lines, "\n", 1, 2) .. "\n" .. lines[3]:sub(1, 40))
    code, _, e = effects({"--template", f.tpl_a, "--images", f.dir .. "/photos", "--out", out, "--model",
      f.packs.ti2v})
    assert.are.equal(0, code, e)
    assert.truthy(e:find("1 unreadable line ignored", 1, true), e)
    local after = F.report(rep)
    assert.are.equal(4, #after)
    assert.is_false(after[3])
    assert.are.equal("done", after[4].status)
    assert.are.equal(3, #F.files(out, "%.mp4$"))
  end)

  -- A full disk, played by a file-size limit (SIGXFSZ ignored: writes fail
  -- with EFBIG, a write that crosses the limit is cut short as on a full disk).
  local FULL = "trap '' XFSZ; ulimit -f %d; "

  it("a full disk at the report: the clip stays whole, the report gets no half line, a rerun resumes", function()
    local d = fresh("full-report")
    local out = d .. "/out"
    assert(mr.mkdir(out))
    local manifest = F.write(d .. "/jobs.jsonl", cjson.encode({template = f.tpl_a, images = {f.photos[3]}}) .. "\n")
    -- earlier runs' lines up to 60 bytes under the limit (64 blocks of 512 bytes): the clip (about 7 KB) and its
    -- sidecar fit, the job's report line does not
    local limit = 64 * 512
    local lines = {}
    local size = 0
    while size < limit - 60 - 200 do
      local l = cjson.encode({id = "old-" .. #lines, status = "failed", error = string.rep("x", 100)}) .. "\n"
      lines[#lines + 1] = l
      size = size + #l
    end
    local pad = limit - 60 - size - #cjson.encode({id = "pad", status = "failed", error = ""}) - 1
    lines[#lines + 1] = cjson.encode({id = "pad", status = "failed", error = string.rep("y", pad)}) .. "\n"
    local before = table.concat(lines)
    assert.are.equal(limit - 60, #before)
    local rep = F.write(out .. "/report.jsonl", before)
    local args = {"--manifest", manifest, "--out", out, "--model", f.packs.ti2v, "--quiet"}
    local code, _, e = effects(args, {env = FULL:format(64)})
    assert.are.equal(1, code, e)
    assert.truthy(e:find("effects: cannot append to the report '" .. F.esc(rep) .. "': File too large\n$"), e)
    -- the report as it was: every line whole
    assert.are.equal(before, H.read(rep))
    -- the clip and its sidecar whole under their names, no temporary
    local clips = F.files(out, "%.mp4$")
    assert.are.equal(1, #clips)
    assert.are.equal("5", F.ffprobe(out .. "/" .. clips[1]).nb_read_frames)
    assert.truthy(F.read_json(out .. "/" .. clips[1] .. ".json").params)
    assert.are.same({}, F.files(out, "tmp"))
    -- the rerun makes the job again (no done line) and records it; the next finds it done
    code, _, e = effects(args)
    assert.are.equal(0, code, e)
    assert.are.equal(1, #done_lines(rep))
    assert.are.equal(#lines + 1, #F.report(rep))
    local o
    code, o, e = effects(args)
    assert.are.equal(0, code, e)
    assert.truthy(o:find("1 jobs: 0 done now, 1 done before, 0 failed", 1, true), o)
  end)

  it("a full disk at a clip: the job fails, no part of the clip is left, the report parses, a rerun makes it", function()
    local d = fresh("full-clip")
    local out = d .. "/out"
    local manifest = F.write(d .. "/jobs.jsonl", cjson.encode({template = f.tpl_a, images = {f.photos[3]}}) .. "\n")
    local args = {"--manifest", manifest, "--out", out, "--model", f.packs.ti2v, "--quiet"}
    -- 4 KB: the report line fits, the clip (about 7 KB) does not
    local code, _, e = effects(args, {env = FULL:format(8)})
    assert.are.equal(1, code, e)
    assert.are.same({"report.jsonl"}, mr.listdir(out))
    local rep = F.report(out .. "/report.jsonl")
    assert.are.equal(1, #rep)
    assert.are.equal("failed", rep[1].status)
    assert.truthy(rep[1].error:find("File too large", 1, true), rep[1].error)
    code, _, e = effects(args)
    assert.are.equal(0, code, e)
    local clips = F.files(out, "%.mp4$")
    assert.are.equal(1, #clips)
    assert.are.equal("5", F.ffprobe(out .. "/" .. clips[1]).nb_read_frames)
    assert.are.equal(1, #done_lines(out .. "/report.jsonl"))
  end)

  it("splits the jobs into shards that cover each exactly once, by --shard I/N and $JOB_COMPLETION_INDEX", function()
    local d = fresh("shard")
    local lines = {}
    for i = 1, 7 do lines[i] = cjson.encode{template = f.tpl_a, images = {f.photos[(i - 1) % 3 + 1]}, seed = tostring(i)} end
    F.write(d .. "/jobs.jsonl", table.concat(lines, "\n") .. "\n")
    local function indices(o)
      local t = {}
      for idx in o:gmatch("\n%s+(%d+)  fx%-") do t[#t + 1] = tonumber(idx) end
      return t
    end
    local seen = {}
    for i = 0, 2 do
      local code, o, e = effects({"--manifest", d .. "/jobs.jsonl", "--out", d .. "/out", "--dry-run", "--shard", i .. "/3"})
      assert.are.equal(0, code, e)
      for _, idx in ipairs(indices("\n" .. o)) do
        assert.are.equal(i, idx % 3)
        assert.is_nil(seen[idx])
        seen[idx] = true
      end
      -- the same shard from the environment
      local code2, o2 = effects({"--manifest", d .. "/jobs.jsonl", "--out", d .. "/out", "--dry-run", "--shard", "/3"},
        {env = "JOB_COMPLETION_INDEX=" .. i .. " "})
      assert.are.equal(0, code2)
      assert.are.same(indices("\n" .. o), indices("\n" .. o2))
    end
    for idx = 0, 6 do assert.is_true(seen[idx], "job " .. idx .. " is in no shard") end
    -- the shards run as the Kubernetes example in docs/templates.md runs them: one output folder, a report each
    for i = 0, 2 do
      local line = string.format("%s %s --manifest %s --out %s --shard /3 --report %s/report-$JOB_COMPLETION_INDEX.jsonl --model %s",
        H.q(F.BIN), H.q(EFFECTS), H.q(d .. "/jobs.jsonl"), H.q(d .. "/out"), H.q(d .. "/out"), H.q(f.packs.ti2v))
      local code, _, e = F.sh(string.format("JOB_COMPLETION_INDEX=%d sh -c %s", i, H.q(line)))
      assert.are.equal(0, code, e)
    end
    assert.are.equal(7, #F.files(d .. "/out", "%.mp4$"))
    local jobs = 0
    for i = 0, 2 do
      for _, r in ipairs(F.report(d .. "/out/report-" .. i .. ".jsonl")) do
        assert.are.equal(i, r.job % 3)
        assert.are.equal("done", r.status)
        jobs = jobs + 1
      end
    end
    assert.are.equal(7, jobs)
    -- what --shard refuses
    for _, bad in ipairs{{"3/3", "I must be below N"}, {"1/0", "must be I/N"}, {"x", "must be I/N"},
                         {"/3", "$JOB_COMPLETION_INDEX is not set"}} do
      local code, _, e = effects({"--manifest", d .. "/jobs.jsonl", "--out", d .. "/out", "--shard", bad[1]},
        {env = "env -u JOB_COMPLETION_INDEX "})
      assert.are.equal(2, code)
      assert.truthy(e:find("--shard " .. bad[1] .. ": ", 1, true) and e:find(bad[2], 1, true), e)
    end
  end)

  it("checks every job in a dry run and prints the plan without loading the model or writing", function()
    local d = fresh("dry")
    F.photo(d .. "/small.png", 8, 8, 1)
    F.write(d .. "/jobs.jsonl", cjson.encode{template = f.tpl_a, images = {f.photos[1]}} .. "\n" ..
      cjson.encode{template = f.tpl_a, images = {d .. "/small.png"}} .. "\n")
    local code, o, e = effects({"--manifest", d .. "/jobs.jsonl", "--out", d .. "/out", "--dry-run",
      "--model", d .. "/no-such-model"})
    assert.are.equal(1, code, e) -- one job would fail
    assert.truthy(o:find("plan: 2 jobs, outputs in " .. d .. "/out", 1, true), o)
    assert.truthy(o:find("fx@1.0.0  " .. F.esc(f.photos[1]) .. "  seed %d+  %-> " .. F.esc(d) .. "/out/fx%-%x+%.mp4  run"), o)
    assert.truthy(o:find("FAIL images[1]: " .. d .. "/small.png is 8x8", 1, true), o)
    assert.truthy(o:find("2 jobs: 1 to run, 0 done, 1 would fail", 1, true), o)
    assert.is_false(H.exists(d .. "/out"))
  end)

  it("refuses bad input in one line naming the file and field, before any work", function()
    local d = fresh("bad")
    local t = F.template()
    t.loras[1].strength = "1"
    t.sampling.steps = 0
    local bad_tpl = F.write_json(f.dir .. "/tpl/bad.json", t)
    local function refused(args, want, env)
      local code, o, e = effects(args, {env = env})
      assert.are.equal(2, code, e)
      for _, w in ipairs(want) do assert.truthy(e:find(w, 1, true), e) end
      assert.are.equal("", o)
      assert.is_false(H.exists(d .. "/out"))
      return e
    end
    local e = refused({"--template", bad_tpl, "--images", f.dir .. "/photos", "--out", d .. "/out"},
      {"effects: " .. bad_tpl .. ": loras[1].strength: must be a number\n",
       "effects: " .. bad_tpl .. ": sampling.steps: must be an integer 1 .. 10000 (it is 0)\n"})
    assert.are.equal(2, select(2, e:gsub("\n", "")))
    -- a manifest line
    F.write(d .. "/jobs.jsonl", cjson.encode{template = f.tpl_a, images = {f.photos[1]}} .. "\n" ..
      '{"template": "a.json", "seed": -4}\n')
    refused({"--manifest", d .. "/jobs.jsonl", "--out", d .. "/out"},
      {"effects: " .. d .. "/jobs.jsonl:2: seed: must be an integer 0 .. 18446744073709551615"})
    F.write(d .. "/jobs2.jsonl", '{"template": "a.json", "imgs": []}\n')
    refused({"--manifest", d .. "/jobs2.jsonl", "--out", d .. "/out"},
      {"jobs2.jsonl:1: imgs: unknown field (a job takes template, images, vars, seed, variant, output)"})
    F.write(d .. "/jobs3.jsonl", '{"template": "a.json", "output": "../x.mp4"}\n')
    refused({"--manifest", d .. "/jobs3.jsonl", "--out", d .. "/out"}, {"jobs3.jsonl:1: output: must stay inside --out"})
    F.write(d .. "/jobs4.jsonl", "{\"template\": \"a.json\",\n")
    refused({"--manifest", d .. "/jobs4.jsonl", "--out", d .. "/out"}, {"jobs4.jsonl:1: not JSON"})
    -- two jobs writing one file
    F.write(d .. "/jobs5.jsonl", cjson.encode{template = f.tpl_a, images = {f.photos[1]}, output = "x.mp4"} .. "\n" ..
      cjson.encode{template = f.tpl_a, images = {f.photos[2]}, output = "x.mp4"} .. "\n")
    refused({"--manifest", d .. "/jobs5.jsonl", "--out", d .. "/out"}, {"jobs5.jsonl:1 and " .. d .. "/jobs5.jsonl:2 both write x.mp4"})
    -- a LoRA whose bytes are not the template's
    t = F.template()
    t.loras[1].sha256 = string.rep("0", 64)
    local pinned = F.write_json(f.dir .. "/tpl/pinned.json", t)
    refused({"--template", pinned, "--images", f.dir .. "/photos", "--out", d .. "/out"},
      {pinned .. ": loras[1].sha256: " .. f.dir .. "/tpl/a.safetensors has sha256 " .. mr.sha256(f.dir .. "/tpl/a.safetensors")})
    t = F.template{loras = {{file = "gone.safetensors"}}}
    local gone = F.write_json(f.dir .. "/tpl/gone.json", t)
    refused({"--template", gone, "--images", f.dir .. "/photos", "--out", d .. "/out"}, {gone .. ": loras[1].file: cannot open"})
    refused({"--template", f.tpl_a, "--images", f.dir .. "/photos", "--out", d .. "/out", "--variant", "slow"},
      {f.tpl_a .. ": variant: no variant 'slow' (it has fast)"})
    refused({"--template", f.tpl_a, "--images", f.dir .. "/photos"}, {"--out DIR is required"})
    refused({"--template", f.tpl_a, "--images", d .. "/nothing", "--out", d .. "/out"}, {"--images: cannot open folder"})
    refused({"--template", f.tpl_a, "--images", f.dir .. "/photos", "--out", d .. "/out", "--seed", "x"}, {"--seed x: "})
    refused({"--images", f.dir .. "/photos", "--out", d .. "/out"}, {"no jobs: give --template"})
    F.write(d .. "/file", "")
    local e2 = select(3, effects({"--template", f.tpl_a, "--images", f.dir .. "/photos", "--out", d .. "/out2",
      "--report", d .. "/file/report.jsonl", "--model", f.packs.ti2v}))
    assert.truthy(e2:find("--report: cannot make folder '" .. d .. "/file'", 1, true), e2)
    assert.are.same({}, F.files(d .. "/out2", "%.mp4$")) -- refused before any clip
    refused({"--template", f.tpl_a, "--images", f.dir .. "/photos", "--out", d .. "/out", "--var", "nope"},
      {"--var nope: must be NAME=VALUE"})
  end)

  it("swaps only the LoRAs when the template changes: the model loads once, each clip as if run alone", function()
    local d = fresh("swap")
    local lines = {}
    for i, tpl in ipairs{f.tpl_a, f.tpl_b, f.tpl_a, f.tpl_b} do
      lines[i] = cjson.encode{template = tpl, images = {f.photos[i % 3 + 1]}, seed = "3", output = "j" .. i .. ".mp4"}
    end
    F.write(d .. "/jobs.jsonl", table.concat(lines, "\n") .. "\n")
    local code, _, e = effects({"--manifest", d .. "/jobs.jsonl", "--out", d .. "/out", "--model", f.packs.ti2v})
    assert.are.equal(0, code, e)
    assert.are.equal(1, select(2, e:gsub("loading the model", "")))
    for i, lora in ipairs{"a", "b", "a", "b"} do
      local side = F.read_json(d .. "/out/j" .. i .. ".mp4.json")
      assert.are.equal(1, #side.params.loras)
      assert.are.equal(f.dir .. "/tpl/" .. lora .. ".safetensors", side.params.loras[1].file)
      assert.are.equal(lora == "a" and 1 or 0.8, side.params.loras[1].strength)
    end
    -- job 3 (template a after b) alone in a fresh process gives the same frames
    F.write(d .. "/one.jsonl", lines[3] .. "\n")
    code, _, e = effects({"--manifest", d .. "/one.jsonl", "--out", d .. "/alone", "--model", f.packs.ti2v})
    assert.are.equal(0, code, e)
    local mixed <close> = assert(mr.video.load(d .. "/out/j3.mp4"))
    local alone <close> = assert(mr.video.load(d .. "/alone/j3.mp4"))
    assert.are.same(alone:totable(), mixed:totable())
    -- and template b's LoRA changed the clip (the same photo and seed without it differ)
    F.write(d .. "/b.jsonl", cjson.encode{template = f.tpl_b, images = {f.photos[1]}, seed = "3", output = "b.mp4"} .. "\n")
    local nolora = F.template{id = "fy", loras = {}, prompt = {template = "{subject} qz", trigger = "qz"}}
    F.write_json(f.dir .. "/tpl/b-none.json", nolora)
    F.write(d .. "/bn.jsonl", cjson.encode{template = f.dir .. "/tpl/b-none.json", images = {f.photos[1]}, seed = "3",
      output = "bn.mp4"} .. "\n")
    assert.are.equal(0, (effects({"--manifest", d .. "/b.jsonl", "--out", d .. "/cmp", "--model", f.packs.ti2v})))
    assert.are.equal(0, (effects({"--manifest", d .. "/bn.jsonl", "--out", d .. "/cmp", "--model", f.packs.ti2v})))
    local with <close> = assert(mr.video.load(d .. "/cmp/b.mp4"))
    local without <close> = assert(mr.video.load(d .. "/cmp/bn.mp4"))
    assert.are_not.same(with:totable(), without:totable())
  end)

  it("runs every task: t2v, flf2v and r2v templates on their packs, and turns the size to a portrait photo", function()
    local d = fresh("tasks")
    local function one(pack, tpl, images)
      local path = F.write_json(f.dir .. "/tpl/" .. tpl.id .. ".json", tpl) -- beside the LoRAs
      F.write(d .. "/" .. tpl.id .. ".jsonl", cjson.encode{template = path, images = images} .. "\n")
      local code, o, e = effects({"--manifest", d .. "/" .. tpl.id .. ".jsonl", "--out", d .. "/out", "--model", pack})
      assert.are.equal(0, code, tpl.id .. ": " .. e)
      local rec = done_lines(d .. "/out/report.jsonl")
      rec = rec[#rec]
      return assert(F.ffprobe(d .. "/out/" .. rec.output)), F.read_json(d .. "/out/" .. rec.output .. ".json")
    end
    local base = {schema = "moonreel.template/1", version = "1", title = "t", video = {width = 32, height = 32, frames = 5},
                  sampling = {steps = 2}}
    local function tpl(over)
      local t = {}
      for k, v in pairs(base) do t[k] = v end
      for k, v in pairs(over) do t[k] = v end
      return t
    end
    local st, side = one(f.packs.t2v, tpl{id = "t-t2v", task = "t2v", prompt = {template = "a red ball"}}, nil)
    assert.are.equal("t2v", side.recipe)
    assert.are.equal("5", st.nb_read_frames)
    st, side = one(f.packs.i2v, tpl{id = "t-flf", task = "flf2v", inputs = {images = {roles = {"first", "last"}}},
      prompt = {template = "a red ball"}}, {f.photos[1], f.photos[2]})
    assert.are.equal("flf2v", side.recipe)
    assert.are.equal(f.photos[2], side.params.last_image)
    st, side = one(f.packs.phantom, tpl{id = "t-r2v", task = "r2v", inputs = {images = {max = 2}},
      prompt = {template = "two balls"}, preprocess = {ref_fit = "pad"}, sampling = {steps = 2, cfg_img = 2}},
      {f.photos[1], f.photos[3]})
    assert.are.equal("r2v", side.recipe)
    assert.are.equal(2, #side.params.refs)
    -- follow_input: a 64x32 template on a portrait photo gives 32x64
    local t = F.template{id = "t-orient", video = {width = 64, height = 32, frames = 5, orientation = "follow_input"}}
    st = one(f.packs.ti2v, t, {f.photos[2]}) -- 32x48: portrait
    assert.are.equal(32, st.width)
    assert.are.equal(64, st.height)
    st = one(f.packs.ti2v, F.template{id = "t-orient2", video = t.video}, {f.photos[1]}) -- 48x32: landscape
    assert.are.equal(64, st.width)
    assert.are.equal(32, st.height)
  end)

  it("runs the resident side of the PyTorch benchmark: one generation per request (tools/bench/t2v_resident.lua)",
    function()
    local out = f.dir .. "/resident.mp4"
    local code, o, e = F.sh(string.format("printf '7 %s\\n' | %s %s --model %s --steps 2 --width 32 --height 32 "
      .. "--frames 5 --prompt 'a ball'", out, F.BIN, SRC .. "/tools/bench/t2v_resident.lua", f.packs.ti2v))
    assert.are.equal(0, code, e)
    assert.truthy(o:find("^ready\ntext [%d.]+ denoise [%d.]+ decode [%d.]+\n$"), o)
    assert.truthy(H.exists(out))
    code, o, e = F.run({SRC .. "/tools/bench/t2v_resident.lua", "--steps", "two"})
    assert.are_not.equal(0, code)
    assert.truthy(e:find("--steps: an integer", 1, true), e)
  end)

  it("benchmarks a batch with resident models against one process per clip (tools/bench/batch.lua)", function()
    local code, o, e = F.run({SRC .. "/tools/bench/batch.lua", "--model", f.packs.ti2v, "--jobs", "3", "--steps", "2",
      "--width", "32", "--height", "32", "--frames", "5", "--prompt", "a ball", "--memory-at", "1,2,3"})
    assert.are.equal(0, code, e)
    assert.truthy(o:find("resident: 3 clips in [%d.]+ s, [%d.]+ clips/min"), o)
    assert.truthy(o:find("one process per clip: 3 clips in [%d.]+ s, [%d.]+ clips/min"), o)
    assert.truthy(o:find("ratio %(resident / per process%): [%d.]+x"), o)
    for _, j in ipairs{1, 2, 3} do
      assert.truthy(o:find("after job " .. j .. ": device live [%d.]+ MiB, held [%d.]+ MiB, host rss [%d.]+ MiB"), o)
    end
  end)
end)
