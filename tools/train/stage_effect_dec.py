"""The decoder learns the effects: fine-tune the default pack's VAE decoder on what its DiT
makes, with each effect LoRA attached, of clips of that effect, and on the base tasks as
before, so the templates' clips keep the photo's shape.

    /usr/bin/python3 -m tools.train.stage_effect_dec --out runs/fx_dec --export models/default

Why (docs/default-model.md, "Effect LoRAs"): through the engine the effect LoRAs passed 16,
19 and 18 of 24 photos, and most misses were squares that made the effect and came out with
rounded corners, the DiT's known error that the third recipe's decoder phase taught the
decoder to undo for the base tasks only; the pack's VAE also rounded 3 or 4 of the 24 true
effect clips (a turning square between latent frames). The phase here is that decoder phase
again (stage_vae.train_vae_phase's loss, encoder frozen: the latent space, the DiT and every
LoRA keep their meaning), on a mixture: a fraction p_effect of the clips are clips of the
effects (the varied world, indices past the LoRAs' caches), the rest the base world's. Of
each kind a fraction `generated` is decoded from the latent the sampler makes of the clip's
own, noised to a step of regen_steps and denoised from there: a base clip by the DiT alone
with one of its captions (stage_dit.regenerate), an effect clip by the DiT with that
effect's LoRA, the template's prompt and the photo's latent frame held, as the template
runs. The loss is against the true clip.

Counted in steps and resumable like every stage (fxdec_ckpt.pt, written atomically at most
every ckpt_every_s); the export writes the new Wan2.1_VAE.pth into the pack with the
per-item reference figures recomputed and the phase recorded in the pack's metrics.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
import sys
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..tinyworld import evalset
from ..tinyworld.captions import effect_caption, effect_prompt
from ..tinyworld.checker import check_effect
from ..tinyworld.world import EFFECTS, sample_spec
from . import ckpt
from .config import TrainConfig, with_missing_settings
from .data import Tokenizer, clips_tensor, train_clip
from .stage_dit import denoise, regenerate, sigmas
from .stage_effect import EffectConfig, attach_lora, lora_load, set_lora_scale
from .stage_vae import VAEPhase, reconstruction_loss, trainable
from .steps import optimizer_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class FxDecConfig:
    seed: int = 0
    steps: int = 600
    batch: int = 2                    # clips per step (the third recipe's decoder phase: 2)
    lr: float = 1e-4
    warmup: int = 50
    p_effect: float = 0.5             # fraction of the clips that are effect clips (effects in turn)
    p_varied: float = 0.5             # of the base clips, the fraction from the varied world
    p_light: float = 0.0              # of the effect and varied clips, the fraction on a light gray
    light_range: Tuple[int, int] = (125, 150)   # that gray's shades (the varied world's top)
    generated: float = 0.5            # fraction decoded from the sampler's latent of the clip
    regen_steps: Tuple[int, int] = (8, 14)   # of the 20-step schedule: sigma 0.83 .. 0.56
    effect_clip_base: int = 10_000    # effect clip indices (the LoRAs' caches hold 0..383)
    base_clip_base: int = 60_000_000  # base clip indices (the pack's phases end below 50 M)
    ckpt_every_s: float = 120.0
    threads: int = 2
    # The encoder too (--encoder): the photos the decoder alone could not fix (a light gray,
    # a white object jittered towards purple) lose their colour and corners in the encoder's
    # latent. Trained, it is held to its old latents on the base world's clips (the DiT's
    # training world) by an anchor: the mean squared difference of the normalised latents,
    # times `anchor`, so the DiT and its gates keep their meaning while the varied and effect
    # clips (whose latents the LoRAs are then trained on again) are free to move.
    encoder: bool = False
    anchor: float = 1.0


def load_loras(mods, folder: str, rank: int, alpha: float) -> Dict[str, dict]:
    """Each shipped effect LoRA (<folder>/<effect>.safetensors) as a state for lora_load."""
    from ..wan_torch import st
    out = {}
    for e in sorted(EFFECTS):
        w = st.load(os.path.join(folder, f"{e}.safetensors"))
        state = {}
        for k in mods:
            a = w[f"diffusion_model.{k}.lora_A.weight"].astype(np.float32)
            b = w[f"diffusion_model.{k}.lora_B.weight"].astype(np.float32)
            if a.shape[0] != rank or float(w[f"diffusion_model.{k}.alpha"]) != alpha:
                raise ValueError(f"{folder}/{e}.safetensors: {k}: rank {a.shape[0]}, alpha "
                                 f"{float(w[f'diffusion_model.{k}.alpha'])}; the stage expects {rank}, {alpha}")
            state[f"{k}.A"], state[f"{k}.B"] = torch.from_numpy(a), torch.from_numpy(b)
        out[e] = state
    return out


def light(fc: FxDecConfig, rng: np.random.Generator) -> Optional[Tuple[int, int]]:
    """The light gray range for this clip with probability p_light, else None (the world's
    own draw). Users' photos are often lighter than the world's gray of 110: the first run
    left the decoder unable to draw a gray of 135-150 even for true clips (docs/default-model.md)."""
    if fc.p_light <= 0:
        return None                   # no draw: the first run's random streams stay as they were
    return tuple(fc.light_range) if rng.random() < fc.p_light else None


def batch_clips(fc: FxDecConfig, cfg, rng: np.random.Generator, step: int):
    """fc.batch clips, each a base clip (with p_varied from the varied world: shades and
    sizes off the palette, as users' photos are) or (with p_effect) an effect clip, which is
    always varied: (tensor, specs, kinds, palette), kind None for a base clip, else the
    effect's name; palette[i] True for a clip of the base world itself."""
    effects = sorted(EFFECTS)
    clips, kinds, palette = [], [], []
    for i in range(fc.batch):
        j = step * fc.batch + i
        if rng.random() < fc.p_effect:
            e = effects[int(rng.integers(len(effects)))]
            clips.append(evalset.effect_clip(cfg.seed, e, fc.effect_clip_base + j, cfg.frames, cfg.size,
                                             gray=light(fc, rng)))
            kinds.append(e)
            palette.append(False)
        elif rng.random() < fc.p_varied:
            r = np.random.default_rng([cfg.seed, 41, j])
            spec, gray = sample_spec(r), light(fc, rng)
            if gray is not None:
                spec = dataclasses.replace(spec, background="gray")
            clips.append(evalset.varied_clip(r, spec, cfg.frames, cfg.size, bg_range=gray))
            kinds.append(None)
            palette.append(False)
        else:
            clips.append(train_clip(cfg.seed, fc.base_clip_base + j, cfg.frames, cfg.size))
            kinds.append(None)
            palette.append(True)
    return clips_tensor(clips), [c.spec for c in clips], kinds, np.array(palette)


def remake(fc: FxDecConfig, cfg, dit, t5, tok, mods, loras, ec: EffectConfig, vae, specs, kinds, pick,
           rng: np.random.Generator, gen: torch.Generator, mu: torch.Tensor) -> torch.Tensor:
    """mu with each picked clip's latent replaced by what the sampler makes of it; the rows
    not picked keep their gradient (an encoder phase trains through them)."""
    rows = list(mu.split(1))
    for i in np.flatnonzero(pick):
        with torch.no_grad():
            rows[i] = remade(fc, cfg, dit, t5, tok, mods, loras, ec, vae, specs[i], kinds[i], rng, gen, rows[i])
    set_lora_scale(mods, 0.0, ec)
    return torch.cat(rows)


def remade(fc: FxDecConfig, cfg, dit, t5, tok, mods, loras, ec: EffectConfig, vae, spec, kind,
           rng: np.random.Generator, gen: torch.Generator, mu: torch.Tensor) -> torch.Tensor:
    """One clip's latent mean [1, ...] as the sampler makes it: a base clip (kind None) by the
    DiT alone with one of its captions, an effect clip with that effect's LoRA."""
    sig = sigmas(cfg.eval_steps, cfg.eval_shift)
    lo, hi = fc.regen_steps
    z = vae.normalize(mu)
    if kind is None:
        set_lora_scale(mods, 0.0, ec)
        c = dataclasses.replace(cfg, vae_dec_regen_steps=fc.regen_steps)
        z = regenerate(c, dit, t5, tok, z, [spec], rng, gen)
    else:
        lora_load(mods, loras[kind])
        set_lora_scale(mods, 1.0, ec)
        k = int(rng.integers(lo, hi + 1))
        s0 = float(sig[k])
        x = (1 - s0) * z + s0 * torch.randn(z.shape, generator=gen)
        z = denoise(dit, t5, tok, [effect_caption(rng, spec)], x, sig[k:], cfg.eval_guide,
                    first_latent=z[:, :, 0])
    return vae.denormalize(z)


def anchor_loss(vae, old_vae, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the normalised latent means of x (the DiT's units) between
    the encoder being trained (mu: its latent means of x, from the reconstruction's own
    encoding) and the pack's own."""
    with torch.no_grad():
        ref = old_vae.normalize(old_vae.encode_moments(x, chunked=False)[0])
    return (vae.normalize(mu) - ref).pow(2).mean()


def train(fc: FxDecConfig, cfg, vae, dit, t5, tok, mods, loras, ec, out_dir: str, log=print,
          old_vae=None) -> dict:
    """The phase; with fc.encoder, old_vae (the pack's VAE, frozen) gives the anchor's latents."""
    if fc.encoder and old_vae is None:
        raise ValueError("an encoder phase needs the pack's own VAE for its anchor")
    rng = np.random.default_rng([fc.seed, 40])
    gen = torch.Generator().manual_seed(fc.seed + 40)
    ph = VAEPhase("vae_fx", fc.steps, (), fc.batch, cfg.frames, fc.lr, fc.warmup,
                  cfg.vae_dec_first_frame_weight, 0, decoder_only=not fc.encoder, fg_dilate=cfg.vae_dec_fg_dilate)
    params = trainable(vae, decoder_only=not fc.encoder)
    opt = torch.optim.AdamW(params, lr=fc.lr, weight_decay=0.0)
    path = os.path.join(out_dir, "fxdec_ckpt.pt")
    step, seconds, cpu = 0, 0.0, 0.0
    st = ckpt.load(path)
    if st is None:
        torch.manual_seed(fc.seed + 41)          # the latent noise of reconstruction_loss
    else:
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        ckpt.rng_restore(st["rng"], rng, gen)
        torch.set_rng_state(st["torch_rng"])
        step, seconds, cpu = st["step"], st["seconds"], st["cpu_seconds"]
        log(f"vae_fx: resumed at step {step}")
    t0, c0 = time.time(), time.process_time()

    def save():
        ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "rng": ckpt.rng_state(rng, gen),
                   "torch_rng": torch.get_rng_state(), "step": step, "seconds": seconds + time.time() - t0,
                   "cpu_seconds": cpu + time.process_time() - c0}, path)

    frame_w = torch.ones(1, 1, cfg.frames, 1, 1)
    frame_w[:, :, 0] = ph.first_frame_weight
    timer = ckpt.Timer(fc.ckpt_every_s)
    while step < fc.steps:
        lr = fc.lr * min(1.0, (step + 1) / fc.warmup) * 0.5 * (1 + math.cos(math.pi * step / fc.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x, specs, kinds, palette = batch_clips(fc, cfg, rng, step)
        pick = rng.random(len(specs)) < fc.generated
        encoded = []        # the encoder's latent means, before any row is re-made

        def fn(mu):
            encoded.append(mu)
            return remake(fc, cfg, dit, t5, tok, mods, loras, ec, vae, specs, kinds, pick, rng, gen, mu)
        loss, y = reconstruction_loss(cfg, vae, x, ph, frame_w, fn)
        drift = None
        if fc.encoder and palette.any():
            rows = torch.from_numpy(palette)
            drift = anchor_loss(vae, old_vae, x[rows], encoded[0][rows])
            loss = loss + fc.anchor * drift
        optimizer_step(opt, loss, params)
        if step % 25 == 0:
            mse = float((y - x).pow(2).mean())
            log(f"vae_fx step {step}/{fc.steps} t={seconds + time.time() - t0:.0f}s lr={lr:.2e} "
                f"loss={float(loss):.4f} psnr~{10 * math.log10(4.0 / max(mse, 1e-10)):.1f}dB"
                + (f" drift={float(drift):.4f}" if drift is not None else ""))
        step += 1
        if timer.due():
            save()
    save()
    for p in vae.parameters():
        p.requires_grad_(False)
    return {"steps": step, "seconds": seconds + time.time() - t0, "cpu_seconds": cpu + time.process_time() - c0}


@torch.no_grad()
def varied_psnr(cfg, vae, n: int) -> float:
    """Mean PSNR of the round trip of n held-out varied-world clips (those of the TI2V-varied
    score, evalset.varied_ti2v_cases)."""
    from .evaluate import psnr
    vals = []
    for _, clip, _ in evalset.varied_ti2v_cases(cfg.seed, n, cfg.frames, cfg.size):
        x = clips_tensor([clip])
        vals.append(psnr(vae.decode(vae.encode(x, chunked=True), chunked=True), x))
    return float(np.mean(vals))


@torch.no_grad()
def compare(cfg, vaes: Dict[str, object], dit, t5, tok, mods, loras, ec, n: int, log=print,
            own_encoder: bool = False) -> dict:
    """Checker pass counts per effect on tools.score's n held-out photo/seed pairs (stream 31):
    the same sampled latents (with the LoRA) decoded by each VAE, and each VAE's round trip
    of the true clips. With own_encoder (VAEs whose encoders differ) each VAE samples from its
    own latent of the photo."""
    from .stage_dit import sample
    out = {}
    lat_f = (cfg.frames - 1) // 4 + 1
    for e in sorted(EFFECTS):
        lora_load(mods, loras[e])
        set_lora_scale(mods, 1.0, ec)
        gen_ok = {k: 0 for k in vaes}
        trip_ok = {k: 0 for k in vaes}
        for i, (spec, photo, sd) in enumerate(evalset.effect_cases(cfg.seed, e, n, cfg.frames, cfg.size)):
            clip = evalset.effect_clip(cfg.seed + evalset.HOLDOUT_OFFSET, e, i, cfg.frames, cfg.size, 31)
            x = clips_tensor([clip])
            z = None
            for k, v in vaes.items():
                if z is None or own_encoder:
                    first = v.encode(x[:, :, :1], chunked=True)[:, :, 0]
                    z = sample(dit, t5, tok, [effect_prompt(spec)],
                               (16, lat_f, cfg.size // 8, cfg.size // 8), [sd], first_latent=first)
                gen_ok[k] += check_effect(v.decode(z, chunked=True).clamp(-1, 1)[0].numpy(), e, spec.colour,
                                          spec.shape).ok
                y = v.decode(v.encode(x, chunked=True), chunked=True).clamp(-1, 1)
                trip_ok[k] += check_effect(y[0].numpy(), e, spec.colour, spec.shape).ok
        for k in vaes:
            out[f"{e}_{k}_generated"] = gen_ok[k]
            out[f"{e}_{k}_roundtrip"] = trip_ok[k]
        log(f"{e}: generated {gen_ok}, round trip {trip_ok} of {n}")
    set_lora_scale(mods, 0.0, ec)
    return out


def main(argv=None) -> int:
    from .evaluate import eval_t2v, eval_ti2v, eval_vae
    from .export import load_pack
    ap = argparse.ArgumentParser(description="fine-tune the default pack's VAE decoder on its effects")
    ap.add_argument("--pack", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--loras", default=os.path.join(ROOT, "recipes", "templates", "loras"))
    ap.add_argument("--out", required=True, help="run folder (resumable)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--p-effect", type=float, default=None, help="fraction of effect clips (default 0.5)")
    ap.add_argument("--p-light", type=float, default=None,
                    help="fraction of the effect and varied clips on a light gray (default 0)")
    ap.add_argument("--encoder", action="store_true",
                    help="train the encoder too, anchored to its latents on the base world (retrain the LoRAs after)")
    ap.add_argument("--anchor", type=float, default=None, help="the encoder's anchor weight (default 1)")
    ap.add_argument("--eval", type=int, default=24, help="held-out photos per effect compared (0: none)")
    ap.add_argument("--export", help="write the new VAE into this pack (a copy of --pack) when done")
    ap.add_argument("--smoke", action="store_true", help="a few steps of everything")
    a = ap.parse_args(argv)
    fc = FxDecConfig()
    if a.steps is not None:
        fc.steps = a.steps
    if a.p_effect is not None:
        fc.p_effect = a.p_effect
    if a.p_light is not None:
        fc.p_light = a.p_light
    fc.encoder = a.encoder
    if a.anchor is not None:
        if not a.encoder:
            raise SystemExit("--anchor: only with --encoder")
        fc.anchor = a.anchor
    if a.smoke:     # regen from the first step: a smoke pack samples in 2 steps
        fc.steps, fc.warmup, fc.regen_steps, a.eval = 2, 1, (0, 1), 1
    os.makedirs(a.out, exist_ok=True)
    new = json.loads(json.dumps(dataclasses.asdict(fc)))
    ckpt.pin_settings(os.path.join(a.out, "fxdec_config.json"), new, a.out)
    torch.set_num_threads(fc.threads)
    log = ckpt.logger(a.out)

    with open(os.path.join(a.pack, "moonreel_pack.json")) as f:
        info = json.load(f)
    cfg = TrainConfig.from_json(json.dumps(with_missing_settings(info["config"])))
    dit, vae, t5, spiece = load_pack(a.pack)
    _, old_vae, _, _ = load_pack(a.pack)
    tok = Tokenizer(spiece, dit.text_len)
    ec = EffectConfig()
    mods = attach_lora(dit, ec.rank, ec.alpha, 0)
    loras = load_loras(mods, a.loras, ec.rank, ec.alpha)
    set_lora_scale(mods, 0.0, ec)
    for m in (dit, t5):
        for p in m.parameters():
            p.requires_grad_(False)

    done_path = os.path.join(a.out, "fxdec_done.pt")
    done = ckpt.load(done_path)
    if done is None:
        r = train(fc, cfg, vae, dit, t5, tok, mods, loras, ec, a.out, log, old_vae=old_vae)
        vae.eval()
        metrics = {"vae_fx_steps": r["steps"], "vae_fx_seconds": r["seconds"], "vae_fx_cpu_seconds": r["cpu_seconds"]}
        t0 = time.time()
        metrics["vae_fx_heldout_psnr"] = eval_vae(cfg, vae, 16)
        metrics["vae_fx_heldout_psnr_before"] = eval_vae(cfg, old_vae, 16)
        metrics["vae_fx_varied_psnr"] = varied_psnr(cfg, vae, 16)
        metrics["vae_fx_varied_psnr_before"] = varied_psnr(cfg, old_vae, 16)
        log(f"held-out PSNR {metrics['vae_fx_heldout_psnr_before']:.2f} -> {metrics['vae_fx_heldout_psnr']:.2f} dB; "
            f"varied world {metrics['vae_fx_varied_psnr_before']:.2f} -> {metrics['vae_fx_varied_psnr']:.2f} dB")
        metrics["vae_fx_t2v"] = eval_t2v(cfg, vae, dit, t5, tok, 40, log)
        metrics["vae_fx_ti2v"] = eval_ti2v(cfg, vae, dit, t5, tok, 8)
        if a.eval:
            metrics["vae_fx_effects"] = compare(cfg, {"before": old_vae, "after": vae}, dit, t5, tok, mods, loras,
                                                ec, a.eval, log, own_encoder=fc.encoder)
        metrics["vae_fx_eval_seconds"] = time.time() - t0
        ckpt.save({"vae": vae.state_dict(), "metrics": metrics}, done_path)
    else:
        vae.load_state_dict(done["vae"])
        metrics = done["metrics"]
    log("vae_fx metrics " + json.dumps(metrics))
    if a.export:
        argv = sys.argv[1:] if argv is None else argv
        command = "/usr/bin/python3 -m tools.train.stage_effect_dec " + " ".join(argv)
        export(a.pack, a.export, cfg, vae, new, metrics, command)
        log(f"wrote {a.export}/Wan2.1_VAE.pth")
    return 0


def export(src: str, out: str, cfg, vae, fc_json: dict, metrics: dict, command: str) -> None:
    """The pack at src with this VAE, into out (src itself allowed): the VAE file, the
    per-item reference figures, the round-trip ceiling and the PyTorch gate figures
    recomputed (the earlier ones kept in the stage's record), the run appended to
    "effect_decoder_stages" (a stage may run again on its own output), the card rewritten;
    written into a copy beside out and swapped in whole (export.swap_in), so a killed
    export leaves out as it was (tools/train/pipeline.py takes a pack there as done)."""
    from .card import write_card
    from .evaluate import reference_figures, vae_checker_roundtrip
    from .export import swap_in
    final = out.rstrip("/")
    out = final + f".tmp{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    with open(os.path.join(src, "moonreel_pack.json")) as f:
        info = json.load(f)
    m = info["metrics"]
    before = {k: m.get(k) for k in ("vae_psnr_holdout", "t2v_checker_pass", "ti2v_first_frame_psnr",
                                    "vae_checker_roundtrip")}
    m.update(vae_psnr_holdout=metrics["vae_fx_heldout_psnr"], t2v_checker_pass=metrics["vae_fx_t2v"],
             ti2v_first_frame_psnr=metrics["vae_fx_ti2v"], vae_checker_roundtrip=vae_checker_roundtrip(cfg, vae, 40))
    stages = info.pop("effect_decoder_stages", [])
    if "effect_decoder_stage" in info:       # a pack exported before runs were a list
        stages.append(dict(info.pop("effect_decoder_stage"),
                           command="/usr/bin/python3 -m tools.train.stage_effect_dec --out runs/fx_dec "
                                   "--export models/default"))
    stages.append({"config": fc_json, "metrics": metrics, "before": before, "command": command})
    info["effect_decoder_stages"] = stages
    info["reference"] = reference_figures(cfg, vae, 16, 8)
    torch.save({k: v.detach().float().clone() for k, v in vae.state_dict().items()},
               os.path.join(out, "Wan2.1_VAE.pth"))
    with open(os.path.join(out, "moonreel_pack.json"), "w") as f:
        json.dump(info, f, indent=1)
    write_card(out)
    swap_in(out, final)


if __name__ == "__main__":
    raise SystemExit(main())
