"""Pure builders of the Kubernetes objects one campaign run needs: a ConfigMap holding its RunSpec and a Job.

Nothing here talks to the API server, so every manifest detail is unit-tested without a cluster. Names are
deterministic in (campaign, run id): an operator that restarts finds the Job it created before (409 on create
means adopt), never a duplicate. Everything is owned by the campaign, so deleting the campaign deletes its Jobs,
their Pods and the ConfigMaps through the garbage collector.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from typing import Any

from flopwise.api.spec import GROUP, KIND, VERSION, TrainingCampaignSpec
from flopwise.api.status import RunRecord
from flopwise.contract import RunSpec

NAME_LIMIT = 63  # DNS-1123 label: a Job's name becomes its Pods' `job-name` label value
INDEXED_NAME_LIMIT = 52  # an Indexed Job's Pods are named <job>-<index>-<5 random> (Kubernetes PR #101292)
LABEL_LIMIT = 63

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_CAMPAIGN = f"{GROUP}/campaign"
LABEL_PHASE = f"{GROUP}/phase"
LABEL_RUN = f"{GROUP}/run"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"
ANNOTATION_RUN_ID = f"{GROUP}/run-id"  # the exact run id (label values are sanitised)
ANNOTATION_CAMPAIGN = f"{GROUP}/campaign-name"
ANNOTATION_CAMPAIGN_UID = f"{GROUP}/campaign-uid"

TRAINER_NAME = "flopwise-trainer"
MANAGED_BY = "flopwise"
CONTAINER = "trainer"

SPEC_DIR = "/etc/flopwise"
SPEC_KEY = "spec.json"
SPEC_PATH = f"{SPEC_DIR}/{SPEC_KEY}"
DATA_ROOT = "/data"
OUTPUT_ROOT = "/out"
TERMINATION_LOG = "/dev/termination-log"

INDEXED_JOBS_SINCE = (1, 22)  # Indexed Jobs (beta, on by default) and their stable Pod hostnames
JOB_SUSPEND_SINCE = (1, 22)  # Job spec.suspend on by default (alpha behind a gate in 1.21; 1.20 prunes the field)
POD_FAILURE_POLICY_SINCE = (1, 26)  # Job podFailurePolicy on by default (beta)
TRAINER_EXIT_CODES = [1, 2]  # flopwise-train: 1 failed, 2 diverged (0 succeeded)
GPU_RESOURCE = "nvidia.com/gpu"
SHM_PER_GPU_GI = 8
CPU_SHM = "1Gi"
OWN_LABEL_PREFIXES = ("app.kubernetes.io/", f"{GROUP}/", "kueue.x-k8s.io/", "batch.kubernetes.io/")
OWN_LABELS = {"job-name", "controller-uid"}
RENDEZVOUS_PORT = 29500
COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
RUN_AS_USER = 10001  # the user both images create (trainer_image/Dockerfile, operator/Dockerfile)

_INVALID_NAME = re.compile(r"[^a-z0-9-]+")
_INVALID_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def dns_name(*parts: str, limit: int = NAME_LIMIT) -> str:
    """A DNS-1123 label from ``parts`` joined by '-': lower-cased, invalid runs replaced by '-', and — when
    it must be cut to ``limit`` — truncated with a short hash of the full text, so distinct inputs stay distinct."""
    full = "-".join(parts)
    name = _INVALID_NAME.sub("-", full.lower()).strip("-") or "x"
    if len(name) <= limit and name == full:
        return name
    if len(name) <= limit and name != full:  # sanitised: keep it unique against a name that was already clean
        suffix = _digest(full, 5)
        if len(name) + 6 <= limit:
            return f"{name}-{suffix}"
    suffix = _digest(full)
    head = name[: limit - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}" if head else suffix


def label_value(value: str, limit: int = LABEL_LIMIT) -> str:
    """A valid label value: ≤ 63 chars of [A-Za-z0-9_.-], starting and ending alphanumerically."""
    clean = _INVALID_LABEL.sub("-", value).strip("-_.")
    if len(clean) <= limit and clean == value:
        return clean
    suffix = _digest(value)
    head = clean[: limit - len(suffix) - 1].strip("-_.")
    return f"{head}-{suffix}" if head else suffix


def job_name(campaign: str, run_id: str, spec: TrainingCampaignSpec | None = None) -> str:
    """Deterministic in (campaign, run id); at most 52 characters for a multi-node (Indexed) run's Job."""
    indexed = spec is not None and is_gpu(spec) and spec.gpu_pool.nodes_per_run > 1
    return dns_name(campaign, run_id, limit=INDEXED_NAME_LIMIT if indexed else NAME_LIMIT)


