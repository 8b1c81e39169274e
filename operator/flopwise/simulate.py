"""Simulated training curves with a known truth: what a campaign's runs would report if the loss followed a
given law, shaped by each run's learning-rate schedule and scattered by seed noise.

Used by `benchmarks/calibration.py` (coverage of the intervals, error of N_opt) and by the tests, so that a
design or a fit is judged on schedule-shaped curves, not on the law evaluated at the points it was fitted to.

The curve model, stated so it can be argued with:

    L(t) = L*(N, D_t) + h · (r_t − r_min)/(1 − r_min) · (L*(N, D_t) − E)

L* is the true law and D_t the tokens seen at step t; r_t is the learning rate at t relative to its peak and
r_min the floor every schedule decays to (0.1). At an annealed end (r = r_min) the loss *is* the law: the law
describes annealed final losses, as Chinchilla's points were. Before that, a run at high learning rate sits
above it by a share ``h`` of the reducible loss — the gap a cooldown closes (Hägele et al. 2024, Figures 2–3:
a cooldown drops the loss by ~0.1 nats out of ~1.2 reducible at 124M; h = 0.1). So a mid-run checkpoint of a
cosine run is biased upward (Chinchilla's Figure A1), and a stable-phase checkpoint more so.

Seed noise is multiplicative, exp(ε) with sd ``noise``: a share ``shared`` of its variance is common to runs
that share a trajectory (a WSD trunk and its branches started from the same seed and saw the same batches),
the rest is each run's own. Seed replicas and separate runs are independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import RunRecord, RunResult
from flopwise.contract import lr_at
from flopwise.engine import analysis, records
from flopwise.engine.records import MIN_LR_RATIO
from flopwise.planning.laws import ScalingLaw
from flopwise.planning.plan import plan_campaign


@dataclass(frozen=True)
class CurveModel:
    truth: ScalingLaw
    noise: float = 0.01
    shared: float = 0.7
    anneal_gap: float = 0.1

    def loss(self, params: float, tokens: float, relative_lr: float) -> float:
        law = self.truth.loss(params, tokens)
        excess = max(0.0, relative_lr - MIN_LR_RATIO) / (1.0 - MIN_LR_RATIO)
        return law + self.anneal_gap * excess * (law - self.truth.E)


def relative_lr(record: RunRecord, step: int) -> float:
    """The record's learning rate after ``step`` optimiser steps, relative to its peak."""
    return lr_at(max(0, step - 1), record.steps, 1.0, record.schedule)


def curve(model: CurveModel, record: RunRecord, points: int = 8) -> list[tuple[int, float]]:
    """(tokens, noiseless loss) at ``points`` evenly spaced steps of the record's leg, its last step included."""
    start, end = record.start_step, record.stop_at_step or record.steps
    per_step = record.batch_size * record.shape.seq_len
    steps = sorted({max(start + 1, round(start + (end - start) * (i + 1) / points)) for i in range(points)})
    return [(s * per_step, model.loss(record.params, s * per_step, relative_lr(record, s))) for s in steps]


def finish(model: CurveModel, records: list[RunRecord], rng: np.random.Generator,
           group_draws: dict[str, float] | None = None) -> list[RunRecord]:
    """Each record as a succeeded run with a simulated result. ``group_draws`` carries the shared part of the
    noise across calls (a trunk's draw must also move its branches)."""
    draws = group_draws if group_draws is not None else {}
    out = []
    for rec in records:
        group = rec.group or rec.planned_id
        if group not in draws:
            draws[group] = float(rng.normal(0.0, model.noise * math.sqrt(model.shared)))
        own = float(rng.normal(0.0, model.noise * math.sqrt(1.0 - model.shared)))
        factor = math.exp(draws[group] + own)
        samples = [(t, loss * factor) for t, loss in curve(model, rec)]
        flops = rec.shape.flops_per_token() * rec.tokens
        result = RunResult(status="succeeded", tokens=rec.tokens, steps=rec.train_steps(), flops=flops,
                           final_val_loss=samples[-1][1], best_val_loss=min(v for _, v in samples),
                           curve=[{"tokens": t, "val_loss": v} for t, v in samples])
        out.append(rec.model_copy(update={"state": "Succeeded", "result": result}))
    return out


def edge_headroom(spec: TrainingCampaignSpec) -> float:
    """FLOPs the budget leaves for IsoFLOP edge sizes: the budget less its margin, every planned run of every phase
    (as planned, not simulated) and the final run's share. The engine checks the same against what the runs
    actually spent (`_affordable_before_final`); planned and spent agree to a few percent."""
    plan = plan_campaign(spec)
    return plan.budget_flops * (1 - spec.budget.margin) - sum(r.flops for r in plan.all_runs())


def ladder_with_edges(spec: TrainingCampaignSpec, planned: list[RunRecord], model: CurveModel,
                      rng: np.random.Generator, headroom_flops: float) -> list[RunRecord]:
    """A whole ladder as the engine runs it: the planned runs, then, for an IsoFLOP ladder, each level still lowest
    at an edge gets the engine's next size past it (`analysis.edge_extensions`), one round at a time as the
    engine adds them once the runs before have finished, while ``headroom_flops`` (what the budget leaves beside
    the planned runs and the final's share) pays for them."""
    draws: dict[str, float] = {}
    done = finish(model, planned, rng, draws)
    left, lr = headroom_flops, planned[0].learning_rate
    while True:
        added = []
        for edge, run in analysis.edge_extensions(spec, done):
            if isinstance(run, str) or run.flops > left:
                analysis.close_edge(done, edge, run if isinstance(run, str) else "over the budget left")
                continue
            left -= run.flops
            record = records.ladder_records([run], kind=spec.tuning.schedule, lr_for=lambda _: lr,
                                            warmup_fraction=planned[0].warmup_fraction,
                                            decay_fraction=spec.tuning.decay_fraction, seed=0)[0]
            record.reason = f"{analysis.EXTENDED} past the {edge.side} size of level {edge.level}"
            added.append(record)
        if not added:
            return done
        done += finish(model, added, rng, draws)
