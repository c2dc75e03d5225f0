"""Stage 4: references. Teaches the finished DiT and text encoder Phantom-style reference
images, on a world closer to what users bring (shades and sizes varied, two objects).

    /usr/bin/python3 -m tools.train.stage_refs --pack models/default --out runs/refs
    /usr/bin/python3 -m tools.train.stage_refs --pack models/default --out runs/refs --export models/default

Method (Phantom-Wan, on Wan 2.2 TI2V's per-token timesteps): each reference image is
VAE-encoded alone (one latent frame) and appended after the video's latent frames; its tokens
get t = 0 and stay clean; the loss is on the video frames only. A caption names the objects by
reference ("the first object moving right and the second object moving up on a black
background"): their colours and shapes must come from the references, in order. For
guidance the references are dropped (their latents zero) with probability p_drop_refs and
the caption with p_uncond, independently, so one model gives the three passes of Phantom's
guidance: text + references, references only, neither.

Half the steps keep the earlier tasks (T2V, TI2V first frame) on the varied world, with one-
and two-object captions, so the pack keeps its T2V and TI2V gates.

The tokenizer is retrained on every caption form (the old one had no 'j' and split "object"
into letters); the text encoder's embedding rows of pieces both vocabularies hold are kept,
a new piece starts from the mean of the old pieces that spelled it.

Resumable like every stage: refs_cache.pt (the latent cache, in parts), refs_ckpt.pt.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import time
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..tinyworld import ClipSpec, canonical_caption, sample_caption, sample_spec
from ..tinyworld.captions import all_caption_texts, ref_caption, sample_caption2
from ..tinyworld.evalset import r2v_cases, reference_images
from ..tinyworld.world import sample_spec2, varied_clip
from . import ckpt, text_parse
from .data import Tokenizer, clips_tensor, encode_text, encode_text_masked, train_sentencepiece
from .config import cosine_horizon
from .stage_dit import EMA, shift_sigma
from .steps import flow_loss, optimizer_step


@dataclasses.dataclass
class RefsConfig:
    seed: int = 0
    # Sized for the issue's 90 minutes on two cores with a patch-1 base (runs/v7's DiT):
    # a step with no, one or two references measured 0.67, 0.82 and 0.97 s (two threads,
    # batch 16, the machine otherwise paused), 0.82 s in this mix; 5,500 steps are 75 min,
    # beside the cache of a base run's references and the 60-case score.
    steps: int = 5500
    batch: int = 16
    lr: float = 2e-4
    warmup: int = 200
    n_clips: int = 4000               # latent cache: varied clips with their references
    # A base run's folder (train.py's --out) whose latent cache the stage takes, with
    # references drawn and encoded for its clips, instead of encoding n_clips clips of its
    # own ("" for its own; then n_clips and p_two below size it).
    base_run: str = ""
    p_two: float = 0.6                # of the cache: two-object clips (the rest one object)
    p_refs: float = 0.55              # of the steps: with references (the rest T2V / TI2V)
    p_two_refs: float = 0.8           # of the reference steps: two references (else one)
    p_ref_caption: float = 0.85       # reference steps: caption by reference (else by colour and shape)
    p_drop_refs: float = 0.1          # references zeroed (the guidance's "no references" branch)
    p_uncond: float = 0.1             # empty caption
    p_i2v: float = 0.25               # first latent frame given clean (TI2V)
    ref_half: Tuple[float, float] = (0.2, 0.38)   # the reference object's half side / image side
    ref_offset: float = 4.0           # the reference object's centre within +-this many pixels
    # The retrained tokenizer splits the new words into short pieces: the longest caption
    # is 53 tokens, so the context grows from 32 rows to 64 (no weight depends on it).
    text_len: int = 64
    max_refs: int = 4                 # unused: the pack takes as many as its captions name (export)
    # guidance the pack recommends (Phantom: 5 for the images, 7.5 for the text)
    guide_img: float = 3.0
    guide_text: float = 5.0
    # (before step, count) pairs: the steps before `before` ran towards `count` (a run
    # whose --steps changed while it ran; config.cosine_horizon)
    extended: list = dataclasses.field(default_factory=list)
    ckpt_every_s: float = 300.0
    threads: int = 2
    bf16: bool = True
    # two-object clips and their references in reading order (config.TrainConfig.reading_order)
    reading_order: bool = True
    # the stage's tokenizer makes every caption word one piece (data.train_sentencepiece)
    whole_words: bool = True
    # the text encoder's parse losses (text_parse.py; pipeline.py passes the base run's), by
    # reference captions included: their tokens name their object's motion and index
    text_parse: float = 0.0
    text_parse_own: float = 0.0


# --------------------------------------------------------------------------- data

def cache_item(rc: "RefsConfig", i: int, frames: int, size: int):
    """The i-th clip of the cache (deterministic): (spec, clip, reference images)."""
    rng = np.random.default_rng([rc.seed, 7, i])
    spec = sample_spec2(rng) if rng.random() < rc.p_two else sample_spec(rng)
    clip = varied_clip(rng, spec, frames, size)
    return clip.spec, clip, reference_images(rng, clip.spec, size, rc.ref_half, rc.ref_offset)


def images_tensor(imgs: List[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] images -> [N, 3, 1, H, W] in [-1, 1]."""
    x = np.stack(imgs).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))[:, :, None]


