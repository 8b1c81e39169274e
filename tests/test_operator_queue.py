"""The operator's work queue and watch cache, in-process (the cluster tests drive them end to end)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from flopwise.kube import jobs
from flopwise.kube.cache import RunCache, compact_pod
from flopwise.kube.executor import KubernetesExecutor
from flopwise.kube.workqueue import URGENT, WorkQueue


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_marks_of_a_busy_campaign_coalesce_into_one_more_pass() -> None:
    calls: list[str] = []
    release = threading.Event()

    def handle(key):
        calls.append(key)
        if len(calls) == 1:
            release.wait(5)

    queue = WorkQueue(handle, workers=3)
    queue.start()
    queue.add("a")
    _wait(lambda: calls == ["a"])
    for _ in range(50):  # a burst of Pod events while the first pass runs
        queue.add("a")
    release.set()
    _wait(lambda: len(calls) == 2)
    time.sleep(0.2)
    assert calls == ["a", "a"]
    queue.stop()


def test_one_campaign_is_never_reconciled_by_two_workers_at_once() -> None:
    inside: dict[str, int] = {}
    worst = [0]
    lock = threading.Lock()
    done = []

    def handle(key):
        with lock:
            inside[key] = inside.get(key, 0) + 1
            worst[0] = max(worst[0], inside[key])
        time.sleep(0.002)
        with lock:
            inside[key] -= 1
        done.append(key)

    queue = WorkQueue(handle, workers=8)
    queue.start()
    for i in range(400):
        queue.add(f"c{i % 5}")
    _wait(lambda: queue.depth() == 0 and all(v == 0 for v in inside.values()))
    assert worst[0] == 1
    assert set(done) == {f"c{i}" for i in range(5)}
    queue.stop()


def test_new_campaigns_jump_the_backlog() -> None:
    order: list[str] = []
    gate = threading.Event()
    queue = WorkQueue(order.append, workers=1, gate=gate.is_set)
    for i in range(20):
        queue.add(f"old-{i}")
    queue.add("new", URGENT)
    queue.add("old-3", URGENT)  # re-marked as urgent: moves up, served once
    queue.start()
    gate.set()
    queue.wake()
    _wait(lambda: len(order) == 21)
    assert order[:2] == ["new", "old-3"] and order.count("old-3") == 1
    queue.stop()


def test_events_wait_while_a_new_campaign_waits_for_its_first_pass() -> None:
    """Events compete with first passes for the API server: they are held while an URGENT key is queued or being
    served, and posted once it is done (never held longer than HOLD_MAX_S)."""
    from flopwise.kube.events import EventPoster

    release = threading.Event()
    queue = WorkQueue(lambda key: release.wait(5), workers=1)
    posted: list[tuple[str, float]] = []

    class Core:
        def create_namespaced_event(self, namespace, event):
            posted.append((event["reason"], time.monotonic()))

    poster = EventPoster()
    poster.hold = queue.urgent
    assert not queue.urgent()
    queue.add("new", URGENT)
    assert queue.urgent()  # queued
    queue.start()
    meta = {"name": "c", "namespace": "ns", "uid": "u"}
    poster.post(Core(), meta, [("RunLaunched", "x")])
    time.sleep(0.3)
    assert queue.urgent() and posted == []  # being served: the event waits
    released = time.monotonic()
    release.set()
    _wait(lambda: posted)
    assert not queue.urgent() and posted[0][0] == "RunLaunched" and posted[0][1] >= released


def test_a_failing_pass_backs_off_instead_of_spinning() -> None:
    times: list[float] = []

    def handle(key):
        times.append(time.monotonic())
        raise RuntimeError("API server away")

    queue = WorkQueue(handle, workers=2)
    queue.start()
    queue.add("a")
    _wait(lambda: len(times) >= 3, timeout=10)
    queue.stop()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps  # 1 s, then 2 s


def test_a_gated_queue_acts_on_nothing_until_it_leads() -> None:
    seen: list[str] = []
    leading = threading.Event()
    queue = WorkQueue(seen.append, workers=2, gate=leading.is_set)
    queue.start()
    queue.add("a")
    time.sleep(0.3)
    assert seen == []
    leading.set()
    queue.wake()
    _wait(lambda: seen == ["a"])
    queue.stop()


# ------------------------------------------------------------------------------------------------ cache
def _pod(uid: str, run_id: str, campaign_uid: str = "cu", phase: str = "Pending", terminated: dict | None = None,
         **extra) -> dict:
    status = {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"}], **extra}
    if terminated is not None:
        status["containerStatuses"] = [{"name": jobs.CONTAINER, "image": "x", "imageID": "",
                                        "state": {"terminated": terminated}}]
    return {"metadata": {"uid": uid, "name": f"p-{uid}", "labels": {"big": "x" * 1000},
                         "annotations": {jobs.ANNOTATION_RUN_ID: run_id, jobs.ANNOTATION_CAMPAIGN_UID: campaign_uid,
                                         jobs.ANNOTATION_CAMPAIGN: "c", "other": "y" * 1000}},
            "spec": {"containers": [{"name": jobs.CONTAINER, "image": "x" * 500}]}, "status": status}


def test_the_cache_keeps_only_what_observation_reads_and_says_when_that_changed() -> None:
    cache = RunCache()
    assert cache.put_pod(_pod("p1", "ladder-00"))
    assert not cache.put_pod(_pod("p1", "ladder-00", podIP="10.0.0.1"))  # scheduling detail: no news
    assert cache.put_pod(_pod("p1", "ladder-00", phase="Running"))
    kept = compact_pod(_pod("p1", "ladder-00", phase="Succeeded", terminated={"exitCode": 0, "message": "m" * 99999}))
    assert len(kept["status"]["containerStatuses"][0]["state"]["terminated"]["message"]) == 4 * 4096
    assert len(str(kept)) < 17_000 and "big" not in str(kept)
    assert cache.put_pod(_pod("p1", "ladder-00", phase="Succeeded", terminated={"exitCode": 0, "message": "{}"}))
    found_jobs, pods = cache.runs_of("cu")
    assert found_jobs == {} and pods["ladder-00"][0]["status"]["phase"] == "Succeeded"
    assert cache.put_pod(_pod("p1", "ladder-00"), deleted=True)
    assert cache.runs_of("cu")[1] == {}
    assert not cache.put_pod({"metadata": {"uid": "z", "annotations": {}}})  # not ours: ignored


def test_an_older_campaign_version_never_replaces_a_newer_one() -> None:
    cache = RunCache()
    body = {"metadata": {"namespace": "n", "name": "c", "uid": "u", "resourceVersion": "20"}, "status": {"phase": "B"}}
    cache.put_campaign(body)
    cache.put_campaign({**body, "metadata": {**body["metadata"], "resourceVersion": "19"}, "status": {"phase": "A"}})
    assert cache.campaign(("n", "c"))["status"]["phase"] == "B"
    # a new campaign of the same name (another uid) replaces the old one whatever its version
    cache.put_campaign({**body, "metadata": {**body["metadata"], "uid": "v", "resourceVersion": "5"}})
    assert cache.campaign(("n", "c"))["metadata"]["uid"] == "v"


class _Listing:
    """The API side of the executor's confirming LIST (only counted and answered empty here)."""

    def __init__(self) -> None:
        self.calls = 0
        self.api_client = self

    def sanitize_for_serialization(self, obj):
        return obj

    def _list(self, *_a, **_k):
        self.calls += 1
        return type("L", (), {"items": []})()

    list_namespaced_job = list_namespaced_pod = list_namespaced_config_map = _list


