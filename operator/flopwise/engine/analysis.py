"""What the engine concludes from the tuning rounds and the seeds: Round 1's best point and its transfer across
widths, Round 2's decision, and the seed-noise floor. (The law and the allocation: `engine.conclude`.)

Pure functions of run records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import NoiseFloorStatus, PlannedRun, Round2Candidate, RunRecord, TransferStatus, WidthOptimum
from flopwise.engine import transfer
from flopwise.fitting.points import FitInputError
from flopwise.planning.laws import allocation_rule
from flopwise.planning.plan import isoflop_extension

EARLY_BEST_FRACTION = 0.10  # playbook: best step always in the first 10% → too many steps
LATE_BEST_FRACTION = 0.75  # playbook: best step in the last 25% → train longer
DECISION_NOISE = 0.005
"""Relative loss difference below which two Round-2 runs are called indistinguishable (the order of seed noise
at scale; the choice is still the lower loss, and the verdict says it is within noise)."""


def finished(records: list[RunRecord], role: str) -> list[RunRecord]:
    return [r for r in records if r.role == role and r.state == "Succeeded" and r.result is not None]


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


def retrospective_verdict(records: list[RunRecord]) -> tuple[str, float | None]:
    """The playbook's retrospective check, for schedules that do not decay (constant): where did the best
    checkpoint land in each Round-2 run? With a decaying schedule the best is nearly always the last, so the check
    says nothing there and is not made."""
    fractions = []
    for record in finished(records, "round2"):
        result = record.result
        assert result is not None
        if result.best_tokens is not None and result.tokens > 0:
            fractions.append(result.best_tokens / record.trajectory_tokens)
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


@dataclass(frozen=True)
class Round2Decision:
    learning_rate: float
    warmup_fraction: float
    decay_fraction: float
    verdict: str
    best_fraction: float | None
    candidates: list[Round2Candidate]


def _decay_of(record: RunRecord) -> float | None:
    schedule = record.schedule
    if schedule.kind != "wsd" or not schedule.decay_steps:
        return None
    return round(schedule.decay_steps / record.steps, 2)  # the fraction the candidate was planned with


def _compare(name: str, winner: tuple[float, float], runner_up: tuple[float, float] | None) -> str:
    value, loss = winner
    if runner_up is None:
        return f"{name} {value:.3g} (loss {loss:.4f}, nothing to compare)"
    other, other_loss = runner_up
    margin = (other_loss - loss) / other_loss
    within = " — within noise" if margin < DECISION_NOISE else ""
    return f"{name} {value:.3g} (loss {loss:.4f}) beat {other:.3g} ({other_loss:.4f}) by {margin:.2%}{within}"


def choose_round2(records: list[RunRecord], *, default_lr: float, default_warmup: float, default_decay: float,
                  schedule: str) -> Round2Decision:
    """Round 2 decides: among the full-length runs at the proxy, the learning rate of the lowest final loss (among
    runs with the default cooldown), then — where a WSD run tried another cooldown at that learning rate — the
    cooldown of the lower final loss. The verdict acts on what follows: the ladder and the final run train at the
    chosen learning rate, the final run with the chosen cooldown. Without finished runs, Round 1's choice stands."""
    runs = [r for r in records if r.role == "round2"]
    candidates = [Round2Candidate(run_id=r.run_id, learning_rate=r.learning_rate, decay_fraction=_decay_of(r),
                                  final_loss=_run_loss(r) if math.isfinite(_run_loss(r)) else None) for r in runs]
    scored = [(r, _run_loss(r)) for r in runs if math.isfinite(_run_loss(r))]
    if not scored:
        verdict = ("no finished Round-2 run: Round 1's choice stands" if runs else
                   "no Round 2 was planned: Round 1's choice stands")
        return Round2Decision(default_lr, default_warmup, default_decay, verdict, None, candidates)
    warmup = scored[0][0].warmup_fraction
    default = round(default_decay, 2) if schedule == "wsd" else None
    lr_runs = sorted(((r, loss) for r, loss in scored if _decay_of(r) == default), key=lambda x: x[1]) or \
        sorted(scored, key=lambda x: x[1])
    best, best_loss = lr_runs[0]
    distinct = [(r, loss) for r, loss in lr_runs[1:] if abs(math.log(r.learning_rate / best.learning_rate)) > 1e-6]
    parts = ["learning rate " + _compare("lr", (best.learning_rate, best_loss),
                                         (distinct[0][0].learning_rate, distinct[0][1]) if distinct else None)]
    decay = default_decay
    # The cooldown is compared where it was varied (at Round 1's learning rate), and applies at any learning rate.
    by_lr: dict[float, list[tuple[RunRecord, float]]] = {}
    for r, loss in scored:
        if _decay_of(r) is not None:
            by_lr.setdefault(round(math.log(r.learning_rate), 6), []).append((r, loss))
    variants = next((v for v in by_lr.values() if len({_decay_of(r) for r, _ in v}) > 1), [])
    if schedule == "wsd" and variants:
        variants.sort(key=lambda x: x[1])
        winner, loss = variants[0]
        decay = _decay_of(winner) or default_decay
        other = next((v for v in variants[1:] if _decay_of(v[0]) != decay), None)
        parts.append("cooldown " + _compare("share", (decay, loss),
                                            (_decay_of(other[0]) or 0.0, other[1]) if other else None)
                     + f": the final run cools down over {decay:g} of its steps")
    elif schedule == "wsd":
        parts.append(f"cooldown {default_decay:g} of the steps (no other length was tried: give tuning.round2Runs ≥ 3)")
    else:
        parts.append(f"the {schedule} schedule has no cooldown length to compare")
    best_fraction = None
    if schedule == "constant":
        retro, best_fraction = retrospective_verdict(records)
        parts.append(retro)
    return Round2Decision(best.learning_rate, warmup, decay, "; ".join(parts), best_fraction, candidates)


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
                                         size=float(width), noise_sd=noise_sd, grid_factor=grid_factor)
        except ValueError:
            continue
        out.append((width, runs[0].params, optimum))
    return out


