"""What the ladder concludes, on schedule-shaped simulated curves with a known truth (`flopwise.simulate`):
the fit, its identifiability, the allocation with its interval and basis, and Chinchilla's Approach 2."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from flopwise.api.load import parse_campaign
from flopwise.api.status import RunRecord
from flopwise.engine import records as build
from flopwise.engine.conclude import conclude_ladder, endpoints
from flopwise.fitting import e_profile, identify
from flopwise.fitting.curves import fit_power_law, parabola_vertex
from flopwise.fitting.fit import COARSE_GRID
from flopwise.fitting.isoflop import (
    EXPONENT_PRIOR,
    approach2,
    profile,
    profiles_by_interpolation,
    profiles_by_level,
)
from flopwise.planning.laws import CHINCHILLA_3, EPOCH, ScalingLaw, allocation_rule
from flopwise.planning.plan import final_budget, plan_campaign
from flopwise.simulate import CurveModel, curve, edge_headroom, finish, ladder_with_edges

REPO = Path(__file__).resolve().parents[1]


def cluster_spec(**ladder):
    doc = yaml.safe_load((REPO / "examples" / "cluster-h100-50k.yaml").read_text())
    doc["spec"]["budget"] = {"flops": 1e20, "split": doc["spec"]["budget"]["split"], "margin": 0.02}
    doc["spec"]["ladder"].update(ladder)
    return parse_campaign(doc).spec


def ladder_records(spec):
    plan = plan_campaign(spec)
    return build.ladder_records(plan.ladder.runs, kind=spec.tuning.schedule, lr_for=lambda _: 0.003,
                                warmup_fraction=0.01, decay_fraction=spec.tuning.decay_fraction, seed=0)


# -- the pieces ---------------------------------------------------------------------------------------------
def test_parabola_vertex_and_its_error() -> None:
    x = np.linspace(-2, 2, 7)
    vertex = parabola_vertex(x, 0.5 * (x - 0.3) ** 2 + 1.0)
    assert vertex.convex and not vertex.clamped and vertex.x == pytest.approx(0.3, abs=1e-9)
    assert vertex.se < 1e-6  # no residual, no noise given
    noisy = parabola_vertex(x, 0.5 * (x - 0.3) ** 2 + 1.0, noise_sd=0.05)
    assert 0.01 < noisy.se < 0.5
    beyond = parabola_vertex(x, (x - 5.0) ** 2)  # the minimum lies past the points: clamped, said so
    assert beyond.clamped and beyond.x == pytest.approx(2.0) and beyond.se == pytest.approx(4.0)
    assert not parabola_vertex(x, -(x**2)).convex


def test_power_law_recovers_its_exponent_and_interval_covers() -> None:
    rng = np.random.default_rng(1)
    xs = np.geomspace(1e18, 1e20, 4)
    covered = 0
    for _ in range(200):
        ys = 3e-2 * xs**0.5 * np.exp(rng.normal(0, 0.05, xs.size))
        law = fit_power_law(list(xs), list(ys), [0.05] * xs.size)
        covered += law.exponent_low <= 0.5 <= law.exponent_high
    assert covered / 200 >= 0.9


def test_power_law_with_an_exponent_prior() -> None:
    """One point: the slope is the prior's, and the interval widens with the distance (the prior's sd × log
    distance, beside the point's own error). Many precise points: the data outweigh a prior that is off."""
    one = fit_power_law([1e12], [3e4], [0.1], exponent_prior=(0.5, 0.1))
    assert one.exponent == pytest.approx(0.5) and one.n == 1
    at, low, high = one.predict(1e12)
    assert math.log(at / low) == pytest.approx(math.log(high / at))  # symmetric in log
    assert at == pytest.approx(3e4) and math.log(high / at) == pytest.approx(1.96 * 0.1, rel=1e-3)
    far, _, far_high = one.predict(1e14)
    assert far == pytest.approx(3e4 * 100**0.5)
    assert math.log(far_high / far) == pytest.approx(1.96 * math.hypot(0.1, 0.1 * math.log(100)), rel=1e-3)
    xs = np.geomspace(1e18, 1e20, 4)
    data = fit_power_law(list(xs), list(3e-2 * xs**0.5), [0.01] * 4, exponent_prior=(0.9, 0.11))
    assert data.exponent == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError):
        fit_power_law([1e12], [3e4], [0.1])  # without a prior one point has no slope


