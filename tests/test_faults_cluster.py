"""Fault injection on the real control plane (etcd + kube-apiserver 1.20 + kube-controller-manager): each test
runs the tiny campaign through `flopwise operator` while one thing goes wrong, and ends with the same three
promises checked — the ledger balanced (spent within budget, nothing left reserved, spent = the sum of the runs'
charges), no duplicate Job (one Job per run id unless the fault removed it), and no lost result (every result the
node reported is in the status, exactly as reported).

The tests play the NODE (tests/operator_harness.py's Node patches Pod status as a kubelet would): the states they
need (a node answering in milliseconds, a result at an exact known loss, a report forged mid-run) are out of a
real node's quick reach; the same faults with real Pods are tests/test_node_faults.py. Where a
fault needs one, another actor: the eviction API's caller, a person deleting a Job, the kube-controller-manager's
deadline (a Job's activeDeadlineSeconds patched small), another writer of the campaign. Everything else is real.
The operator killed mid-reconcile is tests/test_operator_cluster.py's chaos test.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time

import yaml

from flopwise.contract import RunSpec, RunSummary
from operator_harness import MANAGED, RUN_ID, Node, campaign, check_finished, drive, status_of, tiny_campaign
from synthetic import summary_for

FIGURES: dict[str, object] = {}


class RecordingNode(Node):
    """The node, remembering every result it reported (run id → the summary), for the no-lost-result check."""

    def __init__(self, core, batch, namespace: str):
        super().__init__(core, batch, namespace)
        self.reported: dict[str, RunSummary] = {}

    def finish(self, pod, message: str, exit_code: int = 0) -> None:
        super().finish(pod, message, exit_code)
        if exit_code == 0:
            with contextlib.suppress(ValueError):
                self.reported[pod.metadata.annotations[RUN_ID]] = RunSummary.from_message(message)

    def pending_pod(self, run_id: str):
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=MANAGED).items:
            if pod.metadata.annotations[RUN_ID] == run_id and pod.status.phase == "Pending" \
                    and pod.metadata.uid not in self.done and not pod.metadata.deletion_timestamp:
                return pod
        return None

    def run_spec(self, pod) -> RunSpec:
        volume = next(v for v in pod.spec.volumes if v.name == "run-spec")
        cm = self.core.read_namespaced_config_map(volume.config_map.name, self.namespace)
        return RunSpec.model_validate(json.loads(cm.data["spec.json"]))


def kept_promises(status, node: RecordingNode, budget: float, *, replaced: set[str] = frozenset()) -> None:
    """Ledger balanced, no duplicate Job (``replaced``: runs whose Job the fault removed, so a second one is
    expected), no lost result."""
    check_finished(status, budget)
    node.jobs()
    for run_id, uids in node.job_uids_per_run.items():
        assert len(uids) == (2 if run_id in replaced else 1), (run_id, uids)
    by_id = {r.run_id: r for r in status.runs}
    assert set(node.job_uids_per_run) <= set(by_id), set(node.job_uids_per_run) - set(by_id)
    for run_id, summary in node.reported.items():
        record = by_id[run_id]
        if summary.status == "succeeded":
            assert record.state == "Succeeded" and record.result is not None, record
            assert record.result.final_val_loss == summary.final_val_loss
            assert record.spent.flops == min(summary.flops, record.spent.flops + record.reserved.flops)


def control_plane_healthy(cp) -> None:
    """Back as the other tests need it: ready, and serving reads and writes."""
    cp.wait_for(cp.apiserver_ready, timeout=90, what="kube-apiserver /readyz")
    cp.wait_for(lambda: cp.kubectl("get", "--raw", "/readyz?verbose", check=False).returncode == 0, timeout=60,
                what="readyz through kubectl")
    cp.kubectl("get", "namespaces")


def spent_runs(cp, ns: str, name: str) -> int:
    return sum(1 for r in status_of(cp, ns, name).runs if r.state == "Succeeded")


# ------------------------------------------------------------------------------------------ the control plane
def test_apiserver_restarted_mid_campaign(crd, operator, apis) -> None:
    """kube-apiserver crashes (SIGKILL) once two runs are done and is restarted on the same state, then is
    stopped gracefully and restarted once more in Round 1: the operator's watches and requests fail meanwhile
    and it must carry on from the status without redoing or losing a run."""
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    doc = tiny_campaign("restarts", ns)
    cp.apply_yaml(yaml.safe_dump(doc))
    node = RecordingNode(core, batch, ns)
    outages: list[float] = []
    try:
        def restarts() -> None:
            done = len(node.reported)
            if (len(outages) == 0 and done >= 2) or (len(outages) == 1 and done >= 7):
                outages.append(cp.restart_apiserver(grace=0 if not outages else None))

        t0 = time.monotonic()
        status = drive(cp, node, ns, "restarts", timeout=180, between=restarts)
        FIGURES["apiserver_restart"] = {"restarts": len(outages), "down_s": [round(s, 1) for s in outages],
                                        "campaign_s": round(time.monotonic() - t0, 1)}
    finally:
        control_plane_healthy(cp)
    assert len(outages) == 2, outages
    assert operator.proc.poll() is None, "the operator exited"
    kept_promises(status, node, doc["spec"]["budget"]["flops"])
    sys.stderr.write(f"\n[faults] {FIGURES['apiserver_restart']}\n")


def test_etcd_briefly_unavailable(crd, operator, apis) -> None:
    """etcd is killed for 8 s mid-ladder (the API server stays up but can neither read nor write: requests hang
    and then fail), then started on the same data: nothing written before is lost, nothing is done twice."""
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    doc = tiny_campaign("etcd", ns)
    cp.apply_yaml(yaml.safe_dump(doc))
    node = RecordingNode(core, batch, ns)
    outage: list[float] = []
    try:
        def etcd_outage() -> None:
            if not outage and len(node.reported) >= 2:
                t = time.monotonic()
                cp.stop_etcd(grace=0)
                time.sleep(8.0)
                cp.start_etcd()
                control_plane_healthy(cp)
                outage.append(time.monotonic() - t)

        t0 = time.monotonic()
        status = drive(cp, node, ns, "etcd", timeout=180, between=etcd_outage)
        FIGURES["etcd_outage"] = {"down_s": round(outage[0], 1) if outage else None,
                                  "campaign_s": round(time.monotonic() - t0, 1)}
    finally:
        cp.start_etcd()
        control_plane_healthy(cp)
    assert outage
    assert operator.proc.poll() is None, "the operator exited"
    kept_promises(status, node, doc["spec"]["budget"]["flops"])
    sys.stderr.write(f"\n[faults] {FIGURES['etcd_outage']}\n")


# ------------------------------------------------------------------------------------------ Pods and Jobs
def test_pods_evicted_or_deleted_mid_run(crd, operator, apis) -> None:
    """Three Pods go while they run. ladder-c0-01's through the eviction API (as a drain would: the Pod is deleted,
    the Job controller makes a new one, which finishes); round1-00's deleted outright (the same); ladder-c0-02's
    evicted by the kubelet (it plays the node: phase Failed, reason Evicted, no container result), which fails
    its Job (backoffLimit 0): the run is charged its reservation and retried once."""
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    doc = tiny_campaign("evicted", ns)
    cp.apply_yaml(yaml.safe_dump(doc))
    node = RecordingNode(core, batch, ns)
    plans = {"ladder-c0-01": "eviction API", "round1-00": "delete", "ladder-c0-02": "kubelet eviction"}
    skip = set(plans)
    done: dict[str, str] = {}

    def evict() -> None:
        for run_id in list(skip):
            pod = node.pending_pod(run_id)
            if pod is None:
                continue
            name = pod.metadata.name
            if plans[run_id] == "eviction API":
                core.create_namespaced_pod_eviction(name, ns, {"apiVersion": "policy/v1beta1", "kind": "Eviction",
                                                               "metadata": {"name": name, "namespace": ns}})
            elif plans[run_id] == "delete":
                core.delete_namespaced_pod(name, ns)
            else:
                core.patch_namespaced_pod_status(name, ns, {"status": {  # it had started: startTime is set
                    "phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory.",
                    "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
            node.done.add(pod.metadata.uid)
            done[run_id] = name
            skip.discard(run_id)

    status = drive(cp, node, ns, "evicted", timeout=180, between=evict, skip=skip)
    assert set(done) == set(plans), done
    kept_promises(status, node, doc["spec"]["budget"]["flops"])
    by_id = {r.run_id: r for r in status.runs}
    for run_id in ("ladder-c0-01", "round1-00"):  # the Job made a new Pod: same run, same Job, a result
        assert by_id[run_id].state == "Succeeded" and len(node.pods_per_run[run_id]) == 2, by_id[run_id]
    evicted = by_id["ladder-c0-02"]
    assert evicted.state == "Failed" and evicted.result is None and evicted.spent.flops > 0, evicted
    assert by_id["ladder-c0-02-a1"].state == "Succeeded"
    FIGURES["evictions"] = {"pods_gone": len(done), "retried": 1}


def test_job_deleted_by_hand_twice_is_lost_and_charged(crd, operator, apis) -> None:
    """A person deletes ladder-c0-01's Job while it runs (the run is relaunched once, under the same reservation),
    then deletes the relaunched Job too, once the operator has seen it running: the run is Lost and charged its
    reservation, never launched a third time, and the campaign finishes on the other rungs."""
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    doc = tiny_campaign("deleted", ns)
    cp.apply_yaml(yaml.safe_dump(doc))
    node = RecordingNode(core, batch, ns)
    victim = "ladder-c0-01"
    skip = {victim}
    deletions: list[str] = []

    def delete_job() -> None:
        if len(deletions) >= 2:
            skip.discard(victim)
            return
        record = next((r for r in status_of(cp, ns, "deleted").runs if r.run_id == victim), None)
        pod = node.pending_pod(victim)
        if record is None or pod is None or record.state != "Running":
            return
        if len(deletions) == 1 and not (record.relaunches == 1 and record.seen_running):
            return  # the relaunch must have been seen running, or its loss would not count as a second one
        node.jobs()  # remember the Job's uid before it goes (it may have been created since the node's last look)
        job = pod.metadata.labels["job-name"]
        batch.delete_namespaced_job(job, ns, propagation_policy="Background")
        node.done.add(pod.metadata.uid)  # that Pod never reports
        deletions.append(pod.metadata.uid)

    status = drive(cp, node, ns, "deleted", timeout=180, between=delete_job, skip=skip)
    assert len(deletions) == 2, deletions
    lost = next(r for r in status.runs if r.run_id == victim)
    assert lost.state == "Lost" and lost.result is None and lost.relaunches == 1, lost
    assert lost.spent.flops > 0 and lost.reserved.flops == 0  # charged its reservation
    kept_promises(status, node, doc["spec"]["budget"]["flops"], replaced={victim})
    assert victim not in node.reported
    FIGURES["job_deleted"] = {"deletions": 2, "state": lost.state, "charged_flops": lost.spent.flops}


# ------------------------------------------------------------------------------------------ the trainer
def test_trainer_failures_are_charged_and_retried(crd, operator, apis) -> None:
    """Four ways a trainer goes wrong, one ladder run each (the node plays the kubelet; the deadline is the real
    Job controller's): ladder-c0-01 exits 1 with its own failure report (charged what it measured); ladder-c0-02
    writes a report over 4 KiB, cut at 4096 bytes as the kubelet does (garbled: charged its reservation);
    ladder-c1-00 writes 64 KiB of garbage unclipped (a kubelet that does not cut: the status must not grow);
    ladder-c1-01 starts and hangs: once the operator has seen it start, its Job's activeDeadlineSeconds is lowered
    to 1 s and kube-controller-manager fails it (DeadlineExceeded: charged in full). Each is retried once and the
    retry succeeds."""
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    doc = tiny_campaign("trainer", ns)
    # Two of the victims are top-level rungs (each ~12% of the budget) charged in full: the margin kept back
    # from the plan must pay for four retries, or the ledger rightly refuses them ("cannot cover it").
    doc["spec"]["budget"]["margin"] = 0.3
    cp.apply_yaml(yaml.safe_dump(doc))
    node = RecordingNode(core, batch, ns)
    victims = {"ladder-c0-01", "ladder-c0-02", "ladder-c1-00", "ladder-c1-01"}
    skip = set(victims)
    measured: dict[str, float] = {}
    deadline_at: list[float] = []
    started: set[str] = set()

    def hung_pod(run_id: str):
        return next((p for p in core.list_namespaced_pod(ns, label_selector=MANAGED).items
                     if p.metadata.uid in started and p.metadata.annotations[RUN_ID] == run_id), None)

    def misbehave() -> None:
        for run_id in list(skip):
            pod = node.pending_pod(run_id) or hung_pod(run_id)
            if pod is None:
                continue
            spec = node.run_spec(pod)
            if run_id == "ladder-c0-01":
                summary = summary_for(spec).model_copy(update={
                    "status": "failed", "exit_reason": "CUDA error: out of memory", "final_val_loss": None})
                summary = summary.model_copy(update={"flops": summary.flops / 3})
                measured[run_id] = summary.flops
                node.finish(pod, summary.to_message(), exit_code=1)
            elif run_id == "ladder-c0-02":
                long = summary_for(spec).model_copy(update={"device": "d" * 6000})
                text = json.dumps(long.model_dump(by_alias=True, exclude_none=True), separators=(",", ":"))
                assert len(text.encode()) > 4096
                node.finish(pod, text.encode()[:4096].decode(errors="ignore"), exit_code=0)
            elif run_id == "ladder-c1-00":
                node.finish(pod, "\x00garbage{" * (64 * 1024 // 9), exit_code=0)
            else:  # it starts, then hangs: never reports
                if pod.metadata.uid not in started:
                    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
                        "phase": "Running", "startTime": now, "containerStatuses": [{
                            "name": "trainer", "image": pod.spec.containers[0].image, "imageID": "", "ready": True,
                            "restartCount": 0, "state": {"running": {"startedAt": now}}}]}})
                    started.add(pod.metadata.uid)
                record = next(r for r in status_of(cp, ns, "trainer").runs if r.run_id == run_id)
                if not record.pods:
                    continue  # the operator has not seen it start yet
                job = pod.metadata.labels["job-name"]
                batch.patch_namespaced_job(job, ns, {"spec": {"activeDeadlineSeconds": 1}})
                node.done.add(pod.metadata.uid)
                deadline_at.append(time.monotonic())
            skip.discard(run_id)

    t0 = time.monotonic()
    status = drive(cp, node, ns, "trainer", timeout=180, between=misbehave, skip=skip)
    assert not skip, skip
    kept_promises(status, node, doc["spec"]["budget"]["flops"])
    by_id = {r.run_id: r for r in status.runs}
    for run_id in sorted(victims):
        record, retry = by_id[run_id], by_id[f"{run_id}-a1"]
        assert record.state == "Failed" and record.reserved.flops == 0, record
        assert retry.state == "Succeeded" and retry.result is not None, (retry.reason, retry)
    assert by_id["ladder-c0-01"].spent.flops == measured["ladder-c0-01"]  # its own report: what it measured
    assert "out of memory" in by_id["ladder-c0-01"].reason
    for run_id in ("ladder-c0-02", "ladder-c1-00"):  # no report: its whole reservation
        assert by_id[run_id].result is None and by_id[run_id].reason.startswith("no result reported"), by_id[run_id]
        assert by_id[run_id].spent.flops > measured["ladder-c0-01"]
    hung = by_id["ladder-c1-01"]  # stopped at its deadline after it started: charged in full
    assert hung.result is None and hung.reason.startswith("stopped at its deadline (DeadlineExceeded)"), hung
    assert hung.spent.flops == hung.planned_flops() and hung.spent.gpu_hours > 0
    hung = batch.read_namespaced_job("trainer-ladder-c1-01", ns)
    assert any(c.reason == "DeadlineExceeded" for c in hung.status.conditions or []), hung.status.conditions
    body = json.dumps(campaign(cp, ns, "trainer"))
    assert "garbage" not in body and "ddddddddd" not in body
    FIGURES["trainer_failures"] = {"cases": 4, "status_bytes": len(body), "campaign_s": round(time.monotonic() - t0, 1)}
    sys.stderr.write(f"\n[faults] {FIGURES['trainer_failures']}\n")


# ------------------------------------------------------------------------------------------ another writer
def test_status_updates_that_conflict_with_another_writer(crd, operator, apis) -> None:
    """Another writer (a GitOps tool, a controller adding labels) patches the campaign's metadata once a
    second all through the campaign, so the operator's resourceVersion-guarded status patches meet 409
    Conflicts. It must re-read and carry on: the campaign finishes, nothing launched twice, nothing lost, and the
    other writer's annotation kept."""
    cp, ns = crd, operator.namespace
    core, batch, custom = apis
    doc = tiny_campaign("contested", ns)
    cp.apply_yaml(yaml.safe_dump(doc))
    node = RecordingNode(core, batch, ns)
    stop, period = threading.Event(), 1.0
    writes: list[int] = []
    errors: list[BaseException] = []

    def other_writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                custom.patch_namespaced_custom_object("flopwise.dev", "v1alpha1", ns, "trainingcampaigns",
                                                      "contested", {"metadata": {"annotations": {
                                                          "example.com/touched": str(i)}, "labels": {
                                                          "example.com/round": str(i % 7)}}})
                writes.append(i)
            except Exception as error:
                errors.append(error)
            stop.wait(period)

    writer = threading.Thread(target=other_writer, daemon=True)
    t0 = time.monotonic()
    writer.start()
    try:
        status = drive(cp, node, ns, "contested", timeout=180)
    finally:
        stop.set()
        writer.join(10)
        log = operator.log.read_text(errors="replace")
        FIGURES["conflicts"] = {"other_writes": len(writes), "operator_conflict_lines": log.count("changed meanwhile"),
                                "runs_succeeded": sum(1 for r in status_of(cp, ns, "contested").runs
                                                      if r.state == "Succeeded"),
                                "duplicate_jobs": sum(1 for u in node.job_uids_per_run.values() if len(u) > 1),
                                "campaign_s": round(time.monotonic() - t0, 1)}
        sys.stderr.write(f"\n[faults] {FIGURES['conflicts']}\n")
    assert not errors, errors[:3]
    kept_promises(status, node, doc["spec"]["budget"]["flops"])
    body = campaign(cp, ns, "contested")
    assert body["metadata"]["annotations"]["example.com/touched"] == str(writes[-1])


# ------------------------------------------------------------------------------------------ two replicas
def test_two_replicas_only_the_leader_acts_and_the_other_takes_over(crd, tmp_path, apis) -> None:
    """Two operator replicas with --leader-election watch one namespace: only the Lease's holder creates Jobs
    and writes status; when it is SIGKILLed mid-campaign (no hand-over: the Lease must expire) the other takes
    over from the status, and the campaign ends with no duplicate Job and no lost result."""
    from conftest import run_operator
    from operator_harness import Operator

    core, batch, _ = apis
    gen = run_operator(crd, tmp_path, as_service_account=False, extra_args=["--leader-election"])
    first = next(gen)
    ns = first.namespace
    second = Operator(crd, ns, tmp_path / "operator-b.log", None, ["--leader-election"])
    second.start()
    replicas = {first.proc.pid: first, second.proc.pid: second}
    try:
        doc = tiny_campaign("replicated", ns)
        crd.apply_yaml(yaml.safe_dump(doc))
        node = RecordingNode(core, batch, ns)
        killed: dict[str, object] = {}

        def holder() -> Operator:
            lease = crd.kubectl_json("get", "lease", "-n", ns, "flopwise-operator")
            identity = lease["spec"].get("holderIdentity") or ""
            pid = int(identity.rsplit("_", 1)[-1]) if identity.rsplit("_", 1)[-1].isdigit() else None
            return replicas.get(pid)

        def kill_leader() -> None:
            if not killed and len(node.reported) >= 3:
                leader = holder()
                assert leader is not None, "no replica holds the Lease"
                follower = second if leader is first else first
                killed.update(leader=leader, follower=follower, t=time.monotonic(),
                              follower_log=follower.log.read_text(errors="replace"))
                leader.kill()

        t0 = time.monotonic()
        status = drive(crd, node, ns, "replicated", timeout=180, between=kill_leader)
        campaign_s = time.monotonic() - t0
        leader, follower = killed["leader"], killed["follower"]
        assert "created Job" in leader.log.read_text(errors="replace")
        assert "created Job" not in killed["follower_log"], "the follower acted while the leader held the Lease"
        assert "created Job" in follower.log.read_text(errors="replace"), "the follower never took over"
        assert holder() is follower
        kept_promises(status, node, doc["spec"]["budget"]["flops"])
        FIGURES["two_replicas"] = {"campaign_s": round(campaign_s, 1), "results_before_kill": 3}
        sys.stderr.write(f"\n[faults] {FIGURES['two_replicas']}\n")
    finally:
        second.stop()
        sys.stderr.write(f"----- second replica log (last lines) -----\n{second.tail(80)}\n")
        next(gen, None)
