"""The default text-to-video run through the engine and through the project's own
PyTorch modules (tools/wan_torch, the modules the default model was trained with),
same weights, sampler and settings, on the same CPU. Prints figures; decides nothing.

Both sides run resident, as the PyTorch side always has: the model loaded
once and one warm-up generation first (the engine's is
tools/bench/t2v_resident.lua, the recipe's t2v mode in one process, as a
batch, the REPL or a host runs it). Pairs of one engine and one PyTorch
generation run alternately, so both see the same machine load; the medians
of each phase and their ratio are printed. Model loading is timed on neither
side. The CLI's one-shot run (a fresh process: its first use of each kernel
builds the pipeline) is printed after the table, with its own phase times.

usage: python3 -m tools.bench.t2v_vs_torch [--pack models/default] [--pairs 5] [--bin build/moonreel] [--cli-runs 3]
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


class ResidentEngine:
    """tools/bench/t2v_resident.lua: the pack loaded once, one generation per request."""

    def __init__(self, binary: str, pack: str, prompt: str):
        self.p = subprocess.Popen([binary, "tools/bench/t2v_resident.lua", "--model", pack, "--prompt", prompt],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"t2v_resident.lua did not start (it said {line!r})")

    def run(self, seed: int, out: str) -> dict:
        self.p.stdin.write(f"{seed} {out}\n")
        self.p.stdin.flush()
        f = self.p.stdout.readline().split()
        if len(f) != 6:
            raise RuntimeError(f"t2v_resident.lua stopped (it said {' '.join(f)!r})")
        r = {f[i]: float(f[i + 1]) for i in range(0, 6, 2)}
        r["total"] = r["text"] + r["denoise"] + r["decode"]
        return r

    def close(self):
        self.p.stdin.close()
        self.p.wait()


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
    ap.add_argument("--cli-runs", type=int, default=3, help="one-shot CLI runs timed after the pairs")
    a = ap.parse_args(argv)
    import json
    with open(os.path.join(a.pack, "moonreel_pack.json")) as f:
        defaults = json.load(f)["defaults"]
    torch.set_num_threads(os.cpu_count() or 1)
    dit, vae, t5, spiece = load_pack(a.pack)
    models = (dit, vae, t5, Tokenizer(spiece, dit.text_len))
    torch_run(models, defaults, a.prompt, 1)  # warm-up: first calls allocate
    rows = {"engine": [], "torch": []}
    cli = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = ResidentEngine(a.bin, a.pack, a.prompt)
        try:
            for i in range(a.pairs):
                rows["engine"].append(engine.run(100 + i, os.path.join(tmp, f"{i}.mp4")))
                rows["torch"].append(torch_run(models, defaults, a.prompt, 100 + i))
                e, t = rows["engine"][-1], rows["torch"][-1]
                print(f"pair {i + 1}: engine {e['total']:.2f} s, PyTorch {t['total']:.2f} s, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            engine.close()
        for i in range(a.cli_runs):
            cli.append(engine_run(a.bin, a.pack, a.prompt, 200 + i, os.path.join(tmp, f"cli{i}.mp4")))
    print(f"\n{defaults['width']}x{defaults['height']}, {defaults['frames']} frames, {defaults['steps']} steps, "
          f"{a.pairs} pairs, both resident, medians (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'phase':<10}{'engine s':>10}{'PyTorch s':>11}{'engine/PyTorch':>16}")
    for k in ("text", "denoise", "decode", "total"):
        e = statistics.median(r[k] for r in rows["engine"])
        t = statistics.median(r[k] for r in rows["torch"])
        print(f"{k:<10}{e:>10.2f}{t:>11.2f}{e / t if t > 0 else float('nan'):>15.2f}x")
    if cli:
        m = {k: statistics.median(r[k] for r in cli) for k in ("text", "denoise", "decode", "total")}
        print(f"\nthe CLI, one generation a fresh process ({len(cli)} runs, medians): total {m['total']:.2f} s "
              f"(text {m['text']:.2f}, denoise {m['denoise']:.2f}, decode {m['decode']:.2f}); "
              f"{m['total'] / statistics.median(r['total'] for r in rows['torch']):.2f}x PyTorch resident")
    return 0


if __name__ == "__main__":
    sys.exit(main())
