"""The operator's metrics for real: `flopwise operator --metrics-port P` against the real control plane, scraped
by a real Prometheus (Debian's package, 1 s interval) while the tests play the node for a tiny campaign (see
tests/operator_harness.py; one of its Pods fails; played so that every dashboard query has exact values at once —
the real node's operator Pod is scraped in tests/test_node_e2e.py). Shown: `promtool check metrics` passes on a
real scrape; the phase is one 0/1 series per known phase; the Job counters count what the operator did; every
PromQL query of the Grafana dashboard returns data from that Prometheus; a deleted campaign's series leave the
scrape and Prometheus.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import operator_harness
from cluster import free_port, script
from conftest import run_operator
from flopwise.kube import metrics
from operator_harness import MANAGED, RUN_ID, Node, check_finished, drive, status_of, tiny_campaign
from synthetic import POOL_FLOPS_PER_S
from synthetic import summary_for as plain_summary

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "flopwise" / "dashboards" / "flopwise.json"
JOB = "flopwise-operator"
PEAK = 1e10  # tiny-campaign.yaml's peakFlops: the synthetic runs measure MFU POOL_FLOPS_PER_S / PEAK


@pytest.fixture()
def metrics_operator(crd, tmp_path):
    port = free_port()
    for op in run_operator(crd, tmp_path, as_service_account=False,
                           extra_args=["--metrics-address", "127.0.0.1", "--metrics-port", str(port)]):
        op.metrics_port = port
        yield op


class Prometheus:
    """`prometheus` on loopback, scraping one target every second, its TSDB in a temporary folder."""

    def __init__(self, folder: Path, target: str, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(folder / "prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=operator_harness._die_with_parent)

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.url}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def last_scrape(self) -> float:
        result = self.query(f'timestamp(up{{job="{JOB}"}})')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for_scrape(self, cp) -> None:
        """Until Prometheus has scraped once more, so every state the node brings about is seen."""
        seen = self.last_scrape()
        cp.wait_for(lambda: self.last_scrape() > seen, timeout=60, interval=0.2, what="a new Prometheus scrape")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def substitute(expr: str, values: dict[str, str]) -> str:
    """What Grafana does to a query before sending it: $var and ${var} replaced by the variables' values."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)


def with_mfu(spec):
    """The synthetic report plus the MFU a trainer that knows its peak reports."""
    return plain_summary(spec).model_copy(update={"mfu": POOL_FLOPS_PER_S / PEAK})


