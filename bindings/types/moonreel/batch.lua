---@meta moonreel.batch
-- LuaLS annotations for `require "moonreel.batch"` (mr.batch): effect
-- templates over many inputs, resumable (recipes/effects.lua,
-- docs/templates.md). Editors only.

---A job: from a folder of photos or a manifest line, filled by prepare.
---@class mr.BatchJob
---@field template string
---@field images? string[]
---@field vars? table<string, any>
---@field seed? string
---@field variant? string
---@field output? string
---@field id? string
---@field error? string a problem of this job alone
---@field r? table the resolved template
---@field image_shas? string[]

---The templates a run uses, each loaded and checked once.
---@class mr.BatchTemplates
---@field by_path table
---@field sha table
---@field resolved table
local Templates = {}

---A report file: one JSON line per job.
---@class mr.BatchReport
---@field path string
---@field done table<string, table> done records by job id
---@field failed table<string, table> failed records by job id
---@field broken integer lines that are not records
---@field lines integer
---@field needs_newline boolean a kill left the last line without its newline
local Report = {}

---Runs prepared jobs on one loaded pack, swapping LoRAs per template.
---@class mr.BatchRunner
---@field opts table
---@field templates mr.BatchTemplates
---@field attached table
---@field attached_key? string
local Runner = {}

---A progress line over the jobs.
---@class mr.BatchProgress
---@field done integer
---@field failed integer
---@field skipped integer
---@field total integer
---@field busy number seconds spent generating
local BatchProgress = {}

---The line as it would print.
---@return string
function BatchProgress:line() end

function BatchProgress:update() end

---Prints a message above the progress line.
---@param msg string
function BatchProgress:note(msg) end

---Ends the line; returns the seconds since the start.
---@return number
function BatchProgress:finish() end

---@class moonreel.batch
local M = {}

---"moonreel.job/1": bumped when what goes into a job's id changes.
M.ID_VERSION = ""

---The longest manifest line, in bytes.
M.MANIFEST_LINE_BYTES = 0

---@type table<string, boolean>
M.IMAGE_EXTENSIONS = {}

---The flags of recipes/effects.lua.
---@type mr.RecipeFlag[]
M.FLAGS = {}

---The --help text.
---@return string
function M.usage() end

---argv -> options keyed like the flags (dry-run is dry_run); raises one line.
---@param argv string[]
---@return table
function M.parse_args(argv) end

---"I/N" (or "/N" with $JOB_COMPLETION_INDEX as I) -> i, n; raises one line.
---@param spec string
---@param env_index? string
---@return integer i
---@return integer n
function M.parse_shard(spec, env_index) end

---dir/name, or name when it is absolute.
---@param dir string
---@param name string
---@return string
function M.join(dir, name) end

---An absolute path.
---@param path string
---@return string
function M.absolute(path) end

---One job per image of a folder, sorted by name.
---@param template string
---@param dir string
---@param opts? table
---@return mr.BatchJob[] jobs
---@return integer skipped
function M.jobs_from_images(template, dir, opts) end

---One job per line of a JSONL manifest; a bad line raises "FILE:LINE: field: what".
---@param path string
---@return mr.BatchJob[]
function M.jobs_from_manifest(path) end

---The jobs whose index is i mod n.
---@param jobs mr.BatchJob[]
---@param i integer
---@param n integer
---@return mr.BatchJob[]
function M.shard(jobs, i, n) end

---A new set of templates.
---@return mr.BatchTemplates
function M.templates() end

---The id of a job from its content (template, images, variables, seed).
---@param r table the resolved template
---@param image_shas string[]
---@param vars table<string, string>
---@param seed string
---@return string
function M.job_id(r, image_shas, vars, seed) end

---Fills a job from its template and files (r, vars, image_shas, seed, id, output; job.error for a problem of its own).
---@param job mr.BatchJob
---@param templates mr.BatchTemplates
---@param defaults? table
function M.prepare(job, templates, defaults) end

---The checks that need the images decoded; sets job.error; returns each image's {width, height}.
---@param job mr.BatchJob
---@return table[]
function M.check_images(job) end

---The recipe options of a prepared job.
---@param job mr.BatchJob
---@param out_path string
---@return mr.RecipeOpts
function M.recipe_options(job, out_path) end

---Reads a report file (its done and failed jobs); with writable, raises one
---line unless it can be appended to (its folder is made).
---@param path string
---@param writable? boolean
---@return mr.BatchReport
function M.open_report(path, writable) end

---Seconds as "1.2s", "3m05s", "1h02m".
---@param s number
---@return string
function M.fmt_time(s) end

---A progress line over total jobs.
---@param total integer
---@param quiet? boolean
---@return mr.BatchProgress
function M.progress(total, quiet) end

---A runner (the pack loads on first use).
---@param opts table
---@return mr.BatchRunner
function M.runner(opts) end

---"wan2.1" or "wan2.2".
---@param pack mr.Pack
---@return string
function M.pack_family(pack) end

---The jobs of the options (a template over a folder, or a manifest).
---@param o table
---@return mr.BatchJob[]
function M.jobs_of(o) end

---Prepares the jobs (a bad template raises), dropping later copies of a job.
---@param jobs mr.BatchJob[]
---@param templates mr.BatchTemplates
---@param defaults? table
---@return mr.BatchJob[] jobs
---@return integer duplicates
function M.prepare_all(jobs, templates, defaults) end

---The whole local batch: 0 every job done, 1 some failed, 130 interrupted.
---@param o table
---@return integer
function M.run_local(o) end

---The command line: 0 ok, 1 jobs failed, 2 bad input, 130 interrupted.
---@param argv string[]
---@return integer
function M.main(argv) end

---The template at path; raises its errors on a bad one.
---@param path string
---@return mr.TemplateFile
function Templates:get(path) end

---The SHA-256 of a template file.
---@param path string
---@return string
function Templates:file_sha(path) end

---The template with a variant overlaid and its LoRA files checked: {tpl, doc, variant, loras, digest}.
---@param path string
---@param variant? string
---@return table
function Templates:resolve(path, variant) end

---Appends one record as a single line.
---@param rec table
function Report:append(rec) end

---Whether a job's output is whole (a done line and that file's size).
---@param job mr.BatchJob
---@param out_dir string
---@return boolean
function Report:is_done(job, out_dir) end

---@return mr.Pack
function Runner:load_pack() end

---Whether the template fits the loaded pack: nil, or the reason.
---@param r table
---@return string?
function Runner:model_problem(r) end

---The LoRAs of r on the pack (another template's removed first); or nil and the reason.
---@param r table
---@return table? attached
---@return string? message
function Runner:use_loras(r) end

function Runner:drop_loras() end

function Runner:close() end

---Runs one prepared job; returns the report record.
---@param job mr.BatchJob
---@param out_dir string
---@param on_step? fun(step: mr.Step): boolean?
---@return table
function Runner:run(job, out_dir, on_step) end

return M
