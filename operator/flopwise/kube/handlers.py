"""kopf handlers: thin. Every decision comes from the engine (`flopwise.engine.machine.reconcile`), the same one
`flopwise run` drives locally; this module only reads the campaign, observes its Jobs, persists the engine's
status (first), then creates the launches' ConfigMaps and Jobs and posts the engine's events.

Triggers: create/resume/update of a campaign, a timer every few seconds while it is active, and any change to
one of its Jobs or Pods (so a finished Pod is recorded within moments, before anything can collect it).
kopf keeps its own bookkeeping in annotations, never in the status, which belongs to flopwise.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from flopwise.api.load import describe
from flopwise.api.spec import GROUP, KIND, PLURAL, VERSION, TrainingCampaignSpec
from flopwise.api.status import Condition, TrainingCampaignStatus
from flopwise.engine import ledger
from flopwise.engine.machine import EngineOptions, campaign_seed, iso_time, reconcile
from flopwise.engine.runspec import run_spec_for
from flopwise.kube import jobs
from flopwise.kube.executor import KubernetesExecutor

log = logging.getLogger("flopwise.operator")

TIMER_INTERVAL_S = 3.0
CONFLICT_RETRIES = 3
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Settings:
    """What the `flopwise operator` command configures before kopf starts."""

    options: EngineOptions = field(default_factory=EngineOptions)
    kubeconfig: str | None = None
    scanning: bool = True  # kopf watches CRDs and namespaces (cluster-wide RBAC); off for plain --namespace lists


SETTINGS = Settings()


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def status_document(status: TrainingCampaignStatus) -> dict[str, Any]:
    """The status as stored: camelCase JSON without None and without empty strings (they are the models'
    defaults; kube-apiserver 1.20 as built here reads an empty string in a custom-resource merge patch as null
    and then rejects it against the string schema)."""
    return _drop_empty(status.model_dump(by_alias=True, mode="json", exclude_none=True))


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
    """Reconciles one campaign at a time per campaign (a lock each); a request that arrives while one runs
    is remembered and served right after, so bursts of Pod events cost one extra pass, not one each."""

    def __init__(self) -> None:
        self._api: tuple[Any, Any, Any] | None = None
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._pending: set[tuple[str, str]] = set()
        self._guard = threading.Lock()
        self._rejected: dict[str, dict[str, str]] = {}  # campaign uid → run id → why its Job was refused
        self._indexed: bool | None = None
        self._server = "unknown"

    def apis(self) -> tuple[Any, Any, Any]:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config(config_file=SETTINGS.kubeconfig)
            self._api = (client.CustomObjectsApi(), client.CoreV1Api(), client.BatchV1Api())
        return self._api

    def request(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
            if not lock.acquire(blocking=False):
                self._pending.add(key)
                return
        try:
            while True:
                with self._guard:
                    self._pending.discard(key)
                self.reconcile(namespace, name)
                with self._guard:
                    if key not in self._pending:
                        return
        finally:
            lock.release()

    # ------------------------------------------------------------------------------------------ one pass
    def reconcile(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        custom, core, batch = self.apis()
        for _ in range(CONFLICT_RETRIES):
            try:
                body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as error:
                if error.status == 404:
                    return
                raise
            if body["metadata"].get("deletionTimestamp"):
                return
            try:
                if self._step(body, custom, core, batch):
                    return
            except ApiException as error:
                if error.status != 409:
                    raise
            log.info("campaign %s/%s changed meanwhile; reconciling again", namespace, name)

    def _step(self, body: dict[str, Any], custom: Any, core: Any, batch: Any) -> bool:
        """One engine step; False when the status write met a conflict (the caller re-reads and retries)."""
        meta = body["metadata"]
        namespace, name, uid, generation = meta["namespace"], meta["name"], meta["uid"], meta.get("generation")
        old = body.get("status") or {}
        try:
            spec = TrainingCampaignSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            return self._invalid(body, custom, "; ".join(describe(error, ("spec",))), generation)
        try:
            status = TrainingCampaignStatus.model_validate(old)
        except ValidationError as error:
            log.error("campaign %s/%s: unreadable status, leaving it alone: %s", namespace, name, error)
            return True
        running = any(r.state == "Running" for r in status.runs)
        if status.phase in TERMINAL and not running and status.observed_generation == generation:
            return True  # finished and nothing changed: nothing to observe
        if jobs.is_gpu(spec) and spec.gpu_pool.nodes_per_run > 1 and not self.indexed_jobs():
            return self._multi_node_unavailable(body, custom, spec, generation)
        spec, refused = self._budget_guard(spec, status)
        rejected = self._rejected.setdefault(uid, {})
        executor = KubernetesExecutor(core, batch, namespace=namespace, campaign=name, uid=uid, spec=spec,
                                      rejected=rejected)
        observations = executor.observe(status.runs)
        decision = reconcile(spec, status, observations, now=time.time(), generation=generation,
                             seed=campaign_seed(name), options=SETTINGS.options)
        new = decision.status
        self._budget_condition(new, refused, generation)
        self._spec_valid_again(new, generation)
        document = status_document(new)
        if document != old or decision.launches:
            patch: dict[str, Any] = {"metadata": {"resourceVersion": meta["resourceVersion"]},
                                     "status": merge_patch(old, document)}
            # Persist first (a 409 means someone wrote meanwhile: nothing was launched, start over).
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, patch)
        plan = new.plan
        for record in decision.launches:
            assert plan is not None
            run_spec = run_spec_for(record, spec, plan, campaign=name, data_path=jobs.data_path(spec),
                                    output_dir=jobs.output_dir(record.run_id))
            rejected.pop(record.run_id, None)
            executor.launch(record, run_spec)
            if record.run_id in rejected:
                decision.events.append(("LaunchRejected", f"{record.run_id}: {rejected[record.run_id]}"))
        self._post(core, body, decision.events)
        return True

    # ------------------------------------------------------------------------------------------ helpers
    def indexed_jobs(self) -> bool:
        """Does this API server run Indexed Jobs (multi-node runs)? Asked once per operator process."""
        if self._indexed is None:
            from kubernetes import client

            info = client.VersionApi().get_code()
            version = (int(info.major.rstrip("+") or 0), int(info.minor.rstrip("+") or 0))
            self._indexed = version >= jobs.INDEXED_JOBS_SINCE
            self._server = f"{info.major}.{info.minor}"
        return self._indexed

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
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch)
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
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch)
        return True

    @staticmethod
    def _spec_valid_again(status: TrainingCampaignStatus, generation: int | None) -> None:
        """The engine ran, so blocking conditions from earlier generations no longer hold."""
        cleared = {"SpecValid": ("False", "True", "Valid", "the spec is valid again"),
                   "MultiNodeUnavailable": ("True", "False", "Resolved", "every run fits the server's Job kinds")}
        for i, c in enumerate(status.conditions):
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

    @staticmethod
    def _post(core: Any, body: dict[str, Any], events: list[tuple[str, str]]) -> None:
        """Kubernetes Events on the campaign, one per engine event (best effort: they are for people)."""
        meta = body["metadata"]
        now = datetime.datetime.now(tz=datetime.UTC)
        for reason, message in events:
            event = {
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"],
                                   "resourceVersion": meta.get("resourceVersion")},
                "reason": reason[:128], "message": message[:1024],
                "type": "Warning" if reason in ("RunFailed", "RunLost", "Failed", "LaunchRejected") else "Normal",
                "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "count": 1, "source": {"component": "flopwise-operator"},
                "reportingComponent": "flopwise.dev/operator", "reportingInstance": "flopwise-operator",
            }
            try:
                core.create_namespaced_event(meta["namespace"], event)
            except Exception as error:  # events must never stop a reconcile
                log.warning("could not post event %s: %s", reason, error)


RECONCILER = Reconciler()


# ------------------------------------------------------------------------------------------------ kopf
@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.posting.level = logging.WARNING  # the engine's own events are posted by the reconciler
    settings.execution.max_workers = 8
    settings.scanning.disabled = not SETTINGS.scanning


def _serve(namespace: str | None, name: str | None) -> None:
    if namespace and name:
        try:
            RECONCILER.request(namespace, name)
        except Exception:  # the timer retries in seconds; kopf must not store retry progress for us
            log.exception("reconciling %s/%s failed", namespace, name)


@kopf.on.resume(GROUP, VERSION, PLURAL, id="resume")
@kopf.on.create(GROUP, VERSION, PLURAL, id="create")
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="update")
def on_campaign(namespace: str | None, name: str | None, **_: Any) -> None:
    _serve(namespace, name)


def _active(status: Any, meta: Any, **_: Any) -> bool:
    phase = (status or {}).get("phase")
    running = any(r.get("state") == "Running" for r in (status or {}).get("runs") or [])
    return phase not in TERMINAL or running or (status or {}).get("observedGeneration") != meta.get("generation")


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_INTERVAL_S, when=_active)
def tick(namespace: str | None, name: str | None, **_: Any) -> None:
    _serve(namespace, name)


MANAGED = {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY}


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="job-event")
@kopf.on.event("", "v1", "pods", labels=MANAGED, id="pod-event")
def on_run_object(namespace: str | None, annotations: Any, type: str | None, **_: Any) -> None:
    if type is None:  # the initial listing: the campaign's own resume handler covers it
        return
    _serve(namespace, (annotations or {}).get(jobs.ANNOTATION_CAMPAIGN))