def config_map_name(campaign: str, run_id: str) -> str:
    return dns_name(campaign, run_id)  # a ConfigMap is another kind: the same name is free


def campaign_selector(campaign: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_CAMPAIGN}={label_value(campaign)}"


def owner_reference(campaign: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": campaign, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def inherited_labels(campaign_labels: dict[str, str] | None) -> dict[str, str]:
    """The campaign's own labels (team, cost centre…) that its Jobs and Pods carry for cost attribution: all but
    the keys flopwise, Kubernetes and Kueue own."""
    return {k: v for k, v in (campaign_labels or {}).items()
            if not k.startswith(OWN_LABEL_PREFIXES) and k not in OWN_LABELS}


def labels_for(campaign: str, record: RunRecord, spec: TrainingCampaignSpec | None = None,
               campaign_labels: dict[str, str] | None = None) -> dict[str, str]:
    labels = {**inherited_labels(campaign_labels),
              LABEL_NAME: TRAINER_NAME, LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: MANAGED_BY,
              LABEL_CAMPAIGN: label_value(campaign), LABEL_PHASE: label_value(record.role),
              LABEL_RUN: label_value(record.run_id)}
    if spec is not None and spec.gpu_pool.queue_name:
        labels[LABEL_KUEUE_QUEUE] = label_value(spec.gpu_pool.queue_name)
    if spec is not None and spec.gpu_pool.priority_class:
        labels[LABEL_KUEUE_PRIORITY] = label_value(spec.gpu_pool.priority_class)
    return labels


def annotations_for(campaign: str, uid: str, record: RunRecord) -> dict[str, str]:
    return {ANNOTATION_RUN_ID: record.run_id, ANNOTATION_CAMPAIGN: campaign, ANNOTATION_CAMPAIGN_UID: uid}


def is_gpu(spec: TrainingCampaignSpec) -> bool:
    return spec.gpu_pool.gpu_type.lower() != "cpu"


def data_path(spec: TrainingCampaignSpec) -> str:
    """Where the dataset lies inside the pod. With a claim: an absolute ``path`` is where the claim is mounted
    (the claim's root is the dataset), a relative one lies under the claim mounted at /data. Without a claim an
    absolute path is taken as is (baked into the image) and a relative one under /data."""
    path = spec.dataset.path
    return path if path.startswith("/") else f"{DATA_ROOT}/{path.strip('/')}"


def output_dir(run_id: str) -> str:
    return f"{OUTPUT_ROOT}/{run_id}"


def used_gpu_seconds(record: RunRecord, spec: TrainingCampaignSpec, now: float | None = None,
                     since: float | None = None) -> float:
    """GPU time the run's Pods have held, or may still hold: a Pod still running or stopping counts until now plus
    its grace period (its worst case). ``since``: only Pods that started before it (earlier admissions of a Job
    whose deadline clock restarted then)."""
    now = time.time() if now is None else now
    grace = spec.trainer.termination_grace_period_seconds
    return sum(p.gpus * max(0.0, (p.finished_at if p.finished_at is not None else now + grace) - p.started_at)
               for p in record.pods if since is None or p.started_at < since)


def active_deadline_seconds(record: RunRecord, spec: TrainingCampaignSpec, now: float | None = None,
                            since: float | None = None) -> int:
    """What is left of the run's reservation as wall time on its GPUs, less the grace period its Pods get after
    the deadline: deadline + grace never exceeds the reservation (its compute at the expected MFU plus
    ``gpuPool.startupSlackSeconds`` plus the grace), so no Pod holds its GPUs longer than the ledger reserved.
    A run preempted, suspended or relaunched has used part of it already (``used_gpu_seconds``; ``since``: the
    running Job's own start, whose Pods the deadline itself bounds). The Job's clock starts before its Pod's
    (scheduling), which only errs on the safe side. At least 1 s."""
    gpus = max(1, spec.gpu_pool.gpus_per_run)
    left = (record.reserved.gpu_hours * 3600.0 - used_gpu_seconds(record, spec, now, since)) / gpus
    return max(1, math.floor(left - spec.trainer.termination_grace_period_seconds))


def rendezvous_service_name(campaign: str, run_id: str) -> str:
    """The headless Service of a multi-node run (a DNS-1035 label: it starts with a letter)."""
    return dns_name("rdzv", campaign, run_id)


def rendezvous_service(campaign: str, uid: str, namespace: str, record: RunRecord,
                       spec: TrainingCampaignSpec | None = None) -> dict[str, Any]:
    """Headless, publishing not-ready addresses: node 0's Pod must resolve before it is ready."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": rendezvous_service_name(campaign, record.run_id), "namespace": namespace,
                     "labels": labels_for(campaign, record), "annotations": annotations_for(campaign, uid, record),
                     "ownerReferences": [owner_reference(campaign, uid)]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {"job-name": job_name(campaign, record.run_id, spec)},
                 "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}]},
    }


def command_for(spec: TrainingCampaignSpec, rendezvous: str | None = None) -> tuple[list[str], list[str]]:
    """Exec form, never a shell. A trainer command override wins; several GPUs on one node use torchrun; a run
    over several nodes uses torchrun with node 0's stable Pod name (``rendezvous``) as its master."""
    trainer = spec.trainer
    if trainer.command:
        return list(trainer.command), list(trainer.args)
    pool = spec.gpu_pool
    if is_gpu(spec) and pool.nodes_per_run > 1 and rendezvous:
        return (["torchrun", f"--nnodes={pool.nodes_per_run}", f"--nproc_per_node={pool.gpus_per_node}",
                 f"--node_rank=$({COMPLETION_INDEX})", f"--master_addr={rendezvous}",
                 f"--master_port={RENDEZVOUS_PORT}", "--no-python", "flopwise-train", SPEC_PATH], list(trainer.args))
    gpus = pool.gpus_per_run
    if is_gpu(spec) and gpus > 1:
        return (["torchrun", "--standalone", "--nnodes=1", f"--nproc_per_node={gpus}", "--no-python",
                 "flopwise-train", SPEC_PATH], list(trainer.args))
    return ["flopwise-train", SPEC_PATH], list(trainer.args)


def gpus_per_pod(spec: TrainingCampaignSpec) -> int:
    return spec.gpu_pool.gpus_per_run // spec.gpu_pool.nodes_per_run if is_gpu(spec) else 0


def scaled_quantity(quantity: str, factor: int) -> str:
    """``quantity`` × ``factor`` in the same unit ("64Gi" × 8 = "512Gi", "500m" × 2 = "1000m")."""
    match = re.match(r"^([0-9]*\.?[0-9]+)(.*)$", quantity)
    if match is None:
        return quantity
    value = float(match.group(1)) * factor
    number = str(int(value)) if value == int(value) else f"{value:g}"
    return number + match.group(2)


def resources_for(spec: TrainingCampaignSpec) -> dict[str, dict[str, str]]:
    """The trainer's resources. A GPU pool's Pod gets exactly its share of gpusPerRun (what the ledger charges) and,
    unless a request or limit is given, CPU and memory requests per GPU (so it is never BestEffort)."""
    requests = dict(spec.trainer.resources.requests)
    limits = dict(spec.trainer.resources.limits)
    if is_gpu(spec):  # the ledger charges gpusPerRun GPUs: the pods get exactly that many between them
        gpus = gpus_per_pod(spec)
        limits[GPU_RESOURCE] = str(gpus)
        if GPU_RESOURCE in requests:
            requests[GPU_RESOURCE] = str(gpus)
        for name, per_gpu in (("cpu", spec.trainer.cpu_per_gpu), ("memory", spec.trainer.memory_per_gpu)):
            if name not in requests and name not in limits:  # a limit alone is the request (Kubernetes' default)
                requests[name] = scaled_quantity(per_gpu, gpus)
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def shm_size(spec: TrainingCampaignSpec) -> str:
    if spec.trainer.shm_size:
        return spec.trainer.shm_size
    return f"{SHM_PER_GPU_GI * gpus_per_pod(spec)}Gi" if is_gpu(spec) else CPU_SHM


def pod_failure_policy() -> dict[str, Any]:
    """Kubernetes ≥ 1.26: a disrupted Pod (preemption, eviction, node drain: condition DisruptionTarget) is not a
    failure, the Job makes another (it resumes the checkpoint); the trainer's own failure exit codes fail the
    Job at once (the engine decides retries, and charges them)."""
    return {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                      {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                            "values": TRAINER_EXIT_CODES}}]}


