"""Calibration of flopwise's predictions on simulated campaigns with a known truth.

For the plans `flopwise plan` makes — `examples/quickstart.yaml`, and a 1e20-FLOP cluster campaign (the H100
example with `budget.flops: 1e20`) — every ladder run's final loss is drawn from a known law, shaped by the run's
own learning-rate schedule (`flopwise.simulate`: an annealed end is on the law, a run at high learning rate sits
above it) and scattered by seed noise shared within a WSD trunk. The engine's own conclusion
(`engine.conclude.conclude_ladder`: fit, identifiability, allocation and its interval, loss prediction) is then
compared with the truth:

* ``coverage_nopt`` — share of reps whose 95% interval of N_opt at the final budget holds the true N_opt;
* ``coverage_loss`` — share whose 95% loss interval at the recommended (N, D) holds the true loss there;
* ``median_abs_nopt_error`` — median |N̂_opt / N_opt − 1|;
* ``identified_share`` — share of reps whose allocation rests on the campaign's own data (basis full,
  borrowed or approach-2), not on the prior.

Designs: the two ladder designs (``isoflop``, ``wsd``; ``default`` marks the one campaigns get) and *today's
design* as of commit 83a8ae9 — one run per size at its compute-optimal tokens, cosine schedules, every
checkpoint past half of each run as a point, the mode (full or borrowed exponents) chosen by backtest, a
run-level bootstrap — reimplemented here as the baseline.

Truths: each campaign is simulated under two laws: for the cluster, Epoch's refit and Chinchilla's Approach 3
(their exponents differ, so a fit that borrows Epoch's exponents is tested against a truth that does not have
them); for the quickstart, two byte-level laws measured on its real runs and held to the optimum its ground truth
measured (`measured_truth`). Each result row is one (design, ladder, truth, noise); rows with ``truth: "all"``
pool the truths. The loss columns use the engine's own prediction (`Conclusion.predict`: the law, or the largest
bracketed IsoFLOP minimum carried by it); ``median_law_loss_error`` and ``anchored`` put the law's alone beside it.

The start grid is the coarse 243-start grid unless ``--grid hoffmann`` (the engine's 4500): on these designs
both find the same optimum (``grid_check`` in the output gives the largest relative parameter difference on one
draw per design). Usage:

    python benchmarks/calibration.py --design quickstart --reps 200 --json
    python benchmarks/calibration.py --design cluster-1e20 --reps 200 --noise 0.005,0.01,0.02 --json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from flopwise.api.load import parse_campaign
from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import PlannedRun, RunRecord
from flopwise.engine import records as build
from flopwise.engine.conclude import PRIOR_EXPONENT_SD, allocation_exponent, conclude_ladder, endpoints
from flopwise.fitting.bootstrap import bootstrap, bootstrap_parametric_many, noise_model
from flopwise.fitting.fit import COARSE_GRID, HOFFMANN_GRID, fit_law_many, fit_points
from flopwise.fitting.hygiene import clean, run_weights
from flopwise.fitting.points import FitPoints
from flopwise.planning.laws import CHINCHILLA_3, EPOCH, PowerLawAllocation, ScalingLaw, allocation_rule
from flopwise.planning.plan import _Planner, final_budget, plan_campaign, plan_final
from flopwise.simulate import CurveModel, edge_headroom, finish, ladder_with_edges

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_RECORDS = ROOT / "tests" / "data" / "quickstart-ladder-2026-11-29.json"


def measured_truth(exponent: float, alpha: float) -> ScalingLaw:
    """A byte-level law measured on the quickstart's real runs (``QUICKSTART_RECORDS``: its 17 ladder and seed
    endpoints, and the five models trained for real for the whole budget, 8.55e12 FLOPs). The five-parameter fit
    of those 22 points is not identified (E at its bound, α = 0.12), so the truth is the Chinchilla-form law
    closest to them (least squares in log loss over E and A) whose N_opt grows as C^``exponent`` and passes
    through the optimum the ground truth measured (125K params at 8.55e12 FLOPs), with α = ``alpha`` and β from
    the exponent (β / (α + β) = exponent)."""
    from scipy.optimize import minimize

    doc = json.loads(QUICKSTART_RECORDS.read_text())
    points = endpoints([RunRecord.model_validate(r) for r in doc["runs"]]).points
    truth = doc["groundTruth"]
    sizes = truth["sizes"] + [truth["recommended"]]
    n = np.concatenate([points.params, [s["params"] for s in sizes]]).astype(float)
    d = np.concatenate([points.tokens, [s["tokens"] for s in sizes]]).astype(float)
    loss = np.log(np.concatenate([points.loss, [s["finalValLoss"] for s in sizes]]))
    beta = alpha * exponent / (1 - exponent)
    scale = measured_optimum(truth) / (truth["flops"] / 6) ** exponent  # N_opt = scale · (C/6)^exponent

    def law(x: np.ndarray) -> ScalingLaw:
        big_a = math.exp(x[1])  # the allocation fixes B given A: scale = (αA / βB)^(1/(α+β))
        return ScalingLaw(E=math.exp(x[0]), A=big_a, B=alpha * big_a / (beta * scale ** (alpha + beta)),
                          alpha=alpha, beta=beta, name=f"byte-level-{exponent:g}")

    best = min((minimize(lambda x: float(np.sum((np.log(law(x).loss(n, d)) - loss) ** 2)), [e0, a0],
                         method="Nelder-Mead") for e0 in (-2.0, -0.5, 0.0) for a0 in (0.0, 2.0, 4.0)),
               key=lambda r: r.fun)
    return law(best.x)


def measured_optimum(truth: dict) -> float:
    """The compute-optimal size the ground truth measured: the vertex of a parabola through the four sizes'
    (log N, log loss), all trained for the same FLOPs (≈ 125K params)."""
    x = np.log([s["params"] for s in truth["sizes"]])
    y = np.log([s["finalValLoss"] for s in truth["sizes"]])
    curve, slope, _ = np.polyfit(x, y, 2)
    return float(math.exp(-slope / (2 * curve)))


@functools.cache
def truths(design: str) -> dict[str, ScalingLaw]:
    """The cluster campaign: Epoch's refit and Chinchilla's Approach 3 (exponents 0.46 and 0.50 of N_opt(C), and
    a fit borrowing Epoch's meets a truth that does not have them). The quickstart: two laws measured on its real
    runs (`measured_truth`), N_opt ∝ C^0.5 (α = β = 0.4, the better fit of the two) and C^0.45 (α = 0.4)."""
    if design == "cluster-1e20":
        return {"epoch": EPOCH, "chinchilla-3": CHINCHILLA_3}
    return {"byte-level": measured_truth(0.5, 0.4), "byte-level-0.45": measured_truth(0.45, 0.4)}


LEGACY_EARLY_FRACTION = 0.5


def campaign_spec(design: str, ladder: str | None = None) -> TrainingCampaignSpec:
    """The spec of a named campaign, with ``ladder`` as its ladder design (None: its own)."""
    if design == "quickstart":
        doc = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    else:
        doc = yaml.safe_load((ROOT / "examples" / "cluster-h100-50k.yaml").read_text())
        doc["spec"]["budget"] = {"flops": 1e20, "split": doc["spec"]["budget"]["split"],
                                 "margin": doc["spec"]["budget"].get("margin", 0.05)}
    if ladder in ("isoflop", "wsd"):
        doc["spec"].setdefault("ladder", {})["design"] = ladder
        if ladder == "wsd":
            doc["spec"].setdefault("tuning", {})["schedule"] = "wsd"
    return parse_campaign(doc).spec


def default_ladder(design: str) -> str:
    return campaign_spec(design).ladder.design


# -- today's design (commit 83a8ae9), the baseline ----------------------------------------------------------
def legacy_runs(spec: TrainingCampaignSpec) -> list[PlannedRun]:
    """Five sizes log-uniform up to the largest the ladder share pays for, each at its compute-optimal tokens
    under the prior (plus seed replicas of the smallest), as the planner did at commit 83a8ae9."""
    from flopwise.planning.ladder import largest_within

    planner = _Planner(spec, allocation_rule(spec.law))
    usable = final_budget(spec) if spec.budget.split.final == 0 else final_budget(spec) / spec.budget.split.final
    allotted = spec.budget.split.ladder * usable
    floor = planner.floor()
    cfg = spec.ladder

    def runs_at(largest: float) -> list[PlannedRun]:
        smallest = max(floor, largest / cfg.spread)
        shapes = {}
        for i in range(cfg.sizes):
            shape = planner.shape(smallest * (largest / smallest) ** (i / (cfg.sizes - 1)))
            shapes.setdefault((shape.n_layer, shape.d_model), shape)
        return [planner.run(f"ladder-{i:02d}", "ladder", s, planner.optimal_tokens(s))
                for i, s in enumerate(sorted(shapes.values(), key=lambda s: s.param_count()))]

    def cost(largest: float) -> float:
        runs = runs_at(largest)
        return sum(r.flops for r in runs) + 2 * runs[0].flops if len(runs) >= cfg.sizes else math.inf

    low = floor * 2.0
    while cost(low) == math.inf:
        low *= 1.25
    return runs_at(largest_within(cost, allotted, low, max(low, planner.target(final_budget(spec)).params / 2)))


def legacy_records(spec: TrainingCampaignSpec) -> list[RunRecord]:
    runs = legacy_runs(spec)
    return [build.record(r, lr=0.003, warmup_fraction=0.02, seed=0,
                         schedule_spec=build.schedule("cosine", r.steps, round(0.02 * r.steps), 0.2)) for r in runs]


def legacy_conclusion(done: list[RunRecord], flops: float, resamples: int, seed: int, fits: dict) -> dict:
    """Today's fit: checkpoints past half of each run, mode by backtest ARE, run-level bootstrap."""
    cleaned = legacy_points(done)
    mode = min(fits["scores"], key=fits["scores"].get)
    fit = fits[mode]
    with np.errstate(all="ignore"):
        boot = bootstrap(cleaned.points, fit, n_resamples=resamples, weights=cleaned.weights, seed=seed)
    draws = []
    for law in boot.laws():
        try:
            draws.append(law.compute_optimal(flops).params)
        except ValueError:
            continue
    low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5])) if len(draws) >= 10 else (None, None)
    try:
        params_hat = fit.law.compute_optimal(flops).params
    except ValueError:
        params_hat = math.nan
    identified = fit.law.E > 1e-3 and low is not None and high / low <= 10
    return dict(law=fit.law, laws=boot.laws(), params=params_hat, low=low, high=high, identified=identified,
                basis=mode)


