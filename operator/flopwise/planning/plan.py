"""The campaign plan: what flopwise will do with a budget, as a pure function of the spec.

Order of decisions, and why:
1. The binding budget (FLOPs, or dollars through the pool) minus a margin that is never planned.
2. The target: the compute-optimal model for the *final* share under the planning law (Chinchilla's until the
   campaign has fitted its own), rounded to a concrete shape; data-limited if the data cannot feed it.
3. The ladder (:mod:`.ladder`): a design that puts several annealed final losses at each size — WSD trunks with
   cooldown branches, or IsoFLOP profiles — as large as the ladder's share allows, every run at least
   ``ladder.minSteps`` steps, plus k − 1 seed replicas of its cheapest run (the seed-noise floor).
4. Round 1: a learning-rate grid (× warmups: the one pair known to interact) of short runs at a proxy size, as
   large as the share allows, and the same LR grid at narrower proxies (same depth, tokens and batch) to check
   that the best LR transfers across widths. One hyperparameter at a time otherwise; never a full factorial.
5. Round 2: a few full-length runs at the same proxy, filled with Round 1's best points at run time.
The engine runs Round 1 and Round 2 *before* the ladder, so that every rung trains at the learning rate the
target will use (the law must describe tuned models); the plan is made up front all the same.
Everything is planned in exact FLOPs (`ModelShape.flops_per_token`), so what is planned is what runs cost.
Each study's runs and FLOPs are listed in `Plan.studies`; what the budget forced out is in `Plan.dropped`.
"""

from __future__ import annotations

import math

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import PhasePlan, Plan, PlannedRun, StudyPlan, TargetPlan
from flopwise.contract import ModelShape
from flopwise.planning import ladder as designs
from flopwise.planning.budget import Pool, binding_budget
from flopwise.planning.ladder import largest_within
from flopwise.planning.laws import AllocationRule, ScalingLaw, allocation_rule, tokens_for_params
from flopwise.planning.priors import loss_basis
from flopwise.planning.shapes import ShapeRules, make_shape, shape_for_params, smallest_shape

MIN_STEPS = 32  # a tuning run shorter than this says nothing about its schedule: shrink its batch instead
WIDTH_RATIO = 4  # Round 1's transfer check: each narrower proxy is this many times narrower


