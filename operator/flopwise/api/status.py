"""The TrainingCampaign status: observation only, written by flopwise (engine or operator), never by users.

It is the campaign's only memory (Kubernetes API conventions): the plan, the budget ledger, the fitted law
and the predictions, run counts and `conditions` with `observedGeneration`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from flopwise.api.spec import ApiModel, Dataset, Ladder, ModelFamily, PlanningLaw, Tuning
from flopwise.api.stored import DERIVED_FIELDS, PLANNED_FIELDS, restore
from flopwise.contract import ModelShape, ScheduleSpec

Phase = Literal["Pending", "Planned", "Round1", "Round2", "Ladder", "Final", "Succeeded", "Failed"]
RunRole = Literal["ladder", "round1", "round2", "final", "seed"]


CONDITION_TYPE = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(ApiModel):
    """A condition in metav1.Condition's form (what `kubectl wait --for=condition=…` and every Kubernetes tool
    read): type, status, a CamelCase reason, message, lastTransitionTime (required) and observedGeneration. The
    campaign's types: Complete and Failed (as a batch/v1 Job's), Suspended, Degraded, Planned, FitReady,
    LRTransfers, BudgetExhausted, BudgetBelowSpent, SpecChangeRefused, SpecValid, MultiNodeUnavailable."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _older_statuses(cls, data: Any) -> Any:
        """Statuses written before conditions followed metav1 may lack a reason or a transition time."""
        if isinstance(data, dict):
            data = dict(data)
            for key in ("reason",):
                if not data.get(key):
                    data[key] = "Unknown"
            for key in ("lastTransitionTime", "last_transition_time"):
                if key in data and not data[key]:
                    del data[key]
            if not data.get("lastTransitionTime") and not data.get("last_transition_time"):
                data["lastTransitionTime"] = "1970-01-01T00:00:00Z"
        return data


def _record_schema(schema: dict[str, Any]) -> None:
    """The CRD holds the stored form (api/stored.py): a record may leave out what its planned run says."""
    optional = {*PLANNED_FIELDS, "plannedId"}
    schema["required"] = [name for name in schema.get("required", []) if name not in optional]


def _planned_run_schema(schema: dict[str, Any]) -> None:
    """The CRD holds the stored form (api/stored.py): a planned run may leave out what its shape and the plan say."""
    schema["required"] = [name for name in schema.get("required", []) if name not in DERIVED_FIELDS]


class PlannedRun(ApiModel):
    """One run the plan intends to launch, with its exact FLOPs and forecast cost. Stored without params, flops,
    gpuHours or usd where they are what its shape, tokens and the plan's peakFlopsPerGpu and mfu give (usd: 0)."""

    model_config = ConfigDict(json_schema_extra=_planned_run_schema)

    run_id: str
    role: RunRole
    shape: ModelShape
    params: int = Field(ge=1)
    tokens: int = Field(ge=1)
    batch_size: int = Field(ge=1, description="sequences per optimiser step")
    steps: int = Field(ge=1)
    flops: float = Field(ge=0, description="exact FLOPs (matmuls + attention)")
    gpu_hours: float = Field(ge=0)
    usd: float = Field(ge=0)
    learning_rate: float | None = Field(default=None, gt=0)
    warmup_fraction: float | None = Field(default=None, ge=0, le=1)
    seed_offset: int = Field(default=0, ge=0, le=64, description="added to the campaign seed (seed replicas)")
    start_step: int = Field(default=0, ge=0, description="a branch starts at this step of its schedule (its tokens "
                            "and FLOPs are its own leg's; steps is the whole schedule's length)")
    branch_of: str | None = Field(default=None, max_length=200, description="the run whose checkpoint at startStep "
                                  "this branch resumes")
    checkpoints_at: list[int] = Field(default_factory=list, max_length=64, description="steps at which this run "
                                      "keeps a checkpoint for its branches")
    level: int | None = Field(default=None, ge=0, description="isoflop: the compute level (0 is the largest)")

    @property
    def trajectory_tokens(self) -> int:
        """Tokens of the whole schedule this run ends (a branch's include the trunk's part)."""
        return self.steps * self.batch_size * self.shape.seq_len


