"""The contract shared by the planner, the operator and the trainer.

Everything here is installed by both images (operator: no torch; trainer: no kopf), so it depends on
pydantic alone. It holds the formulas both sides must agree on exactly:

* ``ModelShape``: the transformer's shape and its exact parameter count (the trainer's model is built from
  it, and a test checks the count against ``sum(p.numel())``);
* FLOPs of a run: ``6·N·D`` and the exact count (matmuls plus causal attention);
* ``RunSpec``: what the planner asks one training run to do;
* ``RunSummary``: what a run reports back, small enough for a Kubernetes termination message (≤ 4096 bytes).
"""

from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TERMINATION_MESSAGE_LIMIT = 4096
"""Kubernetes truncates a container's termination message at 4096 bytes."""

# Dense bf16 peak FLOP/s per GPU (vendor datasheets, without sparsity).
GPU_PEAK_FLOPS: dict[str, float] = {
    "A100-40GB": 312e12,
    "A100-80GB": 312e12,
    "H100-SXM": 989e12,
    "H100-PCIe": 756e12,
    "H200": 989e12,
    "L4": 121e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "B200": 2250e12,
}
GPU_ALIASES: dict[str, str] = {"A100": "A100-80GB", "A100-40": "A100-40GB", "A100-80": "A100-80GB",
                               "H100": "H100-SXM"}


def gpu_peak_flops(gpu_type: str) -> float | None:
    """Peak dense bf16 FLOP/s of a known GPU type (or alias), else None."""
    return GPU_PEAK_FLOPS.get(GPU_ALIASES.get(gpu_type, gpu_type))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelShape(_Strict):
    """A decoder-only, pre-norm transformer: bias-free linears, weight-only LayerNorms, GELU MLP."""

    n_layer: int = Field(ge=1, le=512, alias="nLayer")
    d_model: int = Field(ge=8, le=65536, alias="dModel")
    n_head: int = Field(ge=1, le=1024, alias="nHead")
    vocab_size: int = Field(ge=2, le=1_048_576, alias="vocabSize")
    seq_len: int = Field(ge=2, le=1_048_576, alias="seqLen")
    d_ff: int | None = Field(default=None, ge=8, alias="dFF", description="MLP width; default 4·dModel")
    tied_embeddings: bool = Field(default=True, alias="tiedEmbeddings")
    positional: Literal["rope", "learned"] = "rope"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelShape:
        if self.d_model % self.n_head:
            raise ValueError(f"dModel ({self.d_model}) must be divisible by nHead ({self.n_head})")
        if (self.d_model // self.n_head) % 2 and self.positional == "rope":
            raise ValueError("RoPE needs an even head dimension (dModel / nHead)")
        return self

    @property
    def ffn_width(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def param_count(self) -> int:
        """Every trainable parameter (Chinchilla's N): what the trainer's model has, exactly."""
        return count_params(self.n_layer, self.d_model, self.vocab_size, self.seq_len, d_ff=self.ffn_width,
                            tied_embeddings=self.tied_embeddings, positional=self.positional)

    def non_embedding_params(self) -> int:
        """Blocks plus the final LayerNorm (Kaplan's N)."""
        return self.param_count() - embedding_params(self.d_model, self.vocab_size, self.seq_len,
                                                     tied_embeddings=self.tied_embeddings, positional=self.positional)

    def flops_per_token(self) -> float:
        """Exact training FLOPs per token: 6× the matmul weights (LM head included even when tied,
        embedding look-ups excluded) plus causal attention, 6·n_layer·seq·d (forward and backward)."""
        d, layers = self.d_model, self.n_layer
        matmul_weights = layers * (4 * d * d + 2 * d * self.ffn_width) + self.vocab_size * d
        return 6.0 * matmul_weights + 6.0 * layers * self.seq_len * d


def embedding_params(d_model: int, vocab_size: int, seq_len: int, *, tied_embeddings: bool = True,
                     positional: str = "rope") -> int:
    """Token embedding, learned positions if any, and the LM head when it is not tied."""
    params = vocab_size * d_model
    if positional == "learned":
        params += seq_len * d_model
    if not tied_embeddings:
        params += vocab_size * d_model
    return params


def count_params(n_layer: int, d_model: int, vocab_size: int, seq_len: int, *, d_ff: int | None = None,
                 tied_embeddings: bool = True, positional: str = "rope") -> int:
    """Exact parameters of the trainer's transformer. Per block: qkv and output projections (4d²), the two
    MLP matrices (2·d·d_ff) and two weight-only LayerNorms (2d); then a final LayerNorm and the embeddings.
    A plain function so the planner can score thousands of candidate shapes cheaply."""
    ffn = d_ff if d_ff is not None else 4 * d_model
    block = 4 * d_model * d_model + 2 * d_model * ffn + 2 * d_model
    return n_layer * block + d_model + embedding_params(d_model, vocab_size, seq_len,
                                                        tied_embeddings=tied_embeddings, positional=positional)


def flops_6nd(params: int | float, tokens: int | float) -> float:
    """The standard approximation C = 6·N·D."""
    return 6.0 * float(params) * float(tokens)


def run_flops(shape: ModelShape, tokens: int | float) -> float:
    """Exact training FLOPs of ``tokens`` tokens through ``shape``."""
    return shape.flops_per_token() * float(tokens)


# --------------------------------------------------------------------------------------------------
# Run spec: what one training run is asked to do
# --------------------------------------------------------------------------------------------------

Role = Literal["ladder", "round1", "round2", "final", "seed", "finetune"]


class OptimizerSpec(_Strict):
    """AdamW. ``lr`` is the base learning rate at the muP base width (scaled per layer by the trainer)."""

    lr: float = Field(gt=0, le=10)
    weight_decay: float = Field(default=0.1, ge=0, le=10, alias="weightDecay")
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0, le=1)
    grad_clip: float = Field(default=1.0, ge=0, alias="gradClip", description="0 disables clipping")


class ScheduleSpec(_Strict):
    """Learning-rate schedule over ``total_steps``.

    ``decay_steps`` (for ``linear`` and ``wsd``) is absolute so that Round 2 can lengthen a run by
    extending the constant phase while keeping Round 1's decay length (the tuning playbook's rule);
    for ``cosine`` Round 2 keeps the base LR and simply raises ``total_steps``.
    """

    kind: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0, alias="warmupSteps")
    decay_steps: int | None = Field(default=None, ge=1, alias="decaySteps")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, alias="minLrRatio")