def run_config_map(campaign: str, uid: str, namespace: str, record: RunRecord, run_spec: RunSpec,
                   spec: TrainingCampaignSpec | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": config_map_name(campaign, record.run_id), "namespace": namespace,
                     "labels": labels_for(campaign, record), "annotations": annotations_for(campaign, uid, record),
                     "ownerReferences": [owner_reference(campaign, uid)]},
        "data": {SPEC_KEY: run_spec.model_dump_json(by_alias=True, exclude_none=True)},
    }


def run_job(campaign: str, uid: str, namespace: str, record: RunRecord, spec: TrainingCampaignSpec,
            now: float | None = None, *, server: tuple[int, int] | None = None,
            campaign_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The Job of one run. ``server``: the API server's (major, minor), for fields only newer ones have (a
    podFailurePolicy from 1.26); ``campaign_labels``: the campaign's labels, carried to the Job and its Pods."""
    name = job_name(campaign, record.run_id, spec)
    labels = labels_for(campaign, record, spec, campaign_labels)
    annotations = annotations_for(campaign, uid, record)
    nodes = spec.gpu_pool.nodes_per_run if is_gpu(spec) else 1
    service = rendezvous_service_name(campaign, record.run_id) if nodes > 1 else None
    # An Indexed Job's Pod k is named <job>-k and, with the Service as its subdomain, resolves as such.
    command, args = command_for(spec, f"{name}-0.{service}" if service else None)
    volumes: list[dict[str, Any]] = [
        {"name": "run-spec", "configMap": {"name": config_map_name(campaign, record.run_id),
                                           "items": [{"key": SPEC_KEY, "path": SPEC_KEY}]}},
        # On a claim, the campaign's uid is its folder: a deleted namesake's checkpoints are never resumed.
        {"name": "output", "persistentVolumeClaim": {"claimName": spec.trainer.output_claim_name}}
        if spec.trainer.output_claim_name else {"name": "output", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        # NCCL and data loaders use shared memory; a container gets 64 MiB of it by default
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(spec)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "run-spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "output", "mountPath": OUTPUT_ROOT, **({"subPath": uid} if spec.trainer.output_claim_name else {})},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if spec.dataset.claim_name:
        path = spec.dataset.path
        volumes.append({"name": "dataset", "persistentVolumeClaim": {"claimName": spec.dataset.claim_name,
                                                                     "readOnly": True}})
        mounts.append({"name": "dataset", "mountPath": path if path.startswith("/") else DATA_ROOT,
                       "readOnly": True})
    env = [
        {"name": "FLOPWISE_RUN_SPEC_FILE", "value": SPEC_PATH},
        {"name": "FLOPWISE_RUN_ID", "value": record.run_id},
        {"name": "FLOPWISE_TERMINATION_LOG", "value": TERMINATION_LOG},
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if service:  # the node rank, for torchrun (the Job controller sets this annotation on each indexed Pod)
        env.append({"name": COMPLETION_INDEX, "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
    container: dict[str, Any] = {
        "name": CONTAINER, "image": spec.trainer.image, "imagePullPolicy": "IfNotPresent",
        "command": command, "env": env, "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG, "terminationMessagePolicy": "File",
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if args:
        container["args"] = args
    resources = resources_for(spec)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # the trainer checkpoints on SIGTERM (deadline, preemption, suspension): the ledger reserves this too
        "terminationGracePeriodSeconds": spec.trainer.termination_grace_period_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # OnRootMismatch: the output claim is not chowned file by file at every start
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                            "fsGroup": RUN_AS_USER, "fsGroupChangePolicy": "OnRootMismatch",
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if spec.gpu_pool.node_selector:
        pod_spec["nodeSelector"] = dict(spec.gpu_pool.node_selector)
    if spec.gpu_pool.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.gpu_pool.tolerations]
    template: dict[str, Any] = {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}
    if spec.trainer.pod_template:  # the user's overlay; flopwise's labels, annotations and security win
        from flopwise.api.podtemplate import merge

        template = merge(template, spec.trainer.pod_template)
        template["metadata"]["labels"].update(labels)
        template["metadata"]["annotations"].update(annotations)
        pod_spec = template["spec"]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # the engine decides retries, and charges them
        "completions": nodes, "parallelism": nodes,
        "activeDeadlineSeconds": active_deadline_seconds(record, spec, now),
        "template": template,
    }
    if server is not None and server >= POD_FAILURE_POLICY_SINCE:
        job_spec["podFailurePolicy"] = pod_failure_policy()
    if service:
        job_spec["completionMode"] = "Indexed"
        pod_spec["subdomain"] = service
    if spec.gpu_pool.queue_name:
        job_spec["suspend"] = True  # Kueue admits it (the field needs Kubernetes ≥ 1.21; older servers drop it)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations,
                     "ownerReferences": [owner_reference(campaign, uid)]},
        "spec": job_spec,
    }
