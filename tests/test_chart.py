"""The Helm chart (charts/flopwise) rendered by the real Helm binary (v4, extracted by `hack/control-plane.sh helm`):
lint, render, schema, labels, least-privilege RBAC equal to `flopwise.kube.rbac`, the restricted security context,
and the copies it must keep in step with the repository (CRD, appVersion, dashboard). No cluster is needed here;
tests/test_chart_cluster.py installs it on the real API server."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from flopwise.kube import rbac

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "flopwise"
DASHBOARD = CHART / "dashboards" / "flopwise.json"
RELEASE, NAMESPACE = "fw", "flopwise-system"


@pytest.fixture(scope="module")
def helm() -> str:
    return subprocess.run(["bash", str(ROOT / "hack" / "control-plane.sh"), "helm"], check=True, text=True,
                          capture_output=True).stdout.strip()


def template(helm: str, *sets: str, check: bool = True) -> subprocess.CompletedProcess:
    args = [a for s in sets for a in ("--set", s)]
    res = subprocess.run([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, *args], text=True,
                         capture_output=True)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def render(helm: str, *sets: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(template(helm, *sets).stdout) if d]


def only(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])
              and namespace in (None, d["metadata"].get("namespace"))]
    return doc


def operator_args(docs: list[dict]) -> list[str]:
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container["args"]


def app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


# ------------------------------------------------------------------------------------------------ lint, render
@pytest.mark.parametrize("sets", [(), ("rbac.scope=cluster", "metrics.serviceMonitor.enabled=true")],
                         ids=["defaults", "cluster-scope"])
def test_helm_lint(helm, sets) -> None:
    args = [a for s in sets for a in ("--set", s)]
    res = subprocess.run([helm, "lint", "--strict", str(CHART), *args], text=True, capture_output=True)
    assert res.returncode == 0 and "0 chart(s) failed" in res.stdout, res.stdout + res.stderr


def test_default_render_is_namespaced_with_leader_election(helm) -> None:
    docs = render(helm)
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRole", "Deployment", "Pod", "Role", "Role",
                                              "RoleBinding", "RoleBinding", "Service", "ServiceAccount"]
    # cluster-wide only: the users' aggregated roles, which grant the operator nothing
    assert [d["metadata"]["name"] for d in docs if "namespace" not in d["metadata"]] == [
        f"{RELEASE}-flopwise-edit", f"{RELEASE}-flopwise-view"]
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs if d["kind"] != "ClusterRole")
    args = operator_args(docs)
    assert f"--namespace={NAMESPACE}" in args and "--all-namespaces" not in args
    assert {"--leader-election", f"--leader-election-namespace={NAMESPACE}",
            "--leader-election-name=flopwise-operator"} <= set(args)
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    sa = only(docs, "ServiceAccount")["metadata"]["name"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/flopwise/operator:{app_version()}"


def test_cluster_scope_renders_a_cluster_role_and_watches_every_namespace(helm) -> None:
    docs = render(helm, "rbac.scope=cluster")
    role, binding = only(docs, "ClusterRole", f"{RELEASE}-flopwise"), only(docs, "ClusterRoleBinding")
    assert "namespace" not in role["metadata"] and binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": only(docs, "ServiceAccount")["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    args = operator_args(docs)
    assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)
    # the only namespaced Role left is the leader-election one
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Role"] == [f"{RELEASE}-flopwise-leader-election"]


def test_watch_namespaces_get_a_role_each_bound_to_the_release_service_account(helm) -> None:
    docs = render(helm, "watchNamespaces={research,ablations}")
    for ns in ("research", "ablations"):
        only(docs, "Role", f"{RELEASE}-flopwise", ns)
        binding = only(docs, "RoleBinding", f"{RELEASE}-flopwise", ns)
        assert binding["subjects"][0]["namespace"] == NAMESPACE  # the ServiceAccount lives with the Deployment
    args = operator_args(docs)
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=research", "--namespace=ablations"]
    assert not [d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == NAMESPACE
                and d["metadata"]["name"] == f"{RELEASE}-flopwise"]


def test_deployment_args_are_options_the_operator_accepts(helm) -> None:
    """Every flag the chart passes is one `flopwise operator` knows (click parses them without running it)."""
    from flopwise.cli.operator_cmd import command

    for sets in [(), ("rbac.scope=cluster", "leaderElection.enabled=false", "operator.verbose=true")]:
        args = operator_args(render(helm, *sets))
        ctx = command.make_context("operator", list(args))
        assert ctx.params["bootstrap_resamples"] == 200 and ctx.params["fit_grid"] == "hoffmann"
        assert ctx.params["workers"] == 8
    ctx = command.make_context("operator", operator_args(render(helm)))
    assert ctx.params["leader_election"] and ctx.params["leader_election_namespace"] == NAMESPACE
    assert ctx.params["metrics_port"] == 9090 and ctx.params["namespaces"] == (NAMESPACE,)


# ------------------------------------------------------------------------------------------------ RBAC
def test_rbac_rules_are_exactly_flopwise_kube_rbac(helm) -> None:
    """The chart's rules are a copy of flopwise.kube.rbac's (the tested truth): any drift fails here."""
    docs = render(helm, "watchNamespaces={a,b}")
    for ns in ("a", "b"):
        assert only(docs, "Role", f"{RELEASE}-flopwise", ns)["rules"] == rbac.operator_rules()
    cluster = render(helm, "rbac.scope=cluster")
    assert only(cluster, "ClusterRole", f"{RELEASE}-flopwise")["rules"] == rbac.operator_rules() + rbac.scanning_rules()
    election = only(docs, "Role", f"{RELEASE}-flopwise-leader-election", NAMESPACE)
    assert election["rules"] == rbac.leader_election_rules()
    assert not [d for d in render(helm, "leaderElection.enabled=false") if "leader-election" in d["metadata"]["name"]]
    assert not [d for d in render(helm, "rbac.create=false") if d["kind"].endswith(("Role", "RoleBinding"))]


# ------------------------------------------------------------------------------------------------ schema
BAD_VALUES = [
    (("replicaCount=-1",), "at '/replicaCount': minimum"),
    (("rbac.scope=bogus",), "at '/rbac/scope': value must be one of 'namespace', 'cluster'"),
    (("bogus=1",), "additional properties 'bogus' not allowed"),
    (("metrics.bogus=1",), "at '/metrics': additional properties 'bogus' not allowed"),
    (("replicaCount=2", "leaderElection.enabled=false"), "at '/replicaCount': maximum: got 2, want 1"),
    (("rbac.scope=cluster", "watchNamespaces={research}"), "at '/watchNamespaces': maxItems"),
    (("watchNamespaces={Not_A_Namespace}",), "at '/watchNamespaces/0'"),
    (("metrics.port=70000",), "at '/metrics/port': maximum"),
    (("image.pullPolicy=Sometimes",), "at '/image/pullPolicy'"),
    (("operator.fitGrid=fine",), "at '/operator/fitGrid'"),
    (("metrics.serviceMonitor.interval=often",), "at '/metrics/serviceMonitor/interval'"),
]


@pytest.mark.parametrize(("sets", "message"), BAD_VALUES, ids=[",".join(sets) for sets, _ in BAD_VALUES])
def test_schema_rejects_a_bad_value_naming_the_field(helm, sets, message) -> None:
    res = template(helm, *sets, check=False)
    assert res.returncode != 0 and "values don't meet the specifications of the schema" in res.stderr, res.stderr
    assert message in res.stderr, res.stderr


def test_several_replicas_are_allowed_under_leader_election(helm) -> None:
    deployment = only(render(helm, "replicaCount=3"), "Deployment")
    assert deployment["spec"]["replicas"] == 3 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    deployment = only(render(helm, "leaderElection.enabled=false"), "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"] if "leader" in a]


def test_an_existing_service_account_must_be_named(helm) -> None:
    res = template(helm, "serviceAccount.create=false", check=False)
    assert res.returncode != 0 and "serviceAccount.name must name an existing ServiceAccount" in res.stderr
    docs = render(helm, "serviceAccount.create=false", "serviceAccount.name=ops")
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    assert {s["name"] for d in docs if d["kind"] == "RoleBinding" for s in d["subjects"]} == {"ops"}


# ------------------------------------------------------------------------------------------------ labels
def test_standard_labels_on_every_object(helm) -> None:
    """Every templated object (the CRD in crds/ is the repository's file, byte for byte, so it is not templated)."""
    extra = ["dashboard.enabled=true"] if DASHBOARD.exists() else []
    for sets in [(), ("rbac.scope=cluster", "metrics.serviceMonitor.enabled=true",
                      "metrics.prometheusRule.enabled=true", *extra)]:
        docs = render(helm, *sets)
        for doc in docs:
            labels = doc["metadata"]["labels"]
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            assert labels["app.kubernetes.io/name"] == "flopwise", where
            assert labels["app.kubernetes.io/instance"] == RELEASE, where
            assert labels["app.kubernetes.io/version"] == app_version(), where
            assert labels["app.kubernetes.io/managed-by"] == "Helm", where
            assert labels["app.kubernetes.io/component"] in ("operator", "metrics", "dashboard", "rbac", "test"), where
        pod = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert pod["app.kubernetes.io/component"] == "operator" and pod["app.kubernetes.io/instance"] == RELEASE


# ------------------------------------------------------------------------------------------------ Deployment
def test_restricted_security_context_probes_and_resources(helm) -> None:
    pod = only(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001 and sc["runAsGroup"] == 10001
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged")
    # the only writable place is the /tmp emptyDir; no hostPath of any kind (restricted forbids them)
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    # both probes are kopf's liveness endpoint, which the operator serves on the port named health
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]


def test_metrics_service_and_service_monitor(helm) -> None:
    """The ServiceMonitor is render-tested only: its CRD (Prometheus Operator) cannot be installed offline."""
    docs = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    service, monitor, deployment = only(docs, "Service"), only(docs, "ServiceMonitor"), only(docs, "Deployment")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"--metrics-address=0.0.0.0", "--metrics-port=9090"} <= set(container["args"])
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # the campaign's `namespace` label must survive the Prometheus Operator's target labels (dashboard filter)
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert not [d for d in render(helm) if d["kind"] == "ServiceMonitor"]  # off by default
    off = render(helm, "metrics.enabled=false")
    assert not [d for d in off if d["kind"] == "Service"]
    assert not [a for a in operator_args(off) if a.startswith("--metrics")]


