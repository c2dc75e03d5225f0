---@meta moonreel.template
-- LuaLS annotations for `require "moonreel.template"` (mr.template): effect
-- templates, moonreel.template/1, as data (docs/templates.md). Editors only.

---@class moonreel.template
---@field null lightuserdata JSON null in decoded templates
local M = {}

---Reads and validates a template file: the template, or nil and one line per error (`file: field.path: message`).
---@param path string
---@return table? template
---@return string? errors
function M.load(path) end

---Every error of a decoded template, each with its field's path; an empty list when it is valid.
---@param doc table
---@return string[] errors
function M.validate(doc) end

---The template with the named variant laid over its base.
---@param doc table
---@param name? string
---@return table? template
---@return string? error
function M.overlay(doc, name) end

---The template's text variables bound to the given values (defaults filled, limits checked).
---@param doc table
---@param given? table<string, string>
---@return table<string, string>? vars
---@return string? error
function M.bind_vars(doc, given) end

---The prompt (and negative prompt) with `{variables}` expanded.
---@param template table
---@param vars table<string, string>
---@return string prompt
---@return string? negative
function M.expand(template, vars) end

---The image slots a template takes, in order.
---@param doc table
---@return table[] slots
function M.image_slots(doc) end

---A prompt template split into text and `{variable}` parts.
---@param text string
---@return table parts
function M.parse_prompt(text) end

---Decodes JSON text with the template reader's bounds: the value, or nil and the parser's message.
---@param text string
---@return any value
---@return string? message
function M.decode_json(text) end

---A value as JSON with sorted keys (what job ids hash).
---@param v any
---@return string
function M.canonical_json(v) end

---The printable path of a field (`loras[1].strength`).
---@param parent string
---@param key string|integer
---@return string
function M.key_path(parent, key) end

---the bounds of a template (bytes, depth, strings, counts)
M.LIMITS = nil ---@type table

---"moonreel.template/1"
M.SCHEMA = nil ---@type string

---the recipe mode of each task
M.TASK_MODE = nil ---@type table<string, string>

return M
