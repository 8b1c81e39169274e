"""The campaign engine: a deterministic state machine over (spec, status, observed runs).

`reconcile` is the whole engine. It reads everything from the status it is given (the plan, the ledger as
per-run records, the tuning decisions), applies what the executor observed, advances the phase
    Pending → Ladder → Round1 → Round2 → Final → Succeeded   (or Failed)
and returns the new status with the runs to launch. It never talks to Kubernetes or processes: the local
runner and the operator both call it, persist the status first, then carry out the launches. Launches are
idempotent on the run id, so a crash between persisting and launching loses nothing and starts nothing twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import (
    IMMUTABLE_SECTIONS,
    Charge,
    Condition,
    PlannedRun,
    PlannedSpec,
    Recommendation,
    RunCounts,
    RunRecord,
    RunResult,
    TrainingCampaignStatus,
)
from flopwise.contract import RunSummary, ScheduleSpec
from flopwise.engine import analysis, ledger
from flopwise.fitting.fit import HOFFMANN_GRID, StartGrid
from flopwise.fitting.points import FitInputError
from flopwise.planning.budget import Pool
from flopwise.planning.plan import PlanError, plan_campaign, pool_of

ObservedState = Literal["absent", "running", "succeeded", "failed", "lost"]
TERMINAL = ("Succeeded", "Failed", "Lost")
CURVE_POINTS = 24


@dataclass(frozen=True)
class EngineOptions:
    """How hard the engine fits: the final fit bootstraps ``bootstrap_resamples`` times from ``fit_grid``
    (Hoffmann's 4500 starts). Intermediate refits after each ladder run skip the bootstrap."""

    bootstrap_resamples: int = 200
    fit_grid: StartGrid = HOFFMANN_GRID


@dataclass(frozen=True)
class Observation:
    """What an executor saw of one run: never started (absent), running, finished, or vanished (lost)."""

    run_id: str
    state: ObservedState
    summary: RunSummary | None = None


@dataclass
class Decision:
    status: TrainingCampaignStatus
    launches: list[RunRecord] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)  # run ids to stop: the campaign no longer needs them
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) for people


def reconcile(spec: TrainingCampaignSpec, status: TrainingCampaignStatus | None, observations: list[Observation],
              *, now: float, generation: int | None = None, seed: int = 0,
              options: EngineOptions = EngineOptions()) -> Decision:
    """One step of the campaign: observe, decide, and say what to launch."""
    status = status.model_copy(deep=True) if status else TrainingCampaignStatus()
    spec, changed = keep_planned_sections(spec, status)
    engine = _Engine(spec, status, now, seed, options)
    if generation is not None:
        engine.status.observed_generation = generation
    engine.refuse_changes(changed)
    engine.step(observations)
    return engine.decision()


def keep_planned_sections(spec: TrainingCampaignSpec, status: TrainingCampaignStatus
                          ) -> tuple[TrainingCampaignSpec, list[str]]:
    """The spec to act on, and the immutable sections the user changed since planning (refused: the planned
    values stay in force)."""
    planned = status.planned_spec
    if planned is None:
        return spec, []
    changed = [name for name in IMMUTABLE_SECTIONS if getattr(spec, name) != getattr(planned, name)]
    if not changed:
        return spec, []
    return spec.model_copy(update={name: getattr(planned, name) for name in changed}), changed