def test_the_cache_decides_running_and_succeeded_but_a_vanished_run_is_confirmed_by_listing() -> None:
    from flopwise.api.status import RunRecord
    from flopwise.contract import ModelShape

    cache = RunCache()
    api = _Listing()
    job = {"metadata": {"name": "c-ladder-00", "annotations": {jobs.ANNOTATION_RUN_ID: "ladder-00",
                                                                jobs.ANNOTATION_CAMPAIGN_UID: "cu"}}}
    cache.put_job(job)
    shape = ModelShape(nLayer=2, dModel=32, nHead=2, vocabSize=256, seqLen=64)
    record = RunRecord(run_id="ladder-00", planned_id="ladder-00", role="ladder", state="Running", shape=shape,
                       params=1, tokens=1, batch_size=1, steps=1, learning_rate=1e-3)
    executor = KubernetesExecutor(api, api, namespace="n", campaign="c", uid="cu", spec=None, cache=cache)
    assert [o.state for o in executor.observe([record])] == ["running"] and api.calls == 0
    cache.put_job(job, deleted=True)
    assert [o.state for o in executor.observe([record])] == ["absent"]  # nothing listed either: truly absent
    assert api.calls == 3 and executor.listed


def test_new_campaigns_have_workers_that_running_campaigns_cannot_take() -> None:
    """Every shared worker busy with a running campaign: a new campaign's first pass is served at once by a worker
    kept for URGENT keys, and that worker never takes a running campaign's pass."""
    release = threading.Event()
    served: list[str] = []

    def handle(key):
        served.append(key)
        if key.startswith("busy"):
            release.wait(5)

    queue = WorkQueue(handle, workers=2)
    queue.start(urgent_workers=1)
    queue.add("busy-1")
    queue.add("busy-2")
    _wait(lambda: served == ["busy-1", "busy-2"] or served == ["busy-2", "busy-1"])
    queue.add("waiting")  # NORMAL: no shared worker is free, and the urgent one must not take it
    time.sleep(0.2)
    assert "waiting" not in served
    queue.add("new", URGENT)
    _wait(lambda: "new" in served)
    assert "waiting" not in served
    release.set()
    _wait(lambda: "waiting" in served)
    queue.stop()


