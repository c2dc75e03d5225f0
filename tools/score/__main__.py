"""Scores a tinyworld model pack through the engine (issue 5's gates), numpy only:

    python3 -m tools.score [--pack models/default] [--n 40] [--ti2v 8] [--vae 16] [--gate]

- VAE: PSNR of encode -> decode on held-out clips (never seen in training);
- T2V: the semantic checker on n prompt/seed pairs drawn from the world
  (colour, shape and motion must all match the prompt);
- TI2V: first-frame PSNR against the given image, and the checker on the clip
  (--ti2v-varied: also on images off the world's exact shades and sizes);
- R2V (packs that take references): --r2v n two-object cases named only by
  reference ("the first object moving right and the second object ..."), each
  object followed by its reference's colour and judged on its shape and the
  prompt's motion for it; --r2v-swapped runs them again with the references in
  the other order, where the objects must swap.
- Effects: --effects n photo/seed pairs per effect template (recipes/templates/
  squish.json, spin.json, bounce.json): each photo the first frame of a held-out
  clip of the effect in the varied world (a user's shades and sizes), run through
  the template as the batch runner runs it (tools/score/effects.lua), once with
  the template's LoRA and once without; the checker (check_effect) measures the
  effect and the photo's colour and shape kept. The LoRA must pass >= 90 % and
  the base model without it at most 10 % (--gate).
Generation runs in the moonreel CLI (tools/score/jobs.lua) with the pack's own
defaults, so this measures what a user gets. --gate exits non-zero below the
figures of issue 5 (VAE >= 30 dB, checker >= 90 %, TI2V first frame >= 25 dB and
checker >= 90 %). --reference holds the engine to the pack's own PyTorch figures
where they do not depend on sampling noise (VAE PSNR per clip, TI2V first frame
per pair: frame 0 is the image's latent, held, through a causal decoder); --hold
colour=0.6,motion=0.6 requires those checker attributes of that fraction of the
generated clips (1 when no fraction is given).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..tinyworld import canonical_caption, sample_clip
from ..tinyworld.captions import ref_caption
from ..tinyworld.captions import effect_prompt
from ..tinyworld.checker import check, check_effect, check_objects
from ..tinyworld.evalset import effect_cases, holdout_clip, prompt_seed_pairs, r2v_cases, varied_ti2v_cases
from ..tinyworld.world import EFFECTS, SHAPES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TI2V is held to the T2V checker figure too: the motion must follow the prompt.
GATES = {"vae_psnr": 30.0, "t2v_pass": 0.90, "ti2v_psnr": 25.0, "ti2v_pass": 0.90, "ti2v_varied_psnr": 25.0,
         "ti2v_varied_pass": 0.90, "r2v_pass": 0.90, "r2v_swapped_pass": 0.90}
# Effects (issue 18): each template with its LoRA passes the checker this often; the base
# model on the same prompts and photos (the LoRA left off) at most EFFECT_BASE_MAX.
EFFECT_GATE = 0.90
EFFECT_BASE_MAX = 0.10


def write_png(path: str, img: np.ndarray) -> None:
    """uint8 [H, W, 3] as an 8-bit RGB PNG (zlib, no filter): the references go to the
    engine as files, as a user's do."""
    import struct
    import zlib
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of [-1, 1] arrays (peak-to-peak 2), both clamped as a writer would."""
    mse = float(np.mean((np.clip(a, -1, 1) - np.clip(b, -1, 1)) ** 2))
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="score a tinyworld pack through the engine")
    ap.add_argument("--pack", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--moonreel", default=os.path.join(ROOT, "build", "moonreel"))
    ap.add_argument("--n", type=int, default=None, help="T2V prompt/seed pairs (default 40; 0 with --effects)")
    ap.add_argument("--ti2v", type=int, default=None, help="TI2V pairs (default 8; 0 with --effects)")
    ap.add_argument("--vae", type=int, default=None, help="held-out clips for the VAE (default 16; 0 with --effects)")
    ap.add_argument("--ti2v-varied", type=int, default=0, help="TI2V pairs from the varied world")
    ap.add_argument("--r2v", type=int, default=0, help="two-reference cases (packs that take references)")
    ap.add_argument("--step-cache", type=float, default=None, metavar="THRESHOLD",
                    help="generate with mr.recipe.step_cache{threshold = THRESHOLD} (reused steps are counted)")
    ap.add_argument("--cfg-img", type=float, default=None, help="r2v: guidance of the references (default: the pack's)")
    ap.add_argument("--r2v-swapped", type=int, default=None, help="of those, run again swapped (default: all)")
    ap.add_argument("--effects", type=int, default=0, metavar="N",
                    help="photo/seed pairs per effect template, each run with and without its LoRA")
    ap.add_argument("--effect", default=",".join(EFFECTS), help="which effects (default: all)")
    ap.add_argument("--templates", default=os.path.join(ROOT, "recipes", "templates"),
                    help="the folder of the effect templates (<effect>.json)")
    ap.add_argument("--no-base", action="store_true", help="--effects: only the runs with the LoRA")
    ap.add_argument("--base-only", action="store_true", help="--effects: only the runs without the LoRA")
    ap.add_argument("--seed", type=int, default=0, help="the training seed (held-out and pair streams)")
    ap.add_argument("--weights", default="f32")
    ap.add_argument("--gate", action="store_true", help="exit 1 below the issue's figures")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--reference", action="store_true",
                    help="exit 1 where a per-item figure that does not depend on sampling noise (VAE PSNR per "
                         "clip, TI2V first-frame PSNR per pair) differs from the pack's PyTorch reference")
    ap.add_argument("--reference-tol", type=float, default=0.05, help="dB (default 0.05)")
    ap.add_argument("--hold", default="", metavar="ATTR[=FRAC],...",
                    help="exit 1 unless at least FRAC (default 1) of the T2V and TI2V clips match their "
                         "prompt in each of these checker attributes (colour, shape, motion)")
    a = ap.parse_args(argv)
    for k, default in (("n", 40), ("ti2v", 8), ("vae", 16)):
        if getattr(a, k) is None:
            setattr(a, k, 0 if a.effects else default)

    with open(os.path.join(a.pack, "moonreel_pack.json")) as f:
        info = json.load(f)
    d = info["defaults"]
    frames, size = int(d["frames"]), int(d["width"])
    if a.reference and "reference" not in info:
        print(f"{a.pack}/moonreel_pack.json: no \"reference\" figures (re-export the pack)", file=sys.stderr)
        return 2
    a.hold = _parse_hold(a.hold)
    if a.hold is None:
        return 2
    tmp = tempfile.mkdtemp(prefix="moonreel-score-")
    try:
        if a.effects:
            rc = _score_effects(a, frames, size, tmp)
            if rc or not (a.n or a.ti2v or a.vae or a.ti2v_varied or a.r2v):
                return rc
        return _score(a, frames, size, tmp, info.get("reference", {}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _score(a, frames: int, size: int, tmp: str, reference: dict) -> int:
    jobs, checks = [], []

    for i in range(a.vae):
        clip = holdout_clip(a.seed, i, frames, size).as_float().astype(np.float32)
        src = os.path.join(tmp, f"vae{i}.in")
        clip.tofile(src)
        jobs.append({"kind": "vae", "video": src, "shape": list(clip.shape), "out": src + ".out"})
        checks.append(("vae", clip, None))
    for spec, sd in prompt_seed_pairs(a.seed, a.n):
        out = os.path.join(tmp, f"t2v{len(jobs)}.out")
        prompt = canonical_caption(spec)
        jobs.append({"kind": "t2v", "prompt": prompt, "seed": str(sd), "out": out})
        checks.append(("t2v", prompt, sd))
    for spec, sd in prompt_seed_pairs(a.seed + 1, a.ti2v):
        clip = sample_clip(np.random.default_rng(sd), spec, frames, size).as_float().astype(np.float32)
        first = np.ascontiguousarray(clip[:, 0])
        src = os.path.join(tmp, f"ti2v{len(jobs)}.in")
        first.tofile(src)
        prompt = canonical_caption(spec)
        jobs.append({"kind": "ti2v", "prompt": prompt, "seed": str(sd), "image": src, "shape": list(first.shape),
                     "out": src + ".out"})
        checks.append(("ti2v", prompt, first))
    for spec, clip, sd in varied_ti2v_cases(a.seed, a.ti2v_varied, frames, size):
        first = np.ascontiguousarray(clip.as_float()[:, 0])
        src = os.path.join(tmp, f"ti2vv{len(jobs)}.in")
        first.tofile(src)
        prompt = canonical_caption(spec)
        jobs.append({"kind": "ti2v", "prompt": prompt, "seed": str(sd), "image": src, "shape": list(first.shape),
                     "out": src + ".out"})
        checks.append(("ti2v_varied", prompt, first))
    n_swap = a.r2v if a.r2v_swapped is None else min(a.r2v_swapped, a.r2v)
    for i, (spec, refs, sd) in enumerate(r2v_cases(a.seed, a.r2v, size)):
        prompt = ref_caption(None, spec)
        files = []
        for k, img in enumerate(refs):
            files.append(os.path.join(tmp, f"r2v{len(jobs)}_{k}.png"))
            write_png(files[-1], img)
        for swapped in ((False, True) if i < n_swap else (False,)):
            order = [1, 0] if swapped else [0, 1]
            out = os.path.join(tmp, f"r2v{len(jobs)}.out")
            jobs.append({"kind": "r2v", "prompt": prompt, "seed": str(sd), "refs": [files[j] for j in order],
                         "out": out, **({"cfg_img": a.cfg_img} if a.cfg_img is not None else {})})
            # the n-th object named in the prompt is the n-th reference's, with the n-th motion
            exp = [{"colour": spec.objects[j].colour, "shape": spec.objects[j].shape, "motion": m.motion}
                   for j, m in zip(order, spec.objects)]
            checks.append(("r2v_swapped" if swapped else "r2v", prompt, exp))
    with open(os.path.join(tmp, "jobs.json"), "w") as f:
        json.dump({"pack": a.pack, "weights": a.weights, "jobs": jobs, "step_cache": a.step_cache}, f)

    t0 = time.time()
    r = subprocess.run([a.moonreel, os.path.join(ROOT, "tools", "score", "jobs.lua"), os.path.join(tmp, "jobs.json")],
                       stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print(f"the engine failed (exit {r.returncode})", file=sys.stderr)
        return 2
    print(r.stdout.strip())

    vae, t2v_ok, ti2v_psnr, ti2v_ok = [], 0, [], 0
    ti2vv_psnr, ti2vv_ok, r2v_ok = [], 0, {"r2v": 0, "r2v_swapped": 0}
    attrs = {k: 0 for k in ("colour", "shape", "motion")}     # T2V matches per attribute
    held = {k: 0 for k in a.hold}                              # generated clips matching a --hold attribute
    for job, (kind, ref, extra) in zip(jobs, checks):
        shape = (3, frames, size, size)
        out = np.fromfile(job["out"], dtype=np.float32).reshape(shape)
        if kind == "vae":
            vae.append(psnr(out, ref))
        elif kind == "t2v":
            res = check(out, ref)
            t2v_ok += res.ok
            for k in attrs:
                attrs[k] += res.match[k]
            for k in held:
                held[k] += res.match[k]
            if not res.ok:
                f = res.found
                print(f"  t2v miss: {ref!r} seed {extra}: found {f.colour}/{f.shape}/{f.motion}")
        elif kind.startswith("r2v"):
            res = check_objects(out, extra)
            r2v_ok[kind] += res.ok
            if not res.ok:
                print(f"  {kind} miss: {ref!r} refs {[(e['colour'], e['shape']) for e in extra]} seed {job['seed']}: "
                      + "; ".join(f"{f.colour}/{f.shape}/{f.motion}" for _, f, _ in res.objects))
        elif kind == "ti2v_varied":
            ti2vv_psnr.append(psnr(out[:, 0], extra))
            res = check(out, ref)
            ti2vv_ok += res.ok
            if not res.ok:
                f = res.found
                print(f"  ti2v (varied) miss: {ref!r}: found {f.colour}/{f.shape}/{f.motion}")
        else:
            ti2v_psnr.append(psnr(out[:, 0], extra))
            res = check(out, ref)
            ti2v_ok += res.ok
            for k in held:
                held[k] += res.match[k]
            if not res.ok:
                f = res.found
                print(f"  ti2v miss: {ref!r}: found {f.colour}/{f.shape}/{f.motion}")
    m = {"vae_psnr": float(np.mean(vae)) if vae else None, "t2v_pass": t2v_ok / a.n if a.n else None,
         "ti2v_psnr": float(np.mean(ti2v_psnr)) if ti2v_psnr else None,
         "ti2v_pass": ti2v_ok / a.ti2v if a.ti2v else None,
         "ti2v_varied_psnr": float(np.mean(ti2vv_psnr)) if ti2vv_psnr else None,
         "ti2v_varied_pass": ti2vv_ok / a.ti2v_varied if a.ti2v_varied else None,
         "r2v_pass": r2v_ok["r2v"] / a.r2v if a.r2v else None,
         "r2v_swapped_pass": r2v_ok["r2v_swapped"] / n_swap if a.r2v and n_swap else None}
    print(f"engine: {r.stdout.strip()}; {time.time() - t0:.0f} s in all")
    if m["vae_psnr"] is not None:
        print(f"VAE reconstruction PSNR on {a.vae} held-out clips: {m['vae_psnr']:.2f} dB (gate {GATES['vae_psnr']})")
    if m["t2v_pass"] is not None:
        print(f"T2V checker: {t2v_ok}/{a.n} = {100 * m['t2v_pass']:.0f}% (gate {100 * GATES['t2v_pass']:.0f}%)")
    if m["ti2v_psnr"] is not None:
        print(f"TI2V first-frame PSNR: {m['ti2v_psnr']:.2f} dB (gate {GATES['ti2v_psnr']}); "
              f"checker {ti2v_ok}/{a.ti2v} = {100 * m['ti2v_pass']:.0f}% (gate {100 * GATES['ti2v_pass']:.0f}%)")
    if m["ti2v_varied_psnr"] is not None:
        print(f"TI2V on varied images: first-frame PSNR {m['ti2v_varied_psnr']:.2f} dB; checker "
              f"{ti2vv_ok}/{a.ti2v_varied} = {100 * m['ti2v_varied_pass']:.0f}%")
    if m["r2v_pass"] is not None:
        print(f"R2V checker (two references): {r2v_ok['r2v']}/{a.r2v} = {100 * m['r2v_pass']:.0f}% "
              f"(gate {100 * GATES['r2v_pass']:.0f}%)")
    if m["r2v_swapped_pass"] is not None:
        print(f"R2V with the references swapped, the objects swap: {r2v_ok['r2v_swapped']}/{n_swap} = "
              f"{100 * m['r2v_swapped_pass']:.0f}%")
    if a.n:
        print("T2V checker by attribute: " + ", ".join(f"{k} {v}/{a.n}" for k, v in attrs.items()))
    m.update(n_vae=a.vae, n_t2v=a.n, n_ti2v=a.ti2v, t2v_ok=t2v_ok, ti2v_ok=ti2v_ok, n_r2v=a.r2v, n_r2v_swapped=n_swap,
             n_ti2v_varied=a.ti2v_varied, seconds=time.time() - t0,
             t2v_attr={k: v / a.n for k, v in attrs.items()} if a.n else None)
    worst = _reference_diff(reference, {"vae_psnr": vae, "ti2v_first_frame_psnr": ti2v_psnr})
    if worst is not None:
        print(f"largest difference from the pack's PyTorch reference: {worst:.1e} dB (tolerance {a.reference_tol:g})")
        m["reference_max_diff_db"] = worst
    reused = re.search(r"steps reused: (\d+) of (\d+)", r.stdout)
    if reused:
        m.update(steps_reused=int(reused.group(1)), steps_total=int(reused.group(2)))
    per_job = re.search(r"seconds per job: ([\d.]+) on (.+)", r.stdout)
    if per_job:
        m.update(seconds_per_job=float(per_job.group(1)), device=per_job.group(2).strip())
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(m, f, indent=1)
        os.replace(a.json + ".tmp", a.json)
    if a.reference and (worst is None or worst > a.reference_tol):
        print("the engine does not reproduce the pack's reference figures" if worst is not None else
              "no per-item figure to hold to the reference (--vae 0 and --ti2v 0)")
        return 1
    n_gen = a.n + a.ti2v
    short = [f"{k} {v}/{n_gen} (needs {a.hold[k]:g})" for k, v in held.items() if v < a.hold[k] * n_gen]
    if held:
        print("held attributes (--hold), T2V and TI2V clips: " + ", ".join(f"{k} {v}/{n_gen}" for k, v in held.items()))
    if short:
        print("below --hold: " + ", ".join(short))
        return 1
    failed = [k for k, g in GATES.items() if m[k] is not None and m[k] < g]
    if a.gate and failed:
        print("below the gates: " + ", ".join(failed))
        return 1
    return 0


def _score_effects(a, frames: int, size: int, tmp: str) -> int:
    """--effects: each effect's template on a.effects held-out photos, with and without its
    LoRA, through the engine; the checker's pass rates. Returns the exit code."""
    names = [e for e in a.effect.split(",") if e]
    bad = [e for e in names if e not in EFFECTS]
    if bad:
        print(f"--effect: unknown {', '.join(bad)} (there are {', '.join(EFFECTS)})", file=sys.stderr)
        return 2
    if a.no_base and a.base_only:
        print("--no-base and --base-only leave nothing to run", file=sys.stderr)
        return 2
    runs = (True,) if a.no_base else (False,) if a.base_only else (True, False)
    jobs, checks = [], []
    for e in names:
        template = os.path.join(a.templates, f"{e}.json")
        if not os.path.exists(template):
            print(f"{template}: no such template", file=sys.stderr)
            return 2
        # the base model's runs: the same template without its LoRAs (so they need no LoRA file)
        with open(template) as f:
            doc = json.load(f)
        doc.pop("loras", None)
        bare = os.path.join(tmp, f"{e}-base.json")
        with open(bare, "w") as f:
            json.dump(doc, f)
        for k, (spec, photo, sd) in enumerate(effect_cases(a.seed, e, a.effects, frames, size)):
            png = os.path.join(tmp, f"{e}{k:02d}.png")
            write_png(png, photo)
            obj = spec.objects[0]
            for lora in runs:
                jobs.append({"template": template if lora else bare, "image": png, "seed": str(sd), "lora": lora,
                             "vars": {"object": f"a {obj.colour} {SHAPES[obj.shape].nouns[0]}"},
                             "out": os.path.join(tmp, f"{e}{k:02d}{'' if lora else '_base'}.out")})
                checks.append((e, lora, spec))
    # the LoRA runs of each template first, then its base runs: one LoRA swap per template
    order = sorted(range(len(jobs)), key=lambda i: (names.index(checks[i][0]), not checks[i][1], i))
    jobs, checks = [jobs[i] for i in order], [checks[i] for i in order]
    with open(os.path.join(tmp, "effects.json"), "w") as f:
        json.dump({"pack": a.pack, "weights": a.weights, "jobs": jobs}, f)
    t0 = time.time()
    r = subprocess.run([a.moonreel, os.path.join(ROOT, "tools", "score", "effects.lua"),
                        os.path.join(tmp, "effects.json")], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print(f"the engine failed (exit {r.returncode})", file=sys.stderr)
        return 2
    print(r.stdout.strip())
    passed = {(e, lora): 0 for e in names for lora in runs}
    for job, (e, lora, spec) in zip(jobs, checks):
        out = np.fromfile(job["out"], dtype=np.float32).reshape(3, frames, size, size)
        res = check_effect(out, e, spec.colour, spec.shape)
        passed[(e, lora)] += res.ok
        if res.ok != lora:
            what = "miss" if lora else "base passes"
            ms = ", ".join(f"{k} {v:.2f}" for k, v in res.measures.items())
            print(f"  {e} {what}: {effect_prompt(spec)!r} seed {job['seed']}: {res.match}; {ms}")
    m, failed = {}, []
    for e in names:
        parts = []
        if True in runs:
            m[f"effect_{e}_pass"] = passed[(e, True)] / a.effects
            parts.append(f"with its LoRA {passed[(e, True)]}/{a.effects} = {100 * m[f'effect_{e}_pass']:.0f}%")
            if m[f"effect_{e}_pass"] < EFFECT_GATE:
                failed.append(f"{e} with the LoRA")
        if False in runs:
            m[f"effect_{e}_base_pass"] = passed[(e, False)] / a.effects
            parts.append(f"the base model without it {passed[(e, False)]}/{a.effects} = "
                         f"{100 * m[f'effect_{e}_base_pass']:.0f}%")
            if m[f"effect_{e}_base_pass"] > EFFECT_BASE_MAX:
                failed.append(f"{e} without the LoRA")
        print(f"effect {e}: " + "; ".join(parts) + f" (gate {100 * EFFECT_GATE:.0f}% / {100 * EFFECT_BASE_MAX:.0f}%)")
    m.update(n_effects=a.effects, effects_seconds=time.time() - t0)
    per_job = re.search(r"seconds per job: ([\d.]+) on (.+)", r.stdout)
    if per_job:
        m.update(effects_seconds_per_job=float(per_job.group(1)), device=per_job.group(2).strip())
    print(f"effects: {len(jobs)} clips in {time.time() - t0:.0f} s")
    if a.json:
        path = a.json if not (a.n or a.ti2v or a.vae or a.ti2v_varied or a.r2v) else a.json + ".effects"
        with open(path + ".tmp", "w") as f:
            json.dump(m, f, indent=1)
        os.replace(path + ".tmp", path)
    if a.gate and failed:
        print("below the gates: " + ", ".join(failed))
        return 1
    return 0


def _parse_hold(text: str):
    """"colour=0.55,motion" -> {"colour": 0.55, "motion": 1.0}; None (after a message) when malformed."""
    hold = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        try:
            frac = float(v) if v else 1.0
        except ValueError:
            frac = -1.0
        if k not in ("colour", "shape", "motion") or not 0 <= frac <= 1:
            print(f"--hold {text}: give colour, shape or motion, each with an optional =FRACTION in [0, 1]",
                  file=sys.stderr)
            return None
        hold[k] = frac
    return hold


def _reference_diff(reference: dict, engine: dict):
    """Largest |engine - reference| over the items both have, in dB; None when none."""
    diffs = [abs(e - r) for k, vals in engine.items() for e, r in zip(vals, reference.get(k, []))]
    return max(diffs) if diffs else None


if __name__ == "__main__":
    raise SystemExit(main())
