"""The Job and ConfigMap manifests of a campaign run, and the mapping from Jobs and Pods to the engine's
observations: pure functions, tested without a cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from flopwise.api.load import parse_campaign
from flopwise.api.status import Charge, PodTime, RunRecord
from flopwise.contract import RunSpec, RunSummary
from flopwise.engine.machine import Observation, reconcile
from flopwise.engine.runspec import run_spec_for
from flopwise.kube import jobs
from flopwise.kube.executor import Snapshot, observe_run

DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
UID = "0b6c7a52-1111-2222-3333-444455556666"


def campaign_doc(**pool) -> dict:
    doc = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
    doc["spec"]["gpuPool"].update(pool)
    return doc


def first_launch(doc: dict) -> tuple:
    campaign = parse_campaign(doc)
    decision = reconcile(campaign.spec, None, [], now=1000.0, seed=1)
    return campaign.spec, decision.status.plan, decision.launches[0]


def test_names_are_dns_labels_deterministic_and_distinct() -> None:
    assert jobs.job_name("tiny", "ladder-00") == "tiny-ladder-00"
    long = "c" * 63
    a, b = jobs.job_name(long, "ladder-00"), jobs.job_name(long, "ladder-01")
    assert a != b and len(a) <= 63 and len(b) <= 63 and DNS.match(a) and DNS.match(b)
    assert a == jobs.job_name(long, "ladder-00")  # a restarted operator finds the same name
    odd = jobs.job_name("Tiny_Camp", "round1-02.a1")
    assert DNS.match(odd) and len(odd) <= 63
    assert jobs.job_name("x", "a.b") != jobs.job_name("x", "a-b")  # sanitising never merges two runs
    for value in ("round1-02-a1", "x" * 80, "-weird_.", "a.b"):
        label = jobs.label_value(value)
        assert len(label) <= 63 and LABEL.match(label), label


def test_cpu_job_manifest() -> None:
    spec, plan, record = first_launch(campaign_doc())
    job = jobs.run_job("tiny", UID, "research", record, spec)
    meta, pod = job["metadata"], job["spec"]["template"]["spec"]
    assert meta["name"] == jobs.job_name("tiny", record.run_id)
    assert meta["ownerReferences"] == [{"apiVersion": "flopwise.dev/v1alpha1", "kind": "TrainingCampaign",
                                        "name": "tiny", "uid": UID, "controller": True, "blockOwnerDeletion": True}]
    labels = meta["labels"]
    assert labels["app.kubernetes.io/name"] == "flopwise-trainer"
    assert labels["app.kubernetes.io/managed-by"] == "flopwise"
    assert labels["app.kubernetes.io/part-of"] == "flopwise"
    assert labels["flopwise.dev/campaign"] == "tiny"
    assert labels["flopwise.dev/phase"] == "round1"  # tuning comes first
    assert labels["flopwise.dev/run"] == record.run_id
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert meta["annotations"]["flopwise.dev/run-id"] == record.run_id
    assert job["spec"]["backoffLimit"] == 0 and "suspend" not in job["spec"]
    assert job["spec"]["activeDeadlineSeconds"] >= 600
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"] == ["flopwise-train", "/etc/flopwise/spec.json"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert "resources" not in container  # gpuType cpu: no GPU asked for
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 10001 and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/flopwise"]["readOnly"] and "/tmp" in mounts and "/out" in mounts
    assert {"name": "FLOPWISE_RUN_SPEC_FILE", "value": "/etc/flopwise/spec.json"} in container["env"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["run-spec"]["configMap"]["name"] == jobs.config_map_name("tiny", record.run_id)
    assert "dataset" not in volumes  # no claim: the path is in the image
    # the RunSpec ConfigMap
    run_spec = run_spec_for(record, spec, plan, campaign="tiny", data_path=jobs.data_path(spec),
                            output_dir=jobs.output_dir(record.run_id))
    cm = jobs.run_config_map("tiny", UID, "research", record, run_spec)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == UID
    parsed = RunSpec.model_validate(json.loads(cm["data"]["spec.json"]))
    assert parsed.run_id == record.run_id and parsed.data_path == "/data/data"
    assert parsed.output_dir == f"/out/{record.run_id}"


def test_gpu_job_manifest_with_queue_pool_and_claim() -> None:
    doc = campaign_doc(gpuType="H100", gpusPerRun=4, maxConcurrentGpus=8, nodeSelector={"gpu": "h100"},
                       tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                       queueName="team-a")
    doc["spec"]["gpuPool"].pop("peakFlops")
    doc["spec"]["budget"]["flops"] = 1e13
    doc["spec"]["dataset"] = {"path": "/datasets/tiny", "claimName": "tokens"}
    doc["spec"]["trainer"] = {"resources": {"limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
                                            "requests": {"cpu": "4"}}}
    spec, _, record = first_launch(doc)
    job = jobs.run_job("tiny", UID, "research", record, spec)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"] == {"limits": {"memory": "16Gi", "nvidia.com/gpu": "4"},
                                      "requests": {"cpu": "4"}}
    assert container["command"][:1] == ["torchrun"] and "--nproc_per_node=4" in container["command"]
    assert container["command"][-2:] == ["flopwise-train", "/etc/flopwise/spec.json"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dataset"]["persistentVolumeClaim"] == {"claimName": "tokens", "readOnly": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "dataset")
    assert mount == {"name": "dataset", "mountPath": "/datasets/tiny", "readOnly": True}
    assert jobs.data_path(spec) == "/datasets/tiny"


def test_command_override_is_exec_form() -> None:
    doc = campaign_doc()
    doc["spec"]["trainer"] = {"command": ["python", "-m", "flopwise_trainer.cli"], "args": ["/etc/flopwise/spec.json"]}
    spec, _, record = first_launch(doc)
    (container,) = jobs.run_job("tiny", UID, "ns", record, spec)["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "flopwise_trainer.cli"]
    assert container["args"] == ["/etc/flopwise/spec.json"]


@pytest.mark.parametrize(("gpu_hours", "gpus", "grace", "expected"),
                         [(0.0, 1, 300, 1), (1.0, 1, 300, 3300), (8.0, 4, 0, 7200), (8.0, 4, 60, 7140)])
def test_active_deadline_is_the_reservation_less_the_grace_period(gpu_hours, gpus, grace, expected) -> None:
    """deadline + grace = the reservation's wall time on the run's GPUs: no Pod holds them longer than reserved."""
    doc = campaign_doc(gpusPerRun=gpus, maxConcurrentGpus=8)
    doc["spec"]["trainer"] = {"terminationGracePeriodSeconds": grace}
    spec, _, record = first_launch(doc)
    record = record.model_copy(update={"reserved": Charge(flops=1.0, gpu_hours=gpu_hours)})
    assert jobs.active_deadline_seconds(record, spec) == expected
    job = jobs.run_job("tiny", UID, "ns", record, spec)
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace


def test_the_reservation_is_the_worst_case_the_job_allows() -> None:
    """The engine reserves compute at the expected MFU + start-up slack + grace; the Job's deadline gives back
    exactly the compute and the slack, and a preempted run's next deadline is only what is left."""
    doc = campaign_doc(startupSlackSeconds=300)
    doc["spec"]["trainer"] = {"terminationGracePeriodSeconds": 30}
    spec, _, record = first_launch(doc)
    compute_s = record.planned_flops() / (spec.gpu_pool.peak * spec.gpu_pool.expected_mfu)
    assert record.reserved.gpu_hours * 3600 == pytest.approx(compute_s + 300 + 30)
    assert jobs.active_deadline_seconds(record, spec) == int(compute_s + 300)
    used = record.model_copy(update={"pods": [PodTime(uid="a", gpus=1, started_at=100.0, finished_at=160.0)]})
    assert jobs.active_deadline_seconds(used, spec) == int(compute_s + 300 - 60)
    # a Pod still stopping counts until now plus its grace period (its worst case)
    stopping = record.model_copy(update={"pods": [PodTime(uid="a", gpus=1, started_at=100.0)]})
    assert jobs.active_deadline_seconds(stopping, spec, now=190.0) == int(compute_s + 300 - 90 - 30)
    # re-admitted: the Job's clock restarted at 500, so only the Pods of earlier admissions count
    readmitted = record.model_copy(update={"pods": [PodTime(uid="a", gpus=1, started_at=100.0, finished_at=160.0),
                                                    PodTime(uid="b", gpus=1, started_at=510.0)]})
    assert jobs.active_deadline_seconds(readmitted, spec, now=600.0, since=500.0) == int(compute_s + 300 - 60)


