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

That head makes every token alike: each one names the whole caption. For the DiT's
cross-attention to look a word up by its object (a query from a red pixel finding the shape
said of the red object) the tokens of each object's phrase must differ by the object they
describe. So a second head (TrainConfig.text_parse_own, OwnHead) asks each token of an
object's phrase for that object alone: its colour, shape, motion and which object of the
caption it is (first or second). Tokens outside the objects' phrases (the background, "and",
</s>) are not asked.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..tinyworld.world import COLOURS, MOTIONS, SHAPES, ClipSpec
from .steps import SideHeads

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


# ---------------------------------------------------------------------------
# Each token's own object (TrainConfig.text_parse_own)
# ---------------------------------------------------------------------------

OWN_FIELDS = FIELDS + (("index", ["first", "second"]),)
_BG_FRONT = re.compile(r"^(on )?(an? )?([a-z]+ ){1,2}(background|backdrop|screen),? ")
_BG_BACK = re.compile(r" on (an? )?([a-z]+ ){1,2}(background|backdrop|screen)$")
_SEP = re.compile(r" and |, ")


def object_spans(text: str, n_objects: int) -> Optional[List[Tuple[int, int]]]:
    """Character spans of each object's phrase in the whitespace-normalised caption, objects
    in caption order (tinyworld's captions: an optional background phrase before or after,
    two objects parted by " and " or ", "); None when the caption does not split that way."""
    t = " ".join(text.split())
    lo, hi = 0, len(t)
    m = _BG_FRONT.match(t)
    if m:
        lo = m.end()
    m = _BG_BACK.search(t, lo)
    if m:
        hi = m.start()
    if n_objects == 1:
        return [(lo, hi)]
    seps = list(_SEP.finditer(t, lo, hi))
    if n_objects != 2 or len(seps) != 1:
        return None
    return [(lo, seps[0].start()), (seps[0].end(), hi)]


def token_objects(sp, text: str, n_objects: int, max_len: int) -> List[int]:
    """Per token of data.Tokenizer's encoding of text (max_len, </s> and padding included),
    the index of the object whose phrase the token's word lies in, or -1. SentencePiece does
    not join pieces across spaces, so the caption's pieces are its words' pieces in turn
    (checked: a caption where they are not gets -1 throughout)."""
    out = [-1] * max_len
    t = " ".join(text.split())
    spans = object_spans(t, n_objects) if t else None
    if spans is None:
        return out
    pieces, owner, pos = [], [], 0
    for word in t.split(" "):
        start = t.index(word, pos)
        pos = start + len(word)
        k = next((i for i, (a, b) in enumerate(spans) if a <= start < b), -1)
        p = sp.encode(word)
        pieces += p
        owner += [k] * len(p)
    if pieces != sp.encode(t):
        return out
    n = min(len(owner), max_len - 1)
    out[:n] = owner[:n]
    return out


def owner_table(sp, specs: Sequence[ClipSpec], texts: Sequence[str], max_len: int) -> torch.Tensor:
    """[B, max_len] token_objects of each caption: computed once a batch, for every loss
    that asks which object a token describes (own_targets, grounding.word_owners)."""
    return torch.tensor([token_objects(sp, text, len(spec.objects), max_len)
                         for spec, text in zip(specs, texts)], dtype=torch.long).reshape(len(texts), max_len)


def own_targets(specs: Sequence[ClipSpec], owners: torch.Tensor,
                by_ref: Optional[Sequence[bool]] = None) -> torch.Tensor:
    """[B, L, len(OWN_FIELDS)] class indices: for each token in an object's phrase (owners
    [B, L], owner_table), that object's colour, shape, motion and index; IGNORE elsewhere,
    and for the colour and shape of an object named by reference."""
    b, max_len = owners.shape
    out = torch.full((b, max_len, len(OWN_FIELDS)), IGNORE, dtype=torch.long)
    for i, spec in enumerate(specs):
        for j, k in enumerate(owners[i].tolist()):
            if k < 0:
                continue
            o = spec.objects[k]
            for f, (field, names) in enumerate(OWN_FIELDS):
                if field == "index":
                    out[i, j, f] = k
                elif not (by_ref is not None and by_ref[i] and field != "motion"):
                    out[i, j, f] = names.index(getattr(o, field))
    return out


class OwnHead(torch.nn.Module):
    """One linear map from a token's state to its own object's fields."""

    def __init__(self, dim: int):
        super().__init__()
        self.sizes: List[int] = [len(names) for _, names in OWN_FIELDS]
        self.proj = torch.nn.Linear(dim, sum(self.sizes))

    def loss(self, states: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over every (token, field) of tgt [B, L, FIELDS] not IGNORE."""
        logits = self.proj(states.float()).split(self.sizes, dim=-1)
        total, count = states.new_zeros(()), 0
        for f, lg in enumerate(logits):
            want = tgt[..., f]
            keep = want != IGNORE
            if keep.any():
                total = total + torch.nn.functional.cross_entropy(lg[keep], want[keep], reduction="sum")
                count += int(keep.sum())
        return total / max(count, 1)


# ---------------------------------------------------------------------------
# Both heads as a stage uses them
# ---------------------------------------------------------------------------

class Heads(SideHeads):
    """The parse heads a stage trains beside the text encoder (weights w_whole for ParseHead,
    w_own for OwnHead; a head with weight 0 is not built)."""

    def __init__(self, dim: int, w_whole: float, w_own: float, lr: float):
        super().__init__(lr)
        self.add("parse", ParseHead(dim), w_whole)
        self.add("parse_own", OwnHead(dim), w_own, "own")

    def losses(self, ctx: torch.Tensor, mask: torch.Tensor, specs: Sequence[ClipSpec], texts: Sequence[str],
               owners: torch.Tensor, by_ref: Optional[Sequence[bool]] = None) -> Dict[str, torch.Tensor]:
        """{name: loss} of each parse head for text states ctx [B, L, D] of texts (owners
        [B, L]: owner_table)."""
        parts = {}
        if "parse" in self:
            parts["parse"] = self["parse"].loss(ctx, mask, targets(specs, texts, by_ref))
        if "parse_own" in self:
            parts["parse_own"] = self["parse_own"].loss(ctx, own_targets(specs, owners, by_ref))
        return parts