def test_a_real_prometheus_scrapes_the_operator_and_answers_every_dashboard_query(
        crd, metrics_operator, apis, tmp_path, monkeypatch) -> None:
    cp, ns, port = crd, metrics_operator.namespace, metrics_operator.metrics_port
    core, batch, _ = apis
    folder = Path(script("prometheus", timeout=600))
    promtool = str(folder / "promtool")
    cp.wait_for(lambda: _reachable(port), timeout=60, what="the operator's metrics endpoint")
    prometheus = Prometheus(folder, f"127.0.0.1:{port}", tmp_path)
    try:
        cp.wait_for(prometheus.ready, timeout=60, what="Prometheus ready")
        prometheus.wait_for_scrape(cp)

        doc = tiny_campaign("tiny", ns)
        doc["spec"]["gpuPool"]["pricePerGpuHour"] = 7200.0  # priced: the dollar panels have data
        cp.apply_yaml(yaml.safe_dump(doc))
        c = f'campaign="tiny",namespace="{ns}"'
        # Nothing finishes until the node plays: Prometheus sees the campaign running, with nothing spent.
        cp.wait_for(lambda: prometheus.query(f'flopwise_runs{{{c},state="running"}} > 0 and on (namespace, campaign) '
                                             f'flopwise_campaign_phase{{{c},phase="Round1"}} == 1'),
                    timeout=60, what="Prometheus sees the campaign's first runs")
        monkeypatch.setattr(operator_harness, "summary_for", with_mfu)
        node = Node(core, batch, ns)
        failing = {"ladder-c0-01"}  # its first Pod exits 1 with no result: the engine retries it as ladder-c0-01-a1

        def between() -> None:
            for pod in core.list_namespaced_pod(ns, label_selector=MANAGED).items:
                if pod.metadata.annotations[RUN_ID] in failing and pod.status.phase == "Pending":
                    node.finish(pod, "CUDA error: an illegal memory access was encountered", exit_code=1)
                    failing.clear()
            prometheus.wait_for_scrape(cp)

        status = drive(cp, node, ns, "tiny", timeout=600, between=between, skip=failing)
        check_finished(status, doc["spec"]["budget"]["flops"])
        assert not failing and next(r for r in status.runs if r.run_id == "ladder-c0-01").state == "Failed"

        # A real scrape of the running operator passes promtool, and says what the status says.
        finished = f'flopwise_campaign_phase{{campaign="tiny",namespace="{ns}",phase="Succeeded"}} 1.0'
        cp.wait_for(lambda: finished in scrape(port), timeout=60, what="the finished campaign scraped")
        text = scrape(port)
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check
        status = status_of(cp, ns, "tiny")
        found = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in text_string_to_metric_families(text) for s in f.samples}
        campaign = (("campaign", "tiny"), ("namespace", ns))
        phases = {dict(labels)["phase"]: v for (name, labels), v in found.items() if name == "flopwise_campaign_phase"}
        assert phases == {p: float(p == "Succeeded") for p in metrics.PHASES}
        # one Job per run attempt (the failed one and its retry included), each counted once
        assert found[("flopwise_jobs_created_total", ())] == len(status.runs)
        assert found[("flopwise_jobs_failed_total", ())] == 1 == status.run_counts.failed
        assert found[("flopwise_jobs_preempted_total", ())] == 0  # kube-apiserver 1.20 has no Job suspend
        assert found[("flopwise_leader", ())] == 1  # no leader election: this replica acts
        assert found[("flopwise_budget_spent_flops", campaign)] == status.ledger.spent_flops
        assert found[("flopwise_runs", (*campaign, ("state", "succeeded")))] == status.run_counts.succeeded
        assert found[("flopwise_measured_mfu_ratio", campaign)] == POOL_FLOPS_PER_S / PEAK
        assert found[("flopwise_predicted_loss", campaign)] == status.prediction.loss
        reconciles = found[("flopwise_reconcile_duration_seconds_count", ())]
        assert reconciles >= len(status.runs)  # the handlers time every pass

        # Prometheus has the end too, and the burn-down between.
        cp.wait_for(lambda: prometheus.query(f'flopwise_campaign_phase{{{c},phase="Succeeded"}} == 1'), timeout=60,
                    what="Prometheus has the finished campaign")
        burn = prometheus.query(f"min_over_time(flopwise_budget_spent_flops{{{c}}}[1h]) < "
                                f"max_over_time(flopwise_budget_spent_flops{{{c}}}[1h])")
        assert burn, "the burn-down has more than one value"

        # Every query of the dashboard returns data, its variables chosen as Grafana would offer them.
        dashboard = json.loads(DASHBOARD.read_text())
        assert ns in prometheus.get("/api/v1/label/namespace/values", **{"match[]": "flopwise_campaign_phase"})["data"]
        assert "tiny" in prometheus.get("/api/v1/label/campaign/values",
                                        **{"match[]": f'flopwise_campaign_phase{{namespace="{ns}"}}'})["data"]
        assert JOB in prometheus.get("/api/v1/label/job/values",
                                     **{"match[]": "flopwise_reconcile_errors_total"})["data"]
        values = {"namespace": ns, "campaign": "tiny", "job": JOB, "__rate_interval": "1m", "__interval": "15s"}
        answered = {}
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = substitute(target["expr"], values)
                assert "$" not in expr, expr
                answered[f"{panel['title']} / {target['legendFormat']}"] = result = prometheus.query(expr)
                assert result, f"no data for {panel['title']!r}: {expr}"
        sys.stderr.write(f"\n[metrics] {len(answered)} dashboard queries answered; {reconciles:.0f} reconciles; "
                         f"{len(text.splitlines())} exposition lines\n")

        # Deleting the campaign removes its series from the scrape, then from Prometheus' present.
        cp.kubectl("delete", "trainingcampaign", "tiny", "-n", ns)
        cp.wait_for(lambda: 'campaign="tiny"' not in scrape(port), timeout=60, what="the campaign's series gone")
        assert "flopwise_reconcile_errors_total" in scrape(port)  # the operator's own series stay
        cp.wait_for(lambda: not prometheus.query(f"{{{c}}}"), timeout=60,
                    what="Prometheus marked the campaign's series stale")
        assert prometheus.query(f'up{{job="{JOB}"}} == 1')
    finally:
        prometheus.close()
        sys.stderr.write(f"----- prometheus log (last lines) -----\n"
                         f"{chr(10).join(prometheus.log.read_text(errors='replace').splitlines()[-20:])}\n")


def _reachable(port: int) -> bool:
    try:
        return "flopwise_reconcile_errors_total" in scrape(port)
    except OSError:
        return False
