"""The operator under load: N TrainingCampaigns applied at once against a real control plane.

A real etcd + kube-apiserver 1.20 + kube-controller-manager (tests/cluster.py, binaries cached by
`hack/control-plane.sh build`), the CRD, and ONE `flopwise operator` process watching one namespace (coarse fit
grid, few bootstrap resamples). N copies of tests/data/tiny-campaign.yaml (unique names, a ladder and LR grid
widened to ~20 runs each) are created back to back with the Python client. The benchmark plays the node and only
the node: a watch on the managed Pods reports each Pending Pod Succeeded with the RunSummary its RunSpec (read from
the run's ConfigMap) would give under a known scaling law, exactly as tests/test_operator_cluster.py does.
Why played, though a real node runs in tests/test_node_*.py: 100 campaigns × ~20 runs would be 2000 real Pods
(hours on 2 cores), and the benchmark measures the operator, not the node.

Measured: time from a campaign's create to its first Job (the Job watch's ADDED event; creationTimestamps as a
1-second cross-check), the operator's CPU seconds (/proc/PID/stat utime+stime) and peak RSS (VmHWM), CPU and API
requests in an idle window after every campaign is terminal, and API requests per campaign from the API server's
`apiserver_request_total` (before vs after), split into the benchmark's own requests (counted client-side), the
controller-manager's (Pod creates, Job status writes, its Events) and the remainder (the operator).

    python benchmarks/operator_bench.py [--campaigns 100] [--timeout 900] [--idle 20] [--baseline-fit-workers 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster import ControlPlane, free_port, script  # noqa: E402
from flopwise.api.spec import GROUP, PLURAL, VERSION, TrainingCampaignSpec  # noqa: E402
from flopwise.contract import RunSpec  # noqa: E402
from flopwise.planning.plan import plan_campaign  # noqa: E402
from synthetic import summary_for  # noqa: E402

MANAGED = "app.kubernetes.io/managed-by=flopwise"
CAMPAIGN_LABEL = "flopwise.dev/campaign"
RUN_ID = "flopwise.dev/run-id"
CAMPAIGN_NAME = "flopwise.dev/campaign-name"
TERMINAL = ("Succeeded", "Failed")
TICK = os.sysconf("SC_CLK_TCK")
GC_MONITOR_SYNC_S = 30.0  # kube-controller-manager 1.20: garbageCollector.Sync(..., 30*time.Second, ...)

# Targets from the issues (#15: apply → first Job p50 ≤ 1 s, pod finished → next Job p50 ≤ 2 s).
TARGET_P50_S = 1.0
TARGET_REACTION_P50_S = 2.0
TARGET_RSS_MB = 300.0
TARGET_IDLE_CPU_S = 0.5  # "near zero": under 2.5 % of one core over a 20 s window


# ----------------------------------------------------------------------------------------------- the campaign
def campaign_doc(name: str, namespace: str, concurrency: int, ladder_sizes: int = 6, lr_points: int = 10,
                 round2_runs: int = 4) -> dict:
    """tiny-campaign.yaml, renamed, widened by default to 6 ladder sizes × 10 LR points × 4 Round-2 reruns."""
    doc = yaml.safe_load((ROOT / "tests" / "data" / "tiny-campaign.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["dataset"] = {"path": "/datasets/tiny", "claimName": "tiny-tokens"}
    doc["spec"]["gpuPool"]["maxConcurrentGpus"] = concurrency
    doc["spec"]["ladder"]["sizes"] = ladder_sizes
    doc["spec"]["tuning"]["lrGridPoints"] = lr_points
    doc["spec"]["tuning"]["round2Runs"] = round2_runs
    return doc


def phases_from_metrics(text: str) -> dict[str, str]:
    """Campaign → phase from the operator's `flopwise_campaign_phase{…} 1` series."""
    phases = {}
    for line in text.splitlines():
        if line.startswith("flopwise_campaign_phase{") and float(line.rsplit(" ", 1)[1]) == 1.0:
            labels = labels_of(line)
            phases[labels["campaign"]] = labels["phase"]
    return phases


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Prometheus' histogram_quantile over one un-labelled histogram in a text exposition."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return math.nan


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.rsplit(" ", 1)[1])
    return math.nan