class StudyPlan(ApiModel):
    """One study of the search design: what it varies around the transferred point, and what it costs."""

    name: str = Field(max_length=200)
    phase: str = Field(max_length=32)
    varies: str = Field(max_length=200, description="the one hyperparameter, or the known-interacting pair")
    runs: int = Field(ge=0)
    flops: float = Field(ge=0)


class PhasePlan(ApiModel):
    """The runs of one phase and what they cost together."""

    share: float = Field(ge=0, le=1, description="budget share allotted to the phase")
    allotted_flops: float = Field(ge=0)
    flops: float = Field(ge=0, description="FLOPs the planned runs use")
    usd: float = Field(ge=0)
    runs: list[PlannedRun] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class TargetPlan(ApiModel):
    """The compute-optimal model the final share buys."""

    law: str
    flops: float = Field(ge=0)
    params_optimal: float = Field(ge=0, description="N_opt from the law, before rounding to a shape")
    tokens_optimal: float = Field(ge=0)
    shape: ModelShape
    params: int = Field(ge=1, description="exact parameters of the chosen shape")
    tokens: int = Field(ge=1)
    tokens_per_param: float = Field(ge=0)
    predicted_loss: float | None = Field(default=None, description="the target's loss under the law that sized "
                                         "it: see lossBasis; absent where a published law's tokenizer is not the "
                                         "campaign's (its loss would be in other units)")
    loss_basis: Literal["fit", "prior"] | None = Field(default=None, description="fit: the campaign's own law; "
                                                       "prior: a published law (its data, not the campaign's)")
    gpu_hours: float = Field(ge=0)
    usd: float = Field(ge=0)
    data_limited: bool = False


class Plan(ApiModel):
    """What flopwise will do with the budget, before anything runs."""

    law: str
    budget_flops: float = Field(ge=0, description="the binding budget in FLOPs")
    budget_usd: float | None = Field(default=None, ge=0, description="the binding budget in dollars, if priced")
    binding: Literal["flops", "usd"]
    margin_flops: float = Field(ge=0, description="never planned: kept for measured-vs-planned drift")
    peak_flops_per_gpu: float = Field(gt=0)
    mfu: float = Field(gt=0, le=1)
    target: TargetPlan
    ladder: PhasePlan
    round1: PhasePlan
    round2: PhasePlan
    final: PhasePlan
    planned_flops: float = Field(ge=0)
    planned_usd: float = Field(ge=0)
    warnings: list[str] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list, description="what did not fit the budget, and why")
    studies: list[StudyPlan] = Field(default_factory=list, description="the search design: one hyperparameter at a "
                                     "time, pairs only where they interact (LR × warmup); never a full factorial")

    def phases(self) -> dict[str, PhasePlan]:
        return {"ladder": self.ladder, "round1": self.round1, "round2": self.round2, "final": self.final}

    def all_runs(self) -> list[PlannedRun]:
        return [run for phase in self.phases().values() for run in phase.runs]


class LedgerTotals(ApiModel):
    """Budget accounting. Invariant: reserved + spent ≤ budget, in FLOPs and (when priced) dollars.
    ``forecast_usd`` is spent plus reserved plus what the rest of the plan costs at the *measured* MFU."""

    budget_flops: float = Field(default=0.0, ge=0)
    budget_usd: float | None = Field(default=None, ge=0)
    reserved_flops: float = Field(default=0.0, ge=0)
    spent_flops: float = Field(default=0.0, ge=0)
    reserved_gpu_hours: float = Field(default=0.0, ge=0)
    spent_gpu_hours: float = Field(default=0.0, ge=0)
    reserved_usd: float = Field(default=0.0, ge=0)
    spent_usd: float = Field(default=0.0, ge=0)
    used_percent: float = Field(default=0.0, ge=0, description="(reserved + spent) / budget, in percent")
    forecast_usd: float | None = Field(default=None, ge=0)


