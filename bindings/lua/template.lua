-- moonreel.template (mr.template): effect templates as data. A template
-- (moonreel.template/1, docs/templates.md; the JSON Schema is
-- docs/template.schema.json) names a task, the model it fits, its LoRAs, its
-- inputs (image slots, text variables), a prompt template and fixed settings,
-- with named variants that overlay it. Templates are JSON and never code: the
-- file size, every string, list and nesting depth are bounded, and nothing a
-- template holds is run, compiled or used as a Lua pattern.
--
--   local T = require "moonreel.template"
--   local tpl = assert(T.load("squish.json"))        -- nil, {"squish.json: loras[1].strength: must be a number", ...}
--   local doc = assert(T.resolve(tpl, "fast"))        -- the variant overlaid (a plain table)
--   local vars = assert(T.bind_vars(doc, {subject = "cat"}))
--   print(T.expand(doc.prompt.template, vars))
local cjson_mod = require "cjson"

local M = {}

M.SCHEMA = "moonreel.template/1"

-- Bounds: what a template may hold, so an untrusted one costs little to check.
M.LIMITS = {
  file_bytes = 256 * 1024, depth = 16, loras = 8, vars = 32, choices = 64, images = 16, variants = 16,
  tags = 16, text = 4000, name = 64,
}

local TASKS = {"t2v", "i2v", "ti2v", "flf2v", "r2v"}
-- the recipe mode each task runs (i2v and ti2v are one task: the photo is the first frame)
M.TASK_MODE = {t2v = "t2v", i2v = "ti2v", ti2v = "ti2v", flf2v = "flf2v", r2v = "r2v"}
-- images a task takes: {least, most}
local TASK_IMAGES = {t2v = {0, 0}, i2v = {1, 1}, ti2v = {1, 1}, flf2v = {2, 2}, r2v = {1, 16}}

-- One JSON decoder for templates and manifests: nesting bounded, no NaN/Infinity.
local cjson = cjson_mod.new()
cjson.decode_max_depth(M.LIMITS.depth)
cjson.decode_invalid_numbers(false)
M.null = cjson_mod.null

-- Decodes JSON text; returns the value, or nil and the parser's message.
function M.decode_json(text)
  local ok, v = pcall(cjson.decode, text)
  if not ok then return nil, tostring(v):gsub("^.-: ", "", 1) end
  return v
end

------------------------------------------------------------------ field paths

local function key_path(path, key)
  if type(key) == "number" then return string.format("%s[%d]", path, key) end
  local k = tostring(key)
  if k:match("^[%a_][%w_+]*$") then return path == "" and k or path .. "." .. k end
  return string.format("%s[%s]", path, cjson_mod.encode(k))
end
M.key_path = key_path

-- A string from outside in a message: its control characters (a newline
-- above all) written as \xNN, so the message stays one line.
local function shown(v)
  return (tostring(v):gsub("%c", function(c) return string.format("\\x%02x", c:byte()) end))
end
M.shown = shown

------------------------------------------------------------------ the checks

