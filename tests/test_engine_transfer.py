"""The engine's bets at the target size, driven with synthetic run summaries whose truth is known:
LR transfer across proxy widths (muP-like: holds; SP-like: does not hold, the LR is extrapolated), the
seed-noise floor next to the backtest ARE, and the partial-target check, with the ledger invariant throughout."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flopwise.api.load import parse_campaign
from flopwise.api.status import RunRecord, TrainingCampaignStatus
from flopwise.contract import CurvePoint, RunSummary
from flopwise.engine import ledger
from flopwise.engine.machine import EngineOptions, Observation, reconcile
from flopwise.fitting.fit import COARSE_GRID
from flopwise.planning.laws import ScalingLaw

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


def summary(record: RunRecord, *, parameterization: str = "mup", law: ScalingLaw = TRUTH,
            seed_noise: float = 0.0) -> RunSummary:
    """A finished run: loss = law + a bowl in log-LR around the width's best LR (+ a seed offset); a leg's
    curve is on the whole run's token axis (it starts at its start step)."""
    start = record.start_step * record.batch_size * record.shape.seq_len
    penalty = 0.3 * math.log(record.learning_rate / best_lr(record, parameterization)) ** 2
    offset = seed_noise * math.sin(1.0 + 7.0 * record.seed)
    curve = [CurvePoint(tokens=int(start + record.tokens * f),
                        val_loss=law.loss(record.params, start + record.tokens * f) + penalty + offset)
             for f in (0.25, 0.5, 0.75, 1.0)]
    flops = record.shape.flops_per_token() * record.tokens
    final = curve[-1].val_loss
    return RunSummary(run_id=record.run_id, status="succeeded", params=record.params, tokens=record.tokens,
                      steps=record.steps, flops=flops, final_val_loss=final, best_val_loss=final,
                      best_step=record.steps, best_tokens=start + record.tokens, curve=curve,
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


def test_mup_like_widths_agree_and_the_proxy_lr_transfers() -> None:
    spec = spec_with()
    status = drive(spec, parameterization="mup", seed_noise=0.01)
    assert status.phase == "Succeeded", status.message
    widths = {r.shape.d_model for r in status.runs if r.role == "round1"}
    assert len(widths) == 2, "two proxy widths planned and run"
    transfer = status.tuning.transfer
    assert transfer is not None and transfer.verdict == "holds", transfer
    assert "transfer holds" in transfer.message
    assert [w.learning_rate for w in transfer.widths] == [
        pytest_approx(BEST_LR_AT_BASE, 0.05), pytest_approx(BEST_LR_AT_BASE, 0.05)]
    assert abs(transfer.exponent) < 0.1 and transfer.exponent_low < 0 < transfer.exponent_high
    rec = status.recommendation
    assert rec.learning_rate == status.tuning.round1_best_lr and rec.learning_rate_source == "transferred"
    # the noise floor: 3 seeds of the smallest rung, next to the backtest ARE, with the verdict on it
    floor = status.noise_floor
    assert floor is not None and floor.seeds == 3 and floor.floor_are > 0
    assert floor.backtest_are == status.law.backtest_are and floor.within_noise is not None
    assert "seed-noise band" in floor.message
    assert {r.seed for r in status.runs if r.role == "seed"} == {status.runs[0].seed + 1, status.runs[0].seed + 2}


def test_sp_like_widths_disagree_and_the_lr_is_extrapolated_not_copied() -> None:
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
    assert transfer.exponent < 0 and transfer.exponent_high < 0  # η_opt falls with size, significantly
    target = status.plan.target
    truth = BEST_LR_AT_BASE * BASE_WIDTH / target.shape.d_model
    rec = status.recommendation
    assert rec.learning_rate_source == "extrapolated" and rec.learning_rate == transfer.learning_rate
    assert rec.learning_rate < proxy.learning_rate * 0.95, "the target gets an extrapolated LR, not the proxy's copy"
    assert rec.learning_rate_low < rec.learning_rate < rec.learning_rate_high
    assert abs(math.log(rec.learning_rate / truth)) < math.log(2.0), (rec.learning_rate, truth)
    # Round 2 runs at the proxy and keeps the proxy's own optimum
    round2 = [r for r in status.runs if r.role == "round2"]
    assert round2 and round2[0].learning_rate == status.tuning.round1_best_lr


PARTIAL = {"final.enabled": True, "final.partialCheck": True,
           "budget.split": {"ladder": 0.3, "round1": 0.12, "round2": 0.08, "final": 0.45}}
SHIFTED = ScalingLaw(E=1.35, A=40.0, B=60.0, alpha=0.35, beta=0.3)  # the target's truth: a regime change at scale


def shifted_final(record: RunRecord, **kwargs) -> RunSummary:
    return summary(record, law=SHIFTED if record.role == "final" else TRUTH, **kwargs)


def test_partial_target_check_moves_the_prediction_toward_the_observed_curve() -> None:
    spec = spec_with(**PARTIAL)
    status = drive(spec, shifted_final)
    assert status.phase == "Succeeded", status.message
    legs = [r for r in status.runs if r.role == "final"]
    assert [r.run_id for r in legs] == ["final-00-p", "final-00"]
    first, rest = legs
    check = status.partial_check
    assert check is not None and first.stop_at_step == check.stop_step
    assert check.stop_step == round(0.3 * first.steps)
    assert rest.start_step == check.stop_step and rest.resume_from == "final-00-p" and rest.steps == first.steps
    # together the legs train (and are charged) exactly the planned final run
    planned = status.plan.final.runs[0]
    assert first.tokens + rest.tokens == planned.tokens
    assert first.spent.flops + rest.spent.flops == planned.flops
    truth = SHIFTED.loss(planned.params, planned.tokens)
    assert check.final_loss == truth_of(rest)
    assert check.loss_before is not None and check.loss_after is not None
    assert abs(check.loss_after - truth) < 0.5 * abs(check.loss_before - truth), check
    assert check.change == check.loss_after - check.loss_before and check.change > 0
    assert status.prediction.loss == check.loss_after == status.recommendation.predicted_loss
    assert "reached" in check.message and "before" in check.message


def truth_of(record: RunRecord) -> float:
    return SHIFTED.loss(record.params, (record.start_step * record.batch_size * record.shape.seq_len) + record.tokens)


def pytest_approx(value: float, rel: float):
    import pytest

    return pytest.approx(value, rel=rel)


PARTIAL_SPEC = spec_with(**PARTIAL, **{"gpuPool.pricePerGpuHour": 3600.0, "gpuPool.peakFlops": 1e11,
                                       "gpuPool.expectedMfu": 0.3, "budget.usd": 2.2})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.generate])
