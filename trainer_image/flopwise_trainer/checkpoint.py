"""Atomic checkpoints: written to a temporary file, fsynced, then renamed over the old one.

A pod killed mid-write leaves the previous checkpoint intact; the trainer resumes from whatever
``checkpoint.pt`` names, and because data sampling is a pure function of (seed, step) the saved step is the
whole data position. Named checkpoints (``step_checkpoint_name``: ``checkpoint-step-00000120.pt``) are the
same state kept at the steps a spec's ``saveCheckpointsAt`` lists, for branches to start from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flopwise.contract import step_checkpoint_name

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
__all__ = ["BEST", "CHECKPOINT", "load", "resolve_model_checkpoint", "save_atomic", "step_checkpoint_name"]


def save_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(Path(path), map_location=map_location, weights_only=False)


def resolve_model_checkpoint(path: str | Path) -> Path:
    """A LoRA base may name a checkpoint file or a run's output folder (its best checkpoint, else latest)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no {BEST} or {CHECKPOINT} in {path}")
    if not path.is_file():
        raise FileNotFoundError(f"base checkpoint {path} does not exist")
    return path
