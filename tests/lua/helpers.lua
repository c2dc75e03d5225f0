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

-- Runs the CLI bin on src/recipes/<recipe>.lua with flags (a list of strings),
-- after an optional shell prefix; returns exit code, stdout, stderr.
function H.run_recipe(bin, src, recipe, flags, prefix)
  local parts = {}
  for _, f in ipairs(flags) do parts[#parts + 1] = H.q(f) end
  local out, err = os.tmpname(), os.tmpname()
  local cmd = string.format("%s%s %s %s >%s 2>%s", prefix or "", H.q(bin), H.q(src .. "/recipes/" .. recipe .. ".lua"),
    table.concat(parts, " "), H.q(out), H.q(err))
  local _, _, code = os.execute(cmd)
  local o, e = H.read(out), H.read(err)
  os.remove(out)
  os.remove(err)
  return code, o, e
end

return H
