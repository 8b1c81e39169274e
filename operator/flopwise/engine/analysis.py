"""What the engine concludes from finished runs: the fitted law, Round 1's best point and its transfer across
widths, Round 2's verdict, the seed-noise floor and the partial-target refit.

Pure functions of run records; the fitting itself is `flopwise.fitting` (Hoffmann/Epoch objective).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flopwise.api.status import (
    FittedLaw,
    NoiseFloorStatus,
    Prediction,
    RunRecord,
    TransferStatus,
    WidthOptimum,
)
from flopwise.engine import transfer
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


def ladder_points(records: list[RunRecord], extra: list[RunRecord] | None = None) -> FitPoints:
    """Every evaluation of every finished ladder run is a point (the Hitchhiker's guide: intermediate
    checkpoints are extra models at no cost); hygiene drops the early ones later. ``extra`` runs (the partial
    final leg) join as further runs."""
    params, tokens, losses, runs = [], [], [], []
    for record in [*finished(records, "ladder"), *(extra or [])]:
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
               grid: StartGrid = HOFFMANN_GRID, extra: list[RunRecord] | None = None,
               mode: str = "auto") -> LadderFit:
    """Fit L(N, D) to the ladder. Raises FitInputError when there is not yet enough to fit.

    With ``with_backtest``, the fit mode is chosen by evidence rather than by point count alone: the full
    five-parameter fit and the borrowed-exponent fit (Epoch's α, β) are each fitted without the largest run
    and scored on it; the mode with the lower held-out ARE is refitted on everything, and its ARE is the
    campaign's trust figure. Tiny ladders often cannot pin five parameters, and this says so with numbers.
    """
    raw = ladder_points(records, extra)
    if len(raw) == 0:
        raise FitInputError("no finished ladder run yet")
    cleaned = clean(drop_early_per_run(raw, EARLY_FRACTION), min_tokens=0.0)
    are = None
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
    weights = cleaned.weights
    if extra and weights is not None:
        # The target's own curve weighs as much as the whole ladder: it is the only evidence at the target
        # size, and the robust (Huber) objective would otherwise treat one run out of six as an outlier.
        mine = np.isin(cleaned.points.run.astype(str), [r.run_id for r in extra])
        others = len(set(cleaned.points.run[~mine].astype(str)))
        weights = np.where(mine, weights * max(1, others), weights)
    with np.errstate(all="ignore"):
        fit = fit_points(cleaned.points, weights=weights, mode=mode, grid=grid)  # type: ignore[arg-type]
    law = fit.law
    ci_low: dict[str, float] = {}
    ci_high: dict[str, float] = {}
    laws: list[ScalingLaw] = []
    if resamples > 0:
        with np.errstate(all="ignore"):
            boot = bootstrap(cleaned.points, fit, n_resamples=resamples, weights=weights, seed=seed)
        for name, interval in boot.parameter_intervals().items():
            ci_low[name], ci_high[name] = interval.low, interval.high
        laws = boot.laws()
    status = FittedLaw(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta, mode=fit.mode,
                       n_points=len(cleaned.points), n_runs=len(cleaned.points.run_ids()), ci_low=ci_low,
                       ci_high=ci_high, backtest_are=are)
    return LadderFit(law=law, status=status, fit=fit, points=cleaned.points, weights=weights,
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


def choose_round1(records: list[RunRecord], d_model: int | None = None) -> SweepChoice:
    """Best (learning rate, warmup) of Round 1 by final validation loss at the proxy width ``d_model`` (all
    widths when None); at the best warmup, a least-squares parabola in log-LR through the best grid point and up
    to two neighbours each side places the optimum between grid points (never beyond them): `transfer.fit_sweep`,
    the very fit the transfer check applies to every width."""
    runs = [r for r in records if r.role == "round1" and r.state in ("Succeeded", "Failed")
            and (d_model is None or r.shape.d_model == d_model)]
    scored = [(r.learning_rate, r.warmup_fraction, _run_loss(r)) for r in runs]
    finite = [s for s in scored if math.isfinite(s[2])]
    if not finite:
        raise FitInputError("every Round-1 run failed or diverged: no learning rate to choose")
    best_lr, best_warmup, best_loss = min(finite, key=lambda s: s[2])
    same_warmup = sorted((lr, loss) for lr, w, loss in scored if w == best_warmup)
    optimum = transfer.fit_sweep([lr for lr, _ in same_warmup], [loss for _, loss in same_warmup],
                                 size=float(runs[0].params))
    note = f"best grid point lr {best_lr:.3g} (loss {best_loss:.4f}); {optimum.note}"
    return SweepChoice(learning_rate=optimum.lr, warmup_fraction=best_warmup, loss=best_loss,
                       on_edge=optimum.on_edge, note=note)


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


def width_optima(records: list[RunRecord], *, primary_width: int, warmup: float, grid_factor: float,
                 noise_sd: float | None) -> list[tuple[int, int, transfer.SweepOptimum]]:
    """(d_model, params, optimum) of each Round-1 width's LR sweep: the proxy's at its chosen warmup, the
    narrower ones at theirs (one warmup each). A width with no finished run is left out."""
    by_width: dict[int, list[RunRecord]] = {}
    for r in records:
        if r.role == "round1" and r.state in ("Succeeded", "Failed") and (
                r.shape.d_model != primary_width or r.warmup_fraction == warmup):
            by_width.setdefault(r.shape.d_model, []).append(r)
    out = []
    for width, runs in sorted(by_width.items()):
        try:
            optimum = transfer.fit_sweep([r.learning_rate for r in runs], [_run_loss(r) for r in runs],
                                         size=runs[0].params, noise_sd=noise_sd, grid_factor=grid_factor)
        except ValueError:
            continue
        out.append((width, runs[0].params, optimum))
    return out


def transfer_status(records: list[RunRecord], *, primary_width: int, warmup: float, grid_factor: float,
                    noise_sd: float | None, target_params: int, parameterization: str) -> TransferStatus:
    """The transfer verdict across Round 1's widths, and the learning rate it gives the target."""
    optima = width_optima(records, primary_width=primary_width, warmup=warmup, grid_factor=grid_factor,
                          noise_sd=noise_sd)
    widths = []
    for width, params, o in optima:
        low, high = o.interval()
        widths.append(WidthOptimum(d_model=width, params=params, learning_rate=o.lr, lr_low=low, lr_high=high,
                                   on_edge=o.on_edge, points=o.points))
    status = TransferStatus(widths=widths, target_params=target_params, parameterization=parameterization,
                            tolerance=grid_factor)
    if len(optima) < 2:
        status.message = ("unchecked: Round 1 swept one width only (tuning.proxyWidths, or the budget), so the "
                          "proxy's learning rate is used at the target untested")
        return status
    decision = transfer.transfer_verdict([o for _, _, o in optima], grid_factor=grid_factor,
                                         target_size=float(target_params))
    law = decision.law
    status.verdict = "holds" if decision.holds else "does-not-hold"
    status.message = decision.verdict + (
        "; a width's best LR is on the grid's edge, so its optimum is censored" if any(o.on_edge for _, _, o in optima)
        else "")
    status.drift = decision.drift
    status.coefficient, status.exponent = law.coefficient, law.exponent
    status.exponent_low, status.exponent_high = law.exponent_low, law.exponent_high
    status.learning_rate, status.lr_low, status.lr_high = decision.target_lr, decision.target_low, decision.target_high
    return status


def seed_floor(records: list[RunRecord], backtest_are: float | None) -> NoiseFloorStatus | None:
    """The noise floor from the smallest ladder rung and its seed replicas (None when there are none)."""
    seeds = [r for r in records if r.role == "seed"]
    if not seeds:
        return None
    rung = [r for r in finished(records, "ladder") if r.shape == seeds[0].shape and r.tokens == seeds[0].tokens]
    runs = rung[:1] + finished(records, "seed")
    losses = [_run_loss(r) for r in runs]
    losses = [v for v in losses if math.isfinite(v)]
    status = NoiseFloorStatus(seeds=len(losses), params=seeds[0].params, losses=losses[:16],
                              backtest_are=backtest_are)
    try:
        floor = transfer.noise_floor(losses)
    except ValueError as error:
        status.message = f"no noise floor: {error}"
        return status
    status.mean_loss, status.sd = floor.mean_loss, floor.sd
    status.floor_are, status.floor_are_high, status.band_are = floor.floor_are, floor.floor_are_high, floor.band_are
    text = (f"{floor.seeds} seeds at {seeds[0].params:,} params: loss {floor.mean_loss:.4f} ± {floor.sd:.4f} (sd); "
            f"a perfect law's ARE would be {floor.floor_are:.2%} (95% upper bound {floor.floor_are_high:.2%})")
    if backtest_are is not None and math.isfinite(backtest_are):
        status.within_noise = transfer.within_noise(backtest_are, floor)
        text += (f"; backtest ARE {backtest_are:.2%} is " + (
            f"within the 95% seed-noise band ({floor.band_are:.2%}): not distinguishable from a rerun with another "
            "seed" if status.within_noise else f"above the 95% seed-noise band ({floor.band_are:.2%}): the law's "
            "own error is real"))
    status.message = text
    return status
