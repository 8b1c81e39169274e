"""The status's display strings (`status.display`), what `kubectl get tc` prints: a pure function of the status
(no clock, so an unchanged campaign writes an unchanged status and the operator makes no request)."""

from __future__ import annotations

from flopwise.api.status import StatusDisplay, TrainingCampaignStatus
from flopwise.overview.eta import remaining_by_phase
from flopwise.report import fmt

NONE_YET = "-"


def percent_text(value: float) -> str:
    """A percentage to one decimal ('9.4%'), and small ones still visible ('0.03%')."""
    if 0 < value < 0.1:
        return f"{value:.2g}%"
    return f"{value:.1f}%"


def status_display(status: TrainingCampaignStatus) -> StatusDisplay:
    counts = status.run_counts
    done = counts.succeeded + counts.failed + counts.lost
    total = done + counts.running + sum(len(v) for v in remaining_by_phase(status).values())
    ledger = status.ledger
    priced = (ledger.budget_usd is not None or ledger.spent_usd > 0
              or (status.plan is not None and status.plan.budget_usd is not None))
    law = status.law
    return StatusDisplay(
        budget_used=percent_text(ledger.used_percent),
        target_params=fmt.count(status.target_params) if status.target_params else NONE_YET,
        predicted_loss=f"{status.prediction.loss:.3f}" if status.prediction is not None else NONE_YET,
        runs=f"{done}/{total}",
        spent=fmt.usd(ledger.spent_usd) if priced else f"{ledger.spent_flops:.2g} FLOPs",
        backtest_are=fmt.percent(law.backtest_are) if law is not None and law.backtest_are is not None else NONE_YET,
    )
