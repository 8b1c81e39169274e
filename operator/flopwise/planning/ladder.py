"""Ladder designs: which (N, D) points the law is fitted to, and what they cost.

A law L(N, D) = E + A/N^α + B/D^β has two power terms; if every run ends at its compute-optimal tokens, the
points lie on one line in log space and the N and D terms cannot be told apart (Hoffmann et al. 2022 fit 400
runs spread over N *and* D). Both designs here give several annealed final losses per size, each one a point:

* **wsd** — Hägele et al. 2024 (arXiv:2405.18392, §3–4; MiniCPM): a warmup-stable-decay trunk per size trains
  to the largest token count and keeps checkpoints in its stable phase; each shorter count is a cooldown
  branched from the checkpoint at (1 − f)·its steps. A branch costs only its cooldown (f of its steps), and
  its final loss equals that of a separate run with the same schedule (same weights, same batches up to the
  branch point). Trunk + branches cost (max m + f·Σ other m)·D_opt per size instead of Σ m·D_opt.
* **isoflop** — Hoffmann et al. 2022 §3.2 (Approach 2, Figure 3); DeepSeek LLM §3: ``levels`` compute budgets
  a ``level_ratio`` apart, ``sizes`` models spread ``spread``× around the prior's optimum at each, each trained
  to C/(6N) with its own full schedule. Each level's parabola in log N gives N_opt(C) directly.

Both are sized to the ladder's share: the design's scale (largest size, or top compute level) is the largest
whose exact FLOPs fit. Every run takes at least ``ladder.minSteps`` optimiser steps (the batch shrinks to keep
them): a short run's final loss is mostly seed noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from flopwise.api.status import PlannedRun
from flopwise.contract import ModelShape

BISECTION_ITERATIONS = 60


def largest_within(cost: Callable[[float], float], allotted: float, low: float, high: float) -> float:
    """The largest scale in [low, high] whose ``cost`` fits ``allotted`` (``cost(low)`` must fit), by bisection
    in log space to 0.1%: costs grow with scale, up to shape rounding."""
    lo, hi = math.log(low), math.log(high)
    if cost(high) <= allotted:
        return high
    for _ in range(BISECTION_ITERATIONS):
        if hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(math.exp(mid)) <= allotted else (lo, mid)
    return math.exp(lo)


@dataclass(frozen=True)
class RunMaker:
    """What a design needs from the planner: shapes for a parameter count, compute-optimal tokens under the
    prior, the optimum at a budget, and a run of whole steps with a batch that keeps ``min_steps``."""

    shape: Callable[[float], ModelShape]
    optimal_tokens: Callable[[ModelShape], float]
    optimal_params: Callable[[float], float]
    run: Callable[..., PlannedRun]
    batch_for: Callable[[ModelShape, float], int]
    cooldown: float  # f: the share of a WSD run's steps spent cooling down
    max_tokens: float = math.inf  # the data that exists (dataset.tokens × maxEpochs)


def steps_for(tokens: float, batch: int, seq_len: int) -> int:
    return max(1, math.ceil(tokens / (batch * seq_len)))


def wsd_rung(make: RunMaker, index: int, shape: ModelShape, multiples: list[float]) -> list[PlannedRun]:
    """One size: the trunk ends at the largest multiple of its compute-optimal tokens, each other multiple is a
    cooldown branch from the trunk's checkpoint at (1 − f) of that branch's steps. All share one batch, chosen
    so that the shortest branch still takes the design's minimum of steps."""
    optimal = make.optimal_tokens(shape)
    ordered = sorted(set(multiples))
    batch = make.batch_for(shape, ordered[0] * optimal)
    seq = shape.seq_len
    trunk_id = f"ladder-{index:02d}"
    branches = []
    for k, multiple in enumerate(ordered[:-1]):
        steps = steps_for(multiple * optimal, batch, seq)
        start = max(1, min(steps - 1, round((1.0 - make.cooldown) * steps)))
        branches.append((f"{trunk_id}-b{k}", steps, start))
    trunk = make.run(trunk_id, "ladder", shape, ordered[-1] * optimal, batch=batch,
                     checkpoints_at=sorted({start for _, _, start in branches}))
    runs = [trunk]
    for run_id, steps, start in branches:
        runs.append(make.run(run_id, "ladder", shape, steps * batch * seq, batch=batch, start_step=start,
                             branch_of=trunk_id))
    return runs