def legacy_points(done: list[RunRecord]):
    params, tokens, losses, runs = [], [], [], []
    for r in done:
        for p in r.result.curve:  # type: ignore[union-attr]
            if p.tokens >= LEGACY_EARLY_FRACTION * r.tokens:
                params.append(r.params)
                tokens.append(p.tokens)
                losses.append(p.val_loss)
                runs.append(r.run_id)
    return clean(FitPoints.from_arrays(params, tokens, losses, runs, validate=False), min_tokens=0.0)


def legacy_fits(sets: list, grid) -> list[dict]:
    """Today's two candidate fits and their backtest AREs (largest size held out), for every rep at once."""
    first = sets[0].points
    losses = np.stack([c.points.loss for c in sets])
    out: list[dict] = [{"scores": {}} for _ in sets]
    held = first.params == first.params.max()
    train = ~held
    targets = held & np.array([t >= 0.7 * first.tokens[first.run == r].max() for t, r in zip(first.tokens, first.run,
                                                                                            strict=True)])
    for mode, fixed in (("full", None), ("borrowed", (EPOCH.alpha, EPOCH.beta))):
        weights = sets[0].weights
        with np.errstate(all="ignore"):
            whole = fit_law_many(first.params, first.tokens, losses, weights=weights, fixed_exponents=fixed, grid=grid)
            part = fit_law_many(first.params[train], first.tokens[train], losses[:, train],
                                weights=run_weights(first.subset(train)), fixed_exponents=fixed, grid=grid)
        for i, (fw, fp) in enumerate(zip(whole, part, strict=True)):
            out[i][mode] = fw
            pred = np.array([fp.law.loss(n, d) for n, d in zip(first.params[targets], first.tokens[targets],
                                                                 strict=True)])
            actual = losses[i, targets]
            out[i]["scores"][mode] = float(np.mean(np.abs(actual - pred) / actual))
    return out


