"""The campaign plan: what flopwise will do with a budget, as a pure function of the spec.

Order of decisions, and why:
1. The binding budget (FLOPs, or dollars through the pool) minus a margin that is never planned.
2. The target: the compute-optimal model for the *final* share under the planning law (Chinchilla's until the
   campaign has fitted its own), rounded to a concrete shape; data-limited if the data cannot feed it.
3. The ladder: ≥ 5 sizes spread log-uniformly below the target, each at its own compute-optimal tokens, the
   largest as big as the ladder share allows (the fit extrapolates from it, so bigger is better), plus k − 1
   seed replicas of the smallest rung (the seed-noise floor of the backtest).
4. Round 1: a learning-rate grid (× warmups: the one pair known to interact) of short runs at a proxy size, as
   large as the share allows, and the same LR grid at narrower proxies (same depth, tokens and batch) to check
   that the best LR transfers across widths. One hyperparameter at a time otherwise; never a full factorial.
5. Round 2: a few full-length runs at the same proxy, filled with Round 1's best points at run time.
Everything is planned in exact FLOPs (`ModelShape.flops_per_token`), so what is planned is what runs cost.
Each study's runs and FLOPs are listed in `Plan.studies`; what the budget forced out is in `Plan.dropped`.
"""

from __future__ import annotations

import math

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import PhasePlan, Plan, PlannedRun, StudyPlan, TargetPlan
from flopwise.contract import ModelShape
from flopwise.planning.budget import Pool, binding_budget
from flopwise.planning.laws import AllocationRule, ScalingLaw, allocation_rule, tokens_for_params
from flopwise.planning.shapes import ShapeRules, make_shape, shape_for_params, smallest_shape

MIN_STEPS = 32  # a run shorter than this says nothing about its schedule: shrink its batch instead
BISECTION_ITERATIONS = 60
WIDTH_RATIO = 4  # Round 1's transfer check: each narrower proxy is this many times narrower


def largest_within(cost, allotted: float, low: float, high: float) -> float:
    """The largest size in [low, high] whose ``cost(size)`` fits ``allotted`` (``cost(low)`` must fit), by
    bisection in log space to 0.1%: costs grow with size, up to shape rounding."""
    lo, hi = math.log(low), math.log(high)
    if cost(high) <= allotted:
        return high
    for _ in range(BISECTION_ITERATIONS):
        if hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(math.exp(mid)) <= allotted else (lo, mid)
    return math.exp(lo)