def test_dashboard_config_map_holds_the_dashboard_file_for_grafanas_sidecar(helm) -> None:
    if not DASHBOARD.exists():  # the dashboard JSON is written separately; until then enabling it says so
        res = template(helm, "dashboard.enabled=true", check=False)
        assert res.returncode != 0 and "dashboards/flopwise.json" in res.stderr, res.stderr
        return
    cm = only(render(helm, "dashboard.enabled=true"), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"flopwise.json": DASHBOARD.read_text()}
    cm = only(render(helm, "dashboard.enabled=true", "dashboard.label=my_dashboards", "dashboard.labelValue=yes",
                     "dashboard.namespace=monitoring"), "ConfigMap")
    assert cm["metadata"]["labels"]["my_dashboards"] == "yes" and "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert not [d for d in render(helm) if d["kind"] == "ConfigMap"]  # off by default


# ------------------------------------------------------------------------------------------------ copies
def test_chart_crd_is_the_repositorys_crd() -> None:
    stale = ("charts/flopwise/crds/trainingcampaign.yaml differs from crds/trainingcampaign.yaml: run "
             "`cp crds/trainingcampaign.yaml charts/flopwise/crds/`")
    assert (CHART / "crds" / "trainingcampaign.yaml").read_bytes() == (ROOT / "crds" / "trainingcampaign.yaml"
                                                                       ).read_bytes(), stale
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["trainingcampaign.yaml"]


