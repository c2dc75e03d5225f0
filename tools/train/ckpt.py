"""Checkpoints that make the training resumable: a run killed at any moment (the machine
shared, a session ended) continues from its last checkpoint with the same random streams,
so an interrupted and resumed run gives the same weights as an uninterrupted one.

Every file is written to a temporary name and renamed, so a kill never leaves a half file."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

import numpy as np
import torch


def save(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pin_settings(path: str, settings: dict, run_dir: str) -> None:
    """Write a stage's settings (plain JSON data) to path in its run folder, or, resuming,
    refuse to go on when the folder's run was started with other settings: a resumed run
    must be the same run."""
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != settings:
                raise SystemExit(f"{path}: an earlier run with other settings is in {run_dir}")
    with open(path, "w") as f:
        json.dump(settings, f, indent=1)


def load(path: str) -> Optional[Any]:
    return torch.load(path) if os.path.exists(path) else None


def rng_state(rng: np.random.Generator, gen: Optional[torch.Generator] = None) -> dict:
    return {"np": rng.bit_generator.state, "torch_global": torch.get_rng_state(),
            "torch_gen": gen.get_state() if gen is not None else None}


def rng_restore(st: dict, rng: np.random.Generator, gen: Optional[torch.Generator] = None) -> None:
    rng.bit_generator.state = st["np"]
    torch.set_rng_state(st["torch_global"])
    if gen is not None and st["torch_gen"] is not None:
        gen.set_state(st["torch_gen"])


class Timer:
    """Says when the next periodic checkpoint is due."""

    def __init__(self, every_s: float):
        self.every_s, self.last = every_s, time.time()

    def due(self) -> bool:
        if time.time() - self.last >= self.every_s:
            self.last = time.time()
            return True
        return False


def logger(out_dir: str):
    """log(msg): a timestamped line on stdout and appended to <out_dir>/train.log."""
    f = open(os.path.join(out_dir, "train.log"), "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        f.write(line + "\n")
        f.flush()
    return log


def dit_state(dit, t5, ema, opt, rng, gen, step: int, seconds: float) -> dict:
    """What a DiT + text encoder stage checkpoints (stage_dit, stage_refs)."""
    return {"dit": dit.state_dict(), "t5": t5.state_dict(), "ema": [s.state_dict() for s in ema.shadow],
            "opt": opt.state_dict(), "rng": rng_state(rng, gen), "step": step, "seconds": seconds}


def dit_restore(st: dict, dit, t5, ema, opt, rng, gen):
    """dit_state's inverse; returns (step, seconds)."""
    dit.load_state_dict(st["dit"])
    t5.load_state_dict(st["t5"])
    for s, sd in zip(ema.shadow, st["ema"]):
        s.load_state_dict(sd)
    opt.load_state_dict(st["opt"])
    rng_restore(st["rng"], rng, gen)
    return st["step"], st["seconds"]
