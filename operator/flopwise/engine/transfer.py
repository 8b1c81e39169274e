"""Predictions one can bet on: hyperparameter transfer across proxy sizes and the seed-noise floor.

Pure functions (numpy/scipy only), so the engine, the report and the tests share one implementation.

* **Per-width optimum** (:func:`fit_sweep`): a least-squares parabola in log-LR through the best grid point and
  up to two neighbours on each side; its vertex is the optimum, so it is not limited to grid points. Its
  standard error comes from the delta method on the parabola's coefficients, with the loss noise taken as the
  larger of the fit's residual scatter and the seed-noise floor (a 3-point parabola has no residual).
* **Transfer verdict** (:func:`transfer_verdict`): muP promises the same best LR at every width (Yang et al.
  2022: transfer across *width* at fixed depth). Transfer holds when the power law's exponent cannot be told
  from 0 (its 95% interval holds 0); then the largest proxy's optimum is used at every width. Its interval is
  the test, not the grid: a drift smaller than a grid step can still be real (the parabolas place the optima
  between grid points), and under standard parameterisation it is — η_opt ∝ dModel^−1 roughly, which would
  put a 4× wider model at 4× its best LR. An optimum on its grid's edge has a grid step for its standard
  error, which widens the interval accordingly.
* **Power law** (`flopwise.fitting.curves.fit_power_law`): otherwise log η_opt = log a + b·log dModel is fitted
  by weighted least squares (weights 1/se² of each width's log-optimum) and extrapolated to the target's width
  (as DeepSeek LLM fitted η_opt = 0.3118·C^−0.125, there in compute). The widths share their depth; the target
  and the ladder's rungs differ in depth too, which muP does not promise to transfer (Yang et al. 2022 found
  pre-LN transformers transfer across depth empirically, their Figure 4): a stated departure.
* **Noise floor** (:func:`noise_floor`): k seeds of one ladder configuration. A perfect law's ARE on one run is
  E|ε|/L = √(2/π)·σ/L for Gaussian seed noise σ; a backtest ARE inside the 95% noise band (1.96·σ/L) cannot be
  told apart from a rerun with another seed. σ from k seeds has k − 1 degrees of freedom, so the verdict uses
  the band at σ's 95% upper bound (chi-square): only an ARE above it is the law's own error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

from flopwise.fitting.curves import PowerLaw, fit_power_law, parabola_vertex

DEFAULT_RELATIVE_NOISE = 0.005
"""Loss noise assumed (as a share of the loss) for a sweep when neither residuals nor seeds measured it."""
WINDOW = 2  # neighbours on each side of the best grid point that the parabola sees
LEVEL = 0.95


@dataclass(frozen=True)
class SweepOptimum:
    """The best learning rate of one sweep: ``log_se`` is the standard error of log(lr)."""

    size: float  # the width swept (dModel)
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
    sigma = noise_sd if noise_sd else DEFAULT_RELATIVE_NOISE * float(np.mean(ys[window]))
    vertex = parabola_vertex(xs[window], ys[window], noise_sd=sigma)
    if not vertex.convex:
        return SweepOptimum(size=size, lr=best, log_se=step, best_grid_lr=best, on_edge=None, points=len(window),
                            note=f"best grid point {best:.3g}; the sweep is not convex around it")
    log_se = step if vertex.clamped else min(max(vertex.se, 1e-3), step)
    lr = math.exp(vertex.x)
    note = f"parabola in log-LR over {len(window)} points puts the optimum at {lr:.3g} (best grid point {best:.3g})"
    return SweepOptimum(size=size, lr=lr, log_se=log_se, best_grid_lr=best, on_edge=None, points=len(window),
                        note=note)


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
    """Does the best LR move with width? The power law η_opt ∝ dModel^b is fitted either way; transfer holds
    when b's interval holds 0, else the law's extrapolation is the target's learning rate and each width's."""
    if len(optima) < 2:
        raise ValueError("the transfer check needs sweeps at two or more widths")
    law = fit_power_law([o.size for o in optima], [o.lr for o in optima], [o.log_se for o in optima], level)
    drift = max(math.exp(abs(math.log(a.lr / b.lr))) for a, b in combinations(optima, 2))
    holds = law.exponent_low <= 0 <= law.exponent_high
    slope = f"η_opt ∝ dModel^{law.exponent:.3f} [{law.exponent_low:.3f}, {law.exponent_high:.3f}]"
    largest = max(optima, key=lambda o: o.size)
    widths = ", ".join(f"{o.lr:.3g} at width {o.size:g}" for o in sorted(optima, key=lambda o: o.size))
    if holds:
        low, high = largest.interval(level)
        verdict = (f"transfer holds: best LRs {widths} (drift ×{drift:.2f}); {slope}: its exponent's interval holds "
                   f"0; using {largest.lr:.3g} from the largest proxy at every width")
        return TransferDecision(True, drift, grid_factor, law, largest.lr, low, high, verdict)
    lr, low, high = law.predict(target_size)
    verdict = (f"transfer does not hold: best LRs {widths} drift ×{drift:.2f}; {slope}: its exponent's interval "
               f"excludes 0; it extrapolates to "
               f"{lr:.3g} [{low:.3g}, {high:.3g}] at the target's width {target_size:g}, and sets each width's LR")
    return TransferDecision(False, drift, grid_factor, law, lr, low, high, verdict)


@dataclass(frozen=True)
class NoiseFloor:
    seeds: int
    mean_loss: float
    sd: float
    floor_are: float  # expected ARE of a perfect law on one run: √(2/π)·σ/L
    band_are: float  # 95% of single-run noise draws lie within this relative error: 1.96·σ/L
    floor_are_high: float  # upper 95% bound on floor_are (chi-square on σ with k − 1 dof)
    band_are_high: float  # the band at σ's upper 95% bound: what k seeds cannot rule out


def noise_floor(losses: list[float], level: float = LEVEL) -> NoiseFloor:
    """The seed-noise floor of k ≥ 2 final losses of one configuration (ValueError otherwise)."""
    values = np.array([v for v in losses if math.isfinite(v)], float)
    k = len(values)
    if k < 2:
        raise ValueError("the noise floor needs two or more seeds that finished")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    upper = sd * math.sqrt((k - 1) / stats.chi2.ppf((1 - level) / 2, k - 1))
    z = float(stats.norm.ppf(0.5 + level / 2))
    return NoiseFloor(seeds=k, mean_loss=mean, sd=sd, floor_are=math.sqrt(2 / math.pi) * sd / mean,
                      band_are=z * sd / mean, floor_are_high=math.sqrt(2 / math.pi) * upper / mean,
                      band_are_high=z * upper / mean)


def within_noise(backtest_are: float, floor: NoiseFloor) -> bool:
    """A backtest ARE that seed noise alone could produce: inside the 95% single-run band at σ's upper bound.
    With k seeds σ is known to a factor (its 95% upper bound is ~4.4× the estimate at k = 3), so only an ARE
    above that bound shows an error of the law's own."""
    return backtest_are <= floor.band_are_high
