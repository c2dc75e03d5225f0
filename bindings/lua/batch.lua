-- moonreel.batch (mr.batch): effect templates over many inputs, resumable.
-- recipes/effects.lua is its command line (docs/templates.md):
--
--   moonreel recipes/effects.lua --template squish.json --images photos/ --out out/
--   moonreel recipes/effects.lua --manifest jobs.jsonl --out out/ [--shard I/N] [--dry-run]
--   moonreel recipes/effects.lua --manifest jobs.jsonl --enqueue redis://HOST:PORT/STREAM
--   moonreel recipes/effects.lua --queue redis://HOST:PORT/STREAM --out out/
--
-- The model loads once; jobs are grouped by template so that switching
-- templates only swaps LoRAs. A job's id comes from its content (the
-- template's id, version, variant and settings, the images' SHA-256, the
-- variables, the seed); its output is written atomically (the recipe's
-- writer: a temporary renamed when whole) as OUT/<id>.mp4 unless the
-- manifest names it. Each job then appends one JSON line to the report
-- (OUT/report.jsonl). A job counts as done when the report has a "done"
-- line for its id and the output file has the size that line records; a
-- rerun skips exactly those, so a run killed at any moment resumes without
-- losing or duplicating an output. A report line cut short by a kill is
-- ignored.
local mr = require "moonreel"
local cjson = require "cjson"
local T = require "moonreel.template"
local R = require "moonreel.recipe"
local pack_mod = require "moonreel.pack"

local M = {}

M.ID_VERSION = "moonreel.job/1" -- bump when what goes into a job's id changes
M.MANIFEST_LINE_BYTES = 64 * 1024
M.IMAGE_EXTENSIONS = {png = true, jpg = true, jpeg = true, webp = true}

------------------------------------------------------------------ command line

M.FLAGS = {
  {"template", "string", "a template file (moonreel.template/1 JSON), with --images"},
  {"images", "string", "a folder of photos (.png, .jpg, .jpeg, .webp): one job each, with --template"},
  {"manifest", "string", "a JSONL file, one job a line: {\"template\", \"images\", \"vars\", \"seed\", \"variant\", \"output\"}"},
  {"out", "string", "the output folder (required to run or work a queue)"},
  {"variant", "string", "the template's variant for --template jobs (e.g. fast)"},
  {"var", "list", "a template variable for --template jobs (repeat the flag)", "NAME=VALUE"},
  {"seed", "string", "the seed of every job that names none (default: each job's own, from its content)"},
  {"model", "string", "model pack folder (default: $MOONREEL_MODEL, else models/default)"},
  {"weights", "string", "weight storage: f32, f16 or bf16 (default: f32 on a CPU device, else bf16)"},
  {"report", "string", "the report file (default OUT/report.jsonl)"},
  {"shard", "string", "I/N: only the jobs whose index is I mod N (0-based); /N takes I from $JOB_COMPLETION_INDEX"},
  {"dry-run", "boolean", "check every job and print the plan; generate nothing"},
  {"enqueue", "string", "redis://HOST:PORT/STREAM: put the jobs on a Redis stream and exit"},
  {"queue", "string", "redis://HOST:PORT/STREAM: work jobs from a Redis stream"},
  {"group", "string", "the stream's consumer group (default moonreel)"},
  {"consumer", "string", "this worker's name in the group (default HOST-PID)"},
  {"claim-after", "number", "seconds a job may sit unacknowledged before another worker takes it over (default 600)"},
  {"wait", "boolean", "a queue worker waits for new jobs when the stream is drained (default: it exits)"},
  {"quiet", "boolean", "no progress line"},
  {"help", "boolean", "this text"},
}

