---@meta moonreel.batch
-- LuaLS annotations for `require "moonreel.batch"` (mr.batch): the batch
-- runner behind recipes/effects.lua (docs/templates.md). Editors only.

---@class moonreel.batch
local M = {}

---The command-line entry: returns the exit code.
---@param argv string[]
---@return integer
function M.main(argv) end

---The flag list.
---@return string
function M.usage() end

---argv as options; raises one line naming the flag.
---@param argv string[]
---@return table
function M.parse_args(argv) end

---"I/N" (or "/N" with the environment's index) as i, n.
---@param spec string
---@param env_index? string
---@return integer i
---@return integer n
function M.parse_shard(spec, env_index) end

---Joins path parts with "/".
---@param ... string
---@return string
function M.join(...) end

---A path made absolute against the working folder.
---@param path string
---@return string
function M.absolute(path) end

---The jobs of a template over a folder of images.
---@param template string
---@param dir string
---@param opts? table
---@return table[] jobs
function M.jobs_from_images(template, dir, opts) end

---The jobs of a JSONL manifest; raises one line naming the line and field.
---@param path string
---@return table[] jobs
function M.jobs_from_manifest(path) end

---The jobs whose index is i mod n (0-based).
---@param jobs table[]
---@param i integer
---@param n integer
---@return table[]
function M.shard(jobs, i, n) end

---A cache of loaded templates.
---@return table
function M.templates() end

---A job's id from its content (template, images' sha256, variables, seed).
---@param r table
---@param image_shas string[]
---@param vars table
---@param seed string|integer
---@return string
function M.job_id(r, image_shas, vars, seed) end

---A job resolved against its template (settings, prompt, id), or nil and its error.
---@param job table
---@param templates table
---@param defaults? table
---@return table? prepared
---@return string? error
function M.prepare(job, templates, defaults) end

---Every job prepared; failures kept with their reasons.
---@param jobs table[]
---@param templates table
---@param defaults? table
---@return table[] prepared
function M.prepare_all(jobs, templates, defaults) end

---Checks a job's images (readable, large enough); nil and the reason otherwise.
---@param job table
---@return boolean? ok
---@return string? error
function M.check_images(job) end

---The mr.recipe.run options of a prepared job.
---@param job table
---@param out_path string
---@return table
function M.recipe_options(job, out_path) end

---The report file: done jobs read back, and an appender of lines.
---@param path string
---@return table
function M.open_report(path) end

---Seconds as "1h02m", "3m05s" or "4.2s".
---@param s number
---@return string
function M.fmt_time(s) end

---The batch's progress line.
---@param total integer
---@param quiet? boolean
---@return table
function M.progress(total, quiet) end

---A runner that keeps the model loaded and swaps LoRAs per template.
---@param opts table
---@return table
function M.runner(opts) end

---The model family of a pack, as templates name it.
---@param pack table
---@return string
function M.pack_family(pack) end

---The jobs the options describe (a template and folder, or a manifest).
---@param o table
---@return table[]
function M.jobs_of(o) end

---Runs the jobs on this machine; returns the exit code.
---@param o table
---@return integer
function M.run_local(o) end

---the flags of recipes/effects.lua
M.FLAGS = nil ---@type table

---what goes into a job id ("moonreel.job/1")
M.ID_VERSION = nil ---@type string

---the image files a folder run takes
M.IMAGE_EXTENSIONS = nil ---@type table<string, boolean>

---the longest manifest line
M.MANIFEST_LINE_BYTES = nil ---@type integer

return M
