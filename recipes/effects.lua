-- Effect templates over many inputs: a template and a folder of photos, or a
-- JSONL manifest of jobs; or a Redis stream of them (docs/templates.md). The
-- model loads once, each job's output is named by its content, and a rerun
-- skips the jobs already done.
--
--   moonreel recipes/effects.lua --template squish.json --images photos/ --out out/
--   moonreel recipes/effects.lua --manifest jobs.jsonl --out out/ --shard 0/4
--   moonreel recipes/effects.lua --manifest jobs.jsonl --enqueue redis://127.0.0.1:6379/effects
--   moonreel recipes/effects.lua --queue redis://127.0.0.1:6379/effects --out out/
--   moonreel recipes/effects.lua --help
local mr = require "moonreel"
if (...) == mr.recipe.LOADING then return nil end -- not a generation mode (mr.recipe.<mode>)
os.exit(mr.batch.main(arg), true)
