"""Leader election on a real coordination.k8s.io/v1 Lease of the test control plane (kube-apiserver 1.20)."""

from __future__ import annotations

import secrets
import time

import pytest

from flopwise.kube.leader import LeaderElection


@pytest.fixture()
def coordination(control_plane):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    ns = f"lease-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    yield client.CoordinationV1Api(api_client), ns
    control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _wait(predicate, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "not reached in time"
        time.sleep(0.1)
    return time.monotonic() - start


def test_one_replica_leads_and_a_crashed_leader_is_replaced_after_one_lease(coordination) -> None:
    api, ns = coordination
    a = LeaderElection(api, namespace=ns, name="op", identity="a", lease_s=4, renew_s=1, margin_s=1)
    b = LeaderElection(api, namespace=ns, name="op", identity="b", lease_s=4, renew_s=1, margin_s=1)
    assert a.try_acquire_or_renew() and a.is_leader()
    assert not b.try_acquire_or_renew() and not b.is_leader()
    a.start()
    b.start()
    time.sleep(2.5)  # several renewals: the leader keeps it, the other waits
    assert a.is_leader() and not b.is_leader()
    lease = api.read_namespaced_lease("op", ns)
    assert lease.spec.holder_identity == "a" and lease.spec.lease_transitions == 0
    a.stop(release=False)  # a crash: the lease is left to expire
    took = _wait(b.is_leader, timeout=15)
    assert not a.is_leader()
    assert took >= 2.0  # b waited for the lease to lapse by its own clock (not at once)
    assert api.read_namespaced_lease("op", ns).spec.holder_identity == "b"
    b.stop(release=True)  # a clean shutdown hands over at once
    c = LeaderElection(api, namespace=ns, name="op", identity="c", lease_s=4, renew_s=1, margin_s=1)
    assert c.try_acquire_or_renew() and c.is_leader()
    assert api.read_namespaced_lease("op", ns).spec.lease_transitions == 2


def test_a_leader_that_cannot_renew_stops_acting_before_the_lease_ends(coordination) -> None:
    api, ns = coordination
    a = LeaderElection(api, namespace=ns, name="op", identity="a", lease_s=3, renew_s=1, margin_s=1)
    assert a.try_acquire_or_renew()

    class Unreachable:
        def __getattr__(self, _name):
            raise ConnectionError("API server unreachable")

    a.api = Unreachable()
    a.start()
    took = _wait(lambda: not a.is_leader(), timeout=10)
    assert took <= 3.0  # lease 3 s − margin 1 s after the last renewal
    a.stop(release=False)
