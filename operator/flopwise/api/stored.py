"""The status as stored in the API server: what a reader can work out is left out, and put back on reading.

Why: every status write costs the API server about 11 ms of CPU plus 1.4 ms per KB of the whole object (measured on
the test control plane: 44 ms at a new campaign's 21 KB first status, 14 ms at 1.4 KB), and the same bytes are
decoded again by its watch cache and by every watcher. A new campaign's first status repeated its plan in 16 Pending
records, and every planned run carried figures its shape gives.

* A planned run leaves out params, flops and gpuHours where its shape, tokens and the plan's peakFlopsPerGpu and
  mfu give exactly those values, and usd where it is 0 (an unpriced pool).
* A run record stores only where it differs from its planned run (PLANNED_FIELDS): a record without a shape has
  its planned run's shape and takes every planned field it lacks from it. So the shape goes only when it is the
  planned run's, fields that differ stay, and a field the record has at its default but the plan sets is written
  out. A default that cannot be written (a null level) keeps the record whole. plannedId goes when it is runId.

Leaving out is decided by comparing with exactly what reading back computes, so the stored form always reads back
as the same status (tests/test_status_size.py); `restore` is what `TrainingCampaignStatus` runs before validating.
It relies on a planned run never changing once a record carries it out: the plan only grows (grid and IsoFLOP
extensions add runs), and the final phase is re-planned only before any final record exists (engine
`_conclude`: with the partial leg committed, the target stays).
"""

from __future__ import annotations

from typing import Any

from flopwise.contract import ModelShape
from flopwise.planning.budget import Pool

PLANNED_FIELDS = ("role", "shape", "params", "tokens", "batchSize", "steps", "learningRate", "warmupFraction",
                  "level", "checkpointsAt")
DERIVED_FIELDS = ("params", "flops", "gpuHours", "usd")
PHASES = ("ladder", "round1", "round2", "final")
_RECORD_DEFAULTS: dict[str, Any] = {"warmupFraction": 0.0, "checkpointsAt": [], "level": None}
_ABSENT = object()


def _derived(run: dict[str, Any], peak: float, mfu: float) -> dict[str, Any]:
    """What a planned run's shape, tokens and the plan's throughput give (as planning/plan.py computes them)."""
    shape, pool = ModelShape.model_validate(run["shape"]), Pool(peak, mfu)  # unpriced: usd 0
    flops = shape.flops_per_token() * run["tokens"]
    return {"params": shape.param_count(), "flops": flops, "gpuHours": pool.gpu_hours(flops), "usd": pool.usd(flops)}


def stored_planned_run(run: dict[str, Any], peak: float, mfu: float) -> dict[str, Any]:
    """A planned run's stored form, from its compact form (camelCase, defaults left out)."""
    derived = _derived(run, peak, mfu)
    return {k: v for k, v in run.items() if k not in DERIVED_FIELDS or v != derived[k]}


def stored_record(record: dict[str, Any], planned: dict[str, Any] | None) -> dict[str, Any]:
    """A run record's stored form, from its compact form and its planned run's compact form (before that one is
    stored: the planned fields in full)."""
    if planned is not None and record.get("shape") == planned.get("shape"):
        missing = [k for k in PLANNED_FIELDS if k not in record and k in planned]
        if all(_RECORD_DEFAULTS.get(k) is not None for k in missing):
            record = {k: v for k, v in record.items() if k not in PLANNED_FIELDS or v != planned.get(k, _ABSENT)}
            record.update({k: _RECORD_DEFAULTS[k] for k in missing})
    if record.get("plannedId") == record.get("runId"):
        record = {k: v for k, v in record.items() if k != "plannedId"}
    return record


def restore(data: Any) -> Any:
    """A stored status (camelCase dict) with everything left out put back; anything else as it came."""
    if not isinstance(data, dict):
        return data
    plan = data.get("plan")
    phases = [(plan.get(phase) or {}) if isinstance(plan, dict) else {} for phase in PHASES]
    runs = data.get("runs") or []
    if all("params" in r for phase in phases for r in phase.get("runs") or [] if isinstance(r, dict)) and all(
            "shape" in r and "plannedId" in r for r in runs if isinstance(r, dict)):
        return data
    planned: dict[str, dict[str, Any]] = {}
    if isinstance(plan, dict):
        plan = dict(plan)
        peak, mfu = plan.get("peakFlopsPerGpu"), plan.get("mfu")
        for name, phase in zip(PHASES, phases, strict=True):
            if not isinstance(phase.get("runs"), list):
                continue
            full = [{**_derived(r, peak, mfu), **r} if isinstance(r, dict) and "params" not in r and peak and mfu
                    else r for r in phase["runs"]]
            plan[name] = {**phase, "runs": full}
            planned.update((r.get("runId"), r) for r in full if isinstance(r, dict))
    restored = []
    for record in runs:
        if isinstance(record, dict) and ("shape" not in record or "plannedId" not in record):
            record = {"plannedId": record.get("runId"), **record}
            source = planned.get(record["plannedId"])
            if "shape" not in record and source is not None:
                record.update({k: source[k] for k in PLANNED_FIELDS if k in source and k not in record})
        restored.append(record)
    return {**data, "plan": plan, "runs": restored} if "plan" in data else {**data, "runs": restored}