def test_app_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert app_version() == version, "set appVersion in charts/flopwise/Chart.yaml to pyproject.toml's version"


def test_notes_tell_what_to_do_next(helm) -> None:
    res = subprocess.run([helm, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client"], text=True,
                         capture_output=True)
    assert res.returncode == 0, res.stderr
    notes = res.stdout.split("NOTES:", 1)[1]
    assert f"kubectl rollout status deployment/{RELEASE}-flopwise -n {NAMESPACE}" in notes
    assert f"kubectl get trainingcampaigns -n {NAMESPACE}" in notes and f"watches TrainingCampaigns in: {NAMESPACE}" \
        in notes


# ------------------------------------------------------------------------------------------------ users' roles
def test_aggregated_cluster_roles_let_edit_create_campaigns_and_view_read_them(helm) -> None:
    """Kubernetes' built-in `edit`/`admin` and `view` roles pick these up through their aggregate-to-* labels
    (tests/test_chart_cluster.py shows it on the real API server). They are bound to nobody."""
    for sets in [(), ("rbac.scope=cluster",)]:
        docs = render(helm, *sets)
        edit = only(docs, "ClusterRole", f"{RELEASE}-flopwise-edit")
        view = only(docs, "ClusterRole", f"{RELEASE}-flopwise-view")
        aggregate = "rbac.authorization.k8s.io/aggregate-to-"
        assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(aggregate) and v == "true"} == {
            aggregate + "edit", aggregate + "admin"}
        assert {k for k, v in view["metadata"]["labels"].items() if k.startswith(aggregate) and v == "true"} == {
            aggregate + "view", aggregate + "edit", aggregate + "admin"}
        assert edit["rules"] == [{"apiGroups": ["flopwise.dev"], "resources": ["trainingcampaigns"],
                                  "verbs": ["create", "update", "patch", "delete", "deletecollection"]}]
        assert view["rules"] == [{"apiGroups": ["flopwise.dev"], "resources": ["trainingcampaigns",
                                                                               "trainingcampaigns/status"],
                                  "verbs": ["get", "list", "watch"]}]
        bound = {d["roleRef"]["name"] for d in docs if d["kind"].endswith("Binding")}
        assert not bound & {edit["metadata"]["name"], view["metadata"]["name"]}
    for off in ("rbac.aggregateToDefaultRoles=false", "rbac.create=false"):
        assert not [d for d in render(helm, off) if d["metadata"]["name"].endswith(("-edit", "-view"))]


