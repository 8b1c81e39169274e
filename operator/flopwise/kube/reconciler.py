"""One reconcile pass of one campaign: read it (from the watch cache), observe its runs, let the engine
(`flopwise.engine.machine.reconcile`, the same one `flopwise run` drives locally) decide, persist the status first,
then create the launches' ConfigMaps and Jobs and post the engine's events as Kubernetes Events.

kopf wiring, the work queue and leader election are elsewhere (handlers.py, workqueue.py, leader.py); this module
is the part that talks to the API server about one campaign.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flopwise.api.load import describe
from flopwise.api.spec import GROUP, PLURAL, VERSION, TrainingCampaignSpec
from flopwise.api.status import LIVE_STATES, Condition, RunRecord, TrainingCampaignStatus
from flopwise.api.stored import stored_planned_run, stored_record
from flopwise.engine import ledger
from flopwise.engine.machine import Decision, EngineOptions, campaign_seed, iso_time, reconcile
from flopwise.engine.runspec import run_spec_for
from flopwise.kube import jobs
from flopwise.kube.cache import CampaignKey, RunCache
from flopwise.kube.events import EventPoster
from flopwise.kube.executor import KubernetesExecutor, _reason

log = logging.getLogger("flopwise.operator")

CONFLICT_RETRIES = 3
TERMINAL = ("Succeeded", "Failed")
FINISHED_RUNS = ("Succeeded", "Failed", "Lost")


def is_active(body: dict[str, Any]) -> bool:
    """Is there anything to observe or decide: not finished, a run still live (running, queued, suspended), or a
    spec edit not yet seen."""
    status = body.get("status") or {}
    running = any(r.get("state") in LIVE_STATES for r in status.get("runs") or [])
    generation = body["metadata"].get("generation")
    return status.get("phase") not in TERMINAL or running or status.get("observedGeneration") != generation


def _status_or_none(body: dict[str, Any] | None) -> TrainingCampaignStatus | None:
    try:
        return TrainingCampaignStatus.model_validate((body or {}).get("status") or {}) if body else None
    except ValidationError:
        return None


@dataclass
class Settings:
    """What the `flopwise operator` command configures before kopf starts."""

    options: EngineOptions = field(default_factory=EngineOptions)
    kubeconfig: str | None = None
    scanning: bool = True  # kopf watches CRDs and namespaces (cluster-wide RBAC); off for plain --namespace lists
    workers: int = 8  # reconcile threads (API calls are I/O: a few suffice; one campaign never runs on two)
    fit_workers: int = 0  # processes that fit (kube/fitpool.py); 0: fits run inline, on the reconcile thread
    leader_election: tuple[str, str] | None = None  # (namespace, Lease name) when replicas elect a leader


SETTINGS = Settings()


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _compact(model: Any, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """One list item (a run record, a planned run) without the fields at their defaults, ``keep`` excepted."""
    document = model.model_dump(by_alias=True, mode="json", exclude_none=True, exclude_defaults=True)
    for name in keep:
        document[name] = getattr(model, name)
    return document


def status_document(status: TrainingCampaignStatus) -> dict[str, Any]:
    """The status as stored: camelCase JSON without None and without empty strings (they are the models'
    defaults; kube-apiserver 1.20 as built here reads an empty string in a custom-resource merge patch as null
    and then rejects it against the string schema). The run records and planned runs, most of the object, leave out
    their fields at defaults (a zero attempt, no pods, no checkpoints), a record what its planned run says, and a
    planned run what its shape gives (api/stored.py): a status write costs the API server about 11 ms of CPU plus
    1.4 ms per KB of the whole object, and a merge patch resends a list whole. Their `state` stays, for `is_active`
    and for people reading the raw object. Parsing restores every default and everything left out, so the stored
    form reads back as the same status (tests/test_status_size.py)."""
    phases = status.plan.phases() if status.plan is not None else {}
    document = status.model_dump(by_alias=True, mode="json", exclude_none=True,  # the lists once, compact, below
                                 exclude={"runs": True, "plan": {phase: {"runs"} for phase in phases}})
    planned_runs: dict[str, dict[str, Any]] = {}
    for phase, planned in phases.items():
        compact = [_compact(run) for run in planned.runs]
        planned_runs.update((run["runId"], run) for run in compact)
        document["plan"][phase]["runs"] = [
            stored_planned_run(run, status.plan.peak_flops_per_gpu, status.plan.mfu) for run in compact]
    document["runs"] = [stored_record(_compact(record, keep=("state",)), planned_runs.get(record.planned_id))
                        for record in status.runs]
    return _drop_empty(document)


def merge_patch(old: Any, new: Any) -> Any:
    """An RFC 7386 merge patch turning ``old`` into ``new`` (objects recurse; lists and scalars are replaced)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


