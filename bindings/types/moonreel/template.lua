---@meta moonreel.template
-- LuaLS annotations for `require "moonreel.template"` (mr.template): effect
-- templates as data, moonreel.template/1 (docs/templates.md). Editors only.

---A loaded template file.
---@class mr.TemplateFile
---@field doc table the decoded, validated template
---@field path string
---@field dir string
---@field sha256 string

---@class mr.ImageSlots
---@field min integer
---@field max integer
---@field roles? string[]
---@field min_side? integer
---@field max_aspect? number

---@class moonreel.template
local M = {}

---"moonreel.template/1"
M.SCHEMA = ""

---What a template may hold: file_bytes, depth, loras, vars, choices, images, variants, tags, text, name.
---@type table<string, integer>
M.LIMITS = {}

---The recipe mode each task runs.
---@type table<string, string>
M.TASK_MODE = {}

---JSON null in decoded templates.
---@type lightuserdata
M.null = nil

---Decodes JSON text (nesting bounded, no NaN or Infinity).
---@param text string
---@return any? value
---@return string? message
function M.decode_json(text) end

---A value as one line of a message: control characters (a newline above all) written as \xNN.
---@param v any
---@return string
function M.shown(v) end

---The path of a field: "loras[1].strength", "vars[\"a b\"]".
---@param path string
---@param key string|integer
---@return string
function M.key_path(path, key) end

---Splits a prompt template into literal text and {name} placeholders ("{{" and "}}" are braces).
---@param s string
---@return table? parts
---@return string? message
function M.parse_prompt(s) end

---The prompt with each {name} replaced by vars[name], in one pass.
---@param template string
---@param vars table<string, string>
---@return string
function M.expand(template, vars) end

---The template with a variant overlaid (nil: the base): a new table, or nil and a message.
---@param doc table
---@param name? string
---@return table? doc
---@return string? message
function M.overlay(doc, name) end

---Every error of a decoded template, each "field.path: message".
---@param doc table
---@return boolean ok
---@return string[]? errors
function M.validate(doc) end

---A template file read, decoded and validated; or nil and one line per error naming the file and field.
---@param path string
---@return mr.TemplateFile? template
---@return string[]? errors
function M.load(path) end

---A job's variables against the template's (defaults fill the rest); or nil and one message.
---@param doc table
---@param given? table<string, any>
---@return table<string, string>? vars
---@return string? message
function M.bind_vars(doc, given) end

---The images a resolved template takes.
---@param doc table
---@return mr.ImageSlots
function M.image_slots(doc) end

---JSON text of a value with keys sorted (for digests).
---@param v any
---@return string
function M.canonical_json(v) end

return M
