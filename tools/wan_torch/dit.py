"""Wan DiT (WanModel) with the official state-dict names: t2v (Wan 2.1) and
ti2v (Wan 2.2, per-token timesteps). Written from docs/wan-architecture.md §2.

Batched: x [B, C, F, H, W] (all samples one size), t [B] or [B, L] (per token),
context [B, Lc, text_dim] with Lc <= text_len (zero-padded to text_len here, as
the reference does). Returns the flow prediction [B, out_dim, F, H, W] in fp32.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[..., dim]: cos first, then sin, frequencies 10000^(-j/half), in float64."""
    half = dim // 2
    tt = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    ang = tt[..., None] * freqs
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)


def rope_split(head_dim: int):
    """Number of complex pairs for the (t, h, w) axes."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def rope_angles(head_dim: int, grid: Sequence[int], device=None, theta: float = 10000.0) -> torch.Tensor:
    """Angles [L, head_dim/2] (float64) for tokens of a (F, H, W) grid in f, h, w order."""
    parts = []
    for axis, (npairs, n) in enumerate(zip(rope_split(head_dim), grid)):
        d = 2 * npairs
        inv = 1.0 / torch.pow(theta, torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)
        pos = torch.arange(n, dtype=torch.float64, device=device)
        ang = pos[:, None] * inv[None, :]                     # [n, npairs]
        shape = [1, 1, 1, npairs]
        shape[axis] = n
        parts.append(ang.view(shape).expand(grid[0], grid[1], grid[2], npairs))
    return torch.cat(parts, dim=-1).reshape(-1, head_dim // 2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, L, n, d] with adjacent pairs (x[2i], x[2i+1]); cos/sin [L, d/2]."""
    b, l, n, d = x.shape
    xp = x.float().reshape(b, l, n, d // 2, 2)
    a, bb = xp[..., 0], xp[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack([a * c - bb * s, a * s + bb * c], dim=-1)
    return out.reshape(b, l, n, d).type_as(x)


class WanRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class WanLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).type_as(x)


def attention(q, k, v, kept: Optional[list] = None):
    """q [B, Lq, n, d], k/v [B, Lk, n, d] -> [B, Lq, n*d]; softmax(q k^T / sqrt(d)) v.
    kept: a list that gets the probabilities averaged over heads, [B, Lq, Lk] (training's
    grounding loss, tools/train/grounding.py)."""
    b, lq, n, d = q.shape
    q, k, v = (u.transpose(1, 2) for u in (q, k, v))
    w = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    w = torch.softmax(w.float(), dim=-1).type_as(v)
    if kept is not None:
        kept.append(w.mean(1))
    return (w @ v).transpose(1, 2).reshape(b, lq, n * d)


class WanSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x, cos, sin):
        b, l, _ = x.shape
        n, d = self.num_heads, self.head_dim
        q = self.norm_q(self.q(x)).view(b, l, n, d)
        k = self.norm_k(self.k(x)).view(b, l, n, d)
        v = self.v(x).view(b, l, n, d)
        return self.o(attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v))


class WanCrossAttention(WanSelfAttention):
    """T2V cross-attention (also Wan 2.2 ti2v): no RoPE, no mask."""

    kept: Optional[list] = None      # see attention(); set by grounding.recording

    def forward(self, x, context):
        b, l, _ = x.shape
        n, d = self.num_heads, self.head_dim
        q = self.norm_q(self.q(x)).view(b, l, n, d)
        k = self.norm_k(self.k(context)).view(b, -1, n, d)
        v = self.v(context).view(b, -1, n, d)
        return self.o(attention(q, k, v, self.kept))


class GeluTanh(nn.Module):
    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class WanAttentionBlock(nn.Module):
    def __init__(self, dim, ffn_dim, num_heads, qk_norm=True, cross_attn_norm=True, eps=1e-6):
        super().__init__()
        self.norm1 = WanLayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(dim, num_heads, qk_norm, eps)
        self.norm3 = WanLayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(dim, num_heads, qk_norm, eps)
        self.norm2 = WanLayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), GeluTanh(), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)

    def forward(self, x, e0, context, cos, sin):
        # e0: [B, 6, dim] (one timestep per sample) or [B, L, 6, dim] (per token)
        if e0.dim() == 3:
            m = (self.modulation.float() + e0.float()).unsqueeze(2)           # [B, 6, 1, dim]
            sh1, sc1, g1, sh2, sc2, g2 = m.unbind(1)
        else:
            m = self.modulation.float().unsqueeze(0) + e0.float()             # [B, L, 6, dim]
            sh1, sc1, g1, sh2, sc2, g2 = m.unbind(2)
        y = self.self_attn((self.norm1(x).float() * (1 + sc1) + sh1).type_as(x), cos, sin)
        x = x + y * g1
        x = x + self.cross_attn(self.norm3(x), context)
        y = self.ffn((self.norm2(x).float() * (1 + sc2) + sh2).type_as(x))
        x = x + y * g2
        return x


