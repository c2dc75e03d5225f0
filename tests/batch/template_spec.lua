-- moonreel.template: the validator's errors field by field (the cases in
-- template_cases.json, shared with test_template_schema.py), the examples,
-- the bounds an untrusted template meets, variants, variables and the
-- prompt's expansion. Needs no model.
local mr = require "moonreel"
local cjson = require "cjson"
local T = mr.template

local SRC = os.getenv("MOONREEL_SOURCE") or ".."
local H = dofile(SRC .. "/tests/lua/helpers.lua")

local function read_json(path) return assert(T.decode_json(assert(H.read(path)))) end

-- the cases' shorthands (see template_cases.json's "about")
local function expand(v)
  if type(v) == "string" then
    local x, n = v:match("^@repeat%((.*),(%d+)%)$")
    if x then return x:rep(tonumber(n)) end
    return v
  end
  if type(v) == "table" then
    local o = {}
    for k, x in pairs(v) do o[k] = expand(x) end
    return o
  end
  return v
end

local function merge_patch(target, patch)
  if type(patch) ~= "table" or #patch > 0 then
    if patch == "@null" then return cjson.null end
    if patch == "@[]" then return {} end
    return patch
  end
  local out = {}
  if type(target) == "table" then for k, x in pairs(target) do out[k] = x end end
  for k, v in pairs(patch) do
    if v == cjson.null then out[k] = nil else out[k] = merge_patch(out[k], v) end
  end
  return out
end

local function apply(base, patch)
  if type(patch) == "string" and patch:match("^@replace%(") then return T.decode_json(patch:match("^@replace%((.*)%)$")) end
  return merge_patch(base, expand(patch))
end

local function errors_of(doc)
  local ok, errs = T.validate(doc)
  if ok then return {} end
  return errs
end

