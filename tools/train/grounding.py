"""Grounding: the DiT's cross-attention told where each object's words belong
(TrainConfig.grounding).

The parse heads (text_parse.py) make the text encoder's tokens carry which object they
describe, but the DiT still has to find that lookup from the flow loss alone: with its
attention spread evenly over both objects' words, each pixel reads the average of the two
descriptions, and the gradient that would sharpen the attention is proportional to what
the sharper read would change, which is nothing while the read is an average. Measured on
runs/v8 (evaluate.pair_gap): exchanging two objects' shapes or motions in a caption moved
the flow loss by less than 0.1 % up to step 8,000, with or without the parse heads.

tinyworld knows where every object is in every frame, so the lookup can be taught
directly, as TokenCompose (Wang et al., CVPR 2024) teaches Stable Diffusion with
segmentation masks: a video token inside object k's footprint should put its cross-attention
on the tokens of object k's phrase (text_parse.owner_table). The loss is the
footprint-weighted mean of -log(attention mass on those tokens), heads averaged, over every
block. It is training only: the DiT keeps Wan's structure and the engine runs it unchanged.

Measured (runs/v8, forked at step 7,581 with the loss at 0.1): the loss fell from 0.76 to
0.32 in 400 steps, yet exchanging the two objects' words still cost nothing. A token can
meet the loss by attending to the words its own pixels already show (a red pixel to "red"),
which says nothing about which shape or motion is red's. So ObjectHead asks for the lookup's
result instead: a linear map from the DiT's hidden state halfway up (after the first half of
its blocks) must name the colour, shape and motion of the object whose footprint the token
lies in. At high noise a token can only know its shape and motion by finding the caption's
words bound to what little it sees, which is the binding the flow loss rewards too weakly.

Neither moved the pair gap on runs/v8 (the object head's loss fell from 1.41 to 0.45 in 500
steps; at lower noise a token can name its object from the clip itself), and the reason was
upstream: that run's text encoder had never learnt which object a word belongs to
(TrainConfig.t5_init). Both wait to be measured on an encoder that has (runs/v9 uses the
grounding loss; docs/default-model.md).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Iterator, List, Sequence

import numpy as np
import torch

from ..tinyworld.world import COLOURS, MOTIONS, SHAPES, Clip
from . import ckpt
from .data import run_clip

MAX_OBJECTS = 2


def footprints(clip: Clip, latent_frames: int, cell: int) -> np.ndarray:
    """[MAX_OBJECTS, latent_frames, H/cell, W/cell] float32: the share of each latent cell
    that each object covers, averaged over the frames a latent frame encodes (Wan's causal
    VAE: latent frame 0 is frame 0, latent frame j frames 4j-3 to 4j). Objects never overlap
    (tinyworld places them apart), so no occlusion is needed. A missing object is zero."""
    t, size = clip.frames.shape[0], clip.frames.shape[1]
    if (t - 1) // 4 + 1 != latent_frames or size % cell:
        raise ValueError(f"a {t}-frame {size}px clip is not {latent_frames} latent frames of {cell}px cells")
    g = size // cell
    out = np.zeros((MAX_OBJECTS, latent_frames, g, g), np.float32)
    centres = np.arange(size) + 0.5
    for k, (obj, tr) in enumerate(zip(clip.spec.objects[:MAX_OBJECTS], clip.tracks)):
        cover = np.empty((t, size, size), np.float32)
        for f in range(t):
            X = centres[None, :] - tr.cx[f]
            Y = centres[:, None] - tr.cy[f]
            if tr.angle[f] != 0.0:
                c, s = math.cos(tr.angle[f]), math.sin(tr.angle[f])
                X, Y = c * X - s * Y, s * X + c * Y
            cover[f] = SHAPES[obj.shape].inside(X / tr.hx[f], Y / tr.hy[f])
        cells = cover.reshape(t, g, cell, g, cell).mean(axis=(2, 4))
        out[k, 0] = cells[0]
        for j in range(1, latent_frames):
            out[k, j] = cells[4 * j - 3: 4 * j + 1].mean(axis=0)
    return out


def build_footprints(cfg, n: int, path: str, log=print) -> torch.Tensor:
    """[n, MAX_OBJECTS, F, H, W] footprints of a run's first n clips (data.run_clip), cached
    at path (written whole, atomically; about 30 ms a clip)."""
    st = ckpt.load(path)
    if st is not None and st["footprints"].shape[0] == n:
        return st["footprints"]
    t0 = time.time()
    first = footprints(run_clip(cfg, 0), (cfg.frames - 1) // 4 + 1, 8)
    out = torch.empty((n,) + first.shape)
    out[0] = torch.from_numpy(first)
    for i in range(1, n):
        out[i] = torch.from_numpy(footprints(run_clip(cfg, i), first.shape[1], 8))
    ckpt.save({"footprints": out, "seconds": time.time() - t0}, path)
    log(f"grounding: footprints of {n} clips in {time.time() - t0:.0f}s")
    return out


@contextlib.contextmanager
def recording(dit) -> Iterator[List[torch.Tensor]]:
    """Within the block, every cross-attention of dit appends its head-averaged attention
    probabilities [B, Lq, Lk] to the yielded list."""
    kept: List[torch.Tensor] = []
    for blk in dit.blocks:
        blk.cross_attn.kept = kept
    try:
        yield kept
    finally:
        for blk in dit.blocks:
            blk.cross_attn.kept = None


def word_owners(owners: torch.Tensor) -> torch.Tensor:
    """[B, MAX_OBJECTS, L] 1 where a caption token belongs to that object's phrase, from
    owners [B, L] (text_parse.owner_table)."""
    out = torch.zeros(owners.shape[0], MAX_OBJECTS, owners.shape[1])
    for k in range(MAX_OBJECTS):
        out[:, k] = (owners == k).float()
    return out


def loss(maps: Sequence[torch.Tensor], feet: torch.Tensor, owners: torch.Tensor,
         eps: float = 1e-6) -> torch.Tensor:
    """Mean over blocks of the footprint-weighted -log(attention mass on the object's own
    words). maps: [B, Lq, Lk] per block (Lk >= owners' text_len; the rest is padding that no
    object owns); feet: [B, MAX_OBJECTS, Lq] footprints flattened as the DiT's tokens;
    owners: [B, MAX_OBJECTS, text_len]. Objects whose caption names no word (an empty
    caption) or that cover nothing count for nothing."""
    b, k, lq = feet.shape
    weight = feet * (owners.sum(-1, keepdim=True) > 0)                      # [B, K, Lq]
    total_w = weight.sum()
    if not maps or float(total_w) == 0.0:
        return feet.new_zeros(())
    total = feet.new_zeros(())
    for p in maps:
        own = owners.to(p.dtype)
        if p.shape[-1] > own.shape[-1]:
            own = torch.nn.functional.pad(own, (0, p.shape[-1] - own.shape[-1]))
        mass = torch.einsum("bql,bkl->bkq", p.float(), own.float())           # [B, K, Lq]
        total = total - (weight * torch.log(mass + eps)).sum() / total_w
    return total / len(maps)


def flat_feet(feet: torch.Tensor, patch) -> torch.Tensor:
    """Footprints [B, K, F, H, W] at latent resolution as the DiT's token order [B, K, L]
    (each token the mean over its patch)."""
    pt, ph, pw = patch
    if (pt, ph, pw) != (1, 1, 1):
        b, k, f, h, w = feet.shape
        feet = feet.reshape(b * k, 1, f, h, w)
        feet = torch.nn.functional.avg_pool3d(feet, (pt, ph, pw)).reshape(b, k, f // pt, h // ph, w // pw)
    return feet.flatten(2)



@contextlib.contextmanager
def hidden_after(dit, block: int) -> Iterator[List[torch.Tensor]]:
    """Within the block, the output [B, L, dim] of dit.blocks[block] is appended to the
    yielded list at every forward."""
    kept: List[torch.Tensor] = []
    handle = dit.blocks[block].register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        yield kept
    finally:
        handle.remove()


OBJECT_FIELDS = (("colour", list(COLOURS)), ("shape", list(SHAPES)), ("motion", list(MOTIONS)))


class ObjectHead(torch.nn.Module):
    """A linear map from a DiT token's hidden state to the colour, shape and motion of the
    object it lies in (TrainConfig.object_head; training only, never exported)."""

    def __init__(self, dim: int):
        super().__init__()
        self.sizes = [len(names) for _, names in OBJECT_FIELDS]
        self.proj = torch.nn.Linear(dim, sum(self.sizes))

    @staticmethod
    def block(num_layers: int) -> int:
        """The block whose output it reads: halfway up."""
        return max(num_layers // 2 - 1, 0)

    def loss(self, hidden: torch.Tensor, feet: torch.Tensor, specs: Sequence, named: torch.Tensor) -> torch.Tensor:
        """Footprint-weighted cross-entropy over every token and object. hidden [B, L, dim];
        feet [B, MAX_OBJECTS, L] (flat_feet); named [B] bool: the item's caption names its
        objects (an empty one does not, and the token could not know its motion)."""
        logits = self.proj(hidden.float()).split(self.sizes, dim=-1)         # each [B, L, n]
        total, weight = hidden.new_zeros((), dtype=torch.float32), 0.0
        for i, spec in enumerate(specs):
            if not bool(named[i]):
                continue
            for k, obj in enumerate(spec.objects[:MAX_OBJECTS]):
                w = feet[i, k]                                                # [L]
                if float(w.sum()) == 0.0:
                    continue
                for lg, (field, names) in zip(logits, OBJECT_FIELDS):
                    want = torch.full((lg.shape[1],), names.index(getattr(obj, field)), dtype=torch.long)
                    ce = torch.nn.functional.cross_entropy(lg[i].float(), want, reduction="none")
                    total = total + (w * ce).sum()
                weight += float(w.sum()) * len(OBJECT_FIELDS)
        return total / weight if weight else total
