"""Faults with real Pods on the real node (tests/node.py), nothing played: the operator runs as the chart's Pod,
trainer Pods run the trainer image, and the kubelet, the Job controller and the ReplicaSet controller react as
they would in a cluster. Each campaign ends with the same promises checked as tests/test_faults_cluster.py's:
the ledger balanced, no duplicate Job, no lost result.

One campaign takes four faults in turn (it runs for a couple of minutes, each fault waits for its moment):
the first ladder run's Job reaching its activeDeadlineSeconds (patched small: the operator never sets less than
10 minutes), a trainer Pod deleted while it trains, the operator Pod deleted (its Deployment starts another), and
the node restarting (the kubelet stopped and started) while a run trains. And the operator's own Job for a run,
given a memory limit torch cannot live in, is OOM-killed by the kubelet.
"""

from __future__ import annotations

import sys
import time

import pytest
import yaml

from node_campaign import (
    OPERATOR_SELECTOR,
    RUN_ID,
    campaign_jobs,
    campaign_pods,
    check_ledger,
    check_no_duplicate_job,
    check_no_lost_result,
    operator_job,
    running_pod,
    status_of,
    terminated,
    tiny_campaign,
    trainer_started,
    wait_for,
    wait_phase,
)

FIGURES: dict[str, object] = {}
pytestmark = pytest.mark.timeout(2700)  # a campaign of real Pods on 2 shared cores, four faults waiting their turn


def job_of(release, name: str, run_id: str) -> dict | None:
    return next((j for j in campaign_jobs(release, name) if j["metadata"]["annotations"][RUN_ID] == run_id), None)


def training_pod(release, name: str, prefixes: tuple[str, ...], exclude: tuple[str, ...] = ()) -> dict | None:
    for prefix in prefixes:
        pod = running_pod(release, name, prefix, exclude)
        if pod is not None and trainer_started(release, pod):
            return pod
    return None