def test_approach2_with_one_bracketed_level_borrows_the_exponent() -> None:
    """One level brackets its minimum, the others lie beyond the smallest size: Approach 2 alone has no
    exponent; with Epoch's as a prior it extrapolates, and under a truth whose exponent is within the prior's
    range the interval holds the truth 40× above the level, at every one of these truths' exponents."""
    for truth in (EPOCH, CHINCHILLA_3, ScalingLaw(E=0.8, A=30.0, B=600.0, alpha=0.45, beta=0.3)):
        centre = truth.compute_optimal(1e19).params
        sizes = list(centre * np.geomspace(0.25, 4.0, 5))
        level = profile(1e19, sizes, [truth.loss(n, 1e19 / (6 * n)) for n in sizes], noise=0.01)
        below = profile(1e17, sizes, [truth.loss(n, 1e17 / (6 * n)) for n in sizes], noise=0.01)
        assert level.bracketed and not below.bracketed
        assert approach2([level, below], 4e20).params is None
        held = approach2([level, below], 4e20, exponent_prior=EXPONENT_PRIOR)
        true_n = truth.compute_optimal(4e20).params
        assert held.params_low < true_n < held.params_high, (truth, held.note)
        assert held.params_high / held.params_low < identify.MAX_ALLOCATION_SPAN
        assert "prior" in held.note and "left out" in held.note


def test_approach2_recovers_the_optimum_from_isoflop_profiles() -> None:
    """Exact profiles of a known law at four budgets: each parabola's minimum is N_opt(C), and their power law
    extrapolates to the truth at a budget 40× above the top level."""
    truth = EPOCH
    levels, flops, params, losses = [], [], [], []
    for j, c in enumerate(np.geomspace(1e18, 1e19, 4)):
        centre = truth.compute_optimal(c).params
        for n in centre * np.geomspace(0.25, 4.0, 7):
            levels.append(j)
            flops.append(c)
            params.append(n)
            losses.append(truth.loss(n, c / (6 * n)))
    result = approach2(profiles_by_level(levels, flops, params, losses, noise=1e-4), 4e20)
    assert result.params == pytest.approx(truth.compute_optimal(4e20).params, rel=0.05)
    assert result.params_low < truth.compute_optimal(4e20).params < result.params_high
    assert result.law.exponent == pytest.approx(truth.params_exponent, abs=0.02)
    # a level whose sizes all lie on one side of its optimum brackets nothing, and says so
    one_sided = profile(1e19, list(np.geomspace(1e9, 4e9, 4)), [truth.loss(n, 1e19 / (6 * n))
                                                                  for n in np.geomspace(1e9, 4e9, 4)])
    assert not one_sided.bracketed and "beyond the smallest" in one_sided.note


def test_a_lopsided_profile_is_read_off_its_best_size_and_neighbours() -> None:
    """A quickstart level as measured (2026-11-29, 3.44e11 FLOPs, byte-level code): the loss is lowest at the
    second size, but rises so steeply towards the data-starved sizes that one parabola through all five puts
    its vertex below the smallest. The best size and its neighbours bracket the minimum."""
    sizes = [20088, 32928, 48840, 95568, 165368]
    losses = [1.7283, 1.7206, 1.8000, 2.2300, 2.3814]
    found = profile(3.44e11, sizes, losses, noise=0.01)
    assert found.bracketed and sizes[0] < found.params_opt < sizes[2], found
    assert "neighbours" in found.note
    # the fallback needs a best size with a neighbour on each side: an edge minimum still brackets nothing
    edge = profile(3.44e11, sizes, [1.70, *losses[1:]], noise=0.01)
    assert not edge.bracketed and "beyond the smallest" in edge.note


