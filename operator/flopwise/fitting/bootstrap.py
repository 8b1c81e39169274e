"""Bootstrap confidence intervals for a fitted law and for what the planner derives from it.

Each resample draws the points (or, given run ids, whole runs — checkpoints of one run are not independent)
with replacement. A resample is the same points with integer multiplicities, so all resamples share one
batched optimisation with per-resample weights, warm-started from the best fit (as Epoch did; a resample's
optimum is near the full-data optimum). Intervals are percentile intervals (95% by default).
"""

from __future__ import annotations

import math
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
        values = values[np.isfinite(values)]
        if values.size == 0:  # no resample converged to a finite value: the interval is unknown, not zero-width
            return Interval(float(estimate), math.nan, math.nan)
        low, high = np.percentile(values, [tail, 100.0 - tail])
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

    x0 = np.repeat(np.stack([f.theta for f in fits]), n_resamples, axis=0)
    return _solve_resamples(fun, x0, fits, n_resamples, level=level, by_run=by_run)


@dataclass(frozen=True)
class NoiseModel:
    """The noise a parametric bootstrap draws: relative (log) noise of sd ``sigma``, a share ``rho`` of it shared
    by the points of one group (a WSD trunk and its branches share their seed's luck)."""

    sigma: float
    rho: float
    residual_sd: float  # what the fit's residuals alone say
    floor_sd: float | None  # what seed replicas say, when there are some

    def describe(self) -> str:
        floor = f", seed floor {self.floor_sd:.2%}" if self.floor_sd is not None else ""
        return f"relative noise {self.sigma:.2%} (residuals {self.residual_sd:.2%}{floor}), {self.rho:.0%} shared"


def noise_model(points: FitPoints, best: FitResult, groups: np.ndarray | None = None,
                floor_sd: float | None = None) -> NoiseModel:
    """The residuals' scatter (dof-corrected), or the seed floor when larger; the shared share from a one-way
    analysis of variance of the residuals by group (0 when every group has one point)."""
    from flopwise.fitting.objective import log_prediction

    residual = points.log_y - log_prediction(best.theta, points.log_x)[0]
    n = residual.size
    free = 5 if best.mode == "full" else 3
    residual_sd = float(np.sqrt(np.sum(residual**2) / max(1, n - free)))
    rho = 0.0
    if groups is not None:
        labels, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        sizes = np.bincount(inverse)
        if labels.size >= 2 and (sizes >= 2).any():
            means = np.bincount(inverse, residual) / sizes
            within = float(np.sum((residual - means[inverse]) ** 2) / max(1, n - labels.size))
            n0 = (n - np.sum(sizes**2) / n) / (labels.size - 1)
            between = float(np.sum(sizes * (means - residual.mean()) ** 2) / (labels.size - 1))
            tau2 = max(0.0, (between - within) / max(n0, 1e-9))
            rho = min(0.95, tau2 / (tau2 + within)) if tau2 + within > 0 else 0.0
    sigma = max(residual_sd, floor_sd or 0.0)
    return NoiseModel(sigma=sigma, rho=rho, residual_sd=residual_sd, floor_sd=floor_sd)


def bootstrap_parametric(points: FitPoints, best: FitResult, *, n_resamples: int = 200,
                         groups: np.ndarray | None = None, noise: NoiseModel | None = None, level: float = 0.95,
                         seed: int = 0, weights: np.ndarray | None = None, exponent_sd: float = 0.0,
                         delta: float = HUBER_DELTA) -> BootstrapResult:
    """Redraw every loss from the fitted law times the noise model (a shared draw per group plus a draw per
    point) and refit each data set from the best fit.

    Why not resample runs: a campaign has 15–25 annealed points from as few as five trunks; drawing five trunks
    with replacement mostly repeats sizes, and a law cannot be fitted to two sizes. The parametric bootstrap keeps
    the design and asks how far the fit moves under the noise the data (or the seeds) show.

    A fit with borrowed exponents is only as good as the borrowing: with ``exponent_sd`` each resample also
    draws its fixed α and β around the borrowed ones, so the intervals carry the prior's uncertainty too."""
    noise = noise or noise_model(points, best, groups)
    return bootstrap_parametric_many(points, [best], [noise], n_resamples=n_resamples, groups=groups, level=level,
                                     seeds=[seed], weights=weights, exponent_sd=exponent_sd, delta=delta)[0]


def bootstrap_parametric_many(points: FitPoints, fits: list[FitResult], noises: list[NoiseModel], *,
                              n_resamples: int = 200, groups: np.ndarray | None = None, level: float = 0.95,
                              seeds: list[int] | None = None, weights: np.ndarray | None = None,
                              exponent_sd: float = 0.0, delta: float = HUBER_DELTA) -> list[BootstrapResult]:
    """:func:`bootstrap_parametric` for several fits of data sets on the same (N, D) — each with its own fitted
    law and noise, all of one mode — in one batched optimisation (the calibration benchmark's hundreds of
    simulated campaigns). Each set's draws come from its own seed, so a set's result does not depend on the
    others."""
    from flopwise.fitting.objective import log_prediction

    n = len(points)
    if groups is None:
        inverse, n_groups = np.arange(n), n
    else:
        _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        n_groups = int(inverse.max()) + 1
    seeds = seeds if seeds is not None else list(range(len(fits)))
    log_y, x0 = [], []
    for fit, noise, seed in zip(fits, noises, seeds, strict=True):
        rng = np.random.default_rng(seed)
        fitted = log_prediction(fit.theta, points.log_x)[0]
        shared = rng.normal(0.0, noise.sigma * math.sqrt(noise.rho), (n_resamples, n_groups))[:, inverse]
        own = rng.normal(0.0, noise.sigma * math.sqrt(1.0 - noise.rho), (n_resamples, n))
        log_y.append(fitted[None, :] + shared + own)
        start = np.repeat(fit.theta[None, :], n_resamples, axis=0)
        if fit.mode == "borrowed" and exponent_sd > 0:
            start[:, 2:4] = np.maximum(start[:, 2:4] + rng.normal(0.0, exponent_sd, (n_resamples, 2)), 0.05)
        x0.append(start)
    all_y = np.concatenate(log_y)
    w = None if weights is None else np.asarray(weights, float)

    def fun(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return objective_and_grad(x, points.log_x, all_y[idx], w, delta)

    return _solve_resamples(fun, np.concatenate(x0), fits, n_resamples, level=level, by_run=False)


def _solve_resamples(fun, x0: np.ndarray, fits: list[FitResult], n_resamples: int, *, level: float,
                     by_run: bool) -> list[BootstrapResult]:
    """Minimise every resample of every fit in one batch (``n_resamples`` consecutive rows per fit; exponents held
    when the fits borrowed them) and split the optima back per fit."""
    free = np.ones(5, bool)
    if fits[0].mode == "borrowed":
        free[2:4] = False
    res = minimize_batched(fun, x0, free=free, ftol=BOOTSTRAP_FTOL, gtol=BOOTSTRAP_GTOL)
    out = []
    for r, fit in enumerate(fits):
        rows = slice(r * n_resamples, (r + 1) * n_resamples)
        out.append(BootstrapResult(best=fit, theta=res.x[rows], level=level,
                                   n_converged=int(res.converged[rows].sum()), by_run=by_run))
    return out
