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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and "control_plane" in getattr(item, "fixturenames", ()):
        cp = getattr(item, "funcargs", {}).get("control_plane")
        if cp is not None:
            rep.sections.append(("control plane logs", cp.logs()))
