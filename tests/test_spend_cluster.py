"""Spend is real and capped, on the real control plane (etcd + kube-apiserver 1.20 + kube-controller-manager):
deadlines the real Job controller enforces, Kueue's suspension and re-admission, `spec.suspend`, and what a Failed,
suspended or deleted campaign leaves running.

No kubelet runs here: `Kubelet` (tests/operator_harness.py) plays the node — binds Pods, starts them with a
startTime, finishes them seconds later, and answers a deletion with the trainer's SIGTERM report — and remembers
every Pod's start and end, the cluster's own account of what was spent. A watch on the campaign holds every status
write the operator makes against the limits and against that account. Kubernetes 1.20 has no Job `spec.suspend`
(it prunes the field: Kueue cannot run on it), so the Kueue test plays Kueue and the newer Job controller where
1.20 can reach the same states: it sets the Job's `Suspended` condition (what the Job controller writes for a
suspended Job from 1.21 on; 1.20's keeps it) and parallelism 0 (so 1.20's controller stops the Pod without failing
the Job, as a newer one does on suspension). Everything else is real.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import pytest
import yaml

from flopwise.api.spec import GROUP, PLURAL, VERSION
from flopwise.api.status import TrainingCampaignStatus
from operator_harness import MANAGED, RUN_ID, Kubelet, _epoch, campaign, drive, status_of, tiny_campaign

FIGURES: dict[str, object] = {}
PRICE = 3600.0  # dollars per GPU-hour: a dollar per GPU-second
USD = 400.0
SLACK_S, GRACE_S = 15, 2


def priced_campaign(name: str, ns: str, **pool) -> dict:
    doc = tiny_campaign(name, ns)
    doc["spec"]["gpuPool"].update(pricePerGpuHour=PRICE, startupSlackSeconds=SLACK_S, **pool)
    doc["spec"]["budget"]["usd"] = USD
    doc["spec"]["trainer"] = {"terminationGracePeriodSeconds": GRACE_S, "outputClaimName": "runs"}
    return doc


class LedgerWatch(threading.Thread):
    """Every status write of one campaign as the API server's watch delivers it, with the time it arrived."""

    def __init__(self, custom, ns: str, name: str):
        super().__init__(daemon=True)
        self.custom, self.ns, self.name = custom, ns, name
        self.writes: list[tuple[float, dict]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        from kubernetes import watch

        version = None
        while not self.stopped.is_set():
            try:
                stream = watch.Watch().stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns,
                                              PLURAL, field_selector=f"metadata.name={self.name}",
                                              resource_version=version, timeout_seconds=2)
                for event in stream:
                    body = event["object"]
                    version = body["metadata"]["resourceVersion"]
                    if body.get("status"):
                        self.writes.append((time.time(), body["status"]))
            except Exception:  # a watch that expired or broke: start again from the last version
                version = None
                time.sleep(0.2)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)

    def check(self, node: Kubelet, gpus: int = 1) -> int:
        """At every write: reserved + spent within the FLOP and dollar limits, and each run's real cost up to that
        moment (the node's clock, whole seconds) within what the ledger holds for it. Returns the writes checked."""
        checked = 0
        for received, raw in self.writes:
            status = TrainingCampaignStatus.model_validate(raw)
            ledger = status.ledger
            assert ledger.reserved_usd + ledger.spent_usd <= USD + 1e-6, ledger
            assert ledger.reserved_flops + ledger.spent_flops <= ledger.budget_flops * (1 + 1e-9), ledger
            for record in status.runs:
                real = 0.0
                for uid, (run, start) in list(node.started.items()):
                    if run == record.run_id and _epoch(start) <= received:
                        end = min(received, _epoch(node.ended[uid]) if uid in node.ended else received)
                        real += gpus * max(0.0, end - _epoch(start))
                held = (record.spent.usd + record.reserved.usd) * 3600.0 / PRICE
                assert real <= held + 1.0, (record.run_id, record.state, real, held)  # ≤ 1 s: timestamps' grain
            checked += 1
        return checked


