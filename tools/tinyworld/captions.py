"""Caption phrasings for tinyworld clips, and a parser that maps a caption back
to (colour, shape, motion, background) for the semantic checker."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

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


def all_caption_texts(two_objects: bool = False, n_two: int = 20000) -> List[str]:
    """Every caption of every one-object spec: the SentencePiece training corpus. With
    two_objects, also n_two captions of two-object specs drawn from every two-object form
    (explicit and by reference; deterministic)."""
    texts: List[str] = []
    for s in SHAPES:
        for c in COLOURS:
            for m in MOTIONS:
                for b in BACKGROUND_WORDS:
                    texts.extend(all_captions(ClipSpec.single(s, c, m, b)))
    if two_objects:
        from .world import sample_spec2
        rng = np.random.default_rng(12345)
        for _ in range(n_two):
            spec = sample_spec2(rng)
            texts.append(sample_caption2(rng, spec) if rng.random() < 0.5 else ref_caption(rng, spec))
        for c in COLOURS:       # one object named by reference
            for m in MOTIONS:
                for b in BACKGROUND_WORDS:
                    spec = ClipSpec.single("circle", c, m, b)
                    texts.extend(ref_caption(np.random.default_rng([k, 3]), spec) for k in range(6))
    return texts


# ---------------------------------------------------------------------------
# Two objects, and objects named by reference
# ---------------------------------------------------------------------------

# Two objects named by colour and shape. Fields {a} {b}: each object's "colour noun",
# {ing_a}/{verb_a} its motion.
TEMPLATES2: List[str] = [
    "a {a} {ing_a} and a {b} {ing_b} on a {bg} background",
    "a {a} {verb_a} and a {b} {verb_b} on a {bg} background",
    "on a {bg} background, a {a} {verb_a} and a {b} {verb_b}",
    "{bg} background, {a} {ing_a}, {b} {ing_b}",
    "the {a} {verb_a} and the {b} {verb_b}",
]

# Objects named by their reference image (recipes/r2v.lua): the first reference is
# "the first object", the second "the second object" (and synonyms); with one reference,
# "the object".
REF_NAMES: List[Tuple[str, ...]] = [
    ("the first object", "object one", "the first one", "the first shape"),
    ("the second object", "object two", "the second one", "the second shape"),
]
REF_NAMES_ONE: Tuple[str, ...] = ("the object", "the shape", "the first object")
TEMPLATES_REF: List[str] = [
    "{a} {ing_a} and {b} {ing_b} on a {bg} background",
    "{a} {verb_a} and {b} {verb_b} on a {bg} background",
    "on a {bg} background, {a} {verb_a} and {b} {verb_b}",
    "{a} {verb_a} and {b} {verb_b}",
]
TEMPLATES_REF_ONE: List[str] = [
    "{a} {ing_a} on a {bg} background",
    "{a} {verb_a} on a {bg} background",
    "{a} {verb_a}",
]


def _motion_words(rng, obj: ObjectSpec) -> Tuple[str, str]:
    m = MOTIONS[obj.motion]
    k = rng.integers(len(m.ing))
    return m.ing[k], m.verbs[k]


def sample_caption2(rng: np.random.Generator, spec: ClipSpec) -> str:
    """A caption of a two-object spec naming both objects by colour and shape."""
    if len(spec.objects) != 2:
        raise ValueError("sample_caption2 needs a two-object spec")
    a, b = spec.objects
    ia, va = _motion_words(rng, a)
    ib, vb = _motion_words(rng, b)
    words = BACKGROUND_WORDS[spec.background]

    def name(o):
        nouns = SHAPES[o.shape].nouns
        return f"{o.colour} {nouns[rng.integers(len(nouns))]}"

    tpl = TEMPLATES2[rng.integers(len(TEMPLATES2))]
    return tpl.format(a=name(a), b=name(b), ing_a=ia, verb_a=va, ing_b=ib, verb_b=vb,
                      bg=words[rng.integers(len(words))])


def ref_caption(rng: Optional[np.random.Generator], spec: ClipSpec) -> str:
    """A caption naming the spec's objects by reference only (the first, the second, in the
    order of spec.objects): their colours and shapes must come from the reference images.
    With rng None, the canonical form."""
    objs = spec.objects
    bg = BACKGROUND_WORDS[spec.background][0]
    pick = (lambda seq: seq[0]) if rng is None else (lambda seq: seq[rng.integers(len(seq))])
    words = [(MOTIONS[o.motion].ing[0], MOTIONS[o.motion].verbs[0]) if rng is None else _motion_words(rng, o)
             for o in objs]
    if rng is not None:
        bg = pick(BACKGROUND_WORDS[spec.background])
    if len(objs) == 1:
        return pick(TEMPLATES_REF_ONE).format(a=pick(REF_NAMES_ONE), ing_a=words[0][0], verb_a=words[0][1], bg=bg)
    if len(objs) != 2:
        raise ValueError("reference captions name one or two objects")
    return pick(TEMPLATES_REF).format(a=pick(REF_NAMES[0]), b=pick(REF_NAMES[1]), ing_a=words[0][0],
                                      verb_a=words[0][1], ing_b=words[1][0], verb_b=words[1][1], bg=bg)


def parse_objects(text: str) -> List[Dict[str, Optional[str]]]:
    """Per object named in a caption (split at ' and ' or ', '), its colour, shape and motion
    (None where the caption does not say: an object named by reference has no colour or
    shape), each with the caption's background."""
    bg = parse_caption(text)["background"]
    t = re.sub(r"\s+", " ", text.lower())
    t = re.sub(r"^(on )?(an? )?([a-z]+ ){1,2}(background|backdrop|screen),? ", "", t)
    t = re.sub(r" on (an? )?([a-z]+ ){1,2}(background|backdrop|screen)$", "", t)
    parts = [p for p in re.split(r" and |, ", t) if p.strip()]
    out = []
    for p in parts:
        d = parse_caption(p)
        d["background"] = bg
        out.append(d)
    return out


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


