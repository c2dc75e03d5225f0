---@meta moonreel
-- LuaLS annotations for `require "moonreel"` (docs/lua-api.md). Editors only:
-- nothing here runs. Point the language server's workspace.library at the
-- folder holding this file (installed as share/moonreel/types; .luarc.json
-- at the top of the source tree does it for the tree). tests/types checks
-- that every function of the module is declared here and nothing else is.

---@alias mr.Dtype "f32"|"f16"|"bf16"
---@alias mr.HostDtype mr.Dtype|"f64"|"i64"|"i32"|"u8"
---@alias mr.Shape integer[]|integer
---@alias mr.Seed integer|string
---@alias mr.ErrorCode "MR_EINVAL"|"MR_ENOMEM"|"MR_EDEVMEM"|"MR_EIO"|"MR_EFORMAT"|"MR_EUNSUPPORTED"|"MR_EVULKAN"|"MR_ECANCELED"|"MR_ENOTFOUND"|"MR_ENODEVICE"
---@alias mr.Progress fun(done: number): boolean?

---@class moonreel
local mr = {}

---The module's version, "0.1.0".
mr.version = "0.1.0"

---Where `mr.recipe` looks for recipe modes after $MOONREEL_RECIPES and ./recipes, separated by `;`:
---the recipes installed beside the module, the source tree it was built from, its configured prefix.
mr.recipes_path = ""

-------------------------------------------------------------------- module

---@class mr.DeviceInfo
---@field index integer Vulkan physical-device index, as MOONREEL_DEVICE takes it
---@field name string
---@field type "discrete"|"integrated"|"virtual"|"cpu"|"other"
---@field driver string
---@field heap_bytes integer
---@field max_buffer_bytes integer
---@field subgroup_size integer
---@field shared_memory_bytes integer
---@field coopmat_nv boolean
---@field validation_messages integer? only from mr.device()

---The context's device (created on first use).
---@return mr.DeviceInfo
function mr.device() end

---Every Vulkan device, without creating a context.
---@return mr.DeviceInfo[]? devices
---@return string? message
---@return mr.ErrorCode? code
function mr.devices() end

---Submits recorded work and waits; raises on a device failure.
function mr.sync() end

---Makes the running or next engine call raise `interrupted` (MR_ECANCELED), once.
function mr.interrupt() end

---The per-op GPU timing report (MOONREEL_PROFILE=1).
---@return string
function mr.profile() end

---@class mr.MemoryInfo
---@field device_live integer
---@field device_held integer
---@field device_peak_live integer
---@field device_peak_held integer
---@field device_budget integer
---@field budget_source string
---@field device_blocks integer
---@field live_bytes integer
---@field since_gc integer
---@field threshold integer
---@field collections integer

---The context's device memory and the binding's GC accounting.
---@return mr.MemoryInfo
function mr.memory() end

---Gives device blocks no tensor uses back to Vulkan; `true` also restarts the peaks.
---@param reset_peak? boolean
function mr.trim(reset_peak) end

---The SHA-256 of a file's bytes, as 64 hex digits.
---@param path string
---@return string? hex
---@return string? message
---@return mr.ErrorCode? code
function mr.sha256(path) end

---The SHA-256 of the bytes of a string, as 64 hex digits.
---@param s string
---@return string hex
function mr.sha256_string(s) end

---The entries of a folder without . and .., sorted bytewise.
---@param path string
---@return string[]? names
---@return string? message
---@return mr.ErrorCode? code
function mr.listdir(path) end

---Makes the folder and any missing parents (mkdir -p); one that exists is fine.
---@param path string
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function mr.mkdir(path) end

---Appends a line (ending in "\n") to a file, created when missing, in one
---write; a write cut short (a full disk) is taken back, so the file never
---ends in part of the line.
---@param path string
---@param line string
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function mr.append_line(path, line) end

---Writes data as the whole file at path atomically (a temporary beside it, fsync, rename): a reader sees the old file or the new one, never a part.
---@param path string
---@param data string
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function mr.write_file(path, data) end

