"""IsoFLOP levels that bracket their minimum: when the prior centres a level's sizes on the wrong side of the
truth, the engine adds a size past the edge where the loss is lowest (Chinchilla §3.2 needs each profile's
minimum inside the sizes tried), paid from what the budget has left and never from the final run's share.
Driven with synthetic run summaries on schedule-shaped curves whose law is known (`test_engine_transfer`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flopwise.engine import analysis
from flopwise.planning.laws import ScalingLaw, allocation_rule
from flopwise.planning.plan import isoflop_extension

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_transfer import drive, spec_with, summary

# Data-hungry: at every level the optimum lies below the smallest size the 20-tokens-per-parameter prior tries;
# parameter-hungry: above the largest
SMALL_OPTIMUM = ScalingLaw(E=1.2, A=40.0, B=85.0, alpha=0.35, beta=0.3)
LARGE_OPTIMUM = ScalingLaw(E=1.2, A=40.0, B=25.0, alpha=0.35, beta=0.3)
ISOFLOP = {"ladder.design": "isoflop"}


def loss(record) -> float:
    return record.result.final_val_loss


@pytest.mark.parametrize("law, side", [(SMALL_OPTIMUM, "smallest"), (LARGE_OPTIMUM, "largest")])
def test_a_level_lowest_at_an_edge_gets_a_size_past_it_and_then_brackets_its_minimum(law, side) -> None:
    spec = spec_with(**ISOFLOP)
    status = drive(spec, law=law)
    assert status.phase == "Succeeded", status.message
    planned = {r.run_id for r in status.plan.ladder.runs}
    added = [r for r in status.runs if r.reason.startswith(analysis.EXTENDED)]
    step = spec.ladder.spread ** (1 / (spec.ladder.sizes - 1))
    for level in range(spec.ladder.levels):
        designed = [r for r in status.runs if r.run_id in planned and r.level == level]
        edge = (min if side == "smallest" else max)(designed, key=lambda r: r.params)
        assert min(designed, key=loss) is edge  # the premise: the prior's sizes miss the minimum on this side
        extra = [r for r in added if r.level == level]
        assert len(extra) == 1, (level, extra)  # one step past the edge brackets it here
        record = extra[0]
        assert record.state == "Succeeded" and side in record.reason
        assert (record.params < edge.params) if side == "smallest" else (record.params > edge.params)
        assert max(record.params, edge.params) / min(record.params, edge.params) < step * 1.5
        assert abs(record.planned_flops() / edge.planned_flops() - 1) < 0.1  # the level's compute, another size
        assert record.learning_rate == edge.learning_rate  # muP here: one LR at every width
        assert loss(record) > loss(edge)  # the minimum now lies between the sizes tried
        assert record.launched_at > max(r.launched_at for r in designed)
    assert analysis.isoflop_edges(status.runs) == []
    approach2 = status.allocation.approach2
    assert approach2 is not None and approach2.bracketed == spec.ladder.levels, approach2


def test_a_level_whose_minimum_is_inside_its_sizes_is_left_alone() -> None:
    spec = spec_with(**ISOFLOP)
    centred = ScalingLaw(E=1.2, A=40.0, B=40.0, alpha=0.35, beta=0.3)  # N_opt between each level's sizes
    status = drive(spec, law=centred)
    assert status.phase == "Succeeded", status.message
    assert not [r for r in status.runs if r.reason.startswith(analysis.EXTENDED)]
    assert len([r for r in status.runs if r.role == "ladder"]) == len(status.plan.ladder.runs) - 2  # 2 seed runs


def test_no_extension_below_the_floor_or_onto_a_shape_already_tried_and_the_reason_is_said() -> None:
    spec = spec_with(**ISOFLOP)
    rule = allocation_rule(spec.law)
    below = isoflop_extension(spec, rule, flops=5e9, beyond=spec.ladder.min_params * 1.2, side="smallest",
                              taken=frozenset(), run_id="x", level=2)
    assert isinstance(below, str) and "ladder.minParams" in below
    run = isoflop_extension(spec, rule, flops=4e10, beyond=16528, side="smallest", taken=frozenset({(4, 16)}),
                            run_id="ladder-c0-03", level=0)
    assert not isinstance(run, str) and run.params < 16528 and run.level == 0 and run.steps >= spec.ladder.min_steps
    assert abs(run.flops / 4e10 - 1) < 0.05
    larger = isoflop_extension(spec, rule, flops=4e10, beyond=104588, side="largest", taken=frozenset({(4, 44)}),
                               run_id="ladder-c0-04", level=0)
    assert not isinstance(larger, str) and larger.params > 104588


def test_extensions_never_take_the_final_runs_share() -> None:
    """The ladder's share is spent by the design; extensions come from what the other shares left, and a level
    that cannot be paid for says so on its edge run while the final run still trains in full."""
    spec = spec_with(**ISOFLOP, **{"final.enabled": True,
                                   "budget.split": {"ladder": 0.55, "round1": 0.1, "round2": 0.05, "final": 0.3}})
    status = drive(spec, law=SMALL_OPTIMUM)
    assert status.phase == "Succeeded", status.message
    final = [r for r in status.runs if r.role == "final"]
    assert final and all(r.state == "Succeeded" for r in final)
    assert sum(r.spent.flops for r in final) == pytest.approx(status.plan.final.flops)
    refused = [r for r in status.runs if analysis.NOT_EXTENDED in r.reason and "final run's share" in r.reason]
    added = [r for r in status.runs if r.reason.startswith(analysis.EXTENDED)]
    assert refused, "the budget was expected to run out for some level"
    spent = sum(r.spent.flops for r in status.runs)
    assert spent <= spec.budget.flops * (1 - spec.budget.margin) * (1 + 1e-9)
    assert len(added) < spec.ladder.levels


def test_a_failed_attempt_at_the_edge_size_keeps_its_own_reason() -> None:
    """The edge run's reason says why nothing was added past it, after what it said already (a retry says what
    it retries); an earlier failed attempt at the same size (here the added size itself: it fails once, its retry
    succeeds and is the level's edge) keeps the reason it failed with."""
    spec = spec_with(**ISOFLOP)
    failed_once: list[str] = []

    def flaky(record, **kwargs):
        if record.reason.startswith(analysis.EXTENDED) and record.level == 2 and not failed_once:
            failed_once.append(record.run_id)
            return summary(record, **kwargs).model_copy(update={"status": "failed", "final_val_loss": None,
                                                                 "exit_reason": "killed"})
        return summary(record, **kwargs)

    smaller = ScalingLaw(E=1.2, A=40.0, B=100.0, alpha=0.35, beta=0.3)  # level 2's minimum below the floor
    status = drive(spec, flaky, law=smaller)
    assert status.phase == "Succeeded", status.message
    assert failed_once
    first = next(r for r in status.runs if r.run_id == failed_once[0])
    retry = next(r for r in status.runs if r.planned_id == first.planned_id and r.run_id != first.run_id)
    assert first.state == "Failed" and analysis.NOT_EXTENDED not in first.reason, first.reason
    assert retry.state == "Succeeded" and analysis.NOT_EXTENDED in retry.reason, retry.reason
    assert retry.reason.startswith((f"retry of {first.run_id}", f"continues {first.run_id}")), retry.reason  # kept
