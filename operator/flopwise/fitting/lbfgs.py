"""A batched L-BFGS: many independent minimisations advanced in lock-step with numpy.

Scaling-law fits start from a grid of thousands of points (Hoffmann's 4500) and bootstrap refits run
hundreds more; the per-call overhead of ``scipy.optimize.minimize`` dominates those small problems. Here
every start keeps its own L-BFGS memory, step and convergence flag, and each iteration evaluates the
objective once for all still-active starts (plus once more for the few whose step was cut back).

The method per start is textbook L-BFGS (Nocedal & Wright, alg. 7.4/7.5): two-loop recursion over the last
``memory`` pairs, initial Hessian γ·I with γ = sᵀy / yᵀy, backtracking Armijo line search from a unit step
(quadratic interpolation), curvature pairs kept only when sᵀy > 0. Stopping mirrors scipy's L-BFGS-B, so the
two are comparable: (f_k − f_{k+1}) ≤ ftol · max(|f_k|, |f_{k+1}|, 1) or max|∇f| ≤ gtol. A start stops after
two failed line searches in a row (scipy's "ABNORMAL_TERMINATION") or after ``max_iter`` iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""f(x, idx) -> (values (s,), gradients (s, P)) for the starts ``idx`` at points ``x`` (s, P)."""

FTOL = 1e-12
GTOL = 1e-8
MAX_ITER = 1000


@dataclass(frozen=True)
class BatchResult:
    x: np.ndarray  # (S, P) final points
    f: np.ndarray  # (S,) final objective values
    n_iter: np.ndarray  # (S,) iterations each start used
    converged: np.ndarray  # (S,) met ftol/gtol (False: iteration cap or a failed line search)
    n_evals: int  # batched objective calls


