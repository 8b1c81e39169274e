"""Shared helpers for the scaling-law fitting tests: where the anchor data lives and synthetic campaigns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flopwise.fitting.anchors import verified
from flopwise.fitting.points import FitInputError, FitPoints
from flopwise.planning.laws import ScalingLaw

ANCHORS = Path(__file__).resolve().parent / "data" / "anchors"
"""Published data shipped with the tests (tests/data/anchors/README.md): a clone alone passes its tests."""
CHINCHILLA_CSV = ANCHORS / "chinchilla" / "svg_extracted_data.csv"
OPT_CSV = ANCHORS / "hitchhiker" / "opt_trajectories.csv"

TRUE_LAW = ScalingLaw(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37, name="synthetic")
"""Close to Epoch's refit, so the synthetic campaigns look like real ones."""


def anchor(path: Path) -> Path:
    """The anchor file, after its checksum is verified (a changed or missing file fails the test, naming it)."""
    try:
        return verified(path)
    except FitInputError as error:
        pytest.fail(str(error))


def grid_design(n_sizes: int = 6, n_ratios: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Final points of a sweep: sizes 2e7–2e9, tokens 5–100 per parameter."""
    sizes = np.geomspace(2e7, 2e9, n_sizes)
    ratios = np.geomspace(5, 100, n_ratios)
    return np.repeat(sizes, ratios.size), np.repeat(sizes, ratios.size) * np.tile(ratios, sizes.size)


def campaign(law: ScalingLaw = TRUE_LAW, sizes: tuple[float, ...] = (2e7, 5e7, 1e8, 2e8, 5e8, 1e9),
             ratio: float = 40.0, checkpoints: int = 12, noise: float = 0.01, seed: int = 0) -> FitPoints:
    """One run per size to ``ratio`` tokens/param, with evenly spaced checkpoints as points."""
    rng = np.random.default_rng(seed)
    params, tokens, runs, steps = [], [], [], []
    for n in sizes:
        for k in range(1, checkpoints + 1):
            params.append(n)
            tokens.append(ratio * n * k / checkpoints)
            runs.append(f"run-{n:.0e}")
            steps.append(k * 100)
    params_a, tokens_a = np.array(params), np.array(tokens)
    loss = np.array([law.loss(n, d) for n, d in zip(params_a, tokens_a, strict=True)])
    loss *= np.exp(rng.normal(0.0, noise, loss.size))
    return FitPoints.from_arrays(params_a, tokens_a, loss, run=runs, step=steps)
