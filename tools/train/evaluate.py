"""Quality gates of issue 5 on held-out data:
VAE PSNR on unseen clips (chunked, as the engine runs it), the semantic checker on
prompt/seed pairs (T2V), and the TI2V first-frame PSNR."""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

import numpy as np
import torch

from ..tinyworld import canonical_caption, sample_clip
from ..tinyworld.checker import check
from ..tinyworld.evalset import holdout_clip, prompt_seed_pairs, r2v_cases
from ..tinyworld.world import COLOURS, MOTIONS, SHAPES
from .data import clips_tensor, encode_text
from .stage_dit import sample, token_timesteps
from .steps import flow_loss


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of [-1, 1] tensors (peak-to-peak 2)."""
    mse = float((a.clamp(-1, 1) - b.clamp(-1, 1)).pow(2).mean())
    return 10 * math.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def vae_psnr_per_clip(cfg, vae, n: int = 16) -> list:
    """Each of n held-out clips' PSNR after encode -> decode (chunked, as the engine runs it)."""
    x = clips_tensor([holdout_clip(cfg.seed, i, cfg.frames, cfg.size) for i in range(n)])
    vals = []
    for i in range(0, n, 4):
        y = vae.decode(vae.encode(x[i:i + 4], chunked=True), chunked=True)
        vals += [psnr(y[j:j + 1], x[i + j:i + j + 1]) for j in range(y.shape[0])]
    return vals


def eval_vae(cfg, vae, n: int = 16) -> float:
    """Mean over n held-out clips of each clip's PSNR (the usual data-set figure, and what
    tools/score computes through the engine)."""
    return float(np.mean(vae_psnr_per_clip(cfg, vae, n)))


@torch.no_grad()
def ti2v_first_frame_per_pair(cfg, vae, n: int = 8) -> list:
    """The TI2V first-frame PSNR of eval_ti2v's pairs without sampling: frame 0 is the
    given image's latent, held fixed, and the causal decoder makes frame 0 from latent
    frame 0 alone. So it is a figure of the weights, the same in any engine, and
    tools/score --reference holds the engine to it."""
    return [psnr(vae.decode(vae.encode(img, chunked=True), chunked=True), img) for _, _, img in ti2v_pairs(cfg, n)]


def ti2v_pairs(cfg, n: int):
    """The TI2V evaluation pairs: (spec, seed, first frame as a 1-frame video [1, 3, 1, H, W])."""
    for spec, sd in prompt_seed_pairs(cfg.seed + 1, n):
        clip = sample_clip(np.random.default_rng(sd), spec, cfg.frames, cfg.size)
        yield spec, sd, clips_tensor([clip])[:, :, :1]


@torch.no_grad()
def vae_checker_roundtrip(cfg, vae, n: int = 40) -> float:
    """Fraction of the T2V evaluation pairs' true clips that the checker still accepts
    after encode -> decode: the most the T2V checker score can reach through this VAE.
    Measured on the first shipped pack: 23/40; the true clips themselves: 40/40."""
    ok = 0
    for spec, sd in prompt_seed_pairs(cfg.seed, n):
        x = clips_tensor([sample_clip(np.random.default_rng(sd), spec, cfg.frames, cfg.size)])
        y = vae.decode(vae.encode(x, chunked=True), chunked=True).clamp(-1, 1)
        ok += check(y[0].numpy(), canonical_caption(spec)).ok
    return ok / n


def reference_figures(cfg, vae, n_vae: int = 16, n_ti2v: int = 8) -> dict:
    """Per-item figures that do not depend on sampling noise, for the pack: the engine
    must reproduce them (tools/score --reference)."""
    return {"vae_psnr": vae_psnr_per_clip(cfg, vae, n_vae),
            "ti2v_first_frame_psnr": ti2v_first_frame_per_pair(cfg, vae, n_ti2v)}


