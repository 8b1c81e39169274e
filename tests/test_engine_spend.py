"""Real spend against the ledger: random histories of slow, fast, preempted, suspended, deleted and cancelled runs,
played by a simulated Kubernetes that keeps its own clock of every Pod's GPU time.

The engine is pure, so a simulator can play the cluster faithfully where the test control plane cannot (Kubernetes
1.20 has no Job suspension, and no node runs Pods here): each launched run is a Job whose Pods start, train at a
speed drawn per run (0.5× to 3× the time the pool's expected MFU predicts, after a start-up of up to the spec's
slack), are stopped by the Job's activeDeadlineSeconds (`kube/jobs.py`, exactly as the operator sets it: the
reservation's wall time less the grace period), by Kueue's preemption, by `spec.suspend` (suspended where the
"server" can, deleted where it cannot, at random) or by a cancellation, and take up to the grace period to stop
after SIGTERM. Checkpoints survive (trainer.outputClaimName): a resumed or relaunched run only does what is left.

The simulator, not the engine, computes what each run really cost (GPU-seconds × price), and after every status
the engine writes it checks: reserved + spent ≤ the dollar and FLOP limits; what the cluster really spent ≤ the
dollar limit; each run's real cost ≤ what the ledger holds for it (reserved + spent); a finished run is charged
exactly its Pods' GPU time (a run cut at its deadline: its whole reservation, never less than it used).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flopwise.api.load import parse_campaign
from flopwise.api.status import LIVE_STATES, RunRecord, TrainingCampaignStatus
from flopwise.engine import ledger
from flopwise.engine.machine import Decision, EngineOptions, Observation, PodUsage, reconcile
from flopwise.fitting.fit import COARSE_GRID
from flopwise.kube import jobs
from test_engine_ledger import summary_for

FAST = EngineOptions(bootstrap_resamples=8, fit_grid=COARSE_GRID)
PEAK, MFU, PRICE = 1e8, 0.3, 3600.0  # $1 per GPU-second: dollars are GPU-seconds
SLACK_S, GRACE_S = 20, 10


def spend_spec(*, suspend: bool = False):
    """The tiny campaign, slow enough that runs last minutes, priced, with a dollar limit near the FLOP limit,
    a start-up slack and a grace period, and an output claim (checkpoints outlive Pods)."""
    doc = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
    doc["spec"]["gpuPool"].update(peakFlops=PEAK, expectedMfu=MFU, pricePerGpuHour=PRICE, maxConcurrentGpus=3,
                                  startupSlackSeconds=SLACK_S)
    doc["spec"]["budget"]["usd"] = 2200.0  # 6e10 FLOPs at 3e7 FLOP/s are 2000 GPU-seconds
    doc["spec"]["trainer"] = {"terminationGracePeriodSeconds": GRACE_S, "outputClaimName": "runs"}
    doc["spec"]["tuning"]["maxRetries"] = 2
    doc["spec"]["suspend"] = suspend
    return parse_campaign(doc).spec


SPEC, SUSPENDED = spend_spec(), spend_spec(suspend=True)


@dataclass
class Pod:
    uid: str
    start: float
    end: float | None = None  # when it let its GPUs go (known in advance once stopped or finished)


@dataclass
class Job:
    run_id: str
    deadline_s: int
    clock: float  # when its deadline clock started (created, or resumed)
    state: str = "active"  # active, suspended, succeeded, failed, deleted
    by_kueue: bool = False  # suspended by Kueue's preemption (Kueue admits it again), not by the operator
    wait: float = 0.0  # from its clock's start until its Pod is scheduled
    pods: list[Pod] = field(default_factory=list)
    cut: bool = False


class Cluster:
    """The Job controller, Kueue, the kubelet and the trainer, with one clock. A run's work left (wall seconds of
    training) outlives its Pods and Jobs: the trainer resumes from its checkpoint."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.jobs: dict[str, Job] = {}  # run id → its current Job
        self.old_pods: dict[str, list[Pod]] = {}  # Pods of the run's deleted Jobs
        self.work: dict[str, float] = {}  # run id → training seconds left
        self.startup: dict[str, float] = {}
        self.done: dict[str, float] = {}  # run id → share of its tokens trained so far
        self.pod_count = 0

    # --------------------------------------------------------------------------------- the operator's calls
    def create(self, record: RunRecord, now: float) -> None:
        if record.run_id not in self.work:
            compute_s = record.planned_flops() / (PEAK * MFU)
            self.work[record.run_id] = compute_s * self.rng.choice([0.5, 0.8, 1.0, 1.0, 1.0, 1.0, 1.3, 2.5])
            self.done[record.run_id] = 0.0
        if record.run_id in self.jobs and self.jobs[record.run_id].state != "deleted":
            return  # AlreadyExists: adopted
        self._retire(record.run_id)
        self.jobs[record.run_id] = Job(record.run_id, jobs.active_deadline_seconds(record, SPEC, now), now,
                                       wait=self._wait())

    def delete(self, run_id: str, now: float) -> None:
        job = self.jobs.get(run_id)
        if job is not None and job.state != "deleted":
            self._stop(job, now)
            job.state = "deleted"

    def suspend(self, run_id: str, now: float, *, server_suspends: bool) -> None:
        job = self.jobs.get(run_id)
        if job is None or job.state in ("deleted", "succeeded", "failed"):
            return
        if not server_suspends:
            self.delete(run_id, now)
            return
        self._stop(job, now)
        job.state, job.by_kueue = "suspended", False

    def resume(self, record: RunRecord, now: float) -> None:
        job = self.jobs.get(record.run_id)
        if job is None or job.state == "deleted":
            self.create(record, now)
        elif job.state == "suspended":
            job.state, job.clock, job.wait = "active", now, self._wait()
            job.deadline_s = jobs.active_deadline_seconds(record, SPEC, now)

    def rearm(self, record: RunRecord, now: float) -> None:
        job = self.jobs.get(record.run_id)
        if job is not None and job.state in ("active", "suspended"):
            since = None if job.state == "suspended" else job.clock
            job.deadline_s = jobs.active_deadline_seconds(record, SPEC, now, since=since)

    # --------------------------------------------------------------------------------------- Kueue, people
    def preempt(self, now: float) -> None:
        active = [j for j in self.jobs.values() if j.state == "active"]
        if active:
            job = self.rng.choice(active)
            self._stop(job, now)
            job.state, job.by_kueue = "suspended", True

    def admit(self, now: float) -> None:
        for job in self.jobs.values():
            if job.state == "suspended" and job.by_kueue:
                job.state, job.clock = "active", now  # the deadline clock restarts (the Job controller's rule)
                job.wait = self._wait()

    # ---------------------------------------------------------------------------------------------- time
    def _wait(self) -> float:
        """Scheduled within half the slack, or (a busy cluster) after three times the slack."""
        return self.rng.choice([self.rng.uniform(0.0, SLACK_S / 2)] * 7 + [3.0 * SLACK_S])

    def next_start(self, now: float) -> float | None:
        """When the next Pod starts, if before ``now``: the operator's Pod watch brings a pass at that moment."""
        starts = [j.clock + j.wait for j in self.jobs.values() if j.state == "active"
                  and self._running_pod(j) is None and j.wait <= j.deadline_s and j.clock + j.wait <= now
                  and (not j.pods or j.pods[-1].start < j.clock)]
        return min(starts) if starts else None

    def _retire(self, run_id: str) -> None:
        old = self.jobs.pop(run_id, None)
        if old is not None:
            self.old_pods.setdefault(run_id, []).extend(old.pods)

    def _running_pod(self, job: Job) -> Pod | None:
        return job.pods[-1] if job.pods and job.pods[-1].end is None else None

    def _stop(self, job: Job, now: float) -> None:
        """SIGTERM: the trainer checkpoints what it trained and stops within the grace period."""
        pod = self._running_pod(job)
        if pod is None:
            return
        trained = max(0.0, now - pod.start - self.startup[job.run_id])
        self._progress(job.run_id, trained)
        pod.end = now + self.rng.uniform(0.0, GRACE_S)

    def _progress(self, run_id: str, trained: float) -> None:
        left = self.work[run_id]
        step = min(left, trained)
        if left > 0:
            self.done[run_id] += (1.0 - self.done[run_id]) * step / left
        self.work[run_id] = left - step

    def advance(self, now: float) -> None:
        for job in self.jobs.values():
            if job.state != "active":
                continue
            pod = self._running_pod(job)
            if pod is None:  # (re)admitted: a new Pod, even while an earlier one is still stopping
                if job.pods and job.pods[-1].start >= job.clock:
                    continue  # this admission's Pod has run already
                wait = job.wait
                if job.clock + wait > now or wait > job.deadline_s:
                    if job.clock + job.deadline_s <= now:
                        job.state, job.cut = "failed", True  # its deadline passed while it was pending
                    continue
                self.pod_count += 1
                pod = Pod(uid=f"pod-{self.pod_count}", start=job.clock + wait)
                job.pods.append(pod)
                self.startup[job.run_id] = self.rng.uniform(0.0, SLACK_S / 2)
            finish = pod.start + self.startup[job.run_id] + self.work[job.run_id]
            deadline_at = job.clock + job.deadline_s
            if finish <= deadline_at and finish <= now:
                self._progress(job.run_id, self.work[job.run_id])
                pod.end, job.state = finish, "succeeded"
            elif deadline_at < finish and deadline_at <= now:
                self._stop(job, deadline_at)
                job.state, job.cut = "failed", True

    # ------------------------------------------------------------------------------------------ watching
    def pods_of(self, run_id: str) -> list[Pod]:
        job = self.jobs.get(run_id)
        return self.old_pods.get(run_id, []) + (job.pods if job is not None else [])

    def real_gpu_s(self, run_id: str, now: float) -> float:
        return sum(max(0.0, min(now, p.end if p.end is not None else now) - p.start) for p in self.pods_of(run_id)
                   if p.start <= now)

    def observe(self, record: RunRecord, now: float) -> Observation:
        job = self.jobs.get(record.run_id)
        visible = [p for p in (job.pods if job is not None else []) if p.start <= now]
        if job is not None and job.state == "deleted":  # the garbage collector removes Pods once they stopped
            visible = [p for p in visible if p.end is None or p.end > now]
        pods = tuple(PodUsage(p.uid, SPEC.gpu_pool.gpus_per_run, p.start, p.end if p.end is not None and
                              p.end <= now else None) for p in visible)
        if job is None:
            return Observation(record.run_id, "absent", pods=pods)
        if job.state == "deleted":
            return Observation(record.run_id, "lost", pods=pods)
        if job.state == "suspended":
            return Observation(record.run_id, "queued", pods=pods)
        if job.state == "failed" and not job.pods:
            return Observation(record.run_id, "failed", pods=pods, cut="DeadlineExceeded")  # never started
        if job.state in ("succeeded", "failed") and job.pods[-1].end <= now:
            fraction = self.done[record.run_id]
            if job.state == "succeeded":
                return Observation(record.run_id, "succeeded", summary_for(record), pods=pods)
            report = summary_for(record, fraction=max(fraction, 1e-6), status="failed") if fraction > 0 else None
            return Observation(record.run_id, "failed", report, pods=pods, cut="DeadlineExceeded")
        if job.state == "failed":
            return Observation(record.run_id, "failed", pods=pods, cut="DeadlineExceeded")  # Pod still stopping
        return Observation(record.run_id, "running", pods=pods)

    def carry_out(self, decision: Decision, now: float, server_suspends: bool) -> None:
        for record in decision.launches:
            self.create(record, now)
        for run_id in decision.cancels:
            self.delete(run_id, now)
        for run_id in decision.suspends:
            self.suspend(run_id, now, server_suspends=server_suspends)
        for record in decision.resumes:
            self.resume(record, now)
        for record in decision.rearms:
            self.rearm(record, now)