class Reconciler:
    """One engine pass for one campaign, from the watch cache. The work queue guarantees one pass per campaign at a
    time; in-memory state here (refused Jobs, the resourceVersions we wrote) is an optimisation, never the truth:
    a restarted operator rebuilds everything from the API server."""

    def __init__(self, cache: RunCache) -> None:
        self.cache = cache
        self._api: tuple[Any, Any, Any] | None = None
        self._rejected: dict[str, dict[str, str]] = {}  # campaign uid → run id → why its Job was refused
        self._forbidden: dict[str, set[str]] = {}  # campaign uid → run ids whose Job create got 403
        self._written: dict[CampaignKey, str] = {}  # the resourceVersion of our latest status write
        self._verify: set[CampaignKey] = set()  # observe by listing next time (the periodic resync)
        self._deferred: dict[CampaignKey, tuple[Any, ...]] = {}  # a new campaign's launches after its first
        self._unpersisted: dict[CampaignKey, tuple[Any, ...]] = {}  # (inputs, decision) of a pass not yet written
        self._version: tuple[int, int] | None = None
        self._server = "unknown"
        # asks for another pass (now, or after a delay): set by the work queue's owner (handlers.py)
        self.requeue: Callable[[CampaignKey], None] = lambda _key: None
        self.requeue_after: Callable[[CampaignKey, float], None] = lambda _key, _delay: None
        self.events = EventPoster()
        self.fits: Callable[[Any], Any] | None = None  # the fit pool, when fits run off the GIL (handlers.py)
        self._side: concurrent.futures.ThreadPoolExecutor | None = None  # writes beside a status write

    def apis(self) -> tuple[Any, Any, Any]:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config(config_file=SETTINGS.kubeconfig)
            configuration = client.Configuration.get_default_copy()
            # a connection per worker (as many again for new campaigns' first passes), per write beside a first
            # pass's status write and per event poster thread, or the client's pool discards connections (a TLS
            # handshake for each one opened again)
            configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0,
                                                        4 * SETTINGS.workers + 2)
            api_client = client.ApiClient(configuration)
            self._api = (client.CustomObjectsApi(api_client), client.CoreV1Api(api_client),
                         client.BatchV1Api(api_client))
        return self._api

    def wrote(self, key: CampaignKey, resource_version: str | None) -> bool:
        """Is this version of the campaign our own status write, echoed back by the watch (nothing to do)?"""
        return resource_version is not None and self._written.get(key) == resource_version

    def verify_next(self, key: CampaignKey) -> None:
        self._verify.add(key)

    def forget(self, key: CampaignKey, uid: str | None) -> None:
        self._written.pop(key, None)
        self._unpersisted.pop(key, None)
        self._deferred.pop(key, None)
        self._verify.discard(key)
        if uid:
            self._rejected.pop(uid, None)
            self._forbidden.pop(uid, None)

    # ------------------------------------------------------------------------------------------ one pass
    def reconcile(self, key: CampaignKey) -> TrainingCampaignStatus | None:
        """One pass; the campaign's status afterwards (None when it is gone). A 409 means someone wrote meanwhile:
        nothing was launched, so read it again and start over. A 403 is shown on the campaign and raised (the
        work queue retries with back-off)."""
        from kubernetes.client.exceptions import ApiException

        custom, core, batch = self.apis()
        namespace, name = key
        body = self.cache.campaign(key)
        deferred = self._deferred.pop(key, None)
        if deferred is not None and body is not None and not body["metadata"].get("deletionTimestamp"):
            executor, records, spec, status = deferred
            try:
                refused = self._launch(executor, records, spec, status)
            except ApiException as error:
                if error.status == 403:
                    self._show_forbidden(body, custom, error)
                raise
            self.events.post(core, body["metadata"], refused)
            if refused:
                self.requeue(key)  # a refused Job makes no watch event: the engine must hear of it
            return status  # the created Jobs' watch events bring the next pass
        for _ in range(CONFLICT_RETRIES):
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            try:
                return self._step(body, custom, core, batch)
            except ApiException as error:
                if error.status == 403:
                    self._show_forbidden(body, custom, error)
                    raise
                if error.status not in (404, 409):
                    raise
            log.info("campaign %s/%s changed meanwhile; reconciling again", namespace, name)
            try:
                body = self.cache.put_campaign(custom.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                   PLURAL, name), owned=True)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        return None

    def _step(self, body: dict[str, Any], custom: Any, core: Any, batch: Any) -> TrainingCampaignStatus | None:
        """One engine step: observe, decide, persist the status (first), then launch and post events."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        namespace, name, uid, generation = meta["namespace"], meta["name"], meta["uid"], meta.get("generation")
        old = body.get("status") or {}
        try:
            spec = TrainingCampaignSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            self._invalid(body, custom, "; ".join(describe(error, ("spec",))), generation)
            return _status_or_none(self.cache.campaign(key))
        try:
            status = TrainingCampaignStatus.model_validate(old)
        except ValidationError as error:
            log.error("campaign %s/%s: unreadable status, leaving it alone: %s", namespace, name, error)
            return None
        if not is_active(body):
            self._cleanup(key, meta, spec, status, core, batch)  # finished runs' Jobs whose time has come
            return status  # finished and nothing changed: nothing to observe
        if jobs.is_gpu(spec) and spec.gpu_pool.nodes_per_run > 1 and not self.indexed_jobs():
            self._multi_node_unavailable(body, custom, spec, generation)
            return _status_or_none(self.cache.campaign(key))
        spec, refused = self._budget_guard(spec, status)
        rejected = self._rejected.setdefault(uid, {})
        forbidden = self._forbidden.setdefault(uid, set())
        verify = key in self._verify
        self._verify.discard(key)
        executor = KubernetesExecutor(core, batch, namespace=namespace, campaign=name, uid=uid, spec=spec,
                                      rejected=rejected, forbidden=forbidden, cache=self.cache,
                                      trust_cache=not verify, server=self.server_version(),
                                      campaign_labels=meta.get("labels"))
        observations = executor.observe(status.runs)
        # The same campaign version and observations as a pass that failed to persist (API server away):
        # reuse its decision rather than fit again on every back-off retry.
        signature = (meta.get("resourceVersion"), repr(spec), repr(observations))
        held = self._unpersisted.pop(key, None)
        if held is not None and held[0] == signature:
            decision = held[1]
        else:
            decision = reconcile(spec, status, observations, now=time.time(), generation=generation,
                                 seed=campaign_seed(name), options=self._options(namespace, name),
                                 owned=True)
        self._unpersisted[key] = (signature, decision)
        new = decision.status
        self._budget_condition(new, refused, generation)
        self._spec_valid_again(new, generation, permitted=not decision.launches)
        document = status_document(new)
        launches = decision.launches
        first = launches[0] if launches and not old.get("plan") else None  # a new campaign's: see _write_while
        if document != old or launches:
            # Persist first (a 409 means someone wrote meanwhile: nothing was launched, start over).
            with self._write_while(executor, first, spec, new):
                self._persist(custom, body, merge_patch(old, document))
            # Our own write's watch echo is not news, so look once more ourselves: a pass that changed something
            # may enable the next step (a refused Job, say, produces no event at all).
            self.requeue(key)
        self._unpersisted.pop(key, None)  # persisted: a later pass starts from the new status
        if first is not None and len(launches) > 1:
            # A new campaign: its first Job now, the rest on its next pass (queued behind every other new
            # campaign's first pass), so a burst of applies each sees a Job within moments. Safe at any crash:
            # runs persisted Running without a Job are observed absent and launched.
            launches, self._deferred[key] = launches[:1], (executor, launches[1:], spec, new)
        decision.events += self._launch(executor, launches, spec, new, config_map_written=first)
        self._stop_and_resume(executor, decision, spec, new)
        self._cleanup(key, meta, spec, new, core, batch, executor)
        self.events.post(core, body["metadata"], decision.events)
        return new

    def _cleanup(self, key: CampaignKey, meta: dict[str, Any], spec: TrainingCampaignSpec,
                 status: TrainingCampaignStatus, core: Any, batch: Any,
                 executor: KubernetesExecutor | None = None) -> None:
        """spec.cleanup: a finished run's Job (its Pods by propagation) and ConfigMap are deleted once its result is
        in the persisted status and ttlSecondsAfterFinished has passed; the campaign is looked at again when the
        next one is due. Only runs whose Job the watch still holds: nothing is listed, nothing deleted twice."""
        ttl = spec.cleanup.ttl_seconds_after_finished
        if ttl is None or status.plan is None:
            return
        held, _ = self.cache.runs_of(meta["uid"])
        now, next_due = time.time(), None
        for record in status.runs:
            if record.run_id not in held or record.state not in FINISHED_RUNS:
                continue
            if spec.cleanup.keep_failed and record.state != "Succeeded":
                continue
            due = (record.finished_at or now) + ttl
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            if executor is None:
                executor = KubernetesExecutor(core, batch, namespace=meta["namespace"], campaign=meta["name"],
                                              uid=meta["uid"], spec=spec, cache=self.cache)
            executor.remove(record.run_id)
        if next_due is not None:
            self.requeue_after(key, next_due - now + 0.5)

    def _stop_and_resume(self, executor: KubernetesExecutor, decision: Decision, spec: TrainingCampaignSpec,
                         status: TrainingCampaignStatus) -> None:
        """What the engine decided besides launches, after the status that says so is persisted: cancelled runs'
        Jobs deleted, suspended ones suspended (or deleted where the server cannot), resumed ones resumed (or
        created again), preempted ones' deadlines lowered to what is left of their reservations."""
        for run_id in decision.cancels:
            executor.cancel(run_id)
        if decision.suspends:
            suspends = self.job_suspend()
            for run_id in decision.suspends:
                executor.suspend(run_id, server_suspends=suspends)
        for record in decision.resumes:
            assert status.plan is not None
            executor.resume(record, run_spec_for(record, spec, status.plan, campaign=executor.campaign,
                                                 data_path=jobs.data_path(spec),
                                                 output_dir=jobs.output_dir(record.run_id)))
        for record in decision.rearms:
            executor.rearm(record)

    def _options(self, namespace: str, name: str) -> EngineOptions:
        """The engine's options; with a fit pool its fits are asked of the pool on behalf of this campaign (a pass
        never fits: a finished fit marks the campaign dirty)."""
        pool = self.fits
        if pool is None:
            return SETTINGS.options
        owner = f"{namespace}/{name}"
        return dataclasses.replace(SETTINGS.options, fitter=lambda request: pool(dataclasses.replace(
            request, owner=owner)))

    @contextlib.contextmanager
    def _write_while(self, executor: KubernetesExecutor, record: RunRecord | None,
                     spec: TrainingCampaignSpec, status: TrainingCampaignStatus) -> Iterator[None]:
        """The ConfigMap of ``record`` (None: nothing) written while the body of the ``with`` (the status write)
        runs: a new campaign's first Job waits for one round trip to the API server after its status, not two (at 100
        campaigns applied at once, the ConfigMap took 0.08-0.12 s of the first pass's 0.45 s). A ConfigMap is inert
        until a Job mounts it: if the status write fails, it is deleted, and a later pass that records the run again
        replaces it (KubernetesExecutor.write_config_map)."""
        if record is None:
            yield
            return
        if self._side is None:
            self._side = concurrent.futures.ThreadPoolExecutor(max_workers=2 * SETTINGS.workers,
                                                               thread_name_prefix="flopwise-configmap")
        run_spec = self._run_spec(executor, record, spec, status)
        written = self._side.submit(executor.write_config_map, record, run_spec)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                written.result()
                executor.remove_config_map(record.run_id)
            raise
        written.result()

    @staticmethod
    def _run_spec(executor: KubernetesExecutor, record: Any, spec: TrainingCampaignSpec,
                  status: TrainingCampaignStatus) -> Any:
        assert status.plan is not None  # launches exist only once a plan does
        return run_spec_for(record, spec, status.plan, campaign=executor.campaign, data_path=jobs.data_path(spec),
                            output_dir=jobs.output_dir(record.run_id))

    def _launch(self, executor: KubernetesExecutor, records: list[Any], spec: TrainingCampaignSpec,
                status: TrainingCampaignStatus, *,
                config_map_written: RunRecord | None = None) -> list[tuple[str, str]]:
        """ConfigMap + Job per record (idempotent); the events of Jobs the API server refused. The ConfigMap of
        ``config_map_written`` (a record, or None) was written already (_write_while)."""
        events: list[tuple[str, str]] = []
        for record in records:
            run_spec = self._run_spec(executor, record, spec, status)
            executor.rejected.pop(record.run_id, None)
            executor.launch(record, run_spec, config_map_written=record is config_map_written)
            if record.run_id in executor.rejected:
                events.append(("LaunchRejected", f"{record.run_id}: {executor.rejected[record.run_id]}"))
        return events

    def _persist(self, custom: Any, body: dict[str, Any], status_patch: dict[str, Any]) -> None:
        """The engine's status write. On a conflict, a campaign whose spec and status are as this pass read them
        (another writer touched only labels or annotations) gets the same patch again at its new
        resourceVersion: recomputing (a fit may take seconds) would lose every race to a frequent writer.
        Anything else raises the 409 and the pass starts over from a fresh read."""
        from kubernetes.client.exceptions import ApiException

        meta = body["metadata"]
        for _ in range(CONFLICT_RETRIES * 2):
            try:
                self._patch_status(custom, meta, status_patch)
                return
            except ApiException as error:
                if error.status != 409:
                    raise
                fresh = custom.get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
                self.cache.put_campaign(fresh, owned=True)
                same = (fresh.get("spec") == body.get("spec") and fresh.get("status") == body.get("status")
                        and fresh["metadata"].get("generation") == meta.get("generation")
                        and not fresh["metadata"].get("deletionTimestamp"))
                if not same:
                    raise
                meta = fresh["metadata"]
        raise RuntimeError(f"campaign {meta['namespace']}/{meta['name']}: metadata keeps changing under the "
                           "status write; retrying with back-off")

    def _patch_status(self, custom: Any, meta: dict[str, Any], status_patch: dict[str, Any]) -> None:
        """A status merge patch guarded by the resourceVersion we read; the answer refreshes the cache and is
        remembered so that its watch echo is not mistaken for news."""
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status_patch}
        updated = custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], PLURAL,
                                                                meta["name"], patch)
        key = (meta["namespace"], meta["name"])
        self._written[key] = updated["metadata"]["resourceVersion"]
        self.cache.put_campaign(updated, owned=True)

    def _show_forbidden(self, body: dict[str, Any], custom: Any, error: Any) -> None:
        """RBAC refused a call: say so on the campaign (condition Degraded, reason Forbidden, the API server's
        words naming verb and resource) and in the log. Nothing is charged; the pass is retried with back-off."""
        from kubernetes.client.exceptions import ApiException

        meta, old = body["metadata"], body.get("status") or {}
        message = (f"the operator's ServiceAccount was refused: {_reason(error)[:1500]}; grant it the flopwise "
                   "operator Role (flopwise.kube.rbac, or the Helm chart's)")
        log.error("campaign %s/%s: %s", meta["namespace"], meta["name"], message)
        current = next((c for c in old.get("conditions", []) if c.get("type") == "Degraded"), None)
        if current is not None and current.get("reason") == "Forbidden" and current.get("message") == message:
            return
        condition = {"type": "Degraded", "status": "True", "reason": "Forbidden", "message": message,
                     "lastTransitionTime": iso_time(time.time()), "observedGeneration": meta.get("generation")}
        conditions = [c for c in old.get("conditions", []) if c.get("type") != "Degraded"] + [condition]
        try:
            fresh = self.cache.campaign((meta["namespace"], meta["name"])) or body
            self._patch_status(custom, fresh["metadata"], {"conditions": conditions})
        except ApiException as patch_error:  # the status itself may be forbidden: the log has it
            log.warning("could not record the refusal on the campaign: %s", _reason(patch_error))

    # ------------------------------------------------------------------------------------------ helpers
    def server_version(self) -> tuple[int, int]:
        """The API server's (major, minor), asked once per operator process."""
        if self._version is None:
            from kubernetes import client

            self.apis()
            info = client.VersionApi().get_code()
            self._version = (int(info.major.rstrip("+") or 0), int(info.minor.rstrip("+") or 0))
            self._server = f"{info.major}.{info.minor}"
        return self._version

    def indexed_jobs(self) -> bool:
        """Does this API server run Indexed Jobs (multi-node runs)?"""
        return self.server_version() >= jobs.INDEXED_JOBS_SINCE

    def job_suspend(self) -> bool:
        """Does this API server have Job `spec.suspend` (1.20 prunes the field: there a suspension deletes)?"""
        return self.server_version() >= jobs.JOB_SUSPEND_SINCE

    def _multi_node_unavailable(self, body: dict[str, Any], custom: Any, spec: TrainingCampaignSpec,
                                generation: int | None) -> bool:
        """Degrade cleanly: the campaign waits (Pending, nothing launched, nothing spent) with a condition that
        says why and what to change; editing the spec or upgrading the server lets it go on."""
        meta, old = body["metadata"], body.get("status") or {}
        pool = spec.gpu_pool
        since = ".".join(map(str, jobs.INDEXED_JOBS_SINCE))
        message = (f"spec.gpuPool.gpusPerRun: {pool.gpus_per_run} GPUs span {pool.nodes_per_run} nodes of "
                   f"{pool.gpus_per_node}, which needs Indexed Jobs (Kubernetes {since}+); this API server is "
                   f"{self._server}: lower gpusPerRun to at most {pool.gpus_per_node}, or upgrade the cluster")
        current = next((c for c in old.get("conditions", []) if c.get("type") == "MultiNodeUnavailable"), None)
        if current is not None and current.get("observedGeneration") == generation:
            return True
        condition = {"type": "MultiNodeUnavailable", "status": "True", "reason": "IndexedJobsUnavailable",
                     "message": message, "lastTransitionTime": iso_time(time.time()), "observedGeneration": generation}
        conditions = [c for c in old.get("conditions", []) if c.get("type") != "MultiNodeUnavailable"] + [condition]
        status: dict[str, Any] = {"conditions": conditions, "observedGeneration": generation, "message": message}
        if not old.get("phase"):
            status["phase"] = "Pending"
        self._patch_status(custom, meta, status)
        return True

    def _invalid(self, body: dict[str, Any], custom: Any, message: str, generation: int | None) -> bool:
        """A spec the schema let through but the models refuse (an unknown GPU without peakFlops, dollars without
        a price). Before anything ran the campaign fails; once runs exist it pauses instead (condition SpecValid
        False: nothing new is launched, results wait in the Pods) until the spec is fixed."""
        meta = body["metadata"]
        old = body.get("status") or {}
        started = bool(old.get("plan")) and old.get("phase") not in TERMINAL
        kind = "SpecValid" if started else "Failed"
        current = next((c for c in old.get("conditions", []) if c.get("type") == kind), None)
        if current is not None and current.get("observedGeneration") == generation and (
                started or old.get("phase") == "Failed"):
            return True
        condition = {"type": kind, "status": "False" if started else "True", "reason": "InvalidSpec",
                     "message": message[:32768], "lastTransitionTime": iso_time(time.time()),
                     "observedGeneration": generation}
        conditions = [c for c in old.get("conditions", []) if c.get("type") != kind] + [condition]
        status: dict[str, Any] = {"conditions": conditions, "observedGeneration": generation}
        if not started:
            status.update(phase="Failed", message=message[:32768])
        self._patch_status(custom, meta, status)
        return True

    @staticmethod
    def _spec_valid_again(status: TrainingCampaignStatus, generation: int | None, *, permitted: bool) -> None:
        """The engine ran, so blocking conditions from earlier generations no longer hold; a refusal (Forbidden)
        is cleared by a pass that needed no launch (one that launches may still be refused)."""
        cleared = {"SpecValid": ("False", "True", "Valid", "the spec is valid again"),
                   "MultiNodeUnavailable": ("True", "False", "Resolved", "every run fits the server's Job kinds")}
        if permitted:
            cleared["Degraded"] = ("True", "False", "Permitted", "the operator's permissions suffice again")
        for i, c in enumerate(status.conditions):
            if c.type == "Degraded" and c.reason != "Forbidden":
                continue  # the engine's own Degraded (a degenerate fit) is the engine's to clear
            if c.type in cleared and c.status == cleared[c.type][0]:
                _, state, reason, message = cleared[c.type]
                status.conditions[i] = c.model_copy(update={
                    "status": state, "reason": reason, "message": message,
                    "last_transition_time": iso_time(time.time()), "observed_generation": generation})

    @staticmethod
    def _budget_guard(spec: TrainingCampaignSpec, status: TrainingCampaignStatus) -> tuple[TrainingCampaignSpec, str]:
        """A budget lowered below what is already spent and reserved is refused: the old limits stay."""
        if status.plan is None:
            return spec, ""
        totals = ledger.totals(status.runs, ledger.Limits.of(spec.budget))
        over = []
        used_flops = totals.spent_flops + totals.reserved_flops
        if spec.budget.flops is not None and used_flops > spec.budget.flops * (1 + 1e-9):
            over.append(f"budget.flops {spec.budget.flops:.4g} < {totals.spent_flops + totals.reserved_flops:.4g} "
                        "FLOPs spent and reserved")
        if spec.budget.usd is not None and totals.spent_usd + totals.reserved_usd > spec.budget.usd + 1e-9:
            over.append(f"budget.usd {spec.budget.usd:.2f} < ${totals.spent_usd + totals.reserved_usd:.2f} "
                        "spent and reserved")
        if not over:
            return spec, ""
        kept = status.ledger
        budget = spec.budget.model_copy(update={
            "flops": kept.budget_flops if spec.budget.flops is not None else None,
            "usd": kept.budget_usd if spec.budget.usd is not None else None})
        if budget.flops is None and budget.usd is None:
            budget = budget.model_copy(update={"flops": kept.budget_flops})
        message = "; ".join(over) + f"; keeping the previous limits ({budget.flops or 0:.4g} FLOPs" + (
            f", ${budget.usd:.2f})" if budget.usd else ")")
        return spec.model_copy(update={"budget": budget}), message

    @staticmethod
    def _budget_condition(status: TrainingCampaignStatus, refused: str, generation: int | None) -> None:
        existing = next((c for c in status.conditions if c.type == "BudgetBelowSpent"), None)
        if not refused and existing is None:
            return
        state = "True" if refused else "False"
        if existing is not None and existing.status == state and existing.message == (refused or existing.message):
            return
        condition = Condition(type="BudgetBelowSpent", status=state,  # type: ignore[arg-type]
                              reason="Refused" if refused else "Accepted",
                              message=refused or "the budget covers what is spent and reserved",
                              last_transition_time=iso_time(time.time()), observed_generation=generation)
        status.conditions = [c for c in status.conditions if c.type != "BudgetBelowSpent"] + [condition]
