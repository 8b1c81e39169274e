"""The campaign engine: a deterministic state machine over (spec, status, observed runs).

`reconcile` is the whole engine. It reads everything from the status it is given (the plan, the ledger as
per-run records, the tuning decisions), applies what the executor observed, advances the phase
    Pending → Round1 → Round2 → Ladder → Final → Succeeded   (or Failed)
and returns the new status with the runs to launch. It never talks to Kubernetes or processes: the local
runner and the operator both call it, persist the status first, then carry out the launches. Launches are
idempotent on the run id, so a crash between persisting and launching loses nothing and starts nothing twice.

Why tuning comes first: the law must describe models trained the way the target will be. Round 1 sweeps the
learning rate at a small proxy and at narrower widths (muP transfers the optimum across width; when the widths
disagree, a power law in dModel carries it); Round 2 trains its best points at full length and its final losses
decide the learning rate and, for WSD, the cooldown length. Every ladder run and the final run then train at
that learning rate (`_lr_for`), so the fitted law predicts tuned models.

The ladder's annealed endpoints give the law (`engine.conclude`): identified or not, said out loud, and the
allocation it supports with its interval; Chinchilla's Approach 2 beside it. Seed replicas give the noise floor.
With ``final.partialCheck`` the final run's first leg cools down at ~30% of its tokens (an annealed point at
the target size), the law is refitted with it (the prediction before and after is kept), and the final run
resumes the leg's stable-phase checkpoint to the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from flopwise.api.spec import MAX_LEARNING_RATE, TrainingCampaignSpec
from flopwise.api.status import (
    IMMUTABLE_SECTIONS,
    Allocation,
    Charge,
    Condition,
    PartialCheckStatus,
    PlannedSpec,
    Recommendation,
    RunCounts,
    RunRecord,
    RunResult,
    TrainingCampaignStatus,
)
from flopwise.contract import ModelShape, RunSummary
from flopwise.engine import analysis, conclude, ledger, records
from flopwise.fitting.fit import COARSE_GRID, HOFFMANN_GRID, StartGrid
from flopwise.fitting.points import FitInputError
from flopwise.planning.budget import Pool
from flopwise.planning.laws import PowerLawAllocation, allocation_rule
from flopwise.planning.plan import PlanError, final_budget, plan_campaign, plan_final, pool_of

ObservedState = Literal["absent", "running", "succeeded", "failed", "lost"]
TERMINAL = ("Succeeded", "Failed", "Lost")
CURVE_POINTS = 8  # the report draws curves from them; the fit reads only final losses (etcd: status size)
INTERIM_MIN_POINTS = 6  # a quick fit while the ladder runs needs this many annealed points,
INTERIM_EVERY = 3  # and is redone every this many new ones
PARTIAL_NOISE = 0.01  # relative seed noise assumed at the target when no seed replicas measured it


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
    reason: str = ""  # why it failed when there is no summary to say so (e.g. the container was OOMKilled)


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
        self._enter("Round1" if plan.round1.runs else "Round2")
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
                self._finish(record, obs.summary, succeeded=obs.state == "succeeded", why=obs.reason)
            elif obs.state == "lost":
                self._lost(record)
            elif obs.state == "running":
                record.seen_running = True

    def _finish(self, record: RunRecord, summary: RunSummary | None, *, succeeded: bool, why: str = "") -> None:
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
        reason = summary.exit_reason if summary is not None else f"no result reported{': ' + why if why else ''}"
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
        """A new attempt under a new run id. It continues the failed attempt's latest checkpoint when that left one
        (the trainer starts from scratch when it did not), so work done before a deletion, an OOM kill or a deadline
        is not paid for twice: the failed attempt was charged what it reported, the retry is charged its own leg.
        It reserves its whole run all the same (it may have to start over). A branch retries from its parent's
        kept checkpoint, as planned: its own folder may hold nothing, and a branch cannot start from scratch."""
        if self._ended():
            return
        attempts = [r for r in self.status.runs if r.planned_id == record.planned_id]
        if len(attempts) > self.spec.tuning.max_retries:
            return
        resume_from = record.resume_from if record.resume_step is not None else record.run_id
        again = record.model_copy(deep=True, update={
            "run_id": f"{record.planned_id}-a{len(attempts)}", "attempt": len(attempts), "state": "Pending",
            "reserved": Charge(), "spent": Charge(), "result": None, "reason": f"retry of {record.run_id}",
            "launched_at": None, "finished_at": None, "relaunches": 0, "seen_running": False,
            "resume_from": resume_from})
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
            {"Round1": self._round1, "Round2": self._round2, "Ladder": self._ladder,
             "Final": self._final}[before]()
            if self.status.phase == before or self.status.phase in ("Succeeded", "Failed"):
                return

    def _phase_done(self, *roles: str) -> bool:
        latest: dict[str, RunRecord] = {}
        for record in self.status.runs:
            if record.role in roles:
                latest[record.planned_id] = record
        return all(r.state in TERMINAL for r in latest.values())

    # Round 1 -----------------------------------------------------------------------------------------------
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
        """Compare the best LR across Round 1's widths (same depth): it transfers, or its power law in dModel
        sets each width's learning rate."""
        plan = self.status.plan
        width = self._proxy_width()
        assert plan is not None and width is not None
        result = analysis.transfer_status(
            self.status.runs, primary_width=width, warmup=choice.warmup_fraction,
            grid_factor=self.spec.tuning.lr_grid_factor, noise_sd=None,
            target_d_model=plan.target.shape.d_model, target_params=plan.target.params,
            parameterization=self.spec.model.parameterization)
        self.status.tuning.transfer = result
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
            "run_id": f"round1-{index:02d}", "planned_id": f"round1-{index:02d}", "group": None,
            "attempt": 0, "state": "Pending", "learning_rate": lr, "reserved": Charge(), "spent": Charge(),
            "result": None, "reason": f"grid extended past the {choice.on_edge} edge", "launched_at": None,
            "finished_at": None})
        if not self._affordable(extra):
            self.status.tuning.round1_note += "; the grid could not be extended within the budget"
            return False
        self.status.runs.append(extra)
        self.status.tuning.round1_note += f"; extending the grid to lr {lr:.3g}" + (
            f" at width {d_model}" if d_model != self._proxy_width() else "")
        self._event("GridExtended", f"Round 1's best LR at width {d_model} was on the {choice.on_edge} edge; "
                    f"trying {lr:.3g}")
        return True

    # Round 2 -----------------------------------------------------------------------------------------------
    def _round2(self) -> None:
        if not self._phase_done("round2"):
            return
        tuning = self.status.tuning
        decision = analysis.choose_round2(self.status.runs, default_lr=self._round1_lr(),
                                          default_warmup=self._round1_warmup(),
                                          default_decay=self.spec.tuning.decay_fraction,
                                          schedule=self.spec.tuning.schedule)
        tuning.learning_rate, tuning.warmup_fraction = decision.learning_rate, decision.warmup_fraction
        tuning.decay_fraction = decision.decay_fraction
        tuning.round2_verdict, tuning.round2_best_fraction = decision.verdict, decision.best_fraction
        tuning.round2_candidates = decision.candidates
        tuning.lr_rule = self._lr_rule()
        check, plan = tuning.transfer, self.status.plan
        if check is not None and check.learning_rate and plan is not None:  # what the target will train at
            target_lr = self._lr_for(plan.target.shape)
            ratio = target_lr / check.learning_rate
            check.learning_rate = target_lr
            check.lr_low = check.lr_low * ratio if check.lr_low else None
            check.lr_high = check.lr_high * ratio if check.lr_high else None
        self._event("Round2Decided", decision.verdict)
        self._enter("Ladder")

    def _round1_lr(self) -> float:
        return self.status.tuning.round1_best_lr or self.spec.tuning.base_learning_rate

    def _round1_warmup(self) -> float:
        best = self.status.tuning.round1_best_warmup
        return best if best is not None else self.spec.tuning.warmup_fractions[0]

    def _decided(self) -> tuple[float, float, float]:
        """(learning rate at the proxy width, warmup fraction, cooldown fraction) the tuning rounds decided."""
        tuning = self.status.tuning
        return (tuning.learning_rate or self._round1_lr(),
                tuning.warmup_fraction if tuning.warmup_fraction is not None else self._round1_warmup(),
                tuning.decay_fraction if tuning.decay_fraction is not None else self.spec.tuning.decay_fraction)

    def _lr_for(self, shape: ModelShape) -> float:
        """The learning rate a model of ``shape`` trains with: the decided one, carried to its width by the
        transfer law when Round 1's widths disagreed (muP makes it the same at every width when they agree)."""
        lr, _, _ = self._decided()
        width = self._proxy_width()
        check = self.status.tuning.transfer
        if check is not None and check.verdict == "does-not-hold" and check.exponent is not None and width:
            lr *= (shape.d_model / width) ** check.exponent
        return min(max(lr, 1e-7), MAX_LEARNING_RATE)

    def _lr_rule(self) -> str:
        lr, _, _ = self._decided()
        check = self.status.tuning.transfer
        if check is not None and check.verdict == "does-not-hold" and check.exponent is not None:
            return (f"lr {lr:.3g} at the proxy's width {self._proxy_width()}, × (dModel / "
                    f"{self._proxy_width()})^{check.exponent:.3f} elsewhere (Round 1's widths disagreed)")
        return f"lr {lr:.3g} at every width (muP: the base learning rate transfers)"

    # Ladder ------------------------------------------------------------------------------------------------
    def _ladder(self) -> None:
        done = self._phase_done("ladder", "seed")
        finished = [r for r in self.status.runs if r.role in ("ladder", "seed") and conclude.is_point(r)]
        seen = self.status.law.input_runs if self.status.law else 0
        if not done and len(finished) >= max(INTERIM_MIN_POINTS, seen + INTERIM_EVERY):
            self._interim_fit(len(finished))
        if not done:
            return
        floor = analysis.seed_floor(self.status.runs, None)
        self.status.noise_floor = floor
        if not self._conclude():
            return
        if floor is not None:
            self.status.noise_floor = analysis.seed_floor(self.status.runs, self.status.law.backtest_are
                                                          if self.status.law else None)
            if self.status.noise_floor is not None and self.status.noise_floor.message:
                self._event("NoiseFloor", self.status.noise_floor.message)
        self._enter("Final")

    def _interim_fit(self, offered: int) -> None:
        """A quick fit while the ladder runs (no bootstrap, a coarse start grid): the status shows the law taking
        shape. The recommendation waits for the final fit."""
        plan = self.status.plan
        assert plan is not None
        try:
            found = conclude.conclude_ladder(self.status.runs, flops=final_budget(self.spec),
                                             prior=allocation_rule(self.spec.law), resamples=0, seed=self.seed,
                                             grid=COARSE_GRID, backtest_holdout=False)
        except FitInputError as error:
            self._condition("FitReady", "False", "NotEnoughRuns", str(error))
            return
        self.status.law = found.status.model_copy(update={"input_runs": offered, "identified": None})
        self.status.prediction = found.predict(plan.target.params, plan.target.tokens)
        self._condition("FitReady", "True", "Interim", f"interim {found.status.mode} fit on {found.status.n_points} "
                        "annealed points (no intervals until the ladder ends)")

    def _floor_sd(self) -> float | None:
        floor = self.status.noise_floor
        if floor is None or floor.sd is None or not floor.mean_loss:
            return None
        return floor.sd / floor.mean_loss

    def _conclude(self, extra: list[RunRecord] | None = None) -> conclude.Conclusion | None:
        """The ladder's law and allocation (with intervals), the target re-planned on it, and the prediction.
        With ``extra`` (the partial leg) the final run is already committed: the target stays, the law, the
        allocation and the prediction are refreshed. Returns None when the campaign failed for want of a law."""
        plan = self.status.plan
        assert plan is not None
        try:
            found = conclude.conclude_ladder(self.status.runs, flops=final_budget(self.spec),
                                             prior=allocation_rule(self.spec.law),
                                             resamples=self.options.bootstrap_resamples, seed=self.seed,
                                             grid=self.options.fit_grid, floor_sd=self._floor_sd(), extra=extra)
        except FitInputError as error:
            if extra:
                raise
            self._fail("FitFailed", f"the ladder finished without a law: {error}")
            return None
        offered = sum(1 for r in self.status.runs if r.role in ("ladder", "seed") and conclude.is_point(r))
        self.status.law = found.status.model_copy(update={"input_runs": offered})
        allocation = found.allocation
        self.status.allocation = allocation
        if not extra:
            self._replan(allocation)
        self.status.prediction = found.predict(plan.target.params, plan.target.tokens)
        fitted = found.status
        self._condition("FitReady", "True", "Fitted", f"{fitted.mode} fit on {fitted.n_points} annealed points "
                        f"from {fitted.n_runs} trajectories" + (f"; backtest ARE {fitted.backtest_are:.1%}"
                                                                 if fitted.backtest_are is not None else ""))
        reason = {"full": "FullFit", "borrowed": "BorrowedExponents", "approach-2": "Approach2",
                  "prior": "NotIdentified"}[allocation.basis]
        state = "True" if allocation.basis == "full" else "False"
        self._condition("LawIdentified", state, reason, allocation.message)
        if allocation.basis != "full":
            self._event("LawNotIdentified", allocation.message)
        if allocation.agree is False:
            self._event("AllocationsDisagree", allocation.message)
        return found

    def _replan(self, allocation: Allocation) -> None:
        """The target under the campaign's own allocation: N_opt at the final budget, C ∝ N^(1/a) around it."""
        plan = self.status.plan
        assert plan is not None
        if allocation.basis == "prior" or not allocation.params > 0:
            self._condition("Degraded", "True", "NotIdentified", f"keeping the {plan.target.law} target: "
                            "nothing the campaign measured identifies an allocation")
            return
        exponent = (self.status.law.beta / (self.status.law.alpha + self.status.law.beta)
                    if self.status.law and self.status.law.alpha + self.status.law.beta > 0 else 0.5)
        if allocation.basis == "approach-2" and allocation.approach2 and allocation.approach2.exponent:
            exponent = allocation.approach2.exponent
        rule = PowerLawAllocation(params_exponent=min(max(exponent, 0.05), 0.95), anchor_params=allocation.params,
                                  anchor_flops=allocation.flops, name=f"campaign ({allocation.basis})")
        try:
            plan.target, plan.final = plan_final(self.spec, rule)
            self._condition("Degraded", "False", "Replanned", f"target re-planned on the campaign's allocation "
                            f"({allocation.basis})")
        except ValueError as error:
            self._condition("Degraded", "True", "ReplanFailed", f"{error}; keeping the {plan.target.law} target")

    # Final -------------------------------------------------------------------------------------------------
    def _final(self) -> None:
        check = self.status.partial_check
        plan = self.status.plan
        assert plan is not None
        if check is not None and check.loss_after is None and check.message is None:
            leg = self._latest(plan.final.runs[0].run_id)
            if leg is not None and leg.state in TERMINAL and leg.state != "Succeeded" \
                    and self._phase_done_for(leg.planned_id):
                self._partial_failed(check)
            elif leg is not None and leg.state == "Succeeded":
                self._partial_update(check, leg)
        if not self._phase_done("final"):
            return
        main = self._latest(plan.final.runs[-1].run_id) if plan.final.runs else None
        if check is not None and main is not None and main.state == "Succeeded" and main.result is not None:
            check.final_loss = main.result.final_val_loss
            self._partial_verdict(check)
        self._recommend()
        self.status.phase = "Succeeded"
        self.status.message = "campaign finished"
        self._condition("Complete", "True", "Recommended", "campaign finished; the recommendation is in "
                        "status.recommendation")
        self._event("Succeeded", "campaign finished; recommendation in status.recommendation")

    def _latest(self, planned_id: str) -> RunRecord | None:
        attempts = [r for r in self.status.runs if r.planned_id == planned_id]
        return attempts[-1] if attempts else None

    def _phase_done_for(self, planned_id: str) -> bool:
        latest = self._latest(planned_id)
        return latest is None or latest.state in TERMINAL

    # ---------------------------------------------------------------------------------- entering phases
    def _enter(self, phase: str) -> None:
        plan = self.status.plan
        assert plan is not None
        self.status.phase = phase  # type: ignore[assignment]
        self._event("PhaseChanged", f"entering {phase}")
        tuning = self.spec.tuning
        kind = tuning.schedule
        if phase == "Round1":
            for run in plan.round1.runs:
                warmup = run.warmup_fraction or 0.0
                self._add(records.record(run, lr=run.learning_rate or tuning.base_learning_rate,
                                         warmup_fraction=warmup, seed=self.seed, schedule_spec=records.schedule(
                                             kind, run.steps, round(warmup * run.steps), tuning.decay_fraction)))
        elif phase == "Round2":
            self._add_round2()
        elif phase == "Ladder":
            _, warmup, _ = self._decided()
            for record in records.ladder_records(plan.ladder.runs, kind=kind, lr_for=self._lr_for,
                                                 warmup_fraction=warmup, decay_fraction=tuning.decay_fraction,
                                                 seed=self.seed):
                self._add(record)
        elif phase == "Final":
            _, warmup, decay = self._decided()
            finals = records.final_records(plan.final.runs, kind=kind, lr=self._lr_for(plan.target.shape),
                                           warmup_fraction=warmup, decay_fraction=decay, seed=self.seed)
            for record in finals:
                self._add(record)
            if self.spec.final.partial_check and len(finals) == 2:
                leg = finals[0]
                prediction = self.status.prediction
                self.status.partial_check = PartialCheckStatus(
                    fraction=self.spec.final.partial_fraction, stop_step=leg.steps,
                    loss_before=prediction.loss if prediction else None,
                    low_before=prediction.loss_low if prediction else None,
                    high_before=prediction.loss_high if prediction else None)

    def _add_round2(self) -> None:
        """Round 2's candidates at full length at the proxy (the playbook's "few long runs at the best Round-1
        points"): Round 1's optimum, then its best other learning rate, then — for a WSD schedule — the optimum
        with twice the cooldown, then further Round-1 points. Their final losses decide (`_round2`)."""
        plan = self.status.plan
        assert plan is not None
        width = self._proxy_width()
        round1 = sorted((r for r in self.status.runs if r.role == "round1" and r.state == "Succeeded"
                         and r.shape.d_model == width), key=analysis._run_loss)
        best_lr, warmup, decay = self._round1_lr(), self._round1_warmup(), self.spec.tuning.decay_fraction
        others = []
        for r in round1:
            if all(abs(math.log(r.learning_rate / lr)) > 1e-6 for lr in [best_lr, *others]):
                others.append(r.learning_rate)
        candidates: list[tuple[float, float]] = [(best_lr, decay)]
        if others:
            candidates.append((others.pop(0), decay))
        if self.spec.tuning.schedule == "wsd" and 2 * decay <= 0.5:
            candidates.append((best_lr, 2 * decay))
        candidates += [(lr, decay) for lr in others]
        kind = self.spec.tuning.schedule
        for run, (lr, cooldown) in zip(plan.round2.runs, candidates, strict=False):
            self._add(records.record(run, lr=lr, warmup_fraction=warmup, seed=self.seed, schedule_spec=records.schedule(
                kind, run.steps, round(warmup * run.steps), cooldown)))

    def _add(self, record: RunRecord) -> RunRecord | None:
        if any(r.planned_id == record.planned_id for r in self.status.runs):
            return None
        self.status.runs.append(record)
        return record

    def _target_lr(self) -> tuple[float, float | None, float | None, str]:
        """The learning rate for the target: (lr, low, high, source)."""
        plan = self.status.plan
        assert plan is not None
        lr = self._lr_for(plan.target.shape)
        check = self.status.tuning.transfer
        round2 = bool(self.status.tuning.round2_candidates)
        if check is not None and check.verdict == "does-not-hold":
            return lr, check.lr_low, check.lr_high, "extrapolated in width" + (" from Round 2" if round2 else "")
        if self.status.tuning.round1_best_lr:
            low = high = None
            if check is not None and check.verdict == "holds" and check.lr_low and check.lr_high:
                low, high = min(check.lr_low, lr), max(check.lr_high, lr)
            source = "Round 2" if round2 else "Round 1"
            return lr, low, high, f"{source}, transferred" if check and check.verdict == "holds" else source
        return lr, None, None, "base"

    def _partial_update(self, check: PartialCheckStatus, leg: RunRecord) -> None:
        """The partial leg cooled down at partialFraction of the final run: an annealed point at the target size.
        The law is refitted with it as one more endpoint (no extra weight), and the final loss is predicted from
        the target's own point, carried to the end by the refitted law (`Conclusion.predict_from`); the prediction
        before and after is kept. The final run resumes the leg's checkpoint by itself."""
        assert leg.result is not None and leg.result.final_val_loss is not None
        check.tokens, check.observed_loss = leg.trajectory_tokens, leg.result.final_val_loss
        plan = self.status.plan
        assert plan is not None
        try:
            found = self._conclude(extra=[leg])
        except FitInputError as error:
            check.message = f"the refit with the partial leg failed ({error}); the prediction is unchanged"
            return
        if found is None:
            return
        target = plan.target
        # The leg and the final run share their trajectory up to the leg's cooldown: half of the seed variance
        # (an assumption, stated) separates the leg's end from the final run's.
        noise = (self._floor_sd() or PARTIAL_NOISE) * math.sqrt(0.5)
        after = found.predict_from(target.params, target.tokens, leg.trajectory_tokens, leg.result.final_val_loss,
                                   noise)
        self.status.prediction = after
        check.loss_after, check.low_after, check.high_after = after.loss, after.loss_low, after.loss_high
        if check.loss_before is not None:
            check.change = after.loss - check.loss_before
        check.message = (f"the target's own annealed point at {leg.trajectory_tokens:,} tokens ({check.fraction:g} "
                         f"of the run) has loss {leg.result.final_val_loss:.4f}; carried to the end by the refitted "
                         f"law, the predicted final loss goes "
                         f"{check.loss_before if check.loss_before is not None else float('nan'):.4f} → "
                         f"{after.loss:.4f}")
        self._event("PartialCheck", check.message)

    def _partial_failed(self, check: PartialCheckStatus) -> None:
        """The leg failed for good: the final run cannot resume it, so it starts from scratch (no check)."""
        plan = self.status.plan
        assert plan is not None
        main = self._latest(plan.final.runs[-1].run_id)
        check.message = "the partial leg failed: no check; the final run trains from scratch"
        if main is not None and main.state == "Pending":
            main.resume_from, main.resume_step, main.start_step = None, None, 0
            main.tokens = main.trajectory_tokens
        self._event("PartialCheck", check.message)

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

    def _dependency(self, record: RunRecord) -> str:
        """'ready' to launch, 'waiting' for the run it branches from, or 'failed' when that run failed for good.
        A ready branch is pointed at the attempt of its parent that succeeded."""
        if not record.resume_from or record.resume_step is None:
            return "ready"
        planned = self._planned_of(record.resume_from)
        parent = self._latest(planned)
        if parent is None or parent.state in ("Pending", "Running"):
            return "waiting"
        if parent.state != "Succeeded":
            return "failed"
        record.resume_from = parent.run_id
        return "ready"

    def _planned_of(self, run_id: str) -> str:
        found = next((r for r in self.status.runs if r.run_id == run_id), None)
        return found.planned_id if found is not None else run_id

    def _launch_pending(self) -> None:
        running = sum(1 for r in self.status.runs if r.state == "Running")
        slots = self.spec.gpu_pool.max_concurrent_runs - running
        for record in self.status.runs:
            if slots <= 0:
                break
            if record.state != "Pending":
                continue
            ready = self._dependency(record)
            if ready == "waiting":
                continue
            if ready == "failed":
                record.state, record.finished_at = "Failed", self.now
                record.reason = f"not launched: {record.resume_from}, whose checkpoint it branches from, failed"
                self._event("RunFailed", f"{record.run_id}: {record.reason}")
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
        target = plan.target
        pool = self._pool()
        prediction = self.status.prediction
        batch = max(1, self.spec.tuning.batch_tokens // target.shape.seq_len)
        lr, lr_low, lr_high, source = self._target_lr()
        _, warmup, decay = self._decided()
        floor = self.status.noise_floor
        allocation = self.status.allocation
        self.status.recommendation = Recommendation(
            shape=target.shape, params=target.params, tokens=target.tokens,
            learning_rate=lr, learning_rate_low=lr_low, learning_rate_high=lr_high, learning_rate_source=source,
            noise_floor_are=floor.floor_are if floor is not None else None, warmup_fraction=warmup,
            schedule=self.spec.tuning.schedule, decay_fraction=decay if self.spec.tuning.schedule == "wsd" else None,
            batch_size=batch, flops=target.flops, gpu_hours=pool.gpu_hours(target.flops), usd=pool.usd(target.flops),
            predicted_loss=prediction.loss if prediction else None,
            loss_low=prediction.loss_low if prediction else None,
            loss_high=prediction.loss_high if prediction else None,
            backtest_are=self.status.law.backtest_are if self.status.law else None, law=target.law,
            basis=allocation.basis if allocation else None,
            identified=allocation.identified if allocation else False,
            params_low=allocation.params_low if allocation else None,
            params_high=allocation.params_high if allocation else None)

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