def _pod(message: str | None, exit_code: int = 0, phase: str = "Succeeded") -> dict:
    terminated = {"exitCode": exit_code}
    if message is not None:
        terminated["message"] = message
    return {"status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]}}


def test_observation_mapping() -> None:
    ok = RunSummary(run_id="r", status="succeeded", final_val_loss=2.0, tokens=10).to_message()
    failed = RunSummary(run_id="r", status="failed", exit_reason="oom").to_message()
    job = {"status": {"active": 1}}
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    cases = [
        (Snapshot(), "absent"),
        (Snapshot(config_maps={"r"}), "lost"),
        (Snapshot(jobs={"r": job}, config_maps={"r"}), "running"),
        (Snapshot(jobs={"r": job}, pods={"r": [{"status": {"phase": "Pending"}}]}), "running"),
        (Snapshot(jobs={"r": job}, pods={"r": [_pod(ok)]}), "succeeded"),
        (Snapshot(pods={"r": [_pod(ok)]}), "succeeded"),  # the Job vanished, its Pod's result still counts
        (Snapshot(jobs={"r": job}, pods={"r": [_pod(ok, exit_code=1, phase="Failed")]}), "failed"),
        (Snapshot(jobs={"r": job}, pods={"r": [_pod(failed, exit_code=1, phase="Failed")]}), "failed"),
        (Snapshot(jobs={"r": job}, pods={"r": [_pod("{not json")]}), "failed"),
        (Snapshot(jobs={"r": failed_job}, config_maps={"r"}), "failed"),
    ]
    for snap, state in cases:
        assert observe_run("r", snap).state == state, (snap, state)
    assert observe_run("r", Snapshot(pods={"r": [_pod("{not json")]})).summary is None
    assert observe_run("r", Snapshot(pods={"r": [_pod(failed, 1)]})).summary.exit_reason == "oom"
    refused = observe_run("r", Snapshot(rejected={"r": "Job rejected: bad quantity"}, config_maps={"r"}))
    assert refused.state == "failed" and refused.summary.flops == 0  # nothing ran: nothing is charged
    assert refused.summary.exit_reason == "Job rejected: bad quantity"


def test_a_failure_without_summary_says_what_the_kubelet_or_job_controller_said() -> None:
    """No summary means the reservation is charged; the reason still tells a person what happened."""
    oom = {"status": {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": {
        "exitCode": 137, "reason": "OOMKilled"}}}]}}
    seen = observe_run("r", Snapshot(pods={"r": [oom]}))
    assert seen.state == "failed" and seen.summary is None and seen.reason == "container OOMKilled (exit code 137)"
    garbled = observe_run("r", Snapshot(pods={"r": [_pod("{not json", 1, "Failed")]}))
    assert garbled.reason == "container terminated (exit code 1), its termination message is not a run summary"
    deadline = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                           "message": "Job was active longer than specified deadline"}]}}
    seen = observe_run("r", Snapshot(jobs={"r": deadline}))
    assert seen.reason == "Job DeadlineExceeded: Job was active longer than specified deadline"
    evicted = {"status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}}
    seen = observe_run("r", Snapshot(jobs={"r": {"status": {"active": 1}}}, pods={"r": [evicted]}))
    assert seen.reason == "Pod Evicted: The node was low on memory."


SIGTERM = RunSummary(run_id="r", status="failed", steps=40, tokens=4000, flops=1e9,
                     exit_reason="terminated by SIGTERM at step 40 of 100 (checkpointed)").to_message()


def _started(message: str | None = None, *, exit_code: int = 1, deleting: bool = False, uid: str = "p1",
             start: str = "2026-01-01T00:00:00Z", end: str = "2026-01-01T00:10:00Z") -> dict:
    """A Pod as a Kubernetes ≥ 1.22 server shows it: started, running or terminated, maybe being deleted."""
    state = {"running": {"startedAt": start}} if message is None else {"terminated": {
        "exitCode": exit_code, "message": message, "startedAt": start, "finishedAt": end}}
    meta: dict = {"uid": uid}
    if deleting:
        meta["deletionTimestamp"] = end
    phase = "Running" if message is None else ("Succeeded" if exit_code == 0 else "Failed")
    return {"metadata": meta, "status": {"phase": phase, "startTime": start,
                                         "containerStatuses": [{"name": "trainer", "state": state}]}}


def test_observations_of_suspension_deadlines_and_pod_time() -> None:
    """Manifests as a Kubernetes ≥ 1.22 server (with Kueue) returns them, for what the 1.20 test server cannot show:
    a suspended Job is queued whatever its stopped Pod reported; a Pod being deleted decides nothing; a Job failed
    at its deadline is a cut run with the report its stopped Pod left; every started Pod's GPU time comes along."""
    suspended = {"spec": {"suspend": True}, "status": {}}
    by_condition = {"status": {"conditions": [{"type": "Suspended", "status": "True"}]}}
    active = {"status": {"active": 1}}
    cut = {"metadata": {"uid": "j1"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    preempted = _started(SIGTERM, deleting=True)
    for job in (suspended, by_condition):  # Kueue: preempted, or never admitted
        seen = observe_run("r", Snapshot(jobs={"r": job}, pods={"r": [preempted]}), gpus_per_pod=8)
        assert seen.state == "queued" and seen.summary is None
        (pod,) = seen.pods
        assert (pod.gpus, pod.finished_at - pod.started_at) == (8, 600.0)
        assert observe_run("r", Snapshot(jobs={"r": job})).state == "queued"
    # re-admitted: the stopped Pod is being deleted, the new one runs
    seen = observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [preempted, _started(uid="p2")]}), now=1.8e9)
    assert seen.state == "running" and [p.finished_at is None for p in seen.pods] == [False, True]
    seen = observe_run("r", Snapshot(jobs={"r": cut}, pods={"r": [preempted]}))
    assert seen.state == "failed" and seen.cut == "DeadlineExceeded" and seen.summary.steps == 40
    # a Pod deleted past its deletionTimestamp for long (its node is gone) holds no GPU since then
    stuck = _started(deleting=True)
    (pod,) = observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [stuck]}), now=1.8e9).pods
    assert pod.finished_at == pod.started_at + 600.0
    # an evicted Pod that had started: its time counts until it was seen failed
    evicted = {"metadata": {"uid": "p3"}, "status": {"phase": "Failed", "startTime": "2026-01-01T00:00:00Z"}}
    seen = observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [evicted]}), now=1767225700.0)
    assert seen.state == "failed" and seen.pods[0].finished_at == 1767225700.0
    assert observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [{"status": {"phase": "Pending"}}]})).pods == ()


