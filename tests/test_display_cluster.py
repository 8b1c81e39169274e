"""What a person reads about a cluster campaign, from the real API server: `kubectl get tc` and `-o wide` (the
printer columns, served by kube-apiserver from status.display) at every stage of a campaign the real operator
drives, and `flopwise status` / `flopwise report` reading the TrainingCampaign object.

The campaign is the issue's own: examples/cluster-h100-50k.yaml ($50k of H100 time). The tests play the node
only (tests/operator_harness.py: no kubelet can run here); API server, Job controller and operator are real.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flopwise.api.load import parse_campaign
from flopwise.contract import RunSummary
from flopwise.kube.fetch import fetch_campaign
from flopwise.report import write_report
from operator_harness import ROOT, Node, drive, status_of

COLUMNS = ["NAME", "PHASE", "BUDGET-USED", "TARGET-PARAMS", "PREDICTED-LOSS", "AGE"]
WIDE = ["NAME", "PHASE", "BUDGET-USED", "TARGET-PARAMS", "PREDICTED-LOSS", "RUNS", "SPENT", "BACKTEST-ARE", "AGE"]
READABLE = {  # each column as a person reads it: a unit, at most four significant digits
    "NAME": r"llm-50k", "PHASE": r"Pending|Ladder|Round1|Round2|Final|Succeeded",
    "BUDGET-USED": r"\d{1,3}\.\d%|0\.0\d+%", "TARGET-PARAMS": r"\d{1,3}(\.\d{1,2})?[KMBT]",
    "PREDICTED-LOSS": r"-|\d{1,2}\.\d{3}", "RUNS": r"\d+/\d+", "SPENT": r"\$[\d,]+(\.\d\d)?",
    "BACKTEST-ARE": r"-|\d{1,3}\.\d%", "AGE": r"\d+[smhd](\d+[sm])?",
}


def cells(table: str) -> list[dict[str, str]]:
    """`kubectl get` output as {column: cell}, cut at the header's column starts (a cell may hold a space)."""
    header, *rows = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [{name: row[start:end].strip() for name, start, end in zip(names, starts, [*starts[1:], None],
                                                                        strict=True)} for row in rows]


def check_readable(table: str, header: list[str]) -> dict[str, str]:
    assert table.splitlines()[0].split() == header, table
    (row,) = cells(table)
    for column, value in row.items():
        assert re.fullmatch(READABLE[column], value), f"{column}: {value!r} is not readable\n{table}"
    return row