---Sets the byte count of device allocations that forces a garbage collection.
---@param bytes? integer
---@return integer previous
function mr.gc_threshold(bytes) end

---Whether a stream is a terminal.
---@param stream? "stderr"|"stdout" default "stderr"
---@return boolean
function mr.is_terminal(stream) end

---Seconds on a monotonic wall clock.
---@return number
function mr.clock() end

---Waits without spinning.
---@param seconds number 0 .. 86400
function mr.sleep(seconds) end

---Plays [3, F, H, W] (or an image [3, H, W]) in [-1, 1] in the terminal: kitty graphics or sixel where the terminal says it has them, else truecolor half blocks (mr.repl.show).
---@param video mr.Tensor
---@param opts? mr.ShowOpts
---@return integer rows the rows of text a frame takes
function mr.show(video, opts) end

-------------------------------------------------------------------- tensors

---A tensor on the device. Dims and indices are 1-based; negative ones count from the end.
---@class mr.Tensor
---@operator add(mr.Tensor|number): mr.Tensor
---@operator sub(mr.Tensor|number): mr.Tensor
---@operator mul(mr.Tensor|number): mr.Tensor
---@operator div(mr.Tensor|number): mr.Tensor
---@operator unm: mr.Tensor
local Tensor = {}

---From a nested table of numbers (the shape from the nesting) or a number.
---@param t number|table
---@param dtype? mr.Dtype
---@return mr.Tensor
function mr.tensor(t, dtype) end

---@param shape mr.Shape
---@param dtype? mr.Dtype
---@return mr.Tensor
function mr.zeros(shape, dtype) end

---@param shape mr.Shape
---@param dtype? mr.Dtype
---@return mr.Tensor
function mr.ones(shape, dtype) end

---@param shape mr.Shape
---@param value number
---@param dtype? mr.Dtype
---@return mr.Tensor
function mr.full(shape, value, dtype) end

---From packed little-endian host data.
---@param bytes string
---@param shape mr.Shape
---@param src_dtype? mr.HostDtype default "f32"
---@param dtype? mr.Dtype
---@return mr.Tensor
function mr.tensor_from_string(bytes, shape, src_dtype, dtype) end

---A new table of sizes, or the size of one dim.
---@param dim? integer
---@return integer[]|integer
function Tensor:shape(dim) end

---@return integer[]
function Tensor:strides() end

---@return integer
function Tensor:ndim() end

---@return integer
function Tensor:numel() end

---@return mr.Dtype
function Tensor:dtype() end

---numel times the element size.
---@return integer
function Tensor:bytes() end

---Bytes of the storage behind it (shared with its views).
---@return integer
function Tensor:device_bytes() end

---@return boolean
function Tensor:is_contiguous() end

---@return boolean
function Tensor:is_closed() end

---Nested tables of numbers (waits for the GPU).
---@return table
function Tensor:totable() end

---The value of a 1-element tensor.
---@return number
function Tensor:item() end

---The elements as a binary string.
---@param dtype? "f32"|"f16"|"bf16"|"f64"
---@return string
function Tensor:data(dtype) end

---A view with a new shape (contiguous tensors only); one size may be -1.
---@param ... integer|integer[]
---@return mr.Tensor
function Tensor:reshape(...) end

---Elements start..stop (inclusive) along dim, every step-th: a view.
---@param dim integer
---@param start? integer
---@param stop? integer
---@param step? integer
---@return mr.Tensor
function Tensor:slice(dim, start, stop, step) end

---Output dim i is input dim d_i: a view.
---@param ... integer|integer[]
---@return mr.Tensor
function Tensor:permute(...) end

---Itself as a view if contiguous, else a contiguous copy.
---@return mr.Tensor
function Tensor:contiguous() end

---@param dtype mr.Dtype
---@return mr.Tensor
function Tensor:cast(dtype) end

---@return mr.Tensor
function Tensor:clone() end

