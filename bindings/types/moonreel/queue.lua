---@meta moonreel.queue
-- LuaLS annotations for `require "moonreel.queue"` (mr.queue): the Redis
-- Streams queue of recipes/effects.lua --enqueue / --queue
-- (docs/templates.md). Editors only.

---@class mr.QueueUrl
---@field host string
---@field port integer
---@field stream string
---@field url string

---@class moonreel.queue
local M = {}

---A job whose worker died this many times fails.
M.MAX_DELIVERIES = 0

---How long one read waits for new entries (ms).
M.BLOCK_MS = 0

---At most one refresh of a running job's entry this often (s).
M.HEARTBEAT_S = 0

---"redis://HOST[:PORT]/STREAM" -> {host, port, stream, url}; raises one line.
---@param url string
---@param flag? string
---@return mr.QueueUrl
function M.parse_url(url, flag) end

---Puts the jobs of the options on the stream; returns the exit code.
---@param o table
---@return integer
function M.enqueue_main(o) end

---Works jobs from the stream until it is drained (or forever with wait); returns the exit code.
---@param o table
---@return integer
function M.work_main(o) end

return M
