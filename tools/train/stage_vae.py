"""Stage 1: train the Wan 2.1-structure VAE on tinyworld clips (fresh clips every step).

Loss: L1 + MSE reconstruction, weighted up on the objects (foreground_weights), through
the latent mean plus a little noise
(vae_latent_noise times the batch's latent std), so the decoder tolerates the small
errors a diffusion model leaves in its latents. No sampled posterior and no KL term:
measured here, sampling mu + exp(log_var / 2) eps with a KL pull towards the Wan 2.1
constants' scale drowned the latent in noise (reconstruction stuck at ~13 dB PSNR for
950 steps), while the deterministic path reached 20 dB in 100 steps. The latent scale
is fixed afterwards by renormalize_latents, so no prior is needed for it. After training, a per-channel affine is folded into
the 1x1 convs `conv1` (encoder side) and `conv2` (decoder side) so that the engine's
fixed Wan 2.1 mean/std constants give latents of mean 0 and std 1 exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from ..tinyworld import ClipSpec
from ..wan_torch.vae import CausalConv3d, Resample, WanVAE
from . import ckpt
from .config import cosine_horizon
from ..tinyworld.evalset import holdout_clip
from .data import clips_tensor, run_clip
from .steps import optimizer_step


def build_vae(cfg) -> WanVAE:
    v = cfg.vae
    return WanVAE(dim=v.dim, z_dim=v.z_dim, dim_mult=tuple(v.dim_mult), num_res_blocks=v.num_res_blocks,
                  temperal_downsample=tuple(v.temperal_downsample))


@dataclasses.dataclass
class VAEPhase:
    """One phase of the VAE stage. The short phase trains on windows of vae_frames
    frames (cheap: the spatial code); the long phase on whole clips of cfg.frames.
    Measured: after 4,079 short steps, 5-frame windows reconstructed at ~25 dB but
    whole 17-frame clips at 13.8 dB, frames 9-16 at ~11 dB. The causal convolutions
    at the latent rate never saw a third latent frame, whose context is real frames
    rather than the zero padding of the first two."""
    name: str                   # checkpoint <name>_ckpt.pt, log prefix
    steps: int
    extended: Tuple[Tuple[int, int], ...]
    batch: int
    frames: int
    lr: float
    warmup: int
    first_frame_weight: float   # frame 0 is its own latent frame and the TI2V condition
    clip_base: int              # index of the phase's first training clip
    decoder_only: bool = False  # train decoder + conv2; the encoder (so the DiT's latents) stays
    torch_seed: Optional[int] = None   # seeds torch's global stream (the latent noise) at the start
    fg_dilate: int = 0          # foreground_weights(dilate=)
    mix_frames: int = 0         # single frames added to every step (image_batch), so frame 0's path keeps learning
    inflate: bool = False       # on a fresh start, first inflate_image_vae (after the image phase)
    generated: float = 0.0      # fraction of clips whose latent the DiT re-makes first (train_vae_phase's regen)


def vae_phases(cfg) -> List[VAEPhase]:
    """The phases before the DiT, in order; a phase of 0 steps is skipped."""
    phases = [VAEPhase("vae_img", cfg.vae_img_steps, cfg.vae_img_extended, cfg.vae_img_batch, 1, cfg.vae_img_lr, 100,
                       1.0, 60_000_000),
              VAEPhase("vae", cfg.vae_steps, cfg.vae_extended, cfg.vae_batch, cfg.vae_frames, cfg.vae_lr, 200,
                       1.0, 10_000_000),
              VAEPhase("vae_long", cfg.vae_long_steps, cfg.vae_long_extended, cfg.vae_long_batch, cfg.frames,
                       cfg.vae_long_lr, cfg.vae_long_warmup, cfg.vae_first_frame_weight, 30_000_000,
                       mix_frames=cfg.vae_long_mix_frames)]
    phases = [ph for ph in phases if ph.steps > 0]
    if cfg.vae_inflate and len(phases) > 1 and phases[0].name == "vae_img":
        phases[1].inflate = True
    return phases


def vae_decoder_phase(cfg) -> VAEPhase:
    """Decoder fine-tuning after the DiT stage: whole clips through the frozen encoder,
    so the latents the DiT was trained on keep their meaning."""
    return VAEPhase("vae_dec", cfg.vae_dec_steps, cfg.vae_dec_extended, cfg.vae_dec_batch, cfg.frames,
                    cfg.vae_dec_lr, 50, cfg.vae_dec_first_frame_weight, 40_000_000, decoder_only=True,
                    torch_seed=cfg.seed + 5, fg_dilate=cfg.vae_dec_fg_dilate, generated=cfg.vae_dec_generated)


def vae_batch(cfg, ph: VAEPhase, rng: np.random.Generator, step: int) -> Tuple[torch.Tensor, List[ClipSpec]]:
    """A batch of fresh clips, a random window of ph.frames consecutive frames of each,
    and the clips' specs."""
    clips = [run_clip(cfg, ph.clip_base + step * ph.batch + i)
             for i in range(ph.batch)]
    x = clips_tensor(clips)
    if ph.frames < cfg.frames:
        s = int(rng.integers(0, cfg.frames - ph.frames + 1))
        x = x[:, :, s:s + ph.frames]
    return x, [c.spec for c in clips]


