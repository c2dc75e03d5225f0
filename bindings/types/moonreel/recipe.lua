---@meta moonreel.recipe
-- LuaLS annotations for `require "moonreel.recipe"` (mr.recipe): the stages
-- every generation recipe shares and the recipe modes (docs/recipes.md).
-- Editors only.

---A command-line flag: {name, type, help [, metavar]}.
---@alias mr.RecipeFlag [string, "string"|"integer"|"number"|"seed"|"list"|"boolean", string, string?]

---The fields of a run: the flags by name (no-sidecar is no_sidecar) and the program-only keys.
---@class mr.RecipeOpts
---@field prompt? string
---@field negative? string
---@field model? string model pack folder (default $MOONREEL_MODEL, else models/default beside the recipes folder)
---@field steps? integer
---@field cfg? number
---@field shift? number
---@field sampler? "unipc"|"dpmpp"|"euler"
---@field seed? mr.Seed|"random"
---@field frames? integer
---@field width? integer
---@field height? integer
---@field fps? number
---@field out? string|false false: no file, the frames come back in the result
---@field crf? integer
---@field quality? number
---@field weights? mr.Dtype
---@field lora? (string|{file: string, strength: number?, mode: string?})[]
---@field lora_high? (string|{file: string, strength: number?, mode: string?})[]
---@field no_sidecar? boolean
---@field quiet? boolean
---@field image? string|mr.Tensor ti2v, flf2v: the first frame
---@field fit? "crop"|"pad"|"stretch"
---@field pad_color? string
---@field last_image? string|mr.Tensor flf2v: the last frame
---@field ref? string[] r2v: reference images FILE[:ROLE]
---@field ref_fit? string r2v
---@field cfg_img? number r2v (phantom)
---@field vace_scale? number r2v (vace)
---@field vace_start? number r2v (vace)
---@field vace_end? number r2v (vace)
---@field pack? mr.Pack a loaded pack to reuse
---@field on_step? fun(step: mr.Step): boolean? before each step; false stops the run
---@field after_step? fun(step: mr.Step): boolean? after each step (step.x, step.x0, step:preview()); false stops the run
---@field preview? boolean draw each step's preview in the terminal (mr.recipe.preview_hook), after any after_step
---@field progress? fun(stage: "text"|"image"|"denoise"|"decode"|"write", done: integer, total: integer): boolean? each stage's progress; false cancels the run
---@field on_frames? fun(frames: mr.Tensor, first: integer, count: integer): boolean? each decoded chunk [3, n, H, W] (closed after the call), its first frame (1-based), the video's frame count; false cancels

---@class mr.GenerateOpts: mr.RecipeOpts
---@field mode? string default "t2v"

---What a run returns.
---@class mr.RecipeResult
---@field out? string
---@field sidecar? string
---@field frames? mr.Tensor with out = false: the decoded video [3, F, H, W]
---@field seed string
---@field params table the plan, as the sidecar records it
---@field seconds table<string, number> text, condition, denoise, decode, write, total

---A step of the denoising loop, as the hooks see it.
---@class mr.Step
---@field index integer
---@field steps integer
---@field t integer
---@field cfg number settable in on_step
---@field loras mr.Lora[] the run's adapters
---@field run mr.Run
---@field x mr.Tensor the latent (after_step: the new one)
---@field x0? mr.Tensor after_step: the clean latent the step predicts
---@field preview fun(self: mr.Step, opts?: {scale: integer?}): mr.Tensor after_step: x0's RGB [3, T, h, w] in [-1, 1] (the video's frames; pack:preview); the caller closes it
---@field reuse? boolean set by a hook: take the last velocity instead of running the DiT

---One pass of the DiT in a step.
---@class mr.Pass
---@field dit mr.WanDiT
---@field cfg number
---@field x mr.Tensor
---@field t number|number[]
---@field index integer
---@field raw_t integer
---@field extra? table

---A recipe mode: recipes/<name>.lua builds one with mr.recipe.mode{...}.
---@class mr.Mode
---@field name string
---@field about? string
---@field synopsis? string
---@field flags? mr.RecipeFlag[]
---@field check? fun(opts: mr.RecipeOpts) before anything loads; raise to refuse
---@field plan? fun(run: mr.Run) the pack is known
---@field condition fun(run: mr.Run) after the text, before the loop
---@field always_uncond? boolean
---@field keys? table<string, mr.RecipeFlag>

