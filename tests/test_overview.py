"""The one-screen overview (`flopwise run` on a terminal, `flopwise status`, the report's opening) and the status's
display strings (`kubectl get tc`), built from statuses the real engine produces with the synthetic trainer's
results; and what a plan may say about the target's loss."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from flopwise.api.load import parse_campaign
from flopwise.api.status import TrainingCampaignStatus
from flopwise.cli import cli
from flopwise.contract import RunProgress
from flopwise.engine.machine import EngineOptions, Observation, reconcile
from flopwise.engine.runspec import run_spec_for
from flopwise.fitting.fit import COARSE_GRID
from flopwise.local.state import StateDir
from flopwise.overview.columns import status_display
from flopwise.overview.eta import Throughput, campaign_eta, makespan
from flopwise.overview.model import build_overview, target_loss_text
from flopwise.overview.render import text_lines
from flopwise.planning.laws import CHINCHILLA_3
from flopwise.planning.plan import plan_campaign
from synthetic import summary_for

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests" / "data" / "tiny-campaign.yaml").read_text())
CAMPAIGN = parse_campaign(TINY)
SPEC = CAMPAIGN.spec
FAST = EngineOptions(bootstrap_resamples=8, fit_grid=COARSE_GRID)
RAW_FLOAT = re.compile(r"\d\.\d{5,}")  # what a person cannot read at a glance: 9.356419665843365


def result_of(record, status: TrainingCampaignStatus):
    return summary_for(run_spec_for(record, SPEC, status.plan, campaign="tiny", data_path="/d", output_dir="/o"))


@pytest.fixture(scope="module")
def journey() -> list[tuple[TrainingCampaignStatus, float]]:
    """One campaign driven to the end by the engine, every step's status kept with its time: the runs in flight
    finish at each step, and the engine launches the next ones (so most steps have runs in flight)."""
    status, now, kept = None, 1000.0, []
    for _ in range(400):
        observations = []
        if status is not None:
            running = [r for r in status.runs if r.state == "Running"]
            observations = [Observation(r.run_id, "succeeded", result_of(r, status)) for r in running]
        status = reconcile(SPEC, status, observations, now=now, seed=1, options=FAST).status
        kept.append((status, now))
        if status.phase in ("Succeeded", "Failed"):
            return kept
        now += 30.0
    raise AssertionError(f"the engine did not finish: {status.phase}")


def at(journey, until) -> tuple[TrainingCampaignStatus, float]:
    return next(step for step in journey if until(step[0]))


def test_makespan_schedules_waiting_runs_on_the_slot_that_frees_first() -> None:
    assert makespan([], [], 2) == 0.0
    assert makespan([10.0], [], 2) == 10.0
    assert makespan([10.0, 4.0], [3.0, 3.0, 3.0], 2) == 13.0  # 4→7→10 on one slot, 10→13 on the other
    assert makespan([], [5.0, 5.0, 5.0], 1) == 15.0


def test_every_run_role_has_a_phase_for_the_eta() -> None:
    """A role another change adds must say which phase it runs in, or the live display could not place it."""
    from typing import get_args

    from flopwise.api.status import Phase, RunRole
    from flopwise.overview.eta import PHASE_OF_ROLE, PHASE_ORDER

    assert set(PHASE_OF_ROLE) == set(get_args(RunRole))
    assert set(PHASE_OF_ROLE.values()) == set(PHASE_ORDER) <= set(get_args(Phase))


def test_overview_reads_the_ledger_and_estimates_runs_without_progress(journey) -> None:
    status, now = at(journey, lambda s: s.run_counts.succeeded >= 2 and s.run_counts.running == 2)
    ov = build_overview(status, name="tiny", spec=SPEC, progress=None, now=now + 5)
    b = ov.budget
    assert b is not None and b.flops == status.ledger.budget_flops
    assert b.left_flops == pytest.approx(b.flops - status.ledger.spent_flops - status.ledger.reserved_flops)
    assert ov.runs_done == 2 and len(ov.running) == 2
    assert ov.runs_total == 2 + 2 + ov.runs_pending >= len(status.plan.all_runs())
    run = ov.running[0]
    assert run.estimated and run.step is not None and run.step_text().startswith("~") and run.eta_s is not None
    assert ov.eta_s is not None and ov.eta_s > 0 and ov.law is None
    assert "none until the campaign's own fit" in ov.prediction  # the tiny campaign is byte-level: no prior loss

    # locally the trainers' own progress replaces the estimate; a silent trainer is shown as such
    record = next(r for r in status.runs if r.state == "Running")
    fresh = RunProgress(run_id=record.run_id, step=7, stop_step=record.steps, tokens=7 * record.batch_size * 32,
                        steps_per_s=2.0, tokens_per_s=2.0 * record.batch_size * 32, val_loss=3.5, updated_at=now)
    ov = build_overview(status, name="tiny", spec=SPEC, progress={record.run_id: fresh}, now=now + 1)
    view = next(v for v in ov.running if v.run_id == record.run_id)
    other = next(v for v in ov.running if v.run_id != record.run_id)
    assert not view.estimated and view.step == 7 and view.eta_s == pytest.approx((record.steps - 7) / 2.0)
    assert view.step_text() == f"7/{record.steps}" and view.loss == 3.5
    assert other.step is None and other.step_text().startswith("starting")  # no progress file yet: not guessed
    stale = build_overview(status, name="tiny", spec=SPEC, progress={record.run_id: fresh}, now=now + 600)
    assert "silent for 10m" in next(v for v in stale.running if v.run_id == record.run_id).step_text()


def test_the_live_frame_reads_right_without_colour(journey) -> None:
    """The rich frame on a monochrome terminal (NO_COLOR, `script` logs): bars still say how far, by glyph."""
    from rich.console import Console

    from flopwise.overview.live import render

    status, now = at(journey, lambda s: s.run_counts.succeeded >= 2 and s.run_counts.running == 2)
    record = next(r for r in status.runs if r.state == "Running")
    early = RunProgress(run_id=record.run_id, step=1, stop_step=record.steps, steps_per_s=2.0, updated_at=now)
    ov = build_overview(status, name="tiny", spec=SPEC, progress={record.run_id: early}, now=now + 1)
    console = Console(width=120, no_color=True, color_system=None, record=True)
    console.print(render(ov, elapsed_s=65, footer="Ctrl-C stops the runs"))
    frame = console.export_text()
    row = next(line for line in frame.splitlines() if record.run_id in line)
    filled = round(12 * 1 / record.steps)  # one step done: the bar is almost empty, and says so in glyphs
    assert filled < 6 and f"1/{record.steps}" in row and "━" * filled + "─" * (12 - filled) in row, row
    assert "flopwise · tiny · 1m 05s" in frame and "Ctrl-C stops the runs" in frame
    for label in ("phase", "budget", "runs", "law", "predicted loss", "campaign ETA"):
        assert re.search(rf"│ {label} ", frame), frame


def test_queued_and_suspended_runs_are_counted_and_a_suspended_campaign_has_no_eta(journey) -> None:
    """A run waiting for Kueue's admission (or preempted) is still ahead of the campaign; spec.suspend holds every
    run with its checkpoint, and then no ETA can be told. Neither drops out of the run totals."""
    status, now = at(journey, lambda s: s.run_counts.succeeded >= 2 and s.run_counts.running == 2)
    before = build_overview(status, name="tiny", spec=SPEC, progress=None, now=now + 5)
    queued = status.model_copy(deep=True)
    record = next(r for r in queued.runs if r.state == "Running")
    record.state = "Queued"
    queued.run_counts.running, queued.run_counts.queued = 1, 1
    ov = build_overview(queued, name="tiny", spec=SPEC, progress=None, now=now + 5)
    assert ov.runs_total == before.runs_total and ov.runs_pending == before.runs_pending + 1
    assert "1 running, 1 queued" in ov.runs_text() and ov.eta_s is not None
    assert status_display(queued).runs == status.display.runs

    running = [Observation(r.run_id, "running") for r in status.runs if r.state == "Running"]
    held = reconcile(SPEC.model_copy(update={"suspend": True}), status, running, now=now + 10, seed=1,
                     options=FAST).status
    assert held.run_counts.suspended == 2 and held.run_counts.running == 0
    ov = build_overview(held, name="tiny", spec=SPEC, progress=None, now=now + 10)
    assert ov.suspended and ov.eta_s is None and "while suspended" in ov.eta_text()
    assert ov.runs_total == before.runs_total and "0 running, 2 suspended" in ov.runs_text()
    assert held.display.runs == status.display.runs


def test_campaign_eta_shrinks_as_runs_finish_and_ends_with_the_campaign(journey) -> None:
    early, t0 = at(journey, lambda s: s.run_counts.running == 2)
    half = len(journey[-1][0].runs) // 2
    later, t1 = at(journey, lambda s: s.run_counts.succeeded >= half)
    rate = Throughput.of(early, SPEC.gpu_pool.max_concurrent_runs, 1)
    first, second = campaign_eta(early, rate, {}, t0), campaign_eta(later, Throughput.of(later, 2, 1), {}, t1)
    assert first is not None and second is not None and 0 < second < first
    done, t2 = journey[-1]
    assert done.phase == "Succeeded"
    assert campaign_eta(done, Throughput.of(done, 2, 1), {}, t2) is None
    lines = "\n".join(text_lines(build_overview(done, name="tiny", spec=SPEC, now=t2)))
    for text in ("Succeeded", "recommendation", "backtest ARE", f"({done.prediction.source})",
                 "sized by the campaign's own allocation (full)", "ended"):
        assert text in lines, lines


def test_display_strings_are_readable_at_every_stage(journey) -> None:
    planned, _ = journey[0]
    fitted, _ = at(journey, lambda s: s.law is not None and s.law.backtest_are is not None)
    done, _ = journey[-1]
    for status, _ in journey:
        shown = status.display
        assert shown is not None and shown == status_display(status)
        assert re.fullmatch(r"\d+(\.\d+)?%", shown.budget_used), shown
        assert re.fullmatch(r"\d+(\.\d+)?[KMBT]?", shown.target_params), shown
        done_runs, total = (int(x) for x in shown.runs.split("/"))
        assert 0 <= done_runs <= total
        for value in shown.model_dump().values():
            assert len(value) <= 16 and not RAW_FLOAT.search(value), shown
    assert planned.law is None and planned.display.predicted_loss == "-" == planned.display.backtest_are  # no fit
    assert fitted.display.predicted_loss == f"{fitted.prediction.loss:.3f}"
    assert fitted.display.backtest_are.endswith("%")
    assert done.display.runs == f"{len(done.runs)}/{len(done.runs)}"
    assert done.display.spent.endswith("FLOPs")  # the tiny pool is unpriced


def test_a_published_law_loss_is_shown_only_for_its_own_tokenizer_and_labelled() -> None:
    byte_level = plan_campaign(SPEC)
    assert byte_level.target.predicted_loss is None and byte_level.target.loss_basis is None
    text = target_loss_text(byte_level.target, 256)
    assert "none until the campaign's own fit" in text and "256" in text and "32,000" in text
    cluster = yaml.safe_load((ROOT / "examples" / "cluster-h100-50k.yaml").read_text())
    cluster["spec"]["model"]["vocabSize"] = 32000  # Chinchilla's own vocabulary size
    prior = plan_campaign(parse_campaign(cluster).spec).target
    assert prior.loss_basis == "prior" and prior.predicted_loss is not None
    assert "under the chinchilla-3 prior" in target_loss_text(prior, 32000)
    fitted = plan_campaign(SPEC, law=dataclasses.replace(CHINCHILLA_3, name="fitted")).target
    assert fitted.loss_basis == "fit" and "the campaign's fitted law" in target_loss_text(fitted, 256)


def flopwise(*args: str, cwd: Path) -> Result:
    """The command in-process (its output is not a terminal, so plain lines), from ``cwd``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(cli, list(args))


