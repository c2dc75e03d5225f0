---@meta moonreel.pack
-- LuaLS annotations for `require "moonreel.pack"` (mr.pack): model packs
-- (docs/recipes.md, "Model packs"). Editors only.

---@class mr.PackDefaults
---@field steps integer
---@field shift number
---@field guide number
---@field guide_high? number Wan 2.2 A14B: the high-noise expert's guidance
---@field boundary? number Wan 2.2 A14B: where the experts switch (0..1 of the schedule)
---@field frames integer
---@field fps number
---@field width integer
---@field height integer
---@field negative string
---@field sampler "unipc"|"dpmpp"|"euler"
---@field prompt? string a sample prompt (the default model has one)

---@class mr.PackFiles
---@field dit string|string[]
---@field dit_high? string|string[]
---@field vae string
---@field t5 string
---@field tokenizer string
---@field clip? string
---@field clip_config? string
---@field config? string
---@field dir? string

---@class mr.PackLoadOpts
---@field weights? mr.Dtype default f32 on a CPU device, else bf16
---@field clip? boolean false skips the CLIP encoder

---@class mr.PackPlan
---@field files mr.PackFiles
---@field dir? string
---@field layout "official"|"moonreel"|"files"
---@field manifest? table moonreel_pack.json

---A loaded model pack: its components, configuration and the variant's defaults.
---@class mr.Pack
---@field layout "official"|"moonreel"|"files"
---@field dir? string
---@field files mr.PackFiles
---@field weights mr.Dtype
---@field manifest? table
---@field tokenizer mr.Tokenizer
---@field t5 mr.T5
---@field dit mr.WanDiT
---@field dit_high? mr.WanDiT Wan 2.2 A14B: the high-noise expert
---@field vae mr.WanVAE
---@field clip? mr.ClipVision i2v and flf2v packs
---@field config mr.WanDiTConfig
---@field model_type "t2v"|"i2v"|"flf2v"|"ti2v"|"vace"
---@field z_dim integer
---@field vae_stride integer
---@field vae_tstride integer
---@field vae_version integer
---@field variant string "t2v-1.3B", "ti2v-5B", ...
---@field defaults mr.PackDefaults
---@field references? table how the pack takes reference images (r2v)
---@field name string
local Pack = {}

---@class moonreel.pack
local M = {}

---Wan's default negative prompt.
M.BASE_NEGATIVE = ""

---Sampling defaults of the released variants, by variant name.
---@type table<string, mr.PackDefaults>
M.VARIANTS = {}

---Loads a pack: a folder (official or moonreel layout) or files named one by one.
---Raises one line naming the missing or mismatched part.
---@param spec string|mr.PackFiles
---@param opts? mr.PackLoadOpts
---@return mr.Pack
function M.load(spec, opts) end

---Latent-to-RGB factors published for the released VAEs (ComfyUI's Wan21 / Wan22 latent formats).
---@type {version: integer, z_dim: integer, name: string, factors: number[][], bias: number[]}[]
M.PUBLISHED_PREVIEW = {}

---The latent-to-RGB factors of a VAE: the manifest's "preview", else the published ones for
---(z_dim, version) 16/21 or 48/22; nil and a message when there are none.
---@param z_dim integer
---@param version integer 21 or 22
---@param manifest? table moonreel_pack.json
---@return {factors: number[][], bias: number[], source: string}?
---@return string? message
function M.preview_factors(z_dim, version, manifest) end

---rgb = clamp(Fᵀ z + b, -1, 1) per latent pixel of [C, T, h, w] (or [C, h, w]) on the device.
---@param latent mr.Tensor
---@param factors number[][] C rows {r, g, b}
---@param bias? number[] {r, g, b} (0)
---@param scale? integer repeat each pixel scale x scale times (1)
---@return mr.Tensor
function M.project_rgb(latent, factors, bias, scale) end

---Finds every part of a pack without loading anything.
---@param spec string|mr.PackFiles
---@return mr.PackPlan
function M.resolve(spec) end

---The spatial multiple a size must have: VAE stride times the DiT patch.
---@return integer
function Pack:size_multiple() end

---Raises with the reason when width, height or frames do not suit the model.
---@param width integer
---@param height integer
---@param frames integer
function Pack:check_size(width, height, frames) end

---The latent shape {C, T, H, W} of a video of that size.
---@param width integer
---@param height integer
---@param frames integer
---@return integer[]
function Pack:latent_shape(width, height, frames) end

---Text states [n, text_dim] of a prompt; a prompt past the model's text length raises.
---@param prompt string
---@param what? string names the text in messages ("prompt")
---@return mr.Tensor
function Pack:encode_text(prompt, what) end

---The RGB preview of a latent [z_dim, T, h, w] (or [z_dim, h, w]): clamp(Fᵀ z + b) per latent pixel,
---[3, T, h, w] in [-1, 1] at latent resolution, by the manifest's "preview" factors, else the published
---ones of the Wan 2.1 (z_dim 16) or Wan 2.2 (z_dim 48) VAE; raises when there are none. The caller closes it.
---@param latent mr.Tensor
---@param opts? {scale: integer?} scale (1 .. 64): repeat each pixel scale x scale times
---@return mr.Tensor
function Pack:preview(latent, opts) end

---What a sidecar records about the model.
---@return {name: string, variant: string, layout: string, dir: string?, weights: string, files: mr.PackFiles}
function Pack:describe() end

---Closes every component (also `local pack <close> = ...`).
function Pack:close() end

return M
