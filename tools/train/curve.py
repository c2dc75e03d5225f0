"""A DiT learning curve on a latent cache that already exists: the default model's DiT
stage, from fresh weights, scored every few thousand steps (evaluate.probe_report: two
objects by caption, one-object T2V, the caption gap). It answers, in an hour or two and
without a whole-pack run, whether a DiT's size and patch can draw two objects at all and
after how many steps. The cache is a base run's (train.py's --out: its VAE and latents.pt) or the
reference stage's (stage_refs.py's refs_cache.pt, encoded by a pack's VAE):

    /usr/bin/python3 -m tools.train.curve --run runs/v6 --out runs/curve_p1 --steps 8000 --every 2000 \\
        --dit patch_size=1,1,1 --dit dim=128 --dit ffn_dim=512 --dit num_heads=2 --dit num_layers=4
    /usr/bin/python3 -m tools.train.curve --pack models/default --cache runs/refs/refs_cache.pt \\
        --out runs/curve --steps 8000 --every 2000

Resumable as the DiT stage is (dit_ckpt.pt in --out; the --dit fields are pinned in its
curve.json). Nothing is exported. `--from CKPT` forks a base run's DiT stage instead of
starting fresh (with --run, whose tokenizer it takes): the fork draws the same batches as
the run from that step, so one changed setting (`--text-parse W`, `--text-parse-own W`) is compared with the run
itself on equal data:

    /usr/bin/python3 -m tools.train.curve --run runs/v8 --from runs/v8/dit_ckpt.pt --text-parse 0.1 \
        --f32 --threads 2 --steps 16000 --every 1000 --out runs/v8parse --dit patch_size=1,1,1 ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil

import torch

from ..tinyworld import all_caption_texts
from . import ckpt, grounding
from .config import TrainConfig, add_aux_loss_flags, aux_loss_weights, dit_overrides
from .data import Tokenizer, train_sentencepiece, train_spec
from .evaluate import probe_report
from .export import load_pack
from .stage_dit import build_dit, build_t5, train_dit
from .stage_vae import build_vae


def load_cache(a, cfg):
    """(vae, latents [N, 16, F, H, W], specs) of --run or of --pack and --cache."""
    if a.run:
        with open(os.path.join(a.run, "config.json")) as f:
            run = TrainConfig.from_json(f.read())
        cfg.seed, cfg.world, cfg.p_two = run.seed, run.world, run.p_two
        vae = build_vae(run)
        done, cached = ckpt.load(os.path.join(a.run, "vae.pt")), ckpt.load(os.path.join(a.run, "latents.pt"))
        if done is None or cached is None:
            raise SystemExit(f"{a.run}: not a base run with a finished VAE and latent cache (vae.pt, latents.pt)")
        vae.load_state_dict(done["model"])
        latents = cached["latents"]
        return vae.eval(), latents, [train_spec(run.seed, i, run.world, run.p_two) for i in range(latents.shape[0])]
    cache = ckpt.load(a.cache)
    if cache is None or not cache.get("done"):
        raise SystemExit(f"{a.cache}: not a finished latent cache of the reference stage")
    _, vae, _, _ = load_pack(a.pack)
    return vae, cache["lat"][0], cache["specs"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="a DiT learning curve on a cached latent set")
    ap.add_argument("--run", help="a base run's folder (train.py's --out): its VAE and latent cache")
    ap.add_argument("--pack", default="models/default", help="the pack whose VAE encoded --cache")
    ap.add_argument("--cache", default="runs/refs/refs_cache.pt", help="stage_refs.py's latent cache")
    ap.add_argument("--dit", action="append", default=[], metavar="FIELD=VALUE",
                    help="a DiTConfig field of this curve's DiT (repeatable), e.g. patch_size=1,1,1 or dim=128")
    ap.add_argument("--one-object", action="store_true",
                    help="train on the cache's one-object clips only (is it the two-object clips that slow it?)")
    ap.add_argument("--f32", action="store_true", help="float32 forwards (CPUs without bfloat16 kernels)")
    add_aux_loss_flags(ap, "")
    ap.add_argument("--from", dest="start", metavar="CKPT",
                    help="start from this DiT checkpoint (a base run's dit_ckpt.pt, with --run: its tokenizer)")
    ap.add_argument("--out", default="runs/curve")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--every", type=int, default=2000, help="score every N steps")
    ap.add_argument("--n", type=int, default=24, help="cases per score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.start and not a.run:
        raise SystemExit("--from needs --run: the checkpoint's tokenizer is that run's spiece.model")
    weights = aux_loss_weights(a)
    if (a.grounding or a.object_head) and not a.run:
        raise SystemExit("--grounding and --object-head need --run: the footprints are drawn from that run's clips")
    if a.start and not os.path.isfile(a.start):
        raise SystemExit(f"--from {a.start}: no such checkpoint file")
    cfg = TrainConfig(seed=a.seed, out_dir=a.out, threads=a.threads, world="varied", dit_steps=a.steps,
                      dit_bf16=not a.f32, **weights)
    cfg.dit = dataclasses.replace(cfg.dit, text_len=64, **dit_overrides(a.dit))
    os.makedirs(a.out, exist_ok=True)
    pinned = os.path.join(a.out, "curve.json")
    settings = {"run": a.run, "cache": None if a.run else a.cache, "dit": dataclasses.asdict(cfg.dit),
                "steps": a.steps, "seed": a.seed}
    if a.one_object:
        settings["one_object"] = True
    settings.update({f: w for f, w in weights.items() if w})
    if a.start:
        settings["from"] = os.path.normpath(a.start)
    else:
        settings["whole_words"] = True          # its own tokenizer (with --from: the run's)
        settings["t5_init"] = True              # and its own initial text encoder
    if os.path.exists(pinned):
        with open(pinned) as f:
            old = json.load(f)
        if not a.start:
            old.setdefault("whole_words", False)    # a curve from before kept the trainer's pieces
            old.setdefault("t5_init", False)        # and PyTorch's initialisation
            settings["whole_words"], settings["t5_init"] = old["whole_words"], old["t5_init"]
        if old != json.loads(json.dumps(settings)):
            raise SystemExit(f"{pinned}: this folder holds a curve with other settings; choose another --out")
    else:
        with open(pinned, "w") as f:
            json.dump(settings, f, indent=1)
    cfg.t5_init = settings.get("t5_init", False)
    torch.set_num_threads(cfg.threads)
    log = ckpt.logger(a.out)
    vae, latents, specs = load_cache(a, cfg)
    feet = (grounding.build_footprints(cfg, latents.shape[0], os.path.join(a.out, "footprints.pt"), log)
            if a.grounding or a.object_head else None)
    if a.one_object:
        keep = [i for i, s in enumerate(specs) if len(s.objects) == 1]
        latents, specs = latents[keep], [specs[i] for i in keep]
        feet = feet[keep] if feet is not None else None
    spiece = os.path.join(a.out, "spiece.model")
    if a.start:
        shutil.copyfile(os.path.join(a.run, "spiece.model"), spiece)
        if not os.path.exists(os.path.join(a.out, "dit_ckpt.pt")):
            shutil.copyfile(a.start, os.path.join(a.out, "dit_ckpt.pt"))
    else:
        train_sentencepiece(spiece, cfg.t5.vocab, all_caption_texts(two_objects=True), settings["whole_words"])
    tok = Tokenizer(spiece, cfg.dit.text_len)
    two = sum(len(s.objects) == 2 for s in specs)
    torch.manual_seed(cfg.seed + 3)
    dit, t5 = build_dit(cfg), build_t5(cfg)
    n_params = sum(p.numel() for p in dit.parameters())
    log(f"curve: {latents.shape[0]} clips ({two} with two objects), {a.steps} steps, scored every {a.every}; "
        f"DiT {n_params / 1e6:.2f} M params, patch {cfg.dit.patch_size}, dim {cfg.dit.dim}, "
        f"{cfg.dit.num_layers} layers")

    def score(step, ema):
        log(f"curve step {step}: " + probe_report(cfg, vae, *ema.shadow, tok, a.n, latents, specs))

    r = train_dit(cfg, dit, t5, tok, latents, specs, log, score, a.every, feet)
    score(r["dit_steps"], r["ema"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
