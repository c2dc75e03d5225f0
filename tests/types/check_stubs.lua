-- Holds the LuaLS annotation stubs (bindings/types) to the module as it is at
-- run time: every function of the module, of its classes and of its Lua parts
-- has a stub, and every stubbed function exists. Fails listing each mismatch.
--
--   lua5.4 tests/types/check_stubs.lua TYPES_DIR MODEL_DIR [--self-test]
--
-- with LUA_CPATH finding the module. MODEL_DIR is a model pack (the default
-- model): loading it and starting a run (stopped before its first step)
-- reaches the pack's and the run's methods, which exist only on objects.
-- --self-test first checks that the checker fails on stubs with a function
-- removed or one that does not exist.
local mr = require "moonreel"

local types_dir, model_dir = arg[1], arg[2]
local self_test = arg[3] == "--self-test"
if not types_dir or not model_dir then
  io.stderr:write("usage: check_stubs.lua TYPES_DIR MODEL_DIR [--self-test]\n")
  os.exit(2)
end

-- moonreel.lua, and one file per embedded Lua part: moonreel/<name>.lua
local function stub_files(dir)
  local files = {"moonreel.lua"}
  local p = io.popen("ls -1 '" .. (dir .. "/moonreel"):gsub("'", "'\\''") .. "' 2>/dev/null")
  for f in p:lines() do
    if f:match("^[%w_]+%.lua$") then files[#files + 1] = "moonreel/" .. f end
  end
  p:close()
  return files
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

---------------------------------------------------------------- the stubs

-- What the stub files declare, by class name (the name after ---@class, or
-- "moonreel", "moonreel.pack", "moonreel.recipe" for the modules):
--   functions[name] = true    `function var.name(` / `function var:name(`
--   values[name] = true       `var.name = ...` (module fields)
--   fields[name] = true       `---@field name` in the class's block
--   operators[name] = true    `---@operator name`
local function parse(texts)
  local classes, problems = {}, {}
  local function class(name)
    classes[name] = classes[name] or {functions = {}, values = {}, fields = {}, operators = {}}
    return classes[name]
  end
  for file, text in pairs(texts) do
    local var_class, pending = {}, nil
    local n = 0
    for line in (text .. "\n"):gmatch("(.-)\n") do
      n = n + 1
      local cname = line:match("^%-%-%-@class%s+([%w_.]+)")
      if cname then
        pending = class(cname)
        pending.name = cname
      elseif line:match("^%-%-") then
        if pending then
          local f = line:match("^%-%-%-@field%s+([%w_]+)")
          if f == "private" or f == "protected" or f == "package" or f == "public" then
            f = line:match("^%-%-%-@field%s+[%w_]+%s+([%w_]+)")
          end
          if f then pending.fields[f] = true end
          local op = line:match("^%-%-%-@operator%s+([%w_]+)")
          if op then pending.operators[op] = true end
        end
      else
        local var = line:match("^local%s+([%w_]+)%s*=")
        if var and pending then var_class[var] = pending.name end
        if not line:match("^%s*$") then pending = nil end
        local fvar, path = line:match("^function%s+([%w_]+)[.:]([%w_.:]+)%s*%(")
        local vvar, vpath = line:match("^([%w_]+)%.([%w_.]+)%s*=")
        local v, p = fvar or vvar, path or vpath
        if v then
          local cn = var_class[v]
          if not cn then
            problems[#problems + 1] = string.format("%s:%d: '%s' is no class's table (---@class, then local %s = {})", file, n, v, v)
          else
            local c = class(cn)
            if fvar then c.functions[p] = file .. ":" .. n else c.values[p] = file .. ":" .. n end
          end
        end
      end
    end
  end
  return classes, problems
end

---------------------------------------------------------------- the module at run time

local OPERATORS = {__add = "add", __sub = "sub", __mul = "mul", __div = "div", __unm = "unm", __mod = "mod",
                   __pow = "pow", __idiv = "idiv", __concat = "concat", __len = "len", __band = "band",
                   __bor = "bor", __bxor = "bxor", __shl = "shl", __shr = "shr", __bnot = "bnot"}

local function new_runtime(name)
  return {name = name, functions = {}, values = {}, fields = nil, operators = nil}
end

-- Functions of a table by name (sub-tables other than skip[...] are walked
-- one level down as "sub.name"); other values as values.
local function scan_table(rt, t, prefix, skip, depth)
  for k, v in pairs(t) do
    if type(k) == "string" and not k:match("^__") then
      local name = prefix .. k
      if type(v) == "function" then
        rt.functions[name] = true
      else
        rt.values[name] = true
        if type(v) == "table" and not skip[v] and depth > 0 then scan_table(rt, v, name .. ".", skip, depth - 1) end
      end
    end
  end
end

-- The recipe modes mr.recipe.<name> reaches (its __index): files of the
-- recipe folders that end with mr.recipe.script(mode, ...).
local function recipe_modes(R)
  local modes = {}
  for _, dir in ipairs(R.recipe_dirs()) do
    local p = io.popen("ls -1 '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
    for file in p:lines() do
      local name = file:match("^([%w_]+)%.lua$")
      local path = dir .. "/" .. file
      local f = name and io.open(path, "rb")
      if f then
        local text = f:read("a")
        f:close()
        if text:match("%.script%(%s*mode%s*,") then modes[name] = path end
      end
    end
    p:close()
  end
  return modes
end

-- The module's embedded Lua parts (moonreel.pack, moonreel.recipe, ...), by
-- the names the module registers in package.preload.
local function embedded_parts()
  local parts = {}
  for name in pairs(package.preload) do
    local short = type(name) == "string" and name:match("^moonreel%.([%w_]+)$")
    if short then parts[short] = require(name) end
  end
  return parts
end

local function runtime()
  local R = require "moonreel.recipe"
  local P = require "moonreel.pack"
  local rts = {}
  local parts = embedded_parts()
  local skip = {}
  for _, t in pairs(parts) do skip[t] = true end

  local m = new_runtime("moonreel")
  m.object = mr
  scan_table(m, mr, "", skip, 1)
  for short, t in pairs(parts) do
    m.values[short] = true -- mr.<part>, reached through the module's __index
    local prt = new_runtime("moonreel." .. short)
    prt.object = t
    scan_table(prt, t, "", {}, 0)
    rts["moonreel." .. short] = prt
    -- a part's function the module's __index also answers (mr.show)
    for f in pairs(prt.functions) do
      if rawget(mr, f) == nil and mr[f] == t[f] then m.functions[f] = true end
    end
  end
  rts.moonreel = m
  assert(rts["moonreel.pack"] and rts["moonreel.recipe"], "the module has no moonreel.pack / moonreel.recipe")

  local r = rts["moonreel.recipe"]
  -- its __index makes a function of any name, so only the mode files count
  r.object = nil
  local modes = recipe_modes(R)
  r.modes = modes
  for name in pairs(modes) do
    if type(R[name]) == "function" then r.functions[name] = true end
  end
  rts["moonreel.recipe"] = r

  -- the C classes: every metatable the module registered with methods
  for k, mt in pairs(debug.getregistry()) do
    if type(k) == "string" and k:match("^mr%.") and type(mt) == "table" and type(mt.__index) == "table" then
      local c = new_runtime(k)
      c.operators = {}
      scan_table(c, mt.__index, "", {}, 0)
      for meta, op in pairs(OPERATORS) do if mt[meta] then c.operators[op] = true end end
      rts[k] = c
    end
  end

  -- the Lua parts' objects: a loaded pack, a run stopped before its first
  -- step, a step as the hooks see it, a progress line
  local pack <close> = P.load(model_dir)
  local pk = new_runtime("mr.Pack")
  scan_table(pk, getmetatable(pack).__index, "", {}, 0)
  pk.fields = {}
  for key in pairs(pack) do pk.fields[key] = true end
  rts["mr.Pack"] = pk

  local seen_step
  local ok, err = pcall(R.t2v, {pack = pack, prompt = "a red circle", seed = 1, steps = 1, out = false, quiet = true,
                                on_step = function(step) seen_step = step return false end})
  assert(not ok and tostring(err):match("stopped by on_step"), "the run was to stop at its first step: " .. tostring(err))
  local run = seen_step.run
  local rn = new_runtime("mr.Run")
  scan_table(rn, getmetatable(run).__index, "", {}, 0)
  rn.fields = {}
  for key in pairs(run) do rn.fields[key] = true end
  rts["mr.Run"] = rn
  local st = new_runtime("mr.Step")
  st.fields = {}
  for key in pairs(seen_step) do st.fields[key] = true end
  rts["mr.Step"] = st

  local pl = new_runtime("mr.ProgressLine")
  scan_table(pl, R.progress("check", 1, true), "", {}, 0)
  rts["mr.ProgressLine"] = pl

  -- the batch runner's objects (moonreel.batch), where the module has it
  local B = package.preload["moonreel.batch"] and require "moonreel.batch"
  if B then
    local function object(cname, obj, methods_in_index)
      local o = new_runtime(cname)
      scan_table(o, methods_in_index and getmetatable(obj).__index or obj, "", {}, 0)
      o.fields = {}
      for key, v in pairs(obj) do if type(v) ~= "function" then o.fields[key] = true end end
      rts[cname] = o
    end
    local report_path = os.tmpname()
    object("mr.BatchTemplates", B.templates(), true)
    object("mr.BatchRunner", B.runner({}), true)
    object("mr.BatchReport", B.open_report(report_path), true)
    object("mr.BatchProgress", B.progress(1, true), false)
    os.remove(report_path)
  end
  return rts
end

---------------------------------------------------------------- the comparison

local function sorted(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- t.a.b for "a.b", through __index as a caller would reach it
local function lookup(t, path)
  for k in path:gmatch("[^.]+") do
    if type(t) ~= "table" then return nil end
    t = t[k]
  end
  return t
end

local function compare(stubs, rts)
  local problems = {}
  local function bad(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
  local function sep(cname) return cname:match("^moonreel") and "." or ":" end
  for _, cname in ipairs(sorted(rts)) do
    local rt, st = rts[cname], stubs[cname]
    if not st then
      if next(rt.functions) then bad("%s: no ---@class %s in the stubs (it has %s)", cname, cname, table.concat(sorted(rt.functions), ", ")) end
    else
      for _, f in ipairs(sorted(rt.functions)) do
        if not st.functions[f] then bad("%s%s%s: a function of the module with no stub", cname, sep(cname), f) end
      end
      for _, f in ipairs(sorted(st.functions)) do
        if not rt.functions[f] and not (rt.object and type(lookup(rt.object, f)) == "function") then bad("%s%s%s: stubbed (%s) but not a function of the module", cname, sep(cname), f, st.functions[f]) end
      end
      for _, v in ipairs(sorted(rt.values)) do
        if not st.values[v] and not st.fields[v] and not st.functions[v] then
          bad("%s.%s: a field of the module with no stub", cname, v)
        end
      end
      for _, v in ipairs(sorted(st.values)) do
        if not rt.values[v] and not rt.functions[v] then bad("%s.%s: stubbed (%s) but not in the module", cname, v, st.values[v]) end
      end
      if rt.fields then
        for _, f in ipairs(sorted(rt.fields)) do
          if not st.fields[f] then bad("%s.%s: a field of the object with no ---@field", cname, f) end
        end
      end
      if rt.operators then
        for _, op in ipairs(sorted(rt.operators)) do
          if not st.operators[op] then bad("%s: operator %s has no ---@operator", cname, op) end
        end
        for _, op in ipairs(sorted(st.operators)) do
          if not rt.operators[op] then bad("%s: ---@operator %s, but the metatable has none", cname, op) end
        end
      end
    end
  end
  for _, cname in ipairs(sorted(stubs)) do
    if not rts[cname] and next(stubs[cname].functions) then
      bad("%s: the stubs declare functions of a class the module does not have (%s)", cname,
        table.concat(sorted(stubs[cname].functions), ", "))
    end
  end
  return problems
end

local function check(texts, rts)
  local stubs, problems = parse(texts)
  for file, text in pairs(texts) do
    local chunk, err = load(text, "=" .. file)
    if not chunk then problems[#problems + 1] = string.format("%s: not valid Lua: %s", file, err) end
  end
  for _, p in ipairs(compare(stubs, rts)) do problems[#problems + 1] = p end
  return problems
end

---------------------------------------------------------------- main

local texts = {}
for _, f in ipairs(stub_files(types_dir)) do texts[f] = read(types_dir .. "/" .. f) end
local rts = runtime()

if self_test then
  local function mutated(file, fn)
    local t = {}
    for k, v in pairs(texts) do t[k] = v end
    t[file] = fn(t[file])
    return t
  end
  local cases = {
    {"a method removed", mutated("moonreel.lua", function(s) return (s:gsub("\nfunction Tensor:reshape%(%.%.%.%) end", "\n")) end),
     "mr.Tensor:reshape: a function of the module with no stub"},
    {"a function that does not exist", mutated("moonreel.lua", function(s) return s .. "\nfunction mr.no_such_thing() end\n" end),
     "moonreel.no_such_thing: stubbed"},
    {"a recipe mode removed", mutated("moonreel/recipe.lua", function(s) return (s:gsub("\nfunction M%.r2v%(opts%) end", "\n")) end),
     "moonreel.recipe.r2v: a function of the module with no stub"},
    {"a pack method removed", mutated("moonreel/pack.lua", function(s) return (s:gsub("\nfunction Pack:latent_shape%([%w_, ]*%) end", "\n")) end),
     "mr.Pack:latent_shape: a function of the module with no stub"},
    {"a recipe mode that does not exist", mutated("moonreel/recipe.lua", function(s) return s .. "\nfunction M.no_such_mode(opts) end\n" end),
     "moonreel.recipe.no_such_mode: stubbed"},
    {"a run method that does not exist", mutated("moonreel/recipe.lua", function(s) return s .. "\nfunction Run:rewind() end\n" end),
     "mr.Run:rewind: stubbed"},
    {"a syntax error", mutated("moonreel/pack.lua", function(s) return s .. "\nfunction Pack:broken( end\n" end),
     "moonreel/pack.lua: not valid Lua"},
    {"an operator removed", mutated("moonreel.lua", function(s) return (s:gsub("\n%-%-%-@operator unm: mr.Tensor", "")) end),
     "mr.Tensor: operator unm has no ---@operator"},
  }
  for _, c in ipairs(cases) do
    local problems = check(c[2], rts)
    local found = false
    for _, p in ipairs(problems) do found = found or p:find(c[3], 1, true) ~= nil end
    if not found then
      io.stderr:write("self-test: the checker missed ", c[1], " (expected '", c[3], "'; got: ",
        table.concat(problems, "; "), ")\n")
      os.exit(1)
    end
  end
  print(string.format("self-test: the checker catches all %d planted mismatches", #cases))
end

local problems = check(texts, rts)
if #problems > 0 then
  io.stderr:write("the stubs in ", types_dir, " do not match the module:\n")
  for _, p in ipairs(problems) do io.stderr:write("  ", p, "\n") end
  os.exit(1)
end
local nf, nc = 0, 0
for _, rt in pairs(rts) do
  nc = nc + 1
  for _ in pairs(rt.functions) do nf = nf + 1 end
end
local modes = sorted(rts["moonreel.recipe"].modes)
print(string.format("stubs match the module: %d functions in %d modules and classes (recipe modes: %s)", nf, nc,
  table.concat(modes, ", ")))
