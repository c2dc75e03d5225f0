-- Text and image to video: the image is the first frame.
--   Wan 2.2 TI2V: the image's latent is the first latent frame, held clean
--     (its tokens at t = 0) and put back after every step.
--   Wan 2.1 I2V (and Wan 2.2 I2V-A14B): CLIP features of the image (2.1), and
--     y = mask (first frame known) + the latent of [image, 0, 0, ...].
--
--   moonreel recipes/ti2v.lua --image photo.jpg --prompt "the cat turns its head"
--   moonreel recipes/ti2v.lua --help
local mr = require "moonreel"
local R = mr.recipe

local mode = R.mode{
  name = "ti2v",
  about = "Text and image to video: the image is the first frame.",
  synopsis = "--image FILE --prompt TEXT",
  flags = R.IMAGE_FLAGS,
  check = function(opts)
    if not opts.image then error("ti2v needs an image (--image FILE)", 0) end
  end,
  plan = function(run)
    local mt = run.pack.model_type
    if mt ~= "ti2v" and mt ~= "i2v" then
      error(string.format("model %s (%s) cannot start from an image", run.pack.name, mt), 0)
    end
  end,
  condition = function(run)
    local img <close> = R.load_image(run, run.opts.image)
    if run.pack.model_type == "ti2v" then
      run:hold(1, R.encode_image(run, img))
    else
      R.i2v_condition(run, img)
    end
  end,
}
return R.script(mode, ...)
