"""The engine and its ledger under random histories: launches, completions, failures, losses, garbled or
inflated reports, replayed observations and restarts from a serialised status.

The engine is pure, so these tests drive it directly, playing the executor with synthetic run summaries
(losses drawn from a known law). The same engine runs real trainer processes in test_local_campaign.py.
Invariant after every step: reserved + spent ≤ budget (FLOPs and dollars); spending never goes back; no run
launched twice unless its executor reported it absent or lost; a finished campaign launches nothing.
"""

from __future__ import annotations

import math
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


def priced_spec():
    """The tiny test campaign with a price: $1 per GPU-second and a dollar limit near the FLOP limit, so
    either can bind depending on the MFU the runs measure."""
    doc = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
    # no start-up slack or grace period: at $1 per GPU-second they would cost more than the runs
    doc["spec"]["gpuPool"].update(peakFlops=1e11, expectedMfu=0.3, pricePerGpuHour=3600.0, startupSlackSeconds=0)
    doc["spec"]["trainer"] = {"terminationGracePeriodSeconds": 0}
    doc["spec"]["budget"]["usd"] = 4.4  # 1.2e11 FLOPs at 3e10 FLOP/s is 4 GPU-seconds: $4.00
    return parse_campaign(doc).spec


SPEC = priced_spec()
FAST = EngineOptions(bootstrap_resamples=8, fit_grid=COARSE_GRID)
TRUTH = ScalingLaw(E=1.2, A=40.0, B=60.0, alpha=0.35, beta=0.3)


def lr_penalty(lr: float) -> float:
    """Round 1's truth: a bowl in log-LR with its minimum at 0.012."""
    return 0.3 * math.log(lr / 0.012) ** 2


def summary_for(record: RunRecord, *, fraction: float = 1.0, elapsed: float | None = None,
                status: str = "succeeded", inflate: float = 1.0) -> RunSummary:
    """A run's report; by default it took the time the pool's expected MFU (0.3 of 1e11 FLOP/s) predicts."""
    tokens = max(1, int(record.tokens * fraction))
    if elapsed is None:
        elapsed = record.shape.flops_per_token() * tokens / (0.3 * 1e11)
    curve = [CurvePoint(tokens=int(tokens * f), val_loss=TRUTH.loss(record.params, tokens * f) +
                        lr_penalty(record.learning_rate)) for f in (0.25, 0.5, 0.75, 1.0)]
    flops = record.shape.flops_per_token() * tokens * inflate
    final = curve[-1].val_loss if status == "succeeded" else None
    return RunSummary(run_id=record.run_id, status=status, exit_reason="" if status == "succeeded" else status,
                      params=record.params, tokens=tokens, steps=record.steps, flops=flops, final_val_loss=final,
                      best_val_loss=final, best_step=record.steps if final else None,
                      best_tokens=tokens if final else None, curve=curve, elapsed_s=elapsed,
                      tokens_per_s=tokens / elapsed)


def check_invariants(status: TrainingCampaignStatus, previous_spent: float) -> float:
    assert status.plan is not None
    limits = ledger.Limits.of(SPEC.budget)
    ledger.check(status.runs, limits)
    recomputed = ledger.totals(status.runs, limits)
    assert status.ledger.spent_flops == recomputed.spent_flops
    assert status.ledger.spent_usd == recomputed.spent_usd
    assert status.ledger.reserved_flops + status.ledger.spent_flops <= SPEC.budget.flops * (1 + 1e-9)
    assert status.ledger.reserved_usd + status.ledger.spent_usd <= SPEC.budget.usd + 1e-6
    for record in status.runs:
        if record.state in ("Succeeded", "Failed", "Lost"):
            assert record.reserved.flops == 0, record.run_id
        if record.state == "Running":
            assert record.reserved.flops > 0, record.run_id
    assert len({r.run_id for r in status.runs}) == len(status.runs)
    assert status.ledger.spent_flops >= previous_spent - 1e-6, "spending went back"
    return status.ledger.spent_flops


