"""Prometheus metrics of the operator: what each campaign's status says, and how the operator itself is doing.

A scrape reads a dict of per-campaign snapshots, taken when the handlers persist a status (`observe_campaign`),
so it costs no API call and a campaign's series vanish exactly when it is forgotten (`forget_campaign`). Values
mirror the status, as kube-state-metrics mirrors objects, so they are gauges even where they only grow.

The phase and the conditions follow kube-state-metrics (`kube_pod_status_phase`, `kube_*_status_condition`): one
series per known phase, 1 for the current one and 0 for the others, so `== 1` selects the present phase and a
past phase never lingers as a stale series; likewise `true`/`false`/`unknown` per condition type.

Under leader election only the replica holding the Lease exports campaign series (`follow_leadership`): a follower
has nothing current to say, so it serves only its own process metrics and `flopwise_leader 0`, and a leader that
loses the Lease drops every campaign series at once (`leadership_changed`). The Job counters count what this
replica did or saw while leading; sum them over replicas.

Conventions: `flopwise_` prefix, base units (FLOPs as a count, GPU-seconds not GPU-hours, ratios not percent,
dollars), `_total` only on counters. Cardinality is bounded by the number of campaigns: labels are `namespace`
and `campaign`, plus `phase` (the API's phases, 8 today), `condition` and `status` (a few condition types × 3) and
`state` (5 fixed values) on run counts; never one series per run or step. The Job counters and the operator's
own health carry no campaign label at all. The fitted law's E, A, B, α and β are one metric each rather than one
metric with a `parameter` label: they are different quantities (a loss, two coefficients, two exponents), so a
sum or average across such a label would mean nothing, which Prometheus' naming guide says calls for separate
metrics. Labels hold only the campaign's namespace and name (nothing from the spec, nothing secret).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from flopwise.api.status import Phase, TrainingCampaignStatus

# `_created` series double every counter and histogram and Prometheus 2.x ignores them in the text format.
disable_created_metrics()

RUN_STATES = ("pending", "running", "queued", "suspended", "succeeded", "failed", "lost")
PHASES: tuple[str, ...] = typing.get_args(Phase)
CONDITION_STATUSES = ("true", "false", "unknown")
LABELS = ("namespace", "campaign")
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _law(field: str, bound: str = "") -> Callable[[TrainingCampaignStatus], float | None]:
    def value(s: TrainingCampaignStatus) -> float | None:
        if s.law is None:
            return None
        if bound:
            return getattr(s.law, f"ci_{bound}").get(field)
        return getattr(s.law, field)

    return value


def _budget_gpu_seconds(s: TrainingCampaignStatus) -> float | None:
    if s.plan is None:
        return None
    return s.ledger.budget_flops / (s.plan.peak_flops_per_gpu * s.plan.mfu)


def _budget_dollars(s: TrainingCampaignStatus) -> float | None:
    if s.ledger.budget_usd is not None:
        return s.ledger.budget_usd
    return s.plan.budget_usd if s.plan is not None else None


def _best_run(s: TrainingCampaignStatus):
    done = [r for r in s.runs if r.state == "Succeeded" and r.result is not None
            and _finite(r.result.final_val_loss) is not None]
    return min(done, key=lambda r: r.result.final_val_loss, default=None)


def _median_mfu(s: TrainingCampaignStatus) -> float | None:
    values = [r.result.mfu for r in s.runs
              if r.state in ("Succeeded", "Failed") and r.result is not None and r.result.mfu is not None]
    return statistics.median(values) if values else None


def _transfer_holds(s: TrainingCampaignStatus) -> float | None:
    transfer = s.tuning.transfer
    if transfer is None or transfer.verdict == "unchecked":
        return None
    return 1.0 if transfer.verdict == "holds" else 0.0


def _allocation(field: str) -> Callable[[TrainingCampaignStatus], float | None]:
    def value(s: TrainingCampaignStatus) -> float | None:
        return getattr(s.allocation, field) if s.allocation is not None else None

    return value


def _transfer(field: str) -> Callable[[TrainingCampaignStatus], float | None]:
    def value(s: TrainingCampaignStatus) -> float | None:
        return getattr(s.tuning.transfer, field) if s.tuning.transfer is not None else None

    return value


_LAW_PARAMETERS = (
    ("irreducible_loss", "E", "E, the irreducible loss (nats per token)"),
    ("params_coefficient", "A", "A, the coefficient of the parameter term A/N^α"),
    ("tokens_coefficient", "B", "B, the coefficient of the data term B/D^β"),
    ("params_exponent", "alpha", "α, the exponent of parameters N"),
    ("tokens_exponent", "beta", "β, the exponent of training tokens D"),
)

# (name, help, value of a status or None when the status does not say): one gauge per campaign each.
GAUGES: list[tuple[str, str, Callable[[TrainingCampaignStatus], float | None]]] = [
    ("flopwise_budget_flops", "Binding budget of the campaign in FLOPs.", lambda s: s.ledger.budget_flops),
    ("flopwise_budget_reserved_flops", "FLOPs reserved by runs in flight.", lambda s: s.ledger.reserved_flops),
    ("flopwise_budget_spent_flops", "FLOPs spent by finished runs.", lambda s: s.ledger.spent_flops),
    ("flopwise_budget_gpu_seconds", "Binding budget in GPU-seconds at the planned MFU.", _budget_gpu_seconds),
    ("flopwise_budget_reserved_gpu_seconds", "GPU-seconds reserved by runs in flight.",
     lambda s: s.ledger.reserved_gpu_hours * 3600.0),
    ("flopwise_budget_spent_gpu_seconds", "GPU-seconds spent by finished runs.",
     lambda s: s.ledger.spent_gpu_hours * 3600.0),
    ("flopwise_budget_dollars", "Budget in dollars (the dollar limit, else the FLOP budget priced); absent when "
     "the pool has no price.", _budget_dollars),
    ("flopwise_budget_reserved_dollars", "Dollars reserved by runs in flight.", lambda s: s.ledger.reserved_usd),
    ("flopwise_budget_spent_dollars", "Dollars spent by finished runs.", lambda s: s.ledger.spent_usd),
    ("flopwise_budget_forecast_dollars", "Spent plus reserved plus the rest of the plan at the measured MFU, in "
     "dollars.", lambda s: s.ledger.forecast_usd),
    ("flopwise_budget_used_ratio", "(reserved + spent) / budget, the tighter of FLOPs and dollars.",
     lambda s: s.ledger.used_percent / 100.0),
    ("flopwise_runs_planned", "Runs the plan holds (every state of flopwise_runs counts attempts of them).",
     lambda s: s.run_counts.planned),
    *[(f"flopwise_law_{name}{suffix}", f"Fitted scaling law L(N, D) = E + A/N^α + B/D^β: {text}"
       + (f", {which} bound of its 95% bootstrap interval." if which else "."), _law(field, bound))
      for name, field, text in _LAW_PARAMETERS
      for suffix, which, bound in (("", "", ""), ("_ci_low", "lower", "low"), ("_ci_high", "upper", "high"))],
    ("flopwise_law_backtest_are_ratio", "Absolute relative error of the law fitted without the largest runs, on "
     "them (backtest).", lambda s: s.law.backtest_are if s.law else None),
    ("flopwise_law_fit_runs", "Runs the fitted law was fitted to.", lambda s: s.law.n_runs if s.law else None),
    ("flopwise_predicted_loss", "Predicted final loss of the recommended model.",
     lambda s: s.prediction.loss if s.prediction else None),
    ("flopwise_predicted_loss_ci_low", "Lower bound of the predicted final loss's 95% interval.",
     lambda s: s.prediction.loss_low if s.prediction else None),
    ("flopwise_predicted_loss_ci_high", "Upper bound of the predicted final loss's 95% interval.",
     lambda s: s.prediction.loss_high if s.prediction else None),
    ("flopwise_optimal_params", "N_opt: compute-optimal parameters for the final budget under the campaign's law.",
     lambda s: s.plan.target.params_optimal if s.plan else None),
    ("flopwise_optimal_tokens", "D_opt: compute-optimal training tokens for the final budget under the law.",
     lambda s: s.plan.target.tokens_optimal if s.plan else None),
    ("flopwise_target_flops", "FLOPs of the recommended model's training (where the predicted loss applies).",
     lambda s: s.plan.target.flops if s.plan else None),
    ("flopwise_best_loss", "Lowest final validation loss of the campaign's succeeded runs.",
     lambda s: (r := _best_run(s)) and r.result.final_val_loss),
    ("flopwise_best_loss_flops", "FLOPs of the run that reached flopwise_best_loss.",
     lambda s: (r := _best_run(s)) and r.result.flops),
    ("flopwise_measured_mfu_ratio", "Median MFU the campaign's finished runs measured (as their trainers reported "
     "it); absent until one reports.", _median_mfu),
    ("flopwise_weighted_mfu_ratio", "FLOP-weighted MFU of finished runs against the pool's peak (what the dollar "
     "forecast follows).", lambda s: s.measured_mfu),
    ("flopwise_planned_mfu_ratio", "MFU the plan assumed.", lambda s: s.plan.mfu if s.plan else None),
    ("flopwise_lr_transfer_holds", "1 when Round 1's best LR does not move with proxy width (the exponent's 95% "
     "interval holds 0), 0 when it does (then extrapolated); absent until checked.", _transfer_holds),
    *[(f"flopwise_target_learning_rate{suffix}", "Learning rate for the target size (transferred or extrapolated)"
       + (f", {which} bound of its 95% interval." if which else "."), _transfer(field))
      for suffix, which, field in (("", "", "learning_rate"), ("_ci_low", "lower", "lr_low"),
                                   ("_ci_high", "upper", "lr_high"))],
    ("flopwise_lr_transfer_exponent", "Exponent b of the best LR's power law η_opt ∝ dModel^b across proxy "
     "widths (depth held).", _transfer("exponent")),
    ("flopwise_noise_floor_are_ratio", "Seed-noise floor: the ARE a perfect law would have, from k seeds of the "
     "cheapest ladder run.", lambda s: s.noise_floor.floor_are if s.noise_floor else None),
    ("flopwise_law_identified", "1 when the campaign's data identify the allocation it recommends (basis full, "
     "borrowed exponents, or Approach 2 with a fitted or borrowed exponent), 0 when it falls back to the prior "
     "law; absent until the ladder ends.",
     lambda s: None if s.allocation is None else float(s.allocation.identified)),
    ("flopwise_law_full_fit", "1 when the five-parameter fit is identified and is the allocation's basis, 0 when "
     "a law with fewer free parameters had to stand in; absent until the ladder ends.",
     lambda s: None if s.allocation is None else float(s.allocation.basis == "full")),
    *[(f"flopwise_allocation_params{suffix}", "Compute-optimal parameters at the final budget, from the basis "
       "status.allocation names" + (f", {which} bound of its 95% interval." if which else "."), _allocation(field))
      for suffix, which, field in (("", "", "params"), ("_ci_low", "lower", "params_low"),
                                   ("_ci_high", "upper", "params_high"))],
    ("flopwise_approach2_params", "Chinchilla's Approach 2: N_opt at the final budget from IsoFLOP minima.",
     lambda s: s.allocation.approach2.params if s.allocation and s.allocation.approach2 else None),
    ("flopwise_partial_check_loss_before", "Predicted final loss before the partial target check's refit.",
     lambda s: s.partial_check.loss_before if s.partial_check else None),
    ("flopwise_partial_check_loss_after", "Predicted final loss from the target's own annealed point at the partial "
     "check, carried to the end by the refitted law.",
     lambda s: s.partial_check.loss_after if s.partial_check else None),
]


@dataclass(frozen=True)
class Snapshot:
    """What a scrape shows of one campaign: computed once per observed status, never at scrape time."""

    phase: str
    observed_at: float
    values: dict[str, float]
    runs: dict[str, int]
    conditions: dict[str, str]  # condition type → "true", "false" or "unknown"


def snapshot(status: TrainingCampaignStatus, now: float) -> Snapshot:
    values = {}
    for name, _, value in GAUGES:
        v = _finite(value(status))
        if v is not None:
            values[name] = v
    runs = {state: getattr(status.run_counts, state) for state in RUN_STATES}
    conditions = {str(c.type): str(c.status).lower() for c in status.conditions}
    return Snapshot(phase=status.phase, observed_at=now, values=values, runs=runs, conditions=conditions)


def _always() -> bool:
    return True


class CampaignCollector(Collector):
    """The latest snapshot of every observed campaign, thread-safe: handlers write, the HTTP thread reads.
    Exported only while `is_leader()` (always, without leader election)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._campaigns: dict[tuple[str, str], Snapshot] = {}
        self.is_leader: Callable[[], bool] = _always

    def observe(self, namespace: str, name: str, status: TrainingCampaignStatus) -> None:
        if not self.is_leader():  # a pass that ended after the Lease was lost: not this replica's to say
            return
        taken = snapshot(status, time.time())
        with self._lock:
            self._campaigns[(namespace, name)] = taken

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._campaigns.pop((namespace, name), None)

    def clear(self) -> None:
        with self._lock:
            self._campaigns.clear()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are fixed and ours alone: no need to collect at registration

    def collect(self) -> Iterator[Metric]:
        if not self.is_leader():
            return
        with self._lock:
            campaigns = sorted(self._campaigns.items())
        if not campaigns:
            return
        phase = GaugeMetricFamily("flopwise_campaign_phase", "1 for the campaign's current phase, 0 for each other "
                                  "phase (select the present one with == 1).", labels=[*LABELS, "phase"])
        condition = GaugeMetricFamily("flopwise_campaign_condition", "1 for the status (true, false or unknown) of "
                                      "each condition the campaign has, 0 for the other two.",
                                      labels=[*LABELS, "condition", "status"])
        seen = GaugeMetricFamily("flopwise_campaign_observed_timestamp_seconds",
                                 "When the operator last observed the campaign's status (Unix time).", labels=LABELS)
        runs = GaugeMetricFamily("flopwise_runs", "Run attempts of the campaign by state.", labels=[*LABELS, "state"])
        for (namespace, name), snap in campaigns:
            for known in PHASES if snap.phase in PHASES else (*PHASES, snap.phase):
                phase.add_metric([namespace, name, known], 1.0 if known == snap.phase else 0.0)
            for kind, state in sorted(snap.conditions.items()):
                for value in CONDITION_STATUSES:
                    condition.add_metric([namespace, name, kind, value], 1.0 if value == state else 0.0)
            seen.add_metric([namespace, name], snap.observed_at)
            for state, count in snap.runs.items():
                runs.add_metric([namespace, name, state], float(count))
        yield from (phase, condition, seen, runs) if condition.samples else (phase, seen, runs)
        for metric, text, _ in GAUGES:
            family = GaugeMetricFamily(metric, text, labels=LABELS)
            for (namespace, name), snap in campaigns:
                if metric in snap.values:
                    family.add_metric([namespace, name], snap.values[metric])
            if family.samples:
                yield family


