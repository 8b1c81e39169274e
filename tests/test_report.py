"""The campaign report: Markdown + PNGs from a hand-built status (no trainer), and graceful with missing pieces."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flopwise.api.load import load_campaign
from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import (
    Charge,
    CurveSample,
    FittedLaw,
    LedgerTotals,
    NoiseFloorStatus,
    PartialCheckStatus,
    Plan,
    PlannedRun,
    Prediction,
    Recommendation,
    RunRecord,
    RunResult,
    TrainingCampaignStatus,
    TransferStatus,
    TuningStatus,
    WidthOptimum,
)
from flopwise.planning.laws import ScalingLaw
from flopwise.planning.plan import plan_campaign
from flopwise.report import plots, write_report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = ("loss_vs_compute.png", "ladder_curves.png", "round1_sweep.png", "budget_burndown.png",
             "round2_curves.png", "lr_transfer.png", "isoflop_profiles.png")
TRUE_LAW = ScalingLaw(E=1.05, A=21.0, B=24.0, alpha=0.36, beta=0.31)
OTHER_LAW = ScalingLaw(E=0.8, A=35.0, B=12.0, alpha=0.30, beta=0.27)


@pytest.fixture(scope="module")
def spec() -> TrainingCampaignSpec:
    return load_campaign(ROOT / "examples" / "quickstart.yaml").spec


@pytest.fixture(scope="module")
def plan(spec: TrainingCampaignSpec) -> Plan:
    return plan_campaign(spec)


def _record(planned: PlannedRun, *, law: ScalingLaw, lr: float, warmup: float, clock: list[float],
            loss_offset: float = 0.0, diverged: bool = False, best_at: float = 1.0) -> RunRecord:
    """A finished run whose eval curve follows ``law`` (plus ``loss_offset``); times advance ``clock``."""
    n, d = planned.params, planned.tokens
    tokens = [max(1, round(d * f)) for f in (1 / 32, 1 / 16, 1 / 8, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)]
    curve = [CurveSample(tokens=t, val_loss=law.loss(n, t) + loss_offset) for t in tokens]
    if best_at < 1.0:  # overfits after best_at: the loss rises again
        best_tokens = round(d * best_at)
        curve = [CurveSample(tokens=c.tokens, val_loss=c.val_loss + max(0.0, c.tokens / d - best_at) * 0.3)
                 for c in curve]
    else:
        best_tokens = d
    elapsed = planned.flops / 3e10
    launched = clock[0]
    clock[0] += elapsed + 5.0
    spent = Charge(flops=planned.flops, gpu_hours=planned.gpu_hours, usd=planned.usd)
    if diverged:
        result = RunResult(status="diverged", exit_reason="loss became NaN", tokens=d // 3, steps=planned.steps // 3,
                           flops=planned.flops / 3, curve=curve[:3], tokens_per_s=d / elapsed, mfu=0.28,
                           elapsed_s=elapsed / 3)
        return RunRecord(run_id=planned.run_id, planned_id=planned.run_id, role=planned.role, state="Failed",
                         shape=planned.shape, params=n, tokens=d, batch_size=planned.batch_size, steps=planned.steps,
                         learning_rate=lr, warmup_fraction=warmup, spent=spent, result=result, reason="diverged",
                         launched_at=launched, finished_at=launched + elapsed / 3, level=planned.level)
    final = curve[-1].val_loss
    best = min(c.val_loss for c in curve)
    result = RunResult(status="succeeded", tokens=d, steps=planned.steps, flops=planned.flops,
                       final_val_loss=final, best_val_loss=best, best_tokens=best_tokens,
                       best_step=round(planned.steps * best_tokens / d), tokens_per_s=d / elapsed, mfu=0.3,
                       elapsed_s=elapsed, curve=curve)
    return RunRecord(run_id=planned.run_id, planned_id=planned.run_id, role=planned.role, state="Succeeded",
                     shape=planned.shape, params=n, tokens=d, batch_size=planned.batch_size, steps=planned.steps,
                     learning_rate=lr, warmup_fraction=warmup, spent=spent, result=result, launched_at=launched,
                     finished_at=launched + elapsed, level=planned.level)


def _fitted(law: ScalingLaw) -> FittedLaw:
    """What a bootstrapped fit of ``law`` would report: slightly off values and 95% intervals around them."""
    values = {"E": law.E * 1.013, "A": law.A * 0.962, "B": law.B * 1.041, "alpha": law.alpha * 0.987,
              "beta": law.beta * 1.012}
    return FittedLaw(**values, mode="full", n_points=45, n_runs=5, input_runs=5,
                     ci_low={k: v * 0.9 for k, v in values.items()}, ci_high={k: v * 1.12 for k, v in values.items()},
                     backtest_are=0.061)


def full_status(plan: Plan, law: ScalingLaw = TRUE_LAW) -> TrainingCampaignStatus:
    plan = plan.model_copy(deep=True)
    clock = [1_700_000_000.0]
    base_lr, warmup = 0.01, 0.05
    runs = [_record(p, law=law, lr=base_lr, warmup=warmup, clock=clock) for p in plan.ladder.runs]
    for p in plan.round1.runs:
        assert p.learning_rate is not None
        offset = 0.08 * math.log2(p.learning_rate / 0.008) ** 2
        runs.append(_record(p, law=law, lr=p.learning_rate, warmup=p.warmup_fraction or warmup, clock=clock,
                            loss_offset=offset, diverged=p.learning_rate > 0.03))
    best_lr = 0.0083
    for i, p in enumerate(plan.round2.runs):
        runs.append(_record(p, law=law, lr=best_lr * (1.0 if i == 0 else 0.5), warmup=warmup, clock=clock,
                            loss_offset=0.01 * i, best_at=0.85 if i == 0 else 1.0))
    fitted = _fitted(law)
    fit = ScalingLaw(E=fitted.E, A=fitted.A, B=fitted.B, alpha=fitted.alpha, beta=fitted.beta)
    target = plan.target
    predicted = fit.loss(target.params, target.tokens)
    prediction = Prediction(params=target.params, tokens=target.tokens, loss=predicted, loss_low=predicted - 0.07,
                            loss_high=predicted + 0.09)
    spent = sum(r.spent.flops for r in runs)
    ledger = LedgerTotals(budget_flops=plan.budget_flops, spent_flops=spent, reserved_flops=0.0,
                          used_percent=100 * spent / plan.budget_flops, spent_gpu_hours=sum(r.spent.gpu_hours
                                                                                            for r in runs))
    tuning = TuningStatus(round1_best_lr=best_lr, round1_best_warmup=warmup, round1_best_loss=1.9,
                          round1_note="best grid point lr 0.01 (loss 1.9012); parabola in log-LR puts the optimum "
                          "at 0.0083", round2_verdict="run length fits: best checkpoints at 85%–100% of the runs",
                          round2_best_fraction=1.0, transfer=TransferStatus(
                              verdict="does-not-hold", parameterization="sp", message="transfer does not hold",
                              widths=[WidthOptimum(d_model=16, params=16528, learning_rate=0.024, lr_low=0.02,
                                                   lr_high=0.029, points=5),
                                      WidthOptimum(d_model=64, params=213568, learning_rate=best_lr, lr_low=0.0075,
                                                   lr_high=0.0092, points=5, on_edge=None)],
                              drift=2.9, tolerance=2.0, coefficient=1.38, exponent=-0.4171, exponent_low=-0.5012,
                              exponent_high=-0.3329, target_params=target.params, learning_rate=0.00571,
                              lr_low=0.0049, lr_high=0.0066))
    floor = NoiseFloorStatus(seeds=3, params=plan.ladder.runs[0].params, losses=[2.51, 2.53, 2.49], mean_loss=2.51,
                             sd=0.02, floor_are=0.00636, floor_are_high=0.04, band_are=0.0156, backtest_are=0.061,
                             within_noise=False, message="3 seeds")
    check = PartialCheckStatus(fraction=0.3, stop_step=90, tokens=100_000, observed_loss=2.9, loss_before=predicted,
                               loss_after=predicted + 0.0421, change=0.0421, final_loss=predicted + 0.05,
                               message="refitted with the final run's curve")
    recommendation = Recommendation(shape=target.shape, params=target.params, tokens=target.tokens,
                                    learning_rate=best_lr, warmup_fraction=warmup, schedule="cosine", batch_size=16,
                                    flops=target.flops, gpu_hours=target.gpu_hours, usd=target.usd,
                                    predicted_loss=predicted, loss_low=prediction.loss_low,
                                    loss_high=prediction.loss_high, backtest_are=fitted.backtest_are, law="fitted")
    return TrainingCampaignStatus(phase="Succeeded", plan=plan, ledger=ledger, law=fitted, prediction=prediction,
                                  target_params=target.params, predicted_loss=predicted, runs=runs, tuning=tuning,
                                  recommendation=recommendation, measured_mfu=0.3, noise_floor=floor,
                                  partial_check=check,
                                  message="campaign finished: recommendation ready")


def _links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


@pytest.fixture(scope="module")
def full_report(spec, plan, tmp_path_factory) -> tuple[TrainingCampaignStatus, Path]:
    status = full_status(plan)
    out = tmp_path_factory.mktemp("full") / "out"
    return status, write_report(spec, status, out, "quickstart")


def test_full_report_writes_every_plot_and_section(full_report):
    status, path = full_report
    assert path.name == "report.md" and path.parent.name == "out"
    text = path.read_text(encoding="utf-8")
    for name in ALL_PLOTS:
        png = path.parent / name
        assert png.exists(), name
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert 10_000 < len(data) < 2_000_000, (name, len(data))
        assert f"]({name})" in text, name  # embedded with a relative link
    assert sorted(_links(text)) == sorted(ALL_PLOTS)
    # the fitted law, named and formatted as in the status (4 significant digits), with its intervals
    law = status.law
    assert law is not None
    for key, label in (("E", "| E |"), ("A", "| A |"), ("B", "| B |"), ("alpha", "α (alpha)"), ("beta", "β (beta)")):
        value = getattr(law, key)
        assert label in text
        assert f"{value:.4g}" in text, key
        assert f"[{law.ci_low[key]:.4g}, {law.ci_high[key]:.4g}]" in text, key
    assert "fit mode **full**" in text and "45 points" in text
    # the recommendation
    rec = status.recommendation
    assert rec is not None
    assert "## Recommendation" in text
    assert f"{rec.shape.n_layer} layers × {rec.shape.d_model} width × {rec.shape.n_head} heads" in text
    assert f"{rec.params:,}" in text and f"{rec.tokens:,}" in text
    assert f"{rec.predicted_loss:.4f}" in text
    assert "6.1%" in text and "< 10% target" in text
    # the rest
    assert "## Plan vs. actual" in text and "## Tuning" in text and "## Runs" in text
    assert status.tuning.round1_note in text and status.tuning.round2_verdict in text
    assert "round1-04" in text and "diverged" in text
    assert "## Limits" in text and "Wei et al. 2022" in text and "inference" in text and "extrapolated" in text


def test_plots_are_drawn_from_the_data(spec, plan, full_report, tmp_path):
    a = full_report[1].parent
    write_report(spec, full_status(plan, OTHER_LAW), tmp_path, "other")
    for name in ("loss_vs_compute.png", "ladder_curves.png", "round1_sweep.png", "round2_curves.png"):
        assert (a / name).read_bytes() != (tmp_path / name).read_bytes(), name
    assert f"{_fitted(OTHER_LAW).E:.4g}" in (tmp_path / "report.md").read_text()


def test_ladder_in_progress_renders_what_exists(spec, plan, tmp_path):
    status = full_status(plan)
    status.phase, status.recommendation, status.tuning = "Ladder", None, TuningStatus()
    status.runs = status.runs[:3]
    running = status.runs[2]
    running.state, running.result, running.finished_at = "Running", None, None
    running.reserved, running.spent = running.spent, Charge()
    status.ledger.reserved_flops = running.reserved.flops
    text = write_report(spec, status, tmp_path, "quickstart").read_text()
    assert sorted(_links(text)) == ["budget_burndown.png", "isoflop_profiles.png", "ladder_curves.png",
                                    "loss_vs_compute.png"]
    assert "Recommendation: not available yet" in text and f"{plan.target.params:,}" in text
    assert "Round 1: not available" in text and f"| {running.run_id} | ladder |" in text and "Running" in text


def test_plan_only_status_renders(spec, plan, tmp_path):
    status = TrainingCampaignStatus(phase="Planned", plan=plan,
                                    ledger=LedgerTotals(budget_flops=plan.budget_flops))
    text = write_report(spec, status, tmp_path, "quickstart").read_text()
    assert "not available" in text
    assert "## Recommendation" in text and "## Fitted scaling law" in text and "## Limits" in text
    assert f"{plan.target.params:,}" in text  # the planned target stands in for the recommendation
    assert _links(text) == []
    assert not list(tmp_path.glob("*.png"))


def test_empty_status_renders(spec, tmp_path):
    text = write_report(spec, TrainingCampaignStatus(), tmp_path / "new" / "dir", "empty").read_text()
    assert "phase **Pending**" in text and "not available" in text and "## Limits" in text


def test_failed_runs_and_missing_values_render(spec, plan, tmp_path):
    status = full_status(plan)
    for record in status.runs:  # everything failed: no curves, no losses, no timings
        record.state, record.result, record.reason = "Failed", None, "pod evicted | node lost\nretrying"
        record.finished_at = None
    status.runs[0].result = RunResult(status="failed", exit_reason="OOM")
    status.runs[1].state = "Lost"
    status.law = FittedLaw(E=1.2, A=0.0, B=5.0, alpha=0.0, beta=0.3, mode="fixed-ratio")  # degenerate, no CI
    status.prediction = Prediction(params=1e5, tokens=1e6, loss=2.0)
    status.recommendation = status.recommendation.model_copy(
        update={"predicted_loss": None, "loss_low": None, "loss_high": None, "backtest_are": None})
    status.tuning = TuningStatus()
    text = write_report(spec, status, tmp_path, "broken").read_text()
    assert "not available" in text and "`fixed-ratio` mode" in text
    assert "pod evicted \\| node lost retrying" in text  # table-safe
    for link in _links(text):
        assert (tmp_path / link).read_bytes()[:8] == PNG_MAGIC


def test_report_without_matplotlib(spec, plan, tmp_path, monkeypatch):
    def no_matplotlib(*args, **kwargs):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(plots, "_figure", no_matplotlib)
    text = write_report(spec, full_status(plan), tmp_path, "quickstart").read_text()
    assert "matplotlib is not installed" in text and _links(text) == []
    assert "## Recommendation" in text


def test_import_does_not_load_matplotlib():
    code = "import sys, flopwise.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_trust_section_shows_transfer_noise_floor_and_partial_check(full_report):
    status, path = full_report
    text = path.read_text(encoding="utf-8")
    assert "## Trust at the target size" in text and "Verdict: **does-not-hold** (sp)" in text
    assert "| 16 | 16,528 (16.5K) | 0.024 | [0.02, 0.029] |" in text  # per-width optimum with its interval
    assert "dModel^-0.417 (exponent 95% interval [-0.501, -0.333];" in text
    assert "lr **0.00571** [0.0049, 0.0066]" in text
    assert "![Best learning rate vs width across proxy widths](lr_transfer.png)" in text
    # the noise floor next to the backtest ARE (recommendation table and law section), with its verdict
    assert text.count("0.64% ARE from 3 seeds") >= 2 and "above seed noise" in text
    status.noise_floor.within_noise = True
    from flopwise.report.markdown import floor_reading

    assert "not distinguishable from seed noise" in floor_reading(status)
    status.noise_floor.within_noise = False
    # the partial check: before, after, change and what the run reached
    check = status.partial_check
    assert f"| before (ladder only) | {check.loss_before:.4f} |" in text
    assert f"{check.loss_after:.4f}" in text and "+0.0421" in text and f"{check.final_loss:.4f}" in text
    assert "emergent" in text.lower() or "Emergent" in text