def real_spend_matches(status: TrainingCampaignStatus, node: Kubelet, campaign: str | None = None,
                       exact_unless: set[str] = frozenset()) -> dict[str, tuple[float, float]]:
    """Settled runs: charged exactly their Pods' GPU time (a run cut at its deadline: its whole reservation, at
    least what it used; ``exact_unless``: runs whose Jobs were deleted and made again, whose earlier Pods may have
    gone before the operator saw their end, charged until it saw them gone). Returns run id → (real GPU-s,
    charged GPU-s)."""
    out = {}
    for record in status.runs:
        real, charged = node.real_gpu_s(record.run_id, campaign=campaign), record.spent.gpu_hours * 3600.0
        out[record.run_id] = (real, charged)
        if record.state == "Succeeded" and not record.relaunches and record.run_id not in exact_unless:
            assert charged == pytest.approx(real, abs=1e-6), (record.run_id, real, charged)
        else:
            assert charged >= real - 1e-6, (record.run_id, real, charged)
        assert record.spent.usd == pytest.approx(record.spent.gpu_hours * PRICE)
    return out


def no_live_jobs(batch, ns: str, name: str) -> bool:
    """No Job of the campaign runs: none left, or every one left finished or suspended."""
    for job in batch.list_namespaced_job(ns, label_selector=f"flopwise.dev/campaign={name}").items:
        done = any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])
        if not done and not job.spec.suspend:
            return False
    return True


def running_pods(core, ns: str, name: str) -> int:
    pods = core.list_namespaced_pod(ns, label_selector=f"flopwise.dev/campaign={name}").items
    return sum(1 for p in pods if p.status.phase in ("Pending", "Running"))


# ---------------------------------------------------------------------------------------------- deadlines
def test_a_run_slower_than_its_mfu_estimate_is_stopped_at_its_deadline_and_charged_in_full(crd, operator, apis
                                                                                          ) -> None:
    """ladder-c0-01 starts and never finishes (slower than any MFU estimate): the real Job controller stops it at
    the deadline the operator set (its reservation's wall time less the grace period), the node answers with the
    trainer's SIGTERM report (checkpointed at half its steps); the run is charged its whole reservation and a
    retry the ledger can afford goes on from that checkpoint. Every status write keeps reserved + spent within
    the limits and within what the node says was spent."""
    cp, ns = crd, operator.namespace
    core, batch, custom = apis
    doc = priced_campaign("slow", ns)
    watcher = LedgerWatch(custom, ns, "slow")
    watcher.start()
    node = Kubelet(core, batch, ns)
    node.hold.add("ladder-c0-01")
    t0 = time.monotonic()
    try:
        cp.apply_yaml(yaml.safe_dump(doc))
        status = drive(cp, node, ns, "slow", timeout=300)
    finally:
        watcher.stop()
    by_id = {r.run_id: r for r in status.runs}
    cut, retry = by_id["ladder-c0-01"], by_id["ladder-c0-01-a1"]
    job = batch.read_namespaced_job("slow-ladder-c0-01", ns)
    assert any(c.type == "Failed" and c.reason == "DeadlineExceeded" for c in job.status.conditions), job.status
    assert cut.state == "Failed" and cut.reason.startswith("stopped at its deadline (DeadlineExceeded)"), cut.reason
    reserved_s = cut.spent.gpu_hours * 3600.0  # charged in full: its reservation
    compute_s = cut.planned_flops() / (1e10 * 0.2)
    assert reserved_s == pytest.approx(compute_s + SLACK_S + GRACE_S)
    assert job.spec.active_deadline_seconds == math.floor(reserved_s - GRACE_S)  # deadline + grace = reservation
    real_cut = node.real_gpu_s("ladder-c0-01")
    assert 0 < real_cut <= reserved_s + 1.0  # the Pod held its GPU no longer than reserved (1 s: timestamps)
    assert retry.resume_from == "ladder-c0-01" and retry.start_step > 0 and retry.state == "Succeeded", retry
    retry_spec = json.loads(core.read_namespaced_config_map("slow-ladder-c0-01-a1", ns).data["spec.json"])
    assert retry_spec["resumeFrom"].endswith("/ladder-c0-01")  # the cut run's output folder on the claim
    assert retry.tokens < cut.tokens  # reserved (and charged) only what was left
    spent = real_spend_matches(status, node)
    writes = watcher.check(node)
    assert status.phase == "Succeeded" and writes >= 10
    FIGURES["deadline"] = {"deadline_s": job.spec.active_deadline_seconds, "reserved_gpu_s": round(reserved_s, 2),
                           "real_gpu_s": real_cut, "charged_usd": round(cut.spent.usd, 2),
                           "retry_from_step": retry.start_step, "status_writes_checked": writes,
                           "spent_usd": round(status.ledger.spent_usd, 2),
                           "real_usd": round(sum(r for r, _ in spent.values()) * PRICE / 3600, 2),
                           "campaign_s": round(time.monotonic() - t0, 1)}
    sys.stderr.write(f"\n[spend] {FIGURES['deadline']}\n")


