"""The Helm chart on the real control plane (kube-apiserver 1.20 + kube-controller-manager, tests/cluster.py):
`helm install` (Helm v4) is accepted by the API server, and its RBAC is tested for real: the operator, run with the
token of the ServiceAccount the chart created (not the admin) and with the Deployment's own flags, completes a
campaign; with one verb taken out of the chart's Role it fails visibly and launches nothing.

No kubelet can run here, so the Deployment's Pod is never scheduled (nor is there a ReplicaSet controller): the
operator runs as a subprocess with the chart's ServiceAccount token and flags (tests/operator_harness.py), and the
test plays the node for the training Pods, as in tests/test_operator_cluster.py. Everything else is real.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from cluster import free_port
from flopwise.kube import rbac
from operator_harness import MANAGED, Node, Operator, check_finished, drive, status_of, tiny_campaign

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "flopwise"
RELEASE = "fw"
FULLNAME = f"{RELEASE}-flopwise"  # the ServiceAccount, Role, RoleBinding and Deployment of the release


@pytest.fixture(scope="module")
def helm() -> str:
    return subprocess.run(["bash", str(ROOT / "hack" / "control-plane.sh"), "helm"], check=True, text=True,
                          capture_output=True).stdout.strip()


def run_helm(cp, helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args, "--kubeconfig", str(cp.kubeconfig)], text=True, capture_output=True,
                          timeout=120)


@pytest.fixture(scope="module")
def release(control_plane, helm):
    """`helm install` of the chart, with its defaults, into a fresh namespace. Helm installs the CRD from the
    chart's crds/ unless an earlier test module has (it is the same file, byte for byte)."""
    cp = control_plane
    ns = f"chart-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", ns)
    extra = ["--set", "dashboard.enabled=true"] if (CHART / "dashboards" / "flopwise.json").exists() else []
    installed = run_helm(cp, helm, "install", RELEASE, str(CHART), "-n", ns, *extra)
    assert installed.returncode == 0, installed.stderr + installed.stdout
    cp.wait_established("trainingcampaigns.flopwise.dev")
    yield ns, installed
    run_helm(cp, helm, "uninstall", RELEASE, "-n", ns)
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def start_operator(cp, ns: str, log: Path) -> Operator:
    """The operator as the chart's ServiceAccount, with the installed Deployment's flags; only what must differ on
    a shared test machine differs (loopback ports, the small fit grid and bootstrap the harness always uses)."""
    deployment = cp.kubectl_json("get", "deployment", FULLNAME, "-n", ns)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    harness_sets = ("--namespace", "--liveness", "--bootstrap-resamples", "--fit-grid")
    args = [a for a in container["args"] if not a.startswith(harness_sets)]
    assert "--leader-election" in args and f"--namespace={ns}" in container["args"], container["args"]
    args = [f"--metrics-port={free_port()}" if a.startswith("--metrics-port=") else
            "--metrics-address=127.0.0.1" if a.startswith("--metrics-address=") else a for a in args]
    kubeconfig = cp.service_account_kubeconfig(ns, FULLNAME, create=False)
    op = Operator(cp, ns, log, kubeconfig, args)
    op.start()
    return op


def stop_operator(op: Operator) -> None:
    op.stop()
    sys.stderr.write(f"----- operator log (last lines) -----\n{op.tail(80)}\n")  # shown when the test fails


def test_helm_install_is_accepted_by_the_api_server(control_plane, helm, release) -> None:
    cp, (ns, installed) = control_plane, release
    assert "STATUS: deployed" in installed.stdout and f"kubectl rollout status deployment/{FULLNAME}" in \
        installed.stdout
    role = cp.kubectl_json("get", "role", FULLNAME, "-n", ns)
    assert role["rules"] == rbac.operator_rules()
    binding = cp.kubectl_json("get", "rolebinding", f"{FULLNAME}-leader-election", "-n", ns)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": ns}]
    deployment = cp.kubectl_json("get", "deployment", FULLNAME, "-n", ns)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    service = cp.kubectl_json("get", "service", f"{FULLNAME}-metrics", "-n", ns)
    assert service["spec"]["ports"][0]["name"] == "metrics"
    dashboard = CHART / "dashboards" / "flopwise.json"
    if dashboard.exists():  # installed by the fixture when the dashboard exists
        cm = cp.kubectl_json("get", "configmap", f"{FULLNAME}-dashboard", "-n", ns)
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["data"] == {"flopwise.json": dashboard.read_text()}
    # cluster scope, validated by the real server without granting anything cluster-wide
    rendered = run_helm(cp, helm, "template", "fw-cluster", str(CHART), "-n", ns, "--set", "rbac.scope=cluster")
    assert rendered.returncode == 0, rendered.stderr
    dry = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.stdout, check=False)
    assert dry.returncode == 0, dry.stderr + dry.stdout
    assert "clusterrole.rbac.authorization.k8s.io/fw-cluster-flopwise created (server dry run)" in dry.stdout
    # a bad value fails the install itself, naming the field
    bad = run_helm(cp, helm, "install", "bad", str(CHART), "-n", ns, "--set", "rbac.scope=bogus")
    assert bad.returncode != 0 and "at '/rbac/scope'" in bad.stderr, bad.stderr


