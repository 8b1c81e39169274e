"""The training loop end to end on real bytes: learning, schedules, results, failure, resume, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flopwise.contract import (
    PROGRESS_FILE,
    TERMINATION_MESSAGE_LIMIT,
    RunProgress,
    RunSpec,
    RunSummary,
    ScheduleSpec,
    lr_at,
)
from flopwise.data import prepare_stdlib
from flopwise_trainer.train import eval_steps, execute

torch.set_num_threads(1)
TRAIN = [str(Path(sys.executable).parent / "flopwise-train")]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stdlib")
    prepare_stdlib(out, max_bytes=400_000)
    return out


def make_spec(data: Path, out: Path, **overrides) -> RunSpec:
    spec = {
        "runId": "tiny", "shape": {"nLayer": 2, "dModel": 32, "nHead": 2, "vocabSize": 256, "seqLen": 64},
        "tokens": 120 * 8 * 64, "batchSize": 8, "optimizer": {"lr": 1e-2},
        "schedule": {"kind": "cosine", "warmupSteps": 10}, "eval": {"logPoints": 6, "batches": 2},
        "dataPath": str(data), "outputDir": str(out), "seed": 1,
    }
    spec.update(overrides)
    return RunSpec.model_validate(spec)


def test_tiny_model_learns_and_reports_everything(data: Path, tmp_path: Path) -> None:
    spec = make_spec(data, tmp_path / "run", microBatchSize=4)  # 2 micro-batches per step: accumulation
    summary = execute(spec, termination_log=str(tmp_path / "term"))
    assert summary.status == "succeeded", summary.exit_reason
    assert summary.steps == spec.total_steps == 120 and summary.tokens == 120 * 8 * 64
    assert summary.flops == pytest.approx(spec.planned_flops())
    assert summary.flops_6nd == pytest.approx(6 * spec.shape.param_count() * summary.tokens)
    first, last = summary.curve[0], summary.curve[-1]
    assert first.val_loss > 4.5  # ≈ ln 256 at the start
    assert last.val_loss < first.val_loss - 2.0 and last.val_loss < 3.2
    assert summary.best_val_loss == min(p.val_loss for p in summary.curve)
    assert summary.tokens_per_s > 0 and summary.mfu is not None and 0 < summary.mfu < 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    history = result["history"]
    assert [p["step"] for p in history] == eval_steps(120, spec.eval)
    for p in history:  # every eval point carries step, tokens, losses, lr, elapsed and FLOPs
        assert p["tokens"] == p["step"] * spec.tokens_per_step
        assert p["flops"] == pytest.approx(spec.shape.flops_per_token() * p["tokens"])
        assert p["lr"] == pytest.approx(lr_at(p["step"] - 1, 120, 1e-2, spec.schedule))
        assert p["train_loss"] is not None and p["elapsed_s"] > 0
    assert result["peakFlopsSource"] == "measured-cpu-fp32-matmul" and result["microBatchSize"] == 4
    message = (tmp_path / "term").read_text()
    assert message == (tmp_path / "run" / "summary.json").read_text()
    assert RunSummary.from_message(message).final_val_loss == pytest.approx(last.val_loss)
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    # what `flopwise run` shows while it trains: the last progress.json says where it ended, and how fast it went
    progress = RunProgress.read(str(tmp_path / "run" / PROGRESS_FILE))
    assert progress is not None and progress.run_id == "tiny" and progress.step == progress.stop_step == 120
    assert progress.tokens == summary.tokens and progress.val_loss == pytest.approx(last.val_loss)
    assert progress.steps_per_s > 0 and progress.tokens_per_s == pytest.approx(progress.steps_per_s * 512)
    assert progress.remaining_s == 0 and abs(progress.updated_at - time.time()) < 60


def test_eval_steps_are_log_spaced_plus_periodic() -> None:
    from flopwise.contract import EvalSpec

    assert eval_steps(1000, EvalSpec(log_points=4)) == [1, 10, 100, 1000]
    assert eval_steps(100, EvalSpec(log_points=0, every_steps=30)) == [30, 60, 90, 100]
    assert eval_steps(5, EvalSpec(log_points=12)) == [1, 2, 3, 4, 5]


def test_round2_schedule_rules() -> None:
    """Longer WSD/linear runs keep the decay length and lengthen the constant phase; cosine keeps base LR and
    stretches over the longer run."""
    base = 1e-2
    for kind in ("wsd", "linear"):
        sched = ScheduleSpec(kind=kind, warmup_steps=10, decay_steps=40, min_lr_ratio=0.1)
        short = [lr_at(s, 200, base, sched) for s in range(200)]
        long = [lr_at(s, 500, base, sched) for s in range(500)]
        assert short[-40:] == pytest.approx(long[-40:])  # the same decay, at the end
        assert max(short) == max(long) == base
        assert sum(v == base for v in long) - sum(v == base for v in short) == 300  # longer constant phase
        assert long[-1] == pytest.approx(base * 0.1) and short[:10] == long[:10]
    cos = ScheduleSpec(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    short = [lr_at(s, 110, base, cos) for s in range(110)]
    long = [lr_at(s, 210, base, cos) for s in range(210)]
    assert max(short) == max(long) == pytest.approx(base)
    for i in range(0, 100, 10):  # the same curve stretched over twice the steps
        assert long[10 + 2 * i] == pytest.approx(short[10 + i])
    assert long[-1] == pytest.approx(0.1 * base, rel=1e-3)
    assert lr_at(5, 100, base, ScheduleSpec(kind="constant")) == base


def test_trainer_applies_the_wsd_schedule(data: Path, tmp_path: Path) -> None:
    sched = {"kind": "wsd", "warmupSteps": 2, "decaySteps": 10, "minLrRatio": 0.0}
    spec = make_spec(data, tmp_path, tokens=30 * 8 * 64, schedule=sched, eval={"logPoints": 0, "everySteps": 1})
    summary = execute(spec)
    history = json.loads((tmp_path / "result.json").read_text())["history"]
    lrs = [p["lr"] for p in history]
    assert summary.status == "succeeded" and len(lrs) == 30
    assert lrs[:2] == pytest.approx([5e-3, 1e-2]) and set(lrs[2:20]) == {1e-2}
    assert lrs[20:] == pytest.approx([1e-2 * (1 - k / 10) for k in range(1, 11)])


def test_summary_fits_termination_message_for_the_longest_spec(data: Path, tmp_path: Path) -> None:
    run_id = "a" * 199 + "z"
    shape = {"nLayer": 1, "dModel": 8, "nHead": 1, "vocabSize": 256, "seqLen": 8}
    spec = make_spec(data, tmp_path, runId=run_id, shape=shape, batchSize=2, tokens=400 * 16,
                     eval={"logPoints": 200, "everySteps": 1, "batches": 1, "checkpointEverySteps": 10_000})
    summary = execute(spec, termination_log=str(tmp_path / "term"))
    assert summary.status == "succeeded" and len(summary.curve) == 400
    message = (tmp_path / "term").read_text()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = RunSummary.from_message(message)
    assert parsed.run_id == run_id and parsed.curve[0] == summary.curve[0] and parsed.curve[-1] == summary.curve[-1]
    long_reason = summary.model_copy(update={"status": "failed", "exit_reason": "x" * 512})
    assert len(long_reason.to_message().encode()) <= TERMINATION_MESSAGE_LIMIT


def _run_cli(spec: RunSpec, tmp_path: Path, extra_env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json(by_alias=True))
    env = {**SUBPROCESS_ENV, "FLOPWISE_TERMINATION_LOG": str(tmp_path / "term"), **(extra_env or {})}
    return subprocess.run([*TRAIN, str(spec_file)], env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_nan_loss_is_reported_as_diverged_with_nonzero_exit(data: Path, tmp_path: Path) -> None:
    spec = make_spec(data, tmp_path / "out", tokens=40 * 8 * 64)
    done = _run_cli(spec, tmp_path, {"FLOPWISE_DEBUG_NAN_AT_STEP": "17"})
    assert done.returncode == 2, done.stderr
    summary = RunSummary.from_message((tmp_path / "term").read_text())
    assert summary.status == "diverged" and "step 17" in summary.exit_reason
    assert summary.steps == 16 and summary.tokens == 16 * spec.tokens_per_step
    assert (tmp_path / "out" / "summary.json").read_text() == (tmp_path / "term").read_text()


def test_absurd_learning_rate_diverges(data: Path, tmp_path: Path) -> None:
    spec = make_spec(data, tmp_path, tokens=60 * 8 * 64, optimizer={"lr": 10.0, "gradClip": 0},
                     mup={"parameterization": "sp", "initStd": 1.0}, schedule={"kind": "constant"})
    summary = execute(spec)
    assert summary.status == "diverged" and "exceeds" in summary.exit_reason, summary
    assert summary.steps < 5


def test_bad_data_path_and_bad_spec_fail_cleanly(tmp_path: Path) -> None:
    spec = make_spec(tmp_path / "missing", tmp_path / "out")
    done = _run_cli(spec, tmp_path)
    assert done.returncode == 1
    summary = RunSummary.from_message((tmp_path / "term").read_text())
    assert summary.status == "failed" and summary.exit_reason.startswith("data:")
    env = {**SUBPROCESS_ENV, "FLOPWISE_TERMINATION_LOG": str(tmp_path / "term2"), "FLOPWISE_RUN_SPEC": '{"runId": 1}'}
    done = subprocess.run(TRAIN, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert RunSummary.from_message((tmp_path / "term2").read_text()).exit_reason.startswith("bad run spec")


def test_resume_after_sigkill_replays_exactly(data: Path, tmp_path: Path) -> None:
    steps = 300
    common = {"tokens": steps * 8 * 64, "eval": {"logPoints": 10, "everySteps": 50, "batches": 2,
                                                 "checkpointEverySteps": 20}}
    killed = make_spec(data, tmp_path / "killed", **common)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(killed.model_dump_json(by_alias=True))
    env = {**SUBPROCESS_ENV, "FLOPWISE_RUN_SPEC_FILE": str(spec_file),
           "FLOPWISE_TERMINATION_LOG": str(tmp_path / "term")}
    proc = subprocess.Popen(TRAIN, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 90
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (tmp_path / "killed" / "result.json").exists(), "run finished before the kill"
    saved_step = torch.load(checkpoint, weights_only=False)["step"]
    assert 0 < saved_step < steps
    done = subprocess.run(TRAIN, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert resumed["resumedFrom"] == [saved_step]
    assert resumed["summary"]["tokens"] == steps * killed.tokens_per_step == killed.total_steps * 512
    history_steps = [p["step"] for p in resumed["history"]]
    assert history_steps == eval_steps(steps, killed.eval)  # continued, nothing repeated, nothing missing

    straight = execute(make_spec(data, tmp_path / "straight", **common))
    assert straight.tokens == resumed["summary"]["tokens"]
    # Data is a pure function of (seed, step) and the checkpoint holds model + optimiser: bit-identical on CPU.
    assert [p.val_loss for p in straight.curve] == [p["valLoss"] for p in resumed["summary"]["curve"]]
    assert straight.final_val_loss == resumed["summary"]["finalValLoss"]


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint_and_a_summary(data: Path, tmp_path: Path) -> None:
    """What Kubernetes sends on pod deletion or eviction (and flopwise on cancellation): the run stops cleanly,
    reports what it consumed, and a rerun resumes to exactly the planned tokens."""
    steps = 400
    spec = make_spec(data, tmp_path / "out", tokens=steps * 8 * 64,
                     eval={"logPoints": 4, "everySteps": 100, "batches": 1, "checkpointEverySteps": 50})
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json(by_alias=True))
    env = {**SUBPROCESS_ENV, "FLOPWISE_RUN_SPEC_FILE": str(spec_file),
           "FLOPWISE_TERMINATION_LOG": str(tmp_path / "term")}
    proc = subprocess.Popen(TRAIN, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "out" / "checkpoint.pt"
    deadline = time.time() + 90
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    summary = RunSummary.from_message((tmp_path / "term").read_text())
    assert summary.status == "failed" and "SIGTERM" in summary.exit_reason
    assert 0 < summary.tokens < spec.tokens and summary.flops > 0  # charged what it consumed, no more
    stopped_at = torch.load(checkpoint, weights_only=False)["step"]
    assert stopped_at * spec.tokens_per_step == summary.tokens
    done = subprocess.run(TRAIN, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert RunSummary.from_message((tmp_path / "term").read_text()).tokens == spec.total_steps * spec.tokens_per_step


def test_checkpoint_of_another_run_is_not_overwritten(data: Path, tmp_path: Path) -> None:
    assert execute(make_spec(data, tmp_path, tokens=4 * 512)).status == "succeeded"
    other = execute(make_spec(data, tmp_path, tokens=4 * 512, seed=99))
    assert other.status == "failed" and "different run spec" in other.exit_reason


def test_ddp_on_cpu_with_gloo_world_size_two(data: Path, tmp_path: Path) -> None:
    spec = make_spec(data, tmp_path / "ddp", tokens=30 * 8 * 64, eval={"logPoints": 3, "batches": 2})
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json(by_alias=True))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**SUBPROCESS_ENV, "FLOPWISE_TERMINATION_LOG": str(tmp_path / "term")}
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", *TRAIN, str(spec_file)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = RunSummary.from_message((tmp_path / "term").read_text())
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert summary.status == "succeeded" and result["worldSize"] == 2
    assert summary.tokens == 30 * 512
    # The global batch is the same windows in one process: the losses agree up to float reduction order,
    # which Adam amplifies slowly over the steps (measured: 1e-7 relative at step 5, 2e-3 at step 30).
    single = execute(make_spec(data, tmp_path / "single", tokens=30 * 8 * 64, eval={"logPoints": 3, "batches": 2}))
    assert [p.tokens for p in summary.curve] == [p.tokens for p in single.curve] == [512, 2560, 15360]
    for ddp_point, one_point in zip(summary.curve[:2], single.curve[:2], strict=True):
        assert math.isclose(ddp_point.val_loss, one_point.val_loss, rel_tol=1e-5)
    assert math.isclose(summary.final_val_loss, single.final_val_loss, rel_tol=1e-2)


def test_trainer_never_imports_kopf() -> None:
    code = "import sys, flopwise_trainer.cli, flopwise_trainer.train; print('kopf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=SUBPROCESS_ENV)
    assert out.stdout.strip() == "False"
