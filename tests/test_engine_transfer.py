"""The engine's bets at the target size, driven with synthetic run summaries whose truth is known: tuning before
the ladder (Round 2 decides the learning rate and the cooldown; every ladder run trains with them), LR transfer
across widths (muP-like: holds; SP-like: a power law in dModel carries it to every width), the seed-noise floor,
and the partial target check on schedule-shaped curves — with the ledger invariant throughout."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flopwise.api.load import parse_campaign
from flopwise.api.status import RunRecord, TrainingCampaignStatus
from flopwise.contract import CurvePoint, RunSummary, lr_at
from flopwise.engine import ledger
from flopwise.engine.machine import EngineOptions, Observation, reconcile
from flopwise.fitting.fit import COARSE_GRID
from flopwise.planning.laws import ScalingLaw
from flopwise.simulate import CurveModel, curve

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_ledger import EVENT

TINY = Path(__file__).parent / "data" / "tiny-campaign.yaml"
FAST = EngineOptions(bootstrap_resamples=8, fit_grid=COARSE_GRID)
TRUTH = ScalingLaw(E=1.2, A=40.0, B=60.0, alpha=0.35, beta=0.3)
BEST_LR_AT_BASE = 0.012
BASE_WIDTH = 24


def spec_with(**changes):
    doc = yaml.safe_load(TINY.read_text())
    doc["spec"]["tuning"]["lrGridPoints"] = 5
    doc["spec"]["model"].update(widthMultiple=4)
    doc["spec"]["budget"]["flops"] = 4e11  # a proxy wide enough for one 4× narrower (dModel ≥ 8)
    for path, value in changes.items():
        node = doc["spec"]
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_campaign(doc).spec


def best_lr(record: RunRecord, parameterization: str) -> float:
    """muP: the same best LR at every width. SP: the best LR falls as 1/width (Yang et al. 2022, Fig. 1)."""
    if parameterization == "mup":
        return BEST_LR_AT_BASE
    return BEST_LR_AT_BASE * BASE_WIDTH / record.shape.d_model


def summary(record: RunRecord, *, parameterization: str = "mup", law: ScalingLaw = TRUTH, seed_noise: float = 0.0,
            lr_of=best_lr) -> RunSummary:
    """A finished run on a schedule-shaped curve (`flopwise.simulate`: on the law only where the learning rate
    has decayed) plus a bowl in log-LR around the width's best LR and a seed offset. A branch's curve is on its
    whole schedule's token axis."""
    penalty = 0.3 * math.log(record.learning_rate / lr_of(record, parameterization)) ** 2
    offset = seed_noise * math.sin(1.0 + 7.0 * record.seed)
    samples = [CurvePoint(tokens=t, val_loss=loss + penalty + offset)
               for t, loss in curve(CurveModel(truth=law, noise=0.0), record, points=4)]
    flops = record.shape.flops_per_token() * record.tokens
    final = samples[-1].val_loss
    return RunSummary(run_id=record.run_id, status="succeeded", params=record.params, tokens=record.tokens,
                      steps=record.train_steps(), flops=flops, final_val_loss=final, best_val_loss=final,
                      best_step=record.steps, best_tokens=record.trajectory_tokens, curve=samples,
                      elapsed_s=flops / (0.2 * 1e10), tokens_per_s=record.tokens * 0.2 * 1e10 / flops)


def drive(spec, report=summary, **kwargs) -> TrainingCampaignStatus:
    status, now = None, 0.0
    for _ in range(300):
        now += 1
        obs = [Observation(r.run_id, "succeeded", report(r, **kwargs)) for r in (status.runs if status else [])
               if r.state == "Running"]
        status = reconcile(spec, status, obs, now=now, options=FAST).status
        assert status.plan is not None
        ledger.check(status.runs, ledger.Limits.of(spec.budget))
        if status.phase in ("Succeeded", "Failed"):
            return status
    raise AssertionError("campaign did not finish")


def launched_in_order(status: TrainingCampaignStatus) -> list[str]:
    return [r.role for r in sorted(status.runs, key=lambda r: (r.launched_at or 0.0))]


