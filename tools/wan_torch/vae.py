"""Wan 2.1 VAE (causal 3-D conv, z_dim 16 by default) with the official
state-dict names. Written from docs/wan-architecture.md §3.1.

Two execution modes that give the same numbers:
- chunked (``encode`` / ``decode`` with ``chunked=True``, the reference's way
  and the engine's): frame 0 alone, then chunks of 4 frames (encode) or one
  latent frame per chunk (decode), with a per-module feature cache;
- whole sequence (``chunked=False``): every causal conv sees the whole clip
  with zero frames in front; faster for training (one big batch).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

CACHE_T = 2

WAN21_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN21_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


class Cache:
    """Per-module temporal state for chunked execution (keyed by module identity)."""

    def __init__(self):
        self.state: Dict[int, object] = {}

    def get(self, m):
        return self.state.get(id(m))

    def set(self, m, v):
        self.state[id(m)] = v


class CausalConv3d(nn.Conv3d):
    """Conv3d with all temporal padding (2*pt zero frames) in front; with a cache the
    last frames of the previous chunk's input replace that many zero frames."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pt, ph, pw = self.padding
        self._pad = (pw, pw, ph, ph, 2 * pt, 0)
        self.padding = (0, 0, 0)

    def forward(self, x, cache: Optional[Cache] = None):
        pad = list(self._pad)
        front = pad[4]
        if cache is not None and front > 0:
            prev = cache.get(self)
            hist = x if prev is None else torch.cat([prev, x], dim=2)
            cache.set(self, hist[:, :, -front:].detach().clone())
            if prev is not None:
                x = torch.cat([prev, x], dim=2)
                pad[4] = front - prev.shape[2]
        return super().forward(F.pad(x, pad))


