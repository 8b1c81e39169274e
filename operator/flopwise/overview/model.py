"""One screen about a campaign, as data: where it is, what it spent, what runs now and how far, what the law
says, when it ends. Built from the status (and, locally, the trainers' progress files) by a pure function, and
drawn three ways: rich for a terminal (`flopwise run`, `flopwise status`), plain lines, and the report's
Markdown — so a number reads the same wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import FittedLaw, Plan, RunRecord, TargetPlan, TrainingCampaignStatus
from flopwise.contract import RunProgress
from flopwise.overview.eta import Throughput, campaign_eta, remaining_by_phase, running_remaining, suspended
from flopwise.planning.laws import LAWS, ScalingLaw
from flopwise.planning.priors import why_no_prior_loss
from flopwise.report import fmt

STALL_S = 120.0  # a trainer rewrites its progress about once a second (and at every evaluation)


@dataclass(frozen=True)
class BudgetView:
    """The ledger in the units people budget in: spent, reserved by running work, and what is left."""

    flops: float
    spent_flops: float
    reserved_flops: float
    usd: float | None  # None: the campaign has no dollar budget
    spent_usd: float
    reserved_usd: float
    forecast_usd: float | None
    used_percent: float

    @property
    def left_flops(self) -> float:
        return max(0.0, self.flops - self.spent_flops - self.reserved_flops)

    @property
    def left_usd(self) -> float | None:
        return None if self.usd is None else max(0.0, self.usd - self.spent_usd - self.reserved_usd)

    @property
    def priced(self) -> bool:
        return self.usd is not None or self.spent_usd > 0 or self.reserved_usd > 0

    def spent_text(self) -> str:
        if self.priced:
            return f"{fmt.usd(self.spent_usd)} ({fmt.flops(self.spent_flops)} FLOPs)"
        return f"{fmt.flops(self.spent_flops)} FLOPs"

    def reserved_text(self) -> str:
        if self.priced:
            return f"{fmt.usd(self.reserved_usd)} ({fmt.flops(self.reserved_flops)} FLOPs)"
        return f"{fmt.flops(self.reserved_flops)} FLOPs"

    def left_text(self) -> str:
        left_usd = self.left_usd
        if left_usd is not None:
            return f"{fmt.usd(left_usd)} ({fmt.flops(self.left_flops)} FLOPs)"
        return f"{fmt.flops(self.left_flops)} FLOPs"

    def total_text(self) -> str:
        return (f"{fmt.usd(self.usd)} ({fmt.flops(self.flops)} FLOPs)" if self.usd is not None
                else f"{fmt.flops(self.flops)} FLOPs")


@dataclass(frozen=True)
class RunView:
    """One running run: how far (its own progress locally, an estimate from elapsed time on a cluster)."""

    run_id: str
    role: str
    params: int
    shape: str
    step: int | None
    steps: int
    estimated: bool  # step and ETA from elapsed time at the campaign's rate, not from the trainer
    tokens_per_s: float | None
    eta_s: float | None
    loss: float | None
    learning_rate: float
    stalled_s: float | None = None  # its trainer has said nothing for this long (stopped, or hung)

    def step_text(self) -> str:
        if self.step is None:
            return f"starting (0/{self.steps:,})"
        stalled = f" (silent for {fmt.duration(self.stalled_s)})" if self.stalled_s is not None else ""
        return f"{'~' if self.estimated else ''}{self.step:,}/{self.steps:,}{stalled}"

    def eta_text(self) -> str:
        if self.eta_s is None:
            return "-"
        return ("~" if self.estimated else "") + fmt.duration(self.eta_s)


@dataclass(frozen=True)
class Overview:
    name: str
    phase: str
    message: str
    budget: BudgetView | None
    runs_done: int
    runs_failed: int
    runs_total: int
    runs_pending: int  # every run still to start, queued and suspended ones included
    running: list[RunView] = field(default_factory=list)
    runs_queued: int = 0  # launched, waiting for admission (Kueue) or preempted
    runs_suspended: int = 0  # stopped with their checkpoints by spec.suspend
    suspended: bool = False
    target: str | None = None
    law: str | None = None
    backtest_are: float | None = None
    prediction: str | None = None
    eta_s: float | None = None
    eta_basis: str = ""
    recommendation: str | None = None

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def runs_text(self) -> str:
        failed = f", {self.runs_failed} failed" if self.runs_failed else ""
        held = "".join(f", {n} {word}" for n, word in ((self.runs_queued, "queued"),
                                                        (self.runs_suspended, "suspended")) if n)
        waiting = self.runs_pending - self.runs_queued - self.runs_suspended
        return f"{self.runs_done}/{self.runs_total} done{failed}, {len(self.running)} running{held}, {waiting} waiting"

    def eta_text(self) -> str:
        if self.ended:
            return "ended"
        if self.suspended:
            return "none while suspended (spec.suspend: set it false to go on)"
        if self.eta_s is None:
            return "not known yet"
        return f"~{fmt.duration(self.eta_s)} (run times {self.eta_basis}; grid extensions and retries add to it)"


# ------------------------------------------------------------------------------------------------- building
def build_overview(status: TrainingCampaignStatus, *, name: str, spec: TrainingCampaignSpec | None = None,
                   progress: Mapping[str, RunProgress] | None = None, now: float) -> Overview:
    """The overview of ``status`` at time ``now``. ``spec`` gives the pool's concurrency (else one run at a time
    is assumed); ``progress`` maps running run ids to what their trainers last wrote (locally), or is None where
    trainers cannot be read (a cluster): then a run's step and ETA are estimated from its elapsed time."""
    estimate = progress is None
    progress = progress or {}
    slots = spec.gpu_pool.max_concurrent_runs if spec is not None else 1
    gpus = spec.gpu_pool.gpus_per_run if spec is not None else 1
    rate = Throughput.of(status, slots, gpus)
    counts = status.run_counts
    waiting = sum(len(v) for v in remaining_by_phase(status).values())
    done = counts.succeeded + counts.failed + counts.lost
    running = [run_view(r, progress.get(r.run_id), rate if estimate else None, now)
               for r in status.runs if r.state == "Running"]
    law, prediction = status.law, status.prediction
    law_text = None
    if law is not None:
        law_text = (f"L = {fmt.sig(law.E)} + {fmt.sig(law.A)}/N^{law.alpha:.3f} + {fmt.sig(law.B)}/D^{law.beta:.3f}"
                    f" ({law.mode}, {law.n_points} points from {law.n_runs} runs{not_identified(law)})")
    prediction_text = None
    if prediction is not None:
        interval = (f" [{fmt.loss(prediction.loss_low)}, {fmt.loss(prediction.loss_high)}]"
                    if prediction.loss_low is not None and prediction.loss_high is not None else "")
        source = prediction.source or "the campaign's fit"
        prediction_text = (f"{fmt.loss(prediction.loss)}{interval} at {fmt.count(prediction.params)} params on "
                           f"{fmt.count(prediction.tokens)} tokens ({source})")
    elif status.plan is not None:
        prediction_text = target_loss_text(status.plan.target, status.plan.target.shape.vocab_size)
    return Overview(
        name=name, phase=status.phase, message=status.message, budget=budget_view(status),
        runs_done=done, runs_failed=counts.failed + counts.lost, runs_total=done + len(running) + waiting,
        runs_pending=waiting, running=running, runs_queued=counts.queued, runs_suspended=counts.suspended,
        suspended=suspended(status), target=target_text(status.plan),
        law=law_text, backtest_are=law.backtest_are if law is not None else None, prediction=prediction_text,
        eta_s=campaign_eta(status, rate, progress, now), eta_basis=rate.basis if rate else "",
        recommendation=recommendation_text(status))