def test_mup_like_widths_agree_and_every_run_after_tuning_trains_at_the_decided_lr() -> None:
    spec = spec_with()
    status = drive(spec, parameterization="mup", seed_noise=0.01)
    assert status.phase == "Succeeded", status.message
    roles = launched_in_order(status)  # tuning first: no ladder run starts before Round 2 has decided
    assert max(i for i, r in enumerate(roles) if r in ("round1", "round2")) < min(
        i for i, r in enumerate(roles) if r in ("ladder", "seed"))
    widths = {r.shape.d_model for r in status.runs if r.role == "round1"}
    assert len(widths) == 2, "two proxy widths planned and run"
    transfer = status.tuning.transfer
    assert transfer is not None and transfer.verdict == "holds", transfer
    assert "transfer holds" in transfer.message
    assert [w.learning_rate for w in transfer.widths] == [pytest.approx(BEST_LR_AT_BASE, rel=0.05)] * 2
    assert abs(transfer.exponent) < 0.1 and transfer.exponent_low < 0 < transfer.exponent_high
    decided = status.tuning.learning_rate
    assert decided is not None and "at every width" in status.tuning.lr_rule
    assert {r.learning_rate for r in status.runs if r.role in ("ladder", "seed")} == {decided}
    rec = status.recommendation
    assert rec.learning_rate == decided and rec.learning_rate_source.startswith("Round 2")
    # the noise floor: 3 seeds of the cheapest ladder run, its verdict against σ's upper bound, seeds named
    floor = status.noise_floor
    assert floor is not None and floor.seeds == 3 and floor.floor_are > 0 and floor.band_are_high > floor.band_are
    assert floor.backtest_are == status.law.backtest_are and floor.within_noise is not None
    assert "3 seeds" in floor.message and "2 degrees of freedom" in floor.message
    assert {r.seed for r in status.runs if r.role == "seed"} == {status.runs[0].seed + 1, status.runs[0].seed + 2}


def test_sp_like_widths_disagree_and_each_width_gets_the_power_laws_lr() -> None:
    spec = spec_with(**{"model.parameterization": "sp"})
    status = drive(spec, parameterization="sp")
    assert status.phase == "Succeeded", status.message
    transfer = status.tuning.transfer
    assert transfer is not None and transfer.verdict == "does-not-hold", transfer
    assert "transfer does not hold" in transfer.message and transfer.parameterization == "sp"
    (condition,) = [c for c in status.conditions if c.type == "LRTransfers"]
    assert condition.status == "False" and condition.reason == "Extrapolated"
    narrow, proxy = sorted(transfer.widths, key=lambda w: w.d_model)
    assert narrow.learning_rate > 2 * proxy.learning_rate  # the narrow width wants a larger LR under SP
    assert transfer.exponent == pytest.approx(-1.0, abs=0.25) and transfer.exponent_high < 0  # η ∝ 1/dModel
    decided = status.tuning.learning_rate
    for run in (r for r in status.runs if r.role in ("ladder", "seed")):  # every rung at its width's LR
        assert run.learning_rate == pytest.approx(decided * (run.shape.d_model / proxy.d_model) ** transfer.exponent)
    target = status.plan.target
    truth = BEST_LR_AT_BASE * BASE_WIDTH / target.shape.d_model
    rec = status.recommendation
    assert rec.learning_rate_source.startswith("extrapolated in width") and rec.learning_rate == transfer.learning_rate
    assert rec.learning_rate_low < rec.learning_rate < rec.learning_rate_high
    assert abs(math.log(rec.learning_rate / truth)) < math.log(2.0), (rec.learning_rate, truth)


def shorter_runs_like_higher_lr(record: RunRecord, parameterization: str) -> float:
    """The optimum falls with training length (a known effect, and why Round 2 exists): Round 1's short runs
    put it a grid step higher than the full-length runs do."""
    return BEST_LR_AT_BASE * (300 / max(record.steps, 1)) ** 0.6


def longer_cooldown_helps(record: RunRecord, **kwargs) -> RunSummary:
    report = summary(record, lr_of=shorter_runs_like_higher_lr, **kwargs)
    if record.role == "round2" and record.schedule.decay_steps and record.schedule.decay_steps > 0.3 * record.steps:
        report = report.model_copy(update={"final_val_loss": report.final_val_loss * 0.98})
    return report


