"""Train the default model from a seed, end to end, in one command:

    /usr/bin/python3 -m tools.train.train --seed 0 --out runs/default
    /usr/bin/python3 -m tools.train.train --smoke --out /tmp/smoke      # a few steps of everything

Stages: SentencePiece on the captions -> VAE (single frames, then whole clips; 5-frame windows
when asked) -> latent renormalisation -> the VAE gate (checker round trip) -> latent cache ->
DiT + text encoder (flow matching) -> decoder fine-tuning, in part on the DiT's
re-made latents -> evaluation (issue 5 gates) -> pack export.
Everything is seeded and counted in steps, so the run is the same on every machine. Run the
same command again after a kill and it resumes: each stage checkpoints into --out
(vae_ckpt.pt, vae_long_ckpt.pt, vae.pt, latents.pt, dit_ckpt.pt) and a finished stage is not repeated.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import time

import numpy as np
import torch

from ..tinyworld import all_caption_texts

from . import ckpt, grounding
from .config import TrainConfig, add_aux_loss_flags, aux_loss_weights, dit_overrides, with_missing_settings
from .data import WORLDS, Tokenizer, train_sentencepiece, train_spec
from .evaluate import (eval_t2v, eval_t2v2, eval_ti2v, eval_vae, probe_report, ti2v_first_frame_per_pair,
                       vae_checker_roundtrip)
from .export import export_pack
from .stage_dit import build_dit, build_t5, regenerate, train_dit
from .stage_vae import (build_vae, encode_latents, renormalize_latents, train_vae, train_vae_phase,
                        vae_decoder_phase)


# The stages a --<stage>-steps flag sizes, each with the file that marks it finished; a
# stage checkpoints into <stage>_ckpt.pt.
STAGES = {"vae_img": "vae.pt", "vae": "vae.pt", "vae_long": "vae.pt", "dit": "pack", "vae_dec": "vae_dec.pt"}


def check_vae_gate(cfg, metrics: dict) -> None:
    """Stop the run when the VAE's checker round trip is below cfg.vae_gate_roundtrip."""
    if metrics["vae_checker_roundtrip"] < cfg.vae_gate_roundtrip:
        fix = (f"the VAE of --vae-from {cfg.vae_from} does not serve this world; train one (no --vae-from)"
               if cfg.vae_from else "train the whole-clip phase longer (--vae-long-steps)")
        raise SystemExit(f"{cfg.out_dir}: the VAE's checker round trip {metrics['vae_checker_roundtrip']:.3f} "
                         f"is below the gate {cfg.vae_gate_roundtrip}; {fix}")


def check_vae_pack(path: str, cfg) -> None:
    """--vae-from: one line naming what is wrong, before any long work."""
    for name in ("moonreel_pack.json", "Wan2.1_VAE.pth"):
        if not os.path.isfile(os.path.join(path, name)):
            raise SystemExit(f"--vae-from {path}: no {name} (not a pack folder)")
    with open(os.path.join(path, "moonreel_pack.json")) as f:
        theirs = json.load(f).get("config", {}).get("vae")
    ours = json.loads(json.dumps(dataclasses.asdict(cfg.vae)))
    if theirs != ours:
        raise SystemExit(f"--vae-from {path}: its VAE is {theirs}, this run's is {ours}")


