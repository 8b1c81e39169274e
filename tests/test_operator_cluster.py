"""The operator against the real control plane (etcd + kube-apiserver 1.20 + kube-controller-manager with the Job
and garbage-collector controllers): `flopwise operator` runs as a subprocess, exactly as in a cluster.

The tests play the NODE and nothing else (a real node runs the same operator end to end in
tests/test_node_e2e.py; here results at an exactly known law and a node that answers at once make the chaos and
fitting checks fast and exact): they find
the Pods the real Job controller created and report each one's container as a kubelet would, through the Pod's
`status` subresource, with a termination message that is a RunSummary whose losses follow a known law. The API
server, the Job controller, the garbage collector and the operator are all real. The harness (Operator, Node,
drive) is tests/operator_harness.py; the fixtures (crd, apis, operator, sa_operator) are in conftest.py.
"""

from __future__ import annotations

import json
import random
import sys
import time

import pytest
import yaml

from flopwise.api.status import TrainingCampaignStatus
from flopwise.contract import RunSpec
from operator_harness import MANAGED, RUN_ID, Node, campaign, check_finished, drive, status_of, tiny_campaign

TIMINGS: dict[str, float] = {}


# --------------------------------------------------------------------------------------------------- tests
def test_invalid_campaign_is_rejected_by_the_api_server(crd, operator) -> None:
    doc = tiny_campaign("bad", operator.namespace)
    doc["spec"]["budget"]["flops"] = -1.0
    result = crd.apply_yaml(yaml.safe_dump(doc), check=False)
    assert result.returncode != 0 and "spec.budget.flops" in result.stderr, result.stderr
    # What the schema cannot say (an unknown GPU without peakFlops) the operator reports, naming the field.
    doc = tiny_campaign("unknown-gpu", operator.namespace)
    doc["spec"]["gpuPool"]["gpuType"] = "tpu-v9"
    del doc["spec"]["gpuPool"]["peakFlops"]
    crd.apply_yaml(yaml.safe_dump(doc))
    body = crd.wait_for(lambda: (b := campaign(crd, operator.namespace, "unknown-gpu")).get("status", {}).get(
        "phase") == "Failed" and b, timeout=30, what="the invalid campaign Failed")
    (failed,) = [c for c in body["status"]["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "InvalidSpec" and "spec.gpuPool.gpuType" in failed["message"], failed
    assert not crd.kubectl_json("get", "jobs", "-n", operator.namespace)["items"]


def test_multi_node_runs_wait_with_a_condition_on_a_server_without_indexed_jobs(crd, operator) -> None:
    """This 1.20 server has no Indexed Jobs: a campaign whose runs span nodes launches nothing and spends nothing,
    and says why and what to change; bringing the runs onto one node lets it go on."""
    ns = operator.namespace
    doc = tiny_campaign("multi-node", ns)
    doc["spec"]["gpuPool"].update(gpuType="H100", gpusPerRun=16, gpusPerNode=8, maxConcurrentGpus=32)
    del doc["spec"]["gpuPool"]["peakFlops"]
    crd.apply_yaml(yaml.safe_dump(doc))
    body = crd.wait_for(lambda: (b := campaign(crd, ns, "multi-node")).get("status", {}).get("conditions") and b,
                        timeout=30, what="a condition on the multi-node campaign")
    (condition,) = [c for c in body["status"]["conditions"] if c["type"] == "MultiNodeUnavailable"]
    assert condition["status"] == "True" and condition["reason"] == "IndexedJobsUnavailable"
    assert "spec.gpuPool.gpusPerRun" in condition["message"] and "1.20" in condition["message"]
    assert body["status"]["phase"] == "Pending" and not body["status"].get("runs")
    assert not [j for j in crd.kubectl_json("get", "jobs", "-n", ns)["items"]
                if j["metadata"]["labels"].get("flopwise.dev/campaign") == "multi-node"]
    crd.kubectl("patch", "tc", "multi-node", "-n", ns, "--type=merge", "-p",
                json.dumps({"spec": {"gpuPool": {"gpusPerRun": 8}}}))
    body = crd.wait_for(lambda: (b := campaign(crd, ns, "multi-node")).get("status", {}).get("phase") == "Round1"
                        and b, timeout=30, what="the campaign going on once its runs fit one node")
    (condition,) = [c for c in body["status"]["conditions"] if c["type"] == "MultiNodeUnavailable"]
    assert condition["status"] == "False"
    crd.kubectl("delete", "tc", "multi-node", "-n", ns)


def test_jobs_the_api_server_refuses_fail_their_runs_and_the_campaign_ends(crd, operator) -> None:
    """A trainer resource the schema cannot check ("lots" of memory) makes every Job invalid: each run fails
    with the API server's reason (charged nothing) and the campaign fails instead of hanging. Round 1 comes first
    and its runs are not retried (a failed LR point is an answer), so the campaign fails once every Round 1 run
    has, naming the API server's reason, before any other run is tried."""
    cp, ns = crd, operator.namespace
    doc = tiny_campaign("refused", ns)
    doc["spec"]["trainer"] = {"resources": {"limits": {"memory": "lots"}}}
    cp.apply_yaml(yaml.safe_dump(doc))
    status = cp.wait_for(lambda: (s := status_of(cp, ns, "refused")).phase == "Failed" and s, timeout=60,
                         what="the campaign Failed")
    assert status.ledger.spent_flops == 0 and status.ledger.reserved_flops == 0
    assert all(r.state == "Failed" and "Job rejected by the API server" in r.reason for r in status.runs)
    assert {r.role for r in status.runs} == {"round1"} and not any(r.attempt for r in status.runs)
    assert "every Round 1 run failed" in status.message and "Job rejected by the API server" in status.message
    assert not cp.kubectl_json("get", "jobs", "-n", ns)["items"]
    events = cp.kubectl_json("get", "events", "-n", ns, "--field-selector", "involvedObject.name=refused")["items"]
    assert any(e["reason"] == "LaunchRejected" and "memory" in e["message"] for e in events)


def test_campaign_launches_jobs_then_runs_to_success(crd, operator, apis) -> None:
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    t0 = time.monotonic()
    doc = tiny_campaign("tiny", ns)
    cp.apply_yaml(yaml.safe_dump(doc))
    uid = campaign(cp, ns, "tiny")["metadata"]["uid"]

    jobs = cp.wait_for(lambda: len(batch.list_namespaced_job(ns, label_selector=MANAGED).items) >= 2 and
                       batch.list_namespaced_job(ns, label_selector=MANAGED).items, timeout=60, interval=0.2,
                       what="the first two Jobs")
    TIMINGS["apply_to_first_jobs_s"] = time.monotonic() - t0
    status = status_of(cp, ns, "tiny")
    assert status.phase == "Round1" and status.plan is not None and len(status.plan.ladder.runs) >= 5
    running = {r.run_id for r in status.runs if r.state == "Running"}
    assert len(running) == 2  # maxConcurrentGpus 2, one GPU each
    assert status.observed_generation == 1
    assert not any(k.startswith("kopf") for k in (campaign(cp, ns, "tiny").get("status") or {}))

    for job in jobs:
        job = batch.api_client.sanitize_for_serialization(job)
        meta, spec = job["metadata"], job["spec"]
        run_id = meta["annotations"][RUN_ID]
        assert run_id in running and meta["name"] == f"tiny-{run_id}"
        assert meta["ownerReferences"] == [{"apiVersion": "flopwise.dev/v1alpha1", "kind": "TrainingCampaign",
                                            "name": "tiny", "uid": uid, "controller": True,
                                            "blockOwnerDeletion": True}]
        assert meta["labels"]["app.kubernetes.io/name"] == "flopwise-trainer"
        role = next(r.role for r in status.runs if r.run_id == run_id)
        assert role == "round1"  # tuning comes first: the ladder trains at the learning rate it decides
        assert meta["labels"]["flopwise.dev/campaign"] == "tiny" and meta["labels"]["flopwise.dev/phase"] == role
        assert meta["labels"]["flopwise.dev/run"] == run_id
        assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] >= 600
        pod = spec["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        assert container["command"] == ["flopwise-train", "/etc/flopwise/spec.json"]
        assert container["terminationMessagePolicy"] == "File"
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] == 10001 and not sc["allowPrivilegeEscalation"]
        assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dataset"]["persistentVolumeClaim"] == {"claimName": "tiny-tokens", "readOnly": True}
        cm = core.read_namespaced_config_map(volumes["run-spec"]["configMap"]["name"], ns)
        assert cm.metadata.owner_references[0].uid == uid
        run_spec = RunSpec.model_validate(json.loads(cm.data["spec.json"]))
        assert run_spec.run_id == run_id and run_spec.data_path == "/datasets/tiny"
    # While nothing happens (the Pods pend: there is no node) the operator's ticks write nothing.
    version = campaign(cp, ns, "tiny")["metadata"]["resourceVersion"]
    time.sleep(4.0)
    assert campaign(cp, ns, "tiny")["metadata"]["resourceVersion"] == version
    assert operator.liveness() == 200  # kopf's liveness endpoint (--liveness)
    events = cp.kubectl_json("get", "events", "-n", ns, "--field-selector", "involvedObject.name=tiny")["items"]
    assert {"Planned", "RunLaunched"} <= {e["reason"] for e in events}

    node = Node(core, batch, ns)
    status = drive(cp, node, ns, "tiny", timeout=120)
    TIMINGS["apply_to_succeeded_s"] = time.monotonic() - t0
    check_finished(status, doc["spec"]["budget"]["flops"])
    assert status.run_counts.succeeded == len(status.runs)
    # metav1 conditions: kubectl waits on them as on a Job's (kubectl 1.27 against this 1.20 server)
    waited = cp.kubectl("wait", "--for=condition=Complete", "tc/tiny", "-n", ns, "--timeout=60s")
    assert "condition met" in waited.stdout, waited.stdout
    (complete,) = [c for c in status.conditions if c.type == "Complete"]
    assert complete.status == "True" and complete.reason == "Recommended" and complete.observed_generation == 1
    assert all(c.reason and c.last_transition_time for c in status.conditions)
    not_failed = cp.kubectl("wait", "--for=condition=Failed", "tc/tiny", "-n", ns, "--timeout=2s", check=False)
    assert not_failed.returncode != 0
    # one Job and one Pod per run, never two
    assert all(len(uids) == 1 for uids in node.job_uids_per_run.values()), node.job_uids_per_run
    assert all(len(uids) == 1 for uids in node.pods_per_run.values()), node.pods_per_run
    assert set(node.job_uids_per_run) == {r.run_id for r in status.runs}

    # deleting the campaign deletes its Jobs, Pods and ConfigMaps (the garbage collector, through owner references)
    t1 = time.monotonic()
    cp.kubectl("delete", "trainingcampaign", "tiny", "-n", ns, "--wait=false")
    cp.wait_for(lambda: not batch.list_namespaced_job(ns, label_selector=MANAGED).items and
                not core.list_namespaced_pod(ns, label_selector=MANAGED).items and
                not core.list_namespaced_config_map(ns, label_selector=MANAGED).items,
                timeout=60, interval=0.5, what="Jobs, Pods and ConfigMaps garbage-collected")
    TIMINGS["delete_to_collected_s"] = time.monotonic() - t1
    sys.stderr.write(f"\n[operator timings] {TIMINGS}\n")


KILLS = 10


def test_operator_killed_at_random_moments_loses_nothing_and_duplicates_nothing(crd, sa_operator, apis) -> None:
    """Under chaos, and as a ServiceAccount holding only `flopwise.kube.rbac`'s rules: the operator is SIGKILLed
    and restarted at random moments, KILLS times in one campaign (the node's pace is tied to the restarts until
    then, so the kills land across the campaign rather than after it), one Job is deleted by
    hand while it runs (lost: relaunched once), one Pod reports garbage (failed: charged, retried as a new
    run)."""
    operator = sa_operator
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    rng = random.Random(7)
    doc = tiny_campaign("chaos", ns)
    t0 = time.monotonic()
    cp.apply_yaml(yaml.safe_dump(doc))
    node = Node(core, batch, ns)
    next_kill = [time.monotonic() + rng.uniform(0.5, 3.0)]
    deleted: list[str] = []
    victim = {"ladder-c0-02"}  # its first Pod never reports: its Job is deleted by hand while it runs
    garbled = {"ladder-c1-00"}  # its first Pod terminates with exit code 1 and a garbled message
    unlaunched = {"ladder-c1-01"}  # while the operator is down, its Job and ConfigMap are removed: as if the operator
    # had died after persisting the status and before launching (the engine must see it absent, not lost)
    skip = victim | garbled | unlaunched  # the node leaves these first Pods alone (emptied as they are dealt with)

    def chaos() -> None:
        forget = [j for j in node.jobs() if j.metadata.annotations[RUN_ID] in unlaunched]
        if forget or (operator.starts <= KILLS and time.monotonic() >= next_kill[0]):
            operator.kill()  # SIGKILL: no clean-up of any kind
            for job in forget:
                pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job.metadata.name}").items
                batch.delete_namespaced_job(job.metadata.name, ns, propagation_policy="Background")
                core.delete_namespaced_config_map(job.metadata.name, ns)
                node.done.update(p.metadata.uid for p in pods)
                skip.difference_update(unlaunched)
                unlaunched.clear()
            time.sleep(rng.uniform(0.0, 1.0))
            operator.start()
            next_kill[0] = time.monotonic() + rng.uniform(0.5, 2.5)
        for pod in core.list_namespaced_pod(ns, label_selector=MANAGED).items:
            if pod.metadata.annotations[RUN_ID] in garbled and pod.status.phase == "Pending":
                node.finish(pod, '{"runId": "ladder-c1-00", "status": "succ', exit_code=1)
                skip.difference_update(garbled)
                garbled.clear()
        if not deleted:  # delete one Job by hand while it runs: the engine relaunches it once
            for job in node.jobs():
                run_id = job.metadata.annotations[RUN_ID]
                if run_id in victim:
                    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job.metadata.name}").items
                    if pods:
                        batch.delete_namespaced_job(job.metadata.name, ns, propagation_policy="Background")
                        node.done.update(p.metadata.uid for p in pods)  # that Pod never reports
                        deleted.append(run_id)
                        skip.difference_update(victim)
                        victim.clear()
                        return

    plays = [0]

    class PacedNode:  # until every kill has happened the node plays one turn per two operator starts, so the
        @staticmethod  # kills spread over the ladder and Round 1 however slowly a loaded machine restarts kopf
        def step(skip) -> None:
            if operator.starts > KILLS or 2 * plays[0] < operator.starts:
                node.step(skip=skip)
                plays[0] += 1

    status = drive(cp, PacedNode(), ns, "chaos", timeout=240, between=chaos, skip=skip)
    TIMINGS["chaos_apply_to_succeeded_s"] = time.monotonic() - t0
    assert operator.starts >= KILLS + 1, f"the operator was killed {operator.starts - 1} times, not {KILLS}"
    check_finished(status, doc["spec"]["budget"]["flops"])
    assert deleted, "no Job was deleted by hand"
    lost = next(r for r in status.runs if r.run_id == deleted[0])
    assert lost.state == "Succeeded" and lost.reason.startswith("relaunched after loss")
    bad = next(r for r in status.runs if r.run_id == "ladder-c1-00")
    assert bad.state == "Failed" and bad.result is None and bad.reason.startswith("no result reported")
    assert bad.spent.flops > 0  # charged its whole reservation
    retry = next(r for r in status.runs if r.run_id == "ladder-c1-00-a1")
    assert retry.state == "Succeeded" and retry.result is not None
    relaunched = next(r for r in status.runs if r.run_id == "ladder-c1-01")
    assert relaunched.state == "Succeeded" and not relaunched.reason, relaunched.reason  # absent: not a loss
    # At most one Job per run id at any time (names are deterministic), and a second Job only for the run whose
    # Job was deleted by hand; no run ran twice otherwise.
    for run_id, uids in node.job_uids_per_run.items():
        assert len(uids) == (2 if run_id in (*deleted, "ladder-c1-01") else 1), (run_id, uids)
    jobs = node.jobs()
    assert len({j.metadata.name for j in jobs}) == len(jobs)
    assert {j.metadata.annotations[RUN_ID] for j in jobs} == {r.run_id for r in status.runs if r.launched_at}
    # every result the node reported is in the status
    reported = {r.run_id for r in status.runs if r.state == "Succeeded"}
    assert reported == set(node.job_uids_per_run) - {"ladder-c1-00"}
    sys.stderr.write(f"\n[operator timings] {TIMINGS} (operator started {operator.starts} times)\n")


