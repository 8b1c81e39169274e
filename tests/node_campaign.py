"""Campaigns on the real node (tests/node.py), nothing played: the chart installed with Helm runs the operator as
a Pod from the operator image, the campaign's Jobs run the trainer image on real token shards, and the test only
watches, through kubectl, what the API server holds. Shared by tests/test_node_*.py; the fixture is conftest's
``flopwise_release``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster import script
from flopwise.api.status import TrainingCampaignStatus
from node import NodeCluster

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "flopwise"
RELEASE = "fw"
FULLNAME = f"{RELEASE}-flopwise"
MANAGED = "app.kubernetes.io/managed-by=flopwise"
RUN_ID = "flopwise.dev/run-id"
OPERATOR_SELECTOR = "app.kubernetes.io/name=flopwise,app.kubernetes.io/instance=fw"
TOKENS_CLAIM, OUTPUTS_CLAIM = "tokens", "outputs"
DATASET_MOUNT = "/datasets/stdlib"
UID = 10001  # the images' user (both Dockerfiles), which the Jobs run as


@dataclass
class Release:
    """The chart installed in ``namespace`` with the operator image; PVs with the token shards and for outputs."""

    nc: NodeCluster
    namespace: str
    trainer_image: str
    operator_image: str
    tokens_dir: Path
    outputs_dir: Path
    figures: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.nc.kubectl("-n", self.namespace, *args, **kw)  # first: after `--` it would be the command's

    def json(self, *args: str) -> dict:
        return self.nc.kubectl_json("-n", self.namespace, *args)

    def operator_pods(self) -> list[dict]:
        return self.json("get", "pods", "-l", OPERATOR_SELECTOR)["items"]


def helm(nc: NodeCluster, *args: str) -> subprocess.CompletedProcess:
    """Helm (v4, extracted from its PyPI wheel by hack/control-plane.sh) inside the cluster's network namespace."""
    binary = script("helm")
    return subprocess.run([*nc.client_prefix, binary, *args, "--kubeconfig", str(nc.kubeconfig)], text=True,
                          capture_output=True, timeout=180)


def host_path_volumes(nc: NodeCluster, namespace: str, tokens_dir: Path, outputs_dir: Path) -> str:
    """Two hostPath PersistentVolumes pre-bound to their claims: the token shards (read-only) and the run outputs
    (both legs of a run, and a relaunched Job, see one folder)."""
    docs = []
    for claim, path, mode in ((TOKENS_CLAIM, tokens_dir, "ReadOnlyMany"), (OUTPUTS_CLAIM, outputs_dir,
                                                                           "ReadWriteMany")):
        pv = f"{namespace}-{claim}"
        docs.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
                     "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [mode], "storageClassName": "",
                              "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path)},
                              "claimRef": {"namespace": namespace, "name": claim}}})
        docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": claim, "namespace": namespace},
                     "spec": {"accessModes": [mode], "storageClassName": "", "volumeName": pv,
                              "resources": {"requests": {"storage": "1Gi"}}}})
    return yaml.safe_dump_all(docs)


def install(nc: NodeCluster, namespace: str) -> Release:
    """Token shards (`flopwise data stdlib`), the volumes, then `helm install` of the chart with the operator image
    hack/node.sh built (pull policy Never: it is in the node's containerd, nowhere else). Waits for the operator
    Pod to be Ready."""
    t0 = time.monotonic()
    tokens = nc.workdir / "volumes" / "tokens"
    outputs = nc.workdir / "volumes" / "outputs"
    outputs.mkdir(parents=True)
    subprocess.run([str(Path(sys.executable).parent / "flopwise"), "data", "stdlib", str(tokens)], check=True,
                   capture_output=True, text=True)

    # hostPath ignores fsGroup, and the kubelet makes each campaign's subPath folder (its uid) as root with the
    # volume root's mode: the runs' user owns the root, and anyone may write in the folders made there.
    os.chown(outputs, UID, UID)
    outputs.chmod(0o777)
    nc.kubectl("create", "namespace", namespace)
    nc.apply_yaml(host_path_volumes(nc, namespace, tokens, outputs))
    repository, tag = nc.images["operator"][0].rsplit(":", 1)
    installed = helm(nc, "install", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout", "240s",
                     "--set", f"image.repository={repository}", "--set-string", f"image.tag={tag}",
                     "--set", "image.pullPolicy=Never",
                     # a small operator Pod on 2 shared cores: the coarse start grid and a short bootstrap
                     "--set", "operator.fitGrid=coarse", "--set", "operator.bootstrapResamples=16")
    if installed.returncode != 0:
        pods = nc.kubectl("get", "pods,events", "-n", namespace, "-o", "wide", check=False).stdout
        raise AssertionError(f"helm install failed:\n{installed.stderr}{installed.stdout}\n{pods}")
    release = Release(nc, namespace, nc.images["trainer"][0], nc.images["operator"][0], tokens, outputs)
    release.figures["install_s"] = time.monotonic() - t0
    return release


