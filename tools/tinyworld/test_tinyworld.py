"""Tests for the tinyworld generator, captions and checker (numpy only).

    /usr/bin/python3 -m unittest tools.tinyworld.test_tinyworld
"""
import math
import unittest

import numpy as np

from tools.tinyworld import (BACKGROUNDS, COLOURS, MOTIONS, SHAPES, ClipSpec, MotionDef, ObjectSpec,
                             Pose, all_caption_texts, all_captions, canonical_caption,
                             clip_for_index, parse_caption, reference_image, register_motion,
                             sample_caption, sample_clip, sample_spec)
from tools.tinyworld.checker import analyze, check

N_CLIPS = 120


class TestWorld(unittest.TestCase):
    def test_deterministic(self):
        a = clip_for_index(11, 5)
        b = clip_for_index(11, 5)
        c = clip_for_index(12, 5)
        self.assertEqual(a.spec, b.spec)
        np.testing.assert_array_equal(a.frames, b.frames)
        self.assertFalse(a.spec == c.spec and np.array_equal(a.frames, c.frames))

    def test_shapes_and_ranges(self):
        clip = sample_clip(np.random.default_rng(0), ClipSpec.single("circle", "red", "right", "black"),
                           frames=21, size=96)
        self.assertEqual(clip.frames.shape, (21, 96, 96, 3))
        self.assertEqual(clip.frames.dtype, np.uint8)
        x = clip.as_float()
        self.assertEqual(x.shape, (3, 21, 96, 96))
        self.assertLessEqual(float(x.max()), 1.0)
        self.assertGreaterEqual(float(x.min()), -1.0)
        with self.assertRaises(ValueError):
            sample_clip(np.random.default_rng(0), clip.spec, frames=16)
        with self.assertRaises(ValueError):
            sample_clip(np.random.default_rng(0), ClipSpec.single("hexagon", "red", "right", "black"))

    def test_object_stays_in_frame(self):
        for i in range(60):
            clip = clip_for_index(3, i)
            tr = clip.tracks[0]
            ext = np.maximum(tr.hx, tr.hy)
            self.assertTrue(np.all(tr.cx - ext >= 0) and np.all(tr.cx + ext <= 64))
            self.assertTrue(np.all(tr.cy - ext >= 0) and np.all(tr.cy + ext <= 64))
            # the first and last frame both show the object
            bg = np.array(BACKGROUNDS[clip.spec.background])
            for t in (0, -1):
                diff = np.abs(clip.frames[t].astype(int) - bg).sum(-1)
                self.assertGreater(int((diff > 60).sum()), 20)

    def test_objects_span_two_vae_cells(self):
        # The VAE codes 8x8-pixel cells and rounds the corners of objects under ~2 cells
        # (world.py); so in every motion the object is 2 cells or more across in at least
        # half of its frames, at any frame size.
        rng = np.random.default_rng(2)
        for size in (64, 96):
            for m in MOTIONS:
                for _ in range(20):
                    clip = sample_clip(rng, ClipSpec.single("square", "white", m, "black"), size=size)
                    across = 2 * np.maximum(clip.tracks[0].hx, clip.tracks[0].hy)
                    self.assertGreaterEqual(float(np.median(across)), 2 * size / 8, (m, size))

    def test_every_combination_renders(self):
        rng = np.random.default_rng(1)
        for s in SHAPES:
            for m in MOTIONS:
                clip = sample_clip(rng, ClipSpec.single(s, "white", m, "gray"))
                self.assertEqual(clip.frames.shape, (17, 64, 64, 3))

    def test_reference_image(self):
        img = reference_image(ObjectSpec("triangle", "green", "still"), "black", 48)
        self.assertEqual(img.shape, (48, 48, 3))
        self.assertGreater(int((img[..., 1] > 150).sum()), 100)

    def test_register_motion_extension(self):
        # a later LoRA set adds an effect motion: spin (rotation) with one registry entry
        spin = MotionDef("spin", lambda rng, size: {"turns": 0.5},
                         lambda u, p: Pose(angle=2 * math.pi * p["turns"] * u), (0.12, 0.15),
                         ("spinning",), ("spins",))
        register_motion(spin)
        try:
            clip = sample_clip(np.random.default_rng(2), ClipSpec.single("square", "red", "spin", "black"))
            # a quarter turn in: a square rotated by 45 degrees has a different footprint
            self.assertFalse(np.array_equal(clip.frames[0], clip.frames[4]))
            self.assertEqual(parse_caption(canonical_caption(clip.spec))["motion"], "spin")
        finally:
            del MOTIONS["spin"]

    def test_second_object(self):
        from tools.tinyworld.world import varied_clip
        spec = ClipSpec((ObjectSpec("circle", "red", "right"), ObjectSpec("square", "blue", "up")), "black")
        # at the plain world's sizes a moving pair rarely fits 4 px apart in 64 px: the
        # varied world redraws the sizes until it does
        with self.assertRaises(ValueError):
            sample_clip(np.random.default_rng(3), spec)
        clip = varied_clip(np.random.default_rng(3), spec)
        self.assertEqual(len(clip.tracks), 2)
        self.assertIn(" and ", canonical_caption(spec))