@torch.no_grad()
def t2v_videos(cfg, vae, dit, t5, tok, prompts, seeds):
    """Each prompt's clip from its seed, sampled as the evaluations sample (eight at a
    time), decoded and clamped: numpy [3, T, H, W] in [-1, 1], in order."""
    lat = (16, 1 + (cfg.frames - 1) // 4, cfg.size // 8, cfg.size // 8)
    for i in range(0, len(prompts), 8):
        z = sample(dit, t5, tok, prompts[i:i + 8], lat, seeds[i:i + 8], cfg.eval_steps, cfg.eval_guide,
                   cfg.eval_shift)
        yield from (v.numpy() for v in vae.decode(z, chunked=True).clamp(-1, 1))


def tally(counts: dict, match: Dict[str, bool]) -> None:
    """Add one checked object's per-attribute verdicts (checker match) to counts."""
    for k, good in match.items():
        counts[k] = counts.get(k, 0) + int(good)


def eval_t2v(cfg, vae, dit, t5, tok, n: int = 40, log=print, counts: Optional[dict] = None) -> float:
    """The T2V gate's fraction on n prompt/seed pairs; counts, when given, gets per attribute
    how many of the n clips had it right."""
    pairs = prompt_seed_pairs(cfg.seed, n)
    prompts = [canonical_caption(s) for s, _ in pairs]
    ok = 0
    videos = t2v_videos(cfg, vae, dit, t5, tok, prompts, [sd for _, sd in pairs])
    for (spec, sd), v, p in zip(pairs, videos, prompts):
        r = check(v, p)
        ok += r.ok
        if counts is not None:
            tally(counts, r.match)
        if not r.ok:
            log(f"  miss: {p!r} seed {sd}: found {r.found.colour}/{r.found.shape}/{r.found.motion}")
    return ok / n


@torch.no_grad()
def eval_ti2v(cfg, vae, dit, t5, tok, n: int = 8) -> float:
    lat = (16, 1 + (cfg.frames - 1) // 4, cfg.size // 8, cfg.size // 8)
    vals = []
    for spec, sd, img in ti2v_pairs(cfg, n):
        z0 = vae.encode(img, chunked=True)[:, :, 0]
        z = sample(dit, t5, tok, [canonical_caption(spec)], lat, [sd], cfg.eval_steps, cfg.eval_guide,
                   cfg.eval_shift, first_latent=z0)
        video = vae.decode(z, chunked=True)
        vals.append(psnr(video[:, :, 0], img[:, :, 0]))
    return float(np.mean(vals))


@torch.no_grad()
def eval_t2v2(cfg, vae, dit, t5, tok, n: int = 40, log=print, counts: Optional[dict] = None) -> float:
    """Two objects by caption: the fraction of n held-out two-object scenes of the varied
    world (tinyworld.evalset.r2v_cases, named by colour and shape) in which the checker
    finds both objects with their colours, shapes and motions. What the reference stage
    needs the base model to draw first (docs/default-model.md). counts, when given, gets
    per attribute how many of the 2n objects had it right (a learning curve's detail), and
    under "reading order" in how many scenes the first object's mean centre was left of the
    second's, as the world places them (tinyworld.world.READING_GAP; here any margin, and an
    object seen in one frame counts: a probe's tally, not a verdict)."""
    from ..tinyworld.checker import check_objects, in_reading_order
    cases = r2v_cases(cfg.seed, n, cfg.size)
    prompts = [canonical_caption(spec) for spec, _, _ in cases]
    ok = 0
    videos = t2v_videos(cfg, vae, dit, t5, tok, prompts, [sd for _, _, sd in cases])
    for (spec, _, sd), v, p in zip(cases, videos, prompts):
        r = check_objects(v, [{"colour": o.colour, "shape": o.shape, "motion": o.motion} for o in spec.objects])
        ok += r.ok
        if counts is not None:
            for _, _, match in r.objects:
                tally(counts, match)
            counts["reading order"] = counts.get("reading order", 0) + int(in_reading_order(r))
        if not r.ok:
            log(f"  miss: {p!r} seed {sd}: " + "; ".join(f"{a.colour}/{a.shape}/{a.motion}" for _, a, _ in r.objects))
    return ok / n


GAP_SIGMAS = (0.3, 0.5, 0.7, 0.9)


def _caption_losses(cfg, dit, t5, tok, x0: torch.Tensor, captions: Dict[str, list], seed: int) -> Dict[str, float]:
    """The flow loss on clips x0 under each list of captions, as a relative rise in percent
    over captions["true"]: fixed noise at GAP_SIGMAS (no image given), its own random
    stream, so two checkpoints compare."""
    gen = torch.Generator().manual_seed(seed)
    pt, ph, pw = cfg.dit.patch_size
    grid = (x0.shape[2] // pt, x0.shape[3] // ph, x0.shape[4] // pw)
    contexts = {k: encode_text(t5, tok, c) for k, c in captions.items()}
    loss = dict.fromkeys(captions, 0.0)
    for sigma in GAP_SIGMAS:
        eps = torch.randn(x0.shape, generator=gen)
        xt = (1 - sigma) * x0 + sigma * eps
        no_image = torch.zeros(x0.shape[0], dtype=torch.bool)
        t = token_timesteps(torch.full((x0.shape[0],), sigma * 1000.0), no_image, grid)
        for k, ctx in contexts.items():
            loss[k] += float(flow_loss(dit(xt, t, ctx).float(), eps, x0, no_image)) / len(GAP_SIGMAS)
    return {k: 100.0 * (loss[k] / loss["true"] - 1.0) for k in captions if k != "true"}


@torch.no_grad()
def caption_gap(cfg, dit, t5, tok, latents: torch.Tensor, specs, n: int = 48, seed: int = 5) -> Dict[str, float]:
    """How much the DiT reads each word of a caption, long before the checker can tell: the
    flow loss on the first n one-object clips of a latent cache with their canonical caption,
    against the same caption with its motion, colour or shape changed to another drawn at
    random (or empty), as a relative rise in percent."""
    idx = [i for i, s in enumerate(specs) if len(s.objects) == 1][:n]
    rng = np.random.default_rng(seed)

    def changed(spec, field, pool):
        o = spec.objects[0]
        others = [v for v in pool if v != getattr(o, field)]
        return dataclasses.replace(spec, objects=(dataclasses.replace(o, **{field: others[rng.integers(len(others))]}),))

    true = [specs[i] for i in idx]
    captions = {"true": [canonical_caption(s) for s in true]}
    for field, pool in (("motion", MOTIONS), ("colour", COLOURS), ("shape", SHAPES)):
        captions[field] = [canonical_caption(changed(s, field, list(pool))) for s in true]
    captions["empty"] = [""] * len(idx)
    return _caption_losses(cfg, dit, t5, tok, latents[idx].float(), captions, seed)


def swapped(spec, field: Optional[str] = None):
    """A two-object spec with its objects' `field` exchanged, or (None) the objects named in
    the other order: every word still true of the clip, only which object it belongs to, or
    which comes first, is wrong."""
    a, b = spec.objects
    if field is None:
        return dataclasses.replace(spec, objects=(b, a))
    return dataclasses.replace(spec, objects=(dataclasses.replace(a, **{field: getattr(b, field)}),
                                              dataclasses.replace(b, **{field: getattr(a, field)})))


@torch.no_grad()
def pair_gap(cfg, dit, t5, tok, latents: torch.Tensor, specs, n: int = 48, seed: int = 6) -> Dict[str, float]:
    """Whether the DiT binds each word to its object, on the first n two-object clips of a
    latent cache whose objects differ in shape and motion (colours always differ): the
    flow loss with the canonical caption against the same words with the two objects'
    colours, shapes or motions exchanged, or the objects named in the other order (which
    reading order, tinyworld.world.READING_GAP, makes wrong), as a relative rise in percent.
    A DiT that draws the right words anywhere pays nothing for a swap."""
    idx = [i for i, s in enumerate(specs) if len(s.objects) == 2
           and s.objects[0].shape != s.objects[1].shape and s.objects[0].motion != s.objects[1].motion][:n]
    true = [specs[i] for i in idx]
    captions = {"true": [canonical_caption(s) for s in true],
                "order": [canonical_caption(swapped(s)) for s in true]}
    for field in ("colour", "shape", "motion"):
        captions[field] = [canonical_caption(swapped(s, field)) for s in true]
    return _caption_losses(cfg, dit, t5, tok, latents[idx].float(), captions, seed)


def probe_report(cfg, vae, dit, t5, tok, n: int, latents: torch.Tensor, specs) -> str:
    """A varied DiT's learning-curve line: two objects by caption (eval_t2v2) and one-object
    T2V (eval_t2v) on n pairs each with their per-attribute counts, the caption gap and the
    two-object pair gap."""
    quiet = lambda _: None  # noqa: E731
    two_counts: dict = {}
    one_counts: dict = {}
    two = eval_t2v2(cfg, vae, dit, t5, tok, n, quiet, two_counts)
    one = eval_t2v(cfg, vae, dit, t5, tok, n, quiet, one_counts)
    gap = caption_gap(cfg, dit, t5, tok, latents, specs)
    pair = pair_gap(cfg, dit, t5, tok, latents, specs)

    def listed(counts):
        return ", ".join(f"{k} {v}" for k, v in counts.items())

    order = two_counts.pop("reading order", 0)
    return (f"two objects by caption {two:.3f} (of the {2 * n} objects {listed(two_counts)}; in reading order "
            f"{order} of {n}), one-object T2V "
            f"{one:.3f} (of the {n} clips {listed(one_counts)}), loss with a wrong word "
            + ", ".join(f"{k} {v:+.1f} %" for k, v in gap.items())
            + "; two objects' words swapped " + ", ".join(f"{k} {v:+.2f} %" for k, v in pair.items()))
