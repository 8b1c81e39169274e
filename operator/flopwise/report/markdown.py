"""The report's Markdown (GitHub-flavoured): every section renders from any valid status, with "not available"
wherever the campaign has not got that far."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import FittedLaw, RunRecord, TrainingCampaignStatus
from flopwise.contract import ModelShape
from flopwise.report import fmt, plots
from flopwise.report.fmt import NA

LAW_PARAMETERS = (("E", "E", "irreducible loss"), ("A", "A", "parameter term coefficient"),
                  ("B", "B", "data term coefficient"), ("alpha", "α (alpha)", "parameter exponent"),
                  ("beta", "β (beta)", "data exponent"))
PHASES = ("ladder", "round1", "round2", "final")
PHASE_TITLES = {"ladder": "Ladder", "round1": "Round 1", "round2": "Round 2", "final": "Final", "seed": "Seed"}

LIMITS = """\
- **Loss, not abilities.** A scaling law predicts the validation loss of the recommended model, not what it can do:
  abilities that appear only at scale ("emergent" abilities, Wei et al. 2022, *Emergent Abilities of Large Language
  Models*) are not visible in the small models the law was fitted on, and a lower loss does not promise them.
- **Fitted small, extrapolated large.** The law is fitted on the ladder's small models and extrapolated to the
  target; the further the target lies beyond the largest ladder run, the less the interval can be trusted (it
  reflects the spread of the fit, not a change of regime at scale), which is what the backtest estimates.
- **Hyperparameters are extrapolated too.** The learning rate is found on small proxies; muP makes it transfer
  across width at fixed depth and training horizon, not across depth, batch size or a much longer run, and a power
  law fitted to two or three widths extrapolates with the interval shown, nothing more.
- **The noise floor is rough.** It comes from a few seeds of the smallest ladder run; seed noise at the target size
  may differ, and with three seeds its upper bound is several times its value.
- **Training compute only.** The compute-optimal rule minimises loss for a *training* budget and ignores inference
  cost: a model that will serve many requests is often better smaller and trained on more tokens than the rule
  says.