EVENT = st.tuples(
    st.sampled_from(["succeed", "succeed", "succeed", "fail", "fail_silent", "diverge", "lost", "absent",
                     "inflated", "garbled_id", "restart", "replay"]),
    st.integers(0, 7), st.floats(0.0, 1.0), st.floats(0.5, 2.0))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.generate])  # shrinking replays whole campaigns: minutes for little
@given(events=st.lists(EVENT, min_size=5, max_size=60))
def test_ledger_invariant_over_random_histories(events) -> None:
    now = 0.0
    decision = reconcile(SPEC, None, [], now=now, options=FAST)
    status = decision.status
    launched: dict[str, int] = {}
    for record in decision.launches:
        launched[record.run_id] = launched.get(record.run_id, 0) + 1
    spent = check_invariants(status, 0.0)
    last_obs: list[Observation] = []
    may_relaunch: set[str] = set()
    for kind, index, fraction, elapsed in events:
        now += 10
        running = [r for r in status.runs if r.state == "Running"]
        obs: list[Observation] = []
        if kind == "restart":  # the process died: only the persisted status survives
            status = TrainingCampaignStatus.model_validate_json(status.model_dump_json(by_alias=True))
        elif kind == "replay":
            obs = last_obs
        elif running:
            record = running[index % len(running)]
            if kind == "succeed":
                # elapsed scales the expected time: measured MFU moves, and the dollars follow it
                nominal = record.shape.flops_per_token() * record.tokens / (0.3 * 1e11)
                obs = [Observation(record.run_id, "succeeded", summary_for(record, elapsed=nominal * elapsed))]
            elif kind == "inflated":  # a report claiming more than was reserved is capped, never an overdraft
                obs = [Observation(record.run_id, "succeeded", summary_for(record, inflate=3.0, elapsed=1e6))]
            elif kind == "fail":
                obs = [Observation(record.run_id, "failed", summary_for(record, fraction=fraction, status="failed"))]
            elif kind == "fail_silent":
                obs = [Observation(record.run_id, "failed", None)]
            elif kind == "diverge":
                obs = [Observation(record.run_id, "failed", summary_for(record, fraction=fraction, status="diverged"))]
            elif kind == "garbled_id":
                other = summary_for(record).model_copy(update={"run_id": "someone-else"})
                obs = [Observation(record.run_id, "succeeded", other)]
            else:  # lost / absent
                obs = [Observation(record.run_id, kind)]
                may_relaunch.add(record.run_id)
        decision = reconcile(SPEC, status, obs, now=now, options=FAST)
        for record in decision.launches:
            assert record.state == "Running"
            launched[record.run_id] = launched.get(record.run_id, 0) + 1
            if launched[record.run_id] > 1:
                assert record.run_id in may_relaunch, f"{record.run_id} launched twice"
        if status.phase in ("Succeeded", "Failed"):
            assert not [r for r in decision.launches if r.state == "Pending"]
        status = decision.status
        spent = check_invariants(status, spent)
        last_obs = obs


def drive_to_the_end(restart_every_step: bool, until: str = "Succeeded") -> TrainingCampaignStatus:
    """Every running run succeeds at each step, until the campaign ends (or reaches phase ``until``)."""
    status, now = None, 0.0
    for _ in range(200):
        now += 1
        observations = []
        if status is not None:
            observations = [Observation(r.run_id, "succeeded", summary_for(r)) for r in status.runs
                            if r.state == "Running"]
            if restart_every_step:
                status = TrainingCampaignStatus.model_validate_json(status.model_dump_json(by_alias=True))
        status = reconcile(SPEC, status, observations, now=now, options=FAST).status
        if status.phase in ("Succeeded", "Failed", until):
            return status
    raise AssertionError("campaign did not finish")


