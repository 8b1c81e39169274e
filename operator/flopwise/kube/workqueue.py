"""A work queue of campaign keys, in the manner of client-go's: watch events only *mark* a campaign dirty; a few
worker threads reconcile dirty campaigns, one worker per campaign at a time.

Why: a burst of Pod and Job events (a Job created, its Pod created, scheduled, finished, the Job completed) is
one reconcile, not one per event; a campaign marked again while a worker holds it is served once more right
after. New campaigns (nothing planned yet) go first, so a large backlog of finished runs never delays an apply, and
have threads of their own besides: a new campaign's first pass (a status write, a ConfigMap, a Job: 0.4 s under load)
waits neither for a worker busy with a running campaign nor for the first passes of the campaigns applied with it
beyond what the API server itself imposes (at 100 campaigns applied at once, 8 shared workers left it 0.6-1.9 s in the
queue).
A failed pass is retried with exponential back-off per campaign (1 s … 60 s), never in a tight loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger("flopwise.operator")

URGENT, NORMAL = 0, 1
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0


class WorkQueue:
    """Dirty keys served by ``workers`` threads calling ``handle(key)``; ``gate()`` False holds every worker
    (a replica that is not the leader keeps its caches warm but acts on nothing)."""

    def __init__(self, handle: Callable[[Hashable], None], *, workers: int = 4,
                 gate: Callable[[], bool] = lambda: True, on_depth: Callable[[int], None] = lambda _n: None):
        self._handle, self._gate, self._on_depth = handle, gate, on_depth
        self._workers = workers
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # for every worker
        self._urgent_cond = threading.Condition(lock)  # for the workers that serve URGENT keys only
        self._heap: list[tuple[int, int, Hashable]] = []  # (priority, order, key); stale entries skipped on pop
        self._queued: dict[Hashable, int] = {}  # key → priority it is queued with
        self._active: dict[Hashable, int] = {}  # key being served → the priority it was queued with
        self._again: dict[Hashable, int] = {}  # marked while a worker held it
        self._delayed: list[tuple[float, int, Hashable]] = []  # (due, order, key)
        self._failures: dict[Hashable, int] = {}
        self._order = itertools.count()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------- adding
    def add(self, key: Hashable, priority: int = NORMAL) -> None:
        with self._cond:
            self._add_locked(key, priority)

    def _add_locked(self, key: Hashable, priority: int) -> None:
        if key in self._active:
            self._again[key] = min(priority, self._again.get(key, priority))
            return
        current = self._queued.get(key)
        if current is not None and current <= priority:
            return
        self._queued[key] = priority
        heapq.heappush(self._heap, (priority, next(self._order), key))
        self._on_depth(len(self._queued))
        self._cond.notify()
        if priority == URGENT:
            self._urgent_cond.notify()

    def add_after(self, key: Hashable, delay_s: float) -> None:
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay_s, next(self._order), key))
            self._cond.notify_all()

    def urgent(self) -> bool:
        """Is a new campaign waiting for, or in, its first pass? (Events wait meanwhile: kube/events.py.)"""
        with self._cond:
            return URGENT in self._active.values() or URGENT in self._queued.values()

    def depth(self) -> int:
        with self._cond:
            return len(self._queued)

    def wake(self) -> None:
        """The gate may have opened (leadership acquired): let the workers look again."""
        with self._cond:
            self._cond.notify_all()
            self._urgent_cond.notify_all()

    # ------------------------------------------------------------------------------------------ serving
    def start(self, workers: int | None = None, urgent_workers: int = 0) -> None:
        """``workers`` threads serve any key, most urgent first; ``urgent_workers`` more serve URGENT keys only."""
        self._workers = workers or self._workers
        for i in range(self._workers + urgent_workers):
            urgent_only = i >= self._workers
            thread = threading.Thread(target=self._work, args=(urgent_only,), daemon=True,
                                      name=f"flopwise-{'urgent' if urgent_only else 'worker'}-{i}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            self._urgent_cond.notify_all()

    def _next(self, urgent_only: bool = False) -> Hashable | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, key = heapq.heappop(self._delayed)
                    self._add_locked(key, NORMAL)
                if self._gate():
                    while self._heap:
                        priority, _, key = self._heap[0]
                        if self._queued.get(key) != priority:
                            heapq.heappop(self._heap)
                            continue  # superseded by a more urgent entry for the same key
                        if urgent_only and priority != URGENT:
                            break
                        heapq.heappop(self._heap)
                        del self._queued[key]
                        self._active[key] = priority
                        self._on_depth(len(self._queued))
                        return key
                timeout = self._delayed[0][0] - now if self._delayed and not urgent_only else None
                if not self._gate():
                    timeout = min(timeout or 1.0, 1.0)  # the gate has no event of its own: look again soon
                (self._urgent_cond if urgent_only else self._cond).wait(timeout)
            return None

    def _work(self, urgent_only: bool = False) -> None:
        while (key := self._next(urgent_only)) is not None:
            failed = False
            try:
                self._handle(key)
            except Exception:
                failed = True
                log.exception("reconciling %s failed", key)
            with self._cond:
                self._active.pop(key, None)
                if failed:
                    n = self._failures.get(key, 0)
                    self._failures[key] = n + 1
                    delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** n)
                    heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._order), key))
                    self._cond.notify_all()
                else:
                    self._failures.pop(key, None)
                again = self._again.pop(key, None)
                if again is not None:
                    self._add_locked(key, again)
