"""The TrainingCampaign spec: a team's intent (budget, GPU pool, model family, data, tuning, trainer).

These pydantic models are the single truth: `crds/trainingcampaign.yaml` is generated from them
(`flopwise crd`), and a test fails when the file is stale. Field names are camelCase on the wire (Kubernetes
API conventions) and snake_case in Python.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from flopwise.contract import GPU_ALIASES, GPU_PEAK_FLOPS, gpu_peak_flops

GROUP = "flopwise.dev"
VERSION = "v1alpha1"
KIND = "TrainingCampaign"
PLURAL = "trainingcampaigns"
SHORT_NAMES = ["tc", "campaign"]

PLANNING_LAWS = ("chinchilla-3", "chinchilla-3-rounded", "chinchilla-1", "chinchilla-2", "epoch")
PlanningLaw = Literal["chinchilla-3", "chinchilla-3-rounded", "chinchilla-1", "chinchilla-2", "epoch"]
MAX_LEARNING_RATE = 10.0  # the trainer's bound (flopwise.contract.OptimizerSpec.lr)


class FieldProblem(ValueError):
    """Raised by a cross-field validator: ``field`` is relative to the model that raised it, so the error
    reported to the user names the exact field (e.g. `spec.budget.usd`), not just the enclosing object."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class ApiModel(BaseModel):
    """camelCase on the wire, unknown fields refused (a typo must not silently change a budget)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              validate_default=True, allow_inf_nan=False)


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class BudgetSplit(ApiModel):
    """Shares of the budget. Exploration (ladder + rounds) is kept small; the rest buys the final model."""

    ladder: Fraction = Field(default=0.10, description="scaling-ladder runs that the law is fitted to")
    round1: Fraction = Field(default=0.04, description="Round 1: many short tuning runs at a proxy size")
    round2: Fraction = Field(default=0.04, description="Round 2: a few long runs at the best Round-1 points")
    final: Fraction = Field(default=0.80, description="the compute-optimal final run")

    @model_validator(mode="after")
    def _sums_to_at_most_one(self) -> BudgetSplit:
        total = self.ladder + self.round1 + self.round2 + self.final
        if total > 1.0 + 1e-9:
            raise FieldProblem(
                "", f"the shares sum to {total:.3f} (ladder {self.ladder} + round1 {self.round1} + round2 "
                f"{self.round2} + final {self.final}); they must sum to at most 1: lower one of them"
            )
        if self.ladder <= 0:
            raise FieldProblem("ladder", "must be > 0: a campaign fits its law to the ladder's runs")
        return self


class Budget(ApiModel):
    """A FLOP and/or dollar budget; when both are given the tighter one binds."""

    # No upper bound in the schema: Kubernetes 1.20 reads bounds beyond int64 as overflowed integers.
    flops: float | None = Field(default=None, gt=0, description="total training FLOPs (finite)")
    usd: float | None = Field(default=None, gt=0, le=1e12, description="total dollars (needs gpuPool.pricePerGpuHour)")
    split: BudgetSplit = Field(default_factory=BudgetSplit)
    margin: float = Field(default=0.05, ge=0.0, lt=0.5,
                          description="share of the budget never planned, kept for measured-vs-planned drift")

    @model_validator(mode="after")
    def _one_limit(self) -> Budget:
        if self.flops is None and self.usd is None:
            raise FieldProblem("", "give budget.flops and/or budget.usd (e.g. flops: 1e21 or usd: 50000)")
        return self


_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (what a node selector or a toleration key must be), or None.
    Checked here so that `flopwise validate` and the operator name the field, instead of the API server
    refusing every Job later."""
    prefix, slash, name = key.rpartition("/")
    shown = _short(key)
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"{shown} is not a label key: its prefix must be a DNS subdomain (e.g. example.com/name)"
    if not 0 < len(name) <= 63 or not _LABEL_NAME.match(name):
        return (f"{shown} is not a label key: its name must be 1-63 characters of letters, digits, '-', '_' or "
                "'.', starting and ending with a letter or digit")
    return None


def _short(text: str, limit: int = 60) -> str:
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def label_value_ok(value: str) -> bool:
    return len(value) <= 63 and (value == "" or bool(_LABEL_NAME.match(value)))


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _label_syntax(self) -> Toleration:
        problem = label_key_problem(self.key) if self.key else None
        if problem:
            raise FieldProblem("key", problem)
        if self.value and not label_value_ok(self.value):
            raise FieldProblem("value", f"{_short(self.value)} is not a label value (at most 63 letters, digits, '-', "
                               "'_' or '.', starting and ending with a letter or digit)")
        return self