def test_round2_decides_the_learning_rate_and_the_cooldown_and_the_final_run_follows() -> None:
    spec = spec_with(**{"tuning.round2Runs": 3, "final.enabled": True,
                        "budget.split": {"ladder": 0.3, "round1": 0.12, "round2": 0.15, "final": 0.38}})
    status = drive(spec, longer_cooldown_helps)
    assert status.phase == "Succeeded", status.message
    tuning = status.tuning
    round2 = [r for r in status.runs if r.role == "round2"]
    assert len(round2) == 3 and len(tuning.round2_candidates) == 3
    assert round2[0].learning_rate == tuning.round1_best_lr
    assert round2[2].learning_rate == round2[0].learning_rate and round2[2].schedule.decay_steps == pytest.approx(
        2 * round2[0].schedule.decay_steps, abs=1)  # the third candidate: the same LR, twice the cooldown
    losses = {c.run_id: c.final_loss for c in tuning.round2_candidates}
    lr_winner = min(round2[:2], key=lambda r: losses[r.run_id])
    assert tuning.learning_rate == lr_winner.learning_rate != tuning.round1_best_lr  # full length disagreed
    assert tuning.decay_fraction == pytest.approx(0.4, abs=0.01) and "beat" in tuning.round2_verdict
    final = next(r for r in status.runs if r.role == "final")
    assert final.learning_rate == pytest.approx(tuning.learning_rate)
    assert final.schedule.decay_steps == pytest.approx(0.4 * final.steps, abs=1)
    assert status.recommendation.decay_fraction == tuning.decay_fraction
    assert {r.learning_rate for r in status.runs if r.role == "ladder"} == {tuning.learning_rate}


def test_a_linear_schedule_decays_to_the_end_of_every_run() -> None:
    spec = spec_with(**{"tuning.schedule": "linear", "ladder.design": "isoflop"})
    status = reconcile(spec, None, [], now=0, options=FAST).status
    for record in status.runs:
        assert record.schedule.kind == "linear" and record.schedule.decay_steps is None
        lrs = [lr_at(s, record.steps, 1.0, record.schedule) for s in range(record.steps)]
        after_warmup = lrs[record.schedule.warmup_steps:]
        assert all(b < a for a, b in itertools.pairwise(after_warmup))  # no constant phase
        assert lrs[-1] == pytest.approx(0.1)


PARTIAL = {"final.enabled": True, "final.partialCheck": True,
           "budget.split": {"ladder": 0.3, "round1": 0.12, "round2": 0.08, "final": 0.45}}
SHIFTED = ScalingLaw(E=1.35, A=40.0, B=60.0, alpha=0.35, beta=0.3)  # the target's truth: a regime change at scale


def shifted_final(record: RunRecord, **kwargs) -> RunSummary:
    return summary(record, law=SHIFTED if record.role == "final" else TRUTH, **kwargs)


def test_partial_target_check_anchors_the_prediction_on_the_targets_own_annealed_point() -> None:
    spec = spec_with(**PARTIAL)
    status = drive(spec, shifted_final)
    assert status.phase == "Succeeded", status.message
    legs = [r for r in status.runs if r.role == "final"]
    assert [r.run_id for r in legs] == ["final-00-p", "final-00"]
    leg, main = legs
    check = status.partial_check
    assert check is not None and check.stop_step == leg.steps
    assert leg.steps == pytest.approx(0.3 * main.steps, abs=1)
    assert main.resume_from == "final-00-p" and main.resume_step == main.start_step == leg.checkpoints_at[0]
    # the leg's cooldown starts where the final run branches off it, so their schedules agree up to there
    for step in range(main.start_step):
        assert lr_at(step, leg.steps, 1.0, leg.schedule) == pytest.approx(lr_at(step, main.steps, 1.0, main.schedule))
    assert lr_at(leg.steps - 1, leg.steps, 1.0, leg.schedule) == pytest.approx(0.1)  # an annealed point
    # together they train the planned final run plus the leg's cooldown, and are charged exactly that
    planned = status.plan.final
    assert leg.spent.flops + main.spent.flops == pytest.approx(planned.flops)
    truth = SHIFTED.loss(main.params, main.trajectory_tokens)
    assert check.final_loss == pytest.approx(truth)
    assert check.observed_loss == pytest.approx(SHIFTED.loss(leg.params, leg.trajectory_tokens))
    assert check.loss_before is not None and check.loss_after is not None
    assert abs(check.loss_after - truth) < 0.2 * abs(check.loss_before - truth), check
    assert check.low_after <= truth <= check.high_after
    assert check.change == check.loss_after - check.loss_before and check.change > 0
    assert status.prediction.loss == check.loss_after == status.recommendation.predicted_loss
    assert "reached" in check.message and "before" in check.message


