-- Text to video: the prompt alone conditions the DiT; classifier-free
-- guidance against the negative prompt each step (mr.recipe.cfg_guide).
--
--   moonreel recipes/t2v.lua --prompt "a yellow square moving up on a gray background"
--   moonreel recipes/t2v.lua --help
--
-- The plan, the loop and the finish are the stages of moonreel.recipe
-- (bindings/lua/recipe.lua); docs/recipes.md shows how to write a mode.
local mr = require "moonreel"
local R = mr.recipe

local mode = R.mode{
  name = "t2v",
  about = "Text to video.",
  check = function(opts)
    if opts.image then error("t2v takes no image: use recipes/ti2v.lua", 0) end
  end,
  plan = function(run)
    local mt = run.pack.model_type
    if mt ~= "t2v" and mt ~= "ti2v" then
      error(string.format("model %s is a %s model: use recipes/ti2v.lua with --image", run.pack.name, mt), 0)
    end
  end,
  condition = function() end, -- the text is all
}
return R.script(mode, ...)