class PlanError(ValueError):
    """A budget or spec that cannot be planned; `field` names what to change."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def pool_of(spec: TrainingCampaignSpec) -> Pool:
    return Pool(peak_flops=spec.gpu_pool.peak, mfu=spec.gpu_pool.expected_mfu,
                price_per_gpu_hour=spec.gpu_pool.price_per_gpu_hour)


def batch_for(spec: TrainingCampaignSpec, shape: ModelShape, tokens: float) -> int:
    """Sequences per step: the spec's batch, shrunk so that short runs still take ≥ MIN_STEPS steps."""
    full = max(1, spec.tuning.batch_tokens // shape.seq_len)
    fits = max(1, int(tokens // (shape.seq_len * MIN_STEPS)))
    return max(1, min(full, fits))


class _Planner:
    """Holds what every phase needs (pool, shape rules, allocation rule, data limit) for one plan."""

    def __init__(self, spec: TrainingCampaignSpec, rule: AllocationRule):
        self.spec = spec
        self.rule = rule
        self.pool = pool_of(spec)
        self.rules = ShapeRules.from_family(spec.model)
        self.data_tokens = spec.dataset.tokens * spec.dataset.max_epochs if spec.dataset.tokens else math.inf
        self.warnings: list[str] = []
        self.dropped: list[str] = []
        self.studies: list[StudyPlan] = []

    def study(self, name: str, phase: str, varies: str, runs: list[PlannedRun]) -> None:
        if runs:
            self.studies.append(StudyPlan(name=name, phase=phase, varies=varies, runs=len(runs),
                                          flops=sum(r.flops for r in runs)))

    # -- one run ------------------------------------------------------------------------------------
    def run(self, run_id: str, role: str, shape: ModelShape, tokens: float, *, lr: float | None = None,
            warmup: float | None = None, max_flops: float = math.inf, seed_offset: int = 0) -> PlannedRun:
        """A run of whole steps: ``tokens`` rounded up, or down where that would pass ``max_flops``."""
        batch = batch_for(self.spec, shape, tokens)
        step_flops = shape.flops_per_token() * batch * shape.seq_len
        steps = max(1, math.ceil(tokens / (batch * shape.seq_len)))
        if steps * step_flops > max_flops:
            steps = max(1, math.floor(max_flops / step_flops))
        whole_tokens = steps * batch * shape.seq_len
        flops = shape.flops_per_token() * whole_tokens
        return PlannedRun(run_id=run_id, role=role, shape=shape, params=shape.param_count(), tokens=whole_tokens,
                          batch_size=batch, steps=steps, flops=flops, gpu_hours=self.pool.gpu_hours(flops),
                          usd=self.pool.usd(flops), learning_rate=lr, warmup_fraction=warmup, seed_offset=seed_offset)

    def optimal_tokens(self, shape: ModelShape) -> float:
        """Compute-optimal tokens for a shape, capped by the data that exists."""
        tokens = tokens_for_params(self.rule, shape.param_count())
        return min(tokens, self.data_tokens)

    def shape(self, params: float) -> ModelShape:
        return shape_for_params(self.rules, max(params, 1.0))

    # -- phases -------------------------------------------------------------------------------------
    def target(self, flops: float) -> TargetPlan:
        optimum = self.rule.allocate(flops)
        params, data_limited = optimum.params, False
        if optimum.tokens > self.data_tokens:
            data_limited = True
            params = flops / (6.0 * self.data_tokens)
            self.warnings.append(
                f"data-limited: the law wants {optimum.tokens:.3g} tokens but only {self.data_tokens:.3g} exist "
                f"(dataset.tokens × maxEpochs); the final budget goes to a larger model ({params:.3g} params) instead"
            )
        shape = self.shape(params)
        tokens = max(1, int(min(flops / shape.flops_per_token(), self.data_tokens)))
        exact = shape.flops_per_token() * tokens
        loss = self.rule.loss(shape.param_count(), tokens) if isinstance(self.rule, ScalingLaw) else None
        return TargetPlan(law=self.rule.name, flops=exact, params_optimal=optimum.params,
                          tokens_optimal=optimum.tokens, shape=shape, params=shape.param_count(), tokens=tokens,
                          tokens_per_param=tokens / shape.param_count(), predicted_loss=loss,
                          gpu_hours=self.pool.gpu_hours(exact), usd=self.pool.usd(exact), data_limited=data_limited)

    def ladder_runs(self, largest: float) -> list[PlannedRun]:
        cfg = self.spec.ladder
        smallest = max(float(cfg.min_params), largest / cfg.spread)
        shapes: dict[tuple[int, int], ModelShape] = {}
        for i in range(cfg.sizes):
            params = smallest * (largest / smallest) ** (i / (cfg.sizes - 1)) if largest > smallest else smallest
            shape = self.shape(params)
            shapes.setdefault((shape.n_layer, shape.d_model), shape)
        ordered = sorted(shapes.values(), key=ModelShape.param_count)
        return [self.run(f"ladder-{i:02d}", "ladder", s, self.optimal_tokens(s)) for i, s in enumerate(ordered)]

    def ladder(self, allotted: float, target_params: int) -> PhasePlan:
        cfg = self.spec.ladder
        floor = max(float(cfg.min_params), float(smallest_shape(self.rules).param_count()))
        ceiling = target_params / 2.0

        replicas = cfg.seeds - 1

        def cost(largest: float, replicas: int = 0) -> float:
            runs = self.ladder_runs(largest)
            return sum(r.flops for r in runs) + replicas * runs[0].flops if len(runs) >= cfg.sizes else math.inf

        # The smallest ladder with `sizes` distinct shapes: tiny widths are coarse, so neighbouring sizes can
        # round to one shape; widen the span until they do not.
        low = floor * 2.0
        while cost(low) == math.inf and low <= ceiling:
            low *= 1.25
        if low > ceiling:
            raise PlanError("spec.budget", f"the target model ({target_params:.3g} params) is too small for a ladder "
                            f"of {cfg.sizes} distinct sizes above {floor:.3g} params: raise the budget, or lower "
                            "ladder.minParams, ladder.sizes or model.widthMultiple")
        if cost(low) > allotted:
            need = cost(low) / max(self.spec.budget.split.ladder, 1e-12) / (1 - self.spec.budget.margin)
            raise PlanError("spec.budget", f"too small for even the smallest ladder: {cfg.sizes} sizes from "
                            f"{floor:.3g} params need {cost(low):.3g} FLOPs but the ladder share is "
                            f"{allotted:.3g}; raise the budget to at least {need:.3g} FLOPs, or lower "
                            "ladder.minParams or ladder.sizes")
        if replicas and cost(low, replicas) > allotted:
            self.dropped.append(f"ladder: {replicas} seed replicas of the smallest rung do not fit the ladder share; "
                                "no seed-noise floor (raise budget.split.ladder or lower ladder.seeds)")
            replicas = 0
        # The biggest ladder (with its seed replicas) whose exact FLOPs fit the share.
        runs = self.ladder_runs(largest_within(lambda x: cost(x, replicas), allotted, low, max(low, ceiling)))
        notes = [f"{len(runs)} sizes from {runs[0].params:,} to {runs[-1].params:,} params "
                 f"({runs[-1].params / runs[0].params:.1f}× span), each at its compute-optimal tokens"]
        self.study("scaling ladder", "ladder", "size, at compute-optimal tokens", runs)
        seeds = [self.run(f"seed-{i:02d}", "seed", runs[0].shape, runs[0].tokens, seed_offset=i)
                 for i in range(1, replicas + 1)]
        if seeds:
            notes.append(f"seed-noise floor: the smallest rung ({runs[0].params:,} params) rerun with {replicas} "
                         f"other seeds, {sum(r.flops for r in seeds):.3g} FLOPs")
            self.study("seed-noise floor", "ladder", "seed", seeds)
        if any(r.tokens >= self.data_tokens for r in runs):
            self.warnings.append("data-limited ladder: some rungs are capped by the tokens that exist")
        return self._phase("ladder", allotted, runs + seeds, notes)

    def learning_rates(self, points: int) -> list[float]:
        tuning = self.spec.tuning
        half = (points - 1) / 2
        return [tuning.base_learning_rate * tuning.lr_grid_factor ** (i - half) for i in range(points)]

    def narrower(self, shape: ModelShape, count: int) -> list[ModelShape]:
        """Up to ``count`` proxies of the same depth (muP transfers across width at fixed depth), each a quarter
        as wide as the previous, or as narrow as the family allows: the wider the span, the plainer a drift of the
        best LR is against one grid step (under SP it falls about as 1/width); fewer when no narrower width exists."""
        step = self.spec.model.width_multiple
        out: list[ModelShape] = []
        width = shape.d_model
        narrowest = max(step, -(-8 // step) * step)  # ModelShape needs dModel ≥ 8
        for _ in range(count):
            width = max(narrowest, (width // WIDTH_RATIO) // step * step)
            if width >= (out[-1].d_model if out else shape.d_model):
                break
            out.append(make_shape(self.rules, shape.n_layer, width))
        return out

    def round1(self, allotted: float, ladder: PhasePlan) -> tuple[PhasePlan, ModelShape | None]:
        tuning = self.spec.tuning
        rungs = [r for r in ladder.runs if r.role == "ladder"]
        largest, smallest = rungs[-1].params, rungs[0].params
        grids = [(tuning.lr_grid_points, list(tuning.warmup_fractions))]
        if len(tuning.warmup_fractions) > 1:
            grids.append((tuning.lr_grid_points, list(tuning.warmup_fractions[:1])))
        if tuning.lr_grid_points > 3:
            grids.append((3, list(tuning.warmup_fractions[:1])))
        # The transfer check comes first (the bet on the target's LR), then the richer grid.
        designs = [(lr_points, warmups, widths) for widths in range(tuning.proxy_widths, 0, -1)
                   for lr_points, warmups in grids]
        for lr_points, warmups, widths in designs:
            grid = [(lr, w) for w in warmups for lr in self.learning_rates(lr_points)]

            def runs_at(params: float, grid=grid, lr_points=lr_points, widths=widths) -> list[PlannedRun]:
                shape = self.shape(params)
                tokens = tuning.round1_length_fraction * self.optimal_tokens(shape)
                runs = [self.run(f"round1-{i:02d}", "round1", shape, tokens, lr=lr, warmup=w)
                        for i, (lr, w) in enumerate(grid)]
                for narrow in self.narrower(shape, widths - 1):  # same tokens, batch and schedule; LR only
                    start = len(runs)
                    runs += [self.run(f"round1-{start + i:02d}", "round1", narrow, tokens, lr=lr, warmup=grid[0][1])
                             for i, lr in enumerate(self.learning_rates(lr_points))]
                return runs

            def cost(params: float, runs_at=runs_at) -> float:
                return sum(r.flops for r in runs_at(params))

            low = smallest  # the narrowest proxy that still has `widths - 1` narrower siblings
            while len(self.narrower(self.shape(low), widths - 1)) < widths - 1 and low <= largest:
                low *= 1.25
            if low > largest or cost(low) > allotted:
                continue
            runs = runs_at(largest_within(cost, allotted, low, max(low, largest)))
            primary = runs[0].shape
            main = [r for r in runs if r.shape == primary]
            checks = [r for r in runs if r.shape != primary]
            built = 1 + len({r.shape.d_model for r in checks})
            rates = ", ".join(f"{lr:.3g}" for lr in self.learning_rates(lr_points))
            notes = [f"proxy {runs[0].params:,} params; learning rates {rates}"
                     f" × warmup {', '.join(f'{w:g}' for w in warmups)}; each run "
                     f"{tuning.round1_length_fraction:g} of a compute-optimal length"]
            varies = "learning rate × warmup" if len(warmups) > 1 else "learning rate"
            self.study(f"Round 1 at the proxy (width {primary.d_model})", "round1", varies, main)
            for width in sorted({r.shape.d_model for r in checks}, reverse=True):
                at = [r for r in checks if r.shape.d_model == width]
                notes.append(f"transfer check: the same {lr_points} learning rates at width {width} "
                             f"({at[0].params:,} params, depth {at[0].shape.n_layer}, warmup {warmups[0]:g}), "
                             f"{len(at)} runs, {sum(r.flops for r in at):.3g} FLOPs")
                self.study(f"LR transfer check (width {width})", "round1", "learning rate", at)
            full = tuning.lr_grid_points * len(tuning.warmup_fractions) * tuning.proxy_widths
            notes.append(f"search design: LR{' × warmup' if len(warmups) > 1 else ''} at the proxy, LR alone at "
                         f"narrower widths: {len(runs)} runs (a full factorial of {tuning.lr_grid_points} LRs × "
                         f"{len(tuning.warmup_fractions)} warmups × {tuning.proxy_widths} widths would be {full}); "
                         "batch size is fixed (tuning.batchTokens), not studied")
            if (lr_points, warmups) != grids[0]:
                self.dropped.append(f"round1: the full grid ({grids[0][0]} learning rates × "
                                    f"{len(grids[0][1])} warmups) does not fit its share; planned "
                                    f"{lr_points} × {len(warmups)} instead")
            if built < tuning.proxy_widths:
                self.dropped.append(f"round1: {tuning.proxy_widths} proxy widths asked, {built} planned (the share "
                                    "cannot pay for more, or the family has no narrower width below a proxy it can "
                                    "pay for)" + ("; the LR transfer check is skipped" if built < 2 else ""))
            return self._phase("round1", allotted, runs, notes), runs[0].shape
        self.dropped.append("round1: even 3 short runs at the smallest ladder size exceed its share; Round 1 "
                            "is skipped and the base learning rate is used (raise budget.split.round1)")
        return self._phase("round1", allotted, [], []), None

    def round2(self, allotted: float, proxy: ModelShape | None) -> PhasePlan:
        tuning = self.spec.tuning
        if proxy is None or tuning.round2_runs == 0:
            if tuning.round2_runs:
                self.dropped.append("round2: skipped because Round 1 is")
            return self._phase("round2", allotted, [], [])
        full = self.optimal_tokens(proxy)
        shortest = 2 * tuning.round1_length_fraction * full
        fraction = tuning.round2_length_fraction
        for runs_count in range(tuning.round2_runs, 0, -1):
            # Shorten (never below twice Round 1's length) before dropping runs.
            runs = [self.run(f"round2-{i:02d}", "round2", proxy, fraction * full, max_flops=allotted / runs_count)
                    for i in range(runs_count)]
            if runs[0].tokens < shortest:
                continue
            plural = "s" if runs_count > 1 else ""
            notes = [f"{runs_count} run{plural} of {runs[0].tokens:,} tokens at the Round-1 proxy, using the best "
                     f"Round-1 points; schedule rule: {tuning.schedule}"]
            if runs_count < tuning.round2_runs or runs[0].tokens < fraction * full * 0.99:
                self.dropped.append(f"round2: {tuning.round2_runs} runs of {fraction:g}× full length do not fit; "
                                    f"planned {runs_count} of {runs[0].tokens:,} tokens")
            return self._phase("round2", allotted, runs, notes)
        self.dropped.append("round2: no run of at least twice Round 1's length fits its share; skipped")
        return self._phase("round2", allotted, [], [])

    def final(self, allotted: float, target: TargetPlan) -> PhasePlan:
        if not self.spec.final.enabled:
            return self._phase("final", allotted, [], ["final.enabled is false: the target is a recommendation"])
        run = self.run("final-00", "final", target.shape, target.tokens, max_flops=allotted)
        notes = []
        if self.spec.final.partial_check:
            stop = partial_stop_step(run.steps, self.spec.final.partial_fraction)
            notes.append(f"partial check: the final run stops at step {stop:,} of {run.steps:,} "
                         f"({self.spec.final.partial_fraction:g} of its tokens, on the full run's schedule), the law "
                         "is refitted with its curve, then it resumes from its checkpoint: no extra FLOPs")
        return self._phase("final", allotted, [run], notes)

    def _phase(self, name: str, allotted: float, runs: list[PlannedRun], notes: list[str]) -> PhasePlan:
        share = getattr(self.spec.budget.split, name)
        flops = sum(r.flops for r in runs)
        return PhasePlan(share=share, allotted_flops=allotted, flops=flops, usd=sum(r.usd for r in runs),
                         runs=runs, notes=notes)


def partial_stop_step(steps: int, fraction: float) -> int:
    """The step a partial final leg stops at: ``fraction`` of the run, at least one step and one step short."""
    return min(max(1, round(fraction * steps)), max(1, steps - 1))


def plan_campaign(spec: TrainingCampaignSpec, law: ScalingLaw | None = None) -> Plan:
    """Plan a campaign under ``spec.law`` or, once the campaign has fitted one, under ``law``."""
    rule = law if law is not None else allocation_rule(spec.law)
    planner = _Planner(spec, rule)
    budget_flops, binding = binding_budget(planner.pool, spec.budget.flops, spec.budget.usd)
    usable = budget_flops * (1.0 - spec.budget.margin)
    split = spec.budget.split
    target = planner.target(split.final * usable if split.final > 0 else usable)
    ladder = planner.ladder(split.ladder * usable, target.params)
    round1, proxy = planner.round1(split.round1 * usable, ladder)
    round2 = planner.round2(split.round2 * usable, proxy)
    final = planner.final(split.final * usable, target)
    phases = (ladder, round1, round2, final)
    planned = sum(p.flops for p in phases)
    if planned > usable * (1 + 1e-9):  # a bug, never a user error: every phase is planned inside its share
        raise AssertionError(f"plan uses {planned:.6g} FLOPs of {usable:.6g}")
    priced = spec.gpu_pool.price_per_gpu_hour > 0
    return Plan(law=rule.name, budget_flops=budget_flops, budget_usd=planner.pool.usd(budget_flops) if priced else None,
                binding=binding, margin_flops=budget_flops - usable, peak_flops_per_gpu=planner.pool.peak_flops,
                mfu=planner.pool.mfu, target=target, ladder=ladder, round1=round1, round2=round2, final=final,
                planned_flops=planned, planned_usd=sum(p.usd for p in phases), warnings=planner.warnings,
                dropped=planner.dropped, studies=planner.studies)
