"""What every stage's training step shares: the flow-matching loss of the DiT stages, the
optimiser step (gradients clipped to norm 1) of them all, and the training-only side heads
some stages train beside their model. One copy, so that a change reaches every stage."""
from __future__ import annotations

from typing import Dict, Sequence

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


class SideHeads:
    """Training-only heads a stage trains beside its model: small probes whose losses on the
    model's states shape what those states carry (text_parse.Heads, grounding.ObjectHead).
    Each has a name, a loss weight (weight 0: not built), a short name for the log and its
    own AdamW, and is saved in the stage's checkpoint under its name, so a checkpoint from
    before a head resumes with that head fresh. None is ever exported."""

    def __init__(self, lr: float):
        self.lr = lr
        self.modules: Dict[str, torch.nn.Module] = {}
        self.weights: Dict[str, float] = {}
        self.short: Dict[str, str] = {}
        self.opts: Dict[str, torch.optim.Optimizer] = {}

    def add(self, name: str, module: torch.nn.Module, weight: float, short: str = "") -> None:
        if not weight:
            return
        self.modules[name], self.weights[name], self.short[name] = module, weight, short or name
        self.opts[name] = torch.optim.AdamW(module.parameters(), lr=self.lr)

    def __contains__(self, name: str) -> bool:
        return name in self.modules

    def __getitem__(self, name: str) -> torch.nn.Module:
        return self.modules[name]

    def __bool__(self) -> bool:
        return bool(self.modules)

    def load(self, state: dict) -> None:
        """From a checkpoint dict: each head whose entry it holds."""
        for k, m in self.modules.items():
            if k in state:
                m.load_state_dict(state[k]["head"])
                self.opts[k].load_state_dict(state[k]["opt"])

    def state(self) -> dict:
        """The checkpoint entries, one per head: {name: {"head": ..., "opt": ...}}."""
        return {k: {"head": m.state_dict(), "opt": self.opts[k].state_dict()} for k, m in self.modules.items()}

    def param_groups(self) -> list:
        return [g for o in self.opts.values() for g in o.param_groups]

    def weighted(self, parts: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The sum of each head's loss in parts times its weight (other entries left out)."""
        total = torch.zeros(())
        for k, v in parts.items():
            if k in self.weights:
                total = total + self.weights[k] * v.float()
        return total

    def zero_grad(self) -> None:
        for o in self.opts.values():
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.opts.values():
            o.step()

    def describe(self, parts: Dict[str, torch.Tensor]) -> str:
        """The log's figures: " parse=0.591 own=1.103"."""
        return "".join(f" {self.short.get(k, k)}={float(v):.3f}" for k, v in parts.items())