def test_status_and_report_commands_read_a_local_state_folder(tmp_path: Path, journey) -> None:
    status, _ = at(journey, lambda s: s.law is not None and s.run_counts.running > 0)
    state = StateDir(tmp_path / "state")
    state.save(status)
    state.save_campaign(CAMPAIGN)
    result = flopwise("status", str(tmp_path / "state"), cwd=tmp_path)  # not a terminal: plain lines
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("campaign tiny") and f"phase           {status.phase}" in out
    assert f"{status.ledger.used_percent:.1f}% of" in out and "left" in out
    running = next(r for r in status.runs if r.state == "Running")
    assert running.run_id in out and "starting" in out  # no trainer wrote progress here
    assert status.prediction.source and f"({status.prediction.source})" in out and "campaign ETA" in out
    # without an argument: the only campaign under ./flopwise-state
    (tmp_path / "flopwise-state").mkdir()
    (tmp_path / "state").rename(tmp_path / "flopwise-state" / "tiny")
    assert flopwise("status", cwd=tmp_path).output == out
    report = flopwise("report", "flopwise-state/tiny", "--out", "rep", cwd=tmp_path)
    assert report.exit_code == 0, report.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "# flopwise campaign report: tiny" in text and "campaign ETA" in text
    bad = flopwise("status", "no/such/thing", cwd=tmp_path)
    assert bad.exit_code == 2 and "NAMESPACE/NAME" in bad.output


def test_a_law_its_data_do_not_identify_is_said_wherever_it_is_shown(journey) -> None:
    """The plain progress line, the overview's law row and the recommendation all say when the law is not
    identified (and a fit made while the ladder runs that it is provisional), and the recommendation what sized
    the model instead; an identified law carries no such mark."""
    from flopwise.cli.run_cmd import progress_line
    from flopwise.overview.model import recommendation_text

    fitted = [s for s, _ in journey if s.law is not None]
    assert fitted
    assert {s.law.identified for s in fitted} == {None, True}  # provisional fits, then the final one
    for status in fitted:
        ov = build_overview(status, name="tiny", spec=SPEC, progress={}, now=0.0)
        for shown in (progress_line(status), ov.law):
            assert ("provisional" in shown) == (status.law.identified is None) and "NOT IDENTIFIED" not in shown
    done = journey[-1][0]
    text = recommendation_text(done)
    assert text is not None and "not identified" not in text
    # the same status with its law marked unidentified: every place says so
    marked = done.model_copy(update={"law": done.law.model_copy(update={"identified": False})})
    assert "NOT IDENTIFIED" in progress_line(marked) and f"sized by {done.allocation.basis}" in \
        recommendation_text(marked)
