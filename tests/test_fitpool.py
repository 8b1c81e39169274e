"""The operator's fit pool (kube/fitpool.py) with real spawned worker processes: a fit asked of it comes back as the
very conclusion an inline fit gives; per campaign one fit runs and only the newest request waits behind it; a fit
that cannot be made raises as it would inline; a finished fit tells its campaign."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest

from flopwise.engine.fits import FitRequest, run_fit
from flopwise.engine.machine import Observation, reconcile
from flopwise.fitting.points import FitInputError
from flopwise.kube.fitpool import FIT_NICENESS, FitPool
from test_engine_ledger import FAST, SPEC, summary_for


def ladder_requests() -> list[FitRequest]:
    """Every fit a campaign asks for, in order, driven to the end with inline fits (interim ones, the final one,
    the partial check's refit)."""
    asked: list[FitRequest] = []

    def inline(request: FitRequest):
        asked.append(request)
        return run_fit(request)

    options = dataclasses.replace(FAST, fitter=inline)
    status, now = None, 0.0
    for _ in range(300):
        now += 1
        observations = [Observation(r.run_id, "succeeded", summary_for(r)) for r in
                        (status.runs if status else []) if r.state == "Running"]
        status = reconcile(SPEC, status, observations, now=now, options=options).status
        if status.phase in ("Succeeded", "Failed"):
            break
    assert status is not None and status.phase == "Succeeded"
    return asked


class Done:
    """on_done's calls, waitable."""

    def __init__(self) -> None:
        self.owners: list[str] = []
        self.changed = threading.Condition()

    def __call__(self, owner: str) -> None:
        with self.changed:
            self.owners.append(owner)
            self.changed.notify_all()

    def wait(self, count: int, timeout: float = 120.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.owners) >= count, timeout), self.owners


@pytest.fixture(scope="module")
def requests() -> list[FitRequest]:
    distinct = list({r.key: r for r in ladder_requests()}.values())
    assert len(distinct) >= 3
    return distinct


def test_a_pooled_fit_is_the_inline_fit_and_only_the_newest_request_waits(requests: list[FitRequest]) -> None:
    done = Done()
    pool = FitPool(1, on_done=done)
    try:
        first, middle, newest = (dataclasses.replace(r, owner="ns/a") for r in requests[-3:])
        assert pool(first) is None  # submitted: the pass goes on without it
        assert pool(middle) is None and pool(newest) is None  # behind it: only the newest waits
        assert pool(first) is None  # still running: not submitted twice
        done.wait(2)
        assert done.owners == ["ns/a", "ns/a"] and pool.submitted == 2  # first, then newest; middle never
        for request in (first, newest):
            pooled = pool(request)
            assert pooled is not None and pooled.status == run_fit(request).status  # the same conclusion
        assert pool(middle) is None  # superseded, not kept: asked again, it is fitted now
        done.wait(3)
        assert pool(middle).status == run_fit(middle).status and pool.submitted == 3

        other = dataclasses.replace(newest, seed=newest.seed + 1, owner="ns/b")  # another campaign's, beside
        too_few = dataclasses.replace(requests[0], runs=requests[0].runs[:1], owner="ns/c")
        assert pool(other) is None and pool(too_few) is None
        done.wait(5)
        assert sorted(done.owners[3:]) == ["ns/b", "ns/c"]
        with pytest.raises(FitInputError):
            pool(too_few)  # kept, and raised as an inline fit raises it
        assert pool(other).status == run_fit(other).status and pool.submitted == 5
    finally:
        pool.stop()


def test_fit_workers_yield_the_cpu_to_the_operator() -> None:
    """The workers run at a lower priority than the process that owns the pool: on a busy node the reconcile that
    launches the next Job goes first, the fits take what is left."""
    pool = FitPool(1)
    try:
        pool.start()
        worker = pool._pool().submit(os.nice, 0).result(timeout=60)  # os.nice(0): the caller's niceness
        assert worker == os.nice(0) + FIT_NICENESS or worker == 19  # 19 is the ceiling
    finally:
        pool.stop()
