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
    LIVE_STATES,
    Allocation,
    Charge,
    Condition,
    PartialCheckStatus,
    PlannedSpec,
    PodTime,
    Recommendation,
    RunCounts,
    RunRecord,
    RunResult,
    TrainingCampaignStatus,
)
from flopwise.contract import ModelShape, RunSummary
from flopwise.engine import analysis, conclude, ledger, records
from flopwise.engine.fits import FitRequest, Fitter, request_for, run_fit
from flopwise.fitting.fit import COARSE_GRID, HOFFMANN_GRID, StartGrid
from flopwise.fitting.points import FitInputError
from flopwise.overview.columns import status_display
from flopwise.planning.budget import Pool
from flopwise.planning.laws import PowerLawAllocation, allocation_rule, campaign_law_name
from flopwise.planning.plan import PlanError, final_budget, plan_campaign, plan_final, pool_of

ObservedState = Literal["absent", "running", "queued", "succeeded", "failed", "lost"]
TERMINAL = ("Succeeded", "Failed", "Lost")
CURVE_POINTS = 8  # the report draws curves from them; the fit reads only final losses (etcd: status size)
INTERIM_MIN_POINTS = 6  # a quick fit while the ladder runs needs this many annealed points,
INTERIM_EVERY = 3  # and is redone every this many new ones
PARTIAL_NOISE = 0.01  # relative seed noise assumed at the target when no seed replicas measured it
DISTINCT_LR = math.log(1.25)  # Round 2 compares learning rates at least this far apart in log (Round 1's steps: ×2)


@dataclass(frozen=True)
class EngineOptions:
    """How hard the engine fits: the final fit bootstraps ``bootstrap_resamples`` times from ``fit_grid``
    (Hoffmann's 4500 starts). Intermediate refits after each ladder run skip the bootstrap. ``fitter``: who fits
    (engine/fits.py; None: inline); one that answers "not yet" makes the engine wait for that fit alone."""

    bootstrap_resamples: int = 200
    fit_grid: StartGrid = HOFFMANN_GRID
    fitter: Fitter | None = None


@dataclass(frozen=True)
class PodUsage:
    """One Pod of a run as an executor saw it: when it took its GPUs (the kubelet started it) and, once it let them
    go (its container ended, or it was gone), when. On a cluster this, not the trainer's report, is what a run
    costs."""

    uid: str
    gpus: int
    started_at: float
    finished_at: float | None = None


@dataclass(frozen=True)
class Observation:
    """What an executor saw of one run: never started (absent), running, queued (its Job suspended: not admitted
    yet, or preempted), finished, or vanished (lost). ``pods`` is every Pod of the run that has started (None: the
    executor cannot see Pods; the local one charges the trainer's own clock); ``cut`` says why the executor
    stopped it (``DeadlineExceeded``: it ran out of its reservation)."""

    run_id: str
    state: ObservedState
    summary: RunSummary | None = None
    pods: tuple[PodUsage, ...] | None = None
    cut: str | None = None
    image_digest: str | None = None  # the trainer image's digest, where a Pod status shows one
    reason: str = ""  # why it failed when there is no summary to say so (e.g. the container was OOMKilled)


@dataclass
class Decision:
    status: TrainingCampaignStatus
    launches: list[RunRecord] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)  # run ids to stop: the campaign no longer needs them
    suspends: list[str] = field(default_factory=list)  # run ids to stop for now (spec.suspend): checkpoint kept
    resumes: list[RunRecord] = field(default_factory=list)  # suspended runs to go on (same Job or a new one)
    # runs that used part of their reservation before their Job's clock (re)started (preempted and queued, or
    # re-admitted): their Job's deadline becomes what is left
    rearms: list[RunRecord] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) for people