# ------------------------------------------------------------------------------------------------ helm test
CHECK_SCRIPT = CHART / "files" / "check-metrics.py"


def test_helm_test_hook_is_a_restricted_pod_that_runs_the_check_on_the_metrics_service(helm) -> None:
    from pod_security import restricted_violations

    docs = render(helm)
    pod = only(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert restricted_violations({"metadata": pod["metadata"], "spec": pod["spec"]}) == []
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    (operator,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == operator["image"]  # the operator image: its python, nothing else to pull
    assert container["command"] == ["python", "-c", CHECK_SCRIPT.read_text()]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"FLOPWISE_METRICS_URL": f"http://{RELEASE}-flopwise-metrics.{NAMESPACE}.svc:9090/metrics",
                   "FLOPWISE_TEST_TIMEOUT_SECONDS": "120"}
    service = only(docs, "Service")
    assert service["metadata"]["name"] == f"{RELEASE}-flopwise-metrics" and service["spec"]["ports"][0]["port"] == 9090
    assert not [d for d in render(helm, "tests.enabled=false") if d["kind"] == "Pod"]
    assert not [d for d in render(helm, "metrics.enabled=false") if d["kind"] == "Pod"]  # nothing to check


class _Exposition:
    """An HTTP server on loopback answering /metrics with each of `answers` in turn (the last one repeated)."""

    def __init__(self, answers: list[str]):
        import http.server
        import threading

        outer = self
        self.answers, self.requests = answers, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.answers[min(outer.requests, len(outer.answers) - 1)].encode()
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_check(container: dict, url: str, timeout_s: int) -> subprocess.CompletedProcess:
    """The hook's container command as rendered, run here with its environment (the URL pointed at loopback)."""
    import os
    import sys

    env = {e["name"]: e["value"] for e in container["env"]} | {"FLOPWISE_METRICS_URL": url,
                                                               "FLOPWISE_TEST_TIMEOUT_SECONDS": str(timeout_s)}
    command = [sys.executable if container["command"][0] == "python" else container["command"][0],
               *container["command"][1:]]
    return subprocess.run(command, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
                          timeout=timeout_s + 30)


def test_the_hook_passes_on_a_leading_operator_and_fails_clearly_otherwise(helm) -> None:
    from prometheus_client import generate_latest

    from flopwise.api.status import TrainingCampaignStatus
    from flopwise.kube import metrics

    metrics.follow_leadership(lambda: True)
    metrics.observe_campaign("research", "hook", TrainingCampaignStatus())
    try:
        leading = generate_latest(metrics.REGISTRY).decode()  # a real exposition of the operator's registry
    finally:
        metrics.forget_campaign("research", "hook")
    standby = re.sub(r"^flopwise_leader 1\.0$", "flopwise_leader 0.0", leading, flags=re.MULTILINE)
    assert standby != leading
    cases = [([leading], 0, "ok: {url} answers; this replica leads and exports 1 campaign(s)"),
             ([standby, standby, leading], 0, "this replica leads"),  # the Service reached a standby first
             ([standby], 1, "FAIL: no leading operator replica answered in time; last: the replica that answered "
                            "waits for the leader Lease (flopwise_leader 0)"),
             (["<html>hello</html>"], 1, "FAIL: {url} answers, but without flopwise_leader")]
    (container,) = only(render(helm), "Pod")["spec"]["containers"]
    for answers, code, says in cases:
        server = _Exposition(answers)
        try:
            res = run_check(container, server.url, timeout_s=3)
        finally:
            server.close()
        assert res.returncode == code and says.format(url=server.url) in res.stdout, (answers[-1][:80], res)
    from cluster import free_port

    url = f"http://127.0.0.1:{free_port()}/metrics"
    res = run_check(container, url, timeout_s=1)
    assert res.returncode == 1 and f"last: {url}: <urlopen error [Errno 111] Connection refused>" in res.stdout, res
