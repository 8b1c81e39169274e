"""The Helm chart on the real control plane (kube-apiserver 1.20 + kube-controller-manager, tests/cluster.py):
`helm install` (Helm v4) is accepted by the API server, and its RBAC is tested for real: the operator, run with the
token of the ServiceAccount the chart created (not the admin) and with the Deployment's own flags, completes a
campaign; with one verb taken out of the chart's Role it fails visibly and launches nothing.

This control plane has no node (nor a ReplicaSet controller), so the Deployment's Pod is never scheduled: the
operator runs as a subprocess with the chart's ServiceAccount token and flags (tests/operator_harness.py), and the
test plays the node for the training Pods, as in tests/test_operator_cluster.py — quick, and the RBAC checks need
no more. The chart's Deployment running the operator image on a real node is tests/test_node_e2e.py.
"""

from __future__ import annotations

import json
import re
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


# ------------------------------------------------------------------------------------------------ users' roles
def test_a_namespace_user_with_edit_creates_campaigns_and_one_with_view_only_reads_them(control_plane, release,
                                                                                        tmp_path) -> None:
    """The chart's aggregated ClusterRoles, put into Kubernetes' built-in roles by the real clusterrole-aggregation
    controller: users bound (by RoleBinding, in one namespace) to `edit` or `admin` create and delete campaigns,
    one bound to `view` reads them and is refused a create, one with nothing is refused a read. Requests are made
    as each user (kubectl --as, which the API server authorizes exactly as that user's own requests)."""
    cp = control_plane
    team = f"team-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", team)
    try:
        for user, role in (("alice", "edit"), ("dave", "admin"), ("bob", "view")):
            cp.kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}",
                       "-n", team)

        def aggregated(role: str, verb: str) -> bool:
            rules = cp.kubectl_json("get", "clusterrole", role).get("rules") or []
            return any("trainingcampaigns" in r.get("resources", []) and verb in r.get("verbs", []) for r in rules)

        for role, verb in (("edit", "create"), ("admin", "create"), ("view", "list"), ("edit", "list")):
            cp.wait_for(lambda role=role, verb=verb: aggregated(role, verb), timeout=30,
                        what=f"the {role} role aggregates {verb} on trainingcampaigns")

        def as_user(user: str, *args: str, **kw):
            return cp.kubectl(f"--as={user}", "-n", team, *args, check=False, **kw)

        made = as_user("alice", "create", "-f", "-", input=yaml.safe_dump(tiny_campaign("alices", team)))
        assert made.returncode == 0, made.stderr
        made = as_user("dave", "create", "-f", "-", input=yaml.safe_dump(tiny_campaign("daves", team)))
        assert made.returncode == 0, made.stderr
        refused = as_user("bob", "create", "-f", "-", input=yaml.safe_dump(tiny_campaign("bobs", team)))
        assert refused.returncode != 0 and 'User "bob" cannot create resource "trainingcampaigns" in API group ' \
            f'"flopwise.dev" in the namespace "{team}"' in refused.stderr, refused.stderr
        listed = as_user("bob", "get", "trainingcampaigns", "-o", "name")
        assert listed.returncode == 0 and set(listed.stdout.split()) == {
            "trainingcampaign.flopwise.dev/alices", "trainingcampaign.flopwise.dev/daves"}, listed
        assert as_user("bob", "delete", "trainingcampaign", "alices").returncode != 0
        for user in ("alice", "bob"):  # the status is the operator's alone
            patched = as_user(user, "patch", "trainingcampaign", "alices", "--subresource=status", "--type=merge",
                              "-p", '{"status": {"phase": "Succeeded"}}')
            assert patched.returncode != 0 and "forbidden" in patched.stderr.lower(), (user, patched.stderr)
        nobody = as_user("carol", "get", "trainingcampaigns")
        assert nobody.returncode != 0 and 'User "carol" cannot list resource "trainingcampaigns"' in nobody.stderr
        elsewhere = cp.kubectl("--as=alice", "-n", release[0], "get", "trainingcampaigns", check=False)
        assert elsewhere.returncode != 0  # bound in one namespace only
        assert as_user("alice", "delete", "trainingcampaign", "alices", "daves").returncode == 0
    finally:
        cp.kubectl("delete", "namespace", team, "--wait=false", check=False)