---Writes src into this tensor; returns it.
---@param src mr.Tensor
---@return mr.Tensor
function Tensor:copy_(src) end

---@param value number
---@return mr.Tensor
function Tensor:fill_(value) end

---Frees the handle now (also at the end of a `<close>` scope and on collection).
function Tensor:close() end

-------------------------------------------------------------------- ops (functions and methods)

---@param a mr.Tensor|number
---@param b mr.Tensor|number
---@return mr.Tensor
function mr.add(a, b) end
---@param b mr.Tensor|number
---@return mr.Tensor
function Tensor:add(b) end

---@param a mr.Tensor|number
---@param b mr.Tensor|number
---@return mr.Tensor
function mr.sub(a, b) end
---@param b mr.Tensor|number
---@return mr.Tensor
function Tensor:sub(b) end

---@param a mr.Tensor|number
---@param b mr.Tensor|number
---@return mr.Tensor
function mr.mul(a, b) end
---@param b mr.Tensor|number
---@return mr.Tensor
function Tensor:mul(b) end

---@param a mr.Tensor|number
---@param b mr.Tensor|number
---@return mr.Tensor
function mr.div(a, b) end
---@param b mr.Tensor|number
---@return mr.Tensor
function Tensor:div(b) end

---a * (b + beta) + c in one pass, broadcasting over all three: a DiT's
---modulation `mr.mul_add(mr.layer_norm(x), scale, shift, 1)` or gated residual
---`mr.mul_add(y, gate, x)`.
---@param a mr.Tensor
---@param b mr.Tensor
---@param c mr.Tensor
---@param beta? number default 0
---@return mr.Tensor
function mr.mul_add(a, b, c, beta) end
---@param b mr.Tensor
---@param c mr.Tensor
---@param beta? number
---@return mr.Tensor
function Tensor:mul_add(b, c, beta) end

---x * s + bias in one pass.
---@param x mr.Tensor
---@param s number
---@param bias? number
---@return mr.Tensor
function mr.scale(x, s, bias) end
---@param s number
---@param bias? number
---@return mr.Tensor
function Tensor:scale(s, bias) end

---@param x mr.Tensor
---@return mr.Tensor
function mr.silu(x) end
---@return mr.Tensor
function Tensor:silu() end

---The tanh approximation.
---@param x mr.Tensor
---@return mr.Tensor
function mr.gelu(x) end
---@return mr.Tensor
function Tensor:gelu() end

---@param x mr.Tensor
---@return mr.Tensor
function mr.exp(x) end
---@return mr.Tensor
function Tensor:exp() end

---@param x mr.Tensor
---@return mr.Tensor
function mr.tanh(x) end
---@return mr.Tensor
function Tensor:tanh() end

---@param x mr.Tensor
---@return mr.Tensor
function mr.neg(x) end
---@return mr.Tensor
function Tensor:neg() end

---@param x mr.Tensor
---@return mr.Tensor
function mr.square(x) end
---@return mr.Tensor
function Tensor:square() end

---Linear layer: x[..., K] · w[N, K]ᵀ + bias[N].
---@param x mr.Tensor
---@param w mr.Tensor
---@param bias? mr.Tensor
---@return mr.Tensor
function mr.matmul(x, w, bias) end
---@param w mr.Tensor
---@param bias? mr.Tensor
---@return mr.Tensor
function Tensor:matmul(w, bias) end

---Normalises over the last dim.
---@param x mr.Tensor
---@param w? mr.Tensor
---@param b? mr.Tensor
---@param eps? number default 1e-5
---@return mr.Tensor
function mr.layer_norm(x, w, b, eps) end
---@param w? mr.Tensor
---@param b? mr.Tensor
---@param eps? number
---@return mr.Tensor
function Tensor:layer_norm(w, b, eps) end

---@param x mr.Tensor
---@param w? mr.Tensor
---@param eps? number default 1e-5
---@return mr.Tensor
function mr.rms_norm(x, w, eps) end
---@param w? mr.Tensor
---@param eps? number
---@return mr.Tensor
function Tensor:rms_norm(w, eps) end