class RMSNorm(nn.Module):
    """Channel-first RMS norm: x / max(||x||_2 over C, 1e-12) * sqrt(C) * gamma."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        shape = (dim, 1, 1) if images else (dim, 1, 1, 1)
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(shape))

    def forward(self, x):
        return F.normalize(x, dim=1) * self.scale * self.gamma


def _frames_2d(fn, x):
    """Apply a 2-D module to every frame of [B, C, T, H, W]."""
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Dropout(dropout), CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x, cache=None):
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _frame(self, x):
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).flatten(2).transpose(1, 2)        # [n, hw, 3c]
        q, k, v = qkv.split(c, dim=-1)
        a = torch.softmax((q @ k.transpose(1, 2)) * (c ** -0.5), dim=-1)
        y = (a @ v).transpose(1, 2).reshape(n, c, h, w)
        return self.proj(y)

    def forward(self, x, cache=None):
        return x + _frames_2d(self._frame, x)


class Resample(nn.Module):
    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))
        else:
            raise ValueError(mode)

    def _up_time(self, x, cache):
        b, c, t, h, w = x.shape
        if cache is None:
            # frame 0 passes untimed; frames 1.. are a causal sequence doubled by time_conv
            if t == 1:
                return x
            y = self.time_conv(x[:, :, 1:])
            y = y.view(b, 2, c, t - 1, h, w)
            y = torch.stack([y[:, 0], y[:, 1]], dim=3).reshape(b, c, 2 * (t - 1), h, w)
            return torch.cat([x[:, :, :1], y], dim=2)
        st = cache.get(self)
        if st is None:                       # first chunk: skip, remember we started
            cache.set(self, "first")
            return x
        y = self.time_conv(x, cache)         # its own cache starts empty: zero padding
        y = y.view(b, 2, c, t, h, w)
        return torch.stack([y[:, 0], y[:, 1]], dim=3).reshape(b, c, 2 * t, h, w)

    def _down_time(self, x, cache):
        if cache is None:
            # out_0 = x_0; out_k = conv(x_{2k-2}, x_{2k-1}, x_{2k})
            if x.shape[2] == 1:
                return x
            return torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)
        prev = cache.get(self)
        cache.set(self, x[:, :, -1:].detach().clone())
        if prev is None:
            return x
        return self.time_conv(torch.cat([prev, x], dim=2))

    def forward(self, x, cache=None):
        if self.mode == "upsample3d":
            x = self._up_time(x, cache)
        x = _frames_2d(self.resample, x)
        if self.mode == "downsample3d":
            x = self._down_time(x, cache)
        return x


def _run(seq, x, cache):
    for m in seq:
        if isinstance(m, (ResidualBlock, AttentionBlock, Resample, CausalConv3d)):
            x = m(x, cache)
        else:
            x = m(x)
    return x


class Encoder3d(nn.Module):
    def __init__(self, dim=128, z_dim=4, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
                 temperal_downsample=(True, True, False), dropout=0.0):
        super().__init__()
        if attn_scales:
            raise ValueError("attn_scales not supported (Wan uses none)")
        dims = [dim * u for u in [1] + list(dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        downs: List[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                downs.append(ResidualBlock(a, b, dropout))
                a = b
            if i != len(dim_mult) - 1:
                downs.append(Resample(b, "downsample3d" if temperal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*downs)
        c = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(c, c, dropout), AttentionBlock(c), ResidualBlock(c, c, dropout))
        self.head = nn.Sequential(RMSNorm(c), nn.SiLU(), CausalConv3d(c, z_dim, 3, padding=1))

    def forward(self, x, cache=None):
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        return _run(self.head, x, cache)


class Decoder3d(nn.Module):
    def __init__(self, dim=128, z_dim=4, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
                 temperal_upsample=(False, True, True), dropout=0.0):
        super().__init__()
        if attn_scales:
            raise ValueError("attn_scales not supported (Wan uses none)")
        dims = [dim * u for u in [dim_mult[-1]] + list(dim_mult[::-1])]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        c = dims[0]
        self.middle = nn.Sequential(ResidualBlock(c, c, dropout), AttentionBlock(c), ResidualBlock(c, c, dropout))
        ups: List[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i in (1, 2, 3):
                a = a // 2            # the previous upsample halved the channels
            for _ in range(num_res_blocks + 1):
                ups.append(ResidualBlock(a, b, dropout))
                a = b
            if i != len(dim_mult) - 1:
                ups.append(Resample(b, "upsample3d" if temperal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*ups)
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1))

    def forward(self, x, cache=None):
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        return _run(self.head, x, cache)


class WanVAE(nn.Module):
    """The Wan 2.1 VAE module (reference class WanVAE_). Constructor arguments as in
    conformance/wan/wan21_vae_tiny.json `config`. Keys: encoder.*, conv1.*, conv2.*, decoder.*"""

    def __init__(self, dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
                 temperal_downsample=(False, True, True), dropout=0.0,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None):
        super().__init__()
        self.z_dim = z_dim
        tds = list(temperal_downsample)
        self.encoder = Encoder3d(dim, z_dim * 2, dim_mult, num_res_blocks, attn_scales, tds, dropout)
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d(dim, z_dim, dim_mult, num_res_blocks, attn_scales, tds[::-1], dropout)
        if mean is None:
            mean = WAN21_MEAN if z_dim == 16 else [0.0] * z_dim
        if std is None:
            std = WAN21_STD if z_dim == 16 else [1.0] * z_dim
        # buffers, not saved in the state dict (the official file has no such keys)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def _norm_shape(self, v):
        return v.view(1, -1, 1, 1, 1)

    def encode_moments(self, x, chunked: bool = True):
        """x [B, 3, T, H, W] in [-1, 1], T = 4k+1 -> (mu, log_var) [B, z, 1+k, H/8, W/8]."""
        t = x.shape[2]
        if (t - 1) % 4 != 0:
            raise ValueError("frame count must be 4k+1")
        if chunked:
            cache = Cache()
            outs = [self.encoder(x[:, :, :1], cache)]
            for i in range(1, 1 + (t - 1) // 4):
                outs.append(self.encoder(x[:, :, 1 + 4 * (i - 1):1 + 4 * i], cache))
            h = torch.cat(outs, dim=2)
        else:
            h = self.encoder(x)
        mu, log_var = self.conv1(h).chunk(2, dim=1)
        return mu, log_var

    def normalize(self, mu):
        """Latent mean -> the normalised latent (mu - mean) / std that the DiT works on."""
        return (mu - self._norm_shape(self.mean)) / self._norm_shape(self.std)

    def denormalize(self, z):
        """The inverse of normalize: what conv2 takes."""
        return z * self._norm_shape(self.std) + self._norm_shape(self.mean)

    def encode(self, x, chunked: bool = True):
        """Normalised latent (mu - mean) / std."""
        mu, _ = self.encode_moments(x, chunked)
        return self.normalize(mu)

    def decode(self, z, chunked: bool = True):
        """Normalised latent [B, z, T', h, w] -> video [B, 3, 1+4(T'-1), 8h, 8w] (not clamped)."""
        x = self.conv2(self.denormalize(z))
        if not chunked:
            return self.decoder(x)
        cache = Cache()
        outs = [self.decoder(x[:, :, i:i + 1], cache) for i in range(x.shape[2])]
        return torch.cat(outs, dim=2)