class FittedLaw(ApiModel):
    """L(N, D) = E + A/N^α + B/D^β fitted to the campaign's runs, with 95% intervals where bootstrapped."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    mode: str = Field(default="full", description="full, borrowed-exponents or fixed-ratio")
    n_points: int = Field(default=0, ge=0)
    n_runs: int = Field(default=0, ge=0)
    input_runs: int = Field(default=0, ge=0, description="finished ladder runs offered to the fit")
    ci_low: dict[str, float] = Field(default_factory=dict)
    ci_high: dict[str, float] = Field(default_factory=dict)
    backtest_are: float | None = Field(default=None, ge=0, description="ARE on held-out largest runs")
    identified: bool | None = Field(default=None, description="the data pin this law down: no parameter at a "
                                    "bound, no interval spanning orders of magnitude (None before the final fit)")
    problems: list[str] = Field(default_factory=list, max_length=8, description="why it is not identified")
    noise: str | None = Field(default=None, max_length=512, description="the noise the bootstrap drew")
    notes: list[str] = Field(default_factory=list, max_length=8)


class Approach2Status(ApiModel):
    """Chinchilla's Approach 2: N_opt read off IsoFLOP profiles' minima and extrapolated as a power law of C."""

    params: float | None = Field(default=None, ge=0, description="N_opt at the final budget")
    params_low: float | None = Field(default=None, ge=0)
    params_high: float | None = None
    exponent: float | None = Field(default=None, description="a in N_opt ∝ C^a")
    exponent_low: float | None = None
    exponent_high: float | None = None
    interpolated: bool = Field(default=False, description="profiles interpolated from a WSD ladder's endpoints")
    levels: int = Field(default=0, ge=0)
    bracketed: int = Field(default=0, ge=0, description="levels whose minimum lies inside the sizes tried")
    note: str = Field(default="", max_length=2048)


class Allocation(ApiModel):
    """The compute-optimal size at the final budget, what it rests on, and how sure it is."""

    basis: Literal["full", "borrowed", "approach-2", "approach-2-borrowed", "prior"] = Field(
        description="full: the five-parameter fit; borrowed: exponents held at Epoch's refit; approach-2: "
        "IsoFLOP minima; approach-2-borrowed: IsoFLOP minima with the allocation exponent's prior at Epoch's "
        "refit; prior: the planning law, because nothing measured identifies an allocation")
    flops: float = Field(ge=0)
    params: float = Field(ge=0)
    params_low: float | None = Field(default=None, ge=0, description="95% interval")
    params_high: float | None = None
    identified: bool = False
    approach2: Approach2Status | None = None
    agree: bool | None = Field(default=None, description="the parametric and Approach-2 allocations agree (their "
                               "intervals overlap or their points are within 1.5×)")
    message: str = Field(default="", max_length=2048)


class Prediction(ApiModel):
    """The predicted final loss of the recommended model, with its interval."""

    params: float = Field(ge=0)
    tokens: float = Field(ge=0)
    loss: float
    loss_low: float | None = None
    loss_high: float | None = None
    source: str | None = Field(default=None, max_length=512, description="where the loss comes from: the fitted "
                               "law at (params, tokens), or a measured loss carried to them by the law's ratio")


class RunCounts(ApiModel):
    planned: int = Field(default=0, ge=0)
    pending: int = Field(default=0, ge=0)
    running: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    lost: int = Field(default=0, ge=0)
    queued: int = Field(default=0, ge=0, description="launched, waiting for admission (Kueue) or preempted")
    suspended: int = Field(default=0, ge=0, description="stopped by spec.suspend")


RunState = Literal["Pending", "Running", "Queued", "Suspended", "Succeeded", "Failed", "Lost"]
LIVE_STATES = ("Running", "Queued", "Suspended")
"""A run in these states holds a reservation and may have a Job."""


class Charge(ApiModel):
    """An amount of budget, in the three units the ledger keeps."""

    flops: float = Field(default=0.0, ge=0)
    gpu_hours: float = Field(default=0.0, ge=0)
    usd: float = Field(default=0.0, ge=0)


class CurveSample(ApiModel):
    tokens: int = Field(ge=0)
    val_loss: float


class RunResult(ApiModel):
    """What the campaign keeps of a finished run's summary (compact: the status is the only memory)."""

    status: Literal["succeeded", "failed", "diverged"]
    exit_reason: str = Field(default="", max_length=512)
    tokens: int = Field(default=0, ge=0)
    steps: int = Field(default=0, ge=0)
    flops: float = Field(default=0.0, ge=0)
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    best_tokens: int | None = None
    tokens_per_s: float = Field(default=0.0, ge=0)
    mfu: float | None = Field(default=None, ge=0)
    elapsed_s: float = Field(default=0.0, ge=0)
    curve: list[CurveSample] = Field(default_factory=list, max_length=64)