# ------------------------------------------------------------------------------------------------ helm test
def _run_hook_as_the_node(cp, ns: str, pod_name: str, metrics_url: str, timeout_s: int) -> int:
    """Plays the kubelet for `helm test`'s Pod: its command, as the API server holds it, is run here with its
    environment but the metrics URL pointed at the operator on loopback (there is no Service proxy either), and
    its exit code and output are reported in the Pod's status. Returns the exit code."""
    import os
    import time as clock

    pod = cp.wait_for(lambda: cp.kubectl_json("get", "pod", pod_name, "-n", ns), timeout=60,
                      what="helm test's Pod")
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]} | {"FLOPWISE_METRICS_URL": metrics_url,
                                                               "FLOPWISE_TEST_TIMEOUT_SECONDS": str(timeout_s)}
    command = [sys.executable if container["command"][0] == "python" else container["command"][0],
               *container["command"][1:]]
    ran = subprocess.run(command, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
                         timeout=timeout_s + 60)
    now = clock.strftime("%Y-%m-%dT%H:%M:%SZ", clock.gmtime())
    status = {"status": {"phase": "Succeeded" if ran.returncode == 0 else "Failed", "containerStatuses": [{
        "name": container["name"], "image": container["image"], "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": ran.returncode, "reason": "Completed" if ran.returncode == 0 else "Error",
                                 "message": (ran.stdout + ran.stderr)[-4000:], "startedAt": now,
                                 "finishedAt": now}}}]}}
    cp.kubectl("patch", "pod", pod_name, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    return ran.returncode


def test_helm_test_passes_with_a_leading_operator_and_fails_without_one(control_plane, helm, release,
                                                                       tmp_path) -> None:
    """`helm test` (Helm v4) creates the hook Pod on the real API server and waits for its phase. No kubelet runs
    here, so the test plays the node for that one Pod (_run_hook_as_the_node); the operator is the chart's
    ServiceAccount with the Deployment's flags, leader election included."""
    cp, (ns, _) = control_plane, release
    pod_name = f"{FULLNAME}-test-metrics"
    op = start_operator(cp, ns, tmp_path / "operator.log")
    port = next(a.split("=", 1)[1] for a in op.extra_args if a.startswith("--metrics-port="))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        def leads() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return "\nflopwise_leader 1.0\n" in response.read().decode()
            except OSError:
                return False

        cp.wait_for(leads, timeout=90, what="the operator leads")
        helm_test = subprocess.Popen([helm, "test", RELEASE, "-n", ns, "--timeout", "120s", "--kubeconfig",
                                      str(cp.kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        try:
            assert _run_hook_as_the_node(cp, ns, pod_name, url, timeout_s=60) == 0
            out, _ = helm_test.communicate(timeout=120)
        finally:
            helm_test.kill()
        assert helm_test.returncode == 0, out
        assert re.search(rf"TEST SUITE:\s+{pod_name}", out) and re.search(r"Phase:\s+Succeeded", out), out
        # hook-succeeded: Helm deletes the Pod it made
        cp.wait_for(lambda: cp.kubectl("get", "pod", pod_name, "-n", ns, check=False).returncode != 0, timeout=60,
                    what="the succeeded test Pod deleted")
    finally:
        stop_operator(op)
    # No operator answers: the same hook fails, and so does `helm test`.
    helm_test = subprocess.Popen([helm, "test", RELEASE, "-n", ns, "--timeout", "120s", "--kubeconfig",
                                  str(cp.kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _run_hook_as_the_node(cp, ns, pod_name, url, timeout_s=3) == 1
        out, _ = helm_test.communicate(timeout=120)
    finally:
        helm_test.kill()
    assert helm_test.returncode != 0 and pod_name in out, out
    pod = cp.kubectl_json("get", "pod", pod_name, "-n", ns)  # a failed test Pod stays, for its message
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert "FAIL: no leading operator replica answered in time" in message, message
