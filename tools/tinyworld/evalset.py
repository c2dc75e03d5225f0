"""The evaluation sets of the default model, shared by the trainer's own checks
(tools/train/evaluate.py, PyTorch) and the engine's (tools/score, numpy only):
held-out clips never seen in training, and prompt/seed pairs covering the
world's combinations evenly."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .world import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, Clip, ClipSpec, clip_for_index

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