class TestCaptions(unittest.TestCase):
    def test_canonical(self):
        spec = ClipSpec.single("circle", "red", "right", "black")
        self.assertEqual(canonical_caption(spec), "a red circle moving right on a black background")
        self.assertIn("red ball slides to the right", all_captions(spec))

    def test_parse_every_caption(self):
        n = 0
        for s in SHAPES:
            for c in COLOURS:
                for m in MOTIONS:
                    for b in BACKGROUNDS:
                        spec = ClipSpec.single(s, c, m, b)
                        caps = all_captions(spec)
                        self.assertGreater(len(caps), 5)
                        for cap in caps:
                            p = parse_caption(cap)
                            self.assertEqual((p["colour"], p["shape"], p["motion"]), (c, s, m), cap)
                            if p["background"] is not None:
                                self.assertEqual(p["background"], b, cap)
                            n += 1
        self.assertEqual(n, len(all_caption_texts()))

    def test_blue_on_dark_blue(self):
        p = parse_caption("a blue square moving up on a dark blue background")
        self.assertEqual((p["colour"], p["background"]), ("blue", "dark blue"))

    def test_sample_caption_deterministic(self):
        spec = sample_spec(np.random.default_rng(4))
        a = [sample_caption(np.random.default_rng(i), spec) for i in range(10)]
        b = [sample_caption(np.random.default_rng(i), spec) for i in range(10)]
        self.assertEqual(a, b)
        self.assertGreater(len(set(a)), 2)