# ----------------------------------------------------------------------------------------------- processes
def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def machine_busy_s() -> float:
    """CPU seconds every CPU of the machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The operator's fit workers (and any other child process)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def proc_mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                values[key] = int(kb) / 1024
    return values.get("VmRSS:", 0.0), values.get("VmHWM:", 0.0)


class Operator:
    def __init__(self, cp: ControlPlane, namespace: str, log: Path, resamples: int, grid: str, workers: int,
                 fit_workers: int | None = None):
        self.port = free_port()
        self.metrics_port = free_port()
        env = cp.env()
        env["PYTHONPATH"] = str(ROOT / "operator")
        self.cmd = [sys.executable, "-m", "flopwise.cli.operator_cmd", "--namespace", namespace,
                    "--bootstrap-resamples", str(resamples), "--fit-grid", grid,
                    "--liveness", f"http://127.0.0.1:{self.port}/healthz",
                    "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                    "--workers", str(workers)] + (
                        ["--fit-workers", str(fit_workers)] if fit_workers is not None else [])
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=ROOT, start_new_session=True)
        self.pid = self.proc.pid

    def ready(self) -> bool:
        import urllib.request

        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz",
                                                                   timeout=2) as r:
            return r.status == 200
        return False

    def scrape(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Sampler(threading.Thread):
    """Samples a process's CPU seconds and RSS every `interval` s (peak RSS also from VmHWM), and its children's
    (the fit workers: their summed RSS at each sample, their CPU seconds as last seen)."""

    def __init__(self, pid: int, interval: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, float]] = []  # (monotonic, cpu s, rss MB)
        self.hwm = 0.0
        self.children_rss_peak = 0.0
        self.children_hwm: dict[int, float] = {}
        self.children_cpu: dict[int, float] = {}
        self.stopped = threading.Event()

    def sample(self) -> tuple[float, float, float]:
        rss, hwm = proc_mem_mb(self.pid)
        self.hwm = max(self.hwm, hwm)
        s = (time.monotonic(), proc_cpu_s(self.pid), rss)
        self.samples.append(s)
        total = 0.0
        for child in children_of(self.pid):
            with contextlib.suppress(OSError):
                child_rss, child_hwm = proc_mem_mb(child)
                total += child_rss
                self.children_hwm[child] = max(self.children_hwm.get(child, 0.0), child_hwm)
                self.children_cpu[child] = proc_cpu_s(child)
        self.children_rss_peak = max(self.children_rss_peak, total)
        return s

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(OSError):
                self.sample()


# ----------------------------------------------------------------------------------------------- API requests
_PATH = re.compile(r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/[^/]+)?/([^/]+)(?:/([^/]+))?(?:/([^/]+))?$")
CLIENT_COUNTS: Counter = Counter()
_COUNT_LOCK = threading.Lock()


def _key_of(method: str, url: str) -> tuple[str, str, str]:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    m = _PATH.match(parts.path)
    if not m:
        return (method, "", "")
    resource, name, sub = m.group(1), m.group(2), m.group(3) or ""
    if method == "GET":
        watch = parse_qs(parts.query).get("watch", ["false"])[0].lower() in ("true", "1")
        method = "WATCH" if watch else ("GET" if name else "LIST")
    return (method, resource, sub)


def count_client_requests() -> None:
    """Counts every request this process's Kubernetes client makes, keyed like apiserver_request_total."""
    from kubernetes.client import rest

    original = rest.RESTClientObject.request
    if getattr(original, "counting", False):
        return  # wrapped by an earlier run of this process (the baseline): wrapping again counts twice

    def request(self, method, url, *args, **kwargs):
        with _COUNT_LOCK:
            CLIENT_COUNTS[_key_of(method, url)] += 1
        return original(self, method, url, *args, **kwargs)

    request.counting = True  # type: ignore[attr-defined]
    rest.RESTClientObject.request = request


_METRIC = re.compile(r"^apiserver_request_total\{([^}]*)\}\s+([0-9.e+]+)$")


def labels_of(text: str) -> dict[str, str]:
    """The name="value" pairs of one Prometheus series."""
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def apiserver_metrics(cp: ControlPlane) -> str:
    code, text = cp._get(f"{cp.server}/metrics", cp.admin_token, timeout=10)
    if code != 200:
        raise RuntimeError(f"/metrics answered {code}")
    return text


def request_metrics(cp: ControlPlane, text: str | None = None) -> Counter:
    """apiserver_request_total summed per (verb, resource, subresource) and per code (key ('code', c, '')), from
    ``text`` (a scrape already made) or a fresh scrape."""
    text = apiserver_metrics(cp) if text is None else text
    out: Counter = Counter()
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m:
            continue
        labels = labels_of(m.group(1))
        if not labels.get("resource"):
            continue  # non-resource URLs: /metrics, /readyz, /healthz, discovery
        n = float(m.group(2))
        out[(labels.get("verb", ""), labels["resource"], labels.get("subresource", ""))] += n
        out[("code", labels.get("code", ""), labels["resource"])] += n
    return out