def tiny_campaign(release: Release, name: str, **spec_changes) -> dict:
    """tests/data/tiny-campaign.yaml grown a final run with the partial check (11 Pods: 5 ladder rungs, 3 Round-1
    LRs, 1 Round-2 run, the final run's two legs; ~500 steps of 1024 tokens), on the stdlib shards, its outputs on
    the PVC."""
    doc = yaml.safe_load((ROOT / "tests" / "data" / "tiny-campaign.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": release.namespace}
    spec = doc["spec"]
    spec["budget"]["flops"] = 1.2e11
    spec["budget"]["split"] = {"ladder": 0.4, "round1": 0.15, "round2": 0.1, "final": 0.3}
    spec["final"] = {"enabled": True, "partialCheck": True}
    spec["ladder"]["seeds"] = 1
    spec["tuning"]["proxyWidths"] = 1
    spec["tuning"]["batchTokens"] = 1024  # ~500 steps in all: a tiny model's step costs little more at 4× the batch
    spec["dataset"] = {"path": DATASET_MOUNT, "claimName": TOKENS_CLAIM}
    # two Pods at a time share 2 cores: one torch thread each (3× less CPU per run than torch's default here), and
    # a CPU request, as a real campaign would set: a BestEffort Pod's cgroup weighs 2 against the operator Pod's 102
    spec["trainer"] = {"image": release.trainer_image, "outputClaimName": OUTPUTS_CLAIM, "args": ["--threads", "1"],
                       "resources": {"requests": {"cpu": "500m"}}}
    for dotted, value in spec_changes.items():
        target = spec
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return doc


def status_of(release: Release, name: str) -> TrainingCampaignStatus:
    body = release.json("get", "trainingcampaign", name)
    return TrainingCampaignStatus.model_validate(body.get("status") or {})


def campaign_pods(release: Release, name: str) -> list[dict]:
    return release.json("get", "pods", "-l", f"{MANAGED},flopwise.dev/campaign={name}")["items"]


def campaign_jobs(release: Release, name: str) -> list[dict]:
    return release.json("get", "jobs", "-l", f"{MANAGED},flopwise.dev/campaign={name}")["items"]


def wait_phase(release: Release, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed"), *,
               timeout: float = 900.0, between=None) -> TrainingCampaignStatus:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = status_of(release, name)
        if status.phase in phases:
            return status
        if between is not None:
            between()
        time.sleep(1.0)
    runs = [(r.run_id, r.state) for r in status.runs] if status else []
    pods = release.kubectl("get", "pods,jobs", "-o", "wide", check=False).stdout
    raise TimeoutError(f"campaign {name} not in {phases} after {timeout:.0f} s: phase {status and status.phase}, "
                       f"runs {runs}\n{pods}")


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met in {timeout:.0f} s")


def running_pod(release: Release, name: str, run_prefix: str, exclude: tuple[str, ...] = ()) -> dict | None:
    """The Running trainer Pod of the first run whose id starts with ``run_prefix`` (and is not in ``exclude``).
    A Pod being deleted is not one: it still runs through its grace period while its Job starts another."""
    for pod in campaign_pods(release, name):
        run_id = pod["metadata"]["annotations"][RUN_ID]
        statuses = pod["status"].get("containerStatuses") or []
        if run_id.startswith(run_prefix) and run_id not in exclude and not pod["metadata"].get("deletionTimestamp") \
                and statuses and "running" in statuses[0].get("state", {}):
            return pod
    return None


def trainer_started(release: Release, pod: dict) -> bool:
    """The trainer has imported torch and is training: it has logged a step or an evaluation."""
    out = release.kubectl("logs", pod["metadata"]["name"], check=False).stdout
    return "step" in out.lower()


def check_ledger(status: TrainingCampaignStatus, budget: float) -> None:
    """Nothing left reserved, spent within the budget and equal to the sum of the runs' charges."""
    assert status.ledger.reserved_flops == 0 and status.ledger.reserved_gpu_hours == 0, status.ledger
    assert 0 < status.ledger.spent_flops <= budget, status.ledger
    assert math.isclose(status.ledger.spent_flops, sum(r.spent.flops for r in status.runs), rel_tol=1e-9)
    assert len({r.run_id for r in status.runs}) == len(status.runs), "a run id twice in the status"


def check_no_duplicate_job(release: Release, name: str, status: TrainingCampaignStatus) -> None:
    """One Job per run id (the Jobs are kept: no TTL), and no Job for a run the status does not know."""
    jobs = campaign_jobs(release, name)
    ids = [j["metadata"]["annotations"][RUN_ID] for j in jobs]
    assert len(ids) == len(set(ids)), f"duplicate Jobs: {sorted(ids)}"
    assert set(ids) <= {r.run_id for r in status.runs}, (ids, [r.run_id for r in status.runs])


def check_no_lost_result(release: Release, name: str, status: TrainingCampaignStatus) -> None:
    """Every trainer Pod that finished with a summary has it in the status, as the kubelet reported it."""
    from flopwise.contract import RunSummary

    by_id = {r.run_id: r for r in status.runs}
    for pod in campaign_pods(release, name):
        run_id = pod["metadata"]["annotations"][RUN_ID]
        for cs in pod["status"].get("containerStatuses") or []:
            terminated = cs.get("state", {}).get("terminated") or {}
            if terminated.get("exitCode") == 0 and terminated.get("message"):
                summary = RunSummary.from_message(terminated["message"])
                record = by_id[run_id]
                assert record.state == "Succeeded" and record.result is not None, (run_id, record.state)
                assert record.result.final_val_loss == summary.final_val_loss, run_id
                assert math.isclose(record.spent.flops, min(summary.flops, record.spent.flops), rel_tol=1e-9)


def result_json(release: Release, uid: str, run_id: str) -> dict:
    """A run's result.json as the trainer wrote it on the outputs volume (read from the host side)."""
    return json.loads((release.outputs_dir / uid / run_id / "result.json").read_text())


# ----------------------------------------------------------------------------------------------- Prometheus
class Prometheus:
    """Debian's Prometheus inside the cluster's network namespace, scraping the operator Pod every 2 s at the
    address the chart's metrics Service has for it (its Endpoints). Debian builds Prometheus without Kubernetes
    service discovery, so the test reads the Endpoints as that discovery would and gives them as a static target."""

    def __init__(self, nc: NodeCluster, namespace: str):
        self.nc = nc
        folder = Path(script("prometheus"))
        work = nc.workdir / f"prometheus-{secrets.token_hex(2)}"
        work.mkdir()
        endpoints = wait_for(lambda: nc.kubectl_json("get", "endpoints", f"{FULLNAME}-metrics", "-n", namespace)
                             .get("subsets"), timeout=120, what="the metrics Service's endpoints")
        port = next(p["port"] for p in endpoints[0]["ports"] if p.get("name") == "metrics")
        self.targets = [f"{a['ip']}:{port}" for a in endpoints[0]["addresses"]]
        self.port = 9099
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
            "scrape_configs": [{"job_name": "flopwise-operator", "static_configs": [{"targets": self.targets}]}]}
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = nc._spawn("prometheus", [
            str(folder / "prometheus"), f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"])

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.url}{path}"

        def fetch() -> dict:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())

        return self.nc.call(fetch)

    def query(self, expr: str) -> list[dict]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def stop(self) -> None:
        self.nc._stop("prometheus", grace=5.0)


