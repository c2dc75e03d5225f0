"""A text encoder that hands the DiT bound descriptions (TrainConfig.text_parse).

Wan's umT5 comes to the DiT pretrained on language: each token's state already knows the
words around it. Our text encoder starts from nothing and learns only from the DiT's
gradient, and measured on runs/v8 (evaluate.pair_gap) it stays a bag of words: at DiT step
6,000, exchanging two objects' colours, shapes or motions in a caption, or naming them in
the other order, moved the flow loss by 0.01 % while one wrong word on one object moved it
by 13-40 %. The DiT then cannot tell which object a word belongs to.

So, during training only, a linear head reads every real token's state and must name both
objects of the caption in order (colour, shape and motion of the first, then of the second,
or "none" where the caption has one object): every token then carries the whole caption,
bound, and a DiT token that knows its own colour or side can read its shape and motion from
any of them. The head is not part of the pack; the text encoder keeps Wan's structure, so
the engine runs it unchanged.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..tinyworld.world import COLOURS, MOTIONS, SHAPES, ClipSpec

SLOTS = 2
FIELDS = (("colour", list(COLOURS)), ("shape", list(SHAPES)), ("motion", list(MOTIONS)))
IGNORE = -100


def targets(specs: Sequence[ClipSpec], texts: Sequence[str],
            by_ref: Optional[Sequence[bool]] = None) -> torch.Tensor:
    """[B, SLOTS, len(FIELDS)] class indices of what each caption says, objects in the
    order the caption names them (spec order: tinyworld's captions keep it). A slot past
    the caption's objects is "none" (the last class); an empty caption says nothing
    (IGNORE); a caption by reference (by_ref) names motions only, so its colours and
    shapes are IGNORE."""
    out = torch.full((len(specs), SLOTS, len(FIELDS)), IGNORE, dtype=torch.long)
    for i, (spec, text) in enumerate(zip(specs, texts)):
        if not text:
            continue
        for s in range(SLOTS):
            for f, (field, names) in enumerate(FIELDS):
                if s >= len(spec.objects):
                    out[i, s, f] = len(names)
                elif not (by_ref is not None and by_ref[i] and field != "motion"):
                    out[i, s, f] = names.index(getattr(spec.objects[s], field))
    return out


class ParseHead(torch.nn.Module):
    """One linear map from a token's state to every slot's and field's logits."""

    def __init__(self, dim: int):
        super().__init__()
        self.sizes: List[int] = [len(names) + 1 for _, names in FIELDS] * SLOTS
        self.proj = torch.nn.Linear(dim, sum(self.sizes))

    def loss(self, states: torch.Tensor, mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the real tokens (mask [B, L]) of every caption that says
        something, each token asked for the whole tgt [B, SLOTS, FIELDS]."""
        logits = self.proj(states.float()).split(self.sizes, dim=-1)
        flat = tgt.flatten(1)                                       # [B, SLOTS * FIELDS]
        real = mask.bool()
        total, count = states.new_zeros(()), 0
        for k, lg in enumerate(logits):
            want = flat[:, k, None].expand(-1, lg.shape[1])[real]   # every token, its caption's class
            keep = want != IGNORE
            if keep.any():
                total = total + torch.nn.functional.cross_entropy(lg[real][keep], want[keep], reduction="sum")
                count += int(keep.sum())
        return total / max(count, 1)
