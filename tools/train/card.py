"""The model card of a pack (README.md), written from what the pack records and
what was measured, so that no figure in it is typed by hand:

- moonreel_pack.json: the training configuration, the stage times, the PyTorch
  evaluation of the run (metrics) and the parameter counts;
- a scores file from `python3 -m tools.score --json FILE`: the same gates
  measured through the engine (what a user gets).

    /usr/bin/python3 -m tools.train.card --pack models/default --scores scores.json
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional

GATES = {"vae": 30.0, "t2v": 0.90, "ti2v_psnr": 25.0, "ti2v": 0.90, "r2v": 0.90}


def _dur(seconds) -> str:
    if seconds is None:
        return "not recorded"
    if seconds < 60:
        return f"{seconds:.0f} s"
    m = int(round(seconds / 60))
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


def _db(x) -> str:
    return "—" if x is None else f"{x:.2f} dB"


def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "—"


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _regen(cfg: dict) -> str:
    """The decoder phase's generated latents, as the card's table says them."""
    if not cfg.get("vae_dec_generated"):
        return ""
    lo, hi = cfg["vae_dec_regen_steps"]
    return (f"; {_pct(cfg['vae_dec_generated'])} of its clips decoded from the latent the DiT's sampler "
            f"makes of theirs, denoised from step {lo}–{hi} of its {cfg['eval_steps']}")


def render(info: dict, scores: Optional[dict] = None) -> str:
    cfg, m, d = info["config"], info.get("metrics", {}), info["defaults"]
    p = info.get("params", {})
    v, t5, dit = cfg["vae"], cfg["t5"], cfg["dit"]
    lines = [
        f"# {info['name']}: the moonreel default model",
        "",
        "A small model of exactly the Wan 2.2 TI2V structure (DiT with per-token timesteps, Wan 2.1",
        "VAE, umT5 text encoder; official file layout and key names), trained from scratch by",
        "`tools/train` on **tinyworld**, a procedural world of short clips: one object (circle, square,",
        "triangle; red, green, blue, yellow, white, purple) on a plain background (black, gray, dark",
        "blue) moving left, right, up or down, growing, shrinking or staying still, with captions in",
        "several phrasings." + (" A second stage taught it two objects, shades and sizes off the palette, and "
                                "reference images (Phantom-style: `recipes/r2v.lua`)." if info.get("references") else "")
        + " It knows nothing else. It is moonreel's default pack",
        "(`build/moonreel recipes/t2v.lua` with no `--model`) and the end-to-end oracle of the tests:",
        "what it generates can be checked automatically (`tools/tinyworld/checker.py`).",
        "",
        "This file is written by `python3 -m tools.train.card` from `moonreel_pack.json` and the",
        "engine scores; do not edit it by hand.",
        "",
        "## Model",
        "",
        "| part | structure | parameters | file |",
        "| --- | --- | --- | --- |",
        f"| DiT | `model_type` {dit['model_type']}, dim {dit['dim']}, {dit['num_layers']} layers, "
        f"{dit['num_heads']} heads, ffn {dit['ffn_dim']}, patch {'×'.join(map(str, dit['patch_size']))}, "
        f"text_len {dit['text_len']} | {_n(p.get('dit'))} | `diffusion_pytorch_model.safetensors` (f16) |",
        f"| VAE | Wan 2.1, base width {v['dim']}, dim_mult {tuple(v['dim_mult'])}, z_dim {v['z_dim']} "
        f"| {_n(p.get('vae'))} | `Wan2.1_VAE.pth` (f32) |",
        f"| text encoder | umT5, dim {t5['dim']}, {t5['num_layers']} layers, {t5['num_heads']} heads, "
        f"vocab {t5['vocab']} | {_n(p.get('t5'))} | `models_t5_umt5-xxl-enc-bf16.pth` (bf16) |",
        "| tokenizer | SentencePiece unigram trained on the captions | | `google/umt5-xxl/spiece.model` |",
        "",
        f"Video: {cfg['size']}×{cfg['size']} pixels, {cfg['frames']} frames, {d['fps']} fps. Sampling "
        f"defaults: {d['sampler']}, {d['steps']} steps, shift {d['shift']}, guidance {d['guide']}, "
        "empty negative prompt.",
        "",
        "## Training",
        "",
        f"One command, from seed {cfg['seed']}: `/usr/bin/python3 -m tools.train.train --seed {cfg['seed']} "
        "--out runs/default`, then `python3 -m tools.train.export --run runs/default --out models/default`",
        "(docs/default-model.md). Fresh clips are rendered for every step; held-out clips and the",
        "evaluation pairs come from other seeds.",
        "",
        "| stage | steps | time |",
        "| --- | --- | --- |",
    ]
    mix = cfg.get("vae_long_mix_frames")
    gate = cfg.get("vae_gate_roundtrip")
    if cfg.get("vae_from"):     # no VAE stage ran: the pack it came from instead of its phases
        sha = m.get("vae_from_sha256") or "—"
        lines += [f"| VAE: none trained; the pack `{cfg['vae_from']}`'s (`Wan2.1_VAE.pth`, sha256 {sha[:16]}…) | | |"]
    else:
        if cfg.get("vae_img_steps"):
            lines += [f"| VAE, images (batch {cfg['vae_img_batch']} single frames, lr {cfg['vae_img_lr']}) "
                      f"| {_n(m.get('vae_img_phase_steps'))} | {_dur(m.get('vae_img_phase_seconds'))} |"]
        if cfg.get("vae_steps"):
            lines += [f"| VAE, windows (batch {cfg['vae_batch']} × {cfg['vae_frames']} frames, lr {cfg['vae_lr']}, "
                      f"object-weighted loss) | {_n(m.get('vae_phase_steps'))} | {_dur(m.get('vae_phase_seconds'))} |"]
        lines += [
            f"| VAE, whole clips (batch {cfg.get('vae_long_batch', '—')} × {cfg['frames']} frames"
            f"{f' + {mix} single frames' if mix else ''}, lr "
            f"{cfg.get('vae_long_lr', '—')}, first frame ×{cfg.get('vae_first_frame_weight', '—')}) "
            f"| {_n(m.get('vae_long_phase_steps'))} | {_dur(m.get('vae_long_phase_seconds'))} |"]
    lines += [
        "| latent renormalisation + held-out evaluation"
        f"{f' + the gate (checker round trip ≥ {_pct(gate)})' if gate else ''} "
        f"| | {_dur(m.get('vae_eval_seconds'))} |",
        f"| latent cache ({cfg['n_latent_clips']} clips) | | {_dur(m.get('latent_seconds'))} |",
        f"| DiT + text encoder (flow matching, batch {cfg['dit_batch']}, CFG dropout {cfg['p_uncond']}, "
        f"first-frame condition {cfg['p_i2v']}{', forward pass in bfloat16 autocast' if cfg.get('dit_bf16') else ''}) "
        f"| {_n(m.get('dit_steps'))} | {_dur(m.get('dit_seconds'))} |",
        f"| VAE decoder fine-tuning, encoder frozen (batch {cfg.get('vae_dec_batch', '—')} × {cfg['frames']} "
        f"frames, lr {cfg.get('vae_dec_lr', '—')}, first frame ×{cfg.get('vae_dec_first_frame_weight', '—')}, "
        f"a {cfg.get('vae_dec_fg_dilate', 0)}-pixel ring weighted like the object"
        f"{_regen(cfg)}) + evaluation "
        f"| {_n(m.get('vae_dec_phase_steps'))} "
        f"| {_dur((m['vae_dec_phase_seconds'] + m.get('vae_dec_eval_seconds', 0)) if 'vae_dec_phase_seconds' in m else None)} |",
        f"| evaluation (PyTorch) | | {_dur(m.get('eval_seconds'))} |",
        f"| **total** | | **{_dur(m.get('total_seconds'))}** |",
        "",
    ]
    rs = info.get("refs_stage")
    if rs:
        rc, rm = rs["config"], rs["metrics"]
        lines += [
            "Then the reference stage, from this pack: `/usr/bin/python3 -m tools.train.stage_refs --pack "
            "models/default --out runs/refs --export models/default` (seed "
            f"{rc['seed']}; docs/default-model.md):",
            "",
            "| stage | steps | time |",
            "| --- | --- | --- |",
            f"| tokenizer retrained on every caption form, the text encoder's rows remapped; latent cache "
            f"({rc['n_clips']} varied clips, {_pct(rc['p_two'])} with two objects, and their reference images) "
            f"| | {_dur(rm.get('refs_cache_seconds'))} |",
            f"| DiT + text encoder: {_pct(rc['p_refs'])} of the steps with references appended clean "
            f"(two in {_pct(rc['p_two_refs'])} of them), captions naming them by reference in "
            f"{_pct(rc['p_ref_caption'])}, references dropped {_pct(rc['p_drop_refs'])}, empty caption "
            f"{_pct(rc['p_uncond'])}; the rest T2V / TI2V on the varied world (batch {rc['batch']}, lr {rc['lr']}) "
            f"| {_n(rm.get('refs_steps'))} | {_dur(rm.get('refs_seconds'))} |",
            f"| evaluation (PyTorch, two-reference cases and swapped) | | {_dur(rm.get('refs_eval_seconds'))} |",
            "",
        ]
        for before, count in rc.get("extended", []):
            lines += [f"The reference stage's cosine learning-rate schedule ran towards {count:,} steps until step "
                      f"{before:,}, where its length was changed (recorded in its configuration).", ""]
    stages = info.get("effect_decoder_stages") or ([info["effect_decoder_stage"]] if info.get("effect_decoder_stage") else [])
    for n, fx in enumerate(stages):
        fc, fm = fx["config"], fx["metrics"]
        lo, hi = fc["regen_steps"]
        command = fx.get("command", "/usr/bin/python3 -m tools.train.stage_effect_dec --out runs/fx_dec --export models/default")
        light = ""
        if fc.get("p_light"):
            a, b = fc["light_range"]
            light = f"; {_pct(fc['p_light'])} of the effect and varied clips on a light gray of {a}–{b}"
        enc = fc.get("encoder", False)
        lines += [
            ("Then the VAE was fine-tuned again, for the effect templates' LoRAs" if n == 0 and enc else
             "Then the decoder was fine-tuned again, for the effect templates' LoRAs" if n == 0 else
             "Then that stage ran again on its own VAE" if enc else
             "Then that stage ran again on its own decoder") + f": `{command}` (seed {fc['seed']}; "
            "docs/default-model.md). " +
            ("The encoder was trained too, held to the earlier latents of the base world's clips (anchor weight "
             f"{fc['anchor']}); the DiT is unchanged, and effect LoRAs trained before this stage must be trained "
             "again on this VAE." if enc else "The encoder, the DiT and the LoRAs are unchanged."),
            "",
            "| stage | steps | time |",
            "| --- | --- | --- |",
            ("| VAE encoder and decoder" if enc else "| VAE decoder, encoder frozen") +
            f" (batch {fc['batch']} × {cfg['frames']} frames, lr {fc['lr']}; "
            f"{_pct(fc['p_effect'])} of the clips are effect clips, {_pct(fc.get('p_varied', 0))} of the others from "
            f"the varied world{light}; {_pct(fc['generated'])} of the clips decoded "
            "from the latent the DiT's sampler makes of theirs, with the effect's LoRA and the template's prompt "
            f"for an effect clip, denoised from step {lo}–{hi} of {cfg['eval_steps']}) "
            f"| {_n(fm.get('vae_fx_steps'))} | {_dur(fm.get('vae_fx_seconds'))} |",
            f"| evaluation (PyTorch) | | {_dur(fm.get('vae_fx_eval_seconds'))} |",
            "",
        ]
    for key, what in (("vae_img_extended", "VAE image phase"), ("vae_extended", "VAE window phase"), ("vae_long_extended", "VAE whole-clip phase"),
                      ("dit_extended", "DiT stage"), ("vae_dec_extended", "VAE decoder phase")):
        for before, count in cfg.get(key, []):
            lines += [f"The {what}'s cosine learning-rate schedule ran towards {count:,} steps until step "
                      f"{before:,}, where its length was changed (recorded in the configuration, so the "
                      "command reproduces it).", ""]
    if m.get("machine"):
        lines += [f"Times measured on {m['machine']}.", ""]
    lines += [
        "## Scores",
        "",
        "| gate | required | PyTorch, at the end of training | moonreel engine |",
        "| --- | --- | --- | --- |",
    ]
    s = scores or {}
    lines += [
        f"| VAE reconstruction PSNR, held-out clips | ≥ {GATES['vae']:.0f} dB | {_db(m.get('vae_psnr_holdout'))} "
        f"| {_db(s.get('vae_psnr'))}{' (%d clips)' % s['n_vae'] if s.get('n_vae') else ''} |",
        f"| T2V: colour, shape and motion match the prompt (checker) | ≥ {_pct(GATES['t2v'])} "
        f"| {_pct(m.get('t2v_checker_pass'))} | {_pct(s.get('t2v_pass'))}"
        f"{' (%d/%d)' % (s['t2v_ok'], s['n_t2v']) if s.get('n_t2v') else ''} |",
        f"| TI2V: first frame PSNR against the given image | ≥ {GATES['ti2v_psnr']:.0f} dB "
        f"| {_db(m.get('ti2v_first_frame_psnr'))} | {_db(s.get('ti2v_psnr'))} |",
        f"| TI2V: motion follows the prompt (checker) | ≥ {_pct(GATES['ti2v'])} | — | {_pct(s.get('ti2v_pass'))}"
        f"{' (%d/%d)' % (s['ti2v_ok'], s['n_ti2v']) if s.get('n_ti2v') else ''} |",
    ]
    if s.get("ti2v_varied_psnr") is not None:
        lines += [
            f"| TI2V on images off the palette and sizes: first frame PSNR | ≥ {GATES['ti2v_psnr']:.0f} dB | — "
            f"| {_db(s.get('ti2v_varied_psnr'))} |",
            f"| TI2V on images off the palette and sizes: checker | ≥ {_pct(GATES['ti2v'])} | — "
            f"| {_pct(s.get('ti2v_varied_pass'))} ({s.get('n_ti2v_varied')}) |"]
    if info.get("references"):
        rm = (info.get("refs_stage") or {}).get("metrics", {})
        lines += [
            f"| R2V, two references named only by reference: both objects with the references' colours and "
            f"shapes and the prompt's motions (checker) | ≥ {_pct(GATES['r2v'])} | {_pct(rm.get('r2v_checker_pass'))} "
            f"| {_pct(s.get('r2v_pass'))}{' (%d)' % s['n_r2v'] if s.get('n_r2v') else ''} |",
            f"| R2V with the references swapped: the objects swap | ≥ {_pct(GATES['r2v'])} "
            f"| {_pct(rm.get('r2v_swapped_checker_pass'))} | {_pct(s.get('r2v_swapped_pass'))}"
            f"{' (%d)' % s['n_r2v_swapped'] if s.get('n_r2v_swapped') else ''} |"]
    lines += [""]
    attr = s.get("t2v_attr")
    if attr:
        lines += ["T2V checker through the engine, by attribute: " +
                  ", ".join(f"{k} {_pct(attr[k])}" for k in ("colour", "shape", "motion")) + ".", ""]
    if m.get("vae_checker_roundtrip") is not None:
        lines += ["The true clips of the 40 T2V pairs, through the VAE alone (encode, decode), pass the checker "
                  f"{_pct(m['vae_checker_roundtrip'])} of the time: that is the most "
                  "the T2V score can reach through this VAE.", ""]
    if s.get("reference_max_diff_db") is not None:
        lines += ["The figures that do not depend on sampling noise (VAE PSNR per clip, TI2V first-frame PSNR",
                  "per pair) agree between the engine and PyTorch to within "
                  f"{s['reference_max_diff_db']:.1e} dB (`tools.score --reference`).", ""]
    ref = info.get("reference", {}).get("ti2v_first_frame_psnr")
    if ref:
        lines += [f"TI2V first-frame PSNR per pair (PyTorch reference, {len(ref)} pairs): "
                  + ", ".join(f"{x:.1f}" for x in ref) + " dB.", ""]
    unmet = [name for name, val, gate in (
        ("VAE PSNR", s.get("vae_psnr", m.get("vae_psnr_holdout")), GATES["vae"]),
        ("T2V checker", s.get("t2v_pass", m.get("t2v_checker_pass")), GATES["t2v"]),
        ("TI2V first frame", s.get("ti2v_psnr", m.get("ti2v_first_frame_psnr")), GATES["ti2v_psnr"]),
        ("TI2V checker", s.get("ti2v_pass"), GATES["ti2v"])) if val is not None and val < gate]
    if unmet:
        lines += ["**Below the required figures: " + ", ".join(unmet) + ".** See docs/default-model.md for",
                  "what was measured about why.", ""]
    lines += [
        "Engine figures: `python3 -m tools.score --pack models/default` (the pack's own defaults, through",
        "the `moonreel` CLI)" + (f", {s['seconds_per_job']:.1f} s per job on {s['device']}" if s.get("seconds_per_job")
                                 and s.get("device") else "") + ".",
        "",
        "## Limits",
        "",
        ("- One or two objects per clip (two only in the reference stage's captions), the world's shapes, "
         "colours, backgrounds and motions only; prompts outside" if info.get("references") else
         "- One object per clip, the world's shapes, colours, backgrounds and motions only; prompts outside"),
        "  the caption phrasings give arbitrary results.",
        f"- Trained at {cfg['size']}×{cfg['size']} and {cfg['frames']} frames; other sizes run but were never"
        " trained.",
        "- A test model: it shows that the engine computes what the Wan structure computes, not what a",
        "  released Wan checkpoint looks like.",
        "",
    ]
    return "\n".join(lines)


def write_card(pack: str, scores: Optional[dict] = None) -> str:
    with open(os.path.join(pack, "moonreel_pack.json")) as f:
        info = json.load(f)
    path = os.path.join(pack, "README.md")
    with open(path + ".tmp", "w") as f:
        f.write(render(info, scores))
    os.replace(path + ".tmp", path)
    return path


def read_scores(path: Optional[str]) -> Optional[dict]:
    """The engine figures written by `python3 -m tools.score --json PATH` (None: no file)."""
    if not path:
        return None
    with open(path) as f:
        return json.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="write a pack's model card (README.md)")
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--scores", help="figures from python3 -m tools.score --json FILE")
    a = ap.parse_args(argv)
    print(f"wrote {write_card(a.pack, read_scores(a.scores))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