class _RecordingBatch:
    """The Job calls the executor makes, recorded (what it asks the API server for is the subject here)."""

    def __init__(self, job: dict | None) -> None:
        self.job, self.calls = job, []

    def read_namespaced_job(self, name, namespace):
        from kubernetes.client.exceptions import ApiException

        self.calls.append(("read", name))
        if self.job is None:
            raise ApiException(status=404)
        return self.job

    def patch_namespaced_job(self, name, namespace, body):
        self.calls.append(("patch", name, body))

    def delete_namespaced_job(self, name, namespace, propagation_policy=None):
        self.calls.append(("delete", name, propagation_policy))

    class api_client:
        @staticmethod
        def sanitize_for_serialization(obj):
            return obj


def test_suspension_patches_where_the_server_can_and_deletes_where_it_cannot() -> None:
    from flopwise.kube.executor import KubernetesExecutor

    spec, _, record = first_launch(campaign_doc())
    for server_suspends, queue, expected in ((True, None, "patch"), (False, None, "delete"),
                                             (True, "research", "delete")):
        pool = spec.gpu_pool.model_copy(update={"queue_name": queue})
        batch = _RecordingBatch({"spec": {"suspend": False}})
        executor = KubernetesExecutor(None, batch, namespace="ns", campaign="tiny", uid=UID,
                                      spec=spec.model_copy(update={"gpu_pool": pool}))
        executor.suspend(record.run_id, server_suspends=server_suspends)
        (call,) = batch.calls
        assert call[0] == expected, (server_suspends, queue, call)
        if expected == "patch":
            assert call[2] == {"spec": {"suspend": True}}
        else:
            assert call[2] == "Background"  # its Pods get SIGTERM and their grace period
    # resuming a Job the operator suspended: unsuspended, with what is left of its reservation as its deadline
    batch = _RecordingBatch({"spec": {"suspend": True}, "status": {}})
    executor = KubernetesExecutor(None, batch, namespace="ns", campaign="tiny", uid=UID, spec=spec)
    used = record.model_copy(update={"pods": [PodTime(uid="a", gpus=1, started_at=0.0, finished_at=60.0)]})
    executor.resume(used, None)
    patch = batch.calls[-1][2]["spec"]
    assert patch["suspend"] is False
    assert patch["activeDeadlineSeconds"] == jobs.active_deadline_seconds(record, spec) - 60