"""


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one character per column ('l' or 'r')."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(fmt.cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(fmt.cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def shape_text(shape: ModelShape) -> str:
    return f"{shape.n_layer} layers × {shape.d_model} width × {shape.n_head} heads"


def are_reading(are: float | None) -> str:
    """Backtest ARE (absolute relative error on the held-out largest ladder runs) in plain words."""
    if are is None or not math.isfinite(are):
        return ("not available: the backtest needs at least 4 ladder sizes (it refits without the largest and "
                "predicts it)")
    value = fmt.percent(are)
    if are <= 0.05:
        return (f"{value}: excellent; this is about as good as seed-to-seed noise allows (~4%), so the law "
                "predicted its held-out run as well as a rerun could")
    if are < 0.10:
        return f"{value}: good; under the < 10% target at this scale (~4% is the best seed noise allows)"
    if are < 0.20:
        return (f"{value}: above the < 10% target at this scale (~4% is the best seed noise allows); treat the "
                "predicted loss as approximate and consider more or larger ladder runs")
    return (f"{value}: poor; far above the < 10% target at this scale, so the law does not extrapolate "
            "reliably yet; widen the ladder (more sizes, a larger top run) before trusting the prediction")


BASIS_READING = {
    "full": "the campaign's five-parameter fit (identified)",
    "borrowed": "the campaign's fit with the exponents held at Epoch's refit (the five-parameter fit was not "
                "identified)",
    "approach-2": "Approach 2's IsoFLOP minima (no parametric fit was identified)",
    "approach-2-borrowed": "Approach 2's IsoFLOP minima with the allocation exponent's prior at Epoch's refit (no "
                           "parametric fit was identified, and too few levels bracket a minimum to fit an exponent)",
    "prior": "**the prior law: nothing the campaign measured identifies an allocation — do not bet on it**",
}


def floor_reading(status: TrainingCampaignStatus) -> str:
    """The seed-noise floor next to the backtest ARE, with the verdict on it."""
    floor = status.noise_floor
    if floor is None:
        return "not available (ladder.seeds is 1, or the replicas did not fit the budget)"
    if floor.floor_are is None:
        return floor.message or NA
    text = (f"{fmt.percent(floor.floor_are, 2)} ARE from {floor.seeds} seeds (95% upper bound "
            f"{fmt.percent(floor.floor_are_high, 2)}; one seed's 95% band {fmt.percent(floor.band_are, 2)})")
    if floor.within_noise is True:
        text += ": **the backtest ARE is not distinguishable from seed noise**"
    elif floor.within_noise is False:
        text += ": the backtest ARE is above seed noise (the law's own error)"
    return text


def _interval(low: float | None, high: float | None, digits: int = 4) -> str:
    if low is None or high is None:
        return NA
    return f"[{fmt.sig(low, digits)}, {fmt.sig(high, digits)}]"


def _phase_of(role: str) -> str:
    return role if role in PHASES else "seed"


def _runs_of(status: TrainingCampaignStatus, phase: str) -> list[RunRecord]:
    return [r for r in status.runs if _phase_of(r.role) == phase]


def _final_loss(record: RunRecord) -> str:
    if record.result is None:
        return NA
    if record.result.status == "diverged":
        return "diverged"
    return fmt.loss(record.result.final_val_loss)


# ------------------------------------------------------------------------------------------------- sections
def summary(spec: TrainingCampaignSpec, status: TrainingCampaignStatus, name: str, now: float | None = None) -> str:
    """The opening paragraph; its budget, runs and ETA read as `flopwise status` shows them (overview/)."""
    from flopwise.overview.model import build_overview  # imported here: overview formats with report.fmt

    plan = status.plan
    ov = build_overview(status, name=name, spec=spec, now=time.time() if now is None else now)
    parts = [f"Campaign **{name}** is in phase **{status.phase}**."]
    if ov.budget is not None:
        b = ov.budget
        parts.append(f"It has used **{b.used_percent:.1f}%** of its budget of {b.total_text()}: spent "
                     f"{b.spent_text()}, reserved by running work {b.reserved_text()}, left {b.left_text()}.")
        parts.append(f"Runs: {ov.runs_text()}" + ("." if ov.ended else f"; campaign ETA {ov.eta_text()}."))
    else:
        parts.append(f"No budget has been planned yet (spec: {fmt.flops(spec.budget.flops)} FLOPs"
                     + (f", {fmt.usd(spec.budget.usd)}" if spec.budget.usd else "") + ").")
    if plan is not None:
        target = plan.target
        law = fmt.sized_by(target.law)
        parts.append(f"The target is a {fmt.count(target.params)}-parameter model ({shape_text(target.shape)}) "
                     f"trained on {fmt.count(target.tokens)} tokens ({target.tokens_per_param:.1f} tokens per "
                     f"parameter, {fmt.flops(target.flops)} FLOPs), sized by {law}.")
    prediction = status.prediction
    if prediction is not None:
        parts.append(f"Its predicted validation loss is **{fmt.loss(prediction.loss)}** "
                     f"(95% interval {_interval(prediction.loss_low, prediction.loss_high)})"
                     + (f", from {prediction.source}." if prediction.source else "."))
    if not spec.final.enabled:
        parts.append("The final run is not enabled: the target is a recommendation, not a run.")
    if status.message:
        parts.append(f"Status: {status.message.strip()}")
    return " ".join(parts)


def recommendation(spec: TrainingCampaignSpec, status: TrainingCampaignStatus) -> str:
    rec = status.recommendation
    out = ["## Recommendation", ""]
    if rec is None:
        out.append("Recommendation: not available yet (flopwise recommends a model once the ladder is fitted and "
                   "the tuning rounds have finished).")
        plan = status.plan
        if plan is not None:
            from flopwise.overview.model import target_loss_text

            t = plan.target
            out += ["", f"The plan's current target, under the `{plan.law}` law:", "",
                    table(["field", "value"], [
                        ["shape", shape_text(t.shape)],
                        ["parameters", fmt.exact(t.params)],
                        ["tokens", fmt.exact(t.tokens)],
                        ["tokens / parameter", f"{t.tokens_per_param:.1f}"],
                        ["FLOPs", fmt.flops(t.flops)],
                        ["GPU-hours", fmt.hours(t.gpu_hours)],
                        ["dollars", fmt.usd(t.usd) if spec.gpu_pool.price_per_gpu_hour > 0 else "not priced"],
                        ["predicted loss", target_loss_text(t, spec.model.vocab_size)],
                        ["data-limited", "yes" if t.data_limited else "no"],
                    ])]
        return "\n".join(out)
    shape = rec.shape
    rows = [
        ["shape", f"{shape_text(shape)} (head dim {shape.head_dim}, MLP {shape.ffn_width}, vocab "
                  f"{shape.vocab_size:,}, context {shape.seq_len:,})"],
        ["parameters", fmt.exact(rec.params)],
        ["tokens", fmt.exact(rec.tokens)],
        ["tokens / parameter", f"{rec.tokens / rec.params:.1f}"],
        ["size rests on", (BASIS_READING.get(rec.basis, rec.basis) if rec.basis else NA) + (
            f"; compute-optimal size {_interval(rec.params_low, rec.params_high, 3)} (95%)"
            if rec.params_low is not None else "")],
        ["learning rate", fmt.lr(rec.learning_rate) + (
            f" (95% interval {_interval(rec.learning_rate_low, rec.learning_rate_high, 3)})"
            if rec.learning_rate_low is not None else "") + (
            f"; from {rec.learning_rate_source}" if rec.learning_rate_source else "")],
        ["warmup", f"{rec.warmup_fraction:g} of the steps"],
        ["schedule", rec.schedule + (f", cooling down over the last {rec.decay_fraction:g} of the steps"
                                     if rec.decay_fraction is not None else "")],
        ["batch", f"{rec.batch_size:,} sequences ({rec.batch_size * shape.seq_len:,} tokens) per step"],
        ["FLOPs", fmt.flops(rec.flops)],
        ["GPU-hours", fmt.hours(rec.gpu_hours)],
        ["dollars", fmt.usd(rec.usd) if spec.gpu_pool.price_per_gpu_hour > 0 or rec.usd > 0
         else "not priced (gpuPool.pricePerGpuHour is 0)"],
        ["predicted loss", f"{fmt.loss(rec.predicted_loss)} (95% interval "
                           f"{_interval(rec.loss_low, rec.loss_high)})"],
        ["backtest ARE", are_reading(rec.backtest_are)],
        ["seed-noise floor", floor_reading(status)],
        ["law", rec.law or NA],
    ]
    out.append(table(["field", "value"], rows))
    return "\n".join(out)


def law_section(status: TrainingCampaignStatus, figures: Mapping[str, str | None]) -> str:
    out = ["## Fitted scaling law", "", "L(N, D) = E + A / N^α + B / D^β, with N the parameters and D the training "
           "tokens.", ""]
    law: FittedLaw | None = status.law
    if law is None:
        out.append("Fitted law: not available yet (the campaign fits its law once ladder runs have finished).")
    else:
        rows = []
        for key, label, meaning in LAW_PARAMETERS:
            value = getattr(law, key)
            rows.append([label, fmt.sig(value), _interval(law.ci_low.get(key), law.ci_high.get(key)), meaning])
        out.append(table(["parameter", "value", "95% interval", "meaning"], rows, "llll"))
        exponent = plots.status_law(status)
        facts = [f"fit mode **{law.mode}**", f"{law.n_points} points from {law.n_runs} runs "
                 f"({law.input_runs} finished ladder runs offered)"]
        if exponent is not None:
            facts.append(f"compute-optimal allocation N_opt ∝ C^{exponent.params_exponent:.3f}, "
                         f"D_opt ∝ C^{exponent.tokens_exponent:.3f}")
        out += ["", "; ".join(facts) + ".", "", f"Backtest ARE: {are_reading(law.backtest_are)}.", "",
                f"Seed-noise floor: {floor_reading(status)}."]
        if not law.ci_low:
            out += ["", "No intervals: the fit was not bootstrapped."]
        if law.identified is False:
            out += ["", "**This law is not identified by the campaign's data**: " + "; ".join(law.problems) + "."]
        elif law.identified is None:
            out += ["", "An interim fit while the ladder runs: identifiability is judged when the ladder ends."]
        if law.mode != "full":
            out += ["", f"The `{law.mode}` mode holds the exponents at Epoch's refit (α 0.348, β 0.366) and fits "
                    "E, A and B; its intervals include a ±0.05 uncertainty on each borrowed exponent."]
        if law.noise:
            out += ["", f"Intervals: a parametric bootstrap that redraws every point with {law.noise}."]
        out += [f"- {note}" for note in law.notes]
        ladder = [r for r in status.runs if r.role == "ladder" and r.state == "Succeeded"]
        if ladder and status.plan is not None:
            top = max(ladder, key=lambda r: r.shape.flops_per_token() * r.trajectory_tokens)
            target = status.plan.target
            out += ["", f"Extrapolation: the target has {target.params / max(r.params for r in ladder):.1f}× the "
                    f"parameters and {target.flops / max(top.shape.flops_per_token() * top.trajectory_tokens, 1.0):.0f}"
                    "× the compute of the largest ladder run."]
    out += ["", allocation_section(status), "",
            figure(figures, plots.LOSS_VS_COMPUTE, "Loss vs compute: annealed endpoints, fitted law and frontier"),
            "", figure(figures, plots.ISOFLOP, "IsoFLOP profiles and N_opt(C)"),
            "", figure(figures, plots.LADDER_CURVES, "Ladder training curves")]
    return "\n".join(out)


def allocation_section(status: TrainingCampaignStatus) -> str:
    """The compute-optimal size at the final budget: its basis, its interval, and Approach 2 beside it."""
    out = ["### Compute-optimal allocation", ""]
    allocation = status.allocation
    if allocation is None:
        out.append("Allocation: not available yet (it is made when the ladder ends).")
        return "\n".join(out)
    rows = [["basis", BASIS_READING.get(allocation.basis, allocation.basis)],
            ["N_opt at " + fmt.flops(allocation.flops) + " FLOPs", fmt.count(allocation.params) + " params" + (
                f" (95% interval {_interval(allocation.params_low, allocation.params_high, 3)})"
                if allocation.params_low is not None else "")]]
    a2 = allocation.approach2
    if a2 is not None:
        kind = "interpolated from the WSD endpoints" if a2.interpolated else "from the IsoFLOP levels"
        value = (f"{fmt.count(a2.params)} params {_interval(a2.params_low, a2.params_high, 3)}; N_opt ∝ C^"
                 f"{fmt.sig(a2.exponent, 3)} {_interval(a2.exponent_low, a2.exponent_high, 3)}"
                 if a2.params is not None else "not available")
        rows.append([f"Approach 2 ({kind}; {a2.bracketed} of {a2.levels} levels bracket a minimum)", value])
        if allocation.agree is not None:
            rows.append(["agreement", "the two allocations agree" if allocation.agree
                         else "**they disagree**: the ladder may not span the optimum, or the law's form fails"])
    out.append(table(["", ""], rows))
    if allocation.message:
        out += ["", allocation.message + "."]
    return "\n".join(out)


def plan_section(status: TrainingCampaignStatus, figures: Mapping[str, str | None]) -> str:
    out = ["## Plan vs. actual", ""]
    plan = status.plan
    if plan is None:
        out.append("Plan: not available yet.")
        return "\n".join(out)
    rows = []
    phases = plan.phases()
    extra = sorted({_phase_of(r.role) for r in status.runs} - set(PHASES))
    totals = [0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0]
    for name in (*PHASES, *extra):
        phase = phases.get(name)
        records = _runs_of(status, name)
        spent = sum(r.spent.flops for r in records)
        reserved = sum(r.reserved.flops for r in records)
        ok = sum(1 for r in records if r.state == "Succeeded")
        bad = sum(1 for r in records if r.state in ("Failed", "Lost"))
        allotted, planned, planned_runs = ((phase.allotted_flops, phase.flops, len(phase.runs)) if phase
                                           else (0.0, 0.0, 0))
        rows.append([PHASE_TITLES.get(name, name), f"{phase.share:.0%}" if phase else "-", fmt.flops(allotted),
                     fmt.flops(planned), fmt.flops(spent), fmt.flops(reserved), planned_runs, len(records), ok, bad])
        for i, v in enumerate((allotted, planned, spent, reserved, planned_runs, len(records), ok, bad)):
            totals[i] += v
    rows.append(["**total**", "", fmt.flops(totals[0]), fmt.flops(totals[1]), fmt.flops(totals[2]),
                 fmt.flops(totals[3]), *totals[4:]])
    out.append(table(["phase", "share", "allotted FLOPs", "planned FLOPs", "spent FLOPs", "reserved FLOPs",
                      "planned runs", "runs", "succeeded", "failed"], rows, "lrrrrrrrrr"))
    out += ["", f"Budget {fmt.flops(plan.budget_flops)} FLOPs (binding: {plan.binding}), of which "
            f"{fmt.flops(plan.margin_flops)} is a margin never planned; planned {fmt.flops(plan.planned_flops)} "
            f"at an expected MFU of {plan.mfu:.0%}; measured MFU "
            f"{fmt.percent(status.measured_mfu) if status.measured_mfu is not None else NA}."]
    if plan.studies:
        out += ["", "Search design (one hyperparameter at a time; pairs only where they interact):", "",
                table(["study", "phase", "varies", "runs", "FLOPs"],
                      [[s.name, PHASE_TITLES.get(s.phase, s.phase), s.varies, s.runs, fmt.flops(s.flops)]
                       for s in plan.studies], "lllrr")]
    notes = [f"{PHASE_TITLES[n]}: {note}" for n in PHASES for note in phases[n].notes]
    if notes or plan.warnings or plan.dropped:
        out.append("")
        out += [f"- {note}" for note in notes]
        out += [f"- **warning**: {w}" for w in plan.warnings]
        out += [f"- **dropped**: {d}" for d in plan.dropped]
    out += ["", figure(figures, plots.BUDGET_BURNDOWN, "Budget burn-down")]
    return "\n".join(out)


def tuning_section(status: TrainingCampaignStatus, figures: Mapping[str, str | None]) -> str:
    tuning = status.tuning
    warmup = f"{tuning.round1_best_warmup:g}" if tuning.round1_best_warmup is not None else NA
    out = ["## Tuning", "", "### Round 1: learning rate and warmup", ""]
    if not _runs_of(status, "round1") and not tuning.round1_note:
        out.append("Round 1: not available (no Round-1 run yet, or Round 1 was not planned).")
    else:
        out += [f"- chosen learning rate: **{fmt.lr(tuning.round1_best_lr)}**, warmup {warmup}; best Round-1 loss "
                f"{fmt.loss(tuning.round1_best_loss)}",
                f"- grid extended past its edge: {'yes' if tuning.round1_grid_extended else 'no'}",
                f"- decision: {tuning.round1_note.strip() or NA}"]
    out += ["", figure(figures, plots.ROUND1_SWEEP, "Round 1 learning-rate sweep"), "",
            "### Round 2: the decision at full length", ""]
    verdict = tuning.round2_verdict.strip() or NA
    out.append(f"Verdict: {verdict}" + (f" (best checkpoint at {tuning.round2_best_fraction:.0%} of the run)."
                                        if tuning.round2_best_fraction is not None else "."))
    if tuning.round2_candidates:
        out += ["", table(["run", "learning rate", "cooldown", "final loss"],
                          [[c.run_id, fmt.lr(c.learning_rate), f"{c.decay_fraction:g}" if c.decay_fraction else "-",
                            fmt.loss(c.final_loss)] for c in tuning.round2_candidates], "lrrr")]
    if tuning.learning_rate is not None:
        out += ["", f"Every ladder run and the final run train at: {tuning.lr_rule or fmt.lr(tuning.learning_rate)}"
                + (f", warmup {tuning.warmup_fraction:g}" if tuning.warmup_fraction is not None else "") + "."]
    if _runs_of(status, "round2") or figures.get(plots.ROUND2_CURVES, "") is None:
        out += ["", figure(figures, plots.ROUND2_CURVES, "Round 2 training curves")]
    return "\n".join(out)


def bets_section(status: TrainingCampaignStatus, figures: Mapping[str, str | None]) -> str:
    """How far the chosen hyperparameters and the predicted loss can be trusted at the target size."""
    out = ["## Trust at the target size", "", "### Learning-rate transfer across proxy widths", ""]
    transfer = status.tuning.transfer
    if transfer is None:
        out.append("Transfer check: not available (Round 1 has not finished, or was not planned).")
    else:
        out.append(f"Verdict: **{transfer.verdict}** ({transfer.parameterization or 'mup'}). "
                   f"{(transfer.message or '').strip()}.")
        if transfer.widths:
            rows = [[w.d_model, fmt.exact(w.params), fmt.lr(w.learning_rate), _interval(w.lr_low, w.lr_high, 3),
                     w.on_edge or "no", w.points] for w in sorted(transfer.widths, key=lambda w: -w.d_model)]
            out += ["", table(["width", "parameters", "best LR (parabola in log-LR)", "95% interval",
                               "on the grid's edge", "points"], rows, "rrrlll")]
        if transfer.exponent is not None:
            out += ["", f"Power law of the best LR in width (depth held): η_opt = {fmt.sig(transfer.coefficient, 3)}"
                    f" · dModel^{fmt.sig(transfer.exponent, 3)} (exponent 95% interval "
                    f"{_interval(transfer.exponent_low, transfer.exponent_high, 3)}; weighted least squares in log "
                    "space, errors propagated from each width's optimum). Target width "
                    f"{transfer.target_d_model or NA}: lr **{fmt.lr(transfer.learning_rate)}** "
                    f"{_interval(transfer.lr_low, transfer.lr_high, 3)}."]
    out += ["", figure(figures, plots.LR_TRANSFER, "Best learning rate vs width across proxy widths"),
            "", "### Seed-noise floor", "", f"{floor_reading(status)}."]
    floor = status.noise_floor
    if floor is not None and floor.losses:
        out += ["", f"Final losses of the {floor.seeds} seeds at {fmt.count(floor.params)} params: "
                + ", ".join(fmt.loss(v) for v in floor.losses) + (f" (sd {floor.sd:.4f})." if floor.sd else ".")]
    out += ["", "### Partial target training", ""]
    check = status.partial_check
    if check is None:
        out.append("Partial check: not available (final.partialCheck is off, or the final run has not started).")
    else:
        change = f"{check.change:+.4f}" if check.change is not None else NA
        rows = [["before (ladder only)", fmt.loss(check.loss_before), _interval(check.low_before, check.high_before)],
                [f"after (+ the target's annealed point at {fmt.percent(check.fraction, 0)})",
                 fmt.loss(check.loss_after), _interval(check.low_after, check.high_after)],
                ["change", change, ""],
                ["observed final loss", fmt.loss(check.final_loss), ""]]
        out += [table(["prediction of the final loss", "loss", "95% interval"], rows, "lrl"), "",
                f"{(check.message or '').strip()}.", "",
                "The partial leg follows the final run's schedule and cools down over its own last steps, so it ends "
                "on an annealed point at the target size, fitted like any ladder endpoint (no extra weight); the "
                "final run resumes the leg's checkpoint from before that cooldown."]
    return "\n".join(out)


def runs_section(status: TrainingCampaignStatus) -> str:
    out = ["## Runs", ""]
    if not status.runs:
        out.append("Runs: not available (none launched yet).")
        return "\n".join(out)
    rows = []
    for r in status.runs:
        result = r.result
        speed = f"{result.tokens_per_s:,.0f}" if result is not None and result.tokens_per_s > 0 else NA
        mfu = fmt.percent(result.mfu) if result is not None and result.mfu is not None else NA
        state = r.state + (f" ({r.reason})" if r.reason and r.state in ("Failed", "Lost") else "")
        rows.append([r.run_id, r.role, fmt.count(r.params), fmt.count(r.tokens), fmt.lr(r.learning_rate),
                     f"{r.warmup_fraction:g}", state, _final_loss(r), speed, mfu])
    out.append(table(["id", "role", "params", "tokens", "lr", "warmup", "state", "final loss", "tokens/s", "MFU"],
                     rows, "llrrrrlrrr"))
    return "\n".join(out)


def figure(figures: Mapping[str, str | None], name: str, alt: str) -> str:
    """An embedded figure (relative link), or why there is none."""
    if name not in figures:
        return f"*{alt}: not available.*"
    why = figures[name]
    if why is None:
        return f"![{alt}]({name})"
    return f"*{alt}: not available ({why}).*"


def render(spec: TrainingCampaignSpec, status: TrainingCampaignStatus, campaign_name: str,
           figures: Mapping[str, str | None]) -> str:
    """The whole report. ``figures`` maps each figure's file name to None (written) or why it is missing."""
    sections = [
        f"# flopwise campaign report: {campaign_name}",
        summary(spec, status, campaign_name),
        recommendation(spec, status),
        law_section(status, figures),
        plan_section(status, figures),
        tuning_section(status, figures),
        bets_section(status, figures),
        runs_section(status),
        "## Limits\n\n" + LIMITS.rstrip(),
    ]
    return "\n\n".join(sections) + "\n"