def test_campaign_reaches_a_recommendation_and_restarts_change_nothing() -> None:
    straight = drive_to_the_end(restart_every_step=False)
    assert straight.phase == "Succeeded", straight.message
    rec = straight.recommendation
    assert rec is not None and rec.predicted_loss is not None
    assert straight.law is not None and straight.law.backtest_are is not None
    # Round 1's bowl has its minimum at 0.012: between the grid's 0.01 and 0.02, found by the parabola
    assert all(r.state == "Succeeded" for r in straight.runs)
    assert 0.0105 < straight.tuning.round1_best_lr < 0.015, straight.tuning
    assert "parabola" in straight.tuning.round1_note
    assert straight.measured_mfu is not None and abs(straight.measured_mfu - 0.3) < 1e-6
    assert straight.tuning.round2_verdict
    assert straight.ledger.reserved_flops == 0
    assert straight.ledger.spent_flops <= straight.plan.budget_flops
    restarted = drive_to_the_end(restart_every_step=True)
    assert restarted.model_dump(exclude={"conditions"}) == straight.model_dump(exclude={"conditions"})


def test_best_lr_on_the_grid_edge_extends_the_grid_once() -> None:
    status, now = None, 0.0
    global lr_penalty
    saved = lr_penalty
    try:
        lr_penalty = lambda lr: 0.3 * math.log(lr / 0.05) ** 2  # noqa: E731 — optimum beyond the grid's top
        for _ in range(200):
            now += 1
            obs = [Observation(r.run_id, "succeeded", summary_for(r)) for r in (status.runs if status else [])
                   if r.state == "Running"]
            status = reconcile(SPEC, status, obs, now=now, options=FAST).status
            if status.phase in ("Succeeded", "Failed"):
                break
    finally:
        lr_penalty = saved
    assert status.tuning.round1_grid_extended
    proxy = status.plan.round1.runs[0].shape.d_model  # the narrower width's sweep is not extended
    round1 = [r for r in status.runs if r.role == "round1" and r.shape.d_model == proxy]
    assert len(round1) == 4 and max(r.learning_rate for r in round1) == 0.04
    assert "extended once" in status.tuning.round1_note and "still on the edge" in status.tuning.round1_note


def test_failed_runs_are_retried_within_the_limit_then_charged() -> None:
    status = drive_to_the_end(restart_every_step=False, until="Ladder")  # tuning runs are not retried: a ladder run
    first = next(r for r in status.runs if r.state == "Running" and r.role == "ladder")
    failure = summary_for(first, fraction=0.5, status="failed")
    status = reconcile(SPEC, status, [Observation(first.run_id, "failed", failure)], now=100, options=FAST).status
    failed = next(r for r in status.runs if r.run_id == first.run_id)
    assert failed.state == "Failed" and failed.spent.flops == failure.flops  # charged what it consumed
    retry = next(r for r in status.runs if r.planned_id == first.planned_id and r.attempt == 1)
    assert retry.run_id == f"{first.planned_id}-a1"
    # the retry waits for a slot (other runs finish), then fails too: max_retries is 1, so no third attempt
    for now in range(2, 20):
        retry = next(r for r in status.runs if r.run_id == retry.run_id)
        if retry.state == "Running":
            break
        obs = [Observation(r.run_id, "succeeded", summary_for(r)) for r in status.runs if r.state == "Running"]
        status = reconcile(SPEC, status, obs, now=100 + now, options=FAST).status
    assert retry.state == "Running"
    status = reconcile(SPEC, status, [Observation(retry.run_id, "failed", None)], now=130, options=FAST).status
    assert not [r for r in status.runs if r.planned_id == first.planned_id and r.attempt == 2]
    retry = next(r for r in status.runs if r.run_id == retry.run_id)
    assert retry.spent.flops == retry.shape.flops_per_token() * retry.tokens  # silent failure: whole reservation


