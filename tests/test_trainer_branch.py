"""Named checkpoints and branches (WSD trunks with cooldown branches, Hägele et al. 2024, arXiv:2405.18392).

A trunk keeps its full state at chosen steps (``saveCheckpointsAt``); a branch (``resumeFrom`` + ``resumeStep``)
starts from one of them on its own schedule and length. It is refused unless it would follow the parent exactly
up to the branch point, and then it trains exactly what a from-scratch run of its own spec trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydantic
import pytest
import torch

from flopwise.contract import RunSpec, step_checkpoint_name
from flopwise.data import prepare_stdlib
from flopwise_trainer.train import execute

torch.set_num_threads(1)
TRAIN = [str(Path(sys.executable).parent / "flopwise-train")]
TOKENS_PER_STEP = 4 * 32
TRUNK_STEPS, S1, S2 = 60, 20, 40


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stdlib")
    prepare_stdlib(out, max_bytes=300_000)
    return out


def spec(data: Path, out: Path, run_id: str, steps: int, decay: int, **overrides) -> RunSpec:
    """A WSD run of ``steps`` steps whose last ``decay`` steps cool down linearly to zero."""
    doc = {"runId": run_id, "shape": {"nLayer": 1, "dModel": 16, "nHead": 2, "vocabSize": 256, "seqLen": 32},
           "tokens": steps * TOKENS_PER_STEP, "batchSize": 4, "optimizer": {"lr": 1e-2},
           "schedule": {"kind": "wsd", "warmupSteps": 5, "decaySteps": decay, "minLrRatio": 0.0},
           "eval": {"logPoints": 3, "everySteps": 10, "batches": 2, "checkpointEverySteps": 15},
           "dataPath": str(data), "outputDir": str(out), "seed": 3, "device": "cpu"}
    doc.update(overrides)
    return RunSpec.model_validate(doc)


@pytest.fixture(scope="module")
def trunk(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warmup-stable-decay trunk of 60 steps keeping its state at steps 20 and 40."""
    out = tmp_path_factory.mktemp("trunk")
    summary = execute(spec(data, out, "trunk", TRUNK_STEPS, 12, saveCheckpointsAt=[S1, S2]))
    assert summary.status == "succeeded", summary.exit_reason
    return out


def branch(data: Path, out: Path, trunk: Path, steps: int, at: int, **overrides) -> RunSpec:
    """A cooldown from the trunk's step ``at``: the decay starts exactly there."""
    return spec(data, out, "branch", steps, steps - at, resumeFrom=str(trunk), resumeStep=at, **overrides)


def test_trunk_keeps_named_checkpoints_that_later_steps_never_overwrite(trunk: Path) -> None:
    named = sorted(p.name for p in trunk.glob("checkpoint-step-*.pt"))
    assert named == [step_checkpoint_name(S1), step_checkpoint_name(S2)] == [
        "checkpoint-step-00000020.pt", "checkpoint-step-00000040.pt"]
    first = torch.load(trunk / named[0], weights_only=False)
    assert first["step"] == S1 and first["total_steps"] == TRUNK_STEPS and first["lr"] == 1e-2
    assert first["schedule"] == {"kind": "wsd", "warmup_steps": 5, "decay_steps": 12, "min_lr_ratio": 0.0}
    assert torch.load(trunk / "checkpoint.pt", weights_only=False)["step"] == TRUNK_STEPS  # rolling one as before
    assert not list(trunk.glob("*.tmp*"))


