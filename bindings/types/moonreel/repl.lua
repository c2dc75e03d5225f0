---@meta moonreel.repl
-- LuaLS annotations for `require "moonreel.repl"` (mr.repl): what the REPL
-- uses to show values, complete names and find help (docs/cli.md, the REPL).
-- Editors only.

---@class mr.PrettyOpts
---@field depth? integer nested tables are cut below this depth (2)
---@field items? integer entries shown per table (16)

---@class mr.ShowOpts
---@field width? integer characters (48)
---@field fps? number 8
---@field loop? integer times to play (1)
---@field out? file* default stdout
---@field mode? "kitty"|"sixel"|"blocks" default: what the terminal says it has (moonreel.termgfx.detect)

---@class moonreel.repl
local M = {}

---The text the REPL prints for a value: nested tables cut at a depth, tensors with dtype, shape, device bytes and first values, functions by name.
---@param v any
---@param opts? mr.PrettyOpts
---@return string
function M.pretty(v, opts) end

---Prints each value pretty, tab-separated (the REPL's printer).
---@param ... any
function M.print(...) end

---The completions of the expression that ends line: globals, fields after `.`, methods after `:`.
---@param line string
---@param env? table default _G
---@return string[]
function M.complete(line, env) end

---The row of docs/lua-api.md that documents a function (a value, or a name such as "t:reshape"); with no argument, how to use it.
---@param x? any
---@return string? text
---@return string? message
function M.help(x) end

---Plays [3, F, H, W] (or an image [3, H, W]) in [-1, 1] in the terminal, in place: kitty graphics or sixel where the terminal says it has them, else truecolor half blocks.
---@param video mr.Tensor
---@param opts? mr.ShowOpts
---@return integer rows the rows of text a frame takes
function M.show(video, opts) end

return M