def test_every_ladder_run_diverging_ends_failed_with_a_reason() -> None:
    status, now = None, 0.0
    for _ in range(50):
        now += 1
        obs = [Observation(r.run_id, "failed", summary_for(r, fraction=0.3, status="diverged"))
               if r.role in ("ladder", "seed") else Observation(r.run_id, "succeeded", summary_for(r))
               for r in (status.runs if status else []) if r.state == "Running"]  # tuning trains; the ladder not
        status = reconcile(SPEC, status, obs, now=now, options=FAST).status
        if status.phase in ("Succeeded", "Failed"):
            break
    assert status.phase == "Failed"
    assert "without a law" in status.message
    assert {r.role for r in status.runs} >= {"round1", "round2", "ladder"}
    assert all(r.spent.flops > 0 for r in status.runs)
    assert status.ledger.reserved_flops == 0


def test_every_round1_run_diverging_fails_the_campaign_before_the_ladder_spends() -> None:
    status, now = None, 0.0
    for _ in range(50):
        now += 1
        obs = [Observation(r.run_id, "failed", summary_for(r, fraction=0.3, status="diverged"))
               for r in (status.runs if status else []) if r.state == "Running"]
        status = reconcile(SPEC, status, obs, now=now, options=FAST).status
        if status.phase in ("Succeeded", "Failed"):
            break
    assert status.phase == "Failed" and "every Round 1 run failed" in status.message
    assert {r.role for r in status.runs} == {"round1"} and status.ledger.reserved_flops == 0
    (condition,) = [c for c in status.conditions if c.type == "Failed"]
    assert condition.reason == "Round1Failed"


def test_invalid_budget_fails_before_any_launch() -> None:
    doc = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
    doc["spec"]["budget"]["flops"] = 1e6
    decision = reconcile(parse_campaign(doc).spec, None, [], now=0)
    assert decision.status.phase == "Failed" and not decision.launches and not decision.status.runs
    assert "spec.budget" in decision.status.message


def test_an_ended_campaign_cancels_runs_in_flight_and_relaunches_nothing() -> None:
    status = reconcile(SPEC, None, [], now=0, options=FAST).status
    running = [r for r in status.runs if r.state == "Running"]
    assert len(running) == 2
    status.phase, status.message = "Failed", "failed elsewhere (e.g. a spec update that no longer validates)"
    decision = reconcile(SPEC, status, [], now=1, options=FAST)
    assert sorted(decision.cancels) == sorted(r.run_id for r in running) and not decision.launches
    # one run never started (absent), the other was killed without a result (lost): neither is relaunched
    obs = [Observation(running[0].run_id, "absent"), Observation(running[1].run_id, "lost")]
    decision = reconcile(SPEC, decision.status, obs, now=2, options=FAST)
    assert not decision.launches and not decision.cancels
    first, second = (next(r for r in decision.status.runs if r.run_id == x.run_id) for x in running)
    assert first.state == second.state == "Failed"
    assert first.spent.flops == 0  # never started: its reservation is given back
    assert second.spent.flops == second.shape.flops_per_token() * second.tokens  # charged what it may have used
    assert decision.status.ledger.reserved_flops == 0


def test_a_vanished_run_is_relaunched_once_then_charged_and_marked_lost() -> None:
    status = reconcile(SPEC, None, [], now=0, options=FAST).status
    run = next(r for r in status.runs if r.state == "Running")
    decision = reconcile(SPEC, status, [Observation(run.run_id, "lost")], now=1, options=FAST)
    assert [r.run_id for r in decision.launches] == [run.run_id]  # same run, same reservation: it resumes
    again = next(r for r in decision.status.runs if r.run_id == run.run_id)
    assert again.state == "Running" and again.relaunches == 1 and again.spent.flops == 0
    # vanishing again before the relaunch was ever seen running: the relaunch did not happen, so it is retried
    decision = reconcile(SPEC, decision.status, [Observation(run.run_id, "lost")], now=2, options=FAST)
    assert [r.run_id for r in decision.launches] == [run.run_id]
    assert next(r for r in decision.status.runs if r.run_id == run.run_id).relaunches == 1
    decision = reconcile(SPEC, decision.status, [Observation(run.run_id, "running")], now=3, options=FAST)
    decision = reconcile(SPEC, decision.status, [Observation(run.run_id, "lost")], now=4, options=FAST)
    assert run.run_id not in [r.run_id for r in decision.launches]
    lost = next(r for r in decision.status.runs if r.run_id == run.run_id)
    assert lost.state == "Lost" and lost.reserved.flops == 0
    assert lost.spent.flops == lost.shape.flops_per_token() * lost.tokens
    assert decision.status.run_counts.lost == 1