-- The JSON blocks of docs/templates.md that are templates (tagged ```json test=batch).
local function doc_templates()
  local text = assert(H.read(SRC .. "/docs/templates.md"))
  local out = {}
  for block in text:gmatch("```json test=batch\n(.-)```") do
    local v = T.decode_json(block)
    if type(v) == "table" and v.schema then out[#out + 1] = v end
  end
  return out
end

describe("template validation", function()
  local cases = read_json(SRC .. "/tests/batch/template_cases.json")

  it("accepts the base of the cases, which holds every field", function()
    assert.are.same({}, errors_of(cases.base))
  end)

  it("gives each field's error with its path, and nothing else", function()
    assert.is_true(#cases.cases > 50)
    for _, c in ipairs(cases.cases) do
      local doc = apply(cases.base, c.patch)
      assert.are.same(c.errors, errors_of(doc), c.name)
    end
  end)

  it("gives every error at once, in the order of the format", function()
    local doc = apply(cases.base, {id = "Bad", loras = {{file = "x", strength = "1"}}, sampling = {steps = 0}})
    assert.are.same({
      "id: must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
      "loras[1].strength: must be a number",
      "sampling.steps: must be an integer 1 .. 10000 (it is 0)",
    }, errors_of(doc))
  end)

  it("accepts every example: the files and the templates in docs/templates.md", function()
    local files = {}
    for _, dir in ipairs{SRC .. "/docs/templates", SRC .. "/recipes/templates"} do
      for _, n in ipairs(assert(mr.listdir(dir))) do
        if n:match("%.json$") then files[#files + 1] = dir .. "/" .. n end
      end
    end
    assert.is_true(#files >= 2)
    for _, f in ipairs(files) do
      local tpl, errs = T.load(f)
      assert.is_table(tpl, f .. ": " .. table.concat(errs or {}, "; "))
    end
    local blocks = doc_templates()
    assert.is_true(#blocks >= 1)
    for i, d in ipairs(blocks) do assert.are.same({}, errors_of(d), "docs/templates.md block " .. i) end
  end)

  it("names the file in each error of T.load, and refuses what is not a template before reading it all", function()
    local dir = H.tmpdir()
    local function write(name, text)
      local f = assert(io.open(dir .. "/" .. name, "wb"))
      f:write(text)
      f:close()
      return dir .. "/" .. name
    end
    local p = write("bad.json", cjson.encode(apply(cases.base, {loras = {{file = "x", strength = "1"}}})))
    local tpl, errs = T.load(p)
    assert.is_nil(tpl)
    assert.are.same({p .. ": loras[1].strength: must be a number"}, errs)
    -- not JSON
    tpl, errs = T.load(write("text.json", "{\"schema\": "))
    assert.is_nil(tpl)
    assert.truthy(errs[1]:find(dir .. "/text.json: not JSON", 1, true), errs[1])
    -- too big: refused by its size
    tpl, errs = T.load(write("big.json", "{\"x\": \"" .. string.rep("a", T.LIMITS.file_bytes) .. "\"}"))
    assert.is_nil(tpl)
    assert.truthy(errs[1]:find("bytes; a template is at most " .. T.LIMITS.file_bytes, 1, true), errs[1])
    -- nested past the bound
    tpl, errs = T.load(write("deep.json", string.rep("[", 40) .. string.rep("]", 40)))
    assert.is_nil(tpl)
    assert.truthy(errs[1]:find("not JSON", 1, true) and errs[1]:find("nest", 1, true), errs[1])
    -- NaN and Infinity are not JSON numbers
    tpl, errs = T.load(write("nan.json", "{\"x\": NaN}"))
    assert.is_nil(tpl)
    -- text that is not UTF-8
    local doc = apply(cases.base, {title = "caf\xe9"})
    assert.are.same({"title: must be UTF-8 text"}, errors_of(doc))
    tpl, errs = T.load(dir .. "/missing.json")
    assert.is_nil(tpl)
    assert.truthy(errs[1]:find(dir .. "/missing.json: cannot read", 1, true))
    -- a device that says it is empty and never ends: read up to the limit only
    tpl, errs = T.load("/dev/zero")
    assert.is_nil(tpl)
    assert.truthy(errs[1]:find("/dev/zero: more than " .. T.LIMITS.file_bytes .. " bytes", 1, true), errs[1])
    H.rm(dir)
  end)

  it("never runs what a template holds: code in its strings is text", function()
    local dir = H.tmpdir()
    local marker = dir .. "/ran"
    local code = "os.execute('touch " .. marker .. "')"
    local doc = apply(cases.base, {title = code, inputs = {vars = {subject = {default = "x", max_len = 200}}},
                                   prompt = {template = "{subject} sq41sh %s ]] .. " .. code, trigger = "sq41sh %s"}})
    assert.are.same({}, errors_of(doc))
    local vars = assert(T.bind_vars(doc, {subject = "%1 {mood} (.-)+ " .. code}))
    local prompt = T.expand(doc.prompt.template, vars)
    assert.are.equal("%1 {mood} (.-)+ " .. code .. " sq41sh %s ]] .. " .. code, prompt)
    assert.is_false(H.exists(marker))
    H.rm(dir)
  end)

  it("overlays a variant: sections merge, null removes, loras+ appends, loras replaces", function()
    local doc = cases.base
    local fast = assert(T.overlay(doc, "fast"))
    assert.are.equal(4, fast.sampling.steps)
    assert.are.equal(1, fast.sampling.cfg)
    assert.are.equal(5, fast.sampling.shift) -- kept from the base
    assert.are.equal(2, #fast.loras)
    assert.are.equal("distill.safetensors", fast.loras[2].file)
    assert.is_nil(fast.variants)
    local d2 = apply(doc, {variants = {plain = {loras = {{file = "other.safetensors"}}, sampling = {seed = "@null"}}}})
    -- "@null" keeps a JSON null in the patch: the variant removes sampling.seed
    assert.are.same({}, errors_of(d2))
    local plain = assert(T.overlay(d2, "plain"))
    assert.are.equal(1, #plain.loras)
    assert.are.equal("other.safetensors", plain.loras[1].file)
    assert.is_nil(plain.sampling.seed)
    assert.are.equal(30, plain.sampling.steps)
    local none, msg = T.overlay(doc, "slow")
    assert.is_nil(none)
    assert.are.equal("no variant 'slow' (it has fast)", msg)
    -- the base is left as it was
    assert.are.equal(30, doc.sampling.steps)
    assert.are.equal(1, #doc.loras)
  end)

  it("binds a job's variables: defaults, unknown names, lengths in characters, choices", function()
    local doc = T.overlay(cases.base)
    assert.are.same({subject = "object", mood = "calm"}, T.bind_vars(doc, nil))
    assert.are.same({subject = "cat", mood = "wild"}, T.bind_vars(doc, {subject = "cat", mood = "wild"}))
    assert.are.same({subject = string.rep("é", 60), mood = "calm"}, T.bind_vars(doc, {subject = string.rep("é", 60)}))
    local function fails(vars, want)
      local v, msg = T.bind_vars(doc, vars)
      assert.is_nil(v)
      assert.are.equal(want, msg)
    end
    fails({subject = string.rep("x", 61)}, "vars.subject: 61 characters; the template takes at most 60")
    fails({subject = ""}, "vars.subject: 0 characters; the template takes at least 1")
    fails({mood = "sad"}, "vars.mood: 'sad' is not one of calm, wild")
    fails({colour = "red"}, "vars.colour: the template has no such variable (it takes mood, subject)")
    fails({subject = 5}, "vars.subject: must be a string")
    fails({subject = "caf\xe9"}, "vars.subject: must be UTF-8 text")
    local nodefault = apply(cases.base, {inputs = {vars = {subject = {default = cjson.null}}}})
    local v, msg = T.bind_vars(nodefault, {})
    assert.is_nil(v)
    assert.are.equal("vars.subject: required (the template has no default)", msg)
  end)

  it("expands {name} once, with {{ and }} as braces", function()
    assert.are.equal("a {x} b } c", T.expand("a {{x}} {v} }} c", {v = "b"}))
    assert.are.equal("{v}", T.expand("{v}", {v = "{v}"}))
    assert.are.same({"a ", {var = "v"}, " {"}, T.parse_prompt("a {v} {{"))
  end)

  it("writes canonical JSON: the same value gives the same bytes whatever the key order", function()
    local a = T.decode_json('{"b": 1, "a": {"y": [1, 2.5, "x"], "x": true}}')
    local b = T.decode_json('{"a": {"x": true, "y": [1, 2.5, "x"]}, "b": 1}')
    assert.are.equal(T.canonical_json(a), T.canonical_json(b))
    assert.are.equal('{"a":{"x":true,"y":[1,2.5,"x"]},"b":1}', T.canonical_json(a))
  end)
end)
