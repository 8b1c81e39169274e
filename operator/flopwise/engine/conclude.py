"""What the ladder says: the fitted law, whether the data identify it, the compute-optimal allocation it supports
(with its interval and basis), Chinchilla's Approach 2 beside it, and the predicted loss of a model.

One pure function, :func:`conclude_ladder`, called by the engine when the ladder (or the partial target check)
ends and by `benchmarks/calibration.py` on simulated campaigns, so the calibration measures exactly what the
engine recommends.

Choices, each a departure from or a reading of the papers:
* **Points are annealed endpoints only** — one per finished ladder run (a WSD branch ends at its own token
  count), the seed replicas, and the partial target leg. A mid-run checkpoint of a decaying schedule is not a
  shorter run (Hoffmann et al. 2022, §3.1 and Figure A1), so the Hitchhiker's guide's use of intermediate
  checkpoints (Choshen et al. 2024) is not followed here: the designs give real endpoints instead.
* **Objective**: Hoffmann's Huber-in-log-space, summed, from the 4500-start grid (Epoch's correction),
  :mod:`flopwise.fitting.fit`. Every point weighs the same.
* **Intervals**: a parametric bootstrap (:func:`flopwise.fitting.bootstrap.bootstrap_parametric`) that redraws
  every endpoint from the fitted law with the noise the residuals (or the seed replicas, when larger) show,
  shared within a WSD trunk; resampling runs fails on 5 trunks. 95% percentile intervals.
* **Basis of the recommendation**, in order: the five-parameter fit when identified
  (:mod:`flopwise.fitting.identify`); else the exponents held at Epoch's refit (three free parameters; the
  Hitchhiker's guide: exponents transfer within an architecture family); else Approach 2's N_opt(C); else
  Approach 2 with its exponent's prior at Epoch's refit (one bracketed level sets the coefficient: the fewest
  free parameters anything measured can give); else the prior law the campaign was planned with. Each measured
  basis must put N_opt's 95% interval within 10× (``identify.MAX_ALLOCATION_SPAN``). Which one, and why the others
  were not used, is in the status.
* **Loss prediction**: the law at the target when it is identified. When the allocation rests on Approach 2 the law
  is not, and its level is what it is least sure of, so the largest bracketed level's measured minimum (the
  parabola's vertex) is carried to the target by the law's ratio (:class:`Anchor`), as the partial check carries
  the target's own leg. A departure: Chinchilla predicts from the fitted law only. Chosen on the quickstart's real
  runs (worst error at a recommendation 1.7% against the law's 3.7%); in simulation, where the law's form is
  right by construction, the two are within noise of each other (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flopwise.api.status import Allocation, Approach2Status, FittedLaw, Prediction, RunRecord
from flopwise.fitting import e_profile, identify
from flopwise.fitting.backtest import backtest
from flopwise.fitting.bootstrap import BootstrapResult, NoiseModel, bootstrap_parametric, noise_model
from flopwise.fitting.fit import HOFFMANN_GRID, FitResult, StartGrid, fit_points
from flopwise.fitting.isoflop import EXPONENT_PRIOR, Approach2, approach2, profiles_by_interpolation, profiles_by_level
from flopwise.fitting.points import FitInputError, FitPoints
from flopwise.planning.laws import EPOCH, ScalingLaw

LEVEL = 0.95
PRIOR_EXPONENT_SD = 0.1
"""How far a borrowed exponent may be off, as a standard deviation, drawn in the borrowed fit's bootstrap so its
intervals carry the borrowing. Chinchilla's Approach 3 and Epoch's refit of the same points differ by 0.08 in β
(Besiroglu et al. 2024, Table 1), and other data and architectures differ more (Choshen et al. 2024). Measured
here: the five-parameter fits of three real quickstarts put β at 0.16–0.19, 0.18 below Epoch's; at an sd of 0.05
a quickstart with longer ladder runs called its borrowed fit identified and predicted the recommended model's loss
10% high with the measured loss outside its interval (tests/data/quickstart-ladder-minsteps400.json). At 0.1 that
fit is not identified (E's interval spans decades) and the interval holds the measured loss."""
AGREEMENT = 1.5  # Approach 2 and the parametric allocation "agree" when within this factor (or intervals overlap)


@dataclass(frozen=True)
class Endpoints:
    """The annealed points of a campaign: one per finished run, with what Approach 2 and the bootstrap need."""

    points: FitPoints
    groups: np.ndarray  # runs sharing a trajectory share a label
    flops_per_token: np.ndarray
    levels: list[int | None]


def is_point(record: RunRecord) -> bool:
    return record.state == "Succeeded" and record.result is not None and record.result.final_val_loss is not None \
        and math.isfinite(record.result.final_val_loss)


def endpoints(records: list[RunRecord], extra: list[RunRecord] | None = None) -> Endpoints:
    """Every finished ladder run and seed replica (and ``extra`` runs: the partial target leg) as one point at
    the tokens its schedule ends at. Raises FitInputError when there are none."""
    chosen = [r for r in records if r.role in ("ladder", "seed") and is_point(r)] + [r for r in extra or []
                                                                                      if is_point(r)]
    if not chosen:
        raise FitInputError("no finished ladder run yet")
    points = FitPoints.from_arrays([r.params for r in chosen], [r.trajectory_tokens for r in chosen],
                                   [r.result.final_val_loss for r in chosen],  # type: ignore[union-attr]
                                   [r.run_id for r in chosen], validate=False)
    groups = np.array([r.group or r.planned_id for r in chosen])
    return Endpoints(points=points, groups=groups, flops_per_token=np.array([r.shape.flops_per_token()
                                                                            for r in chosen]),
                     levels=[r.level for r in chosen])


@dataclass(frozen=True)
class Candidate:
    """One way of fitting the law, with what its bootstrap says."""

    fit: FitResult
    boot: BootstrapResult | None
    noise: NoiseModel
    params: float  # N_opt at the target budget
    params_low: float | None
    params_high: float | None
    problems: list[str]

    @property
    def law(self) -> ScalingLaw:
        return self.fit.law

    def intervals(self) -> tuple[dict[str, float], dict[str, float]]:
        if self.boot is None:
            return {}, {}
        found = self.boot.parameter_intervals()
        return {k: v.low for k, v in found.items()}, {k: v.high for k, v in found.items()}


@dataclass(frozen=True)
class Anchor:
    """A measured compute-optimal loss a prediction is carried from: the minimum of the largest IsoFLOP level that
    brackets one (its parabola's vertex), with the tokens a model of that size trains on at the level's compute."""

    params: float
    tokens: float
    loss: float
    flops: float
    sd: float  # relative: the noise of one run, an upper bound for a vertex read off three or more runs

    def describe(self) -> str:
        return (f"the IsoFLOP minimum at {self.flops:.3g} FLOPs ({self.params:.3g} params, loss {self.loss:.4g}) "
                "carried by the law's ratio")


@dataclass(frozen=True)
class Conclusion:
    law: ScalingLaw  # the law the loss prediction comes from
    status: FittedLaw
    allocation: Allocation
    bootstrap_laws: list[ScalingLaw] = field(default_factory=list)
    anchor: Anchor | None = None  # set when the loss law is not identified but an IsoFLOP level brackets its minimum

    def carried(self, params: float, tokens: float, anchor: tuple[float, float, float], noise_sd: float,
                source: str, level: float = LEVEL) -> Prediction:
        """The final loss at (``params``, ``tokens``) from a measured annealed loss ``anchor`` = (N, D, loss): the
        anchor times the law's ratio L(params, tokens) / L(N, D). The measurement sets the level (a law that fits
        the ladder only roughly, or is not identified, is least sure of its level), the law only carries it.
        Intervals: every bootstrap law's ratio, times the noise of the anchor that the end does not share
        (``noise_sd``)."""
        from_params, from_tokens, from_loss = anchor
        ratio = self.law.loss(params, tokens) / self.law.loss(from_params, from_tokens)
        ratios = np.array([b.loss(params, tokens) / b.loss(from_params, from_tokens) for b in self.bootstrap_laws])
        noise = np.exp(np.random.default_rng(0).normal(0.0, noise_sd, ratios.size))
        low, high = _percentiles(from_loss * ratios * noise, level)
        return Prediction(params=params, tokens=tokens, loss=from_loss * ratio, loss_low=low, loss_high=high,
                          source=source[:512])

    def predict_from(self, params: float, tokens: float, anchor_tokens: float, anchor_loss: float,
                     noise_sd: float, level: float = LEVEL) -> Prediction:
        """The final loss of a run of ``params`` whose own annealed loss at ``anchor_tokens`` was ``anchor_loss``
        (the partial check's leg): the run's own evidence sets its level (a regime change at its size shows in
        it), the law only carries it from the anchor to the end — the D term, which the ladder's several token
        counts per size identify."""
        return self.carried(params, tokens, (params, anchor_tokens, anchor_loss), noise_sd,
                            f"the partial leg's loss at {anchor_tokens:.3g} tokens carried by the law's ratio", level)

    def predict(self, params: float, tokens: float, level: float = LEVEL) -> Prediction:
        """The law's loss at (``params``, ``tokens``), or, with an ``anchor``, the anchor's loss carried there."""
        if self.anchor is not None:
            a = self.anchor
            return self.carried(params, tokens, (a.params, a.tokens, a.loss), a.sd, a.describe(), level)
        loss = self.law.loss(params, tokens)
        low, high = _percentiles(np.array([law.loss(params, tokens) for law in self.bootstrap_laws]), level)
        identified = "" if self.status.identified else " (not identified)"
        return Prediction(params=params, tokens=tokens, loss=loss, loss_low=low, loss_high=high,
                          source=f"the {self.status.mode} fit{identified}")


def _percentiles(draws: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """The central ``level`` interval of the finite draws (None, None without any)."""
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _optimum(law: ScalingLaw, flops: float) -> float | None:
    try:
        return law.compute_optimal(flops).params
    except ValueError:
        return None


def _candidate(ends: Endpoints, mode: str, *, flops: float, resamples: int, seed: int, grid: StartGrid,
               floor_sd: float | None, fit: FitResult | None = None,
               boot: BootstrapResult | None = None) -> Candidate:
    with np.errstate(all="ignore"):
        if fit is None:
            fit = fit_points(ends.points, mode=mode, prior=EPOCH, grid=grid)  # type: ignore[arg-type]
        noise = noise_model(ends.points, fit, ends.groups, floor_sd)
        if boot is None and resamples > 0:
            boot = bootstrap_parametric(ends.points, fit, n_resamples=resamples, groups=ends.groups, noise=noise,
                                        seed=seed, exponent_sd=PRIOR_EXPONENT_SD)
    params = _optimum(fit.law, flops)
    low = high = None
    if boot is not None:
        draws = np.array([v for v in (_optimum(law, flops) for law in boot.laws()) if v is not None], float)
        draws = draws[np.isfinite(draws) & (draws > 0)]
        if draws.size >= max(2, resamples // 2):
            tail = (1 - LEVEL) / 2 * 100
            low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    intervals = {} if boot is None else {k: v for k, v in boot.parameter_intervals().items()
                                         if math.isfinite(v.low) and math.isfinite(v.high)}
    cand_low, cand_high = {k: v.low for k, v in intervals.items()}, {k: v.high for k, v in intervals.items()}
    found = identify.problems(fit.law, cand_low, cand_high, free_exponents=fit.mode == "full",
                              params_low=low, params_high=high)
    if boot is not None and len(intervals) < 5:
        found.append(f"{boot.n_resamples} bootstrap resamples gave no finite interval for "
                     f"{', '.join(sorted({'E', 'A', 'B', 'alpha', 'beta'} - set(intervals)))}: their spread is unknown")
    if boot is not None and low is None:
        found.append("most bootstrap resamples have no compute-optimal allocation: nothing pins it down")
    if params is None:
        found.insert(0, "the law has no compute-optimal allocation (a power term vanished)")
    return Candidate(fit=fit, boot=boot, noise=noise, params=params or math.nan, params_low=low, params_high=high,
                     problems=found)


def approach2_of(ends: Endpoints, flops: float, noise: float) -> Approach2 | None:
    """Approach 2 from IsoFLOP levels when the runs have them, else from interpolated endpoints; None when the
    design has neither (fewer than three sizes with two or more token counts)."""
    pts = ends.points
    if all(level is not None for level in ends.levels[: len(pts)]) and any(v is not None for v in ends.levels):
        runs = [i for i, level in enumerate(ends.levels) if level is not None]
        flops_run = [float(ends.flops_per_token[i] * pts.tokens[i]) for i in runs]
        profiles = profiles_by_level([ends.levels[i] for i in runs], flops_run,  # type: ignore[misc]
                                     [float(pts.params[i]) for i in runs], [float(pts.loss[i]) for i in runs],
                                     noise)
        return approach2(profiles, flops)
    levelled = [i for i, level in enumerate(ends.levels) if level is not None]
    if levelled:  # an isoflop ladder plus extra points (seeds, the partial leg): the levels alone
        flops_run = [float(ends.flops_per_token[i] * pts.tokens[i]) for i in levelled]
        profiles = profiles_by_level([ends.levels[i] for i in levelled], flops_run,  # type: ignore[misc]
                                     [float(pts.params[i]) for i in levelled],
                                     [float(pts.loss[i]) for i in levelled], noise)
        return approach2(profiles, flops)
    profiles = profiles_by_interpolation(list(pts.params), list(pts.tokens), list(ends.flops_per_token),
                                         list(pts.loss), noise=noise)
    return approach2(profiles, flops, interpolated=True) if profiles else None


def _approach2_status(result: Approach2 | None) -> Approach2Status | None:
    if result is None:
        return None
    law = result.law
    return Approach2Status(
        params=result.params, params_low=result.params_low, params_high=result.params_high,
        exponent=law.exponent if law else None, exponent_low=law.exponent_low if law else None,
        exponent_high=law.exponent_high if law else None, interpolated=result.interpolated,
        levels=len(result.profiles), bracketed=sum(1 for p in result.profiles if p.bracketed), note=result.note[:2048])


def conclude_ladder(records: list[RunRecord], *, flops: float, prior: ScalingLaw, resamples: int = 200,
                    seed: int = 0, grid: StartGrid = HOFFMANN_GRID, floor_sd: float | None = None,
                    extra: list[RunRecord] | None = None, backtest_holdout: bool = True,
                    fits: dict[str, FitResult] | None = None,
                    boots: dict[str, BootstrapResult] | None = None) -> Conclusion:
    """The campaign's law and allocation at ``flops`` (the final budget) from its annealed endpoints.

    ``prior`` is the planning law, the last resort when nothing the campaign measured identifies an allocation.
    ``floor_sd`` is the seed-noise floor (relative sd of the seed replicas' losses), a lower bound for the noise
    the bootstrap draws. ``fits`` and ``boots`` may carry the full and borrowed fits of these very points and
    their bootstraps, already made (the calibration benchmark fits hundreds of simulated campaigns in one batch).
    Raises FitInputError when there are fewer than three sizes."""
    ends = endpoints(records, extra)
    pts = ends.points
    if pts.n_distinct_sizes() < 3:
        raise FitInputError(f"{pts.n_distinct_sizes()} distinct model size(s) finished; a law needs at least 3")
    common = dict(flops=flops, resamples=resamples, seed=seed, grid=grid, floor_sd=floor_sd)
    candidates: dict[str, Candidate] = {}
    notes: list[str] = []
    full_possible = pts.n_distinct_sizes() >= 5 and len(pts) >= 8
    if full_possible:
        candidates["full"] = _candidate(ends, "full", **common, fit=(fits or {}).get("full"),  # type: ignore[arg-type]
                                        boot=(boots or {}).get("full"))
    else:
        notes.append(f"{pts.n_distinct_sizes()} sizes and {len(pts)} points: too few for five free parameters")
    if not full_possible or candidates["full"].problems:
        candidates["borrowed"] = _candidate(ends, "borrowed", **common,  # type: ignore[arg-type]
                                            fit=(fits or {}).get("borrowed"), boot=(boots or {}).get("borrowed"))
    noise = next(iter(candidates.values())).noise
    a2 = approach2_of(ends, flops, noise.sigma)

    basis, chosen = "prior", None
    for mode in ("full", "borrowed"):
        cand = candidates.get(mode)
        if cand is not None and not cand.problems:
            basis, chosen = mode, cand
            break
    if chosen is None and a2 is not None and _narrow(a2):
        basis = "approach-2"
    elif chosen is None and a2 is not None:  # too few bracketed levels for an exponent: borrow Epoch's as a prior
        held = approach2(a2.profiles, flops, interpolated=a2.interpolated, exponent_prior=EXPONENT_PRIOR)
        if held.params is not None:
            notes.append(f"Approach 2 alone: {a2.note}")
            a2 = held
            basis = "approach-2-borrowed" if _narrow(held) else basis
    for mode, cand in candidates.items():
        if cand is not chosen and cand.problems:
            notes.append(f"{'five-parameter fit' if mode == 'full' else 'borrowed exponents'} not identified: "
                         + "; ".join(cand.problems))
    if "full" in candidates and candidates["full"].law.E < identify.E_FLOOR:  # why E sits at 0: its profile
        notes.append(e_profile.describe(e_profile.profile_e(pts), len(pts), float(pts.loss.min())))
    # The loss law: the chosen fit, else the best-supported one (reported as unidentified).
    law_source = chosen or candidates.get("borrowed") or candidates["full"]
    lows, highs = law_source.intervals()

    if basis in ("full", "borrowed"):
        params, low, high = law_source.params, law_source.params_low, law_source.params_high
    elif basis in ("approach-2", "approach-2-borrowed"):
        assert a2 is not None
        params, low, high = a2.params, a2.params_low, a2.params_high
    else:
        params, low, high = prior.allocate(flops).params, None, None
    agree = None
    if a2 is not None and a2.params is not None and basis in ("full", "borrowed") and math.isfinite(params):
        agree = _agree((params, low, high), (a2.params, a2.params_low, a2.params_high))
    elif basis == "approach-2-borrowed" and math.isfinite(law_source.params):  # beside the unidentified loss law
        agree = _agree((params, low, high), (law_source.params, law_source.params_low, law_source.params_high))
    are = None
    if backtest_holdout and law_source.fit.mode in ("full", "borrowed") and pts.n_distinct_sizes() >= 4:
        try:
            with np.errstate(all="ignore"):
                are = backtest(pts, holdout=1, target_fraction=None, mode=law_source.fit.mode, grid=grid).are
        except FitInputError:
            are = None
    identified = basis != "prior"
    message = _message(basis, params, low, high, a2, agree, law_source)
    law = law_source.law
    status = FittedLaw(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta, mode=law_source.fit.mode,
                       n_points=len(pts), n_runs=len(set(ends.groups)), ci_low=lows, ci_high=highs,
                       backtest_are=are if are is not None and math.isfinite(are) else None,
                       identified=identified and basis in ("full", "borrowed"),
                       problems=[p[:512] for p in law_source.problems][:8], noise=law_source.noise.describe(),
                       notes=[n[:1024] for n in notes][:8])
    allocation = Allocation(basis=basis, flops=flops, params=params, params_low=low, params_high=high,
                            identified=identified, approach2=_approach2_status(a2), agree=agree, message=message)
    anchor = _anchor(a2, ends, law_source.noise.sigma) if basis in ("approach-2", "approach-2-borrowed") else None
    return Conclusion(law=law, status=status, allocation=allocation,
                      bootstrap_laws=law_source.boot.laws() if law_source.boot is not None else [], anchor=anchor)


def _anchor(a2: Approach2 | None, ends: Endpoints, sd: float) -> Anchor | None:
    """The minimum of the largest IsoFLOP level that brackets one, as an anchor for the loss prediction; the
    tokens at its size from the flops per token of the sizes around it (interpolated in log)."""
    bracketed = [p for p in (a2.profiles if a2 is not None else []) if p.bracketed and p.loss_min is not None]
    if not bracketed:
        return None
    top = max(bracketed, key=lambda p: p.flops)
    order = np.argsort(ends.points.params)
    fpt = math.exp(float(np.interp(math.log(top.params_opt), np.log(ends.points.params[order]),  # type: ignore[arg-type]
                                   np.log(ends.flops_per_token[order]))))
    return Anchor(params=top.params_opt, tokens=top.flops / fpt, loss=top.loss_min,  # type: ignore[arg-type]
                  flops=top.flops, sd=sd)


def allocation_exponent(alpha: float | None, beta: float | None, allocation: Allocation | None) -> float:
    """How N_opt grows with compute around the allocation (N ∝ C^a), for re-planning the target: Approach 2's
    exponent when it is the basis, else the loss law's β / (α + β) (0.5 without one), kept within [0.05, 0.95]."""
    exponent = beta / (alpha + beta) if alpha is not None and beta is not None and alpha + beta > 0 else 0.5
    if allocation is not None and allocation.basis in ("approach-2", "approach-2-borrowed") \
            and allocation.approach2 and allocation.approach2.exponent:
        exponent = allocation.approach2.exponent
    return min(max(exponent, 0.05), 0.95)


def _narrow(result: Approach2) -> bool:
    """Does Approach 2 pin N_opt down (its 95% interval within MAX_ALLOCATION_SPAN)?"""
    return result.params is not None and \
        (result.params_high or math.inf) / (result.params_low or 1e-300) <= identify.MAX_ALLOCATION_SPAN


def _agree(one: tuple[float, float | None, float | None], other: tuple[float, float | None, float | None]) -> bool:
    """Two allocations agree when their 95% intervals overlap or their points are within AGREEMENT×."""
    (p, low, high), (q, q_low, q_high) = one, other
    overlap = None not in (low, high, q_low, q_high) and low <= q_high and q_low <= high  # type: ignore[operator]
    return bool(overlap or max(p / q, q / p) <= AGREEMENT)


BASIS_NAMES = {"full": "the five-parameter fit", "borrowed": "the fit with exponents held at Epoch's refit",
               "approach-2": "Approach 2 (IsoFLOP minima)",
               "approach-2-borrowed": "Approach 2 with the allocation exponent's prior at Epoch's refit",
               "prior": "the prior law (nothing measured identifies it)"}


def _with_interval(value: float, low: float | None, high: float | None) -> str:
    return f"{value:.3g}" + (f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else "")


def _message(basis: str, params: float, low: float | None, high: float | None, a2: Approach2 | None,
             agree: bool | None, law_source: Candidate) -> str:
    text = f"N_opt {_with_interval(params, low, high)} params from {BASIS_NAMES[basis]}"
    verdict = "" if agree is None else " (agrees)" if agree else " (DISAGREES: check the ladder)"
    if basis == "prior":
        text += "; NOT IDENTIFIED: " + "; ".join(law_source.problems[:3])
    if basis == "approach-2-borrowed":
        text += f" ({a2.note if a2 is not None else ''})"
        if math.isfinite(law_source.params):
            found = _with_interval(law_source.params, law_source.params_low, law_source.params_high)
            text += f"; the unidentified {law_source.fit.mode} fit: {found}{verdict}"
    elif a2 is not None:
        if a2.params is not None:
            text += f"; Approach 2: {_with_interval(a2.params, a2.params_low, a2.params_high)}{verdict}"
        else:
            text += f"; Approach 2: {a2.note}"
    return text[:2048]
