"""Generate an independent conformance vector set (tests/conformance/extra).

Same kinds and file layout as the shared golden data (tests/conformance/data,
see its README): NAME.safetensors (weights, official key names, float32),
NAME.io.safetensors (inputs and expected outputs), NAME.json (`config` = the
constructor arguments, `io` notes, `seed`). Configurations, shapes and seeds
differ from the shared set, so the conformance runner is exercised on data it
was not written against.

    /usr/bin/python3 -m tools.wan_torch.make_vectors --seed 7321 --out tests/conformance/extra

The expected outputs come from our own PyTorch modules (t5.py, dit.py, vae.py),
which reproduce the official reference's vectors to ~1e-7 (verify.py). They are
run in float64: the modules cast to float32 in places (``.float()`` before norms,
softmax and modulation, as the reference does for its bf16 runs), so while the
outputs are computed ``Tensor.float`` is made to leave float64 tensors as they
are (a scoped patch, see ``_float64``). The inputs and weights are float32
values; the float64 run starts from exactly those values, and only the outputs
are rounded to float32 at the end. ``--selfcheck`` first runs the same float64
path on the shared official vectors and stops if it does not reproduce them.

Weights are random and, like the shared set's, larger than trained ones:
linear/embedding weights and biases N(0, 0.08^2), norm weights 1 + N(0, 0.08^2)
(T5, DiT); VAE conv weights/biases N(0, 0.15^2), norm gammas 1 + N(0, 0.15^2).
Everything is drawn from numpy Generators seeded by (seed, set index).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Dict

import numpy as np
import torch

from . import st
from .dit import WanModel, ti2v_timesteps
from .t5 import T5Encoder
from .vae import WanVAE

TAG = "extra"

T5_CONFIG = dict(vocab=500, dim=48, dim_attn=48, dim_ffn=64, num_heads=6, num_layers=3,
                 num_buckets=32, shared_pos=False, dropout=0.0)
T5_LEN, T5_VALID = 27, 19

_DIT_COMMON = dict(patch_size=[1, 2, 2], window_size=[-1, -1], qk_norm=True, cross_attn_norm=True, eps=1e-6)
# 5 heads of 16; odd token grid (5 x 3 x 5), context shorter than text_len (padded)
T2V_CONFIG = dict(model_type="t2v", text_len=24, in_dim=16, dim=80, ffn_dim=96, freq_dim=48,
                  text_dim=40, out_dim=16, num_heads=5, num_layers=2, **_DIT_COMMON)
T2V_LATENT, T2V_CTX = (16, 5, 6, 10), 13
# Wan 2.2 TI2V layout: 48 latent channels; 2 heads of 24; 3 layers; context exactly text_len
TI2V_CONFIG = dict(model_type="ti2v", text_len=20, in_dim=48, dim=48, ffn_dim=80, freq_dim=64,
                   text_dim=24, out_dim=48, num_heads=2, num_layers=3, **_DIT_COMMON)
TI2V_LATENT, TI2V_CTX = (48, 3, 10, 6), 20
# Spatial patch 1 (every latent pixel a token, as a DiT for small frames may choose); the
# default model's 16 latent channels and per-token timesteps; odd grid 3 x 5 x 7 = 105
P1_CONFIG = dict(TI2V_CONFIG, in_dim=16, out_dim=16, dim=64, ffn_dim=96, num_heads=2, num_layers=2, text_len=12,
                 patch_size=[1, 1, 1])
P1_LATENT, P1_CTX = (16, 3, 5, 7), 9

VAE_CONFIG = dict(dim=4, z_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True], dropout=0.0)
VAE_VIDEO = (1, 3, 9, 24, 40)     # T = 4k+1, H and W multiples of 8


# ---------------------------------------------------------------- float64 run

@contextlib.contextmanager
def _float64():
    """While active, ``t.float()`` returns float64 tensors unchanged (other dtypes
    are converted as usual), so the modules' float32 casts do not cut precision."""
    orig = torch.Tensor.float

    def keep64(self, *args, **kwargs):
        if self.dtype == torch.float64:
            return self
        return orig(self, *args, **kwargs)

    torch.Tensor.float = keep64
    try:
        yield
    finally:
        torch.Tensor.float = orig


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64).reshape(a.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _load(module: torch.nn.Module, weights: Dict[str, np.ndarray]) -> torch.nn.Module:
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise KeyError(f"state dict mismatch: missing {missing[:8]} unexpected {unexpected[:8]}")
    return module.eval()


# ---------------------------------------------------------------- weights

def random_weights(module: torch.nn.Module, rng: np.random.Generator, scale: float) -> Dict[str, np.ndarray]:
    """Every state-dict tensor of `module` drawn at random, float32: norm weights
    (T5/Wan RMS and layer norms, VAE gammas) around 1, everything else around 0."""
    out = {}
    for name, p in module.state_dict().items():
        shape = tuple(p.shape)
        z = rng.standard_normal(shape) * scale
        leaf = name.rsplit(".", 1)
        is_norm = name.endswith(".gamma") or (
            leaf[-1] == "weight" and (leaf[0].rsplit(".", 1)[-1].startswith("norm")))
        out[name] = (1.0 + z if is_norm else z).astype(np.float32)
    return out


def _write(outdir: str, name: str, config: dict, io_notes: dict, seed, weights, io) -> None:
    st.save(os.path.join(outdir, name + ".safetensors"), weights)
    st.save(os.path.join(outdir, name + ".io.safetensors"), io)
    meta = {"config": config, "io": io_notes, "seed": seed,
            "generator": "tools/wan_torch/make_vectors.py (our verified PyTorch modules, float64)"}
    with open(os.path.join(outdir, name + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------- sets

def make_t5(outdir: str, seed: int, index: int) -> list:
    rng = np.random.default_rng([seed, index])
    m = T5Encoder(**T5_CONFIG)
    w = random_weights(m, rng, 0.08)
    _load(m, w)
    ids = np.zeros((1, T5_LEN), np.int64)
    ids[0, :T5_VALID] = rng.integers(1, T5_CONFIG["vocab"], T5_VALID)
    mask = np.zeros((1, T5_LEN), np.int64)
    mask[0, :T5_VALID] = 1
    with torch.no_grad():
        out32 = m(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        with _float64():
            out = m.double()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    name = f"t5_encoder_{TAG}"
    _write(outdir, name, T5_CONFIG,
           {"ids": f"[1,L] token ids, 0 = pad (L = {T5_LEN}, {T5_VALID} real tokens)",
            "mask": "[1,L] 1 = real token",
            "out": "[1,L,dim] encoder states (positions past the mask are not used by Wan)"},
           [seed, index], w, {"ids": ids, "mask": mask, "out": out.astype(np.float32)})
    return [(name, "out", out, out32)]


def make_dit(outdir: str, seed: int, index: int, config: dict, latent, ctx_len: int, name: str) -> list:
    rng = np.random.default_rng([seed, index])
    m = WanModel(**config)
    w = random_weights(m, rng, 0.08)
    _load(m, w)
    x = rng.standard_normal(latent).astype(np.float32)
    context = rng.standard_normal((ctx_len, config["text_dim"])).astype(np.float32)
    t_val = np.float32(np.round(rng.uniform(50.0, 950.0), 3))
    p = config["patch_size"]
    grid = (latent[1] // p[0], latent[2] // p[1], latent[3] // p[2])
    seq_len = grid[0] * grid[1] * grid[2]
    if config["model_type"] == "ti2v":
        # per-token timesteps, the first latent frame's tokens clean (t = 0)
        t = ti2v_timesteps(torch.tensor([t_val]), grid).numpy().astype(np.float32)     # [1, L]
        t_note = "[1,seq_len] per-token timestep; the first latent frame tokens are 0"
    else:
        t = np.array([t_val], np.float32)
        t_note = "[1] timestep"
    with torch.no_grad():
        args = (torch.from_numpy(x)[None], torch.from_numpy(t), torch.from_numpy(context)[None])
        out32 = m(*args, seq_len=seq_len)[0].numpy()
        with _float64():
            out = m.double()(*(a.double() for a in args), seq_len=seq_len)[0].numpy()
    _write(outdir, name, config,
           {"x": "[C,F,H,W] noisy latent", "t": t_note,
            "context": "[L,text_dim] text states, L <= text_len",
            "out": "[C,F,H,W] flow prediction", "seq_len": seq_len},
           [seed, index], w, {"x": x, "t": t, "context": context, "out": out.astype(np.float32)})
    return [(name, "out", out, out32)]


def make_vae(outdir: str, seed: int, index: int) -> list:
    rng = np.random.default_rng([seed, index])
    z = VAE_CONFIG["z_dim"]
    mean = (rng.standard_normal(z) * 0.05).astype(np.float32)
    std = rng.uniform(1.0, 3.0, z).astype(np.float32)
    m = WanVAE(**VAE_CONFIG, mean=mean.tolist(), std=std.tolist())
    w = random_weights(m, rng, 0.15)
    _load(m, w)
    video = rng.uniform(-1.0, 1.0, VAE_VIDEO).astype(np.float32)
    with torch.no_grad():
        lat32 = m.encode(torch.from_numpy(video)).numpy()
        with _float64():
            m64 = m.double()
            lat = m64.encode(torch.from_numpy(video).double()).numpy()
            latent = lat.astype(np.float32)
            # decode the stored (float32) latent, as the engine will
            dec = m64.decode(torch.from_numpy(latent).double()).numpy()
        dec32 = m.float().decode(torch.from_numpy(latent)).numpy()
    name = f"wan21_vae_{TAG}"
    _write(outdir, name, VAE_CONFIG,
           {"video": "[1,3,T,H,W] in [-1,1], T=4k+1",
            "latent": "[1,z,1+(T-1)/4,H/8,W/8] = (mu-mean)/std",
            "decoded": "decode(latent): [1,3,T,H,W] (not clamped)",
            "mean": "[z] latent mean used for the normalisation",
            "std": "[z] latent std used for the normalisation"},
           [seed, index], w,
           {"video": video, "latent": latent, "decoded": dec.astype(np.float32), "mean": mean, "std": std})
    return [(name, "latent", lat, lat32), (name, "decoded", dec, dec32)]


# ---------------------------------------------------------------- self-check

def selfcheck(d: str) -> bool:
    """The float64 path on the shared official vectors must reproduce them (< 1e-4)."""
    from . import verify
    ok = True
    for name in ["t5_encoder_tiny", "wan21_dit_t2v_tiny", "wan22_dit_ti2v_tiny", "wan21_vae_tiny"]:
        meta, w, io = verify._load(d, name)
        cfg = meta["config"]
        with torch.no_grad(), _float64():
            if name.startswith("t5_"):
                m = _load(T5Encoder(**cfg), w).double()
                got = {"out": m(torch.from_numpy(io["ids"]), torch.from_numpy(io["mask"]))}
            elif name.startswith("wan21_vae"):
                m = _load(WanVAE(**cfg, mean=io["mean"].tolist(), std=io["std"].tolist()), w).double()
                got = {"latent": m.encode(torch.from_numpy(io["video"]).double()),
                       "decoded": m.decode(torch.from_numpy(io["latent"]).double())}
            else:
                m = _load(WanModel(**cfg), w).double()
                out = m(torch.from_numpy(io["x"])[None].double(), torch.from_numpy(io["t"]).double(),
                        torch.from_numpy(io["context"])[None].double(), seq_len=meta["io"].get("seq_len"))
                got = {"out": out[0]}
        for key, v in got.items():
            e = _rel(v.numpy(), io[key])
            ok &= e < 1e-4
            print(f"selfcheck {name:22s} {key:8s} float64 vs official rel_l2={e:.3e} {'PASS' if e < 1e-4 else 'FAIL'}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7321)
    ap.add_argument("--out", default="tests/conformance/extra", help="output folder (wan/ is created in it)")
    ap.add_argument("--selfcheck", default=None, metavar="DIR",
                    help="first check the float64 path on the official vectors in DIR (e.g. tests/conformance/data/wan)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.selfcheck and not selfcheck(a.selfcheck):
        print("selfcheck failed: not writing vectors")
        return 1
    outdir = os.path.join(a.out, "wan")
    os.makedirs(outdir, exist_ok=True)
    rows = []
    rows += make_t5(outdir, a.seed, 0)
    rows += make_dit(outdir, a.seed, 1, T2V_CONFIG, T2V_LATENT, T2V_CTX, f"wan21_dit_t2v_{TAG}")
    rows += make_dit(outdir, a.seed, 2, TI2V_CONFIG, TI2V_LATENT, TI2V_CTX, f"wan22_dit_ti2v_{TAG}")
    rows += make_vae(outdir, a.seed, 3)
    rows += make_dit(outdir, a.seed, 4, P1_CONFIG, P1_LATENT, P1_CTX, f"wan22_dit_ti2v_patch1_{TAG}")
    for name, key, ref, f32 in rows:
        print(f"{name:24s} {key:8s} shape {str(tuple(ref.shape)):22s} std {ref.std():.3f}  "
              f"float32 run vs float64 rel_l2={_rel(f32, ref):.2e}")
    total = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    print(f"wrote {outdir} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