def lr_at(step: int, total_steps: int, base_lr: float, schedule: ScheduleSpec) -> float:
    """Learning rate at optimiser step ``step`` (0-based) of ``total_steps``."""
    total_steps = max(1, total_steps)
    warmup = min(schedule.warmup_steps, total_steps)
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    floor = base_lr * schedule.min_lr_ratio
    if schedule.kind == "constant":
        return base_lr
    if schedule.kind == "cosine":
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return floor + 0.5 * (base_lr - floor) * (1.0 + math.cos(math.pi * progress))
    # linear and wsd: constant (after warmup) until the last `decay_steps`, then a linear ramp to the floor.
    # Plain `linear` with no decay_steps decays over everything after warmup.
    default_decay = total_steps - warmup if schedule.kind == "linear" else max(1, total_steps // 5)
    decay = min(schedule.decay_steps or default_decay, total_steps - warmup) or 1
    decay_start = total_steps - decay
    if step < decay_start:
        return base_lr
    progress = min(1.0, (step - decay_start + 1) / decay)
    return base_lr + (floor - base_lr) * progress


class MupSpec(_Strict):
    """muP (Yang et al. 2022): hidden-matrix Adam LR and init scale by base_width/width, output logits
    scaled by base_width/width, attention scaled by 1/d_head. ``parameterization: sp`` turns it off."""

    parameterization: Literal["mup", "sp"] = "mup"
    base_width: int = Field(default=64, ge=8, alias="baseWidth")
    init_std: float = Field(default=0.02, gt=0, le=1, alias="initStd")
    output_mult: float = Field(default=1.0, gt=0, alias="outputMult")


class EvalSpec(_Strict):
    """When to evaluate: ``log_points`` log-spaced steps plus every ``every_steps`` (0: none)."""

    log_points: int = Field(default=12, ge=0, le=200, alias="logPoints")
    every_steps: int = Field(default=0, ge=0, alias="everySteps")
    batches: int = Field(default=8, ge=1, le=10_000, description="validation batches per evaluation")
    checkpoint_every_steps: int = Field(default=0, ge=0, alias="checkpointEverySteps")


class LoraSpec(_Strict):
    """Low-rank fine-tuning of a checkpointed model, optionally with Fast Forward stages."""

    base_checkpoint: str = Field(alias="baseCheckpoint", max_length=4096)
    rank: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0)
    fast_forward: bool = Field(default=False, alias="fastForward")
    ff_interval: int = Field(default=6, ge=1, alias="ffInterval")
    ff_burn_in: int = Field(default=6, ge=0, alias="ffBurnIn")
    ff_val_examples: int = Field(default=32, ge=1, alias="ffValExamples")


