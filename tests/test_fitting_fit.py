"""The Huber-LSE fit: objective and gradient, the Epoch replication, reduced fits and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from fitting_helpers import CHINCHILLA_CSV, TRUE_LAW, anchor, campaign, grid_design
from flopwise.fitting.anchors import load_chinchilla_epoch
from flopwise.fitting.bootstrap import bootstrap, bootstrap_many
from flopwise.fitting.fit import (
    COARSE_GRID,
    HOFFMANN_GRID,
    FitResult,
    choose_fit_mode,
    fit_fixed_ratio,
    fit_law,
    fit_law_many,
    fit_points,
)
from flopwise.fitting.lbfgs import minimize_batched
from flopwise.fitting.objective import objective_and_grad
from flopwise.fitting.points import FitInputError, FitPoints
from flopwise.planning.laws import EPOCH, ScalingLaw

# Epoch AI's exact L-BFGS-B replication of Hoffmann's procedure on these points (arXiv:2404.10102).
EPOCH_REPLICATION = {"E": 1.8172, "alpha": 0.3473, "beta": 0.3672, "A": 477.8, "B": 2143.9}


@pytest.fixture(scope="module")
def chinchilla() -> FitPoints:
    return load_chinchilla_epoch(anchor(CHINCHILLA_CSV))


@pytest.fixture(scope="module")
def chinchilla_fit(chinchilla: FitPoints) -> FitResult:
    return fit_points(chinchilla, mode="full", grid=HOFFMANN_GRID)


def _reference_objective(theta: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, w: np.ndarray) -> float:
    a, b, alpha, beta, e = theta
    terms = np.stack([a - alpha * log_x[:, 0], b - beta * log_x[:, 1], np.full(log_y.size, e)])
    return float(np.sum(w * huber(1e-3, logsumexp(terms, axis=0) - log_y)))


def test_objective_is_the_weighted_huber_sum_and_its_gradient_is_exact() -> None:
    rng = np.random.default_rng(3)
    n_, d_ = grid_design(4, 5)
    log_x = np.log(np.stack([n_, d_], axis=1))
    log_y = np.log(np.array([TRUE_LAW.loss(n, d) for n, d in zip(n_, d_, strict=True)])) + rng.normal(0, 0.02, n_.size)
    thetas = np.array([[6.0, 7.6, 0.35, 0.37, 0.6], [3.0, 12.0, 0.1, 0.8, -0.5], [20.0, 0.0, 1.5, 0.0, 1.0]])
    weights = rng.uniform(0.2, 2.0, (3, n_.size))
    f, g = objective_and_grad(thetas, log_x, log_y, weights)
    for i, theta in enumerate(thetas):
        assert f[i] == pytest.approx(_reference_objective(theta, log_x, log_y, weights[i]), rel=1e-12)
        for j in range(5):
            h = 1e-6 * max(1.0, abs(theta[j]))
            up, down = theta.copy(), theta.copy()
            up[j] += h
            down[j] -= h
            numeric = (_reference_objective(up, log_x, log_y, weights[i])
                       - _reference_objective(down, log_x, log_y, weights[i])) / (2 * h)
            assert g[i, j] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_objective_survives_overflowing_terms() -> None:
    log_x = np.log(np.array([[1e8, 1e9], [1e9, 1e10]]))
    f, g = objective_and_grad(np.array([[800.0, 5.0, 0.1, 0.3, -900.0]]), log_x, np.log([3.0, 2.5]))
    assert np.isfinite(f).all() and np.isfinite(g).all()


def test_batched_lbfgs_matches_scipy_from_the_same_starts(chinchilla: FitPoints) -> None:
    """Same stopping rule as scipy's L-BFGS-B defaults: the best optimum agrees, and the global basin is reached
    from about as many starts (the two line searches send single starts to different local minima, both ways)."""
    log_x, log_y = chinchilla.log_x, chinchilla.log_y
    starts = COARSE_GRID.starts()[::8]
    res = minimize_batched(lambda x, _i: objective_and_grad(x, log_x, log_y), starts, ftol=2.2e-9, gtol=1e-5)
    ref = np.array([
        minimize(lambda t: tuple(v[0] for v in objective_and_grad(t[None], log_x, log_y)), x0, jac=True,
                 method="L-BFGS-B", options={"ftol": 2.2e-9, "gtol": 1e-5, "maxiter": 1000}).fun
        for x0 in starts
    ])
    assert res.f.min() == pytest.approx(ref.min(), rel=1e-6)
    best = min(res.f.min(), ref.min())
    ours, theirs = (int((f <= best * (1 + 1e-5)).sum()) for f in (res.f, ref))
    assert theirs >= 2 and ours >= theirs / 2, (ours, theirs)
    assert (res.f < objective_and_grad(starts, log_x, log_y)[0]).all()


def test_epoch_replication(chinchilla: FitPoints, chinchilla_fit: FitResult) -> None:
    """Epoch's preprocessing (240 points) and Hoffmann's 4500-start grid give Epoch's L-BFGS-B numbers."""
    assert len(chinchilla) == 240
    law, fit = chinchilla_fit.law, chinchilla_fit
    assert fit.n_points == 240 and fit.n_starts == 4500 and fit.converged
    for name in ("E", "alpha", "beta"):
        assert getattr(law, name) == pytest.approx(EPOCH_REPLICATION[name], rel=0.01), name
    for name in ("A", "B"):
        assert getattr(law, name) == pytest.approx(EPOCH_REPLICATION[name], rel=0.05), name
    # The summed objective (not the mean): the reported value is Σ Huber at the reported law.
    theta = [*np.log([law.A, law.B]), law.alpha, law.beta, np.log(law.E)]
    assert fit.objective == pytest.approx(
        _reference_objective(np.array(theta), chinchilla.log_x, chinchilla.log_y, np.ones(240)), rel=1e-9)
    # Compute-optimal exponent a = β/(α+β): Epoch report 0.513.
    assert law.params_exponent == pytest.approx(0.513, abs=0.005)