---@param x mr.Tensor
---@param dim? integer default -1
---@return mr.Tensor
function mr.softmax(x, dim) end
---@param dim? integer
---@return mr.Tensor
function Tensor:softmax(dim) end

---@class mr.AttentionOpts
---@field scale? number multiplies q·k (default 1/sqrt(D))
---@field k_lens? integer[] keys past n_b are masked for batch item b

---Multi-head attention: q [B, Lq, H, D], k, v [B, Lk, H, D] -> [B, Lq, H, D].
---@param q mr.Tensor
---@param k mr.Tensor
---@param v mr.Tensor
---@param opts? mr.AttentionOpts
---@return mr.Tensor
function mr.attention(q, k, v, opts) end
---@param k mr.Tensor
---@param v mr.Tensor
---@param opts? mr.AttentionOpts
---@return mr.Tensor
function Tensor:attention(k, v, opts) end

---Joins tensors along dim (default 1).
---@param tensors mr.Tensor[]
---@param dim? integer
---@return mr.Tensor
function mr.concat(tensors, dim) end

---Constant padding; pads = {before1, after1, before2, after2, ...} in dim order.
---@param x mr.Tensor
---@param pads integer[]
---@param value? number
---@return mr.Tensor
function mr.pad(x, pads, value) end
---@param pads integer[]
---@param value? number
---@return mr.Tensor
function Tensor:pad(pads, value) end

---@param x mr.Tensor
---@param dim integer
---@param keepdim? boolean
---@return mr.Tensor
function mr.sum(x, dim, keepdim) end
---@param dim integer
---@param keepdim? boolean
---@return mr.Tensor
function Tensor:sum(dim, keepdim) end

---@param x mr.Tensor
---@param dim integer
---@param keepdim? boolean
---@return mr.Tensor
function mr.mean(x, dim, keepdim) end
---@param dim integer
---@param keepdim? boolean
---@return mr.Tensor
function Tensor:mean(dim, keepdim) end

---@param x mr.Tensor
---@param dim integer
---@param keepdim? boolean
---@return mr.Tensor
function mr.max(x, dim, keepdim) end
---@param dim integer
---@param keepdim? boolean
---@return mr.Tensor
function Tensor:max(dim, keepdim) end

-------------------------------------------------------------------- sampling

---@class mr.SamplerOpts
---@field steps? integer default 50
---@field shift? number default 5

---A flow-matching solver over Wan's schedule.
---@class mr.Sampler
local Sampler = {}

mr.sampler = {}

---FlowUniPCMultistep (bh2, order 2, predictor + corrector): Wan's default.
---@param opts? mr.SamplerOpts
---@return mr.Sampler
function mr.sampler.unipc(opts) end

---FlowDPMSolverMultistep (dpmsolver++, second-order midpoint).
---@param opts? mr.SamplerOpts
---@return mr.Sampler
function mr.sampler.dpmpp(opts) end

---First-order Euler on the dpmpp sigmas.
---@param opts? mr.SamplerOpts
---@return mr.Sampler
function mr.sampler.euler(opts) end

---A sampler by name.
---@param name "unipc"|"dpmpp"|"dpm++"|"euler"
---@param opts? mr.SamplerOpts
---@return mr.Sampler
function mr.sampler.new(name, opts) end

---The N integer timesteps the DiT sees, descending.
---@return integer[]
function Sampler:timesteps() end

---The N+1 sigmas, the last 0.
---@return number[]
function Sampler:sigmas() end

---The next sample; after the last step, the clean latent.
---@param v mr.Tensor
---@param t integer
---@param x mr.Tensor
---@return mr.Tensor
function Sampler:step(v, t, x) end

---Forgets the run to start another.
function Sampler:reset() end

---@return "unipc"|"dpmpp"|"euler"
function Sampler:name() end

---@return integer
function Sampler:steps() end

