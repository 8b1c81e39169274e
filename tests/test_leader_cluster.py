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


# --------------------------------------------------------------------------------------------- metrics of replicas
def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _campaign_series(found: dict) -> int:
    return sum(1 for _, labels in found if any(k == "campaign" for k, _ in labels))


def _leads(port: int) -> bool | None:
    """flopwise_leader of the replica on this port (None while it does not answer yet)."""
    try:
        return _scrape(port)[("flopwise_leader", ())] == 1.0
    except OSError:
        return None


def _rewrite_lease(cp, ns: str, **spec) -> None:
    """Writes these fields into the operator's Lease, reading it again when a renewal got in between (409)."""
    import yaml

    for _ in range(20):
        lease = cp.kubectl_json("get", "lease", "flopwise-operator", "-n", ns)
        lease["spec"].update(spec)
        res = cp.kubectl("replace", "-f", "-", input=yaml.safe_dump(lease), check=False)
        if res.returncode == 0:
            return
        assert "Conflict" in res.stderr, res.stderr
    raise AssertionError("the Lease could not be rewritten")


def test_only_the_leader_exports_campaign_series_and_a_replica_that_loses_the_lease_drops_them(crd, tmp_path) -> None:
    """Two `flopwise operator --leader-election` replicas on the real control plane, each serving metrics: the
    holder of the Lease exports the campaign's series and flopwise_leader 1, the other none of them and 0. The
    Lease taken away (another holder written into it) makes the leader drop every campaign series while it keeps
    running; given back, one replica takes it and exports them again; the leader stopped, the other takes over."""
    import sys

    import yaml

    from cluster import free_port
    from operator_harness import Operator, tiny_campaign

    cp = crd
    ns = f"leader-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", ns)
    replicas: list[Operator] = []
    for name in ("a", "b"):
        port = free_port()
        op = Operator(cp, ns, tmp_path / f"operator-{name}.log", extra_args=[
            "--leader-election", f"--leader-election-namespace={ns}", "--metrics-address=127.0.0.1",
            f"--metrics-port={port}"])
        op.metrics_port = port
        replicas.append(op)
    a, b = replicas
    try:
        a.start()
        cp.wait_for(lambda: _leads(a.metrics_port), timeout=90, what="replica a leads")
        b.start()
        cp.wait_for(lambda: _leads(b.metrics_port) is False, timeout=90, what="replica b answers, not leading")
        cp.apply_yaml(yaml.safe_dump(tiny_campaign("led", ns)))
        phase = ("flopwise_campaign_phase", (("campaign", "led"), ("namespace", ns), ("phase", "Round1")))
        cp.wait_for(lambda: _scrape(a.metrics_port).get(phase) == 1.0, timeout=60, what="the leader exports it")
        leader, follower = _scrape(a.metrics_port), _scrape(b.metrics_port)
        counts = {"leader": _campaign_series(leader), "follower": _campaign_series(follower)}
        assert counts["leader"] >= 30 and counts["follower"] == 0, counts
        assert leader[("flopwise_leader", ())] == 1.0 and follower[("flopwise_leader", ())] == 0.0
        assert leader[("flopwise_jobs_created_total", ())] >= 1 and follower[("flopwise_jobs_created_total", ())] == 0
        assert ("process_resident_memory_bytes", ()) in follower  # the follower's own health is there

        # Another holder is written into the Lease: the leader sees it at its next renewal and stops acting.
        holder = cp.kubectl_json("get", "lease", "flopwise-operator", "-n", ns)["spec"]["holderIdentity"]
        t0 = time.monotonic()
        _rewrite_lease(cp, ns, holderIdentity="intruder", leaseDurationSeconds=3600)
        cp.wait_for(lambda: _campaign_series(_scrape(a.metrics_port)) == 0, timeout=30,
                    what="the replica that lost the Lease drops the campaign's series")
        dropped_s = time.monotonic() - t0
        assert a.proc.poll() is None and _leads(a.metrics_port) is False and _leads(b.metrics_port) is False
        assert _campaign_series(_scrape(b.metrics_port)) == 0

        # Given back (released as a clean shutdown does): one replica takes it and exports the series again.
        _rewrite_lease(cp, ns, holderIdentity=None, leaseDurationSeconds=1)
        new = cp.wait_for(lambda: next((op for op in replicas if _leads(op.metrics_port)), None), timeout=30,
                          what="a replica takes the released Lease")
        other = b if new is a else a
        cp.wait_for(lambda: _campaign_series(_scrape(new.metrics_port)) >= counts["leader"], timeout=60,
                    what="the new leader exports the campaign's series")
        assert _campaign_series(_scrape(other.metrics_port)) == 0 and _leads(other.metrics_port) is False

        # The leader stopped (SIGTERM: it releases the Lease): the other replica takes over and exports them.
        new.stop()
        cp.wait_for(lambda: _leads(other.metrics_port), timeout=30, what="the other replica takes over")
        cp.wait_for(lambda: _campaign_series(_scrape(other.metrics_port)) >= counts["leader"], timeout=60,
                    what="the last replica exports the campaign's series")
        sys.stderr.write(f"\n[leader metrics] campaign series: leader {counts['leader']}, follower "
                         f"{counts['follower']}; first holder {holder}; series dropped {dropped_s:.1f} s after the "
                         f"Lease was taken away\n")
    finally:
        for op in replicas:
            op.stop()
            sys.stderr.write(f"----- {op.log.name} (last lines) -----\n{op.tail(40)}\n")
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
