"""The Kubernetes executor: each run is a Job (plus a ConfigMap holding its RunSpec), owned by the campaign.

It mirrors the local executor. Launching is idempotent on the run id: the Job's name is derived from it, so a
create answered 409 AlreadyExists means the Job is already there (made by an earlier incarnation of the
operator) and is adopted. Observing maps Jobs and Pods to the engine's observations:

* a suspended Job (`spec.suspend`, or its `Suspended` condition: Kueue has not admitted it, or preempted it) →
  queued, whatever its Pods reported (a preempted trainer's "terminated by SIGTERM" is no failure);
* a Pod whose container terminated → its termination message (a RunSummary) decides succeeded or failed;
  a garbled message → failed with no summary (the reservation is charged, nothing is trusted). A Pod being
  deleted (eviction, deletion, suspension) decides nothing: its Job makes another, or fails;
* a Job that is Failed (deadline exceeded, Pod evicted or deleted) → failed, with the Pod's report if one is left,
  and ``cut`` set when its deadline stopped it;
* a Job that exists otherwise (active, pending) → running;
* no Job: if the run's ConfigMap exists the Job was created and has vanished (deleted by hand) → lost,
  else it was never created (the operator stopped between persisting the status and launching) → absent;
  a Job the API server refused with 403 (RBAC) was never created either → absent (launched again once the
  permission is granted, nothing charged).

Every observation carries the GPU time of each started Pod (from its start to its end: what the run is charged,
whatever its report says). Observing reads the operator's watch cache first (no API request). Only "still
running", "queued" and "finished with a result" are taken from it; anything else (failed, lost, absent) is
confirmed by listing the campaign's Jobs, Pods and ConfigMaps, because a watch may lag (a Job's Complete can be
seen before its Pod's termination message).

Besides launching, the executor stops runs: `cancel` deletes the Job (background propagation: its Pods get
SIGTERM and their grace period); `suspend` sets the Job's `spec.suspend` where the server has it and Kueue does
not own the Job, else deletes it (the checkpoint stays on the output claim); `resume` undoes either; `rearm`
lowers a preempted Job's deadline to what is left of its reservation.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import LIVE_STATES, RunRecord
from flopwise.contract import RunSpec, RunSummary
from flopwise.engine.machine import Observation, PodUsage
from flopwise.kube import jobs, metrics
from flopwise.kube.cache import MESSAGE_LIMIT, RunCache, get_path

log = logging.getLogger("flopwise.kube")

STUCK_AFTER_S = 30.0  # a Pod still there this long past its deletionTimestamp (its node is gone) holds no GPU


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


def _condition_reason(job: dict[str, Any], kind: str) -> str | None:
    for c in get_path(job, "status", "conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c.get("reason") or None
    return None


def job_suspended(job: dict[str, Any]) -> bool:
    """Suspended by Kueue or by us: `spec.suspend` (Kubernetes ≥ 1.21), or the `Suspended` condition the Job
    controller writes for it."""
    return get_path(job, "spec", "suspend") is True or _condition(job, "Suspended")


def timestamp(value: Any) -> float | None:
    """Seconds since the epoch of an API timestamp (RFC 3339 text, or a datetime from the client's models)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def terminated_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in get_path(pod, "status", "containerStatuses") or []:
        if status.get("name") == jobs.CONTAINER or len(get_path(pod, "status", "containerStatuses")) == 1:
            terminated = get_path(status, "state", "terminated")
            if terminated:
                return terminated
    return None


def deleting(pod: dict[str, Any]) -> bool:
    return bool(get_path(pod, "metadata", "deletionTimestamp"))


def pod_usage(pod: dict[str, Any], gpus: int, now: float) -> PodUsage | None:
    """The GPU time a Pod holds: from its start (the kubelet took it; else its container's start) to its end (its
    container's end; its terminal phase without one; or its deletionTimestamp, once it is long past: a Pod stuck
    Terminating on a lost node runs nothing). None before it starts: a pending Pod holds no GPU."""
    status = get_path(pod, "status") or {}
    starts = [timestamp(status.get("startTime"))]
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        starts += [timestamp(get_path(state, "running", "startedAt")),
                   timestamp(get_path(state, "terminated", "startedAt"))]
    known = [t for t in starts if t is not None]
    if not known:
        return None
    start = min(known)
    end = None
    terminated = terminated_of(pod)
    if terminated is not None:
        end = timestamp(terminated.get("finishedAt")) or now
    elif status.get("phase") in ("Succeeded", "Failed"):
        end = now
    else:
        gone = timestamp(get_path(pod, "metadata", "deletionTimestamp"))
        if gone is not None and now > gone + STUCK_AFTER_S:
            end = gone
    uid = str(get_path(pod, "metadata", "uid") or "")
    return PodUsage(uid=uid, gpus=gpus, started_at=start, finished_at=None if end is None else max(start, end))


def image_digest(pod: dict[str, Any]) -> str | None:
    """The trainer image's digest as the kubelet reports it (`imageID`: `docker-pullable://repo@sha256:…`,
    `repo@sha256:…` or `sha256:…`), or None where the Pod status shows none."""
    for status in get_path(pod, "status", "containerStatuses") or []:
        if status.get("name") == jobs.CONTAINER:
            image_id = str(status.get("imageID") or "")
            at = image_id.rfind("sha256:")
            if at >= 0 and len(image_id) - at >= 71:
                return image_id[at:at + 71]
    return None


def completion_index(pod: dict[str, Any]) -> int:
    """A Pod's node rank in a multi-node (Indexed) Job; 0 for an ordinary Job's only Pod."""
    value = (get_path(pod, "metadata", "annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
    return int(value) if str(value).isdigit() else 0


def _summary_of(terminated: dict[str, Any]) -> RunSummary | None:
    try:
        return RunSummary.from_message((terminated.get("message") or "")[:MESSAGE_LIMIT])
    except ValueError:
        return None  # garbled or absent: nothing of it is trusted


def observe_run(run_id: str, snapshot: Snapshot, *, gpus_per_pod: int = 1, now: float | None = None) -> Observation:
    """The pure mapping from what the API server holds about one run to the engine's observation. Over several
    nodes only node 0 writes the result; another node's Pod matters only when it fails."""
    now = time.time() if now is None else now
    pods = sorted(snapshot.pods.get(run_id, []), key=completion_index)
    usage = tuple(u for u in (pod_usage(p, gpus_per_pod, now) for p in pods) if u is not None)

    digest = next((d for d in (image_digest(p) for p in reversed(pods)) if d), None)

    def seen(state: str, summary: RunSummary | None = None, cut: str | None = None, reason: str = "") -> Observation:
        return Observation(run_id, state, summary, pods=usage, cut=cut,  # type: ignore[arg-type]
                           image_digest=digest, reason=reason)

    job = snapshot.jobs.get(run_id)
    ended = job is not None and (_condition(job, "Failed") or _condition(job, "Complete"))
    if job is not None and job_suspended(job) and not ended:
        return seen("queued")
    current = [p for p in pods if not deleting(p)]
    for pod in current:
        terminated = terminated_of(pod)
        if completion_index(pod) > 0 and terminated is not None and terminated.get("exitCode") != 0:
            return seen("failed")  # a worker node died: the run's result is lost with it
    for pod in current:
        if completion_index(pod) > 0:
            continue
        terminated = terminated_of(pod)
        if terminated is None:
            continue
        summary = _summary_of(terminated)
        if summary is None:  # garbled or absent: charged its reservation; the kubelet's words say why
            return seen("failed", reason=_container_reason(terminated, terminated.get("message") or ""))
        ok = terminated.get("exitCode") == 0 and summary.status == "succeeded"
        return seen("succeeded" if ok else "failed", summary)
    if job is None and run_id in snapshot.rejected:  # never ran: nothing consumed, the engine may retry it
        return seen("failed", RunSummary(run_id=run_id, status="failed", exit_reason=snapshot.rejected[run_id][:512]))
    if job is not None:
        if ended:  # failed (deadline, evicted Pod), or complete with its Pod gone: a report left is still read
            mine = get_path(job, "metadata", "uid")
            left = sorted((t for t in (terminated_of(p) for p in pods if completion_index(p) == 0 and (
                not mine or (get_path(p, "metadata", "labels") or {}).get("controller-uid") in (None, mine)))
                if t is not None), key=lambda t: timestamp(t.get("finishedAt")) or 0.0)
            summary = _summary_of(left[-1]) if left else None
            if _condition(job, "Complete") and summary is not None and summary.status == "succeeded" \
                    and left[-1].get("exitCode") == 0:
                return seen("succeeded", summary)
            reason = _condition_reason(job, "Failed")
            why = _job_failure(job) if _condition(job, "Failed") else "the Job completed but its Pod is gone"
            return seen("failed", summary, cut=reason if reason == "DeadlineExceeded" else None, reason=why)
        for pod in current:
            if get_path(pod, "status", "phase") == "Failed":  # evicted or killed before a container status
                return seen("failed", reason=_pod_failure(pod))
        return seen("running")
    if run_id in snapshot.config_maps and run_id not in snapshot.forbidden:
        return seen("lost")
    return seen("absent")


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


def _raw(response: Any) -> dict[str, Any]:
    """The JSON body of a call made with ``_preload_content=False``, its connection handed back to the pool. Without
    the release urllib3 keeps the socket out of the pool, so every create opened a new TLS connection: 540 in 30 s
    at 100 campaigns, 6 % of the API server's CPU spent on handshakes."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def _to_dict(api: Any, obj: Any) -> dict[str, Any]:
    return api.api_client.sanitize_for_serialization(obj)


class KubernetesExecutor:
    """Jobs for one campaign in one namespace. ``core`` and ``batch`` are kubernetes client APIs."""

    def __init__(self, core: Any, batch: Any, *, namespace: str, campaign: str, uid: str,
                 spec: TrainingCampaignSpec, rejected: dict[str, str] | None = None,
                 forbidden: set[str] | None = None, cache: RunCache | None = None, trust_cache: bool = True,
                 server: tuple[int, int] | None = None, campaign_labels: dict[str, str] | None = None):
        self.core, self.batch = core, batch
        self.namespace, self.campaign, self.uid, self.spec = namespace, campaign, uid, spec
        # Jobs the API server refused as invalid or forbidden (kept by the caller across reconciles; in memory
        # only: after a restart the run is simply launched again, and refused again)
        self.rejected = rejected if rejected is not None else {}
        self.forbidden = forbidden if forbidden is not None else set()
        self.cache = cache
        self.trust_cache = trust_cache  # False: observe by listing (the periodic resync), the cache only adds graves
        self.server = server  # the API server's (major, minor): fields only newer servers have
        self.campaign_labels = campaign_labels or {}
        self.listed = False  # did the last observe list from the API server (for tests and the benchmark)

    # ------------------------------------------------------------------------------------------- observe
    def snapshot(self) -> Snapshot:
        """The campaign's Jobs, Pods and ConfigMaps listed. The periodic resync (the cache not trusted) reads the
        API server's watch cache (resourceVersion=0: no etcd quorum read for a hundred campaigns a minute);
        confirming a failure, a loss or an absence reads etcd."""
        selector = jobs.campaign_selector(self.campaign)
        snap = Snapshot(rejected=dict(self.rejected), forbidden=set(self.forbidden))
        listing: dict[str, Any] = {"label_selector": selector}
        if not self.trust_cache:
            listing["resource_version"] = "0"
        for job in self.batch.list_namespaced_job(self.namespace, **listing).items:
            job = _to_dict(self.batch, job)
            if self._ours(job):
                snap.jobs[job["metadata"]["annotations"][jobs.ANNOTATION_RUN_ID]] = job
        for pod in self.core.list_namespaced_pod(self.namespace, **listing).items:
            pod = _to_dict(self.core, pod)
            if self._ours(pod):
                snap.pods.setdefault(pod["metadata"]["annotations"][jobs.ANNOTATION_RUN_ID], []).append(pod)
        for cm in self.core.list_namespaced_config_map(self.namespace, **listing).items:
            cm = _to_dict(self.core, cm)
            if self._ours(cm):
                snap.config_maps.add(cm["metadata"]["annotations"][jobs.ANNOTATION_RUN_ID])
        if self.cache is not None:  # a deleted Pod's failure report (how far a stopped trainer got) is not listed
            for run_id, graves in self.cache.tombstones_of(self.uid).items():
                listed = {get_path(p, "metadata", "uid") for p in snap.pods.get(run_id, [])}
                snap.pods.setdefault(run_id, []).extend(g for g in graves if g["metadata"]["uid"] not in listed)
        return snap

    def _ours(self, obj: dict[str, Any]) -> bool:
        """Made for this campaign object (not a deleted namesake whose Jobs are still being collected)."""
        annotations = get_path(obj, "metadata", "annotations") or {}
        return annotations.get(jobs.ANNOTATION_CAMPAIGN_UID) == self.uid and jobs.ANNOTATION_RUN_ID in annotations

    def cached_snapshot(self) -> Snapshot | None:
        if self.cache is None or not self.trust_cache:
            return None
        found_jobs, found_pods = self.cache.runs_of(self.uid)
        for run_id, graves in self.cache.tombstones_of(self.uid).items():
            found_pods[run_id] = found_pods.get(run_id, []) + graves
        return Snapshot(jobs=found_jobs, pods=found_pods, rejected=dict(self.rejected), forbidden=set(self.forbidden))

    def gpus_per_pod(self) -> int:
        if self.spec is None:  # observing only (no spec at hand): a Pod's time counts once
            return 1
        pool = self.spec.gpu_pool
        return max(1, pool.gpus_per_run // pool.nodes_per_run) if jobs.is_gpu(self.spec) else pool.gpus_per_run

    def observe(self, records: list[RunRecord]) -> list[Observation]:
        live = [r for r in records if r.state in LIVE_STATES]
        self.listed = False
        if not live:
            return []
        now, gpus = time.time(), self.gpus_per_pod()
        cached = self.cached_snapshot()
        if cached is not None:
            seen = [observe_run(r.run_id, cached, gpus_per_pod=gpus, now=now) for r in live]
            if all(o.state in ("running", "queued") or (o.state == "succeeded" and o.summary is not None)
                   for o in seen):
                return seen
        self.listed = True
        snap = self.snapshot()
        observations = [observe_run(r.run_id, snap, gpus_per_pod=gpus, now=now) for r in live]
        metrics.count_failed_jobs(self.uid, observations, refused=snap.rejected)
        return observations

    # -------------------------------------------------------------------------------------------- launch
    def write_config_map(self, record: RunRecord, spec: RunSpec) -> None:
        """The run's RunSpec ConfigMap. One left by an earlier attempt at this run (a pass whose status write failed
        after it, see Reconciler._step) is replaced, not adopted: the run recorded since may differ."""
        from kubernetes.client.exceptions import ApiException

        cm = jobs.run_config_map(self.campaign, self.uid, self.namespace, record, spec)
        try:
            _raw(self.core.create_namespaced_config_map(self.namespace, cm, _preload_content=False))
        except ApiException as error:
            if error.status != 409:
                raise
            _raw(self.core.replace_namespaced_config_map(cm["metadata"]["name"], self.namespace, cm,
                                                         _preload_content=False))

    def launch(self, record: RunRecord, spec: RunSpec, *, config_map_written: bool = False) -> bool:
        """Create the RunSpec ConfigMap (unless already written), then the Job; an existing Job is adopted. True when
        a Job was created."""
        from kubernetes.client.exceptions import ApiException

        if not config_map_written:
            self.write_config_map(record, spec)
        if jobs.is_gpu(self.spec) and self.spec.gpu_pool.nodes_per_run > 1:  # rendezvous for the Indexed Job
            try:
                self.core.create_namespaced_service(
                    self.namespace, jobs.rendezvous_service(self.campaign, self.uid, self.namespace, record,
                                                            self.spec))
            except ApiException as error:
                if error.status != 409:
                    raise
        job = jobs.run_job(self.campaign, self.uid, self.namespace, record, self.spec, server=self.server,
                           campaign_labels=self.campaign_labels)
        try:
            # the raw answer: the client's model objects cost more CPU than the create itself under load
            created = _raw(self.batch.create_namespaced_job(self.namespace, job, _preload_content=False))
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

    # ----------------------------------------------------------------------------------------- stopping
    def cancel(self, run_id: str) -> None:
        """Stop a run for good: delete its Job; background propagation lets the garbage collector stop its Pods
        (SIGTERM, then their grace period). An absent Job is fine."""
        from kubernetes.client.exceptions import ApiException

        name = jobs.job_name(self.campaign, run_id, self.spec)
        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
            log.info("deleted Job %s/%s of run %s", self.namespace, name, run_id)
        except ApiException as error:
            if error.status != 404:
                raise

    def remove_config_map(self, run_id: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_config_map(jobs.config_map_name(self.campaign, run_id), self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def remove(self, run_id: str) -> None:
        """A finished run whose result is in the status (spec.cleanup): its Job (its Pods by background
        propagation), its ConfigMap and, for a multi-node run, its rendezvous Service."""
        from kubernetes.client.exceptions import ApiException

        self.cancel(run_id)
        self.remove_config_map(run_id)
        if jobs.is_gpu(self.spec) and self.spec.gpu_pool.nodes_per_run > 1:
            try:
                self.core.delete_namespaced_service(jobs.rendezvous_service_name(self.campaign, run_id),
                                                    self.namespace)
            except ApiException as error:
                if error.status != 404:
                    raise

    def suspend(self, run_id: str, *, server_suspends: bool) -> None:
        """Stop a run for now (spec.suspend): set its Job's `spec.suspend` (the Job controller stops its Pods, the
        trainer checkpoints on SIGTERM) where the server has the field and Kueue does not own the Job (Kueue would
        admit it again); else delete the Job (its checkpoint stays on the output claim; `resume` creates it
        again)."""
        from kubernetes.client.exceptions import ApiException

        if not server_suspends or self.spec.gpu_pool.queue_name:
            self.cancel(run_id)
            return
        try:
            self.batch.patch_namespaced_job(jobs.job_name(self.campaign, run_id, self.spec), self.namespace,
                                            {"spec": {"suspend": True}})
        except ApiException as error:
            if error.status != 404:
                raise

    def resume(self, record: RunRecord, spec: RunSpec) -> bool:
        """Let a suspended run go on: a Job we suspended is resumed with what is left of its reservation as its
        deadline; a deleted one is created again (the trainer resumes from its checkpoint on the output claim).
        True when a Job was created."""
        from kubernetes.client.exceptions import ApiException

        name = jobs.job_name(self.campaign, record.run_id, self.spec)
        try:
            job = _to_dict(self.batch, self.batch.read_namespaced_job(name, self.namespace))
        except ApiException as error:
            if error.status != 404:
                raise
            return self.launch(record, spec)
        patch: dict[str, Any] = {"activeDeadlineSeconds": jobs.active_deadline_seconds(record, self.spec)}
        if get_path(job, "spec", "suspend") is True and not self.spec.gpu_pool.queue_name:
            patch["suspend"] = False
        self.batch.patch_namespaced_job(name, self.namespace, {"spec": patch})
        return False

    def rearm(self, record: RunRecord) -> None:
        """A run used part of its reservation before its Job's deadline clock (re)started (the Job controller
        restarts it when a suspended Job resumes): the deadline becomes what is left. A queued Job's clock starts
        when it is admitted; a running one's started at its status.startTime, whose own Pods the deadline bounds."""
        from kubernetes.client.exceptions import ApiException

        name = jobs.job_name(self.campaign, record.run_id, self.spec)
        try:
            job = _to_dict(self.batch, self.batch.read_namespaced_job(name, self.namespace))
            since = None if job_suspended(job) else timestamp(get_path(job, "status", "startTime"))
            self.batch.patch_namespaced_job(name, self.namespace, {"spec": {
                "activeDeadlineSeconds": jobs.active_deadline_seconds(record, self.spec, since=since)}})
        except ApiException as error:
            if error.status != 404:
                raise
