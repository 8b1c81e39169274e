"""The operator's Prometheus metrics without a cluster: statuses made by the real engine (synthetic run reports,
losses from a known law) go through `flopwise.kube.metrics`; the text exposition is checked for values, naming
conventions, bounded cardinality and forgetting, and by the real `promtool check metrics` (Debian's prometheus
package, installed by hack/control-plane.sh prometheus). The Grafana dashboard is checked against the names the
exposition really has; tests/test_metrics_cluster.py runs every one of its queries against a real Prometheus.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import threading
import typing
import urllib.request
from pathlib import Path

import pytest
import yaml
from kopf._cogs.structs.bodies import Body
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cluster import free_port, script
from flopwise.api.load import parse_campaign
from flopwise.api.status import Condition, Phase, RunRecord, TrainingCampaignStatus
from flopwise.contract import CurvePoint, RunSummary
from flopwise.engine.machine import EngineOptions, Observation, reconcile
from flopwise.fitting.fit import COARSE_GRID
from flopwise.kube import metrics
from synthetic import POOL_FLOPS_PER_S, TRUTH, lr_penalty

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "flopwise" / "dashboards" / "flopwise.json"
FAST = EngineOptions(bootstrap_resamples=8, fit_grid=COARSE_GRID)
MFUS = (0.1, 0.12, 0.6, None)  # what the runs report in turn (None: a trainer that knows no peak)


def priced_spec():
    doc = yaml.safe_load((ROOT / "tests" / "data" / "tiny-campaign.yaml").read_text())
    doc["spec"]["gpuPool"]["pricePerGpuHour"] = 7200.0
    return parse_campaign(doc).spec


def report(record: RunRecord, mfu: float | None) -> RunSummary:
    tokens = record.tokens
    curve = [CurvePoint(tokens=int(tokens * f), val_loss=TRUTH.loss(record.params, tokens * f)
                        + lr_penalty(record.learning_rate)) for f in (0.25, 0.5, 0.75, 1.0)]
    flops = record.shape.flops_per_token() * tokens
    elapsed = flops / POOL_FLOPS_PER_S
    return RunSummary(run_id=record.run_id, status="succeeded", params=record.params, tokens=tokens,
                      steps=record.steps, flops=flops, final_val_loss=curve[-1].val_loss,
                      best_val_loss=curve[-1].val_loss, best_step=record.steps, best_tokens=tokens, curve=curve,
                      elapsed_s=elapsed, tokens_per_s=tokens / elapsed, mfu=mfu)


def campaign_history(spec=None) -> tuple[list[TrainingCampaignStatus], dict[str, float | None]]:
    """Every status the engine wrote from creation to Succeeded, and the MFU each run reported."""
    spec = spec or priced_spec()
    statuses, reported, status = [], {}, None
    for now in range(1, 200):
        observations = []
        for record in (status.runs if status else []):
            if record.state == "Running":
                reported[record.run_id] = MFUS[len(reported) % len(MFUS)]
                observations.append(Observation(record.run_id, "succeeded", report(record, reported[record.run_id])))
        status = reconcile(spec, status, observations, now=float(now), options=FAST).status
        statuses.append(status)
        if status.phase in ("Succeeded", "Failed"):
            return statuses, reported
    raise AssertionError("the campaign did not finish")


@pytest.fixture(scope="module")
def history():
    return campaign_history()


@pytest.fixture(scope="module")
def promtool() -> str:
    return str(Path(script("prometheus", timeout=600)) / "promtool")


@pytest.fixture(autouse=True)
def clean():
    """The module's collector is process-wide: every test starts and ends with no campaign observed, and as the
    leader (what a replica without leader election is)."""
    metrics.follow_leadership(lambda: True)
    for namespace, name in list(metrics.CAMPAIGNS._campaigns):
        metrics.forget_campaign(namespace, name)
    yield
    metrics.follow_leadership(lambda: True)
    for namespace, name in list(metrics.CAMPAIGNS._campaigns):
        metrics.forget_campaign(namespace, name)


OPERATOR_OWN = ("flopwise_reconcile", "flopwise_queue", "flopwise_leader", "flopwise_jobs")  # no campaign labels


def exposition() -> str:
    return generate_latest(metrics.REGISTRY).decode()


def samples(text: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text if text is not None else exposition())
            for s in family.samples}


def value(name: str, **labels: str) -> float:
    return samples()[(name, tuple(sorted(labels.items())))]


def campaign_series(found, campaign: str) -> set:
    return {key for key in found if ("campaign", campaign) in key[1]}


def check_with_promtool(promtool: str, text: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------------------------------- tests
def test_a_finished_campaign_is_exposed_with_the_values_of_its_status(history) -> None:
    statuses, reported = history
    final = statuses[-1]
    assert final.phase == "Succeeded" and final.law is not None and final.law.ci_low and final.prediction
    metrics.observe_campaign("research", "tiny", final)
    c = {"namespace": "research", "campaign": "tiny"}
    ledger, law, plan = final.ledger, final.law, final.plan
    assert {p: value("flopwise_campaign_phase", phase=p, **c) for p in metrics.PHASES} == \
        {p: float(p == "Succeeded") for p in metrics.PHASES}
    assert value("flopwise_budget_flops", **c) == ledger.budget_flops == 1.2e11
    assert value("flopwise_budget_spent_flops", **c) == ledger.spent_flops > 0
    assert value("flopwise_budget_reserved_flops", **c) == 0.0
    assert math.isclose(value("flopwise_budget_spent_gpu_seconds", **c), ledger.spent_gpu_hours * 3600)
    assert math.isclose(value("flopwise_budget_gpu_seconds", **c), 1.2e11 / (1e10 * 0.2))  # budget at planned MFU
    assert value("flopwise_budget_dollars", **c) == plan.budget_usd > 0  # FLOP limit, priced
    assert value("flopwise_budget_spent_dollars", **c) == ledger.spent_usd > 0
    assert value("flopwise_budget_forecast_dollars", **c) == ledger.forecast_usd
    assert math.isclose(value("flopwise_budget_used_ratio", **c), ledger.used_percent / 100)
    for state in ("pending", "running", "queued", "suspended", "succeeded", "failed", "lost"):
        assert value("flopwise_runs", state=state, **c) == getattr(final.run_counts, state)
    assert value("flopwise_runs", state="succeeded", **c) == len(final.runs) > 5
    assert value("flopwise_runs_planned", **c) == final.run_counts.planned
    for metric, field in (("irreducible_loss", "E"), ("params_coefficient", "A"), ("tokens_coefficient", "B"),
                          ("params_exponent", "alpha"), ("tokens_exponent", "beta")):
        assert value(f"flopwise_law_{metric}", **c) == getattr(law, field)
        assert value(f"flopwise_law_{metric}_ci_low", **c) == law.ci_low[field]
        assert value(f"flopwise_law_{metric}_ci_high", **c) == law.ci_high[field]
    assert math.isclose(value("flopwise_law_params_exponent", **c), TRUTH.alpha, rel_tol=1e-3)  # the law it saw
    assert value("flopwise_law_backtest_are_ratio", **c) == law.backtest_are
    assert value("flopwise_predicted_loss", **c) == final.prediction.loss == final.predicted_loss
    assert value("flopwise_predicted_loss_ci_low", **c) == final.prediction.loss_low
    assert value("flopwise_predicted_loss_ci_high", **c) == final.prediction.loss_high
    assert value("flopwise_optimal_params", **c) == plan.target.params_optimal > 0
    assert value("flopwise_optimal_tokens", **c) == plan.target.tokens_optimal > 0
    best = min((r for r in final.runs), key=lambda r: r.result.final_val_loss)
    assert value("flopwise_best_loss", **c) == best.result.final_val_loss
    assert value("flopwise_best_loss_flops", **c) == best.result.flops
    # MFU: the median of what the finished runs reported (runs reporting none are left out), not their mean
    median = statistics.median(m for m in reported.values() if m is not None)
    assert median != statistics.mean(m for m in reported.values() if m is not None)
    assert value("flopwise_measured_mfu_ratio", **c) == median
    assert math.isclose(value("flopwise_weighted_mfu_ratio", **c), 0.2)  # elapsed = FLOPs / (0.2 × peak)
    assert value("flopwise_planned_mfu_ratio", **c) == 0.2
    transfer, floor = final.tuning.transfer, final.noise_floor  # the synthetic best LR is the same at every width
    assert transfer.verdict == "holds" and value("flopwise_lr_transfer_holds", **c) == 1.0
    assert value("flopwise_target_learning_rate", **c) == transfer.learning_rate == final.recommendation.learning_rate
    assert value("flopwise_target_learning_rate_ci_low", **c) == transfer.lr_low < transfer.learning_rate
    assert value("flopwise_noise_floor_are_ratio", **c) == floor.floor_are


def test_a_new_campaign_shows_only_what_its_status_says() -> None:
    metrics.observe_campaign("research", "new", TrainingCampaignStatus())
    found = samples()
    names = {name for name, _ in campaign_series(found, "new")}
    assert names == {"flopwise_campaign_phase", "flopwise_campaign_observed_timestamp_seconds", "flopwise_runs",
                     "flopwise_budget_flops", "flopwise_budget_reserved_flops", "flopwise_budget_spent_flops",
                     "flopwise_budget_reserved_gpu_seconds", "flopwise_budget_spent_gpu_seconds",
                     "flopwise_budget_reserved_dollars", "flopwise_budget_spent_dollars", "flopwise_budget_used_ratio",
                     "flopwise_runs_planned"}
    phases = {p: value("flopwise_campaign_phase", namespace="research", campaign="new", phase=p)
              for p in metrics.PHASES}
    assert phases == {p: float(p == "Pending") for p in metrics.PHASES}


def test_names_units_and_labels_follow_prometheus_conventions(history) -> None:
    statuses, _ = history
    metrics.observe_campaign("research", "tiny", statuses[-1])
    metrics.observe_campaign("research", "ladder", next(s for s in statuses if s.phase == "Ladder"))
    metrics.observe_reconcile(0.5, error=True)
    families = [f for f in text_string_to_metric_families(exposition()) if f.name.startswith("flopwise_")]
    assert len(families) >= 40
    for family in families:
        assert re.fullmatch(r"flopwise_[a-z0-9_]+", family.name), family.name
        assert family.documentation, f"{family.name} has no HELP"
        for word in ("hours", "percent", "milliseconds", "minutes", "count"):
            assert word not in family.name.split("_"), f"{family.name}: not a base unit"
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name == family.name + "_total"
            else:
                assert not sample.name.endswith("_total"), sample.name
            extra = {"flopwise_campaign_phase": {"phase"}, "flopwise_runs": {"state"},
                     "flopwise_campaign_condition": {"condition", "status"},
                     "flopwise_reconcile_duration_seconds": {"le"}}
            allowed = {"namespace", "campaign"} | extra.get(family.name, set())
            if family.name.startswith(OPERATOR_OWN):
                allowed -= {"namespace", "campaign"}  # the operator's own health: one series, no campaign
            else:
                assert {"namespace", "campaign"} <= set(sample.labels), sample
            assert set(sample.labels) <= allowed, sample


def test_promtool_check_metrics_passes_on_the_exposition(history, promtool) -> None:
    statuses, _ = history
    for i, status in enumerate(statuses):  # every phase the campaign went through, side by side
        metrics.observe_campaign("research", f"step-{i}", status)
    metrics.observe_reconcile(0.02, error=False)
    metrics.observe_queue(3)
    text = exposition()
    assert len(text.splitlines()) > 300
    result = check_with_promtool(promtool, text)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result
    # and promtool does object to what the conventions forbid (the check above is a real one)
    bad = check_with_promtool(promtool, "# HELP flopwise_gpu_hours GPU time.\n# TYPE flopwise_gpu_hours counter\n"
                                        "flopwise_gpu_hours 1\n")
    assert bad.returncode != 0 and "_total" in bad.stdout + bad.stderr, bad


def test_forgetting_a_campaign_removes_every_one_of_its_series(history) -> None:
    statuses, _ = history
    metrics.observe_campaign("research", "tiny", statuses[-1])
    metrics.observe_campaign("other", "tiny", statuses[-1])
    metrics.observe_campaign("research", "kept", statuses[3])
    before = samples()
    gone = {k for k in before if ("namespace", "research") in k[1] and ("campaign", "tiny") in k[1]}
    assert len(gone) >= 45
    metrics.forget_campaign("research", "tiny")
    metrics.forget_campaign("research", "never-seen")  # harmless
    after = samples()
    assert not gone & set(after)
    assert set(after) == set(before) - gone  # the other campaigns and the operator's own series stay
    assert campaign_series(after, "kept")
    metrics.forget_campaign("other", "tiny")
    metrics.forget_campaign("research", "kept")
    assert not [k for k in samples() if k[0].startswith("flopwise_") and ("campaign", "kept") in k[1]]
    assert "flopwise_campaign_phase" not in exposition()  # no campaign: no empty per-campaign families either


def test_cardinality_is_per_campaign_and_does_not_grow_with_runs_or_steps(history) -> None:
    statuses, _ = history
    per_status = []
    for status in statuses:  # every reconcile of the campaign overwrites the same series
        metrics.observe_campaign("research", "tiny", status)
        per_status.append(len(campaign_series(samples(), "tiny")))
    conditions = max(len(s.conditions) for s in statuses)
    bound = len(metrics.GAUGES) + len(metrics.PHASES) + 3 * conditions + 1 + 5  # + observed time, runs by state
    assert max(per_status) == len(campaign_series(samples(), "tiny")) <= bound
    final = statuses[-1]
    many = final.model_copy(update={"runs": [r.model_copy(update={"run_id": f"{r.run_id}-{i}"})
                                              for i in range(40) for r in final.runs]})
    assert len(many.runs) >= 40 * 9
    metrics.observe_campaign("research", "many", many)
    assert len(campaign_series(samples(), "many")) == len(campaign_series(samples(), "tiny"))


def test_the_phase_is_one_series_per_known_phase_exactly_one_of_them_1(history) -> None:
    """kube-state-metrics' pattern: at every status the campaign went through, each of the 8 phases has a series,
    the current one 1 and the others 0, so `== 1` never finds a past phase (the info metric's stale series did)."""
    statuses, _ = history
    assert typing.get_args(Phase) == metrics.PHASES  # every phase the API defines, a new one included
    assert {"Pending", "Planned", "Ladder", "Round1", "Round2", "Final", "Succeeded", "Failed"} <= set(metrics.PHASES)
    went_through = []
    for status in statuses:
        metrics.observe_campaign("research", "tiny", status)
        phase = {dict(k[1])["phase"]: v for k, v in samples().items() if k[0] == "flopwise_campaign_phase"}
        assert set(phase) == set(metrics.PHASES) and set(phase.values()) == {0.0, 1.0}
        assert [p for p, v in phase.items() if v == 1.0] == [status.phase]
        went_through.append(status.phase)
    assert len(set(went_through)) >= 4 and went_through[-1] == "Succeeded"  # the check saw the phases move
    newer = statuses[-1].model_copy(update={"phase": "Paused"})  # a phase this version does not know yet
    metrics.observe_campaign("research", "tiny", newer)
    phase = {dict(k[1])["phase"]: v for k, v in samples().items() if k[0] == "flopwise_campaign_phase"}
    assert phase["Paused"] == 1.0 and sum(phase.values()) == 1.0 and len(phase) == len(metrics.PHASES) + 1


def test_conditions_are_true_false_unknown_per_type(history) -> None:
    statuses, _ = history
    status = statuses[-1].model_copy(update={"conditions": [
        Condition(type="Degraded", status="True", reason="Forbidden", message="jobs is forbidden"),
        Condition(type="SpecValid", status="False", reason="Invalid"),
        Condition(type="Ready", status="Unknown")]})
    metrics.observe_campaign("research", "tiny", status)
    found = {(dict(k[1])["condition"], dict(k[1])["status"]): v for k, v in samples().items()
             if k[0] == "flopwise_campaign_condition"}
    assert found == {("Degraded", "true"): 1.0, ("Degraded", "false"): 0.0, ("Degraded", "unknown"): 0.0,
                     ("SpecValid", "true"): 0.0, ("SpecValid", "false"): 1.0, ("SpecValid", "unknown"): 0.0,
                     ("Ready", "true"): 0.0, ("Ready", "false"): 0.0, ("Ready", "unknown"): 1.0}
    metrics.observe_campaign("research", "tiny", statuses[-1].model_copy(update={"conditions": []}))
    assert "flopwise_campaign_condition" not in exposition()  # no condition: no series, no empty family


def test_a_follower_exports_no_campaign_series_and_a_lost_lease_drops_them(history) -> None:
    statuses, _ = history
    leading = {"now": False}
    metrics.follow_leadership(lambda: leading["now"])
    metrics.observe_campaign("research", "tiny", statuses[-1])  # a follower never reconciles; if it did, dropped
    assert value("flopwise_leader") == 0.0
    assert not [k for k in samples() if ("campaign", "tiny") in k[1]]
    assert {k[0] for k in samples()} >= {"flopwise_reconcile_errors_total", "flopwise_jobs_created_total",
                                         "process_resident_memory_bytes"}  # its own health stays
    leading["now"] = True  # the Lease won: series come back as passes end
    assert value("flopwise_leader") == 1.0 and not campaign_series(samples(), "tiny")
    metrics.observe_campaign("research", "tiny", statuses[-1])
    before = len(campaign_series(samples(), "tiny"))
    assert before >= 45
    leading["now"] = False  # the Lease ran out: at the next scrape, before the election loop notices
    assert not campaign_series(samples(), "tiny") and value("flopwise_leader") == 0.0
    metrics.leadership_changed(False)  # the loop noticed: the snapshots are gone, not only hidden
    leading["now"] = True
    assert not campaign_series(samples(), "tiny")


def test_job_counters_count_creates_failures_once_and_preemptions_of_started_jobs() -> None:
    created, failed, preempted = (value(f"flopwise_jobs_{what}_total") for what in ("created", "failed", "preempted"))
    metrics.job_created()
    metrics.job_created()
    observed = [Observation("ladder-00", "failed"), Observation("ladder-01", "running"),
                Observation("ladder-02", "succeeded"), Observation("ladder-03", "failed"),
                Observation("ladder-04", "lost")]
    metrics.count_failed_jobs("uid-1", observed, refused={"ladder-03": "Job rejected by the API server: ..."})
    metrics.count_failed_jobs("uid-1", observed, refused={})  # a repeated pass: ladder-00 is not counted again
    metrics.count_failed_jobs("uid-2", observed[:1], refused={})  # the same run id in another campaign is another
    assert value("flopwise_jobs_created_total") == created + 2
    assert value("flopwise_jobs_failed_total") == failed + 3  # uid-1 ladder-00 and ladder-03, uid-2 ladder-00

    def job(uid: str, suspend: bool | None, start: str | None) -> dict:
        return {"metadata": {"uid": uid, "name": f"job-{uid}"}, "spec": {"suspend": suspend},
                "status": {"startTime": start} if start else {}}

    metrics.observe_job(job("a", None, "2026-01-01T00:00:00Z"))  # running
    metrics.observe_job(job("b", True, None))  # created suspended (Kueue: not admitted yet): queued, not preempted
    metrics.observe_job(job("a", True, "2026-01-01T00:00:00Z"))  # suspended after it started: preempted
    metrics.observe_job(job("a", True, "2026-01-01T00:00:00Z"))  # the same event again (a re-listed watch)
    metrics.observe_job(job("a", True, None))  # the Job controller cleared startTime
    assert value("flopwise_jobs_preempted_total") == preempted + 1
    metrics.observe_job(job("a", False, "2026-01-01T01:00:00Z"))  # re-admitted: a new start
    metrics.observe_job(job("a", True, "2026-01-01T01:00:00Z"))  # preempted again
    assert value("flopwise_jobs_preempted_total") == preempted + 2
    metrics.observe_job(Body(job("d", True, "2026-01-01T02:00:00Z")))  # kopf's view, as the watch passes it
    assert value("flopwise_jobs_preempted_total") == preempted + 3
    metrics.follow_leadership(lambda: False)  # a follower sees the same watch events but counts nothing
    metrics.observe_job(job("c", True, "2026-01-01T00:00:00Z"))
    assert value("flopwise_jobs_preempted_total") == preempted + 3


def test_the_operator_health_metrics_count_reconciles_and_errors() -> None:
    def health() -> tuple[float, float, float]:
        return (value("flopwise_reconcile_duration_seconds_count"), value("flopwise_reconcile_errors_total"),
                value("flopwise_reconcile_duration_seconds_bucket", le="0.05"))

    count, errors, fast = health()
    metrics.observe_reconcile(0.01, error=False)
    metrics.observe_reconcile(7.0, error=True)
    metrics.observe_queue(4)
    assert health() == (count + 2, errors + 1, fast + 1)
    assert value("flopwise_queue_depth") == 4.0
    metrics.observe_queue(0)
    assert value("flopwise_queue_depth") == 0.0


def test_concurrent_observes_forgets_and_scrapes_are_safe(history) -> None:
    statuses, _ = history
    failures: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(300):
                metrics.observe_campaign("research", f"c{k}-{i % 7}", statuses[i % len(statuses)])
                if i % 3 == 0:
                    metrics.forget_campaign("research", f"c{k}-{(i + 1) % 7}")
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    scrapes = 0
    while any(t.is_alive() for t in threads) or scrapes < 5:
        text = exposition()
        list(text_string_to_metric_families(text))  # each scrape is well formed
        scrapes += 1
    for t in threads:
        t.join()
    assert not failures, failures


def test_the_metrics_server_serves_the_registry(history) -> None:
    port = free_port()
    metrics.start_server("127.0.0.1", port)
    metrics.start_server("127.0.0.1", port)  # a second call is harmless
    metrics.observe_campaign("research", "served", history[0][-1])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    assert 'flopwise_budget_spent_flops{campaign="served",namespace="research"}' in body
    assert "process_resident_memory_bytes" in body  # the process's own health comes along
    assert {f.name.split("_")[0] for f in text_string_to_metric_families(body)} <= {"flopwise", "process", "python"}


# --------------------------------------------------------------------------------------------------- dashboard
def dashboard_exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_the_dashboard_is_a_grafana_model_whose_queries_name_exported_metrics(history) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "flopwise" and 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["definition"].startswith("label_values(flopwise_campaign_phase")
    assert variables["campaign"]["definition"] == \
        'label_values(flopwise_campaign_phase{namespace="$namespace"}, campaign)'
    ids, titles = set(), set()
    for panel in dashboard["panels"]:
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] and t["refId"] and t["datasource"] == panel["datasource"]
                                        for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        assert panel["id"] not in ids and {"x", "y", "w", "h"} <= set(panel["gridPos"])
        ids.add(panel["id"])
        titles.add(panel["title"])
    for wanted in ("Budget burn-down (FLOPs)", "Budget burn-down (dollars)", "Runs by state",
                   "Loss vs compute, with the prediction", "Fitted E (irreducible loss)",
                   "Fitted A and B (coefficients)", "Fitted α and β (exponents)", "Reconcile duration",
                   "Reconciles and errors", "Work-queue depth", "Operator up", "Phase", "Conditions",
                   "Jobs created, failed, preempted", "Leader"):
        assert wanted in titles, wanted
    # The phase is the one series that is 1 now: an instant query, so a phase left earlier is not shown
    (phase,) = [p for p in dashboard["panels"] if p["title"] == "Phase"]
    assert [(t["expr"], t["instant"], t["range"]) for t in phase["targets"]] == [
        ('flopwise_campaign_phase{namespace="$namespace", campaign="$campaign"} == 1', True, False)]
    # Every metric a query names is one the operator exports (or Prometheus' own `up`).
    statuses, _ = history
    metrics.observe_campaign("research", "tiny", statuses[-1])
    exported = {s.name for f in text_string_to_metric_families(exposition()) for s in f.samples} | {"up"}
    exprs = dashboard_exprs(dashboard)
    named = {m for e in exprs for m in re.findall(r"\b(?:flopwise_[a-z0-9_]+|up)\b", e)}
    assert named <= exported, named - exported
    assert {"flopwise_budget_spent_flops", "flopwise_budget_reserved_flops", "flopwise_budget_dollars",
            "flopwise_runs", "flopwise_predicted_loss_ci_low", "flopwise_law_tokens_exponent_ci_high",
            "flopwise_reconcile_duration_seconds_bucket", "flopwise_reconcile_errors_total", "flopwise_queue_depth",
            "flopwise_campaign_phase", "flopwise_campaign_condition", "flopwise_leader", "flopwise_jobs_created_total",
            "flopwise_jobs_failed_total", "flopwise_jobs_preempted_total", "up"} <= named
    for e in exprs:  # per-campaign queries are filtered to the chosen campaign; health ones to the job
        assert 'campaign="$campaign"' in e or 'job=~"$job"' in e, e


def test_docs_metrics_md_names_every_metric_and_alert_and_no_other(history) -> None:
    """docs/metrics.md is the reference: every family a real exposition has (and every gauge a status can fill),
    every alert of the chart, and no name that does not exist."""
    statuses, _ = history
    status = statuses[-1].model_copy(update={"conditions": [Condition(type="Degraded", status="True")]})
    metrics.observe_campaign("research", "tiny", status)
    exported = set()
    for family in text_string_to_metric_families(exposition()):
        if family.name.startswith("flopwise_"):
            exported.add(family.name + "_total" if family.type == "counter" else family.name)
    exported |= {name for name, _, _ in metrics.GAUGES}
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert {name for name in exported if f"`{name}`" not in doc} == set()
    assert set(re.findall(r"`(flopwise_[a-z0-9_]+)`", doc)) <= exported
    alerts = re.findall(r"- alert: (\w+)", (ROOT / "charts" / "flopwise" / "templates" / "_alerts.tpl").read_text())
    assert len(alerts) == 11 and {a for a in alerts if f"`{a}`" not in doc} == set()
    assert set(re.findall(r"`(Flopwise[A-Za-z]+)`", doc)) == set(alerts)
