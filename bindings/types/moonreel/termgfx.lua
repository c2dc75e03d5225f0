---@meta moonreel.termgfx
-- Pictures in a terminal (what mr.show writes): kitty graphics, sixel or truecolor half blocks.
-- Every function returns the bytes to write.

---@class moonreel.termgfx
local M = {}

---The way the terminal takes pictures: $MOONREEL_GRAPHICS, else the variables terminals set (TERM, TERM_PROGRAM, KITTY_WINDOW_ID, KONSOLE_VERSION).
---@param env? table<string, string> variables to look at (default: the process environment)
---@return "kitty"|"sixel"|"blocks"
function M.detect(env) end

---One frame of packed RGB as kitty graphics in cols x rows cells (image id 1, cursor not moved).
---@param rgb string
---@param w integer
---@param h integer
---@param cols integer
---@param rows integer
---@return string
function M.kitty(rgb, w, h, cols, rows) end

---One frame of packed RGB as sixel in the 6x6x6 colour cube, each pixel scale x scale.
---@param rgb string
---@param w integer
---@param h integer
---@param scale? integer
---@return string
function M.sixel(rgb, w, h, scale) end

---One frame of packed RGB as cols x rows truecolor half-block characters.
---@param rgb string
---@param w integer
---@param h integer
---@param cols integer
---@param rows integer
---@return string
function M.blocks(rgb, w, h, cols, rows) end

---A clip as an animation in place: the prelude, each frame's bytes, what goes before every frame but the first, and the end.
---@param mode "kitty"|"sixel"|"blocks"
---@param rgb string count frames of w x h packed RGB
---@param count integer
---@param w integer
---@param h integer
---@param cols integer characters wide
---@return string prelude
---@return string[] frames
---@return string back
---@return string finish
---@return integer rows rows of text the picture takes
function M.animation(mode, rgb, count, w, h, cols) end

---Base64 of a string.
---@param s string
---@return string
function M.base64(s) end

return M
