-- Fits a pack's latent-to-RGB preview factors (issue 19): generates clips
-- with the pack (fixed prompts and seeds, the pack's sampling defaults),
-- decodes them, averages the decoded video (clamped to [-1, 1], as it is
-- written) over each latent pixel's block of frames and pixels, and solves
-- the least squares rgb = Fᵀ z + b over the latent pixels of the first clips.
-- The last clips are held out. It prints the fit's error on both (mean
-- absolute and RMS, in the [-1, 1] units of the video, of the clamped
-- projection against the pooled decode) and writes the factors into the
-- pack's moonreel_pack.json as "preview": {"rgb_factors", "rgb_bias", "fit"}
-- (the other fields untouched), unless --dry-run.
--
--   build/moonreel tools/preview/fit.lua [--model models/default] [--clips 12] [--held-out 3] [--dry-run]
--
-- The same pack, clip count and device give the same factors: every clip's
-- prompt and seed are fixed below. Rerun it whenever the pack's VAE changes
-- (python3 -m tools.train.export writes a manifest without the field).
local mr = require "moonreel"
local cjson = require "cjson"

local function parse(argv)
  local o = {model = "models/default", clips = 12, held_out = 3}
  local i = 1
  while argv[i] do
    local k = argv[i]:match("^%-%-([%w%-]+)$")
    if k == "dry-run" then
      o.dry_run = true
      i = i + 1
    elseif k and argv[i + 1] then
      o[k:gsub("%-", "_")] = argv[i + 1]
      i = i + 2
    else
      error("usage: tools/preview/fit.lua [--model DIR] [--clips N] [--held-out N] [--dry-run]", 0)
    end
  end
  o.clips, o.held_out = math.tointeger(tonumber(o.clips)), math.tointeger(tonumber(o.held_out))
  assert(o.clips and o.held_out and o.held_out >= 0 and o.clips > o.held_out, "--clips N > --held-out M >= 0")
  return o
end