def test_approach2_from_interpolated_wsd_endpoints() -> None:
    truth = EPOCH
    params, tokens, fpt, losses = [], [], [], []
    for n in np.geomspace(2e7, 6e8, 6):
        for m in (0.25, 0.5, 1, 2, 4):
            d = m * 20 * n
            params.append(n)
            tokens.append(d)
            fpt.append(6 * n)
            losses.append(truth.loss(n, d))
    profiles = profiles_by_interpolation(params, tokens, fpt, losses, noise=1e-4)
    assert len(profiles) >= 3
    result = approach2(profiles, 1e21, interpolated=True)
    assert result.params == pytest.approx(truth.compute_optimal(1e21).params, rel=0.25)
    assert result.interpolated


def test_identifiability_names_what_is_not_pinned_down() -> None:
    good = identify.problems(EPOCH, {"E": 1.7, "A": 300, "B": 1200, "alpha": 0.31, "beta": 0.33},
                             {"E": 1.9, "A": 700, "B": 3000, "alpha": 0.38, "beta": 0.41},
                             params_low=6e8, params_high=1.1e9)
    assert good == []
    collapsed = ScalingLaw(E=2.7e-132, A=30.0, B=400.0, alpha=0.29, beta=0.4)
    found = identify.problems(collapsed, {"E": 0.0, "A": 30, "alpha": 0.29}, {"E": 0.0, "A": 1.1e42, "alpha": 7.8},
                              params_low=1e5, params_high=9e6)
    text = " | ".join(found)
    assert "E = 2.7e-132 is at its bound 0" in text and "A's 95% interval" in text and "α's 95% interval" in text
    assert "compute-optimal size's 95% interval" in text


# -- the curves ---------------------------------------------------------------------------------------------
def test_simulated_curves_are_on_the_law_only_when_annealed() -> None:
    spec = cluster_spec(design="isoflop")
    record = ladder_records(spec)[0]
    model = CurveModel(truth=EPOCH, noise=0.0)
    points = curve(model, record, points=8)
    tokens, final = points[-1]
    assert final == pytest.approx(EPOCH.loss(record.params, tokens), rel=1e-9)  # annealed end: on the law
    mid_tokens, mid = points[3]  # the stable phase: above the law by a share of the reducible loss
    assert mid > EPOCH.loss(record.params, mid_tokens) * 1.02


# -- the conclusion ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("truth", [EPOCH, CHINCHILLA_3], ids=["epoch", "chinchilla-3"])
def test_isoflop_ladder_identifies_the_law_and_its_interval_holds_the_truth(truth) -> None:
    spec = cluster_spec(design="isoflop")
    done = finish(CurveModel(truth=truth, noise=0.005), ladder_records(spec), np.random.default_rng(3))
    flops = final_budget(spec)
    found = conclude_ladder(done, flops=flops, prior=allocation_rule(spec.law), resamples=60, grid=COARSE_GRID,
                            backtest_holdout=False)
    alloc = found.allocation
    true_n = truth.compute_optimal(flops).params
    assert alloc.basis == "full" and alloc.identified and found.status.identified
    assert alloc.params_low < true_n < alloc.params_high
    assert abs(alloc.params / true_n - 1) < 0.3
    assert alloc.approach2 is not None and alloc.approach2.bracketed >= 2 and alloc.agree
    prediction = found.predict(alloc.params, flops / (6 * alloc.params))
    assert prediction.loss_low < truth.loss(alloc.params, flops / (6 * alloc.params)) < prediction.loss_high


