"""The default text-to-video run through the engine and through the project's own
PyTorch modules (tools/wan_torch, the modules the default model was trained with),
same weights, sampler and settings, on the same CPU. Prints figures; decides nothing.

Pairs: the engine (the CLI running recipes/t2v.lua, which prints its own phase
times) and PyTorch run alternately, so both see the same machine load; the
medians of each phase and their ratio are printed. Model loading is not timed
on either side.

usage: python3 -m tools.bench.t2v_vs_torch [--pack models/default] [--pairs 5] [--bin build/moonreel]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from ..train.data import Tokenizer, encode_text  # sets one BLAS thread before torch loads (tools/train)
from ..train.export import load_pack
from ..train.stage_dit import sample

import torch

WROTE = re.compile(r"wrote .* \(([\d.]+) s: text ([\d.]+), denoise ([\d.]+), decode ([\d.]+)\)")


def engine_run(binary: str, pack: str, prompt: str, seed: int, out: str) -> dict:
    r = subprocess.run([binary, "recipes/t2v.lua", "--model", pack, "--prompt", prompt, "--seed", str(seed),
                        "--out", out], capture_output=True, text=True, check=True)
    m = WROTE.search(r.stdout + r.stderr)
    if not m:
        raise RuntimeError("the recipe printed no phase times:\n" + r.stdout + r.stderr)
    total, text, denoise, decode = (float(g) for g in m.groups())
    return {"text": text, "denoise": denoise, "decode": decode, "total": text + denoise + decode}


@torch.no_grad()
def torch_run(models, defaults: dict, prompt: str, seed: int) -> dict:
    dit, vae, t5, tok = models
    lat = (16, 1 + (defaults["frames"] - 1) // 4, defaults["height"] // 8, defaults["width"] // 8)
    t0 = time.perf_counter()
    encode_text(t5, tok, [prompt])
    encode_text(t5, tok, [defaults.get("negative", "")])
    t1 = time.perf_counter()
    # sample() encodes the two texts again, then denoises: its text share is taken off
    z = sample(dit, t5, tok, [prompt], lat, [seed], defaults["steps"], defaults["guide"], defaults["shift"],
               defaults.get("negative", ""))
    t2 = time.perf_counter()
    vae.decode(z, chunked=True)
    t3 = time.perf_counter()
    text = t1 - t0
    return {"text": text, "denoise": (t2 - t1) - text, "decode": t3 - t2, "total": t3 - t1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--bin", default="build/moonreel")
    ap.add_argument("--prompt", default="a yellow square moving up on a gray background")
    a = ap.parse_args(argv)
    import json
    with open(os.path.join(a.pack, "moonreel_pack.json")) as f:
        defaults = json.load(f)["defaults"]
    torch.set_num_threads(os.cpu_count() or 1)
    dit, vae, t5, spiece = load_pack(a.pack)
    models = (dit, vae, t5, Tokenizer(spiece, dit.text_len))
    torch_run(models, defaults, a.prompt, 1)  # warm-up: first calls allocate
    rows = {"engine": [], "torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        engine_run(a.bin, a.pack, a.prompt, 1, os.path.join(tmp, "warm.mp4"))  # warm-up: pipeline cache
        for i in range(a.pairs):
            rows["engine"].append(engine_run(a.bin, a.pack, a.prompt, 100 + i, os.path.join(tmp, f"{i}.mp4")))
            rows["torch"].append(torch_run(models, defaults, a.prompt, 100 + i))
            e, t = rows["engine"][-1], rows["torch"][-1]
            print(f"pair {i + 1}: engine {e['total']:.2f} s, PyTorch {t['total']:.2f} s, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n{defaults['width']}x{defaults['height']}, {defaults['frames']} frames, {defaults['steps']} steps, "
          f"{a.pairs} pairs, medians (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'phase':<10}{'engine s':>10}{'PyTorch s':>11}{'engine/PyTorch':>16}")
    for k in ("text", "denoise", "decode", "total"):
        e = statistics.median(r[k] for r in rows["engine"])
        t = statistics.median(r[k] for r in rows["torch"])
        print(f"{k:<10}{e:>10.2f}{t:>11.2f}{e / t if t > 0 else float('nan'):>15.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
