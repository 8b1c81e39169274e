"""The campaign plan: budget arithmetic, shapes, ladder and rounds, all inside the budget."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flopwise.api.load import CampaignError, parse_campaign
from flopwise.contract import ModelShape
from flopwise.planning.budget import Pool, binding_budget
from flopwise.planning.plan import PlanError, plan_campaign
from flopwise.planning.shapes import ShapeRules, shape_for_params

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_pool_converts_dollars_and_flops_both_ways() -> None:
    pool = Pool(peak_flops=989e12, mfu=0.4, price_per_gpu_hour=2.5)
    flops = pool.flops_for_usd(50_000)
    assert pool.usd(flops) == pytest.approx(50_000)
    assert pool.gpu_hours(flops) == pytest.approx(20_000)
    assert flops == pytest.approx(20_000 * 3600 * 989e12 * 0.4)
    assert binding_budget(pool, 1e21, 50_000) == (1e21, "flops")
    assert binding_budget(pool, 1e24, 50_000) == (pytest.approx(flops), "usd")


@pytest.mark.parametrize("target", [3e4, 2e5, 1e6, 1.25e8, 7e9, 7e10])
def test_shape_param_count_matches_the_trainers_model(target: float) -> None:
    """The planner's count is the trainer's count: the trainer builds the model from the same shape."""
    torch = pytest.importorskip("torch")
    from flopwise_trainer.model import Transformer

    rules = ShapeRules(vocab_size=256 if target < 1e7 else 50304, seq_len=128, width_multiple=16 if target < 1e7
                       else 64, head_dim=16 if target < 1e7 else 64, aspect_ratio=16 if target < 1e7 else 64)
    shape = shape_for_params(rules, target)
    assert abs(math.log(shape.param_count() / target)) < 0.25, shape
    if shape.param_count() > 3e8:  # too big to build on a CI machine: build a same-family smaller twin instead
        shape = shape.model_copy(update={"n_layer": 1})
    with torch.device("meta"):
        model = Transformer(shape)
    assert sum(p.numel() for p in model.parameters()) == shape.param_count()


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_param_count_variants_match_the_model(tied: bool, positional: str) -> None:
    torch = pytest.importorskip("torch")
    from flopwise_trainer.model import Transformer

    shape = ModelShape(n_layer=3, d_model=48, n_head=3, vocab_size=300, seq_len=40, d_ff=100,
                       tied_embeddings=tied, positional=positional)
    with torch.device("meta"):
        model = Transformer(shape)
    assert sum(p.numel() for p in model.parameters()) == shape.param_count()


def test_cluster_example_plan_is_inside_its_budget_and_shares() -> None:
    campaign = parse_campaign(example("cluster-h100-50k.yaml"))
    plan = plan_campaign(campaign.spec)
    assert plan.binding == "usd"
    assert plan.planned_usd <= 50_000 * (1 - campaign.spec.budget.margin) + 1e-6
    assert plan.planned_flops <= plan.budget_flops - plan.margin_flops
    for name, phase in plan.phases().items():
        assert phase.flops <= phase.allotted_flops * (1 + 1e-12), name
        assert phase.flops == pytest.approx(sum(r.flops for r in phase.runs))
    ladder = [r for r in plan.ladder.runs if r.role == "ladder"]
    assert campaign.spec.ladder.design == "isoflop"  # the default design
    levels = sorted({r.level for r in ladder})
    assert levels == list(range(campaign.spec.ladder.levels))
    for level in levels:  # each level: at least three sizes, all at the level's compute
        runs = [r for r in ladder if r.level == level]
        assert len({r.params for r in runs}) >= 3
        assert max(r.flops for r in runs) / min(r.flops for r in runs) < 1.02
    tops = [max(r.flops for r in ladder if r.level == level) for level in levels]
    for a, b in itertools.pairwise(tops):  # levels a levelRatio apart
        assert a / b == pytest.approx(campaign.spec.ladder.level_ratio, rel=0.02)
    assert min(r.steps for r in ladder) >= campaign.spec.ladder.min_steps
    seeds = [r for r in plan.ladder.runs if r.role == "seed"]  # ladder.seeds (default 3): two replicas
    cheapest = min(r.flops for r in ladder)  # the cheapest level; of its sizes, the one with the most tokens
    source = max((r for r in ladder if r.flops <= cheapest * 1.05), key=lambda r: r.tokens)
    assert len(seeds) == 2 and all(r.shape == source.shape and r.tokens == source.tokens for r in seeds)
    assert [r.seed_offset for r in seeds] == [1, 2]
    assert max(r.params for r in ladder) < plan.target.params
    # every run is priced from its exact FLOPs
    for run in plan.all_runs():
        assert run.flops == pytest.approx(run.shape.flops_per_token() * run.tokens)
        assert run.tokens == (run.steps - run.start_step) * run.batch_size * run.shape.seq_len
    # Round 1 is a learning-rate grid around the base guess; Round 2 has at most round2Runs runs
    lrs = sorted({r.learning_rate for r in plan.round1.runs})
    assert len(lrs) == 5 and lrs[2] == pytest.approx(campaign.spec.tuning.base_learning_rate)
    # two proxy widths (tuning.proxyWidths, default 2): same depth, tokens and batch, the LR grid at each
    widths = sorted({r.shape.d_model for r in plan.round1.runs})
    assert len(widths) == 2 and widths[1] >= 4 * widths[0] * 0.9
    assert len({(r.shape.n_layer, r.tokens, r.batch_size) for r in plan.round1.runs}) == 1
    names = {s.name.split(" (")[0] for s in plan.studies}
    assert names >= {"scaling ladder", "seed-noise floor", "Round 1 at the proxy", "LR transfer check"}
    for study in plan.studies:  # each study says what it costs
        assert study.runs > 0 and study.flops > 0
    assert 1 <= len(plan.round2.runs) <= 2
    assert plan.final.runs and plan.final.runs[0].params == plan.target.params


def test_target_follows_the_chosen_law() -> None:
    doc = example("cluster-h100-50k.yaml")
    sizes = {}
    for law in ("chinchilla-1", "chinchilla-3", "epoch"):
        d = copy.deepcopy(doc)
        d["spec"]["law"] = law
        sizes[law] = plan_campaign(parse_campaign(d).spec).target.params
    assert sizes["chinchilla-3"] < sizes["chinchilla-1"]  # Approach 3 wants more tokens per parameter


def test_data_limited_campaign_never_plans_more_tokens_than_exist() -> None:
    doc = example("cluster-h100-50k.yaml")
    doc["spec"]["dataset"]["tokens"] = 5e10
    plan = plan_campaign(parse_campaign(doc).spec)
    assert plan.target.data_limited
    assert plan.target.tokens <= 5e10
    assert any("data-limited" in w for w in plan.warnings)
    for run in plan.all_runs():
        assert run.tokens <= 5e10 + run.batch_size * run.shape.seq_len


def test_too_small_budget_names_the_field() -> None:
    doc = example("quickstart.yaml")
    doc["spec"]["budget"]["flops"] = 1e9
    with pytest.raises(PlanError) as error:
        plan_campaign(parse_campaign(doc).spec)
    assert error.value.field == "spec.budget"
    assert "raise the budget" in str(error.value)


def test_tight_round_budget_drops_and_says_so() -> None:
    doc = example("cluster-h100-50k.yaml")
    doc["spec"]["budget"]["split"] = {"ladder": 0.1, "round1": 0.002, "round2": 0.001, "final": 0.8}
    plan = plan_campaign(parse_campaign(doc).spec)
    assert plan.dropped, "a plan that could not fit Round 1/2 must say what it dropped"
    assert plan.planned_flops <= plan.budget_flops - plan.margin_flops


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flops=st.floats(1e17, 1e26), ladder=st.floats(0.02, 0.4), round1=st.floats(0.0, 0.2),
       round2=st.floats(0.0, 0.2), law=st.sampled_from(["chinchilla-1", "chinchilla-2", "chinchilla-3", "epoch"]),
       sizes=st.integers(5, 8), margin=st.floats(0.0, 0.3))
def test_any_plannable_budget_is_planned_within_budget(flops, ladder, round1, round2, law, sizes, margin) -> None:
    doc = example("cluster-h100-50k.yaml")
    final = max(0.0, 1.0 - ladder - round1 - round2)
    doc["spec"]["budget"] = {"flops": flops, "margin": margin,
                             "split": {"ladder": ladder, "round1": round1, "round2": round2, "final": final}}
    doc["spec"]["law"] = law
    doc["spec"]["ladder"]["sizes"] = sizes
    doc["spec"]["dataset"].pop("tokens")
    try:
        plan = plan_campaign(parse_campaign(doc).spec)
    except PlanError as error:
        assert error.field.startswith("spec.")
        return
    assert plan.planned_flops <= flops * (1 - margin) * (1 + 1e-9)
    assert len({r.params for r in plan.ladder.runs}) >= 5
    for phase in plan.phases().values():
        assert phase.flops <= phase.allotted_flops * (1 + 1e-9)


def test_budget_that_cannot_pay_for_the_new_studies_drops_them_and_says_so() -> None:
    """The seed replicas and the second proxy width are planned within their shares or dropped, in words."""
    doc = example("quickstart.yaml")
    doc["spec"]["ladder"]["seeds"] = 16
    doc["spec"]["budget"]["split"] = {"ladder": 0.08, "round1": 0.003, "round2": 0.2, "final": 0.0}
    plan = plan_campaign(parse_campaign(doc).spec)
    assert any("15 seed replicas" in d for d in plan.dropped), plan.dropped
    assert not [r for r in plan.ladder.runs if r.role == "seed"]
    assert len({r.shape.d_model for r in plan.round1.runs}) == 1
    assert any("2 proxy widths asked, 1 planned" in d and "transfer check is skipped" in d for d in plan.dropped)
    assert plan.planned_flops <= plan.budget_flops - plan.margin_flops
    doc["spec"]["ladder"]["seeds"] = 3
    doc["spec"]["budget"]["split"]["round1"] = 0.03  # enough for both widths: nothing dropped
    plan = plan_campaign(parse_campaign(doc).spec)
    assert not plan.dropped and len({r.shape.d_model for r in plan.round1.runs}) == 2
    assert len([r for r in plan.ladder.runs if r.role == "seed"]) == 2


def test_partial_check_needs_a_final_run_and_costs_only_its_cooldown() -> None:
    doc = example("cluster-h100-50k.yaml")
    doc["spec"]["final"] = {"enabled": False, "partialCheck": True}
    with pytest.raises(CampaignError) as error:
        parse_campaign(doc)
    assert "spec.final.partialCheck" in str(error.value) and "final.enabled" in str(error.value)
    doc["spec"]["final"] = {"enabled": True, "partialCheck": True}
    spec = parse_campaign(doc).spec
    plan = plan_campaign(spec)
    leg, main = plan.final.runs
    assert leg.run_id == "final-00-p" and main.branch_of == leg.run_id
    assert leg.checkpoints_at == [main.start_step]  # the final run resumes the leg's stable-phase checkpoint
    assert leg.steps == pytest.approx(spec.final.partial_fraction * main.steps, abs=1)
    assert leg.steps - main.start_step == pytest.approx(spec.tuning.decay_fraction * leg.steps, abs=1)
    # the extra cost is the leg's cooldown, no more
    extra = leg.flops + main.flops - main.shape.flops_per_token() * main.trajectory_tokens
    step = main.shape.flops_per_token() * main.batch_size * main.shape.seq_len
    assert extra == pytest.approx((leg.steps - main.start_step) * step)
    assert plan.final.flops <= plan.final.allotted_flops * (1 + 1e-12)
    assert any("partial check" in note for note in plan.final.notes)
    doc["spec"]["tuning"]["schedule"] = "cosine"  # no stable phase to cool down from: refused, naming both fields
    with pytest.raises(CampaignError) as error:
        parse_campaign(doc)
    assert "spec.final.partialCheck" in str(error.value) and "tuning.schedule" in str(error.value)
