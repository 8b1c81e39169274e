"""A final run in two legs (partial target check): the first stops at ~30% on the whole run's schedule, the
second continues its checkpoint; together they train exactly the uninterrupted run, each reporting its own part."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flopwise.api.load import load_campaign
from flopwise.api.status import RunRecord
from flopwise.contract import RunSpec
from flopwise.data import prepare_stdlib
from flopwise.engine.runspec import run_spec_for, sibling_output
from flopwise.planning.plan import plan_campaign
from flopwise_trainer.train import execute

torch.set_num_threads(1)
STEPS = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stdlib")
    prepare_stdlib(out, max_bytes=300_000)
    return out


def spec(data: Path, out: Path, run_id: str, **overrides) -> RunSpec:
    doc = {"runId": run_id, "role": "final", "shape": {"nLayer": 1, "dModel": 16, "nHead": 2, "vocabSize": 256,
                                                       "seqLen": 32},
           "tokens": STEPS * 4 * 32, "batchSize": 4, "optimizer": {"lr": 1e-2},
           "schedule": {"kind": "cosine", "warmupSteps": 5},
           "eval": {"logPoints": 3, "everySteps": 10, "batches": 2, "checkpointEverySteps": 15},
           "dataPath": str(data), "outputDir": str(out), "seed": 3, "device": "cpu"}
    doc.update(overrides)
    return RunSpec.model_validate(doc)


def test_two_legs_train_exactly_the_uninterrupted_run(data: Path, tmp_path: Path) -> None:
    whole = execute(spec(data, tmp_path / "final-00-whole", "final-00"))
    assert whole.status == "succeeded", whole.exit_reason
    stop = 18
    first = execute(spec(data, tmp_path / "final-00-p", "final-00-p", stopAtStep=stop))
    assert first.status == "succeeded", first.exit_reason
    assert first.steps == stop and first.tokens == stop * 4 * 32
    assert first.curve[-1].tokens == stop * 4 * 32  # evaluated where it stops
    assert first.flops == pytest.approx(first.tokens * spec(data, tmp_path, "x").shape.flops_per_token())
    rest = execute(spec(data, tmp_path / "final-00", "final-00", resumeFrom=str(tmp_path / "final-00-p")))
    assert rest.status == "succeeded", rest.exit_reason
    assert rest.steps == STEPS - stop and rest.tokens == (STEPS - stop) * 4 * 32  # its own leg only
    assert first.flops + rest.flops == pytest.approx(whole.flops)
    assert rest.curve[0].tokens < stop * 4 * 32  # the curve keeps the whole run's token axis
    assert rest.final_val_loss == pytest.approx(whole.final_val_loss, rel=1e-4)  # the same trajectory


def test_a_continuation_without_the_earlier_legs_checkpoint_fails_instead_of_training_from_scratch(
        data: Path, tmp_path: Path) -> None:
    summary = execute(spec(data, tmp_path / "final-00", "final-00", resumeFrom=str(tmp_path / "nowhere")))
    assert summary.status == "failed" and "no checkpoint of the earlier leg" in summary.exit_reason
    assert summary.flops == 0


def test_run_spec_of_a_leg_carries_the_whole_schedule_and_the_sibling_folder() -> None:
    campaign = load_campaign(Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml")
    plan = plan_campaign(campaign.spec)
    planned = plan.ladder.runs[0]
    record = RunRecord(run_id="final-00", planned_id="final-00", role="final", shape=planned.shape,
                       params=planned.params, tokens=(planned.steps - 20) * planned.batch_size * planned.shape.seq_len,
                       batch_size=planned.batch_size, steps=planned.steps, learning_rate=0.01, start_step=20,
                       resume_from="final-00-p")
    run = run_spec_for(record, campaign.spec, plan, campaign="qs", data_path="/d",
                       output_dir="/state/runs/final-00/out")
    assert run.total_steps == planned.steps and run.resume_from == "/state/runs/final-00-p/out"
    assert sibling_output("/outputs/final-00", "final-00", "final-00-p") == "/outputs/final-00-p"  # Kubernetes
