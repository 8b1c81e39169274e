"""The campaign engine: a deterministic state machine over (spec, status, observed runs).

`reconcile` is the whole engine. It reads everything from the status it is given (the plan, the ledger as
per-run records, the tuning decisions), applies what the executor observed, advances the phase
    Pending → Ladder → Round1 → Round2 → Final → Succeeded   (or Failed)
and returns the new status with the runs to launch. It never talks to Kubernetes or processes: the local
runner and the operator both call it, persist the status first, then carry out the launches. Launches are
idempotent on the run id, so a crash between persisting and launching loses nothing and starts nothing twice.

Beyond the loss law, the engine says how far its bets can be trusted at the target: the ladder's smallest rung
is rerun with other seeds (the noise floor next to the backtest ARE); Round 1 sweeps the LR at two or more
widths (transfer holds, or the best LR is extrapolated to the target by a power law); and with
``final.partialCheck`` the final run first trains a leg to ~30% of its tokens on its full schedule, the law is
refitted with that curve (the prediction before and after is kept), and a second leg resumes it to the end.
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
    PartialCheckStatus,
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
from flopwise.planning.plan import PlanError, partial_stop_step, plan_campaign, pool_of

ObservedState = Literal["absent", "running", "succeeded", "failed", "lost"]
TERMINAL = ("Succeeded", "Failed", "Lost")
CURVE_POINTS = 24
PARTIAL_SUFFIX = "-p"  # the partial leg of a final run: `final-00-p`, continued by `final-00`


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
        done = self._phase_done("ladder") and self._phase_done("seed")  # the seeds are cheap: wait for them
        if len(finished) > (self.status.law.input_runs if self.status.law else 0) or done:
            self._fit(final=done)
        if not done:
            return
        if self.status.law is None:
            self._fail("FitFailed", f"the ladder finished with {len(finished)} usable runs: too few to fit a law")
            return
        self.status.noise_floor = analysis.seed_floor(self.status.runs, self.status.law.backtest_are)
        if self.status.noise_floor is not None and self.status.noise_floor.message:
            self._event("NoiseFloor", self.status.noise_floor.message)
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
            choice = analysis.choose_round1(self.status.runs, self._proxy_width())
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
        extending = False
        if not tuning.round1_grid_extended and choice.on_edge:
            tuning.round1_grid_extended = True
            extending = self._extend_round1(choice)
        extending = self._extend_narrow_widths(choice) or extending
        if extending:
            return
        self._check_transfer(choice)
        self._enter("Round2")

    def _extend_narrow_widths(self, choice: analysis.SweepChoice) -> bool:
        """A narrower width's best LR on its grid's edge is extended once too: a censored optimum would blunt
        the transfer check (under SP the narrow width's optimum often lies past the top of the grid)."""
        width = self._proxy_width()
        optima = analysis.width_optima(self.status.runs, primary_width=width or 0, warmup=choice.warmup_fraction,
                                       grid_factor=self.spec.tuning.lr_grid_factor, noise_sd=None)
        added = False
        for d_model, _, optimum in optima:
            if d_model == width or optimum.on_edge is None:
                continue
            runs = [r for r in self.status.runs if r.role == "round1" and r.shape.d_model == d_model]
            if any(r.reason.startswith("grid extended") for r in runs):
                continue
            template = next(r for r in runs if r.learning_rate == optimum.best_grid_lr)
            added = self._extend_round1(analysis.SweepChoice(
                learning_rate=optimum.best_grid_lr, warmup_fraction=template.warmup_fraction, loss=math.nan,
                on_edge=optimum.on_edge, note=""), d_model) or added
        return added

    def _proxy_width(self) -> int | None:
        plan = self.status.plan
        return plan.round1.runs[0].shape.d_model if plan is not None and plan.round1.runs else None

    def _check_transfer(self, choice: analysis.SweepChoice) -> None:
        """Compare the best LR across Round 1's widths: it transfers, or its power law is extrapolated."""
        plan = self.status.plan
        width = self._proxy_width()
        assert plan is not None and width is not None
        floor = self.status.noise_floor
        result = analysis.transfer_status(
            self.status.runs, primary_width=width, warmup=choice.warmup_fraction,
            grid_factor=self.spec.tuning.lr_grid_factor, noise_sd=floor.sd if floor is not None else None,
            target_params=plan.target.params, parameterization=self.spec.model.parameterization)
        self.status.tuning.transfer = result
        chosen = self.status.tuning.round1_best_lr
        if result.verdict == "holds" and chosen:  # the proxy's optimum as Round 1 chose it (3-point parabola)
            result.learning_rate = chosen
            result.lr_low = min(result.lr_low or chosen, chosen)
            result.lr_high = max(result.lr_high or chosen, chosen)
        self._event("TransferChecked", result.message or result.verdict)
        state, reason = {"holds": ("True", "WithinOneGridStep"), "does-not-hold": ("False", "Extrapolated")}.get(
            result.verdict, ("Unknown", "OneWidth"))
        self._condition("LRTransfers", state, reason, result.message or result.verdict)

    def _extend_round1(self, choice: analysis.SweepChoice, d_model: int | None = None) -> bool:
        """The best LR sits on the grid's edge: add one point beyond it (once), if the budget allows."""
        factor = self.spec.tuning.lr_grid_factor
        d_model = d_model or self._proxy_width()
        template = next(r for r in self.status.runs if r.role == "round1" and r.learning_rate == choice.learning_rate
                        and r.warmup_fraction == choice.warmup_fraction and r.shape.d_model == d_model)
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
        self.status.tuning.round1_note += f"; extending the grid to lr {lr:.3g}" + (
            f" at width {d_model}" if d_model != self._proxy_width() else "")
        self._event("GridExtended", f"Round 1's best LR at width {d_model} was on the {choice.on_edge} edge; "
                    f"trying {lr:.3g}")
        return True

    def _round2(self) -> None:
        if not self._phase_done("round2"):
            return
        verdict, fraction = analysis.round2_verdict(self.status.runs)
        self.status.tuning.round2_verdict, self.status.tuning.round2_best_fraction = verdict, fraction
        self._enter("Final")

    def _final(self) -> None:
        check = self.status.partial_check
        plan = self.status.plan
        assert plan is not None
        if check is not None and plan.final.runs:
            main = plan.final.runs[0].run_id
            if not any(r.planned_id == main for r in self.status.runs):
                if not self._phase_done("final"):
                    return
                if self._partial_update(check):
                    return
            elif self._phase_done("final"):
                done = [r for r in analysis.finished(self.status.runs, "final") if r.planned_id == main]
                if done and done[-1].result is not None and check.final_loss is None:
                    check.final_loss = done[-1].result.final_val_loss
                    self._partial_verdict(check)
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
        if phase == "Ladder":  # the seed replicas right after the smallest rung: the floor is known early
            rungs = [r for r in plan.ladder.runs if r.role != "seed"]
            seeds = [r for r in plan.ladder.runs if r.role == "seed"]
            for run in rungs[:1] + seeds + rungs[1:]:
                self._add(run, tuning.base_learning_rate, tuning.warmup_fractions[0])
        elif phase == "Round1":
            for run in plan.round1.runs:
                self._add(run, run.learning_rate or tuning.base_learning_rate, run.warmup_fraction or 0.0)
        elif phase == "Round2":
            self._add_round2()
        elif phase == "Final":
            best = self.status.tuning
            warmup = best.round1_best_warmup if best.round1_best_warmup is not None else tuning.warmup_fractions[0]
            lr, _, _, _ = self._target_lr()
            for run in plan.final.runs:
                if self.spec.final.partial_check:
                    self._add_partial_leg(run, lr, warmup)
                else:
                    self._add(run, lr, warmup)

    def _add_round2(self) -> None:
        """Round 2 reruns the best Round-1 points at full length with the playbook's schedule rule:
        cosine keeps the base LR and extends max steps; linear/WSD keep Round 1's absolute decay length and
        warmup and lengthen the constant phase."""
        plan = self.status.plan
        assert plan is not None
        width = self._proxy_width()
        round1 = sorted((r for r in self.status.runs if r.role == "round1" and r.state == "Succeeded"
                         and r.shape.d_model == width), key=analysis._run_loss)
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

    def _add(self, run: PlannedRun, lr: float, warmup: float, schedule: ScheduleSpec | None = None,
             **leg: object) -> RunRecord | None:
        run_id = str(leg.pop("run_id", run.run_id))
        if any(r.planned_id == run_id for r in self.status.runs):
            return None
        tuning = self.spec.tuning
        if schedule is None:
            decay = max(1, round(tuning.decay_fraction * run.steps)) if tuning.schedule in ("linear", "wsd") else None
            schedule = ScheduleSpec(kind=tuning.schedule, warmup_steps=round(warmup * run.steps), decay_steps=decay,
                                    min_lr_ratio=0.1)
        fields: dict[str, object] = dict(
            run_id=run_id, planned_id=run_id, role=run.role, shape=run.shape, params=run.params,
            tokens=run.tokens, batch_size=run.batch_size, steps=run.steps, learning_rate=lr,
            warmup_fraction=warmup, schedule=schedule, seed=self.seed + run.seed_offset)
        record = RunRecord(**{**fields, **leg})
        self.status.runs.append(record)
        return record

    def _target_lr(self) -> tuple[float, float | None, float | None, str]:
        """The learning rate for the target size: (lr, low, high, source). Round 1's proxy optimum when it
        transfers (or was not checked), the power law's extrapolation when the widths disagree."""
        tuning = self.status.tuning
        check = tuning.transfer
        if check is not None and check.verdict == "does-not-hold" and check.learning_rate:
            return check.learning_rate, check.lr_low, check.lr_high, "extrapolated"
        if tuning.round1_best_lr:
            low = high = None
            if check is not None and check.verdict == "holds":
                low, high = check.lr_low, check.lr_high
            return tuning.round1_best_lr, low, high, "transferred" if check and check.verdict == "holds" else "proxy"
        return self.spec.tuning.base_learning_rate, None, None, "base"

    def _add_partial_leg(self, run: PlannedRun, lr: float, warmup: float) -> None:
        """The first leg of the final run: its full schedule, stopped at partialFraction of its steps."""
        stop = partial_stop_step(run.steps, self.spec.final.partial_fraction)
        tokens = stop * run.batch_size * run.shape.seq_len
        if self._add(run, lr, warmup, run_id=run.run_id + PARTIAL_SUFFIX, tokens=tokens, stop_at_step=stop):
            prediction = self.status.prediction
            self.status.partial_check = PartialCheckStatus(
                fraction=self.spec.final.partial_fraction, stop_step=stop,
                loss_before=prediction.loss if prediction else None,
                low_before=prediction.loss_low if prediction else None,
                high_before=prediction.loss_high if prediction else None)

    def _partial_update(self, check: PartialCheckStatus) -> bool:
        """The partial leg ended: refit the law with its curve, keep the prediction before and after, and
        resume the final run from the leg's checkpoint. Returns True when the continuation was added."""
        plan = self.status.plan
        assert plan is not None
        main = plan.final.runs[0]
        legs = [r for r in self.status.runs if r.planned_id == main.run_id + PARTIAL_SUFFIX]
        leg = legs[-1] if legs else None
        if leg is None or leg.state != "Succeeded" or leg.result is None:
            check.message = "the partial leg did not finish: no update and no continuation (the final run failed)"
            return False
        check.tokens, check.observed_loss = leg.result.tokens, leg.result.final_val_loss
        prediction = self.status.prediction
        law = self.status.law
        try:
            fitted = analysis.fit_ladder(self.status.runs, resamples=self.options.bootstrap_resamples, seed=self.seed,
                                         grid=self.options.fit_grid, extra=[leg],
                                         mode=law.mode if law is not None else "auto")
        except FitInputError as error:
            check.message = f"the refit with the partial curve failed ({error}); the prediction is unchanged"
        else:
            params = prediction.params if prediction else float(main.params)
            tokens = prediction.tokens if prediction else float(main.steps * main.batch_size * main.shape.seq_len)
            after = analysis.predict(fitted, params, tokens)
            check.loss_after, check.low_after, check.high_after = after.loss, after.loss_low, after.loss_high
            if check.loss_before is not None:
                check.change = after.loss - check.loss_before
            self.status.prediction = after
            check.message = (f"refitted with the final run's curve up to {leg.result.tokens:,} tokens "
                             f"({check.fraction:g} of the run, loss {leg.result.final_val_loss:.4f}): predicted final "
                             f"loss {check.loss_before if check.loss_before is not None else float('nan'):.4f} → "
                             f"{after.loss:.4f}")
            self._event("PartialCheck", check.message)
        start = leg.stop_at_step or 1
        rest = (main.steps - start) * main.batch_size * main.shape.seq_len
        added = self._add(main, leg.learning_rate, leg.warmup_fraction, schedule=leg.schedule, tokens=rest,
                          start_step=start, resume_from=leg.run_id)
        return added is not None

    def _partial_verdict(self, check: PartialCheckStatus) -> None:
        """Once the final run ends: how far each prediction was from what it reached."""
        if check.final_loss is None:
            return
        parts = []
        for name, value in (("before", check.loss_before), ("after", check.loss_after)):
            if value is not None:
                parts.append(f"{name} {value:.4f} (error {abs(value - check.final_loss) / check.final_loss:.2%})")
        check.message = (check.message or "") + f"; the final run reached {check.final_loss:.4f}: " + ", ".join(parts)

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
        lr, lr_low, lr_high, source = self._target_lr()
        floor = self.status.noise_floor
        self.status.recommendation = Recommendation(
            shape=target.shape, params=target.params, tokens=target.tokens,
            learning_rate=lr, learning_rate_low=lr_low, learning_rate_high=lr_high, learning_rate_source=source,
            noise_floor_are=floor.floor_are if floor is not None else None,
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
                for leg in st.runs:  # a planned final run whose partial leg is under way: only the rest remains
                    if leg.planned_id.endswith(PARTIAL_SUFFIX) and leg.attempt == 0 \
                            and leg.planned_id.removesuffix(PARTIAL_SUFFIX) not in planned_ids:
                        remaining -= leg.shape.flops_per_token() * leg.tokens
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