def test_epoch_bootstrap_intervals(chinchilla: FitPoints, chinchilla_fit: FitResult) -> None:
    """Epoch's 95% bootstrap intervals (4000 resamples): E (1.769, 1.871), α (0.317, 0.373), β (0.331, 0.415)."""
    boot = bootstrap(chinchilla, chinchilla_fit, n_resamples=300, seed=0)
    assert boot.n_converged == 300 and not boot.by_run
    ci = boot.parameter_intervals()
    for name, (low, high) in {"E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}.items():
        assert ci[name].low == pytest.approx(low, rel=0.03), name
        assert ci[name].high == pytest.approx(high, rel=0.03), name
    opt = boot.optimum_intervals(5.76e23)
    best = chinchilla_fit.law.compute_optimal(5.76e23)
    assert opt["params"].estimate == best.params and opt["params"].low < best.params < opt["params"].high
    assert opt["tokens"].low < best.tokens < opt["tokens"].high
    at = boot.loss_interval(70e9, 1.4e12)
    assert at.low < chinchilla_fit.law.loss(70e9, 1.4e12) < at.high


def test_bootstrap_intervals_cover_the_truth() -> None:
    """Synthetic sweeps (6 sizes × 8 token counts) with 1–3% multiplicative noise: each true parameter lies in
    its 95% percentile interval in ≥ 90% of 30 repetitions, and the intervals are not vacuous. The start grid
    is the 243-point COARSE_GRID (ample on clean synthetic data) and 150 resamples, to keep this fast; all
    repetitions run as one batch."""
    n_, d_ = grid_design()
    truth = np.array([TRUE_LAW.loss(n, d) for n, d in zip(n_, d_, strict=True)])
    reps = 30
    rng = np.random.default_rng(2024)
    noise = np.array([0.01, 0.02, 0.03])[np.arange(reps) % 3, None]
    losses = truth[None, :] * np.exp(noise * rng.standard_normal((reps, truth.size)))
    fits = fit_law_many(n_, d_, losses, grid=COARSE_GRID)
    boots = bootstrap_many([FitPoints.from_arrays(n_, d_, y) for y in losses], fits, n_resamples=150, seed=7)
    names = ("E", "A", "B", "alpha", "beta")
    inside = np.array([[b.parameter_intervals()[k].contains(getattr(TRUE_LAW, k)) for k in names] for b in boots])
    coverage = dict(zip(names, inside.mean(axis=0), strict=True))
    assert all(c >= 0.9 for c in coverage.values()), coverage
    widths = np.array([[b.parameter_intervals()[k].high - b.parameter_intervals()[k].low for k in ("E", "alpha")]
                       for b in boots])
    assert np.median(widths[:, 0]) < 1.0 and np.median(widths[:, 1]) < 0.3  # informative, not (−∞, ∞)


def test_borrowed_exponents_fit_only_e_a_b() -> None:
    n_, d_ = grid_design(3, 4)
    loss = np.array([TRUE_LAW.loss(n, d) for n, d in zip(n_, d_, strict=True)])
    fit = fit_law(n_, d_, loss, fixed_exponents=(TRUE_LAW.alpha, TRUE_LAW.beta), grid=COARSE_GRID)
    assert fit.mode == "borrowed"
    assert (fit.law.alpha, fit.law.beta) == (TRUE_LAW.alpha, TRUE_LAW.beta)
    assert fit.n_starts == 3 * 3 * 3  # the α, β axes of the grid collapse
    for name in ("E", "A", "B"):
        assert getattr(fit.law, name) == pytest.approx(getattr(TRUE_LAW, name), rel=1e-3), name


def test_fit_points_auto_mode_borrows_prior_exponents_when_sizes_are_few() -> None:
    points = campaign(sizes=(2e7, 1e8, 5e8, 1e9), checkpoints=6)  # 4 sizes
    fit = fit_points(points, grid=COARSE_GRID, prior=EPOCH)
    assert fit.mode == "borrowed" and fit.law.alpha == EPOCH.alpha and fit.law.beta == EPOCH.beta
    with pytest.raises(FitInputError, match="distinct model size"):
        fit_points(campaign(sizes=(2e7, 1e8)), grid=COARSE_GRID)


@pytest.mark.parametrize(
    ("n_points", "sizes", "mode"),
    [(40, 5, "full"), (15, 5, "full"), (14, 5, "borrowed"), (100, 4, "borrowed"), (5, 3, "borrowed")],
)
def test_choose_fit_mode(n_points: int, sizes: int, mode: str) -> None:
    assert choose_fit_mode(n_points, sizes) == mode


def test_choose_fit_mode_refuses_two_sizes() -> None:
    with pytest.raises(FitInputError, match="at least 3"):
        choose_fit_mode(50, 2)


def test_fixed_ratio_fit_recovers_single_power_law() -> None:
    """At D = r·N with α = β the law is exactly E + (A + B·r^−β)/N^α."""
    law = ScalingLaw(E=1.7, A=300.0, B=900.0, alpha=0.3, beta=0.3)
    ratio = 20.0
    sizes = np.geomspace(1e7, 1e9, 7)
    loss = np.array([law.loss(n, ratio * n) for n in sizes])
    fit = fit_fixed_ratio(sizes, loss, ratio=ratio, grid=COARSE_GRID)
    assert fit.gamma == pytest.approx(0.3, rel=1e-3)
    assert pytest.approx(1.7, rel=1e-3) == fit.E
    assert pytest.approx(300.0 + 900.0 * ratio**-0.3, rel=1e-2) == fit.A
    assert fit.loss(5e9) == pytest.approx(law.loss(5e9, ratio * 5e9), rel=1e-4)


def test_run_level_bootstrap_is_the_default_for_checkpoints() -> None:
    points = campaign(noise=0.01, seed=5)
    fit = fit_points(points, grid=COARSE_GRID)
    boot = bootstrap(points, fit, n_resamples=60, seed=1)
    assert boot.by_run and boot.n_resamples == 60
    ci = boot.parameter_intervals()
    assert ci["E"].low <= fit.law.E <= ci["E"].high
