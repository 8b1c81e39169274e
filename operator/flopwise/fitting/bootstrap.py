"""Bootstrap confidence intervals for a fitted law and for what the planner derives from it.

Each resample draws the points (or, given run ids, whole runs — checkpoints of one run are not independent)
with replacement. A resample is the same points with integer multiplicities, so all resamples share one
batched optimisation with per-resample weights, warm-started from the best fit (as Epoch did; a resample's
optimum is near the full-data optimum). Intervals are percentile intervals (95% by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flopwise.fitting.fit import FitResult, law_from_theta
from flopwise.fitting.lbfgs import minimize_batched
from flopwise.fitting.objective import HUBER_DELTA, objective_and_grad
from flopwise.fitting.points import FitPoints
from flopwise.planning.laws import ScalingLaw

BOOTSTRAP_FTOL, BOOTSTRAP_GTOL = 1e-12, 1e-8
"""Resamples start at the optimum of nearby data; percentile intervals need less precision than the fit."""


@dataclass(frozen=True)
class Interval:
    estimate: float  # from the best fit on all points
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class BootstrapResult:
    best: FitResult
    theta: np.ndarray = field(repr=False)  # (K, 5) resample optima, (a, b, α, β, e)
    level: float
    n_converged: int
    by_run: bool

    @property
    def n_resamples(self) -> int:
        return int(self.theta.shape[0])

    def laws(self) -> list[ScalingLaw]:
        return [law_from_theta(t, name="bootstrap") for t in self.theta]

    def _interval(self, estimate: float, values: np.ndarray) -> Interval:
        tail = 50.0 * (1.0 - self.level)
        low, high = np.percentile(values[np.isfinite(values)], [tail, 100.0 - tail])
        return Interval(float(estimate), float(low), float(high))

    def parameter_intervals(self) -> dict[str, Interval]:
        a, b, alpha, beta, e = self.theta.T
        law = self.best.law
        return {
            "E": self._interval(law.E, np.exp(e)), "A": self._interval(law.A, np.exp(a)),
            "B": self._interval(law.B, np.exp(b)), "alpha": self._interval(law.alpha, alpha),
            "beta": self._interval(law.beta, beta),
        }

    def optimum_intervals(self, flops: float) -> dict[str, Interval]:
        """N_opt, D_opt and the loss there at budget ``flops``, by ScalingLaw.compute_optimal per resample."""
        best = self.best.law.compute_optimal(flops)
        opts = [law.compute_optimal(flops) for law in self.laws()]
        return {
            "params": self._interval(best.params, np.array([o.params for o in opts])),
            "tokens": self._interval(best.tokens, np.array([o.tokens for o in opts])),
            "loss": self._interval(best.loss, np.array([o.loss for o in opts])),
        }

    def loss_interval(self, params: float, tokens: float) -> Interval:
        """Predicted loss at a given (N, D)."""
        values = np.array([law.loss(params, tokens) for law in self.laws()])
        return self._interval(self.best.law.loss(params, tokens), values)


def resample_weights(
    points: FitPoints, n_resamples: int, rng: np.random.Generator, *, by_run: bool = False
) -> np.ndarray:
    """(K, n) multiplicities: points drawn with replacement, or whole runs when ``by_run``."""
    n = len(points)
    if not by_run:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)
    runs, inverse = np.unique(points.run.astype(str), return_inverse=True)
    draws = rng.multinomial(runs.size, np.full(runs.size, 1.0 / runs.size), size=n_resamples)
    return draws[:, inverse].astype(float)


def bootstrap(
    points: FitPoints,
    best: FitResult,
    *,
    n_resamples: int = 1000,
    weights: np.ndarray | None = None,
    by_run: bool | None = None,
    level: float = 0.95,
    seed: int = 0,
    delta: float = HUBER_DELTA,
) -> BootstrapResult:
    """Refit ``n_resamples`` resamples from ``best.theta``. ``by_run`` defaults to True when the points carry
    explicit run ids with more than one point per run (checkpoints). Borrowed-exponent fits keep their
    exponents fixed."""
    return bootstrap_many([points], [best], n_resamples=n_resamples, weights=weights, by_run=by_run, level=level,
                          seed=seed, delta=delta)[0]


def bootstrap_many(
    datasets: list[FitPoints],
    fits: list[FitResult],
    *,
    n_resamples: int = 1000,
    weights: np.ndarray | None = None,
    by_run: bool | None = None,
    level: float = 0.95,
    seed: int = 0,
    delta: float = HUBER_DELTA,
) -> list[BootstrapResult]:
    """:func:`bootstrap` for several data sets on the same (N, D) and runs (losses differ), in one batch."""
    first = datasets[0]
    for other in datasets[1:]:
        if not (np.array_equal(other.params, first.params) and np.array_equal(other.tokens, first.tokens)):
            raise ValueError("bootstrap_many needs data sets that share params and tokens")
    if by_run is None:
        by_run = first.explicit_runs and len(first.run_ids()) < len(first)
    rng = np.random.default_rng(seed)
    n_sets = len(datasets)
    mult = np.concatenate([resample_weights(first, n_resamples, rng, by_run=by_run) for _ in datasets])
    w = mult if weights is None else mult * np.asarray(weights, float)[None, :]
    log_x = first.log_x
    log_y = np.stack([d.log_y for d in datasets])
    owner = np.repeat(np.arange(n_sets), n_resamples)

    def fun(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = log_y[0] if n_sets == 1 else log_y[owner[idx]]
        return objective_and_grad(x, log_x, y, w[idx], delta)

    free = np.ones(5, bool)
    if fits[0].mode == "borrowed":
        free[2:4] = False
    x0 = np.repeat(np.stack([f.theta for f in fits]), n_resamples, axis=0)
    res = minimize_batched(fun, x0, free=free, ftol=BOOTSTRAP_FTOL, gtol=BOOTSTRAP_GTOL)
    out = []
    for r, fit in enumerate(fits):
        rows = slice(r * n_resamples, (r + 1) * n_resamples)
        out.append(BootstrapResult(best=fit, theta=res.x[rows], level=level,
                                   n_converged=int(res.converged[rows].sum()), by_run=by_run))
    return out