# ---------------------------------------------------------------------------------------------- Kueue
def test_a_job_suspended_by_kueue_is_queued_keeps_its_reservation_and_resumes_as_the_same_job(crd, operator, apis
                                                                                             ) -> None:
    """Kueue preempts round1-00 (the first run) once it runs: its Job is suspended (condition Suspended, its Pod
    stopped with the trainer's SIGTERM report). The run is Queued (not failed, not retried, not counted Running),
    keeps its reservation, and its Job's deadline is lowered to what is left; re-admitted, the same Job (same uid, same
    RunSpec and output folder on the claim: the trainer resumes its checkpoint) runs it to the end, charged both
    Pods' GPU time."""
    cp, ns = crd, operator.namespace
    core, batch, custom = apis
    doc = priced_campaign("kueue", ns, queueName="research-gpus", priorityClass="campaign-low")
    watcher = LedgerWatch(custom, ns, "kueue")
    watcher.start()
    node = Kubelet(core, batch, ns)
    node.hold.add("round1-00")
    name = "kueue-round1-00"
    try:
        cp.apply_yaml(yaml.safe_dump(doc))
        pod = cp.wait_for(lambda: node.step() >= 0 and next(
            (p for p in core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items
             if p.metadata.uid in node.started), None), timeout=60, interval=0.3, what="round1-00 running")
        job = batch.read_namespaced_job(name, ns)
        assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "research-gpus"
        assert job.metadata.labels["kueue.x-k8s.io/priority-class"] == "campaign-low"
        uid, first_deadline = job.metadata.uid, job.spec.active_deadline_seconds
        before = next(r for r in status_of(cp, ns, "kueue").runs if r.run_id == "round1-00")
        cp.wait_for(lambda: next(r for r in status_of(cp, ns, "kueue").runs if r.run_id == "round1-00").pods,
                    timeout=30, what="the Pod's start recorded")
        time.sleep(1.5)  # it trains a little

        # Kueue preempts: suspend (the condition a ≥ 1.21 Job controller writes) and stop the Pod
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        batch.patch_namespaced_job_status(name, ns, {"status": {"conditions": [{
            "type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended",
            "lastProbeTime": now, "lastTransitionTime": now}]}})
        batch.patch_namespaced_job(name, ns, {"spec": {"parallelism": 0}})
        cp.wait_for(lambda: core.read_namespaced_pod(pod.metadata.name, ns).metadata.deletion_timestamp,
                    timeout=30, what="the Job controller stopping the Pod")
        node.step()  # the trainer's SIGTERM report, then the Pod is gone
        queued = cp.wait_for(lambda: (s := status_of(cp, ns, "kueue")) and next(
            (r for r in s.runs if r.run_id == "round1-00" and r.state == "Queued" and all(
                p.finished_at for p in r.pods)), None) and s, timeout=30, what="round1-00 Queued")
        record = next(r for r in queued.runs if r.run_id == "round1-00")
        assert record.reserved == before.reserved and record.spent.flops == 0 and record.result is None
        assert queued.run_counts.queued == 1 and queued.run_counts.running == sum(
            1 for r in queued.runs if r.state == "Running")
        assert not any(r.planned_id == "round1-00" and r.attempt > 0 for r in queued.runs)  # not retried
        used = sum(p.finished_at - p.started_at for p in record.pods)
        expected = math.floor(record.reserved.gpu_hours * 3600 - used - GRACE_S)
        lowered = cp.wait_for(lambda: batch.read_namespaced_job(name, ns).spec.active_deadline_seconds == expected
                              and expected, timeout=30, what=f"the deadline lowered to what is left ({expected} s)")
        assert used > 0 and lowered < first_deadline

        # re-admitted: the same Job makes a new Pod, which finishes
        node.hold.discard("round1-00")
        batch.patch_namespaced_job_status(name, ns, {"status": {"conditions": [{
            "type": "Suspended", "status": "False", "reason": "JobResumed", "message": "Job resumed",
            "lastProbeTime": now, "lastTransitionTime": now}]}})
        batch.patch_namespaced_job(name, ns, {"spec": {"parallelism": 1}})
        status = drive(cp, node, ns, "kueue", timeout=180)
    finally:
        watcher.stop()
    done = next(r for r in status.runs if r.run_id == "round1-00")
    assert done.state == "Succeeded" and done.attempt == 0 and not done.relaunches
    assert batch.read_namespaced_job(name, ns).metadata.uid == uid  # the same Job
    assert len(node.pods_per_run["round1-00"]) == 2
    assert done.spent.gpu_hours * 3600 == pytest.approx(node.real_gpu_s("round1-00"))  # both Pods' GPU time
    events = cp.kubectl_json("get", "events", "-n", ns, "--field-selector", "involvedObject.name=kueue")["items"]
    reasons = [e["reason"] for e in events]
    assert "RunPreempted" in reasons and "RunAdmitted" in reasons and not any(
        e["reason"] == "RunFailed" and "round1-00" in e["message"] for e in events)
    real_spend_matches(status, node)
    writes = watcher.check(node)
    FIGURES["kueue"] = {"queued_with_reserved_usd": round(record.reserved.usd, 2), "used_before_preemption_s": used,
                        "deadline_s": [first_deadline, lowered], "pods": 2, "charged_gpu_s":
                        round(done.spent.gpu_hours * 3600, 2), "status_writes_checked": writes}
    sys.stderr.write(f"\n[spend] {FIGURES['kueue']}\n")