class _Engine:
    def __init__(self, spec: TrainingCampaignSpec, status: TrainingCampaignStatus, now: float, seed: int,
                 options: EngineOptions):
        self.spec, self.status, self.now, self.seed, self.options = spec, status, now, seed, options
        self.launches: list[RunRecord] = []
        self.cancels: list[str] = []
        self.events: list[tuple[str, str]] = []

    # ---------------------------------------------------------------------------------------------- steps
    def step(self, observations: list[Observation]) -> None:
        if self.status.phase == "Pending" and not self._plan():
            return
        self._observe(observations)
        if not self._ended():
            self._advance()
            self._launch_pending()
        if self.status.phase == "Failed":  # stop what is still running; it is charged what it consumed
            self.cancels = [r.run_id for r in self.status.runs if r.state == "Running"]
        self._summarise()

    def refuse_changes(self, changed: list[str]) -> None:
        """Edits to planned sections are refused with a condition naming them; undoing them clears it."""
        existing = next((c for c in self.status.conditions if c.type == "SpecChangeRefused"), None)
        if changed:
            fields = ", ".join(f"spec.{name}" for name in changed)
            message = (f"{fields} cannot change once the campaign is planned (its runs were made with them); the "
                       "planned values stay in force: revert the edit, or create a new campaign")
            if existing is None or existing.message != message:
                self._event("SpecChangeRefused", message)
            self._condition("SpecChangeRefused", "True", "ImmutableField", message)
        elif existing is not None and existing.status == "True":
            self._condition("SpecChangeRefused", "False", "Reverted", "the immutable sections match the plan again")

    def decision(self) -> Decision:
        return Decision(status=self.status, launches=self.launches, cancels=self.cancels, events=self.events)

    def _ended(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")

    def _plan(self) -> bool:
        try:
            plan = plan_campaign(self.spec)
        except PlanError as error:
            self._fail("InvalidSpec", str(error))
            self._condition("Planned", "False", "InvalidSpec", str(error))
            return False
        self.status.plan = plan
        self.status.planned_spec = PlannedSpec(**{name: getattr(self.spec, name) for name in IMMUTABLE_SECTIONS})
        self._condition("Planned", "True", "Planned", f"{len(plan.all_runs())} runs planned, "
                        f"{plan.planned_flops / plan.budget_flops:.0%} of the budget")
        self._event("Planned", f"target {plan.target.params:,} params on {plan.target.tokens:,} tokens")
        self._enter("Ladder")
        return True

    # ---------------------------------------------------------------------------------------- observation
    def _observe(self, observations: list[Observation]) -> None:
        by_id = {r.run_id: r for r in self.status.runs}
        for obs in observations:
            record = by_id.get(obs.run_id)
            if record is None or record.state != "Running":
                continue  # unknown or already settled: observing twice changes nothing
            if self._ended() and obs.state in ("absent", "lost"):
                self._close_without_result(record, obs.state)
            elif obs.state == "absent":
                self.launches.append(record)  # persisted as Running but never started: launch (idempotent)
            elif obs.state in ("succeeded", "failed"):
                self._finish(record, obs.summary, succeeded=obs.state == "succeeded")
            elif obs.state == "lost":
                self._lost(record)
            elif obs.state == "running":
                record.seen_running = True

    def _finish(self, record: RunRecord, summary: RunSummary | None, *, succeeded: bool) -> None:
        pool = self._pool()
        if summary is not None and summary.run_id not in (record.run_id, "unknown"):
            summary = None  # a result for another run: not trusted
        if succeeded and (summary is None or summary.status != "succeeded" or summary.final_val_loss is None):
            succeeded = False
        if summary is not None:
            record.result = _result_of(summary)
            gpu_hours = summary.elapsed_s * self.spec.gpu_pool.gpus_per_run / 3600.0
            consumed = Charge(flops=summary.flops, gpu_hours=gpu_hours, usd=gpu_hours * pool.price_per_gpu_hour)
        else:  # nothing reported: charge the whole reservation (what it may have consumed, at most)
            consumed = record.reserved.model_copy()
        ledger.settle(record, consumed)
        record.finished_at = self.now
        if succeeded:
            record.state = "Succeeded"
            self._event("RunSucceeded", f"{record.run_id}: val loss {record.result.final_val_loss:.4f}")
            return
        record.state = "Failed"
        reason = summary.exit_reason if summary is not None else "no result reported"
        diverged = summary is not None and summary.status == "diverged"
        record.reason = (f"diverged: {reason}" if diverged else reason)[:1024]
        self._event("RunFailed", f"{record.run_id}: {record.reason}")
        if not diverged and record.role != "round1":
            self._retry(record)

    def _close_without_result(self, record: RunRecord, seen: str) -> None:
        """An ended campaign relaunches nothing: a run that never started gives its reservation back; one that
        vanished is charged its reservation (what it may have consumed, at most)."""
        if seen == "absent":
            ledger.release(record)
        else:
            ledger.settle(record, record.reserved.model_copy())
        record.state, record.finished_at = "Failed", self.now
        record.reason = "cancelled: the campaign ended" + (" before it started" if seen == "absent" else "")

    def _retry(self, record: RunRecord) -> None:
        if self._ended():
            return
        attempts = [r for r in self.status.runs if r.planned_id == record.planned_id]
        if len(attempts) > self.spec.tuning.max_retries:
            return
        again = record.model_copy(deep=True, update={
            "run_id": f"{record.planned_id}-a{len(attempts)}", "attempt": len(attempts), "state": "Pending",
            "reserved": Charge(), "spent": Charge(), "result": None, "reason": f"retry of {record.run_id}",
            "launched_at": None, "finished_at": None})
        self.status.runs.append(again)
        self._event("RunRetried", f"{record.run_id} failed; retrying as {again.run_id}")

    def _lost(self, record: RunRecord) -> None:
        """The run vanished without a result: re-run it once (it resumes from its checkpoint under the same
        reservation), then charge the reservation and mark it lost. A relaunch never seen running did not happen
        (a crash between persisting the status and creating it): it is tried again, not counted as a second loss."""
        if record.relaunches >= 1 and not record.seen_running:
            self.launches.append(record)
            return
        if record.relaunches >= 1:
            ledger.settle(record, record.reserved.model_copy())
            record.state, record.finished_at = "Lost", self.now
            record.reason = "vanished twice without a result; charged its reservation"
            self._event("RunLost", f"{record.run_id}: {record.reason}")
            return
        record.relaunches += 1
        record.seen_running = False
        record.reason = "relaunched after loss"
        self.launches.append(record)
        self._event("RunRelaunched", f"{record.run_id} vanished without a result; relaunching once")

    # -------------------------------------------------------------------------------------------- phases
    def _advance(self) -> None:
        for _ in range(6):  # a phase with nothing to run moves straight on
            before = self.status.phase
            {"Ladder": self._ladder, "Round1": self._round1, "Round2": self._round2,
             "Final": self._final}[before]()
            if self.status.phase == before or self.status.phase in ("Succeeded", "Failed"):
                return

    def _phase_done(self, role: str) -> bool:
        latest: dict[str, RunRecord] = {}
        for record in self.status.runs:
            if record.role == role:
                latest[record.planned_id] = record
        return all(r.state in TERMINAL for r in latest.values())

    def _ladder(self) -> None:
        finished = analysis.finished(self.status.runs, "ladder")
        done = self._phase_done("ladder")
        if len(finished) > (self.status.law.input_runs if self.status.law else 0) or done:
            self._fit(final=done)
        if not done:
            return
        if self.status.law is None:
            self._fail("FitFailed", f"the ladder finished with {len(finished)} usable runs: too few to fit a law")
            return
        self._enter("Round1")

    def _fit(self, *, final: bool) -> None:
        try:
            fitted = analysis.fit_ladder(self.status.runs, resamples=self.options.bootstrap_resamples if final else 0,
                                         seed=self.seed, with_backtest=final, grid=self.options.fit_grid)
        except FitInputError as error:
            self._condition("FitReady", "False", "NotEnoughRuns", str(error))
            return
        self.status.law = fitted.status.model_copy(update={"input_runs": len(analysis.finished(self.status.runs,
                                                                                               "ladder"))})
        plan = self.status.plan
        assert plan is not None
        try:  # re-plan the target with the campaign's own law instead of the prior
            replanned = plan_campaign(self.spec, law=fitted.law)
            plan.target, plan.final = replanned.target, replanned.final
            self._condition("Degraded", "False", "Replanned", "target re-planned under the fitted law")
        except ValueError as error:  # PlanError, or a degenerate law with no optimum
            self._condition("Degraded", "True", "ReplanFailed", f"{error}; keeping the {plan.target.law} target")
        self.status.prediction = analysis.predict(fitted, plan.target.params, plan.target.tokens)
        self._condition("FitReady", "True", "Fitted" if final else "Refitted",
                        f"{fitted.status.mode} fit on {fitted.status.n_points} points from {fitted.status.n_runs} runs"
                        + (f"; backtest ARE {fitted.status.backtest_are:.1%}" if fitted.status.backtest_are else ""))

    def _round1(self) -> None:
        if not self._phase_done("round1"):
            return
        tuning = self.status.tuning
        try:
            choice = analysis.choose_round1(self.status.runs)
        except FitInputError as error:
            tuning.round1_note = f"{error}; keeping the base learning rate {self.spec.tuning.base_learning_rate:g}"
            tuning.round1_best_lr = self.spec.tuning.base_learning_rate
            tuning.round1_best_warmup = self.spec.tuning.warmup_fractions[0]
            self._enter("Round2")
            return
        tuning.round1_best_lr, tuning.round1_best_warmup = choice.learning_rate, choice.warmup_fraction
        tuning.round1_best_loss, tuning.round1_note = choice.loss, choice.note
        if tuning.round1_grid_extended:
            tuning.round1_note += "; the grid was extended once past its edge" + (
                ", and the best LR is still on the edge: the optimum may lie further out" if choice.on_edge else "")
        elif choice.on_edge:
            tuning.round1_grid_extended = True
            if self._extend_round1(choice):
                return
        self._enter("Round2")

    def _extend_round1(self, choice: analysis.SweepChoice) -> bool:
        """The best LR sits on the grid's edge: add one point beyond it (once), if the budget allows."""
        factor = self.spec.tuning.lr_grid_factor
        template = next(r for r in self.status.runs if r.role == "round1" and r.learning_rate == choice.learning_rate
                        and r.warmup_fraction == choice.warmup_fraction)
        lr = choice.learning_rate * (factor if choice.on_edge == "high" else 1.0 / factor)
        index = sum(1 for r in self.status.runs if r.role == "round1")
        extra = template.model_copy(deep=True, update={
            "run_id": f"round1-{index:02d}", "planned_id": f"round1-{index:02d}", "attempt": 0, "state": "Pending",
            "learning_rate": lr, "reserved": Charge(), "spent": Charge(), "result": None,
            "reason": f"grid extended past the {choice.on_edge} edge", "launched_at": None, "finished_at": None})
        if not self._affordable(extra):
            self.status.tuning.round1_note += "; the grid could not be extended within the budget"
            return False
        self.status.runs.append(extra)
        self.status.tuning.round1_note += f"; extending the grid to lr {lr:.3g}"
        self._event("GridExtended", f"Round 1's best LR was on the {choice.on_edge} edge; trying {lr:.3g}")
        return True

    def _round2(self) -> None:
        if not self._phase_done("round2"):
            return
        verdict, fraction = analysis.round2_verdict(self.status.runs)
        self.status.tuning.round2_verdict, self.status.tuning.round2_best_fraction = verdict, fraction
        self._enter("Final")

    def _final(self) -> None:
        if self._phase_done("final"):
            self._recommend()
            self.status.phase = "Succeeded"
            self.status.message = "campaign finished"
            self._event("Succeeded", "campaign finished; recommendation in status.recommendation")

    # ---------------------------------------------------------------------------------- entering phases
    def _enter(self, phase: str) -> None:
        plan = self.status.plan
        assert plan is not None
        self.status.phase = phase  # type: ignore[assignment]
        self._event("PhaseChanged", f"entering {phase}")
        tuning = self.spec.tuning
        if phase == "Ladder":
            for run in plan.ladder.runs:
                self._add(run, tuning.base_learning_rate, tuning.warmup_fractions[0])
        elif phase == "Round1":
            for run in plan.round1.runs:
                self._add(run, run.learning_rate or tuning.base_learning_rate, run.warmup_fraction or 0.0)
        elif phase == "Round2":
            self._add_round2()
        elif phase == "Final":
            best = self.status.tuning
            warmup = best.round1_best_warmup if best.round1_best_warmup is not None else tuning.warmup_fractions[0]
            for run in plan.final.runs:
                self._add(run, best.round1_best_lr or tuning.base_learning_rate, warmup)

    def _add_round2(self) -> None:
        """Round 2 reruns the best Round-1 points at full length with the playbook's schedule rule:
        cosine keeps the base LR and extends max steps; linear/WSD keep Round 1's absolute decay length and
        warmup and lengthen the constant phase."""
        plan = self.status.plan
        assert plan is not None
        round1 = sorted((r for r in self.status.runs if r.role == "round1" and r.state == "Succeeded"),
                        key=analysis._run_loss)
        points: list[tuple[float, float, RunRecord | None]] = []
        best = self.status.tuning
        if best.round1_best_lr:
            points.append((best.round1_best_lr, best.round1_best_warmup or 0.0, round1[0] if round1 else None))
        for r in round1:
            if all(abs(math.log(r.learning_rate / lr)) > 1e-6 for lr, _, _ in points):
                points.append((r.learning_rate, r.warmup_fraction, r))
        for run, (lr, warmup, source) in zip(plan.round2.runs, points, strict=False):
            schedule = None
            if source is not None and self.spec.tuning.schedule in ("linear", "wsd"):
                schedule = ScheduleSpec(kind=self.spec.tuning.schedule, warmup_steps=source.schedule.warmup_steps,
                                        decay_steps=source.schedule.decay_steps, min_lr_ratio=0.1)
            self._add(run, lr, warmup, schedule=schedule)

    def _add(self, run: PlannedRun, lr: float, warmup: float, schedule: ScheduleSpec | None = None) -> None:
        if any(r.planned_id == run.run_id for r in self.status.runs):
            return
        tuning = self.spec.tuning
        if schedule is None:
            decay = max(1, round(tuning.decay_fraction * run.steps)) if tuning.schedule in ("linear", "wsd") else None
            schedule = ScheduleSpec(kind=tuning.schedule, warmup_steps=round(warmup * run.steps), decay_steps=decay,
                                    min_lr_ratio=0.1)
        self.status.runs.append(RunRecord(
            run_id=run.run_id, planned_id=run.run_id, role=run.role, shape=run.shape, params=run.params,
            tokens=run.tokens, batch_size=run.batch_size, steps=run.steps, learning_rate=lr,
            warmup_fraction=warmup, schedule=schedule, seed=self.seed))

    # ------------------------------------------------------------------------------------------ launching
    def _pool(self) -> Pool:
        pool = pool_of(self.spec)
        if self.status.measured_mfu:
            return Pool(peak_flops=pool.peak_flops, mfu=min(1.0, self.status.measured_mfu),
                        price_per_gpu_hour=pool.price_per_gpu_hour)
        return pool

    def _limits(self) -> ledger.Limits:
        return ledger.Limits.of(self.spec.budget)

    def _affordable(self, record: RunRecord) -> bool:
        flops = record.shape.flops_per_token() * record.tokens
        return ledger.fits(self.status.runs, ledger.charge_for(self._pool(), flops), self._limits())

    def _launch_pending(self) -> None:
        running = sum(1 for r in self.status.runs if r.state == "Running")
        slots = self.spec.gpu_pool.max_concurrent_runs - running
        for record in self.status.runs:
            if slots <= 0:
                break
            if record.state != "Pending":
                continue
            charge = ledger.charge_for(self._pool(), record.shape.flops_per_token() * record.tokens)
            if not ledger.fits(self.status.runs, charge, self._limits()):
                record.state, record.reason = "Failed", "not launched: the budget cannot cover it"
                record.finished_at = self.now
                self._condition("BudgetExhausted", "True", "CannotReserve",
                                f"{record.run_id} needs {charge.flops:.3g} FLOPs that the budget no longer has")
                continue
            ledger.reserve(record, charge)
            ledger.check(self.status.runs, self._limits())
            record.state, record.launched_at = "Running", self.now
            self.launches.append(record)
            self._event("RunLaunched", f"{record.run_id}: {record.params:,} params, {record.tokens:,} tokens, "
                        f"lr {record.learning_rate:.3g}")
            slots -= 1

    # --------------------------------------------------------------------------------------- conclusions
    def _recommend(self) -> None:
        plan = self.status.plan
        assert plan is not None
        target, tuning = plan.target, self.status.tuning
        pool = self._pool()
        prediction = self.status.prediction
        batch = max(1, self.spec.tuning.batch_tokens // target.shape.seq_len)
        self.status.recommendation = Recommendation(
            shape=target.shape, params=target.params, tokens=target.tokens,
            learning_rate=tuning.round1_best_lr or self.spec.tuning.base_learning_rate,
            warmup_fraction=tuning.round1_best_warmup if tuning.round1_best_warmup is not None
            else self.spec.tuning.warmup_fractions[0],
            schedule=self.spec.tuning.schedule, batch_size=batch, flops=target.flops,
            gpu_hours=pool.gpu_hours(target.flops), usd=pool.usd(target.flops),
            predicted_loss=prediction.loss if prediction else None,
            loss_low=prediction.loss_low if prediction else None,
            loss_high=prediction.loss_high if prediction else None,
            backtest_are=self.status.law.backtest_are if self.status.law else None, law=target.law)

    def _summarise(self) -> None:
        st = self.status
        counts = RunCounts(planned=len(st.plan.all_runs()) if st.plan else 0)
        for record in st.runs:
            name = {"Pending": "pending", "Running": "running", "Succeeded": "succeeded", "Failed": "failed",
                    "Lost": "lost"}[record.state]
            setattr(counts, name, getattr(counts, name) + 1)
        st.run_counts = counts
        if st.plan is not None:
            limits = self._limits()
            ledger.check(st.runs, limits)
            st.ledger = ledger.totals(st.runs, limits, st.plan.budget_flops)
            self._measure_mfu()
            remaining = sum(r.shape.flops_per_token() * r.tokens for r in st.runs if r.state == "Pending")
            if st.phase not in ("Succeeded", "Failed"):
                planned_ids = {r.planned_id for r in st.runs}
                remaining += sum(r.flops for r in st.plan.all_runs() if r.run_id not in planned_ids)
            if self.spec.gpu_pool.price_per_gpu_hour > 0:
                st.ledger.forecast_usd = st.ledger.spent_usd + st.ledger.reserved_usd + self._pool().usd(remaining)
            st.target_params = st.plan.target.params
        st.predicted_loss = st.prediction.loss if st.prediction else None

    def _measure_mfu(self) -> None:
        """FLOP-weighted MFU of finished runs against the pool's peak (what the dollars follow)."""
        flops = seconds = 0.0
        for record in self.status.runs:
            if record.result is not None and record.result.elapsed_s > 0 and record.result.flops > 0:
                flops += record.result.flops
                seconds += record.result.elapsed_s * self.spec.gpu_pool.gpus_per_run
        if seconds > 0:
            self.status.measured_mfu = flops / (seconds * self.spec.gpu_pool.peak)

    # ------------------------------------------------------------------------------------------ helpers
    def _fail(self, reason: str, message: str) -> None:
        self.status.phase = "Failed"
        self.status.message = message[:32768]
        self._condition("Failed", "True", reason, message)
        self._event("Failed", message)

    def _condition(self, kind: str, state: str, reason: str, message: str) -> None:
        conditions = self.status.conditions
        existing = next((c for c in conditions if c.type == kind), None)
        changed = existing is None or existing.status != state
        new = Condition(type=kind, status=state, reason=reason, message=message[:32768],  # type: ignore[arg-type]
                        last_transition_time=iso_time(self.now) if changed else existing.last_transition_time,
                        observed_generation=self.status.observed_generation)
        if existing is None:
            conditions.append(new)
        else:
            conditions[conditions.index(existing)] = new

    def _event(self, reason: str, message: str) -> None:
        self.events.append((reason, message))


def _result_of(summary: RunSummary) -> RunResult:
    from flopwise.contract import downsample

    curve = [p for p in summary.curve if math.isfinite(p.val_loss)]
    curve = downsample(curve, CURVE_POINTS)
    final = summary.final_val_loss if summary.final_val_loss is not None and math.isfinite(summary.final_val_loss) \
        else None
    best = summary.best_val_loss if summary.best_val_loss is not None and math.isfinite(summary.best_val_loss) \
        else None
    return RunResult(status=summary.status, exit_reason=summary.exit_reason[:512], tokens=summary.tokens,
                     steps=summary.steps, flops=summary.flops, final_val_loss=final, best_val_loss=best,
                     best_step=summary.best_step, best_tokens=summary.best_tokens, tokens_per_s=summary.tokens_per_s,
                     mfu=summary.mfu, elapsed_s=summary.elapsed_s,
                     curve=[{"tokens": p.tokens, "val_loss": p.val_loss} for p in curve])


def iso_time(seconds: float) -> str:
    """Kubernetes' timestamp format (RFC 3339, UTC, whole seconds)."""
    import datetime

    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def campaign_seed(name: str) -> int:
    """The seed of a campaign's runs and bootstrap: a function of its name, so every process agrees."""
    return sum(name.encode()) % 10_000
