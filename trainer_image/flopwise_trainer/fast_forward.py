"""Fast Forward (Rahamim et al., EMNLP 2024, arXiv:2409.04206) for low-rank fine-tuning.

After a burn-in, every ``interval`` optimiser steps the last update of the adapter weights,
ΔW = W_t − W_{t−1}, is added again and again while the loss on a tiny fixed set keeps falling; the step that
made it worse is rolled back (the paper's code keeps it; rolling back is the sound choice), then Adam
resumes with its state untouched. Each tiny-set evaluation is a forward pass whose FLOPs the caller counts.

The tiny set is held-out validation text that evaluation never reads (``data.Batches.tiny_set``). Under DDP the
ranks split it and the caller sums the loss over ranks, so every rank sees the same loss, takes the same
accept/stop decision and keeps identical adapters, and the passes are counted once because they ran once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class StageReport:
    step: int
    accepted: int
    start_loss: float
    end_loss: float


@dataclass
class FastForward:
    params: list[torch.nn.Parameter]
    tiny_loss: Callable[[], float]
    interval: int = 6
    burn_in: int = 6
    max_stage_steps: int = 1000
    evaluations: int = 0
    stages: list[StageReport] = field(default_factory=list)
    _previous: list[torch.Tensor] | None = None

    def before_step(self, step: int) -> None:
        """Remember W_{t−1} when the coming optimiser step will be followed by a stage."""
        if self.due(step + 1):
            self._previous = [p.detach().clone() for p in self.params]

    def due(self, steps_done: int) -> bool:
        return steps_done >= max(self.burn_in, 1) and (steps_done - self.burn_in) % self.interval == 0

    @torch.no_grad()
    def after_step(self, steps_done: int) -> StageReport | None:
        """Run a stage if one is due after ``steps_done`` optimiser steps."""
        if not self.due(steps_done) or self._previous is None:
            return None
        deltas = [p.detach() - prev for p, prev in zip(self.params, self._previous, strict=True)]
        self._previous = None
        best = start = self._eval()
        accepted = 0
        while accepted < self.max_stage_steps:
            for p, d in zip(self.params, deltas, strict=True):
                p.add_(d)
            loss = self._eval()
            if not loss < best:  # worse, equal or NaN: roll this step back and stop
                for p, d in zip(self.params, deltas, strict=True):
                    p.sub_(d)
                break
            best, accepted = loss, accepted + 1
        report = StageReport(steps_done, accepted, start, best)
        self.stages.append(report)
        return report

    def _eval(self) -> float:
        self.evaluations += 1
        return float(self.tiny_loss())

    @property
    def accepted_steps(self) -> int:
        return sum(s.accepted for s in self.stages)