class Head(nn.Module):
    def __init__(self, dim, out_dim, patch_size, eps=1e-6):
        super().__init__()
        self.norm = WanLayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim ** 0.5)

    def forward(self, x, e):
        # e: [B, dim] or [B, L, dim]
        if e.dim() == 2:
            m = self.modulation.float() + e.float().unsqueeze(1)              # [B, 2, dim]
            shift, scale = m[:, 0:1], m[:, 1:2]
        else:
            m = self.modulation.float().unsqueeze(0) + e.float().unsqueeze(2)  # [B, L, 2, dim]
            shift, scale = m[:, :, 0], m[:, :, 1]
        return self.head(self.norm(x).float() * (1 + scale) + shift)


class WanModel(nn.Module):
    """Constructor arguments as in conformance/wan/wan21_dit_t2v_tiny.json `config`."""

    def __init__(self, model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=2048,
                 ffn_dim=8192, freq_dim=256, text_dim=4096, out_dim=16, num_heads=16, num_layers=32,
                 window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6):
        super().__init__()
        if model_type not in ("t2v", "ti2v"):
            raise ValueError(f"model_type {model_type!r} not supported here (t2v, ti2v only)")
        if tuple(window_size) != (-1, -1):
            raise ValueError("only global attention (window_size -1,-1)")
        self.model_type = model_type
        self.patch_size = tuple(patch_size)
        self.text_len = text_len
        self.in_dim, self.out_dim = in_dim, out_dim
        self.dim, self.freq_dim, self.num_heads = dim, freq_dim, num_heads
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), GeluTanh(), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([WanAttentionBlock(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps)
                                     for _ in range(num_layers)])
        self.head = Head(dim, out_dim, self.patch_size, eps)
        self._rope_cache = {}

    def _rope(self, grid, device):
        key = (tuple(grid), str(device))
        if key not in self._rope_cache:
            ang = rope_angles(self.dim // self.num_heads, grid, device)
            self._rope_cache[key] = (torch.cos(ang).float(), torch.sin(ang).float())
        return self._rope_cache[key]

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        b, lc, td = context.shape
        if lc > self.text_len:
            raise ValueError(f"context length {lc} > text_len {self.text_len}")
        pad = context.new_zeros(b, self.text_len - lc, td)
        return self.text_embedding(torch.cat([context, pad], dim=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                seq_len: Optional[int] = None) -> torch.Tensor:
        b = x.shape[0]
        h = self.patch_embedding(x)                                           # [B, dim, f, hh, ww]
        grid = tuple(h.shape[2:])
        h = h.flatten(2).transpose(1, 2)                                      # [B, L, dim]
        L = h.shape[1]
        if seq_len is not None and seq_len < L:
            raise ValueError(f"seq_len {seq_len} < tokens {L}")
        t = t.to(x.device)
        if t.dim() == 0:
            t = t.expand(b)
        if t.dim() == 2:
            # per-token timesteps; entries past the L real tokens belong to padding
            # rows whose keys are masked in the reference, so they do not matter
            t = t[:, :L]
        e = self.time_embedding(sinusoidal_embedding(t, self.freq_dim).float())
        e0 = self.time_projection(e)
        e0 = e0.unflatten(-1, (6, self.dim))                                  # [B, 6, dim] / [B, L, 6, dim]
        ctx = self.embed_text(context)
        cos, sin = self._rope(grid, x.device)
        for blk in self.blocks:
            h = blk(h, e0, ctx, cos, sin)
        out = self.head(h, e)                                                 # [B, L, prod(p)*C]
        return self.unpatchify(out, grid)

    def unpatchify(self, out: torch.Tensor, grid) -> torch.Tensor:
        b = out.shape[0]
        pt, ph, pw = self.patch_size
        f, hh, ww = grid
        c = self.out_dim
        out = out.view(b, f, hh, ww, pt, ph, pw, c)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, c, f * pt, hh * ph, ww * pw).float()


def ti2v_timesteps(t: torch.Tensor, grid, first_frame_clean: bool = True) -> torch.Tensor:
    """Per-token timesteps [B, L]: t for every token, 0 for the first latent frame's tokens
    (Wan 2.2 TI2V image conditioning) when first_frame_clean."""
    f, hh, ww = grid
    tt = t.reshape(-1, 1).float().expand(-1, f * hh * ww).clone()
    if first_frame_clean:
        tt[:, :hh * ww] = 0
    return tt
