"""Kubernetes Events on campaigns, posted by background threads.

Why off the reconcile path: Events are for people and best effort, yet a new campaign's first pass emits half a
dozen (Planned, the phase, each launch); posting them inline doubled the API calls between an apply and its
first Job. For the same reason they wait while a new campaign waits for its first pass. The queue is
bounded: under a flood the oldest unposted Events are dropped (counted, logged), never the reconcile's time.
"""

from __future__ import annotations

import collections
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flopwise.api.spec import GROUP, KIND, VERSION

log = logging.getLogger("flopwise.operator")

WARNING_REASONS = ("RunFailed", "RunLost", "Failed", "LaunchRejected")


def event_for(campaign_meta: dict[str, Any], reason: str, message: str, now: datetime.datetime) -> dict[str, Any]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"generateName": f"{campaign_meta['name']}.", "namespace": campaign_meta["namespace"]},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": campaign_meta["name"],
                           "namespace": campaign_meta["namespace"], "uid": campaign_meta["uid"],
                           "resourceVersion": campaign_meta.get("resourceVersion")},
        "reason": reason[:128], "message": message[:1024],
        "type": "Warning" if reason in WARNING_REASONS else "Normal",
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "source": {"component": "flopwise-operator"},
        "reportingComponent": "flopwise.dev/operator", "reportingInstance": "flopwise-operator",
    }


HOLD_POLL_S, HOLD_MAX_S = 0.05, 2.0


class EventPoster:
    """Events posted from a bounded queue by their own threads, so a pass never waits for them. While ``hold()``
    says new campaigns wait for their first pass, an event waits too (up to HOLD_MAX_S): an Event costs the API
    server as much as a Job create (50 ms under load), and a burst of applies should see its Jobs first."""

    def __init__(self, limit: int = 5000, threads: int = 2):
        self._queue: collections.deque[tuple[Any, dict[str, Any]]] = collections.deque()
        self._limit, self._threads = limit, threads
        self._cond = threading.Condition()
        self._started = False
        self.dropped = 0
        self.hold: Callable[[], bool] = lambda: False

    def post(self, core: Any, campaign_meta: dict[str, Any], events: list[tuple[str, str]]) -> None:
        if not events:
            return
        now = datetime.datetime.now(tz=datetime.UTC)
        with self._cond:
            for reason, message in events:
                if len(self._queue) >= self._limit:
                    self._queue.popleft()
                    self.dropped += 1
                    if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                        log.warning("%d Kubernetes Events dropped: the API server is not keeping up", self.dropped)
                self._queue.append((core, event_for(campaign_meta, reason, message, now)))
            if not self._started:
                self._started = True
                for i in range(self._threads):
                    threading.Thread(target=self._run, name=f"flopwise-events-{i}", daemon=True).start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                core, event = self._queue.popleft()
            held_until = time.monotonic() + HOLD_MAX_S
            while self.hold() and time.monotonic() < held_until:
                time.sleep(HOLD_POLL_S)
            try:
                core.create_namespaced_event(event["metadata"]["namespace"], event)
            except Exception as error:  # events must never stop anything
                log.warning("could not post event %s: %s", event["reason"], error)