---@return number
function Sampler:shift() end

---1-based position of the next step in timesteps(), nil before a run.
---@return integer?
function Sampler:next_index() end

function Sampler:close() end

---Standard normal noise made on the host: element i depends only on (seed, i + offset).
---@param shape mr.Shape
---@param seed mr.Seed
---@param dtype? mr.Dtype
---@param offset? integer
---@return mr.Tensor
function mr.randn(shape, seed, dtype, offset) end

---The canonical decimal string of a seed.
---@param seed mr.Seed
---@return string
function mr.seed_string(seed) end

---A fresh seed from /dev/urandom, as a decimal string.
---@return string? seed
---@return string? message
---@return mr.ErrorCode? code
function mr.random_seed() end

---v_uncond + g·(v_cond − v_uncond).
---@param v_cond mr.Tensor
---@param v_uncond mr.Tensor
---@param g number
---@return mr.Tensor
function mr.guidance(v_cond, v_uncond, g) end

---Σ c_i·t_i of 1 to 4 tensors of one shape.
---@param tensors mr.Tensor[]
---@param coefficients number[]
---@return mr.Tensor
function mr.lincomb(tensors, coefficients) end

-------------------------------------------------------------------- files

---@class mr.LoadOpts
---@field dtype? mr.Dtype convert every tensor to this storage dtype

---Reads a .safetensors file or a PyTorch .pth/.pt archive and uploads every tensor.
---@param path string
---@param opts? mr.LoadOpts
---@return table<string, mr.Tensor>? tensors
---@return table<string, string>|string|nil metadata the metadata, or the message on failure
---@return mr.ErrorCode? code
function mr.load(path, opts) end

---Writes tensors to a .safetensors file atomically.
---@param path string
---@param tensors table<string, mr.Tensor>
---@param metadata? table<string, string|number>
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function mr.save(path, tensors, metadata) end

-------------------------------------------------------------------- images and videos

---@class mr.ImageLoadOpts
---@field width? integer
---@field height? integer
---@field fit? "crop"|"pad"|"stretch"
---@field multiple? integer
---@field filter? "bicubic"|"lanczos"|"bilinear"|"area"|"nearest"
---@field pad_color? string|integer[] "#rrggbb" or {r, g, b}
---@field alpha? "composite"|"drop"
---@field dtype? mr.Dtype

---@class mr.ImageInfo
---@field width integer
---@field height integer
---@field orientation integer
---@field has_alpha boolean
---@field animated boolean
---@field format string

---@class mr.ImageSaveOpts
---@field format? "png"|"jpeg"|"webp"
---@field quality? integer
---@field lossless? boolean

mr.image = {}

---Reads PNG, JPEG or WebP as [3, H, W] in [-1, 1].
---@param path string
---@param opts? mr.ImageLoadOpts
---@return mr.Tensor|nil image
---@return mr.ImageInfo|string|nil info the info, or the message on failure
---@return mr.ErrorCode? code
function mr.image.load(path, opts) end

---Writes [3, H, W] (or [3, 1, H, W]); the format from the extension or opts.format.
---@param path string
---@param t mr.Tensor
---@param opts? mr.ImageSaveOpts
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function mr.image.save(path, t, opts) end

---@class mr.VideoOpts
---@field fps? number|string|integer[] 16, "30000/1001" or {30000, 1001}
---@field format? "mp4"|"webp"|"png"
---@field crf? integer
---@field preset? string
---@field lossless? boolean
---@field odd? "error"|"pad"|"crop"
---@field quality? number
---@field loop? integer

---@class mr.VideoLoadOpts: mr.ImageLoadOpts
---@field start? integer 1-based first frame
---@field max_frames? integer

---@class mr.VideoInfo
---@field width integer
---@field height integer
---@field frames integer
---@field fps number
---@field fps_num integer
---@field fps_den integer
---@field duration number
---@field loop integer
---@field codec string
---@field container string

---A streaming video writer; the file appears under its name only at close().
---@class mr.VideoWriter
local VideoWriter = {}

