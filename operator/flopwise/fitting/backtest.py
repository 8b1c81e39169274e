"""Backtesting: hold out the largest model(s), fit the rest, and score the prediction of the held-out loss.

This is the Hitchhiker's guide's protocol (util/fit_utils.hist_fit in IBM/ColPret): fit on every model but
the largest; drop fit points with tokens ≤ a cut (1e10 there); targets are the held-out model's checkpoints
with tokens ≥ 0.7 × its maximum; ARE = mean |L − L̂| / L. The guide finds ~4% the best achievable and up to
~20% still useful. The ARE is a campaign's trust figure for extrapolating to the target size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flopwise.fitting.fit import HOFFMANN_GRID, FitMode, FitResult, StartGrid, fit_points
from flopwise.fitting.hygiene import run_weights
from flopwise.fitting.points import FitInputError, FitPoints

TARGET_FRACTION = 0.7


@dataclass(frozen=True)
class BacktestResult:
    are: float  # mean absolute relative error on the targets
    max_relative_error: float
    n_train: int
    n_targets: int
    held_out_params: list[float]
    fit: FitResult
    predicted: np.ndarray
    actual: np.ndarray

    def as_dict(self) -> dict[str, object]:
        return {
            "are": self.are, "max_relative_error": self.max_relative_error, "n_train": self.n_train,
            "n_targets": self.n_targets, "held_out_params": self.held_out_params,
        }


def backtest(
    points: FitPoints,
    *,
    holdout: int = 1,
    target_fraction: float | None = TARGET_FRACTION,
    min_tokens: float | None = None,
    balance: bool = False,
    mode: FitMode | str = "auto",
    grid: StartGrid = HOFFMANN_GRID,
) -> BacktestResult:
    """Hold out the ``holdout`` largest sizes. ``target_fraction=None`` scores every held-out point;
    ``min_tokens`` filters the training points only; ``balance`` weights training runs equally."""
    sizes = np.unique(points.params)
    if sizes.size <= holdout:
        raise FitInputError(f"cannot hold out {holdout} size(s) of {sizes.size}: nothing left to fit")
    held = sizes[-holdout:]
    is_target = np.isin(points.params, held)
    train = points.subset(~is_target)
    if min_tokens is not None:
        train = train.subset(train.tokens > min_tokens)
    train.validate(source="backtest training points")
    targets = points.subset(is_target)
    if target_fraction is not None:
        keep = np.zeros(len(targets), bool)
        for run in targets.run_ids():
            sel = targets.run == run
            keep |= sel & (targets.tokens >= target_fraction * targets.tokens[sel].max())
        targets = targets.subset(keep)
    fit = fit_points(train, weights=run_weights(train) if balance else None, mode=mode, grid=grid)  # type: ignore[arg-type]
    law = fit.law
    predicted = np.array([law.loss(n, d) for n, d in zip(targets.params, targets.tokens, strict=True)])
    rel = np.abs(targets.loss - predicted) / targets.loss
    return BacktestResult(
        are=float(rel.mean()), max_relative_error=float(rel.max()), n_train=len(train), n_targets=len(targets),
        held_out_params=[float(v) for v in held], fit=fit, predicted=predicted, actual=targets.loss.copy(),
    )