def test_operator_as_the_charts_service_account_completes_a_campaign(control_plane, release, apis, tmp_path) -> None:
    cp, (ns, _) = control_plane, release
    core, batch, _ = apis
    op = start_operator(cp, ns, tmp_path / "operator.log")
    try:
        doc = tiny_campaign("chart-rbac", ns)
        cp.apply_yaml(yaml.safe_dump(doc))
        status = drive(cp, Node(core, batch, ns), ns, "chart-rbac", timeout=240)
        check_finished(status, doc["spec"]["budget"]["flops"])
        assert status.run_counts.succeeded == len(status.runs)
        assert not [c for c in status.conditions if c.reason == "Forbidden"], status.conditions
        # it was elected through the Lease the chart lets it hold, and serves the metrics the Service points at
        lease = cp.kubectl_json("get", "lease", "flopwise-operator", "-n", ns)
        assert lease["spec"]["holderIdentity"]
        port = next(a.split("=", 1)[1] for a in op.extra_args if a.startswith("--metrics-port="))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
        assert "forbidden" not in op.log.read_text().lower()
    finally:
        stop_operator(op)
        cp.kubectl("delete", "trainingcampaign", "chart-rbac", "-n", ns, "--wait=false", check=False)


def test_a_verb_removed_from_the_role_fails_visibly_and_launches_nothing(control_plane, release, apis,
                                                                        tmp_path) -> None:
    """The chart's Role without `create` on jobs: the operator logs the API server's refusal and shows it on the
    campaign (Degraded, reason Forbidden), creates no Job; given the verb back, it launches."""
    cp, (ns, _) = control_plane, release
    _, batch, _ = apis
    role = cp.kubectl_json("get", "role", FULLNAME, "-n", ns)
    lacking = [dict(r, verbs=[v for v in r["verbs"] if v != "create"]) if r["resources"] == ["jobs"] else r
               for r in rbac.operator_rules()]
    assert lacking != rbac.operator_rules()
    cp.kubectl("replace", "-f", "-", input=yaml.safe_dump(dict(role, rules=lacking)))
    op = start_operator(cp, ns, tmp_path / "operator.log")
    name = "chart-forbidden"
    try:
        cp.apply_yaml(yaml.safe_dump(tiny_campaign(name, ns)))
        line = cp.wait_for(lambda: next((x for x in op.log.read_text().splitlines()
                                         if "forbidden" in x.lower() and 'cannot create resource "jobs"' in x), None),
                           timeout=90, what="the refusal in the operator log")
        assert name in line and f"system:serviceaccount:{ns}:{FULLNAME}" in line, line
        degraded = cp.wait_for(lambda: next((c for c in status_of(cp, ns, name).conditions
                                             if c.type == "Degraded" and c.reason == "Forbidden"), None),
                               timeout=60, what="condition Degraded/Forbidden on the campaign")
        assert degraded.status == "True" and 'cannot create resource "jobs"' in degraded.message, degraded
        assert not batch.list_namespaced_job(ns, label_selector=f"flopwise.dev/campaign={name}").items
        status = status_of(cp, ns, name)
        assert status.ledger.spent_flops == 0, status.ledger
        # the verb given back (the chart's Role as installed), the same operator launches without a restart
        cp.kubectl("replace", "-f", "-", input=yaml.safe_dump(cp.kubectl_json("get", "role", FULLNAME, "-n", ns)
                                                              | {"rules": role["rules"]}))
        cp.wait_for(lambda: batch.list_namespaced_job(ns, label_selector=f"{MANAGED},flopwise.dev/campaign={name}"
                                                      ).items, timeout=120, what="a Job once create is granted")
        cp.wait_for(lambda: any(c.type == "Degraded" and c.status == "False" for c in
                                status_of(cp, ns, name).conditions), timeout=60, what="Degraded cleared")
    finally:
        stop_operator(op)
        cp.kubectl("replace", "-f", "-", input=yaml.safe_dump(cp.kubectl_json("get", "role", FULLNAME, "-n", ns)
                                                              | {"rules": role["rules"]}), check=False)
        cp.kubectl("delete", "trainingcampaign", name, "-n", ns, "--wait=false", check=False)