def minimize_batched(
    fun: BatchObjective,
    x0: np.ndarray,
    *,
    free: np.ndarray | None = None,
    memory: int = 10,
    ftol: float = FTOL,
    gtol: float = GTOL,
    max_iter: int = MAX_ITER,
    max_backtracks: int = 40,
    c1: float = 1e-4,
    keep_best: int | None = None,
) -> BatchResult:
    """Minimise ``fun`` from every row of ``x0``. ``free`` (P,) bool freezes the other coordinates.

    ``keep_best`` is for multi-start searches of which only the best few results are used: from iteration
    ``PRUNE_AFTER`` on, a start still running whose objective is above twice the ``keep_best``-th best one is
    stopped (unconverged). On a grid, most starts converge within tens of iterations while a few drift along a
    flat direction (an exponent → 0 with its coefficient) until the iteration cap, and those few set the wall time;
    none of them was ever the winner on the data sets the fitter is held to (Epoch's replication, the OPT curves).

    Extreme grid starts overflow on their way out (their non-finite values are masked per start), so numpy's
    floating-point warnings are silenced here rather than shown to the user."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _minimize_batched(fun, x0, free=free, memory=memory, ftol=ftol, gtol=gtol, max_iter=max_iter,
                                 max_backtracks=max_backtracks, c1=c1, keep_best=keep_best)


PRUNE_AFTER = 100


def _minimize_batched(fun: BatchObjective, x0: np.ndarray, *, free: np.ndarray | None, memory: int, ftol: float,
                      gtol: float, max_iter: int, max_backtracks: int, c1: float,
                      keep_best: int | None) -> BatchResult:
    x = np.array(x0, dtype=float, copy=True)
    n_starts, dim = x.shape
    mask = np.ones(dim, bool) if free is None else np.asarray(free, bool)
    all_idx = np.arange(n_starts)

    def evaluate(xs: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, g = fun(xs, idx)
        g = np.where(mask, g, 0.0)
        bad = ~np.isfinite(f) | ~np.isfinite(g).all(axis=1)
        return np.where(bad, np.inf, f), np.where(bad[:, None], 0.0, g)

    f, g = evaluate(x, all_idx)
    n_evals = 1
    s_hist = np.zeros((n_starts, memory, dim))
    y_hist = np.zeros((n_starts, memory, dim))
    rho = np.zeros((n_starts, memory))  # 0 marks an empty slot; slot 0 is the newest pair
    n_iter = np.zeros(n_starts, int)
    converged = np.abs(g).max(axis=1) <= gtol
    active = np.isfinite(f) & ~converged
    failures = np.zeros(n_starts, int)

    for iteration in range(max_iter):
        if keep_best is not None and iteration >= PRUNE_AFTER and iteration % 10 == 0 and n_starts > keep_best:
            bar = np.partition(f, keep_best - 1)[keep_best - 1]
            active &= ~(f > 2.0 * bar + 1e-12)
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi, xi, fi = g[idx], x[idx], f[idx]
        d = _two_loop(gi, s_hist[idx], y_hist[idx], rho[idx])
        slope = np.einsum("sp,sp->s", gi, d)
        restart = ~(slope < 0)  # not a descent direction: fall back to steepest descent
        if restart.any():
            d[restart] = -gi[restart]
            slope[restart] = -np.einsum("sp,sp->s", gi[restart], gi[restart])
            rho[idx[restart]] = 0.0
        fresh = rho[idx, 0] == 0  # no curvature yet: cap the first step at unit length
        step = np.where(fresh, np.minimum(1.0, 1.0 / np.maximum(np.linalg.norm(d, axis=1), 1e-300)), 1.0)

        f_new = np.full(idx.size, np.inf)
        g_new = np.zeros_like(gi)
        pending = np.arange(idx.size)
        for _ in range(max_backtracks):
            trial = xi[pending] + step[pending, None] * d[pending]
            ft, gt = evaluate(trial, idx[pending])
            n_evals += 1
            ok = ft <= fi[pending] + c1 * step[pending] * slope[pending]
            f_new[pending[ok]], g_new[pending[ok]] = ft[ok], gt[ok]
            if ok.all():
                break
            # Backtrack to the minimiser of the quadratic through f(0), f'(0) and f(t), kept in [0.1t, 0.5t].
            t, rest = step[pending[~ok]], ~ok
            curv = ft[rest] - fi[pending[rest]] - slope[pending[rest]] * t
            with np.errstate(divide="ignore", invalid="ignore"):
                quad = -slope[pending[rest]] * t * t / (2.0 * curv)
            quad = np.where(np.isfinite(quad), quad, 0.1 * t)
            pending = pending[rest]
            step[pending] = np.clip(quad, 0.1 * t, 0.5 * t)
        accepted = np.isfinite(f_new)

        # Failed line search: forget the curvature pairs and try steepest descent; stop after two in a row.
        failed = idx[~accepted]
        failures[failed] += 1
        rho[failed] = 0.0
        active[failed[failures[failed] >= 2]] = False
        acc = idx[accepted]
        if acc.size == 0:
            continue
        failures[acc] = 0
        s = step[accepted, None] * d[accepted]
        y = g_new[accepted] - g[acc]
        sy = np.einsum("sp,sp->s", s, y)
        keep = sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1)
        upd = acc[keep]
        s_hist[upd] = np.roll(s_hist[upd], 1, axis=1)
        y_hist[upd] = np.roll(y_hist[upd], 1, axis=1)
        rho[upd] = np.roll(rho[upd], 1, axis=1)
        s_hist[upd, 0], y_hist[upd, 0], rho[upd, 0] = s[keep], y[keep], 1.0 / sy[keep]

        f_old = f[acc]
        x[acc] += s
        f[acc], g[acc] = f_new[accepted], g_new[accepted]
        n_iter[acc] += 1
        small_step = (f_old - f[acc]) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f[acc])), 1.0)
        done = small_step | (np.abs(g[acc]).max(axis=1) <= gtol)
        converged[acc[done]] = True
        active[acc[done]] = False

    return BatchResult(x=x, f=f, n_iter=n_iter, converged=converged, n_evals=n_evals)


def _two_loop(g: np.ndarray, s: np.ndarray, y: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """−H·g for each start from its (s, y) pairs, newest first; empty slots (rho = 0) are no-ops."""
    q = g.copy()
    memory = s.shape[1]
    alpha = np.zeros((g.shape[0], memory))
    for j in range(memory):
        alpha[:, j] = rho[:, j] * np.einsum("sp,sp->s", s[:, j], q)
        q -= alpha[:, j, None] * y[:, j]
    yy = np.einsum("sp,sp->s", y[:, 0], y[:, 0])
    denom = rho[:, 0] * yy  # yᵀy / sᵀy
    ok = (denom > 0) & np.isfinite(denom)
    gamma = np.where(ok, 1.0 / np.where(ok, denom, 1.0), 1.0)  # sᵀy / yᵀy
    r = gamma[:, None] * q
    for j in reversed(range(memory)):
        beta = rho[:, j] * np.einsum("sp,sp->s", y[:, j], r)
        r += (alpha[:, j] - beta)[:, None] * s[:, j]
    return -r
