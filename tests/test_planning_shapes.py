"""The shape search: every depth at once (numpy, for families of many depths) picks exactly the shape that one
depth at a time (plain Python, for families of few) picks, so a family's plan does not depend on which ran."""

from __future__ import annotations

import random

import pytest

from flopwise.contract import count_params
from flopwise.planning import shapes
from flopwise.planning.shapes import ShapeRules, shape_for_params

FAMILIES = [
    ShapeRules(vocab_size=256, seq_len=32, aspect_ratio=8, head_dim=8, width_multiple=8, min_layers=1, max_layers=4),
    ShapeRules(vocab_size=256, seq_len=128, aspect_ratio=16, head_dim=8, width_multiple=8, max_layers=8),
    ShapeRules(vocab_size=50304, seq_len=2048),
    ShapeRules(vocab_size=32000, seq_len=4096, aspect_ratio=128, width_multiple=128, max_layers=96,
               tied_embeddings=False),
    ShapeRules(vocab_size=8192, seq_len=1024, aspect_ratio=32, head_dim=32, width_multiple=32, max_layers=48,
               positional="learned"),
]


@pytest.mark.parametrize("rules", FAMILIES, ids=lambda r: f"v{r.vocab_size}-m{r.width_multiple}-L{r.max_layers}")
def test_every_depth_at_once_picks_the_same_shape_as_one_depth_at_a_time(rules: ShapeRules) -> None:
    rng = random.Random(rules.vocab_size)
    smallest = count_params(rules.min_layers, max(8, rules.width_multiple), rules.vocab_size, rules.seq_len,
                            tied_embeddings=rules.tied_embeddings, positional=rules.positional)
    targets = [min(smallest * 10 ** rng.uniform(-0.5, 6.0), 3e11) for _ in range(400)]
    at_once = [shapes._nearest_all_depths_at_once(rules, t) for t in targets]
    assert at_once == [shapes._nearest_one_depth_at_a_time(rules, t) for t in targets]
    assert len(set(at_once)) > 20  # the targets span many shapes, not one
    assert [(s.n_layer, s.d_model) for s in map(lambda t: shape_for_params(rules, t), targets)] == at_once


def test_a_family_whose_widths_cannot_reach_the_target_is_refused_by_both() -> None:
    rules = ShapeRules(vocab_size=32000, seq_len=4096, width_multiple=128, max_layers=96)
    for search in (shapes._nearest_all_depths_at_once, shapes._nearest_one_depth_at_a_time):
        with pytest.raises(ValueError, match="no shape satisfies"):
            search(rules, 1e14)