def encode_refs(vae, ref_lists) -> torch.Tensor:
    """Each item's reference images encoded alone (one latent frame each): [n, 2, 16, h, w],
    zeros past an item's reference count."""
    z = vae.encode(images_tensor([img for refs in ref_lists for img in refs]), chunked=True)[:, :, 0]
    r, k = torch.zeros(len(ref_lists), 2, *z.shape[1:]), 0
    for b, refs in enumerate(ref_lists):
        r[b, :len(refs)] = z[k:k + len(refs)]
        k += len(refs)
    return r


def run_refs_item(rc: "RefsConfig", run, i: int):
    """The i-th clip of a base run's cache as cache_item gives one, without its clip: its
    varied spec (shades and sizes as rendered, so the references show the clip's own
    objects), None, and its reference images."""
    from .data import run_clip
    spec = run_clip(run, i).spec
    return spec, None, reference_images(np.random.default_rng([rc.seed, 11, i]), spec, run.size, rc.ref_half,
                                        rc.ref_offset)


def base_run(folder: str):
    """A base run's config for the stage's --run, refused in one line unless it is a varied
    run with one- and two-object clips and a latent cache."""
    from .config import TrainConfig, with_missing_settings
    if not os.path.exists(os.path.join(folder, "latents.pt")):
        raise SystemExit(f"--run {folder}: no latents.pt there (a base run's latent cache)")
    with open(os.path.join(folder, "config.json")) as f:
        run = TrainConfig.from_json(json.dumps(with_missing_settings(json.load(f))))
    if not run.reading_order:
        raise SystemExit(f"--run {folder}: a base run from before tinyworld's reading order of two objects; "
                         "its clips cannot be drawn again")
    if run.world != "varied" or not 0.0 < run.p_two < 1.0:
        raise SystemExit(f"--run {folder}: a varied-world run with one- and two-object clips "
                         f"(this one: --world {run.world} --p-two {run.p_two})")
    return run


@torch.no_grad()
def build_cache(rc: RefsConfig, vae, frames: int, size: int, path: str, log=print) -> dict:
    """Latents of the stage's clips [N, 16, F', h, w] and of their references
    [N, 2, 16, h, w] (zeros past a clip's object count), with specs; saved in parts.

    The clips are rc.n_clips of the stage's own (cache_item), or, with rc.base_run, a base
    run's own latent cache (its latents.pt, the clips its DiT learned: three times the
    stage's 4,000 for a run with --clips 12000), of which only the references are encoded."""
    run = base_run(rc.base_run) if rc.base_run else None
    lat = ckpt.load(os.path.join(rc.base_run, "latents.pt"))["latents"] if run else None
    n, batch = (lat.shape[0], 64) if run else (rc.n_clips, 8)
    st = ckpt.load(path) or {"lat": [], "refs": [], "specs": [], "seconds": 0.0}
    if not st.get("done"):
        t0, timer = time.time(), ckpt.Timer(rc.ckpt_every_s)
        n0 = len(st["specs"])
        if n0:
            log(f"refs cache: resumed at {n0}/{n}")
        for i in range(n0, n, batch):
            items = [run_refs_item(rc, run, j) if run else cache_item(rc, j, frames, size)
                     for j in range(i, min(n, i + batch))]
            if not run:
                st["lat"].append(vae.encode(clips_tensor([c for _, c, _ in items]), chunked=False))
            st["refs"].append(encode_refs(vae, [refs for _, _, refs in items]))
            st["specs"].extend(spec for spec, _, _ in items)
            if i % (50 * batch) == 0:
                log(f"refs cache {i}/{n} t={st['seconds'] + time.time() - t0:.0f}s")
            if timer.due():
                ckpt.save({**st, "seconds": st["seconds"] + time.time() - t0}, path)
                st["seconds"] += time.time() - t0
                t0 = time.time()
        st = {"lat": [torch.cat(st["lat"])] if st["lat"] else [], "refs": [torch.cat(st["refs"])],
              "specs": st["specs"], "seconds": st["seconds"] + time.time() - t0, "done": True}
        ckpt.save(st, path)
    return {**st, "lat": [lat]} if run else st


