"""The report's figures, drawn from a campaign status with matplotlib's object API on the Agg canvas.

matplotlib is imported inside `_figure` only, so importing `flopwise.report` (and the operator image, which has no
matplotlib) never needs it; pyplot is never used, so the caller's backend and global state are left alone.
Each `plot_*` function returns the file it wrote, or None when the status holds nothing to draw yet.

Compute on the loss-vs-compute axis is C = 6·N·D, the convention the law's compute-optimal frontier is solved
under, so runs, per-size law curves, frontier and target are placed consistently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import RunRecord, TrainingCampaignStatus
from flopwise.planning.laws import ScalingLaw
from flopwise.report import fmt

DPI = 110
LOSS_LABEL = "validation loss (nats/token)"

LOSS_VS_COMPUTE = "loss_vs_compute.png"
LADDER_CURVES = "ladder_curves.png"
ROUND1_SWEEP = "round1_sweep.png"
BUDGET_BURNDOWN = "budget_burndown.png"
ROUND2_CURVES = "round2_curves.png"
LR_TRANSFER = "lr_transfer.png"
ISOFLOP = "isoflop_profiles.png"


def _figure(width: float = 7.5, height: float = 4.8) -> Any:
    """A Figure on an Agg canvas (lazy import; no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _colormap(name: str = "viridis") -> Any:
    from matplotlib import colormaps

    return colormaps[name]


def _log_x(ax: Any, short: Callable[[float], str] | None = None) -> None:
    """Log x-axis with readable labels: ``short`` for decades ('100K'), and 2× / 5× ticks labelled only when the
    axis spans under two decades (matplotlib's default labels every minor tick there, and they collide)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    if short is not None:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    low, high = ax.get_xlim()
    if low > 0 and high > low and math.log10(high / low) < 2:
        label = short or (lambda v: f"{v:.2g}")

        def minor(v: float, _: Any) -> str:
            mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
            return label(v) if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""

        ax.xaxis.set_minor_formatter(FuncFormatter(minor))
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(framealpha=0.9, **kwargs)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def status_law(status: TrainingCampaignStatus) -> ScalingLaw | None:
    """The campaign's fitted law, or None when there is none (or it cannot be evaluated)."""
    law = status.law
    if law is None:
        return None
    values = (law.E, law.A, law.B, law.alpha, law.beta)
    if not all(_finite(v) for v in values) or law.alpha <= 0 or law.beta <= 0 or law.A <= 0 or law.B <= 0:
        return None
    return ScalingLaw(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta, name="fitted")


def _curve(record: RunRecord) -> list[tuple[int, float]]:
    """(tokens, val loss) of a run: its eval curve, plus its final loss if the curve stops short of it."""
    result = record.result
    if result is None:
        return []
    points = [(p.tokens, p.val_loss) for p in result.curve if p.tokens > 0 and math.isfinite(p.val_loss)]
    final = result.final_val_loss
    if _finite(final) and result.tokens > 0 and (not points or points[-1][0] < result.tokens):
        points.append((result.tokens, final))
    return sorted(points)


def _succeeded(status: TrainingCampaignStatus, role: str) -> list[RunRecord]:
    return sorted((r for r in status.runs if r.role == role and r.state == "Succeeded" and r.result is not None),
                  key=lambda r: (r.params, r.run_id))


def _size_colours(params: Iterable[int]) -> dict[int, Any]:
    sizes = sorted(set(params))
    cmap = _colormap()
    if len(sizes) == 1:
        return {sizes[0]: cmap(0.35)}
    lo, hi = math.log(sizes[0]), math.log(sizes[-1])
    return {n: cmap(0.9 * (math.log(n) - lo) / (hi - lo)) for n in sizes}


def _target(status: TrainingCampaignStatus) -> tuple[float, float] | None:
    """(params, tokens) of the model the campaign recommends or plans."""
    if status.prediction is not None and status.prediction.params > 0 and status.prediction.tokens > 0:
        return status.prediction.params, status.prediction.tokens
    if status.recommendation is not None:
        return float(status.recommendation.params), float(status.recommendation.tokens)
    if status.plan is not None:
        return float(status.plan.target.params), float(status.plan.target.tokens)
    return None


def _safe(fn: Callable[[], float]) -> float | None:
    try:
        value = fn()
    except (ArithmeticError, ValueError):
        return None
    return value if _finite(value) else None


def _endpoints(status: TrainingCampaignStatus) -> list[RunRecord]:
    """The runs the law is fitted to: finished ladder runs and seed replicas, each one annealed point."""
    return sorted((r for r in status.runs if r.role in ("ladder", "seed") and r.state == "Succeeded"
                   and r.result is not None and _finite(r.result.final_val_loss)), key=lambda r: (r.params, r.run_id))


def plot_loss_vs_compute(status: TrainingCampaignStatus, path: Path) -> Path | None:
    """Each ladder run's annealed final loss (the fit's points), the fitted law along each size's token range,
    the compute-optimal frontier and the target with its interval."""
    runs = _endpoints(status)
    law = status_law(status)
    if not runs and law is None:
        return None
    fig = _figure(8.0, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = _size_colours(r.params for r in runs) if runs else {}
    observed: list[float] = []
    xs_all: list[float] = []
    by_size: dict[int, list[RunRecord]] = {}
    for record in runs:
        by_size.setdefault(record.params, []).append(record)
    for params, records in sorted(by_size.items()):
        colour = colours[params]
        xs = [6.0 * params * r.trajectory_tokens for r in records]
        ys = [r.result.final_val_loss for r in records]  # type: ignore[union-attr]
        observed += ys
        xs_all += xs
        ax.scatter(xs, ys, s=22, color=colour, edgecolors="none", alpha=0.9, zorder=3,
                   label=f"N = {fmt.count(params)} params")
        if law is not None:
            t0, t1 = min(r.trajectory_tokens for r in records) / 1.5, max(r.trajectory_tokens for r in records) * 1.5
            tokens = [t0 * (t1 / t0) ** (i / 63) for i in range(64)]
            fitted = [(6.0 * params * t, _safe(lambda t=t, n=params: law.loss(n, t))) for t in tokens]
            fitted = [(x, y) for x, y in fitted if y is not None]
            if fitted:
                ax.plot([x for x, _ in fitted], [y for _, y in fitted], color=colour, linewidth=1.1, alpha=0.7,
                        zorder=2)
    target = _target(status)
    target_c = 6.0 * target[0] * target[1] if target else None
    if law is not None:
        low_c = min(xs_all) if xs_all else (target_c / 1e4 if target_c else 1e12)
        high_c = max(max(xs_all) if xs_all else low_c, target_c or low_c) * 1.5
        low_c = min(low_c, high_c / 100)
        frontier = []
        for i in range(96):
            c = low_c * (high_c / low_c) ** (i / 95)
            optimum = _safe(lambda c=c: law.compute_optimal(c).loss)
            if optimum is not None:
                frontier.append((c, optimum))
        if frontier:
            ax.plot([c for c, _ in frontier], [y for _, y in frontier], color="black", linestyle="--",
                    linewidth=1.4, zorder=4, label="compute-optimal frontier L(N_opt(C), D_opt(C))")
            observed += [y for c, y in frontier if not xs_all or c >= min(xs_all)]
    prediction = status.prediction
    if target_c and prediction is not None and _finite(prediction.loss):
        low, high = prediction.loss_low, prediction.loss_high
        if _finite(low) and _finite(high):
            yerr = [[max(prediction.loss - low, 0.0)], [max(high - prediction.loss, 0.0)]]
            interval = f", 95% CI {low:.3f}–{high:.3f}"
            observed += [low, high]
        else:
            yerr, interval = None, " (no interval)"
        ax.errorbar([target_c], [prediction.loss], yerr=yerr, fmt="*", color="crimson", markersize=13, capsize=5,
                    elinewidth=1.6, zorder=5,
                    label=f"target {fmt.count(target[0])} params: predicted {prediction.loss:.3f}{interval}")
        observed.append(prediction.loss)
    _log_x(ax)
    if observed:
        lo, hi = min(observed), max(observed)
        pad = 0.06 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("compute C = 6·N·D (FLOPs)")
    ax.set_ylabel(LOSS_LABEL)
    title = ("Annealed ladder endpoints, fitted law and compute-optimal frontier" if law
             else "Annealed ladder endpoints (no law fitted yet)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    _legend(ax, fontsize=7.5, loc="upper right")
    return _save(fig, path)


def _curves_plot(records: list[RunRecord], path: Path, title: str, label: Callable[[RunRecord], str],
                 mark_best: bool = False) -> Path | None:
    curves = [(r, _curve(r)) for r in records]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    colours = _size_colours(r.params for r, _ in curves)
    by_size = len(colours) > 1
    cmap = _colormap("tab10")
    for i, (record, curve) in enumerate(curves):
        colour = colours[record.params] if by_size else cmap(i % 10)
        failed = record.state != "Succeeded"
        ax.plot([t for t, _ in curve], [y for _, y in curve], marker="o", markersize=3, linewidth=1.4,
                color=colour, linestyle="--" if failed else "-",
                label=label(record) + (f" ({record.state.lower()})" if failed else ""))
        result = record.result
        if mark_best and result is not None and result.best_tokens and _finite(result.best_val_loss):
            ax.plot([result.best_tokens], [result.best_val_loss], marker="*", markersize=12, color=colour,
                    markeredgecolor="black", linestyle="none", zorder=5)
    _log_x(ax, fmt.count)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    _legend(ax, fontsize=8, loc="upper right")
    return _save(fig, path)


def _shape_label(record: RunRecord) -> str:
    return f"{fmt.count(record.params)} params ({record.shape.n_layer}×{record.shape.d_model})"


def plot_ladder_curves(status: TrainingCampaignStatus, path: Path) -> Path | None:
    records = sorted((r for r in status.runs if r.role == "ladder" and r.result is not None),
                     key=lambda r: (r.params, r.run_id))
    return _curves_plot(records, path, "Ladder: validation loss during training", _shape_label)


def plot_round2_curves(status: TrainingCampaignStatus, path: Path) -> Path | None:
    records = [r for r in status.runs if r.role == "round2" and r.result is not None]

    def label(r: RunRecord) -> str:
        return f"{r.run_id}: lr {r.learning_rate:.3g}, warmup {r.warmup_fraction:g}"

    return _curves_plot(records, path, "Round 2: full-length runs (★ best checkpoint)", label, mark_best=True)


def _sweep_loss(record: RunRecord) -> float | None:
    result = record.result
    if record.state != "Succeeded" or result is None or result.status != "succeeded":
        return None
    return result.final_val_loss if _finite(result.final_val_loss) else None


def plot_round1_sweep(status: TrainingCampaignStatus, path: Path) -> Path | None:
    runs = [r for r in status.runs if r.role == "round1" and r.state in ("Succeeded", "Failed", "Lost")]
    if not runs:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    widths = sorted({r.shape.d_model for r in runs}, reverse=True)
    groups = sorted({(r.shape.d_model, r.warmup_fraction) for r in runs}, key=lambda g: (-g[0], g[1]))
    cmap = _colormap("tab10")
    good = [(r, loss) for r in runs if (loss := _sweep_loss(r)) is not None]
    bad = [r for r in runs if _sweep_loss(r) is None]
    losses = [loss for _, loss in good]
    for i, (width, warmup) in enumerate(groups):
        points = sorted((r.learning_rate, loss) for r, loss in good
                        if r.warmup_fraction == warmup and r.shape.d_model == width)
        label = f"warmup {warmup:g}" if len(widths) == 1 else f"width {width}, warmup {warmup:g}"
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", linewidth=1.5, color=cmap(i % 10),
                    linestyle="-" if width == widths[0] else "--", label=label)
    if losses:
        lo, hi = min(losses), max(losses)
        pad = 0.1 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
        top = hi + 2.5 * pad
        ax.set_ylim(lo - pad, top + pad)
    else:
        top = 1.0
        ax.set_ylim(0.0, 1.2)
        ax.set_yticks([])
    if bad:
        colour_of = {g: cmap(i % 10) for i, g in enumerate(groups)}
        for record in bad:
            ax.plot([record.learning_rate], [top], marker="x", markersize=10, markeredgewidth=2,
                    color=colour_of[(record.shape.d_model, record.warmup_fraction)], linestyle="none")
        ax.axhline(top, color="grey", linewidth=0.6, linestyle=":")
        ax.annotate("× diverged / failed (no final loss)", xy=(0.01, top), xycoords=("axes fraction", "data"),
                    xytext=(0, 5), textcoords="offset points", fontsize=8, color="dimgrey")
    chosen = status.tuning.round1_best_lr
    if _finite(chosen) and chosen > 0:
        ax.axvline(chosen, color="crimson", linestyle="--", linewidth=1.3, label=f"chosen lr {chosen:.3g}")
    rates = sorted({r.learning_rate for r in runs})
    if len(rates) <= 9:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.set_xticks(rates, [f"{lr:.3g}" for lr in rates])
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        _log_x(ax, lambda v: f"{v:.2g}")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final " + LOSS_LABEL)
    proxy = runs[0]
    where = f"{fmt.count(proxy.params)} params" if len(widths) == 1 else f"{len(widths)} widths"
    ax.set_title(f"Round 1: learning-rate sweep at {where}, {fmt.count(proxy.tokens)} tokens")
    ax.grid(True, which="both", alpha=0.25)
    _legend(ax, fontsize=8, loc="upper center")
    return _save(fig, path)


def plot_budget_burndown(status: TrainingCampaignStatus, path: Path) -> Path | None:
    settled = sorted((r for r in status.runs if r.finished_at is not None and r.spent.flops > 0),
                     key=lambda r: r.finished_at or 0.0)
    if not settled:
        return None
    budget = status.ledger.budget_flops or (status.plan.budget_flops if status.plan else 0.0)
    starts = [r.launched_at for r in status.runs if r.launched_at is not None]
    start = min([*starts, *(r.finished_at for r in settled if r.finished_at is not None)])
    span = max((r.finished_at or start) - start for r in settled)
    unit, scale = ("hours", 3600.0) if span >= 2 * 3600 else ("minutes", 60.0)
    times, spent = [0.0], [0.0]
    total = 0.0
    for record in settled:
        total += record.spent.flops
        times.append(((record.finished_at or start) - start) / scale)
        spent.append(total)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.step(times, spent, where="post", color="tab:blue", linewidth=2, label="spent (settled runs)")
    ax.plot(times[1:], spent[1:], "o", color="tab:blue", markersize=3)
    reserved = status.ledger.reserved_flops
    ax.axhline(total + reserved, color="tab:orange", linestyle="--", linewidth=1.3,
               label=f"spent + reserved at end ({fmt.flops(total + reserved)}; {fmt.flops(reserved)} reserved)")
    if status.plan is not None and status.plan.planned_flops > 0:
        ax.axhline(status.plan.planned_flops, color="grey", linestyle=":", linewidth=1.2,
                   label=f"planned ({fmt.flops(status.plan.planned_flops)})")
    if budget > 0:
        ax.axhline(budget, color="crimson", linewidth=1.5, label=f"budget ({fmt.flops(budget)})")
        top = max(budget, total + reserved) * 1.08
        ax.set_ylim(0, top)
        share = ax.twinx()
        share.set_ylim(0, 100.0 * top / budget)
        share.set_ylabel("share of budget (%)")
    ax.set_xlabel(f"wall-clock time since first launch ({unit})")
    ax.set_ylabel("cumulative spent FLOPs")
    ax.set_title(f"Budget burn-down: {fmt.flops(total)} FLOPs spent"
                 + (f" ({100 * total / budget:.1f}% of budget)" if budget > 0 else ""))
    ax.grid(True, alpha=0.25)
    _legend(ax, fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_lr_transfer(status: TrainingCampaignStatus, path: Path) -> Path | None:
    """Best LR vs width (dModel, depth held): each width's optimum with its 95% interval, the fitted power law
    extended to the target's width, and the LR the target gets."""
    transfer = status.tuning.transfer
    if transfer is None or not transfer.widths:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for w in transfer.widths:
        ax.errorbar([w.d_model], [w.learning_rate],
                    yerr=[[w.learning_rate - w.lr_low], [w.lr_high - w.learning_rate]], fmt="o", color="tab:blue",
                    capsize=4, zorder=3,
                    label=None if w is not transfer.widths[0] else "best LR per proxy width (95% interval)")
        ax.annotate(f"{fmt.count(w.params)} params" + (f" ({w.on_edge} edge)" if w.on_edge else ""),
                    (w.d_model, w.learning_rate), xytext=(6, 6), textcoords="offset points", fontsize=8)
    xs = [float(w.d_model) for w in transfer.widths]
    target = transfer.target_d_model
    if transfer.exponent is not None and transfer.coefficient is not None:
        high = max([*xs, float(target or 0)]) * 1.3
        low = min(xs) / 1.3
        grid = [low * (high / low) ** (i / 63) for i in range(64)]
        ax.plot(grid, [transfer.coefficient * n**transfer.exponent for n in grid], color="grey", linestyle="--",
                label=f"fit η_opt ∝ dModel^{transfer.exponent:.3f} [{fmt.sig(transfer.exponent_low, 3)}, "
                      f"{fmt.sig(transfer.exponent_high, 3)}]")
    if target and _finite(transfer.learning_rate):
        lr = transfer.learning_rate
        yerr = None
        if _finite(transfer.lr_low) and _finite(transfer.lr_high):
            yerr = [[max(lr - transfer.lr_low, 0.0)], [max(transfer.lr_high - lr, 0.0)]]
        ax.errorbar([target], [lr], yerr=yerr, fmt="*", color="crimson", markersize=13, capsize=5, zorder=4,
                    label=f"target width {target}: lr {lr:.3g} ({transfer.verdict})")
    _log_x(ax, lambda v: f"{v:.0f}")
    ax.set_yscale("log")
    ax.set_xlabel("width dModel (depth held)")
    ax.set_ylabel("best peak learning rate")
    ax.set_title(f"LR transfer across widths ({transfer.parameterization or 'mup'}): {transfer.verdict}")
    ax.grid(True, which="both", alpha=0.25)
    _legend(ax, fontsize=8, loc="best")
    return _save(fig, path)


def plot_isoflop(status: TrainingCampaignStatus, path: Path) -> Path | None:
    """Chinchilla's Figure 3 for this campaign: loss against size at each compute level with its parabola's
    minimum (left), and N_opt against compute — the levels' minima, their power law and the parametric law's —
    with the target's allocation (right)."""
    levelled = [r for r in _endpoints(status) if r.level is not None]
    allocation = status.allocation
    if not levelled:
        return None
    from flopwise.fitting.isoflop import profile

    fig = _figure(11.0, 4.6)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    levels = sorted({r.level for r in levelled})  # type: ignore[type-var]
    cmap = _colormap("plasma")
    minima = []
    for i, level in enumerate(levels):
        runs = sorted((r for r in levelled if r.level == level), key=lambda r: r.params)
        flops = sum(r.shape.flops_per_token() * r.trajectory_tokens for r in runs) / len(runs)
        colour = cmap(0.85 * i / max(1, len(levels) - 1))
        xs = [r.params for r in runs]
        ys = [r.result.final_val_loss for r in runs]  # type: ignore[union-attr]
        left.plot(xs, ys, "o-", color=colour, label=f"{flops:.2g} FLOPs", linewidth=1.0)
        found = profile(flops, xs, ys)
        if found.bracketed:
            left.plot([found.params_opt], [found.loss_min], marker="v", color=colour, markersize=9)
            minima.append((flops, found.params_opt))
    _log_x(left, fmt.count)
    left.set_xlabel("parameters N")
    left.set_ylabel(LOSS_LABEL)
    left.set_title("IsoFLOP profiles (▼ parabola minimum)")
    left.grid(True, which="both", alpha=0.25)
    _legend(left, fontsize=7.5)
    if minima:
        right.scatter([c for c, _ in minima], [n for _, n in minima], color="tab:orange", zorder=3,
                      label="levels' minima")
    law = status_law(status)
    if allocation is not None:
        high_c = allocation.flops * 1.5
        low_c = min([c for c, _ in minima] or [allocation.flops / 100]) / 1.5
        grid = [low_c * (high_c / low_c) ** (i / 63) for i in range(64)]
        a2 = allocation.approach2
        if a2 is not None and a2.params is not None and a2.exponent is not None:
            right.plot(grid, [a2.params * (c / allocation.flops) ** a2.exponent for c in grid], color="tab:orange",
                       linestyle="--", label=f"Approach 2: N_opt ∝ C^{a2.exponent:.2f}")
        if law is not None:
            values = [(c, _safe(lambda c=c: law.compute_optimal(c).params)) for c in grid]
            values = [(c, v) for c, v in values if v is not None]
            right.plot([c for c, _ in values], [v for _, v in values], color="black", linewidth=1.2,
                       label="parametric law")
        yerr = None
        if allocation.params_low is not None and allocation.params_high is not None:
            yerr = [[allocation.params - allocation.params_low], [allocation.params_high - allocation.params]]
        right.errorbar([allocation.flops], [allocation.params], yerr=yerr, fmt="*", color="crimson", markersize=13,
                       capsize=5, label=f"allocation ({allocation.basis}): {fmt.count(allocation.params)}")
    _log_x(right)
    right.set_yscale("log")
    right.set_xlabel("compute (FLOPs)")
    right.set_ylabel("compute-optimal parameters N_opt")
    right.set_title("N_opt(C): Approach 2 beside the parametric fit")
    right.grid(True, which="both", alpha=0.25)
    _legend(right, fontsize=7.5, loc="upper left")
    return _save(fig, path)


PLOTS: dict[str, Callable[[TrainingCampaignStatus, Path], Path | None]] = {
    LOSS_VS_COMPUTE: plot_loss_vs_compute,
    LADDER_CURVES: plot_ladder_curves,
    ROUND1_SWEEP: plot_round1_sweep,
    BUDGET_BURNDOWN: plot_budget_burndown,
    ROUND2_CURVES: plot_round2_curves,
    LR_TRANSFER: plot_lr_transfer,
    ISOFLOP: plot_isoflop,
}


def render_all(spec: TrainingCampaignSpec, status: TrainingCampaignStatus, out_dir: Path) -> dict[str, str | None]:
    """Draw every figure into ``out_dir``. Returns, per file name, None when it was written, or why it was not
    (nothing to draw yet, matplotlib missing, or the error a figure raised: one bad figure never stops a report)."""
    del spec  # the figures are a function of the status; kept for a uniform signature
    try:
        _figure(1, 1)
    except ImportError:
        why = "matplotlib is not installed (pip install 'flopwise[local]')"
        return dict.fromkeys(PLOTS, why)
    outcome: dict[str, str | None] = {}
    for name, draw in PLOTS.items():
        try:
            written = draw(status, out_dir / name)
        except Exception as error:  # a figure must never take the report down with it
            outcome[name] = f"the figure could not be drawn ({type(error).__name__}: {error})"
        else:
            outcome[name] = None if written is not None else "no data for it yet"
    return outcome