STEP_CHECKPOINT_PATTERN = "checkpoint-step-{step:08d}.pt"
"""A named checkpoint (``saveCheckpointsAt``): the run's full resumable state at that step, in its output folder."""
MAX_SAVED_CHECKPOINTS = 64


def step_checkpoint_name(step: int) -> str:
    """File name of the named checkpoint at ``step``, e.g. ``checkpoint-step-00000120.pt``."""
    return STEP_CHECKPOINT_PATTERN.format(step=step)


def schedule_mismatch(step_count: int, base_lr: float, first: tuple[int, ScheduleSpec],
                      second: tuple[int, ScheduleSpec], rel_tol: float = 1e-9) -> tuple[int, float, float] | None:
    """The first optimiser step in [0, step_count) at which two schedules (each ``(total_steps, schedule)``) give
    different learning rates, with both rates; None when they agree on all of them. A branch resumed at step s
    follows its parent's trajectory exactly iff this is None for ``step_count = s``."""
    for step in range(step_count):
        a, b = lr_at(step, first[0], base_lr, first[1]), lr_at(step, second[0], base_lr, second[1])
        if not math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0):
            return step, a, b
    return None


class RunSpec(_Strict):
    """One training run, as the planner emits it and the trainer consumes it (JSON/YAML file or env)."""

    run_id: str = Field(alias="runId", min_length=1, max_length=200, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    campaign: str = Field(default="", max_length=253)
    role: Role = "ladder"
    shape: ModelShape
    tokens: int = Field(gt=0, description="training tokens (the run takes ceil(tokens / (batch·seq)) steps)")
    batch_size: int = Field(ge=1, le=1_000_000, alias="batchSize", description="sequences per optimiser step")
    optimizer: OptimizerSpec
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    mup: MupSpec = Field(default_factory=MupSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    data_path: str = Field(alias="dataPath", min_length=1, max_length=4096)
    output_dir: str = Field(alias="outputDir", min_length=1, max_length=4096)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    peak_flops: float | None = Field(default=None, gt=0, alias="peakFlops", description="per device, for MFU")
    micro_batch_size: int | None = Field(
        default=None, ge=1, le=1_000_000, alias="microBatchSize",
        description="sequences per forward pass per device; smaller than the per-device batch means gradient "
                    "accumulation (the trainer also halves it by itself on a CUDA out-of-memory error)")
    lora: LoraSpec | None = None
    stop_at_step: int | None = Field(
        default=None, ge=1, alias="stopAtStep",
        description="train on the full run's schedule (``tokens``) but stop after this step, checkpointed: a "
                    "partial leg whose curve is seen before the run goes on")
    resume_from: str | None = Field(
        default=None, alias="resumeFrom", max_length=4096,
        description="output folder of an earlier leg of this run (same spec but run id and legs): its checkpoint is "
                    "continued when this run has none of its own; the summary then counts this leg's tokens and "
                    "FLOPs only. With ``resumeStep``: the folder of the run this one branches from")
    save_checkpoints_at: list[int] = Field(
        default_factory=list, alias="saveCheckpointsAt",
        description=f"steps at which to keep a copy of the full resumable state as "
                    f"``{STEP_CHECKPOINT_PATTERN}`` in the output folder (never overwritten by later steps): "
                    f"the points other runs branch from (at most {MAX_SAVED_CHECKPOINTS})")
    resume_step: int | None = Field(
        default=None, ge=1, alias="resumeStep",
        description="branch: when this run has no checkpoint of its own, start from ``resumeFrom``'s checkpoint "
                    "saved at this step and continue on this run's own schedule and length. Refused unless the "
                    "parent's spec matches (all but run id, tokens, schedule, eval and checkpoint/leg fields) and "
                    "both schedules give the same learning rate at every step before this one")

    @model_validator(mode="after")
    def _steps_inside_the_run(self) -> RunSpec:
        total = self.total_steps
        if self.stop_at_step is not None and self.stop_at_step > total:
            raise ValueError(f"stopAtStep ({self.stop_at_step}) is past the run's {total} steps")
        if len(self.save_checkpoints_at) > MAX_SAVED_CHECKPOINTS:
            raise ValueError(f"saveCheckpointsAt lists {len(self.save_checkpoints_at)} steps; at most "
                             f"{MAX_SAVED_CHECKPOINTS} are kept (each is a full copy of model and optimiser)")
        outside = [s for s in self.save_checkpoints_at if not 1 <= s <= total]
        if outside:
            raise ValueError(f"saveCheckpointsAt: step(s) {outside} outside the run's steps 1..{total}")
        if self.resume_step is not None:
            if self.resume_from is None:
                raise ValueError(f"resumeStep ({self.resume_step}) needs resumeFrom: the output folder of the run "
                                 f"whose {step_checkpoint_name(self.resume_step)} this run branches from")
            if self.resume_step >= total:
                raise ValueError(f"resumeStep ({self.resume_step}) must be before the run's last step ({total}): "
                                 "a branch trains at least one step of its own")
            if self.stop_at_step is not None and self.stop_at_step <= self.resume_step:
                raise ValueError(f"stopAtStep ({self.stop_at_step}) must be after resumeStep ({self.resume_step})")
            early = [s for s in self.save_checkpoints_at if s <= self.resume_step]
            if early:
                raise ValueError(f"saveCheckpointsAt: step(s) {early} not after resumeStep ({self.resume_step}); "
                                 "a branch never trains them (take them from the parent run)")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.shape.seq_len

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.tokens / self.tokens_per_step))

    def planned_flops(self) -> float:
        """Exact FLOPs of the whole run as planned (whole steps)."""
        return run_flops(self.shape, self.total_steps * self.tokens_per_step)


