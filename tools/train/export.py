"""Write the trained model as a pack in the official Wan layout and names:

    <pack>/config.json                              DiT config (diffusers ConfigMixin style)
    <pack>/diffusion_pytorch_model.safetensors      DiT weights (official key names)
    <pack>/Wan2.1_VAE.pth                           VAE state dict (fp32)
    <pack>/models_t5_umt5-xxl-enc-bf16.pth          text encoder state dict (bf16 by default)
    <pack>/google/umt5-xxl/spiece.model             SentencePiece model
    <pack>/moonreel_pack.json                       name, sampling defaults, training provenance, metrics

    /usr/bin/python3 -m tools.train.export --run runs/default --out models/default

writes the pack of a finished (or checkpointed) run from its files: vae.pt, the EMA
weights in dit_ckpt.pt, spiece.model and config.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

from typing import Optional

import torch

from ..wan_torch import st
from .card import read_scores, write_card
from .evaluate import reference_figures, vae_checker_roundtrip

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _st_arrays(module, dtype: str):
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().float()
        if dtype == "f32":
            out[k] = v.numpy()
        elif dtype == "f16":
            out[k] = v.half().numpy()
        else:
            raise ValueError("safetensors export supports f32/f16 here; bf16 goes through torch")
    return out


SAMPLE_PROMPT = "a yellow square moving up on a gray background"


def pack_defaults(cfg) -> dict:
    """What mr.pack.load gives a run of this pack when a flag is not set: the sampling
    the trainer evaluated, at the training clip size; Wan's negative prompt means
    nothing to a model trained on our captions, so the unconditional branch is ""."""
    return {"steps": cfg.eval_steps, "guide": cfg.eval_guide, "shift": cfg.eval_shift, "sampler": "euler",
            "frames": cfg.frames, "width": cfg.size, "height": cfg.size, "fps": 8, "negative": "",
            "prompt": SAMPLE_PROMPT}


def export_pack(cfg, out: str, dit, vae, t5, spiece_path: str, metrics: dict,
                dit_dtype: str = "f16", t5_dtype: str = "bf16", scores: Optional[dict] = None,
                reference_counts=(16, 8, 40)) -> dict:
    """Write the pack into a temporary folder beside `out`, then put it in place: a
    failed export leaves the earlier pack (or nothing) there, never half a pack."""
    final = out.rstrip("/")
    out = final + ".tmp"
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "google", "umt5-xxl"))
    d = cfg.dit
    conf = {"_class_name": "WanModel", "_diffusers_version": "0.33.0", "dim": d.dim, "eps": d.eps,
            "ffn_dim": d.ffn_dim, "freq_dim": d.freq_dim, "in_dim": d.in_dim, "model_type": d.model_type,
            "num_heads": d.num_heads, "num_layers": d.num_layers, "out_dim": d.out_dim,
            "text_len": d.text_len, "patch_size": list(d.patch_size), "text_dim": cfg.t5.dim}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=1)
    if dit_dtype == "bf16":
        raise ValueError("use f16 or f32 for the DiT safetensors")
    st.save(os.path.join(out, "diffusion_pytorch_model.safetensors"), _st_arrays(dit, dit_dtype),
            {"format": "pt"})
    torch.save({k: v.detach().float().clone() for k, v in vae.state_dict().items()},
               os.path.join(out, "Wan2.1_VAE.pth"))
    torch.save({k: v.detach().to(DTYPES[t5_dtype]).clone() for k, v in t5.state_dict().items()},
               os.path.join(out, "models_t5_umt5-xxl-enc-bf16.pth"))
    shutil.copyfile(spiece_path, os.path.join(out, "google", "umt5-xxl", "spiece.model"))
    info = {"name": "moonreel-tinyworld", "defaults": pack_defaults(cfg),
            "config": json.loads(cfg.to_json()),
            "metrics": {**metrics, "vae_checker_roundtrip": vae_checker_roundtrip(cfg, vae, reference_counts[2])},
            "t5_config": {"vocab": cfg.t5.vocab, "dim": cfg.t5.dim, "dim_attn": cfg.t5.dim_attn,
                          "dim_ffn": cfg.t5.dim_ffn, "num_heads": cfg.t5.num_heads,
                          "num_layers": cfg.t5.num_layers, "num_buckets": cfg.t5.num_buckets},
            "frames": cfg.frames, "size": cfg.size,
            # per-item PyTorch figures the engine must reproduce (tools/score --reference)
            "reference": reference_figures(cfg, vae, *reference_counts[:2]),
            "params": {name: sum(p.numel() for p in m.parameters()) for name, m in
                       (("dit", dit), ("vae", vae), ("t5", t5))}}
    with open(os.path.join(out, "moonreel_pack.json"), "w") as f:
        json.dump(info, f, indent=1)
    write_card(out, scores)
    total = 0
    for root, _, files in os.walk(out):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in files)
    swap_in(out, final)
    return {"pack_bytes": total}


def swap_in(tmp: str, final: str) -> None:
    """The pack folder tmp becomes final whole (the earlier one, if any, removed): a killed
    export leaves the earlier pack or none under final, never a mix."""
    if os.path.exists(final):
        shutil.rmtree(final + ".old", ignore_errors=True)
        os.rename(final, final + ".old")
    os.rename(tmp, final)
    shutil.rmtree(final + ".old", ignore_errors=True)


def load_pack(path: str):
    """Read a pack back into our modules (dit, vae, t5, spiece path), as the engine would read it."""
    from ..wan_torch.dit import WanModel
    from ..wan_torch.t5 import T5Encoder
    from ..wan_torch.vae import WanVAE
    with open(os.path.join(path, "config.json")) as f:
        conf = json.load(f)
    with open(os.path.join(path, "moonreel_pack.json")) as f:
        info = json.load(f)
    w = st.load(os.path.join(path, "diffusion_pytorch_model.safetensors"))
    text_dim = w["text_embedding.0.weight"].shape[1]
    dit = WanModel(model_type=conf["model_type"], patch_size=tuple(conf.get("patch_size", (1, 2, 2))),
                   text_len=conf["text_len"], in_dim=conf["in_dim"], dim=conf["dim"], ffn_dim=conf["ffn_dim"],
                   freq_dim=conf["freq_dim"], text_dim=text_dim, out_dim=conf["out_dim"],
                   num_heads=conf["num_heads"], num_layers=conf["num_layers"], eps=conf["eps"])
    dit.load_state_dict({k: torch.from_numpy(v.astype("float32")) for k, v in w.items()})
    v = info["config"]["vae"]
    vae = WanVAE(dim=v["dim"], z_dim=v["z_dim"], dim_mult=tuple(v["dim_mult"]),
                 num_res_blocks=v["num_res_blocks"], temperal_downsample=tuple(v["temperal_downsample"]))
    vae.load_state_dict(torch.load(os.path.join(path, "Wan2.1_VAE.pth"), map_location="cpu"))
    t5 = T5Encoder(**info["t5_config"])
    t5.load_state_dict({k: x.float() for k, x in
                        torch.load(os.path.join(path, "models_t5_umt5-xxl-enc-bf16.pth"), map_location="cpu").items()})
    return dit.eval(), vae.eval(), t5.eval(), os.path.join(path, "google", "umt5-xxl", "spiece.model")


def main(argv=None) -> int:
    from .config import TrainConfig
    from .stage_dit import build_dit, build_t5
    from .stage_vae import build_vae
    ap = argparse.ArgumentParser(description="write the pack of a training run")
    ap.add_argument("--run", default="runs/default")
    ap.add_argument("--out", default="models/default")
    ap.add_argument("--scores", help="engine figures for the model card (python3 -m tools.score --json FILE)")
    a = ap.parse_args(argv)
    scores = read_scores(a.scores)
    with open(os.path.join(a.run, "config.json")) as f:
        cfg = TrainConfig.from_json(f.read())
    vae = build_vae(cfg)
    done = torch.load(os.path.join(a.run, "vae.pt"))
    vae.load_state_dict(done["model"])
    metrics = dict(done["metrics"])
    pack_info = os.path.join(a.run, "pack", "moonreel_pack.json")
    if os.path.exists(pack_info):             # the run's evaluation and stage times
        with open(pack_info) as f:
            metrics.update(json.load(f)["metrics"])
    # The checkpoints' own figures last: a run's pack may predate its decoder phase.
    if os.path.exists(os.path.join(a.run, "vae_dec.pt")):      # the fine-tuned decoder
        dec = torch.load(os.path.join(a.run, "vae_dec.pt"))
        vae.load_state_dict(dec["model"])
        metrics.update(dec["metrics"])
    st_dit = torch.load(os.path.join(a.run, "dit_ckpt.pt"))
    dit, t5 = build_dit(cfg), build_t5(cfg)
    dit.load_state_dict(st_dit["ema"][0])
    t5.load_state_dict(st_dit["ema"][1])
    metrics.update({"dit_steps": st_dit["step"], "dit_seconds": st_dit["seconds"]})
    info = export_pack(cfg, a.out, dit.eval(), vae.eval(), t5.eval(), os.path.join(a.run, "spiece.model"), metrics,
                       scores=scores)
    print(f"wrote {a.out}: {info['pack_bytes'] / 1e6:.1f} MB, DiT step {st_dit['step']} of {cfg.dit_steps}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def export_refs_pack(src: str, out: str, dit, t5, spiece_path: str, rc, metrics: dict) -> dict:
    """The pack of the references stage (tools/train/stage_refs.py): the source pack's VAE,
    the fine-tuned DiT and text encoder, the retrained tokenizer, config.json's text_len,
    and in moonreel_pack.json the reference method the recipes read ("references") with
    the stage's settings and figures. Written beside `out` and swapped in whole."""
    final = out.rstrip("/")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    with open(os.path.join(tmp, "config.json")) as f:
        conf = json.load(f)
    conf["text_len"] = dit.text_len
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(conf, f, indent=1)
    st.save(os.path.join(tmp, "diffusion_pytorch_model.safetensors"), _st_arrays(dit, "f16"), {"format": "pt"})
    torch.save({k: v.detach().to(torch.bfloat16).clone() for k, v in t5.state_dict().items()},
               os.path.join(tmp, "models_t5_umt5-xxl-enc-bf16.pth"))
    shutil.copyfile(spiece_path, os.path.join(tmp, "google", "umt5-xxl", "spiece.model"))
    with open(os.path.join(tmp, "moonreel_pack.json")) as f:
        info = json.load(f)
    import dataclasses
    # as many references as the stage taught (its captions name two), each named as they do
    from ..tinyworld.captions import REF_NAMES
    info["references"] = {"method": "phantom", "max": len(REF_NAMES), "canvas": "#ffffff",
                          "guide_img": rc.guide_img, "guide_text": rc.guide_text,
                          "names": [n[0] for n in REF_NAMES]}
    info["refs_stage"] = {"config": dataclasses.asdict(rc), "metrics": metrics}
    # the earlier DiT's PyTorch T2V figure no longer describes this one (the VAE's
    # figures, and TI2V frame 0, which the VAE alone makes, still do)
    stale = info["metrics"].pop("t2v_checker_pass", None)
    if stale is not None:
        info["metrics"]["t2v_checker_pass_before_refs"] = stale
    info["metrics"].update(metrics)
    info["config"]["dit"]["text_len"] = dit.text_len
    with open(os.path.join(tmp, "moonreel_pack.json"), "w") as f:
        json.dump(info, f, indent=1)
    swap_in(tmp, final)
    return info