mr.video = {}

---Opens a streaming writer (.mp4, .webp, a PNG pattern or a folder).
---@param path string
---@param opts? mr.VideoOpts
---@return mr.VideoWriter? writer
---@return string? message
---@return mr.ErrorCode? code
function mr.video.writer(path, opts) end

---What mr.video.writer would refuse for these arguments, without creating anything.
---@param path string
---@param opts? mr.VideoOpts
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function mr.video.check_output(path, opts) end

---A writer opened, written and closed in one call.
---@param path string
---@param frames mr.Tensor [3, F, H, W]
---@param opts? mr.VideoOpts
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function mr.video.save(path, frames, opts) end

---Reads MP4, WebM/MKV, GIF or animated WebP as [3, F, H, W].
---@param path string
---@param opts? mr.VideoLoadOpts
---@return mr.Tensor|nil video
---@return mr.VideoInfo|string|nil info the info, or the message on failure
---@return mr.ErrorCode? code
function mr.video.load(path, opts) end

---The frames of [3, F, H, W] (or [3, H, W]) as packed RGB bytes, frame after frame, converted as the writers convert.
---@param frames mr.Tensor
---@return string rgb
---@return integer count
---@return integer width
---@return integer height
function mr.video.rgb8(frames) end

---The video's properties without decoding pictures.
---@param path string
---@return mr.VideoInfo? info
---@return string? message
---@return mr.ErrorCode? code
function mr.video.probe(path) end

---Encodes [3, F, H, W] chunks (or a [3, H, W] frame).
---@param frames mr.Tensor
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function VideoWriter:write(frames) end

---Finishes, syncs and renames; either way the writer is done.
---@return true? ok
---@return string? message
---@return mr.ErrorCode? code
function VideoWriter:close() end

---Drops everything written; nothing is left on disk.
function VideoWriter:abort() end

---@return string
function VideoWriter:path() end

---@return integer
function VideoWriter:frames() end

---@return boolean
function VideoWriter:is_open() end

-------------------------------------------------------------------- model components

---@class mr.ModelOpts
---@field weights? mr.Dtype storage of the weights
---@field config? string config.json text or path
---@field resident_blocks? integer DiT blocks kept on the device (the rest stream)

---@class mr.WeightInfo
---@field name string
---@field shape integer[]
---@field dtype mr.Dtype
---@field weight boolean a matmul/conv weight

---The umT5 SentencePiece tokenizer.
---@class mr.Tokenizer
local Tokenizer = {}

---@param path string spiece.model
---@return mr.Tokenizer? tokenizer
---@return string? message
---@return mr.ErrorCode? code
function mr.tokenizer(path) end

---sentencepiece's ids (no EOS).
---@param text string
---@return integer[]
function Tokenizer:encode(text) end

---Wan's text path: cleaned, EOS appended, padded to text_len.
---@param prompt string
---@param text_len? integer default 512
---@return integer[] ids
---@return integer n_tokens
function Tokenizer:encode_wan(prompt, text_len) end

---@param id integer
---@return string?
function Tokenizer:piece(id) end

---@return integer
function Tokenizer:vocab_size() end

function Tokenizer:close() end

---The umT5 text encoder.
---@class mr.T5
local T5 = {}

---@param path string|string[] a checkpoint or its shards
---@param opts? mr.ModelOpts
---@return mr.T5? t5
---@return string? message
---@return mr.ErrorCode? code
function mr.t5(path, opts) end

---Text states [n, dim] of token ids.
---@param ids integer[]
---@param n_valid? integer
---@return mr.Tensor
function T5:encode(ids, n_valid) end

---@return integer
function T5:dim() end

---@return mr.WeightInfo[]
function T5:weights() end

---A tensor sharing the parameter's storage.
---@param name string
---@return mr.Tensor? weight
---@return string? message
---@return mr.ErrorCode? code
function T5:weight(name) end

function T5:close() end

