"""The Kubernetes executor: each run is a Job (plus a ConfigMap holding its RunSpec), owned by the campaign.

It mirrors the local executor. Launching is idempotent on the run id: the Job's name is derived from it, so a
create answered 409 AlreadyExists means the Job is already there (made by an earlier incarnation of the
operator) and is adopted. Observing maps Jobs and Pods to the engine's observations:

* a Pod whose container terminated → its termination message (a RunSummary) decides succeeded or failed;
  a garbled message → failed with no summary (the reservation is charged, nothing is trusted);
* a Job that is Failed without any Pod result (deadline exceeded, Pod evicted or deleted) → failed;
* a Job that exists otherwise (active, pending, suspended) → running;
* no Job: if the run's ConfigMap exists the Job was created and has vanished (deleted by hand) → lost,
  else it was never created (the operator stopped between persisting the status and launching) → absent;
  a Job the API server refused with 403 (RBAC) was never created either → absent (launched again once the
  permission is granted, nothing charged).

Observing reads the operator's watch cache first (no API request). Only "still running" and "finished with a
result" are taken from it; anything else (failed, lost, absent) is confirmed by listing the campaign's Jobs, Pods
and ConfigMaps, because a watch may lag (a Job's Complete can be seen before its Pod's termination message).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import RunRecord
from flopwise.contract import RunSpec, RunSummary
from flopwise.engine.machine import Observation
from flopwise.kube import jobs, metrics
from flopwise.kube.cache import MESSAGE_LIMIT, RunCache, get_path

log = logging.getLogger("flopwise.kube")


@dataclass
class Snapshot:
    """The campaign's Jobs, Pods and ConfigMaps as listed once, keyed by the exact run id."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    config_maps: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)  # run id → why the API server refused its Job
    forbidden: set[str] = field(default_factory=set)  # run ids whose Job create was refused for permission


def _condition(job: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in get_path(job, "status", "conditions") or [])


def terminated_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in get_path(pod, "status", "containerStatuses") or []:
        if status.get("name") == jobs.CONTAINER or len(get_path(pod, "status", "containerStatuses")) == 1:
            terminated = get_path(status, "state", "terminated")
            if terminated:
                return terminated
    return None


