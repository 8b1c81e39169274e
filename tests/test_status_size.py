"""The status is the campaign's only memory and lives in etcd, which refuses an object over 1.5 MiB (its default
--max-request-bytes): a campaign with 500 runs must stay far below that, serialised exactly as the operator
writes it (`flopwise.kube.handlers.status_document`).

The runs are made by the real engine: a campaign with a wide Round-1 grid is driven to the end with the results
a trainer would report (tests/synthetic.py's losses, on as many evaluations as the real trainer makes: 4 log-spaced
and 8 regular), then its finished records are repeated as retries under new run ids up to 500 runs (retries add no
plan entries). Measured twice: with the reasons the engine writes, and at the worst the models allow (every run
with the longest failure reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from flopwise.api.load import parse_campaign
from flopwise.api.status import RunRecord, TrainingCampaignStatus
from flopwise.contract import CurvePoint, RunSpec, RunSummary
from flopwise.engine.machine import EngineOptions, Observation, reconcile
from flopwise.engine.runspec import run_spec_for
from flopwise.fitting.fit import COARSE_GRID
from flopwise.kube.handlers import status_document
from synthetic import summary_for

ETCD_LIMIT = int(1.5 * 1024 * 1024)
RUNS = 500


def trainer_summary(spec: RunSpec) -> RunSummary:
    """The synthetic result with the real trainer's evaluation count (its curve is what the status keeps)."""
    summary = summary_for(spec)
    last = summary.curve[-1]
    steps = sorted({max(1, round(spec.total_steps ** (i / 3))) for i in range(4)}
                   | {spec.total_steps * k // 8 for k in range(1, 9)})
    curve = [CurvePoint(tokens=s * spec.tokens_per_step, val_loss=last.val_loss * (1 + 0.5 / s)) for s in steps]
    return summary.model_copy(update={"curve": curve})


def drive_engine(doc: dict) -> TrainingCampaignStatus:
    """The engine to the end, every launched run reporting what the synthetic trainer would."""
    spec = parse_campaign(doc).spec
    options = EngineOptions(bootstrap_resamples=8, fit_grid=COARSE_GRID)
    status, observations, now = None, [], 1000.0
    for _ in range(2000):
        decision = reconcile(spec, status, observations, now=now, seed=1, options=options)
        status, now = decision.status, now + 60
        if status.phase in ("Succeeded", "Failed"):
            return status
        observations = [Observation(r.run_id, "succeeded", trainer_summary(run_spec_for(
            r, spec, status.plan, campaign="big", data_path="/data", output_dir="/out"))) for r in decision.launches]
        # runs persisted as Running by an earlier step (none here: every launch reports at once)
    raise AssertionError(f"the engine did not finish: {status.phase}")


def test_a_500_run_status_stays_far_below_etcds_limit() -> None:
    doc = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
    doc["metadata"] = {"name": "big"}
    doc["spec"]["tuning"].update(lrGridPoints=25, lrGridFactor=1.4,
                                 warmupFractions=[0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
    doc["spec"]["budget"]["flops"] = 4e13
    doc["spec"]["ladder"].update(sizes=8, spread=20)
    status = drive_engine(doc)
    assert status.phase == "Succeeded", status.message
    engine_runs = len(status.runs)
    real = len(json.dumps(status_document(status), separators=(",", ":")).encode())
    assert engine_runs >= 100, engine_runs  # a real wide campaign, not a toy
    # The stored form leaves run fields at their defaults out: it must read back as exactly the same status, and
    # keep each run's state for readers of the raw object (is_active).
    stored = json.loads(json.dumps(status_document(status)))
    assert TrainingCampaignStatus.model_validate(stored) == status
    assert all("state" in r for r in stored["runs"]) and "attempt" not in stored["runs"][0]
    assert status.plan.all_runs() and "startStep" not in stored["plan"]["ladder"]["runs"][0]

    finished = [r for r in status.runs if r.result is not None]
    longest = RunRecord.model_fields["reason"].metadata[0].max_length

    def padded(worst: bool) -> int:
        runs = list(status.runs)
        for i in range(RUNS - len(runs)):
            template = finished[i % len(finished)]
            runs.append(template.model_copy(deep=True, update={
                "run_id": f"{template.planned_id}-a{1 + i // len(finished)}", "attempt": 1 + i // len(finished),
                "reason": f"retry of {template.run_id}"}))
        if worst:
            runs = [r.model_copy(update={"reason": "x" * longest}) for r in runs]
        document = status_document(status.model_copy(update={"runs": runs}))
        TrainingCampaignStatus.model_validate(document)  # still a valid status
        assert len(document["runs"]) == RUNS
        return len(json.dumps(document, separators=(",", ":")).encode())

    typical, worst = padded(False), padded(True)
    sys.stderr.write(f"\n[status size] engine campaign: {engine_runs} runs, {real / 1024:.1f} KiB; {RUNS} runs: "
                     f"{typical / 1024:.1f} KiB ({typical / RUNS:.0f} B/run, {100 * typical / ETCD_LIMIT:.1f}% of "
                     f"etcd's 1.5 MiB); with every reason at its {longest}-char limit {worst / 1024:.1f} KiB "
                     f"({100 * worst / ETCD_LIMIT:.1f}%)\n")
    # The object also carries its spec, kopf's last-handled-configuration annotation (the spec again) and
    # managedFields: the status gets at most half of the limit, and even at its worst must fit.
    assert typical < ETCD_LIMIT / 2, f"{typical} bytes for {RUNS} runs"
    assert worst < ETCD_LIMIT, f"{worst} bytes for {RUNS} runs with the longest reasons: etcd refuses the write"


def test_a_record_is_stored_only_where_it_differs_from_its_planned_run() -> None:
    """A new campaign's first status: its Pending records say nothing the plan does not (they are stored without
    shape, sizes, LR or plannedId); records that differ keep exactly what differs, and everything reads back equal."""
    doc = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
    doc["metadata"] = {"name": "first"}
    spec = parse_campaign(doc).spec
    status = reconcile(spec, None, [], now=1000.0, seed=1,
                       options=EngineOptions(bootstrap_resamples=8, fit_grid=COARSE_GRID)).status
    stored = json.loads(json.dumps(status_document(status)))
    assert TrainingCampaignStatus.model_validate(stored) == status
    pending = [r for r in stored["runs"] if r["state"] == "Pending"]
    assert pending and not any({"shape", "params", "learningRate", "plannedId"} & set(r) for r in pending)

    first = status.runs[0]
    ladder = next(run for run in status.plan.ladder.runs if run.level is not None)
    planned_round1 = next(run for run in status.plan.round1.runs if run.run_id == first.planned_id)
    assert planned_round1.warmup_fraction and planned_round1.warmup_fraction > 0
    variants = [
        first.model_copy(update={"run_id": f"{first.run_id}-a1", "attempt": 1}),  # a retry: its plannedId stays
        first.model_copy(update={"run_id": "lr", "learning_rate": first.learning_rate * 2}),  # only its LR stays
        first.model_copy(update={"run_id": "warm", "warmup_fraction": 0.0}),  # its default, where the plan sets one
        first.model_copy(update={"run_id": "wide", "shape": ladder.shape, "params": ladder.params}),  # kept whole
        first.model_copy(update={"run_id": "nolevel", "planned_id": ladder.run_id, "role": "ladder",
                                 "shape": ladder.shape, "params": ladder.params, "tokens": ladder.tokens,
                                 "batch_size": ladder.batch_size, "steps": ladder.steps, "level": None}),
    ]
    mixed = status.model_copy(update={"runs": [*status.runs, *variants]})
    document = json.loads(json.dumps(status_document(mixed)))
    assert TrainingCampaignStatus.model_validate(document) == mixed
    stored = {r["runId"]: r for r in document["runs"]}
    assert stored[f"{first.run_id}-a1"]["plannedId"] == first.planned_id and "shape" not in stored[f"{first.run_id}-a1"]
    assert "shape" not in stored["lr"] and stored["lr"]["learningRate"] == first.learning_rate * 2
    assert "shape" not in stored["warm"] and stored["warm"]["warmupFraction"] == 0.0
    assert stored["wide"]["shape"]["dModel"] == ladder.shape.d_model and "tokens" in stored["wide"]
    assert "shape" in stored["nolevel"]  # a null level cannot be written: the record stays whole
