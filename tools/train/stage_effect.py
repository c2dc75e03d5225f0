"""Effect LoRAs: teach the finished default model one effect motion it does not know (world
EFFECTS: squish, spin, bounce) as a LoRA on its frozen DiT, for an image-to-video template.

    /usr/bin/python3 -m tools.train.stage_effect --effect squish --out runs/fx_squish \\
        --export recipes/templates/loras/squish.safetensors

Method: a low-rank adapter (rank 16, alpha 16) on every linear layer of the DiT's blocks
(self- and cross-attention q, k, v, o and both feed-forward layers); the DiT, the text encoder
and the VAE stay frozen. The data are clips of the effect in the varied world (shades and
sizes off the palette, as users' photos are; world.vary_spec), VAE-encoded once into a cache.
Every step is the TI2V task of the template (stage_dit): the first latent frame is the clean
latent of the clip's first frame (the user's photo), its tokens get t = 0 and it is left out
of the loss; the caption ties the trigger word to the motion (captions.effect_caption), empty
with probability p_uncond for guidance. Flow matching as stage_dit, forward in bfloat16
autocast; the adapter exported is the exponential moving average of its weights.

Counted in steps, so a seed gives the same adapter on any machine; resumable like every stage
(fx_cache.pt, fx_ckpt.pt, each written atomically at most every ckpt_every_s). The adapter is
written in the original / ComfyUI naming (docs/models.md, LoRA):
diffusion_model.blocks.N.self_attn.q.lora_A.weight [r, in], .lora_B.weight [out, r], .alpha.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Dict

import numpy as np
import torch

from ..tinyworld.captions import effect_caption, effect_prompt
from ..tinyworld import evalset
from ..tinyworld.world import EFFECTS
from . import ckpt
from .data import Tokenizer, clips_tensor, encode_text
from .stage_dit import sample, shift_sigma, token_timesteps
from .steps import optimizer_step

TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
           "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


@dataclasses.dataclass
class EffectConfig:
    effect: str = "squish"
    seed: int = 0
    rank: int = 16
    alpha: float = 16.0
    steps: int = 1600
    batch: int = 8
    lr: float = 1.5e-3
    ema: float = 0.995                # the exported adapter is the moving average of its weights
    warmup: int = 50
    n_clips: int = 384                # cache of effect clips (each step draws from it)
    p_uncond: float = 0.1             # empty caption (the guidance's unconditional branch)
    shift: float = 3.0                # sigma shift of training-time sampling (the base's)
    # The forward pass under bfloat16 autocast: fast where oneDNN has bf16 kernels (AVX-512
    # BF16 / AMX), about 14 times slower than float32 where it must emulate them (an AVX2 EPYC
    # here: 5.4 s of CPU a step against the 0.38 s of the shipped runs); --f32 turns it off.
    bf16: bool = True
    ckpt_every_s: float = 120.0
    threads: int = 1                   # the shipped LoRAs: three runs side by side on two cores


# --------------------------------------------------------------------------- the adapter

class LoRALinear(torch.nn.Module):
    """base(x) + (alpha / rank) B A x, base frozen; B starts at zero (the base model's output)."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.A = torch.nn.Parameter(torch.empty(rank, base.in_features))
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        bound = 1.0 / math.sqrt(base.in_features)         # PEFT's kaiming_uniform(a=sqrt(5))
        with torch.no_grad():
            self.A.uniform_(-bound, bound, generator=gen)
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale


def attach_lora(dit, rank: int, alpha: float, seed: int) -> Dict[str, LoRALinear]:
    """Wrap every target linear layer of the DiT's blocks; returns {official module name: wrapper}."""
    gen = torch.Generator().manual_seed(seed)
    for p in dit.parameters():
        p.requires_grad_(False)
    out = {}
    for i, blk in enumerate(dit.blocks):
        for t in TARGETS:
            parent_name, child = t.rsplit(".", 1)
            parent = getattr(blk, parent_name)
            wrapped = LoRALinear(parent[int(child)] if child.isdigit() else getattr(parent, child), rank, alpha, gen)
            if child.isdigit():
                parent[int(child)] = wrapped
            else:
                setattr(parent, child, wrapped)
            out[f"blocks.{i}.{t}"] = wrapped
    return out


def lora_state(mods: Dict[str, LoRALinear]) -> Dict[str, torch.Tensor]:
    return {f"{k}.{n}": getattr(m, n).detach().clone() for k, m in mods.items() for n in ("A", "B")}


def lora_load(mods: Dict[str, LoRALinear], st: Dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, m in mods.items():
            m.A.copy_(st[f"{k}.A"])
            m.B.copy_(st[f"{k}.B"])


def set_lora_scale(mods: Dict[str, LoRALinear], strength: float, ec: EffectConfig) -> None:
    for m in mods.values():
        m.scale = strength * ec.alpha / ec.rank


def export_lora(mods: Dict[str, LoRALinear], ec: EffectConfig, path: str, metadata: dict) -> str:
    """The adapter as safetensors (f16 factors, f32 alpha), original naming; returns its sha256."""
    from ..wan_torch import st
    tensors = {}
    for k, m in mods.items():
        tensors[f"diffusion_model.{k}.lora_A.weight"] = m.A.detach().numpy().astype(np.float16)
        tensors[f"diffusion_model.{k}.lora_B.weight"] = m.B.detach().numpy().astype(np.float16)
        tensors[f"diffusion_model.{k}.alpha"] = np.array(ec.alpha, np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    st.save(tmp, tensors, {k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------- data

def effect_clip(ec: EffectConfig, i: int, frames: int, size: int):
    """The i-th clip of the effect's training set (evalset.effect_clip, its training stream)."""
    return evalset.effect_clip(ec.seed, ec.effect, i, frames, size)


@torch.no_grad()
def build_cache(ec: EffectConfig, vae, frames: int, size: int, path: str, log=print) -> dict:
    st = ckpt.load(path) or {"lat": [], "specs": [], "seconds": 0.0}
    if st.get("done"):
        return st
    st.setdefault("cpu_seconds", 0.0)
    t0, c0, timer = time.time(), time.process_time(), ckpt.Timer(ec.ckpt_every_s)
    for i in range(len(st["specs"]), ec.n_clips, 8):
        clips = [effect_clip(ec, j, frames, size) for j in range(i, min(ec.n_clips, i + 8))]
        st["lat"].append(vae.encode(clips_tensor(clips), chunked=False))
        st["specs"].extend(c.spec for c in clips)
        if timer.due():
            ckpt.save({**st, "seconds": st["seconds"] + time.time() - t0,
                       "cpu_seconds": st["cpu_seconds"] + time.process_time() - c0}, path)
            st["seconds"] += time.time() - t0
            st["cpu_seconds"] += time.process_time() - c0
            t0, c0 = time.time(), time.process_time()
    st = {"lat": [torch.cat(st["lat"])], "specs": st["specs"], "seconds": st["seconds"] + time.time() - t0,
          "cpu_seconds": st["cpu_seconds"] + time.process_time() - c0, "done": True}
    ckpt.save(st, path)
    return st


# --------------------------------------------------------------------------- training

def train(ec: EffectConfig, dit, t5, tok: Tokenizer, mods, cache: dict, out_dir: str, log=print) -> dict:
    rng = np.random.default_rng([ec.seed, 32])
    gen = torch.Generator().manual_seed(ec.seed + 32)
    lat, specs = cache["lat"][0], cache["specs"]
    params = [p for m in mods.values() for p in (m.A, m.B)]
    names = [f"{k}.{n}" for k in mods for n in ("A", "B")]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=ec.lr, weight_decay=0.0, betas=(0.9, 0.99))
    path = os.path.join(out_dir, "fx_ckpt.pt")
    step, seconds, cpu = 0, 0.0, 0.0
    st = ckpt.load(path)
    if st is not None:
        lora_load(mods, st["lora"])
        for e, n in zip(ema, names):
            e.copy_(st["ema"][n])
        opt.load_state_dict(st["opt"])
        ckpt.rng_restore(st["rng"], rng, gen)
        step, seconds, cpu = st["step"], st["seconds"], st.get("cpu_seconds", 0.0)
        log(f"{ec.effect}: resumed at step {step}")
    t0, c0 = time.time(), time.process_time()

    def save():
        ckpt.save({"lora": lora_state(mods), "ema": dict(zip(names, ema)), "opt": opt.state_dict(),
                   "rng": ckpt.rng_state(rng, gen),
                   "step": step, "seconds": seconds + time.time() - t0,
                   "cpu_seconds": cpu + time.process_time() - c0}, path)

    _, _, F, H, W = lat.shape
    grid = (F // dit.patch_size[0], H // dit.patch_size[1], W // dit.patch_size[2])
    timer = ckpt.Timer(ec.ckpt_every_s)
    dit.train()
    while step < ec.steps:
        frac = step / ec.steps
        lr = ec.lr * min(1.0, (step + 1) / ec.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(specs), ec.batch)
        x0 = lat[idx]
        b = x0.shape[0]
        texts = ["" if rng.random() < ec.p_uncond else effect_caption(rng, specs[i]) for i in idx]
        sigma = shift_sigma(torch.rand(b, generator=gen), ec.shift)
        eps = torch.randn(x0.shape, generator=gen)
        s5 = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s5) * x0 + s5 * eps
        xt[:, :, 0] = x0[:, :, 0]                         # TI2V: the photo's latent, clean
        i2v = torch.ones(b, dtype=torch.bool)
        t_tok = token_timesteps(sigma * 1000.0, i2v, grid)
        with torch.no_grad():
            ctx = encode_text(t5, tok, texts)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ec.bf16):
            v = dit(xt, t_tok, ctx).float()
        err = (v - (eps - x0)).pow(2)[:, :, 1:]
        loss = err.mean()
        optimizer_step(opt, loss, params)
        with torch.no_grad():
            d = min(ec.ema, (1 + step) / (10 + step))
            for e, p in zip(ema, params):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        if step % 100 == 0:
            log(f"{ec.effect} step {step}/{ec.steps} t={seconds + time.time() - t0:.0f}s lr={lr:.2e} "
                f"loss={float(loss):.4f}")
        step += 1
        if timer.due():
            save()
    save()
    dit.eval()
    lora_load(mods, dict(zip(names, ema)))          # from here on, the averaged weights
    return {"steps": step, "train_seconds": seconds + time.time() - t0,
            "train_cpu_seconds": cpu + time.process_time() - c0}


# --------------------------------------------------------------------------- evaluation (PyTorch)

@torch.no_grad()
def evaluate(ec: EffectConfig, dit, t5, tok, vae, mods, n: int, frames: int, size: int, log=print) -> dict:
    """Checker pass rate on n held-out photos (evalset.effect_cases, stream 33) with the adapter at strength 1 and
    without it (strength 0): the template's prompt, TI2V, the pack's sampler settings."""
    from ..tinyworld.checker import check_effect
    out = {}
    for strength in (1.0, 0.0):
        set_lora_scale(mods, strength, ec)
        ok = 0
        for spec, photo, sd in evalset.effect_cases(ec.seed, ec.effect, n, frames, size, stream=33):
            img = torch.from_numpy((photo.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1).copy())[None, :, None]
            z0 = vae.encode(img, chunked=True)[:, :, 0]
            lat_f = (frames - 1) // 4 + 1
            x = sample(dit, t5, tok, [effect_prompt(spec)], (16, lat_f, size // 8, size // 8), [sd],
                       first_latent=z0)
            video = vae.decode(x, chunked=True).clamp(-1, 1)[0].numpy()
            r = check_effect(video, ec.effect, spec.colour, spec.shape)
            ok += r.ok
            if not r.ok and strength == 1.0:
                log(f"  miss: {effect_prompt(spec)!r}: {r.match} {({k: round(v, 2) for k, v in r.measures.items()})}")
        out["pass_lora" if strength else "pass_base"] = ok / n
    set_lora_scale(mods, 1.0, ec)
    return out


# --------------------------------------------------------------------------- the stage

def main(argv=None) -> int:
    from .export import load_pack
    ap = argparse.ArgumentParser(description="train one effect LoRA on the default model")
    ap.add_argument("--effect", required=True, choices=sorted(EFFECTS))
    ap.add_argument("--pack", default="models/default", help="the base pack (frozen)")
    ap.add_argument("--out", required=True, help="run folder (resumable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 1; recorded in the run)")
    ap.add_argument("--export", help="write the LoRA (safetensors) here when done")
    ap.add_argument("--f32", action="store_true", help="forward in float32 (CPUs without bfloat16 kernels)")
    ap.add_argument("--eval", type=int, default=8, help="held-out photos scored in PyTorch (0: none)")
    ap.add_argument("--smoke", action="store_true", help="a few steps of everything")
    a = ap.parse_args(argv)
    ec = EffectConfig(effect=a.effect, seed=a.seed)
    if a.steps is not None:
        ec.steps = a.steps
    if a.threads is not None:
        ec.threads = a.threads
    ec.bf16 = not a.f32
    if a.smoke:
        ec.steps, ec.n_clips, a.eval = 3, 16, 1
    os.makedirs(a.out, exist_ok=True)
    new = json.loads(json.dumps(dataclasses.asdict(ec)))
    ckpt.pin_settings(os.path.join(a.out, "fx_config.json"), new, a.out)
    torch.set_num_threads(ec.threads)
    torch.manual_seed(ec.seed)
    log = ckpt.logger(a.out)

    dit, vae, t5, spiece = load_pack(a.pack)
    with open(os.path.join(a.pack, "moonreel_pack.json")) as f:
        info = json.load(f)
    frames, size = info["frames"], info["size"]
    for m in (vae, t5):
        for p in m.parameters():
            p.requires_grad_(False)
    tok = Tokenizer(spiece, dit.text_len)
    mods = attach_lora(dit, ec.rank, ec.alpha, ec.seed)
    n_params = sum(m.A.numel() + m.B.numel() for m in mods.values())

    done_path = os.path.join(a.out, "fx_done.pt")
    done = ckpt.load(done_path)
    if done is None:
        cache = build_cache(ec, vae, frames, size, os.path.join(a.out, "fx_cache.pt"), log)
        log(f"{ec.effect} cache: {len(cache['specs'])} clips in {cache['seconds']:.0f}s")
        r = train(ec, dit, t5, tok, mods, cache, a.out, log)
        # wall-clock seconds, and the process's CPU seconds (both threads): on a machine
        # shared with other work the first overstates the cost, CPU / 2 approximates two
        # cores of one's own
        metrics = {"effect": ec.effect, "steps": r["steps"], "train_seconds": r["train_seconds"],
                   "train_cpu_seconds": r["train_cpu_seconds"], "cache_seconds": cache["seconds"],
                   "cache_cpu_seconds": cache.get("cpu_seconds"), "lora_params": n_params}
        if a.eval:
            t0 = time.time()
            metrics.update(evaluate(ec, dit, t5, tok, vae, mods, a.eval, frames, size, log))
            metrics["eval_seconds"] = time.time() - t0
            metrics["eval_n"] = a.eval
        ckpt.save({"lora": lora_state(mods), "metrics": metrics}, done_path)
    else:
        lora_load(mods, done["lora"])
        metrics = done["metrics"]
    log(f"{ec.effect} metrics " + json.dumps(metrics))
    if a.export:
        meta = {"moonreel.effect": ec.effect, "moonreel.trigger": EFFECTS[ec.effect].trigger,
                "moonreel.config": json.dumps(new, sort_keys=True)}
        digest = export_lora(mods, ec, a.export, meta)
        log(f"wrote {a.export} ({os.path.getsize(a.export)} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