-- A node is function(v, path, errs): it adds "path: message" to errs.
-- Every message is one line, whatever text of the template it quotes
-- (shown writes control characters as \xNN).
local function err(errs, path, fmt, ...)
  errs[#errs + 1] = shown(string.format("%s: " .. fmt, path == "" and "template" or path, ...))
end

local function is_null(v) return v == cjson_mod.null end

local function type_error(errs, path, v, what)
  if is_null(v) then
    err(errs, path, "must be %s, not null (null only removes a field in a variant)", what)
  else
    err(errs, path, "must be %s", what)
  end
end

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  return n == #v
end

local function is_object(v)
  if type(v) ~= "table" then return false end
  for k in pairs(v) do if type(k) ~= "string" then return false end end
  return true
end

local function fmt_num(x)
  if math.type(x) == "integer" or (x == math.floor(x) and math.abs(x) < 1e15) then return string.format("%d", x) end
  return string.format("%.14g", x)
end

-- string{min=, max=, charset=, charset_what=, enum=, hex=}
local function str(o)
  return function(v, path, errs)
    if type(v) ~= "string" then return type_error(errs, path, v, "a string") end
    local n = utf8.len(v)
    if not n then return err(errs, path, "must be UTF-8 text") end
    if o.enum then
      for _, e in ipairs(o.enum) do if v == e then return end end
      return err(errs, path, "must be one of %s", table.concat(o.enum, ", "))
    end
    local lo, hi = o.min or 0, o.max or M.LIMITS.text
    if n < lo or n > hi then
      if lo == hi then return err(errs, path, "must be %d characters (it has %d)", lo, n) end
      if lo == 0 then return err(errs, path, "must be at most %d characters (it has %d)", hi, n) end
      return err(errs, path, "must be %d to %d characters (it has %d)", lo, hi, n)
    end
    if o.charset and not v:match(o.charset) then return err(errs, path, "must be %s", o.charset_what) end
    if o.check then
      local msg = o.check(v)
      if msg then return err(errs, path, "%s", msg) end
    end
  end
end

local function num(o)
  return function(v, path, errs)
    local what = o.integer and "an integer" or "a number"
    if type(v) ~= "number" then return type_error(errs, path, v, what) end
    if v ~= v or (o.integer and v ~= math.floor(v)) or v < o.min or v > o.max then
      return err(errs, path, "must be %s %s .. %s (it is %s)", what, fmt_num(o.min), fmt_num(o.max), fmt_num(v))
    end
  end
end
local function int(lo, hi) return num{integer = true, min = lo, max = hi} end

local function bool()
  return function(v, path, errs)
    if type(v) ~= "boolean" then return type_error(errs, path, v, "true or false") end
  end
end

local function const(value)
  return function(v, path, errs)
    if v ~= value then err(errs, path, "must be \"%s\"", value) end
  end
end

local function array(item, o)
  return function(v, path, errs)
    if not is_array(v) then return type_error(errs, path, v, "an array") end
    if #v < (o.min or 0) then return err(errs, path, "must have at least %d item%s", o.min, o.min == 1 and "" or "s") end
    if #v > o.max then return err(errs, path, "must have at most %d items (it has %d)", o.max, #v) end
    for i, x in ipairs(v) do item(x, key_path(path, i), errs) end
  end
end

-- object{ {name, node, required}, ... }: fields checked in this order, then
-- unknown ones (sorted) refused.
local function object(fields, o)
  o = o or {}
  local known, names = {}, {}
  for _, f in ipairs(fields) do
    known[f[1]] = f
    names[#names + 1] = f[1]
  end
  return function(v, path, errs)
    if not is_object(v) then return type_error(errs, path, v, "an object") end
    for _, f in ipairs(fields) do
      local x = v[f[1]]
      if x == nil then
        if f[3] then err(errs, key_path(path, f[1]), "required") end
      else
        f[2](x, key_path(path, f[1]), errs)
      end
    end
    local extra = {}
    for k in pairs(v) do if not known[k] then extra[#extra + 1] = k end end
    table.sort(extra)
    for _, k in ipairs(extra) do
      err(errs, key_path(path, k), "unknown field (%s takes %s)", path == "" and "a template" or path,
        table.concat(names, ", "))
    end
    if o.after then o.after(v, path, errs) end
  end
end

-- map(key charset, what, value node, most entries)
local function map(charset, what, value, most)
  return function(v, path, errs)
    if not is_object(v) then return type_error(errs, path, v, "an object") end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    if #keys > most then return err(errs, path, "must have at most %d entries (it has %d)", most, #keys) end
    for _, k in ipairs(keys) do
      if #k > 32 or not k:match(charset) then
        err(errs, key_path(path, k), "the name must be %s", what)
      else
        value(v[k], key_path(path, k), errs)
      end
    end
  end
end

------------------------------------------------------------------ the format

local ID_SET, ID_WHAT = "^[a-z0-9][a-z0-9._%-]*$", "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
local NAME_SET, NAME_WHAT = "^[a-z_][a-z0-9_]*$", "lowercase letters, digits or '_', not starting with a digit (at most 32)"
local VARIANT_SET, VARIANT_WHAT = "^[a-z0-9][a-z0-9_%-]*$", "lowercase letters, digits, '_' or '-' (at most 32)"

-- A file beside the template: relative, inside its folder.
local function rel_file(v)
  if v:sub(1, 1) == "/" then return "must be relative to the template's folder, not absolute" end
  if v:find("\\", 1, true) then return "must use '/' between folders" end
  for part in v:gmatch("[^/]+") do
    if part == ".." then return "must stay inside the template's folder (no '..')" end
  end
  if v:sub(-1) == "/" then return "must name a file" end
end

local function seed_check(v)
  if not v:match("^%d+$") or #v > 20 or (#v == 20 and v > "18446744073709551615") or (#v > 1 and v:sub(1, 1) == "0") then
    return "must be a decimal string 0 .. 18446744073709551615"
  end
end

local LORA = object{
  {"file", str{min = 1, max = 255, check = rel_file}, true},
  {"sha256", str{min = 64, max = 64, charset = "^[0-9a-f]+$", charset_what = "64 lowercase hex digits"}},
  {"strength", num{min = -100, max = 100}},
  {"mode", str{enum = {"merge", "on_the_fly"}}},
  {"high", bool()},
  {"source", str{max = 500}},
  {"license", str{max = 64}},
}
local LORAS = array(LORA, {max = M.LIMITS.loras})

local VAR = object{
  {"type", str{enum = {"string"}}},
  {"default", str{max = M.LIMITS.text}},
  {"max_len", int(1, M.LIMITS.text)},
  {"min_len", int(0, M.LIMITS.text)},
  {"choices", array(str{max = M.LIMITS.text}, {min = 1, max = M.LIMITS.choices})},
  {"description", str{max = 500}},
}

local TRIGGER = function(v, path, errs)
  if type(v) == "string" then return str{min = 1, max = 64}(v, path, errs) end
  if is_array(v) then return array(str{min = 1, max = 64}, {min = 1, max = 8})(v, path, errs) end
  type_error(errs, path, v, "a string or an array of strings")
end

local SECTIONS = {
  model = object{
    {"family", str{enum = {"wan2.1", "wan2.2"}}, true},
    {"variants", array(str{min = 1, max = 32}, {min = 1, max = 16})},
  },
  inputs = object{
    {"images", object{
      {"min", int(0, M.LIMITS.images)},
      {"max", int(0, M.LIMITS.images)},
      {"roles", array(str{min = 1, max = 32, charset = NAME_SET, charset_what = NAME_WHAT}, {min = 1, max = M.LIMITS.images})},
      {"min_side", int(1, 16384)},
      {"max_aspect", num{min = 1, max = 100}},
    }},
    {"vars", map(NAME_SET, NAME_WHAT, VAR, M.LIMITS.vars)},
  },
  prompt = object{
    {"template", str{min = 1, max = M.LIMITS.text}, true},
    {"trigger", TRIGGER},
    {"negative", str{max = M.LIMITS.text}},
  },
  sampling = object{
    {"steps", int(1, 10000)},
    {"cfg", num{min = -1000, max = 1000}},
    {"shift", num{min = 0.001, max = 1000}},
    {"sampler", str{enum = {"unipc", "dpmpp", "euler"}}},
    {"seed", str{min = 1, max = 20, check = seed_check}},
    {"cfg_img", num{min = -1000, max = 1000}},
    {"vace_scale", num{min = -1000, max = 1000}},
    {"vace_start", num{min = 0, max = 1}},
    {"vace_end", num{min = 0, max = 1}},
  },
  video = object{
    {"width", int(16, 16384)},
    {"height", int(16, 16384)},
    {"frames", int(1, 4097)},
    {"fps", num{min = 0.001, max = 1000}},
    {"orientation", str{enum = {"fixed", "follow_input"}}},
  },
  preprocess = object{
    {"fit", str{enum = {"crop", "pad", "stretch"}}},
    {"pad_color", str{max = 7, charset = "^#%x%x%x%x%x%x$", charset_what = "#rrggbb"}},
    {"ref_fit", str{enum = {"pad", "crop", "keep"}}},
  },
  output = object{
    {"format", str{enum = {"mp4", "webp"}}},
    {"crf", int(0, 51)},
    {"quality", num{min = 0, max = 100}},
  },
}

-- what a variant may overlay (its values are checked on the overlaid template)
local OVERLAY_KEYS = {"title", "description", "loras", "loras+", "prompt", "sampling", "video", "preprocess", "output"}

local VARIANT = function(v, path, errs)
  if not is_object(v) then return type_error(errs, path, v, "an object") end
  local known = {}
  for _, k in ipairs(OVERLAY_KEYS) do known[k] = true end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not known[k] then
      err(errs, key_path(path, k), "a variant overlays only %s", table.concat(OVERLAY_KEYS, ", "))
    elseif k == "loras+" then
      LORAS(v[k], key_path(path, k), errs)
    elseif SECTIONS[k] and not is_null(v[k]) and not is_object(v[k]) then
      type_error(errs, key_path(path, k), v[k], "an object (or null to remove it)")
    end
  end
end

local BASE = object{
  {"schema", const(M.SCHEMA), true},
  {"id", str{min = 1, max = M.LIMITS.name, charset = ID_SET, charset_what = ID_WHAT}, true},
  {"version", str{min = 1, max = 32, charset = "^[%w.+%-]+$", charset_what = "letters, digits, '.', '+' or '-'"}, true},
  {"title", str{min = 1, max = 200}, true},
  {"description", str{max = M.LIMITS.text}},
  {"tags", array(str{min = 1, max = 32, charset = "^[a-z0-9%-]+$", charset_what = "lowercase letters, digits or '-'"},
    {max = M.LIMITS.tags})},
  {"task", str{enum = TASKS}, true},
  {"model", SECTIONS.model},
  {"loras", LORAS},
  {"inputs", SECTIONS.inputs},
  {"prompt", SECTIONS.prompt, true},
  {"sampling", SECTIONS.sampling},
  {"video", SECTIONS.video},
  {"preprocess", SECTIONS.preprocess},
  {"output", SECTIONS.output},
  {"variants", map(VARIANT_SET, VARIANT_WHAT, VARIANT, M.LIMITS.variants)},
}

------------------------------------------------------------------ placeholders

-- Splits a prompt template into literal text and {name} placeholders;
-- "{{" and "}}" are literal braces. Returns the parts, or nil and a message.
local function parse_prompt(s)
  local parts, i, n, lit = {}, 1, #s, {}
  while i <= n do
    local c = s:sub(i, i)
    if c == "{" and s:sub(i + 1, i + 1) == "{" then
      lit[#lit + 1] = "{"
      i = i + 2
    elseif c == "}" and s:sub(i + 1, i + 1) == "}" then
      lit[#lit + 1] = "}"
      i = i + 2
    elseif c == "{" then
      local close = s:find("}", i + 1, true)
      if not close then return nil, string.format("a '{' at character %d is not closed (write {{ for a brace)", i) end
      local name = s:sub(i + 1, close - 1)
      if #name > 32 or not name:match(NAME_SET) then
        return nil, string.format("{%s} at character %d is not a variable name (%s)", shown(name), i, NAME_WHAT)
      end
      if #lit > 0 then parts[#parts + 1] = table.concat(lit) lit = {} end
      parts[#parts + 1] = {var = name}
      i = close + 1
    elseif c == "}" then
      return nil, string.format("a '}' at character %d closes nothing (write }} for a brace)", i)
    else
      local j = s:find("[{}]", i)
      j = j and j - 1 or n
      lit[#lit + 1] = s:sub(i, j)
      i = j + 1
    end
  end
  if #lit > 0 then parts[#parts + 1] = table.concat(lit) end
  return parts
end
M.parse_prompt = parse_prompt

-- The prompt with each {name} replaced by vars[name], in one pass (a value's
-- own braces are kept as they are, never expanded again).
function M.expand(template, vars)
  local parts = assert(parse_prompt(template))
  local out = {}
  for i, p in ipairs(parts) do
    if type(p) == "table" then
      out[i] = assert(vars[p.var], "no value for {" .. p.var .. "}")
    else
      out[i] = p
    end
  end
  return table.concat(out)
end

------------------------------------------------------------------ checks across fields

local function sorted_keys(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k, function(x, y) return tostring(x) < tostring(y) end)
  return k
end

-- an image count the field checks accepted, or nil
local function number_or_nil(x) return math.type(x) and x >= 0 and x <= M.LIMITS.images and x == math.floor(x) and x or nil end

-- The least and most images of a template: inputs.images.min/max, else the
-- task's (r2v: as many as roles are named, else up to 16).
local function count_images(doc)
  local want = TASK_IMAGES[doc.task]
  if not want then return nil end
  local inputs = is_object(doc.inputs) and doc.inputs or {}
  local im = is_object(inputs.images) and inputs.images or {}
  local hi = number_or_nil(im.max) or (is_array(im.roles) and next(im.roles) and #im.roles) or want[2]
  local lo = number_or_nil(im.min) or math.min(want[1], hi)
  return lo, hi
end

-- What one field at a time cannot say: the task's images, the variables the
-- prompt names, trigger words, settings only some tasks take.
local function check_semantics(doc, errs)
  local task = doc.task
  local want = TASK_IMAGES[task]
  if not want then return end
  local inputs = type(doc.inputs) == "table" and doc.inputs or {}
  local im = is_object(inputs.images) and inputs.images or nil
  if im and task == "t2v" then
    if (number_or_nil(im.max) or 0) ~= 0 or (number_or_nil(im.min) or 0) ~= 0 or im.roles ~= nil then
      err(errs, "inputs.images", "t2v takes no images")
    end
  elseif im then
    local takes = want[1] == want[2] and string.format("exactly %d image%s", want[1], want[1] == 1 and "" or "s")
      or string.format("%d to %d images", want[1], want[2])
    local lo, hi = count_images(doc)
    local roles = is_array(im.roles) and next(im.roles) and #im.roles or nil
    if number_or_nil(im.min) and (im.min < want[1] or im.min > want[2]) then
      err(errs, "inputs.images.min", "%s takes %s", task, takes)
    elseif number_or_nil(im.max) and (im.max < want[1] or im.max > want[2]) then
      err(errs, "inputs.images.max", "%s takes %s", task, takes)
    elseif lo > hi then
      err(errs, "inputs.images.min", "must not be more than inputs.images.max (%d)", hi)
    elseif roles and (roles < want[1] or roles > want[2]) then
      err(errs, "inputs.images.roles", "%s takes %s", task, takes)
    elseif roles and roles ~= hi then
      err(errs, "inputs.images.roles", "must name each of the %d image slot%s (it names %d)", hi, hi == 1 and "" or "s", roles)
    end
  end
  -- the prompt's placeholders are declared variables; trigger words are in it
  local vars = is_object(inputs.vars) and inputs.vars or {}
  local prompt = type(doc.prompt) == "table" and doc.prompt or {}
  if type(prompt.template) == "string" and utf8.len(prompt.template) then
    local parts, perr = parse_prompt(prompt.template)
    if not parts then
      err(errs, "prompt.template", "%s", perr)
    else
      local seen = {}
      for _, p in ipairs(parts) do
        if type(p) == "table" and not seen[p.var] then
          seen[p.var] = true
          if vars[p.var] == nil then
            err(errs, "prompt.template", "{%s} is not a variable of inputs.vars", p.var)
          end
        end
      end
    end
    local triggers = type(prompt.trigger) == "string" and {prompt.trigger} or is_array(prompt.trigger) and prompt.trigger or {}
    for i, t in ipairs(triggers) do
      if type(t) == "string" and t ~= "" and not prompt.template:find(t, 1, true) then
        err(errs, type(prompt.trigger) == "string" and "prompt.trigger" or key_path("prompt.trigger", i),
          "\"%s\" does not appear in prompt.template", t)
      end
    end
  end
  -- each variable's default fits its own limits
  for _, name in ipairs(sorted_keys(vars)) do
    local v = vars[name]
    local path = key_path("inputs.vars", name)
    if type(v) == "table" then
      local maxl = type(v.max_len) == "number" and v.max_len or 200
      local minl = type(v.min_len) == "number" and v.min_len or 0
      if minl > maxl then
        err(errs, key_path(path, "min_len"), "must not be more than max_len (%d)", maxl)
      elseif type(v.default) == "string" and utf8.len(v.default) then
        local n = utf8.len(v.default)
        if n > maxl or n < minl then
          err(errs, key_path(path, "default"), "has %d characters; the variable takes %d to %d", n, minl, maxl)
        elseif is_array(v.choices) then
          local ok = false
          for _, c in ipairs(v.choices) do if c == v.default then ok = true end end
          if not ok then err(errs, key_path(path, "default"), "must be one of the choices") end
        end
      end
    end
  end
  -- a LoRA fits one model: say which
  if is_array(doc.loras) and #doc.loras > 0 and doc.model == nil then
    err(errs, "model", "required when the template has loras (a LoRA fits one model)")
  end
  -- settings only some tasks take
  local s = type(doc.sampling) == "table" and doc.sampling or {}
  for _, k in ipairs{"cfg_img", "vace_scale", "vace_start", "vace_end"} do
    if s[k] ~= nil and task ~= "r2v" then err(errs, key_path("sampling", k), "only an r2v template takes it") end
  end
  if type(s.vace_start) == "number" and type(s.vace_end) == "number" and s.vace_start > s.vace_end then
    err(errs, "sampling.vace_start", "must not be after sampling.vace_end")
  end
  local pre = type(doc.preprocess) == "table" and doc.preprocess or {}
  if task == "t2v" then
    for _, k in ipairs{"fit", "pad_color", "ref_fit"} do
      if pre[k] ~= nil then err(errs, key_path("preprocess", k), "a t2v template has no images to fit") end
    end
  elseif task ~= "r2v" and pre.ref_fit ~= nil then
    err(errs, "preprocess.ref_fit", "only an r2v template takes it (use fit)")
  elseif task == "r2v" and (pre.fit ~= nil or pre.pad_color ~= nil) then
    err(errs, pre.fit ~= nil and "preprocess.fit" or "preprocess.pad_color", "an r2v template fits its references with ref_fit")
  end
  if pre.pad_color ~= nil and (pre.fit == nil or pre.fit == "crop" or pre.fit == "stretch") and task ~= "r2v" and task ~= "t2v" then
    err(errs, "preprocess.pad_color", "only used with fit \"pad\"")
  end
  local v = type(doc.video) == "table" and doc.video or {}
  if type(v.frames) == "number" and v.frames % 4 ~= 1 then
    err(errs, "video.frames", "must be 4k+1 (1, 5, 9, ... 81): Wan's VAE packs 4 frames per latent frame after the first")
  end
  for _, k in ipairs{"width", "height"} do
    if math.type(v[k]) and v[k] % 16 ~= 0 then err(errs, key_path("video", k), "must be a multiple of 16") end
  end
  if v.orientation == "follow_input" then
    if task == "t2v" then err(errs, "video.orientation", "follow_input needs an input image (t2v has none)")
    elseif v.width == nil or v.height == nil then
      err(errs, "video.orientation", "follow_input needs video.width and video.height (without them the size already follows the image)")
    end
  end
end

------------------------------------------------------------------ variants

local function copy(v)
  if type(v) ~= "table" then return v end
  local o = {}
  for k, x in pairs(v) do o[k] = copy(x) end
  return o
end

-- A variant overlays as a JSON merge patch (RFC 7386) two levels deep: a
-- section (prompt, sampling, ...) merges field by field, null removes a
-- field or a whole section, anything else replaces; "loras" replaces the
-- list and "loras+" appends to it.
local function overlay_patch(doc, patch)
  local out = copy(doc)
  for _, k in ipairs(sorted_keys(patch)) do
    local v = patch[k]
    if k == "loras+" then
      -- applied last, below
    elseif is_null(v) then
      out[k] = nil
    elseif SECTIONS[k] and is_object(v) then
      local section = is_object(out[k]) and out[k] or {}
      for f, x in pairs(v) do
        if is_null(x) then section[f] = nil else section[f] = copy(x) end
      end
      out[k] = section
    else
      out[k] = copy(v)
    end
  end
  local plus = patch["loras+"]
  if is_array(plus) then
    out.loras = is_array(out.loras) and out.loras or {}
    for _, l in ipairs(plus) do out.loras[#out.loras + 1] = copy(l) end
  end
  return out
end

-- The template with variant name overlaid (name nil: the base). Returns a
-- new table, or nil and a message for an unknown variant.
function M.overlay(doc, name)
  if name == nil or name == "" then
    local out = copy(doc)
    out.variants = nil
    return out
  end
  local variants = type(doc.variants) == "table" and doc.variants or {}
  local patch = variants[name]
  if type(patch) ~= "table" then
    local names = {}
    for k in pairs(variants) do names[#names + 1] = k end
    table.sort(names)
    return nil, string.format("no variant '%s' (%s)", shown(name),
      #names > 0 and "it has " .. table.concat(names, ", ") or "it has none")
  end
  local out = overlay_patch(doc, patch)
  out.variants = nil
  return out
end

------------------------------------------------------------------ validate / load

-- Every error of a decoded template, each "field.path: message" (arrays
-- counted from 1, as in loras[1].strength). Returns true, or false and the list.
function M.validate(doc)
  local errs = {}
  BASE(doc, "", errs)
  if is_object(doc) then
    check_semantics(doc, errs)
    -- each variant: its own shape, then the overlaid template's errors that the base does not have
    if is_object(doc.variants) then
      local base_errs = {}
      for _, e in ipairs(errs) do base_errs[e] = true end
      local names = {}
      for k in pairs(doc.variants) do names[#names + 1] = k end
      table.sort(names)
      for _, name in ipairs(names) do
        local patch = doc.variants[name]
        if is_object(patch) and type(name) == "string" and name:match(VARIANT_SET) and #name <= 32 then
          local shape = {} -- its own errors are already listed (BASE checks each variant's shape)
          VARIANT(patch, key_path("variants", name), shape)
          if #shape == 0 then
            local merged = M.overlay(doc, name)
            local merrs = {}
            BASE(merged, "", merrs)
            check_semantics(merged, merrs)
            for _, e in ipairs(merrs) do
              if not base_errs[e] then errs[#errs + 1] = key_path("variants", name) .. "." .. e end
            end
          end
        end
      end
    end
  end
  if #errs > 0 then return false, errs end
  return true
end

-- A template file: read (at most LIMITS.file_bytes), decoded, validated.
-- Returns {doc=, path=, dir=, sha256=}, or nil and a list of lines each
-- naming the file and the field.
function M.load(path)
  local f, oerr = io.open(path, "rb")
  local name = path
  path = shown(path) -- (in messages; a batch manifest names the file)
  if not f then return nil, {string.format("%s: cannot read: %s", path, shown(oerr))} end
  local size = f:seek("end")
  if not size then
    f:close()
    return nil, {string.format("%s: cannot read (not a file)", path)}
  end
  if size > M.LIMITS.file_bytes then
    f:close()
    return nil, {string.format("%s: %d bytes; a template is at most %d", path, size, M.LIMITS.file_bytes)}
  end
  f:seek("set")
  -- read no more than the limit allows whatever the size said: a device such
  -- as /dev/zero reports 0 bytes and never ends
  local text = f:read(M.LIMITS.file_bytes + 1) or ""
  f:close()
  if #text > M.LIMITS.file_bytes then
    return nil, {string.format("%s: more than %d bytes; a template is at most that", path, M.LIMITS.file_bytes)}
  end
  local doc, jerr = M.decode_json(text)
  if doc == nil then return nil, {string.format("%s: not JSON: %s", path, jerr)} end
  local ok, errs = M.validate(doc)
  if not ok then
    local lines = {}
    for i, e in ipairs(errs) do lines[i] = path .. ": " .. e end
    return nil, lines
  end
  return {doc = doc, path = name, dir = name:match("^(.*)/[^/]*$") or ".", text = text}
end

------------------------------------------------------------------ using a template

-- The job's variables against the template's: unknown names, types, UTF-8,
-- lengths and choices; defaults fill the rest. Returns the table of values,
-- or nil and one message naming the variable.
function M.bind_vars(doc, given)
  local decl = (doc.inputs or {}).vars or {}
  given = given or {}
  local names = {}
  for k in pairs(given) do names[#names + 1] = tostring(k) end
  table.sort(names)
  for _, k in ipairs(names) do
    if decl[k] == nil then
      local known = {}
      for n in pairs(decl) do known[#known + 1] = n end
      table.sort(known)
      return nil, string.format("%s: the template has no such variable (%s)", key_path("vars", k),
        #known > 0 and "it takes " .. table.concat(known, ", ") or "it takes none")
    end
  end
  local out = {}
  local all = {}
  for n in pairs(decl) do all[#all + 1] = n end
  table.sort(all)
  for _, name in ipairs(all) do
    local d = decl[name]
    local v = given[name]
    if v == nil then v = d.default end
    if v == nil then return nil, string.format("vars.%s: required (the template has no default)", name) end
    if type(v) ~= "string" then return nil, string.format("vars.%s: must be a string", name) end
    local n = utf8.len(v)
    if not n then return nil, string.format("vars.%s: must be UTF-8 text", name) end
    local maxl, minl = d.max_len or 200, d.min_len or 0
    if n > maxl then return nil, string.format("vars.%s: %d characters; the template takes at most %d", name, n, maxl) end
    if n < minl then return nil, string.format("vars.%s: %d characters; the template takes at least %d", name, n, minl) end
    if d.choices then
      local ok = false
      for _, c in ipairs(d.choices) do if c == v then ok = true end end
      if not ok then return nil, string.format("vars.%s: '%s' is not one of %s", name, shown(v), shown(table.concat(d.choices, ", "))) end
    end
    out[name] = v
  end
  return out
end

-- The images a resolved template takes: {min, max, roles, min_side, max_aspect}.
function M.image_slots(doc)
  local im = (doc.inputs or {}).images or {}
  local lo, hi = count_images(doc)
  return {min = lo, max = hi, roles = im.roles, min_side = im.min_side, max_aspect = im.max_aspect}
end

-- Canonical JSON (keys sorted, numbers as %.17g): the same value gives the
-- same bytes whatever the key order of the file, for hashing.
local function canon(v, out)
  local t = type(v)
  if t == "table" and is_array(v) and next(v) ~= nil then
    out[#out + 1] = "["
    for i, x in ipairs(v) do
      if i > 1 then out[#out + 1] = "," end
      canon(x, out)
    end
    out[#out + 1] = "]"
  elseif t == "table" then
    out[#out + 1] = "{"
    for i, k in ipairs(sorted_keys(v)) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = cjson_mod.encode(tostring(k))
      out[#out + 1] = ":"
      canon(v[k], out)
    end
    out[#out + 1] = "}"
  elseif t == "number" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then out[#out + 1] = string.format("%d", v)
    else out[#out + 1] = string.format("%.17g", v) end
  elseif t == "string" then
    out[#out + 1] = cjson_mod.encode(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  else
    out[#out + 1] = "null"
  end
  return out
end
function M.canonical_json(v) return table.concat(canon(v, {})) end

return M
