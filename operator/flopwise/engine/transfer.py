"""Predictions one can bet on: hyperparameter transfer across proxy sizes and the seed-noise floor.

Pure functions (numpy/scipy only), so the engine, the report and the tests share one implementation.

* **Per-width optimum** (:func:`fit_sweep`): a least-squares parabola in log-LR through the best grid point and
  up to two neighbours on each side; its vertex is the optimum, so it is not limited to grid points. Its
  standard error comes from the delta method on the parabola's coefficients, with the loss noise taken as the
  larger of the fit's residual scatter and the seed-noise floor (a 3-point parabola has no residual).
* **Transfer verdict** (:func:`transfer_verdict`): muP promises the same best LR at every width. If the
  per-width optima agree within one grid step, transfer holds and the largest proxy's optimum is used.
* **Power law** (:func:`fit_power_law`): otherwise log η_opt = log a + b·log N is fitted by weighted least
  squares (weights 1/se² of each width's log-optimum) and extrapolated to the target (as DeepSeek LLM fitted
  η_opt = 0.3118·C^−0.125). The interval propagates the per-width errors through the fit's covariance; with
  three or more widths it is inflated by the residual scatter when that is larger (Birge ratio) and uses a
  t quantile with n − 2 degrees of freedom, with two widths a normal quantile.
* **Noise floor** (:func:`noise_floor`): k seeds of the smallest ladder run. A perfect law's ARE on one run is
  E|ε|/L = √(2/π)·σ/L for Gaussian seed noise σ; a backtest ARE inside the 95% noise band (1.96·σ/L) cannot be
  told apart from a rerun with another seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

DEFAULT_RELATIVE_NOISE = 0.005
"""Loss noise assumed (as a share of the loss) for a sweep when neither residuals nor seeds measured it."""
WINDOW = 2  # neighbours on each side of the best grid point that the parabola sees
LEVEL = 0.95


@dataclass(frozen=True)
class SweepOptimum:
    """The best learning rate of one sweep: ``log_se`` is the standard error of log(lr)."""

    size: float  # parameters of the width swept
    lr: float
    log_se: float
    best_grid_lr: float
    on_edge: str | None  # "low" / "high": the best grid point is the grid's edge (optimum may lie beyond)
    points: int
    note: str

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        z = stats.norm.ppf(0.5 + level / 2)
        return math.exp(math.log(self.lr) - z * self.log_se), math.exp(math.log(self.lr) + z * self.log_se)


def fit_sweep(lrs: list[float], losses: list[float], *, size: float, noise_sd: float | None = None,
              grid_factor: float | None = None) -> SweepOptimum:
    """The optimum of one learning-rate sweep. A non-finite loss is a diverged run: it bounds the grid (a best
    point below a diverged LR is not on the edge) but gives the parabola no point.

    Raises ValueError when no loss is finite."""
    pairs = sorted((lr, loss) for lr, loss in zip(lrs, losses, strict=True) if lr > 0)
    finite = [j for j, (_, loss) in enumerate(pairs) if math.isfinite(loss)]
    if not finite:
        raise ValueError("no finite loss in the sweep")
    grid = [lr for lr, _ in pairs]
    xs = np.log(grid)
    ys = np.array([loss for _, loss in pairs])
    step = math.log(grid_factor) if grid_factor else (float(np.median(np.diff(xs))) if len(xs) > 1 else 1.0)
    i = min(finite, key=lambda j: ys[j])
    best = grid[i]
    edge = "low" if i == 0 and len(xs) > 1 else "high" if i == len(xs) - 1 and len(xs) > 1 else None
    window = [j for j in range(max(0, i - WINDOW), min(len(xs), i + WINDOW + 1)) if j in finite]
    if edge is not None or len(window) < 3 or window[0] == i or window[-1] == i:
        where = f"on the {edge} edge" if edge else "without finite neighbours on both sides"
        return SweepOptimum(size=size, lr=best, log_se=step, best_grid_lr=best, on_edge=edge, points=len(window),
                            note=f"best grid point {best:.3g} {where}: the optimum is uncertain by a grid step")
    x, y = xs[window] - xs[i], ys[window]
    design = np.stack([x * x, x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if not a > 0:
        return SweepOptimum(size=size, lr=best, log_se=step, best_grid_lr=best, on_edge=None, points=len(x),
                            note=f"best grid point {best:.3g}; the sweep is not convex around it")
    vertex = -b / (2 * a)
    clamped = min(max(vertex, float(x[0])), float(x[-1]))
    dof = len(x) - 3
    residual = float(np.sqrt(np.sum((design @ coef - y) ** 2) / dof)) if dof > 0 else 0.0
    sigma = max(residual, noise_sd if noise_sd else DEFAULT_RELATIVE_NOISE * float(np.mean(y)))
    cov = sigma**2 * np.linalg.pinv(design.T @ design)
    grad = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])
    log_se = float(math.sqrt(max(grad @ cov @ grad, 0.0)))
    log_se = min(max(log_se, 1e-3), step) if clamped == vertex else step
    lr = best * math.exp(clamped)
    note = f"parabola in log-LR over {len(x)} points puts the optimum at {lr:.3g} (best grid point {best:.3g})"
    return SweepOptimum(size=size, lr=lr, log_se=log_se, best_grid_lr=best, on_edge=None, points=len(x), note=note)


@dataclass(frozen=True)
class PowerLaw:
    """η_opt(N) = coefficient · N^exponent, fitted in log space, with its covariance (log a, b)."""

    coefficient: float
    exponent: float
    exponent_low: float
    exponent_high: float
    cov: np.ndarray
    quantile: float
    n: int

    def predict(self, size: float) -> tuple[float, float, float]:
        """(lr, low, high) at ``size``: the fit's value and its interval (from the coefficients' covariance)."""
        v = np.array([1.0, math.log(size)])
        mean = math.log(self.coefficient) + self.exponent * math.log(size)
        sd = math.sqrt(max(float(v @ self.cov @ v), 0.0))
        return math.exp(mean), math.exp(mean - self.quantile * sd), math.exp(mean + self.quantile * sd)


def fit_power_law(sizes: list[float], lrs: list[float], log_ses: list[float], level: float = LEVEL) -> PowerLaw:
    """Weighted least squares of log(lr) on log(size); needs ≥ 2 distinct sizes (ValueError otherwise)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(lrs, float))
    if len(x) < 2 or np.ptp(x) <= 0:
        raise ValueError("a power law needs optima at two or more distinct sizes")
    se = np.maximum(np.asarray(log_ses, float), 1e-3)
    w = 1.0 / se**2
    design = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = cov @ design.T @ (w * y)
    n = len(x)
    if n >= 3:
        chi2 = float(np.sum(w * (y - design @ coef) ** 2))
        cov = cov * max(1.0, chi2 / (n - 2))
        quantile = float(stats.t.ppf(0.5 + level / 2, n - 2))
    else:
        quantile = float(stats.norm.ppf(0.5 + level / 2))
    b, sd_b = float(coef[1]), math.sqrt(float(cov[1, 1]))
    return PowerLaw(coefficient=math.exp(coef[0]), exponent=b, exponent_low=b - quantile * sd_b,
                    exponent_high=b + quantile * sd_b, cov=cov, quantile=quantile, n=n)


