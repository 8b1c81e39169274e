"""Torch-side batches over ``flopwise.data`` shards.

Every step's global batch is drawn from a generator seeded by (seed, step) alone, and rank r of W takes the
r-th contiguous slice of it: the tokens a step trains on depend neither on the world size nor on how the
batch is split into micro-batches, and a resumed run replays exactly the windows it would have seen.

Evaluation reads fixed, evenly spaced windows of the validation split. Fast Forward's tiny set is held out too:
validation windows chosen in the gaps between those evaluation windows (at least a window's width from each),
so the line search never tunes on the text the run's reported losses are measured on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flopwise.data import TokenDataset, open_dataset, step_rng


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

    def tiny_set(self, examples: int, eval_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of Fast Forward's tiny set: ``examples`` held-out windows (Rahamim et al. 2024 draw
        it from validation data) that the run's evaluation, ``val_batches(eval_batches, ·)``, never reads. The
        ranks split it as they split evaluation, so one pass over all ranks runs the set exactly once."""
        width = self.seq_len + 1
        val = self.dataset.val
        starts = held_out_starts(val.usable_starts(width), val.evenly_spaced_starts(eval_batches * self.batch_size,
                                                                                     width), examples, width)
        return self._to_device(val.windows_at(starts, width)[self.rank::self.world_size])


def held_out_starts(total: int, avoid: np.ndarray, examples: int, width: int) -> np.ndarray:
    """``examples`` window starts in [0, ``total``) spread evenly over the positions whose window of ``width``
    tokens shares no token with a window starting at any of ``avoid``: at least ``width`` away from each.

    Starts index windows shard after shard (``TokenSplit.usable_starts``); within a shard index distance is token
    distance, and windows in different shards never overlap, so index distance ≥ width is sufficient."""
    avoid = np.unique(np.asarray(avoid, dtype=np.int64))
    blocked_lo, blocked_hi = np.maximum(avoid - width + 1, 0), np.minimum(avoid + width - 1, total - 1)
    # Free runs [start, end) lie between consecutive blocked ranges (both ends are non-decreasing, so an empty
    # or negative run means the blocked ranges touch or overlap).
    run_start = np.concatenate([[0], blocked_hi + 1])
    run_length = np.maximum(np.concatenate([blocked_lo, [total]]) - run_start, 0)
    free = int(run_length.sum())
    if free < examples:
        raise ValueError(f"the validation split has room for only {free} windows of {width} tokens beside the "
                         f"{avoid.size} that evaluation reads, and Fast Forward's tiny set needs {examples}: use a "
                         "larger validation split, fewer eval.batches or fewer lora.ffValExamples")
    position = ((np.arange(examples) + 0.5) * free / examples).astype(np.int64)  # evenly over the free starts
    ends = np.cumsum(run_length)
    run = np.searchsorted(ends, position, side="right")
    return run_start[run] + position - (ends[run] - run_length[run])
