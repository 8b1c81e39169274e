"""What the engine concludes from finished runs: the fitted law, Round 1's best point, Round 2's verdict.

Pure functions of run records; the fitting itself is `flopwise.fitting` (Hoffmann/Epoch objective).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flopwise.api.status import FittedLaw, Prediction, RunRecord
from flopwise.fitting.backtest import backtest
from flopwise.fitting.bootstrap import bootstrap
from flopwise.fitting.fit import HOFFMANN_GRID, FitResult, StartGrid, fit_points
from flopwise.fitting.hygiene import clean
from flopwise.fitting.points import FitInputError, FitPoints
from flopwise.planning.laws import ScalingLaw

EARLY_FRACTION = 0.5
"""Each run's checkpoints before this fraction of its own tokens are dropped (the Hitchhiker's guide: early
checkpoints mislead). The guide's cut is absolute (1e10 tokens for OPT/Pythia), because its families share one
early transient; a campaign's runs differ in length by orders of magnitude, so the cut is relative to each run,
which also drops a small model's initial plateau (at byte level, the unigram phase)."""
EARLY_BEST_FRACTION = 0.10  # playbook: best step always in the first 10% → too many steps
LATE_BEST_FRACTION = 0.75  # playbook: best step in the last 25% → train longer


def finished(records: list[RunRecord], role: str) -> list[RunRecord]:
    return [r for r in records if r.role == role and r.state == "Succeeded" and r.result is not None]


def ladder_points(records: list[RunRecord]) -> FitPoints:
    """Every evaluation of every finished ladder run is a point (the Hitchhiker's guide: intermediate
    checkpoints are extra models at no cost); hygiene drops the early ones later."""
    params, tokens, losses, runs = [], [], [], []
    for record in finished(records, "ladder"):
        assert record.result is not None
        curve = [(p.tokens, p.val_loss) for p in record.result.curve if p.tokens > 0 and math.isfinite(p.val_loss)]
        if record.result.final_val_loss is not None and (not curve or curve[-1][0] < record.result.tokens):
            curve.append((record.result.tokens, record.result.final_val_loss))
        for t, loss in curve:
            params.append(record.params)
            tokens.append(t)
            losses.append(loss)
            runs.append(record.run_id)
    return FitPoints.from_arrays(params, tokens, losses, runs, validate=False)


def drop_early_per_run(points: FitPoints, fraction: float) -> FitPoints:
    """Keep each run's points at or past ``fraction`` of that run's final tokens."""
    final = {run: points.tokens[points.run == run].max() for run in points.run_ids()}
    keep = np.array([t >= fraction * final[r] for t, r in zip(points.tokens, points.run, strict=True)], dtype=bool)
    return points.subset(keep)


@dataclass(frozen=True)
class LadderFit:
    law: ScalingLaw
    status: FittedLaw
    fit: FitResult
    points: FitPoints
    weights: np.ndarray | None
    bootstrap_laws: list[ScalingLaw]


def fit_ladder(records: list[RunRecord], *, resamples: int = 0, seed: int = 0, with_backtest: bool = False,
               grid: StartGrid = HOFFMANN_GRID) -> LadderFit:
    """Fit L(N, D) to the ladder. Raises FitInputError when there is not yet enough to fit.

    With ``with_backtest``, the fit mode is chosen by evidence rather than by point count alone: the full
    five-parameter fit and the borrowed-exponent fit (Epoch's α, β) are each fitted without the largest run
    and scored on it; the mode with the lower held-out ARE is refitted on everything, and its ARE is the
    campaign's trust figure. Tiny ladders often cannot pin five parameters, and this says so with numbers.
    """
    raw = ladder_points(records)
    if len(raw) == 0:
        raise FitInputError("no finished ladder run yet")
    cleaned = clean(drop_early_per_run(raw, EARLY_FRACTION), min_tokens=0.0)
    mode, are = "auto", None
    if with_backtest and cleaned.points.n_distinct_sizes() >= 4:
        scores = {}
        for candidate in ("full", "borrowed"):
            try:
                with np.errstate(all="ignore"):
                    scores[candidate] = backtest(cleaned.points, holdout=1, balance=True, mode=candidate,
                                                 grid=grid).are
            except FitInputError:
                continue
        finite = {m: v for m, v in scores.items() if math.isfinite(v)}
        if finite:
            mode = min(finite, key=finite.get)
            are = finite[mode]
    with np.errstate(all="ignore"):
        fit = fit_points(cleaned.points, weights=cleaned.weights, mode=mode, grid=grid)  # type: ignore[arg-type]
    law = fit.law
    ci_low: dict[str, float] = {}
    ci_high: dict[str, float] = {}
    laws: list[ScalingLaw] = []
    if resamples > 0:
        with np.errstate(all="ignore"):
            boot = bootstrap(cleaned.points, fit, n_resamples=resamples, weights=cleaned.weights, seed=seed)
        for name, interval in boot.parameter_intervals().items():
            ci_low[name], ci_high[name] = interval.low, interval.high
        laws = boot.laws()
    status = FittedLaw(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta, mode=fit.mode,
                       n_points=len(cleaned.points), n_runs=len(cleaned.points.run_ids()), ci_low=ci_low,
                       ci_high=ci_high, backtest_are=are)
    return LadderFit(law=law, status=status, fit=fit, points=cleaned.points, weights=cleaned.weights,
                     bootstrap_laws=laws)