def pack_vae(cfg, vae, log) -> dict:
    """The VAE stage's stand-in: cfg.vae_from's weights, their file's sha256 in the metrics."""
    path = os.path.join(cfg.vae_from, "Wan2.1_VAE.pth")
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    vae.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu"))
    log(f"VAE from {path} (sha256 {digest[:16]}...)")
    return {"vae_from": cfg.vae_from, "vae_from_sha256": digest, "vae_seconds": 0.0}


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="train the moonreel default model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/default")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--vae-img-steps", type=int, default=None, help="image phase (one-frame clips), before the others")
    ap.add_argument("--vae-steps", type=int, default=None)
    ap.add_argument("--vae-long-steps", type=int, default=None)
    ap.add_argument("--dit-steps", type=int, default=None)
    ap.add_argument("--vae-dec-steps", type=int, default=None)
    ap.add_argument("--world", choices=WORLDS, default="palette",
                    help="the clips' world: the palette's (the shipped models') or varied shades and sizes "
                         "with two-object clips")
    ap.add_argument("--p-two", type=float, default=0.5, help="varied world: the fraction of two-object clips")
    ap.add_argument("--clips", type=int, default=None,
                    help="clips in the DiT's latent cache (default 4,000: the shipped run's); a setting of the run")
    ap.add_argument("--dit", action="append", default=[], metavar="FIELD=VALUE",
                    help="a DiTConfig field other than the shipped size (repeatable), e.g. patch_size=1,1,1 or "
                         "dim=128; a setting of the run")
    ap.add_argument("--probe-every", type=int, default=0,
                    help="DiT stage: score T2V, and two-object captions on a varied run, every N steps, in the log")
    ap.add_argument("--vae-from", metavar="PACK", default="",
                    help="take this pack's VAE instead of training one (renormalised, then gated)")
    ap.add_argument("--f32", action="store_true",
                    help="the DiT's forward in float32 (CPUs without bfloat16 kernels emulate it: ~16x slower measured)")
    add_aux_loss_flags(ap, "DiT stage, a setting of the run: ")
    ap.add_argument("--smoke", action="store_true", help="tiny run of every stage (pipeline check)")
    a = ap.parse_args(argv)
    cfg = TrainConfig(seed=a.seed, out_dir=a.out)
    if a.vae_from:
        cfg.vae_from = os.path.normpath(a.vae_from)
        if not os.path.exists(os.path.join(a.out, "vae.pt")):     # a run past its VAE stage needs no pack
            check_vae_pack(cfg.vae_from, cfg)
    if a.f32:
        cfg.dit_bf16 = False
    for field, w in aux_loss_weights(a).items():
        setattr(cfg, field, w)
    if a.world == "varied":
        if not 0.0 <= a.p_two <= 1.0:
            raise SystemExit(f"--p-two {a.p_two}: a fraction, 0 to 1")
        # Two-object and by-reference captions are longer: the tokenizer learns them all
        # (the reference stage's, so that stage keeps every row) and the context grows to
        # 64 rows (longest caption 53 tokens; no weight depends on it).
        cfg.world, cfg.p_two, cfg.dit.text_len = "varied", a.p_two, 64
    if a.dit:
        cfg.dit = dataclasses.replace(cfg.dit, **dit_overrides(a.dit))
    if a.threads is not None:
        cfg.threads = a.threads
    if a.clips is not None:
        if a.clips < 1:
            raise SystemExit(f"--clips {a.clips}: at least 1")
        cfg.n_latent_clips = a.clips
    # A step count given on a fresh run is a plain cosine to that count: the recorded
    # extensions of the shipped run (config.py) belong to its own counts.
    flags = {st: getattr(a, f"{st}_steps") for st in STAGES}
    for st, n in flags.items():
        if a.smoke:
            n = n or 2
        if n is not None:
            setattr(cfg, f"{st}_steps", n)
            setattr(cfg, f"{st}_extended", ())
    n_eval, n_ti2v, n_vae = 40, 8, 16
    if a.smoke:
        cfg.n_latent_clips, cfg.eval_steps, n_eval, n_ti2v, n_vae = 16, 2, 8, 1, 2
        cfg.vae_dec_regen_steps = (0, 1)
        cfg.vae_gate_roundtrip = 0.0
    torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)
    os.makedirs(cfg.out_dir, exist_ok=True)
    log = ckpt.logger(cfg.out_dir)

    cfg_path = os.path.join(cfg.out_dir, "config.json")
    extended = []
    if os.path.exists(cfg_path):
        # Resuming: the run's own settings. A stage's step count may be raised while that
        # stage is unfinished (--vae-steps / --dit-steps): its cosine schedule then runs to
        # the new count from where it is, so the same sequence of commands gives the same
        # weights; everything else must match.
        with open(cfg_path) as f:
            old = json.load(f)
        old = with_missing_settings(old)
        if not old["reading_order"]:
            raise SystemExit(f"{cfg_path}: a run from before tinyworld's reading order of two objects; "
                             "the world no longer draws its clips: start it again in another --out")
        cfg.whole_words = old["whole_words"]      # the tokenizer its weights were learnt with
        cfg.t5_init = old["t5_init"]              # and the initial weights
        for st, flag in flags.items():
            setattr(cfg, f"{st}_extended", tuple(tuple(e) for e in old.get(f"{st}_extended", ())))
            if flag is None:
                setattr(cfg, f"{st}_steps", old[f"{st}_steps"])
        new = json.loads(cfg.to_json())
        free = {f"{st}_{k}" for st in STAGES for k in ("steps", "extended")}
        if {k: v for k, v in old.items() if k not in free} != {k: v for k, v in new.items() if k not in free}:
            raise SystemExit(f"{cfg_path}: an earlier run with other settings is in {cfg.out_dir}; "
                             "resume it with the same flags or choose another --out")
        for st, finished in STAGES.items():
            key = f"{st}_steps"
            if new[key] != old[key]:
                if os.path.exists(os.path.join(cfg.out_dir, finished)):
                    raise SystemExit(f"{cfg_path}: the {st.upper()} stage is finished; "
                                     f"its step count stays {old[key]}")
                # The steps already taken ran towards the old count: recorded, so that
                # config.json alone reproduces the schedule.
                state = ckpt.load(os.path.join(cfg.out_dir, f"{st}_ckpt.pt"))
                at = state["step"] if state is not None else 0
                if at > 0:
                    setattr(cfg, f"{st}_extended", getattr(cfg, f"{st}_extended") + ((at, old[key]),))
                extended.append(f"{key} {old[key]} -> {new[key]} at step {at}")
    with open(cfg_path + ".tmp", "w") as f:
        f.write(cfg.to_json())
    os.replace(cfg_path + ".tmp", cfg_path)
    metrics: dict = {"machine": f"{os.cpu_count()} CPU cores, PyTorch {torch.__version__}, {cfg.threads} threads"}

    for e in extended:
        log(f"extended: {e}")

    # 0. tokenizer
    spiece = os.path.join(cfg.out_dir, "spiece.model")
    texts = all_caption_texts(two_objects=cfg.world == "varied")
    train_sentencepiece(spiece, cfg.t5.vocab, texts, cfg.whole_words)
    tok = Tokenizer(spiece, cfg.dit.text_len)
    if tok.sp.get_piece_size() > cfg.t5.vocab:
        raise RuntimeError("SentencePiece vocabulary larger than the embedding")
    longest = max(len(tok.sp.encode(" ".join(t.split()))) + 1 for t in texts)
    if longest > cfg.dit.text_len:
        raise SystemExit(f"captions of {longest} tokens do not fit text_len {cfg.dit.text_len}")
    log(f"sentencepiece: {tok.sp.get_piece_size()} pieces, longest caption {longest} tokens")

    # 1. VAE (vae.pt holds the finished, renormalised VAE and its metrics)
    vae = build_vae(cfg)
    done = ckpt.load(os.path.join(cfg.out_dir, "vae.pt"))
    if done is None:
        metrics.update(pack_vae(cfg, vae, log) if cfg.vae_from else train_vae(cfg, vae, log))
        t0 = time.time()
        vae.eval()
        metrics.update(renormalize_latents(cfg, vae))
        metrics["vae_psnr_holdout"] = eval_vae(cfg, vae, n_vae)
        metrics["vae_checker_roundtrip"] = vae_checker_roundtrip(cfg, vae, n_eval)
        metrics["vae_ti2v_first_frame"] = ti2v_first_frame_per_pair(cfg, vae, n_ti2v)
        metrics["vae_eval_seconds"] = time.time() - t0
        log(f"VAE gate: checker round trip {metrics['vae_checker_roundtrip']:.3f} "
            f"(needs {cfg.vae_gate_roundtrip}), TI2V first frame per pair "
            + " ".join(f"{v:.1f}" for v in metrics["vae_ti2v_first_frame"]) + " dB")
        # vae.pt is not written below the gate: the same command with a larger
        # --vae-long-steps goes on from the whole-clip checkpoint.
        check_vae_gate(cfg, metrics)
        ckpt.save({"model": vae.state_dict(), "metrics": metrics}, os.path.join(cfg.out_dir, "vae.pt"))
    else:
        vae.load_state_dict(done["model"])
        metrics.update(done["metrics"])
    vae.eval()
    log(f"VAE PSNR on held-out clips: {metrics['vae_psnr_holdout']:.2f} dB")
    for p in vae.parameters():
        p.requires_grad_(False)

    # 2. latent cache
    lat_path = os.path.join(cfg.out_dir, "latents.pt")
    cached = ckpt.load(lat_path)
    if cached is None:
        t0 = time.time()
        latents = encode_latents(cfg, vae, cfg.n_latent_clips, log)
        cached = {"latents": latents, "seconds": time.time() - t0}
        ckpt.save(cached, lat_path)
    latents = cached["latents"]
    metrics["latent_seconds"] = cached["seconds"]
    specs = [train_spec(cfg.seed, i, cfg.world, cfg.p_two) for i in range(cfg.n_latent_clips)]
    log(f"latents {tuple(latents.shape)} mean {float(latents.mean()):.3f} std {float(latents.std()):.3f}")

    # 3. DiT + text encoder
    torch.manual_seed(cfg.seed + 3)         # the same initial weights whether or not a stage resumed
    dit, t5 = build_dit(cfg), build_t5(cfg)
    n_probe = 8 if a.smoke else 24

    def probe(step, ema):
        d, t = ema.shadow
        if cfg.world == "varied":
            log(f"probe at dit step {step}: " + probe_report(cfg, vae, d, t, tok, n_probe, latents, specs))
        else:
            log(f"probe at dit step {step}: T2V {eval_t2v(cfg, vae, d, t, tok, n_probe, lambda _: None):.3f} "
                f"of {n_probe}")

    feet = (grounding.build_footprints(cfg, latents.shape[0], os.path.join(cfg.out_dir, "footprints.pt"), log)
            if cfg.grounding or cfg.object_head else None)
    r = train_dit(cfg, dit, t5, tok, latents, specs, log, probe, a.probe_every, feet)
    ema = r.pop("ema")
    metrics.update(r)
    dit_e, t5_e = ema.shadow

    # 3b. decoder fine-tuning (vae_dec.pt holds the result and its metrics)
    dec_path = os.path.join(cfg.out_dir, "vae_dec.pt")
    dec = ckpt.load(dec_path)
    if dec is None and cfg.vae_dec_steps > 0:
        vae.train()
        m = train_vae_phase(cfg, vae, vae_decoder_phase(cfg), log,
                            regen=functools.partial(regenerate, cfg, dit_e, t5_e, tok))
        vae.eval()
        t0 = time.time()
        m["vae_psnr_holdout_before_dec"] = metrics["vae_psnr_holdout"]
        m["vae_psnr_holdout"] = eval_vae(cfg, vae, n_vae)
        m["vae_dec_eval_seconds"] = time.time() - t0
        dec = {"model": vae.state_dict(), "metrics": m}
        ckpt.save(dec, dec_path)
    if dec is not None:
        vae.load_state_dict(dec["model"])
        metrics.update(dec["metrics"])
        log(f"VAE PSNR on held-out clips after decoder fine-tuning: {metrics['vae_psnr_holdout']:.2f} dB")
    vae.eval()

    # 4. evaluation with the EMA weights
    t0 = time.time()
    metrics["t2v_checker_pass"] = eval_t2v(cfg, vae, dit_e, t5_e, tok, n_eval, log)
    metrics["ti2v_first_frame_psnr"] = eval_ti2v(cfg, vae, dit_e, t5_e, tok, n_ti2v)
    if cfg.world == "varied":
        metrics["t2v2_checker_pass"] = eval_t2v2(cfg, vae, dit_e, t5_e, tok, n_eval, log)
        log(f"two objects by caption: {metrics['t2v2_checker_pass']:.3f} of {n_eval}")
    log(f"checker pass rate {metrics['t2v_checker_pass']:.3f}, TI2V first-frame PSNR "
        f"{metrics['ti2v_first_frame_psnr']:.2f} dB")

    metrics["eval_seconds"] = time.time() - t0

    # 5. export. The run's time is the sum of its stages' own clocks, which survive a
    # resume (the process's clock does not); None when a stage's time was not recorded.
    parts = [metrics.get(k) for k in ("vae_seconds", "vae_eval_seconds", "latent_seconds", "dit_seconds",
                                      "eval_seconds")]
    parts += [metrics.get(k, 0.0) for k in ("vae_dec_phase_seconds", "vae_dec_eval_seconds")]
    metrics["total_seconds"] = sum(parts) if None not in parts else None
    metrics.update(export_pack(cfg, os.path.join(cfg.out_dir, "pack"), dit_e, vae, t5_e, spiece, metrics,
                               reference_counts=(n_vae, n_ti2v, n_eval)))
    log("metrics " + json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