def test_budget_lowered_below_spending_is_refused_and_raising_it_continues(crd, operator, apis) -> None:
    cp, ns = crd, operator.namespace
    core, batch, _ = apis
    doc = tiny_campaign("budget", ns)
    cp.apply_yaml(yaml.safe_dump(doc))
    node = Node(core, batch, ns)
    status = cp.wait_for(lambda: node.step() >= 0 and (s := status_of(cp, ns, "budget")).ledger.spent_flops > 0
                         and s, timeout=60, interval=0.3, what="some budget spent")
    used = status.ledger.spent_flops + status.ledger.reserved_flops

    def budget(flops: float) -> None:
        cp.kubectl("patch", "trainingcampaign", "budget", "-n", ns, "--type=merge",
                   "-p", json.dumps({"spec": {"budget": {"flops": flops}}}))

    def condition(state: str, generation: int):
        body = campaign(cp, ns, "budget")
        found = [c for c in body["status"].get("conditions", []) if c["type"] == "BudgetBelowSpent"]
        ok = found and found[0]["status"] == state and body["status"]["observedGeneration"] == generation
        return ok and body

    budget(used / 2)
    body = cp.wait_for(lambda: condition("True", 2), timeout=30, what="BudgetBelowSpent True")
    (refused,) = [c for c in body["status"]["conditions"] if c["type"] == "BudgetBelowSpent"]
    assert "keeping the previous limits" in refused["message"], refused
    assert body["status"]["ledger"]["budgetFlops"] == pytest.approx(doc["spec"]["budget"]["flops"])
    assert body["status"]["phase"] not in ("Failed", "Succeeded")

    # A planned section (here the model family) cannot change: refused with a condition naming it, the runs keep
    # the planned shapes; undoing the edit clears the condition.
    cp.kubectl("patch", "trainingcampaign", "budget", "-n", ns, "--type=merge",
               "-p", json.dumps({"spec": {"model": {"seqLen": 64}}}))
    body = cp.wait_for(lambda: (b := campaign(cp, ns, "budget"))["status"]["observedGeneration"] == 3 and b,
                       timeout=30, what="the model edit observed")
    (frozen,) = [c for c in body["status"]["conditions"] if c["type"] == "SpecChangeRefused"]
    assert frozen["status"] == "True" and "spec.model" in frozen["message"], frozen
    assert all(r.shape.seq_len == 32 for r in TrainingCampaignStatus.model_validate(body["status"]).runs)
    cp.kubectl("patch", "trainingcampaign", "budget", "-n", ns, "--type=merge",
               "-p", json.dumps({"spec": {"model": {"seqLen": 32}}}))
    cp.wait_for(lambda: [c for c in campaign(cp, ns, "budget")["status"]["conditions"]
                         if c["type"] == "SpecChangeRefused" and c["status"] == "False"],
                timeout=30, what="SpecChangeRefused cleared once the edit is undone")

    # A spec the schema accepts but the models refuse (an unknown GPU without peakFlops) pauses the campaign
    # that has runs in flight instead of failing it; fixing the spec resumes it.
    def pool(patch: dict) -> None:
        cp.kubectl("patch", "trainingcampaign", "budget", "-n", ns, "--type=merge",
                   "-p", json.dumps({"spec": {"gpuPool": patch}}))

    def spec_valid(state: str, generation: int):
        body = campaign(cp, ns, "budget")
        found = [c for c in body["status"].get("conditions", []) if c["type"] == "SpecValid"]
        return found and found[0]["status"] == state and found[0]["observedGeneration"] == generation and body

    pool({"gpuType": "tpu-v9", "peakFlops": None})
    body = cp.wait_for(lambda: spec_valid("False", 5), timeout=30, what="SpecValid False")
    (invalid,) = [c for c in body["status"]["conditions"] if c["type"] == "SpecValid"]
    assert "spec.gpuPool.gpuType" in invalid["message"] and body["status"]["phase"] not in ("Failed", "Succeeded")
    pool({"gpuType": "cpu", "peakFlops": 1e10})
    cp.wait_for(lambda: spec_valid("True", 6), timeout=30, what="SpecValid True")

    budget(2 * doc["spec"]["budget"]["flops"])
    body = cp.wait_for(lambda: condition("False", 7), timeout=30, what="BudgetBelowSpent False")
    assert body["status"]["ledger"]["budgetFlops"] == pytest.approx(2 * doc["spec"]["budget"]["flops"])
    status = drive(cp, node, ns, "budget", timeout=120)
    check_finished(status, 2 * doc["spec"]["budget"]["flops"])