# ---------------------------------------------------------------------------
# Effects (world.EFFECTS): captions around a trigger word
# ---------------------------------------------------------------------------

# An effect template's prompt is "{object}, <trigger> <phrase>" ("a red square, sqsh squish
# effect"), with the object's words optional: the photo (the first frame) shows the object,
# so the effect LoRAs are trained on the object named by colour and shape, with or without
# its background, by a generic word, or not at all.
EFFECT_GENERIC = ("a shape", "the shape", "an object", "the object")


def effect_prompt(spec: ClipSpec, background: bool = False) -> str:
    """The effect templates' prompt for a one-object effect spec: "a red square, sqsh squish
    effect" (with background: "a red square on a black background, sqsh squish effect")."""
    from .world import EFFECTS
    obj = spec.objects[0]
    e = EFFECTS[obj.motion]
    desc = f"a {obj.colour} {SHAPES[obj.shape].nouns[0]}"
    if background:
        desc += f" on a {BACKGROUND_WORDS[spec.background][0]} background"
    return f"{desc}, {e.trigger} {e.phrase}"


def effect_caption(rng: np.random.Generator, spec: ClipSpec) -> str:
    """A training caption of a one-object effect spec: the trigger and the effect's phrase
    (or its -ing words), after the object named in one of several ways or not at all."""
    from .world import EFFECTS
    obj = spec.objects[0]
    e = EFFECTS[obj.motion]
    nouns = SHAPES[obj.shape].nouns
    r = rng.random()
    if r < 0.45:
        desc = f"a {obj.colour} {nouns[rng.integers(len(nouns))]}"
    elif r < 0.65:
        words = BACKGROUND_WORDS[spec.background]
        desc = (f"a {obj.colour} {nouns[rng.integers(len(nouns))]} on a "
                f"{words[rng.integers(len(words))]} background")
    elif r < 0.85:
        desc = EFFECT_GENERIC[rng.integers(len(EFFECT_GENERIC))]
    else:
        desc = ""
    if rng.random() < 0.75:
        tail = f"{e.trigger} {e.phrase}"
    else:
        tail = f"{e.trigger} {e.motion.ing[rng.integers(len(e.motion.ing))]}"
    return f"{desc}, {tail}" if desc else tail