---A run: the plan and what the stages build on it.
---@class mr.Run
---@field mode mr.Mode
---@field opts mr.RecipeOpts
---@field pack mr.Pack
---@field p table the plan
---@field shape integer[] the video's latent shape
---@field ctx_c mr.Tensor
---@field ctx_u? mr.Tensor
---@field extra table forward arguments of every pass (y, clip_fea, vace_context, vace_scale)
---@field held table<integer, mr.Tensor>
---@field lead integer
---@field trail integer
---@field loras mr.Lora[]
---@field guide? fun(run: mr.Run, pass: mr.Pass): mr.Tensor
---@field say fun(fmt: string, ...)
---@field timings table<string, number>
---@field private clock0 number
---@field private owned mr.Tensor[]
---@field private per_token boolean
---@field private tok_per_frame integer
---@field private reused? integer
local Run = {}

---Holds latent frame k clean: put back after every step, its tokens at t = 0 on per-token models.
---@param k integer
---@param z mr.Tensor
function Run:hold(k, z) end

---A tensor the run closes when it ends.
---@generic T
---@param t T
---@return T
function Run:own(t) end

---The latent [C, lead + F + trail, h, w] the loop samples.
---@return integer[]
function Run:latent_shape() end

---One forward of the DiT at the pass's timesteps with context ctx.
---@param pass mr.Pass
---@param ctx mr.Tensor
---@param x? mr.Tensor
---@param extra? table
---@return mr.Tensor
function Run:forward(pass, ctx, x, extra) end

---A progress line on stderr (a bar on a terminal).
---@class mr.ProgressLine
local ProgressLine = {}

---@param done number
function ProgressLine:update(done) end

function ProgressLine:done() end

---@class moonreel.recipe
local M = {}

---The flags every generation mode takes.
---@type mr.RecipeFlag[]
M.FLAGS = {}

---The flags of image-conditioned modes: --image, --fit, --pad-color.
---@type mr.RecipeFlag[]
M.IMAGE_FLAGS = {}

---Passed to a recipe file when the module loads it as a mode.
M.LOADING = {}

-- the modes (recipes/<name>.lua, found through mr.recipe.recipe_dirs())

---Text to video (recipes/t2v.lua).
---@param opts mr.RecipeOpts
---@return mr.RecipeResult
function M.t2v(opts) end

---Text and a first frame to video (recipes/ti2v.lua).
---@param opts mr.RecipeOpts
---@return mr.RecipeResult
function M.ti2v(opts) end

---First and last frame to video (recipes/flf2v.lua).
---@param opts mr.RecipeOpts
---@return mr.RecipeResult
function M.flf2v(opts) end

---Reference images to video (recipes/r2v.lua).
---@param opts mr.RecipeOpts
---@return mr.RecipeResult
function M.r2v(opts) end

-- running

---Runs one generation of a mode (a name or a mode table); raises a one-line message on failure.
---@param mode string|mr.Mode
---@param opts? mr.RecipeOpts
---@return mr.RecipeResult
function M.run(mode, opts) end

---mr.recipe.run by opts.mode (default "t2v").
---@param opts? mr.GenerateOpts
---@return mr.RecipeResult
function M.generate(opts) end

---The command-line entry of a recipe: returns the exit code (0, 1, 2 or 130).
---@param mode string|mr.Mode
---@param argv string[]
---@return integer
function M.main(mode, argv) end

---Ends a recipe file: runs the mode as a command, or hands it over when the module loads it.
---@param mode mr.Mode
---@param first any
---@param ... any
---@return mr.Mode?
function M.script(mode, first, ...) end

---Builds a mode from its definition.
---@param def mr.Mode
---@return mr.Mode
function M.mode(def) end

---The mode of recipes/<name>.lua (loaded once), or of a path ending in .lua.
---@param name string|mr.Mode
---@return mr.Mode
function M.load_mode(name) end

---Where modes are looked for: $MOONREEL_RECIPES, the running recipe's folder, ./recipes, mr.recipes_path.
---@return string[]
function M.recipe_dirs() end

---The model pack a run uses when none is given: $MOONREEL_MODEL, else models/default beside the running recipe's folder.
---@return string
function M.default_model_dir() end

-- the command line