def test_record_fields_survive_into_the_manifest() -> None:
    spec, _, record = first_launch(campaign_doc())
    retry = RunRecord.model_validate({**record.model_dump(), "run_id": f"{record.planned_id}-a1", "attempt": 1})
    a = jobs.run_job("tiny", UID, "ns", record, spec)
    b = jobs.run_job("tiny", UID, "ns", retry, spec)
    assert a["metadata"]["name"] != b["metadata"]["name"]
    assert b["metadata"]["annotations"]["flopwise.dev/run-id"] == retry.run_id


def test_operator_command_needs_a_scope() -> None:
    from click.testing import CliRunner

    from flopwise.cli.operator_cmd import command

    result = CliRunner().invoke(command, [])
    assert result.exit_code == 2 and "--namespace" in result.output
    result = CliRunner().invoke(command, ["--namespace", "a", "--all-namespaces"])
    assert result.exit_code == 2


def test_a_run_over_several_nodes_is_an_indexed_job_with_a_rendezvous_service() -> None:
    spec, _plan, record = first_launch(campaign_doc(gpuType="H100", peakFlops=None, gpusPerRun=16, gpusPerNode=8))
    job = jobs.run_job("big", UID, "research", record, spec)
    name = job["metadata"]["name"]
    service = jobs.rendezvous_service("big", UID, "research", record)
    svc_name = service["metadata"]["name"]
    assert DNS.match(svc_name) and svc_name[0].isalpha()
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"job-name": name}
    assert service["metadata"]["ownerReferences"][0]["uid"] == UID
    js, pod = job["spec"], job["spec"]["template"]["spec"]
    assert js["completionMode"] == "Indexed" and js["completions"] == js["parallelism"] == 2
    assert pod["subdomain"] == svc_name
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"  # per node: 16 GPUs over two Pods
    command = container["command"]
    assert command[0] == "torchrun" and "--nnodes=2" in command and "--nproc_per_node=8" in command
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in command and f"--master_addr={name}-0.{svc_name}" in command
    index_env = next(e for e in container["env"] if e["name"] == "JOB_COMPLETION_INDEX")
    assert "job-completion-index" in index_env["valueFrom"]["fieldRef"]["fieldPath"]
    # one node's worth of GPUs stays an ordinary Job
    spec1, _, record1 = first_launch(campaign_doc(gpuType="H100", peakFlops=None, gpusPerRun=8, gpusPerNode=8))
    single = jobs.run_job("big", UID, "research", record1, spec1)
    assert "completionMode" not in single["spec"] and single["spec"]["completions"] == 1