def batch_fits(runs: list[list[RunRecord]], grid, resamples: int, seeds: list[int] | None = None) -> list[dict]:
    """The full and borrowed-exponent fits of every rep's endpoints (same N and D, other losses) and their
    parametric bootstraps, each batched over the reps: what `conclude_ladder` would compute rep by rep."""
    ends = [endpoints(done) for done in runs]
    first = ends[0].points
    losses = np.stack([e.points.loss for e in ends])
    floors = [_seed_floor(done) for done in runs]
    out: list[dict] = [{"fits": {}, "boots": {}} for _ in runs]
    for mode, fixed in (("full", None), ("borrowed", (EPOCH.alpha, EPOCH.beta))):
        with np.errstate(all="ignore"):
            fits = fit_law_many(first.params, first.tokens, losses, fixed_exponents=fixed, grid=grid)
            noises = [noise_model(e.points, f, e.groups, floor) for e, f, floor in zip(ends, fits, floors,
                                                                                   strict=True)]
            boots = bootstrap_parametric_many(first, fits, noises, n_resamples=resamples, groups=ends[0].groups,
                                              seeds=seeds or list(range(len(runs))),
                                              exponent_sd=PRIOR_EXPONENT_SD)
        for i, (f, b) in enumerate(zip(fits, boots, strict=True)):
            out[i]["fits"][mode], out[i]["boots"][mode] = f, b
    return out


