"""`flopwise run CAMPAIGN.yaml`: a whole campaign on this machine, training runs as local processes.

On a terminal it draws the campaign live (rich): phase, budget bar, each running run's step, speed and ETA from
its trainer's progress file, the law and the prediction, the campaign's ETA. Elsewhere (CI, logs, pipes) it
prints one plain line whenever something changes. Ctrl-C stops the runs cleanly (SIGTERM: each trainer
checkpoints at its next step boundary) and prints the command that continues the campaign from there.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import TrainingCampaignStatus
from flopwise.overview.model import not_identified, recommendation_text

LIVE_FOOTER = "Ctrl-C stops the runs (each checkpoints) and prints the command that resumes"


def progress_line(status: TrainingCampaignStatus) -> str:
    counts = status.run_counts
    done = counts.succeeded + counts.failed + counts.lost
    held = f", {counts.suspended} suspended" if counts.suspended else ""  # spec.suspend (no Kueue queue locally)
    parts = [f"[{status.phase}]", f"runs {done} done ({counts.failed + counts.lost} failed), {counts.running} running"
             f"{held}, {counts.pending} pending", f"budget {status.ledger.used_percent:.0f}% used"]
    if status.law is not None:
        law = status.law
        parts.append(f"law E={law.E:.3g} A={law.A:.3g} B={law.B:.3g} α={law.alpha:.3f} β={law.beta:.3f} "
                     f"({law.mode}, {law.n_points} pts{not_identified(law)})")
    if status.prediction is not None:
        p = status.prediction
        interval = f" [{p.loss_low:.3f}, {p.loss_high:.3f}]" if p.loss_low is not None else ""
        parts.append(f"predicted loss {p.loss:.3f}{interval}")
    return " | ".join(parts)


def resume_command(campaign_file: str, root: Path, threads: int | None, device: str) -> str:
    """The exact command that continues this campaign, spelled as this one was started."""
    program = sys.argv[0] if Path(sys.argv[0]).name == "flopwise" else None
    words = [program] if program else [sys.executable, "-m", "flopwise"]
    words += ["run", campaign_file, "--state-dir", str(root), "--resume"]
    if threads is not None:
        words += ["--threads", str(threads)]
    if device != "auto":
        words += ["--device", device]
    return shlex.join(words)


class PlainView:
    """One timestamped line whenever the campaign's summary line changes."""

    def __init__(self, quiet: bool):
        self.quiet, self.last, self.started = quiet, "", time.monotonic()

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, status: TrainingCampaignStatus) -> None:
        line = progress_line(status)
        if not self.quiet and line != self.last:
            click.echo(f"{time.monotonic() - self.started:7.1f}s {line}")
            self.last = line


class LiveView:
    """The overview redrawn in place as the campaign and its trainers report."""

    def __init__(self, local: Any, name: str):
        from rich.console import Console
        from rich.live import Live

        self.local, self.name, self.started = local, name, time.monotonic()
        self.live = Live(console=Console(), auto_refresh=False, redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.live.stop()

    def update(self, status: TrainingCampaignStatus) -> None:
        from flopwise.overview.live import render
        from flopwise.overview.model import build_overview

        overview = build_overview(status, name=self.name, spec=self.local.campaign.spec,
                                  progress=self.local.progress(status), now=time.time())
        footer = None if overview.ended else LIVE_FOOTER
        self.live.update(render(overview, elapsed_s=time.monotonic() - self.started, footer=footer), refresh=True)


def wants_live(plain: bool, quiet: bool) -> bool:
    """A live display only for a person at a terminal (not CI, logs or pipes), and only when rich is there."""
    if plain or quiet or not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return False
    try:
        import rich  # noqa: F401 - the [local] extra
    except ImportError:
        return False
    return True


@click.command("run")
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="where the campaign keeps its status, runs and report (default: flopwise-state/NAME)")
@click.option("--resume", is_flag=True, help="continue the campaign in --state-dir after an interruption")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads per run")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="print only the final result")
@click.option("--plain", is_flag=True, help="plain progress lines even on a terminal (no live display)")
def command(campaign_file: str, state_dir: str | None, resume: bool, threads: int | None, device: str,
            quiet: bool, plain: bool) -> None:
    """Run a whole campaign locally: ladder, fit, Round 1, Round 2, report."""
    from flopwise.api.load import load_campaign
    from flopwise.local.runner import LocalCampaign, check_dataset

    campaign = load_campaign(campaign_file)
    root = Path(state_dir or Path("flopwise-state") / campaign.metadata.name)
    data_path = check_dataset(campaign, Path.cwd())
    local = LocalCampaign(campaign, root, data_path=data_path, threads_per_run=threads, device=device)
    status = local.load_or_new(resume)
    resume_with = resume_command(campaign_file, root, threads, device)
    click.echo(f"campaign {campaign.metadata.name}: state in {root}" + (" (resumed)" if status else ""))

    stop = threading.Event()

    def on_sigint(_signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        view = LiveView(local, campaign.metadata.name) if wants_live(plain, quiet) else PlainView(quiet)
        with view:
            status = local.run(status, on_update=view.update, stop=stop)
        if stop.is_set() and status.phase not in ("Succeeded", "Failed"):
            interrupted(local, status, resume_with)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: runs still going keep training; `--resume` adopts them. Continue with:\n"
                   f"  {resume_with}", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, previous)
    report = write_report(campaign.spec, status, root / "report", campaign.metadata.name)
    click.echo(progress_line(status))
    recommended = recommendation_text(status)
    if recommended is not None:
        click.echo(f"recommendation: {recommended}")
    if report is not None:
        click.echo(f"report: {report}")
    if status.phase == "Failed":
        raise click.ClickException(f"campaign failed: {status.message}")


def interrupted(local: Any, status: TrainingCampaignStatus, resume_with: str) -> None:
    """Ctrl-C: stop the running trainers (each checkpoints), say what happened and how to continue; exit 130."""
    running = [r.run_id for r in status.runs if r.state == "Running"]
    if running:
        click.echo(f"\nCtrl-C: stopping {len(running)} run{'s' if len(running) > 1 else ''} ({', '.join(running)}); "
                   "each checkpoints at its next step (Ctrl-C again to leave them running)", err=True)
        stopped, alive = local.interrupt(status)
        if stopped:
            click.echo(f"stopped and checkpointed: {', '.join(stopped)}", err=True)
        if alive:
            click.echo(f"still stopping: {', '.join(alive)} (`--resume` adopts them)", err=True)
    else:
        click.echo("\nCtrl-C: no run was running", err=True)
    click.echo(f"the campaign's state is in {local.state.root}; continue it with:\n  {resume_with}", err=True)
    sys.exit(130)


def write_report(spec: TrainingCampaignSpec, status: TrainingCampaignStatus, out_dir: Path, name: str) -> Path | None:
    try:
        from flopwise.report import write_report as render
    except ImportError as error:  # matplotlib is in the [local] extra
        click.echo(f"no report: {error} (install flopwise[local])", err=True)
        return None
    return render(spec, status, out_dir, name)