class GpuPool(ApiModel):
    """Where runs execute and what a GPU-hour costs. Peak FLOP/s come from a table unless overridden."""

    gpu_type: str = Field(default="H100-SXM", min_length=1, max_length=63,
                          description=f"one of {', '.join([*GPU_PEAK_FLOPS, *GPU_ALIASES])}, "
                          "or any name with peakFlops")
    peak_flops: float | None = Field(default=None, gt=0, le=1e18, description="dense bf16 FLOP/s per GPU")
    gpus_per_run: int = Field(default=1, ge=1, le=4096)
    gpus_per_node: int = Field(default=8, ge=1, le=64, description="GPUs on one node: a run wider than this spans "
                               "nodes (an Indexed Job, Kubernetes 1.22+)")
    max_concurrent_gpus: int = Field(default=8, ge=1, le=100_000)
    price_per_gpu_hour: float = Field(default=0.0, ge=0.0, le=10_000.0, description="dollars per GPU-hour")
    expected_mfu: float = Field(default=0.40, gt=0.0, le=1.0, description="model FLOPs utilisation until measured")
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    queue_name: str | None = Field(default=None, max_length=63, description="Kueue LocalQueue "
                                   "(`kueue.x-k8s.io/queue-name`): Jobs are created suspended and Kueue admits them; "
                                   "a Job Kueue suspends (not admitted, or preempted) is Queued, not failed")
    priority_class: str | None = Field(default=None, max_length=63, description="Kueue WorkloadPriorityClass "
                                       "(`kueue.x-k8s.io/priority-class`) of the campaign's Jobs")
    startup_slack_seconds: int = Field(default=600, ge=0, le=86_400, description="wall time a run may spend "
                                       "before training (image pull, data, checkpoint restore) beyond its compute "
                                       "at the expected MFU: reserved with it, and part of its Job's deadline")

    @model_validator(mode="after")
    def _known_peak(self) -> GpuPool:
        if self.peak_flops is None and gpu_peak_flops(self.gpu_type) is None:
            raise FieldProblem(
                "gpuType", f"unknown gpuType {self.gpu_type!r}: use one of {', '.join(GPU_PEAK_FLOPS)} "
                "or give gpuPool.peakFlops (dense bf16 FLOP/s per GPU)"
            )
        return self

    @model_validator(mode="after")
    def _node_selector_labels(self) -> GpuPool:
        for key, value in self.node_selector.items():
            problem = label_key_problem(key)
            if problem:
                raise FieldProblem("nodeSelector", problem)
            if not label_value_ok(value):
                raise FieldProblem("nodeSelector", f"the value {_short(value)} of {_short(key)} is not a label value "
                                   "(at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter "
                                   "or digit)")
        return self

    @model_validator(mode="after")
    def _kueue_names(self) -> GpuPool:
        for field, value in (("queueName", self.queue_name), ("priorityClass", self.priority_class)):
            if value is not None and not (len(value) <= 63 and _DNS_SUBDOMAIN.match(value)):
                raise FieldProblem(field, f"{_short(value)} is not a Kubernetes object name usable as a label value: "
                                   "1-63 lower-case letters, digits, '-' or '.', each dot-separated part starting and "
                                   "ending with a letter or digit (Kueue reads it from a label)")
        return self

    @model_validator(mode="after")
    def _whole_nodes(self) -> GpuPool:
        if self.gpus_per_run > self.gpus_per_node and self.gpus_per_run % self.gpus_per_node:
            raise FieldProblem("gpusPerRun", f"{self.gpus_per_run} GPUs do not fill whole nodes of "
                               f"{self.gpus_per_node}: use a multiple of gpusPerNode, or at most {self.gpus_per_node}")
        return self

    @property
    def nodes_per_run(self) -> int:
        return max(1, -(-self.gpus_per_run // self.gpus_per_node))

    @property
    def peak(self) -> float:
        peak = self.peak_flops if self.peak_flops is not None else gpu_peak_flops(self.gpu_type)
        assert peak is not None  # guaranteed by _known_peak
        return peak

    @property
    def max_concurrent_runs(self) -> int:
        return max(1, self.max_concurrent_gpus // self.gpus_per_run)


class ModelFamily(ApiModel):
    """The family concrete shapes are drawn from: a decoder-only transformer with a width/depth rule."""

    family: Literal["decoder-only"] = "decoder-only"
    vocab_size: int = Field(default=50304, ge=2, le=1_048_576)
    seq_len: int = Field(default=2048, ge=8, le=1_048_576)
    aspect_ratio: float = Field(default=64.0, gt=0, le=10_000, description="target dModel / nLayer")
    head_dim: int = Field(default=64, ge=8, le=512)
    width_multiple: int = Field(default=64, ge=1, le=1024, description="dModel is a multiple of this")
    min_layers: int = Field(default=2, ge=1, le=512)
    max_layers: int = Field(default=128, ge=1, le=512)
    tied_embeddings: bool = True
    positional: Literal["rope", "learned"] = "rope"
    parameterization: Literal["mup", "sp"] = Field(default="mup", description="mup makes Round 1's LR transfer")

    @model_validator(mode="after")
    def _layers_ordered(self) -> ModelFamily:
        if self.min_layers > self.max_layers:
            raise FieldProblem("minLayers", f"minLayers ({self.min_layers}) exceeds maxLayers ({self.max_layers})")
        return self


class Dataset(ApiModel):
    """Token shards (flat uint16/uint32 files) and how many tokens exist."""

    path: str = Field(min_length=1, max_length=4096, description="directory of token shards inside the pod")
    claim_name: str | None = Field(default=None, max_length=253, description="PersistentVolumeClaim holding path")
    tokens: float | None = Field(default=None, gt=0, le=1e16, description="tokens available (plans never exceed "
                                 "tokens × maxEpochs without saying so)")
    max_epochs: float = Field(default=1.0, gt=0, le=100)


class Tuning(ApiModel):
    """What Round 1 searches and how Round 2 lengthens the best points (the tuning playbook)."""

    base_learning_rate: float = Field(default=3e-3, gt=0, le=10, description="muP guess at the base width")
    lr_grid_points: int = Field(default=5, ge=3, le=25)
    lr_grid_factor: float = Field(default=2.0, gt=1.0, le=10.0, description="ratio between neighbouring LRs")
    warmup_fractions: list[Fraction] = Field(default_factory=lambda: [0.02], min_length=1, max_length=8)
    schedule: Literal["cosine", "linear", "constant", "wsd"] = Field(
        default="wsd", description="wsd: warmup, constant, then a linear cooldown over decayFraction of the run; "
        "linear: warmup then a linear decay to the end; cosine: to 10% at the end; constant")
    decay_fraction: Fraction = Field(default=0.2, description="wsd: share of a run's steps spent cooling down "
                                     "(Round 2 compares it with twice as long when it has the runs)")
    batch_tokens: int = Field(default=524_288, ge=1, le=1 << 40, description="tokens per optimiser step")
    round1_length_fraction: Fraction = Field(default=0.1, description="Round 1 run length vs a full-length run")
    round2_runs: int = Field(default=2, ge=0, le=16, description="full-length runs at the proxy whose final losses "
                             "decide the learning rate (and, from the third, the cooldown length)")
    round2_length_fraction: Fraction = Field(default=1.0, description="Round 2 run length vs a full-length run")
    max_retries: int = Field(default=1, ge=0, le=10, description="reruns of a failed run before it is charged")
    proxy_widths: int = Field(default=2, ge=1, le=4, description="widths Round 1's LR sweep runs at (same depth, "
                              "tokens and batch; each next a quarter as wide): ≥ 2 checks that the best LR transfers "
                              "(muP) or extrapolates it to the target; fewer are planned when the budget is short")

    @model_validator(mode="after")
    def _grid_within_trainer_bounds(self) -> Tuning:
        # Round 1's grid (plus the one point it may add past an edge) must be learning rates the trainer's
        # RunSpec accepts (0 < lr ≤ 10): otherwise the campaign would plan runs it can never launch.
        reach = (self.lr_grid_points - 1) / 2 + 1
        high = self.base_learning_rate * self.lr_grid_factor ** reach
        low = self.base_learning_rate / self.lr_grid_factor ** reach
        if high > MAX_LEARNING_RATE or low <= 0:
            raise FieldProblem("lrGridPoints", f"Round 1's grid of {self.lr_grid_points} points × "
                               f"{self.lr_grid_factor:g} around {self.base_learning_rate:g} reaches lr {high:.3g} "
                               f"(and {low:.3g}); the trainer takes 0 < lr ≤ {MAX_LEARNING_RATE:g}: lower "
                               "lrGridPoints, lrGridFactor or baseLearningRate")
        return self


LadderDesign = Literal["wsd", "isoflop"]


class Ladder(ApiModel):
    """The scaling ladder: runs whose annealed final losses the law is fitted to.

    Two designs give several token counts per size, so that N and D are separately identified (a ladder of
    one compute-optimal run per size puts every point on one line in log space):

    * ``wsd`` (Hägele et al. 2024, arXiv:2405.18392; MiniCPM): each size trains one warmup-stable-decay run to
      its largest token count, keeping checkpoints in its stable phase; short cooldowns branched from them end
      at the other token counts. Each branch is a real final loss at a fraction of a separate run's cost.
    * ``isoflop`` (Chinchilla's Approach 2, Hoffmann et al. 2022 §3.2; DeepSeek LLM): ``levels`` compute
      levels, ``sizes`` sizes around the prior's optimum at each; each run its own full schedule. The
      minima of the loss-vs-size parabolas give N_opt(C) directly, independently of the parametric fit. A
      level whose loss is lowest at its smallest or largest size gets up to two more sizes past that edge.
    """

    design: LadderDesign = Field(default="isoflop", description="wsd: trunks with cooldown branches; isoflop: "
                                 "sizes around the optimum at several compute levels (Chinchilla's Approach 2)")
    sizes: int = Field(default=5, ge=3, le=32, description="wsd: model sizes (≥ 5); isoflop: sizes per level")
    spread: float = Field(default=16.0, ge=2.0, le=1e4, description="largest / smallest parameter count: across "
                          "the ladder (wsd) or within one compute level (isoflop); the wider, the better the "
                          "exponents are identified")
    token_multiples: list[Annotated[float, Field(gt=0, le=64)]] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0], min_length=3, max_length=8,
        description="wsd: the token counts each size ends at, as multiples of its compute-optimal tokens under "
                    "the prior law (≥ 3 spanning ≥ 4×)")
    levels: int = Field(default=4, ge=2, le=8, description="isoflop: compute levels")
    level_ratio: float = Field(default=4.0, ge=1.5, le=100.0, description="isoflop: compute ratio between "
                               "neighbouring levels")
    min_params: int = Field(default=1_000_000, ge=1_000, description="no rung smaller than this")
    min_steps: int = Field(default=200, ge=8, le=1_000_000, description="fewest optimiser steps of any ladder run: "
                           "shorter runs are dominated by seed noise (the batch shrinks to keep this many)")
    seeds: int = Field(default=3, ge=1, le=16, description="runs of the smallest ladder run's configuration with "
                       "different seeds (the ladder run is one): their spread is the seed-noise floor; 1 turns it off")

    @model_validator(mode="after")
    def _design_identifies_the_law(self) -> Ladder:
        if self.design == "wsd":
            if self.sizes < 5:
                raise FieldProblem("sizes", f"the wsd design needs at least 5 sizes to fit the law's exponents "
                                   f"(got {self.sizes})")
            multiples = sorted(self.token_multiples)
            if len(set(multiples)) < 3 or multiples[-1] / multiples[0] < 4 * (1 - 1e-9):
                raise FieldProblem("tokenMultiples", f"{multiples}: give at least 3 distinct token counts spanning "
                                   "at least 4× (e.g. [0.25, 0.5, 1, 2]), or N and D cannot be told apart")
        return self


class Resources(ApiModel):
    requests: dict[str, Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=dict)
    limits: dict[str, Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=dict)


_QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                       r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def _quantity(value: str | None, field: str) -> None:
    if value is not None and not _QUANTITY.match(value):
        raise FieldProblem(field, f"{_short(value)} is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)")


class Trainer(ApiModel):
    """The trainer container and its Pod: the image, an optional exec-form command override, resources, the
    GPU-ready defaults (shared memory, CPU and memory requests per GPU) and an overlay for the rest."""

    image: str = Field(default="ghcr.io/flopwise/trainer:0.1.0", min_length=1, max_length=512)
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=64)
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    output_claim_name: str | None = Field(
        default=None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="PersistentVolumeClaim (ReadWriteMany when runs share nodes) for run outputs, one folder per "
                    "campaign uid: a relaunched Job resumes its checkpoint and the partial check's second leg finds "
                    "the first's. Unset: an emptyDir per Pod (a relaunch starts over; no partial check on a cluster)")
    termination_grace_period_seconds: int = Field(
        default=300, ge=0, le=86_400,
        description="time a trainer Pod gets after SIGTERM (deadline, preemption, suspension, cancellation) to "
                    "checkpoint and report; the ledger reserves it, since the GPUs are held until the Pod ends")
    shm_size: str | None = Field(default=None, max_length=32, description="size of /dev/shm, a memory-backed "
                                 "emptyDir (NCCL, data loaders); default 8Gi per GPU of the Pod, 1Gi on CPU pools")
    cpu_per_gpu: str = Field(default="8", max_length=32, description="CPU request per GPU of a GPU pool's Pod "
                             "(unless resources.requests.cpu is given)")
    memory_per_gpu: str = Field(default="64Gi", max_length=32, description="memory request per GPU of a GPU "
                                "pool's Pod (unless resources.requests.memory is given)")
    pod_template: dict[str, Any] | None = Field(
        default=None, description="a partial Pod template ({metadata: {labels, annotations}, spec}) merged into "
        "every trainer Pod: env, volumes, affinity, priorityClassName, imagePullSecrets, sidecars… (containers, "
        "env, volumes merged by name; the trainer container is named trainer). It cannot weaken the restricted "
        "security context: anything that would is refused, naming the field")

    @model_validator(mode="after")
    def _gpu_ready(self) -> Trainer:
        _quantity(self.shm_size, "shmSize")
        _quantity(self.cpu_per_gpu, "cpuPerGpu")
        _quantity(self.memory_per_gpu, "memoryPerGpu")
        if self.pod_template is not None:
            from flopwise.api.podtemplate import problems

            found = problems(self.pod_template)
            if found:
                where, why = found[0]
                raise FieldProblem(f"podTemplate.{where}", f"{why}" + (
                    f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
        return self


class Cleanup(ApiModel):
    """What becomes of a finished run's Job, its Pods and its ConfigMap once its result is in the status."""

    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, le=31_536_000, description="delete them this long after the run's result was written to "
        "the status (0: at once); unset: keep them until the campaign is deleted")
    keep_failed: bool = Field(default=False, description="keep failed runs' Jobs and Pods (their logs) anyway")


class Final(ApiModel):
    enabled: bool = Field(default=False, description="train the recommended model with budget.split.final")
    partial_check: bool = Field(default=False, description="first train a leg of the final run to partialFraction of "
                                "its tokens with a cooldown of its own (an annealed point at the target size), refit "
                                "the law with it, then resume the final run from the leg's stable-phase checkpoint "
                                "(run outputs must be on storage both legs see; needs tuning.schedule: wsd)")
    partial_fraction: float = Field(default=0.3, ge=0.05, le=0.9, description="where the partial check ends")

    @model_validator(mode="after")
    def _partial_needs_a_final_run(self) -> Final:
        if self.partial_check and not self.enabled:
            raise FieldProblem("partialCheck", "needs final.enabled: true (there is no final run to check)")
        return self


class TrainingCampaignSpec(ApiModel):
    """What the team wants: the best model a budget buys, found by a ladder, two tuning rounds and a fit."""

    budget: Budget
    gpu_pool: GpuPool = Field(default_factory=GpuPool)
    model: ModelFamily = Field(default_factory=ModelFamily)
    dataset: Dataset
    tuning: Tuning = Field(default_factory=Tuning)
    ladder: Ladder = Field(default_factory=Ladder)
    law: PlanningLaw = Field(default="chinchilla-3", description="prior law used until the campaign fits its own")
    trainer: Trainer = Field(default_factory=Trainer)
    final: Final = Field(default_factory=Final)
    suspend: bool = Field(default=False, description="stop launching and stop the running Jobs (suspended where "
                          "the server can, else deleted; checkpoints kept); false again resumes where it stopped")
    cleanup: Cleanup = Field(default_factory=Cleanup)

    @model_validator(mode="after")
    def _schedules_fit_the_design(self) -> TrainingCampaignSpec:
        stable = ("wsd", "constant")
        if self.ladder.design == "wsd" and self.tuning.schedule not in stable:
            raise FieldProblem("ladder.design", f"the wsd design branches cooldowns off a stable phase, which "
                               f"tuning.schedule {self.tuning.schedule!r} has not: use tuning.schedule: wsd, or "
                               "ladder.design: isoflop")
        if self.final.partial_check and self.tuning.schedule not in stable:
            raise FieldProblem("final.partialCheck", f"the partial check cools a leg down from the final run's stable "
                               f"phase, which tuning.schedule {self.tuning.schedule!r} has not: use tuning.schedule: "
                               "wsd, or turn the check off")
        return self

    @model_validator(mode="after")
    def _dollars_need_a_price(self) -> TrainingCampaignSpec:
        if self.budget.usd is not None and self.gpu_pool.price_per_gpu_hour <= 0:
            raise FieldProblem("budget.usd", "needs gpuPool.pricePerGpuHour > 0 to convert dollars into FLOPs")
        return self


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata a campaign file needs (the API server owns the rest)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = Field(default=None, max_length=63)


class TrainingCampaign(BaseModel):
    """A whole `TrainingCampaign` object as written in a YAML file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_version: Literal["flopwise.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TrainingCampaign"]
    metadata: ObjectMeta
    spec: TrainingCampaignSpec
    status: dict[str, Any] | None = None