# -- one rep --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    design: str
    ladder: str  # isoflop | wsd | today
    truth: str
    noise: float
    rep: int
    resamples: int


@functools.cache
def campaign(design: str, ladder: str) -> tuple[TrainingCampaignSpec, list[RunRecord]]:
    """The campaign's spec and the ladder records the engine would make (cached per process)."""
    spec = campaign_spec(design, None if ladder == "today" else ladder)
    if ladder == "today":
        return spec, legacy_records(spec)
    plan = plan_campaign(spec)
    return spec, ladder_records(spec, plan.ladder.runs)


def ladder_records(spec: TrainingCampaignSpec, runs: list[PlannedRun]) -> list[RunRecord]:
    return build.ladder_records(runs, kind=spec.tuning.schedule, lr_for=lambda _: 0.003,
                                warmup_fraction=spec.tuning.warmup_fractions[0],
                                decay_fraction=spec.tuning.decay_fraction, seed=0)


@functools.cache
def headroom(design: str, ladder: str) -> float:
    return edge_headroom(campaign_spec(design, ladder))


def simulate(job: Job) -> list[RunRecord]:
    """The rep's ladder as the engine would run it (IsoFLOP edge sizes included: `simulate.ladder_with_edges`)."""
    spec, recs = campaign(job.design, job.ladder)
    model = CurveModel(truth=truths(job.design)[job.truth], noise=job.noise)
    rng = np.random.default_rng(10_000 * job.rep + 17)
    if job.ladder == "today":
        return finish(model, recs, rng)
    return ladder_with_edges(spec, recs, model, rng, headroom(job.design, job.ladder))


def target_for(spec: TrainingCampaignSpec, params: float, exponent: float) -> tuple[int, int]:
    """The recommended (N, D) the engine would re-plan to for an allocation of ``params`` growing as C^exponent."""
    rule = PowerLawAllocation(params_exponent=exponent, anchor_params=params, anchor_flops=final_budget(spec),
                              name="campaign")
    target, _ = plan_final(spec, rule)
    return target.params, target.tokens


