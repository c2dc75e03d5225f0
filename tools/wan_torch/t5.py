"""umT5-style text encoder with the official Wan state-dict names.

Written from docs/wan-architecture.md §1: T5 RMSNorm (no mean, no bias), no
attention scaling, per-layer bidirectional relative position bias (32 buckets,
max distance 128), gated-GELU (tanh) feed-forward, final norm, no biases.

Keys: token_embedding.weight, blocks.{i}.{norm1,norm2}.weight,
blocks.{i}.attn.{q,k,v,o}.weight, blocks.{i}.ffn.{gate.0,fc1,fc2}.weight,
blocks.{i}.pos_embedding.embedding.weight, norm.weight
(pos_embedding.embedding.weight at top level instead when shared_pos).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class T5RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


class GeluTanh(nn.Module):
    def forward(self, x):
        return F.gelu(x, approximate="tanh")


def relative_buckets(lq: int, lk: int, num_buckets: int = 32, max_dist: int = 128, device=None):
    """Bidirectional T5 bucket of (key_pos - query_pos), [lq, lk] int64."""
    rel = torch.arange(lk, device=device)[None, :] - torch.arange(lq, device=device)[:, None]
    half = num_buckets // 2
    bucket = (rel > 0).long() * half
    n = rel.abs()
    max_exact = half // 2
    large = max_exact + (torch.log(n.float().clamp(min=1) / max_exact)
                         / math.log(max_dist / max_exact) * (half - max_exact)).long()
    large = torch.clamp(large, max=half - 1)
    return bucket + torch.where(n < max_exact, n, large)


class T5RelativeEmbedding(nn.Module):
    def __init__(self, num_buckets: int, num_heads: int, max_dist: int = 128):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_dist = max_dist
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, lq: int, lk: int):
        b = relative_buckets(lq, lk, self.num_buckets, self.max_dist, self.embedding.weight.device)
        return self.embedding(b).permute(2, 0, 1).unsqueeze(0)  # [1, heads, lq, lk]


class T5Attention(nn.Module):
    def __init__(self, dim: int, dim_attn: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim_attn // num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x, mask, pos_bias):
        b, l, _ = x.shape
        n, d = self.num_heads, self.head_dim
        q = self.q(x).view(b, l, n, d).transpose(1, 2)
        k = self.k(x).view(b, l, n, d).transpose(1, 2)
        v = self.v(x).view(b, l, n, d).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) + pos_bias          # no 1/sqrt(d) (T5)
        if mask is not None:
            neg = torch.finfo(logits.dtype).min
            logits = logits.masked_fill(mask[:, None, None, :] == 0, neg)
        p = torch.softmax(logits.float(), dim=-1).type_as(v)
        out = (p @ v).transpose(1, 2).reshape(b, l, n * d)
        return self.o(out)


class T5FeedForward(nn.Module):
    def __init__(self, dim: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), GeluTanh())
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x):
        return self.fc2(self.fc1(x) * self.gate(x))


class T5Block(nn.Module):
    def __init__(self, dim, dim_attn, dim_ffn, num_heads, num_buckets, shared_pos):
        super().__init__()
        self.norm1 = T5RMSNorm(dim)
        self.attn = T5Attention(dim, dim_attn, num_heads)
        self.norm2 = T5RMSNorm(dim)
        self.ffn = T5FeedForward(dim, dim_ffn)
        self.pos_embedding = None if shared_pos else T5RelativeEmbedding(num_buckets, num_heads)

    def forward(self, x, mask, pos_bias=None):
        if self.pos_embedding is not None:
            pos_bias = self.pos_embedding(x.shape[1], x.shape[1])
        x = x + self.attn(self.norm1(x), mask, pos_bias)
        x = x + self.ffn(self.norm2(x))
        return x


class T5Encoder(nn.Module):
    """Constructor arguments as in conformance/wan/t5_encoder_tiny.json `config`."""

    def __init__(self, vocab: int, dim: int, dim_attn: int, dim_ffn: int, num_heads: int,
                 num_layers: int, num_buckets: int = 32, shared_pos: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.pos_embedding = T5RelativeEmbedding(num_buckets, num_heads) if shared_pos else None
        self.blocks = nn.ModuleList([T5Block(dim, dim_attn, dim_ffn, num_heads, num_buckets, shared_pos)
                                     for _ in range(num_layers)])
        self.norm = T5RMSNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def init_weights(self) -> None:
        """T5's own initialisation (as the reference T5 and Wan's umT5 initialise): T5 leaves out
        attention's 1/sqrt(d), so the query starts 1/sqrt(dim * dim_attn) small instead. Only for
        an encoder trained from nothing; PyTorch's default init starts the logits several times
        larger, and trained from there the attention saturated (tools/train/config.py t5_init)."""
        for blk in self.blocks:
            a = blk.attn
            dim, dim_attn = a.q.in_features, a.q.out_features
            nn.init.normal_(a.q.weight, std=(dim * dim_attn) ** -0.5)
            nn.init.normal_(a.k.weight, std=dim ** -0.5)
            nn.init.normal_(a.v.weight, std=dim ** -0.5)
            nn.init.normal_(a.o.weight, std=(a.num_heads * dim_attn) ** -0.5)
            f = blk.ffn
            nn.init.normal_(f.gate[0].weight, std=f.gate[0].in_features ** -0.5)
            nn.init.normal_(f.fc1.weight, std=f.fc1.in_features ** -0.5)
            nn.init.normal_(f.fc2.weight, std=f.fc2.in_features ** -0.5)
            if blk.pos_embedding is not None:
                nn.init.normal_(blk.pos_embedding.embedding.weight, std=1.0)
        nn.init.normal_(self.token_embedding.weight, std=1.0)
        if self.pos_embedding is not None:
            nn.init.normal_(self.pos_embedding.embedding.weight, std=1.0)

    def forward(self, ids, mask=None):
        x = self.dropout(self.token_embedding(ids))
        shared = self.pos_embedding(ids.shape[1], ids.shape[1]) if self.pos_embedding is not None else None
        for blk in self.blocks:
            x = blk(x, mask, shared)
        return self.dropout(self.norm(x))
