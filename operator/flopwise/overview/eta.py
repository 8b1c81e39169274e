"""How long a campaign has left: its remaining runs, phase by phase, on the pool's concurrent slots.

Pure arithmetic on the status (and, locally, the trainers' progress files). A phase cannot start before the one
before it ends (each decides what the next trains), so the estimate is a list schedule per phase, in the order
the API's `Phase` type lists them: runs still going first (their own remaining time), then the runs waiting,
each on the slot that frees first; the phases' makespans add up.

A run's duration is a fixed overhead (start-up, evaluations: what dominates a tiny run) plus its FLOPs at a rate:
a least-squares line through the finished runs' (FLOPs, seconds) once two sizes have finished; with one size, its
measured overhead and the pool's expected MFU; before any, the expected MFU alone. A FLOP-weighted MFU would not
do: small models run at a small fraction of the MFU of large ones, and the ladder starts small. Grid extensions
and retries that the engine may still add are not foreseen: the ETA can only grow by them.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from flopwise.api.status import Phase, RunRecord, TrainingCampaignStatus
from flopwise.contract import RunProgress

PHASE_OF_ROLE = {"ladder": "Ladder", "seed": "Ladder", "round1": "Round1", "round2": "Round2", "final": "Final"}
PHASE_ORDER = tuple(p for p in get_args(Phase) if p in PHASE_OF_ROLE.values())  # the order phases run in
EXPECTED = "at the expected MFU"


@dataclass(frozen=True)
class Throughput:
    """Seconds a run takes, ``overhead_s + flops * s_per_flop``, and how many runs go at once."""

    overhead_s: float
    s_per_flop: float
    slots: int
    basis: str  # how it was measured, in words

    @property
    def measured(self) -> bool:
        return self.basis != EXPECTED

    @classmethod
    def of(cls, status: TrainingCampaignStatus, slots: int, gpus_per_run: int) -> Throughput | None:
        plan = status.plan
        if plan is None:
            return None
        prior = 1.0 / (max(1e-9, plan.mfu) * plan.peak_flops_per_gpu * max(1, gpus_per_run))
        fastest = prior * plan.mfu  # MFU 1: no run is faster than the pool's peak
        points = [(r.result.flops, r.result.elapsed_s) for r in status.runs
                  if r.result is not None and r.result.flops > 0 and r.result.elapsed_s > 0]
        slots = max(1, slots)
        if not points:
            return cls(overhead_s=0.0, s_per_flop=prior, slots=slots, basis=EXPECTED)
        flops = [f for f, _ in points]
        if max(flops) < 1.05 * min(flops):  # one size: its overhead, the expected rate
            overhead = max(0.0, sum(t - f * prior for f, t in points) / len(points))
            return cls(overhead_s=overhead, s_per_flop=prior, slots=slots,
                       basis="from the measured start-up and the expected MFU")
        n = len(points)
        mean_f, mean_t = sum(f for f, _ in points) / n, sum(t for _, t in points) / n
        var = sum((f - mean_f) ** 2 for f, _ in points)
        slope = sum((f - mean_f) * (t - mean_t) for f, t in points) / var
        overhead = mean_t - slope * mean_f
        if overhead < 0:  # through the origin: rate only
            overhead, slope = 0.0, sum(f * t for f, t in points) / sum(f * f for f, _ in points)
        return cls(overhead_s=overhead, s_per_flop=max(slope, fastest), slots=slots,
                   basis=f"fitted to {n} finished runs")

    def seconds(self, flops: float) -> float:
        return self.overhead_s + flops * self.s_per_flop


def running_remaining(record: RunRecord, progress: RunProgress | None, rate: Throughput, now: float) -> float:
    """Seconds until a running run ends: its own measured rate when it reports progress, else its FLOPs at the
    campaign's rate less the time since it was launched."""
    if progress is not None and progress.remaining_s is not None:
        return progress.remaining_s
    expected = rate.seconds(record.planned_flops())
    elapsed = now - record.launched_at if record.launched_at else 0.0
    return max(0.0, expected - elapsed)


WAITING_STATES = ("Pending", "Queued", "Suspended")  # created, not training now: each still has its run ahead


def suspended(status: TrainingCampaignStatus) -> bool:
    """spec.suspend holds the campaign: nothing trains until it is lifted, so no ETA can be told."""
    return any(c.type == "Suspended" and c.status == "True" for c in status.conditions)


def remaining_by_phase(status: TrainingCampaignStatus) -> dict[str, list[float]]:
    """FLOPs of each run still to start, by phase: records not training now (pending; queued for admission or
    preempted; suspended), then planned runs of phases not yet entered (the engine creates a phase's runs when it
    enters it: a planned run it did not create then never runs). A queued or suspended run that resumes from a
    checkpoint needs less: counting all of it keeps the estimate an upper bound."""
    plan = status.plan
    out: dict[str, list[float]] = {phase: [] for phase in PHASE_ORDER}
    if plan is None or status.phase in ("Succeeded", "Failed"):
        return out
    for record in status.runs:
        if record.state in WAITING_STATES:
            out[PHASE_OF_ROLE[record.role]].append(record.planned_flops())
    current = PHASE_ORDER.index(status.phase) if status.phase in PHASE_ORDER else -1
    created = {r.planned_id for r in status.runs}
    for run in plan.all_runs():
        if run.run_id not in created and PHASE_ORDER.index(PHASE_OF_ROLE[run.role]) > current:
            out[PHASE_OF_ROLE[run.role]].append(run.flops)
    return out


def makespan(busy: list[float], waiting: list[float], slots: int) -> float:
    """When the last of ``waiting`` ends, each starting on the slot that frees first (``busy``: when the
    slots now taken free up)."""
    free = sorted(busy)[:slots] + [0.0] * max(0, slots - len(busy))
    heapq.heapify(free)
    end = max(busy, default=0.0)
    for duration in waiting:
        start = heapq.heappop(free)
        heapq.heappush(free, start + duration)
        end = max(end, start + duration)
    return end


def campaign_eta(status: TrainingCampaignStatus, rate: Throughput | None, progress: Mapping[str, RunProgress],
                 now: float) -> float | None:
    """Seconds until the campaign ends, or None when it cannot be told (no plan yet, suspended) or it has ended."""
    if rate is None or status.phase in ("Pending", "Succeeded", "Failed") or suspended(status):
        return None
    running = {phase: [] for phase in PHASE_ORDER}
    for record in status.runs:
        if record.state == "Running":
            running[PHASE_OF_ROLE[record.role]].append(
                running_remaining(record, progress.get(record.run_id), rate, now))
    waiting = remaining_by_phase(status)
    current = PHASE_ORDER.index(status.phase) if status.phase in PHASE_ORDER else 0
    total = 0.0
    for phase in PHASE_ORDER:
        if PHASE_ORDER.index(phase) < current and not running[phase] and not waiting[phase]:
            continue
        total += makespan(running[phase], [rate.seconds(f) for f in waiting[phase]], rate.slots)
    return total