def run_job(item: tuple[Job, dict]) -> dict:
    job, fits = item
    spec, _ = campaign(job.design, job.ladder)
    truth = truths(job.design)[job.truth]
    flops = final_budget(spec)
    true_params = truth.compute_optimal(flops).params
    done = simulate(job)
    t0 = time.perf_counter()
    if job.ladder == "today":
        found = legacy_conclusion(done, flops, job.resamples, job.rep, fits)
        params, low, high = found["params"], found["low"], found["high"]
        law, laws, identified, basis = found["law"], found["laws"], found["identified"], found["basis"]
        exponent = allocation_exponent(law.alpha, law.beta, None)
    else:
        found = conclude_ladder(done, flops=flops, prior=allocation_rule(spec.law), resamples=job.resamples,
                                seed=job.rep, floor_sd=_seed_floor(done), backtest_holdout=False,
                                fits=fits["fits"], boots=fits["boots"])
        alloc = found.allocation
        params, low, high = alloc.params, alloc.params_low, alloc.params_high
        law, laws, identified, basis = found.law, found.bootstrap_laws, alloc.identified, alloc.basis
        exponent = allocation_exponent(law.alpha, law.beta, alloc)
    row = dict(params=params, true_params=true_params, low=low, high=high, identified=identified, basis=basis)
    loss_ok = None
    if math.isfinite(params) and params > 0:
        n, d = target_for(spec, params, exponent)
        true_loss = truth.loss(n, d)
        if job.ladder == "today":
            draws = np.array([x.loss(n, d) for x in laws]) if laws else np.array([])
            draws = draws[np.isfinite(draws)]
            predicted, lo, hi = law.loss(n, d), *(np.percentile(draws, [2.5, 97.5]) if draws.size >= 10
                                                  else (None, None))
        else:  # the engine's own prediction (the law, or an IsoFLOP minimum carried by it)
            made = found.predict(n, d)
            predicted, lo, hi = made.loss, made.loss_low, made.loss_high
        if lo is not None and hi is not None:
            loss_ok = bool(lo <= true_loss <= hi)
        row["loss_error"] = abs(predicted / true_loss - 1)
        row["law_loss_error"] = abs(law.loss(n, d) / true_loss - 1)  # the law alone: the baseline of the anchor
    row["loss_ok"] = loss_ok
    row["seconds"] = time.perf_counter() - t0
    return row


def fits_for(jobs: list[Job], grid) -> list[dict]:
    """Batch-fit the candidate laws of a group of reps that share one design: reps whose ladders took the same
    edge sizes share one batch (a batch needs the same N and D)."""
    done = [simulate(job) for job in jobs]
    if jobs[0].ladder == "today":
        return legacy_fits([legacy_points(d) for d in done], grid)
    batches: dict[tuple, list[int]] = {}
    for i, runs in enumerate(done):
        batches.setdefault(tuple((r.run_id, r.params, r.trajectory_tokens) for r in runs), []).append(i)
    out: list[dict] = [{} for _ in jobs]
    for members in batches.values():
        fitted_all = batch_fits([done[i] for i in members], grid, jobs[0].resamples, [jobs[i].rep for i in members])
        for i, fitted in zip(members, fitted_all, strict=True):
            out[i] = fitted
    return out


def _seed_floor(done: list[RunRecord]) -> float | None:
    seeds = [r for r in done if r.role == "seed"]
    if not seeds:
        return None
    same = [r for r in done if r.shape == seeds[0].shape and r.trajectory_tokens == seeds[0].trajectory_tokens]
    losses = np.array([r.result.final_val_loss for r in same])  # type: ignore[union-attr]
    return float(losses.std(ddof=1) / losses.mean()) if losses.size >= 2 else None


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return float(np.median(values)) if values else None


def summarise(rows: list[dict], **keys: object) -> dict:
    covered = [r["low"] is not None and r["high"] is not None and r["low"] <= r["true_params"] <= r["high"]
               for r in rows]
    loss = [r["loss_ok"] for r in rows if r["loss_ok"] is not None]
    errors = [abs(r["params"] / r["true_params"] - 1) for r in rows if math.isfinite(r["params"])]
    anchored = [r for r in rows if r["basis"] in ("approach-2", "approach-2-borrowed")]
    bases: dict[str, int] = {}
    for r in rows:
        bases[r["basis"]] = bases.get(r["basis"], 0) + 1
    return {**keys, "reps": len(rows), "coverage_nopt": float(np.mean(covered)),
            "coverage_loss": float(np.mean(loss)) if loss else None,
            "median_abs_nopt_error": float(np.median(errors)) if errors else None,
            "identified_share": float(np.mean([bool(r["identified"]) for r in rows])),
            "median_loss_error": _median(rows, "loss_error"), "median_law_loss_error": _median(rows, "law_loss_error"),
            "anchored": {"reps": len(anchored), "median_loss_error": _median(anchored, "loss_error"),
                         "median_law_loss_error": _median(anchored, "law_loss_error"),
                         "coverage_loss": float(np.mean([r["loss_ok"] for r in anchored if r["loss_ok"] is not None]))
                         if anchored else None},
            "bases": bases, "seconds_per_rep": float(np.mean([r["seconds"] for r in rows]))}