class PodTime(ApiModel):
    """GPU time one Pod of a run held: from the Pod's start (the kubelet took it) to its end, on its GPUs. What a
    run is charged on a cluster, whatever its report says."""

    uid: str = Field(max_length=64)
    gpus: int = Field(ge=0)
    started_at: float = Field(description="seconds since the epoch")
    finished_at: float | None = Field(default=None, description="unset while the Pod runs")


class RunRecord(ApiModel):
    """One attempt at one planned run: its hyperparameters, its ledger entry and its result. A stored record
    without a shape has its planned run's shape, and of role, params, tokens, batchSize, steps, learningRate,
    warmupFraction, level and checkpointsAt those it leaves out (read them there); without plannedId, plannedId is
    its runId."""

    model_config = ConfigDict(json_schema_extra=_record_schema)

    run_id: str = Field(max_length=200)
    planned_id: str = Field(max_length=200, description="the plan's run this attempt carries out")
    role: RunRole
    attempt: int = Field(default=0, ge=0)
    relaunches: int = Field(default=0, ge=0, description="times it was relaunched after vanishing (at most once)")
    seen_running: bool = Field(default=False, description="an executor has seen this attempt running")
    state: RunState = "Pending"
    shape: ModelShape
    params: int = Field(ge=1)
    tokens: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    warmup_fraction: float = Field(default=0.0, ge=0, le=1)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    seed: int = Field(default=0, ge=0)
    reserved: Charge = Field(default_factory=Charge)
    spent: Charge = Field(default_factory=Charge)
    result: RunResult | None = None
    reason: str = Field(default="", max_length=1024)
    launched_at: float | None = Field(default=None, description="seconds since the epoch")
    finished_at: float | None = None
    start_step: int = Field(default=0, ge=0, description="a continuation starts at this step of its schedule")
    stop_at_step: int | None = Field(default=None, ge=1, description="a partial leg stops here (steps is the "
                                     "schedule's length)")
    resume_from: str | None = Field(default=None, max_length=200, description="run whose checkpoint it continues")
    resume_step: int | None = Field(default=None, ge=1, description="with resumeFrom: the step of that run's kept "
                                    "checkpoint this run branches from (else its latest checkpoint)")
    checkpoints_at: list[int] = Field(default_factory=list, max_length=64, description="steps at which it keeps a "
                                      "checkpoint for branches")
    level: int | None = Field(default=None, ge=0, description="isoflop: the compute level (0 is the largest)")
    group: str | None = Field(default=None, max_length=200, description="runs sharing a trajectory (a trunk and "
                              "its branches): their seed noise is shared, so they are resampled together")

    @property
    def trajectory_tokens(self) -> int:
        """Tokens of the whole schedule this record ends: the point it puts on the loss surface."""
        return (self.stop_at_step or self.steps) * self.batch_size * self.shape.seq_len
    pods: list[PodTime] = Field(default_factory=list, max_length=4096, description="while it is live: the GPU "
                                "time of each Pod seen (folded into spent when it settles)")
    image: str | None = Field(default=None, max_length=512, description="the trainer image it was launched with")
    image_digest: str | None = Field(default=None, max_length=71, description="that image's sha256 digest, as a Pod "
                                     "status showed it")

    def train_steps(self) -> int:
        """Optimiser steps this record trains: its leg of the schedule."""
        return max(1, (self.stop_at_step or self.steps) - self.start_step)

    def planned_flops(self) -> float:
        """Exact FLOPs this record trains (what it reserves): its ``tokens``, which are its leg's."""
        return self.shape.flops_per_token() * self.tokens


class WidthOptimum(ApiModel):
    """Round 1's best learning rate at one proxy width (parabola in log-LR), with its 95% interval."""

    d_model: int = Field(ge=1)
    params: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    lr_low: float = Field(gt=0)
    lr_high: float = Field(gt=0)
    on_edge: str | None = Field(default=None, description="low/high: best on the grid's edge")
    points: int = Field(default=0, ge=0)