def completion_index(pod: dict[str, Any]) -> int:
    """A Pod's node rank in a multi-node (Indexed) Job; 0 for an ordinary Job's only Pod."""
    value = (get_path(pod, "metadata", "annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
    return int(value) if str(value).isdigit() else 0


def observe_run(run_id: str, snapshot: Snapshot) -> Observation:
    """The pure mapping from what the API server holds about one run to the engine's observation. Over several
    nodes only node 0 writes the result; another node's Pod matters only when it fails."""
    pods = sorted(snapshot.pods.get(run_id, []), key=completion_index)
    for pod in pods:
        terminated = terminated_of(pod)
        if completion_index(pod) > 0 and terminated is not None and terminated.get("exitCode") != 0:
            return Observation(run_id, "failed", None)  # a worker node died: the run's result is lost with it
    # A Pod deleted while it ran (by hand, the eviction API, a drain) stops with SIGTERM: it checkpoints and reports
    # a failure. But the Job controller no longer counts it as active and has started a replacement at once, which
    # resumes the run's checkpoint; that Pod's failure then never fails the Job (it is not the last one standing).
    # So while the Job has not failed, a deleted Pod's failure is not the run's result: the run goes on in the
    # replacement, which reports the whole run (seen on a real node, tests/test_node_faults.py). A Pod that exited
    # 0 is read first, so a result is never lost behind another Pod's failure.
    job = snapshot.jobs.get(run_id)
    replaced = job is not None and not _condition(job, "Failed")
    pods = [p for p in pods if not (replaced and _deleted(p) and (terminated_of(p) or {}).get("exitCode") != 0)]
    for pod in sorted(pods, key=lambda p: (terminated_of(p) or {}).get("exitCode") != 0):
        if completion_index(pod) > 0:
            continue
        terminated = terminated_of(pod)
        if terminated is None:
            continue
        message = terminated.get("message") or ""
        try:
            summary = RunSummary.from_message(message[:MESSAGE_LIMIT])
        except ValueError:  # garbled or absent: charged its reservation; the kubelet's words say why
            return Observation(run_id, "failed", None, _container_reason(terminated, message))
        ok = terminated.get("exitCode") == 0 and summary.status == "succeeded"
        return Observation(run_id, "succeeded" if ok else "failed", summary)
    if job is None and run_id in snapshot.rejected:  # never ran: nothing consumed, the engine may retry it
        return Observation(run_id, "failed", RunSummary(run_id=run_id, status="failed",
                                                        exit_reason=snapshot.rejected[run_id][:512]))
    if job is not None:
        if _condition(job, "Failed"):
            return Observation(run_id, "failed", None, _job_failure(job))
        if _condition(job, "Complete"):  # complete but its Pod is gone: the result cannot be read
            return Observation(run_id, "failed", None, "the Job completed but its Pod is gone")
        for pod in pods:
            if get_path(pod, "status", "phase") == "Failed":  # evicted or killed before a container status
                return Observation(run_id, "failed", None, _pod_failure(pod))
        return Observation(run_id, "running")
    if run_id in snapshot.config_maps and run_id not in snapshot.forbidden:
        return Observation(run_id, "lost")
    return Observation(run_id, "absent")


def _deleted(pod: dict[str, Any]) -> bool:
    return bool(get_path(pod, "metadata", "deletionTimestamp"))


def _container_reason(terminated: dict[str, Any], message: str) -> str:
    """The kubelet's account of a container that left no readable summary, e.g. 'container OOMKilled (exit code
    137)'."""
    text = f"container {terminated.get('reason') or 'terminated'} (exit code {terminated.get('exitCode')})"
    return text + (", its termination message is not a run summary" if message.strip() else "")


def _job_failure(job: dict[str, Any]) -> str:
    """The Job controller's reason, e.g. 'Job DeadlineExceeded: Job was active longer than specified deadline'."""
    for c in get_path(job, "status", "conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return f"Job {c.get('reason') or 'Failed'}: {c.get('message') or ''}".strip(": ")[:512]
    return "Job failed"


def _pod_failure(pod: dict[str, Any]) -> str:
    reason, message = get_path(pod, "status", "reason"), get_path(pod, "status", "message")
    return f"Pod {reason or 'Failed'}{': ' + message if message else ''}"[:512]


def _reason(error: Any) -> str:
    import json

    try:
        return str(json.loads(error.body).get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


def _to_dict(api: Any, obj: Any) -> dict[str, Any]:
    return api.api_client.sanitize_for_serialization(obj)


class KubernetesExecutor:
    """Jobs for one campaign in one namespace. ``core`` and ``batch`` are kubernetes client APIs."""

    def __init__(self, core: Any, batch: Any, *, namespace: str, campaign: str, uid: str,
                 spec: TrainingCampaignSpec, rejected: dict[str, str] | None = None,
                 forbidden: set[str] | None = None, cache: RunCache | None = None):
        self.core, self.batch = core, batch
        self.namespace, self.campaign, self.uid, self.spec = namespace, campaign, uid, spec
        # Jobs the API server refused as invalid or forbidden (kept by the caller across reconciles; in memory
        # only: after a restart the run is simply launched again, and refused again)
        self.rejected = rejected if rejected is not None else {}
        self.forbidden = forbidden if forbidden is not None else set()
        self.cache = cache
        self.listed = False  # did the last observe list from the API server (for tests and the benchmark)

    # ------------------------------------------------------------------------------------------- observe
    def snapshot(self) -> Snapshot:
        selector = jobs.campaign_selector(self.campaign)
        snap = Snapshot(rejected=dict(self.rejected), forbidden=set(self.forbidden))
        for job in self.batch.list_namespaced_job(self.namespace, label_selector=selector).items:
            job = _to_dict(self.batch, job)
            if self._ours(job):
                snap.jobs[job["metadata"]["annotations"][jobs.ANNOTATION_RUN_ID]] = job
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items:
            pod = _to_dict(self.core, pod)
            if self._ours(pod):
                snap.pods.setdefault(pod["metadata"]["annotations"][jobs.ANNOTATION_RUN_ID], []).append(pod)
        for cm in self.core.list_namespaced_config_map(self.namespace, label_selector=selector).items:
            cm = _to_dict(self.core, cm)
            if self._ours(cm):
                snap.config_maps.add(cm["metadata"]["annotations"][jobs.ANNOTATION_RUN_ID])
        return snap

    def _ours(self, obj: dict[str, Any]) -> bool:
        """Made for this campaign object (not a deleted namesake whose Jobs are still being collected)."""
        annotations = get_path(obj, "metadata", "annotations") or {}
        return annotations.get(jobs.ANNOTATION_CAMPAIGN_UID) == self.uid and jobs.ANNOTATION_RUN_ID in annotations

    def cached_snapshot(self) -> Snapshot | None:
        if self.cache is None:
            return None
        found_jobs, found_pods = self.cache.runs_of(self.uid)
        return Snapshot(jobs=found_jobs, pods=found_pods, rejected=dict(self.rejected), forbidden=set(self.forbidden))

    def observe(self, records: list[RunRecord]) -> list[Observation]:
        running = [r for r in records if r.state == "Running"]
        self.listed = False
        if not running:
            return []
        cached = self.cached_snapshot()
        if cached is not None:
            seen = [observe_run(r.run_id, cached) for r in running]
            if all(o.state == "running" or (o.state == "succeeded" and o.summary is not None) for o in seen):
                return seen
        self.listed = True
        snap = self.snapshot()
        observations = [observe_run(r.run_id, snap) for r in running]
        metrics.count_failed_jobs(self.uid, observations, refused=snap.rejected)
        return observations

    # -------------------------------------------------------------------------------------------- launch
    def launch(self, record: RunRecord, spec: RunSpec) -> bool:
        """Create the RunSpec ConfigMap, then the Job; an existing one is adopted. True when a Job was created."""
        from kubernetes.client.exceptions import ApiException

        cm = jobs.run_config_map(self.campaign, self.uid, self.namespace, record, spec)
        try:
            self.core.create_namespaced_config_map(self.namespace, cm, _preload_content=False)
        except ApiException as error:
            if error.status != 409:
                raise
        if jobs.is_gpu(self.spec) and self.spec.gpu_pool.nodes_per_run > 1:  # rendezvous for the Indexed Job
            try:
                self.core.create_namespaced_service(
                    self.namespace, jobs.rendezvous_service(self.campaign, self.uid, self.namespace, record))
            except ApiException as error:
                if error.status != 409:
                    raise
        job = jobs.run_job(self.campaign, self.uid, self.namespace, record, self.spec)
        try:
            # the raw answer: the client's model objects cost more CPU than the create itself under load
            created = json.loads(self.batch.create_namespaced_job(self.namespace, job, _preload_content=False).data)
        except ApiException as error:
            if error.status == 403:  # RBAC: not a fault of the run; launched again once permitted
                self.forbidden.add(record.run_id)
                raise
            if error.status in (400, 422):  # invalid: retrying the same manifest cannot help
                self.rejected[record.run_id] = f"Job rejected by the API server: {_reason(error)}"
                log.warning("run %s: %s", record.run_id, self.rejected[record.run_id])
                return False
            if error.status != 409:
                raise
            log.info("adopted Job %s/%s for run %s", self.namespace, job["metadata"]["name"], record.run_id)
            return False
        self.forbidden.discard(record.run_id)
        metrics.job_created()
        if self.cache is not None:  # known at once, not when the watch brings it: the next pass lists nothing
            self.cache.put_job(created)
        log.info("created Job %s/%s for run %s", self.namespace, job["metadata"]["name"], record.run_id)
        return True

    def cancel(self, run_id: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(jobs.job_name(self.campaign, run_id), self.namespace,
                                             propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise
