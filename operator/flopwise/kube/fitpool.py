"""Fits in worker processes, off the operator's GIL (see engine/fits.py for the engine's side).

The engine asks for a fit with a `FitRequest`; this answers from its results when the fit is done, and otherwise
starts it in a process pool and answers None. When a fit finishes, ``on_done`` hears which campaign asked (the
operator marks it dirty: its next pass finds the fit ready). Per campaign one fit runs at a time and only the
latest request waits behind it (a ladder that finished two more runs meanwhile needs only the newest fit); results
are kept (least recently used first out) until asked for again. Workers are spawned, not forked: the operator has
threads and an event loop, which a fork would copy in whatever state they were in. Workers run at a lower CPU
priority than the operator (``FIT_NICENESS``): launching the next Job is what a user waits on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from flopwise.engine.fits import FitRequest, run_fit
from flopwise.fitting.points import FitInputError

log = logging.getLogger("flopwise.operator")

KEEP_RESULTS = 512


FIT_NICENESS = 10
"""How much lower the workers' CPU priority is than the operator's: a fit is throughput (seconds either way), a
reconcile that launches the next Job is latency; on a busy node the fits yield the CPU to it."""


def _lower_priority() -> None:
    """Each worker's initializer (raising one's own niceness needs no privilege)."""
    os.nice(FIT_NICENESS)


def _warm() -> int:
    """Run once in each new worker: the fitting modules imported before the first real fit."""
    import flopwise.engine.analysis  # noqa: F401

    return 0


class FitPool:
    """A callable Fitter backed by ``workers`` processes."""

    def __init__(self, workers: int, on_done: Callable[[str], None] = lambda _owner: None) -> None:
        self.workers = max(1, workers)
        self.on_done = on_done
        self._lock = threading.RLock()  # a future already done runs its callback at once, in the caller
        self._executor: ProcessPoolExecutor | None = None
        self._results: OrderedDict[str, Any] = OrderedDict()  # key → LadderFit or FitInputError
        self._running: dict[str, tuple[str, Future]] = {}  # owner → (key, future)
        self._waiting: dict[str, FitRequest] = {}  # owner → its newest request behind the running one
        self.submitted = 0

    def start(self) -> None:
        """Spawn the workers now (seconds of imports), not on the first campaign's first fit."""
        with self._lock:
            pool = self._pool()
        for _ in range(self.workers):
            pool.submit(_warm)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=self.workers, initializer=_lower_priority,
                                                 mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def __call__(self, request: FitRequest) -> Any:
        key = request.key
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                found = self._results[key]
                if isinstance(found, FitInputError):
                    raise found
                return found
            running = self._running.get(request.owner)
            if running is not None:
                if running[0] != key:
                    self._waiting[request.owner] = request
                return None
            self._submit(request)
            return None

    def _submit(self, request: FitRequest) -> None:
        try:
            future = self._pool().submit(run_fit, request)
        except BrokenProcessPool:  # a worker died (killed for memory, say): a new pool
            log.warning("the fit worker pool broke; starting a new one")
            self._executor = None
            future = self._pool().submit(run_fit, request)
        self.submitted += 1
        self._running[request.owner] = (request.key, future)
        future.add_done_callback(lambda done, req=request: self._done(req, done))

    def _done(self, request: FitRequest, future: Future) -> None:
        with self._lock:
            self._running.pop(request.owner, None)
            error = future.exception()
            if error is None:
                self._results[request.key] = future.result()
            elif isinstance(error, FitInputError):
                self._results[request.key] = error
            else:  # not kept: asked again, it is fitted again
                log.error("a fit for %s failed: %r", request.owner, error)
                if isinstance(error, BrokenProcessPool):
                    self._executor = None
            while len(self._results) > KEEP_RESULTS:
                self._results.popitem(last=False)
            waiting = self._waiting.pop(request.owner, None)
            if waiting is not None and waiting.key not in self._results:
                self._submit(waiting)
        self.on_done(request.owner)

    def stop(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
