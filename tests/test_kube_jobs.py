"""The Job and ConfigMap manifests of a campaign run, and the mapping from Jobs and Pods to the engine's
observations: pure functions, tested without a cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from flopwise.api.load import parse_campaign
from flopwise.api.status import Charge, RunRecord
from flopwise.contract import RunSpec, RunSummary
from flopwise.engine.machine import reconcile
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


@pytest.mark.parametrize(("gpu_hours", "gpus", "expected"), [(0.0, 1, 600), (1.0, 1, 7200), (8.0, 4, 14400)])
def test_active_deadline_follows_the_reservation(gpu_hours, gpus, expected) -> None:
    doc = campaign_doc(gpusPerRun=gpus, maxConcurrentGpus=8)
    spec, _, record = first_launch(doc)
    record = record.model_copy(update={"reserved": Charge(flops=1.0, gpu_hours=gpu_hours)})
    assert jobs.active_deadline_seconds(record, spec) == expected


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
    snap = Snapshot(pods={"r": [_pod(stopped, 1, "Failed"), _pod(done, 0, "Succeeded")]})
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
    gone = observe_run("r", Snapshot(config_maps={"r"}, pods={"r": [deleted]}))  # the Job deleted too: its report
    assert gone.state == "failed" and gone.summary is not None
    kept = _pod(stopped, 143, "Failed")  # not deleted: the kubelet stopped it (an eviction): the Job fails with it
    assert observe_run("r", Snapshot(jobs={"r": active}, pods={"r": [kept]})).state == "failed"