def budget_view(status: TrainingCampaignStatus) -> BudgetView | None:
    ledger, plan = status.ledger, status.plan
    total = ledger.budget_flops or (plan.budget_flops if plan is not None else 0.0)
    if not total:
        return None
    return BudgetView(flops=total, spent_flops=ledger.spent_flops, reserved_flops=ledger.reserved_flops,
                      usd=ledger.budget_usd if ledger.budget_usd is not None else (plan.budget_usd if plan else None),
                      spent_usd=ledger.spent_usd, reserved_usd=ledger.reserved_usd, forecast_usd=ledger.forecast_usd,
                      used_percent=ledger.used_percent)


def run_view(record: RunRecord, progress: RunProgress | None, rate: Throughput | None, now: float) -> RunView:
    end = record.stop_at_step or record.steps
    shape = f"{record.shape.n_layer}×{record.shape.d_model}"
    common = dict(run_id=record.run_id, role=record.role, params=record.params, shape=shape, steps=end,
                  learning_rate=record.learning_rate)
    if progress is not None and progress.run_id == record.run_id:
        loss = progress.val_loss if progress.val_loss is not None else progress.train_loss
        silent = now - progress.updated_at
        if silent > STALL_S:
            return RunView(**common, step=progress.step, estimated=False, tokens_per_s=None, eta_s=None, loss=loss,
                           stalled_s=silent)
        return RunView(**common, step=progress.step, estimated=False,
                       tokens_per_s=progress.tokens_per_s or None,
                       eta_s=progress.remaining_s, loss=loss)
    if rate is None or not record.launched_at:
        return RunView(**common, step=None, estimated=True, tokens_per_s=None, eta_s=None, loss=None)
    expected = rate.seconds(record.planned_flops())
    elapsed = max(0.0, now - record.launched_at)
    done = min(1.0, elapsed / expected) if expected > 0 else 0.0
    step = record.start_step + round(done * record.train_steps())
    return RunView(**common, step=step, estimated=True, tokens_per_s=None,
                   eta_s=running_remaining(record, None, rate, now), loss=None)