class PoolNode(Node):
    """The harness's node, with each run taking the time its FLOPs take on the campaign's pool at its expected
    MFU (the synthetic results are timed for the tiny test pool: on H100s at $2.50/GPU-hour that time would spend
    the dollar budget on the first runs). The operator charges dollars from the GPU time a Pod held, so the Pod
    reports it: started that long before it finished, as a kubelet would after those hours (the test cannot wait
    them)."""

    def __init__(self, core, batch, namespace: str, flops_per_s: float):
        super().__init__(core, batch, namespace)
        self.flops_per_s = flops_per_s

    def finish(self, pod, message: str, exit_code: int = 0) -> None:
        summary = RunSummary.from_message(message)
        elapsed = summary.flops / self.flops_per_s
        paced = summary.model_copy(update={"elapsed_s": elapsed, "tokens_per_s": summary.tokens / elapsed})
        end = time.time()
        start, finish = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in (end - elapsed, end))
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed", "startTime": start, "containerStatuses": [{
                "name": "trainer", "image": pod.spec.containers[0].image, "imageID": "", "ready": False,
                "restartCount": 0, "state": {"terminated": {
                    "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "message": paced.to_message(), "startedAt": start, "finishedAt": finish}}}]}})
        self.done.add(pod.metadata.uid)


def flopwise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flopwise", *args], capture_output=True, text=True, timeout=120)


def test_kubectl_get_tc_status_and_report_read_like_a_person_writes(crd, operator, apis, tmp_path: Path) -> None:
    cp, ns, kubeconfig = crd, operator.namespace, str(crd.kubeconfig)
    doc = yaml.safe_load((ROOT / "examples" / "cluster-h100-50k.yaml").read_text())
    doc["metadata"]["namespace"] = ns
    cp.apply_yaml(yaml.safe_dump(doc))
    planned = cp.wait_for(lambda: (s := status_of(cp, ns, "llm-50k")).phase != "Pending" and s.run_counts.running
                          and s, timeout=60, what="the campaign planned and its first Jobs launched")
    first_run = next(r.run_id for r in planned.runs if r.state == "Running")

    # What the issue saw as `9.356419665843365   9286534848`: now a share and a size, and no prior's loss.
    first = check_readable(cp.kubectl("get", "tc", "-n", ns).stdout, COLUMNS)
    assert first["TARGET-PARAMS"] == "9.29B" and first["PREDICTED-LOSS"] == "-"
    assert first["BUDGET-USED"] == f"{planned.ledger.used_percent:.1f}%"
    wide = check_readable(cp.kubectl("get", "tc", "-n", ns, "-o", "wide").stdout, WIDE)
    total = len(planned.runs) + len([r for r in planned.plan.all_runs() if r.run_id not in
                                     {x.planned_id for x in planned.runs}])
    assert wide["RUNS"] == f"0/{total}" and wide["SPENT"] == "$0.00" and wide["BACKTEST-ARE"] == "-"

    # `flopwise status NAMESPACE/NAME`: the same one screen, with the running Jobs' progress estimated
    shown = flopwise("status", f"{ns}/llm-50k", "--kubeconfig", kubeconfig)
    assert shown.returncode == 0, shown.stderr
    for text in ("campaign llm-50k", f"phase           {planned.phase}", "% of $50,000", "left", "running",
                 first_run, "step ~", "campaign ETA    ~", "none until the campaign's own fit"):
        assert text in shown.stdout, shown.stdout
    missing = flopwise("status", f"{ns}/no-such-campaign", "--kubeconfig", kubeconfig)
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr

    seen: list[str] = []

    def look() -> None:  # every stage the campaign goes through, as kubectl shows it
        table = cp.kubectl("get", "tc", "-n", ns, "-o", "wide").stdout
        if not seen or table.split("\n", 1)[1] != seen[-1].split("\n", 1)[1]:
            seen.append(table)

    core, batch, _ = apis
    pool = parse_campaign(doc).spec.gpu_pool
    node = PoolNode(core, batch, ns, pool.expected_mfu * pool.peak * pool.gpus_per_run)
    status = drive(cp, node, ns, "llm-50k", timeout=300, between=look)
    assert status.phase == "Succeeded", status.message
    look()
    rows = [check_readable(table, WIDE) for table in seen]
    assert {row["PHASE"] for row in rows} >= {planned.phase, "Ladder", "Succeeded"} and len(rows) >= 3, seen
    last = rows[-1]
    assert last["RUNS"] == f"{len(status.runs)}/{len(status.runs)}"
    assert last["PREDICTED-LOSS"] == f"{status.prediction.loss:.3f}" and last["BACKTEST-ARE"].endswith("%")
    assert last["SPENT"] == status.display.spent and float(last["SPENT"][1:].replace(",", "")) > 0

    # `flopwise report NAMESPACE/NAME`: the report a local run writes, from the live object's spec and status
    out = tmp_path / "report"
    made = flopwise("report", f"{ns}/llm-50k", "--kubeconfig", kubeconfig, "--out", str(out))
    assert made.returncode == 0, made.stderr
    fetched = fetch_campaign(ns, "llm-50k", kubeconfig=kubeconfig)
    expected = write_report(fetched.spec, fetched.status, tmp_path / "expected", f"{ns}/llm-50k")
    assert (out / "report.md").read_text() == expected.read_text()
    assert (out / "loss_vs_compute.png").read_bytes()[:4] == b"\x89PNG"
    assert f"# flopwise campaign report: {ns}/llm-50k" in expected.read_text()


def test_cluster_references_and_missing_credentials_are_told_apart(tmp_path: Path) -> None:
    from flopwise.kube.fetch import parse_ref

    assert parse_ref("research/llm-50k") == ("research", "llm-50k")
    for text in ("llm-50k", "a/b/c", "Research/x", "/x", "x/"):
        assert parse_ref(text) is None, text
    missing = flopwise("status", "research/llm-50k", "--kubeconfig", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--kubeconfig" in missing.stderr and "Traceback" not in missing.stderr