def test_a_ladder_on_one_line_is_not_identified_and_says_so() -> None:
    """Every run at its compute-optimal tokens (the design before issue 13): D/N is nearly constant, so the
    five-parameter fit cannot pin β; the conclusion falls back to borrowed exponents and says why."""
    spec = cluster_spec(design="isoflop")
    plan = plan_campaign(spec)
    rule = allocation_rule(spec.law)
    one_line = []
    for run in plan.ladder.runs:
        if run.role == "ladder" and run.level == 0:
            tokens = rule.allocate(rule.flops_for_params(run.params)).tokens
            one_line.append(run.model_copy(update={"tokens": int(tokens), "steps": max(1, int(tokens) // (
                run.batch_size * run.shape.seq_len)), "level": None}))
    recs = build.ladder_records(one_line, kind="wsd", lr_for=lambda _: 0.003, warmup_fraction=0.01,
                                decay_fraction=0.2, seed=0)
    done = finish(CurveModel(truth=CHINCHILLA_3, noise=0.01), recs, np.random.default_rng(0))
    found = conclude_ladder(done, flops=final_budget(spec), prior=rule, resamples=60, grid=COARSE_GRID,
                            backtest_holdout=False)
    assert found.allocation.basis != "full"
    assert any("not identified" in note or "too few" in note for note in found.status.notes)
    if found.allocation.basis == "borrowed":
        assert found.law.alpha == pytest.approx(EPOCH.alpha) and found.allocation.params_low is not None


def test_endpoints_are_annealed_final_losses_only() -> None:
    spec = cluster_spec(design="wsd", sizes=5, minParams=10_000_000)
    spec = spec.model_copy(update={"tuning": spec.tuning.model_copy(update={"schedule": "wsd"})})
    done = finish(CurveModel(truth=EPOCH, noise=0.0), ladder_records(spec), np.random.default_rng(0))
    ends = endpoints(done)
    assert len(ends.points) == len(done)  # one point per run: no mid-run checkpoints
    for record, loss in zip(done, ends.points.loss, strict=True):
        assert loss == pytest.approx(EPOCH.loss(record.params, record.trajectory_tokens), rel=1e-9)
    trunks = {r.run_id for r in done if r.role == "ladder" and r.resume_from is None}
    assert set(ends.groups) >= trunks and len(set(ends.groups)) < len(done)  # branches share their trunk's group
    assert not math.isnan(ends.points.tokens.min())


@functools.cache
def measured_quickstart(day: str):
    """A real quickstart's ladder records (tests/data) and what the engine concludes from them, as it does at the
    ladder's end (200 bootstrap resamples, the campaign's seed-noise floor)."""
    doc = json.loads((REPO / "tests" / "data" / f"quickstart-ladder-{day}.json").read_text())
    runs = [RunRecord.model_validate(r) for r in doc["runs"]]
    return doc, conclude_ladder(runs, flops=doc["finalFlops"], prior=allocation_rule("chinchilla-1"), resamples=200,
                                floor_sd=doc["noiseFloorSd"])


def test_the_quickstart_as_measured_recommends_near_the_size_that_measured_best() -> None:
    """Real data (tests/data/quickstart-ladder-2026-11-29.json): the quickstart's ladder as it ran on 2 CPU cores
    (1 of 3 IsoFLOP levels brackets its minimum; the borrowed-exponent fit puts N_opt's interval at more than 10×),
    and four sizes then trained for real for the final budget. The prior's allocation (262K params, what the
    campaign fell back on before) measured 3.7% worse than the best size; Approach 2 with Epoch's exponent as a
    prior recommends within 25% of the measured optimum, with the optimum inside its interval."""
    doc, found = measured_quickstart("2026-11-29")
    truth = doc["groundTruth"]
    alloc = found.allocation
    assert alloc.basis == "approach-2-borrowed" and alloc.identified, alloc.message
    assert not found.status.identified  # the loss law itself is not: said beside the allocation
    assert "unidentified borrowed fit" in alloc.message and alloc.approach2.bracketed == 1
    sizes = np.array([s["params"] for s in truth["sizes"]], float)
    losses = np.array([s["finalValLoss"] for s in truth["sizes"]])
    measured = math.exp(parabola_vertex(np.log(sizes), np.log(losses)).x)  # ≈ 125K params
    assert alloc.params_low < measured < alloc.params_high
    assert abs(math.log(alloc.params / measured)) < math.log(1.25), (alloc.params, measured)
    nearest = int(np.argmin(np.abs(np.log(sizes / alloc.params))))
    assert nearest == int(np.argmin(losses))  # of the sizes trained, the one nearest the recommendation was best
    prior = allocation_rule("chinchilla-1").allocate(truth["flops"]).params
    assert abs(math.log(alloc.params / measured)) < abs(math.log(prior / measured)) / 3  # 1.12× off against 2.1×
    # The loss: the law is not identified and fits these short runs only roughly (3-4% residuals), so its level
    # at the budget is its least sure part; the prediction is the largest bracketed level's measured minimum
    # carried by the law's ratio. The recommended model, trained for real, measured 1.2577: the law alone said
    # 1.304 (+3.7%); carried, it is within 3% and inside the interval. (This is the data the method was chosen
    # on, so this is a regression check; the ground truth of the two other sizes, measured after, is in RESULTS.)
    rec = truth["recommended"]
    made = found.predict(rec["params"], rec["tokens"])
    assert found.anchor is not None and "IsoFLOP minimum" in made.source and found.anchor.flops > 5e11
    assert abs(made.loss / rec["finalValLoss"] - 1) < 0.03 < abs(found.law.loss(rec["params"], rec["tokens"])
                                                                  / rec["finalValLoss"] - 1)
    assert made.loss_low < rec["finalValLoss"] < made.loss_high