# --------------------------------------------------------------------------- tokenizer

def retrain_tokenizer(old_spiece: str, new_spiece: str, t5, vocab: int, whole_words: bool = True) -> dict:
    """A SentencePiece model on every caption form (one and two objects, by reference);
    the text encoder's embedding remapped to it. Returns figures for the log."""
    import sentencepiece as spm
    train_sentencepiece(new_spiece, vocab, all_caption_texts(two_objects=True), whole_words)
    old = spm.SentencePieceProcessor(model_file=old_spiece)
    new = spm.SentencePieceProcessor(model_file=new_spiece)
    if new.get_piece_size() > vocab:
        raise RuntimeError("SentencePiece vocabulary larger than the embedding")
    emb = t5.token_embedding.weight.data
    fresh = emb.clone()
    kept = 0
    for i in range(new.get_piece_size()):
        piece = new.id_to_piece(i)
        j = old.piece_to_id(piece)
        if old.id_to_piece(j) == piece and not (j == old.unk_id() and i != new.unk_id()):
            fresh[i] = emb[j]
            kept += 1
        else:
            ids = old.encode(piece.replace("\u2581", " "))
            fresh[i] = emb[ids].mean(0) if ids else emb[old.unk_id()]
    emb.copy_(fresh)
    return {"pieces": new.get_piece_size(), "kept": kept}


# --------------------------------------------------------------------------- training

def token_t(t: torch.Tensor, f_video: int, n_refs: int, hw: int, i2v: torch.Tensor) -> torch.Tensor:
    """[B] timesteps -> [B, L] per-token: video tokens t (frame 0 at 0 where i2v), reference
    tokens 0."""
    b = t.shape[0]
    tt = t[:, None].expand(-1, (f_video + n_refs) * hw).clone()
    tt[i2v, :hw] = 0.0
    tt[:, f_video * hw:] = 0.0
    return tt


def caption_for(rng, spec: ClipSpec, by_ref: bool) -> str:
    if by_ref:
        return ref_caption(rng, spec)
    if len(spec.objects) == 2:
        return sample_caption2(rng, spec)
    return sample_caption(rng, spec)


