"""`flopwise status [STATE_DIR | NAMESPACE/NAME]` and `flopwise report [STATE_DIR | NAMESPACE/NAME]`: a
campaign's one-screen summary and its full report, from a local state folder or from a cluster.

Both read the same two things, a spec and a status: locally `status.json` and `campaign.yaml` in the state
folder (plus the trainers' progress files), on a cluster the TrainingCampaign object (`kube/fetch.py`, one GET).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import TrainingCampaignStatus
from flopwise.contract import RunProgress

DEFAULT_STATE_ROOT = Path("flopwise-state")


@dataclass(frozen=True)
class Source:
    """Where a campaign was read from, and what was read."""

    name: str
    spec: TrainingCampaignSpec | None
    status: TrainingCampaignStatus
    progress: dict[str, RunProgress] | None  # None: a cluster's trainers cannot be read
    state_dir: Path | None = None  # local
    ref: str | None = None  # cluster: NAMESPACE/NAME


def _state_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/status.json"))


def resolve_local(target: str | None) -> Path | None:
    """The state folder ``target`` names, the only one under ./flopwise-state when none is named, or None when
    ``target`` is not a folder."""
    if target is None:
        if (DEFAULT_STATE_ROOT / "status.json").exists():
            return DEFAULT_STATE_ROOT
        found = _state_dirs(DEFAULT_STATE_ROOT)
        if len(found) == 1:
            return found[0]
        if not found:
            raise click.UsageError(f"no campaign state under ./{DEFAULT_STATE_ROOT}: give a state folder "
                                   "(`flopwise run --state-dir`) or NAMESPACE/NAME of a cluster campaign")
        raise click.UsageError(f"several campaigns under ./{DEFAULT_STATE_ROOT}: name one of "
                               + ", ".join(str(p) for p in found))
    path = Path(target)
    if not path.is_dir():
        return None
    if not (path / "status.json").exists():
        inside = _state_dirs(path)
        if len(inside) == 1:
            return inside[0]
        raise click.UsageError(f"{target}: no status.json here; a state folder is what `flopwise run --state-dir` "
                               "wrote" + (f" (found: {', '.join(str(p) for p in inside)})" if inside else ""))
    return path


def read_source(target: str | None, kubeconfig: str | None) -> Source:
    """A local state folder, else a cluster campaign NAMESPACE/NAME; anything else is a usage error."""
    from flopwise.kube.fetch import parse_ref

    folder = resolve_local(target)
    if folder is not None:
        return read_local(folder)
    assert target is not None
    ref = parse_ref(target)
    if ref is None:
        raise click.UsageError(f"{target}: neither a campaign state folder nor NAMESPACE/NAME of a cluster campaign")
    return read_cluster(*ref, kubeconfig=kubeconfig)


def read_local(folder: Path) -> Source:
    from flopwise.executors.local import read_progress
    from flopwise.local.state import StateDir

    state = StateDir(folder)
    try:
        status = state.load()
        campaign = state.load_campaign()
    except (OSError, ValueError) as error:
        raise click.ClickException(f"{folder}: cannot read the campaign state ({error})") from None
    progress = {r.run_id: read_progress(folder, r.run_id) for r in status.runs if r.state == "Running"}
    return Source(name=campaign.metadata.name if campaign else folder.name,
                  spec=campaign.spec if campaign else None, status=status,
                  progress={k: v for k, v in progress.items() if v is not None}, state_dir=folder)


def read_cluster(namespace: str, name: str, *, kubeconfig: str | None) -> Source:
    try:
        from flopwise.kube.fetch import fetch_campaign
    except ImportError as error:  # the kubernetes client is in the [operator] and [dev] extras
        raise click.ClickException(f"reading a cluster campaign needs the kubernetes client ({error})") from None
    found = fetch_campaign(namespace, name, kubeconfig=kubeconfig)
    return Source(name=found.name, spec=found.spec, status=found.status, progress=None, ref=found.ref)


def _rich_wanted(plain: bool) -> bool:
    from flopwise.cli.run_cmd import wants_live

    return wants_live(plain, quiet=False)


@click.command("status")
@click.argument("target", required=False, metavar="[STATE_DIR | NAMESPACE/NAME]")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None,
              help="kubeconfig for NAMESPACE/NAME (default: $KUBECONFIG or ~/.kube/config, else in-cluster)")
@click.option("--watch", "-w", is_flag=True, help="redraw until the campaign ends (Ctrl-C to leave)")
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="seconds between redraws with --watch")
@click.option("--plain", is_flag=True, help="plain lines even on a terminal")
def status(target: str | None, kubeconfig: str | None, watch: bool, interval: float, plain: bool) -> None:
    """One screen about a campaign: phase, budget, running runs, law, prediction, ETA.

    TARGET is a local state folder (default: the one under ./flopwise-state) or NAMESPACE/NAME of a
    TrainingCampaign on the cluster."""
    from flopwise.overview.model import build_overview

    def overview():
        source = read_source(target, kubeconfig)
        return build_overview(source.status, name=source.name, spec=source.spec, progress=source.progress,
                              now=time.time())

    if not _rich_wanted(plain):
        if watch:
            raise click.UsageError("--watch needs a terminal; without one, run `flopwise status` when you look")
        from flopwise.overview.render import text_lines

        click.echo("\n".join(text_lines(overview())))
        return
    from rich.console import Console
    from rich.live import Live

    from flopwise.overview.live import render

    console = Console()
    current = overview()
    if not watch:
        console.print(render(current))
        return
    try:
        with Live(render(current), console=console, auto_refresh=False) as live:
            while not current.ended:
                time.sleep(interval)
                current = overview()
                live.update(render(current, footer="Ctrl-C to leave (the campaign goes on)"), refresh=True)
    except KeyboardInterrupt:
        sys.exit(130)


@click.command("report")
@click.argument("target", required=False, metavar="[STATE_DIR | NAMESPACE/NAME]")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None,
              help="kubeconfig for NAMESPACE/NAME (default: $KUBECONFIG or ~/.kube/config, else in-cluster)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="folder for report.md and its figures (default: STATE_DIR/report, or "
                   "flopwise-reports/NAMESPACE/NAME for a cluster campaign)")
def report(target: str | None, kubeconfig: str | None, out_dir: str | None) -> None:
    """Write a campaign's Markdown report and its figures, as `flopwise run` does, from its spec and status
    (a finished campaign or one still running)."""
    from flopwise.cli.run_cmd import write_report

    source = read_source(target, kubeconfig)
    if source.spec is None:
        raise click.ClickException(f"{source.state_dir}: no campaign.yaml beside the status (written by `flopwise "
                                   "run` since this version): run the campaign with --resume once to save it")
    if out_dir is None:
        out = (source.state_dir / "report") if source.state_dir is not None else \
            Path("flopwise-reports") / (source.ref or source.name)
    else:
        out = Path(out_dir)
    path = write_report(source.spec, source.status, out, source.ref or source.name)
    if path is not None:
        click.echo(f"report: {path}")


COMMANDS = (status, report)
