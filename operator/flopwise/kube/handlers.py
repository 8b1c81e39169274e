"""kopf wiring, kept thin: watch events fill the cache and mark campaigns dirty; worker threads reconcile them.

* a campaign's events (the initial listing, creation, spec edits, deletion) → its cached body, and a mark —
  except the echo of our own status write, which is no news;
* a Job's or Pod's events → the small view the executor needs, and a mark on its campaign when that view changed
  (a Pod being scheduled changes nothing a run's observation reads);
* no timers: nothing is polled. A slow resync marks active campaigns once a minute and makes their next pass list
  from the API server, in case a watch ever missed a deletion.

Only `on.event` handlers are used, so kopf writes nothing on the campaigns (no finalizer, no annotations): the
status belongs to flopwise, deleting a campaign is the garbage collector's business (owner references), and a
second replica is held back by leader election (leader.py), not by kopf's peering.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import kopf

from flopwise.api.spec import GROUP, PLURAL, VERSION
from flopwise.kube import jobs, metrics
from flopwise.kube.cache import CampaignKey, RunCache
from flopwise.kube.leader import LeaderElection
from flopwise.kube.reconciler import (  # noqa: F401 - re-exported: what tests and tools import from here
    SETTINGS,
    Reconciler,
    Settings,
    is_active,
    merge_patch,
    status_document,
)
from flopwise.kube.workqueue import NORMAL, URGENT, WorkQueue

log = logging.getLogger("flopwise.operator")

RESYNC_S = 60.0

CACHE = RunCache()
RECONCILER = Reconciler(CACHE)
ELECTION: LeaderElection | None = None


def _may_act() -> bool:
    return ELECTION is None or ELECTION.is_leader()


def _serve(key: Any) -> None:
    started = time.perf_counter()
    failed = True
    try:
        status = RECONCILER.reconcile(key)
        failed = False
    finally:
        metrics.observe_reconcile(time.perf_counter() - started, failed)
    if status is not None and CACHE.campaign(key) is not None:  # deleted meanwhile: its series stay gone
        metrics.observe_campaign(key[0], key[1], status)


QUEUE = WorkQueue(_serve, gate=_may_act, on_depth=metrics.observe_queue)
RECONCILER.requeue = QUEUE.add
RECONCILER.requeue_after = QUEUE.add_after
RECONCILER.events.hold = QUEUE.urgent  # Events wait while new campaigns wait for their first pass


def _resync() -> None:
    """Once a minute: active campaigns are reconciled from a fresh listing (a watch may have missed a deletion)."""
    while True:
        time.sleep(RESYNC_S)
        for key in CACHE.campaign_keys():
            body = CACHE.campaign(key)
            if body is not None and is_active(body):
                RECONCILER.verify_next(key)
                QUEUE.add(key)


def _fit_done(owner: str) -> None:
    """A fit finished in the pool: its campaign's next pass uses it."""
    namespace, _, name = owner.partition("/")
    if namespace and name:
        QUEUE.add((namespace, name))


def _leadership(leading: bool) -> None:
    metrics.leadership_changed(leading)
    if leading:  # everything may have changed while another replica acted: look at every campaign
        for key in CACHE.campaign_keys():
            QUEUE.add(key)
    QUEUE.wake()


# ------------------------------------------------------------------------------------------------ kopf
class NoDiffBase(kopf.DiffBaseStorage):
    """No essence kept: with on.event handlers only, kopf never diffs a campaign, yet its default storage deep-copies
    every event's body, status and all, to build one (4 % of the operator's CPU at 40 campaigns, py-spy)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global ELECTION
    settings.posting.level = logging.WARNING  # the engine's own events are posted by the reconciler
    settings.scanning.disabled = not SETTINGS.scanning
    settings.persistence.diffbase_storage = NoDiffBase()
    RECONCILER.apis()  # the client's API modules import lazily (a second of CPU): not on the first apply's path
    if SETTINGS.fit_workers > 0:  # fits off the GIL: a pass that needs a fit asks the pool and goes on
        from flopwise.kube.fitpool import FitPool

        pool = FitPool(SETTINGS.fit_workers, on_done=_fit_done)
        pool.start()
        RECONCILER.fits = pool
    QUEUE.start(SETTINGS.workers, urgent_workers=SETTINGS.workers)
    threading.Thread(target=_resync, name="flopwise-resync", daemon=True).start()
    if SETTINGS.leader_election is not None:
        from kubernetes import client

        namespace, name = SETTINGS.leader_election
        ELECTION = LeaderElection(client.CoordinationV1Api(), namespace=namespace, name=name,
                                  on_change=_leadership)
        metrics.follow_leadership(ELECTION.is_leader)
        ELECTION.start()


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    QUEUE.stop()
    if RECONCILER.fits is not None:
        RECONCILER.fits.stop()  # type: ignore[attr-defined]
    if ELECTION is not None:
        ELECTION.stop(release=True)


@kopf.on.event(GROUP, VERSION, PLURAL, id="campaign-event")
async def on_campaign(body: Any, type: str | None, namespace: str | None, name: str | None, **_: Any) -> None:
    if not namespace or not name:
        return
    key: CampaignKey = (namespace, name)
    if type == "DELETED":
        CACHE.drop_campaign(key)
        RECONCILER.forget(key, body.get("metadata", {}).get("uid"))
        metrics.forget_campaign(namespace, name)
        return
    if RECONCILER.wrote(key, body.get("metadata", {}).get("resourceVersion")):
        return  # the echo of our own status write: the cache holds the API server's answer to it already
    held = CACHE.put_campaign(body)
    QUEUE.add(key, NORMAL if (held.get("status") or {}).get("plan") else URGENT)


MANAGED = {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY}


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="job-event")
async def on_job(body: Any, type: str | None, namespace: str | None, annotations: Any, **_: Any) -> None:
    metrics.observe_job(body)  # counts a preemption
    if CACHE.put_job(body, deleted=type == "DELETED"):
        _mark(namespace, annotations)


@kopf.on.event("", "v1", "pods", labels=MANAGED, id="pod-event")
async def on_pod(body: Any, type: str | None, namespace: str | None, annotations: Any, **_: Any) -> None:
    if CACHE.put_pod(body, deleted=type == "DELETED"):
        _mark(namespace, annotations)


def _mark(namespace: str | None, annotations: Any) -> None:
    name = (annotations or {}).get(jobs.ANNOTATION_CAMPAIGN)
    if namespace and name:
        QUEUE.add((namespace, name))
