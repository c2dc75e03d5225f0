-- moonreel.termgfx: pictures in a terminal, for mr.show. Three ways, by what
-- the terminal says it has:
--   kitty   the kitty graphics protocol: RGB sent as is, scaled by the
--           terminal to a box of cells (kitty, WezTerm, Ghostty, Konsole);
--   sixel   DEC sixel, 216 colours (foot, mlterm, WezTerm, xterm -ti vt340);
--   blocks  truecolor half-block characters, two pixels a cell (any terminal
--           with 24-bit colour).
-- Every function returns the bytes to write; nothing here touches the
-- terminal, so the tests read back what a terminal would get.
local M = {}

local function b64(s)
  local A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {n >> 18 & 63, n >> 12 & 63, n >> 6 & 63, n & 63}
    out[#out + 1] = A:sub(q[1] + 1, q[1] + 1) .. A:sub(q[2] + 1, q[2] + 1) ..
      (b and A:sub(q[3] + 1, q[3] + 1) or "=") .. (c and A:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return table.concat(out)
end
M.base64 = b64

-- The way a terminal described by env (a table of environment variables, or
-- os.getenv's) takes pictures. $MOONREEL_GRAPHICS (kitty, sixel, blocks)
-- decides when set; else the variables the terminals set themselves.
function M.detect(env)
  local get = type(env) == "table" and function(k) return env[k] end or os.getenv
  local forced = get("MOONREEL_GRAPHICS")
  if forced == "kitty" or forced == "sixel" or forced == "blocks" then return forced end
  local term, program = get("TERM") or "", get("TERM_PROGRAM") or ""
  if term == "xterm-kitty" or get("KITTY_WINDOW_ID") or program == "WezTerm" or program == "ghostty" or
     term == "xterm-ghostty" or get("KONSOLE_VERSION") then
    return "kitty"
  end
  if term:match("^foot") or term:match("^mlterm") or term:match("sixel") then return "sixel" end
  return "blocks"
end

-- One frame (packed RGB, w x h) as kitty graphics shown in cols x rows cells,
-- the cursor left where it was (C=1) and image id 1 replaced by each frame,
-- so frames play in place. The payload goes in chunks of 4096 base64 bytes.
function M.kitty(rgb, w, h, cols, rows)
  local data = b64(rgb)
  local parts = {}
  for i = 1, #data, 4096 do
    local chunk = data:sub(i, i + 4095)
    local more = i + 4096 <= #data and 1 or 0
    if i == 1 then
      parts[#parts + 1] = string.format("\27_Ga=T,f=24,s=%d,v=%d,c=%d,r=%d,i=1,C=1,q=2,m=%d;%s\27\\", w, h, cols, rows,
        more, chunk)
    else
      parts[#parts + 1] = string.format("\27_Gm=%d;%s\27\\", more, chunk)
    end
  end
  return table.concat(parts)
end

-- One frame as sixel, each pixel scale x scale, in the 6x6x6 colour cube.
function M.sixel(rgb, w, h, scale)
  scale = scale or 1
  local W, H = w * scale, h * scale
  local src, used = {}, {} -- the colour of each source pixel, 0-based
  for i = 0, w * h - 1 do
    local r, g, b = rgb:byte(3 * i + 1, 3 * i + 3)
    local c = (r * 6 // 256) * 36 + (g * 6 // 256) * 6 + b * 6 // 256
    src[i] = c
    used[c] = true
  end
  local function index(x, y) return src[(y // scale) * w + x // scale] end -- output pixel, 0-based
  local out = {"\27Pq", string.format('"1;1;%d;%d', W, H)}
  for i = 0, 215 do
    if used[i] then
      local r, g, b = i // 36, i // 6 % 6, i % 6
      out[#out + 1] = string.format("#%d;2;%d;%d;%d", i, r * 100 // 5, g * 100 // 5, b * 100 // 5)
    end
  end
  for y0 = 0, H - 1, 6 do
    local bits = {} -- colour -> {x -> six bits}
    for x = 0, W - 1 do
      for k = 0, math.min(5, H - 1 - y0) do
        local c = index(x, y0 + k)
        local row = bits[c]
        if not row then row = {} bits[c] = row end
        row[x] = (row[x] or 0) | (1 << k)
      end
    end
    local colours = {}
    for c in pairs(bits) do colours[#colours + 1] = c end
    table.sort(colours)
    for n, c in ipairs(colours) do
      local row, line, x = bits[c], {"#" .. c}, 0
      while x < W do -- runs of one sixel character
        local v = row[x] or 0
        local run = 1
        while x + run < W and (row[x + run] or 0) == v do run = run + 1 end
        local ch = string.char(63 + v)
        line[#line + 1] = run > 3 and ("!" .. run .. ch) or ch:rep(run)
        x = x + run
      end
      out[#out + 1] = table.concat(line) .. (n < #colours and "$" or "")
    end
    out[#out + 1] = "-"
  end
  out[#out + 1] = "\27\\"
  return table.concat(out)
end

-- One frame as cols x rows truecolor half-block characters (each character:
-- the upper pixel in the foreground, the lower in the background).
function M.blocks(rgb, w, h, cols, rows)
  local function px(x, y)
    local o = (y * w + x) * 3
    return rgb:byte(o + 1, o + 3)
  end
  local buf = {}
  for r = 1, rows do
    for c = 1, cols do
      local x = math.min(w - 1, math.floor((c - 0.5) * w / cols))
      local y1 = math.min(h - 1, math.floor((2 * r - 1.5) * h / (2 * rows)))
      local y2 = math.min(h - 1, math.floor((2 * r - 0.5) * h / (2 * rows)))
      local r1, g1, b1 = px(x, y1)
      local r2, g2, b2 = px(x, y2)
      buf[#buf + 1] = string.format("\27[38;2;%d;%d;%dm\27[48;2;%d;%d;%dm\u{2580}", r1, g1, b1, r2, g2, b2)
    end
    buf[#buf + 1] = "\27[0m\n"
  end
  return table.concat(buf)
end

-- A clip (packed RGB, count frames of w x h) as an animation in place,
-- cols characters wide: returns prelude, frames (the bytes of each), back
-- (written before every frame but the first, to draw over the last), finish
-- (leaves the cursor below the picture) and the rows of text it takes. Sixel takes a cell as 10 x 20
-- pixels (terminals do not say; foot and xterm are close to it).
function M.animation(mode, rgb, count, w, h, cols)
  cols = math.max(1, math.min(cols, w))
  local rows = math.max(1, math.floor(h * cols / w / 2 + 0.5))
  local size = w * h * 3
  local frames = {}
  local function frame(f) return rgb:sub((f - 1) * size + 1, f * size) end
  if mode == "blocks" then
    for f = 1, count do frames[f] = M.blocks(frame(f), w, h, cols, rows) end
    return "", frames, string.format("\27[%dA", rows), "", rows
  end
  local scale = math.max(1, cols * 10 // w)
  if mode == "sixel" then rows = (h * scale + 19) // 20 end
  for f = 1, count do
    frames[f] = mode == "kitty" and M.kitty(frame(f), w, h, cols, rows) or M.sixel(frame(f), w, h, scale)
  end
  -- room first, so the picture never scrolls the screen while it plays;
  -- then each frame drawn from the saved cursor position (DECSC / DECRC)
  local prelude = ("\n"):rep(rows) .. string.format("\27[%dA\0277", rows)
  return prelude, frames, "\0278", string.format("\0278\27[%dB", rows), rows
end

return M
