"""Data hygiene before a fit, after Choshen et al.'s Hitchhiker's guide (arXiv:2410.11840, §3 of the brief).

* Use intermediate checkpoints as points: they act as extra models at no cost.
* Drop the earliest checkpoints: before warm-up and the first fast descent are over, losses do not follow the
  law. The guide cuts at 10B tokens for OPT and Pythia, whose shortest runs are ~2.6–3e11 tokens, so the cut is
  ~4% of the shortest run. :func:`campaign_min_tokens` scales that to a campaign: ``fraction`` (default 0.04)
  × the smallest run's final token count. A fraction of the *smallest* run (not of each run) keeps one
  absolute cut for all runs, as the guide's 1e10 is, and never empties a short run.
* Drop diverged runs (given run ids; otherwise only non-finite points): any non-finite loss, or a final
  loss more than ``rise`` (default 20%) above the run's
  best — a spike that recovers is kept, a run that blew up and stayed up is not.
* Balance runs: long runs have more checkpoints and would swamp short ones, so each point gets weight
  1/(points in its run) and every run sums to 1 in the Huber sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flopwise.fitting.points import FitInputError, FitPoints

HITCHHIKER_MIN_TOKENS = 1e10
MIN_TOKENS_FRACTION = 0.04
DIVERGENCE_RISE = 0.2


def campaign_min_tokens(points: FitPoints, fraction: float = MIN_TOKENS_FRACTION) -> float:
    """The early-checkpoint cut for this campaign: ``fraction`` × the shortest run's final tokens."""
    finals = [points.tokens[points.run == r].max() for r in points.run_ids()]
    return float(fraction * min(finals))


def drop_early(points: FitPoints, min_tokens: float) -> FitPoints:
    """Keep points with tokens > ``min_tokens`` (the guide drops tokens ≤ 1e10)."""
    return points.subset(points.tokens > min_tokens)


def diverged_runs(points: FitPoints, rise: float = DIVERGENCE_RISE) -> list[str]:
    """Runs with a non-finite loss, or whose last checkpoint (by tokens) ends > ``rise`` above their best.
    Only for explicit run ids: points grouped by size alone are not a trajectory."""
    if not points.explicit_runs:
        return []
    out = []
    for run in points.run_ids():
        sel = points.run == run
        loss = points.loss[sel]
        if not np.isfinite(loss).all():
            out.append(run)
            continue
        last = loss[np.argmax(points.tokens[sel])]
        if last > (1.0 + rise) * loss.min():
            out.append(run)
    return out


def run_weights(points: FitPoints) -> np.ndarray:
    """1 / (points in the run) for each point, so that each run's weights sum to 1."""
    _, inverse, counts = np.unique(points.run.astype(str), return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


@dataclass(frozen=True)
class CleanPoints:
    points: FitPoints
    weights: np.ndarray | None
    min_tokens: float
    dropped_runs: list[str]
    n_dropped_early: int


def clean(
    points: FitPoints,
    *,
    min_tokens: float | None = None,
    drop_diverged: bool = True,
    balance: bool = True,
    fraction: float = MIN_TOKENS_FRACTION,
) -> CleanPoints:
    """Diverged runs out, early checkpoints out (``min_tokens`` or the campaign cut), then run weights.
    The result is validated: what is left must still be fittable."""
    dropped = diverged_runs(points) if drop_diverged else []
    kept = points.subset(~np.isin(points.run, dropped) & np.isfinite(points.loss))
    if len(kept) == 0:
        raise FitInputError(f"every run diverged ({', '.join(dropped)}); nothing left to fit")
    cut = campaign_min_tokens(kept, fraction) if min_tokens is None else float(min_tokens)
    late = drop_early(kept, cut)
    late.validate(source=f"points after dropping tokens ≤ {cut:.3g}")
    return CleanPoints(
        points=late,
        weights=run_weights(late) if balance else None,
        min_tokens=cut,
        dropped_runs=dropped,
        n_dropped_early=len(kept) - len(late),
    )
