"""Trainer Pods fit for GPUs and cleaned up after, on the real control plane (etcd + kube-apiserver 1.20 +
kube-controller-manager): the Pod the real Job controller makes from the operator's Job has shared memory, CPU and
memory requests per GPU, the grace period, the user's overlay with the restricted security context intact, and the
campaign's labels; each run records its image and digest; with `spec.cleanup` the finished runs' Jobs, Pods and
ConfigMaps go once their results are in the status.

`Kubelet` (tests/operator_harness.py) plays the node, reporting the image digest a container runtime would. The
admission chain (including Priority, which refuses a Pod naming an unknown PriorityClass) and the Job and
garbage-collector controllers are real.
"""

from __future__ import annotations

import sys
import threading
import time

import yaml

from flopwise.api.status import TrainingCampaignStatus
from operator_harness import IMAGE_DIGEST, Kubelet, drive, tiny_campaign
from pod_security import restricted_violations
from test_spend_cluster import LedgerWatch

FIGURES: dict[str, object] = {}

OVERLAY = {
    "metadata": {"annotations": {"example.com/trace": "on"}, "labels": {"example.com/tier": "batch"}},
    "spec": {"priorityClassName": "training", "imagePullSecrets": [{"name": "registry"}],
             "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                 "weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In",
                                                                    "values": ["a"]}]}}]}},
             "containers": [{"name": "trainer", "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
                             "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
             "volumes": [{"name": "cache", "emptyDir": {}}]},
}


class JobDeletions(threading.Thread):
    """When each of the campaign's Jobs was deleted, by the watch's DELETED events."""

    def __init__(self, batch, ns: str, name: str):
        super().__init__(daemon=True)
        self.batch, self.ns, self.name = batch, ns, name
        self.deleted: dict[str, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        from kubernetes import watch

        version = None  # each stream goes on where the last ended: a deletion between two is not missed
        while not self.stopped.is_set():
            try:
                for event in watch.Watch().stream(self.batch.list_namespaced_job, self.ns, timeout_seconds=2,
                                                  label_selector=f"flopwise.dev/campaign={self.name}",
                                                  resource_version=version):
                    job = event["object"]
                    version = job.metadata.resource_version
                    if event["type"] == "DELETED":
                        self.deleted[job.metadata.annotations["flopwise.dev/run-id"]] = time.time()
            except Exception:  # a broken or expired stream: start again from now
                version = None
                time.sleep(0.2)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


def test_gpu_pods_are_fit_carry_labels_record_images_and_are_cleaned_up(crd, operator, apis) -> None:
    cp, ns = crd, operator.namespace
    core, batch, custom = apis
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "training"},
        "value": 1000}))
    doc = tiny_campaign("fit", ns)
    doc["metadata"]["labels"] = {"team": "research", "cost-centre": "ml-42",
                                 "app.kubernetes.io/name": "not-the-trainer"}
    doc["spec"]["gpuPool"].update(gpuType="A100-test", peakFlops=1e10, gpusPerRun=1)
    doc["spec"]["trainer"] = {"terminationGracePeriodSeconds": 120, "podTemplate": OVERLAY}
    doc["spec"]["cleanup"] = {"ttlSecondsAfterFinished": 0}
    watcher, deletions = LedgerWatch(custom, ns, "fit"), JobDeletions(batch, ns, "fit")
    watcher.start()
    deletions.start()
    node = Kubelet(core, batch, ns)
    node.hold.add("round1-00")  # its Pod stays up while the test reads it
    try:
        cp.apply_yaml(yaml.safe_dump(doc))
        pod = cp.wait_for(lambda: node.step() >= 0 and next(
            (p for p in core.list_namespaced_pod(ns, label_selector="flopwise.dev/run=round1-00").items), None),
            timeout=60, interval=0.3, what="round1-00's Pod")
        job = batch.api_client.sanitize_for_serialization(batch.read_namespaced_job("fit-round1-00", ns))
        pod = core.api_client.sanitize_for_serialization(pod)
        for where, template in (("the Job's template", job["spec"]["template"]), ("the Pod", pod)):
            spec, meta = template["spec"], template["metadata"]
            assert restricted_violations({"metadata": meta, "spec": spec}) == [], where
            (trainer,) = [c for c in spec["containers"] if c["name"] == "trainer"]
            shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
            assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}, where
            assert {"name": "dshm", "mountPath": "/dev/shm"} in trainer["volumeMounts"]
            requests = {k: v for k, v in trainer["resources"]["requests"].items() if k != "nvidia.com/gpu"}
            assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "1"}, where  # (the API server defaults
            assert requests == {"cpu": "8", "memory": "64Gi"}, where  # the Pod's GPU request to its limit)
            assert spec["terminationGracePeriodSeconds"] == 120
            assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
            assert spec["priorityClassName"] == "training" and spec["imagePullSecrets"] == [{"name": "registry"}]
            assert spec["affinity"]["nodeAffinity"] and {"name": "NCCL_DEBUG", "value": "INFO"} in trainer["env"]
            assert {"name": "cache", "mountPath": "/cache"} in trainer["volumeMounts"]
            assert meta["annotations"]["example.com/trace"] == "on"
            assert meta["labels"]["team"] == "research" and meta["labels"]["cost-centre"] == "ml-42"
            assert meta["labels"]["app.kubernetes.io/name"] == "flopwise-trainer"  # flopwise's own keys win
        assert job["metadata"]["labels"]["team"] == "research"
        node.hold.clear()
        status = drive(cp, node, ns, "fit", timeout=180)
        t_end = time.monotonic()
        cp.wait_for(lambda: not batch.list_namespaced_job(ns, label_selector="flopwise.dev/campaign=fit").items
                    and not core.list_namespaced_pod(ns, label_selector="flopwise.dev/campaign=fit").items
                    and not core.list_namespaced_config_map(ns, label_selector="flopwise.dev/campaign=fit").items,
                    timeout=60, interval=0.3, what="the finished runs' Jobs, Pods and ConfigMaps removed")
        gone_s = time.monotonic() - t_end
    finally:
        watcher.stop()
        deletions.stop()
    assert status.phase == "Succeeded"
    for record in status.runs:  # each run's image and the digest its Pod reported
        assert record.image == "ghcr.io/flopwise/trainer:0.1.0" and record.image_digest == IMAGE_DIGEST, record
    # every Job was deleted only after a status write that held its run's result
    first_seen: dict[str, float] = {}
    for received, raw in watcher.writes:
        for record in TrainingCampaignStatus.model_validate(raw).runs:
            if record.state in ("Succeeded", "Failed", "Lost") and record.result is not None:
                first_seen.setdefault(record.run_id, received)
    assert set(deletions.deleted) == {r.run_id for r in status.runs}, (set(deletions.deleted), status.runs)
    lag = {run: round(deletions.deleted[run] - first_seen[run], 2) for run in deletions.deleted}
    assert all(v >= -0.5 for v in lag.values()), lag  # two watch streams: their events may cross by ms
    FIGURES["cleanup"] = {"jobs_deleted": len(deletions.deleted), "result_to_delete_s_max": max(lag.values()),
                          "all_gone_after_last_result_s": round(gone_s, 1)}
    sys.stderr.write(f"\n[pods] {FIGURES['cleanup']}\n")
