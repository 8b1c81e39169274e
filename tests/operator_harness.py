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


NODE_NAME = "node-0"
IMAGE_DIGEST = "sha256:" + "5e" * 32  # what the node says the trainer image resolved to


def image_id(image: str) -> str:
    """The imageID a container runtime reports for ``image`` (docker-pullable://repo@digest)."""
    return f"docker-pullable://{image.rsplit(':', 1)[0]}@{IMAGE_DIGEST}"


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Kubelet(Node):
    """Plays the node more closely than `Node`, for tests about GPU time: a Pod is bound to a node (the
    scheduler's part: a bound Pod's deletion waits for its kubelet, as on a real cluster), started (phase Running,
    status.startTime), and finished on a later step, so it holds its "GPUs" for real seconds; a Pod being deleted
    (deadline, suspension, cancellation, the garbage collector) gets the trainer's SIGTERM report — checkpointed at
    half its steps — and is then removed, as a kubelet does after the container exits. It remembers every Pod's
    start and end: what the cluster really spent, to hold the ledger against. Timestamps have whole seconds (the
    API's resolution); ``real_gpu_s`` uses the same ones."""

    def __init__(self, core, batch, namespace: str):
        super().__init__(core, batch, namespace)
        self.started: dict[str, tuple[str, str]] = {}  # pod uid → (run id, startTime text)
        self.campaign_of: dict[str, str] = {}  # pod uid → its campaign's name
        self.ended: dict[str, str] = {}  # pod uid → finishedAt text
        self.hold: set[str] = set()  # run ids whose Pods start but never finish by themselves

    def step(self, *, skip: set[str] = frozenset()) -> int:
        self.jobs()
        finished = 0
        for pod in self.core.list_namespaced_pod(self.namespace, label_selector=MANAGED).items:
            run_id, uid = pod.metadata.annotations[RUN_ID], pod.metadata.uid
            self.pods_per_run.setdefault(run_id, set()).add(uid)
            if pod.metadata.deletion_timestamp is not None:  # the kubelet stops it, then confirms the deletion
                if uid in self.started and uid not in self.ended:
                    self.stop(pod)
                else:
                    self._remove(pod)
            elif uid in self.done or run_id in skip:
                continue
            elif uid not in self.started:
                self.start(pod)
            elif run_id not in self.hold:
                spec = self.run_spec(pod)
                self.finish(pod, summary_for(spec).to_message())
                finished += 1
        return finished

    def run_spec(self, pod) -> RunSpec:
        volume = next(v for v in pod.spec.volumes if v.name == "run-spec")
        cm = self.core.read_namespaced_config_map(volume.config_map.name, self.namespace)
        return RunSpec.model_validate(json.loads(cm.data["spec.json"]))

    def start(self, pod) -> None:
        name = pod.metadata.name
        self.core.create_namespaced_pod_binding(name, self.namespace, {
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME}}, _preload_content=False)
        now = _now_text()
        self.core.patch_namespaced_pod_status(name, self.namespace, {"status": {
            "phase": "Running", "startTime": now, "containerStatuses": [{
                "name": "trainer", "image": pod.spec.containers[0].image,
                "imageID": image_id(pod.spec.containers[0].image), "ready": True,
                "restartCount": 0, "state": {"running": {"startedAt": now}}}]}})
        self.started[pod.metadata.uid] = (pod.metadata.annotations[RUN_ID], now)
        self.campaign_of[pod.metadata.uid] = pod.metadata.annotations.get("flopwise.dev/campaign-name", "")

    def finish(self, pod, message: str, exit_code: int = 0) -> None:
        start = self.started.get(pod.metadata.uid, (None, _now_text()))[1]
        end = _now_text()
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed", "startTime": start, "containerStatuses": [{
                "name": "trainer", "image": pod.spec.containers[0].image,
                "imageID": image_id(pod.spec.containers[0].image), "ready": False,
                "restartCount": 0, "state": {"terminated": {
                    "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "message": message,
                    "startedAt": start, "finishedAt": end}}}]}})
        self.ended[pod.metadata.uid] = end
        self.done.add(pod.metadata.uid)

    def stop(self, pod) -> None:
        """SIGTERM: the trainer checkpoints at its next step boundary (here: half its steps), reports, exits 1."""
        from kubernetes.client.exceptions import ApiException

        try:
            spec = self.run_spec(pod)
        except ApiException:  # its ConfigMap went first (the campaign was deleted): a bare report
            self.finish(pod, "terminated by SIGTERM", exit_code=143)
            self._remove(pod)
            return
        full = summary_for(spec)
        steps = max(1, full.steps // 2)
        report = full.model_copy(update={
            "status": "failed", "steps": steps, "tokens": steps * spec.tokens_per_step, "flops": full.flops / 2,
            "final_val_loss": None, "best_val_loss": None, "curve": full.curve[:2],
            "exit_reason": f"terminated by SIGTERM at step {steps} of {full.steps} (checkpointed: a rerun resumes "
                           "from there)"})
        self.finish(pod, report.to_message(), exit_code=1)
        self._remove(pod)

    def _remove(self, pod) -> None:
        with contextlib.suppress(Exception):
            self.core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
        self.done.add(pod.metadata.uid)

    def real_gpu_s(self, run_id: str, gpus: int = 1, campaign: str | None = None) -> float:
        """GPU-seconds the run's Pods held (a Pod still running counts until now)."""
        total = 0.0
        for uid, (run, start) in self.started.items():
            if run == run_id and campaign in (None, self.campaign_of.get(uid)):
                end = self.ended.get(uid, _now_text())
                total += gpus * max(0.0, _epoch(end) - _epoch(start))
        return total


def _epoch(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
