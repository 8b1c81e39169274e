"""The overview drawn with rich, for a terminal: a budget bar, the running runs with their own progress bars,
the law and the prediction, the campaign's ETA. `flopwise run` redraws it in place (rich.live.Live) as the
trainers report; `flopwise status` prints it once (or redraws it with --watch). rich is in the [local] extra:
this module is imported only where a terminal asks for it."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from flopwise.overview.model import BudgetView, Overview
from flopwise.overview.render import budget_line
from flopwise.report import fmt

BAR_WIDTH = 40
LABEL_WIDTH = len("recommendation")  # one label column above and below the runs table
PHASE_STYLE = {"Succeeded": "bold green", "Failed": "bold red"}


def budget_bar(budget: BudgetView, width: int = BAR_WIDTH) -> Text:
    """Spent (solid), reserved by running work (shaded) and left (light), to scale."""
    total = budget.flops or 1.0
    spent = min(width, round(width * budget.spent_flops / total))
    reserved = min(width - spent, round(width * budget.reserved_flops / total))
    bar = Text()
    bar.append("█" * spent, style="green")
    bar.append("▓" * reserved, style="yellow")
    bar.append("░" * (width - spent - reserved), style="grey50")
    return bar


def step_bar(step: int | None, steps: int, width: int = 12) -> Text:
    """Done (heavy) and to go (light): two glyphs, so the bar reads right without colour too (NO_COLOR, logs)."""
    filled = 0 if step is None or steps <= 0 else min(width, round(width * step / steps))
    return Text("━" * filled, style="cyan") + Text("─" * (width - filled), style="grey35")


def render(ov: Overview, *, elapsed_s: float | None = None, footer: str | None = None) -> RenderableType:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True, min_width=LABEL_WIDTH)
    head.add_column()
    head.add_row("phase", Text(ov.phase, style=PHASE_STYLE.get(ov.phase, "bold cyan"))
                 + Text(f"  {ov.message}" if ov.message and ov.ended else ""))
    if ov.budget is not None:
        head.add_row("budget", budget_bar(ov.budget) + Text(f" {ov.budget.used_percent:.1f}% used"))
        head.add_row("", Text(budget_line(ov).split(": ", 1)[-1], style="dim"))
    else:
        head.add_row("budget", "not planned yet")
    head.add_row("runs", ov.runs_text())
    parts: list[RenderableType] = [head]
    if ov.running:
        runs = Table(box=box.SIMPLE_HEAD, padding=(0, 1), expand=False)
        for name, justify in (("run", "left"), ("role", "left"), ("size", "right"), ("step", "right"),
                              ("", "left"), ("tok/s", "right"), ("ETA", "right"), ("loss", "right")):
            runs.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for run in ov.running:
            runs.add_row(run.run_id, run.role, f"{fmt.count(run.params)} {run.shape}", run.step_text(),
                         step_bar(run.step, run.steps), f"{run.tokens_per_s:,.0f}" if run.tokens_per_s else "-",
                         run.eta_text(), fmt.loss(run.loss) if run.loss is not None else "-")
        parts.append(runs)
    tail = Table.grid(padding=(0, 2))
    tail.add_column(style="bold", no_wrap=True, min_width=LABEL_WIDTH)
    tail.add_column()
    if ov.target:
        tail.add_row("target", ov.target)
    tail.add_row("law", ov.law or Text("not fitted yet", style="dim"))
    if ov.backtest_are is not None:
        tail.add_row("backtest ARE", fmt.percent(ov.backtest_are))
    if ov.prediction:
        tail.add_row("predicted loss", ov.prediction)
    if ov.recommendation:
        tail.add_row("recommendation", Text(ov.recommendation, style="bold"))
    tail.add_row("campaign ETA", ov.eta_text())
    parts.append(tail)
    if footer:
        parts.append(Text(footer, style="dim"))
    title = f"flopwise · {ov.name}" + (f" · {fmt.duration(elapsed_s)}" if elapsed_s is not None else "")
    return Panel(Group(*parts), title=title, title_align="left", box=box.ROUNDED, expand=False)
