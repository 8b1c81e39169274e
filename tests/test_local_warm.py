"""The local executor's warm trainer (flopwise_trainer.warm): a run it forks is the same run a fresh
`flopwise-train` process trains (same losses, same files), it can be stopped like one, a reused pid is never
taken for a run, and a server that cannot fork leaves the executor starting plain processes. Real processes,
real PyTorch, real bytes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from flopwise.api.status import RunRecord
from flopwise.contract import ModelShape, RunSpec, RunSummary
from flopwise.data import prepare_stdlib
from flopwise.executors.local import TERMINATION_LOG, WARM_ENV, LocalExecutor
from flopwise.processes import running, start_time

SHAPE = ModelShape(n_layer=1, d_model=16, n_head=2, vocab_size=256, seq_len=32)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stdlib")
    prepare_stdlib(out, max_bytes=200_000)
    return out


def record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, planned_id=run_id, role="ladder", state="Running", shape=SHAPE,
                     params=SHAPE.param_count(), tokens=60 * 4 * 32, batch_size=4, steps=60, learning_rate=0.01)


def spec(executor: LocalExecutor, run_id: str, data: Path, steps: int = 60) -> RunSpec:
    return RunSpec.model_validate({
        "runId": run_id, "shape": SHAPE.model_dump(by_alias=True), "tokens": steps * 4 * 32, "batchSize": 4,
        "optimizer": {"lr": 1e-2}, "schedule": {"kind": "cosine", "warmupSteps": 5},
        "eval": {"logPoints": 4, "batches": 2}, "dataPath": str(data),
        "outputDir": str(executor.output_dir(run_id)), "seed": 3})


def finish(executor: LocalExecutor, run_id: str, timeout: float = 120) -> RunSummary:
    deadline = time.monotonic() + timeout
    while executor.alive(run_id) and time.monotonic() < deadline:
        executor.wait_any(0.5)
    seen = executor.observe([record(run_id)])[0]
    assert seen.state in ("succeeded", "failed") and seen.summary is not None, seen
    return seen.summary


def test_a_forked_run_is_the_run_a_fresh_process_trains(data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    warm = LocalExecutor(tmp_path / "warm")
    assert warm.launch(record("r"), spec(warm, "r", data))
    assert "forked warm" in (warm.run_dir("r") / "launches.log").read_text()
    forked = finish(warm, "r")
    server = warm.warm.process
    assert server is not None and server.poll() is None  # one server, still there for the next run
    warm.close()
    assert server.returncode == 0  # it ends when the executor lets it go (its stdin closes), and cleanly
    monkeypatch.setenv(WARM_ENV, "0")
    cold = LocalExecutor(tmp_path / "cold")
    assert cold.warm is None and cold.launch(record("r"), spec(cold, "r", data))
    fresh = finish(cold, "r")
    assert forked.status == fresh.status == "succeeded"
    assert forked.final_val_loss == fresh.final_val_loss and forked.steps == fresh.steps == 60
    assert [p.val_loss for p in forked.curve] == [p.val_loss for p in fresh.curve]
    assert "step 60/60" in (warm.run_dir("r") / "train.log").read_text()  # its output went to its own log


def test_a_forked_run_stops_like_a_process_and_its_pid_is_never_reused(data: Path, tmp_path: Path,
                                                                       request: pytest.FixtureRequest) -> None:
    executor = LocalExecutor(tmp_path)
    assert executor.launch(record("long"), spec(executor, "long", data, steps=100_000))
    pid, started = (int(v) for v in (executor.run_dir("long") / "pid").read_text().split())
    request.addfinalizer(lambda: running(pid, started) and os.killpg(pid, signal.SIGKILL))  # never left training
    assert running(pid, started) and start_time(pid) == started and executor.alive("long")
    assert os.getsid(pid) == pid  # its own session: a Ctrl-C at the terminal is the executor's to pass on
    deadline = time.monotonic() + 60
    while executor.progress("long") is None and time.monotonic() < deadline:  # training, its handler in place
        time.sleep(0.05)
    assert executor.stop(["long"], timeout=60) == []  # SIGTERM: it checkpoints and reports, as a process does
    assert not executor.alive("long")
    summary = RunSummary.from_message((executor.run_dir("long") / TERMINATION_LOG).read_text())
    assert summary.status == "failed" and 0 < summary.steps < 100_000
    # another process under the run's pid file but started at another time is not the run
    other = os.getpid()
    (executor.run_dir("long") / "pid").write_text(f"{other} {start_time(other) - 1}\n")
    assert not executor.alive("long")
    (executor.run_dir("long") / "pid").write_text(f"{other} {start_time(other)}\n")
    assert executor.alive("long")  # (the identity really is pid and start time)
    executor.close()


def test_a_server_that_cannot_fork_leaves_plain_processes(data: Path, tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path)
    assert executor.warm is not None
    executor.warm.command = [sys.executable, "-c", "import sys; sys.stdin.readline()"]  # answers nothing
    assert executor.launch(record("r"), spec(executor, "r", data))
    assert executor.warm.broken and "forked warm" not in (executor.run_dir("r") / "launches.log").read_text()
    assert finish(executor, "r").status == "succeeded"
