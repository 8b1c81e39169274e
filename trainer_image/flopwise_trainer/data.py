"""Torch-side batches over ``flopwise.data`` shards.

Every step's global batch is drawn from a generator seeded by (seed, step) alone, and rank r of W takes the
r-th contiguous slice of it: the tokens a step trains on depend neither on the world size nor on how the
batch is split into micro-batches, and a resumed run replays exactly the windows it would have seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flopwise.data import VAL_SEED, TokenDataset, open_dataset, step_rng

FF_STREAM = 7  # generator stream for Fast Forward's tiny set: never the stream training steps use (0)


class Batches:
    def __init__(self, path: str | Path, *, seq_len: int, batch_size: int, seed: int, vocab_size: int,
                 device: torch.device, rank: int = 0, world_size: int = 1):
        self.dataset: TokenDataset = open_dataset(path)
        if self.dataset.vocab_size > vocab_size:
            raise ValueError(f"data vocabulary ({self.dataset.vocab_size}) exceeds the model's ({vocab_size})")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the world size {world_size}")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size, self.device = rank, world_size, device
        self.per_rank = batch_size // world_size

    def _to_device(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(windows)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t[:, :-1], t[:, 1:]

    def train_step(self, step: int, micro_batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of step ``step``'s global batch, split into micro-batches."""
        windows = self.dataset.train.sample(self.batch_size, self.seq_len + 1, step_rng(self.seed, step))
        mine = windows[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        return [self._to_device(mine[i:i + micro_batch]) for i in range(0, len(mine), micro_batch)]

    def val_batches(self, n_batches: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of ``n_batches`` global batches of fixed validation windows (the same text for every
        run and seed), in chunks of ``batch`` sequences."""
        windows = self.dataset.val.evenly_spaced(n_batches * self.batch_size, self.seq_len + 1)
        mine = windows[self.rank::self.world_size]
        return [self._to_device(mine[i:i + batch]) for i in range(0, len(mine), batch)]

    def tiny_set(self, examples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast Forward's tiny set: fixed training-split windows, drawn off the training stream's generator."""
        windows = self.dataset.train.sample(examples, self.seq_len + 1, np.random.default_rng([VAL_SEED, FF_STREAM]))
        return self._to_device(windows)
