"""Time per training step for candidate model sizes (one torch thread by default).

    /usr/bin/python3 -m tools.train.measure [--threads 1] [--steps 3]

Also prints the FLOPs the engine spends per generation: DiT forward x steps x 2
(classifier-free guidance) and the VAE decode at full resolution.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from ..wan_torch.dit import WanModel
from ..wan_torch.t5 import T5Encoder
from ..wan_torch.vae import WanVAE


def conv_linear_flops(model: nn.Module, fn) -> float:
    """FLOPs (2 per MAC) of every Conv / Linear / attention matmul in one call of fn()."""
    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, (nn.Conv2d, nn.Conv3d)):
            total[0] += 2.0 * mod.weight[0].numel() * out.numel()
        elif isinstance(mod, nn.Linear):
            total[0] += 2.0 * mod.in_features * out.numel()

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        fn()
    for h in hs:
        h.remove()
    return total[0]


def dit_attn_flops(dim, layers, tokens, text_len):
    # q k^T and p v for self (L x L) and cross (L x text_len) attention
    return layers * 2.0 * 2.0 * dim * (tokens * tokens + tokens * text_len)


def time_steps(step, n):
    step()                      # warm-up
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def measure_vae(dim, size, frames, batch, n):
    torch.manual_seed(0)
    m = WanVAE(dim=dim, z_dim=16)
    opt = torch.optim.AdamW(m.parameters(), 1e-4)
    x = torch.rand(batch, 3, frames, size, size) * 2 - 1

    def step():
        opt.zero_grad()
        z = m.encode(x, chunked=False)
        y = m.decode(z, chunked=False)
        (y - x).abs().mean().backward()
        opt.step()

    dt = time_steps(step, n)
    xe = torch.rand(8, 3, 17, size, size) * 2 - 1
    t = time.perf_counter()
    with torch.no_grad():
        m.encode(xe, chunked=False)
    enc = (time.perf_counter() - t) / 8
    dec_flops = conv_linear_flops(m, lambda: m.decode(torch.zeros(1, 16, 5, size // 8, size // 8), chunked=False))
    n_params = sum(p.numel() for p in m.parameters())
    return dt, enc, dec_flops, n_params


def measure_dit(dim, layers, heads, ffn, size, patch, batch, n, text_len=32, t5_dim=128):
    torch.manual_seed(0)
    m = WanModel("ti2v", patch_size=patch, text_len=text_len, in_dim=16, dim=dim, ffn_dim=ffn,
                 freq_dim=256, text_dim=t5_dim, out_dim=16, num_heads=heads, num_layers=layers)
    t5 = T5Encoder(256, t5_dim, t5_dim, 2 * t5_dim, 2, 2)
    params = list(m.parameters()) + list(t5.parameters())
    opt = torch.optim.AdamW(params, 1e-4)
    lat = size // 8
    x = torch.randn(batch, 16, 5, lat, lat)
    ids = torch.randint(3, 256, (batch, 16))
    mask = torch.ones_like(ids)
    t = torch.rand(batch) * 1000

    def step():
        opt.zero_grad()
        ctx = t5(ids, mask)
        out = m(x, t, ctx)
        (out - x).pow(2).mean().backward()
        opt.step()

    dt = time_steps(step, n)
    tokens = 5 * (lat // patch[1]) * (lat // patch[2])
    fwd = conv_linear_flops(m, lambda: m(x[:1], t[:1], torch.zeros(1, 16, t5_dim)))
    fwd += dit_attn_flops(dim, layers, tokens, text_len)
    n_params = sum(p.numel() for p in m.parameters())
    return dt, fwd, tokens, n_params


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", choices=["vae", "dit"], default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s)")
    if a.only in (None, "vae"):
        for dim, size, frames, batch in [(12, 64, 5, 4), (16, 64, 5, 4)]:
            dt, enc, fl, npar = measure_vae(dim, size, frames, batch, a.steps)
            print(f"VAE dim={dim:2d} {size}x{size} train {frames}f x{batch}: {dt:6.2f} s/step | "
                  f"encode 17f {enc:5.2f} s/clip | decode 17f {fl / 1e9:5.2f} GFLOP | {npar / 1e6:.2f} M params")
    if a.only in (None, "dit"):
        for dim, layers, heads, ffn, patch in [(128, 4, 2, 512, (1, 2, 2)), (192, 6, 3, 768, (1, 2, 2)),
                                               (256, 6, 4, 1024, (1, 2, 2)), (128, 4, 2, 512, (1, 1, 1))]:
            dt, fwd, tokens, npar = measure_dit(dim, layers, heads, ffn, 64, patch, 16, a.steps)
            print(f"DiT dim={dim} L={layers} ffn={ffn} patch={patch} tokens={tokens}: batch16 {dt:5.2f} s/step | "
                  f"fwd {fwd / 1e9:.3f} GFLOP, x20 steps x2 CFG = {fwd * 40 / 1e9:5.1f} GFLOP | "
                  f"{npar / 1e6:.2f} M params")


if __name__ == "__main__":
    main()
