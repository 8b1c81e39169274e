"""Concrete transformer shapes for a target parameter count.

For every depth in the family's range, the width that hits the target is the root of a quadratic (the
parameter count is quadratic in width); it is rounded to the family's width multiple. Among the shapes
whose count is within 10% of the best achievable, the one nearest the family's aspect ratio (dModel/nLayer)
wins (tiny models have few widths to choose from; large ones have many shapes within 1%). Parameter counts
come from `contract.count_params`, the very function the trainer's model is checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flopwise.contract import ModelShape, count_params

PARAM_SLACK = 0.10  # shapes within 10% (in log) of the best achievable count compete on aspect ratio


@dataclass(frozen=True)
class ShapeRules:
    """The part of a model family that decides shapes (mirrors `api.spec.ModelFamily`)."""

    vocab_size: int
    seq_len: int
    aspect_ratio: float = 64.0
    head_dim: int = 64
    width_multiple: int = 64
    min_layers: int = 2
    max_layers: int = 128
    tied_embeddings: bool = True
    positional: str = "rope"

    @classmethod
    def from_family(cls, family) -> ShapeRules:  # family: api.spec.ModelFamily (kept untyped: no import cycle)
        return cls(vocab_size=family.vocab_size, seq_len=family.seq_len, aspect_ratio=family.aspect_ratio,
                   head_dim=family.head_dim, width_multiple=family.width_multiple, min_layers=family.min_layers,
                   max_layers=family.max_layers, tied_embeddings=family.tied_embeddings,
                   positional=family.positional)


def heads_for(width: int, head_dim: int, rope: bool) -> int:
    """The head count nearest width/head_dim that divides the width (with an even head size for RoPE)."""
    best = max(1, round(width / head_dim))
    for delta in range(width):
        for heads in (best - delta, best + delta):
            if 1 <= heads <= width and width % heads == 0 and (not rope or (width // heads) % 2 == 0):
                return heads
    return 1


def make_shape(rules: ShapeRules, n_layer: int, d_model: int) -> ModelShape:
    heads = heads_for(d_model, rules.head_dim, rules.positional == "rope")
    return ModelShape(n_layer=n_layer, d_model=d_model, n_head=heads, vocab_size=rules.vocab_size,
                      seq_len=rules.seq_len, tied_embeddings=rules.tied_embeddings,
                      positional=rules.positional)  # type: ignore[arg-type]


def _width_for(rules: ShapeRules, n_layer: int, target: float) -> float:
    """Real root of param_count(n_layer, d) = target with d_ff = 4d: 12L·d² + (2L + 1 + embeddings)·d."""
    per_width = rules.vocab_size * (1 if rules.tied_embeddings else 2)
    if rules.positional == "learned":
        per_width += rules.seq_len
    a, b = 12.0 * n_layer, 2.0 * n_layer + 1 + per_width
    return (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)


MAX_WIDTH = 65536  # ModelShape's bound


def candidate_shapes(rules: ShapeRules, target: float) -> list[tuple[int, int, int]]:
    """(layers, width, exact parameters) for the widths just below and above the root at every depth."""
    step = rules.width_multiple
    found = []
    for layers in range(rules.min_layers, rules.max_layers + 1):
        root = _width_for(rules, layers, target)
        for width in {max(step, math.floor(root / step) * step), max(step, math.ceil(root / step) * step)}:
            if 8 <= width <= MAX_WIDTH:
                params = count_params(layers, width, rules.vocab_size, rules.seq_len,
                                      tied_embeddings=rules.tied_embeddings, positional=rules.positional)
                found.append((layers, width, params))
    return found


def shape_for_params(rules: ShapeRules, target: float) -> ModelShape:
    """The shape nearest ``target`` parameters, then nearest the aspect ratio."""
    if not target > 0:
        raise ValueError(f"target parameter count must be positive, got {target!r}")
    candidates = candidate_shapes(rules, target)
    if not candidates:
        raise ValueError("no shape satisfies the model family's rules")
    errors = [abs(math.log(params / target)) for _, _, params in candidates]
    best = min(errors)

    def rank(i: int) -> tuple[float, float]:
        layers, width, _ = candidates[i]
        return abs(math.log(width / layers / rules.aspect_ratio)), errors[i]

    winner = min((i for i in range(len(candidates)) if errors[i] <= best + PARAM_SLACK), key=rank)
    layers, width, _ = candidates[winner]
    return make_shape(rules, layers, width)


def smallest_shape(rules: ShapeRules) -> ModelShape:
    """The smallest shape the family allows (fewest layers, narrowest width)."""
    return make_shape(rules, rules.min_layers, max(8, rules.width_multiple))
