"""What Ctrl-C leaves behind, as the local executor reads it on `--resume`: a run that `flopwise run` stopped is
continued (its interrupted attempt never reaches the ledger), one that finished meanwhile keeps its result, and a
run that failed on its own is still a failure. Real files and a real (trivial) child process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flopwise.api.status import RunRecord
from flopwise.contract import ModelShape, OptimizerSpec, RunSpec, RunSummary
from flopwise.executors.local import INTERRUPTED, TERMINATION_LOG, LocalExecutor

SHAPE = ModelShape(n_layer=1, d_model=8, n_head=1, vocab_size=256, seq_len=8)


def record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, planned_id=run_id, role="ladder", state="Running", shape=SHAPE,
                     params=SHAPE.param_count(), tokens=64, batch_size=1, steps=8, learning_rate=0.01)


def leave(executor: LocalExecutor, run_id: str, status: str | None, *, marked: bool) -> None:
    folder = executor.run_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "pid").write_text("999999999\n")  # no such process
    if status is not None:
        (folder / TERMINATION_LOG).write_text(RunSummary(run_id=run_id, status=status, steps=3).to_message())
    if marked:
        (folder / INTERRUPTED).touch()


def test_an_interrupted_run_is_continued_and_its_attempt_kept_aside(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path, trainer=[sys.executable, "-c", "pass"])
    leave(executor, "stopped", "failed", marked=True)  # SIGTERM'd by Ctrl-C: checkpointed, reported failed
    leave(executor, "no-summary", None, marked=True)  # stopped before its trainer could write anything
    leave(executor, "finished", "succeeded", marked=True)  # ended on its own just as Ctrl-C came
    leave(executor, "broken", "failed", marked=False)  # failed by itself: a failure, whatever came after
    seen = {o.run_id: o.state for o in executor.observe([record(r) for r in ("stopped", "no-summary", "finished",
                                                                               "broken")])}
    assert seen == {"stopped": "absent", "no-summary": "absent", "finished": "succeeded", "broken": "failed"}

    spec = RunSpec(run_id="stopped", shape=SHAPE, tokens=64, batch_size=1, optimizer=OptimizerSpec(lr=0.01),
                   data_path="/nowhere", output_dir=str(executor.output_dir("stopped")))
    assert executor.launch(record("stopped"), spec)  # the engine relaunches what it sees as never started
    folder = executor.run_dir("stopped")
    assert not (folder / INTERRUPTED).exists() and (folder / (TERMINATION_LOG + ".interrupted")).exists()
    assert (folder / "launches.log").read_text().strip().endswith("resumed after Ctrl-C")
    deadline = time.monotonic() + 30
    while executor.alive("stopped") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert executor.observe([record("stopped")])[0].state == "lost"  # `pass` reports nothing: a plain loss now
    assert not executor.launch(record("broken"), spec)  # a finished run is never started again