---@class mr.WanDiTConfig
---@field model_type "t2v"|"i2v"|"flf2v"|"ti2v"|"vace"
---@field dim integer
---@field ffn_dim integer
---@field freq_dim integer
---@field text_dim integer
---@field text_len integer
---@field in_dim integer
---@field out_dim integer
---@field num_layers integer
---@field num_heads integer
---@field img_dim integer
---@field img_tokens integer
---@field vace_in_dim integer
---@field n_params integer
---@field eps number
---@field patch_size integer[]
---@field vace_layers integer[]

---@class mr.ForwardArgs
---@field x mr.Tensor [C, F, H, W] noisy latent
---@field t number|number[]|mr.Tensor timestep, or one per token (ti2v)
---@field context mr.Tensor|mr.Tensor[] [L, text_dim] text states, or a list of up to 4 (one batched forward)
---@field y? mr.Tensor i2v: mask + image latent
---@field clip_fea? mr.Tensor i2v with img_emb
---@field vace_context? mr.Tensor
---@field vace_scale? number

---@class mr.LoraOpts
---@field strength? number default 1
---@field mode? "auto"|"merge"|"on_the_fly"

---@class mr.LoraInfo
---@field name string
---@field naming string
---@field strength number
---@field mode "auto"|"merge"|"on_the_fly"
---@field targets integer
---@field modules integer
---@field unmatched integer

---The Wan diffusion transformer.
---@class mr.WanDiT
local WanDiT = {}

---@param path string|string[] a checkpoint or its shards
---@param opts? mr.ModelOpts
---@return mr.WanDiT? dit
---@return string? message
---@return mr.ErrorCode? code
function mr.wan_dit(path, opts) end

---The flow prediction [out_dim, F, H, W] (f32); with args.context a list of
---contexts, one batched forward and one prediction per context, in order.
---@param args mr.ForwardArgs
---@return mr.Tensor ...
function WanDiT:forward(args) end

---@return mr.WanDiTConfig
function WanDiT:config() end

---@return mr.WeightInfo[]
function WanDiT:weights() end

---@param name string
---@return mr.Tensor? weight
---@return string? message
---@return mr.ErrorCode? code
function WanDiT:weight(name) end

---Attaches a LoRA adapter (any naming Wan adapters ship in).
---@param path string
---@param opts? mr.LoraOpts
---@return mr.Lora? lora
---@return string? message
---@return mr.ErrorCode? code
function WanDiT:lora_add(path, opts) end

---Info tables of the attached adapters, oldest first.
---@return mr.LoraInfo[]
function WanDiT:loras() end

function WanDiT:close() end

---A LoRA adapter attached to a DiT.
---@class mr.Lora
local Lora = {}

---For the next forward; returns the handle.
---@param strength number
---@return mr.Lora
function Lora:set_strength(strength) end

---Detaches it: the weights are the base's again.
function Lora:remove() end

---@return mr.LoraInfo
function Lora:info() end

---@class mr.VaeInfo
---@field z_dim integer
---@field spatial_stride integer
---@field temporal_stride integer
---@field version integer 21 or 22

---The Wan 2.1 / 2.2 video VAE.
---@class mr.WanVAE
local WanVAE = {}

---@param path string|string[]
---@param opts? mr.ModelOpts
---@return mr.WanVAE? vae
---@return string? message
---@return mr.ErrorCode? code
function mr.wan_vae(path, opts) end

---Video [3, T, H, W] in [-1, 1] -> latent; nil, message, "MR_ECANCELED" when progress returns false.
---@param video mr.Tensor
---@param progress? mr.Progress
---@return mr.Tensor? latent
---@return string? message
---@return mr.ErrorCode? code
function WanVAE:encode(video, progress) end

---Latent -> video [3, T, H, W] (not clamped). on_frames(frames, first) gets each chunk's
---frames [3, n, H, W] (a copy of its own) and the 1-based index of the first as soon as
---the chunk is decoded; false cancels.
---@param latent mr.Tensor
---@param progress? mr.Progress
---@param on_frames? fun(frames: mr.Tensor, first: integer): boolean?
---@return mr.Tensor? video
---@return string? message
---@return mr.ErrorCode? code
function WanVAE:decode(latent, progress, on_frames) end