def predict(fitted: LadderFit, params: float, tokens: float, level: float = 0.95) -> Prediction:
    loss = fitted.law.loss(params, tokens)
    low = high = None
    if fitted.bootstrap_laws:
        draws = np.array([law.loss(params, tokens) for law in fitted.bootstrap_laws])
        draws = draws[np.isfinite(draws)]
        if draws.size:
            tail = (1 - level) / 2 * 100
            low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    return Prediction(params=params, tokens=tokens, loss=loss, loss_low=low, loss_high=high)


@dataclass(frozen=True)
class SweepChoice:
    learning_rate: float
    warmup_fraction: float
    loss: float
    on_edge: str | None  # "low" or "high" when the best LR is the grid's smallest or largest
    note: str


def _run_loss(record: RunRecord) -> float:
    result = record.result
    if result is None or result.status != "succeeded" or result.final_val_loss is None:
        return math.inf
    return result.final_val_loss if math.isfinite(result.final_val_loss) else math.inf


def choose_round1(records: list[RunRecord]) -> SweepChoice:
    """Best (learning rate, warmup) of Round 1 by final validation loss; a parabola in log-LR through the
    best grid point and its neighbours places the optimum between grid points (never beyond them)."""
    runs = [r for r in records if r.role == "round1" and r.state in ("Succeeded", "Failed")]
    scored = [(r.learning_rate, r.warmup_fraction, _run_loss(r)) for r in runs]
    finite = [s for s in scored if math.isfinite(s[2])]
    if not finite:
        raise FitInputError("every Round-1 run failed or diverged: no learning rate to choose")
    best_lr, best_warmup, best_loss = min(finite, key=lambda s: s[2])
    same_warmup = sorted((lr, loss) for lr, w, loss in scored if w == best_warmup)
    lrs = [lr for lr, _ in same_warmup]
    i = lrs.index(best_lr)
    edge = "low" if i == 0 else "high" if i == len(lrs) - 1 else None
    chosen = best_lr
    note = f"best grid point lr {best_lr:.3g} (loss {best_loss:.4f})"
    if edge is None:
        (x0, y0), (x1, y1), (x2, y2) = [(math.log(lr), loss) for lr, loss in same_warmup[i - 1:i + 2]]
        if all(math.isfinite(v) for v in (y0, y1, y2)):
            denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
            a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
            b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
            if a > 0:
                vertex = min(max(-b / (2 * a), x0), x2)
                chosen = math.exp(vertex)
                note += f"; parabola in log-LR puts the optimum at {chosen:.3g}"
    else:
        note += f"; on the {edge} edge of the grid"
    return SweepChoice(learning_rate=chosen, warmup_fraction=best_warmup, loss=best_loss, on_edge=edge, note=note)


def round2_verdict(records: list[RunRecord]) -> tuple[str, float | None]:
    """The playbook's retrospective check: where did the best checkpoint land in each Round-2 run?"""
    fractions = []
    for record in finished(records, "round2"):
        result = record.result
        assert result is not None
        if result.best_tokens is not None and result.tokens > 0:
            fractions.append(result.best_tokens / result.tokens)
    if not fractions:
        return "no finished Round-2 run: the run length could not be checked", None
    worst_early, latest = min(fractions), max(fractions)
    if latest <= EARLY_BEST_FRACTION:
        return (f"steps too many: the best checkpoint always came in the first 10% "
                f"(at most {latest:.0%} of the run); shorten the final run or lower the LR"), latest
    if worst_early >= LATE_BEST_FRACTION:
        return (f"train longer: the best checkpoint came in the last 25% of every run "
                f"(at least {worst_early:.0%}); extend the run and re-tune the decay"), worst_early
    return f"run length fits: best checkpoints at {worst_early:.0%}–{latest:.0%} of the runs", latest
