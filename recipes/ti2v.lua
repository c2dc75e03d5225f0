-- Text and image to video: the image is the first frame (Wan 2.2 TI2V: its
-- latent fills the first latent frame at timestep 0 and is put back after
-- every step; Wan 2.1 I2V packs get CLIP features and the masked condition).
--
--   moonreel recipes/ti2v.lua --image photo.jpg --prompt "the cat turns its head"
--   moonreel recipes/ti2v.lua --help
local mr = require "moonreel"
os.exit(mr.recipe.main("ti2v", arg), true)
