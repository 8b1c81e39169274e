"""From planned runs to run records: the learning-rate schedule each run trains with, and how branches and
legs hang together. Pure functions shared by the engine and the calibration benchmark's simulator, so a
simulated campaign trains exactly the schedules a real one would.

Schedules (``contract.lr_at``): ``wsd`` is warmup, constant, then a linear cooldown over its last
``decayFraction`` of steps; ``linear`` decays from the end of warmup to the end of the run; ``cosine`` to 10% at
the end; ``constant``. Warmup is a number of steps.

A WSD trunk and its branches share their warmup (in steps) and the constant phase up to each branch point: a
branch's schedule equals the trunk's on every step before it branches, which the trainer checks before it
resumes the trunk's kept checkpoint. The same holds for the final run and its partial leg.
"""

from __future__ import annotations

from flopwise.api.status import PlannedRun, RunRecord
from flopwise.contract import ScheduleSpec

MIN_LR_RATIO = 0.1


def schedule(kind: str, steps: int, warmup_steps: int, decay_fraction: float,
             decay_steps: int | None = None) -> ScheduleSpec:
    """The schedule of a run of ``steps`` steps; ``decay_steps`` overrides the WSD cooldown length."""
    warmup_steps = max(0, min(warmup_steps, steps - 1))
    decay = None
    if kind == "wsd":
        decay = decay_steps if decay_steps is not None else round(decay_fraction * steps)
        decay = max(1, min(decay, steps - warmup_steps))
    return ScheduleSpec(kind=kind, warmup_steps=warmup_steps, decay_steps=decay,  # type: ignore[arg-type]
                        min_lr_ratio=MIN_LR_RATIO)


def record(run: PlannedRun, *, lr: float, warmup_fraction: float, schedule_spec: ScheduleSpec, seed: int,
           **extra: object) -> RunRecord:
    """A run record for ``run``: tokens are what it trains (its leg), steps its whole schedule's length."""
    fields: dict[str, object] = dict(
        run_id=run.run_id, planned_id=run.run_id, role=run.role, shape=run.shape, params=run.params,
        tokens=run.tokens, batch_size=run.batch_size, steps=run.steps, learning_rate=lr,
        warmup_fraction=warmup_fraction, schedule=schedule_spec, seed=seed + run.seed_offset,
        start_step=run.start_step, checkpoints_at=list(run.checkpoints_at), level=run.level,
        resume_from=run.branch_of, resume_step=run.start_step if run.branch_of else None,
        group=run.branch_of)  # a run alone is its own group (None keeps the status small)
    return RunRecord(**{**fields, **extra})


def group_warmup(runs: list[PlannedRun], warmup_fraction: float) -> dict[str, int]:
    """Warmup steps per trajectory group (a trunk with its branches, or a run alone): ``warmup_fraction`` of the
    group's shortest schedule, and always before its first branch point."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(run.branch_of or run.run_id, []).append(run)
    out = {}
    for name, members in groups.items():
        shortest = min(r.steps for r in members)
        first_branch = min((r.start_step for r in members if r.start_step), default=shortest)
        out[name] = max(0, min(round(warmup_fraction * shortest), first_branch - 1))
    return out


def ladder_records(runs: list[PlannedRun], *, kind: str, lr_for, warmup_fraction: float, decay_fraction: float,
                   seed: int) -> list[RunRecord]:
    """Records of the ladder's runs (and seed replicas) at the learning rate ``lr_for(shape)`` gives. A branch
    cools down from its branch point to its end; a trunk (or a run alone) over ``decay_fraction`` of its steps.
    A seed replica repeats the schedule of the run it replicates (same shape and tokens), from scratch."""
    warmups = group_warmup([r for r in runs if r.role == "ladder"], warmup_fraction)
    schedules: dict[tuple[int, int, int], ScheduleSpec] = {}
    out = []
    for run in runs:
        if run.role == "seed":
            continue
        group = run.branch_of or run.run_id
        decay = run.steps - run.start_step if run.branch_of else None
        spec = schedule(kind, run.steps, warmups[group], decay_fraction, decay)
        schedules.setdefault((run.shape.n_layer, run.shape.d_model, run.steps), spec)
        out.append(record(run, lr=lr_for(run.shape), warmup_fraction=warmup_fraction, schedule_spec=spec, seed=seed))
    for run in runs:
        if run.role == "seed":
            spec = schedules.get((run.shape.n_layer, run.shape.d_model, run.steps)) or schedule(
                kind, run.steps, round(warmup_fraction * run.steps), decay_fraction)
            out.append(record(run, lr=lr_for(run.shape), warmup_fraction=warmup_fraction, schedule_spec=spec,
                              seed=seed))
    return out


def final_records(runs: list[PlannedRun], *, kind: str, lr: float, warmup_fraction: float, decay_fraction: float,
                  seed: int) -> list[RunRecord]:
    """The final run, and its partial leg when planned: the leg cools down over its own last steps from the
    step the final run resumes it at; both warm up over ``warmup_fraction`` of the final run's steps (kept before
    that step, so the two schedules agree up to it)."""
    if not runs:
        return []
    main = next(r for r in runs if r.branch_of is not None or len(runs) == 1)
    legs = [r for r in runs if r is not main]
    warmup = round(warmup_fraction * main.steps)
    if main.branch_of is not None:
        warmup = min(warmup, main.start_step - 1)
    out = [record(leg, lr=lr, warmup_fraction=warmup_fraction, seed=seed,
                  schedule_spec=schedule(kind, leg.steps, warmup, decay_fraction,
                                         decay_steps=leg.steps - main.start_step)) for leg in legs]
    out.append(record(main, lr=lr, warmup_fraction=warmup_fraction, seed=seed,
                      schedule_spec=schedule(kind, main.steps, warmup, decay_fraction)))
    return out