class TransferStatus(ApiModel):
    """Does Round 1's best LR transfer across proxy widths? If not, its power law extrapolated to the target."""

    verdict: Literal["holds", "does-not-hold", "unchecked"] = "unchecked"
    message: str | None = Field(default=None, max_length=2048)
    parameterization: str | None = None
    widths: list[WidthOptimum] = Field(default_factory=list, max_length=8)
    drift: float | None = Field(default=None, ge=1, description="largest ratio between two widths' best LRs")
    tolerance: float | None = Field(default=None, ge=1, description="one grid step (ratio)")
    coefficient: float | None = None
    exponent: float | None = Field(default=None, description="η_opt ∝ dModel^exponent (depth held)")
    exponent_low: float | None = None
    exponent_high: float | None = None
    target_params: int | None = Field(default=None, ge=0)
    target_d_model: int | None = Field(default=None, ge=0)
    learning_rate: float | None = Field(default=None, gt=0, description="the LR for the target's width")
    lr_low: float | None = None
    lr_high: float | None = None


class Round2Candidate(ApiModel):
    """One Round-2 run: the point it tried and the final loss it reached."""

    run_id: str = Field(max_length=200)
    learning_rate: float = Field(gt=0)
    decay_fraction: float | None = Field(default=None, ge=0, le=1)
    final_loss: float | None = None


class TuningStatus(ApiModel):
    """What the tuning rounds decided, and why. ``learningRate`` (at the Round-1 proxy's width), ``warmupFraction``
    and ``decayFraction`` are what the ladder and the final run train with."""

    round1_best_lr: float | None = None
    round1_best_warmup: float | None = None
    round1_best_loss: float | None = None
    round1_grid_extended: bool = False
    round1_note: str = ""
    round2_verdict: str = ""
    round2_best_fraction: float | None = Field(default=None, ge=0, le=1, description="best step / total steps")
    round2_candidates: list[Round2Candidate] = Field(default_factory=list, max_length=16)
    transfer: TransferStatus | None = None
    learning_rate: float | None = Field(default=None, gt=0, description="the decided learning rate at the proxy's "
                                        "width")
    warmup_fraction: float | None = Field(default=None, ge=0, le=1)
    decay_fraction: float | None = Field(default=None, ge=0, le=1, description="wsd: the decided cooldown share")
    lr_rule: str = Field(default="", max_length=512, description="how each width's learning rate follows")


class NoiseFloorStatus(ApiModel):
    """The seed-noise floor: k seeds of the smallest ladder run, next to the backtest ARE."""

    seeds: int = Field(ge=0)
    params: int = Field(ge=1)
    losses: list[float] = Field(default_factory=list, max_length=16)
    mean_loss: float | None = None
    sd: float | None = Field(default=None, ge=0)
    floor_are: float | None = Field(default=None, ge=0, description="ARE a perfect law would have: √(2/π)·σ/L")
    floor_are_high: float | None = Field(default=None, ge=0, description="upper 95% bound of floorAre")
    band_are: float | None = Field(default=None, ge=0, description="95% band of one seed's error: 1.96·σ/L")
    band_are_high: float | None = Field(default=None, ge=0, description="the band at σ's 95% upper bound (k − 1 "
                                        "degrees of freedom): the verdict's threshold")
    backtest_are: float | None = Field(default=None, ge=0)
    within_noise: bool | None = Field(default=None, description="backtest ARE inside the noise band at σ's upper "
                                      "bound: not distinguishable from a rerun with another seed")
    message: str | None = Field(default=None, max_length=2048)

    @property
    def relative_sd(self) -> float | None:
        """σ / L: the seed noise as the fit's noise model takes it (a lower bound for the bootstrap's)."""
        return self.sd / self.mean_loss if self.sd is not None and self.mean_loss else None


class PartialCheckStatus(ApiModel):
    """The final run stopped at a fraction of its tokens; the law refitted with its curve, before and after."""

    fraction: float = Field(ge=0, le=1)
    stop_step: int = Field(ge=1)
    tokens: int | None = Field(default=None, ge=0, description="tokens trained at the check")
    observed_loss: float | None = Field(default=None, description="the final run's loss at the check")
    loss_before: float | None = None
    low_before: float | None = None
    high_before: float | None = None
    loss_after: float | None = None
    low_after: float | None = None
    high_after: float | None = None
    change: float | None = Field(default=None, description="lossAfter − lossBefore")
    final_loss: float | None = Field(default=None, description="the final run's observed final loss")
    message: str | None = Field(default=None, max_length=2048)


