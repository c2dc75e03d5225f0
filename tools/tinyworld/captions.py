"""Caption phrasings for tinyworld clips, and a parser that maps a caption back
to (colour, shape, motion, background) for the semantic checker."""
from __future__ import annotations

import re
from typing import Dict, List, Optional

import numpy as np

from .world import BACKGROUND_WORDS, COLOURS, MOTIONS, SHAPES, ClipSpec, ObjectSpec

# Templates over one object. Fields: {colour} {noun} {ing} {verb} {bg}.
# The first template with canonical words is the canonical caption.
TEMPLATES: List[str] = [
    "a {colour} {noun} {ing} on a {bg} background",
    "{colour} {noun} {verb}",
    "a {colour} {noun} {verb} on a {bg} background",
    "on a {bg} background, a {colour} {noun} {verb}",
    "{bg} background, {colour} {noun} {ing}",
    "a {noun}, {colour}, {ing} on a {bg} backdrop",
    "the {colour} {noun} {verb}",
]


def _fill(tpl: str, obj: ObjectSpec, bg_word: str, noun: str, ing: str, verb: str) -> str:
    return tpl.format(colour=obj.colour, noun=noun, ing=ing, verb=verb, bg=bg_word)


def canonical_caption(spec: ClipSpec) -> str:
    parts = []
    for obj in spec.objects:
        m = MOTIONS[obj.motion]
        parts.append(f"a {obj.colour} {SHAPES[obj.shape].nouns[0]} {m.ing[0]}")
    return " and ".join(parts) + f" on a {BACKGROUND_WORDS[spec.background][0]} background"


def all_captions(spec: ClipSpec) -> List[str]:
    """Every phrasing of a one-object spec (deterministic order, canonical first)."""
    if len(spec.objects) != 1:
        return [canonical_caption(spec)]
    obj = spec.objects[0]
    shape, motion = SHAPES[obj.shape], MOTIONS[obj.motion]
    out = [canonical_caption(spec)]
    for tpl in TEMPLATES:
        for bg_word in BACKGROUND_WORDS[spec.background]:
            for noun in shape.nouns:
                for ing, verb in zip(motion.ing, motion.verbs):
                    s = _fill(tpl, obj, bg_word, noun, ing, verb)
                    if s not in out:
                        out.append(s)
    return out


def sample_caption(rng: np.random.Generator, spec: ClipSpec, p_canonical: float = 0.25) -> str:
    """One caption: canonical with probability p_canonical, else a random phrasing."""
    if len(spec.objects) != 1 or rng.random() < p_canonical:
        return canonical_caption(spec)
    obj = spec.objects[0]
    shape, motion = SHAPES[obj.shape], MOTIONS[obj.motion]
    words = BACKGROUND_WORDS[spec.background]
    tpl = TEMPLATES[rng.integers(len(TEMPLATES))]
    k = rng.integers(len(motion.ing))
    return _fill(tpl, obj, words[rng.integers(len(words))], shape.nouns[rng.integers(len(shape.nouns))],
                 motion.ing[k], motion.verbs[k])


def all_caption_texts() -> List[str]:
    """Every caption of every one-object spec: the SentencePiece training corpus."""
    texts: List[str] = []
    for s in SHAPES:
        for c in COLOURS:
            for m in MOTIONS:
                for b in BACKGROUND_WORDS:
                    texts.extend(all_captions(ClipSpec.single(s, c, m, b)))
    return texts


def parse_caption(text: str) -> Dict[str, Optional[str]]:
    """Recover colour, shape, motion and background from a caption (None where absent)."""
    t = " " + re.sub(r"[^a-z ]+", " ", text.lower()) + " "
    t = re.sub(r"\s+", " ", t)
    background = None
    for name, words in BACKGROUND_WORDS.items():
        for w in sorted(words, key=len, reverse=True):
            pat = r" " + re.escape(w) + r" (background|backdrop|screen) "
            if re.search(pat, t):
                background = name
                t = re.sub(pat, " ", t)
                break
        if background:
            break
    colour = None
    best = len(t) + 1
    for c in COLOURS:
        i = t.find(" " + c + " ")
        if 0 <= i < best:
            colour, best = c, i
    shape = None
    best = len(t) + 1
    for name, sd in SHAPES.items():
        for n in sd.nouns:
            i = t.find(" " + n + " ")
            if 0 <= i < best:
                shape, best = name, i
    motion = None
    longest = 0
    for name, md in MOTIONS.items():
        for ph in md.ing + md.verbs:
            if " " + ph + " " in t and len(ph) > longest:
                motion, longest = name, len(ph)
    return {"colour": colour, "shape": shape, "motion": motion, "background": background}
