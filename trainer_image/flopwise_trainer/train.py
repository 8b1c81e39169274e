"""The training loop: one ``RunSpec`` in, a ``RunSummary`` (and ``result.json``) out.

Separation, torchtitan-style: ``model`` builds the network, ``param_groups`` the muP optimiser groups,
``distributed`` the data parallelism, ``data`` the batches, ``checkpoint`` the atomic files, ``lora`` and
``fast_forward`` the fine-tuning mode, ``results`` the output protocol. This module only sequences them:
schedule → accumulate micro-batches → clip → step → evaluate at log-spaced points → checkpoint.

Invariants the fitter relies on: a run trains ``total_steps · batch · seq`` tokens exactly, resumed or not
(data is a pure function of (seed, step)); FLOPs are ``ModelShape.flops_per_token`` × tokens, with 6ND
alongside; every evaluation is recorded once, with its step, tokens, losses, LR, elapsed time and FLOPs.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from flopwise.contract import (
    PROGRESS_INTERVAL_S,
    CurvePoint,
    EvalSpec,
    ModelShape,
    MupSpec,
    RunProgress,
    RunSpec,
    RunStatus,
    RunSummary,
    lr_at,
)
from flopwise_trainer import checkpoint as ckpt
from flopwise_trainer import distributed, lineage
from flopwise_trainer.data import Batches
from flopwise_trainer.fast_forward import FastForward
from flopwise_trainer.hardware import device_name, peak_flops
from flopwise_trainer.lora import apply_lora, lora_param_count, lora_parameters
from flopwise_trainer.model import Transformer, count_params
from flopwise_trainer.param_groups import build_param_groups
from flopwise_trainer.results import write_progress, write_results

NAN_ENV = "FLOPWISE_DEBUG_NAN_AT_STEP"
"""Debug hook for tests and drills: poison the training loss of this (1-based) step with NaN."""
DIVERGENCE_FACTOR = 4.0
"""A finite training loss above max(4·ln(vocab), 2 × the first step's loss) also counts as diverged."""


class RunError(Exception):
    """Ends a run with a status other than ``succeeded``."""

    def __init__(self, status: RunStatus, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class EvalPoint:
    step: int
    tokens: int
    train_loss: float | None
    val_loss: float
    lr: float
    elapsed_s: float
    flops: float
    flops_6nd: float


def eval_steps(total_steps: int, spec: EvalSpec) -> list[int]:
    """Log-spaced evaluation steps in [1, total_steps], every ``every_steps``, and always the last step."""
    points = {total_steps}
    n = spec.log_points
    if n == 1:
        points.add(total_steps)
    elif n > 1:
        points.update(max(1, round(total_steps ** (i / (n - 1)))) for i in range(n))
    if spec.every_steps:
        points.update(range(spec.every_steps, total_steps + 1, spec.every_steps))
    return sorted(p for p in points if 1 <= p <= total_steps)


class Trainer:
    """Holds one run's state; ``run()`` trains to the end or raises ``RunError``."""

    def __init__(self, spec: RunSpec, info: distributed.DistInfo, device: torch.device):
        self.spec, self.info, self.device = spec, info, device
        self.out = Path(spec.output_dir)
        self.t0 = time.perf_counter()
        torch.manual_seed(spec.seed)
        shape = spec.shape
        try:
            self.batches = Batches(spec.data_path, seq_len=shape.seq_len, batch_size=spec.batch_size,
                                   seed=spec.seed, vocab_size=shape.vocab_size, device=device, rank=info.rank,
                                   world_size=info.world_size)
        except (OSError, ValueError) as e:
            raise RunError("failed", f"data: {e}") from e
        self.model = self._build_model().to(device)
        self.lora_params = lora_param_count(self.model)
        base_params = count_params(self.model) - self.lora_params
        if base_params != shape.param_count():
            raise RunError("failed", f"model has {base_params} parameters, shape says {shape.param_count()}")

        opt = spec.optimizer
        self.groups = build_param_groups(self.model, opt)
        # The fused kernel exists for CPU and CUDA; on CPU it is ~5× faster than the default for-loop AdamW.
        self.optimizer = torch.optim.AdamW(self.groups, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
                                           fused=True)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.per_rank = spec.batch_size // info.world_size
        self.micro = min(spec.micro_batch_size or self.per_rank, self.per_rank)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else contextlib.nullcontext())
        self.train_module = distributed.wrap(self.model, info, device)
        if spec.compile:
            self.train_module = torch.compile(self.train_module)

        # FLOPs per token. Full training: the contract's exact count. LoRA: the frozen base matrices need no
        # weight gradients (forward 2 + input-gradient 2 of their 6), attention (no weights) keeps all of its
        # forward and backward, and each adapter parameter costs the full 6.
        fpt = shape.flops_per_token()
        attention = 6.0 * shape.n_layer * shape.seq_len * shape.d_model
        self.train_fpt = fpt if spec.lora is None else (fpt - attention) * 2 / 3 + attention + 6 * self.lora_params
        self.forward_fpt = fpt / 3 + 2 * self.lora_params
        self.total_steps = spec.total_steps
        self.stop_step = spec.stop_at_step or self.total_steps  # a partial leg ends early, on the full schedule
        self.eval_at = set(eval_steps(self.total_steps, spec.eval)) | {self.stop_step}
        self.save_at = set(spec.save_checkpoints_at)  # named checkpoints: the points branches start from

        self.fast_forward = self._build_fast_forward()
        # Mutable run state (all of it goes into the checkpoint).
        self.step = 0
        self.history: list[EvalPoint] = []
        self.best: EvalPoint | None = None
        self.loss_sum, self.loss_count = 0.0, 0
        self.train_time = 0.0
        self.prior_elapsed = 0.0
        self.eval_flops = 0.0
        self.ff_flops = 0.0
        self.resumed_from: list[int] = []
        self.lr = 0.0
        self.peak: tuple[float | None, str] = (None, "")
        self.first_loss: float | None = None
        self.nan_step = int(os.environ.get(NAN_ENV, "0") or 0)
        self.inherited_steps, self.inherited_flops = 0, 0.0  # what an earlier leg of the run trained
        self._resume()
        # Progress for people watching (progress.json): this process's rate, measured from its first step.
        self.start_step = self.step
        self.rate_origin: tuple[int, float] | None = None
        self.progress_written = 0.0

    # ---------------------------------------------------------------- construction
    def _build_model(self) -> Transformer:
        spec = self.spec
        if spec.lora is None:
            return Transformer(spec.shape, spec.mup)
        try:
            path = ckpt.resolve_model_checkpoint(spec.lora.base_checkpoint)
            base = ckpt.load(path)
        except (OSError, RuntimeError, ValueError) as e:
            raise RunError("failed", f"base checkpoint: {e}") from e
        base_shape = ModelShape.model_validate(base["shape"])
        if base_shape != spec.shape:
            raise RunError("failed", f"base checkpoint shape {base_shape} differs from the spec's")
        model = Transformer(base_shape, MupSpec.model_validate(base["mup"]))  # the base's muP defines its function
        model.load_state_dict(base["model"])
        apply_lora(model, spec.lora.rank, spec.lora.alpha)
        return model

    def _build_fast_forward(self) -> FastForward | None:
        lora = self.spec.lora
        if lora is None or not lora.fast_forward:
            return None
        try:
            x, y = self.batches.tiny_set(lora.ff_val_examples, self.spec.eval.batches)
        except ValueError as e:
            raise RunError("failed", f"fast forward: {e}") from e

        def tiny_loss() -> float:
            # Each rank runs its share; the loss and the count of tokens run are summed over all ranks, so every
            # rank takes the same accept/stop decision and the FLOPs are those of the passes that ran.
            loss, tokens = self._loss_and_tokens(
                [(x[i:i + self.micro], y[i:i + self.micro]) for i in range(0, len(x), self.micro)])
            self.ff_flops += tokens * self.forward_fpt
            return loss

        return FastForward(lora_parameters(self.model), tiny_loss, interval=lora.ff_interval, burn_in=lora.ff_burn_in)

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        ff = self.fast_forward
        return {
            "version": 1, "fingerprint": lineage.spec_fingerprint(self.spec), "step": self.step,
            # What a branch compares its own schedule against (also inside the fingerprint, stated plainly).
            "total_steps": self.total_steps, "lr": self.spec.optimizer.lr,
            "schedule": self.spec.schedule.model_dump(mode="json"),
            "shape": self.spec.shape.model_dump(mode="json"), "mup": self._model_mup().model_dump(mode="json"),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "history": [asdict(p) for p in self.history], "best": asdict(self.best) if self.best else None,
            "first_loss": self.first_loss, "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "train_time": self.train_time,
            "elapsed": self.elapsed(), "eval_flops": self.eval_flops, "ff_flops": self.ff_flops,
            "ff": {"evaluations": ff.evaluations, "stages": [asdict(s) for s in ff.stages]} if ff else None,
            "resumed_from": self.resumed_from, "micro_batch_size": self.micro,
            "inherited": [self.inherited_steps, self.inherited_flops],
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None},
        }

    def _model_mup(self) -> MupSpec:
        return self.model.mup

    def save_checkpoint(self, name: str = ckpt.CHECKPOINT) -> None:
        if self.info.is_main:
            ckpt.save_atomic(self._state(), self.out / name)
        distributed.barrier(self.info)

    def _resume(self) -> None:
        """Continue this run's own checkpoint, an earlier leg's or a parent's named one (see ``lineage``)."""
        try:
            source = lineage.resume_source(self.spec, self.out)
        except FileNotFoundError as e:
            raise RunError("failed", str(e)) from e
        if source is None:
            return
        path, kind = source
        state = ckpt.load(path, map_location=self.device)
        reason = lineage.incompatibility(self.spec, state, path, kind)
        if reason:
            raise RunError("failed", reason)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The spec's LR multipliers are authoritative; the saved groups hold the same ones.
        self.step = int(state["step"])
        self.history = [EvalPoint(**p) for p in state["history"]]
        self.best = EvalPoint(**state["best"]) if state["best"] else None
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]
        self.first_loss = state["first_loss"]
        self.train_time, self.prior_elapsed = state["train_time"], state["elapsed"]
        self.eval_flops, self.ff_flops = state["eval_flops"], state["ff_flops"]
        if self.fast_forward and state["ff"]:
            from flopwise_trainer.fast_forward import StageReport

            self.fast_forward.evaluations = state["ff"]["evaluations"]
            self.fast_forward.stages = [StageReport(**s) for s in state["ff"]["stages"]]
        self.resumed_from = [*state["resumed_from"], self.step]
        self.inherited_steps, self.inherited_flops = state.get("inherited", [0, 0.0])
        if kind != "own":  # this leg reports what it trains itself: the earlier leg was charged for its part
            self.inherited_steps, self.inherited_flops = self.step, self.train_flops()
            self.train_time = self.prior_elapsed = self.eval_flops = 0.0
        if kind == "branch":  # its curve is its own evaluations (the parent's used the parent's eval settings)
            self.history, self.best = [], None
            self.loss_sum, self.loss_count = 0.0, 0
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    # ---------------------------------------------------------------- the loop
    def elapsed(self) -> float:
        return self.prior_elapsed + time.perf_counter() - self.t0

    @property
    def tokens(self) -> int:
        return self.step * self.spec.tokens_per_step

    def train_flops(self) -> float:
        return self.train_fpt * self.tokens + self.ff_flops

    def run(self) -> None:
        self.report_progress(force=True)
        for step in range(self.step, self.stop_step):
            if _stop.requested:  # SIGTERM (pod deletion, eviction, cancellation): keep the work, report, exit
                self.save_checkpoint()
                raise RunError("failed", f"terminated by SIGTERM at step {self.step} of {self.total_steps} "
                               "(checkpointed: a rerun resumes from there)")
            self.advance(step)
            if self.step in self.eval_at:
                self.evaluate()
            self.report_progress()
            # Checkpoint every `checkpoint_every_steps`, else at each evaluation; always at the end.
            every = self.spec.eval.checkpoint_every_steps
            due = self.step % every == 0 if every else self.step in self.eval_at
            if due or self.step == self.stop_step:
                self.save_checkpoint()
            if self.step in self.save_at:
                self.save_checkpoint(ckpt.step_checkpoint_name(self.step))

    def report_progress(self, *, force: bool = False) -> None:
        """Rewrite progress.json at most once per PROGRESS_INTERVAL_S (and at evaluations): one small atomic
        write, negligible next to a step."""
        now = time.perf_counter()
        if self.rate_origin is None and self.step > self.start_step:
            self.rate_origin = (self.step, now)  # the first step includes warm-up costs: the rate starts after it
        evaluated = bool(self.history) and self.history[-1].step == self.step
        if not self.info.is_main or not (force or evaluated or now - self.progress_written >= PROGRESS_INTERVAL_S):
            return
        self.progress_written = now
        origin_step, origin_time = self.rate_origin or (self.step, now)
        rate = (self.step - origin_step) / (now - origin_time) if self.step > origin_step else 0.0
        latest = self.history[-1] if self.history else None
        train_loss = self.loss_sum / self.loss_count if self.loss_count else (latest.train_loss if latest else None)
        write_progress(RunProgress(
            run_id=self.spec.run_id, step=self.step, stop_step=self.stop_step, start_step=self.start_step,
            tokens=self.tokens, steps_per_s=rate, tokens_per_s=rate * self.spec.tokens_per_step,
            train_loss=train_loss, val_loss=latest.val_loss if latest else None, updated_at=time.time()), self.out)

    def advance(self, step: int) -> float:
        """Optimiser step ``step`` (0-based), then a Fast Forward stage if one is due; returns the train loss."""
        self.lr = lr_at(step, self.total_steps, self.spec.optimizer.lr, self.spec.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group["lr_mult"]
        if self.fast_forward:
            self.fast_forward.before_step(step)
        t = time.perf_counter()
        loss = self._train_step(step, poison=self.nan_step == step + 1)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.train_time += time.perf_counter() - t
        if not math.isfinite(loss):
            raise RunError("diverged", f"non-finite training loss ({loss}) at step {step + 1}")
        if self.first_loss is None:
            self.first_loss = loss
        # A loss far above both chance level and where the run started has blown up even if still finite.
        limit = max(DIVERGENCE_FACTOR * math.log(self.spec.shape.vocab_size), 2.0 * self.first_loss)
        if loss > limit:
            raise RunError("diverged", f"training loss {loss:.4g} at step {step + 1} exceeds {limit:.4g}")
        self.step = step + 1
        self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
        if self.fast_forward:
            self.fast_forward.after_step(self.step)
        return loss

    def _train_step(self, step: int, poison: bool = False) -> float:
        """One optimiser step over this rank's micro-batches; returns the global mean loss."""
        while True:
            try:
                return self._accumulate(step, poison)
            except torch.cuda.OutOfMemoryError:
                if self.micro == 1:
                    raise
                self.micro = max(1, self.micro // 2)  # accumulate over more, smaller micro-batches
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()

    def _accumulate(self, step: int, poison: bool) -> float:
        micro_batches = self.batches.train_step(step, self.micro)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for i, (x, y) in enumerate(micro_batches):
            with distributed.no_sync(self.train_module, i < len(micro_batches) - 1), self.autocast:
                _, loss = self.train_module(x, y)
            if poison:
                loss = loss * float("nan")
            share = len(x) / self.per_rank
            (loss * share if share != 1.0 else loss).backward()
            total += loss.detach() * len(x)
        mean = distributed.all_reduce_mean(total / self.per_rank, self.info)
        value = float(mean)
        if math.isfinite(value):
            if self.spec.optimizer.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.trainable, self.spec.optimizer.grad_clip, foreach=True)
            self.optimizer.step()
        return value

    def _mean_loss(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        return self._loss_and_tokens(batches)[0]

    @torch.no_grad()
    def _loss_and_tokens(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, int]:
        """Mean loss over every rank's ``batches`` and the number of tokens all ranks ran (identical on all ranks)."""
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros(2, device=self.device, dtype=torch.float64)
        for x, y in batches:
            with self.autocast:
                _, loss = self.model(x, y)
            total[0] += loss.double() * y.numel()
            total[1] += y.numel()
        self.model.train(was_training)
        total = distributed.all_reduce_sum(total, self.info)
        return float(total[0] / total[1]), int(total[1])

    def evaluate(self) -> EvalPoint:
        spec = self.spec
        # `eval.batches` batches of the run's global batch size, fixed windows, in micro-batch chunks.
        batches = self.batches.val_batches(spec.eval.batches, self.micro)
        val_loss = self._mean_loss(batches)
        self.eval_flops += spec.eval.batches * spec.tokens_per_step * self.forward_fpt
        train_loss = self.loss_sum / self.loss_count if self.loss_count else None
        self.loss_sum, self.loss_count = 0.0, 0
        point = EvalPoint(step=self.step, tokens=self.tokens, train_loss=train_loss, val_loss=val_loss, lr=self.lr,
                          elapsed_s=round(self.elapsed(), 3), flops=self.train_flops(),
                          flops_6nd=6.0 * spec.shape.param_count() * self.tokens)
        self.history.append(point)
        if self.info.is_main:
            print(f"step {point.step}/{self.total_steps} tokens {point.tokens} train {train_loss} "
                  f"val {val_loss:.4f} lr {self.lr:.3g}", flush=True)
        if not math.isfinite(val_loss):
            raise RunError("diverged", f"non-finite validation loss ({val_loss}) at step {self.step}")
        if self.best is None or val_loss < self.best.val_loss:
            self.best = point
            if self.info.is_main:  # retrospective selection: the best weights so far, beside the latest
                ckpt.save_atomic({"model": self.model.state_dict(), "shape": spec.shape.model_dump(mode="json"),
                                  "mup": self._model_mup().model_dump(mode="json"), "step": self.step,
                                  "val_loss": val_loss}, self.out / ckpt.BEST)
        return point


# -------------------------------------------------------------------- one run, start to result
def summarize(trainer: Trainer | None, spec: RunSpec, status: RunStatus, reason: str, device: str,
              elapsed: float) -> tuple[RunSummary, dict]:
    """The compact summary and the full details of a run (of whatever state it reached)."""
    summary = RunSummary(run_id=spec.run_id, status=status, exit_reason=reason[:512], params=spec.shape.param_count(),
                         device=device, elapsed_s=round(elapsed, 3))
    details: dict = {"spec": spec.model_dump(mode="json", by_alias=True), "plannedSteps": spec.total_steps,
                     "plannedTokens": spec.total_steps * spec.tokens_per_step, "plannedFlops": spec.planned_flops()}
    if trainer is None:
        return summary, details
    # A continuation reports its own leg (tokens, steps, FLOPs); its curve keeps the whole run's token axis.
    leg_steps = trainer.step - trainer.inherited_steps
    summary.tokens, summary.steps = leg_steps * spec.tokens_per_step, leg_steps
    summary.flops = trainer.train_flops() - trainer.inherited_flops
    summary.flops_6nd = 6.0 * spec.shape.param_count() * summary.tokens
    summary.curve = [CurvePoint(tokens=p.tokens, val_loss=p.val_loss, train_loss=p.train_loss)
                     for p in trainer.history]
    if trainer.history:
        summary.final_val_loss = trainer.history[-1].val_loss
    if trainer.best is not None:
        summary.best_val_loss, summary.best_step = trainer.best.val_loss, trainer.best.step
        summary.best_tokens = trainer.best.tokens
    if trainer.train_time > 0:
        summary.tokens_per_s = summary.tokens / trainer.train_time
        peak, source = trainer.peak
        if peak:
            summary.mfu = trainer.train_fpt * summary.tokens_per_s / (peak * trainer.info.world_size)
        details["peakFlops"], details["peakFlopsSource"] = peak, source
    ff = trainer.fast_forward
    details.update({
        "history": [asdict(p) for p in trainer.history], "evalFlops": trainer.eval_flops,
        "trainFlopsPerToken": trainer.train_fpt, "forwardFlopsPerToken": trainer.forward_fpt,
        "loraParams": trainer.lora_params, "microBatchSize": trainer.micro, "worldSize": trainer.info.world_size,
        "resumedFrom": trainer.resumed_from, "trainTimeS": trainer.train_time,
        "fastForward": None if ff is None else {
            "flops": trainer.ff_flops, "evaluations": ff.evaluations, "acceptedSteps": ff.accepted_steps,
            "stages": [asdict(s) for s in ff.stages]},
    })
    return summary, details


class _StopFlag:
    """Set by SIGTERM; the loop checks it between steps so a stop never tears a step or a checkpoint."""

    requested = False

    @classmethod
    def install(cls) -> None:
        cls.requested = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: setattr(cls, "requested", True))


_stop = _StopFlag


def execute(spec: RunSpec, termination_log: str | None = None) -> RunSummary:
    """Train one run and write its results; never raises for a run-level failure (the status says it).
    SIGTERM ends it at the next step boundary with a checkpoint and a failure summary of what it consumed."""
    _stop.install()
    t0 = time.perf_counter()
    trainer: Trainer | None = None
    status: RunStatus = "succeeded"
    reason = ""
    info, name = distributed.DistInfo(), "unknown"
    try:
        with distributed.session(spec.device) as (info, device):
            name = device_name(device)
            trainer = Trainer(spec, info, device)
            trainer.peak = peak_flops(device, spec.peak_flops)
            trainer.run()
    except RunError as e:
        status, reason = e.status, e.reason
    except Exception as e:  # any crash is a failed run with a reason, never a silent pod restart loop
        status, reason = "failed", f"{type(e).__name__}: {e}"
    elapsed = trainer.elapsed() if trainer is not None else time.perf_counter() - t0
    summary, details = summarize(trainer, spec, status, reason, name, elapsed)
    if info.is_main:
        write_results(summary, spec.output_dir, details, termination_log)
    return summary