REGISTRY = CollectorRegistry(auto_describe=True)
"""Only what this module defines (and the process's own health): nothing else is ever served."""
CAMPAIGNS = CampaignCollector()
REGISTRY.register(CAMPAIGNS)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
RECONCILE_DURATION = Histogram("flopwise_reconcile_duration_seconds", "Duration of one reconcile pass of a campaign.",
                               buckets=RECONCILE_BUCKETS, registry=REGISTRY)
RECONCILE_ERRORS = Counter("flopwise_reconcile_errors_total", "Reconcile passes that raised an error.",
                           registry=REGISTRY)
QUEUE_DEPTH = Gauge("flopwise_queue_depth", "Campaign reconciles waiting in the operator's work queue.",
                    registry=REGISTRY)
LEADER = Gauge("flopwise_leader", "1 while this replica holds the leader Lease and acts (always 1 without leader "
               "election), 0 while it waits.", registry=REGISTRY)
LEADER.set_function(lambda: 1.0 if CAMPAIGNS.is_leader() else 0.0)
JOBS_CREATED = Counter("flopwise_jobs_created", "Training-run Jobs this replica created (an adopted Job, "
                       "created earlier, is not counted).", registry=REGISTRY)
JOBS_FAILED = Counter("flopwise_jobs_failed", "Runs whose Job this replica observed failed: the trainer's error, "
                      "a deadline, an eviction, a lost node (a Job the API server refused is not counted).",
                      registry=REGISTRY)