def train_refs(rc: RefsConfig, dit, t5, tok: Tokenizer, cache: dict, out_dir: str, log=print) -> dict:
    rng = np.random.default_rng([rc.seed, 8])
    gen = torch.Generator().manual_seed(rc.seed + 8)
    lat, refs, specs = cache["lat"][0], cache["refs"][0], cache["specs"]
    nobj = np.array([len(s.objects) for s in specs])
    pools = {1: np.nonzero(nobj == 1)[0], 2: np.nonzero(nobj == 2)[0]}
    params = list(dit.parameters()) + list(t5.parameters())
    opt = torch.optim.AdamW(params, lr=rc.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = EMA([dit, t5])
    heads = text_parse.Heads(t5.token_embedding.embedding_dim, rc.text_parse, rc.text_parse_own, rc.lr)
    path = os.path.join(out_dir, "refs_ckpt.pt")
    step, seconds = 0, 0.0
    st = ckpt.load(path)
    if st is not None:
        step, seconds = ckpt.dit_restore(st, dit, t5, ema, opt, rng, gen)
        heads.load(st)
        log(f"refs: resumed at step {step}")
    t0 = time.time()

    def save():
        state = ckpt.dit_state(dit, t5, ema, opt, rng, gen, step, seconds + time.time() - t0)
        state.update(heads.state())
        ckpt.save(state, path)

    _, _, F, H, W = lat.shape
    hw = (H // dit.patch_size[1]) * (W // dit.patch_size[2])
    timer = ckpt.Timer(rc.ckpt_every_s)
    dit.train()
    t5.train()
    while step < rc.steps:
        frac = step / cosine_horizon(step, rc.steps, rc.extended)
        lr = rc.lr * min(1.0, (step + 1) / rc.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups + heads.param_groups():
            g["lr"] = lr
        with_refs = rng.random() < rc.p_refs
        if with_refs:
            k = 2 if rng.random() < rc.p_two_refs else 1
            idx = rng.choice(pools[k], rc.batch)
        else:
            k = 0
            idx = rng.integers(0, len(specs), rc.batch)
        b = rc.batch
        x0 = lat[idx]
        texts, refs_named, r = [], [], torch.zeros(b, 16, k, H, W)
        for n, i in enumerate(idx):
            spec = specs[i]
            if k:
                # the references in the clip's order, which is reading order (the first
                # object left of the second: tinyworld.world.READING_GAP); the caption
                # names them in that order
                if rng.random() >= rc.p_drop_refs:
                    r[n] = refs[i, :k].permute(1, 0, 2, 3)
                by_ref = rng.random() < rc.p_ref_caption
            else:
                by_ref = False
            texts.append("" if rng.random() < rc.p_uncond else caption_for(rng, spec, by_ref))
            refs_named.append(by_ref)
        sigma = shift_sigma(torch.rand(b, generator=gen), 3.0)
        eps = torch.randn(x0.shape, generator=gen)
        s5 = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s5) * x0 + s5 * eps
        i2v = torch.rand(b, generator=gen) < rc.p_i2v
        xt[i2v, :, 0] = x0[i2v, :, 0]
        tt = token_t(sigma * 1000.0, F, k, hw, i2v)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=rc.bf16):
            ctx, mask = encode_text_masked(t5, tok, texts)
            v = dit(torch.cat([xt, r], dim=2), tt, ctx).float()[:, :, :F]
        loss = flow_loss(v, eps, x0, i2v)
        batch = [specs[i] for i in idx]
        parts = heads.losses(ctx, mask, batch, texts, text_parse.owner_table(tok.sp, batch, texts, ctx.shape[1]),
                             refs_named)
        heads.zero_grad()
        optimizer_step(opt, loss + heads.weighted(parts), params)
        heads.step()
        ema.update(step)
        if step % 100 == 0:
            log(f"refs step {step}/{rc.steps} t={seconds + time.time() - t0:.0f}s lr={lr:.2e} "
                f"refs={k} loss={float(loss):.4f}" + heads.describe(parts))
        step += 1
        if timer.due():
            save()
    save()
    return {"refs_steps": step, "refs_seconds": seconds + time.time() - t0, "ema": ema}


# --------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample_refs(dit, t5, tok, prompts, ref_lat: Optional[torch.Tensor], shape, seeds, steps=20, shift=3.0,
                guide_text=5.0, guide_img=3.0, negative="") -> torch.Tensor:
    """Euler flow matching with Phantom's three-pass guidance, references ref_lat
    [B, 16, R, h, w] appended clean (t = 0) and stripped at the end:
    v = v_neither + g_img (v_refs - v_neither) + g_text (v_refs_text - v_refs)."""
    from .stage_dit import sigmas
    b = len(prompts)
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    F, H, W = shape[1:]
    R = ref_lat.shape[2] if ref_lat is not None else 0
    hw = (H // dit.patch_size[1]) * (W // dit.patch_size[2])
    ctx_c = encode_text(t5, tok, list(prompts))
    ctx_u = encode_text(t5, tok, [negative] * b)
    zeros = torch.zeros(b, 16, R, H, W)
    sig = sigmas(steps, shift)
    for i in range(steps):
        s, s_next = float(sig[i]), float(sig[i + 1])
        t = torch.full((b,), float(int(s * 1000)))
        tt = token_t(t, F, R, hw, torch.zeros(b, dtype=torch.bool))
        xr = torch.cat([x, ref_lat], 2) if R else x
        xn = torch.cat([x, zeros], 2) if R else x
        v = dit(torch.cat([xr, xr, xn]), torch.cat([tt, tt, tt]), torch.cat([ctx_c, ctx_u, ctx_u]))[:, :, :F]
        v_rt, v_r, v_n = v[:b], v[b:2 * b], v[2 * b:]
        v = v_n + guide_img * (v_r - v_n) + guide_text * (v_rt - v_r)
        x = x + (s_next - s) * v
    return x


@torch.no_grad()
def eval_r2v(rc: RefsConfig, vae, dit, t5, tok, n: int, log=print, swap: bool = False) -> float:
    """Fraction of n cases whose two objects both show their reference's colour and shape
    and their prompt's motion (tools/tinyworld checker). swap: the references given in the
    other order (the prompt unchanged), so the objects must swap."""
    from ..tinyworld.checker import check_objects
    ok = 0
    for spec, imgs, sd in r2v_cases(rc.seed, n):
        order = [1, 0] if swap else [0, 1]
        z = vae.encode(images_tensor([imgs[j] for j in order]), chunked=True)[:, :, 0]   # [2, 16, h, w]
        prompt = ref_caption(None, spec)
        x = sample_refs(dit, t5, tok, [prompt], z.permute(1, 0, 2, 3)[None], (16, 5, 8, 8), [sd],
                        guide_text=rc.guide_text, guide_img=rc.guide_img)
        video = vae.decode(x, chunked=True).clamp(-1, 1)[0].numpy()
        objs = [spec.objects[j] for j in order]
        exp = [{"colour": o.colour, "shape": o.shape, "motion": m.motion} for o, m in zip(objs, spec.objects)]
        r = check_objects(video, exp)
        ok += r.ok
        if not r.ok:
            log(f"  miss: {prompt!r} refs {[(o.colour, o.shape) for o in objs]} seed {sd}: "
                + "; ".join(f"{a.colour}/{a.shape}/{a.motion}" for _, a, _ in r.objects))
    return ok / n


# --------------------------------------------------------------------------- the stage

def main(argv=None) -> int:
    from .export import load_pack
    ap = argparse.ArgumentParser(description="teach the default model reference images (Phantom-style)")
    ap.add_argument("--pack", default="models/default", help="the pack to start from")
    ap.add_argument("--out", default="runs/refs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--run", default="", help="a base run's folder (train.py's --out): train on its latent cache, "
                    "with references drawn for its clips, instead of encoding a cache of the stage's own")
    ap.add_argument("--export", help="write the resulting pack here when done")
    ap.add_argument("--eval", type=int, default=40, help="two-reference cases to score in PyTorch")
    ap.add_argument("--f32", action="store_true", help="forward in float32 (CPUs without bfloat16 kernels)")
    ap.add_argument("--text-parse", type=float, default=0.0, metavar="W",
                    help="weight of the text encoder's parse loss (text_parse.ParseHead)")
    ap.add_argument("--text-parse-own", type=float, default=0.0, metavar="W",
                    help="weight of the per-token parse loss (text_parse.OwnHead)")
    ap.add_argument("--smoke", action="store_true", help="a few steps of everything")
    a = ap.parse_args(argv)
    for flag, w in (("--text-parse", a.text_parse), ("--text-parse-own", a.text_parse_own)):
        if w < 0:
            raise SystemExit(f"{flag} {w}: a weight, 0 or more")
    rc = RefsConfig(seed=a.seed, base_run=a.run, bf16=not a.f32, text_parse=a.text_parse,
                    text_parse_own=a.text_parse_own)
    if a.run:
        base_run(a.run)                 # refused here, before the pack and the tokenizer
    if a.steps is not None:
        rc.steps = a.steps
    if a.smoke:
        rc.steps, rc.n_clips, a.eval = 2, 16, 2
    os.makedirs(a.out, exist_ok=True)
    cfg_path = os.path.join(a.out, "refs_config.json")
    if os.path.exists(cfg_path):
        # Resuming: the run's own settings. --steps may change while the stage is
        # unfinished: the steps already taken ran towards the old count, recorded in
        # `extended` (as tools/train/train.py does), so the config reproduces the run.
        with open(cfg_path) as f:
            old = json.load(f)
        old.setdefault("base_run", "")          # a stage from before the setting encoded its own cache
        old.setdefault("bf16", True)
        old.setdefault("whole_words", False)     # a stage from before kept the trainer's pieces
        old.setdefault("text_parse", 0.0)
        old.setdefault("text_parse_own", 0.0)
        if not old.get("reading_order", False):
            raise SystemExit(f"{cfg_path}: a stage from before tinyworld's reading order of two objects "
                             f"(its cache's references in a random order): start it again in another --out")
        rc.extended = [tuple(e) for e in old.get("extended", [])]
        if a.steps is None:
            rc.steps = old["steps"]
        elif a.steps != old["steps"]:
            if os.path.exists(os.path.join(a.out, "refs_done.pt")):
                raise SystemExit(f"{cfg_path}: the stage is finished; its step count stays {old['steps']}")
            st = ckpt.load(os.path.join(a.out, "refs_ckpt.pt"))
            at = st["step"] if st is not None else 0
            if at > 0:
                rc.extended.append((at, old["steps"]))
        new = json.loads(json.dumps(dataclasses.asdict(rc)))
        free = ("steps", "extended")
        if {k: v for k, v in old.items() if k not in free} != {k: v for k, v in new.items() if k not in free}:
            raise SystemExit(f"{cfg_path}: an earlier run with other settings is in {a.out}")
    with open(cfg_path, "w") as f:
        json.dump(dataclasses.asdict(rc), f, indent=1)
    torch.set_num_threads(rc.threads)
    torch.manual_seed(rc.seed)
    log = ckpt.logger(a.out)

    dit, vae, t5, spiece = load_pack(a.pack)
    with open(os.path.join(a.pack, "moonreel_pack.json")) as f:
        info = json.load(f)
    frames, size = info["frames"], info["size"]
    for p in vae.parameters():
        p.requires_grad_(False)
    # the tokenizer first: the text encoder's rows move with it (from the pack's, every time)
    new_spiece = os.path.join(a.out, "spiece.model")
    figs = retrain_tokenizer(spiece, new_spiece, t5, info["t5_config"]["vocab"], rc.whole_words)
    dit.text_len = rc.text_len
    tok = Tokenizer(new_spiece, dit.text_len)
    longest = max(len(tok.sp.encode(" ".join(t.split()))) + 1 for t in all_caption_texts(two_objects=True))
    if longest > dit.text_len:
        raise SystemExit(f"captions of {longest} tokens do not fit text_len {dit.text_len}")
    log(f"tokenizer: {figs['pieces']} pieces, {figs['kept']} rows kept; longest caption {longest} tokens")

    done_path = os.path.join(a.out, "refs_done.pt")
    done = ckpt.load(done_path)
    if done is not None:                      # a finished run: its EMA weights and figures
        dit.load_state_dict(done["dit"])
        t5.load_state_dict(done["t5"])
        log("refs metrics " + json.dumps(done["metrics"]))
        if a.export:
            from .export import export_refs_pack
            export_refs_pack(a.pack, a.export, dit.eval(), t5.eval(), new_spiece, rc, done["metrics"])
            log(f"wrote {a.export}")
        return 0
    cache = build_cache(rc, vae, frames, size, os.path.join(a.out, "refs_cache.pt"), log)
    log(f"refs cache: {len(cache['specs'])} clips in {cache['seconds']:.0f}s")
    r = train_refs(rc, dit, t5, tok, cache, a.out, log)
    ema = r.pop("ema")
    dit_e, t5_e = ema.shadow
    metrics = {"refs_steps": r["refs_steps"], "refs_seconds": r["refs_seconds"],
               "refs_cache_seconds": cache["seconds"]}
    t0 = time.time()
    metrics["r2v_checker_pass"] = eval_r2v(rc, vae, dit_e, t5_e, tok, a.eval, log)
    metrics["r2v_swapped_checker_pass"] = eval_r2v(rc, vae, dit_e, t5_e, tok, max(a.eval // 2, 1), log, swap=True)
    metrics["refs_eval_seconds"] = time.time() - t0
    log("refs metrics " + json.dumps(metrics))
    ckpt.save({"dit": dit_e.state_dict(), "t5": t5_e.state_dict(), "metrics": metrics}, done_path)
    if a.export:
        from .export import export_refs_pack
        export_refs_pack(a.pack, a.export, dit_e, t5_e, new_spiece, rc, metrics)
        log(f"wrote {a.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