class Recommendation(ApiModel):
    """The model to train with the final budget, and how much to trust the prediction."""

    shape: ModelShape
    params: int = Field(ge=1)
    tokens: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    warmup_fraction: float = Field(ge=0, le=1)
    schedule: str
    batch_size: int = Field(ge=1)
    flops: float = Field(ge=0)
    gpu_hours: float = Field(ge=0)
    usd: float = Field(ge=0)
    predicted_loss: float | None = None
    loss_low: float | None = None
    loss_high: float | None = None
    backtest_are: float | None = None
    law: str = ""
    learning_rate_low: float | None = None
    learning_rate_high: float | None = None
    learning_rate_source: str | None = Field(default=None, description="where the LR came from")
    noise_floor_are: float | None = None
    decay_fraction: float | None = Field(default=None, ge=0, le=1, description="wsd: the cooldown share")
    basis: str | None = Field(default=None, description="what the size rests on (status.allocation.basis)")
    identified: bool = Field(default=False, description="the campaign's own data identify the allocation")
    params_low: float | None = Field(default=None, ge=0, description="95% interval of the compute-optimal size")
    params_high: float | None = None


IMMUTABLE_SECTIONS = ("model", "dataset", "ladder", "tuning", "law")
"""Spec sections a plan is made of: changing them after planning would orphan the runs already made."""


class PlannedSpec(ApiModel):
    """The immutable spec sections as the campaign was planned: a later edit to them is refused."""

    model: ModelFamily
    dataset: Dataset
    ladder: Ladder
    tuning: Tuning
    law: PlanningLaw


class StatusDisplay(ApiModel):
    """The status's numbers as people read them, for `kubectl get tc` (printer columns show a field as stored:
    `9.4%`, not `9.356419665843365`). The numbers stay beside them for machines and metrics."""

    budget_used: str = Field(default="", max_length=32, description="reserved + spent, of the budget: '9.4%'")
    target_params: str = Field(default="", max_length=32, description="the recommended model's size: '9.29B'")
    predicted_loss: str = Field(default="", max_length=32, description="the campaign's own prediction, '-' before "
                                "its first fit (a published law's loss is never shown here)")
    runs: str = Field(default="", max_length=32, description="runs finished / all runs known so far: '3/26'")
    spent: str = Field(default="", max_length=32, description="dollars spent, or FLOPs where unpriced: '$1,234'")
    backtest_are: str = Field(default="", max_length=32, description="the law's error on held-out largest runs")


class TrainingCampaignStatus(ApiModel):
    phase: Phase = "Pending"
    observed_generation: int | None = Field(default=None, ge=0)
    message: str = Field(default="", max_length=32768)
    conditions: list[Condition] = Field(default_factory=list, description="metav1.Condition, one per type")
    plan: Plan | None = None
    planned_spec: PlannedSpec | None = None
    ledger: LedgerTotals = Field(default_factory=LedgerTotals)
    law: FittedLaw | None = None
    prediction: Prediction | None = None
    target_params: int | None = Field(default=None, ge=0, description="parameters of the recommended model")
    predicted_loss: float | None = Field(default=None, description="predicted final loss of the recommended model")
    run_counts: RunCounts = Field(default_factory=RunCounts)
    runs: list[RunRecord] = Field(default_factory=list, max_length=5000)
    tuning: TuningStatus = Field(default_factory=TuningStatus)
    recommendation: Recommendation | None = None
    allocation: Allocation | None = None
    measured_mfu: float | None = Field(default=None, ge=0, description="FLOP-weighted MFU of finished runs")
    noise_floor: NoiseFloorStatus | None = None
    partial_check: PartialCheckStatus | None = None
    display: StatusDisplay | None = Field(default=None, description="display strings for printer columns")

    @model_validator(mode="before")
    @classmethod
    def _planned_fields(cls, data: Any) -> Any:
        """A stored status gets back what its planned runs and records left out (api/stored.py)."""
        if isinstance(data, dict) and isinstance(data.get("plan"), Plan):
            return data  # built from models, not read from storage
        return restore(data)
