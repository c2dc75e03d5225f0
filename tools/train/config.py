"""Training configuration of the default model (sizes, seed, step counts).

Sizes were chosen from the step-time measurement in docs/default-model.md:
64x64 clips of 17 frames, Wan 2.1 VAE structure at base width 16, a 6-layer
DiT of width 192 on a 5x4x4 = 80-token grid (patch 1x2x2), a 2-layer umT5-style
text encoder of width 128 with a caption SentencePiece vocabulary.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Tuple


@dataclasses.dataclass
class VAEConfig:
    dim: int = 16                       # base width (Wan 2.1 uses 96)
    z_dim: int = 16                     # fixed: the engine's Wan 2.1 latent constants are 16 wide
    dim_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: Tuple[bool, ...] = (False, True, True)


@dataclasses.dataclass
class T5Config:
    vocab: int = 256                    # = SentencePiece vocabulary size
    dim: int = 128
    dim_attn: int = 128
    dim_ffn: int = 256
    num_heads: int = 2
    num_layers: int = 2
    num_buckets: int = 32
    shared_pos: bool = False


@dataclasses.dataclass
class DiTConfig:
    model_type: str = "ti2v"            # per-token timesteps: T2V and first-frame TI2V
    patch_size: Tuple[int, int, int] = (1, 2, 2)
    text_len: int = 32                  # context rows the DiT pads to (config.json text_len)
    in_dim: int = 16
    dim: int = 192
    ffn_dim: int = 768
    freq_dim: int = 256
    out_dim: int = 16
    num_heads: int = 3                  # head_dim 64
    num_layers: int = 6
    eps: float = 1e-6

    def module_kwargs(self, text_dim: int) -> dict:
        return dict(model_type=self.model_type, patch_size=tuple(self.patch_size), text_len=self.text_len,
                    in_dim=self.in_dim, dim=self.dim, ffn_dim=self.ffn_dim, freq_dim=self.freq_dim,
                    text_dim=text_dim, out_dim=self.out_dim, num_heads=self.num_heads,
                    num_layers=self.num_layers, window_size=(-1, -1), qk_norm=True,
                    cross_attn_norm=True, eps=self.eps)


@dataclasses.dataclass
class TrainConfig:
    seed: int = 0
    out_dir: str = "runs/default"
    threads: int = 2                    # torch threads (the target machine has 2 cores)
    # data
    frames: int = 17                    # 4k+1
    size: int = 64
    # The clips' world (data.WORLDS): "palette" is the shipped models'; "varied" draws
    # shades and sizes around the palette and makes p_two of the clips two-object ones
    # (issues 17 and 18: what users bring, and two objects to keep apart).
    world: str = "palette"
    p_two: float = 0.0
    # Two-object clips in reading order (tinyworld.world.READING_GAP), as tinyworld has drawn
    # them since runs/v8. A setting so that a run from before, whose clips the world no
    # longer draws, is refused instead of resumed on other clips.
    reading_order: bool = True
    # The tokenizer's corpus holds each caption word alone too, so every word is one piece
    # (data.train_sentencepiece). A run from before keeps its tokenizer when it resumes.
    whole_words: bool = True
    # The text encoder starts from T5's own initialisation (T5Encoder.init_weights) instead
    # of PyTorch's default. Measured: with the default, runs/v8's encoder ended with its
    # attention saturated (entropy 0.05-0.2 nats, logit std 8-21) and learnt no word order:
    # trained alone on the per-token targets (text_parse.OwnHead) at lr 1e-3, which object a
    # token belongs to stayed at chance (0.51 after 400 steps); a fresh encoder with the
    # default init reached 0.56 in 300 steps, one with T5's init 0.99 in 200.
    t5_init: bool = True
    # Step counts, not wall-clock budgets, so that a seed reproduces the run on any machine
    # and a run interrupted and resumed gives the same weights. Sized from the measured step
    # times (docs/default-model.md) to finish in under 3 hours on two cores.
    ckpt_every_s: float = 300.0         # checkpoint interval (resume after a kill loses at most this)
    # VAE stage
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    # Up to three phases; 0 steps skips one. Each (before_step, count) pair in a phase's
    # `extended` records the count its cosine ran towards before that step, so that one
    # command reproduces a run whose phase was lengthened while it ran.
    # Image phase, first: one-frame clips (single frames from anywhere in fresh clips),
    # as Wan's VAE is trained on images before video. Every causal convolution sees zero
    # padding before frame 0, so frame 0 is made by the last time tap alone; the first
    # default model, trained only on clips, lost the difference of black and dark blue
    # there (docs/default-model.md), and 150 steps of this phase on it restored it.
    vae_img_steps: int = 3000
    vae_img_extended: Tuple[Tuple[int, int], ...] = ()
    vae_img_batch: int = 8
    vae_img_lr: float = 3e-4
    # After the image phase, the next phase starts from the image VAE inflated to act on
    # clips frame by frame (stage_vae.inflate_image_vae): measured on 8 held-out clips,
    # 23.4 dB on whole clips instead of 9.2 dB with the untrained time taps as they were.
    vae_inflate: bool = True
    # Window phase: windows of vae_frames frames. The first default model ran 4,079 steps
    # of it (25 dB on windows) and then reconstructed whole clips at 13.8 dB: it taught
    # neither the later latent frames nor frame 0 nor the shapes, so it is off.
    vae_steps: int = 0
    vae_extended: Tuple[Tuple[int, int], ...] = ()
    vae_batch: int = 4
    vae_frames: int = 5                 # causal: 1+4 frames train the same weights cheaper
    vae_lr: float = 3e-4                # measured: 1e-3 stalls at the background-only ~14 dB
    vae_latent_noise: float = 0.1       # latent noise while training, relative to the latent std
    vae_fg_weight: float = 9.0          # extra loss weight on object pixels (stage_vae.foreground_weights)
    # Whole-clip phase: clips of `frames` frames, from the inflated image VAE, with
    # vae_long_mix_frames single frames added to every step so the frame-0 path keeps
    # what the image phase taught it. Measured in runs/v4: the warm-up to lr 1.5e-4 over
    # 100 steps raised the loss from 0.22 to 0.60 before it fell (23.4 dB held-out at step
    # 0, 23.2 at 250, 28.2 at 500); a gentler start was not tried.
    vae_long_steps: int = 1200
    vae_long_extended: Tuple[Tuple[int, int], ...] = ()
    vae_long_batch: int = 2
    vae_long_lr: float = 1.5e-4
    vae_long_warmup: int = 100
    vae_long_mix_frames: int = 8
    vae_first_frame_weight: float = 4.0  # long phase: frame 0 alone is a latent frame and the TI2V image
    # Decoder fine-tuning after the DiT stage (encoder frozen, so the DiT's latents keep
    # their meaning): more reconstruction quality without training the DiT again. 0 skips.
    vae_dec_steps: int = 300
    vae_dec_extended: Tuple[Tuple[int, int], ...] = ()
    vae_dec_batch: int = 2
    vae_dec_lr: float = 1e-4
    # Measured at whole-clip step 766: 79 % of the squared error sits on the object and a
    # 4-pixel ring around it (blurred edges), the far background is at 34 dB; so the
    # decoder phase weights the ring like the object.
    vae_dec_fg_dilate: int = 4
    # Measured on the finished whole-clip VAE (8 held-out clips): frame 0 at 21.9 dB, frames
    # 1-16 at 28.5-29.9 dB. Frame 0 is the TI2V image's round trip (gate 25 dB).
    vae_dec_first_frame_weight: float = 8.0
    # The decoder phase also learns to draw what the DiT means. For this fraction of its
    # clips the latent is first re-made by the finished DiT (EMA weights) as its sampler
    # would (stage_dit.regenerate): noised to the level of a step of the evaluation schedule
    # with index in vae_dec_regen_steps (20 steps, shift 3: sigma 0.79 to 0.56) and denoised
    # from there; the loss is still against the true clip. Measured (docs/default-model.md):
    # the DiT draws squares with pinched sides and circles as rounded diamonds, errors made
    # from those levels down (sampling a true square's latent from sigma 0.14 keeps its fill at
    # 0.94, from 0.56 gives 0.88); a true clip's latent decodes right. The true clip is the
    # target on the premise that the object keeps its place, colour and motion from there
    # (not measured directly; the T2V score went from 32/40 to 39/40).
    vae_dec_generated: float = 0.5
    vae_dec_regen_steps: Tuple[int, int] = (9, 14)
    # The VAE stage's gate: the fraction of the T2V evaluation clips the checker still
    # accepts after a VAE round trip (evaluate.vae_checker_roundtrip) is the most the T2V
    # score can reach, so below this the run stops before the DiT, to be resumed with a
    # longer whole-clip phase (--vae-long-steps).
    vae_gate_roundtrip: float = 0.9
    # A pack whose VAE stands in for the VAE stage (train.py --vae-from): its weights,
    # renormalised on this run's clips and held to the same gate. A VAE stage costs
    # 3-10 h of two cores, and the shipped VAE already learnt the varied world's shades.
    vae_from: str = ""
    # latent cache for the DiT stage
    n_latent_clips: int = 4000
    # DiT + text encoder stage (flow matching)
    t5: T5Config = dataclasses.field(default_factory=T5Config)
    dit: DiTConfig = dataclasses.field(default_factory=DiTConfig)
    dit_steps: int = 12000
    dit_extended: Tuple[Tuple[int, int], ...] = ()
    dit_batch: int = 16
    dit_lr: float = 5e-4
    # The DiT's forward pass under CPU autocast to bfloat16 (weights, optimiser and loss stay
    # float32). Measured on this machine's AVX512-BF16 cores, 2 threads, batch 16: a step's
    # forward and backward 0.26 s instead of 0.44 s (oneDNN's bf16 matmul at 377 GFLOP/s,
    # float32 at 170), which pays for 12,000 steps within the budget. Sampling stays float32.
    dit_bf16: bool = True              # train.py --f32 turns it off (CPUs without bf16 kernels)
    shift: float = 3.0                  # sigma shift for training-time sampling of sigma
    p_uncond: float = 0.1               # empty caption (for classifier-free guidance)
    p_i2v: float = 0.3                  # first latent frame given clean (t = 0 tokens)
    # Weight of the text encoder's parse loss (text_parse.py: every token names both objects
    # of its caption, bound); 0 trains the text encoder on the DiT's gradient alone.
    text_parse: float = 0.0
    # Weight of the per-token parse loss (text_parse.OwnHead: each token of an object's phrase
    # names that object alone, so the DiT can look words up by their object).
    text_parse_own: float = 0.0
    # Weight of the grounding loss (grounding.py: a video token inside an object's footprint
    # puts its cross-attention on that object's words).
    grounding: float = 0.0
    # Weight of the object head's loss (grounding.ObjectHead: a DiT token halfway up names
    # the colour, shape and motion of the object it lies in).
    object_head: float = 0.0
    # evaluation
    eval_steps: int = 20
    eval_guide: float = 5.0
    eval_shift: float = 3.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> "TrainConfig":
        d = json.loads(text)
        d["vae"] = VAEConfig(**d["vae"])
        d["t5"] = T5Config(**d["t5"])
        d["dit"] = DiTConfig(**{**d["dit"], "patch_size": tuple(d["dit"]["patch_size"])})
        for key in ("vae_img_extended", "vae_extended", "vae_long_extended", "vae_dec_extended", "dit_extended"):
            d[key] = tuple(tuple(e) for e in d.get(key, ()))
        if "vae_dec_regen_steps" in d:
            d["vae_dec_regen_steps"] = tuple(d["vae_dec_regen_steps"])
        return TrainConfig(**d)


def dit_overrides(items) -> dict:
    """--dit FIELD=VALUE items (train.py, curve.py, pipeline.py) as DiTConfig fields; patch_size
    as three comma-separated integers. The fields the pack's other parts fix are refused."""
    fields = {f.name: f for f in dataclasses.fields(DiTConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key in ("model_type", "in_dim", "out_dim", "text_len"):
            raise SystemExit(f"--dit {item}: expected FIELD=VALUE, FIELD one of patch_size, dim, ffn_dim, "
                             "freq_dim, num_heads, num_layers")
        try:
            out[key] = tuple(int(v) for v in value.split(",")) if key == "patch_size" else int(value)
        except ValueError:
            raise SystemExit(f"--dit {item}: {value!r} is not {'three integers' if key == 'patch_size' else 'an integer'}")
        if key == "patch_size" and (len(out[key]) != 3 or out[key][0] != 1 or min(out[key]) < 1):
            raise SystemExit(f"--dit {item}: three positive integers, the first 1 (the engine's temporal patch)")
    probe = dataclasses.replace(DiTConfig(), **out)
    if probe.dim % probe.num_heads:
        raise SystemExit(f"--dit: dim {probe.dim} is not a multiple of num_heads {probe.num_heads}")
    return out


# The training-only losses beside the flow loss: each a weight (0, the default: off) and a
# setting of the run; (field, what it weighs) in the order the flags are listed.
AUX_LOSSES = (
    ("text_parse", "the text encoder's parse loss (text_parse.ParseHead: every token names both objects)"),
    ("text_parse_own", "the per-token parse loss (text_parse.OwnHead: each token of an object's phrase names it)"),
    ("grounding", "the grounding loss (grounding.py: a video token in an object's footprint attends to its words)"),
    ("object_head", "the DiT's object head (grounding.ObjectHead: a token halfway up names its object)"),
)


def aux_loss_flag(field: str) -> str:
    """The command-line flag of an AUX_LOSSES field: text_parse_own -> --text-parse-own."""
    return "--" + field.replace("_", "-")


def add_aux_loss_flags(ap, where: str) -> None:
    """--text-parse W, --text-parse-own W, --grounding W, --object-head W on an argparse parser."""
    for field, what in AUX_LOSSES:
        ap.add_argument(aux_loss_flag(field), type=float, default=0.0, metavar="W",
                        help=f"{where}weight of {what}")


def aux_loss_weights(a) -> dict:
    """{field: weight} of parsed add_aux_loss_flags arguments; a negative one is refused in one line."""
    out = {}
    for field, _ in AUX_LOSSES:
        w = getattr(a, field)
        if w < 0:
            raise SystemExit(f"{aux_loss_flag(field)} {w}: a weight, 0 or more")
        out[field] = w
    return out


def aux_loss_args(weights: dict, fields=None) -> list:
    """The command-line flags of the non-zero weights (of fields, or all)."""
    return [x for f, w in weights.items() if w and (fields is None or f in fields)
            for x in (aux_loss_flag(f), str(w))]


# What a run that predates a setting did without it (else the setting's default).
LEGACY = {"vae_img_steps": 0, "vae_inflate": False, "vae_long_warmup": 50, "vae_long_mix_frames": 0,
          "vae_gate_roundtrip": 0.0, "vae_dec_generated": 0.0, "dit_bf16": False,
          "reading_order": False, "whole_words": False,
          "t5_init": False}


def with_missing_settings(run: dict) -> dict:
    """An older run's config.json as a dict with the settings added since it started:
    each is what that run did without it."""
    return {**{k: LEGACY.get(k, v) for k, v in json.loads(TrainConfig().to_json()).items() if k not in run}, **run}


def cosine_horizon(step: int, steps: int, extended) -> int:
    """The step count a stage's cosine schedule runs towards at `step`.

    A stage extended while unfinished keeps the schedule it had: each (before, count) in
    `extended` (in order) says that steps before `before` ran towards `count`."""
    for before, count in extended:
        if step < before:
            return count
    return steps
