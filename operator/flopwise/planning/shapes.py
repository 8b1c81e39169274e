"""Concrete transformer shapes for a target parameter count.

For every depth in the family's range, the width that hits the target is the root of a quadratic (the
parameter count is quadratic in width); it is rounded to the family's width multiple. Among the shapes
whose count is within 10% of the best achievable, the one nearest the family's aspect ratio (dModel/nLayer)
wins (tiny models have few widths to choose from; large ones have many shapes within 1%). Parameter counts
come from `contract.count_params`, the very function the trainer's model is checked against.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

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


MAX_WIDTH = 65536  # ModelShape's bound


FEW_DEPTHS = 16  # up to this many depths one at a time in Python; beyond, numpy's per-call cost pays for itself


def shape_for_params(rules: ShapeRules, target: float) -> ModelShape:
    """The shape nearest ``target`` parameters, then nearest the aspect ratio, then the shallowest. Per depth the
    candidates are the widths just below and above the real root of param_count(L, d) = target (rounded to the
    width multiple); planning asks for hundreds of shapes (the ladder's bisection builds its design ~20 times)."""
    if not target > 0:
        raise ValueError(f"target parameter count must be positive, got {target!r}")
    few = rules.max_layers - rules.min_layers < FEW_DEPTHS
    layers, width = _nearest_one_depth_at_a_time(rules, target) if few else _nearest_all_depths_at_once(rules, target)
    return make_shape(rules, layers, width)


def _quadratic(rules: ShapeRules, n_layer: Any) -> tuple[Any, Any]:
    """a, b of param_count(L, d) = a·d² + b·d with d_ff = 4d: a = 12L, b = 2L + 1 + the embedding columns."""
    per_width = rules.vocab_size * (1 if rules.tied_embeddings else 2)
    if rules.positional == "learned":
        per_width += rules.seq_len
    return 12.0 * n_layer, 2.0 * n_layer + 1 + per_width


def _nearest_one_depth_at_a_time(rules: ShapeRules, target: float) -> tuple[int, int]:
    step, candidates = rules.width_multiple, []
    for layers in range(rules.min_layers, rules.max_layers + 1):
        a, b = _quadratic(rules, layers)
        root = (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)
        for width in (max(step, math.floor(root / step) * step), max(step, math.ceil(root / step) * step)):
            if 8 <= width <= MAX_WIDTH:
                params = count_params(layers, width, rules.vocab_size, rules.seq_len,
                                      tied_embeddings=rules.tied_embeddings, positional=rules.positional)
                candidates.append((layers, width, abs(math.log(params / target))))
    if not candidates:
        raise ValueError("no shape satisfies the model family's rules")
    best = min(error for _, _, error in candidates)
    layers, width, _ = min((c for c in candidates if c[2] <= best + PARAM_SLACK),
                           key=lambda c: (abs(math.log(c[1] / c[0] / rules.aspect_ratio)), c[2]))
    return layers, width


@functools.lru_cache(maxsize=64)
def _depth_lanes(rules: ShapeRules) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each depth twice (a lane for the width below the root, one above), with 2a, −b and b² per lane."""
    layers = np.repeat(np.arange(rules.min_layers, rules.max_layers + 1, dtype=np.int64), 2)
    a, b = _quadratic(rules, layers)
    lanes = (layers, 2 * a, -b, b * b)
    for array in lanes:
        array.setflags(write=False)
    return lanes


def _nearest_all_depths_at_once(rules: ShapeRules, target: float) -> tuple[int, int]:
    """The same choice as _nearest_one_depth_at_a_time with every depth in one numpy pass (a 1e20-FLOP plan:
    0.3 s of which 95 % was this search, one depth at a time)."""
    step = rules.width_multiple
    layers, two_a, minus_b, b_squared = _depth_lanes(rules)
    units = (minus_b + np.sqrt(b_squared + 2.0 * two_a * target)) / two_a / step  # the root, in multiples
    units[0::2] = np.floor(units[0::2])
    units[1::2] = np.ceil(units[1::2])
    widths = np.maximum(units * step, step).astype(np.int64)
    keep = (widths >= 8) & (widths <= MAX_WIDTH)
    if not keep.any():
        raise ValueError("no shape satisfies the model family's rules")
    if not keep.all():
        layers, widths = layers[keep], widths[keep]
    params = count_params(layers, widths, rules.vocab_size, rules.seq_len,  # type: ignore[arg-type]
                          tied_embeddings=rules.tied_embeddings, positional=rules.positional)
    errors = np.abs(np.log(params / target))
    aspect = np.abs(np.log(widths / layers / rules.aspect_ratio))
    aspect[errors > errors.min() + PARAM_SLACK] = np.inf
    nearest = np.flatnonzero(aspect == aspect.min())
    winner = nearest[np.argmin(errors[nearest])] if len(nearest) > 1 else nearest[0]  # argmin: the first on a tie
    return int(layers[winner]), int(widths[winner])


def smallest_shape(rules: ShapeRules) -> ModelShape:
    """The smallest shape the family allows (fewest layers, narrowest width)."""
    return make_shape(rules, rules.min_layers, max(8, rules.width_multiple))
