"""The whole default pack from a seed in one command: the base run (train.py), the reference
stage (stage_refs.py) on its pack, one LoRA per effect (stage_effect.py) on that pack, and the
effect decoder (stage_effect_dec.py) over them. Each stage is resumable in its own folder under
--out and skipped once its output exists, so the same command after a kill goes on where it
stopped:

    /usr/bin/python3 -m tools.train.pipeline --seed 0 --world varied --p-two 0.5 --threads 1 --out runs/v5

--out holds the base run itself (train.py's folder: its pack in pack/), refs/ and pack_refs/
(the reference stage), fx_<effect>/ and loras/<effect>.safetensors, fx_dec/, and final/: the
finished pack (pack_refs with the effect decoder's VAE). Scoring it and putting it in place
(models/default, recipes/templates/loras) stay separate steps, printed at the end.
--dry-run prints the stages and what each would do.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Callable, List, Sequence, Tuple

from ..tinyworld.world import EFFECTS
from .config import add_aux_loss_flags, aux_loss_args, aux_loss_weights
from .data import WORLDS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stages(a) -> List[Tuple[str, str, List[str]]]:
    """(name, the file whose presence means done, module arguments) in order."""
    out = a.out
    smoke = ["--smoke"] if a.smoke else []
    base = ["tools.train.train", "--seed", str(a.seed), "--world", a.world, "--threads", str(a.threads),
            "--out", out]
    if a.world == "varied":
        base += ["--p-two", str(a.p_two)]
    if a.probe_every:
        base += ["--probe-every", str(a.probe_every)]
    if a.clips:
        base += ["--clips", str(a.clips)]
    if a.dit_steps:
        base += ["--dit-steps", str(a.dit_steps)]
    for item in a.dit:
        base += ["--dit", item]
    if a.vae_from:
        base += ["--vae-from", a.vae_from]
    # the training-only losses: the base run's, and the text encoder's parse losses the
    # reference stage's too (it goes on training the text encoder)
    weights = aux_loss_weights(a)
    base += aux_loss_args(weights)
    parse = aux_loss_args(weights, ("text_parse", "text_parse_own"))
    f32 = ["--f32"] if a.f32 else []
    base += f32
    pack, refs = os.path.join(out, "pack"), os.path.join(out, "pack_refs")
    # the reference stage trains on a varied base run's own latent cache (stage_refs --run)
    run_cache = ["--run", out] if a.world == "varied" else []
    loras = os.path.join(out, "loras")
    out_list = [("base", os.path.join(pack, "moonreel_pack.json"), base + smoke),
                ("refs", os.path.join(refs, "moonreel_pack.json"),
                 ["tools.train.stage_refs", "--seed", str(a.seed), "--pack", pack] + run_cache
                 + ["--out", os.path.join(out, "refs"), "--export", refs]
                 + (["--steps", str(a.refs_steps)] if a.refs_steps else []) + parse + f32 + smoke)]
    for e in sorted(EFFECTS):
        out_list.append((f"effect {e}", os.path.join(loras, f"{e}.safetensors"),
                         ["tools.train.stage_effect", "--effect", e, "--seed", str(a.seed), "--pack", refs,
                          "--out", os.path.join(out, f"fx_{e}"), "--export", os.path.join(loras, f"{e}.safetensors")]
                         + f32 + smoke))
    out_list.append(("effect decoder", os.path.join(out, "final", "moonreel_pack.json"),
                     ["tools.train.stage_effect_dec", "--pack", refs, "--loras", loras, "--out",
                      os.path.join(out, "fx_dec"), "--export", os.path.join(out, "final")] + smoke))
    return out_list


def run_module(args: Sequence[str]) -> int:
    return subprocess.call([sys.executable, "-m", *args], cwd=ROOT)


def main(argv=None, run: Callable[[Sequence[str]], int] = run_module) -> int:
    ap = argparse.ArgumentParser(description="train the whole default pack: base, references, effects, decoder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", choices=WORLDS, default="varied")
    ap.add_argument("--p-two", type=float, default=0.5, help="varied world: the fraction of two-object clips "
                    "(train.py checks it)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the base run (recorded in it)")
    ap.add_argument("--probe-every", type=int, default=0, help="the base run's DiT probes (train.py)")
    ap.add_argument("--clips", type=int, default=0, help="the base run's latent cache size (train.py; 0: its default)")
    ap.add_argument("--dit-steps", type=int, default=0, help="the base run's DiT steps (train.py; 0: its default)")
    ap.add_argument("--dit", action="append", default=[], metavar="FIELD=VALUE",
                    help="the base run's DiT size and patch (train.py's --dit; repeatable)")
    ap.add_argument("--refs-steps", type=int, default=0,
                    help="the reference stage's steps (stage_refs --steps; 0: its default). Size it to the "
                         "issue's 90 minutes from the stage's step time on the machine")
    ap.add_argument("--vae-from", metavar="PACK", default="", help="the base run takes this pack's VAE (train.py)")
    add_aux_loss_flags(ap, "base run (the parse losses: and reference stage): ")
    ap.add_argument("--f32", action="store_true",
                    help="float32 forward passes in every stage (CPUs without bfloat16 kernels)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="every stage for a few steps (a pipeline check)")
    ap.add_argument("--dry-run", action="store_true", help="print the stages and stop")
    a = ap.parse_args(argv)
    for name, done, args in stages(a):
        state = "done" if os.path.exists(done) else "to run"
        print(f"pipeline: {name}: {state}: /usr/bin/python3 -m {' '.join(args)}", flush=True)
        if a.dry_run or state == "done":
            continue
        rc = run(args)
        if rc != 0:
            print(f"pipeline: the {name} stage failed (exit {rc}); its log is in its folder; "
                  "the same command resumes it", file=sys.stderr)
            return 1
        if not os.path.exists(done):
            print(f"pipeline: the {name} stage ended without {done}", file=sys.stderr)
            return 1
    if not a.dry_run:
        final = os.path.join(a.out, "final")
        print(f"pipeline: done. Score the pack through the engine:\n"
              f"  /usr/bin/python3 -m tools.score --pack {final} --gate --reference\n"
              f"  /usr/bin/python3 -m tools.score --pack {final} --r2v 40 --ti2v-varied 40\n"
              f"then put it in place (models/default <- {final}; recipes/templates/loras <- "
              f"{os.path.join(a.out, 'loras')}, the templates' sha256 fields with them) and score the effects:\n"
              f"  /usr/bin/python3 -m tools.score --effects 24")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
