"""The overview as plain lines (logs, pipes, `flopwise status` off a terminal); the report's opening paragraph
reads the same model (report/markdown.py)."""

from __future__ import annotations

from flopwise.overview.model import Overview, RunView
from flopwise.report import fmt


def budget_line(ov: Overview) -> str:
    b = ov.budget
    if b is None:
        return "not planned yet"
    forecast = f"; forecast {fmt.usd(b.forecast_usd)}" if b.forecast_usd is not None else ""
    return (f"{b.used_percent:.1f}% of {b.total_text()} used: spent {b.spent_text()}, reserved {b.reserved_text()}, "
            f"left {b.left_text()}{forecast}")


def run_line(run: RunView) -> str:
    speed = f"{run.tokens_per_s:,.0f} tok/s" if run.tokens_per_s else "- tok/s"
    loss = f"loss {fmt.loss(run.loss)}" if run.loss is not None else "loss -"
    return (f"{run.run_id} ({run.role}, {fmt.count(run.params)} params, {run.shape}, lr {fmt.lr(run.learning_rate)}): "
            f"step {run.step_text()}, {speed}, ETA {run.eta_text()}, {loss}")


def fields(ov: Overview) -> list[tuple[str, str]]:
    """(label, text) pairs in display order: what every rendering shows."""
    rows = [("phase", ov.phase + (f" — {ov.message}" if ov.message and ov.ended else "")),
            ("budget", budget_line(ov)), ("runs", ov.runs_text())]
    rows += [("running", run_line(run)) for run in ov.running]
    if ov.target:
        rows.append(("target", ov.target))
    rows.append(("law", ov.law or "not fitted yet"))
    if ov.backtest_are is not None:
        rows.append(("backtest ARE", fmt.percent(ov.backtest_are)))
    if ov.prediction:
        rows.append(("predicted loss", ov.prediction))
    if ov.recommendation:
        rows.append(("recommendation", ov.recommendation))
    rows.append(("campaign ETA", ov.eta_text()))
    return rows


def text_lines(ov: Overview) -> list[str]:
    width = max(len(label) for label, _ in fields(ov))
    return [f"campaign {ov.name}"] + [f"  {label:<{width}}  {text}" for label, text in fields(ov)]

