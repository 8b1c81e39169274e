"""Batched grid fit + bootstrap vs one scipy L-BFGS-B call per start, on Epoch's 240 Chinchilla points.

Both sides minimise the same summed Huber-LSE objective with analytic gradients and the same stopping
rules: the grid phase with scipy's L-BFGS-B defaults (ftol 2.2e-9, gtol 1e-5, here max 1000 iterations),
then the best 8 starts polished (ftol 1e-15, gtol 1e-10); bootstrap resamples (identical multiplicities)
warm-started from the best fit (ftol 1e-12, gtol 1e-8). The reference's objective is a plain single-start
numpy function, as one would write it for scipy. Also prints the Hitchhiker OPT backtest ARE.

    nice python benchmarks/fit_bench.py [--quick] [--anchors PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from flopwise.fitting.anchors import load_chinchilla_epoch, load_opt_trajectories, verified
from flopwise.fitting.backtest import backtest
from flopwise.fitting.bootstrap import BOOTSTRAP_FTOL, BOOTSTRAP_GTOL, bootstrap, resample_weights
from flopwise.fitting.fit import (
    GRID_FTOL,
    GRID_GTOL,
    HOFFMANN_GRID,
    POLISH_FTOL,
    POLISH_GTOL,
    fit_law,
    law_from_theta,
)
from flopwise.fitting.hygiene import HITCHHIKER_MIN_TOKENS
from flopwise.fitting.lbfgs import MAX_ITER
from flopwise.fitting.objective import HUBER_DELTA

NAMES = ("E", "A", "B", "alpha", "beta")


def reference_fun(theta: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, w: np.ndarray | None):
    """Σ w·Huber(LSE − log L) and its gradient for one θ = (a, b, α, β, e): the straightforward version."""
    a, b, alpha, beta, e = theta
    t = np.stack([a - alpha * log_x[:, 0], b - beta * log_x[:, 1], np.full(log_y.size, e)])
    m = t.max(axis=0)
    z = np.exp(t - m)
    total = z.sum(axis=0)
    r = m + np.log(total) - log_y
    c = np.clip(r, -HUBER_DELTA, HUBER_DELTA)
    h = c * (r - 0.5 * c)
    if w is not None:
        h, c = h * w, c * w
    q = c * z / total
    grad = np.array([q[0].sum(), q[1].sum(), -(q[0] @ log_x[:, 0]), -(q[1] @ log_x[:, 1]), q[2].sum()])
    return h.sum(), grad


def scipy_minimize(x0, log_x, log_y, w, ftol, gtol):
    return minimize(reference_fun, x0, args=(log_x, log_y, w), jac=True, method="L-BFGS-B",
                    options={"ftol": ftol, "gtol": gtol, "maxiter": MAX_ITER})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every 10th grid start, 100 resamples")
    parser.add_argument("--resamples", type=int, default=None)
    parser.add_argument("--anchors", type=Path, default=Path(__file__).resolve().parents[1] / "tests/data/anchors")
    args = parser.parse_args()
    n_boot = args.resamples or (100 if args.quick else 1000)
    starts = HOFFMANN_GRID.starts()[:: 10 if args.quick else 1]

    points = load_chinchilla_epoch(verified(args.anchors / "chinchilla/svg_extracted_data.csv"))
    log_x, log_y = points.log_x, points.log_y
    print(f"Chinchilla points: {len(points)}; grid starts: {len(starts)}; bootstrap resamples: {n_boot}")

    # --- batched -----------------------------------------------------------------------------------------
    grid = _Subgrid(starts) if args.quick else HOFFMANN_GRID
    t0 = time.perf_counter()
    fit = fit_law(points.params, points.tokens, points.loss, grid=grid)  # type: ignore[arg-type]
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    boot = bootstrap(points, fit, n_resamples=n_boot, seed=0)
    t_boot = time.perf_counter() - t0

    # --- reference: one scipy call per start and per resample ----------------------------------------------
    t0 = time.perf_counter()
    print(f"batched: grid {t_grid:.2f} s, bootstrap {t_boot:.2f} s; running the scipy reference ...", flush=True)
    first = [scipy_minimize(x0, log_x, log_y, None, GRID_FTOL, GRID_GTOL) for x0 in starts]
    f_first = np.array([r.fun for r in first])
    polished = [scipy_minimize(first[i].x, log_x, log_y, None, POLISH_FTOL, POLISH_GTOL)
                for i in np.argsort(f_first)[:8]]
    ref_best = min(polished, key=lambda r: r.fun)
    t_grid_ref = time.perf_counter() - t0
    mult = resample_weights(points, n_boot, np.random.default_rng(0), by_run=False)  # bootstrap()'s draws
    t0 = time.perf_counter()
    ref_boot = np.array([scipy_minimize(ref_best.x, log_x, log_y, mult[k], BOOTSTRAP_FTOL, BOOTSTRAP_GTOL).x
                         for k in range(n_boot)])
    t_boot_ref = time.perf_counter() - t0

    # --- agreement -------------------------------------------------------------------------------------------
    ref_law = law_from_theta(ref_best.x)
    obj_rel = abs(fit.objective - ref_best.fun) / ref_best.fun
    par_rel = {k: abs(getattr(fit.law, k) / getattr(ref_law, k) - 1) for k in NAMES}
    ours_ci = boot.parameter_intervals()
    ref_vals = {"E": np.exp(ref_boot[:, 4]), "A": np.exp(ref_boot[:, 0]), "B": np.exp(ref_boot[:, 1]),
                "alpha": ref_boot[:, 2], "beta": ref_boot[:, 3]}
    print(f"\n{'':8}{'batched':>14}{'scipy':>14}{'rel diff':>11}")
    print(f"{'objective':<10}{fit.objective:>12.10f}{ref_best.fun:>14.10f}{obj_rel:>11.1e}")
    for k in NAMES:
        print(f"{k:<10}{getattr(fit.law, k):>12.5f}{getattr(ref_law, k):>14.5f}{par_rel[k]:>11.1e}")
    print("\n95% bootstrap intervals (batched | scipy):")
    for k in NAMES:
        lo, hi = np.percentile(ref_vals[k], [2.5, 97.5])
        print(f"  {k:<6} ({ours_ci[k].low:.4g}, {ours_ci[k].high:.4g}) | ({lo:.4g}, {hi:.4g})")
    same = np.abs(boot.theta - ref_boot).max(axis=1) < 1e-3
    print(f"  resamples whose optimum agrees to 1e-3 in every coordinate: {same.mean():.1%}")

    total, total_ref = t_grid + t_boot, t_grid_ref + t_boot_ref
    print(f"\n{'time (s)':<22}{'batched':>10}{'scipy':>10}{'speed-up':>10}")
    print(f"{f'grid ({len(starts)} starts)':<22}{t_grid:>10.2f}{t_grid_ref:>10.2f}{t_grid_ref / t_grid:>9.1f}×")
    print(f"{f'bootstrap ({n_boot})':<22}{t_boot:>10.2f}{t_boot_ref:>10.2f}{t_boot_ref / t_boot:>9.1f}×")
    print(f"{'total':<22}{total:>10.2f}{total_ref:>10.2f}{total_ref / total:>9.1f}×")
    ok = obj_rel <= 1e-6 and max(par_rel.values()) <= 1e-3
    print(f"same optimum (objective ≤ 1e-6 rel, parameters ≤ 0.1%): {'yes' if ok else 'NO'}")

    opt = load_opt_trajectories(verified(args.anchors / "hitchhiker/opt_trajectories.csv"))
    t0 = time.perf_counter()
    bt = backtest(opt, min_tokens=HITCHHIKER_MIN_TOKENS, target_fraction=0.7, mode="full")
    print(f"\nHitchhiker OPT protocol (fit 125m–30b on tokens > 1e10, predict 175b at ≥ 0.7 of its tokens): "
          f"ARE {bt.are:.2%} on {bt.n_targets} checkpoints, max {bt.max_relative_error:.2%}, "
          f"{bt.n_train} fit points, {time.perf_counter() - t0:.1f} s")


class _Subgrid:
    """A StartGrid stand-in for --quick: a fixed subset of Hoffmann's starts."""

    def __init__(self, starts: np.ndarray) -> None:
        self._starts = starts

    def starts(self) -> np.ndarray:
        return self._starts.copy()

    def __len__(self) -> int:
        return len(self._starts)


if __name__ == "__main__":
    main()