@given(events=st.lists(EVENT, min_size=5, max_size=80))
def test_ledger_holds_with_seed_replicas_proxy_widths_and_partial_legs(events) -> None:
    """The random histories of test_engine_ledger on a campaign with every new run kind (seed replicas, a second
    proxy width, the two legs of a final run): reserved + spent ≤ budget after every step."""
    spec = PARTIAL_SPEC
    limits = ledger.Limits.of(spec.budget)
    status = reconcile(spec, None, [], now=0, options=FAST).status
    spent, now = 0.0, 0.0
    for kind, index, fraction, elapsed in [*events, *[("succeed", 0, 1.0, 1.0)] * 60]:
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
        if status.phase in ("Succeeded", "Failed") and not running:
            break
    if status.phase == "Succeeded" and status.partial_check is not None:
        legs = [r for r in status.runs if r.role == "final" and r.state == "Succeeded"]
        assert sum(r.spent.flops for r in legs) <= status.plan.final.runs[0].flops * (1 + 1e-9)


def test_the_priced_partial_campaign_reaches_both_legs_when_nothing_fails() -> None:
    """The hypothesis test's campaign is not vacuous: without failures it trains both legs of the final run."""
    def on_pool_time(record: RunRecord) -> RunSummary:
        report = summary(record)
        return report.model_copy(update={"elapsed_s": report.flops / 3e10})

    status = drive(PARTIAL_SPEC, on_pool_time)
    assert status.phase == "Succeeded"
    assert [(r.run_id, r.state) for r in status.runs if r.role == "final"] == [
        ("final-00-p", "Succeeded"), ("final-00", "Succeeded")]
    assert status.ledger.spent_usd <= PARTIAL_SPEC.budget.usd + 1e-6