def check_spend(status: TrainingCampaignStatus, cluster: Cluster, now: float, spec) -> None:
    limits = ledger.Limits.of(spec.budget)
    ledger.check(status.runs, limits)  # reserved + spent ≤ budget, FLOPs and dollars
    t = ledger.totals(status.runs, limits)
    assert t.reserved_flops + t.spent_flops <= spec.budget.flops * (1 + 1e-9)
    assert t.reserved_usd + t.spent_usd <= spec.budget.usd + 1e-6
    real_total = 0.0
    for record in status.runs:
        real = cluster.real_gpu_s(record.run_id, now) * PRICE / 3600.0  # dollars the cluster really spent on it
        real_total += real
        held = record.spent.usd + record.reserved.usd
        assert real <= held + 1e-6, (record.run_id, record.state, real, held, record.reason)
        if record.state == "Succeeded" and not record.relaunches:  # charged exactly its Pods' GPU time
            assert math.isclose(record.spent.usd, real, rel_tol=1e-9, abs_tol=1e-6), (record.run_id, real, record.spent)
        if record.state == "Succeeded":  # a Job that vanished: also the time its Pods may have run unseen
            assert record.spent.usd >= real - 1e-6
        if record.reason.startswith("stopped at its deadline") and "before it started" in record.reason:
            assert real == 0 and record.spent.usd == 0  # pending until its deadline: it cost nothing
        elif record.reason.startswith("stopped at its deadline"):  # charged in full: its whole reservation
            assert record.spent.usd >= real - 1e-6 and record.spent.usd > 0
    assert real_total <= spec.budget.usd + 1e-6, f"the cluster spent ${real_total:.2f} of ${spec.budget.usd:.2f}"