def test_only_node_zero_reports_and_a_failed_worker_fails_the_run() -> None:
    ok = RunSummary(run_id="r", status="succeeded", final_val_loss=2.0, tokens=10, flops=1.0).to_message()

    def indexed(message: str, index: int, exit_code: int = 0) -> dict:
        return {"metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
                "status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [
                    {"name": jobs.CONTAINER, "state": {"terminated": {"exitCode": exit_code, "message": message}}}]}}

    job = {"status": {}}
    both = Snapshot(jobs={"r": job}, pods={"r": [indexed("", 1), indexed(ok, 0)]})
    assert observe_run("r", both).state == "succeeded"  # node 1's empty message is not a garbled result
    worker_died = Snapshot(jobs={"r": job}, pods={"r": [indexed(ok, 0), indexed("", 1, exit_code=137)]})
    assert observe_run("r", worker_died).state == "failed"
    waiting = Snapshot(jobs={"r": job}, pods={"r": [indexed("", 1), {"metadata": {"annotations": {
        "batch.kubernetes.io/job-completion-index": "0"}}, "status": {"phase": "Running"}}]})
    assert observe_run("r", waiting).state == "running"


def test_gpus_per_run_must_fill_whole_nodes() -> None:
    from flopwise.api.load import CampaignError

    with pytest.raises(CampaignError, match=r"spec\.gpuPool\.gpusPerRun: 12 GPUs do not fill whole nodes of 8"):
        parse_campaign(campaign_doc(gpuType="H100", peakFlops=None, gpusPerRun=12, gpusPerNode=8))