_LATENCY = re.compile(r"^apiserver_request_duration_seconds_(sum|count)\{([^}]*)\}\s+([0-9.e+]+)$")


def request_latency(text: str) -> Counter:
    """apiserver_request_duration_seconds' sum and count per (verb, resource, subresource): keys (…, "sum"|"count")."""
    out: Counter = Counter()
    for line in text.splitlines():
        m = _LATENCY.match(line)
        if m:
            labels = labels_of(m.group(2))
            if labels.get("resource") and labels.get("verb") != "WATCH":
                out[(labels["verb"], labels["resource"], labels.get("subresource", ""), m.group(1))] += float(
                    m.group(3))
    return out


def resource_total(c: Counter) -> float:
    return sum(v for k, v in c.items() if k[0] != "code")


# ----------------------------------------------------------------------------------------------- watches
def watch_forever(list_fn, namespace: str, selector: str, on_event, stop: threading.Event) -> None:
    """List then watch (re-listing on 410 Gone), calling on_event(type, obj) for every object."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    rv = None
    while not stop.is_set():
        try:
            if rv is None:
                listing = list_fn(namespace, label_selector=selector)
                for obj in listing.items:
                    on_event("LISTED", obj)
                rv = listing.metadata.resource_version
            w = watch.Watch()
            for ev in w.stream(list_fn, namespace, label_selector=selector, resource_version=rv,
                               timeout_seconds=30, allow_watch_bookmarks=True):
                if ev["type"] == "ERROR":
                    rv = None
                    break
                obj = ev["object"]
                rv = obj.metadata.resource_version
                if ev["type"] != "BOOKMARK":
                    on_event(ev["type"], obj)
                if stop.is_set():
                    break
        except ApiException as e:
            if e.status == 410:
                rv = None
            else:
                time.sleep(1.0)
        except Exception:
            time.sleep(1.0)


class Node:
    """The kubelet's part: every Pending managed Pod is reported Succeeded with its RunSummary."""

    def __init__(self, api_factory, namespace: str, workers: int = 2):
        self.api_factory, self.namespace = api_factory, namespace
        self.queue: queue.Queue = queue.Queue()
        self.seen: set[str] = set()
        self.finished: dict[str, float] = {}  # pod uid → wall time of the status patch
        self.finished_by_campaign: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter = Counter()
        self.lock = threading.Lock()
        self.workers = workers

    def on_pod(self, kind: str, pod) -> None:
        if kind == "DELETED" or (pod.status.phase or "Pending") != "Pending":
            return
        with self.lock:
            if pod.metadata.uid in self.seen:
                return
            self.seen.add(pod.metadata.uid)
        self.queue.put(pod)

    def work(self, stop: threading.Event) -> None:
        core, _ = self.api_factory()
        specs: dict[str, RunSpec] = {}
        while not stop.is_set():
            try:
                pod = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                volume = next(v for v in pod.spec.volumes if v.name == "run-spec")
                cm_name = volume.config_map.name
                if cm_name not in specs:
                    cm = core.read_namespaced_config_map(cm_name, self.namespace)
                    specs[cm_name] = RunSpec.model_validate(json.loads(cm.data["spec.json"]))
                message = summary_for(specs[cm_name]).to_message()
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                body = {"status": {"phase": "Succeeded", "containerStatuses": [{
                    "name": "trainer", "image": pod.spec.containers[0].image, "imageID": "", "ready": False,
                    "restartCount": 0, "state": {"terminated": {
                        "exitCode": 0, "reason": "Completed", "message": message,
                        "startedAt": now, "finishedAt": now}}}]}}
                core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, body)
                t = time.time()
                with self.lock:
                    self.finished[pod.metadata.uid] = t
                    self.finished_by_campaign[pod.metadata.annotations.get(CAMPAIGN_NAME, "")].append(t)
            except Exception as e:  # retried once the watch or the safety re-list sees it again
                self.errors[type(e).__name__] += 1
                with self.lock:
                    self.seen.discard(pod.metadata.uid)
                time.sleep(0.5)


class JobLog:
    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}  # uid → {campaign, run, seen, created}
        self.lock = threading.Lock()

    def on_job(self, kind: str, job) -> None:
        if kind == "DELETED":
            return
        with self.lock:
            if job.metadata.uid in self.jobs:
                return
            self.jobs[job.metadata.uid] = {
                "campaign": (job.metadata.annotations or {}).get(CAMPAIGN_NAME)
                or job.metadata.labels.get(CAMPAIGN_LABEL),
                "run": (job.metadata.annotations or {}).get(RUN_ID),
                "seen": time.time(), "created": job.metadata.creation_timestamp.timestamp()}


