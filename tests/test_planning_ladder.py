"""The ladder designs as planned: WSD trunks with cooldown branches, IsoFLOP levels, the minimum of steps, the
seed replicas, and the records (schedules) the engine makes of them — trunk and branch agree up to the branch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from flopwise.api.load import CampaignError, parse_campaign
from flopwise.contract import lr_at
from flopwise.engine import records
from flopwise.planning.plan import plan_campaign

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def cluster(**ladder) -> dict:
    doc = example("cluster-h100-50k.yaml")
    doc["spec"]["ladder"].update(ladder)
    return doc


def test_wsd_design_trunks_branch_at_their_cooldowns() -> None:
    spec = parse_campaign(cluster(design="wsd", sizes=5, spread=8)).spec
    plan = plan_campaign(spec)
    ladder = [r for r in plan.ladder.runs if r.role == "ladder"]
    trunks = [r for r in ladder if r.branch_of is None]
    assert len(trunks) == 5 and len({t.params for t in trunks}) == 5
    multiples = sorted(spec.ladder.token_multiples)
    cooldown = spec.tuning.decay_fraction
    for trunk in trunks:
        branches = [r for r in ladder if r.branch_of == trunk.run_id]
        assert len(branches) == len(multiples) - 1
        assert sorted(trunk.checkpoints_at) == sorted(b.start_step for b in branches)
        for b in branches:  # same model and batch; starts where its own cooldown starts; charged only the cooldown
            assert b.shape == trunk.shape and b.batch_size == trunk.batch_size
            assert b.start_step == round((1 - cooldown) * b.steps)
            assert b.tokens == (b.steps - b.start_step) * b.batch_size * b.shape.seq_len
            assert b.flops == pytest.approx(b.shape.flops_per_token() * b.tokens)
        ends = sorted(r.trajectory_tokens for r in [trunk, *branches])
        assert ends[-1] / ends[0] == pytest.approx(multiples[-1] / multiples[0], rel=0.05)  # ≥ 4× span of D
        assert min(r.steps for r in [trunk, *branches]) >= spec.ladder.min_steps
    assert plan.ladder.flops <= plan.ladder.allotted_flops * (1 + 1e-12)
    # what the branches save: the same points as separate runs would cost more
    separate = sum(r.shape.flops_per_token() * r.trajectory_tokens for r in ladder)
    assert sum(r.flops for r in ladder) < 0.75 * separate
    seeds = [r for r in plan.ladder.runs if r.role == "seed"]
    assert seeds and all(s.branch_of is None and s.start_step == 0 for s in seeds)  # replicas train from scratch


def test_trunk_and_branch_schedules_agree_up_to_the_branch_and_each_ends_annealed() -> None:
    spec = parse_campaign(cluster(design="wsd", sizes=5, spread=8)).spec
    plan = plan_campaign(spec)
    recs = records.ladder_records(plan.ladder.runs, kind="wsd", lr_for=lambda _: 0.003, warmup_fraction=0.01,
                                  decay_fraction=spec.tuning.decay_fraction, seed=7)
    by_id = {r.run_id: r for r in recs}
    branches = [r for r in recs if r.resume_step]
    assert branches
    for b in branches:
        trunk = by_id[b.resume_from]
        assert b.resume_step in trunk.checkpoints_at and b.group == trunk.run_id and b.seed == trunk.seed
        for step in range(0, b.resume_step, max(1, b.resume_step // 50)):
            assert lr_at(step, b.steps, 1.0, b.schedule) == lr_at(step, trunk.steps, 1.0, trunk.schedule)
        assert lr_at(b.steps - 1, b.steps, 1.0, b.schedule) == pytest.approx(records.MIN_LR_RATIO)
        assert lr_at(b.resume_step, b.steps, 1.0, b.schedule) < 1.0  # its cooldown starts at the branch
    for seed in (r for r in recs if r.role == "seed"):  # a replica repeats its source's whole schedule
        source = next(r for r in recs if r.role == "ladder" and r.shape == seed.shape
                      and r.trajectory_tokens == seed.trajectory_tokens)
        assert seed.schedule == source.schedule and seed.seed != source.seed and seed.resume_from is None


def test_isoflop_design_sizes_bracket_the_priors_optimum_at_each_level() -> None:
    spec = parse_campaign(cluster(design="isoflop")).spec
    plan = plan_campaign(spec)
    from flopwise.planning.laws import allocation_rule

    rule = allocation_rule(spec.law)
    for level in range(spec.ladder.levels):
        runs = [r for r in plan.ladder.runs if r.level == level]
        flops = runs[0].flops
        centre = rule.allocate(flops).params
        assert min(r.params for r in runs) < centre < max(r.params for r in runs)
        assert max(r.params for r in runs) / min(r.params for r in runs) == pytest.approx(spec.ladder.spread,
                                                                                         rel=0.35)


def test_the_minimum_of_steps_shrinks_the_batch_not_the_run() -> None:
    doc = example("quickstart.yaml")
    plan = plan_campaign(parse_campaign(doc).spec)
    assert min(r.steps for r in plan.ladder.runs) >= doc["spec"]["ladder"]["minSteps"]
    doc["spec"]["ladder"]["minSteps"] = 400
    harder = plan_campaign(parse_campaign(doc).spec)
    assert min(r.steps for r in harder.ladder.runs) >= 400
    assert min(r.batch_size for r in harder.ladder.runs) < min(r.batch_size for r in plan.ladder.runs)


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"ladder": {"design": "wsd", "sizes": 4}}, "spec.ladder.sizes", "at least 5 sizes"),
    ({"ladder": {"design": "wsd", "tokenMultiples": [0.5, 1, 1.5]}}, "spec.ladder.tokenMultiples", "spanning"),
    ({"ladder": {"design": "wsd"}, "tuning": {"schedule": "cosine"}}, "spec.ladder.design", "tuning.schedule"),
])
def test_designs_that_cannot_identify_the_law_are_refused_by_name(changes, field, words) -> None:
    doc = copy.deepcopy(example("cluster-h100-50k.yaml"))
    for section, values in changes.items():
        doc["spec"].setdefault(section, {}).update(values)
    with pytest.raises(CampaignError) as error:
        parse_campaign(doc)
    assert field in str(error.value) and words in str(error.value)
