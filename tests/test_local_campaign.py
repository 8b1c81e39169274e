"""`flopwise run` end to end with real trainer processes (real PyTorch, real data shards, real files):
a whole tiny campaign with its report, a SIGKILL mid-campaign and a resume, and runs that fail."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import yaml

from flopwise.api.load import parse_campaign
from flopwise.api.status import TrainingCampaignStatus
from flopwise.data import prepare_stdlib
from flopwise.engine import ledger
from flopwise.local.runner import LocalCampaign

TINY = Path(__file__).parent / "data" / "tiny-campaign.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "stdlib"
    prepare_stdlib(out, max_bytes=2_000_000)
    return out


def campaign_file(tmp_path: Path, shards: Path, **spec_changes) -> Path:
    doc = yaml.safe_load(TINY.read_text())
    doc["spec"]["dataset"]["path"] = str(shards)
    for key, value in spec_changes.items():
        doc["spec"][key] = value
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def flopwise(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flopwise", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


def load_status(state: Path) -> TrainingCampaignStatus:
    return TrainingCampaignStatus.model_validate_json((state / "status.json").read_text())


def assert_ledger_balances(status: TrainingCampaignStatus) -> None:
    assert status.plan is not None
    ledger.check(status.runs, ledger.Limits(flops=status.plan.budget_flops, usd=None))
    assert status.ledger.reserved_flops == 0
    assert status.ledger.spent_flops == pytest.approx(sum(r.spent.flops for r in status.runs))
    assert status.ledger.spent_flops <= status.plan.budget_flops


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shards: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The tiny campaign run once from start to end (not on a terminal: plain lines): the reference result."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    path = campaign_file(tmp_path, shards)
    state = tmp_path / "state"
    return state, flopwise("run", str(path), "--state-dir", str(state), cwd=tmp_path)


def test_tiny_campaign_end_to_end_with_report(uninterrupted) -> None:
    state, result = uninterrupted
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "\x1b[" not in result.stdout and "╭" not in result.stdout  # not a terminal: plain lines, no drawing
    status = load_status(state)
    assert status.phase == "Succeeded"
    assert {r.role for r in status.runs} >= {"ladder", "round1", "round2"}
    assert all(r.state == "Succeeded" for r in status.runs), [(r.run_id, r.reason) for r in status.runs]
    for record in status.runs:  # the trainer trained exactly the planned tokens and reported exact FLOPs
        assert record.result.tokens == record.tokens
        assert record.result.flops == pytest.approx(record.shape.flops_per_token() * record.tokens, rel=1e-6)
    assert_ledger_balances(status)
    law = status.law
    assert law is not None and law.backtest_are is not None and law.ci_low
    rec = status.recommendation
    assert rec is not None and rec.predicted_loss is not None and rec.learning_rate > 0
    assert status.tuning.round2_verdict
    # the report: plots rendered from the run data, and the fitted parameters shown in the status
    report = state / "report" / "report.md"
    text = report.read_text()
    for name in ("loss_vs_compute.png", "ladder_curves.png", "round1_sweep.png", "budget_burndown.png"):
        png = state / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        assert name in text
    for value in (law.E, law.A, law.B, law.alpha, law.beta):
        assert f"{value:.4g}" in text
    assert "recommendation: " in result.stdout and "report: " in result.stdout
    # the bets at the target size, from real training: the LR transfer verdict across two proxy widths and the
    # seed-noise floor of the smallest rung (3 seeds), in the status and in the report
    transfer, floor = status.tuning.transfer, status.noise_floor
    assert transfer is not None and transfer.verdict in ("holds", "does-not-hold") and len(transfer.widths) == 2
    assert rec.learning_rate_source.startswith(("Round 2", "extrapolated in width"))
    assert floor is not None and floor.seeds == 3 and floor.floor_are is not None and floor.within_noise is not None
    assert len({r.seed for r in status.runs if r.role in ("ladder", "seed") and r.params == floor.params}) == 3
    assert f"Verdict: **{transfer.verdict}**" in text and f"{100 * floor.floor_are:.2f}% ARE from 3 seeds" in text
    png = state / "report" / "lr_transfer.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "lr_transfer.png" in text


def test_wsd_ladder_branches_cooldowns_from_its_trunks_checkpoints(tmp_path: Path, shards: Path) -> None:
    """The WSD design with real trainer processes: each trunk keeps checkpoints in its stable phase, each shorter
    token count is a cooldown branched from one (the trainer checks the schedules agree up to the branch), is
    charged only its cooldown, and ends on an annealed point the law is fitted to."""
    path = campaign_file(tmp_path, shards, ladder={"design": "wsd", "sizes": 5, "spread": 4, "minParams": 2000,
                                                   "minSteps": 16, "tokenMultiples": [0.5, 1, 2], "seeds": 2},
                         tuning={**yaml.safe_load(TINY.read_text())["spec"]["tuning"], "schedule": "wsd"},
                         budget={"flops": 1.2e11, "split": {"ladder": 0.5, "round1": 0.25, "round2": 0.2,
                                                            "final": 0.0}, "margin": 0.05})
    state = tmp_path / "state"
    result = flopwise("run", str(path), "--state-dir", str(state), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = load_status(state)
    assert status.phase == "Succeeded", status.message
    branches = [r for r in status.runs if r.role == "ladder" and r.resume_step]
    assert len(branches) == 10  # 5 sizes × 2 shorter token counts
    for branch in branches:
        trunk = next(r for r in status.runs if r.run_id == branch.resume_from)
        assert branch.state == trunk.state == "Succeeded", (branch.run_id, branch.reason)
        assert (state / "runs" / trunk.run_id / "out" / f"checkpoint-step-{branch.resume_step:08d}.pt").is_file()
        # it trained (and was charged) its cooldown only, and ended where its own schedule ends
        assert branch.result.steps == branch.steps - branch.resume_step
        assert branch.spent.flops == pytest.approx(branch.shape.flops_per_token() * branch.tokens, rel=1e-6)
        assert branch.result.curve[-1].tokens == branch.trajectory_tokens
    assert status.law is not None and status.law.n_points == sum(
        1 for r in status.runs if r.role in ("ladder", "seed") and r.state == "Succeeded")
    assert_ledger_balances(status)


def test_sigkill_mid_campaign_then_resume(tmp_path: Path, shards: Path) -> None:
    """kill -9 of `flopwise run` while runs are in flight; --resume finishes the campaign: every run launched
    exactly once (the executor's audit log), no result lost, the ledger balanced."""
    path = campaign_file(tmp_path, shards)
    state = tmp_path / "state"
    process = subprocess.Popen([sys.executable, "-m", "flopwise", "run", str(path), "--state-dir", str(state)],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not (state / "status.json").exists():
                continue
            try:
                status = load_status(state)
            except ValueError:
                continue  # never torn (atomic rename), but be patient rather than flaky
            done = sum(r.state == "Succeeded" for r in status.runs)
            if done >= 2 and any(r.state == "Running" for r in status.runs):
                break
        else:
            pytest.fail("the campaign never reached two finished runs")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = load_status(state)
    in_flight = [r.run_id for r in killed_at.runs if r.state == "Running"]
    assert in_flight
    result = flopwise("run", str(path), "--state-dir", str(state), "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(resumed)" in result.stdout
    status = load_status(state)
    assert status.phase == "Succeeded"
    for record in status.runs:
        launches = (state / "runs" / record.run_id / "launches.log").read_text().splitlines()
        assert len(launches) == 1, (record.run_id, launches)
        assert record.state == "Succeeded" and record.result is not None
    finished_before = {r.run_id: r.result for r in killed_at.runs if r.state == "Succeeded"}
    for run_id, result_before in finished_before.items():  # nothing recorded before the kill was lost
        assert next(r for r in status.runs if r.run_id == run_id).result == result_before
    assert_ledger_balances(status)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
RUN_ROW = re.compile(  # a row of the live display's run table, as a person reads it
    r"(?P<run>(?:ladder|seed|round1|round2)-[-a-z0-9.]+)\s+\w+\s+[\d.]+[KMB]? \d+×\d+\s+"
    r"(?P<step>\d[\d,]*)/(?P<steps>\d[\d,]*)\s+\S+\s+(?P<speed>\d[\d,]*)\s+"
    r"(?P<eta>\d+s|\d+m \d\ds|\d+h \d\dm)\s+(?P<loss>\d+\.\d{4}|-)")


class Terminal:
    """`flopwise run` on a pseudo-terminal, as a person runs it: what it draws, and Ctrl-C typed at it."""

    def __init__(self, argv: list[str], cwd: Path):
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session whose controlling terminal is the pty, 120 × 40
            os.chdir(cwd)
            os.environ.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
            os.execv(sys.executable, [sys.executable, *argv])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.pid, self.fd, self.raw = pid, fd, b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def read(self, timeout: float) -> bool:
        """Read what arrives within ``timeout``; False at the end of the output."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                return False
            self.raw += data
            return bool(data)
        return True

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.text.split("╭")[-1]  # the latest frame, searched once drawn whole (its bottom edge)
            match = pattern.search(frame) if "╯" in frame else None
            if match:
                return match
            if not self.read(0.5):
                break
        raise AssertionError(f"never drawn: {pattern.pattern}\n{self.text[-4000:]}")

    def finish(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.read(0.5):
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_live_display_then_ctrl_c_then_resume_ends_with_the_same_result(tmp_path: Path, shards: Path,
                                                                         uninterrupted) -> None:
    """On a terminal `flopwise run` draws the running runs with their step, speed and ETA; Ctrl-C stops them
    cleanly (SIGTERM: each checkpoints) and prints the command that resumes; that command finishes the campaign
    with the result of a campaign never interrupted: every run's losses, the law and the recommendation."""
    path = campaign_file(tmp_path, shards)
    state = tmp_path / "state"
    term = Terminal(["-m", "flopwise", "run", str(path), "--state-dir", str(state)], tmp_path)
    try:
        row = term.wait_for(RUN_ROW, timeout=300)
        frame = term.text.split("╭")[-1]
        assert 0 < int(row["step"].replace(",", "")) <= int(row["steps"].replace(",", ""))
        assert re.search(r"phase\s+(Round1|Round2|Ladder)", frame), frame
        for text in ("budget", "% used", "spent", "reserved", "left", "runs", "campaign ETA", "predicted loss",
                     "Ctrl-C stops the runs"):
            assert text in frame, frame
        os.write(term.fd, b"\x03")  # Ctrl-C
        code = term.finish(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(term.pid, signal.SIGKILL)
            os.waitpid(term.pid, 0)
    out = term.text
    assert code == 130, out[-3000:]
    stopped = re.search(r"stopped and checkpointed: (.+)", out)
    assert stopped, out[-3000:]
    stopped_ids = [x.strip() for x in stopped[1].split(",")]
    assert row["run"] in stopped_ids
    command = re.search(r"continue it with:\n\s+(.+)", out)
    assert command and "--resume" in command[1] and str(state) in command[1], out[-2000:]
    interrupted = load_status(state)
    for run_id in stopped_ids:  # still the campaign's, untouched by the ledger: a resume continues them
        record = next(r for r in interrupted.runs if r.run_id == run_id)
        assert record.state == "Running" and record.result is None
        assert (state / "runs" / run_id / "out" / "checkpoint.pt").exists() or run_id != row["run"]

    argv = shlex.split(command[1])
    assert argv[:3] == [sys.executable, "-m", "flopwise"]
    resumed = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    status = load_status(state)
    assert status.phase == "Succeeded"
    assert_ledger_balances(status)
    seen = json.loads((state / "runs" / row["run"] / "out" / "result.json").read_text())
    assert seen["resumedFrom"] and seen["resumedFrom"][0] >= int(row["step"].replace(",", ""))  # not from scratch
    for record in status.runs:
        launches = (state / "runs" / record.run_id / "launches.log").read_text().splitlines()
        assert len(launches) == (2 if record.run_id in stopped_ids else 1), (record.run_id, launches)
        assert record.run_id not in stopped_ids or launches[1].endswith("resumed after Ctrl-C")

    reference = load_status(uninterrupted[0])
    assert uninterrupted[1].returncode == 0
    assert [r.run_id for r in status.runs] == [r.run_id for r in reference.runs]
    for ours, theirs in zip(status.runs, reference.runs, strict=True):  # bit-identical training
        assert ours.result.final_val_loss == theirs.result.final_val_loss, ours.run_id
        assert ours.result.tokens == theirs.result.tokens and ours.spent.flops == theirs.spent.flops
    assert status.law.model_dump() == reference.law.model_dump()
    timing = {"gpu_hours", "usd"}  # follow the measured MFU: wall time differs between any two campaigns
    assert status.recommendation.model_dump(exclude=timing) == reference.recommendation.model_dump(exclude=timing)


def test_starting_twice_without_resume_is_refused(tmp_path: Path, shards: Path) -> None:
    path = campaign_file(tmp_path, shards)
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(TrainingCampaignStatus().model_dump_json())
    result = flopwise("run", str(path), "--state-dir", str(state), cwd=tmp_path)
    assert result.returncode != 0 and "--resume" in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_is_refused_before_any_run(tmp_path: Path, shards: Path) -> None:
    path = campaign_file(tmp_path, tmp_path / "nowhere")
    result = flopwise("run", str(path), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode != 0 and "spec.dataset.path" in result.stderr and "flopwise data" in result.stderr
    assert not (tmp_path / "state" / "runs").exists() or not any((tmp_path / "state" / "runs").iterdir())


def local(tmp_path: Path, shards: Path, env: dict[str, str] | None = None) -> LocalCampaign:
    campaign = parse_campaign(yaml.safe_load(campaign_file(tmp_path, shards).read_text()))
    return LocalCampaign(campaign, tmp_path / "state", data_path=shards, env=env)


def test_diverging_runs_are_charged_and_the_campaign_fails_with_a_reason(tmp_path: Path, shards: Path) -> None:
    """Every trainer's loss turns NaN at step 5 (the trainer's debug hook): each Round 1 run exits non-zero with a
    'diverged' summary and is charged the FLOPs it consumed; with no learning rate that trains, the campaign fails
    after Round 1 and launches nothing else (the ladder would diverge too, and spend its share for nothing)."""
    campaign = local(tmp_path, shards, env={"FLOPWISE_DEBUG_NAN_AT_STEP": "5"})
    status = campaign.run(None)
    assert status.phase == "Failed" and "every Round 1 run failed" in status.message, status.message
    assert "baseLearningRate" in status.message
    assert {r.role for r in status.runs} == {"round1"}
    sweep = status.runs
    assert len(sweep) == len({r.planned_id for r in sweep})  # diverged runs are not retried: it would diverge again
    for record in sweep:
        assert record.state == "Failed" and record.reason.startswith("diverged")
        assert record.result is not None and record.result.status == "diverged"
        per_step = record.shape.flops_per_token() * record.batch_size * record.shape.seq_len
        assert 0 < record.spent.flops <= 5 * per_step + 1e-6  # what it consumed, not its reservation
    assert_ledger_balances(status)


def test_data_vanishing_mid_campaign_fails_runs_retries_then_charges(tmp_path: Path, shards: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(shards, data)
    campaign = local(tmp_path, data)
    removed = []

    def remove_data_after_first_result(status: TrainingCampaignStatus) -> None:
        if not removed and any(r.state == "Succeeded" for r in status.runs):
            shutil.rmtree(data)
            removed.append(True)

    status = campaign.run(None, on_update=remove_data_after_first_result)
    assert removed
    failed = [r for r in status.runs if r.state == "Failed"]
    assert failed, "runs without data must fail"
    retried = [r for r in status.runs if r.attempt == 1]
    assert retried, "a failed run is retried within tuning.maxRetries"
    assert not [r for r in status.runs if r.attempt > 1]
    for record in failed:
        assert record.reason and record.finished_at is not None
    assert status.phase == "Failed"
    assert_ledger_balances(status)
    events = [json.loads(line)["reason"] for line in (tmp_path / "state" / "events.log").read_text().splitlines()]
    assert "RunRetried" in events and "RunFailed" in events
    assert os.path.exists(tmp_path / "state" / "status.json")