def reconcile(spec: TrainingCampaignSpec, status: TrainingCampaignStatus | None, observations: list[Observation],
              *, now: float, generation: int | None = None, seed: int = 0,
              options: EngineOptions = EngineOptions(), owned: bool = False) -> Decision:
    """One step of the campaign: observe, decide, and say what to launch. ``status`` is left as it was unless
    ``owned``: the caller hands it over (a fresh parse it will not read again) and it becomes the decision's status,
    saving a deep copy (11 % of the operator's CPU at 40 campaigns, py-spy)."""
    if status is None:
        status = TrainingCampaignStatus()
    elif not owned:
        status = status.model_copy(deep=True)
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
        self.suspends: list[str] = []
        self.resumes: list[RunRecord] = []
        self.rearms: list[RunRecord] = []
        self.events: list[tuple[str, str]] = []
        self.fit_pending = False  # a fit this step needs is being computed elsewhere: its phase waits for it

    # ---------------------------------------------------------------------------------------------- steps
    def step(self, observations: list[Observation]) -> None:
        if self.status.phase == "Pending" and not self._plan():
            return
        self._observe(observations)
        if not self._ended():
            self._advance()
            if self.spec.suspend:
                self._suspend()
            else:
                self._resume()
                self._launch_pending()
        if self.status.phase == "Failed":  # stop what is still running; it is charged what it consumed
            self.cancels = [r.run_id for r in self.status.runs if r.state in LIVE_STATES]
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
        return Decision(status=self.status, launches=self.launches, cancels=self.cancels, suspends=self.suspends,
                        resumes=self.resumes, rearms=self.rearms, events=self.events)

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
            if record is None or record.state not in LIVE_STATES:
                continue  # unknown or already settled: observing twice changes nothing
            pods_changed, another = self._track_pods(record, obs.pods) if obs.pods is not None else (False, False)
            if obs.image_digest and record.image_digest != obs.image_digest:
                record.image_digest = obs.image_digest
            if another and obs.state == "running":
                self.rearms.append(record)  # re-admitted or replaced: its deadline must count the earlier Pods
            if obs.state in ("failed", "lost", "absent") and obs.pods and any(p.finished_at is None for p in obs.pods):
                continue  # its Pods still hold their GPUs (terminating): settle or relaunch once they have stopped
            if record.state == "Suspended":  # stopped on purpose: its SIGTERM report or deleted Job is no failure
                if obs.state == "succeeded":
                    self._finish(record, obs.summary, succeeded=True, watched=obs.pods is not None)
                elif self._ended() and obs.state in ("absent", "lost"):
                    self._close_without_result(record, obs.state, watched=obs.pods is not None)
                elif obs.state == "running" and self.spec.suspend:
                    self.suspends.append(record.run_id)  # resumed by someone else: stopped again
                continue
            if self._ended() and obs.state in ("absent", "lost"):
                self._close_without_result(record, obs.state, watched=obs.pods is not None)
            elif obs.state == "absent":
                self.launches.append(record)  # persisted as Running but never started: launch (idempotent)
            elif obs.state == "queued":
                self._queued(record, rearm=pods_changed)
            elif obs.state in ("succeeded", "failed"):
                self._finish(record, obs.summary, succeeded=obs.state == "succeeded", cut=obs.cut, why=obs.reason,
                             watched=obs.pods is not None)
            elif obs.state == "lost":
                self._lost(record, watched=obs.pods is not None)
            elif obs.state == "running":
                record.seen_running = True
                if record.state == "Queued":
                    record.state = "Running"
                    self._event("RunAdmitted", f"{record.run_id}: admitted; its Job runs again")

    def _track_pods(self, record: RunRecord, seen: tuple[PodUsage, ...]) -> tuple[bool, bool]:
        """Keep each started Pod's GPU time on the record (persisted when a Pod starts or ends, never while it
        runs). A Pod gone without an end the executor saw is charged until now, when it was noticed gone.
        Returns (anything changed, a Pod started after earlier ones: re-admitted or replaced)."""
        known = {p.uid: p for p in record.pods}
        changed = another = False
        for pod in seen:
            held = known.get(pod.uid)
            if held is None:
                another = another or bool(record.pods)
                record.pods.append(PodTime(uid=pod.uid[:64], gpus=pod.gpus, started_at=pod.started_at,
                                           finished_at=pod.finished_at))
                changed = True
            elif held.finished_at is None and pod.finished_at is not None:
                held.finished_at = max(held.started_at, pod.finished_at)
                changed = True
        current = {pod.uid for pod in seen}
        for held in record.pods:
            if held.finished_at is None and held.uid not in current:
                held.finished_at = max(held.started_at, self.now)
                changed = True
        return changed, another

    def _pod_gpu_hours(self, record: RunRecord) -> float:
        return sum(p.gpus * max(0.0, (p.finished_at if p.finished_at is not None else self.now) - p.started_at)
                   for p in record.pods) / 3600.0

    def _queued(self, record: RunRecord, *, rearm: bool) -> None:
        """Its Job is suspended (Kueue: not admitted yet, or preempted): not a failure. The reservation stays;
        the same Job resumes from its checkpoint once admitted, with what is left of its reservation."""
        if record.state == "Running":
            record.state = "Queued"
            if record.pods:
                self._event("RunPreempted", f"{record.run_id}: its Job was suspended after "
                            f"{self._pod_gpu_hours(record):.3g} GPU-hours; it resumes from its checkpoint once "
                            "admitted again")
            rearm = rearm or bool(record.pods)
        if rearm and record.pods:
            self.rearms.append(record)

    def _consumed(self, record: RunRecord, summary: RunSummary | None, cut: str | None, watched: bool) -> Charge:
        """What a finished run is charged. GPU-hours and dollars: the GPU time of its Pods where the executor
        watches Pods (``watched``: a cluster, whatever the report says; none started: nothing), else the trainer's
        own clock; the whole reservation when neither is known, or when it was cut at its deadline after it
        started (it used all the executor allowed). FLOPs: what the trainer counted, else the reservation's (none
        when no Pod ever started)."""
        price = self._pool().price_per_gpu_hour
        if record.pods or watched:
            if not record.pods and summary is None:
                return Charge()  # no Pod of it ever started (pending until its deadline, or refused)
            gpu_hours = self._pod_gpu_hours(record)
        elif summary is not None:
            gpu_hours = summary.elapsed_s * self.spec.gpu_pool.gpus_per_run / 3600.0
        else:
            return record.reserved.model_copy()
        if cut and record.pods:
            gpu_hours = max(gpu_hours, record.reserved.gpu_hours)
        flops = summary.flops if summary is not None else record.reserved.flops
        return Charge(flops=flops, gpu_hours=gpu_hours, usd=gpu_hours * price)

    def _finish(self, record: RunRecord, summary: RunSummary | None, *, succeeded: bool, cut: str | None = None,
                watched: bool = False, why: str = "") -> None:
        if summary is not None and summary.run_id not in (record.run_id, "unknown"):
            summary = None  # a result for another run: not trusted
        if succeeded and (summary is None or summary.status != "succeeded" or summary.final_val_loss is None):
            succeeded = False
        if summary is not None:
            record.result = _result_of(summary)
        started = bool(record.pods) or not watched
        ledger.settle(record, self._consumed(record, summary, None if succeeded else cut, watched))
        record.pods = []  # folded into spent
        record.finished_at = self.now
        if succeeded:
            record.state = "Succeeded"
            self._event("RunSucceeded", f"{record.run_id}: val loss {record.result.final_val_loss:.4f}")
            return
        record.state = "Failed"
        reason = summary.exit_reason if summary is not None else f"no result reported{': ' + why if why else ''}"
        diverged = summary is not None and summary.status == "diverged"
        if cut and not diverged:
            reason = (f"stopped at its deadline ({cut}): slower than its reservation allowed; charged in full"
                      + (f" ({reason})" if summary is not None else "")) if started else (
                f"stopped at its deadline ({cut}) before it started (pending longer than "
                "gpuPool.startupSlackSeconds); nothing charged")
        record.reason = (f"diverged: {reason}" if diverged else reason)[:1024]
        self._event("RunCut" if cut and not diverged else "RunFailed", f"{record.run_id}: {record.reason}")
        if not diverged and record.role != "round1":
            self._retry(record, resume=self._resume_point(record, summary) if cut else None)

    def _resume_point(self, record: RunRecord, summary: RunSummary | None
                      ) -> tuple[str, int | None, int, int] | None:
        """Where a run cut at its deadline can go on: (run whose checkpoint to load, the kept step it branches from
        or None for its latest, the step it is at, tokens left). Only where checkpoints outlive the Pod
        (trainer.outputClaimName) and one was written: the trainer checkpoints on SIGTERM and reports how far it
        got; a run that trained nothing goes on from where it would have started (its branch point, or the leg it
        continued)."""
        if not self.spec.trainer.output_claim_name:
            return None
        done = summary.steps if summary is not None else 0
        if done > 0:
            tokens_done = summary.tokens if summary is not None else 0
            return record.run_id, None, record.start_step + done, max(1, record.tokens - tokens_done)
        if record.resume_from:
            return record.resume_from, record.resume_step, record.start_step, record.tokens
        return None

    def _close_without_result(self, record: RunRecord, seen: str, *, watched: bool = False) -> None:
        """An ended campaign relaunches nothing: a run that never started gives its reservation back; one that
        vanished is charged the GPU time its Pods held where the executor watches Pods, else its reservation (at
        most what it may have consumed)."""
        if (seen == "absent" or watched) and not record.pods:
            ledger.release(record)
        elif record.pods:
            ledger.settle(record, self._consumed(record, None, None, watched))
        else:
            ledger.settle(record, record.reserved.model_copy())
        record.pods = []
        record.state, record.finished_at = "Failed", self.now
        record.reason = "cancelled: the campaign ended" + (" before it started" if seen == "absent" else "")

    def _retry(self, record: RunRecord, resume: tuple[str, int | None, int, int] | None = None) -> None:
        """A new attempt under a new name (and a new reservation, when the ledger can afford it); ``resume``
        (checkpoint's run, its kept step or None, the step, tokens left) makes it go on from a checkpoint instead of
        starting over."""
        if self._ended():
            return
        attempts = [r for r in self.status.runs if r.planned_id == record.planned_id]
        if len(attempts) > self.spec.tuning.max_retries:
            return
        update: dict[str, object] = {
            "run_id": f"{record.planned_id}-a{len(attempts)}", "attempt": len(attempts), "state": "Pending",
            "reserved": Charge(), "spent": Charge(), "result": None, "reason": f"retry of {record.run_id}",
            "launched_at": None, "finished_at": None, "relaunches": 0, "seen_running": False, "pods": [],
            "image": None, "image_digest": None}
        if resume is not None:
            source, kept, step, tokens = resume
            update.update(resume_from=source, resume_step=kept, start_step=step, tokens=tokens,
                          reason=f"continues {record.run_id} from its checkpoint at step {step}")
        again = record.model_copy(deep=True, update=update)
        self.status.runs.append(again)
        self._event("RunRetried", f"{record.run_id} failed; retrying as {again.run_id}"
                    + (f" from {resume[0]}'s checkpoint at step {resume[2]}" if resume else ""))

    def _lost(self, record: RunRecord, *, watched: bool = False) -> None:
        """The run vanished without a result: re-run it once (it resumes from its checkpoint under the same
        reservation), then charge the reservation and mark it lost. A relaunch never seen running did not happen
        (a crash between persisting the status and creating it): it is tried again, not counted as a second loss.
        Where the executor watches Pods, the vanished Job may have run Pods nobody saw (the operator was down):
        that time, from its launch or its last Pod's end until now, is counted against the reservation, so the
        relaunched Job's deadline is what is surely left."""
        if record.relaunches >= 1 and not record.seen_running:
            self.launches.append(record)
            return
        if watched and record.relaunches == 0:
            since = max([record.launched_at or self.now] + [p.finished_at or p.started_at for p in record.pods])
            if since < self.now:
                record.pods.append(PodTime(uid=f"unseen-{len(record.pods)}", gpus=self.spec.gpu_pool.gpus_per_run,
                                           started_at=since, finished_at=self.now))
        if record.relaunches >= 1:
            ledger.settle(record, record.reserved.model_copy())
            record.pods = []
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
            sweep = [r for r in self.status.runs if r.role == "round1"]
            if not any(r.state == "Succeeded" for r in sweep):  # nothing trains here: the ladder would burn its budget
                reasons = sorted({(r.reason or "failed").split(":")[0] for r in sweep})
                self._fail("Round1Failed", f"every Round 1 run failed ({len(sweep)} runs: {', '.join(reasons)}), so "
                           "no learning rate trains this model; nothing else was launched. Fix: lower "
                           "spec.tuning.baseLearningRate if they diverged, else read the runs' reasons (data, "
                           "image, resources) and apply again")
                return
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
        self._carry_transfer_to_target()
        self._event("Round2Decided", decision.verdict)
        self._enter("Ladder")

    def _carry_transfer_to_target(self) -> None:
        """Keep the transfer check's learning rate (and its interval, shifted by the same factor) the one the
        target trains at: after Round 2 decided the proxy's LR, and again when the fitted law resized the target."""
        check, plan = self.status.tuning.transfer, self.status.plan
        if check is None or not check.learning_rate or plan is None:
            return
        target_lr = self._lr_for(plan.target.shape)
        ratio = target_lr / check.learning_rate
        check.learning_rate, check.target_d_model = target_lr, plan.target.shape.d_model
        check.target_params = plan.target.params
        check.lr_low = check.lr_low * ratio if check.lr_low else None
        check.lr_high = check.lr_high * ratio if check.lr_high else None

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
    def _fitted(self, request: FitRequest) -> conclude.Conclusion | None:
        """The conclusion from the fitter (None: still being computed elsewhere; the step waits for it)."""
        found = (self.options.fitter or run_fit)(request)
        self.fit_pending = self.fit_pending or found is None
        return found

    def _ladder(self) -> None:
        done = self._phase_done("ladder", "seed")
        finished = [r for r in self.status.runs if r.role in ("ladder", "seed") and conclude.is_point(r)]
        seen = self.status.law.input_runs if self.status.law else 0
        if not done and len(finished) >= max(INTERIM_MIN_POINTS, seen + INTERIM_EVERY):
            self._interim_fit(len(finished))
        if not done or self._extend_isoflop():
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

    def _extend_isoflop(self) -> bool:
        """An IsoFLOP level whose best run is its smallest or largest size gets one more size past that edge
        (at most EDGE_EXTENSIONS per level, one at a time), as Round 1's grid does past its edge: a profile
        whose minimum lies outside the sizes tried gives Approach 2 nothing, and the parametric fit then rests
        on a curve seen from one side. Paid from what the budget has left, never from the final run's share."""
        added = False
        for edge, planned in analysis.edge_extensions(self.spec, self.status.runs):
            where = f"IsoFLOP level {edge.level} ({edge.flops:.3g} FLOPs) is lowest at its {edge.side} size " \
                    f"({edge.edge_params:,.0f} params)"
            if isinstance(planned, str):
                self._event("LevelNotExtended", f"{where}; not extended: {planned}")
                analysis.close_edge(self.status.runs, edge, planned)
                continue
            _, warmup, _ = self._decided()
            record = records.ladder_records([planned], kind=self.spec.tuning.schedule, lr_for=self._lr_for,
                                            warmup_fraction=warmup, decay_fraction=self.spec.tuning.decay_fraction,
                                            seed=self.seed)[0]
            record.reason = f"{analysis.EXTENDED} past the {edge.side} size of level {edge.level}"
            if not self._affordable_before_final(record):
                why = f"{planned.params:,} params would not fit the budget left beside the final run's share"
                self._event("LevelNotExtended", f"{where}; not extended: {why}")
                analysis.close_edge(self.status.runs, edge, why)
                continue
            self.status.runs.append(record)
            self._event("LevelExtended", f"{where}; trying {planned.params:,} params ({planned.shape.n_layer}×"
                        f"{planned.shape.d_model}) on {planned.tokens:,} tokens")
            added = True
        return added

    def _affordable_before_final(self, record: RunRecord) -> bool:
        """Would ``record`` fit the budget less its margin, with the final phase's planned runs still paid for?"""
        plan = self.status.plan
        assert plan is not None
        final = sum(r.flops for r in plan.final.runs) if not any(r.role == "final" for r in self.status.runs) else 0
        charge = self._reservation(record)
        keep = ledger.worst_case(self._pool(), final, gpus=self.spec.gpu_pool.gpus_per_run, overhead_s=0.0) \
            if final else Charge()
        margin = 1.0 - self.spec.budget.margin
        limits = ledger.Limits(flops=self.spec.budget.flops * margin if self.spec.budget.flops else None,
                               usd=self.spec.budget.usd * margin if self.spec.budget.usd else None)
        return ledger.fits(self.status.runs, Charge(flops=charge.flops + keep.flops,
                                                    gpu_hours=charge.gpu_hours + keep.gpu_hours,
                                                    usd=charge.usd + keep.usd), limits)

    def _interim_fit(self, offered: int) -> None:
        """A quick fit while the ladder runs (no bootstrap, a coarse start grid): the status shows the law taking
        shape. The recommendation waits for the final fit."""
        plan = self.status.plan
        assert plan is not None
        try:
            found = self._fitted(request_for(self.status.runs, flops=final_budget(self.spec),
                                             prior=allocation_rule(self.spec.law), resamples=0, seed=self.seed,
                                             grid=COARSE_GRID, backtest_holdout=False))
        except FitInputError as error:
            self._condition("FitReady", "False", "NotEnoughRuns", str(error))
            return
        if found is None:
            return  # being computed elsewhere: the status shows it on a later pass, if still the newest
        self.status.law = found.status.model_copy(update={"input_runs": offered, "identified": None})
        self.status.prediction = found.predict(plan.target.params, plan.target.tokens)
        self._condition("FitReady", "True", "Interim", f"interim {found.status.mode} fit on {found.status.n_points} "
                        "annealed points (no intervals until the ladder ends)")

    def _floor_sd(self) -> float | None:
        return self.status.noise_floor.relative_sd if self.status.noise_floor else None

    def _conclude(self, extra: list[RunRecord] | None = None) -> conclude.Conclusion | None:
        """The ladder's law and allocation (with intervals), the target re-planned on it, and the prediction.
        With ``extra`` (the partial leg) the final run is already committed: the target stays, the law, the
        allocation and the prediction are refreshed. Returns None when the campaign failed for want of a law, or
        while the fit is computed elsewhere (`self.fit_pending`)."""
        plan = self.status.plan
        assert plan is not None
        try:
            found = self._fitted(request_for(self.status.runs, flops=final_budget(self.spec),
                                             prior=allocation_rule(self.spec.law),
                                             resamples=self.options.bootstrap_resamples, seed=self.seed,
                                             grid=self.options.fit_grid, floor_sd=self._floor_sd(), extra=extra))
        except FitInputError as error:
            if extra:
                raise
            self._fail("FitFailed", f"the ladder finished without a law: {error}")
            return None
        if found is None:
            return None  # being computed elsewhere: the phase waits for it
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
                  "approach-2-borrowed": "Approach2BorrowedExponent", "prior": "NotIdentified"}[allocation.basis]
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
        law = self.status.law
        exponent = conclude.allocation_exponent(law.alpha if law else None, law.beta if law else None, allocation)
        rule = PowerLawAllocation(params_exponent=exponent, anchor_params=allocation.params,
                                  anchor_flops=allocation.flops, name=campaign_law_name(allocation.basis))
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
        if not self._phase_done("final") or self.fit_pending:
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
        points"): Round 1's optimum, then its best learning rate below the optimum (Round 1's runs are short, and
        the optimum falls with training length: Bjorck et al. 2024, "Scaling Optimal LR Across Token Horizons"),
        never one within 25% of the optimum (the grid point next to a parabola's vertex often is); then, for a
        WSD schedule, the optimum with twice the cooldown; then further Round-1 points. Their final losses decide
        (`_round2`)."""
        plan = self.status.plan
        assert plan is not None
        width = self._proxy_width()
        round1 = sorted((r for r in self.status.runs if r.role == "round1" and r.state == "Succeeded"
                         and r.shape.d_model == width), key=analysis._run_loss)
        best_lr, warmup, decay = self._round1_lr(), self._round1_warmup(), self.spec.tuning.decay_fraction
        others = []
        for r in round1:  # a learning rate within 25% of one already chosen would train alike: it decides nothing
            if all(abs(math.log(r.learning_rate / lr)) > DISTINCT_LR for lr in [best_lr, *others]):
                others.append(r.learning_rate)
        lower = next((lr for lr in others if lr < best_lr), None)
        if lower is not None:  # longer runs want a lower LR (Bjorck et al. 2024): the full-length run tests that first
            others.remove(lower)
            others.insert(0, lower)
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
        self._carry_transfer_to_target()
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

    def _reservation(self, record: RunRecord) -> Charge:
        """The worst case the executor allows a run: its compute at the pool's (measured) MFU, plus the start-up
        slack and the grace period after a stop that its Job's deadline lets it hold the GPUs for."""
        pool = self.spec.gpu_pool
        return ledger.worst_case(self._pool(), record.planned_flops(), gpus=pool.gpus_per_run,
                                 overhead_s=pool.startup_slack_seconds
                                 + self.spec.trainer.termination_grace_period_seconds)

    def _affordable(self, record: RunRecord) -> bool:
        return ledger.fits(self.status.runs, self._reservation(record), self._limits())

    def _suspend(self) -> None:
        """spec.suspend: nothing new starts; running and queued runs stop (the executor suspends or deletes their
        Jobs; checkpoints are kept) and keep their reservations until they go on."""
        stopped = []
        for record in self.status.runs:
            if record.state in ("Running", "Queued"):
                record.state = "Suspended"
                self.suspends.append(record.run_id)
                stopped.append(record.run_id)
        held = sum(1 for r in self.status.runs if r.state == "Suspended")
        self._condition("Suspended", "True", "SpecSuspend", f"spec.suspend is true: nothing is launched; {held} "
                        "run(s) stopped with their checkpoints, resumed when spec.suspend is false")
        if stopped:
            self._event("Suspended", f"stopping {len(stopped)} run(s): {', '.join(stopped)[:900]}")

    def _resume(self) -> None:
        resumed = [r for r in self.status.runs if r.state == "Suspended"]
        for record in resumed:
            record.state = "Running"
            self.resumes.append(record)
        existing = next((c for c in self.status.conditions if c.type == "Suspended"), None)
        if existing is not None and existing.status == "True":
            self._condition("Suspended", "False", "Resumed", f"spec.suspend is false: {len(resumed)} run(s) go on "
                            "from their checkpoints")
            self._event("Resumed", f"resuming {len(resumed)} run(s)")

    def _dependency(self, record: RunRecord) -> str:
        """'ready' to launch, 'waiting' for the run it branches from, or 'failed' when that run failed for good.
        A ready branch is pointed at the attempt of its parent that succeeded."""
        if not record.resume_from or record.resume_step is None:
            return "ready"
        planned = self._planned_of(record.resume_from)
        parent = self._latest(planned)
        if parent is None or parent.state in ("Pending", *LIVE_STATES):
            return "waiting"
        if parent.state != "Succeeded":
            return "failed"
        record.resume_from = parent.run_id
        return "ready"

    def _planned_of(self, run_id: str) -> str:
        found = next((r for r in self.status.runs if r.run_id == run_id), None)
        return found.planned_id if found is not None else run_id

    def _launch_pending(self) -> None:
        running = sum(1 for r in self.status.runs if r.state in ("Running", "Queued"))
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
            charge = self._reservation(record)
            if not ledger.fits(self.status.runs, charge, self._limits()):
                record.state, record.reason = "Failed", "not launched: the budget cannot cover it"
                record.finished_at = self.now
                self._condition("BudgetExhausted", "True", "CannotReserve",
                                f"{record.run_id} needs {charge.flops:.3g} FLOPs that the budget no longer has")
                continue
            ledger.reserve(record, charge)
            ledger.check(self.status.runs, self._limits())
            record.state, record.launched_at, record.image = "Running", self.now, self.spec.trainer.image
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
            name = {"Pending": "pending", "Running": "running", "Queued": "queued", "Suspended": "suspended",
                    "Succeeded": "succeeded", "Failed": "failed", "Lost": "lost"}[record.state]
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
        st.display = status_display(st)  # what `kubectl get tc` prints

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