def transfer_status(records: list[RunRecord], *, primary_width: int, warmup: float, grid_factor: float,
                    noise_sd: float | None, target_d_model: int, target_params: int,
                    parameterization: str) -> TransferStatus:
    """The transfer verdict across Round 1's widths (same depth), and the learning rate it gives the target's
    width: muP transfers the optimum across *width* (Yang et al. 2022), so the power law is in dModel."""
    optima = width_optima(records, primary_width=primary_width, warmup=warmup, grid_factor=grid_factor,
                          noise_sd=noise_sd)
    widths = []
    for width, params, o in optima:
        low, high = o.interval()
        widths.append(WidthOptimum(d_model=width, params=params, learning_rate=o.lr, lr_low=low, lr_high=high,
                                   on_edge=o.on_edge, points=o.points))
    status = TransferStatus(widths=widths, target_params=target_params, target_d_model=target_d_model,
                            parameterization=parameterization, tolerance=grid_factor)
    if len(optima) < 2:
        status.message = ("unchecked: Round 1 swept one width only (tuning.proxyWidths, or the budget), so the "
                          "proxy's learning rate is used at the target untested")
        return status
    decision = transfer.transfer_verdict([o for _, _, o in optima], grid_factor=grid_factor,
                                         target_size=float(target_d_model))
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
    """The noise floor from the seed replicas and the ladder run they repeat (same shape, same schedule's
    tokens); None when there are no replicas."""
    seeds = [r for r in records if r.role == "seed"]
    if not seeds:
        return None
    source = [r for r in finished(records, "ladder") if r.shape == seeds[0].shape
              and r.trajectory_tokens == seeds[0].trajectory_tokens]
    runs = source[:1] + finished(records, "seed")
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
    status.band_are_high = floor.band_are_high
    text = (f"{floor.seeds} seeds at {seeds[0].params:,} params: loss {floor.mean_loss:.4f} ± {floor.sd:.4f} (sd, "
            f"{floor.seeds - 1} degrees of freedom); a perfect law's ARE would be {floor.floor_are:.2%} (95% upper "
            f"bound {floor.floor_are_high:.2%})")
    if backtest_are is not None and math.isfinite(backtest_are):
        status.within_noise = transfer.within_noise(backtest_are, floor)
        text += f"; backtest ARE {backtest_are:.2%} is " + (
            f"within what seed noise allows with {floor.seeds} seeds (the 95% band at σ's upper bound, "
            f"{floor.band_are_high:.2%}): not distinguishable from a rerun with another seed"
            if status.within_noise else f"above what seed noise allows with {floor.seeds} seeds (the 95% band at "
            f"σ's upper bound, {floor.band_are_high:.2%}): the law's own error is real")
    status.message = text
    return status


