"""Where a run starts: its own checkpoint, an earlier leg's, or a parent run's named checkpoint (a branch).

A checkpoint may be continued only by a run that would have reached exactly that state on its own:

* ``own``: a restarted run resumes its rolling ``checkpoint.pt`` (same spec, where it stops aside);
* ``leg``: ``resume_from`` alone continues an earlier leg of the same run (same spec but the run id);
* ``branch``: ``resume_from`` + ``resume_step`` starts from the parent's ``checkpoint-step-{step:08d}.pt``
  (Hägele et al. 2024: cooldowns branched off a warmup-stable trunk). The parent may differ only in run id,
  tokens, schedule and evaluation, and both schedules must give the same learning rate at every optimiser step
  before the branch point. Data order is a pure function of (seed, step), so the branch then is, step for step,
  what a from-scratch run of its own spec would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from flopwise.contract import RunSpec, ScheduleSpec, schedule_mismatch, step_checkpoint_name
from flopwise_trainer.checkpoint import CHECKPOINT

Kind = Literal["own", "leg", "branch"]

NOT_TRAJECTORY = {"output_dir", "device", "compile", "peak_flops", "micro_batch_size", "campaign", "role",
                  "stop_at_step", "resume_from", "resume_step", "save_checkpoints_at"}
"""RunSpec fields that do not change a run's trajectory (where it runs, where it stops, what it keeps)."""
BRANCH_MAY_DIFFER = {"run_id", "tokens", "schedule", "eval"}
"""What a branch may change from its parent; the schedules are then compared step by step up to the branch point."""


def spec_fingerprint(spec: RunSpec, *, any_leg: bool = False, branch: bool = False) -> dict:
    """The fields that define a run's trajectory: a checkpoint may only be resumed by the same run (where it
    stops does not change the trajectory). ``any_leg`` also drops the run id: a continuation of another leg.
    ``branch`` drops everything a branch may change (``BRANCH_MAY_DIFFER``)."""
    exclude = NOT_TRAJECTORY | ({"run_id"} if any_leg else set()) | (BRANCH_MAY_DIFFER if branch else set())
    return spec.model_dump(mode="json", exclude=exclude)


def resume_source(spec: RunSpec, output_dir: Path) -> tuple[Path, Kind] | None:
    """The checkpoint this run starts from, or None for a fresh start. Raises ``FileNotFoundError`` when the
    spec asks to continue another run's checkpoint that does not exist: never train from scratch instead."""
    own = output_dir / CHECKPOINT
    if own.is_file():
        return own, "own"
    if spec.resume_from is None:
        return None
    if spec.resume_step is not None:
        path = Path(spec.resume_from) / step_checkpoint_name(spec.resume_step)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at step {spec.resume_step} of the parent run: {path} does not "
                                    "exist (was the step in the parent's saveCheckpointsAt?); cannot branch")
        return path, "branch"
    path = Path(spec.resume_from) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint of the earlier leg at {path}: cannot continue the run")
    return path, "leg"


def incompatibility(spec: RunSpec, state: dict, path: Path, kind: Kind) -> str | None:
    """Why ``spec`` may not continue the checkpoint ``state`` (loaded from ``path``), or None when it may."""
    if kind == "branch":
        return _branch_incompatibility(spec, state, path)
    ours = spec_fingerprint(spec, any_leg=kind == "leg")
    theirs = state.get("fingerprint")
    if kind == "leg" and isinstance(theirs, dict):
        theirs = {k: v for k, v in theirs.items() if k != "run_id"}
    if theirs != ours:
        return f"{path} belongs to a different run spec; refusing to resume or overwrite it"
    return None


def _branch_incompatibility(spec: RunSpec, state: dict, path: Path) -> str | None:
    step = spec.resume_step
    ours = _flatten(spec_fingerprint(spec, branch=True))
    theirs = {k: v for k, v in _flatten(state.get("fingerprint") or {}).items()
              if k.split(".")[0] not in BRANCH_MAY_DIFFER}
    differs = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if differs:
        details = ", ".join(f"{k}: parent {theirs.get(k)!r}, this run {ours.get(k)!r}" for k in differs)
        return (f"cannot branch from {path}: the parent run differs in {details} (a branch may change only "
                f"{', '.join(sorted(BRANCH_MAY_DIFFER))})")
    if int(state["step"]) != step:
        return f"cannot branch from {path}: it holds step {state['step']}, not {step}"
    parent_schedule, parent_total = ScheduleSpec.model_validate(state["schedule"]), int(state["total_steps"])
    mismatch = schedule_mismatch(step, spec.optimizer.lr, (parent_total, parent_schedule),
                                 (spec.total_steps, spec.schedule))
    if mismatch is not None:
        at, theirs_lr, ours_lr = mismatch
        return (f"cannot branch from {path}: the schedule differs before the branch point (step {step}): at step "
                f"{at} the parent's learning rate is {theirs_lr:.6g} ({parent_schedule.kind} over {parent_total} "
                f"steps), this run's is {ours_lr:.6g} ({spec.schedule.kind} over {spec.total_steps} steps)")
    return None


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"optimizer": {"lr": 1}} → {"optimizer.lr": 1}: names a difference down to the field."""
    flat: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
