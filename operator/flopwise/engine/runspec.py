"""From a run record to the trainer's `RunSpec`: the one place engine decisions become trainer inputs."""

from __future__ import annotations

from pathlib import PurePosixPath

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import Plan, RunRecord
from flopwise.contract import EvalSpec, MupSpec, OptimizerSpec, RunSpec

EVAL_LOG_POINTS = 4  # early, log-spaced: the shape of the curve for the report
EVALS_PER_RUN = 8  # regular evaluations: the checkpoints the fit uses (it drops each run's first half)
CHECKPOINTS_PER_RUN = 4
EVAL_SHARE = 0.1  # evaluation forward passes cost at most ~10% of a run's training compute
MIN_VAL_BATCHES, MAX_VAL_BATCHES = 2, 8


def val_batches(steps: int) -> int:
    """Validation batches per evaluation: a forward pass is ~1/3 of a training step, and a run evaluates
    about EVAL_LOG_POINTS + EVALS_PER_RUN times, so this keeps evaluation near EVAL_SHARE of the run."""
    evaluations = EVAL_LOG_POINTS + EVALS_PER_RUN
    return max(MIN_VAL_BATCHES, min(MAX_VAL_BATCHES, round(3 * EVAL_SHARE * steps / evaluations)))


def mup_base_width(plan: Plan) -> int:
    """Learning rates are stated at the Round-1 proxy's width (muP transfers them to every other width)."""
    runs = plan.round1.runs or plan.ladder.runs
    return runs[0].shape.d_model


def sibling_output(output_dir: str, run_id: str, other: str) -> str:
    """Where run ``other`` writes, given where ``run_id`` writes: executors name a run's folder after its id
    (local: `runs/<id>/out`, Kubernetes: `<root>/<id>`), so the last path component equal to ``run_id`` is
    swapped."""
    parts = PurePosixPath(output_dir).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == run_id:
            return str(PurePosixPath(*parts[:i], other, *parts[i + 1:]))
    raise ValueError(f"cannot locate run {other}'s output next to {output_dir}")


def run_spec_for(record: RunRecord, spec: TrainingCampaignSpec, plan: Plan, *, campaign: str, data_path: str,
                 output_dir: str, device: str = "auto") -> RunSpec:
    """A branch or a leg of a run gets its whole schedule's tokens (``record.steps``), so that its learning rate
    follows its whole schedule; its record's tokens are the steps it trains itself (what it is charged). A branch
    resumes the checkpoint its parent kept at ``resume_step``; a run with branches keeps those checkpoints."""
    tokens = record.steps * record.batch_size * record.shape.seq_len
    resume = sibling_output(output_dir, record.run_id, record.resume_from) if record.resume_from else None
    return RunSpec(
        stop_at_step=record.stop_at_step, resume_from=resume, resume_step=record.resume_step,
        save_checkpoints_at=list(record.checkpoints_at),
        run_id=record.run_id, campaign=campaign, role=record.role, shape=record.shape, tokens=tokens,
        batch_size=record.batch_size,
        optimizer=OptimizerSpec(lr=record.learning_rate),
        schedule=record.schedule,
        mup=MupSpec(parameterization=spec.model.parameterization, base_width=mup_base_width(plan)),
        eval=EvalSpec(log_points=EVAL_LOG_POINTS, every_steps=max(1, record.steps // EVALS_PER_RUN),
                      batches=val_batches(record.steps),
                      checkpoint_every_steps=max(1, record.steps // CHECKPOINTS_PER_RUN)),
        data_path=data_path, output_dir=output_dir, seed=record.seed, device=device,  # type: ignore[arg-type]
        peak_flops=spec.gpu_pool.peak_flops,
    )