def test_an_unidentified_law_predicts_from_the_measured_isoflop_minimum() -> None:
    """The quickstart's own design (edge sizes included) under a byte-level law like the one its real runs
    measured (`benchmarks/calibration.py`'s `measured_truth`: α = β = 0.4, not Epoch's exponents); on this draw
    neither fit is identified and Approach 2 with the borrowed exponent is the basis. The target's loss is then
    carried from the largest bracketed level's minimum, and its interval holds the true loss."""
    spec = parse_campaign(yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())).spec
    plan = plan_campaign(spec)
    recs = build.ladder_records(plan.ladder.runs, kind=spec.tuning.schedule, lr_for=lambda _: 0.006,
                                warmup_fraction=0.05, decay_fraction=spec.tuning.decay_fraction, seed=0)
    headroom = edge_headroom(spec)
    truth = ScalingLaw(E=0.667, A=31.77, B=193.3, alpha=0.4, beta=0.4)
    done = ladder_with_edges(spec, recs, CurveModel(truth=truth, noise=0.01), np.random.default_rng(4), headroom)
    assert any(r.reason.startswith("size extended") for r in done)  # a level was lowest at an edge
    flops = final_budget(spec)
    found = conclude_ladder(done, flops=flops, prior=allocation_rule(spec.law), resamples=60, grid=COARSE_GRID,
                            backtest_holdout=False)
    alloc = found.allocation
    assert alloc.basis == "approach-2-borrowed" and not found.status.identified, alloc.message
    assert alloc.params_low < truth.compute_optimal(flops).params < alloc.params_high
    params, tokens = alloc.params, flops / (6 * alloc.params)
    made = found.predict(params, tokens)
    anchor = found.anchor
    assert anchor is not None and made.source.startswith("the IsoFLOP minimum")
    assert made.loss == pytest.approx(anchor.loss * found.law.loss(params, tokens)
                                      / found.law.loss(anchor.params, anchor.tokens))
    assert made.loss_low < truth.loss(params, tokens) < made.loss_high
    # on another draw the five-parameter fit is identified: the prediction is that law's, and says so
    other = ladder_with_edges(spec, recs, CurveModel(truth=truth, noise=0.01), np.random.default_rng(3), headroom)
    found = conclude_ladder(other, flops=flops, prior=allocation_rule(spec.law), resamples=60, grid=COARSE_GRID,
                            backtest_holdout=False)
    assert found.allocation.basis == "full" and found.anchor is None
    made = found.predict(params, tokens)
    assert made.source == "the full fit" and made.loss == found.law.loss(params, tokens)