---The --help text of a mode.
---@param mode string|mr.Mode
---@return string
function M.usage(mode) end

---Parses argv into options keyed like the flags; raises a one-line message.
---@param argv string[]
---@param mode? mr.Mode
---@return mr.RecipeOpts
function M.parse_args(argv, mode) end

---Parses argv into options keyed like flags ({name, type, help} entries; "no-sidecar" -> no_sidecar); once: a string flag given twice raises.
---@param argv string[]
---@param flags table[]
---@param once? boolean
---@return table
function M.parse_flags(argv, flags, once) end

---"FILE[:STRENGTH]" (or a table) -> {file, strength, mode}; checks the file can be read.
---@param spec string|{file: string, strength: number?, mode: string?}
---@param flag string
---@return {file: string, strength: number, mode: string?}
function M.parse_lora(spec, flag) end

---Refuses flag values that can be judged without the model.
---@param opts mr.RecipeOpts
function M.check_values(opts) end

---Everything judged before a model loads; returns the LoRA specs.
---@param mode mr.Mode
---@param opts mr.RecipeOpts
---@return table[]
function M.check_options(mode, opts) end

---The command that repeats a run exactly (the sidecar records it).
---@param mode string|mr.Mode
---@param p table the plan
---@param pack mr.Pack
---@return string
function M.command_line(mode, p, pack) end

-- the stages

---Stage 1: every parameter of the run as plain data.
---@param mode mr.Mode
---@param opts mr.RecipeOpts
---@param pack mr.Pack
---@return table
function M.plan(mode, opts, pack) end

---Calls opts.progress(stage, done, total) of the run, raising "canceled by the progress callback" when it answers false.
---@param run mr.Run
---@param stage string
---@param done integer
---@param total integer
function M.report(run, stage, done, total) end

---Stage 2: the prompt's states (run.ctx_c) and, when guidance needs them, the negative's (run.ctx_u).
---@param run mr.Run
function M.encode_text(run) end

---Stage 4: the denoising loop with the on_step / after_step hooks; returns the latent.
---@param run mr.Run
---@return mr.Tensor
function M.denoise(run) end

---Stage 5: decode, write, sidecar.
---@param run mr.Run
---@param x mr.Tensor
---@return mr.RecipeResult
function M.finish(run, x) end

---Classifier-free guidance of one pass: v_u + g (v_c - v_u).
---@param run mr.Run
---@param pass mr.Pass
---@return mr.Tensor
function M.cfg_guide(run, pass) end

---An image (file or tensor) fitted to the run's size, as [3, H, W].
---@param run mr.Run
---@param image string|mr.Tensor
---@param opts? {fit: string?, pad_color: string?}
---@return mr.Tensor
function M.load_image(run, image, opts) end

---An image [3, H, W] as one latent frame [C, 1, h, w].
---@param run mr.Run
---@param img mr.Tensor
---@return mr.Tensor
function M.encode_image(run, img) end

---Wan 2.1 I2V / FLF2V conditioning: CLIP features and the masked image latent in run.extra.
---@param run mr.Run
---@param first mr.Tensor
---@param last? mr.Tensor
function M.i2v_condition(run, first, last) end

---An after_step hook that draws each step's preview in place in the terminal: up to `frames` (4) latent
---frames side by side, at most `width` (80) characters wide, on `out` (io.stdout); then_ runs first.
---@param opts? {frames: integer?, width: integer?, out: file*?, then_: fun(step: mr.Step): boolean?}
---@return fun(step: mr.Step): boolean?
function M.preview_hook(opts) end

---An on_step hook that reuses the last velocity while the latent changes little (TeaCache's idea).
---@param opts? {threshold: number?, then_: fun(step: mr.Step): boolean?}
---@return fun(step: mr.Step): boolean?
function M.step_cache(opts) end

-- helpers

---An engine result, or its failure raised as one line.
---@generic T
---@param v T
---@param msg? string
---@return T
function M.check(v, msg) end

---A progress line on stderr: :update(done), :done().
---@param label string
---@param total number
---@param quiet? boolean
---@return mr.ProgressLine
function M.progress(label, total, quiet) end

---Writes a table as JSON atomically.
---@param path string
---@param value table
function M.write_json(path, value) end

---Where the settings of an output go: "a.mp4" -> "a.mp4.json".
---@param out string
---@return string
function M.sidecar_path(out) end

return M
