-- moonreel.repl (mr.repl): what the REPL uses to show values, complete names
-- and find help; usable from any Lua host too.
--
--   mr.repl.pretty(value [, {depth =, items =}]) -> string
--   mr.repl.complete("mr.re")                   -> {"mr.recipe", "mr.repl", ...}
--   mr.repl.help(mr.zeros)                      -> its line of docs/lua-api.md
--   mr.repl.show(video [, {width =, fps =, loop =}])  -- a clip in the terminal
local mr = require "moonreel"

local M = {}

------------------------------------------------------------------ pretty

local DEPTH, ITEMS, VALUES = 2, 16, 6

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function metaname(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or nil
end

-- A number as Lua prints it, but short: 0.123457, 1e+20, 3.
local function num(x)
  if math.type(x) == "integer" then return tostring(x) end
  if x ~= x or x == math.huge or x == -math.huge then return tostring(x) end
  local s = string.format("%.6g", x)
  return s
end

-- The first values of a tensor (read back from the device), as text.
local function tensor_values(t)
  local n = t:numel()
  if n == 0 then return "" end
  local ok, vals = pcall(function()
    local flat = t:is_contiguous() and t:reshape(-1) or t:contiguous():reshape(-1)
    local head = flat:slice(1, 1, math.min(n, VALUES)):contiguous()
    return head:totable()
  end)
  if not ok then return "" end
  local out = {}
  for i, v in ipairs(vals) do out[i] = num(v) end
  return " {" .. table.concat(out, ", ") .. (n > VALUES and ", ..." or "") .. "}"
end

local function bytes(n)
  if n >= 1 << 30 then return string.format("%.1f GiB", n / (1 << 30)) end
  if n >= 1 << 20 then return string.format("%.1f MiB", n / (1 << 20)) end
  if n >= 1 << 10 then return string.format("%.1f KiB", n / (1 << 10)) end
  return string.format("%d B", n)
end

local function pretty_tensor(t)
  if t:is_closed() then return "Tensor (closed)" end
  local shape = t:shape()
  return string.format("Tensor %s [%s] %s%s", t:dtype(), table.concat(shape, ", "), bytes(t:device_bytes()),
    tensor_values(t))
end

-- Names of the module's functions, so a function prints as what it is.
local function function_names()
  local names = {}
  for k, v in pairs(mr) do
    if type(v) == "function" then names[v] = "mr." .. k
    elseif type(v) == "table" and is_ident(k) then
      for k2, v2 in pairs(v) do
        if type(v2) == "function" and is_ident(k2) then names[v2] = names[v2] or ("mr." .. k .. "." .. k2) end
      end
    end
  end
  return names
end

local pretty

local function pretty_table(t, depth, opts, seen)
  if seen[t] then return "<cycle>" end
  local keys, n = {}, #t
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  if n == 0 and #keys == 0 then return "{}" end
  if depth >= opts.depth then
    local count = n + #keys
    return string.format("{... %d item%s}", count, count == 1 and "" or "s")
  end
  seen[t] = true
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "string" or ta == "number" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local parts, shown = {}, 0
  for i = 1, n do
    if shown >= opts.items then break end
    parts[#parts + 1] = pretty(t[i], depth + 1, opts, seen)
    shown = shown + 1
  end
  for _, k in ipairs(keys) do
    if shown >= opts.items then break end
    local key = is_ident(k) and k or ("[" .. pretty(k, depth + 1, opts, seen) .. "]")
    parts[#parts + 1] = key .. " = " .. pretty(t[k], depth + 1, opts, seen)
    shown = shown + 1
  end
  local more = n + #keys - shown
  if more > 0 then parts[#parts + 1] = string.format("... (%d more)", more) end
  seen[t] = nil
  local flat = "{" .. table.concat(parts, ", ") .. "}"
  if #flat <= 78 and not flat:find("\n") then return flat end
  local pad = string.rep("  ", depth + 1)
  return "{\n" .. pad .. table.concat(parts, ",\n" .. pad) .. "\n" .. string.rep("  ", depth) .. "}"
end

-- Objects the bindings make: their kind and what describes them.
local function pretty_object(v, name)
  local kind = name:gsub("^mr%.", "")
  local info
  for _, m in ipairs{"config", "info", "describe"} do
    local ok, f = pcall(function() return v[m] end)
    if ok and type(f) == "function" then
      local ok2, r = pcall(f, v)
      if ok2 and r ~= nil then info = r break end
    end
  end
  if info == nil then return tostring(v) end
  return kind .. " " .. pretty(info, 1, {depth = 2, items = 12}, {})
end

function pretty(v, depth, opts, seen)
  local t = type(v)
  if t == "string" then return string.format("%q", v):gsub("\\\n", "\\n") end
  if t == "number" then return num(v) end
  if t == "function" then
    local name = opts.names and opts.names[v]
    return name and ("function " .. name) or tostring(v)
  end
  local name = metaname(v)
  if name == "mr.Tensor" then return pretty_tensor(v) end
  if t == "userdata" and name then return pretty_object(v, name) end
  if t == "table" then
    local mt = getmetatable(v)
    -- a pack: its name and what it runs, not every component
    if type(v.describe) == "function" and v.defaults and v.model_type then
      local d = v:describe()
      return string.format("Pack %s (%s, %s weights) %s", tostring(d.name), tostring(d.variant), tostring(d.weights),
        pretty({defaults = v.defaults, references = v.references}, depth + 1, {depth = depth + 2, items = opts.items,
               names = opts.names}, seen))
    end
    if mt and rawget(mt, "__tostring") then return tostring(v) end
    return pretty_table(v, depth, opts, seen)
  end
  return tostring(v)
end

-- A value as the REPL shows it: nested tables cut at opts.depth (2) and
-- opts.items (16) entries; tensors with dtype, shape, device bytes and their
-- first values; model objects with their configuration.
function M.pretty(v, opts)
  opts = opts or {}
  return pretty(v, 0, {depth = opts.depth or DEPTH, items = opts.items or ITEMS, names = function_names()}, {})
end

-- print, for the REPL: each value pretty, tab-separated.
function M.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = M.pretty((select(i, ...))) end
  io.stdout:write(table.concat(parts, "\t"), "\n")
end

------------------------------------------------------------------ complete

local KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
                  "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}

-- The names a value offers after '.' (fields) or ':' (methods).
local function members(v, methods_only)
  local out, seen = {}, {}
  local function add(k, x)
    if is_ident(k) and not seen[k] and (not methods_only or type(x) == "function") then
      seen[k] = true
      out[#out + 1] = k
    end
  end
  if type(v) == "table" then for k, x in pairs(v) do add(k, x) end end
  local mt = getmetatable(v)
  local index = type(mt) == "table" and rawget(mt, "__index") or nil
  if type(index) == "table" then for k, x in pairs(index) do add(k, x) end end
  if v == mr then -- the embedded modules mr.<name> loads on first use, and mr.show
    for name in pairs(package.loaded) do add((name:match("^moonreel%.([%w_]+)$")), v) end
    for name in pairs(package.preload) do add((name:match("^moonreel%.([%w_]+)$")), v) end
    add("show", M.show)
  end
  if v == mr.recipe then -- the modes mr.recipe.<name> loads on demand
    for _, d in ipairs(mr.recipe.recipe_dirs()) do
      local p = io.popen("ls " .. string.format("%q", d) .. " 2>/dev/null")
      if p then
        for f in p:lines() do
          local name = f:match("^([%w_]+)%.lua$")
          if name then add(name, function() end) end
        end
        p:close()
      end
    end
  end
  return out
end

-- Completions of the expression that ends line: "mr.re" -> {"mr.recipe", "mr.repl"},
-- "pack:en" -> {"pack:encode_text"}, "pri" -> {"print"}. It reads fields
-- (a value's __index may run) but calls no function of the expression.
function M.complete(line, env)
  env = env or _G
  local expr = line:match("([%a_][%w_%.:]*)$") or ""
  if expr == "" then return {} end
  local base, sep, partial = expr:match("^(.*)([%.:])([%w_]*)$")
  local candidates, prefix = {}, ""
  if not base then
    partial = expr
    for k, v in pairs(env) do if is_ident(k) then candidates[#candidates + 1] = k end end
    for _, k in ipairs(KEYWORDS) do candidates[#candidates + 1] = k end
  else
    if base:find(":") then return {} end
    local v = env
    for part in base:gmatch("[^%.]+") do
      if type(v) ~= "table" and type(v) ~= "userdata" then return {} end
      local ok, x = pcall(function() return v[part] end)
      if not ok or x == nil then return {} end
      v = x
    end
    candidates = members(v, sep == ":")
    prefix = base .. sep
  end
  local out = {}
  for _, k in ipairs(candidates) do
    if k:sub(1, #partial) == partial then out[#out + 1] = prefix .. k end
  end
  table.sort(out)
  local uniq = {}
  for _, k in ipairs(out) do if uniq[#uniq] ~= k then uniq[#uniq + 1] = k end end
  return uniq
end

------------------------------------------------------------------ help

-- docs/lua-api.md is the one source: each table row whose first cell names
-- functions in backquotes documents them.
local docs

local function doc_path()
  local env = os.getenv("MOONREEL_DOCS")
  local dirs = {}
  if env and env ~= "" then dirs[#dirs + 1] = env end
  for d in (mr.recipes_path or ""):gmatch("[^;]+") do dirs[#dirs + 1] = (d:gsub("/recipes/*$", "/docs")) end
  dirs[#dirs + 1] = "docs"
  for _, d in ipairs(dirs) do
    local f = io.open(d .. "/lua-api.md", "rb")
    if f then
      f:close()
      return d .. "/lua-api.md"
    end
  end
end

local function load_docs()
  if docs then return docs end
  docs = {}
  local path = doc_path()
  if not path then return docs end
  for line in io.lines(path) do
    local first, rest = line:match("^|%s*(.-)%s*|%s*(.-)%s*|?%s*$")
    if first and first:find("`") then
      for code in first:gmatch("`([^`]+)`") do
        -- `mr.zeros(shape [, dtype])`, `t:reshape(...)`, `.ti2v{...}`: the name before ( or {
        local name = code:match("^([%w_%.:]+)")
        if name and #name > 1 then
          local key = name:gsub("^%.", "")
          docs[key] = docs[key] or {code = code, text = rest:gsub("%s*|%s*$", "")}
        end
      end
    end
  end
  return docs
end

-- The name a value has in the module (mr.zeros, or tensor method "reshape").
local function name_of(x)
  if type(x) == "string" then return x end
  local names = function_names()
  if names[x] then return names[x] end
  local probe = mr.zeros({1})
  local index = getmetatable(probe).__index
  probe:close()
  if type(index) == "table" then
    for k, v in pairs(index) do if v == x then return "t:" .. k end end
  end
end

-- Documentation of a function or object (a value, or a name like "mr.zeros"
-- or "t:reshape"), from docs/lua-api.md; nil and a message when none.
function M.help(x)
  local d = load_docs()
  if x == nil then
    return "help(f): the documentation of a function or object, e.g. help(mr.zeros), help(\"t:reshape\"), " ..
      "help(mr.recipe.r2v); mr.repl.complete and <Tab> list names"
  end
  local name = name_of(x)
  if not name then
    local mt = metaname(x)
    if mt then return mt .. ": " .. M.pretty(x) end
    return nil, "no documentation for this value"
  end
  local keys = {name, (name:gsub("^mr%.", "")), (name:gsub("^t:", "")), (name:gsub("^mr%.[%w_]+%.", "."))}
  local short = name:match("[%.:]([%w_]+)$")
  for _, k in ipairs(keys) do
    local e = d[k] or d[(k:gsub("^%.", ""))]
    if e then return e.code .. "\n  " .. e.text end
  end
  if short then
    for k, e in pairs(d) do
      if k:match("[%.:]" .. short .. "$") and (name:sub(1, 2) == "t:") == (k:find(":") ~= nil) then
        return e.code .. "\n  " .. e.text
      end
    end
  end
  return nil, "no documentation for " .. name .. " in docs/lua-api.md"
end

------------------------------------------------------------------ show

-- A clip in the terminal, played in place at the clip's fps: kitty graphics
-- or sixel where the terminal says it has them, else truecolor half blocks
-- (moonreel.termgfx). video: [3, F, H, W] or [3, H, W] in [-1, 1]. opts:
-- width (characters, default 48), fps (8), loop (times, default 1), out (a
-- file, default stdout), mode ("kitty", "sixel", "blocks"; default: detected).
-- Returns the rows of text the picture takes (the cursor ends below it).
function M.show(video, opts)
  opts = opts or {}
  local s = video:shape()
  if not ((#s == 3 or #s == 4) and s[1] == 3) then error("show: a video [3, F, H, W] or an image [3, H, W]", 2) end
  local gfx = require "moonreel.termgfx"
  local mode = opts.mode or gfx.detect()
  if mode ~= "kitty" and mode ~= "sixel" and mode ~= "blocks" then
    error(string.format("show: mode '%s' (kitty, sixel or blocks)", tostring(mode)), 2)
  end
  local rgb, count, w, h = mr.video.rgb8(video)
  local prelude, frames, back, finish, rows = gfx.animation(mode, rgb, count, w, h, opts.width or 48)
  local out = opts.out or io.stdout
  local frame_s = 1 / (opts.fps or 8)
  out:write(prelude)
  for l = 1, opts.loop or 1 do
    for f = 1, count do
      local t0 = mr.clock()
      if f > 1 or l > 1 then out:write(back) end
      out:write(frames[f])
      out:flush()
      if count > 1 then mr.sleep(math.max(0, frame_s - (mr.clock() - t0))) end
    end
  end
  out:write(finish)
  out:flush()
  return rows
end

return M