EVENT = st.sampled_from(["tick", "tick", "tick", "tick", "preempt", "admit", "suspend", "unsuspend", "delete_job",
                         "restart", "cancel"])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.generate])
@given(events=st.lists(st.tuples(EVENT, st.floats(5.0, 120.0)), min_size=5, max_size=50), seed=st.integers(0, 2**31),
       server_suspends=st.booleans())
def test_real_spend_never_exceeds_the_ledger_over_random_histories(events, seed, server_suspends) -> None:
    rng = random.Random(seed)
    cluster = Cluster(rng)
    now, spec, status = 1000.0, SPEC, None
    cancelled = False
    for kind, dt in [*events, *[("tick", 60.0)] * 300]:
        while (started := cluster.next_start(now + dt)) is not None:  # a Pod starts: the watch brings a pass
            cluster.advance(started)
            observations = [cluster.observe(r, started) for r in status.runs if r.state in LIVE_STATES]
            decision = reconcile(spec, status, observations, now=started, options=FAST)
            status = decision.status
            check_spend(status, cluster, started, spec)
            cluster.carry_out(decision, started, server_suspends)
        now += dt
        cluster.advance(now)  # what happened meanwhile (deadlines, completions) comes before this event
        if kind == "preempt":
            cluster.preempt(now)
        elif kind == "admit":
            cluster.admit(now)
        elif kind == "suspend":
            spec = SUSPENDED
        elif kind == "unsuspend":
            spec = SPEC
        elif kind == "delete_job" and status is not None:  # a person deletes a running Job
            running = [r for r in status.runs if r.state == "Running" and r.run_id in cluster.jobs]
            if running:
                cluster.delete(rng.choice(running).run_id, now)
        elif kind == "restart" and status is not None:
            status = TrainingCampaignStatus.model_validate_json(status.model_dump_json(by_alias=True))
        elif kind == "cancel" and status is not None and not cancelled and rng.random() < 0.3:
            status.phase, cancelled = "Failed", True  # failed elsewhere: its runs must stop
        if kind == "tick" and dt == 60.0:  # the tail: everything admitted and unsuspended, until the end
            spec = SPEC
            cluster.admit(now)
        cluster.advance(now)
        observations = [cluster.observe(r, now) for r in status.runs if r.state in LIVE_STATES] if status else []
        decision = reconcile(spec, status, observations, now=now, options=FAST)
        status = decision.status
        check_spend(status, cluster, now, spec)
        cluster.carry_out(decision, now, server_suspends)
        if status.phase in ("Succeeded", "Failed") and not any(r.state in LIVE_STATES for r in status.runs):
            break
    assert status.phase in ("Succeeded", "Failed"), (status.phase, status.run_counts)
    assert status.ledger.reserved_usd == 0 and not any(r.state in LIVE_STATES for r in status.runs)
    for record in status.runs:  # every Pod stopped, and every dollar it cost is on the books
        assert all(p.end is not None and p.end <= now for p in cluster.pods_of(record.run_id)), record.run_id