function M.usage()
  local lines = {
    "usage: moonreel recipes/effects.lua --template T.json --images DIR --out DIR [options]",
    "       moonreel recipes/effects.lua --manifest jobs.jsonl --out DIR [options]",
    "       moonreel recipes/effects.lua (--manifest jobs.jsonl | --template T.json --images DIR) --enqueue redis://HOST:PORT/STREAM",
    "       moonreel recipes/effects.lua --queue redis://HOST:PORT/STREAM --out DIR [options]",
    "", "Effect templates over many inputs: the model loads once, each job's output is named by its",
    "content, and a rerun skips the jobs already done (docs/templates.md).", "", "options:"}
  for _, f in ipairs(M.FLAGS) do
    local a = f[2] == "boolean" and "" or " " .. (f[4] or f[2]:upper())
    lines[#lines + 1] = string.format("  --%-22s %s", f[1] .. a, f[3])
  end
  return table.concat(lines, "\n") .. "\n"
end

-- argv -> options keyed like the flags (dry-run is dry_run); a string flag
-- given twice is refused; raises one line.
function M.parse_args(argv) return R.parse_flags(argv, M.FLAGS, true) end

-- "I/N" (or "/N" with $JOB_COMPLETION_INDEX as I) -> i, n; raises one line.
function M.parse_shard(spec, env_index)
  local i, n = tostring(spec):match("^(%d*)/(%d+)$")
  n = tonumber(n)
  if not n or n < 1 then error(string.format("--shard %s: must be I/N (0 <= I < N), or /N", tostring(spec)), 0) end
  if i == "" then
    i = env_index
    if i == nil or i == "" then
      error(string.format("--shard %s: $JOB_COMPLETION_INDEX is not set (give --shard I/%d)", spec, n), 0)
    end
    if not tostring(i):match("^%d+$") then
      error(string.format("--shard %s: $JOB_COMPLETION_INDEX is '%s', not a number", spec, tostring(i)), 0)
    end
  end
  i = tonumber(i)
  if i >= n then error(string.format("--shard %s: I must be below N (0 .. %d)", spec, n - 1), 0) end
  return math.tointeger(i), math.tointeger(n)
end

------------------------------------------------------------------ files

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end
local function join(dir, name)
  if name:sub(1, 1) == "/" or dir == "" or dir == "." then return name end
  return (dir:gsub("/+$", "")) .. "/" .. name
end
M.join = join

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

local function cwd()
  local p = os.getenv("PWD")
  if p and p ~= "" then return p end
  local h = io.popen("pwd")
  local s = h and h:read("l")
  if h then h:close() end
  return s or "."
end

-- An absolute path (a queue's jobs travel to workers in other folders).
function M.absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return join(cwd(), (path:gsub("^%./", "")))
end

-- A name inside the output folder: relative, no "..", .mp4 or .webp.
local function check_output_name(name)
  if type(name) ~= "string" or name == "" then return "must be a file name" end
  if name:sub(1, 1) == "/" then return "must be relative to --out, not absolute" end
  for part in name:gmatch("[^/]+") do
    if part == ".." then return "must stay inside --out (no '..')" end
  end
  local ext = name:match("%.([%w]+)$")
  if ext ~= "mp4" and ext ~= "webp" then return "must end in .mp4 or .webp" end
end

------------------------------------------------------------------ jobs

-- A job as given (before anything is read): {index (0-based), source,
-- template, variant, images, vars, seed, output}; paths as given, resolved
-- against the folder of what named them.

-- One job per image of a folder (sorted by name); hidden files and other
-- extensions are left out (counted in skipped).
function M.jobs_from_images(template, dir, opts)
  local names, lerr = mr.listdir(dir)
  if not names then error(string.format("--images: %s", lerr), 0) end
  local jobs, skipped = {}, 0
  for _, n in ipairs(names) do
    local ext = n:match("%.([^.]+)$")
    if n:sub(1, 1) ~= "." and ext and M.IMAGE_EXTENSIONS[ext:lower()] then
      jobs[#jobs + 1] = {index = #jobs, source = join(dir, n), template = template, variant = opts.variant,
                         images = {join(dir, n)}, vars = opts.vars, seed = opts.seed}
    else
      skipped = skipped + 1
    end
  end
  return jobs, skipped
end

local MANIFEST_KEYS = {template = true, images = true, vars = true, seed = true, variant = true, output = true}

-- One job per line of a JSONL manifest; blank lines are skipped. A line that
-- is not a job raises "FILE:LINE: field: what" before anything runs.
function M.jobs_from_manifest(path)
  local f, oerr = io.open(path, "rb")
  if not f then error(string.format("--manifest: cannot read '%s': %s", path, oerr), 0) end
  local base = dirname(path)
  local jobs, lineno = {}, 0
  for line in f:lines("L") do
    lineno = lineno + 1
    local where = string.format("%s:%d", path, lineno)
    local function bad(fmt, ...) f:close() error(where .. ": " .. string.format(fmt, ...), 0) end
    if #line > M.MANIFEST_LINE_BYTES then bad("longer than %d bytes", M.MANIFEST_LINE_BYTES) end
    line = line:gsub("[\r\n]+$", "")
    if line:match("%S") then
      local j, jerr = T.decode_json(line)
      if j == nil then bad("not JSON: %s", jerr) end
      if type(j) ~= "table" or (#j > 0) then bad("must be a JSON object") end
      local keys = {}
      for k in pairs(j) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for _, k in ipairs(keys) do
        if not MANIFEST_KEYS[k] then bad("%s: unknown field (a job takes template, images, vars, seed, variant, output)", T.key_path("", k)) end
      end
      if type(j.template) ~= "string" or j.template == "" then bad("template: required, a file name") end
      local images = {}
      if j.images ~= nil then
        if type(j.images) ~= "table" then bad("images: must be an array of file names") end
        for k, im in pairs(j.images) do
          if math.type(k) ~= "integer" or type(im) ~= "string" or im == "" then bad("images: must be an array of file names") end
        end
        for i, im in ipairs(j.images) do images[i] = join(base, im) end
      end
      local vars
      if j.vars ~= nil then
        if type(j.vars) ~= "table" then bad("vars: must be an object of strings") end
        vars = {}
        for k, v in pairs(j.vars) do
          if type(k) ~= "string" then bad("vars: must be an object of strings") end
          vars[k] = v -- the values are the template's to judge (per job)
        end
      end
      local seed
      if j.seed ~= nil then
        local v = j.seed
        -- a JSON number is exact below 2^53 only; larger seeds are decimal strings
        if type(v) == "number" and math.tointeger(v) and v >= 0 and v < 2 ^ 53 then v = math.tointeger(v) end
        local ok, s = false, nil
        if math.type(v) == "integer" or (type(v) == "string" and v:match("^%d+$")) then ok, s = pcall(mr.seed_string, v) end
        if not ok then bad("seed: must be an integer 0 .. 18446744073709551615 (a decimal string past 2^53)") end
        seed = s
      end
      if j.variant ~= nil and (type(j.variant) ~= "string" or j.variant == "") then bad("variant: must be a name") end
      if j.output ~= nil then
        local oe = check_output_name(j.output)
        if oe then bad("output: %s", oe) end
      end
      jobs[#jobs + 1] = {index = #jobs, source = where, template = join(base, j.template), variant = j.variant,
                         images = images, vars = vars, seed = seed, output = j.output}
    end
  end
  f:close()
  return jobs
end

-- The jobs whose index is i mod n.
function M.shard(jobs, i, n)
  local out = {}
  for _, j in ipairs(jobs) do if j.index % n == i then out[#out + 1] = j end end
  return out
end

------------------------------------------------------------------ templates

-- The templates a run uses, loaded and checked once each, with their LoRA
-- files hashed once each.
local Templates = {}
Templates.__index = Templates

function M.templates() return setmetatable({by_path = {}, sha = {}, resolved = {}}, Templates) end

-- The template at path; raises its errors (one line each) on a bad one.
function Templates:get(path)
  local t = self.by_path[path]
  if t then return t end
  local tpl, errs = T.load(path)
  if not tpl then error(table.concat(errs, "\n"), 0) end
  self.by_path[path] = tpl
  return tpl
end

function Templates:file_sha(path)
  local s = self.sha[path]
  if s then return s end
  local h, herr = mr.sha256(path)
  if not h then return nil, herr end
  self.sha[path] = h
  return h
end

-- The template at path with variant overlaid, its LoRA files found and
-- checked against their sha256: {tpl, doc, variant, loras = {{file, sha256,
-- strength, mode, high}}, digest}. Raises one line naming the file and field.
function Templates:resolve(path, variant)
  local key = path .. "\0" .. (variant or "")
  local r = self.resolved[key]
  if r then return r end
  local tpl = self:get(path)
  local doc, verr = T.overlay(tpl.doc, variant)
  if not doc then error(string.format("%s: variant: %s", T.shown(path), verr), 0) end
  local where = T.shown(variant and string.format("%s (variant %s)", path, variant) or path)
  local loras = {}
  for i, l in ipairs(doc.loras or {}) do
    local file = join(tpl.dir, l.file)
    local sha, serr = self:file_sha(file)
    if not sha then error(string.format("%s: loras[%d].file: %s", where, i, T.shown(serr)), 0) end
    if l.sha256 and l.sha256 ~= sha then
      error(string.format("%s: loras[%d].sha256: %s has sha256 %s, the template says %s", where, i, T.shown(file), sha, l.sha256), 0)
    end
    loras[i] = {file = file, sha256 = sha, strength = l.strength or 1, mode = l.mode, high = l.high}
  end
  -- what decides the output, by content: the cosmetic fields and the
  -- LoRAs' file names are left out, their contents are in by sha256
  local eff = {}
  for k, v in pairs(doc) do eff[k] = v end
  eff.title, eff.description, eff.tags, eff.variants = nil, nil, nil, nil
  eff.loras = {}
  for i, l in ipairs(loras) do eff.loras[i] = {sha256 = l.sha256, strength = l.strength, mode = l.mode, high = l.high} end
  r = {tpl = tpl, doc = doc, variant = variant, loras = loras, where = where, mode = T.TASK_MODE[doc.task],
       digest = mr.sha256_string(T.canonical_json(eff)), slots = T.image_slots(doc)}
  self.resolved[key] = r
  return r
end

------------------------------------------------------------------ a job's identity

-- The id of a job from its content: the template (id, version, variant,
-- settings digest), each image's SHA-256 in slot order, the variables (with
-- defaults, by name) and the seed. The same job gives the same id in any
-- process, wherever its files are and whatever the key order of its line.
function M.job_id(r, image_shas, vars, seed)
  local material = {
    M.ID_VERSION, "template=" .. r.doc.id .. "@" .. r.doc.version, "variant=" .. (r.variant or ""),
    "settings=" .. r.digest,
  }
  for _, s in ipairs(image_shas) do material[#material + 1] = "image=" .. s end
  local names = {}
  for k in pairs(vars) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do material[#material + 1] = "var." .. k .. "=" .. cjson.encode(vars[k]) end
  if seed then material[#material + 1] = "seed=" .. seed end
  return r.doc.id .. "-" .. mr.sha256_string(table.concat(material, "\n")):sub(1, 16)
end

-- A seed from the job's other content (as a decimal 64-bit string), so a
-- job that names none still has one that a rerun repeats.
local function derived_seed(r, image_shas, vars)
  local id = M.job_id(r, image_shas, vars, nil)
  local hex = mr.sha256_string("seed\n" .. id):sub(1, 15) -- 60 bits: a Lua integer without sign trouble
  return mr.seed_string(tonumber(hex, 16))
end

-- Fills a job from its template and files: job.r (the resolved template),
-- vars, image_shas, seed, id, output. A problem of this job alone (an image
-- that cannot be read, a variable too long, the wrong number of images) is
-- job.error, one line; a bad template raises.
function M.prepare(job, templates, defaults)
  defaults = defaults or {}
  local r = templates:resolve(job.template, job.variant)
  job.r = r
  job.label = r.doc.id .. "@" .. r.doc.version .. (r.variant and ":" .. r.variant or "")
  local shas = {}
  local problem
  local images = job.images or {}
  if #images < r.slots.min or #images > r.slots.max then
    problem = string.format("images: the template takes %s (this job has %d)",
      r.slots.min == r.slots.max and string.format("%d image%s", r.slots.max, r.slots.max == 1 and "" or "s")
      or string.format("%d to %d images", r.slots.min, r.slots.max), #images)
  end
  for i, path in ipairs(images) do
    local sha, serr = mr.sha256(path)
    if not sha then
      problem = problem or string.format("images[%d]: %s", i, T.shown(serr))
      sha = "unreadable:" .. path -- still a stable id for the report
    end
    shas[i] = sha
  end
  job.image_shas = shas
  local vars, vproblem = T.bind_vars(r.doc, job.vars)
  if not vars then
    problem = problem or vproblem
    vars = {}
    for k, v in pairs(job.vars or {}) do vars[k] = type(v) == "string" and v or cjson.encode(v) end
  end
  job.bound_vars = vars
  job.seed = job.seed or defaults.seed or (r.doc.sampling or {}).seed or derived_seed(r, shas, vars)
  job.id = M.job_id(r, shas, vars, job.seed)
  job.output = job.output or (job.id .. "." .. ((r.doc.output or {}).format or "mp4"))
  job.error = problem
  return job
end

-- The checks that need the images decoded (a job about to run, or a dry
-- run): readable as an image, the least side and the aspect the template
-- asks. Sets job.error; returns the images' {width, height}.
function M.check_images(job)
  if job.error then return nil end
  if job.sizes then return job.sizes end
  local slots = job.r.slots
  local sizes = {}
  for i, path in ipairs(job.images or {}) do
    local img, info = mr.image.load(path)
    if not img then
      job.error = string.format("images[%d]: %s", i, T.shown(info))
      return nil
    end
    img:close()
    local w, h = info.width, info.height
    sizes[i] = {w, h}
    if slots.min_side and math.min(w, h) < slots.min_side then
      job.error = string.format("images[%d]: %s is %dx%d; the template needs at least %d pixels on each side", i, T.shown(path),
        w, h, slots.min_side)
      return nil
    end
    if slots.max_aspect and math.max(w, h) / math.min(w, h) > slots.max_aspect then
      job.error = string.format("images[%d]: %s is %dx%d; the template takes an aspect of at most %g:1", i, T.shown(path), w, h,
        slots.max_aspect)
      return nil
    end
  end
  job.sizes = sizes
  return sizes
end

-- The recipe options of a prepared job (mr.recipe.run(mode, opts)).
function M.recipe_options(job, out_path)
  local doc = job.r.doc
  local s, v, pre, out = doc.sampling or {}, doc.video or {}, doc.preprocess or {}, doc.output or {}
  local int = function(x) return x and math.tointeger(x) or x end -- JSON numbers arrive as floats
  local o = {
    prompt = T.expand(doc.prompt.template, job.bound_vars), negative = doc.prompt.negative,
    steps = int(s.steps), cfg = s.cfg, shift = s.shift, sampler = s.sampler, seed = job.seed,
    frames = int(v.frames), fps = v.fps, width = int(v.width), height = int(v.height),
    crf = int(out.crf), quality = out.quality, out = out_path, quiet = true,
  }
  local images = job.images or {}
  -- follow_input: the template's size turned to the photo's orientation
  if v.orientation == "follow_input" and job.sizes and job.sizes[1] and o.width and o.height then
    local iw, ih = job.sizes[1][1], job.sizes[1][2]
    if (iw > ih) ~= (o.width > o.height) and iw ~= ih and o.width ~= o.height then
      o.width, o.height = o.height, o.width
    end
  end
  local mode = job.r.mode
  if mode == "ti2v" or mode == "flf2v" then
    o.image, o.fit, o.pad_color = images[1], pre.fit, pre.pad_color
    if mode == "flf2v" then o.last_image = images[2] end
  elseif mode == "r2v" then
    o.ref = {}
    for i, im in ipairs(images) do o.ref[i] = im end
    o.ref_fit, o.cfg_img = pre.ref_fit, s.cfg_img
    o.vace_scale, o.vace_start, o.vace_end = s.vace_scale, s.vace_start, s.vace_end
  end
  return o
end

------------------------------------------------------------------ the report

-- The report: one JSON line per finished job. Lines that do not decode (a
-- run killed while writing one) are ignored and counted.
local Report = {}
Report.__index = Report

-- open_report(path [, writable]): with writable, raises one line unless the
-- file can be appended to (its folder made), so that is known before any work.
function M.open_report(path, writable)
  if writable then
    local ok, merr = mr.mkdir(dirname(path))
    if not ok then error("--report: " .. merr, 0) end
    local f, err = io.open(path, "ab")
    if not f then error(string.format("--report: cannot append to '%s': %s", path, err), 0) end
    f:close()
  end
  local rep = setmetatable({path = path, done = {}, failed = {}, broken = 0, lines = 0}, Report)
  local f = io.open(path, "rb")
  if not f then return rep end
  local last
  for line in f:lines("L") do
    last = line
    rep.lines = rep.lines + 1
    local rec = T.decode_json((line:gsub("\n$", "")))
    if type(rec) == "table" and type(rec.id) == "string" and type(rec.status) == "string" then
      if rec.status == "done" then
        rep.done[rec.id] = rec
        rep.failed[rec.id] = nil
      elseif rec.status == "failed" then
        rep.failed[rec.id] = rec
      end
    elseif line:match("%S") then
      rep.broken = rep.broken + 1
    end
  end
  f:close()
  -- a kill mid-line leaves no newline: end that line, so the next record starts on its own
  rep.needs_newline = last ~= nil and last:sub(-1) ~= "\n"
  return rep
end

-- Appends one record as a single write of one line (O_APPEND: writers
-- beside each other on a local disk never interleave within a line). A
-- write the disk cuts short is taken back (mr.append_line), so the report
-- never ends in half a record and a rerun reads it as before.
function Report:append(rec)
  local line = cjson.encode(rec) .. "\n"
  if self.needs_newline then line = "\n" .. line end
  local ok, err = mr.append_line(self.path, line)
  if not ok then error((err:gsub("^cannot append to ", "cannot append to the report ", 1)), 0) end
  self.needs_newline = false
  if rec.status == "done" then self.done[rec.id] = rec end
end

-- Whether a job's output is whole: a done line for its id, and that file
-- with the size the line records.
function Report:is_done(job, out_dir)
  local rec = self.done[job.id]
  if not rec or type(rec.output) ~= "string" then return false end
  local size = file_size(join(out_dir, rec.output))
  return size ~= nil and size == rec.bytes, rec
end

------------------------------------------------------------------ progress

local function fmt_time(s)
  if s >= 3600 then return string.format("%dh%02dm", s // 3600, s % 3600 // 60) end
  if s >= 60 then return string.format("%dm%02ds", s // 60, math.floor(s % 60)) end
  return string.format("%.0fs", s)
end
M.fmt_time = fmt_time

-- One line for the batch on stderr: jobs done, failed, clips a minute, time
-- left (from the jobs run so far). Redrawn in place on a terminal.
local function progress(total, quiet)
  local tty = mr.is_terminal("stderr")
  local t0 = mr.clock()
  local p = {done = 0, failed = 0, skipped = 0, total = total, busy = 0}
  function p:line()
    local e = mr.clock() - t0
    local rate = self.done > 0 and self.done / (e / 60) or 0
    local left = total - self.done - self.failed - self.skipped
    -- time left from the generations so far (a job that fails on its inputs costs nothing)
    local eta = left == 0 and 0 or self.done > 0 and self.busy / self.done * left or nil
    return string.format("batch %d/%d: %d done, %d failed%s, %.1f clips/min, %s left", self.done + self.failed + self.skipped,
      total, self.done, self.failed, self.skipped > 0 and string.format(", %d skipped", self.skipped) or "", rate,
      eta and fmt_time(eta) or "?")
  end
  function p:update()
    if quiet then return end
    if tty then io.stderr:write("\r", self:line(), "\27[K") else io.stderr:write(self:line(), "\n") end
  end
  function p:note(msg)
    if quiet then return end
    if tty then io.stderr:write("\r\27[K") end
    io.stderr:write(msg, "\n")
  end
  function p:finish()
    if not quiet and tty then io.stderr:write("\n") end
    return mr.clock() - t0
  end
  return p
end
M.progress = progress

------------------------------------------------------------------ running jobs

-- A runner: the pack loaded once and the LoRAs of the template now in use.
local Runner = {}
Runner.__index = Runner

function M.runner(opts)
  return setmetatable({opts = opts, templates = opts.templates or M.templates(), attached = {}, attached_key = nil},
    Runner)
end

function Runner:load_pack()
  if self.pack then return self.pack end
  local dir = self.opts.model or R.default_model_dir()
  self.pack = pack_mod.load(dir, {weights = self.opts.weights})
  return self.pack
end

-- The family of a pack: Wan 2.2 for the TI2V and two-expert models and the
-- 2.2 VAE (z_dim 48), else Wan 2.1.
local function pack_family(pack)
  if pack.model_type == "ti2v" or pack.dit_high or pack.z_dim == 48 then return "wan2.2" end
  return "wan2.1"
end
M.pack_family = pack_family

-- Whether the template fits the loaded pack; nil, or the reason.
function Runner:model_problem(r)
  local m = r.doc.model
  if not m then return nil end
  local pack = self.pack
  local fam = pack_family(pack)
  if m.family ~= fam then
    return string.format("%s: model.family: the template is for %s; the pack %s (%s) is %s", r.where, m.family,
      pack.name, pack.variant, fam)
  end
  if m.variants then
    for _, v in ipairs(m.variants) do if v == pack.variant then return nil end end
    return string.format("%s: model.variants: the template takes %s; the pack %s is %s", r.where,
      table.concat(m.variants, ", "), pack.name, pack.variant)
  end
end

-- The LoRAs of r on the pack: the ones attached for another template are
-- removed first. Returns the attached list, or nil and the reason.
function Runner:use_loras(r)
  local key = r.tpl.path .. "\0" .. (r.variant or "")
  if self.attached_key == key then return self.attached end
  self:drop_loras()
  local pack = self.pack
  for i, l in ipairs(r.loras) do
    local dit = l.high and pack.dit_high or pack.dit
    if not dit then
      self:drop_loras()
      return nil, string.format("%s: loras[%d].high: the pack %s has no high-noise expert", r.where, i, pack.name)
    end
    local h, herr = dit:lora_add(l.file, {strength = l.strength, mode = l.mode})
    if not h then
      self:drop_loras()
      return nil, string.format("%s: loras[%d]: %s", r.where, i, herr)
    end
    self.attached[#self.attached + 1] = {handle = h, file = l.file, sha256 = l.sha256, strength = l.strength,
                                         high = l.high}
  end
  self.attached_key = key
  return self.attached
end

function Runner:drop_loras()
  for _, a in ipairs(self.attached) do a.handle:remove() end
  self.attached, self.attached_key = {}, nil
end

function Runner:close()
  self:drop_loras()
  if self.pack then self.pack:close() end
  self.pack = nil
end

-- Runs one prepared job (job.error unset): images checked, the template's
-- LoRAs on, the recipe, the output under out_dir. Returns the report record.
-- on_step (optional) is the recipe's step hook. A Ctrl-C raises "interrupted".
function Runner:run(job, out_dir, on_step)
  local t0 = mr.clock()
  local rec = {id = job.id, job = job.index, source = job.source, template = job.label, images = job.images,
               seed = job.seed, output = job.output}
  local function secs() return math.floor((mr.clock() - t0) * 1000 + 0.5) / 1000 end
  local function fail(msg)
    rec.status, rec.error, rec.seconds = "failed", tostring(msg):gsub("\n.*", ""):sub(1, 1000), secs()
    return rec
  end
  if job.error then return fail(job.error) end
  M.check_images(job)
  if job.error then return fail(job.error) end
  local problem = self:model_problem(job.r)
  if problem then return fail(problem) end
  local attached, lerr = self:use_loras(job.r)
  if not attached then return fail(lerr) end
  local path = join(out_dir, job.output)
  local ok, merr = mr.mkdir(dirname(path))
  if not ok then return fail(merr) end
  local o = M.recipe_options(job, path)
  o.pack, o.attached_loras, o.on_step = self.pack, attached, on_step
  local ok, res = pcall(R.run, job.r.mode, o)
  if not ok then
    if tostring(res):find("interrupted") then error("interrupted", 0) end
    return fail(res)
  end
  rec.status, rec.bytes, rec.seconds = "done", file_size(path), secs()
  return rec
end

------------------------------------------------------------------ a local batch

-- The jobs of the options (a template over a folder, or a manifest).
function M.jobs_of(o)
  if o.manifest and (o.template or o.images) then
    error("give either --manifest, or --template with --images", 0)
  end
  if o.manifest then
    if o.variant or o.var then error("--variant and --var go with --template; a manifest names them per job", 0) end
    return M.jobs_from_manifest(o.manifest), 0
  end
  if not o.template then error("no jobs: give --template T.json --images DIR, or --manifest jobs.jsonl (see --help)", 0) end
  if not o.images then error("--template needs --images DIR (or put the jobs in a --manifest)", 0) end
  local vars
  for _, kv in ipairs(o.var or {}) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if not k then error(string.format("--var %s: must be NAME=VALUE", kv), 0) end
    vars = vars or {}
    vars[k] = v
  end
  return M.jobs_from_images(o.template, o.images, {variant = o.variant, vars = vars})
end

-- Prepares the jobs (templates checked: a bad one raises), dropping later
-- copies of a job (the same id). Returns the jobs and the duplicate count.
function M.prepare_all(jobs, templates, defaults)
  local seen, out, dups = {}, {}, 0
  for _, j in ipairs(jobs) do
    M.prepare(j, templates, defaults)
    if seen[j.id] then
      dups = dups + 1
    else
      seen[j.id] = j
      out[#out + 1] = j
    end
  end
  -- two different jobs must not write one file
  local by_out = {}
  for _, j in ipairs(out) do
    local other = by_out[j.output]
    if other then
      error(string.format("%s and %s both write %s (name the outputs apart)", other.source, j.source, j.output), 0)
    end
    by_out[j.output] = j
  end
  return out, dups
end

-- Orders jobs so each template's run together (first appearance order), so
-- LoRAs change once per template.
local function grouped(jobs)
  local order, groups = {}, {}
  for _, j in ipairs(jobs) do
    local k = j.r.tpl.path .. "\0" .. (j.r.variant or "")
    if not groups[k] then
      groups[k] = {}
      order[#order + 1] = k
    end
    table.insert(groups[k], j)
  end
  local out = {}
  for _, k in ipairs(order) do for _, j in ipairs(groups[k]) do out[#out + 1] = j end end
  return out
end

-- Removes the sidecar temporaries (<out>.json.tmp-N) a kill left for the
-- outputs about to be written.
local function sweep_sidecar_temps(out_dir, jobs)
  local want = {}
  for _, j in ipairs(jobs) do want[join(out_dir, j.output) .. ".json"] = true end
  local dirs = {}
  for _, j in ipairs(jobs) do dirs[dirname(join(out_dir, j.output))] = true end
  for d in pairs(dirs) do
    for _, n in ipairs(mr.listdir(d) or {}) do
      local stem = n:match("^(.*%.json)%.tmp%-%d+$")
      if stem and want[join(d, stem)] then os.remove(join(d, n)) end
    end
  end
end

-- Prints the plan of a dry run; returns how many jobs would fail.
local function print_plan(jobs, report, out_dir, header)
  io.stdout:write(header, "\n")
  local failing, done = 0, 0
  for _, j in ipairs(jobs) do
    local state
    if not j.error and report:is_done(j, out_dir) then
      state = "done"
      done = done + 1
    else
      M.check_images(j)
      if j.error then
        state = "FAIL " .. j.error
        failing = failing + 1
      else
        state = "run"
      end
    end
    io.stdout:write(string.format("  %4d  %s  %s  %s  seed %s  -> %s  %s\n", j.index, j.id, j.label,
      #(j.images or {}) > 0 and table.concat(j.images, " ") or "-", j.seed, join(out_dir, j.output), state))
  end
  io.stdout:write(string.format("%d jobs: %d to run, %d done, %d would fail\n", #jobs, #jobs - done - failing, done,
    failing))
  return failing
end

-- The whole local batch: returns the exit code (0 every job done, 1 some
-- failed, 130 interrupted). Raises one line for bad input before any work.
function M.run_local(o)
  local jobs, skipped_files = M.jobs_of(o)
  local total_all = #jobs
  local shard_note = ""
  if o.shard then
    local i, n = M.parse_shard(o.shard, os.getenv("JOB_COMPLETION_INDEX"))
    jobs = M.shard(jobs, i, n)
    shard_note = string.format(" (shard %d/%d of %d)", i, n, total_all)
  end
  if not o.out and not o.dry_run then error("--out DIR is required", 0) end
  local out_dir = o.out or "."
  local templates = M.templates()
  if o.template then -- one photo a job: the template must take one image
    local r = templates:resolve(o.template, o.variant)
    if r.slots.min > 1 or r.slots.max < 1 then
      error(string.format("--images: %s (%s) takes %d to %d images a job; put its jobs in a --manifest", o.template,
        r.doc.task, r.slots.min, r.slots.max), 0)
    end
  end
  local prepared, dups = M.prepare_all(jobs, templates, {seed = o.seed})
  local report = M.open_report(o.report or join(out_dir, "report.jsonl"), not o.dry_run)
  local notes = {}
  if skipped_files > 0 then
    notes[#notes + 1] = string.format("%d file%s in --images %s not .png/.jpg/.jpeg/.webp: left out", skipped_files,
      skipped_files == 1 and "" or "s", skipped_files == 1 and "is" or "are")
  end
  if dups > 0 then notes[#notes + 1] = string.format("%d duplicate jobs (the same id) left out", dups) end
  if report.broken > 0 then
    notes[#notes + 1] = string.format("%s: %d unreadable line%s ignored (a run killed while writing)", report.path,
      report.broken, report.broken == 1 and "" or "s")
  end
  for _, n in ipairs(notes) do io.stderr:write("effects: ", n, "\n") end
  if o.dry_run then
    local failing = print_plan(prepared, report, out_dir, string.format("plan: %d jobs%s, outputs in %s, report %s",
      #prepared, shard_note, out_dir, report.path))
    return failing > 0 and 1 or 0
  end
  local ok, merr = mr.mkdir(out_dir)
  if not ok then error("--out: " .. merr, 0) end
  -- what is done already
  local todo = {}
  local bar = progress(#prepared, o.quiet)
  for _, j in ipairs(prepared) do
    if report:is_done(j, out_dir) then bar.skipped = bar.skipped + 1 else todo[#todo + 1] = j end
  end
  todo = grouped(todo)
  sweep_sidecar_temps(out_dir, todo)
  local runner = M.runner(o)
  local code = 0
  local function record(j, rec)
    report:append(rec)
    if rec.status == "done" then
      bar.done = bar.done + 1
      bar.busy = bar.busy + rec.seconds
    else
      bar.failed = bar.failed + 1
      bar:note(string.format("effects: job %d (%s) failed: %s", j.index, j.source, rec.error))
      code = 1
    end
    bar:update()
  end
  -- the jobs that fail on their own inputs fail now, before the model loads
  local runnable = {}
  for _, j in ipairs(todo) do
    M.check_images(j)
    if j.error then record(j, runner:run(j, out_dir)) else runnable[#runnable + 1] = j end
  end
  if #runnable > 0 and not o.quiet then
    io.stderr:write(string.format("effects: %d jobs%s, %d done already; loading the model\n", #prepared, shard_note,
      bar.skipped))
  end
  local rok, rerr = pcall(function()
    if #runnable > 0 then runner:load_pack() end
    bar:update()
    for _, j in ipairs(runnable) do record(j, runner:run(j, out_dir)) end
  end)
  runner:close()
  local secs = bar:finish()
  if not rok then
    if tostring(rerr):find("interrupted") then
      io.stderr:write("effects: interrupted; the finished jobs are in the report, a rerun does the rest\n")
      return 130
    end
    io.stderr:write("effects: ", (tostring(rerr):gsub("\n.*", "")), "\n") -- the model, the report: the batch cannot go on
    return 1
  end
  io.stdout:write(string.format("%d jobs%s: %d done now, %d done before, %d failed in %s; report %s\n", #prepared,
    shard_note, bar.done, bar.skipped, bar.failed, fmt_time(secs), report.path))
  return code
end

-- The command line: the exit code (0 ok, 1 jobs failed or a run error, 2 bad
-- input, 130 interrupted).
function M.main(argv)
  local ok, o = pcall(M.parse_args, argv or {})
  if not ok then
    io.stderr:write("effects: ", tostring(o), "\n")
    return 2
  end
  if o.help then
    io.stdout:write(M.usage())
    return 0
  end
  local rok, code = pcall(function()
    if o.weights then R.check_values({weights = o.weights}) end
    if o.seed then
      local sok, s = pcall(mr.seed_string, o.seed)
      if not sok then error(string.format("--seed %s: an integer 0 .. 18446744073709551615", o.seed), 0) end
      o.seed = s
    end
    if o.enqueue and o.dry_run and not o.queue then return M.run_local(o) end -- the plan; nothing enqueued
    if o.queue or o.enqueue then
      local Q = require "moonreel.queue"
      if o.enqueue then return Q.enqueue_main(o) end
      return Q.work_main(o)
    end
    return M.run_local(o)
  end)
  if not rok then
    for line in tostring(code):gmatch("[^\n]+") do io.stderr:write("effects: ", line, "\n") end
    return 2
  end
  return code
end

return M
