"""tinyworld: a seeded procedural video world for training the default model.

A clip is a plain background with one (later: several) objects, each a shape of
a colour doing one motion. Everything is numpy and deterministic from the
numpy Generator passed in.

Extension points (used by later LoRA training sets):
- ``register_shape``: a new shape is a function ``inside(x, y) -> bool array``
  in the object's local frame, where the object fills the box [-1, 1]^2.
- ``register_motion``: a new motion samples its parameters once per clip and
  maps the clip time u in [0, 1] to a ``Pose`` (offset, per-axis scale,
  rotation). ``register_effect`` adds one to ``EFFECTS`` instead: the motions the
  effect LoRAs teach (squish, spin, bounce), which the base model's data never draws.
- ``ClipSpec.objects`` is a tuple: a second object is just a second entry.
- ``reference_image`` renders an object alone, for reference-image sets.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# ---------------------------------------------------------------------------
# Palettes
# ---------------------------------------------------------------------------

# Object colours, RGB 0..255. Chosen to stay far (>= 110 in RGB distance)
# from every background and from each other.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 220, 40),
    "white": (240, 240, 240),
    "purple": (160, 60, 210),
}

BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
    "dark blue": (20, 25, 80),
}

# Words a caption may use for a background (first one is canonical).
BACKGROUND_WORDS: Dict[str, List[str]] = {
    "black": ["black"],
    "gray": ["gray", "grey"],
    "dark blue": ["dark blue", "navy"],
}

# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShapeDef:
    name: str
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray]
    nouns: Tuple[str, ...]          # first is canonical ("circle"), others synonyms
    fill_ratio: float               # area / bounding-box area, for the checker


SHAPES: Dict[str, ShapeDef] = {}


def register_shape(shape: ShapeDef) -> None:
    SHAPES[shape.name] = shape


def _inside_circle(x, y):
    return x * x + y * y <= 1.0


def _inside_square(x, y):
    return np.maximum(np.abs(x), np.abs(y)) <= 1.0


def _inside_triangle(x, y):
    # apex at (0, -1) (top), base from (-1, 1) to (1, 1); y grows downwards.
    return (y <= 1.0) & (np.abs(x) * 2.0 <= (y + 1.0))


register_shape(ShapeDef("circle", _inside_circle, ("circle", "ball", "disc", "dot"), math.pi / 4))
register_shape(ShapeDef("square", _inside_square, ("square", "box", "block"), 1.0))
register_shape(ShapeDef("triangle", _inside_triangle, ("triangle",), 0.5))

# ---------------------------------------------------------------------------
# Motions
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pose:
    """Object pose relative to its start: offset in pixels, scale, rotation."""
    dx: float = 0.0
    dy: float = 0.0
    sx: float = 1.0
    sy: float = 1.0
    angle: float = 0.0   # radians, counter-clockwise on screen


@dataclasses.dataclass(frozen=True)
class MotionDef:
    name: str
    # sample_params(rng, size_px) -> dict of per-clip parameters
    sample_params: Callable[[np.random.Generator, int], dict]
    # pose(u, params) -> Pose, u in [0, 1] over the clip
    pose: Callable[[float, dict], Pose]
    # (start half-size range, as fractions of the frame side)
    size_range: Tuple[float, float]
    ing: Tuple[str, ...]             # "moving right", ... (first is canonical)
    verbs: Tuple[str, ...]           # "slides to the right", ...


MOTIONS: Dict[str, MotionDef] = {}


def register_motion(motion: MotionDef) -> None:
    MOTIONS[motion.name] = motion


# Object sizes. The VAE codes 8x8-pixel cells; measured on the first default model, a
# square of 11-14 px (1.5 cells) came back from its VAE round trip filling 0.82-0.87 of
# its box (rounded corners, read as a circle), one of 18-24 px 0.91-0.93. So every object
# is about 2 cells or more for most of its clip: moving and still ones 19-27 px across,
# grow and shrink spanning 14-33 px, travel 16-20 px.


def _move(dx_sign: int, dy_sign: int):
    def sample(rng, size):
        return {"dist": float(rng.uniform(0.25, 0.32)) * size}

    def pose(u, p):
        return Pose(dx=dx_sign * p["dist"] * u, dy=dy_sign * p["dist"] * u)

    return sample, pose


def _scale(grow: bool):
    def sample(rng, size):
        return {"factor": float(rng.uniform(1.7, 2.0))}

    def pose(u, p):
        k = p["factor"] ** u if grow else p["factor"] ** (-u)
        return Pose(sx=k, sy=k)

    return sample, pose


for _name, _sx, _sy, _ing, _verbs in [
    ("right", 1, 0, ("moving right", "moving to the right", "sliding right"),
     ("slides to the right", "moves right", "drifts to the right")),
    ("left", -1, 0, ("moving left", "moving to the left", "sliding left"),
     ("slides to the left", "moves left", "drifts to the left")),
    ("up", 0, -1, ("moving up", "moving upwards", "rising"),
     ("moves up", "rises", "drifts upwards")),
    ("down", 0, 1, ("moving down", "moving downwards", "falling"),
     ("moves down", "falls", "drifts downwards")),
]:
    _s, _p = _move(_sx, _sy)
    register_motion(MotionDef(_name, _s, _p, (0.15, 0.19), _ing, _verbs))

_s, _p = _scale(True)
register_motion(MotionDef("grow", _s, _p, (0.11, 0.13), ("growing", "getting bigger", "expanding"),
                          ("grows", "gets bigger", "expands")))
_s, _p = _scale(False)
register_motion(MotionDef("shrink", _s, _p, (0.22, 0.26), ("shrinking", "getting smaller", "contracting"),
                          ("shrinks", "gets smaller", "contracts")))
register_motion(MotionDef("still", lambda rng, size: {}, lambda u, p: Pose(), (0.15, 0.21),
                          ("staying still", "standing still", "not moving"),
                          ("stays still", "does not move", "rests in place")))

# ---------------------------------------------------------------------------
# Effects: motions the base model never sees
# ---------------------------------------------------------------------------

# The effect LoRAs (tools/train/stage_effect.py) each teach the default model one motion it
# does not know. They live in their own registry, not in MOTIONS, so that nothing that draws
# the base model's data (sample_spec, sample_spec2, all_caption_texts, the evaluation sets)
# ever draws them; a spec names one like a motion (ObjectSpec.motion) and renders the same way.


@dataclasses.dataclass(frozen=True)
class EffectDef:
    motion: MotionDef
    trigger: str                      # the rare word the LoRA ties to the effect
    shapes: Tuple[str, ...]           # the shapes it shows on (spin: not the circle)
    scale_range: Tuple[float, float]  # vary_spec's size factor for its clips
    phrase: str                       # what the prompt says after the trigger ("squish effect")

    @property
    def name(self) -> str:
        return self.motion.name


EFFECTS: Dict[str, EffectDef] = {}


def register_effect(effect: EffectDef) -> None:
    if effect.name in MOTIONS:
        raise ValueError(f"{effect.name!r} is a motion of the base world")
    EFFECTS[effect.name] = effect


def motion_def(name: str) -> MotionDef:
    """The motion or effect of that name."""
    if name in MOTIONS:
        return MOTIONS[name]
    return EFFECTS[name].motion


def _smooth(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _squish_params(rng, size):
    sy = float(rng.uniform(0.5, 0.6))
    return {"sy": sy, "sx": sy ** -0.8, "ramp": float(rng.uniform(0.65, 0.8))}


def _squish_pose(u, p):
    # flattens vertically and widens, its bottom edge kept (pressed against the floor),
    # over the first `ramp` of the clip, then stays flat
    k = _smooth(u / p["ramp"])
    sy = 1.0 + (p["sy"] - 1.0) * k
    sx = 1.0 + (p["sx"] - 1.0) * k
    return Pose(dy=p.get("half", 0.0) * (1.0 - sy), sx=sx, sy=sy)


def _spin_params(rng, size):
    return {"turns": float(rng.uniform(0.22, 0.28))}


def _spin_pose(u, p):
    # about a quarter turn, counter-clockwise on screen, at a constant speed, in place. The
    # base VAE was trained on no rotation: it decodes the frames between its latent frames'
    # (every 4th) as blobs when the turn is faster (measured: half a turn over the clip).
    return Pose(angle=2.0 * math.pi * p["turns"] * u)


def _bounce_params(rng, size):
    return {"drop": float(rng.uniform(0.22, 0.27)) * size, "hit": float(rng.uniform(0.45, 0.55)),
            "rebound": float(rng.uniform(0.6, 0.8))}


def _bounce_pose(u, p):
    # falls from rest, accelerating, hits the floor at u = hit, and rises decelerating to
    # `rebound` of the drop height by the end
    if u <= p["hit"]:
        return Pose(dy=p["drop"] * (u / p["hit"]) ** 1.5)
    tau = (u - p["hit"]) / (1.0 - p["hit"])
    return Pose(dy=p["drop"] * (1.0 - p["rebound"] * (1.0 - (1.0 - tau) ** 1.5)))


register_effect(EffectDef(
    MotionDef("squish", _squish_params, _squish_pose, (0.15, 0.18), ("squishing flat", "getting squished"),
              ("squishes flat", "gets squished")),
    "sqsh", ("circle", "square", "triangle"), (0.8, 1.2), "squish effect"))
register_effect(EffectDef(
    MotionDef("spin", _spin_params, _spin_pose, (0.19, 0.22), ("spinning", "turning around"),
              ("spins", "turns around")),
    "spnz", ("square", "triangle"), (0.8, 1.2), "spin effect"))
register_effect(EffectDef(
    MotionDef("bounce", _bounce_params, _bounce_pose, (0.14, 0.17), ("bouncing", "bouncing on the floor"),
              ("bounces", "bounces on the floor")),
    "bncz", ("circle", "square", "triangle"), (0.8, 1.2), "bounce effect"))


def sample_effect_spec(rng: np.random.Generator, effect: str) -> ClipSpec:
    """A random one-object spec of the effect: one of its shapes, any colour and background."""
    e = EFFECTS[effect]
    colours, bgs = list(COLOURS), list(BACKGROUNDS)
    return ClipSpec.single(e.shapes[rng.integers(len(e.shapes))], colours[rng.integers(len(colours))], effect,
                           bgs[rng.integers(len(bgs))])


# ---------------------------------------------------------------------------
# Specs and clips
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    motion: str
    # Variations (vary_spec): the colour drawn off the palette's exact value, and a factor
    # on the motion's size range. None / 1.0 is the original world.
    rgb: Optional[Tuple[int, int, int]] = None
    scale: float = 1.0

    def validate(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}")
        if self.motion not in MOTIONS and self.motion not in EFFECTS:
            raise ValueError(f"unknown motion {self.motion!r}")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What a clip shows. ``objects`` is drawn in order (later on top)."""
    objects: Tuple[ObjectSpec, ...]
    background: str
    bg_rgb: Optional[Tuple[int, int, int]] = None   # the background shade, when varied

    @staticmethod
    def single(shape: str, colour: str, motion: str, background: str) -> "ClipSpec":
        return ClipSpec((ObjectSpec(shape, colour, motion),), background)

    # convenience accessors for the one-object world
    @property
    def shape(self) -> str:
        return self.objects[0].shape

    @property
    def colour(self) -> str:
        return self.objects[0].colour

    @property
    def motion(self) -> str:
        return self.objects[0].motion

    def validate(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")
        if not self.objects:
            raise ValueError("a clip needs at least one object")
        for o in self.objects:
            o.validate()


@dataclasses.dataclass
class ObjectTrack:
    """Ground truth of one object: per frame centre (x, y) in pixels, half sizes, angle."""
    cx: np.ndarray
    cy: np.ndarray
    hx: np.ndarray
    hy: np.ndarray
    angle: np.ndarray


@dataclasses.dataclass
class Clip:
    frames: np.ndarray                 # uint8 [T, H, W, 3]
    spec: ClipSpec
    tracks: List[ObjectTrack]

    def as_float(self) -> np.ndarray:
        """Frames as float32 [3, T, H, W] in [-1, 1] (the VAE's input convention)."""
        x = self.frames.astype(np.float32) / 127.5 - 1.0
        return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def sample_spec(rng: np.random.Generator,
                shapes: Optional[Sequence[str]] = None,
                colours: Optional[Sequence[str]] = None,
                motions: Optional[Sequence[str]] = None,
                backgrounds: Optional[Sequence[str]] = None) -> ClipSpec:
    """A uniformly random one-object spec (optionally from restricted lists)."""
    shapes = list(shapes or SHAPES)
    colours = list(colours or COLOURS)
    motions = list(motions or MOTIONS)
    backgrounds = list(backgrounds or BACKGROUNDS)
    return ClipSpec.single(shapes[rng.integers(len(shapes))],
                           colours[rng.integers(len(colours))],
                           motions[rng.integers(len(motions))],
                           backgrounds[rng.integers(len(backgrounds))])


def _pose_extent(motion: MotionDef, params: dict, half: float, n: int = 33):
    """Min/max of offsets and the largest half extent over the clip."""
    dxs, dys, ext = [], [], 0.0
    for u in np.linspace(0.0, 1.0, n):
        p = motion.pose(float(u), params)
        dxs.append(p.dx)
        dys.append(p.dy)
        # a rotated box [-1,1]^2 needs sqrt(2) margin; un-rotated needs 1
        r = math.sqrt(2.0) if abs(p.angle) > 1e-9 else 1.0
        ext = max(ext, half * max(p.sx, p.sy) * r)
    return min(dxs), max(dxs), min(dys), max(dys), ext


def _sample_track(rng, obj: ObjectSpec, frames: int, size: int) -> ObjectTrack:
    motion = motion_def(obj.motion)
    params = motion.sample_params(rng, size)
    half = float(rng.uniform(*motion.size_range)) * size * obj.scale
    params = dict(params, half=half)    # an effect may act relative to the object's size
    dx0, dx1, dy0, dy1, ext = _pose_extent(motion, params, half)
    margin = 1.0
    lo_x, hi_x = ext + margin - dx0, size - ext - margin - dx1
    lo_y, hi_y = ext + margin - dy0, size - ext - margin - dy1
    if lo_x > hi_x or lo_y > hi_y:
        raise ValueError(f"motion {obj.motion!r} does not fit a {size}px frame")
    x0 = float(rng.uniform(lo_x, hi_x))
    y0 = float(rng.uniform(lo_y, hi_y))
    cx, cy, hx, hy, ang = (np.zeros(frames) for _ in range(5))
    for i in range(frames):
        u = i / (frames - 1) if frames > 1 else 0.0
        p = motion.pose(u, params)
        cx[i], cy[i] = x0 + p.dx, y0 + p.dy
        hx[i], hy[i] = half * p.sx, half * p.sy
        ang[i] = p.angle
    return ObjectTrack(cx, cy, hx, hy, ang)


def _coverage(shape: ShapeDef, cx, cy, hx, hy, angle, size: int, ss: int) -> np.ndarray:
    """Anti-aliased coverage [size, size] by ss x ss supersampling."""
    offs = (np.arange(ss) + 0.5) / ss
    coords = (np.arange(size)[:, None] + offs[None, :]).reshape(-1)  # pixel centres at +0.5
    X = coords[None, :] - cx
    Y = coords[:, None] - cy
    if angle != 0.0:
        c, s = math.cos(angle), math.sin(angle)
        # screen y is down; rotate by -angle into the object frame
        X, Y = c * X - s * Y, s * X + c * Y
    inside = shape.inside(X / hx, Y / hy)
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render(spec: ClipSpec, tracks: Sequence[ObjectTrack], size: int, ss: int = 4) -> np.ndarray:
    frames = len(tracks[0].cx)
    bg = np.array(spec.bg_rgb or BACKGROUNDS[spec.background], np.float64)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        img = np.broadcast_to(bg, (size, size, 3)).copy()
        for obj, tr in zip(spec.objects, tracks):
            a = _coverage(SHAPES[obj.shape], tr.cx[t], tr.cy[t], tr.hx[t], tr.hy[t],
                          tr.angle[t], size, ss)[..., None]
            img = img * (1.0 - a) + np.array(obj.rgb or COLOURS[obj.colour], np.float64) * a
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def sample_clip(rng: np.random.Generator, spec: ClipSpec, frames: int = 17, size: int = 64) -> Clip:
    """Render one clip of ``spec``: positions, sizes and speeds drawn from ``rng``."""
    spec.validate()
    if frames < 1 or (frames - 1) % 4 != 0:
        raise ValueError("frames must be 4k+1 (the VAE's causal chunking)")
    if size < 16:
        raise ValueError("size must be at least 16")
    for _ in range(PLACEMENT_TRIES):
        tracks = [_sample_track(rng, o, frames, size) for o in spec.objects]
        if not _tracks_overlap(tracks) and _in_reading_order(tracks):
            return Clip(render(spec, tracks, size), spec, tracks)
    raise ValueError(f"no placement keeps the {len(spec.objects)} objects apart in a {size}px frame")


# Objects of one clip never overlap (a hidden object could not be checked, nor learnt from):
# positions are redrawn up to this many times.
PLACEMENT_TRIES = 200
PLACEMENT_GAP = 4.0     # pixels between the objects' boxes (the checker tells them apart)
# Two objects are in reading order: the first of spec.objects (the one a caption names
# first, the first reference) has its centre, averaged over the clip, at least this many
# pixels left of the second's. A caption's order then says where each object is, so the
# DiT can tell its two objects apart by place instead of having to break their symmetry
# itself (issue 17: the varied base drew two objects' colours but bound neither shape nor
# motion to its object). The clip's mean, not frame 0: a first object moving left and a
# second moving right cannot start in order once their travel passes a third of the frame.
# One latent pixel (8 px at 64 px) keeps the order visible to the DiT.
READING_GAP = 8.0


def _in_reading_order(tracks: Sequence[ObjectTrack]) -> bool:
    return len(tracks) < 2 or float(np.mean(tracks[1].cx) - np.mean(tracks[0].cx)) >= READING_GAP


def _tracks_overlap(tracks: Sequence[ObjectTrack]) -> bool:
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            a, b = tracks[i], tracks[j]
            # boxes of rotated objects need the sqrt(2) margin
            ra = np.where(np.abs(a.angle) > 1e-9, math.sqrt(2.0), 1.0)
            rb = np.where(np.abs(b.angle) > 1e-9, math.sqrt(2.0), 1.0)
            ex = np.maximum(a.hx, a.hy) * ra + np.maximum(b.hx, b.hy) * rb + PLACEMENT_GAP
            if np.any((np.abs(a.cx - b.cx) < ex) & (np.abs(a.cy - b.cy) < ex)):
                return True
    return False


def clip_for_index(seed: int, index: int, frames: int = 17, size: int = 64, **spec_kw) -> Clip:
    """The index-th clip of the data set with this seed (random access, deterministic)."""
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(rng, **spec_kw)
    return sample_clip(rng, spec, frames, size)


def reference_image(obj: ObjectSpec, background: Optional[str] = None, size: int = 64, half: float = 0.3,
                    offset: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The object alone and still, as uint8 [size, size, 3]: a reference image. With no
    background, on the reference canvas (reference_canvas): white, as users pad their
    references, black for a white object. half: half the object's side, as a fraction of
    the image; offset: its centre's shift from the middle, in pixels."""
    h = half * size
    tr = ObjectTrack(np.array([size / 2 + offset[0]]), np.array([size / 2 + offset[1]]), np.array([h]),
                     np.array([h]), np.array([0.0]))
    spec = ClipSpec((ObjectSpec(obj.shape, obj.colour, "still", rgb=obj.rgb),), background or "black",
                    bg_rgb=None if background else reference_canvas(obj))
    return render(spec, [tr], size)[0]


def reference_canvas(obj: ObjectSpec) -> Tuple[int, int, int]:
    """The canvas of a reference image: white (what every reference-to-video tool pads
    with), except for a white object, which would not show on it: black."""
    return (0, 0, 0) if obj.colour == "white" else (255, 255, 255)


# ---------------------------------------------------------------------------
# Variation: a world closer to what users bring
# ---------------------------------------------------------------------------

# Shade ranges of the backgrounds (per channel, inclusive) and the jitter of object colours
# around the palette. Measured on the first default model: a user's gray of 128 instead of
# the world's 110, or a 12-px square, gave a 19 dB first frame and a wrong shape in TI2V.
BACKGROUND_RANGES: Dict[str, Tuple[Tuple[int, int], ...]] = {
    "black": ((0, 30), (0, 30), (0, 30)),
    "gray": ((85, 150), (85, 150), (85, 150)),
    "dark blue": ((5, 40), (10, 45), (60, 110)),
}
COLOUR_JITTER = 20          # per channel, either way, clipped to 0..255
SCALE_RANGE = (0.6, 1.3)    # factor on a motion's size range (log-uniform): 11 px squares to 35 px


def vary_spec(rng: np.random.Generator, spec: ClipSpec, scale_range: Tuple[float, float] = SCALE_RANGE,
              bg_range: Optional[Tuple[int, int]] = None) -> ClipSpec:
    """The spec with its shades drawn: the background within its range (gray shades stay
    gray, one value on all channels; bg_range narrows a gray or black one), each object's
    colour jittered and its size scaled."""
    lo_hi = BACKGROUND_RANGES[spec.background]
    if bg_range is not None:
        if spec.background not in ("gray", "black"):
            raise ValueError(f"bg_range applies to a gray or black background, not {spec.background}")
        lo_hi = (bg_range,)
    if spec.background == "gray" or spec.background == "black":
        v = int(rng.integers(lo_hi[0][0], lo_hi[0][1] + 1))
        bg = (v, v, v)
    else:
        bg = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in lo_hi)
    objs = []
    for o in spec.objects:
        base = np.array(COLOURS[o.colour])
        rgb = tuple(int(c) for c in np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255))
        scale = float(math.exp(rng.uniform(math.log(scale_range[0]), math.log(scale_range[1]))))
        objs.append(dataclasses.replace(o, rgb=rgb, scale=scale))
    return dataclasses.replace(spec, objects=tuple(objs), bg_rgb=bg)


def sample_spec2(rng: np.random.Generator) -> ClipSpec:
    """A random two-object spec: two different colours, any shapes and motions."""
    colours = list(COLOURS)
    i, j = rng.choice(len(colours), 2, replace=False)
    shapes, motions, bgs = list(SHAPES), list(MOTIONS), list(BACKGROUNDS)
    objs = tuple(ObjectSpec(shapes[rng.integers(len(shapes))], colours[k], motions[rng.integers(len(motions))])
                 for k in (i, j))
    return ClipSpec(objs, bgs[rng.integers(len(bgs))])


def varied_clip(rng: np.random.Generator, spec: ClipSpec, frames: int = 17, size: int = 64,
                tries: int = 20, scale_range: Tuple[float, float] = SCALE_RANGE,
                bg_range: Optional[Tuple[int, int]] = None) -> Clip:
    """A clip of spec in the varied world: shades and sizes drawn (vary_spec); a draw whose
    objects cannot be placed apart is redrawn."""
    for _ in range(tries):
        v = vary_spec(rng, spec, scale_range, bg_range)
        try:
            return sample_clip(rng, v, frames, size)
        except ValueError:
            continue
    raise ValueError(f"cannot place {spec} in a {size}px frame")