def test_planned_sections_cannot_change_and_the_refusal_names_them() -> None:
    status = reconcile(SPEC, None, [], now=0, options=FAST).status
    plan_before = status.plan
    edited = SPEC.model_copy(deep=True)
    edited.model.seq_len = 64
    edited.tuning.base_learning_rate = 0.5
    edited.gpu_pool.max_concurrent_gpus = 4  # not a planned section: allowed
    decision = reconcile(edited, status, [], now=1, options=FAST)
    (refused,) = [c for c in decision.status.conditions if c.type == "SpecChangeRefused"]
    assert refused.status == "True" and "spec.model" in refused.message and "spec.tuning" in refused.message
    assert "spec.gpuPool" not in refused.message
    assert decision.status.plan == plan_before and decision.status.planned_spec.model.seq_len == 32
    assert all(r.shape.seq_len == 32 for r in decision.status.runs)  # runs keep the planned model
    assert len([r for r in decision.status.runs if r.state == "Running"]) == 4  # the allowed change took effect
    assert ("SpecChangeRefused", refused.message) in decision.events
    reverted = reconcile(SPEC.model_copy(update={"gpu_pool": edited.gpu_pool}), decision.status, [], now=2,
                         options=FAST)
    (cleared,) = [c for c in reverted.status.conditions if c.type == "SpecChangeRefused"]
    assert cleared.status == "False"


def test_a_fit_computed_elsewhere_changes_what_is_decided_only_in_when() -> None:
    """With a fitter that answers "not yet" the first time a fit is asked (the operator's process pool), the ladder
    goes on launching the runs that need no fit and waits for its final fit instead of failing or moving on without
    it. Deferring the final fits only, the campaign ends with exactly the decisions of fits made inline; deferring
    every fit, the intermediate refits (after each ladder run: progress and a re-plan, superseded by the next run)
    may never land, and the law, the tuning and every run still come out the same."""
    import dataclasses

    from flopwise.engine.fits import run_fit

    inline = drive_to_the_end(restart_every_step=False)
    for defer_all in (False, True):
        asked: set[str] = set()
        waited_in_ladder = []

        def later(request, asked=asked, defer_all=defer_all):
            if request.key in asked or not (defer_all or request.resamples or request.extra):
                return run_fit(request)
            asked.add(request.key)
            return None

        options = dataclasses.replace(FAST, fitter=later)
        status, now = None, 0.0
        for _ in range(300):
            now += 1
            observations = [Observation(r.run_id, "succeeded", summary_for(r)) for r in
                            (status.runs if status else []) if r.state == "Running"]
            decision = reconcile(SPEC, status, observations, now=now, options=options)
            if status is not None and status.phase == "Ladder" and decision.status.phase == "Ladder" and \
                    not any(r.state == "Running" for r in decision.status.runs):
                waited_in_ladder.append(now)  # every ladder run done, the final fit not back yet: it waits
                assert not any(r.role == "final" for r in decision.status.runs)
            status = decision.status
            if status.phase in ("Succeeded", "Failed"):
                break
        assert status.phase == inline.phase == "Succeeded" and waited_in_ladder
        assert status.law == inline.law and status.tuning.round1_best_lr == inline.tuning.round1_best_lr
        assert [(r.run_id, r.state, r.result) for r in status.runs] == [(r.run_id, r.state, r.result)
                                                                        for r in inline.runs]
        assert status.ledger.spent_flops == inline.ledger.spent_flops
        if not defer_all:
            assert status.recommendation == inline.recommendation and status.plan == inline.plan
