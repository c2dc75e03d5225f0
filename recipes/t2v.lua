-- Text to video.
--
--   moonreel recipes/t2v.lua --prompt "a yellow square moving up on a gray background"
--   moonreel recipes/t2v.lua --help
--
-- The loop, guidance and sampler are in the moonreel.recipe library
-- (bindings/lua/recipe.lua); docs/recipes.md shows how to write your own.
local mr = require "moonreel"
os.exit(mr.recipe.main("t2v", arg), true)