# --------------------------------------------------------------------------------------------------
# Run summary: what comes back
# --------------------------------------------------------------------------------------------------

RunStatus = Literal["succeeded", "failed", "diverged"]


class CurvePoint(_Strict):
    """One evaluation: tokens seen, validation loss (and train loss where known)."""

    tokens: int
    val_loss: float = Field(alias="valLoss")
    train_loss: float | None = Field(default=None, alias="trainLoss")


class RunSummary(_Strict):
    """The compact result of one run: what the fitter and the ledger need, ≤ 4096 bytes as JSON."""

    run_id: str = Field(alias="runId")
    status: RunStatus
    exit_reason: str = Field(default="", alias="exitReason", max_length=512)
    params: int = 0
    tokens: int = Field(default=0, ge=0, description="tokens actually trained on")
    steps: int = Field(default=0, ge=0)
    flops: float = Field(default=0.0, ge=0, description="exact FLOPs consumed")
    flops_6nd: float = Field(default=0.0, ge=0, alias="flops6ND")
    final_val_loss: float | None = Field(default=None, alias="finalValLoss")
    best_val_loss: float | None = Field(default=None, alias="bestValLoss")
    best_step: int | None = Field(default=None, alias="bestStep")
    best_tokens: int | None = Field(default=None, alias="bestTokens")
    curve: list[CurvePoint] = Field(default_factory=list)
    tokens_per_s: float = Field(default=0.0, ge=0, alias="tokensPerS")
    mfu: float | None = Field(default=None, ge=0)
    elapsed_s: float = Field(default=0.0, ge=0, alias="elapsedS")
    device: str = ""

    def to_message(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """Compact JSON guaranteed to fit ``limit`` bytes: the curve is thinned (keeping both ends)
        and, as a last resort, the exit reason is shortened."""
        summary = self.model_copy(deep=True)
        # JSON has no NaN/inf: a diverged run reports its non-finite losses as absent.
        summary.curve = [p for p in summary.curve if math.isfinite(p.val_loss)]
        for name in ("final_val_loss", "best_val_loss"):
            value = getattr(summary, name)
            if value is not None and not math.isfinite(value):
                setattr(summary, name, None)
        while True:
            text = json.dumps(summary.model_dump(by_alias=True, exclude_none=True), separators=(",", ":"),
                              allow_nan=False, default=str)
            if len(text.encode()) <= limit:
                return text
            if len(summary.curve) > 2:
                keep = max(2, len(summary.curve) * 2 // 3)
                summary.curve = downsample(summary.curve, keep)
            elif summary.curve:
                summary.curve = []
            elif summary.exit_reason:
                summary.exit_reason = summary.exit_reason[: len(summary.exit_reason) // 2]
            else:  # cannot happen for sane ids; refuse rather than emit a truncated message
                raise ValueError("run summary cannot fit the termination-message limit")

    @classmethod
    def from_message(cls, text: str) -> RunSummary:
        """Parse a termination message (raises ``ValueError`` on garbled input)."""
        return cls.model_validate_json(text)


def downsample(points: list[CurvePoint], keep: int) -> list[CurvePoint]:
    """Keep ``keep`` points spread evenly by index, always including the first and the last."""
    if len(points) <= keep:
        return list(points)
    if keep <= 1:
        return [points[-1]]
    idx = sorted({round(i * (len(points) - 1) / (keep - 1)) for i in range(keep)})
    return [points[i] for i in idx]


# --------------------------------------------------------------------------------------------------
# Run progress: what a running trainer says about itself, for people watching
# --------------------------------------------------------------------------------------------------

PROGRESS_FILE = "progress.json"
"""In the run's output folder, rewritten atomically (temp file + rename) about once a second while it trains."""
PROGRESS_INTERVAL_S = 1.0


class RunProgress(_Strict):
    """How far a running trainer is: read by `flopwise run` for its live display, never by the engine (the
    engine decides from results only, so a stale or missing progress file changes no decision)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)  # a newer trainer's extra fields are fine

    run_id: str = Field(alias="runId")
    step: int = Field(ge=0, description="optimiser steps done, on the run's whole schedule")
    stop_step: int = Field(ge=1, alias="stopStep", description="the step this leg ends at")
    start_step: int = Field(default=0, ge=0, alias="startStep", description="the step this process started at")
    tokens: int = Field(default=0, ge=0)
    steps_per_s: float = Field(default=0.0, ge=0, alias="stepsPerS",
                               description="wall-clock rate of this process since its first step")
    tokens_per_s: float = Field(default=0.0, ge=0, alias="tokensPerS")
    train_loss: float | None = Field(default=None, alias="trainLoss")
    val_loss: float | None = Field(default=None, alias="valLoss", description="latest evaluation")
    updated_at: float = Field(default=0.0, alias="updatedAt", description="seconds since the epoch")

    @property
    def remaining_s(self) -> float | None:
        """Seconds to the end of this leg at the measured rate (None before a rate exists)."""
        if self.steps_per_s <= 0:
            return None
        return max(0, self.stop_step - self.step) / self.steps_per_s

    def to_json(self) -> str:
        data = self.model_dump(by_alias=True, exclude_none=True)
        for key in ("trainLoss", "valLoss"):  # JSON has no NaN: a diverging loss is reported as absent
            if key in data and not math.isfinite(data[key]):
                del data[key]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def read(cls, path: str) -> RunProgress | None:
        """The progress file at ``path``, or None when absent or unreadable (it is advisory)."""
        try:
            with open(path) as handle:
                return cls.model_validate_json(handle.read(4096))
        except (OSError, ValueError):
            return None
