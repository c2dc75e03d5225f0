"""The evaluation sets of the default model, shared by the trainer's own checks
(tools/train/evaluate.py, PyTorch) and the engine's (tools/score, numpy only):
held-out clips never seen in training, and prompt/seed pairs covering the
world's combinations evenly."""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from .world import (BACKGROUNDS, COLOURS, MOTIONS, SHAPES, Clip, ClipSpec, clip_for_index, reference_image,
                    sample_spec, sample_spec2, varied_clip)

HOLDOUT_OFFSET = 1_000_003      # held-out clips use seed + this: never seen in training


def holdout_clip(seed: int, index: int, frames: int, size: int) -> Clip:
    return clip_for_index(seed + HOLDOUT_OFFSET, index, frames, size)


def prompt_seed_pairs(seed: int, n: int) -> List[Tuple[ClipSpec, int]]:
    """n (spec, seed) pairs drawn without repeats from every shape x colour x motion x
    background combination (deterministic in seed)."""
    rng = np.random.default_rng([seed, 40])
    combos = [(s, c, m, b) for s in SHAPES for c in COLOURS for m in MOTIONS for b in BACKGROUNDS]
    pick = rng.permutation(len(combos))[:n]
    return [(ClipSpec.single(*combos[i]), int(rng.integers(1 << 31))) for i in pick]


# How the reference images of the reference stage and of its evaluation are drawn: the
# object's half side as a fraction of the image, and its centre's offset in pixels.
REF_HALF = (0.2, 0.38)
REF_OFFSET = 4.0


def reference_images(rng: np.random.Generator, spec: ClipSpec, size: int = 64, half_range=REF_HALF,
                     offset: float = REF_OFFSET) -> List[np.ndarray]:
    """Each object's reference image: alone, still, on the reference canvas, at a drawn size
    and a small offset, in the clip's own shade (uint8 [size, size, 3])."""
    out = []
    for o in spec.objects:
        half = float(rng.uniform(*half_range))
        off = tuple(float(v) for v in rng.uniform(-offset, offset, 2))
        out.append(reference_image(o, None, size, half, off))
    return out


def r2v_cases(seed: int, n: int, size: int = 64):
    """n two-object reference cases (varied spec, its two reference images, a sampling seed),
    from a stream never used in training (seed + HOLDOUT_OFFSET)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed + HOLDOUT_OFFSET, 9, i])
        clip = varied_clip(rng, sample_spec2(rng), size=size)
        out.append((clip.spec, reference_images(rng, clip.spec, size), int(rng.integers(1 << 31))))
    return out


def varied_ti2v_cases(seed: int, n: int, frames: int = 17, size: int = 64):
    """n one-object clips of the varied world (shades and sizes off the palette's), for TI2V:
    (spec, clip, sampling seed), from a held-out stream."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed + HOLDOUT_OFFSET, 10, i])
        clip = varied_clip(rng, sample_spec(rng), frames, size)
        out.append((clip.spec, clip, int(rng.integers(1 << 31))))
    return out


# Effects (world.EFFECTS): the training clips of an effect LoRA (tools/train/stage_effect.py)
# are stream 30 of its seed; the photos it is scored on (tools.score --effects and the
# trainer's own check) come from held-out streams, first frames of clips of the effect
# in the varied world: the object in a user's shade and size, placed where the effect fits.
EFFECT_TRAIN_STREAM = 30


def effect_clip(seed: int, effect: str, index: int, frames: int = 17, size: int = 64,
                stream: int = EFFECT_TRAIN_STREAM, gray: Optional[Tuple[int, int]] = None) -> Clip:
    """The index-th clip of an effect's set (deterministic in seed, stream, index); with
    gray, the same draw on a gray background of a shade within that range."""
    from .world import EFFECTS, sample_effect_spec
    rng = np.random.default_rng([seed, stream, index])
    spec = sample_effect_spec(rng, effect)
    if gray is not None:
        spec = dataclasses.replace(spec, background="gray")
    return varied_clip(rng, spec, frames, size, scale_range=EFFECTS[effect].scale_range, bg_range=gray)


def effect_cases(seed: int, effect: str, n: int, frames: int = 17, size: int = 64, stream: int = 31):
    """n held-out photo/seed pairs of an effect: (spec, photo uint8 [size, size, 3], sampling
    seed), never trained on (seed + HOLDOUT_OFFSET). stream 31: tools.score; 33: the trainer's
    PyTorch check."""
    out = []
    for i in range(n):
        clip = effect_clip(seed + HOLDOUT_OFFSET, effect, i, frames, size, stream)
        sd = int(np.random.default_rng([seed + HOLDOUT_OFFSET, stream + 100, i]).integers(1 << 31))
        out.append((clip.spec, clip.frames[0], sd))
    return out