-- tinyworld captions (tools/tinyworld): every colour, shape, background and
-- motion comes round as the clip index grows.
local COLOURS = {"red", "green", "blue", "yellow", "white", "purple"}
local SHAPES = {"circle", "square", "triangle"}
local BACKGROUNDS = {"black", "gray", "dark blue"}
local MOTIONS = {"moving left", "moving right", "moving up", "moving down", "growing", "shrinking", "staying still"}
local function prompt(i)
  return string.format("a %s %s %s on a %s background", COLOURS[(i - 1) % 6 + 1], SHAPES[(i - 1) % 3 + 1],
    MOTIONS[(i - 1) % 7 + 1], BACKGROUNDS[(i - 1) // 2 % 3 + 1])
end
local function seed(i) return 9000 + i end

-- A decoded video [3, F, H, W] averaged to latent resolution [3, T, h, w]:
-- latent frame 1 is video frame 1, latent frame k > 1 frames
-- 2 + ts (k - 2) .. 1 + ts (k - 1) (the VAE's causal time stride ts), and
-- each latent pixel an s x s block. Host arithmetic on a table.
local function pool(video, s, ts)
  local v = video:totable()
  local F, H, W = #v[1], #v[1][1], #v[1][1][1]
  local T, h, w = (F - 1) // ts + 1, H // s, W // s
  local out = {}
  for c = 1, 3 do
    out[c] = {}
    for t = 1, T do
      local f0, f1 = t == 1 and 1 or 2 + ts * (t - 2), t == 1 and 1 or 1 + ts * (t - 1)
      local plane = {}
      for y = 1, h do
        local row = {}
        for x = 1, w do
          local sum = 0
          for f = f0, f1 do
            local frame = v[c][f]
            for yy = (y - 1) * s + 1, y * s do
              local line = frame[yy]
              for xx = (x - 1) * s + 1, x * s do
                sum = sum + math.max(-1, math.min(1, line[xx]))
              end
            end
          end
          row[x] = sum / ((f1 - f0 + 1) * s * s)
        end
        plane[y] = row
      end
      out[c][t] = plane
    end
  end
  return out
end

-- Solves A x = b (n x n, A symmetric positive definite) by Gaussian elimination with partial pivoting.
local function solve(A, b)
  local n = #A
  local M = {}
  for i = 1, n do
    M[i] = {}
    for j = 1, n do M[i][j] = A[i][j] end
    M[i][n + 1] = b[i]
  end
  for k = 1, n do
    local p = k
    for i = k + 1, n do if math.abs(M[i][k]) > math.abs(M[p][k]) then p = i end end
    M[k], M[p] = M[p], M[k]
    for i = k + 1, n do
      local f = M[i][k] / M[k][k]
      for j = k, n + 1 do M[i][j] = M[i][j] - f * M[k][j] end
    end
  end
  local x = {}
  for i = n, 1, -1 do
    local sum = M[i][n + 1]
    for j = i + 1, n do sum = sum - M[i][j] * x[j] end
    x[i] = sum / M[i][i]
  end
  return x
end

-- Latent pixels {z (C values), rgb (3 values)} of a clip.
local function samples(latent, pooled, into)
  local z = latent:totable()
  local C, T, h, w = #z, #z[1], #z[1][1], #z[1][1][1]
  for t = 1, T do
    for y = 1, h do
      for x = 1, w do
        local zz = {}
        for c = 1, C do zz[c] = z[c][t][y][x] end
        into[#into + 1] = {z = zz, rgb = {pooled[1][t][y][x], pooled[2][t][y][x], pooled[3][t][y][x]}}
      end
    end
  end
end

-- Least squares of rgb on [z, 1] over the samples: factors {C rows of {r, g, b}}, bias {r, g, b}.
local function fit(set)
  local C = #set[1].z
  local n = C + 1
  local A, B = {}, {{}, {}, {}}
  for i = 1, n do
    A[i] = {}
    for j = 1, n do A[i][j] = 0 end
    for k = 1, 3 do B[k][i] = 0 end
  end
  for _, s in ipairs(set) do
    local a = {table.unpack(s.z)}
    a[n] = 1
    for i = 1, n do
      local ai = a[i]
      local row = A[i]
      for j = i, n do row[j] = row[j] + ai * a[j] end
      for k = 1, 3 do B[k][i] = B[k][i] + ai * s.rgb[k] end
    end
  end
  for i = 1, n do
    for j = 1, i - 1 do A[i][j] = A[j][i] end
    A[i][i] = A[i][i] * (1 + 1e-9) + 1e-9 -- a whisper of ridge: a channel that never varies stays solvable
  end
  local sol = {solve(A, B[1]), solve(A, B[2]), solve(A, B[3])}
  local factors = {}
  for c = 1, C do factors[c] = {sol[1][c], sol[2][c], sol[3][c]} end
  return factors, {sol[1][n], sol[2][n], sol[3][n]}
end

-- Mean absolute and RMS error of clamp(Fᵀ z + b) against the pooled decode.
local function errors(set, factors, bias)
  local abs, sq, n = 0, 0, 0
  for _, s in ipairs(set) do
    for k = 1, 3 do
      local v = bias[k]
      for c = 1, #s.z do v = v + factors[c][k] * s.z[c] end
      v = math.max(-1, math.min(1, v))
      local d = v - s.rgb[k]
      abs, sq, n = abs + math.abs(d), sq + d * d, n + 1
    end
  end
  return abs / n, math.sqrt(sq / n)
end

local function num(x)
  local s = string.format("%.6g", x)
  return s == "-0" and "0" or s
end

-- The manifest's text with its top-level member "preview" set to the JSON
-- text value (replaced where it is, else added last). The manifest is as
-- Python's json.dump(indent=1) writes it: a top-level member starts on a
-- line ' "key": ', and everything up to the next such line or the final '}'
-- is its value.
local function set_member(text, key, value)
  local lines = {}
  for l in (text:gsub("%s+$", "") .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  if lines[1] ~= "{" or lines[#lines] ~= "}" then error("the manifest is not laid out as json.dump(indent=1) writes", 0) end
  local members = {} -- each {key =, text = its lines joined, trailing comma removed}
  for i = 2, #lines - 1 do
    local k = lines[i]:match('^ "([^"]+)": ')
    if k then members[#members + 1] = {key = k, lines = {}} end
    if not members[#members] then error("the manifest is not laid out as json.dump(indent=1) writes", 0) end
    table.insert(members[#members].lines, lines[i])
  end
  local mine = ' "' .. key .. '": ' .. value
  local found = false
  for _, m in ipairs(members) do
    if m.key == key then
      m.lines, found = {mine}, true
    end
  end
  if not found then members[#members + 1] = {key = key, lines = {mine}} end
  local body = {}
  for i, m in ipairs(members) do
    body[i] = table.concat(m.lines, "\n"):gsub(",$", "") .. (i < #members and "," or "")
  end
  return "{\n" .. table.concat(body, "\n") .. "\n}"
end

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function main(argv)
  local o = parse(argv)
  local pack <close> = mr.pack.load(o.model)
  local d = pack.defaults
  local train, held = {}, {}
  local t0 = mr.clock()
  for i = 1, o.clips do
    local latent
    local r = mr.recipe.t2v{pack = pack, prompt = prompt(i), seed = seed(i), out = false, quiet = true,
      after_step = function(step)
        if step.index == step.steps then latent = step.x:clone() end -- the latent the run decodes
      end}
    local pooled = pool(r.frames, pack.vae_stride, pack.vae_tstride)
    r.frames:close()
    samples(latent, pooled, i <= o.clips - o.held_out and train or held)
    latent:close()
    io.stderr:write(string.format("clip %d/%d (%s, seed %d) %.0f s\n", i, o.clips, prompt(i), seed(i), mr.clock() - t0))
  end
  local factors, bias = fit(train)
  local mae, rmse = errors(train, factors, bias)
  local fig = {clips = o.clips - o.held_out, latent_pixels = #train, mean_abs_error = tonumber(num(mae)),
               rms_error = tonumber(num(rmse))}
  print(string.format("fit on %d clips (%d latent pixels): mean abs error %.4f, RMS %.4f ([-1, 1] units)",
    fig.clips, #train, mae, rmse))
  local held_fig
  if #held > 0 then
    local hmae, hrmse = errors(held, factors, bias)
    held_fig = {clips = o.held_out, latent_pixels = #held, mean_abs_error = tonumber(num(hmae)),
                rms_error = tonumber(num(hrmse))}
    print(string.format("held out %d clips (%d latent pixels): mean abs error %.4f, RMS %.4f", o.held_out, #held,
      hmae, hrmse))
  end
  local rows = {}
  for c, f in ipairs(factors) do rows[c] = string.format("   [%s, %s, %s]", num(f[1]), num(f[2]), num(f[3])) end
  -- how it was made, in a fixed order (the tool, its clips, the errors)
  local function figures(f)
    return string.format('{"clips": %d, "latent_pixels": %d, "mean_abs_error": %s, "rms_error": %s}', f.clips,
      f.latent_pixels, num(f.mean_abs_error), num(f.rms_error))
  end
  local record = {
    string.format('   "tool": "tools/preview/fit.lua --clips %d --held-out %d"', o.clips, o.held_out),
    string.format('   "clips": "recipes/t2v.lua on tinyworld captions, seeds %d .. %d, %d steps %s, %d frames %dx%d"',
      seed(1), seed(o.clips), d.steps, d.sampler, d.frames, d.width, d.height),
    string.format('   "device": %s', cjson.encode(mr.device().name)),
    '   "train": ' .. figures(fig),
  }
  if held_fig then record[#record + 1] = '   "held_out": ' .. figures(held_fig) end
  local value = "{\n  \"rgb_factors\": [\n" .. table.concat(rows, ",\n") .. "\n  ],\n" ..
    string.format("  \"rgb_bias\": [%s, %s, %s],\n", num(bias[1]), num(bias[2]), num(bias[3])) ..
    "  \"fit\": {\n" .. table.concat(record, ",\n") .. "\n  }\n }"
  print(value)
  if o.dry_run then return 0 end
  local path = o.model:gsub("/+$", "") .. "/moonreel_pack.json"
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  local new = set_member(text, "preview", value) .. (text:sub(-1) == "\n" and "\n" or "")
  -- the result must decode to the old manifest with the new field, nothing else changed
  local before, after = cjson.decode(text), cjson.decode(new)
  before.preview = cjson.decode(value)
  assert(same(before, after), "rewriting the manifest would change other fields")
  local tmp = path .. ".tmp"
  f = assert(io.open(tmp, "wb"))
  f:write(new)
  f:close()
  assert(os.rename(tmp, path))
  print("wrote " .. path)
  return 0
end

os.exit(main(arg), true)
