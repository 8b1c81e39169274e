"""The operator test harness, shared by every test that runs `flopwise operator` against the real control plane
(etcd + kube-apiserver 1.20 + kube-controller-manager with the Job and garbage-collector controllers).

These tests play the NODE and nothing else (tests/node.py runs a real one, for tests/test_node_*.py; playing
it reaches states quickly and exactly: results at a known law, a node answering at once, hundreds of campaigns):
`Node` finds the Pods the real Job controller created and reports each one's container as a kubelet would,
through the Pod's `status` subresource, with a termination message that is a RunSummary whose losses follow a
known law. The API server, the Job controller, the garbage collector and the operator are all real. Fixtures live
in conftest.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cluster import free_port
from flopwise.api.status import TrainingCampaignStatus
from flopwise.contract import RunSpec
from synthetic import summary_for

ROOT = Path(__file__).resolve().parents[1]
MANAGED = "app.kubernetes.io/managed-by=flopwise"
RUN_ID = "flopwise.dev/run-id"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class Operator:
    """`python -m flopwise.cli.operator_cmd --namespace NS` as a subprocess with the control plane's kubeconfig."""

    def __init__(self, cp, namespace: str, log: Path, kubeconfig: Path | None = None,
                 extra_args: list[str] | None = None):
        self.cp, self.namespace, self.log, self.kubeconfig = cp, namespace, log, kubeconfig
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.port = free_port()

    def liveness(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as response:
            return response.status

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        out.write(f"\n=== start {self.starts}\n".encode())
        out.flush()
        env = self.cp.env(self.kubeconfig)
        env["PYTHONPATH"] = str(ROOT / "operator")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flopwise.cli.operator_cmd", "--namespace", self.namespace,
             "--bootstrap-resamples", "8", "--fit-grid", "coarse",
             "--liveness", f"http://127.0.0.1:{self.port}/healthz", *self.extra_args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
            start_new_session=True, preexec_fn=_die_with_parent)
        out.close()
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def tiny_campaign(name: str, namespace: str) -> dict:
    doc = yaml.safe_load((ROOT / "tests" / "data" / "tiny-campaign.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["dataset"] = {"path": "/datasets/tiny", "claimName": "tiny-tokens"}
    doc["spec"]["gpuPool"]["maxConcurrentGpus"] = 2
    return doc


def campaign(cp, ns: str, name: str) -> dict:
    return cp.kubectl_json("get", "trainingcampaign", name, "-n", ns)


def status_of(cp, ns: str, name: str) -> TrainingCampaignStatus:
    return TrainingCampaignStatus.model_validate(campaign(cp, ns, name).get("status") or {})


class Node:
    """Plays the kubelet for the campaign's Pods: each Pending Pod the Job controller made is reported finished,
    its termination message the RunSummary its RunSpec (read from the run's ConfigMap) would produce."""

    def __init__(self, core, batch, namespace: str):
        self.core, self.batch, self.namespace = core, batch, namespace
        self.done: set[str] = set()
        self.pods_per_run: dict[str, set[str]] = {}
        self.job_uids_per_run: dict[str, set[str]] = {}

    def jobs(self) -> list:
        """The Jobs now, each one's uid remembered: every Job ever seen counts towards duplicates."""
        found = self.batch.list_namespaced_job(self.namespace, label_selector=MANAGED).items
        for job in found:
            self.job_uids_per_run.setdefault(job.metadata.annotations[RUN_ID], set()).add(job.metadata.uid)
        return found

    def step(self, *, skip: set[str] = frozenset()) -> int:
        self.jobs()
        finished = 0
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=MANAGED).items:
            run_id = pod.metadata.annotations[RUN_ID]
            self.pods_per_run.setdefault(run_id, set()).add(pod.metadata.uid)
            if pod.metadata.uid in self.done or pod.status.phase != "Pending" or run_id in skip:
                continue
            volume = next(v for v in pod.spec.volumes if v.name == "run-spec")
            cm = self.core.read_namespaced_config_map(volume.config_map.name, self.namespace)
            spec = RunSpec.model_validate(json.loads(cm.data["spec.json"]))
            assert spec.run_id == run_id
            self.finish(pod, summary_for(spec).to_message())
            finished += 1
        return finished

    def finish(self, pod, message: str, exit_code: int = 0) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [{
            "name": "trainer", "image": pod.spec.containers[0].image, "imageID": "", "ready": False,
            "restartCount": 0, "state": {"terminated": {
                "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "message": message,
                "startedAt": now, "finishedAt": now}}}]}}
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, status)
        self.done.add(pod.metadata.uid)


def drive(cp, node: Node, ns: str, name: str, *, timeout: float, between=None,
          skip: set[str] = frozenset()) -> TrainingCampaignStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node.step(skip=skip)
        if between is not None:
            between()
        body = campaign(cp, ns, name)
        phase = (body.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return TrainingCampaignStatus.model_validate(body["status"])
        time.sleep(0.5)
    raise TimeoutError(f"campaign {ns}/{name} did not finish in {timeout} s; status: "
                       f"{json.dumps(campaign(cp, ns, name).get('status', {}).get('runCounts'))}")


def check_finished(status: TrainingCampaignStatus, budget: float) -> None:
    assert status.phase == "Succeeded", status.message
    assert status.law is not None and status.law.n_runs >= 4
    assert status.prediction is not None and status.recommendation is not None
    assert status.recommendation.predicted_loss is not None
    assert status.ledger.reserved_flops == 0 and status.ledger.reserved_gpu_hours == 0
    assert 0 < status.ledger.spent_flops <= budget
    assert math.isclose(status.ledger.spent_flops, sum(r.spent.flops for r in status.runs), rel_tol=1e-9)
    for record in status.runs:
        assert record.state in ("Succeeded", "Failed", "Lost"), record
        if record.state == "Succeeded":
            assert record.result is not None and record.result.final_val_loss is not None
    assert len({r.run_id for r in status.runs}) == len(status.runs)
