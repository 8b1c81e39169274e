"""`flopwise fit POINTS.csv`: fit L(N, D) = E + A/N^α + B/D^β to a campaign's losses (numpy/scipy only).

Columns ``params,tokens,loss`` and optionally ``run``, ``step`` (checkpoints of one run share a run id).
Bad input prints one ``error: …`` line naming the problem and exits with code 2.
"""

from __future__ import annotations

import json
import math

import click

from flopwise.cli import fmt

PARAMETERS = ("E", "A", "B", "alpha", "beta")


class FitUsageError(click.ClickException):
    """A bad points file: shown as one ``error: …`` line, exit code 2, by click and by ``flopwise.cli.main``."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def _min_tokens(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        out = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number nor 'auto'") from None
    if not (math.isfinite(out) and out >= 0):
        raise click.BadParameter(f"must be ≥ 0, got {value}")
    return out


@click.command("fit")
@click.argument("points_csv", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bootstrap resamples for confidence intervals (0: none). Whole runs are resampled when "
                   "runs have several checkpoints.")
@click.option("--level", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="Confidence level of the percentile intervals.")
@click.option("--holdout-largest", is_flag=True,
              help="Also backtest: fit without the largest size and report the ARE on its final (≥ 0.7 of max "
                   "tokens) checkpoints.")
@click.option("--min-tokens", default=None, metavar="TOKENS|auto",
              help="Drop checkpoints with tokens ≤ this ('auto': 4% of the shortest run's final tokens).")
@click.option("--balance", is_flag=True, help="Weight each run's points 1/count so long runs do not swamp short ones.")
@click.option("--mode", type=click.Choice(["auto", "full", "borrowed"]), default="auto", show_default=True,
              help="borrowed: fit E, A, B with Epoch's α, β; auto: borrowed below 5 sizes or 15 points.")
@click.option("--budget-flops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Also report the compute-optimal N, D and loss at this budget.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def command(points_csv: str, as_json: bool, n_boot: int, level: float, holdout_largest: bool,
            min_tokens: str | None, balance: bool, mode: str, budget_flops: float | None, seed: int) -> None:
    """Fit a scaling law to POINTS_CSV (Hoffmann/Epoch Huber fit from a 4500-start grid)."""
    from flopwise.fitting.points import FitInputError

    try:
        report = _fit(points_csv, n_boot, level, holdout_largest, _min_tokens(min_tokens), balance, mode,
                      budget_flops, seed)
    except FitInputError as error:
        raise FitUsageError(str(error)) from None
    click.echo(json.dumps(report, indent=2) if as_json else _table(report))


def _fit(path: str, n_boot: int, level: float, holdout: bool, min_tokens: float | str | None, balance: bool,
         mode: str, budget: float | None, seed: int) -> dict:
    from flopwise.fitting.backtest import backtest
    from flopwise.fitting.bootstrap import bootstrap
    from flopwise.fitting.fit import fit_points
    from flopwise.fitting.hygiene import campaign_min_tokens, clean
    from flopwise.fitting.points import load_points_csv

    raw = load_points_csv(path)
    cut = campaign_min_tokens(raw) if min_tokens == "auto" else (min_tokens or 0.0)
    cleaned = clean(raw, min_tokens=cut, balance=balance)
    points = cleaned.points
    fit = fit_points(points, weights=cleaned.weights, mode=mode)  # type: ignore[arg-type]
    law = fit.law
    report: dict = {name: getattr(law, name) for name in PARAMETERS}
    report.update(objective=fit.objective, n_points=fit.n_points, mode=fit.mode, converged=fit.converged, ci={})
    report["hygiene"] = {"min_tokens": cleaned.min_tokens, "dropped_runs": cleaned.dropped_runs,
                         "n_dropped_early": cleaned.n_dropped_early, "balanced": balance}
    boot = None
    if n_boot:
        boot = bootstrap(points, fit, n_resamples=n_boot, weights=cleaned.weights, level=level, seed=seed)
        report["ci"] = {k: [v.low, v.high] for k, v in boot.parameter_intervals().items()}
        report["bootstrap"] = {"n_resamples": n_boot, "level": level, "by_run": boot.by_run,
                               "n_converged": boot.n_converged, "seed": seed}
    if budget is not None:
        opt = law.compute_optimal(budget)
        report["optimum"] = {"flops": budget, "params": opt.params, "tokens": opt.tokens, "loss": opt.loss,
                             "tokens_per_param": opt.tokens_per_param}
        if boot is not None:
            report["optimum"]["ci"] = {k: [v.low, v.high] for k, v in boot.optimum_intervals(budget).items()}
    if holdout:
        bt = backtest(cleaned.points, balance=balance, mode=mode)  # diverged runs and early checkpoints already out
        report["backtest"] = bt.as_dict()
    return report


def _table(report: dict) -> str:
    ci = report["ci"]
    rows = [[name, f"{report[name]:.5g}", *(f"{v:.5g}" for v in ci[name])] if name in ci
            else [name, f"{report[name]:.5g}", "-", "-"] for name in PARAMETERS]
    level = report.get("bootstrap", {}).get("level", 0.95)
    lines = [fmt.table(rows, ["param", "fit", f"{level:.0%} low", "high"]),
             f"{report['n_points']} points, mode {report['mode']}, objective {report['objective']:.6g}"
             + ("" if report["converged"] else " (optimiser did not converge)")]
    hyg = report["hygiene"]
    if hyg["dropped_runs"] or hyg["n_dropped_early"]:
        lines.append(f"dropped: runs {hyg['dropped_runs'] or 'none'}, {hyg['n_dropped_early']} points with tokens "
                     f"≤ {hyg['min_tokens']:.3g}")
    if "optimum" in report:
        o = report["optimum"]
        text = (f"at C = {o['flops']:.3g} FLOPs: N_opt {fmt.count(o['params'])}, D_opt {fmt.count(o['tokens'])} "
                f"({o['tokens_per_param']:.1f} tokens/param), loss {o['loss']:.4f}")
        if "ci" in o:
            c = o["ci"]
            text += (f"\n  CI: N {fmt.count(c['params'][0])}–{fmt.count(c['params'][1])}, "
                     f"D {fmt.count(c['tokens'][0])}–{fmt.count(c['tokens'][1])}, "
                     f"loss {c['loss'][0]:.4f}–{c['loss'][1]:.4f}")
        lines.append(text)
    if "backtest" in report:
        b = report["backtest"]
        lines.append(f"backtest: largest size {fmt.count(b['held_out_params'][0])} held out, ARE {b['are']:.2%} "
                     f"on {b['n_targets']} checkpoints (max {b['max_relative_error']:.2%})")
    return "\n".join(lines)
