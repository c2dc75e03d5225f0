"""Scores a tinyworld model pack through the engine (issue 5's gates), numpy only:

    python3 -m tools.score [--pack models/default] [--n 40] [--ti2v 8] [--vae 16] [--gate]

- VAE: PSNR of encode -> decode on held-out clips (never seen in training);
- T2V: the semantic checker on n prompt/seed pairs drawn from the world
  (colour, shape and motion must all match the prompt);
- TI2V: first-frame PSNR against the given image, and the checker on the clip.
Generation runs in the moonreel CLI (tools/score/jobs.lua) with the pack's own
defaults, so this measures what a user gets. --gate exits non-zero below the
figures of issue 5 (VAE >= 30 dB, checker >= 90 %, TI2V first frame >= 25 dB and
checker >= 90 %).
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
from ..tinyworld.checker import check
from ..tinyworld.evalset import holdout_clip, prompt_seed_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TI2V is held to the T2V checker figure too: the motion must follow the prompt.
GATES = {"vae_psnr": 30.0, "t2v_pass": 0.90, "ti2v_psnr": 25.0, "ti2v_pass": 0.90}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of [-1, 1] arrays (peak-to-peak 2), both clamped as a writer would."""
    mse = float(np.mean((np.clip(a, -1, 1) - np.clip(b, -1, 1)) ** 2))
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="score a tinyworld pack through the engine")
    ap.add_argument("--pack", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--moonreel", default=os.path.join(ROOT, "build", "moonreel"))
    ap.add_argument("--n", type=int, default=40, help="T2V prompt/seed pairs")
    ap.add_argument("--ti2v", type=int, default=8, help="TI2V pairs")
    ap.add_argument("--vae", type=int, default=16, help="held-out clips for the VAE")
    ap.add_argument("--seed", type=int, default=0, help="the training seed (held-out and pair streams)")
    ap.add_argument("--weights", default="f32")
    ap.add_argument("--gate", action="store_true", help="exit 1 below the issue's figures")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args(argv)

    with open(os.path.join(a.pack, "moonreel_pack.json")) as f:
        d = json.load(f)["defaults"]
    frames, size = int(d["frames"]), int(d["width"])
    tmp = tempfile.mkdtemp(prefix="moonreel-score-")
    try:
        return _score(a, frames, size, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _score(a, frames: int, size: int, tmp: str) -> int:
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
    with open(os.path.join(tmp, "jobs.json"), "w") as f:
        json.dump({"pack": a.pack, "weights": a.weights, "jobs": jobs}, f)

    t0 = time.time()
    r = subprocess.run([a.moonreel, os.path.join(ROOT, "tools", "score", "jobs.lua"), os.path.join(tmp, "jobs.json")],
                       stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print(f"the engine failed (exit {r.returncode})", file=sys.stderr)
        return 2
    print(r.stdout.strip())

    vae, t2v_ok, ti2v_psnr, ti2v_ok = [], 0, [], 0
    for job, (kind, ref, extra) in zip(jobs, checks):
        shape = (3, frames, size, size)
        out = np.fromfile(job["out"], dtype=np.float32).reshape(shape)
        if kind == "vae":
            vae.append(psnr(out, ref))
        elif kind == "t2v":
            res = check(out, ref)
            t2v_ok += res.ok
            if not res.ok:
                f = res.found
                print(f"  t2v miss: {ref!r} seed {extra}: found {f.colour}/{f.shape}/{f.motion}")
        else:
            ti2v_psnr.append(psnr(out[:, 0], extra))
            res = check(out, ref)
            ti2v_ok += res.ok
            if not res.ok:
                f = res.found
                print(f"  ti2v miss: {ref!r}: found {f.colour}/{f.shape}/{f.motion}")
    m = {"vae_psnr": float(np.mean(vae)) if vae else None, "t2v_pass": t2v_ok / a.n if a.n else None,
         "ti2v_psnr": float(np.mean(ti2v_psnr)) if ti2v_psnr else None,
         "ti2v_pass": ti2v_ok / a.ti2v if a.ti2v else None}
    print(f"engine: {r.stdout.strip()}; {time.time() - t0:.0f} s in all")
    if m["vae_psnr"] is not None:
        print(f"VAE reconstruction PSNR on {a.vae} held-out clips: {m['vae_psnr']:.2f} dB (gate {GATES['vae_psnr']})")
    if m["t2v_pass"] is not None:
        print(f"T2V checker: {t2v_ok}/{a.n} = {100 * m['t2v_pass']:.0f}% (gate {100 * GATES['t2v_pass']:.0f}%)")
    if m["ti2v_psnr"] is not None:
        print(f"TI2V first-frame PSNR: {m['ti2v_psnr']:.2f} dB (gate {GATES['ti2v_psnr']}); "
              f"checker {ti2v_ok}/{a.ti2v} = {100 * m['ti2v_pass']:.0f}% (gate {100 * GATES['ti2v_pass']:.0f}%)")
    m.update(n_vae=a.vae, n_t2v=a.n, n_ti2v=a.ti2v, t2v_ok=t2v_ok, ti2v_ok=ti2v_ok, seconds=time.time() - t0)
    per_job = re.search(r"seconds per job: ([\d.]+) on (.+)", r.stdout)
    if per_job:
        m.update(seconds_per_job=float(per_job.group(1)), device=per_job.group(2).strip())
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(m, f, indent=1)
        os.replace(a.json + ".tmp", a.json)
    failed = [k for k, g in GATES.items() if m[k] is not None and m[k] < g]
    if a.gate and failed:
        print("below the gates: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
