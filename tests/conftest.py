"""Shared pytest fixtures."""

from __future__ import annotations

# ----------------------------------------------------------------------------------------------------------------
# The real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager built from Debian's source
# package by hack/control-plane.sh). Tests that take `control_plane` are marked `cluster` automatically.
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import SCRIPT, ControlPlane
from operator_harness import ROOT, Operator


@pytest.fixture(scope="session")
def control_plane():
    """One real control plane for the test session. Builds the binaries first when they are not cached (minutes,
    once); a failed build is a test error. Only FLOPWISE_SKIP_CLUSTER=1 skips."""
    if os.environ.get("FLOPWISE_SKIP_CLUSTER") == "1":
        pytest.skip("FLOPWISE_SKIP_CLUSTER=1: tests against the real control plane are skipped")
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(SCRIPT), "build"], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(
            f"hack/control-plane.sh build failed ({res.returncode}); set FLOPWISE_SKIP_CLUSTER=1 to skip cluster tests."
            f"\n{res.stderr[-6000:]}",
            pytrace=False,
        )
    build_s = time.monotonic() - t0
    cp = ControlPlane.from_cache()
    cp.timings["build_check"] = build_s
    cp.start()
    sys.stderr.write(
        f"\n[control_plane] {cp.server} ready in {cp.timings['total']:.1f} s "
        f"(etcd {cp.timings['etcd']:.1f}, apiserver {cp.timings['apiserver']:.1f}, "
        f"controller-manager {cp.timings['controller_manager']:.1f}; build check {build_s:.1f} s); "
        f"workdir {cp.workdir}\n"
    )
    try:
        yield cp
    finally:
        cp.close()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
        if "node_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.node)


# ----------------------------------------------------------------------------------------------------------------
# A real node (kubelet + containerd + runc + CNI + kube-scheduler) with its own control plane, in namespaces the
# harness makes (tests/node.py). Tests that take `node_cluster` are marked `node`.
@pytest.fixture(scope="session")
def node_cluster():
    """One control plane with a real node for the session. Builds what is missing first (hack/node.sh all:
    kubelet, kube-scheduler, the images; scripts/test.sh has run it already, so this is seconds); a failed build
    or start is a test error with the logs. Only FLOPWISE_SKIP_NODE=1 skips."""
    if os.environ.get("FLOPWISE_SKIP_NODE") == "1":
        pytest.skip("FLOPWISE_SKIP_NODE=1: tests on the real node are skipped")
    from node import NODE_SCRIPT, NodeCluster

    t0 = time.monotonic()
    for command in (["bash", str(SCRIPT), "build"], ["bash", str(NODE_SCRIPT), "all"]):
        res = subprocess.run(command, capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(f"{' '.join(command[1:])} failed ({res.returncode}); set FLOPWISE_SKIP_NODE=1 to skip the "
                        f"node tests.\n{res.stderr[-6000:]}", pytrace=False)
    build_s = time.monotonic() - t0
    try:
        nc = NodeCluster.from_cache().start()
    except Exception as e:
        pytest.fail(f"the real node did not start; set FLOPWISE_SKIP_NODE=1 to skip the node tests.\n{e}",
                    pytrace=False)
    t = nc.timings
    sys.stderr.write(
        f"\n[node_cluster] node Ready in {t['node_total']:.1f} s (control plane {t['control_plane']:.1f}, "
        f"containerd {t['containerd']:.1f}, image import {t['images']:.1f}, kubelet {t['kubelet']:.1f}; "
        f"build check {build_s:.1f} s); workdir {nc.workdir}\n")
    try:
        yield nc
    finally:
        nc.close()
        if nc.cleanup_problems:
            sys.stderr.write(f"[node_cluster] teardown: {nc.cleanup_problems}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    for fixture in ("control_plane", "node_cluster"):
        if rep.failed and fixture in getattr(item, "fixturenames", ()):
            cp = getattr(item, "funcargs", {}).get(fixture)
            if cp is not None:
                rep.sections.append((f"{fixture} logs", cp.logs()))


# ----------------------------------------------------------------------------------------------------------------
# The operator as a subprocess against that control plane (see tests/operator_harness.py).
@pytest.fixture(scope="module")
def crd(control_plane):
    """The control plane with flopwise's CRD installed and established."""
    control_plane.kubectl("apply", "-f", str(ROOT / "crds" / "trainingcampaign.yaml"))
    control_plane.wait_established("trainingcampaigns.flopwise.dev")
    return control_plane


@pytest.fixture(scope="module")
def apis(control_plane):
    """(CoreV1Api, BatchV1Api, CustomObjectsApi) as the cluster admin."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    return client.CoreV1Api(api_client), client.BatchV1Api(api_client), client.CustomObjectsApi(api_client)


def run_operator(crd, tmp_path, *, as_service_account: bool, extra_args: list[str] | None = None):
    """Yields an Operator watching a fresh namespace; stops it and deletes the namespace afterwards."""
    import secrets

    import yaml

    ns = f"op-{secrets.token_hex(3)}"
    crd.kubectl("create", "namespace", ns)
    kubeconfig = None
    if as_service_account:
        from flopwise.kube import rbac

        crd.kubectl("create", "serviceaccount", "-n", ns, "flopwise-operator")
        crd.apply_yaml(yaml.safe_dump(rbac.operator_role(ns)))
        crd.apply_yaml(yaml.safe_dump(rbac.operator_binding("flopwise-operator", ns, ns)))
        kubeconfig = crd.service_account_kubeconfig(ns, "flopwise-operator", create=False)
    op = Operator(crd, ns, tmp_path / "operator.log", kubeconfig, extra_args)
    op.start()
    yield op
    op.stop()
    sys.stderr.write(f"----- operator log (last lines) -----\n{op.tail(150)}\n")  # shown when the test fails
    crd.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture()
def operator(crd, tmp_path):
    """The operator watching a fresh namespace, as the cluster admin."""
    yield from run_operator(crd, tmp_path, as_service_account=False)


@pytest.fixture()
def sa_operator(crd, tmp_path):
    """The operator watching a fresh namespace as a ServiceAccount bound to exactly `flopwise.kube.rbac`'s Role."""
    yield from run_operator(crd, tmp_path, as_service_account=True)


@pytest.fixture(scope="session")
def flopwise_release(node_cluster):
    """The chart installed on the real node (tests/node_campaign.py): the operator runs as a Pod from the
    operator image under the chart's ServiceAccount; token shards and an outputs volume are there for campaigns."""
    from node_campaign import helm, install

    release = install(node_cluster, "flopwise-e2e")
    sys.stderr.write(f"\n[flopwise_release] helm install → operator Ready in {release.figures['install_s']:.1f} s\n")
    yield release
    helm(node_cluster, "uninstall", "fw", "-n", release.namespace)
