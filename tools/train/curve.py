"""A DiT learning curve on a latent cache that already exists: the default model's DiT
stage, from fresh weights, on the reference stage's cache of varied one- and two-object
clips (stage_refs.py's refs_cache.pt, encoded by a pack's VAE), scored every few thousand
steps on two-object captions (evaluate.eval_t2v2) and one-object T2V. It answers, in an
hour and beside other work, whether the DiT's size can draw two objects at all and after
how many steps, before a whole-pack run spends its DiT stage on it:

    /usr/bin/python3 -m tools.train.curve --pack models/default --cache runs/refs/refs_cache.pt \\
        --out runs/curve --steps 8000 --every 2000

Resumable as the DiT stage is (dit_ckpt.pt in --out). Nothing is exported.
"""
from __future__ import annotations

import argparse
import os

import torch

from ..tinyworld import all_caption_texts
from . import ckpt
from .config import TrainConfig
from .data import Tokenizer, train_sentencepiece
from .evaluate import eval_t2v, eval_t2v2
from .export import load_pack
from .stage_dit import build_dit, build_t5, train_dit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="a DiT learning curve on a cached latent set")
    ap.add_argument("--pack", default="models/default", help="the pack whose VAE encoded the cache")
    ap.add_argument("--cache", default="runs/refs/refs_cache.pt", help="stage_refs.py's latent cache")
    ap.add_argument("--out", default="runs/curve")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--every", type=int, default=2000, help="score every N steps")
    ap.add_argument("--n", type=int, default=24, help="cases per score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cache = ckpt.load(a.cache)
    if cache is None or not cache.get("done"):
        raise SystemExit(f"{a.cache}: not a finished latent cache of the reference stage")
    cfg = TrainConfig(seed=a.seed, out_dir=a.out, threads=a.threads, world="varied", dit_steps=a.steps)
    cfg.dit.text_len = 64
    torch.set_num_threads(cfg.threads)
    os.makedirs(a.out, exist_ok=True)
    log = ckpt.logger(a.out)
    _, vae, _, _ = load_pack(a.pack)
    spiece = os.path.join(a.out, "spiece.model")
    train_sentencepiece(spiece, cfg.t5.vocab, all_caption_texts(two_objects=True))
    tok = Tokenizer(spiece, cfg.dit.text_len)
    latents, specs = cache["lat"][0], cache["specs"]
    two = sum(len(s.objects) == 2 for s in specs)
    log(f"curve: {latents.shape[0]} clips ({two} with two objects), {a.steps} steps, scored every {a.every}")
    torch.manual_seed(cfg.seed + 3)
    dit, t5 = build_dit(cfg), build_t5(cfg)

    def score(step, ema):
        d, t = ema.shadow
        quiet = lambda _: None  # noqa: E731
        counts: dict = {}
        two = eval_t2v2(cfg, vae, d, t, tok, a.n, quiet, counts)
        log(f"curve step {step}: two objects by caption {two:.3f} (of the {2 * a.n} objects "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + f"), one-object T2V {eval_t2v(cfg, vae, d, t, tok, a.n, quiet):.3f} (of {a.n} each)")

    r = train_dit(cfg, dit, t5, tok, latents, specs, log, score, a.every)
    score(r["dit_steps"], r["ema"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
