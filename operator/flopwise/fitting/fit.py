"""Fitting L(N, D) = E + A/N^α + B/D^β, and the reduced forms used when points are scarce.

The method is Hoffmann et al.'s Approach 3 as corrected by Epoch AI (see :mod:`.objective`): L-BFGS from
every point of a start grid, all starts batched (:mod:`.lbfgs`), the best kept. The grid phase stops like
scipy's L-BFGS-B defaults; the few best starts are then polished with tight tolerances, because the optimum
is a long flat valley (A and B move by 0.05% while f changes by 1e-11) and loose stopping leaves parameters
short of it.

When to fit what (:func:`choose_fit_mode`): five free parameters need points spread over sizes. With fewer
than 3 distinct model sizes nothing can separate the N term from E, so the fit is refused. With fewer than 5
sizes (the Hitchhiker's "five models is a safe start") or fewer than 15 points, the exponents α, β are
borrowed from a prior law (Choshen et al.: exponents transfer within an architecture family, and three
parameters explain most variance) and only E, A, B are fitted. Otherwise all five are fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from flopwise.fitting.lbfgs import BatchObjective, minimize_batched
from flopwise.fitting.objective import HUBER_DELTA, objective_and_grad
from flopwise.fitting.points import FitInputError, FitPoints
from flopwise.planning.laws import EPOCH, ScalingLaw

FitMode = Literal["full", "borrowed"]

MIN_SIZES_ANY = 3
MIN_SIZES_FULL = 5
MIN_POINTS_FULL = 15

GRID_FTOL, GRID_GTOL = 2.220446049250313e-09, 1e-5
"""scipy L-BFGS-B's defaults (factr 1e7 · eps, pgtol 1e-5): the grid phase stops where scipy would."""
POLISH_FTOL, POLISH_GTOL = 1e-15, 1e-10


@dataclass(frozen=True)
class StartGrid:
    """Initial values for the five parameters in the log parameterisation."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    e: tuple[float, ...]
    alpha: tuple[float, ...]
    beta: tuple[float, ...]

    def starts(self) -> np.ndarray:
        """(S, 5) in the optimiser's order (a, b, α, β, e), α outermost like Hoffmann's loops."""
        mesh = np.meshgrid(self.alpha, self.beta, self.e, self.a, self.b, indexing="ij")
        al, be, e, a, b = (m.ravel() for m in mesh)
        return np.stack([a, b, al, be, e], axis=1)

    def __len__(self) -> int:
        return len(self.a) * len(self.b) * len(self.e) * len(self.alpha) * len(self.beta)


HOFFMANN_GRID = StartGrid(
    a=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    b=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    e=(-1.0, -0.5, 0.0, 0.5, 1.0),
    alpha=(0.0, 0.5, 1.0, 1.5, 2.0),
    beta=(0.0, 0.5, 1.0, 1.5, 2.0),
)
"""Hoffmann et al.'s grid (4500 starts)."""

COARSE_GRID = StartGrid(a=(0.0, 10.0, 20.0), b=(0.0, 10.0, 20.0), e=(-1.0, 0.0, 1.0), alpha=(0.0, 0.5, 1.0),
                        beta=(0.0, 0.5, 1.0))
"""243 starts: enough on well-spread synthetic data, used where a test repeats many fits."""


@dataclass(frozen=True)
class FitResult:
    law: ScalingLaw
    objective: float  # Σ w·Huber at the optimum
    n_points: int
    mode: FitMode
    start_index: int  # which grid start won
    start: tuple[float, float, float, float, float]  # that start as (a, b, e, alpha, beta)
    n_starts: int
    converged: bool  # the winning start met the grid phase's (scipy-default) stopping rule or the polish's
    theta: np.ndarray = field(repr=False)  # (a, b, α, β, e), the optimiser's coordinates

    def as_dict(self) -> dict[str, object]:
        law = self.law
        return {
            "E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta,
            "objective": self.objective, "n_points": self.n_points, "mode": self.mode,
            "start_index": self.start_index, "n_starts": self.n_starts, "converged": self.converged,
        }


def law_from_theta(theta: np.ndarray, name: str = "fitted") -> ScalingLaw:
    a, b, alpha, beta, e = (float(v) for v in theta)
    return ScalingLaw(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta, name=name)


def choose_fit_mode(n_points: int, n_distinct_sizes: int) -> FitMode:
    """The rule in the module docstring: refuse below 3 sizes, borrow exponents below 5 sizes or 15 points."""
    if n_distinct_sizes < MIN_SIZES_ANY:
        raise FitInputError(
            f"only {n_distinct_sizes} distinct model size(s); a scaling law needs at least {MIN_SIZES_ANY} "
            "(5 or more to fit the exponents too) — add runs at other sizes"
        )
    if n_distinct_sizes < MIN_SIZES_FULL or n_points < MIN_POINTS_FULL:
        return "borrowed"
    return "full"


def fit_law(
    params: np.ndarray,
    tokens: np.ndarray,
    losses: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    fixed_exponents: tuple[float, float] | None = None,
    grid: StartGrid = HOFFMANN_GRID,
    polish: int = 8,
    delta: float = HUBER_DELTA,
) -> FitResult:
    """Fit E, A, B, α, β (or only E, A, B when ``fixed_exponents=(α, β)``) to the points.

    ``weights`` multiply each point's Huber term (see :func:`flopwise.fitting.hygiene.run_weights`).
    """
    losses = np.asarray(losses, float)[None, :]
    return fit_law_many(params, tokens, losses, weights=weights, fixed_exponents=fixed_exponents, grid=grid,
                        polish=polish, delta=delta)[0]


