"""Stage 2: train the DiT (Wan 2.2 ti2v style, per-token timesteps) and the umT5-style text
encoder together with flow matching on cached VAE latents.

x_sigma = (1 - sigma) x0 + sigma eps, target v = eps - x0, model timestep t = 1000 sigma.
With probability p_i2v a sample is image-conditioned as Wan 2.2 TI2V: its first latent frame
is the clean x0, its tokens get t = 0, and it is left out of the loss. With probability
p_uncond the caption is empty (for classifier-free guidance).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..tinyworld import ClipSpec
from ..wan_torch.dit import WanModel
from ..wan_torch.t5 import T5Encoder
from . import ckpt, grounding, text_parse
from .config import cosine_horizon
from .data import Tokenizer, encode_text, encode_text_masked, random_captions
from .steps import flow_loss, optimizer_step


def build_t5(cfg) -> T5Encoder:
    c = cfg.t5
    t5 = T5Encoder(vocab=c.vocab, dim=c.dim, dim_attn=c.dim_attn, dim_ffn=c.dim_ffn, num_heads=c.num_heads,
                   num_layers=c.num_layers, num_buckets=c.num_buckets, shared_pos=c.shared_pos)
    if cfg.t5_init:
        t5.init_weights()
    return t5


def build_dit(cfg) -> WanModel:
    return WanModel(**cfg.dit.module_kwargs(text_dim=cfg.t5.dim))


def shift_sigma(u, shift: float):
    return shift * u / (1 + (shift - 1) * u)


def token_timesteps(t: torch.Tensor, i2v: torch.Tensor, grid) -> torch.Tensor:
    """[B] timesteps + [B] bool image-conditioned -> [B, L] per-token timesteps."""
    f, h, w = grid
    tt = t[:, None].expand(-1, f * h * w).clone()
    tt[i2v, :h * w] = 0.0
    return tt


class EMA:
    def __init__(self, modules: Sequence[torch.nn.Module], decay: float = 0.999):
        self.decay = decay
        self.shadow = [copy.deepcopy(m).eval() for m in modules]
        self.modules = modules
        for s in self.shadow:
            for p in s.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for s, m in zip(self.shadow, self.modules):
            for ps, pm in zip(s.parameters(), m.parameters()):
                ps.mul_(d).add_(pm.detach(), alpha=1 - d)


def train_dit(cfg, dit: WanModel, t5: T5Encoder, tok: Tokenizer, latents: torch.Tensor,
              specs: List[ClipSpec], log=print, probe=None, probe_every: int = 0,
              feet: Optional[torch.Tensor] = None) -> dict:
    """cfg.dit_steps steps; resumes from <out_dir>/dit_ckpt.pt when present. probe(step,
    ema) is called every probe_every steps (a learning curve in the log; it must not draw
    from the run's random streams). feet: the clips' footprints (grounding.build_footprints),
    needed when cfg.grounding is set."""
    if (cfg.grounding or cfg.object_head) and feet is None:
        raise ValueError("cfg.grounding and cfg.object_head need the clips' footprints")
    rng = np.random.default_rng([cfg.seed, 2])
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    params = list(dit.parameters()) + list(t5.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.dit_lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = EMA([dit, t5])
    # training-only heads: the text encoder's parse heads (text_parse.py) and the DiT's
    # object head (grounding.ObjectHead)
    heads = text_parse.Heads(cfg.t5.dim, cfg.text_parse, cfg.text_parse_own, cfg.dit_lr)
    heads.add("object_head", grounding.ObjectHead(cfg.dit.dim), cfg.object_head, "objects")
    path = os.path.join(cfg.out_dir, "dit_ckpt.pt")
    step, seconds = 0, 0.0
    st = ckpt.load(path)
    if st is not None:
        step, seconds = ckpt.dit_restore(st, dit, t5, ema, opt, rng, gen)
        heads.load(st)
        log(f"dit: resumed at step {step}")

    def save():
        state = ckpt.dit_state(dit, t5, ema, opt, rng, gen, step, seconds + time.time() - t0)
        state.update(heads.state())
        ckpt.save(state, path)

    n = latents.shape[0]
    pt, ph, pw = cfg.dit.patch_size
    _, _, F, H, W = latents.shape
    grid = (F // pt, H // ph, W // pw)
    timer = ckpt.Timer(cfg.ckpt_every_s)
    t0 = time.time()
    total = cfg.dit_steps
    while step < total:
        frac = step / cosine_horizon(step, total, cfg.dit_extended)
        lr = cfg.dit_lr * min(1.0, (step + 1) / 500) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups + heads.param_groups():
            g["lr"] = lr
        idx = rng.integers(0, n, cfg.dit_batch)
        x0 = latents[idx]
        b = x0.shape[0]
        batch = [specs[i] for i in idx]
        texts = random_captions(rng, batch, cfg.p_uncond)
        sigma = shift_sigma(torch.rand(b, generator=gen), cfg.shift)
        eps = torch.randn(x0.shape, generator=gen)
        s5 = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s5) * x0 + s5 * eps
        i2v = torch.rand(b, generator=gen) < cfg.p_i2v
        xt[i2v, :, 0] = x0[i2v, :, 0]
        t_tok = token_timesteps(sigma * 1000.0, i2v, grid)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.dit_bf16):
            ctx, mask = encode_text_masked(t5, tok, texts)
            with contextlib.ExitStack() as stack:
                maps = stack.enter_context(grounding.recording(dit)) if cfg.grounding else []
                hidden = (stack.enter_context(grounding.hidden_after(dit, grounding.ObjectHead.block(len(dit.blocks))))
                          if "object_head" in heads else [])
                v = dit(xt, t_tok, ctx).float()
        loss = flow_loss(v, eps, x0, i2v)
        owners = text_parse.owner_table(tok.sp, batch, texts, ctx.shape[1])
        parts = heads.losses(ctx, mask, batch, texts, owners)
        feet_b = grounding.flat_feet(feet[idx], cfg.dit.patch_size) if feet is not None else None
        if "object_head" in heads:
            parts["object_head"] = heads["object_head"].loss(hidden[0], feet_b, batch,
                                                             torch.tensor([bool(t) for t in texts]))
        aux = heads.weighted(parts)
        if cfg.grounding:
            parts["ground"] = grounding.loss(maps, feet_b, grounding.word_owners(owners))
            aux = aux + cfg.grounding * parts["ground"]
        heads.zero_grad()
        optimizer_step(opt, loss + aux, params)
        heads.step()
        ema.update(step)
        if step % 100 == 0:
            log(f"dit step {step}/{total} t={seconds + time.time() - t0:.0f}s lr={lr:.2e} loss={float(loss):.4f}"
                + heads.describe(parts))
        step += 1
        if probe is not None and probe_every and step % probe_every == 0 and step < total:
            p0 = time.time()
            probe(step, ema)
            t0 += time.time() - p0          # the stage's clock counts training only
        if timer.due():
            save()
    save()
    return {"dit_steps": step, "dit_seconds": seconds + time.time() - t0, "ema": ema}


def sigmas(steps: int, shift: float) -> torch.Tensor:
    """The sampler's noise levels: shifted linspace(1, 0), steps + 1 of them (as Wan's)."""
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


@torch.no_grad()
def denoise(dit: WanModel, t5: T5Encoder, tok: Tokenizer, prompts: Sequence[str], x: torch.Tensor,
            sig: torch.Tensor, guide: float = 5.0, negative: str = "",
            first_latent: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Euler flow-matching steps with CFG from x [B, C, F, H, W] at noise level sig[0]
    down to sig[-1]. first_latent [B, C, H, W]: TI2V, frame 0 fixed and its tokens at t = 0."""
    b = len(prompts)
    _, _, F, H, W = x.shape
    ctx_c = encode_text(t5, tok, list(prompts))
    ctx_u = encode_text(t5, tok, [negative] * b)
    pt, ph, pw = dit.patch_size
    grid = (F // pt, H // ph, W // pw)
    i2v = torch.full((b,), first_latent is not None)
    x = x.clone()
    for i in range(len(sig) - 1):
        if first_latent is not None:
            x[:, :, 0] = first_latent
        s, s_next = float(sig[i]), float(sig[i + 1])
        t = torch.full((b,), float(int(s * 1000)))
        tt = token_timesteps(t, i2v, grid)
        v = dit(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([ctx_c, ctx_u]))
        v = v[b:] + guide * (v[:b] - v[b:])
        x = x + (s_next - s) * v
    if first_latent is not None:
        x[:, :, 0] = first_latent
    return x


@torch.no_grad()
def sample(dit: WanModel, t5: T5Encoder, tok: Tokenizer, prompts: Sequence[str], shape, seeds: Sequence[int],
           steps: int = 20, guide: float = 5.0, shift: float = 3.0, negative: str = "",
           first_latent: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Latents [B, *shape] from noise of each seed (Euler, CFG, sigmas())."""
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return denoise(dit, t5, tok, prompts, x, sigmas(steps, shift), guide, negative, first_latent)


@torch.no_grad()
def regenerate(cfg, dit: WanModel, t5: T5Encoder, tok: Tokenizer, z: torch.Tensor, specs: List[ClipSpec],
               rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
    """What the sampler makes of clean latents z [B, C, F, H, W] (normalised): each is noised
    to the level of a step of the evaluation schedule drawn from cfg.vae_dec_regen_steps and
    denoised from there, with a caption of its clip and, with probability p_i2v, its frame 0
    held as in TI2V. From that range the result takes the shape errors the DiT makes there
    (decoder phase, docs/default-model.md)."""
    sig = sigmas(cfg.eval_steps, cfg.eval_shift)
    lo, hi = cfg.vae_dec_regen_steps
    if not 0 <= lo <= hi <= cfg.eval_steps:
        raise ValueError(f"vae_dec_regen_steps {lo}..{hi}: step indices of the {cfg.eval_steps}-step schedule")
    out = []
    for i in range(z.shape[0]):
        k = int(rng.integers(lo, hi + 1))
        s0 = float(sig[k])
        x = (1 - s0) * z[i:i + 1] + s0 * torch.randn(z[i:i + 1].shape, generator=gen)
        caption = random_captions(rng, [specs[i]], 0.0)
        first = z[i:i + 1, :, 0] if rng.random() < cfg.p_i2v else None
        out.append(denoise(dit, t5, tok, caption, x, sig[k:], cfg.eval_guide, first_latent=first))
    return torch.cat(out)