@torch.no_grad()
def inflate_image_vae(vae: WanVAE) -> None:
    """Make a VAE trained on single frames act on a clip as its image code, frame by frame
    (as Wan inflates its 2-D image VAE to 3-D). Single frames train only the last time tap
    of every causal convolution, and never the temporal resampling convolutions
    (`time_conv`); their untrained taps would mix noise into every later frame. So: the
    earlier taps of the causal convolutions are zeroed, the encoder's temporal down-sampling
    keeps the newest of its frames, and the decoder's temporal up-sampling repeats each frame.
    Latent frame k is then the image code of frame 4k, and decodes to it four times."""
    time_convs = [m.time_conv for m in vae.modules() if isinstance(m, Resample) and hasattr(m, "time_conv")]
    for tc in time_convs:
        tc.weight.zero_()
        tc.bias.zero_()
        c = tc.weight.shape[1]
        for half in range(tc.weight.shape[0] // c):     # up-sampling: both output frames
            tc.weight[half * c:(half + 1) * c, :, -1, 0, 0] = torch.eye(c, dtype=tc.weight.dtype)
    skip = {id(tc) for tc in time_convs}
    for m in vae.modules():
        if isinstance(m, CausalConv3d) and m.kernel_size[0] > 1 and id(m) not in skip:
            m.weight[:, :, :-1] = 0.0


def image_batch(cfg, ph: VAEPhase, rng: np.random.Generator, step: int) -> torch.Tensor:
    """ph.mix_frames one-frame clips, each a random frame of a fresh clip [B, 3, 1, H, W]."""
    base = ph.clip_base + 5_000_000 + step * ph.mix_frames
    x = clips_tensor([run_clip(cfg, base + i) for i in range(ph.mix_frames)])
    t = torch.from_numpy(rng.integers(0, cfg.frames, ph.mix_frames))
    return x[torch.arange(ph.mix_frames), :, t].unsqueeze(2)


def reconstruction_loss(cfg, vae: WanVAE, x: torch.Tensor, ph: VAEPhase, frame_w: torch.Tensor,
                        remake: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
    """(loss, reconstruction) of x through the latent mean plus a little noise; `remake`
    (decoder phase only) maps the latent means to the ones the decoder is given."""
    with torch.set_grad_enabled(not ph.decoder_only):
        mu, _ = vae.encode_moments(x, chunked=False)
    if remake is not None:
        mu = remake(mu)
    z = mu + torch.randn_like(mu) * (cfg.vae_latent_noise * mu.detach().std())
    y = vae.decoder(vae.conv2(z))
    w = foreground_weights(x, cfg.vae_fg_weight, dilate=ph.fg_dilate) * frame_w
    return ((y - x).abs() * w).mean() + ((y - x).pow(2) * w).mean(), y


def foreground_weights(x: torch.Tensor, weight: float, threshold: float = 0.3, dilate: int = 0) -> torch.Tensor:
    """1 on the background, 1 + weight where a pixel differs from its clip's background
    (the mean of the frame borders: tinyworld backgrounds are plain). The objects are ~4 %
    of the pixels, so an unweighted loss is met by the background alone: measured on 4
    fixed clips, 17-18 dB after 150 steps unweighted (the object missing), 27.7 dB with
    weight 9."""
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    bg = border.mean(dim=(2, 3), keepdim=True).unsqueeze(-1)
    fg = ((x - bg).abs().sum(1, keepdim=True) > threshold).float()
    if dilate:      # the ring around the object too: where a blurred edge leaves its error
        fg = torch.nn.functional.max_pool3d(fg, (1, 2 * dilate + 1, 2 * dilate + 1), 1, (0, dilate, dilate))
    return 1.0 + weight * fg


def train_vae(cfg, vae: WanVAE, log=print) -> dict:
    """Every phase of the VAE stage in turn; each resumes from <out_dir>/<phase>_ckpt.pt."""
    out: dict = {}
    for ph in vae_phases(cfg):
        out.update(train_vae_phase(cfg, vae, ph, log))
    out["vae_seconds"] = sum(out[f"{ph.name}_phase_seconds"] for ph in vae_phases(cfg))
    out["vae_steps"] = sum(ph.steps for ph in vae_phases(cfg))
    return out


def trainable(vae: WanVAE, decoder_only: bool) -> List[torch.nn.Parameter]:
    """The parameters a phase trains (the decoder side, conv2 and decoder, or all), the only
    ones left requiring gradients."""
    params = [p for n, p in vae.named_parameters() if not decoder_only or n.startswith(("decoder.", "conv2."))]
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def train_vae_phase(cfg, vae: WanVAE, ph: VAEPhase, log=print, regen: Optional[Regen] = None) -> dict:
    """ph.steps steps of fresh clips; resumes from <out_dir>/<ph.name>_ckpt.pt when present,
    else starts from the weights `vae` holds (the phase before, which loads its own).

    With ph.generated > 0 (decoder phase), `regen` (normalised latents, their clips' specs,
    rng, torch generator) -> latents gives what the DiT's sampler makes of a clip's latent;
    that fraction of the clips is decoded from it, the loss still against the true clip,
    so the decoder learns to draw what the DiT means (docs/default-model.md)."""
    if ph.generated > 0 and (regen is None or not ph.decoder_only):
        raise ValueError(f"{ph.name}: generated latents need the DiT (regen) and a frozen encoder")
    rng = np.random.default_rng([cfg.seed, 1] if ph.name == "vae" else [cfg.seed, 1, ph.clip_base])
    gen = torch.Generator().manual_seed(cfg.seed + 6) if ph.generated > 0 else None   # regen's noise
    params = trainable(vae, ph.decoder_only)
    opt = torch.optim.AdamW(params, lr=ph.lr, weight_decay=0.0)
    path = os.path.join(cfg.out_dir, f"{ph.name}_ckpt.pt")
    step, seconds = 0, 0.0
    st = ckpt.load(path)
    if st is None and ph.torch_seed is not None:
        torch.manual_seed(ph.torch_seed)
    if st is None and ph.inflate:
        inflate_image_vae(vae)
        log(f"{ph.name}: inflated the image VAE (earlier time taps zeroed, temporal resampling as identity)")
    if st is not None:
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        ckpt.rng_restore(st["rng"], rng, gen)
        step, seconds = st["step"], st["seconds"]
        if step < ph.steps:
            log(f"{ph.name}: resumed at step {step}")

    def save():
        ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "rng": ckpt.rng_state(rng, gen),
                   "step": step, "seconds": seconds + time.time() - t0}, path)

    timer = ckpt.Timer(cfg.ckpt_every_s)
    t0 = time.time()
    n = ph.steps
    # A fixed held-out batch shows progress that the per-batch loss (fresh clips every
    # step, some with large objects, some small) hides. It takes ph.frames frames of
    # full-length clips: a clip rendered with fewer frames would move faster per frame
    # than anything trained on.
    watch = clips_tensor([holdout_clip(cfg.seed, 100_000 + i, cfg.frames, cfg.size)
                          for i in range(8)])[:, :, :ph.frames]
    frame_w = torch.ones(1, 1, ph.frames, 1, 1)
    frame_w[:, :, 0] = ph.first_frame_weight
    while step < n:
        frac = step / cosine_horizon(step, n, ph.extended)
        lr = ph.lr * min(1.0, (step + 1) / ph.warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        x, specs = vae_batch(cfg, ph, rng, step)
        remake = None
        if ph.generated > 0:
            pick = torch.from_numpy(rng.random(len(specs)) < ph.generated)
            remake = functools.partial(remade_latents, vae, regen, pick, specs, rng, gen)
        loss, y = reconstruction_loss(cfg, vae, x, ph, frame_w, remake)
        if ph.mix_frames:
            loss = loss + reconstruction_loss(cfg, vae, image_batch(cfg, ph, rng, step), ph, torch.ones(1))[0]
        optimizer_step(opt, loss, params)
        if step % 250 == 0:
            with torch.no_grad():
                mu_w, _ = vae.encode_moments(watch, chunked=False)
                mse_w = float((vae.decoder(vae.conv2(mu_w)).clamp(-1, 1) - watch).pow(2).mean())
            log(f"{ph.name} step {step}/{n}: held-out PSNR {10 * math.log10(4.0 / max(mse_w, 1e-10)):.2f} dB")
        if step % 50 == 0:
            mse = float((y - x).pow(2).mean())
            log(f"{ph.name} step {step}/{n} t={seconds + time.time() - t0:.0f}s lr={lr:.2e} "
                f"loss={float(loss):.4f} psnr~{10 * math.log10(4.0 / max(mse, 1e-10)):.1f}dB")
        step += 1
        if timer.due():
            save()
    save()
    for p in vae.parameters():
        p.requires_grad_(False)
    return {f"{ph.name}_phase_steps": step, f"{ph.name}_phase_seconds": seconds + time.time() - t0}


Regen = Callable[[torch.Tensor, List[ClipSpec], np.random.Generator, torch.Generator], torch.Tensor]


@torch.no_grad()
def remade_latents(vae: WanVAE, regen: Regen, pick: torch.Tensor, specs: List[ClipSpec],
                   rng: np.random.Generator, gen: torch.Generator, mu: torch.Tensor) -> torch.Tensor:
    """Latent means mu with the picked clips' replaced by regen's, through the VAE's
    normalisation (the DiT works on normalised latents)."""
    if not pick.any():
        return mu
    mu = mu.clone()
    picked = [sp for sp, p in zip(specs, pick) if p]
    mu[pick] = vae.denormalize(regen(vae.normalize(mu[pick]), picked, rng, gen))
    return mu


@torch.no_grad()
def renormalize_latents(cfg, vae: WanVAE, n_clips: int = 64) -> dict:
    """Fold a per-channel affine into conv1/conv2 so (mu - mean)/std has mean 0, std 1
    on training clips. Exact: the decoder's output is unchanged."""
    x = clips_tensor([run_clip(cfg, 20_000_000 + i) for i in range(n_clips)])
    mus = torch.cat([vae.encode_moments(x[i:i + 8], chunked=False)[0] for i in range(0, n_clips, 8)])
    a = mus.mean(dim=(0, 2, 3, 4))                      # per-channel mean of mu
    b = mus.std(dim=(0, 2, 3, 4)).clamp(min=1e-6)       # per-channel std of mu
    m, s = vae.mean, vae.std
    zd = vae.z_dim
    k = s / b                                           # mu' = m + k (mu - a)
    w1, b1 = vae.conv1.weight, vae.conv1.bias
    w1[:zd] *= k.view(-1, 1, 1, 1, 1)
    b1[:zd] = k * (b1[:zd] - a) + m
    # decoder: conv2(mu) with mu = a + (mu' - m) / k
    w2, b2 = vae.conv2.weight, vae.conv2.bias
    inv = 1.0 / k
    b2 += (w2[:, :, 0, 0, 0] @ (a - m * inv))
    w2 *= inv.view(1, -1, 1, 1, 1)
    return {"latent_mu_mean_before": a.tolist(), "latent_mu_std_before": b.tolist()}


@torch.no_grad()
def encode_latents(cfg, vae: WanVAE, n: int, log=print) -> torch.Tensor:
    """Normalised latents of training clips 0..n-1 (deterministic mu) [n, 16, T', h, w]."""
    out = []
    t0 = time.time()
    for i in range(0, n, 8):
        x = clips_tensor([run_clip(cfg, j) for j in range(i, min(n, i + 8))])
        out.append(vae.encode(x, chunked=False))
        if i % 400 == 0:
            log(f"encode latents {i}/{n} t={time.time() - t0:.0f}s")
    return torch.cat(out)