def test_run_outputs_on_a_claim_live_in_the_campaign_uid_folder() -> None:
    """With trainer.outputClaimName a relaunched Job (and the partial check's second leg) sees the earlier
    attempt's checkpoint at the same path; the uid folder keeps a deleted namesake's checkpoints out of reach."""
    doc = campaign_doc()
    doc["spec"]["trainer"] = {"outputClaimName": "flopwise-runs"}
    spec, _, record = first_launch(doc)
    job = jobs.run_job("tiny", UID, "research", record, spec)
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["output"] == {"name": "output", "persistentVolumeClaim": {"claimName": "flopwise-runs"}}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "output")
    assert mount == {"name": "output", "mountPath": jobs.OUTPUT_ROOT, "subPath": UID}
    other = jobs.run_job("tiny", "another-uid", "research", record, spec)
    assert next(m for m in other["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                if m["name"] == "output")["subPath"] == "another-uid"
    # without a claim: an emptyDir, and the spec says what that costs
    spec, _, record = first_launch(campaign_doc())
    pod = jobs.run_job("tiny", UID, "research", record, spec)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["output"] == {"name": "output", "emptyDir": {}}
    doc["spec"]["trainer"] = {"outputClaimName": "Bad_Name"}
    with pytest.raises(Exception, match="outputClaimName"):
        first_launch(doc)


def test_a_replacement_pods_success_is_read_before_its_predecessors_failure() -> None:
    """On a real node, deleting a trainer Pod makes the Job controller start another at once; the deleted one
    reports its SIGTERM failure, the new one may resume the checkpoint and succeed: that result must count."""
    stopped = RunSummary(run_id="r", status="failed", exit_reason="terminated by SIGTERM at step 8 of 33").to_message()
    done = RunSummary(run_id="r", status="succeeded", final_val_loss=2.0, tokens=10).to_message()
    deleted = _pod(stopped, 1, "Failed")
    deleted["metadata"] = {"deletionTimestamp": "2026-11-29T03:00:00Z"}
    snap = Snapshot(pods={"r": [deleted, _pod(done, 0, "Succeeded")]})
    seen = observe_run("r", snap)
    assert seen.state == "succeeded" and seen.summary.final_val_loss == 2.0


def test_a_deleted_pods_failure_is_not_the_runs_while_its_job_goes_on() -> None:
    """The deleted Pod's SIGTERM summary arrives while its replacement trains (the Job stays active: its failed
    Pod is not the last one standing). The run is still running; only a Job that failed ends it, with that
    summary (charged what it used)."""
    stopped = RunSummary(run_id="r", status="failed", exit_reason="terminated by SIGTERM at step 8 of 33",
                         flops=5.0).to_message()
    deleted = _pod(stopped, 143, "Failed")
    deleted["metadata"] = {"deletionTimestamp": "2026-11-29T03:00:00Z"}
    replacement = {"status": {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": {"running": {}}}]}}
    active = {"status": {"active": 1}}
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    assert observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [deleted, replacement]})).state == "running"
    assert observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [deleted]})).state == "running"
    ended = observe_run("r", Snapshot(jobs={"r": failed_job}, pods={"r": [deleted]}))
    assert ended.state == "failed" and ended.summary is not None and ended.summary.flops == 5.0
    gone = observe_run("r", Snapshot(config_maps={"r"}, pods={"r": [deleted]}))  # the Job deleted too: relaunched
    assert gone.state == "lost"
    kept = _pod(stopped, 143, "Failed")  # not deleted: the kubelet stopped it (an eviction): the Job fails with it
    assert observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [kept]})).state == "failed"