def test_deadline_pod_deletion_operator_restart_and_node_restart_lose_nothing(node_cluster, flopwise_release):
    nc, release = node_cluster, flopwise_release
    name = "faults"
    doc = tiny_campaign(release, name)
    budget = doc["spec"]["budget"]["flops"]
    t0 = time.monotonic()
    nc.apply_yaml(yaml.safe_dump(doc))

    # In the order the campaign meets them (tuning comes first, then the ladder, then the final run).
    # 1. the operator Pod deleted as Round 1 runs: its Deployment's ReplicaSet starts another, which takes the Lease
    wait_for(lambda: status_of(release, name).phase in ("Round1", "Round2", "Ladder", "Final", "Succeeded"),
             timeout=600, what="Round 1")
    (old,) = [p["metadata"]["name"] for p in release.operator_pods()]
    t_op = time.monotonic()
    release.kubectl("delete", "pod", old, "--wait=false")

    def new_operator_ready():
        pods = [p for p in release.operator_pods() if p["metadata"]["name"] != old]
        return any(c.get("ready") for p in pods for c in p["status"].get("containerStatuses") or [])

    wait_for(new_operator_ready, timeout=180, what="a new operator Pod Ready")
    FIGURES["operator_pod_replaced_ready_s"] = round(time.monotonic() - t_op, 1)

    # 2. activeDeadlineSeconds reached while the first ladder run trains: the Job controller fails the Job and the
    #    kubelet stops its Pod (SIGTERM: it checkpoints on the outputs volume)
    first = wait_for(lambda: training_pod(release, name, ("ladder-c0-00",)), timeout=600,
                     what="ladder-c0-00 training", interval=0.2)
    release.kubectl("patch", "job", first["metadata"]["ownerReferences"][0]["name"], "--type=merge", "-p",
                    '{"spec":{"activeDeadlineSeconds":1}}')

    # 3. another ladder run's trainer Pod deleted while it trains (graceful: the kubelet sends SIGTERM)
    victim = wait_for(lambda: training_pod(release, name, ("ladder-c1-", "ladder-c2-")), timeout=300,
                      what="a ladder trainer Pod training", interval=0.3)
    deleted_run = victim["metadata"]["annotations"][RUN_ID]
    release.kubectl("delete", "pod", victim["metadata"]["name"], "--wait=false")

    # 4. the node restarts while a run trains: its containers keep running under containerd
    #    (another run than the deleted Pod's: its replacement Pod may still be starting, and a restart then is a
    #    container that failed to start, a fault of its own — seen once: StartError, exit code 128, and a retry)
    restarted = wait_for(lambda: training_pod(release, name, ("final-", "ladder-c2-", "ladder-c1-"),
                                              exclude=(deleted_run,)), timeout=600,
                         what="a run training for the node restart", interval=0.3)
    restart_run = restarted["metadata"]["annotations"][RUN_ID]
    FIGURES["kubelet_restart_ready_s"] = round(nc.restart_kubelet(down_s=3.0), 1)

    status = wait_phase(release, name, timeout=1500)
    FIGURES["campaign_wall_s"] = round(time.monotonic() - t0, 1)
    runs = {r.run_id: r for r in status.runs}
    FIGURES["runs"] = [(r.run_id, r.state, r.reason, f"{r.spent.flops:.3g}") for r in status.runs]
    sys.stderr.write(f"\n[faults] {FIGURES}\n")
    assert status.phase == "Succeeded", (status.message, FIGURES["runs"])
    check_ledger(status, budget)
    check_no_duplicate_job(release, name, status)
    check_no_lost_result(release, name, status)

    deadline = runs["ladder-c0-00"]
    assert deadline.state == "Failed" and "DeadlineExceeded" in (deadline.reason or ""), deadline
    assert deadline.spent.flops > 0
    FIGURES["deadline"] = (deadline.reason, deadline.spent.flops, runs["ladder-c0-00-a1"].reason)
    assert runs["ladder-c0-00-a1"].state == "Succeeded", "the deadline's run was not retried"

    deleted = runs[deleted_run]  # its Job's replacement Pod resumes the checkpoint, or the run fails and retries
    assert deleted.state in ("Failed", "Succeeded"), deleted
    if deleted.state == "Failed":  # charged what it used (its summary says SIGTERM), retried once
        assert "SIGTERM" in (deleted.reason or "") or deleted.spent.flops > 0, deleted
        if deleted.role != "round1":
            assert runs[f"{deleted.planned_id}-a1"].state == "Succeeded"
    FIGURES["deleted_pod"] = (deleted_run, deleted.state, deleted.reason, deleted.spent.flops, deleted.reserved)
    assert runs[restart_run].state == "Succeeded", runs[restart_run]
    pods = [p for p in campaign_pods(release, name) if p["metadata"]["annotations"][RUN_ID] == restart_run]
    assert len(pods) == 1, "the node restart made the Job start another Pod"
    sys.stderr.write(f"[faults] deadline {FIGURES['deadline']}; deleted Pod {FIGURES['deleted_pod']}\n")


def test_oom_killed_trainer_is_failed_with_the_reason_and_charged(flopwise_release):
    """The operator's Job for a run with a memory limit torch cannot live in: the kubelet OOM-kills it, and the
    operator's mapping of that Pod (the one it lists) fails the run with the kubelet's reason and charges the
    whole reservation (a run that reported nothing may have used all of it)."""
    from flopwise.kube.executor import Snapshot, observe_run

    release = flopwise_release
    job = operator_job(release, "probe-oom", resources={"limits": {"memory": "40Mi"}, "requests": {"memory": "40Mi"}})
    pod, state = terminated(release, job)
    assert state["reason"] == "OOMKilled" and state["exitCode"] == 137, state
    run_id = pod["metadata"]["annotations"][RUN_ID]
    seen = observe_run(run_id, Snapshot(pods={run_id: [pod]}))
    FIGURES["oom"] = (seen.state, seen.reason)
    assert seen.state == "failed" and seen.summary is None and seen.reason == "container OOMKilled (exit code 137)"
    sys.stderr.write(f"\n[oom] {FIGURES['oom']}\n")


def test_operator_pods_are_the_deployments(flopwise_release):
    """After the faults, exactly one operator Pod runs (the Deployment's), holding the Lease."""
    release = flopwise_release
    pods = [p for p in release.json("get", "pods", "-l", OPERATOR_SELECTOR)["items"]
            if p["status"].get("phase") == "Running"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