# ---------------------------------------------------------------------------------- stopping a campaign
def _running(cp, node, ns: str, name: str, batch, count: int = 2):
    """Drive the node until ``count`` Pods of the campaign hold their GPUs (the node holds every run)."""
    return cp.wait_for(lambda: node.step() >= 0 and sum(1 for run, _ in node.started.values()) >= count and
                       status_of(cp, ns, name), timeout=60, interval=0.3, what=f"{count} Pods running")


def test_suspend_stops_the_jobs_keeps_the_reservations_and_resumes_charging_what_ran(crd, operator, apis) -> None:
    """spec.suspend while two runs hold their GPUs: nothing new launches, the Jobs are deleted (1.20 has no Job
    suspension; the checkpoints stay on the claim), the runs are Suspended with their reservations, and no Job
    of the campaign runs within seconds; spec.suspend false resumes them (Jobs created again under the same
    names, the RunSpecs unchanged) and the campaign finishes, each run charged exactly the GPU time of all its
    Pods."""
    cp, ns = crd, operator.namespace
    core, batch, custom = apis
    doc = priced_campaign("pause", ns)
    watcher = LedgerWatch(custom, ns, "pause")
    watcher.start()
    node = Kubelet(core, batch, ns)
    node.hold.update({"round1-00", "round1-01"})
    try:
        cp.apply_yaml(yaml.safe_dump(doc))
        _running(cp, node, ns, "pause", batch)
        time.sleep(1.5)
        t0 = time.monotonic()
        cp.kubectl("patch", "tc", "pause", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"suspend": True}}))
        cp.wait_for(lambda: node.step() >= 0 and no_live_jobs(batch, ns, "pause") and
                    running_pods(core, ns, "pause") == 0, timeout=60, interval=0.2, what="no Job running")
        stopped_s = time.monotonic() - t0
        body = cp.wait_for(lambda: (b := campaign(cp, ns, "pause"))["status"].get("runCounts", {}).get("suspended")
                           and b, timeout=30, what="runs Suspended")
        status = TrainingCampaignStatus.model_validate(body["status"])
        suspended = [r for r in status.runs if r.state == "Suspended"]
        assert suspended and all(r.reserved.usd > 0 and r.spent.usd == 0 for r in suspended)
        (condition,) = [c for c in status.conditions if c.type == "Suspended"]
        assert condition.status == "True" and condition.reason == "SpecSuspend"
        launched = {r.run_id for r in status.runs if r.launched_at}
        time.sleep(3.0)  # nothing new launches while suspended
        assert {r.run_id for r in status_of(cp, ns, "pause").runs if r.launched_at} == launched
        assert not batch.list_namespaced_job(ns, label_selector="flopwise.dev/campaign=pause").items

        node.hold.clear()
        cp.kubectl("patch", "tc", "pause", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
        status = drive(cp, node, ns, "pause", timeout=180)
    finally:
        watcher.stop()
    assert status.phase == "Succeeded"
    (condition,) = [c for c in status.conditions if c.type == "Suspended"]
    assert condition.status == "False" and condition.reason == "Resumed"
    stopped_ids = {r.run_id for r in suspended}
    for record in status.runs:
        if record.run_id in stopped_ids:
            assert record.state == "Succeeded" and record.attempt == 0 and len(node.pods_per_run[record.run_id]) == 2
    spent = real_spend_matches(status, node, exact_unless=stopped_ids)
    writes = watcher.check(node)
    FIGURES["suspend"] = {"runs_suspended": len(suspended), "no_running_job_after_s": round(stopped_s, 1),
                          "status_writes_checked": writes, "suspended_runs_real_vs_charged_gpu_s":
                          {k: (v[0], round(v[1], 2)) for k, v in spent.items() if k in stopped_ids}}
    sys.stderr.write(f"\n[spend] {FIGURES['suspend']}\n")


def test_a_failed_or_deleted_campaign_leaves_no_running_job(crd, operator, apis) -> None:
    """A campaign that fails with runs in flight (failed elsewhere: its status set Failed, as an edit that no longer
    validates would) has its Jobs deleted by the operator; a deleted campaign's Jobs go with it (the garbage
    collector). Measured: seconds until no Job of it runs and no Pod of it holds a GPU."""
    cp, ns = crd, operator.namespace
    core, batch, custom = apis
    times = {}
    for name in ("fails", "deleted"):
        cp.apply_yaml(yaml.safe_dump(priced_campaign(name, ns)))
    node = Kubelet(core, batch, ns)
    node.hold.update({"round1-00", "round1-01"})
    cp.wait_for(lambda: node.step() >= 0 and len(node.started) >= 4, timeout=60, interval=0.3,
                what="both campaigns' first Pods running")
    time.sleep(1.0)
    t0 = time.monotonic()
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "fails", {"status": {
        "phase": "Failed", "message": "failed elsewhere"}})
    cp.wait_for(lambda: node.step() >= 0 and no_live_jobs(batch, ns, "fails") and running_pods(core, ns, "fails") == 0,
                timeout=60, interval=0.2, what="the Failed campaign's Jobs stopped")
    times["failed_s"] = round(time.monotonic() - t0, 1)
    status = cp.wait_for(lambda: (s := status_of(cp, ns, "fails")).run_counts.running == 0 and s, timeout=30,
                         what="its runs settled")
    assert status.ledger.reserved_usd == 0
    assert all(r.reason.startswith("cancelled") for r in status.runs if r.launched_at and r.state == "Failed")
    real_spend_matches(status, node, campaign="fails")
    t0 = time.monotonic()
    cp.kubectl("delete", "tc", "deleted", "-n", ns, "--wait=false")
    cp.wait_for(lambda: node.step() >= 0 and not batch.list_namespaced_job(
        ns, label_selector="flopwise.dev/campaign=deleted").items and running_pods(core, ns, "deleted") == 0,
        timeout=60, interval=0.2, what="the deleted campaign's Jobs gone")
    times["deleted_s"] = round(time.monotonic() - t0, 1)
    FIGURES["stopped"] = times
    sys.stderr.write(f"\n[spend] {FIGURES['stopped']}\n")
    assert not [p for p in core.list_namespaced_pod(ns, label_selector=MANAGED).items
                if p.metadata.annotations[RUN_ID] and p.status.phase == "Running"]
