"""End to end on the real node, nothing played: what the README's "Install on a cluster with Helm" says, done.

`helm install` puts the operator on the node as a Pod from the image hack/node.sh built from operator/Dockerfile,
running under the chart's ServiceAccount; `kubectl apply` of a tiny campaign makes it launch Jobs whose Pods run
the trainer image (trainer_image/Dockerfile) on the Python standard library's token shards (a hostPath
PersistentVolume), their outputs on another one (`trainer.outputClaimName`), so the partial check's second leg
resumes the first leg's checkpoint. The kubelet reports every result through the termination message. A real
Prometheus finds the operator Pod through the chart's metrics Service and scrapes it.
"""

from __future__ import annotations

import sys
import time

import pytest
import yaml

from node_campaign import (
    FULLNAME,
    RUN_ID,
    Prometheus,
    campaign_pods,
    check_ledger,
    check_no_duplicate_job,
    check_no_lost_result,
    result_json,
    tiny_campaign,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.timeout(2700)  # the first node test also starts the node (importing the images) and Helm


def first_running(release, name: str) -> bool:
    return any(p["status"].get("phase") in ("Running", "Succeeded") for p in campaign_pods(release, name))


def test_helm_installed_operator_pod_runs_a_campaign_on_the_real_node(node_cluster, flopwise_release) -> None:
    nc, release = node_cluster, flopwise_release
    (operator_pod,) = [p for p in release.operator_pods() if p["status"]["phase"] == "Running"]
    spec = operator_pod["spec"]
    assert spec["serviceAccountName"] == FULLNAME and spec["containers"][0]["image"] == release.operator_image
    prometheus = Prometheus(nc, release.namespace)
    try:
        doc = tiny_campaign(release, "e2e")
        t0 = time.monotonic()
        nc.apply_yaml(yaml.safe_dump(doc))
        wait_for(lambda: first_running(release, "e2e"), timeout=180, what="a trainer Pod Running")
        first_pod_s = time.monotonic() - t0
        status = wait_phase(release, "e2e", timeout=1200)
        wall_s = time.monotonic() - t0
        pods = campaign_pods(release, "e2e")
        sys.stderr.write(f"\n[e2e] apply → first trainer Pod Running {first_pod_s:.1f} s; campaign {status.phase} "
                         f"after {wall_s:.1f} s, {len(status.runs)} runs ({len(pods)} Pods); spent "
                         f"{status.ledger.spent_flops:.3g} of {doc['spec']['budget']['flops']:.3g} FLOPs\n")
        print(f"apply → first Pod Running: {first_pod_s:.1f} s; campaign wall time: {wall_s:.1f} s")
        assert status.phase == "Succeeded", (status.message, [(r.run_id, r.state, r.reason) for r in status.runs])
        # a fitted law, a prediction and a recommendation, from results the kubelet carried back
        assert status.law is not None and status.law.n_runs >= 4, status.law
        assert status.recommendation is not None and status.recommendation.predicted_loss is not None
        assert all(r.state == "Succeeded" and r.result and r.result.final_val_loss for r in status.runs), \
            [(r.run_id, r.state, r.reason) for r in status.runs]
        check_ledger(status, doc["spec"]["budget"]["flops"])
        check_no_duplicate_job(release, "e2e", status)
        check_no_lost_result(release, "e2e", status)
        # every Pod ran the trainer image on the node
        assert {p["spec"]["containers"][0]["image"] for p in pods} == {release.trainer_image}
        assert {p["spec"]["nodeName"] for p in pods} == {"flopwise-node"}
        # the partial check: the second leg resumed the first leg's checkpoint on the outputs volume
        check = status.partial_check
        assert check is not None and check.loss_before is not None and check.loss_after is not None, check
        uid = release.json("get", "trainingcampaign", "e2e")["metadata"]["uid"]
        second = result_json(release, uid, "final-00")
        final = next(r for r in status.runs if r.run_id == "final-00")
        # the leg's checkpoint from before its cooldown (the leg itself ends annealed, at the check's stop step)
        assert final.resume_step is not None and final.resume_step < check.stop_step, (final, check)
        assert second["resumedFrom"] == [final.resume_step], (second["resumedFrom"], final.resume_step)
        # `kubectl logs` of a run: the trainer's own output, through the kubelet
        ladder_pod = next(p for p in pods if p["metadata"]["annotations"][RUN_ID] == "ladder-c0-00")
        logs = release.kubectl("logs", ladder_pod["metadata"]["name"]).stdout
        steps = next(r.steps for r in status.runs if r.run_id == "ladder-c0-00")
        assert f"step {steps}/{steps} " in logs, logs[-2000:]
        # a real Prometheus scraped the operator Pod and has the campaign's phase and spend
        found = wait_for(lambda: prometheus.query('flopwise_campaign_phase{campaign="e2e",phase="Succeeded"} == 1'),
                         timeout=60, what=f"the Succeeded phase in Prometheus (scraping {prometheus.targets})")
        instance = found[0]["metric"]["instance"]
        assert instance.startswith(operator_pod["status"]["podIP"] + ":"), (instance, operator_pod["status"])
        assert prometheus.query('flopwise_budget_spent_flops{campaign="e2e"} > 0'), "no spend scraped"
        sys.stderr.write(f"[e2e] predicted loss {status.recommendation.predicted_loss:.3f}; partial check "
                         f"{check.loss_before:.3f} → {check.loss_after:.3f}; scraped from {instance}\n")
    finally:
        prometheus.stop()