---@return mr.VaeInfo
function WanVAE:info() end

---Per-channel latent statistics (tables or tensors of z_dim values); nil clears them.
---@param mean? number[]|mr.Tensor
---@param std? number[]|mr.Tensor
function WanVAE:set_latent_stats(mean, std) end

---@return mr.WeightInfo[]
function WanVAE:weights() end

---@param name string
---@return mr.Tensor? weight
---@return string? message
---@return mr.ErrorCode? code
function WanVAE:weight(name) end

function WanVAE:close() end

---The CLIP ViT image tower (Wan 2.1 I2V / FLF2V).
---@class mr.ClipVision
local ClipVision = {}

---@param path string|string[]
---@param opts? mr.ModelOpts
---@return mr.ClipVision? clip
---@return string? message
---@return mr.ErrorCode? code
function mr.clip_vision(path, opts) end

---preprocess then forward: [257, 1280] states of an image [3, H, W] in [-1, 1].
---@param image mr.Tensor
---@return mr.Tensor
function ClipVision:encode(image) end

---An image [3, H, W] in [-1, 1] -> the tower's normalised pixels [3, 224, 224].
---@param image mr.Tensor
---@return mr.Tensor
function ClipVision:preprocess(image) end

---Pixels -> [257, 1280] states.
---@param pixels mr.Tensor
---@return mr.Tensor
function ClipVision:forward(pixels) end

---@return mr.WeightInfo[]
function ClipVision:weights() end

---@param name string
---@return mr.Tensor? weight
---@return string? message
---@return mr.ErrorCode? code
function ClipVision:weight(name) end

function ClipVision:close() end

---@class mr.DetectInfo
---@field kind string
---@field variant string
---@field n_params integer
---@field dim integer
---@field layers integer
---@field heads integer
---@field z_dim integer
---@field config? mr.WanDiTConfig

---What a checkpoint holds, without loading it.
---@param path string|string[]
---@param config? string config.json text or path
---@return mr.DetectInfo? info
---@return string? message
---@return mr.ErrorCode? code
function mr.detect(path, config) end

-------------------------------------------------------------------- Redis

---A Redis connection (libhiredis).
---@class mr.Redis
local Redis = {}

---@class mr.RedisOpts
---@field timeout? number seconds

mr.redis = {}

---Stands for a nil reply.
---@type lightuserdata
mr.redis.null = nil

---@param host string
---@param port integer
---@param opts? mr.RedisOpts
---@return mr.Redis? connection
---@return string? message
---@return mr.ErrorCode? code
function mr.redis.connect(host, port, opts) end

---Runs a command: the reply (strings, integers, tables; mr.redis.null for nil), or nil, the
---message and a server error's first word (or MR_EIO).
---@param cmd string
---@param ... string|number
---@return any? reply
---@return string? message
---@return string? code
function Redis:call(cmd, ...) end

function Redis:close() end

-------------------------------------------------------------------- the Lua parts

---Model packs (require "moonreel.pack").
mr.pack = require "moonreel.pack"

---The recipe stages and modes (require "moonreel.recipe").
mr.recipe = require "moonreel.recipe"

---What the REPL uses to show values, complete names and find help (require "moonreel.repl").
mr.repl = require "moonreel.repl"

---Pictures in a terminal: kitty graphics, sixel or truecolor half blocks (what mr.show writes).
mr.termgfx = require "moonreel.termgfx"

---Effect templates as data (require "moonreel.template").
mr.template = require "moonreel.template"

---The batch runner behind recipes/effects.lua (require "moonreel.batch").
mr.batch = require "moonreel.batch"

---The Redis Streams queue of --enqueue / --queue (require "moonreel.queue").
mr.queue = require "moonreel.queue"

return mr