@dataclass(frozen=True)
class TransferDecision:
    holds: bool
    drift: float  # largest ratio between two widths' optima
    tolerance: float  # one grid step (ratio)
    law: PowerLaw
    target_lr: float
    target_low: float
    target_high: float
    verdict: str


def transfer_verdict(optima: list[SweepOptimum], *, grid_factor: float, target_size: float,
                     level: float = LEVEL) -> TransferDecision:
    """Do the widths agree within one grid step? Either way the power law is fitted (its exponent near 0 is the
    quantitative form of "transfer holds"); when they disagree its extrapolation is the target's learning rate."""
    if len(optima) < 2:
        raise ValueError("the transfer check needs sweeps at two or more widths")
    law = fit_power_law([o.size for o in optima], [o.lr for o in optima], [o.log_se for o in optima], level)
    drift = max(math.exp(abs(math.log(a.lr / b.lr))) for a, b in combinations(optima, 2))
    holds = drift <= grid_factor * (1 + 1e-9)
    largest = max(optima, key=lambda o: o.size)
    widths = ", ".join(f"{o.lr:.3g} at {o.size:.3g} params" for o in sorted(optima, key=lambda o: o.size))
    if holds:
        low, high = largest.interval(level)
        verdict = (f"transfer holds: best LRs {widths} agree within one grid step (×{grid_factor:g}; drift "
                   f"×{drift:.2f}); using {largest.lr:.3g} from the largest proxy")
        return TransferDecision(True, drift, grid_factor, law, largest.lr, low, high, verdict)
    lr, low, high = law.predict(target_size)
    verdict = (f"transfer does not hold: best LRs {widths} drift ×{drift:.2f} (> one grid step, ×{grid_factor:g}); "
               f"η_opt ∝ N^{law.exponent:.3f} [{law.exponent_low:.3f}, {law.exponent_high:.3f}] extrapolates to "
               f"{lr:.3g} [{low:.3g}, {high:.3g}] at the target's {target_size:.3g} params")
    return TransferDecision(False, drift, grid_factor, law, lr, low, high, verdict)


@dataclass(frozen=True)
class NoiseFloor:
    seeds: int
    mean_loss: float
    sd: float
    floor_are: float  # expected ARE of a perfect law on one run: √(2/π)·σ/L
    band_are: float  # 95% of single-run noise draws lie within this relative error: 1.96·σ/L
    floor_are_high: float  # upper 95% bound on floor_are (chi-square on σ with k − 1 dof)


def noise_floor(losses: list[float], level: float = LEVEL) -> NoiseFloor:
    """The seed-noise floor of k ≥ 2 final losses of one configuration (ValueError otherwise)."""
    values = np.array([v for v in losses if math.isfinite(v)], float)
    k = len(values)
    if k < 2:
        raise ValueError("the noise floor needs two or more seeds that finished")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    upper = sd * math.sqrt((k - 1) / stats.chi2.ppf((1 - level) / 2, k - 1))
    return NoiseFloor(seeds=k, mean_loss=mean, sd=sd, floor_are=math.sqrt(2 / math.pi) * sd / mean,
                      band_are=float(stats.norm.ppf(0.5 + level / 2)) * sd / mean,
                      floor_are_high=math.sqrt(2 / math.pi) * upper / mean)


def within_noise(backtest_are: float, floor: NoiseFloor) -> bool:
    """A backtest ARE inside the 95% single-run noise band is not distinguishable from seed noise."""
    return backtest_are <= floor.band_are