def grid_check(design: str, ladder: str) -> float:
    """Largest relative difference of the five parameters between the coarse and Hoffmann's grid on one draw."""
    spec = campaign_spec(design, ladder)
    plan = plan_campaign(spec)
    recs = build.ladder_records(plan.ladder.runs, kind=spec.tuning.schedule, lr_for=lambda _: 0.003,
                                warmup_fraction=0.02, decay_fraction=spec.tuning.decay_fraction, seed=0)
    truth = next(iter(truths(design).values()))
    done = finish(CurveModel(truth=truth, noise=0.01), recs, np.random.default_rng(0))
    pts = FitPoints.from_arrays([r.params for r in done], [r.trajectory_tokens for r in done],
                                [r.result.final_val_loss for r in done], validate=False)  # type: ignore[union-attr]
    a, b = fit_points(pts, grid=COARSE_GRID).law, fit_points(pts, grid=HOFFMANN_GRID).law
    return max(abs(getattr(a, k) / getattr(b, k) - 1) for k in ("E", "A", "B", "alpha", "beta"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--design", choices=["quickstart", "cluster-1e20"], default="quickstart")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--noise", default="0.01", help="comma-separated relative seed noise levels")
    ap.add_argument("--ladders", default="isoflop,wsd,today", help="designs to simulate")
    ap.add_argument("--truths", default=None, help="comma-separated truth names (default: all of the campaign's)")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--grid", choices=["coarse", "hoffmann"], default="coarse")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object {\"results\": [...]}")
    args = ap.parse_args()
    noises = [float(v) for v in args.noise.split(",")]
    ladders = args.ladders.split(",")
    names = args.truths.split(",") if args.truths else list(truths(args.design))
    default = default_ladder(args.design)
    grid = HOFFMANN_GRID if args.grid == "hoffmann" else COARSE_GRID
    jobs = [Job(args.design, ladder, truth, noise, rep, args.resamples)
            for ladder in ladders for truth in names for noise in noises for rep in range(args.reps)]
    started = time.perf_counter()
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for ladder in ladders:
            for truth in names:
                for noise in noises:
                    group = [j for j in jobs if (j.ladder, j.truth, j.noise) == (ladder, truth, noise)]
                    fits = fits_for(group, grid)
                    rows += list(pool.map(run_job, zip(group, fits, strict=True), chunksize=4))
                    print(f"{ladder} {truth} {noise}: {len(group)} reps, {time.perf_counter() - started:.0f} s",
                          file=sys.stderr, flush=True)
    results = []
    for ladder in ladders:
        for noise in noises:
            sel = [(j, r) for j, r in zip(jobs, rows, strict=True) if j.ladder == ladder and j.noise == noise]
            base = dict(design=args.design, ladder=ladder if ladder != "today" else "today (83a8ae9)",
                        default=ladder == default, noise=noise)
            for truth in names:
                results.append(summarise([r for j, r in sel if j.truth == truth], **base, truth=truth))
            results.append(summarise([r for _, r in sel], **base, truth="all"))
    checks = {ladder: grid_check(args.design, ladder) for ladder in ladders if ladder != "today"}
    out = {"results": results, "grid": args.grid, "resamples": args.resamples, "grid_check": checks,
           "seconds": time.perf_counter() - started}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    for row in results:
        print(f"{row['design']:<13} {row['ladder']:<16} {row['truth']:<17} noise {row['noise']:.3f}: "
              f"coverage N_opt {row['coverage_nopt']:.2f} loss {row['coverage_loss'] or float('nan'):.2f}  "
              f"median |N_opt error| {row['median_abs_nopt_error'] or float('nan'):.1%}  "
              f"identified {row['identified_share']:.2f}  {row['bases']}")
    print(f"grid check {checks}; {out['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