# ----------------------------------------------------------------------------------------------- main
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaigns", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=4, help="gpuPool.maxConcurrentGpus of each campaign")
    ap.add_argument("--timeout", type=float, default=900.0, help="wall-clock cap from the first create (s)")
    ap.add_argument("--idle", type=float, default=20.0, help="idle window after every campaign is terminal (s)")
    ap.add_argument("--ladder-sizes", type=int, default=6, help="spec.ladder.sizes of each campaign")
    ap.add_argument("--lr-points", type=int, default=10, help="spec.tuning.lrGridPoints of each campaign")
    ap.add_argument("--round2-runs", type=int, default=4, help="spec.tuning.round2Runs of each campaign")
    ap.add_argument("--bootstrap-resamples", type=int, default=8)
    ap.add_argument("--workers", type=int, default=8, help="the operator's --workers")
    ap.add_argument("--fit-workers", type=int, default=None, help="the operator's --fit-workers (default: its own)")
    ap.add_argument("--fit-grid", choices=["coarse", "hoffmann"], default="coarse")
    ap.add_argument("--baseline-fit-workers", type=int, default=None,
                    help="first run the same load with the operator's --fit-workers N (0: every fit inline on the "
                         "reconcile threads, the design before the fit pool), then print both side by side")
    ap.add_argument("--keep", action="store_true", help="keep the control plane's folder and the operator log")
    args = ap.parse_args()
    if args.baseline_fit_workers is None:
        return bench(args, args.fit_workers)[0]
    print(f"=== baseline: --fit-workers {args.baseline_fit_workers}")
    base_code, base = bench(args, args.baseline_fit_workers)
    print(f"\n=== now: --fit-workers {'default' if args.fit_workers is None else args.fit_workers}")
    code, now = bench(args, args.fit_workers)
    print(f"\n=== side by side, {args.campaigns} campaigns, the same load, one run after the other")
    width = max(len(label) for label in now)
    print(f"{'measure':<{width}} | {f'baseline (fit workers {args.baseline_fit_workers})':<34} | {'now':<34} | "
          "target")
    for label, (value, target, ok) in now.items():
        before = base.get(label, ("-", "", None))[0]
        verdict = "" if ok is None else " PASS" if ok else " MISS"
        print(f"{label:<{width}} | {before:<34} | {value:<34} | {target}{verdict}")
    return max(base_code, code)