class PlanError(ValueError):
    """A budget or spec that cannot be planned; `field` names what to change."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def pool_of(spec: TrainingCampaignSpec) -> Pool:
    return Pool(peak_flops=spec.gpu_pool.peak, mfu=spec.gpu_pool.expected_mfu,
                price_per_gpu_hour=spec.gpu_pool.price_per_gpu_hour)


def batch_for(spec: TrainingCampaignSpec, shape: ModelShape, tokens: float, min_steps: int = MIN_STEPS) -> int:
    """Sequences per step: the spec's batch, shrunk so that short runs still take ≥ ``min_steps`` steps."""
    full = max(1, spec.tuning.batch_tokens // shape.seq_len)
    fits = max(1, int(tokens // (shape.seq_len * min_steps)))
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
            warmup: float | None = None, max_flops: float = math.inf, seed_offset: int = 0, batch: int | None = None,
            start_step: int = 0, **extra: object) -> PlannedRun:
        """A run of whole steps: ``tokens`` (its whole schedule's) rounded up, or down where that would pass
        ``max_flops``. A branch (``start_step`` > 0) trains and is charged only the steps after it."""
        batch = batch or batch_for(self.spec, shape, tokens)
        step_flops = shape.flops_per_token() * batch * shape.seq_len
        steps = max(1, math.ceil(tokens / (batch * shape.seq_len)))
        if (steps - start_step) * step_flops > max_flops:
            steps = start_step + max(1, math.floor(max_flops / step_flops))
        leg_tokens = (steps - start_step) * batch * shape.seq_len
        flops = shape.flops_per_token() * leg_tokens
        return PlannedRun(run_id=run_id, role=role, shape=shape, params=shape.param_count(), tokens=leg_tokens,
                          batch_size=batch, steps=steps, flops=flops, gpu_hours=self.pool.gpu_hours(flops),
                          usd=self.pool.usd(flops), learning_rate=lr, warmup_fraction=warmup, seed_offset=seed_offset,
                          start_step=start_step, **extra)  # type: ignore[arg-type]

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
        # A published law's loss only where its tokenizer is the campaign's (planning/priors.py).
        basis = loss_basis(self.rule.name, self.spec.model.vocab_size) if isinstance(self.rule, ScalingLaw) else None
        loss = self.rule.loss(shape.param_count(), tokens) if basis is not None else None
        return TargetPlan(law=self.rule.name, flops=exact, params_optimal=optimum.params,
                          tokens_optimal=optimum.tokens, shape=shape, params=shape.param_count(), tokens=tokens,
                          tokens_per_param=tokens / shape.param_count(), predicted_loss=loss, loss_basis=basis,
                          gpu_hours=self.pool.gpu_hours(exact), usd=self.pool.usd(exact), data_limited=data_limited)

    def maker(self) -> designs.RunMaker:
        cfg = self.spec.ladder
        return designs.RunMaker(
            shape=self.shape, optimal_tokens=self.optimal_tokens,
            optimal_params=lambda flops: self.rule.allocate(flops).params, run=self.run,
            batch_for=lambda shape, tokens: batch_for(self.spec, shape, tokens, cfg.min_steps),
            cooldown=self.spec.tuning.decay_fraction if self.spec.tuning.schedule == "wsd" else 0.0,
            max_tokens=self.data_tokens)

    def design_runs(self, scale: float) -> list[PlannedRun]:
        """The design at ``scale``: the largest size (wsd) or the top compute level (isoflop)."""
        cfg = self.spec.ladder
        if cfg.design == "wsd":
            return designs.wsd_ladder(self.maker(), scale, cfg.sizes, cfg.spread, self.floor(), cfg.token_multiples)
        return designs.isoflop_ladder(self.maker(), scale, cfg.levels, cfg.level_ratio, cfg.sizes, cfg.spread,
                                      self.floor())

    def floor(self) -> float:
        return max(float(self.spec.ladder.min_params), float(smallest_shape(self.rules).param_count()))

    def complete(self, runs: list[PlannedRun]) -> bool:
        """The design is whole: every wsd size distinct, or every isoflop level a parabola (3 sizes or more)."""
        cfg = self.spec.ladder
        if cfg.design == "wsd":
            return designs.distinct_sizes(runs) >= cfg.sizes
        return designs.levels_with_sizes(runs, 3) >= cfg.levels

    def ladder(self, allotted: float, target_params: int, target_flops: float) -> PhasePlan:
        cfg = self.spec.ladder
        replicas = cfg.seeds - 1

        designed: dict[float, list[PlannedRun]] = {}  # scale → design: the bisection revisits its ends

        def design(scale: float) -> list[PlannedRun]:
            if scale not in designed:
                designed[scale] = self.design_runs(scale)
            return designed[scale]

        def cost(scale: float, replicas: int = 0) -> float:
            runs = design(scale)
            if not self.complete(runs):
                return math.inf
            return sum(r.flops for r in runs) + replicas * self.seed_flops(runs)

        # The smallest complete design (tiny widths are coarse: neighbouring sizes can round to one shape, and
        # sizes below the floor are left out), then the largest one the share pays for.
        if cfg.design == "wsd":
            low, ceiling = self.floor() * 2.0, target_params / 2.0
        else:
            low, ceiling = self.rule.flops_for_params(self.floor()) * 4.0, target_flops / 2.0
        while cost(low) == math.inf and low <= ceiling:
            low *= 1.25
        if low > ceiling:
            raise PlanError("spec.budget", f"the target model ({target_params:.3g} params) is too small for a "
                            f"{cfg.design} ladder above {self.floor():.3g} params: raise the budget, or lower "
                            "ladder.minParams, ladder.sizes, ladder.spread or model.widthMultiple")
        if cost(low) > allotted:
            need = cost(low) / max(self.spec.budget.split.ladder, 1e-12) / (1 - self.spec.budget.margin)
            raise PlanError("spec.budget", f"too small for even the smallest {cfg.design} ladder: it needs "
                            f"{cost(low):.3g} FLOPs but the ladder share is {allotted:.3g}; raise the budget to at "
                            f"least {need:.3g} FLOPs, or lower ladder.minParams, ladder.sizes, ladder.minSteps or "
                            "ladder.spread")
        if replicas and cost(low, replicas) > allotted:
            self.dropped.append(f"ladder: {replicas} seed replicas do not fit the ladder share; no seed-noise floor "
                                "(raise budget.split.ladder or lower ladder.seeds)")
            replicas = 0
        runs = design(largest_within(lambda x: cost(x, replicas), allotted, low, max(low, ceiling)))
        notes = self.design_notes(runs)
        self.study(f"scaling ladder ({cfg.design})", "ladder", "size × tokens" if cfg.design == "wsd"
                   else "size at fixed compute, per level", runs)
        source = designs.seed_source(runs)
        seeds = [self.run(f"seed-{i:02d}", "seed", source.shape, source.trajectory_tokens, batch=source.batch_size,
                          seed_offset=i) for i in range(1, replicas + 1)]
        if seeds:
            notes.append(f"seed-noise floor: {source.run_id}'s configuration ({source.params:,} params, "
                         f"{source.trajectory_tokens:,} tokens) rerun from scratch with {replicas} other seeds, "
                         f"{sum(r.flops for r in seeds):.3g} FLOPs")
            self.study("seed-noise floor", "ladder", "seed", seeds)
        if any(r.trajectory_tokens >= self.data_tokens for r in runs):
            self.warnings.append("data-limited ladder: some runs are capped by the tokens that exist")
        if cfg.design == "isoflop" and self.data_tokens < math.inf:
            wanted = self.spec.ladder.levels * self.spec.ladder.sizes
            if len(runs) < wanted:
                self.warnings.append(f"data-limited ladder: {wanted - len(runs)} IsoFLOP runs would need more tokens "
                                     "than exist (or fall below ladder.minParams) and are left out")
        return self._phase("ladder", allotted, runs + seeds, notes)

    def seed_flops(self, runs: list[PlannedRun]) -> float:
        source = designs.seed_source(runs)
        return source.shape.flops_per_token() * source.trajectory_tokens

    def design_notes(self, runs: list[PlannedRun]) -> list[str]:
        cfg = self.spec.ladder
        sizes = sorted({r.params for r in runs})
        steps = min(r.steps for r in runs)
        if cfg.design == "wsd":
            trunks = [r for r in runs if r.branch_of is None]
            multiples = ", ".join(f"{m:g}" for m in sorted(set(cfg.token_multiples)))
            return [f"wsd: {len(trunks)} sizes from {sizes[0]:,} to {sizes[-1]:,} params "
                    f"({sizes[-1] / sizes[0]:.1f}× span), each ending at {multiples}× its compute-optimal tokens: "
                    f"one trunk to the longest, cooldowns of {self.spec.tuning.decay_fraction:g} of their steps "
                    f"branched from it for the others; {len(runs)} annealed points, shortest run {steps} steps"]
        levels = sorted({r.level for r in runs if r.level is not None})
        top = max(r.flops for r in runs if r.level == 0)
        return [f"isoflop: {len(levels)} compute levels from {top:.3g} FLOPs down by {cfg.level_ratio:g}×, "
                f"{cfg.sizes} sizes spread {cfg.spread:g}× around the prior's optimum at each; {len(runs)} runs "
                f"from {sizes[0]:,} to {sizes[-1]:,} params, shortest {steps} steps"]

    def learning_rates(self, points: int) -> list[float]:
        tuning = self.spec.tuning
        half = (points - 1) / 2
        return [tuning.base_learning_rate * tuning.lr_grid_factor ** (i - half) for i in range(points)]

    def narrower(self, shape: ModelShape, count: int) -> list[ModelShape]:
        """Up to ``count`` proxies of the same depth (muP transfers across width at fixed depth), each a quarter
        as wide as the previous, or as narrow as the family allows: the wider the span, the narrower the interval of
        the best LR's exponent in width (under SP it falls about as 1/width); fewer when no narrower width exists."""
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
        largest, smallest = max(r.params for r in rungs), min(r.params for r in rungs)
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
        if not self.spec.final.partial_check:
            return self._phase("final", allotted, [self.run("final-00", "final", target.shape, target.tokens,
                                                            max_flops=allotted)], [])
        # The partial check's leg cools down on its own (an annealed point at the target size); the final run
        # resumes from the leg's stable-phase checkpoint, so the check costs the leg's cooldown and no more.
        fraction, cooldown = self.spec.final.partial_fraction, self.spec.tuning.decay_fraction
        main = self.run("final-00", "final", target.shape, target.tokens,
                        max_flops=allotted / (1 + fraction * cooldown))
        leg_steps, start = partial_leg_steps(main.steps, fraction, cooldown)
        leg = self.run("final-00" + PARTIAL_SUFFIX, "final", target.shape, leg_steps * main.batch_size *
                       target.shape.seq_len, batch=main.batch_size, checkpoints_at=[start])
        main = self.run("final-00", "final", target.shape, main.steps * main.batch_size * target.shape.seq_len,
                        batch=main.batch_size, start_step=start, branch_of=leg.run_id)
        extra = leg.flops + main.flops - main.shape.flops_per_token() * main.trajectory_tokens
        notes = [f"partial check: a first leg trains {leg_steps:,} of the final run's {main.steps:,} steps "
                 f"({fraction:g} of its tokens) and cools down over its last {leg_steps - start:,} (an annealed point "
                 f"at the target size), the law is refitted with it, then the final run resumes from the leg's "
                 f"checkpoint at step {start:,}: {extra:.3g} extra FLOPs"]
        return self._phase("final", allotted, [leg, main], notes)

    def _phase(self, name: str, allotted: float, runs: list[PlannedRun], notes: list[str]) -> PhasePlan:
        share = getattr(self.spec.budget.split, name)
        flops = sum(r.flops for r in runs)
        return PhasePlan(share=share, allotted_flops=allotted, flops=flops, usd=sum(r.usd for r in runs),
                         runs=runs, notes=notes)


PARTIAL_SUFFIX = "-p"  # the partial leg of a final run: `final-00-p`, branched into by `final-00`


def partial_leg_steps(steps: int, fraction: float, cooldown: float) -> tuple[int, int]:
    """(the leg's steps, the step its cooldown starts): ``fraction`` of the run, at least two steps and one step
    short of it; the final run resumes the leg's checkpoint at the cooldown's start."""
    leg = min(max(2, round(fraction * steps)), max(2, steps - 1))
    return leg, max(1, min(leg - 1, round((1.0 - cooldown) * leg)))


def final_budget(spec: TrainingCampaignSpec) -> float:
    """The FLOPs the target is sized for: the final share of the usable budget (all of it when the final run is
    a recommendation only, ``split.final`` 0)."""
    pool = pool_of(spec)
    budget_flops, _ = binding_budget(pool, spec.budget.flops, spec.budget.usd)
    usable = budget_flops * (1.0 - spec.budget.margin)
    return spec.budget.split.final * usable if spec.budget.split.final > 0 else usable


def plan_final(spec: TrainingCampaignSpec, rule: AllocationRule) -> tuple[TargetPlan, PhasePlan]:
    """The target and the final phase under ``rule`` (the campaign's own allocation once it has one)."""
    planner = _Planner(spec, rule)
    budget_flops, _ = binding_budget(planner.pool, spec.budget.flops, spec.budget.usd)
    usable = budget_flops * (1.0 - spec.budget.margin)
    target = planner.target(final_budget(spec))
    return target, planner.final(spec.budget.split.final * usable, target)


def isoflop_extension(spec: TrainingCampaignSpec, rule: AllocationRule, *, flops: float, beyond: float, side: str,
                      taken: frozenset[tuple[int, int]], run_id: str, level: int) -> PlannedRun | str:
    """One more size at an IsoFLOP level whose minimum sits at its ``side`` edge: one design step
    (``spread`` ** (1 / (sizes − 1))) past ``beyond``, or two where tiny widths round one step to a shape the
    level already has, or down to the floor when a step would pass it (if that is half a step or more), trained
    to the level's ``flops``. Returns the run, or why there is none (a user can act
    on it: ladder.minParams, the data, model.widthMultiple)."""
    planner = _Planner(spec, rule)
    cfg = spec.ladder
    step = cfg.spread ** (1.0 / max(cfg.sizes - 1, 1))
    direction = -1 if side == "smallest" else 1
    for k in (1, 2):
        wanted = beyond * step ** (direction * k)
        if wanted < planner.floor():  # the floor itself, if it is at least half a step smaller
            if beyond < planner.floor() * math.sqrt(step) or k > 1:
                return f"a smaller size would be below ladder.minParams ({planner.floor():,.0f} params)"
            wanted = planner.floor()
        shape = planner.shape(wanted)
        params = shape.param_count()
        if (shape.n_layer, shape.d_model) in taken or (params - beyond) * direction <= 0:
            continue
        tokens = flops / shape.flops_per_token()
        if tokens > planner.data_tokens:
            return f"{shape.n_layer}×{shape.d_model} would need {tokens:,.0f} tokens, more than the data holds"
        return planner.run(run_id, "ladder", shape, tokens, batch=batch_for(spec, shape, tokens, cfg.min_steps),
                           level=level)
    return f"no shape two design steps past {beyond:,.0f} params differs from those tried (model.widthMultiple)"


def plan_campaign(spec: TrainingCampaignSpec, law: AllocationRule | None = None) -> Plan:
    """Plan a campaign under ``spec.law`` or, once the campaign has fitted one, under ``law``."""
    rule = law if law is not None else allocation_rule(spec.law)
    planner = _Planner(spec, rule)
    budget_flops, binding = binding_budget(planner.pool, spec.budget.flops, spec.budget.usd)
    usable = budget_flops * (1.0 - spec.budget.margin)
    split = spec.budget.split
    target = planner.target(final_budget(spec))
    ladder = planner.ladder(split.ladder * usable, target.params, target.flops)
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