JOBS_PREEMPTED = Counter("flopwise_jobs_preempted", "Jobs suspended after they had started (spec.suspend set on a "
                         "Job with a startTime, e.g. preempted by Kueue), seen by this replica while leading.",
                         registry=REGISTRY)

_server_lock = threading.Lock()
_server: object | None = None


def observe_campaign(namespace: str, name: str, status: TrainingCampaignStatus) -> None:
    """Record the status as persisted; the next scrape shows it."""
    CAMPAIGNS.observe(namespace, name, status)


def forget_campaign(namespace: str, name: str) -> None:
    """The campaign was deleted: every one of its series leaves the next scrape."""
    CAMPAIGNS.forget(namespace, name)


def follow_leadership(is_leader: Callable[[], bool]) -> None:
    """Under leader election: campaign series are exported, and Jobs counted, only while is_leader() is true
    (asked at every scrape, so a replica whose Lease ran out stops exporting even before it notices)."""
    CAMPAIGNS.is_leader = is_leader


def leadership_changed(leading: bool) -> None:
    """The Lease was won or lost. Lost: every campaign snapshot goes (the new leader's are the current ones); won:
    the handlers reconcile every campaign, and each comes back as its pass ends."""
    if not leading:
        CAMPAIGNS.clear()


class _Once:
    """Remembers the last `size` keys, so an event seen twice (a retried pass, a re-listed watch) counts once."""

    def __init__(self, size: int = 8192) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self.size = size

    def first(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True


_FAILED_RUNS, _PREEMPTIONS = _Once(), _Once()


def job_created() -> None:
    """The executor created a run's Job (not adopted after a 409)."""
    JOBS_CREATED.inc()


def count_failed_jobs(campaign_uid: str, observations: Iterable[Any], refused: Mapping[str, str]) -> None:
    """The executor's observations of a campaign's running runs: each run observed failed counts once, however
    many passes see it (a pass whose status write failed is repeated); runs whose Job was refused never ran."""
    for observation in observations:
        if observation.state == "failed" and observation.run_id not in refused and \
                _FAILED_RUNS.first((campaign_uid, observation.run_id)):
            JOBS_FAILED.inc()


def _path(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def observe_job(body: Mapping[str, Any]) -> None:
    """A Job as the watch delivers it. Suspending a started Job (Kueue's preemption, or anyone's) writes
    spec.suspend while status.startTime still holds the start, until the Job controller clears it: that pair is
    counted once per start (a resumed Job gets a new startTime, so a second preemption counts again). A Job
    created suspended and never admitted has no startTime and is not counted. Only the leader counts."""
    if _path(body, "spec", "suspend") is not True or not CAMPAIGNS.is_leader():
        return
    started = _path(body, "status", "startTime")
    if started and _PREEMPTIONS.first((_path(body, "metadata", "uid"), started)):
        JOBS_PREEMPTED.inc()


def observe_reconcile(seconds: float, error: bool) -> None:
    """One reconcile pass (failed ones too: a slow failure is still a slow pass)."""
    RECONCILE_DURATION.observe(seconds)
    if error:
        RECONCILE_ERRORS.inc()


def observe_queue(depth: int) -> None:
    """Campaigns waiting for a worker: a depth that stays up means the workers cannot keep pace."""
    QUEUE_DEPTH.set(depth)


def start_server(address: str, port: int) -> None:
    """prometheus-client's HTTP server in a daemon thread, serving REGISTRY only; a second call does nothing."""
    global _server
    from prometheus_client import start_http_server

    with _server_lock:
        if _server is None:
            _server = start_http_server(port, addr=address, registry=REGISTRY)
