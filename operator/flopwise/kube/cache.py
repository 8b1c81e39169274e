"""What the operator's watches have seen, kept small: campaign bodies, and per campaign only the fields of its Jobs
and Pods that decide a run's observation (annotations, Job conditions, Pod phase and termination).

Why: reconciling from this cache costs no API request, so a reconcile that finds nothing new is free, and memory
is a few hundred bytes per Job instead of the client's full objects. The cache is trusted only where a watch can
never be wrong: a run still running, or a Pod terminated with its result (terminal states do not go back). A
verdict of failed, lost or absent is confirmed by listing first (the executor does that).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping
from typing import Any

from flopwise.kube import jobs

CampaignKey = tuple[str, str]  # (namespace, name)
MESSAGE_LIMIT = 4 * 4096  # a termination message is at most 4096 bytes; keep a margin, never more
TOMBSTONE_S = 3600.0  # how long the last state of a deleted Pod whose trainer failed is kept


def get_path(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]…, or None where a step is missing or not a mapping (API objects are sparse)."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _annotations(body: Mapping[str, Any]) -> dict[str, str]:
    kept = (jobs.ANNOTATION_RUN_ID, jobs.ANNOTATION_CAMPAIGN_UID, jobs.ANNOTATION_CAMPAIGN,
            "batch.kubernetes.io/job-completion-index")
    found = get_path(body, "metadata", "annotations") or {}
    return {k: str(found[k]) for k in kept if k in found}


def compact_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Job as `executor.observe_run` reads it: name, annotations, suspension, conditions (with their reason:
    DeadlineExceeded is a cut, not a failure of the run)."""
    conditions = [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason")}
                  for c in get_path(body, "status", "conditions") or []]
    job = {"metadata": {"name": get_path(body, "metadata", "name"), "uid": get_path(body, "metadata", "uid"),
                        "annotations": _annotations(body)},
           "status": {"conditions": conditions}}
    if get_path(body, "spec", "suspend") is True:
        job["spec"] = {"suspend": True}
    return job


def compact_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Pod as `executor.observe_run` reads it: annotations, whether it is being deleted, phase, start time,
    each container's running start or terminated state (the GPU time it held, and its result)."""
    statuses = []
    for status in get_path(body, "status", "containerStatuses") or []:
        terminated = get_path(status, "state", "terminated")
        running = get_path(status, "state", "running")
        state: dict[str, Any] = {}
        if terminated:
            state = {"terminated": {"exitCode": terminated.get("exitCode"),
                                    "message": (terminated.get("message") or "")[:MESSAGE_LIMIT],
                                    "startedAt": terminated.get("startedAt"),
                                    "finishedAt": terminated.get("finishedAt")}}
        elif running:
            state = {"running": {"startedAt": running.get("startedAt")}}
        statuses.append({"name": status.get("name"), "state": state, "imageID": status.get("imageID") or ""})
    meta = {"uid": get_path(body, "metadata", "uid"), "annotations": _annotations(body),
            "labels": {"controller-uid": (get_path(body, "metadata", "labels") or {}).get("controller-uid")}}
    if get_path(body, "metadata", "deletionTimestamp"):
        meta["deletionTimestamp"] = get_path(body, "metadata", "deletionTimestamp")
    return {"metadata": meta,
            "status": {"phase": get_path(body, "status", "phase"), "startTime": get_path(body, "status", "startTime"),
                       "containerStatuses": statuses}}


