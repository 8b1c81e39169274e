"""The transfer and noise-floor math (engine/transfer.py) on synthetic sweeps whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flopwise.engine.transfer import fit_power_law, fit_sweep, noise_floor, transfer_verdict, within_noise

A_TRUE, B_TRUE = 0.3118, -0.125 * 2  # η_opt = a·N^b (DeepSeek's form, against parameters, steeper)
SIZES = [2e5, 8e5, 3.2e6, 1.28e7, 5.12e7]
NOISE = 0.004


def sweep_losses(size: float, rng: np.random.Generator, *, curvature: float = 0.08, points: int = 7,
                 factor: float = 2.0, centre: float = 3e-3) -> tuple[list[float], list[float], float]:
    """A sweep around a fixed centre whose true optimum follows the power law; losses are a bowl in log-LR."""
    best = A_TRUE * size**B_TRUE
    lrs = [centre * factor ** (i - (points - 1) / 2) for i in range(points)]
    base = 3.0 + 10 * size**-0.3
    losses = [base + curvature * math.log(lr / best) ** 2 + rng.normal(0, NOISE) for lr in lrs]
    return lrs, losses, best


def recover(seed: int):
    rng = np.random.default_rng(seed)
    optima = []
    for size in SIZES:
        lrs, losses, _ = sweep_losses(size, rng)
        optima.append(fit_sweep(lrs, losses, size=size, noise_sd=NOISE, grid_factor=2.0))
    return optima, fit_power_law([o.size for o in optima], [o.lr for o in optima], [o.log_se for o in optima])


def test_power_law_of_the_best_lr_is_recovered_within_its_interval() -> None:
    optima, law = recover(seed=7)
    assert all(o.on_edge is None for o in optima)
    for o in optima:  # each width's optimum found off the grid, close to the truth
        assert abs(math.log(o.lr / (A_TRUE * o.size**B_TRUE))) < 0.25, o
    assert law.exponent_low <= B_TRUE <= law.exponent_high, law
    assert law.exponent_high - law.exponent_low < 0.15, "interval absurdly wide"
    assert law.coefficient == pytest.approx(A_TRUE, rel=0.6)
    _, low, high = law.predict(1e9)  # extrapolated 20× past the largest width
    truth = A_TRUE * 1e9**B_TRUE
    assert low <= truth <= high and high / low < 4


def test_interval_has_roughly_its_nominal_coverage() -> None:
    """Over 60 noise draws the 95% interval covers the true exponent most of the time (not a vacuous test:
    a too-narrow interval, e.g. one that ignored the per-width errors, covers far less)."""
    covered = sum(law.exponent_low <= B_TRUE <= law.exponent_high for _, law in (recover(s) for s in range(60)))
    assert covered >= 50, covered


def test_parabola_places_the_optimum_between_grid_points() -> None:
    lrs = [1e-3, 2e-3, 4e-3, 8e-3, 16e-3]
    losses = [3.0 + 0.1 * math.log(lr / 5.5e-3) ** 2 for lr in lrs]
    opt = fit_sweep(lrs, losses, size=1e6, grid_factor=2.0)
    assert opt.lr == pytest.approx(5.5e-3, rel=1e-6) and opt.best_grid_lr == 4e-3
    low, high = opt.interval()
    assert low < 5.5e-3 < high
    edge = fit_sweep(lrs, [3.0 + 0.1 * math.log(lr / 0.05) ** 2 for lr in lrs], size=1e6, grid_factor=2.0)
    assert edge.on_edge == "high" and edge.lr == 16e-3 and edge.log_se == pytest.approx(math.log(2))
    diverged = fit_sweep(lrs, [3.2, 3.1, 3.05, 3.3, math.nan], size=1e6, grid_factor=2.0)
    assert diverged.points == 4 and diverged.on_edge is None


def test_verdict_holds_for_flat_optima_and_extrapolates_for_drifting_ones() -> None:
    flat = [fit_sweep([1e-3, 2e-3, 4e-3, 8e-3], [3.1, 3.0, 3.02, 3.2], size=n, grid_factor=2.0)
            for n in (1e5, 4e5)]
    holds = transfer_verdict(flat, grid_factor=2.0, target_size=1e7)
    assert holds.holds and holds.target_lr == flat[1].lr and "transfer holds" in holds.verdict
    rng = np.random.default_rng(3)
    drifting = [fit_sweep(*sweep_losses(n, rng)[:2], size=n, noise_sd=NOISE, grid_factor=2.0) for n in (2e5, 3.2e6)]
    decision = transfer_verdict(drifting, grid_factor=2.0, target_size=5e7)
    assert not decision.holds and "does not hold" in decision.verdict
    truth = A_TRUE * 5e7**B_TRUE
    assert decision.target_low <= truth <= decision.target_high
    assert decision.target_lr < min(o.lr for o in drifting)  # extrapolated, not a copy of a proxy's LR


def test_noise_floor_and_the_indistinguishable_flag() -> None:
    rng = np.random.default_rng(0)
    losses = list(3.0 + rng.normal(0, 0.03, size=400))
    floor = noise_floor(losses)
    assert floor.floor_are == pytest.approx(math.sqrt(2 / math.pi) * 0.01, rel=0.1)
    assert floor.floor_are <= floor.floor_are_high
    assert within_noise(0.012, floor) and not within_noise(0.05, floor)
    small = noise_floor([3.00, 3.03, 2.98])
    assert small.seeds == 3 and small.floor_are_high > 3 * small.floor_are  # 3 seeds: a rough floor
    with pytest.raises(ValueError):
        noise_floor([3.0, math.nan])
