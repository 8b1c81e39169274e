"""Loaders for the two published data sets the fitter is checked against (the files ship with the tests, in
``tests/data/anchors/<source>/``, each beside a ``SHA256SUMS`` that :func:`verified` checks).

* Chinchilla's Figure-4 points as extracted by Epoch AI, with Epoch's preprocessing: drop the 5 highest
  losses (keep loss < the 5th-highest), D = C / (6N).
* OPT training trajectories from the Hitchhiker's guide (IBM/ColPret). Tokens are steps × batch, with the
  batch sizes of the OPT paper's Table 1 (Zhang et al. 2022): 125m 0.5M, 1.3b 1M, 6.7b 2M, 13b 4M, 30b 4M,
  175b 2M tokens — SOURCE.md's "0.5M/1M/2M/4M/2M by size" lists the distinct values, 13b and 30b sharing
  4M. The file's log10 token column agrees with this to rounding, which the loader checks. Loss = ln(ppl).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from flopwise.fitting.points import FitInputError, FitPoints

OPT_BATCH_TOKENS: dict[str, float] = {"125m": 0.5e6, "1.3b": 1e6, "6.7b": 2e6, "13b": 4e6, "30b": 4e6, "175b": 2e6}
OPT_PARAMS: dict[str, float] = {"125m": 125e6, "1.3b": 1.3e9, "6.7b": 6.7e9, "13b": 13e9, "30b": 30e9, "175b": 175e9}
"""Nominal sizes, as the family names them (the Hitchhiker's data uses the names)."""


def verified(path: str | Path) -> Path:
    """``path``, once its sha256 matches the line for it in the ``SHA256SUMS`` beside it (``sha256sum`` format).

    Raises FitInputError naming the file when it is missing, unlisted or changed: a fitter held to published
    numbers must be reading the published data."""
    path = Path(path)
    sums = path.parent / "SHA256SUMS"
    if not path.is_file():
        raise FitInputError(f"anchor data missing: {path}")
    listed = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            digest, _, name = line.strip().partition("  ")
            listed[name.lstrip("*")] = digest
    expected = listed.get(path.name)
    if expected is None:
        raise FitInputError(f"{path.name} has no checksum in {sums}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise FitInputError(f"{path}: sha256 {actual} differs from {expected} in {sums}; restore the published file")
    return path


def load_chinchilla_epoch(path: str | Path, drop_highest: int = 5) -> FitPoints:
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-drop_highest] if drop_highest else np.ones(loss.size, bool)
    return FitPoints.from_arrays(n[keep], c[keep] / (6.0 * n[keep]), loss[keep])


def load_opt_trajectories(path: str | Path) -> FitPoints:
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    sizes = [r["model_size"].strip().lower() for r in rows]
    unknown = sorted(set(sizes) - OPT_BATCH_TOKENS.keys())
    if unknown:
        raise FitInputError(f"{path}: OPT sizes {unknown} have no known batch size")
    steps = np.array([float(r["steps"]) for r in rows])
    tokens = steps * np.array([OPT_BATCH_TOKENS[s] for s in sizes])
    logged = 10 ** np.array([float(r["num_token"]) for r in rows])
    if not np.allclose(tokens, logged, rtol=1e-3):
        raise FitInputError(f"{path}: steps × batch disagrees with num_token; the batch-size table is wrong")
    return FitPoints.from_arrays(
        [OPT_PARAMS[s] for s in sizes], tokens, np.log([float(r["ppl"]) for r in rows]), run=sizes, step=steps
    )