def target_text(plan: Plan | None) -> str | None:
    if plan is None:
        return None
    t = plan.target
    sized = fmt.sized_by(t.law)
    return (f"{fmt.count(t.params)} params ({t.shape.n_layer}×{t.shape.d_model}) on {fmt.count(t.tokens)} tokens "
            f"({t.tokens_per_param:.1f} tokens/param), sized by {sized}")


def target_loss_text(target: TargetPlan, vocab_size: int) -> str:
    """What the plan may say about the target's loss, with whose loss it is (planning/priors.py)."""
    if target.predicted_loss is not None and target.loss_basis == "fit":
        return f"{fmt.loss(target.predicted_loss)} (the campaign's fitted law)"
    if target.predicted_loss is not None:
        return (f"{fmt.loss(target.predicted_loss)} under the {target.law} prior — its data, not this campaign's: "
                "the campaign's own fit replaces it")
    rule = LAWS.get(target.law)
    if rule is not None and not isinstance(rule, ScalingLaw):
        return f"none until the campaign's own fit ({target.law} allocates compute; it has no loss)"
    reason = why_no_prior_loss(target.law, vocab_size)
    return "none until the campaign's own fit" + (f" ({reason})" if reason else "")


def not_identified(law: FittedLaw) -> str:
    """", NOT IDENTIFIED" for a law its data do not pin down, ", provisional" for a fit made while the ladder still
    runs (not yet judged): said wherever the law is shown, never left to the notes."""
    return "" if law.identified else ", provisional" if law.identified is None else ", NOT IDENTIFIED"


def recommendation_text(status: TrainingCampaignStatus) -> str | None:
    """The recommendation in one line; when the law is not identified, what sized the model instead."""
    rec = status.recommendation
    if rec is None:
        return None
    basis = status.allocation.basis if status.allocation is not None else None
    caveat = (f" (the fitted law is not identified: sized by {basis})"
              if status.law is not None and status.law.identified is False and basis else "")
    loss = fmt.loss(rec.predicted_loss) if rec.predicted_loss is not None else "not predicted"
    interval = (f" [{fmt.loss(rec.loss_low)}, {fmt.loss(rec.loss_high)}]"
                if rec.loss_low is not None and rec.loss_high is not None else "")
    are = f", backtest ARE {fmt.percent(rec.backtest_are)}" if rec.backtest_are is not None else ""
    return (f"{rec.params:,} params ({rec.shape.n_layer}×{rec.shape.d_model}) on {rec.tokens:,} tokens, "
            f"lr {fmt.lr(rec.learning_rate)}, warmup {rec.warmup_fraction:g}, predicted loss {loss}{interval}{are}"
            f"{caveat}")