class RunCache:
    """Thread-safe: kopf's watch handlers write, the reconcile workers read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._campaigns: dict[CampaignKey, dict[str, Any]] = {}
        # campaign uid → run id → Job; campaign uid → run id → Pod uid → Pod
        self._jobs: dict[str, dict[str, dict[str, Any]]] = {}
        self._pods: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        # campaign uid → run id → Pod uid → (when deleted, its last state): a Pod deleted after its trainer failed
        # (a deadline, a preemption: the trainer's SIGTERM report says how far it got) outlives its deletion here
        self._tombstones: dict[str, dict[str, dict[str, tuple[float, dict[str, Any]]]]] = {}

    # -------------------------------------------------------------------------------------------- campaigns
    def put_campaign(self, body: Mapping[str, Any], *, owned: bool = False) -> dict[str, Any]:
        """Stores the body unless an older version than the one held: a deep copy of kopf's (views it may reuse),
        or as is when ``owned`` (a fresh API answer nobody else holds). Stored bodies are never mutated."""
        doc = body if owned and isinstance(body, dict) else copy.deepcopy(dict(body))
        key = (doc["metadata"]["namespace"], doc["metadata"]["name"])
        with self._lock:
            held = self._campaigns.get(key)
            if held is not None and held["metadata"].get("uid") == doc["metadata"].get("uid") and \
                    _newer(held["metadata"].get("resourceVersion"), doc["metadata"].get("resourceVersion")):
                return held
            self._campaigns[key] = doc
        return doc

    def campaign(self, key: CampaignKey) -> dict[str, Any] | None:
        """The latest body, shared and read-only (replaced, never changed in place: copying it on every pass was
        a fifth of the operator's CPU under load)."""
        with self._lock:
            return self._campaigns.get(key)

    def drop_campaign(self, key: CampaignKey) -> None:
        with self._lock:
            body = self._campaigns.pop(key, None)
            if body is not None:
                uid = body["metadata"].get("uid")
                self._jobs.pop(uid, None)
                self._pods.pop(uid, None)
                self._tombstones.pop(uid, None)

    def campaign_keys(self) -> list[CampaignKey]:
        with self._lock:
            return list(self._campaigns)

    # ---------------------------------------------------------------------------------------- Jobs and Pods
    def put_job(self, body: Mapping[str, Any], deleted: bool = False) -> bool:
        """Records a Job event; True when what a run's observation reads has changed."""
        job = compact_job(body)
        uid, run_id = _owner(job)
        if not uid or not run_id:
            return False
        with self._lock:
            runs = self._jobs.setdefault(uid, {})
            held = runs.get(run_id)
            if deleted:
                if held is not None and held["metadata"]["name"] == job["metadata"]["name"]:
                    del runs[run_id]
                    return True
                return False
            runs[run_id] = job
            return held != job

    def put_pod(self, body: Mapping[str, Any], deleted: bool = False) -> bool:
        """Records a Pod event; True when what a run's observation reads has changed."""
        pod = compact_pod(body)
        uid, run_id = _owner(pod)
        pod_uid = pod["metadata"]["uid"]
        if not uid or not run_id or not pod_uid:
            return False
        with self._lock:
            pods = self._pods.setdefault(uid, {}).setdefault(run_id, {})
            if deleted:
                if _failed_report(pod):
                    now = time.monotonic()
                    graves = self._tombstones.setdefault(uid, {})
                    graves.setdefault(run_id, {})[pod_uid] = (now, pod)
                    for run in list(graves):
                        graves[run] = {k: v for k, v in graves[run].items() if now - v[0] < TOMBSTONE_S}
                        if not graves[run]:
                            del graves[run]
                return pods.pop(pod_uid, None) is not None
            held = pods.get(pod_uid)
            pods[pod_uid] = pod
            return held != pod

    def runs_of(self, campaign_uid: str) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """(run id → Job, run id → Pods) as seen by the watches; the views are shared and read-only."""
        with self._lock:
            found_jobs = dict(self._jobs.get(campaign_uid, {}))
            found_pods = {run: list(pods.values()) for run, pods in self._pods.get(campaign_uid, {}).items() if pods}
        return found_jobs, found_pods

    def tombstones_of(self, campaign_uid: str) -> dict[str, list[dict[str, Any]]]:
        """run id → the last state of its deleted Pods whose trainer failed (marked deleted)."""
        with self._lock:
            graves = self._tombstones.get(campaign_uid, {})
            return {run: [_buried(pod) for _, pod in pods.values()] for run, pods in graves.items()}


def _failed_report(pod: dict[str, Any]) -> bool:
    statuses = get_path(pod, "status", "containerStatuses") or []
    return any(get_path(c, "state", "terminated", "exitCode") not in (None, 0) and
               get_path(c, "state", "terminated", "message") for c in statuses)


def _buried(pod: dict[str, Any]) -> dict[str, Any]:
    meta = dict(pod["metadata"])
    meta.setdefault("deletionTimestamp", "deleted")
    return {**pod, "metadata": meta}


def _owner(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    annotations = obj["metadata"]["annotations"]
    return annotations.get(jobs.ANNOTATION_CAMPAIGN_UID), annotations.get(jobs.ANNOTATION_RUN_ID)


def _newer(held: Any, incoming: Any) -> bool:
    """Is the held resourceVersion newer than the incoming one? Kubernetes says resourceVersions are opaque, but
    etcd's are integers; compare only then, else take the incoming body."""
    try:
        return int(held) > int(incoming)
    except (TypeError, ValueError):
        return False