def fit_law_many(
    params: np.ndarray,
    tokens: np.ndarray,
    losses: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    fixed_exponents: tuple[float, float] | None = None,
    grid: StartGrid = HOFFMANN_GRID,
    polish: int = 8,
    delta: float = HUBER_DELTA,
) -> list[FitResult]:
    """:func:`fit_law` for R data sets that share (N, D) — ``losses`` is (R, n) — in one batched run, so
    simulation studies (e.g. interval coverage) pay the optimiser's sequential tail once, not R times."""
    log_x = np.stack([np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float))], axis=1)
    log_y = np.log(np.atleast_2d(np.asarray(losses, float)))
    w = None if weights is None else np.asarray(weights, float)
    starts = grid.starts()
    free = np.ones(5, bool)
    if fixed_exponents is not None:
        free[2:4] = False
        starts[:, 2:4] = fixed_exponents
        starts = np.unique(starts, axis=0)  # the α, β axes of the grid collapse
    n_sets, n_starts = log_y.shape[0], starts.shape[0]

    def batch(owner: np.ndarray) -> BatchObjective:
        """The objective for optimiser rows that belong to data sets ``owner[row]``."""

        def fun(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return objective_and_grad(x, log_x, log_y[0] if n_sets == 1 else log_y[owner[idx]], w, delta)

        return fun

    owner = np.repeat(np.arange(n_sets), n_starts)
    keep = max(1, min(polish, n_starts))
    first = minimize_batched(batch(owner), np.tile(starts, (n_sets, 1)), free=free, ftol=GRID_FTOL, gtol=GRID_GTOL,
                             keep_best=keep * n_sets if n_sets == 1 else None)
    f_first = first.f.reshape(n_sets, n_starts)
    top = np.argsort(f_first, axis=1)[:, :keep]  # (R, keep) start indices
    rows = (top + np.arange(n_sets)[:, None] * n_starts).ravel()
    owner2 = np.repeat(np.arange(n_sets), keep)
    second = minimize_batched(batch(owner2), first.x[rows], free=free, ftol=POLISH_FTOL, gtol=POLISH_GTOL)
    results = []
    for r in range(n_sets):
        f_r = second.f[r * keep : (r + 1) * keep]
        best = r * keep + int(np.argmin(f_r))
        winner = int(top[r, best - r * keep])
        s = starts[winner]
        results.append(FitResult(
            law=law_from_theta(second.x[best]),
            objective=float(second.f[best]),
            n_points=int(log_y.shape[1]),
            mode="full" if fixed_exponents is None else "borrowed",
            start_index=winner,
            start=(float(s[0]), float(s[1]), float(s[4]), float(s[2]), float(s[3])),
            n_starts=int(n_starts),
            converged=bool(second.converged[best] or first.converged[r * n_starts + winner]),
            theta=second.x[best].copy(),
        ))
    return results


def fit_points(
    points: FitPoints,
    *,
    weights: np.ndarray | None = None,
    mode: FitMode | Literal["auto"] = "auto",
    prior: ScalingLaw = EPOCH,
    grid: StartGrid = HOFFMANN_GRID,
) -> FitResult:
    """Fit a point table, choosing full or borrowed-exponent mode by :func:`choose_fit_mode` when ``auto``.
    Borrowed exponents come from ``prior`` (default: Epoch's refit of Chinchilla)."""
    chosen = choose_fit_mode(len(points), points.n_distinct_sizes()) if mode == "auto" else mode
    fixed = (prior.alpha, prior.beta) if chosen == "borrowed" else None
    return fit_law(points.params, points.tokens, points.loss, weights=weights, fixed_exponents=fixed, grid=grid)


@dataclass(frozen=True)
class RatioLaw:
    """L(N) = E + A / N^gamma along a fixed tokens-per-parameter ratio (D = ratio·N)."""

    E: float
    A: float
    gamma: float
    ratio: float | None
    objective: float
    n_points: int

    def loss(self, params: float) -> float:
        return self.E + self.A / params**self.gamma


def fit_fixed_ratio(
    params: np.ndarray,
    losses: np.ndarray,
    *,
    ratio: float | None = None,
    weights: np.ndarray | None = None,
    grid: StartGrid = HOFFMANN_GRID,
    delta: float = HUBER_DELTA,
) -> RatioLaw:
    """Fit L(N) = E + A'/N^γ for runs that all train at one tokens-per-parameter ratio, where D is a
    multiple of N and the two power terms cannot be told apart. Same objective with one power term;
    starts from the grid's (a, α, e) axes."""
    log_x = np.log(np.asarray(params, float))[:, None]
    log_y = np.log(np.asarray(losses, float))
    w = None if weights is None else np.asarray(weights, float)
    mesh = np.meshgrid(grid.a, grid.alpha, grid.e, indexing="ij")
    starts = np.stack([m.ravel() for m in mesh], axis=1)

    def fun(x: np.ndarray, _idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return objective_and_grad(x, log_x, log_y, w, delta)

    first = minimize_batched(fun, starts, ftol=GRID_FTOL, gtol=GRID_GTOL)
    order = np.argsort(first.f)[:8]
    second = minimize_batched(fun, first.x[order], ftol=POLISH_FTOL, gtol=POLISH_GTOL)
    a, gamma, e = second.x[int(np.argmin(second.f))]
    return RatioLaw(E=float(np.exp(e)), A=float(np.exp(a)), gamma=float(gamma), ratio=ratio,
                    objective=float(second.f.min()), n_points=int(log_y.size))


__all__ = [
    "COARSE_GRID", "HOFFMANN_GRID", "FitMode", "FitResult", "RatioLaw", "StartGrid",
    "choose_fit_mode", "fit_fixed_ratio", "fit_law", "fit_law_many", "fit_points", "law_from_theta",
]