def bench(args: argparse.Namespace, fit_workers: int | None) -> tuple[int, dict[str, tuple[str, str, bool | None]]]:
    """One run: a fresh control plane, one operator with ``fit_workers``, the campaigns to the end. Returns the exit
    code and the table's rows (measure → value, target, met)."""
    n = args.campaigns

    count_client_requests()
    from kubernetes import client, config

    shape = {"ladder_sizes": args.ladder_sizes, "lr_points": args.lr_points, "round2_runs": args.round2_runs}
    doc0 = campaign_doc("c000", "x", args.concurrency, **shape)
    plan = plan_campaign(TrainingCampaignSpec.model_validate(doc0["spec"]))
    per_phase = [len(p.runs) for p in (plan.ladder, plan.round1, plan.round2, plan.final)]
    planned = sum(per_phase)
    print(f"campaigns: {n}; planned runs each {planned} (ladder {per_phase[0]}, round1 {per_phase[1]}, "
          f"round2 {per_phase[2]}, final {per_phase[3]}) → {planned * n} planned runs in all; "
          f"maxConcurrentGpus {args.concurrency}")
    print(f"operator: --fit-grid {args.fit_grid} --bootstrap-resamples {args.bootstrap_resamples}; one process, "
          f"one namespace; machine: {os.cpu_count()} CPUs (shared), load average {os.getloadavg()[0]:.2f}")

    if args.keep:
        os.environ["FLOPWISE_KEEP_CLUSTER"] = "1"
    script("build")
    cp = ControlPlane.from_cache()
    cp.start()
    print(f"control plane ready in {cp.timings['total']:.1f} s ({cp.server}, {cp.workdir})")
    logdir = Path(tempfile.mkdtemp(prefix="flopwise-opbench-"))
    op = None
    stop = threading.Event()
    try:
        cp.kubectl("apply", "-f", str(ROOT / "crds" / "trainingcampaign.yaml"))
        cp.wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in (cp.kubectl_json(
            "get", "crd", "trainingcampaigns.flopwise.dev").get("status", {}).get("conditions") or [])),
            timeout=30, what="the CRD Established")
        crd_ready = time.monotonic()
        ns = "bench"
        cp.kubectl("create", "namespace", ns)

        def apis():
            api = config.new_client_from_config(config_file=str(cp.kubeconfig))
            return client.CoreV1Api(api), client.BatchV1Api(api)

        # The controller-manager's garbage collector learns of a new CRD at its next monitor sync (every 30 s,
        # hard-coded in 1.20); until then each Job or ConfigMap owned by a campaign sends it to GET the owner (3 GETs
        # per campaign, 76-134 ms each under load, counted as LIST in its metrics: 17 s of API server time in the
        # burst this measures). A cluster installs the CRD long before its campaigns, so wait that sync out.
        time.sleep(max(2.0, GC_MONITOR_SYNC_S + 5.0 - (time.monotonic() - crd_ready)))
        # Background request rate of the idle control plane (before anything of ours runs).
        m0, t0, busy0 = request_metrics(cp), time.monotonic(), machine_busy_s()
        time.sleep(10.0)
        m1, t1, busy1 = request_metrics(cp), time.monotonic(), machine_busy_s()
        background_rate = (resource_total(m1) - resource_total(m0)) / (t1 - t0)
        print(f"idle control plane: {background_rate:.2f} API requests/s (background); the machine's CPUs "
              f"{(busy1 - busy0) / (t1 - t0) / (os.cpu_count() or 1) * 100:.0f}% busy meanwhile (another tenant's "
              "work on these shared cores shows here, and slows everything below)")

        op = Operator(cp, ns, logdir / "operator.log", args.bootstrap_resamples, args.fit_grid, args.workers,
                      fit_workers)
        t_op = time.monotonic()
        cp.wait_for(op.ready, timeout=60, interval=0.2, what="the operator's liveness endpoint")
        print(f"operator pid {op.pid} ready in {time.monotonic() - t_op:.1f} s "
              f"(CPU {proc_cpu_s(op.pid):.2f} s, RSS {proc_mem_mb(op.pid)[0]:.0f} MB)")
        sampler = Sampler(op.pid)
        sampler.start()
        api_sampler = Sampler(cp.procs["kube-apiserver"].pid, interval=2.0)
        api_sampler.start()
        time.sleep(2.0)

        jobs_log = JobLog()
        node = Node(apis, ns)
        _, job_batch = apis()
        pod_core, _ = apis()
        threads = [
            threading.Thread(target=watch_forever, args=(job_batch.list_namespaced_job, ns, CAMPAIGN_LABEL,
                                                         jobs_log.on_job, stop), daemon=True),
            threading.Thread(target=watch_forever, args=(pod_core.list_namespaced_pod, ns, MANAGED, node.on_pod,
                                                         stop), daemon=True),
        ] + [threading.Thread(target=node.work, args=(stop,), daemon=True) for _ in range(node.workers)]
        for t in threads:
            t.start()
        time.sleep(1.0)

        custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(cp.kubeconfig)))
        scrape = apiserver_metrics(cp)
        before, latency_before = request_metrics(cp, scrape), request_latency(scrape)
        client_before = Counter(CLIENT_COUNTS)
        cpu_before = sampler.sample()[1]
        api_cpu_before = api_sampler.sample()[1]
        t_start = time.monotonic()
        applied: dict[str, float] = {}
        names = [f"c{i:03d}" for i in range(n)]
        for name in names:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, campaign_doc(name, ns,
                                                                                            args.concurrency, **shape))
            applied[name] = time.time()
        print(f"created {n} campaigns in {time.monotonic() - t_start:.2f} s")

        # Drive until every campaign is terminal.
        phases: dict[str, str] = {}
        deadline = t_start + args.timeout
        last_print = 0.0
        safety = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(2.0)
            if op.proc.poll() is not None:
                print(f"!! operator exited with {op.proc.returncode}")
                break
            if time.monotonic() - safety > 20:  # a re-list in case a watch event was missed
                safety = time.monotonic()
                for pod in pod_core.list_namespaced_pod(ns, label_selector=MANAGED,
                                                        field_selector="status.phase=Pending").items:
                    node.on_pod("LISTED", pod)
            if time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                # From the operator's metrics, as a dashboard would: listing 100 campaigns (8 MB) every 10 s cost
                # the API server 1.6 s each, a seventh of its time, slowing what this measures.
                phases = dict.fromkeys(names, "-") | phases_from_metrics(op.scrape())
                done = sum(p in TERMINAL for p in phases.values())
                _, cpu, rss = sampler.samples[-1] if sampler.samples else sampler.sample()
                print(f"[{time.monotonic() - t_start:6.0f} s] terminal {done}/{n} {dict(Counter(phases.values()))} "
                      f"jobs {len(jobs_log.jobs)} pods finished {len(node.finished)} | operator CPU "
                      f"{cpu - cpu_before:.0f} s RSS {rss:.0f} MB | load {os.getloadavg()[0]:.1f}", flush=True)
                if done == n:
                    break
        t_end = time.monotonic()
        wall = t_end - t_start
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        status_of = {i["metadata"]["name"]: i.get("status") or {} for i in items}
        unfinished = {k: (s.get("phase"), s.get("runCounts")) for k, s in status_of.items()
                      if s.get("phase") not in TERMINAL}
        cpu_run = sampler.sample()[1] - cpu_before
        api_cpu_run = api_sampler.sample()[1] - api_cpu_before
        scrape = apiserver_metrics(cp)
        after, latency_after = request_metrics(cp, scrape), request_latency(scrape)
        client_after = Counter(CLIENT_COUNTS)

        # Idle window: nothing changes; the operator should do (almost) nothing.
        idle_cpu0 = sampler.sample()[1]
        idle_m0, idle_c0 = request_metrics(cp), Counter(CLIENT_COUNTS)
        ti = time.monotonic()
        time.sleep(args.idle)
        idle_m1, idle_c1 = request_metrics(cp), Counter(CLIENT_COUNTS)
        idle_s = time.monotonic() - ti
        idle_events = [e for e in cp.kubectl_json("get", "events", "-n", ns)["items"]
                       if _ts(e.get("lastTimestamp") or e["metadata"]["creationTimestamp"]) >= time.time() - idle_s]
        idle_cpu = sampler.sample()[1] - idle_cpu0
        idle_requests = resource_total(idle_m1) - resource_total(idle_m0) - (
            sum(idle_c1.values()) - sum(idle_c0.values()))
        idle_by_key = {k: v for k, v in (idle_m1 - idle_m0).items() if k[0] != "code" and v}
        # A second window right after: tells a backlog still draining from steady polling.
        idle2_cpu0, idle2_m0 = sampler.sample()[1], request_metrics(cp)
        time.sleep(args.idle)
        idle2_cpu = sampler.sample()[1] - idle2_cpu0
        idle2_requests = resource_total(request_metrics(cp)) - resource_total(idle2_m0)
        stop.set()
        sampler.stopped.set()
        api_sampler.stopped.set()
        peak_rss = max(sampler.hwm, proc_mem_mb(op.pid)[1])
        exposition = op.scrape()  # the operator's own account of its reconciles
        reconcile_p50 = histogram_quantile(exposition, "flopwise_reconcile_duration_seconds", 0.5)
        reconcile_p95 = histogram_quantile(exposition, "flopwise_reconcile_duration_seconds", 0.95)
        reconciles = metric_value(exposition, "flopwise_reconcile_duration_seconds_count")
        reconcile_errors = metric_value(exposition, "flopwise_reconcile_errors_total")

        # ------------------------------------------------------------------ figures
        first_seen: dict[str, float] = {}
        first_created: dict[str, float] = {}
        per_campaign_jobs: Counter = Counter()
        for j in jobs_log.jobs.values():
            c = j["campaign"]
            per_campaign_jobs[c] += 1
            first_seen[c] = min(first_seen.get(c, math.inf), j["seen"])
            first_created[c] = min(first_created.get(c, math.inf), j["created"])
        created_ts = {i["metadata"]["name"]: _ts(i["metadata"]["creationTimestamp"]) for i in items}
        latency = [first_seen[c] - applied[c] for c in names if c in first_seen]
        latency_ts = [first_created[c] - created_ts[c] for c in names if c in first_created and c in created_ts]
        # The operator logs each create when the API server has answered it (ms resolution): the same latency without
        # this process's own watch delivery, which shares 2 cores with everything it measures.
        logged = first_created_logged(op.log, ns)
        latency_log = [logged[c] - applied[c] for c in names if c in logged]
        watch_lag = [first_seen[c] - logged[c] for c in names if c in logged and c in first_seen]
        fifth = max(1, len(latency) // 5)
        by_order = [latency[i:i + fifth] for i in range(0, len(latency), fifth)]
        total_jobs = len(jobs_log.jobs)
        listed_jobs = len(job_batch.list_namespaced_job(ns, label_selector=CAMPAIGN_LABEL).items)

        # Reaction: for each later Job, the gap since the last Pod of its campaign was reported finished.
        reaction = []
        for j in jobs_log.jobs.values():
            done_times = [t for t in node.finished_by_campaign.get(j["campaign"], []) if t <= j["seen"]]
            if done_times:
                reaction.append(j["seen"] - max(done_times))

        delta = after - before
        bench = client_after - client_before
        total = resource_total(delta)
        bench_total = sum(bench.values())
        events = cp.kubectl_json("get", "events", "-n", ns)["items"]
        op_events = sum(1 for e in events if (e.get("source") or {}).get("component") == "flopwise-operator")
        kcm_keys = [("POST", "pods", ""), ("PUT", "jobs", "status"), ("PATCH", "jobs", "status")]
        kcm = sum(delta[k] for k in kcm_keys) + max(0.0, delta[("POST", "events", "")] + delta[
            ("PATCH", "events", "")] - op_events)
        background = background_rate * wall
        operator_req = total - bench_total - kcm - background
        conflicts = sum(v for k, v in delta.items() if k[0] == "code" and k[1] == "409")
        conflict_by = {k[2]: int(v) for k, v in delta.items() if k[0] == "code" and k[1] == "409" and v}
        phase_counts = Counter(s.get("phase") for s in status_of.values())

        print()
        print(f"=== {n} campaigns, {wall:.0f} s from the first create to the last terminal campaign "
              f"({'all terminal' if not unfinished else f'{len(unfinished)} UNFINISHED at the cap'})")
        per = sorted(per_campaign_jobs.values()) or [0]
        print(f"phases: {dict(phase_counts)}; Jobs created {total_jobs} (listed at the end {listed_jobs}); "
              f"Pods the node finished {len(node.finished)}; Jobs per campaign min {per[0]} / median "
              f"{statistics.median(per)} / max {per[-1]}; node errors {dict(node.errors) or 'none'}")
        if unfinished:
            for k, v in sorted(unfinished.items())[:20]:
                print(f"  unfinished {k}: {v}")
        print()
        rows = [
            ("apply → first Job p50 (watch)", f"{pct(latency, 50):.2f} s", f"≤ {TARGET_P50_S:.0f} s",
             pct(latency, 50) <= TARGET_P50_S),
            ("apply → first Job p95 (watch)", f"{pct(latency, 95):.2f} s", "-", None),
            ("apply → first Job max (watch)", f"{max(latency, default=math.nan):.2f} s", "-", None),
            ("same, operator's log of the create p50/p95", f"{pct(latency_log, 50):.2f} / {pct(latency_log, 95):.2f} s",
             "-", None),
            ("  watch delivery to this benchmark p50/p95", f"{pct(watch_lag, 50):.2f} / {pct(watch_lag, 95):.2f} s",
             "-", None),
            ("  p50 by apply order (fifths)", " ".join(f"{pct(part, 50):.2f}" for part in by_order), "-", None),
            ("same, creationTimestamps p50/p95", f"{pct(latency_ts, 50):.0f} / {pct(latency_ts, 95):.0f} s (1 s res.)",
             "-", None),
            ("operator CPU, whole run", f"{cpu_run:.1f} s ({cpu_run / wall * 100:.0f}% of a core)", "-", None),
            ("operator CPU per Job", f"{cpu_run / max(1, total_jobs) * 1000:.0f} ms", "-", None),
            ("operator peak RSS (VmHWM)", f"{peak_rss:.0f} MB", f"≤ {TARGET_RSS_MB:.0f} MB",
             peak_rss <= TARGET_RSS_MB),
            (f"operator CPU in {idle_s:.0f} s idle", f"{idle_cpu:.2f} s", f"≈ 0 (≤ {TARGET_IDLE_CPU_S} s)",
             idle_cpu <= TARGET_IDLE_CPU_S),
            (f"operator CPU in the next {args.idle:.0f} s", f"{idle2_cpu:.2f} s", f"≈ 0 (≤ {TARGET_IDLE_CPU_S} s)",
             idle2_cpu <= TARGET_IDLE_CPU_S),
            (f"API requests in the next {args.idle:.0f} s", f"{idle2_requests:.0f}", "≈ 0 (bg "
             f"{background_rate * args.idle:.0f})", None),
            (f"API requests in {idle_s:.0f} s idle (not ours)", f"{idle_requests:.0f}", "≈ 0 (bg "
             f"{background_rate * idle_s:.0f})", None),
            ("API requests / campaign, all", f"{total / n:.0f}", "-", None),
            ("  of which the benchmark (node, watches)", f"{bench_total / n:.0f}", "-", None),
            ("  of which controller-manager (est.)", f"{kcm / n:.0f}", "-", None),
            ("  of which background (idle rate)", f"{background / n:.0f}", "-", None),
            ("  operator (remainder)", f"{operator_req / n:.0f}", "-", None),
            ("operator API requests / s (run average)", f"{operator_req / wall:.1f}", "-", None),
            ("reconcile passes (operator metrics)", f"{reconciles:.0f} ({reconciles / max(1, total_jobs):.1f} per "
             f"Job), errors {reconcile_errors:.0f}", "-", None),
            ("reconcile duration p50 / p95", f"{reconcile_p50 * 1000:.0f} / {reconcile_p95 * 1000:.0f} ms", "-", None),
            ("API 409 conflicts (all clients)", f"{conflicts:.0f} {conflict_by or ''}", "-", None),
            ("kube-apiserver CPU, whole run", f"{api_cpu_run:.0f} s", "-", None),
            ("pod finished → next Job p50/p95", f"{pct(reaction, 50):.2f} / {pct(reaction, 95):.2f} s",
             f"p50 ≤ {TARGET_REACTION_P50_S:.0f} s", pct(reaction, 50) <= TARGET_REACTION_P50_S),
            ("fit workers: processes / peak RSS sum / CPU",
             f"{len(sampler.children_hwm)} / {sampler.children_rss_peak:.0f} MB / "
             f"{sum(sampler.children_cpu.values()):.0f} s", "-", None),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"{'measure':<{width}} | {'value':<34} | {'target':<16} | result")
        print(f"{'-' * width}-+-{'-' * 34}-+-{'-' * 16}-+-------")
        for label, value, target, ok in rows:
            print(f"{label:<{width}} | {value:<34} | {target:<16} | {'' if ok is None else 'PASS' if ok else 'MISS'}")
        print()
        print("API requests during the run by verb/resource/subresource (all clients; benchmark's own in brackets):")
        keys = sorted((k for k in delta if k[0] != "code" and delta[k] >= 1), key=lambda k: -delta[k])
        for k in keys[:30]:
            print(f"  {k[0]:6} {k[1] + ('/' + k[2] if k[2] else ''):32} {delta[k]:8.0f}  ({bench.get(k, 0)})")
        spent = latency_after - latency_before
        by_time = sorted({k[:3] for k in spent}, key=lambda k: -spent[(*k, "sum")])
        print("API server time by verb/resource (all clients): total s, mean ms")
        for k in by_time[:10]:
            count = spent[(*k, "count")]
            print(f"  {k[0]:6} {k[1] + ('/' + k[2] if k[2] else ''):32} {spent[(*k, 'sum')]:8.1f} s "
                  f"{1000 * spent[(*k, 'sum')] / max(count, 1):8.1f} ms")
        print(f"operator Events posted: {op_events}; idle-window requests by key: "
              f"{ {f'{k[0]} {k[1]}/{k[2]}': int(v) for k, v in idle_by_key.items()} }")
        codes = Counter()
        for k, v in delta.items():
            if k[0] == "code":
                codes[k[1]] += int(v)
        print(f"response codes: {dict(codes)}; non-2xx by resource: "
              f"{ {f'{k[1]} {k[2]}': int(v) for k, v in delta.items() if k[0] == 'code' and k[1][0] != '2' and v} }")
        print("Events posted in the idle window (source, reason): "
              f"{dict(Counter(((e.get('source') or {}).get('component'), e.get('reason')) for e in idle_events))}")
        for e in idle_events[:3]:
            print(f"  e.g. {e['involvedObject'].get('kind')}/{e['involvedObject'].get('name')} {e.get('reason')}: "
                  f"{(e.get('message') or '')[:300]}")
        report_log(op.log)
        return (0 if not unfinished else 1), {label: (value, target, ok) for label, value, target, ok in rows}
    finally:
        stop.set()
        if op is not None:
            op.stop()
        cp.close()
        if not args.keep:
            print(f"(operator log kept at {logdir / 'operator.log'})")


def first_created_logged(log: Path, namespace: str) -> dict[str, float]:
    """campaign → when the operator logged its first Job created (the log's local-time stamps, ms resolution)."""
    import datetime

    pattern = re.compile(rf"^\[(\S+ \S+)\] .*created Job {re.escape(namespace)}/(\S+) for run (\S+)")
    first: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = pattern.match(line)
        if match and match[2].endswith("-" + match[3]):
            when = datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            first.setdefault(match[2][: -len(match[3]) - 1], when)
    return first


def _ts(text: str) -> float:
    import datetime

    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


def report_log(log: Path) -> None:
    lines = log.read_text(errors="replace").splitlines()
    kinds = Counter()
    examples: dict[str, str] = {}
    for line in lines:
        for pattern in ("ERROR", "WARNING", "Traceback", "changed meanwhile", "409", "adopted Job", "timed out",
                        "reconciling", "Timer", "Throttling", "failed"):
            if pattern in line:
                kinds[pattern] += 1
                examples.setdefault(pattern, line[:400])
    created = sum("created Job" in line for line in lines)
    print(f"operator log: {len(lines)} lines, 'created Job' {created}; notable: {dict(kinds) or 'none'}")
    for pattern, line in examples.items():
        print(f"  e.g. [{pattern}] {line}")


if __name__ == "__main__":
    sys.exit(main())
