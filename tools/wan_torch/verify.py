"""Check our PyTorch modules against the conformance vectors.

Loads the official-layout weights from ../shared/conformance/wan (strict: every
key must match, no extra, no missing), runs the module on the stored inputs and
prints the relative L2 error ||out - ref|| / ||ref|| per output. PASS < 1e-4.

    /usr/bin/python3 -m tools.wan_torch.verify [--dir PATH]

The conformance directory is found as $MOONREEL_CONFORMANCE, else the first of
../shared/conformance/wan, tests/conformance/data/wan, /work/shared/conformance/wan.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np
import torch

from . import st
from .dit import WanModel
from .t5 import T5Encoder
from .vae import WanVAE

TOL = 1e-4
TOL_BF16 = 2e-2
NAMES = ["t5_encoder_tiny", "wan21_vae_tiny", "wan21_dit_t2v_tiny", "wan22_dit_ti2v_tiny"]


def find_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    cands = [os.environ.get("MOONREEL_CONFORMANCE", ""),
             os.path.join(repo, "..", "shared", "conformance", "wan"),
             os.path.join(repo, "tests", "conformance", "data", "wan"),
             "/work/shared/conformance/wan"]
    for c in cands:
        if c and os.path.exists(os.path.join(c, "wan21_dit_t2v_tiny.json")):
            return os.path.abspath(c)
    raise FileNotFoundError("conformance/wan not found; set MOONREEL_CONFORMANCE")


def rel_err(out: torch.Tensor, ref: np.ndarray) -> float:
    a = out.detach().double().numpy().reshape(ref.shape)
    r = ref.astype(np.float64)
    return float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-30))


def load_strict(module: torch.nn.Module, weights: Dict[str, np.ndarray]) -> None:
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise KeyError(f"state dict mismatch: missing {missing[:8]} unexpected {unexpected[:8]}")
    for k, v in module.state_dict().items():
        if tuple(v.shape) != tuple(weights[k].shape):
            raise KeyError(f"shape mismatch for {k}")


def _load(d: str, name: str):
    with open(os.path.join(d, name + ".json")) as f:
        meta = json.load(f)
    w = st.load(os.path.join(d, name + ".safetensors"))
    io = st.load(os.path.join(d, name + ".io.safetensors"))
    return meta, w, io


def run_one(d: str, name: str) -> List[tuple]:
    meta, w, io = _load(d, name)
    cfg = meta["config"]
    res: List[tuple] = []   # (what, rel_err[, tolerance])
    with torch.no_grad():
        if name.startswith("t5_"):
            m = T5Encoder(**cfg).eval()
            load_strict(m, w)
            ids = torch.from_numpy(io["ids"]).long()
            mask = torch.from_numpy(io["mask"]).long()
            out = m(ids, mask)
            n = int(mask.sum())
            res.append(("out", rel_err(out, io["out"])))
            res.append(("out[:len]", rel_err(out[:, :n], io["out"][:, :n])))
            pth = os.path.join(d, name + "-bf16.pth")
            if os.path.exists(pth):
                # the official T5 ships as a bf16 .pth: same weights, looser tolerance
                sd = torch.load(pth, map_location="cpu")
                load_strict(m, {k: v.float().numpy() for k, v in sd.items()})
                res.append(("out (bf16 .pth)", rel_err(m(ids, mask), io["out"]), TOL_BF16))
        elif name.startswith("wan21_vae"):
            m = WanVAE(**cfg, mean=io["mean"].tolist(), std=io["std"].tolist()).eval()
            load_strict(m, w)
            video = torch.from_numpy(io["video"])
            lat = m.encode(video, chunked=True)
            res.append(("latent", rel_err(lat, io["latent"])))
            dec = m.decode(torch.from_numpy(io["latent"]), chunked=True)
            res.append(("decoded", rel_err(dec, io["decoded"])))
            # the whole-sequence mode used for training must agree with the chunked one
            res.append(("latent (whole-seq)", rel_err(m.encode(video, chunked=False), io["latent"])))
            res.append(("decoded (whole-seq)",
                        rel_err(m.decode(torch.from_numpy(io["latent"]), chunked=False), io["decoded"])))
            pth = os.path.join(d, name + ".pth")
            if os.path.exists(pth):
                sd = torch.load(pth, map_location="cpu")
                load_strict(m, {k: v.numpy() for k, v in sd.items()})
                res.append(("decoded (.pth)", rel_err(m.decode(torch.from_numpy(io["latent"])), io["decoded"])))
        elif name.startswith("wan2"):
            m = WanModel(**cfg).eval()
            load_strict(m, w)
            x = torch.from_numpy(io["x"])[None]
            t = torch.from_numpy(io["t"])
            if t.dim() == 1:
                t = t.expand(1)
            ctx = torch.from_numpy(io["context"])[None]
            out = m(x, t, ctx, seq_len=meta["io"].get("seq_len"))
            res.append(("out", rel_err(out[0], io["out"])))
        else:
            raise ValueError(name)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="conformance/wan directory")
    ap.add_argument("names", nargs="*", default=NAMES)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    d = a.dir or find_dir()
    ok = True
    for name in a.names:
        for key, err, *tol in run_one(d, name):
            good = err < (tol[0] if tol else TOL)
            ok &= good
            print(f"{'PASS' if good else 'FAIL'} {name:22s} {key:22s} rel_l2={err:.3e}")
    print("all PASS" if ok else "some FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