class TestChecker(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.clips = [clip_for_index(2024, i) for i in range(N_CLIPS)]

    def test_accepts_true_clips(self):
        good = 0
        for i, clip in enumerate(self.clips):
            cap = sample_caption(np.random.default_rng(i), clip.spec)
            good += check(clip.frames, cap).ok
        self.assertEqual(good, N_CLIPS)

    def test_float_input(self):
        clip = self.clips[0]
        self.assertTrue(check(clip.as_float(), clip.spec).ok)

    def test_rejects_mismatched_prompts(self):
        rng = np.random.default_rng(5)
        rejected = total = 0
        for clip in self.clips:
            o = clip.spec.objects[0]
            for field, pool in (("colour", COLOURS), ("shape", SHAPES), ("motion", MOTIONS)):
                wrong = [v for v in pool if v != getattr(o, field)]
                kw = {"shape": o.shape, "colour": o.colour, "motion": o.motion,
                      "background": clip.spec.background}
                kw[field] = wrong[rng.integers(len(wrong))]
                bad = ClipSpec.single(**kw)
                r = check(clip.frames, sample_caption(rng, bad))
                rejected += not r.ok
                total += 1
        self.assertEqual(rejected, total)

    def test_analyze_classifies(self):
        for clip in self.clips[:40]:
            a = analyze(clip.frames)
            self.assertEqual((a.colour, a.shape, a.motion),
                             (clip.spec.colour, clip.spec.shape, clip.spec.motion))

    def test_empty_clip_fails(self):
        frames = np.zeros((17, 64, 64, 3), np.uint8)
        r = check(frames, "a red circle moving right on a black background")
        self.assertFalse(r.ok)

    def test_blurred_clip_still_recognised(self):
        # generated clips are softer than renders; a 3x3 box blur must not change the verdict
        good = 0
        for clip in self.clips[:30]:
            f = clip.frames.astype(np.float64)
            p = np.pad(f, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
            blur = sum(p[:, i:i + 64, j:j + 64] for i in range(3) for j in range(3)) / 9.0
            good += check(np.rint(blur).astype(np.uint8), clip.spec).ok
        self.assertEqual(good, 30)


if __name__ == "__main__":
    unittest.main()


class TestVariedWorld(unittest.TestCase):
    """The world the reference stage trains on: shades, sizes, two objects, references."""

    def test_varied_shades_and_sizes_stay_in_range(self):
        from tools.tinyworld.world import (BACKGROUND_RANGES, COLOUR_JITTER, SCALE_RANGE, sample_spec2,
                                           varied_clip)
        rng = np.random.default_rng(5)
        grays = set()
        for i in range(60):
            clip = varied_clip(rng, sample_spec2(rng) if i % 2 else sample_spec(rng))
            bg = clip.spec.bg_rgb
            for c, (lo, hi) in zip(bg, BACKGROUND_RANGES[clip.spec.background]):
                self.assertTrue(lo <= c <= hi, (clip.spec.background, bg))
            if clip.spec.background == "gray":
                grays.add(bg[0])
            for o in clip.spec.objects:
                self.assertLessEqual(max(abs(a - b) for a, b in zip(o.rgb, COLOURS[o.colour])), COLOUR_JITTER)
                self.assertTrue(SCALE_RANGE[0] <= o.scale <= SCALE_RANGE[1])
            # the corner pixel is the drawn background shade
            np.testing.assert_array_equal(clip.frames[0, 0, 0], np.array(bg, np.uint8))
        self.assertGreater(len(grays), 3)            # shades really vary

    def test_an_effect_clip_on_a_chosen_light_gray(self):
        from tools.tinyworld import evalset
        for i in range(12):
            plain = evalset.effect_clip(3, "squish", i)
            light = evalset.effect_clip(3, "squish", i, gray=(125, 150))
            self.assertEqual(light.spec.background, "gray")
            v = light.spec.bg_rgb
            self.assertTrue(125 <= v[0] <= 150 and v[0] == v[1] == v[2], v)
            np.testing.assert_array_equal(light.frames[0, 0, 0], np.array(v, np.uint8))
            # the same draw otherwise: the object and its effect are the plain clip's
            self.assertEqual([(o.shape, o.colour, o.motion) for o in light.spec.objects],
                             [(o.shape, o.colour, o.motion) for o in plain.spec.objects])
        with self.assertRaises(ValueError):
            from tools.tinyworld.world import vary_spec
            vary_spec(np.random.default_rng(0), ClipSpec.single("circle", "red", "right", "dark blue"),
                      bg_range=(125, 150))

    def test_two_objects_never_overlap_and_both_are_checked(self):
        from tools.tinyworld.checker import check_objects, in_reading_order
        from tools.tinyworld.world import READING_GAP, sample_spec2, varied_clip
        ok = 0
        for i in range(40):
            rng = np.random.default_rng([21, i])
            clip = varied_clip(rng, sample_spec2(rng))
            a, b = clip.spec.objects
            self.assertNotEqual(a.colour, b.colour)
            ta, tb = clip.tracks
            gap = (np.maximum(ta.hx, ta.hy) + np.maximum(tb.hx, tb.hy))
            self.assertTrue(np.all((np.abs(ta.cx - tb.cx) >= gap) | (np.abs(ta.cy - tb.cy) >= gap)))
            # reading order: the first object is left of the second (world.READING_GAP)
            self.assertGreaterEqual(np.mean(tb.cx) - np.mean(ta.cx), READING_GAP)
            exp = [{"colour": o.colour, "shape": o.shape, "motion": o.motion} for o in clip.spec.objects]
            r = check_objects(clip.frames, exp)
            ok += r.ok
            self.assertTrue(in_reading_order(r))
            self.assertFalse(in_reading_order(check_objects(clip.frames, exp[::-1])))
            # swapped expectations (each object given the other's shape and motion) mostly fail
        self.assertGreaterEqual(ok, 38)

    def test_check_objects_rejects_wrong_attributes(self):
        from tools.tinyworld.checker import check_objects
        from tools.tinyworld.world import sample_spec2, varied_clip
        rejected = 0
        for i in range(20):
            rng = np.random.default_rng([22, i])
            clip = varied_clip(rng, sample_spec2(rng))
            a, b = clip.spec.objects
            if a.motion == b.motion:
                continue
            # the motions swapped between the objects
            exp = [{"colour": a.colour, "shape": a.shape, "motion": b.motion},
                   {"colour": b.colour, "shape": b.shape, "motion": a.motion}]
            rejected += not check_objects(clip.frames, exp).ok
        self.assertGreaterEqual(rejected, 15)
        with self.assertRaises(ValueError):
            check_objects(clip.frames, [{"colour": "red"}, {"colour": "red"}])

    def test_reference_canvas(self):
        from tools.tinyworld.world import reference_canvas
        red = reference_image(ObjectSpec("square", "red", "still"), None, 64, 0.25)
        np.testing.assert_array_equal(red[0, 0], [255, 255, 255])
        np.testing.assert_array_equal(red[32, 32], COLOURS["red"])
        white = reference_image(ObjectSpec("circle", "white", "still"), None, 64, 0.25)
        np.testing.assert_array_equal(white[0, 0], [0, 0, 0])
        self.assertEqual(reference_canvas(ObjectSpec("circle", "white", "still")), (0, 0, 0))

    def test_two_object_and_reference_captions_parse(self):
        from tools.tinyworld.captions import parse_objects, ref_caption, sample_caption2
        from tools.tinyworld.world import sample_spec2
        rng = np.random.default_rng(9)
        for _ in range(200):
            spec = sample_spec2(rng)
            got = parse_objects(sample_caption2(rng, spec))
            self.assertEqual([(g["colour"], g["shape"], g["motion"]) for g in got],
                             [(o.colour, o.shape, o.motion) for o in spec.objects])
            got = parse_objects(ref_caption(rng, spec))
            self.assertEqual([g["motion"] for g in got], [o.motion for o in spec.objects])
            self.assertEqual([g["colour"] for g in got], [None, None])
        self.assertEqual(ref_caption(None, ClipSpec.single("circle", "red", "up", "gray")),
                         "the object moving up on a gray background")
        texts = all_caption_texts(two_objects=True)
        self.assertTrue(any(t.startswith("the first object") and " and the second object " in t for t in texts))
        self.assertTrue(any(" and a " in t and t.startswith("a ") for t in texts))


class TestEffects(unittest.TestCase):
    """The effect motions (world.EFFECTS) the effect LoRAs teach, and their checks."""

    def test_base_data_never_draws_an_effect(self):
        from tools.tinyworld.world import EFFECTS, sample_spec2
        rng = np.random.default_rng(0)
        for _ in range(500):
            self.assertNotIn(sample_spec(rng).motion, EFFECTS)
            self.assertFalse(any(o.motion in EFFECTS for o in sample_spec2(rng).objects))
        texts = " ".join(all_caption_texts())
        for e in EFFECTS.values():
            self.assertNotIn(e.trigger, texts)
            self.assertNotIn(e.name, MOTIONS)

    def test_effect_captions_carry_the_trigger(self):
        from tools.tinyworld.captions import effect_caption, effect_prompt
        from tools.tinyworld.world import EFFECTS, sample_effect_spec
        for name, e in EFFECTS.items():
            rng = np.random.default_rng(1)
            for _ in range(20):
                spec = sample_effect_spec(rng, name)
                self.assertIn(spec.shape, e.shapes)
                self.assertIn(e.trigger, effect_caption(rng, spec))
            p = effect_prompt(spec)
            self.assertTrue(p.startswith(f"a {spec.colour} ") and p.endswith(f"{e.trigger} {e.phrase}"), p)

    def _clips(self, effect, motion=None, n=8):
        from tools.tinyworld.world import EFFECTS, sample_effect_spec, varied_clip
        out = []
        for i in range(n):
            rng = np.random.default_rng([21, i])
            spec = sample_effect_spec(rng, effect)
            if motion is not None:
                spec = ClipSpec.single(spec.shape, spec.colour, motion, spec.background)
            out.append(varied_clip(rng, spec, scale_range=EFFECTS[effect].scale_range))
        return out

    def test_true_effect_clips_pass(self):
        from tools.tinyworld.checker import check_effect
        from tools.tinyworld.world import EFFECTS
        for e in EFFECTS:
            for clip in self._clips(e):
                r = check_effect(clip.frames, e, clip.spec.colour, clip.spec.shape)
                self.assertTrue(r.ok, (e, clip.spec, r.match, r.measures))

    def test_plain_motions_and_still_clips_fail(self):
        from tools.tinyworld.checker import check_effect
        from tools.tinyworld.world import EFFECTS
        for e in EFFECTS:
            for m in MOTIONS:
                for clip in self._clips(e, m, 3):
                    r = check_effect(clip.frames, e, clip.spec.colour, clip.spec.shape)
                    self.assertFalse(r.match["effect"], (e, m, r.measures))
            # and another effect is not this one
            for other in EFFECTS:
                if other != e:
                    for clip in self._clips(other, None, 3):
                        if clip.spec.shape in EFFECTS[e].shapes:
                            r = check_effect(clip.frames, e, clip.spec.colour, clip.spec.shape)
                            self.assertFalse(r.match["effect"], (e, other, r.measures))

    def test_wrong_colour_or_shape_fails(self):
        from tools.tinyworld.checker import check_effect
        from tools.tinyworld.world import EFFECTS
        for e in EFFECTS:
            clip = self._clips(e, None, 1)[0]
            other_c = next(c for c in ("red", "green") if c != clip.spec.colour)
            other_s = next(s for s in EFFECTS[e].shapes if s != clip.spec.shape)
            self.assertFalse(check_effect(clip.frames, e, other_c, clip.spec.shape).ok)
            r = check_effect(clip.frames, e, clip.spec.colour, other_s)
            self.assertFalse(r.ok)
            self.assertFalse(r.match["shape"])
            self.assertTrue(r.match["effect"])

    def test_spin_tracks_the_angle(self):
        from tools.tinyworld.checker import check_effect
        for clip in self._clips("spin", None, 4):
            r = check_effect(clip.frames, "spin", clip.spec.colour, clip.spec.shape)
            self.assertAlmostEqual(abs(r.measures["turn_deg"]), math.degrees(clip.tracks[0].angle[-1]), delta=8)
