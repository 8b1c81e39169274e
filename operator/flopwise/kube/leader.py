"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it, so that several
operator replicas can run (fast fail-over) while exactly one acts.

The holder renews the Lease every `renew_s`; another replica takes it over only after it has seen the Lease's
record unchanged for a whole `lease_s` by its own clock (so clocks need not agree). A leader that cannot renew
stops acting once `lease_s − margin` has passed since its last successful renewal, before anyone may take over.
Even if two replicas ever acted at once, nothing breaks: status writes are guarded by resourceVersion and Job
names are deterministic; election only spares the duplicate work.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("flopwise.operator")


def _micro_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


class LeaderElection:
    def __init__(self, coordination: Any, *, namespace: str, name: str, identity: str | None = None,
                 lease_s: float = 15.0, renew_s: float = 4.0, margin_s: float = 3.0,
                 on_change: Callable[[bool], None] = lambda _leading: None):
        self.api, self.namespace, self.name = coordination, namespace, name
        self.identity = identity or default_identity()
        self.lease_s, self.renew_s, self.margin_s = lease_s, renew_s, margin_s
        self.on_change = on_change
        self._renewed_at = float("-inf")  # monotonic time of our last successful acquire/renew
        self._observed: tuple[Any, ...] | None = None  # the other holder's record as last seen
        self._observed_at = 0.0
        self._leading = False
        self._stop = threading.Event()

    def is_leader(self) -> bool:
        return self._leading and time.monotonic() < self._renewed_at + self.lease_s - self.margin_s

    def start(self) -> None:
        threading.Thread(target=self._loop, name="flopwise-leader-election", daemon=True).start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if release and self.is_leader():
            try:  # hand over at once instead of making the next leader wait a whole lease
                lease = self.api.read_namespaced_lease(self.name, self.namespace)
                if lease.spec.holder_identity == self.identity:
                    lease.spec.holder_identity = None
                    lease.spec.lease_duration_seconds = 1
                    self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            except Exception as error:  # best effort: the lease expires anyway
                log.warning("could not release the leader lease: %s", error)
        self._set(False)

    def _set(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            log.info("leader election: %s %s/%s", "acquired" if leading else "lost", self.namespace, self.name)
            self.on_change(leading)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as error:
                log.warning("leader election: %s", error)
            if self._leading and not self.is_leader():
                self._set(False)  # could not renew in time: stop acting before anyone may take over
            self._stop.wait(self.renew_s if self._leading else max(1.0, self.renew_s / 2))

    def try_acquire_or_renew(self) -> bool:
        """One round: create, renew or take over the Lease. True when this replica holds it afterwards."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        now_wall, now = time.time(), time.monotonic()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                                  spec=self._spec(now_wall, acquired=True, transitions=0))
            try:
                self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as create_error:
                if create_error.status == 409:
                    return False  # another replica created it first
                raise
            self._renewed_at = now
            self._set(True)
            return True
        spec = lease.spec
        holder = spec.holder_identity
        record = (holder, spec.renew_time, spec.lease_duration_seconds, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if holder and holder != self.identity:
            duration = spec.lease_duration_seconds or self.lease_s
            if now < self._observed_at + duration:
                self._set(False)
                return False  # held, and renewed within a lease by our clock
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        lease.spec = self._spec(now_wall, acquired=holder != self.identity, transitions=transitions,
                                acquire_time=spec.acquire_time)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False  # someone else wrote it meanwhile: look again next round
            raise
        self._renewed_at = now
        self._set(True)
        return True

    def _spec(self, now_wall: float, *, acquired: bool, transitions: int, acquire_time: Any = None) -> Any:
        from kubernetes import client

        stamp = _micro_time(now_wall)
        return client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=int(self.lease_s),
                                  acquire_time=stamp if acquired or acquire_time is None else acquire_time,
                                  renew_time=stamp, lease_transitions=transitions)
