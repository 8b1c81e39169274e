"""The chart's alerting rules (templates/_alerts.tpl, rendered as a PrometheusRule by the real Helm), checked by the
real `promtool` (Debian's Prometheus 2.42, from `hack/control-plane.sh prometheus`): `promtool check rules` on the
rendered spec, `promtool test rules` with the unit tests in tests/data/alerts-test.yaml (every alert fires on
input series shaped as the operator exports them, and stays silent on a healthy twin). The rules may name only
metrics the operator really exports; a rule pointed at a wrong name fails its unit tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cluster import script
from flopwise.api.status import Condition, TrainingCampaignStatus
from flopwise.kube import metrics

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "flopwise"
UNIT_TESTS = ROOT / "tests" / "data" / "alerts-test.yaml"
RELEASE, NAMESPACE = "fw", "flopwise-system"  # the unit tests' series carry job="fw-flopwise-metrics"
ALERTS = ["FlopwiseCampaignFailed", "FlopwiseCampaignDegraded", "FlopwiseBudgetNearlyUsed",
          "FlopwiseBudgetForecastOverrun", "FlopwiseCampaignNotReconciled", "FlopwiseOperatorDown", "FlopwiseNoLeader",
          "FlopwiseMultipleLeaders", "FlopwiseReconcileErrors", "FlopwiseJobsFailing", "FlopwiseWorkQueueBacklog"]


@pytest.fixture(scope="module")
def helm() -> str:
    return subprocess.run(["bash", str(ROOT / "hack" / "control-plane.sh"), "helm"], check=True, text=True,
                          capture_output=True).stdout.strip()


@pytest.fixture(scope="module")
def promtool() -> str:
    return str(Path(script("prometheus", timeout=600)) / "promtool")


def prometheus_rule(helm: str, *sets: str) -> dict | None:
    """Rendered with these --set values (--set-json for numbers: --set reads 0.8 as a string)."""
    args = [a for s in ("metrics.prometheusRule.enabled=true", *sets)
            for a in ("--set-json" if re.search(r"=[0-9.]+$", s) else "--set", s)]
    res = subprocess.run([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, *args], text=True,
                         capture_output=True)
    assert res.returncode == 0, res.stderr
    found = [d for d in yaml.safe_load_all(res.stdout) if d and d["kind"] == "PrometheusRule"]
    return found[0] if found else None


def write_rules(helm: str, folder: Path, *sets: str) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file, next to a copy of the unit tests that load it."""
    rule = prometheus_rule(helm, *sets)
    (folder / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    shutil.copy(UNIT_TESTS, folder / UNIT_TESTS.name)
    return folder / "rules.yaml"


def promtool_run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_names(rule: dict) -> list[str]:
    return [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]


# ------------------------------------------------------------------------------------------------------ promtool
def test_promtool_check_rules_passes_on_the_rendered_rules(helm, promtool, tmp_path) -> None:
    rules = write_rules(helm, tmp_path)
    res = promtool_run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert res.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in res.stdout, res.stdout + res.stderr
    # and it does object to a broken expression (the check above is a real one)
    broken = rules.read_text().replace("max by (job) (flopwise_leader", "max by (job (flopwise_leader", 1)
    rules.write_text(broken)
    res = promtool_run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert res.returncode != 0 and "FlopwiseNoLeader" in res.stdout + res.stderr, res.stdout + res.stderr


def test_promtool_unit_tests_of_every_alert_pass(helm, promtool, tmp_path) -> None:
    write_rules(helm, tmp_path)
    res = promtool_run(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == set(ALERTS)
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == set(ALERTS)


@pytest.mark.parametrize(("wrong", "right", "alert"), [
    ("flopwise_campaign_info", "flopwise_campaign_phase", "FlopwiseCampaignFailed"),  # the old info metric
    ('condition="Ready"', 'condition="Degraded"', "FlopwiseCampaignDegraded"),
    ("flopwise_budget_used_percent", "flopwise_budget_used_ratio", "FlopwiseBudgetNearlyUsed"),
    ("flopwise_jobs_failed", "flopwise_jobs_failed_total", "FlopwiseJobsFailing"),
])
def test_the_unit_tests_fail_when_a_rule_names_a_wrong_series(helm, promtool, tmp_path, wrong, right,
                                                               alert) -> None:
    rules = write_rules(helm, tmp_path)
    rules.write_text(rules.read_text().replace(right, wrong))
    assert promtool_run(promtool, "check", "rules", str(rules), cwd=tmp_path).returncode == 0  # still valid PromQL
    res = promtool_run(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert res.returncode != 0 and f"alertname: {alert}," in res.stderr, res.stdout + res.stderr


def test_rules_name_only_metrics_the_operator_exports() -> None:
    """Every series a rule selects is in a real exposition of flopwise.kube.metrics (or Prometheus' own `up`)."""
    status = TrainingCampaignStatus(conditions=[Condition(type="Degraded", status="True", reason="Forbidden")])
    status.ledger.forecast_usd, status.ledger.budget_usd = 120.0, 100.0
    metrics.follow_leadership(lambda: True)
    metrics.observe_campaign("research", "alerts", status)
    try:
        text = generate_latest(metrics.REGISTRY).decode()
    finally:
        metrics.forget_campaign("research", "alerts")
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples} | {"up"}
    source = (CHART / "templates" / "_alerts.tpl").read_text()
    named = set(re.findall(r"\b(?:flopwise_[a-z0-9_]+|up)(?=\{)", source))
    assert len(named) >= 12 and named <= exported, named - exported


# ------------------------------------------------------------------------------------------------------ values
def test_the_prometheus_rule_is_off_by_default_and_follows_its_values(helm) -> None:
    res = subprocess.run([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE], text=True, capture_output=True)
    assert res.returncode == 0 and "PrometheusRule" not in res.stdout
    assert prometheus_rule(helm, "metrics.enabled=false") is None  # nothing to alert on without metrics
    rule = prometheus_rule(helm)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["namespace"] == NAMESPACE
    assert alert_names(rule) == ALERTS
    for r in (r for g in rule["spec"]["groups"] for r in g["rules"]):
        assert r["labels"]["severity"] in ("critical", "warning", "info") and r["annotations"]["summary"], r
        assert 'job="fw-flopwise-metrics"' in r["expr"], r  # never another operator's series
    rule = prometheus_rule(helm, "metrics.prometheusRule.labels.release=prom", "metrics.prometheusRule.job=flopwise",
                           "metrics.prometheusRule.alertLabels.team=ml", "metrics.prometheusRule.budgetUsedRatio=0.8",
                           "metrics.prometheusRule.degradedFor=30m",
                           "metrics.prometheusRule.disabled={FlopwiseBudgetNearlyUsed,FlopwiseWorkQueueBacklog}")
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert alert_names(rule) == [a for a in ALERTS if a not in ("FlopwiseBudgetNearlyUsed", "FlopwiseWorkQueueBacklog")]
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert all(r["labels"]["team"] == "ml" and 'job="flopwise"' in r["expr"] for r in rules.values())
    assert rules["FlopwiseCampaignDegraded"]["for"] == "30m"
    nearly = {r["alert"]: r for g in prometheus_rule(helm, "metrics.prometheusRule.budgetUsedRatio=0.8")["spec"][
        "groups"] for r in g["rules"]}["FlopwiseBudgetNearlyUsed"]
    assert ">= 0.8" in nearly["expr"]
    every_campaign_alert = prometheus_rule(helm, "metrics.prometheusRule.disabled={" + ",".join(ALERTS[5:]) + "}")
    assert [g["name"] for g in every_campaign_alert["spec"]["groups"]] == ["flopwise-campaigns"]  # no empty group


@pytest.mark.parametrize(("value", "message"), [
    ("metrics.prometheusRule.disabled={FlopwiseBogus}", "at '/metrics/prometheusRule/disabled/0'"),
    ("metrics.prometheusRule.budgetUsedRatio=1.5", "at '/metrics/prometheusRule/budgetUsedRatio': maximum"),
    ("metrics.prometheusRule.degradedFor=ten", "at '/metrics/prometheusRule/degradedFor'"),
    ('metrics.prometheusRule.job=a"b', "at '/metrics/prometheusRule/job'"),
])
def test_the_schema_rejects_a_bad_rule_value_naming_it(helm, value, message) -> None:
    flag = "--set-json" if re.search(r"=[0-9.]+$", value) else "--set"
    res = subprocess.run([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, flag, value], text=True,
                         capture_output=True)
    assert res.returncode != 0 and message in res.stderr, res.stderr
