"""The local executor: each run is a `flopwise-train` subprocess, at most K at once.

Every run owns a folder `runs/<run id>/` holding its spec, its log, its pid and — when it ends — its
termination message, exactly what a Kubernetes pod would leave. Launching is idempotent on that folder: a
run that already finished or is still alive (for example after `flopwise run` itself was killed and resumed)
is adopted, never started twice. Runs start in their own session, so a killed `flopwise run` leaves them
training, and `--resume` picks them up.

Ctrl-C is a stop, not a kill: `stop` marks each running run `interrupted`, sends it SIGTERM (the trainer
checkpoints at the next step boundary and exits) and waits. A marked run that did not succeed is observed as
never started, so `--resume` launches it again and it continues from its checkpoint: the interrupted attempt's
failure summary is kept aside (`termination-log.interrupted`) and never reaches the ledger, which charges the
run once, for everything it trained, when it ends.

With the default trainer, runs are forked by a warm trainer (:mod:`flopwise_trainer.warm`) that imported torch
once, instead of each run importing it again (~2.7 s a run here); ``FLOPWISE_WARM_TRAINER=0`` turns it off, and
anything going wrong with it falls back to a plain subprocess. Either way a run is known by its pid *and* its start
time (`runs/<id>/pid`), so a reused pid is never adopted as a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from flopwise.api.status import LIVE_STATES, RunRecord
from flopwise.contract import PROGRESS_FILE, RunProgress, RunSpec, RunSummary
from flopwise.engine.machine import Observation
from flopwise.processes import running, start_time

TERMINATION_LOG = "termination-log"
INTERRUPTED = "interrupted"  # marker: `flopwise run` stopped this run on Ctrl-C; a resume continues it
WARM_ENV = "FLOPWISE_WARM_TRAINER"  # "0": every run imports torch in its own interpreter
WARM_REPLY_SECONDS = 120.0  # the first fork waits for the server's imports


class WarmTrainer:
    """The executor's side of :mod:`flopwise_trainer.warm`: one server, started on the first run, asked to fork
    each run. ``fork`` returns (pid, start time), or None when the server cannot (the caller then starts a plain
    subprocess); a server that failed once is not tried again."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.command = [sys.executable, "-m", "flopwise_trainer.warm"]
        self.process: subprocess.Popen[bytes] | None = None
        self.broken = False

    def fork(self, argv: list[str], env: dict[str, str], log: Path) -> tuple[int, int] | None:
        if self.broken:
            return None
        try:
            if self.process is None:
                with open(self.log, "ab") as errors:
                    self.process = subprocess.Popen(
                        self.command, stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=errors, env=self.env, start_new_session=True)
                weakref.finalize(self, _close, self.process)
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write((json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n").encode())
            self.process.stdin.flush()
            ready, _, _ = select.select([self.process.stdout], [], [], WARM_REPLY_SECONDS)
            reply = json.loads(self.process.stdout.readline()) if ready else None
            return int(reply["pid"]), int(reply["start"])  # type: ignore[index]
        except (OSError, ValueError, KeyError, TypeError):
            self.broken = True
            self.close()
            return None

    def close(self) -> None:
        if self.process is not None:
            _close(self.process)
            self.process = None


def _close(process: subprocess.Popen[bytes]) -> None:
    """End the server (its stdin closing is its signal); the runs it forked go on."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalExecutor:
    def __init__(self, state_dir: Path, *, threads_per_run: int = 1, trainer: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.runs_dir = Path(state_dir) / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads_per_run
        self.trainer = trainer or [sys.executable, "-m", "flopwise_trainer.cli"]
        self.env = env or {}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.forked: dict[str, tuple[int, int]] = {}  # runs the warm trainer forked: (pid, start time)
        warm = trainer is None and os.environ.get(WARM_ENV, "1") != "0"
        self.warm = WarmTrainer(self._env(), self.runs_dir / "warm-trainer.log") if warm else None

    def _env(self, run_id: str | None = None) -> dict[str, str]:
        env = {**os.environ, **self.env, "OMP_NUM_THREADS": str(self.threads)}
        return {**env, "FLOPWISE_RUN_ID": run_id} if run_id else env

    def close(self) -> None:
        """Let the warm trainer go (runs it started go on)."""
        if self.warm is not None:
            self.warm.close()

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def output_dir(self, run_id: str) -> Path:
        """Where the run's trainer writes (checkpoints, results, progress)."""
        return output_dir(self.runs_dir.parent, run_id)

    def progress(self, run_id: str) -> RunProgress | None:
        return read_progress(self.runs_dir.parent, run_id)

    # -------------------------------------------------------------------------------------------- launch
    def launch(self, record: RunRecord, spec: RunSpec) -> bool:
        """Start the run unless it already finished or is alive; returns True when a process was started."""
        folder = self.run_dir(record.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        if self.alive(record.run_id):
            return False
        resumed = (folder / INTERRUPTED).exists()
        if resumed:  # stopped by Ctrl-C: its summary is of the interrupted attempt, never the run's result
            with contextlib.suppress(FileNotFoundError):
                os.replace(folder / TERMINATION_LOG, folder / (TERMINATION_LOG + ".interrupted"))
            (folder / INTERRUPTED).unlink()
        if (folder / TERMINATION_LOG).exists():
            return False
        spec_path = folder / "spec.json"
        spec_path.write_text(spec.model_dump_json(by_alias=True, indent=1))
        args = [str(spec_path.absolute()), "--termination-log", str((folder / TERMINATION_LOG).absolute()),
                "--threads", str(self.threads)]
        env = self._env(record.run_id)
        forked = self.warm.fork(args, env, (folder / "train.log").absolute()) if self.warm is not None else None
        if forked is not None:
            pid, started = forked
            self.forked[record.run_id] = forked
        else:
            log = open(folder / "train.log", "ab")  # noqa: SIM115 — handed to the child, closed below
            try:
                process = subprocess.Popen([*self.trainer, *args], stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            finally:
                log.close()
            self.children[record.run_id] = process
            pid, started = process.pid, start_time(process.pid) or 0  # our child: /proc/PID stays until we reap it
        _atomic_write(folder / "pid", f"{pid} {started}\n")
        with open(folder / "launches.log", "a") as launches:  # the audit trail the resume test reads
            launches.write(f"{time.time():.3f} pid {pid}{' forked warm' if forked else ''}"
                           f"{' resumed after Ctrl-C' if resumed else ''}\n")
        return True

    def stop(self, run_ids: list[str], timeout: float) -> list[str]:
        """Stop these runs as Ctrl-C does: mark them interrupted, SIGTERM them (they checkpoint at the next step
        boundary) and wait up to ``timeout`` seconds; returns the ids still alive then."""
        alive = [run_id for run_id in run_ids if self.alive(run_id)]
        for run_id in alive:  # marked before the signal: whatever happens next, a resume continues the run
            (self.run_dir(run_id) / INTERRUPTED).touch()
        for run_id in alive:
            pid = self._pid(run_id)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [run_id for run_id in alive if self.alive(run_id)]
        return alive

    def cancel(self, run_id: str) -> None:
        """SIGTERM: the trainer checkpoints at its next step boundary and reports what it consumed."""
        pid = self._pid(run_id)
        if pid is not None and self.alive(run_id):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def suspend(self, run_id: str) -> None:
        self.cancel(run_id)  # its folder (and checkpoint) stays

    def resume(self, record: RunRecord, spec: RunSpec) -> bool:
        """Start a suspended run again: its SIGTERM report is cleared; the trainer resumes from its checkpoint."""
        if self.alive(record.run_id):
            return False
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir(record.run_id) / TERMINATION_LOG).unlink()
        return self.launch(record, spec)

    # ------------------------------------------------------------------------------------------- observe
    def observe(self, records: list[RunRecord]) -> list[Observation]:
        return [self._observe(r.run_id) for r in records if r.state in LIVE_STATES]

    def _observe(self, run_id: str) -> Observation:
        folder = self.run_dir(run_id)
        if self.alive(run_id):
            return Observation(run_id, "running")
        message_path = folder / TERMINATION_LOG
        interrupted = (folder / INTERRUPTED).exists()
        if message_path.exists():
            try:
                summary = RunSummary.from_message(message_path.read_text()[:65536])
            except (ValueError, OSError):
                if interrupted:
                    return Observation(run_id, "absent")
                return Observation(run_id, "failed", None)  # garbled: charged its reservation, never trusted
            if interrupted and summary.status != "succeeded":
                return Observation(run_id, "absent")  # stopped by Ctrl-C: to be continued, not charged
            return Observation(run_id, "succeeded" if summary.status == "succeeded" else "failed", summary)
        if interrupted:
            return Observation(run_id, "absent")
        if self._pid(run_id) is None:
            return Observation(run_id, "absent")
        return Observation(run_id, "lost")

    # ---------------------------------------------------------------------------------------- processes
    def _identity(self, run_id: str) -> tuple[int, int | None] | None:
        """(pid, start time) from the run's pid file; the start time is None in a file written before it was."""
        try:
            fields = (self.run_dir(run_id) / "pid").read_text().split()
            return int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
        except (OSError, ValueError, IndexError):
            return None

    def _pid(self, run_id: str) -> int | None:
        found = self._identity(run_id)
        return found[0] if found else None

    def alive(self, run_id: str) -> bool:
        child = self.children.get(run_id)
        if child is not None:
            if child.poll() is None:
                return True
            del self.children[run_id]
            return False
        found = self._identity(run_id)
        if found is None:
            return False
        pid, started = found
        if started:  # the process that started then, not a later one given the same pid
            return running(pid, started)
        try:  # an older pid file: alive, and really this run (pids get reused)?
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return str(self.run_dir(run_id)).encode() in cmdline and ") Z" not in stat

    def wait_any(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Sleep until a child exits, ``stop`` is set or ``timeout`` passes (adopted runs are polled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(child.poll() is not None for child in self.children.values()):
                return
            if any(not running(*forked) for forked in self.forked.values()):
                self.forked = {run_id: f for run_id, f in self.forked.items() if running(*f)}
                return
            if stop is not None and stop.is_set():
                return
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def output_dir(state_dir: Path, run_id: str) -> Path:
    """Where a run's trainer writes (checkpoints, results, progress), inside a local campaign's state folder."""
    return Path(state_dir) / "runs" / run_id / "out"


def read_progress(state_dir: Path, run_id: str) -> RunProgress | None:
    """What the run's trainer last said about its progress (advisory: None when it has not yet)."""
    return RunProgress.read(str(output_dir(state_dir, run_id) / PROGRESS_FILE))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