def test_cooldown_branch_reproduces_a_from_scratch_run_and_reports_its_own_leg(
        data: Path, trunk: Path, tmp_path: Path) -> None:
    steps = 30  # decay over steps 20..30, branched from the trunk's stable phase at step 20
    own_eval = {"logPoints": 0, "everySteps": 4, "batches": 2}  # a branch may evaluate on its own schedule
    branched = execute(branch(data, tmp_path / "branch", trunk, steps, S1, eval=own_eval))
    assert branched.status == "succeeded", branched.exit_reason
    scratch = execute(spec(data, tmp_path / "scratch", "branch", steps, steps - S1, eval=own_eval))
    assert scratch.status == "succeeded", scratch.exit_reason

    # The same trajectory: bit-identical on CPU (data is a pure function of (seed, step), state is complete).
    assert branched.final_val_loss == scratch.final_val_loss
    tail = [(p.tokens, p.val_loss) for p in scratch.curve if p.tokens > S1 * TOKENS_PER_STEP]
    assert [(p.tokens, p.val_loss) for p in branched.curve] == tail
    # Evaluated only at steps it trains (on the whole trajectory's token axis), always at its last step.
    assert [p.tokens // TOKENS_PER_STEP for p in branched.curve] == [24, 28, 30]
    # Its own leg only: 10 steps of tokens and FLOPs.
    assert branched.steps == steps - S1 and branched.tokens == (steps - S1) * TOKENS_PER_STEP
    fpt = branch(data, tmp_path, trunk, steps, S1).shape.flops_per_token()
    assert branched.flops == pytest.approx(branched.tokens * fpt)
    assert scratch.flops == pytest.approx(steps * TOKENS_PER_STEP * fpt)
    result = json.loads((tmp_path / "branch" / "result.json").read_text())
    assert result["resumedFrom"] == [S1]

    # A second branch from the later checkpoint sees the trunk's state there.
    later = execute(branch(data, tmp_path / "later", trunk, 50, S2))
    assert later.status == "succeeded" and later.steps == 50 - S2, later.exit_reason


def test_branch_whose_schedule_differs_before_the_branch_point_is_refused(
        data: Path, trunk: Path, tmp_path: Path) -> None:
    # Its decay would start at step 15, before the branch point: the trunk was still at the peak LR there.
    early = execute(spec(data, tmp_path / "early", "branch", 30, 15, resumeFrom=str(trunk), resumeStep=S1))
    assert early.status == "failed" and early.flops == 0
    assert "schedule differs before the branch point (step 20): at step 15" in early.exit_reason
    cosine = execute(branch(data, tmp_path / "cos", trunk, 30, S1,
                            schedule={"kind": "cosine", "warmupSteps": 5}))
    assert cosine.status == "failed" and "schedule differs" in cosine.exit_reason and "cosine" in cosine.exit_reason
    warmup = execute(branch(data, tmp_path / "warm", trunk, 30, S1,
                            schedule={"kind": "wsd", "warmupSteps": 8, "decaySteps": 10, "minLrRatio": 0.0}))
    assert warmup.status == "failed" and "at step 0" in warmup.exit_reason


@pytest.mark.parametrize(("change", "named"), [
    ({"seed": 4}, "seed: parent 3, this run 4"),
    ({"batchSize": 8, "tokens": 30 * 8 * 32}, "batch_size: parent 4, this run 8"),
    ({"optimizer": {"lr": 2e-2}}, "optimizer.lr: parent 0.01, this run 0.02"),
    ({"shape": {"nLayer": 1, "dModel": 32, "nHead": 2, "vocabSize": 256, "seqLen": 32}},
     "shape.d_model: parent 16, this run 32"),
])
def test_branch_of_a_different_run_is_refused_naming_what_differs(
        data: Path, trunk: Path, tmp_path: Path, change: dict, named: str) -> None:
    summary = execute(branch(data, tmp_path / "b", trunk, 30, S1, **change))
    assert summary.status == "failed" and summary.flops == 0
    assert "cannot branch" in summary.exit_reason and named in summary.exit_reason, summary.exit_reason
    assert not (tmp_path / "b" / "checkpoint.pt").exists()


def test_missing_named_checkpoint_fails_naming_the_path(data: Path, trunk: Path, tmp_path: Path) -> None:
    summary = execute(branch(data, tmp_path / "b", trunk, 30, 25))
    assert summary.status == "failed" and summary.flops == 0 and summary.steps == 0
    assert str(trunk / "checkpoint-step-00000025.pt") in summary.exit_reason


def test_killed_branch_resumes_its_own_checkpoint_not_the_parents(data: Path, tmp_path: Path) -> None:
    """SIGKILL mid-branch; the rerun continues the branch's own rolling checkpoint (the parent's is gone by then)
    and ends exactly where an uninterrupted branch ends."""
    parent = tmp_path / "parent"
    # The parent only has to reach the branch point: a long WSD run stopped at step 20 with its state kept there.
    assert execute(spec(data, parent, "parent", 400, 80, stopAtStep=S1, saveCheckpointsAt=[S1])).status == "succeeded"
    steps, every = 200, 10
    killed = branch(data, tmp_path / "killed", parent, steps, S1,
                    eval={"logPoints": 0, "everySteps": 100, "batches": 1, "checkpointEverySteps": every})
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(killed.model_dump_json(by_alias=True))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLOPWISE_RUN_SPEC_FILE": str(spec_file),
           "FLOPWISE_TERMINATION_LOG": str(tmp_path / "term")}
    proc = subprocess.Popen(TRAIN, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 90
    while time.time() < deadline and not own.exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert own.exists() and not (tmp_path / "killed" / "result.json").exists(), "branch finished before the kill"
    saved_step = torch.load(own, weights_only=False)["step"]
    assert S1 < saved_step < steps
    (parent / step_checkpoint_name(S1)).unlink()  # the rerun must not need the parent any more
    rerun = execute(killed)  # what a restarted Pod does, in-process here (one interpreter start less)
    assert rerun.status == "succeeded", rerun.exit_reason
    assert json.loads((tmp_path / "killed" / "result.json").read_text())["resumedFrom"] == [S1, saved_step]
    assert rerun.steps == steps - S1 and rerun.tokens == (steps - S1) * TOKENS_PER_STEP  # still its own leg only

    scratch = execute(spec(data, tmp_path / "scratch", "branch", steps, steps - S1, eval=killed.eval.model_dump()))
    assert scratch.final_val_loss == rerun.final_val_loss


@pytest.mark.parametrize(("change", "message"), [
    ({"saveCheckpointsAt": [0]}, "saveCheckpointsAt: step(s) [0] outside the run's steps 1..60"),
    ({"saveCheckpointsAt": [10, 61]}, "saveCheckpointsAt: step(s) [61] outside the run's steps 1..60"),
    ({"saveCheckpointsAt": list(range(1, 61)) * 2}, "saveCheckpointsAt lists 120 steps; at most 64"),
    ({"resumeStep": 20}, "resumeStep (20) needs resumeFrom"),
    ({"resumeStep": 0, "resumeFrom": "/x"}, "greater than or equal to 1"),
    ({"resumeStep": 60, "resumeFrom": "/x"}, "must be before the run's last step (60)"),
    ({"resumeStep": 20, "resumeFrom": "/x", "saveCheckpointsAt": [20, 30]}, "[20] not after resumeStep (20)"),
])
def test_named_checkpoint_and_branch_fields_are_validated(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        spec(tmp_path, tmp_path, "bad", 60, 12, **change)
    assert message in str(err.value)


def test_valid_named_checkpoint_and_branch_fields_round_trip(tmp_path: Path) -> None:
    every_step = spec(tmp_path, tmp_path, "trunk", 60, 12, saveCheckpointsAt=list(range(1, 61)))
    assert len(every_step.save_checkpoints_at) == 60
    ok = spec(tmp_path, tmp_path, "ok", 60, 12, saveCheckpointsAt=[60], resumeFrom="/trunk", resumeStep=59)
    assert ok.save_checkpoints_at == [60] and ok.resume_step == 59
    again = RunSpec.model_validate_json(ok.model_dump_json(by_alias=True))
    assert again == ok and '"saveCheckpointsAt"' in ok.model_dump_json(by_alias=True)
