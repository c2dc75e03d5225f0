"""Automatic semantic checker for tinyworld-style clips.

Given frames (generated or ground truth) and a prompt, it finds the object by
colour, follows its centroid and area over the frames, classifies its shape by
how much of its bounding box it fills (and where its centroid sits in it), and its motion from the fitted drift of
centroid and size; then compares colour, shape and motion with the prompt.

Only numpy; works on uint8 [T, H, W, 3] or float [3, T, H, W] in [-1, 1].

    python3 -m tools.tinyworld.checker --selftest
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Union

import numpy as np

from .captions import parse_caption
from .world import COLOURS, ClipSpec

# thresholds (fractions of the frame side / of size)
FG_DIST = 50.0          # RGB distance from the background that counts as foreground
MIN_AREA = 6.0          # pixels (soft) for an object to count as present in a frame
MIN_PRESENT = 0.8       # fraction of frames the object must be present in
TRI_MAX_FILL = 0.60     # fill ratio below: triangle (ideal 0.50)
TRI_MIN_DROP = 0.08     # or centroid this far below the box centre (in box heights; ideal 1/6)
CIRCLE_MAX_FILL = 0.89  # below: circle (ideal 0.785); above: square (ideal 1.0)
MOVE_MIN = 0.12         # dominant displacement over the clip, fraction of the side
STILL_MAX_MOVE = 0.06
SCALE_MIN = 1.4         # linear size ratio last/first for grow / shrink
STILL_MAX_SCALE = 1.15


@dataclasses.dataclass
class Analysis:
    colour: Optional[str]
    shape: Optional[str]
    motion: Optional[str]
    fill: float = float("nan")    # area / soft bounding box (triangle 0.5, circle 0.785, square 1)
    drop: float = float("nan")    # centroid below the box middle, in box heights (triangle 1/6)
    dx: float = 0.0          # fitted displacement over the clip, fraction of width
    dy: float = 0.0
    scale: float = 1.0       # fitted linear size ratio last/first
    present: float = 0.0     # fraction of frames where the object was found
    area: Optional[np.ndarray] = None
    cx: Optional[np.ndarray] = None
    cy: Optional[np.ndarray] = None


@dataclasses.dataclass
class CheckResult:
    ok: bool
    expected: Dict[str, Optional[str]]
    found: Analysis
    match: Dict[str, bool]


def to_uint8_frames(frames: np.ndarray) -> np.ndarray:
    """Accept uint8 [T,H,W,3] or float [3,T,H,W] / [T,H,W,3] in [-1,1]; return float64 [T,H,W,3] 0..255."""
    a = np.asarray(frames)
    if a.dtype == np.uint8:
        if a.shape[-1] != 3:
            raise ValueError("uint8 frames must be [T,H,W,3]")
        return a.astype(np.float64)
    a = a.astype(np.float64)
    if a.ndim == 4 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 3, 0)
    return np.clip((a + 1.0) * 127.5, 0.0, 255.0)


def _border_background(f: np.ndarray) -> np.ndarray:
    border = np.concatenate([f[:, 0, :, :], f[:, -1, :, :], f[:, :, 0, :], f[:, :, -1, :]], axis=1)
    return np.median(border.reshape(-1, 3), axis=0)


def _classify_colour(f: np.ndarray, bg: np.ndarray):
    d = np.linalg.norm(f - bg, axis=-1)
    fg = d > FG_DIST
    if fg.sum() < MIN_AREA:
        return None
    core = d >= 0.8 * np.percentile(d[fg], 95)
    rgb = np.median(f[core & fg], axis=0)
    names = list(COLOURS)
    dist = [np.linalg.norm(rgb - np.array(COLOURS[n], np.float64)) for n in names]
    return names[int(np.argmin(dist))]


def _coverage(f: np.ndarray, bg: np.ndarray, colour_rgb: np.ndarray) -> np.ndarray:
    """Soft coverage of the object colour over the background, per pixel, in [0, 1]."""
    v = colour_rgb - bg
    a = ((f - bg) @ v) / max(float(v @ v), 1e-6)
    # pixels of some other colour (not a blend of object and background) do not count
    resid = np.linalg.norm(f - (bg + a[..., None] * v), axis=-1)
    a = np.clip(a, 0.0, 1.0)
    a[resid > 60.0] = 0.0
    a[a < 0.15] = 0.0
    return a


def _dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    out = m.copy()
    for _ in range(r):
        g = out.copy()
        g[1:] |= out[:-1]
        g[:-1] |= out[1:]
        g[:, 1:] |= out[:, :-1]
        g[:, :-1] |= out[:, 1:]
        out = g
    return out


def _isolate(a: np.ndarray) -> np.ndarray:
    """The coverage of one frame kept only around its largest blob: the region of pixels
    over half covered that holds the most covered pixel, grown by 2 px for its soft edge.
    Another object's anti-aliased edge can project onto this colour at low coverage; cut
    off, it would widen the soft box and lower the fill."""
    core = a > 0.5
    if not core.any():
        return a
    region = np.zeros_like(core)
    region[np.unravel_index(int(np.argmax(np.where(core, a, -1.0))), a.shape)] = True
    while True:
        grown = _dilate(region) & core
        if (grown == region).all():
            break
        region = grown
    return np.where(_dilate(region, 2), a, 0.0)


def _object_coverage(f: np.ndarray, bg: np.ndarray, colour: str, isolate: bool) -> np.ndarray:
    """Soft coverage [T, H, W] of the object of that palette colour, in its own shade."""
    a = _coverage(f, bg, np.array(COLOURS[colour], np.float64))
    # The object's own shade (users' and the varied world's colours sit off the palette):
    # the median of its well-covered pixels. Measured against the palette value, a
    # lighter shade over-covers the soft edges, and small circles read as squares.
    solid = (a > 0) & (a >= 0.85 * a.max())
    if solid.sum() >= MIN_AREA:
        a = _coverage(f, bg, np.median(f[solid], axis=0))
    if isolate:
        a = np.stack([_isolate(x) for x in a])
    return a


def analyze(frames: np.ndarray, colour: Optional[str] = None, isolate: bool = False) -> Analysis:
    """Find the object (of ``colour`` if given, else the dominant foreground colour).
    isolate: judge only the largest blob of that colour in each frame (several objects)."""
    f = to_uint8_frames(frames)
    T, H, W, _ = f.shape
    bg = _border_background(f)
    found_colour = _classify_colour(f, bg)
    track_colour = colour or found_colour
    if track_colour is None:
        return Analysis(None, None, None)
    a = _object_coverage(f, bg, track_colour, isolate)
    area = a.sum(axis=(1, 2))
    ys, xs = np.arange(H) + 0.5, np.arange(W) + 0.5
    cx = np.full(T, np.nan)
    cy = np.full(T, np.nan)
    fills, drops = [], []
    for t in range(T):
        if area[t] < MIN_AREA:
            continue
        cx[t] = (a[t].sum(axis=0) @ xs) / area[t]
        cy[t] = (a[t].sum(axis=1) @ ys) / area[t]
        # soft extents: a column counts as much as its most covered pixel
        rows = a[t].max(axis=1)
        w = a[t].max(axis=0).sum()
        h = rows.sum()
        fills.append(area[t] / max(w * h, 1e-6))
        # an upright triangle's centroid lies h/6 below the middle of its box; blur keeps that
        drops.append((cy[t] - (rows @ ys) / max(h, 1e-6)) / max(h, 1e-6))
    ok = area >= MIN_AREA
    present = float(ok.mean())
    res = Analysis(found_colour, None, None, present=present, area=area, cx=cx, cy=cy)
    if present < MIN_PRESENT or ok.sum() < 2:
        return res
    fill = float(np.median(fills))
    res.fill = fill
    res.drop = float(np.median(drops))
    if fill < TRI_MAX_FILL or res.drop > TRI_MIN_DROP:
        res.shape = "triangle"
    else:
        res.shape = "circle" if fill < CIRCLE_MAX_FILL else "square"
    tt = np.arange(T, dtype=np.float64)[ok]
    span = float(T - 1)
    res.dx = float(np.polyfit(tt, cx[ok], 1)[0] * span / W)
    res.dy = float(np.polyfit(tt, cy[ok], 1)[0] * span / H)
    res.scale = float(math.exp(np.polyfit(tt, 0.5 * np.log(area[ok]), 1)[0] * span))
    move = max(abs(res.dx), abs(res.dy))
    log_s = abs(math.log(res.scale))
    if log_s >= math.log(SCALE_MIN) and move < MOVE_MIN:
        res.motion = "grow" if res.scale > 1 else "shrink"
    elif move >= MOVE_MIN and log_s < math.log(SCALE_MIN):
        if abs(res.dx) >= abs(res.dy):
            res.motion = "right" if res.dx > 0 else "left"
        else:
            res.motion = "down" if res.dy > 0 else "up"
    elif move < STILL_MAX_MOVE and log_s < math.log(STILL_MAX_SCALE):
        res.motion = "still"
    return res


def check(frames: np.ndarray, prompt: Union[str, ClipSpec]) -> CheckResult:
    """Does the clip show what the prompt asks for (colour, shape, motion)?"""
    if isinstance(prompt, ClipSpec):
        expected = {"colour": prompt.colour, "shape": prompt.shape, "motion": prompt.motion,
                    "background": prompt.background}
    else:
        expected = parse_caption(prompt)
    found = analyze(frames, expected.get("colour"))
    match = {k: expected[k] is not None and getattr(found, k) == expected[k]
             for k in ("colour", "shape", "motion")}
    return CheckResult(all(match.values()), expected, found, match)


def _selftest(n: int = 200, seed: int = 7) -> None:
    from .world import clip_for_index
    from .captions import sample_caption
    good = 0
    for i in range(n):
        clip = clip_for_index(seed, i)
        cap = sample_caption(np.random.default_rng(i), clip.spec)
        r = check(clip.frames, cap)
        good += r.ok
        if not r.ok:
            print("MISS", cap, r.match, r.found.fill, r.found.dx, r.found.dy, r.found.scale)
    print(f"checker: {good}/{n} true clips accepted")




@dataclasses.dataclass
class ObjectsResult:
    """check_objects: per expected object its match by attribute; ok when every object matches."""
    ok: bool
    objects: list           # [(expected dict, Analysis, match dict)]


def check_objects(frames: np.ndarray, expected) -> ObjectsResult:
    """Does the clip show each expected object ({colour, shape, motion}, e.g. a reference's
    colour and shape with the prompt's motion for it)? Each object is followed by its own
    colour, so the colours must differ; an object's shape and motion are judged as in
    check(). Two objects of the same expected colour are refused."""
    colours = [e["colour"] for e in expected]
    if len(set(colours)) != len(colours) or None in colours:
        raise ValueError("check_objects needs each object's colour, all different")
    out, ok = [], True
    for e in expected:
        found = analyze(frames, e["colour"], isolate=True)
        # the colour is given: what counts is that the object of that colour is present
        match = {"colour": found.present >= MIN_PRESENT}
        for k in ("shape", "motion"):
            match[k] = e.get(k) is not None and getattr(found, k) == e[k]
        ok = ok and all(match.values())
        out.append((e, found, match))
    return ObjectsResult(ok, out)


def in_reading_order(result: ObjectsResult) -> bool:
    """Whether check_objects found its first object left of its second, by their centres
    averaged over the frames each was found in (world.READING_GAP places them so); False
    when either was found in no frame."""
    (_, a, _), (_, b, _) = result.objects[:2]
    xs = []
    for found in (a, b):
        if found.cx is None or not np.any(np.isfinite(found.cx)):
            return False
        xs.append(float(np.nanmean(found.cx)))
    return xs[0] < xs[1]


def _selftest_objects(n: int = 100, seed: int = 11) -> int:
    """True two-object clips of the varied world, with each object's spec, must pass."""
    from .world import sample_spec2, varied_clip
    good = 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        clip = varied_clip(rng, sample_spec2(rng))
        exp = [{"colour": o.colour, "shape": o.shape, "motion": o.motion} for o in clip.spec.objects]
        r = check_objects(clip.frames, exp)
        good += r.ok
        if not r.ok:
            print("MISS", exp, [(m, a.fill, a.dx, a.dy, a.scale) for _, a, m in r.objects])
    print(f"checker (two objects): {good}/{n} true clips accepted")
    return good


# ---------------------------------------------------------------------------
# Effects (world.EFFECTS): the motion the effect LoRA teaches, and the photo's object kept
# ---------------------------------------------------------------------------

# squish: the object's soft height / width at the end over that at the start, at most; its
# width grown and its height shrunk by these factors (true clips: 0.29-0.40, x1.5-1.7, x0.5-0.6)
SQUISH_MAX_ASPECT = 0.7
SQUISH_MIN_WIDEN = 1.15
SQUISH_MAX_HEIGHT = 0.85
# spin: the orientation tracked against the first frame must turn this far (true clips: 80-100
# degrees), in place (the centroid within SPIN_MAX_DRIFT of the side: a triangle turns about
# its box's centre, its centroid 1/6 of its height below, so moves up to 0.12) and keeping its area
SPIN_MIN_DEG = 50.0
SPIN_STEP_DEG = 24          # the tracker's largest turn from one frame to the next
SPIN_MAX_DRIFT = 0.15
# bounce: the centroid's path: down at least BOUNCE_MIN_DOWN of the side (true clips 0.22-0.27),
# lowest between the 3rd frame and the 3rd from the end, back up at least BOUNCE_MIN_UP of the
# side and BOUNCE_MIN_UP_FRAC of the fall, sideways at most BOUNCE_MAX_SIDE
BOUNCE_MIN_DOWN = 0.12
BOUNCE_MIN_UP = 0.06
BOUNCE_MIN_UP_FRAC = 0.3
BOUNCE_MAX_SIDE = 0.08
# every effect: the object's area stays within this factor of its first frame's (median over
# the frames), so an object that grows, shrinks or vanishes is not the photo's
EFFECT_MAX_AREA_FACTOR = 1.7


@dataclasses.dataclass
class EffectResult:
    ok: bool
    effect: str
    expected: Dict[str, Optional[str]]       # colour and shape of the photo's object
    match: Dict[str, bool]                   # effect, colour, shape
    measures: Dict[str, float]
    shape: Optional[str] = None
    colour: Optional[str] = None


def _classify_fill(a: np.ndarray) -> Optional[str]:
    """Shape of one frame's soft mask [H, W] by the rule of analyze()."""
    area = a.sum()
    if area < MIN_AREA:
        return None
    ys = np.arange(a.shape[0]) + 0.5
    rows = a.max(axis=1)
    w, h = a.max(axis=0).sum(), rows.sum()
    fill = area / max(w * h, 1e-6)
    cy = (a.sum(axis=1) @ ys) / area
    drop = (cy - (rows @ ys) / max(h, 1e-6)) / max(h, 1e-6)
    if fill < TRI_MAX_FILL or drop > TRI_MIN_DROP:
        return "triangle"
    return "circle" if fill < CIRCLE_MAX_FILL else "square"


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """img [H, W] at pixel coordinates (x, y) (pixel i spans [i, i+1)); 0 outside."""
    H, W = img.shape
    xi, yi = x - 0.5, y - 0.5
    x0, y0 = np.floor(xi).astype(int), np.floor(yi).astype(int)
    fx, fy = xi - x0, yi - y0
    out = np.zeros(x.shape)
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xx, yy = x0 + dx, y0 + dy
        ok = (xx >= 0) & (xx < W) & (yy >= 0) & (yy < H)
        out[ok] += wgt[ok] * img[yy[ok], xx[ok]]
    return out


def track_rotation(a: np.ndarray, cx: np.ndarray, cy: np.ndarray, area: np.ndarray, n: int = 41):
    """The object's rotation in each frame relative to the first, in degrees (unwrapped, its
    sign the world's Pose.angle), by matching each frame's soft mask, centred and scaled to
    the first frame's area, against the first frame's turned by each angle within
    SPIN_STEP_DEG of the previous frame's. Returns (angles [T], the first frame's object
    and each frame's turned back onto it [T, n, n], the match error per frame)."""
    T = a.shape[0]
    r0 = 1.25 * math.sqrt(max(area[0], 1.0))
    g = np.linspace(-r0, r0, n)
    px, py = np.meshgrid(g, g)
    tmpl = _bilinear(a[0], cx[0] + px, cy[0] + py)
    norm = float((tmpl ** 2).sum()) + 1e-9
    ang = np.zeros(T)
    back = np.zeros((T, n, n))
    back[0] = tmpl
    err = np.zeros(T)
    for t in range(1, T):
        s = math.sqrt(max(area[t], 1.0) / max(area[0], 1.0))
        best = None
        for d in range(-SPIN_STEP_DEG, SPIN_STEP_DEG + 1, 2):
            th = math.radians(ang[t - 1] + d)
            c, si = math.cos(th), math.sin(th)
            # the world turns the object by th: its point p of frame 0 lies at R(th) p (screen
            # coordinates, y down; world._coverage turns pixels by -th into the object frame)
            x = cx[t] + s * (c * px + si * py)
            y = cy[t] + s * (-si * px + c * py)
            smp = _bilinear(a[t], x, y)
            e = float(((smp - tmpl) ** 2).sum()) / (norm + float((smp ** 2).sum()))
            if best is None or e < best[0]:
                best = (e, ang[t - 1] + d, smp)
        err[t], ang[t], back[t] = best
    return ang, back, err


def check_effect(frames: np.ndarray, effect: str, colour: str, shape: str) -> EffectResult:
    """Does the clip show the effect on the photo's object? colour, shape: the photo's
    object's (palette colour name, shape name). The object is followed by its colour; the
    effect is measured on it (squish: height / width over time; spin: orientation; bounce:
    the vertical path), and its colour and shape must be the photo's (for spin, the shape of
    the frames turned back by the tracked angle)."""
    from .world import EFFECTS
    if effect not in EFFECTS:
        raise ValueError(f"unknown effect {effect!r}")
    f = to_uint8_frames(frames)
    T, H, W, _ = f.shape
    found = analyze(frames, colour)
    expected = {"colour": colour, "shape": shape}
    res = EffectResult(False, effect, expected, {"effect": False, "colour": False, "shape": False}, {},
                       colour=found.colour)
    res.match["colour"] = found.colour == colour and found.present >= MIN_PRESENT
    bg = _border_background(f)
    a = _object_coverage(f, bg, colour, isolate=True)
    area = a.sum(axis=(1, 2))
    if (area < MIN_AREA).any():
        res.measures["present"] = float((area >= MIN_AREA).mean())
        return res
    ys, xs = np.arange(H) + 0.5, np.arange(W) + 0.5
    cx = (a.sum(axis=1) @ xs) / area
    cy = (a.sum(axis=2) @ ys) / area
    w = a.max(axis=1).sum(axis=1)
    h = a.max(axis=2).sum(axis=1)
    m = res.measures
    m["area_factor"] = float(np.median(area[1:]) / area[0])
    size_kept = 1 / EFFECT_MAX_AREA_FACTOR <= m["area_factor"] <= EFFECT_MAX_AREA_FACTOR
    early, late = slice(0, 2), slice(T - 4, T)
    if effect == "squish":
        aspect = h / w
        m["aspect"] = float(np.median(aspect[late]) / np.median(aspect[early]))
        m["widen"] = float(np.median(w[late]) / np.median(w[early]))
        m["height"] = float(np.median(h[late]) / np.median(h[early]))
        res.match["effect"] = (m["aspect"] <= SQUISH_MAX_ASPECT and m["widen"] >= SQUISH_MIN_WIDEN
                               and m["height"] <= SQUISH_MAX_HEIGHT and size_kept)
        res.shape = found.shape
    elif effect == "spin":
        ang, back, err = track_rotation(a, cx, cy, area)
        m["turn_deg"] = float(ang[-1])
        m["drift"] = float(np.max(np.hypot(cx - cx[0], cy - cy[0])) / W)
        m["match_err"] = float(np.median(err[1:]))
        res.match["effect"] = (abs(m["turn_deg"]) >= SPIN_MIN_DEG and m["drift"] <= SPIN_MAX_DRIFT and size_kept)
        res.shape = _classify_fill(back[1:].mean(axis=0))
    else:   # bounce
        k = int(np.argmax(cy))
        m["down"] = float((cy[k] - cy[0]) / H)
        m["up"] = float((cy[k] - cy[-1]) / H)
        m["low_frame"] = k
        m["side"] = float(np.max(np.abs(cx - cx[0])) / W)
        res.match["effect"] = (m["down"] >= BOUNCE_MIN_DOWN and 2 <= k <= T - 3 and m["up"] >= BOUNCE_MIN_UP
                               and m["up"] >= BOUNCE_MIN_UP_FRAC * m["down"] and m["side"] <= BOUNCE_MAX_SIDE
                               and size_kept)
        res.shape = found.shape
    res.match["shape"] = res.shape == shape
    res.ok = all(res.match.values())
    return res


def _selftest_effects(n: int = 40, seed: int = 13) -> int:
    """True effect clips of the varied world must pass their effect's check."""
    from .world import EFFECTS, sample_effect_spec, varied_clip
    good = 0
    for e in EFFECTS:
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            clip = varied_clip(rng, sample_effect_spec(rng, e), scale_range=EFFECTS[e].scale_range)
            r = check_effect(clip.frames, e, clip.spec.colour, clip.spec.shape)
            good += r.ok
            if not r.ok:
                print("MISS", e, clip.spec.colour, clip.spec.shape, r.match, r.shape, r.measures)
    print(f"checker (effects): {good}/{n * len(EFFECTS)} true clips accepted")
    return good


if __name__ == "__main__":
    import sys
    if "--selftest" in sys.argv:
        _selftest()
        _selftest_objects()
        _selftest_effects()
