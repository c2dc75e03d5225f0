---@meta moonreel.queue
-- LuaLS annotations for `require "moonreel.queue"` (mr.queue): the Redis
-- Streams queue behind recipes/effects.lua --enqueue / --queue
-- (docs/templates.md). Editors only.

---@class moonreel.queue
local M = {}

---`redis://HOST:PORT/STREAM` as its parts; raises one line naming the flag when malformed.
---@param url string
---@param flag? string
---@return {host: string, port: integer, stream: string}
function M.parse_url(url, flag) end

---Fills the stream from a manifest or a folder (the options of --enqueue); returns the exit code.
---@param o table
---@return integer
function M.enqueue_main(o) end

---Works the stream through its consumer group (the options of --queue); returns the exit code.
---@param o table
---@return integer
function M.work_main(o) end

---how long one read waits for new entries
M.BLOCK_MS = nil ---@type integer

---at most one refresh of a running job this often
M.HEARTBEAT_S = nil ---@type number

---deliveries after which a job fails
M.MAX_DELIVERIES = nil ---@type integer

return M