def test_a_second_quickstart_and_its_ground_truth() -> None:
    """Real data again (tests/data/quickstart-ladder-2026-11-30.json): the same quickstart from scratch on other
    CPUs, whose runs measured other losses (Round 2 chose lr 0.005, the seeds' sd was 1.6%), then the
    recommended size, half and double trained for real for the whole budget. Approach 2 with the borrowed
    exponent is the basis again; the size nearest its N_opt measured best of the three; the prediction holds.
    The two runs' N_opt are within 25% of each other (#13's run-to-run goal)."""
    doc, found = measured_quickstart("2026-11-30")
    truth = doc["groundTruth"]
    alloc = found.allocation
    assert alloc.basis == "approach-2-borrowed" and not found.status.identified, alloc.message
    sizes = {s["params"]: s for s in truth["sizes"]}
    nearest = min(sizes, key=lambda n: abs(math.log(n / alloc.params)))
    assert nearest == truth["recommendedParams"]
    assert min(sizes.values(), key=lambda s: s["finalValLoss"])["params"] == nearest  # best of the three
    rec = sizes[nearest]
    made = found.predict(rec["params"], rec["tokens"])
    assert abs(made.loss / rec["finalValLoss"] - 1) < 0.03 and made.loss_low < rec["finalValLoss"] < made.loss_high
    _, before = measured_quickstart("2026-11-29")
    assert abs(math.log(alloc.params / before.allocation.params)) < math.log(1.25)


def test_a_borrowed_fit_on_exponents_the_data_do_not_share_is_not_called_identified() -> None:
    """Real data (tests/data/quickstart-ladder-minsteps400.json): the quickstart with ``ladder.minSteps: 400``.
    With the borrowed exponents' sd at 0.05 its borrowed fit called itself identified and predicted the
    recommended model (95,568 params, trained for real for the whole budget: 1.2458) at 1.372 [1.276, 1.484]:
    10% high, the measured loss outside the interval. These runs' five-parameter fit puts β near 0.16, not Epoch's
    0.37. With the borrowing's uncertainty drawn as it should be, that fit is not identified, Approach 2 with the
    borrowed exponent is the basis, and the interval of the loss holds what was measured."""
    doc = json.loads((REPO / "tests" / "data" / "quickstart-ladder-minsteps400.json").read_text())
    runs = [RunRecord.model_validate(r) for r in doc["runs"]]
    found = conclude_ladder(runs, flops=doc["finalFlops"], prior=allocation_rule("chinchilla-1"), resamples=200,
                            floor_sd=doc["noiseFloorSd"])
    assert found.allocation.basis == "approach-2-borrowed" and not found.status.identified, found.allocation.message
    assert any("borrowed exponents not identified" in note for note in found.status.notes) or found.status.problems
    rec = doc["groundTruth"]["sizes"][0]
    made = found.predict(rec["params"], rec["tokens"])
    assert made.loss_low < rec["finalValLoss"] < made.loss_high, made
    assert found.allocation.params_low < rec["params"] < found.allocation.params_high


def test_e_profile_pins_e_where_the_ladder_identifies_it_and_says_when_it_cannot() -> None:
    """The profile-likelihood interval of E (flopwise.fitting.e_profile): on the cluster design's IsoFLOP ladder under
    Epoch's law (0.5% noise, where the five-parameter fit is identified) it holds the true E and is far from 0; on
    the real quickstarts, where the five-parameter fit puts E at its bound, it reaches from 0 to more than half the
    lowest loss, and the status says so beside the fit it explains."""
    spec = cluster_spec(design="isoflop")
    done = finish(CurveModel(truth=EPOCH, noise=0.005), ladder_records(spec), np.random.default_rng(3))
    points = endpoints(done).points
    low, high = e_profile.interval(e_profile.profile_e(points), len(points))
    assert 0.5 * EPOCH.E < low < EPOCH.E < high < 1.5 * EPOCH.E, (low, high)
    for day in ("2026-11-29", "2026-11-30"):
        _, found = measured_quickstart(day)
        said = [n for n in found.status.notes if n.startswith("E's 95% profile-likelihood interval: [0, ")]
        assert len(said) == 1 and "these points do not bound E" in said[0], found.status.notes
    _, identified = measured_quickstart("2026-11-29")
    assert any("E = " in n and "at its bound" in n for n in identified.status.notes)  # the fit it explains