# ---------------------------------------------------------------------------------------------- GPU-ready Pods
def _gpu_doc(**trainer) -> dict:
    doc = campaign_doc(gpuType="H100", peakFlops=None, gpusPerRun=8, gpusPerNode=8)
    doc["spec"]["trainer"] = trainer
    return doc


def test_a_gpu_pod_has_shared_memory_requests_per_gpu_and_keeps_its_checkpointing_time() -> None:
    spec, _, record = first_launch(_gpu_doc(terminationGracePeriodSeconds=900))
    pod = jobs.run_job("big", UID, "research", record, spec)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "8"}, "requests": {"cpu": "64", "memory": "512Gi"}}
    assert pod["terminationGracePeriodSeconds"] == 900
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    # explicit values win; a limit alone is the request (no default above it)
    spec, _, record = first_launch(_gpu_doc(shmSize="2Gi", cpuPerGpu="500m", resources={"limits": {"memory": "1Ti"}}))
    pod = jobs.run_job("big", UID, "research", record, spec)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]["sizeLimit"] == "2Gi"
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "1Ti", "nvidia.com/gpu": "8"},
                                                 "requests": {"cpu": "4000m"}}
    # a CPU pool: a modest /dev/shm, no GPU defaults
    spec, _, record = first_launch(campaign_doc())
    pod = jobs.run_job("tiny", UID, "research", record, spec)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]["sizeLimit"] == "1Gi"
    assert "resources" not in pod["containers"][0]
    with pytest.raises(Exception, match=r"trainer\.memoryPerGpu"):
        first_launch(_gpu_doc(memoryPerGpu="lots"))


def test_the_pod_template_overlay_merges_and_never_weakens_the_restricted_context() -> None:
    from flopwise.api.load import CampaignError
    from flopwise.api.podtemplate import merge
    from pod_security import restricted_violations

    overlay = {"metadata": {"annotations": {"example.com/a": "b"}, "labels": {"team": "x"}},
               "spec": {"priorityClassName": "high", "imagePullSecrets": [{"name": "reg"}],
                        "tolerations": [{"key": "spot", "operator": "Exists"}],
                        "containers": [{"name": "trainer", "env": [{"name": "NCCL_DEBUG", "value": "INFO"},
                                                                    {"name": "HOME", "value": "/scratch"}],
                                        "securityContext": {"runAsUser": 20000}},
                                       {"name": "log-shipper", "image": "example/shipper:1"}],
                        "volumes": [{"name": "scratch", "emptyDir": {}}]}}
    spec, _, record = first_launch(_gpu_doc(podTemplate=overlay))
    template = jobs.run_job("big", UID, "research", record, spec)["spec"]["template"]
    pod, meta = template["spec"], template["metadata"]
    trainer, shipper = pod["containers"]
    assert pod["priorityClassName"] == "high" and pod["imagePullSecrets"] == [{"name": "reg"}]
    assert {"key": "spot", "operator": "Exists"} in pod["tolerations"]
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["NCCL_DEBUG"] == "INFO" and env["HOME"] == "/scratch" and env["FLOPWISE_RUN_ID"] == record.run_id
    assert trainer["securityContext"]["runAsUser"] == 20000 and trainer["command"][0] == "torchrun"
    assert shipper["securityContext"]["allowPrivilegeEscalation"] is False  # a sidecar made restricted too
    assert meta["annotations"]["example.com/a"] == "b" and meta["labels"]["team"] == "x"
    assert meta["labels"]["flopwise.dev/run"] == record.run_id
    assert restricted_violations(template) == []
    # anything that would loosen it is refused, naming the field
    for bad, field in (({"spec": {"hostNetwork": True}}, "spec.hostNetwork"),
                       ({"spec": {"containers": [{"name": "trainer", "securityContext": {"privileged": True}}]}},
                        "spec.containers[0].securityContext.privileged"),
                       ({"spec": {"securityContext": {"runAsNonRoot": False}}}, "spec.securityContext.runAsNonRoot"),
                       ({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}, "spec.volumes[0]"),
                       ({"spec": {"containers": [{"name": "trainer", "securityContext": {
                           "capabilities": {"add": ["SYS_ADMIN"]}}}]}}, "capabilities.add"),
                       ({"spec": {"restartPolicy": "Always"}}, "spec.restartPolicy"),
                       ({"spec": {"containers": [{"name": "trainer", "image": "evil"}]}}, "image")):
        with pytest.raises(CampaignError, match=rf"spec\.trainer\.podTemplate\.(\S*\.)?{re.escape(field)}:"):
            parse_campaign(_gpu_doc(podTemplate=bad))
    # and merging alone (an overlay that got past validation) imposes the restricted settings again
    weakened = merge(template, {"spec": {"hostPID": True, "securityContext": {"runAsNonRoot": False},
                                         "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                                         "containers": [{"name": "trainer", "securityContext": {
                                             "privileged": True, "allowPrivilegeEscalation": True,
                                             "capabilities": {"add": ["SYS_ADMIN"]}}}]}})
    assert restricted_violations(weakened) == []