EDGE_EXTENSIONS = 2  # sizes an IsoFLOP level may add past its edge (one at a time) before its profile is left out
EXTENDED = "size extended"  # the reason of a run added past an IsoFLOP level's edge
NOT_EXTENDED = "no size past this edge"  # the reason of an edge run when no size could be added past it


@dataclass(frozen=True)
class LevelEdge:
    """An IsoFLOP level whose best run is its smallest or largest size: its minimum may lie beyond the sizes
    tried, and Approach 2's parabola there would bracket nothing."""

    level: int
    side: str  # "smallest" or "largest"
    edge_params: float  # the edge size, from which the next size steps outward
    edge_run: str  # the run that measured it (its reason says why nothing was added past it)
    flops: float  # the level's compute (mean over its runs)
    taken: frozenset[tuple[int, int]]  # (layers, width) of every shape the level already has
    extended: int  # sizes already added past this level's edges
    closed: bool  # an extension was found impossible (its edge run's reason says why)


def isoflop_edges(records: list[RunRecord]) -> list[LevelEdge]:
    """Levels of an IsoFLOP ladder whose lowest final loss is at an end of their sizes (Chinchilla §3.2: each
    profile needs its minimum inside the sizes tried; a level that only falls towards an edge says the prior
    centred it wrongly). Failed runs count as tried (their shapes are not retried) but not as points."""
    by_level: dict[int, list[RunRecord]] = {}
    for record in records:
        if record.role == "ladder" and record.level is not None:
            by_level.setdefault(record.level, []).append(record)
    edges = []
    for level, runs in sorted(by_level.items()):
        points = [r for r in runs if math.isfinite(_run_loss(r))]
        if len({r.params for r in points}) < 2:
            continue
        ordered = sorted(points, key=lambda r: r.params)
        best = min(points, key=_run_loss)
        side = "smallest" if best.params == ordered[0].params else "largest" if best.params == ordered[-1].params \
            else None
        if side is None:
            continue
        edges.append(LevelEdge(
            level=level, side=side, edge_params=float(best.params), edge_run=best.run_id,
            flops=sum(r.planned_flops() for r in runs) / len(runs),
            taken=frozenset((r.shape.n_layer, r.shape.d_model) for r in runs),
            extended=sum(1 for r in runs if r.reason.startswith(EXTENDED)),
            closed=any(NOT_EXTENDED in r.reason for r in runs)))
    return edges


def edge_extensions(spec: TrainingCampaignSpec, records: list[RunRecord]) -> list[tuple[LevelEdge, PlannedRun | str]]:
    """Every IsoFLOP level still lowest at an edge (fewer than EDGE_EXTENSIONS sizes added, not closed) with the
    next size to try past it, or why there is none. The engine adds these runs as the budget allows; the
    calibration benchmark simulates the same decisions."""
    if spec.ladder.design != "isoflop":
        return []
    out: list[tuple[LevelEdge, PlannedRun | str]] = []
    taken_ids = {r.planned_id for r in records}
    for edge in isoflop_edges(records):
        if edge.extended >= EDGE_EXTENSIONS or edge.closed:
            continue
        index = sum(1 for r in records if r.level == edge.level)
        while f"ladder-c{edge.level}-{index:02d}" in taken_ids:
            index += 1
        out.append((edge, isoflop_extension(spec, allocation_rule(spec.law), flops=edge.flops,
                                            beyond=edge.edge_params, side=edge.side, taken=edge.taken,
                                            run_id=f"ladder-c{edge.level}-{index:02d}", level=edge.level)))
    return out


def close_edge(records: list[RunRecord], edge: LevelEdge, why: str) -> None:
    """Say on the edge run why the level was not extended, which also closes the level to further tries (only
    on the run that measured the edge: a failed attempt at the same size keeps its own reason). It is said
    after what the run said already (that it was an added size, or the retry of a failed attempt)."""
    for record in records:
        if record.run_id == edge.edge_run:
            said = f"{NOT_EXTENDED}: {why}"
            record.reason = (f"{record.reason}; {said}" if record.reason else said)[:1024]
