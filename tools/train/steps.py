"""What every stage's training step shares: the flow-matching loss of the DiT stages and the
optimiser step (gradients clipped to norm 1) of them all. One copy, so that a change to
either reaches every stage."""
from __future__ import annotations

from typing import Sequence

import torch


def flow_loss(v: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, i2v: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the flow prediction v [B, C, F, H, W] against eps - x0, leaving
    out latent frame 0 of the items given it clean (i2v [B] bool: TI2V's image)."""
    err = (v - (eps - x0)).pow(2)
    wmask = torch.ones_like(err)
    wmask[i2v, :, 0] = 0.0
    return (err * wmask).sum() / wmask.sum()


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
