"""`flopwise run CAMPAIGN.yaml`: a whole campaign on this machine, training runs as local processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from flopwise.api.status import TrainingCampaignStatus


def progress_line(status: TrainingCampaignStatus) -> str:
    counts = status.run_counts
    done = counts.succeeded + counts.failed + counts.lost
    parts = [f"[{status.phase}]", f"runs {done} done ({counts.failed + counts.lost} failed), {counts.running} running,"
             f" {counts.pending} pending", f"budget {status.ledger.used_percent:.0f}% used"]
    if status.law is not None:
        law = status.law
        parts.append(f"law E={law.E:.3g} A={law.A:.3g} B={law.B:.3g} α={law.alpha:.3f} β={law.beta:.3f} "
                     f"({law.mode}, {law.n_points} pts)")
    if status.prediction is not None:
        p = status.prediction
        interval = f" [{p.loss_low:.3f}, {p.loss_high:.3f}]" if p.loss_low is not None else ""
        parts.append(f"predicted loss {p.loss:.3f}{interval}")
    return " | ".join(parts)


@click.command("run")
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="where the campaign keeps its status, runs and report (default: flopwise-state/NAME)")
@click.option("--resume", is_flag=True, help="continue the campaign in --state-dir after an interruption")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads per run")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="print only the final result")
def command(campaign_file: str, state_dir: str | None, resume: bool, threads: int | None, device: str,
            quiet: bool) -> None:
    """Run a whole campaign locally: ladder, fit, Round 1, Round 2, report."""
    from flopwise.api.load import load_campaign
    from flopwise.local.runner import LocalCampaign, check_dataset

    campaign = load_campaign(campaign_file)
    root = Path(state_dir or Path("flopwise-state") / campaign.metadata.name)
    data_path = check_dataset(campaign, Path.cwd())
    local = LocalCampaign(campaign, root, data_path=data_path, threads_per_run=threads, device=device)
    status = local.load_or_new(resume)
    last = [""]
    started = time.monotonic()

    def show(current: TrainingCampaignStatus) -> None:
        line = progress_line(current)
        if not quiet and line != last[0]:
            click.echo(f"{time.monotonic() - started:7.1f}s {line}")
            last[0] = line

    click.echo(f"campaign {campaign.metadata.name}: state in {root}" + (" (resumed)" if status else ""))
    try:
        status = local.run(status, on_update=show)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: running trainers go on; continue with "
                   f"`flopwise run {campaign_file} --state-dir {root} --resume`", err=True)
        sys.exit(130)
    report = write_report(campaign, status, root / "report")
    click.echo(progress_line(status))
    if status.recommendation is not None:
        r = status.recommendation
        ci = f" [{r.loss_low:.3f}, {r.loss_high:.3f}]" if r.loss_low is not None else ""
        are = f", backtest ARE {r.backtest_are:.1%}" if r.backtest_are is not None else ""
        loss = f"{r.predicted_loss:.3f}" if r.predicted_loss is not None else "n/a"
        click.echo(f"recommendation: {r.params:,} params ({r.shape.n_layer}×{r.shape.d_model}) on {r.tokens:,} "
                   f"tokens, lr {r.learning_rate:.3g}, warmup {r.warmup_fraction:g}, predicted loss {loss}{ci}{are}")
    if report is not None:
        click.echo(f"report: {report}")
    if status.phase == "Failed":
        raise click.ClickException(f"campaign failed: {status.message}")


def write_report(campaign, status: TrainingCampaignStatus, out_dir: Path) -> Path | None:
    try:
        from flopwise.report import write_report as render
    except ImportError as error:  # matplotlib is in the [local] extra
        click.echo(f"no report: {error} (install flopwise[local])", err=True)
        return None
    return render(campaign.spec, status, out_dir, campaign.metadata.name)