PARTIAL_SPEC = spec_with(**PARTIAL, **{"gpuPool.pricePerGpuHour": 3600.0, "gpuPool.peakFlops": 1e11,
                                       "gpuPool.expectedMfu": 0.3, "budget.usd": 13.0,
                                       # at $1 per GPU-second a start-up slack or grace period would cost more
                                       # than the runs
                                       "gpuPool.startupSlackSeconds": 0, "trainer.terminationGracePeriodSeconds": 0})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.generate])
@given(events=st.lists(EVENT, min_size=5, max_size=80))
def test_ledger_holds_with_seed_replicas_proxy_widths_and_partial_legs(events) -> None:
    """The random histories of test_engine_ledger on a campaign with every run kind (seed replicas, a second
    proxy width, Round 2's candidates, the final run's partial leg and its branch): reserved + spent ≤ budget
    after every step."""
    spec = PARTIAL_SPEC
    limits = ledger.Limits.of(spec.budget)
    status = reconcile(spec, None, [], now=0, options=FAST).status
    spent, now = 0.0, 0.0
    for kind, index, fraction, elapsed in [*events, *[("succeed", 0, 1.0, 1.0)] * 80]:
        now += 10
        running = [r for r in status.runs if r.state == "Running"]
        obs: list[Observation] = []
        if kind == "restart":
            status = TrainingCampaignStatus.model_validate_json(status.model_dump_json(by_alias=True))
        elif running:
            record = running[index % len(running)]
            report = summary(record)  # at the time this pool's expected MFU (0.3 of 1e11 FLOP/s) predicts:
            report = report.model_copy(update={"elapsed_s": report.flops / 3e10})
            if kind in ("succeed", "inflated"):
                inflate = 3.0 if kind == "inflated" else 1.0
                obs = [Observation(record.run_id, "succeeded", report.model_copy(update={
                    "flops": report.flops * inflate, "elapsed_s": report.elapsed_s * elapsed * inflate}))]
            elif kind in ("fail", "diverge"):
                failed = report.model_copy(update={"status": "failed" if kind == "fail" else "diverged",
                                                   "flops": report.flops * fraction, "final_val_loss": None})
                obs = [Observation(record.run_id, "failed", failed)]
            elif kind in ("lost", "absent"):
                obs = [Observation(record.run_id, kind)]
            else:
                obs = [Observation(record.run_id, "failed", None)]
        status = reconcile(spec, status, obs, now=now, options=FAST).status
        ledger.check(status.runs, limits)
        assert status.ledger.reserved_flops + status.ledger.spent_flops <= spec.budget.flops * (1 + 1e-9)
        assert status.ledger.reserved_usd + status.ledger.spent_usd <= spec.budget.usd + 1e-6
        assert status.ledger.spent_flops >= spent - 1e-6
        spent = status.ledger.spent_flops
        for record in status.runs:
            if record.state in ("Succeeded", "Failed", "Lost"):
                assert record.reserved.flops == 0
            if record.state == "Running" and record.resume_step:  # a branch runs only off a parent that succeeded
                parent = next(r for r in status.runs if r.run_id == record.resume_from)
                assert parent.state == "Succeeded"
        if status.phase in ("Succeeded", "Failed") and not running:
            break
    if status.phase == "Succeeded" and status.partial_check is not None:
        legs = [r for r in status.runs if r.role == "final" and r.state == "Succeeded"]
        assert sum(r.spent.flops for r in legs) <= status.plan.final.flops * (1 + 1e-9)


def test_the_priced_partial_campaign_reaches_both_legs_when_nothing_fails() -> None:
    """The hypothesis test's campaign is not vacuous: without failures it trains both legs of the final run."""
    def on_pool_time(record: RunRecord) -> RunSummary:
        report = summary(record)
        return report.model_copy(update={"elapsed_s": report.flops / 3e10})

    status = drive(PARTIAL_SPEC, on_pool_time)
    assert status.phase == "Succeeded", status.message
    assert [(r.run_id, r.state) for r in status.runs if r.role == "final"] == [
        ("final-00-p", "Succeeded"), ("final-00", "Succeeded")]
    assert status.ledger.spent_usd <= PARTIAL_SPEC.budget.usd + 1e-6
