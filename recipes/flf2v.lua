-- First and last frame to video (Wan 2.1 FLF2V; Wan 2.1 I2V and Wan 2.2
-- I2V-A14B packs take it the same way): CLIP features of both images where
-- the pack has CLIP, and y = mask + the latent of [first, 0, ..., 0, last],
-- the mask marking frame 0 and the last frame known.
--
--   moonreel recipes/flf2v.lua --image first.png --last-image last.png --prompt "..."
local mr = require "moonreel"
local R = mr.recipe

local flags = {table.unpack(R.IMAGE_FLAGS)}
flags[#flags + 1] = {"last-image", "string", "last frame (required): PNG, JPEG or WebP"}

local mode = R.mode{
  name = "flf2v",
  about = "First and last frame to video: the video starts at --image and ends at --last-image.",
  synopsis = "--image FILE --last-image FILE --prompt TEXT",
  flags = flags,
  check = function(opts)
    if not opts.image then error("flf2v needs a first frame (--image FILE)", 0) end
    if not opts.last_image then error("flf2v needs a last frame (--last-image FILE)", 0) end
  end,
  plan = function(run)
    if run.pack.model_type ~= "i2v" then
      error(string.format("model %s (%s) has no last-frame conditioning: flf2v needs a Wan 2.1 FLF2V or I2V " ..
        "pack, or Wan 2.2 I2V-A14B", run.pack.name, run.pack.model_type), 0)
    end
    run.p.last_image = type(run.opts.last_image) == "string" and run.opts.last_image or nil
  end,
  condition = function(run)
    local first <close> = R.load_image(run, run.opts.image)
    local last <close> = R.load_image(run, run.opts.last_image)
    R.i2v_condition(run, first, last)
  end,
}
return R.script(mode, ...)
