-- File and shell helpers the specs share (tests/lua, tests/e2e). Not a spec
-- (busted runs *_spec.lua only); a spec loads it by path, beside itself:
--
--   local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helpers.lua")
local H = {}

-- s quoted for sh.
function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The whole file, or nil when it cannot be read.
function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Whether path names a file or a folder.
function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The names in a folder (without . and ..), sorted.
function H.ls(dir)
  local p = assert(io.popen("ls -A " .. H.q(dir)))
  local names = {}
  for l in p:lines() do names[#names + 1] = l end
  p:close()
  table.sort(names)
  return names
end

-- A new empty folder under the system's temporary folder; H.rm removes it.
function H.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. H.q(p)))
  return p
end

-- Removes path and all it holds.
function H.rm(path) os.execute("rm -rf " .. H.q(path)) end

return H