def test_campaign_labels_reach_its_jobs_and_pods_but_not_over_flopwise_keys() -> None:
    spec, _, record = first_launch(campaign_doc())
    labels = {"team": "nlp", "cost-centre": "42", "app.kubernetes.io/name": "x", "flopwise.dev/run": "y",
              "kueue.x-k8s.io/queue-name": "z"}
    job = jobs.run_job("tiny", UID, "research", record, spec, campaign_labels=labels)
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"]["team"] == "nlp" and meta["labels"]["cost-centre"] == "42"
        assert meta["labels"]["app.kubernetes.io/name"] == "flopwise-trainer"
        assert meta["labels"]["flopwise.dev/run"] == record.run_id
        assert "kueue.x-k8s.io/queue-name" not in meta["labels"]


def test_multi_node_job_names_fit_indexed_pod_names_and_pod_failure_policy_follows_the_server() -> None:
    spec, _, record = first_launch(campaign_doc(gpuType="H100", peakFlops=None, gpusPerRun=16, gpusPerNode=8))
    long = "campaign-with-a-rather-long-descriptive-name"  # 44 characters
    job = jobs.run_job(long, UID, "research", record, spec)
    assert len(job["metadata"]["name"]) <= 52 and DNS.match(job["metadata"]["name"])
    assert jobs.rendezvous_service(long, UID, "research", record, spec)["spec"]["selector"] == {
        "job-name": job["metadata"]["name"]}
    single, _, record1 = first_launch(campaign_doc())
    assert len(jobs.run_job("c" * 63, UID, "r", record1, single)["metadata"]["name"]) == 63  # single-node: 63
    assert "podFailurePolicy" not in job["spec"]  # no server said it has one
    assert "podFailurePolicy" not in jobs.run_job(long, UID, "r", record, spec, server=(1, 25))["spec"]
    policy = jobs.run_job(long, UID, "r", record, spec, server=(1, 26))["spec"]["podFailurePolicy"]
    assert policy["rules"][0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert policy["rules"][1]["action"] == "FailJob"
    assert policy["rules"][1]["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [1, 2]}


def test_the_image_digest_a_pod_reports_is_recorded_on_its_run() -> None:
    from flopwise.kube.executor import image_digest

    digest = "sha256:" + "ab" * 32
    for reported in (f"docker-pullable://ghcr.io/flopwise/trainer@{digest}", f"ghcr.io/x@{digest}", digest):
        pod = {"status": {"containerStatuses": [{"name": "trainer", "imageID": reported}]}}
        assert image_digest(pod) == digest
    assert image_digest({"status": {"containerStatuses": [{"name": "trainer", "imageID": ""}]}}) is None
    spec, _, _ = first_launch(campaign_doc())
    status = reconcile(spec, None, [], now=1000.0, seed=1).status
    assert all(r.image == spec.trainer.image for r in status.runs if r.state == "Running")
    seen = [Observation(r.run_id, "running", image_digest=digest) for r in status.runs if r.state == "Running"]
    status = reconcile(spec, status, seen, now=1001.0, seed=1).status
    assert all(r.image_digest == digest for r in status.runs if r.state == "Running")