# ----------------------------------------------------------------------------------------------- single Jobs
PROBE_UID = "7e1c0f00-0000-4000-8000-00000000f10d"  # a campaign uid of no campaign: such Jobs carry no owner


def operator_job(release: Release, name: str, *, command: list[str] | None = None, tokens: int | None = None,
                 resources: dict | None = None) -> str:
    """Creates the ConfigMap and Job the operator would for the tiny campaign's first run (``jobs.run_job`` and
    ``jobs.run_config_map`` on the engine's first launch), renamed ``name`` and with no owner; only the command,
    the run's tokens or the resources may differ. Returns the Job's name."""
    from flopwise.api.load import parse_campaign
    from flopwise.engine.machine import reconcile
    from flopwise.engine.runspec import run_spec_for
    from flopwise.kube import jobs

    changes = {"trainer.resources": resources} if resources else {}
    doc = tiny_campaign(release, name, **changes)
    if command:
        doc["spec"]["trainer"]["command"] = command
    campaign = parse_campaign(doc)
    decision = reconcile(campaign.spec, None, [], now=1000.0, seed=1)
    record = decision.launches[0]
    run_spec = run_spec_for(record, campaign.spec, decision.status.plan, campaign=name,
                            data_path=jobs.data_path(campaign.spec), output_dir=jobs.output_dir(record.run_id))
    if tokens:
        run_spec = run_spec.model_copy(update={"tokens": tokens})
    cm = jobs.run_config_map(name, PROBE_UID, release.namespace, record, run_spec)
    job = jobs.run_job(name, PROBE_UID, release.namespace, record, campaign.spec)
    for obj in (cm, job):
        obj["metadata"].pop("ownerReferences")  # no campaign owns them: the garbage collector would take them
    release.nc.apply_yaml(yaml.safe_dump_all([cm, job]))
    return job["metadata"]["name"]


def pod_of(release: Release, job: str) -> dict | None:
    pods = release.json("get", "pods", "-l", f"job-name={job}")["items"]
    return pods[0] if pods else None


def terminated(release: Release, job: str, timeout: float = 300.0) -> tuple[dict, dict]:
    """The Job's Pod and its container's terminated state, once the kubelet reports it."""
    def done():
        pod = pod_of(release, job)
        for cs in (pod or {}).get("status", {}).get("containerStatuses") or []:
            if cs.get("state", {}).get("terminated"):
                return pod, cs["state"]["terminated"]
        return None

    return wait_for(done, timeout=timeout, what=f"the container of Job {job} terminated")