class _Response:
    def __init__(self, data: bytes) -> None:
        self.data, self.released = data, 0

    def release_conn(self) -> None:
        self.released += 1


def test_a_raw_answer_hands_its_connection_back() -> None:
    """`_preload_content=False` answers keep their socket out of urllib3's pool until released: unreleased, every
    Job create opened a new TLS connection (540 in 30 s at 100 campaigns)."""
    from flopwise.kube.executor import _raw

    ok = _Response(b'{"metadata": {"name": "j"}}')
    assert _raw(ok) == {"metadata": {"name": "j"}} and ok.released == 1
    broken = _Response(b"not json")
    with pytest.raises(ValueError):
        _raw(broken)
    assert broken.released == 1


def _first_pass():
    """A new campaign's first decision: its first launch, the spec and the status that records it."""
    import yaml

    from flopwise.api.load import parse_campaign
    from flopwise.engine.machine import reconcile

    doc = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
    spec = parse_campaign(doc).spec
    decision = reconcile(spec, None, [], now=1000.0, seed=1)
    return decision.launches[0], spec, decision.status


class _ConfigMaps:
    """The ConfigMap side of the API: a create answers 409 for names in ``existing``."""

    def __init__(self, existing=()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.existing = set(existing)
        self.started = threading.Event()

    def create_namespaced_config_map(self, namespace, body, **_):
        from kubernetes.client.exceptions import ApiException

        self.started.set()
        self.calls.append(("create", body["metadata"]["name"]))
        if body["metadata"]["name"] in self.existing:
            raise ApiException(status=409, reason="AlreadyExists")
        return _Response(b"{}")

    def replace_namespaced_config_map(self, name, namespace, body, **_):
        self.calls.append(("replace", name))
        return _Response(b"{}")

    def delete_namespaced_config_map(self, name, namespace):
        self.calls.append(("delete", name))


def test_a_config_map_left_by_an_earlier_attempt_is_replaced_not_adopted() -> None:
    record, spec, status = _first_pass()
    name = jobs.config_map_name("c", record.run_id)
    core = _ConfigMaps(existing={name})
    executor = KubernetesExecutor(core, None, namespace="ns", campaign="c", uid="u", spec=spec)
    executor.write_config_map(record, _run_spec(record, spec, status))
    assert core.calls == [("create", name), ("replace", name)]


def _run_spec(record, spec, status):
    from flopwise.engine.runspec import run_spec_for

    return run_spec_for(record, spec, status.plan, campaign="c", data_path="/d", output_dir="/o")


def test_a_first_pass_writes_its_config_map_during_the_status_write_and_removes_it_if_that_fails() -> None:
    from flopwise.kube.reconciler import Reconciler

    record, spec, status = _first_pass()
    name = jobs.config_map_name("c", record.run_id)
    reconciler = Reconciler(RunCache())

    core = _ConfigMaps()
    executor = KubernetesExecutor(core, None, namespace="ns", campaign="c", uid="u", spec=spec)
    with reconciler._write_while(executor, record, spec, status):
        assert core.started.wait(5)  # written while the status write is still in flight
    assert core.calls == [("create", name)]

    core = _ConfigMaps()
    executor = KubernetesExecutor(core, None, namespace="ns", campaign="c", uid="u", spec=spec)
    with pytest.raises(RuntimeError), reconciler._write_while(executor, record, spec, status):
        raise RuntimeError("409: the campaign changed meanwhile")
    assert core.calls == [("create", name), ("delete", name)]  # nothing left for a run the status never recorded


def test_the_operator_freezes_what_it_imported_and_collects_cycles_less_often() -> None:
    """Full collections stop every thread (0.12-0.17 s each at 100 campaigns): the operator freezes its imports out
    of them and raises the thresholds (flopwise.cli.operator_cmd._collect_less)."""
    import gc

    from flopwise.cli import operator_cmd

    before = gc.get_threshold()
    try:
        operator_cmd._collect_less()
        assert gc.get_threshold() == operator_cmd.GC_THRESHOLDS != before
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