def wsd_ladder(make: RunMaker, largest: float, sizes: int, spread: float, floor: float,
               multiples: list[float]) -> list[PlannedRun]:
    """``sizes`` sizes log-uniform from max(floor, largest/spread) to ``largest``, each a trunk with branches."""
    smallest = max(floor, largest / spread)
    shapes: dict[tuple[int, int], ModelShape] = {}
    for i in range(sizes):
        params = smallest * (largest / smallest) ** (i / (sizes - 1)) if largest > smallest else smallest
        shape = make.shape(params)
        shapes.setdefault((shape.n_layer, shape.d_model), shape)
    ordered = sorted(shapes.values(), key=ModelShape.param_count)
    return [run for i, shape in enumerate(ordered) for run in wsd_rung(make, i, shape, multiples)]


def isoflop_ladder(make: RunMaker, top: float, levels: int, ratio: float, sizes: int, spread: float,
                   floor: float) -> list[PlannedRun]:
    """At each compute level C_j = top / ratio^j, ``sizes`` shapes spread ``spread``× (log-uniform) around the
    prior's N_opt(C_j), each trained to C_j / its FLOPs per token. Sizes below ``floor``, and sizes that would
    need more tokens than exist (they cannot reach the level without repeating data), are left out."""
    runs: list[PlannedRun] = []
    for level in range(levels):
        budget = top / ratio**level
        centre = make.optimal_params(budget)
        seen: set[tuple[int, int]] = set()
        for q in range(sizes):
            params = centre * spread ** (q / (sizes - 1) - 0.5)
            if params < floor:
                continue
            shape = make.shape(params)
            if (shape.n_layer, shape.d_model) in seen:
                continue
            seen.add((shape.n_layer, shape.d_model))
            tokens = budget / shape.flops_per_token()
            if tokens > make.max_tokens:
                continue
            runs.append(make.run(f"ladder-c{level}-{len(seen) - 1:02d}", "ladder", shape, tokens,
                                 batch=make.batch_for(shape, tokens), level=level))
    return runs


def distinct_sizes(runs: list[PlannedRun]) -> int:
    return len({r.params for r in runs})


def levels_with_sizes(runs: list[PlannedRun], needed: int) -> int:
    """Compute levels that have at least ``needed`` distinct sizes (a parabola needs three)."""
    by_level: dict[int, set[int]] = {}
    for r in runs:
        if r.level is not None:
            by_level.setdefault(r.level, set()).add(r.params)
    return sum(1 for sizes in by_level.values() if len(sizes) >= needed)


SAME_COST = 0.05  # runs within 5% of the cheapest cost the same (an IsoFLOP level's sizes)


def seed_source(runs: list[PlannedRun]) -> PlannedRun:
    """The configuration the seed replicas repeat: the cheapest run that trains from scratch to an annealed end
    (wsd: the smallest size's shortest token count is a branch, so its from-scratch equivalent is used). At an
    IsoFLOP level every size costs the same: the one with the most tokens is taken, since a run of few tokens
    is mostly noise (seed sd 2.6% at 189K tokens in the quickstart, against 0.9% at 559K) and its spread, taken
    as the ladder's, would widen every interval."""
    def cost(r: PlannedRun) -> float:
        return r.shape.flops_per_token() * r.trajectory_tokens

    cheapest = min(cost(r) for r in runs)
    return min((r for r in runs if cost(r) <= cheapest * (1 + SAME_COST)),
               key=lambda r: (-r.trajectory_tokens, r.run_id))
