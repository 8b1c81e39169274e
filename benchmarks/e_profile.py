"""How much do a real quickstart's ladder runs say about the irreducible loss E? The profile of the Chinchilla form
over E: for each E held fixed, the least-squares fit in log loss of A, B, α, β to the ladder's and seeds' annealed
endpoints (the points the engine fits), its rms misfit, and that law's error at the models trained for real for
the whole budget (the records' ground truth).

A flat profile (rms nearly the same for every E) means the data do not hold E: the five-parameter fit's E then
lands wherever the noise pushes it, at its bound 0 on these records. benchmarks/RESULTS.md, "Why the quickstart
cannot identify E".

    python benchmarks/e_profile.py [RECORDS.json ...]   # default: the three real quickstarts in tests/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from flopwise.api.status import RunRecord
from flopwise.engine.conclude import endpoints

REPO = Path(__file__).resolve().parents[1]
RECORDS = [REPO / "tests" / "data" / f"quickstart-ladder-{name}.json"
           for name in ("2026-11-29", "2026-11-30", "minsteps400")]
E_VALUES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def fit_with_e(params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    """(log A, log B, α, β) minimising the squared log-loss residuals with E held at ``e``, from a small grid of
    exponent starts; returns the parameters and the residuals."""
    def residuals(x: np.ndarray) -> np.ndarray:
        a, b, alpha, beta = x
        return np.log(e + np.exp(a - alpha * np.log(params)) + np.exp(b - beta * np.log(tokens))) - np.log(loss)

    best = None
    for alpha0 in (0.2, 0.5, 1.0):
        for beta0 in (0.2, 0.4):
            found = least_squares(residuals, [np.log(20.0), np.log(100.0), alpha0, beta0],
                                  bounds=([-10, -10, 0.01, 0.01], [40, 40, 3, 3]))
            if best is None or found.cost < best.cost:
                best = found
    assert best is not None
    return best.x, best.fun


def profile(path: Path) -> dict[str, object]:
    doc = json.loads(path.read_text())
    points = endpoints([RunRecord.model_validate(r) for r in doc["runs"]]).points
    params, tokens, loss = (np.asarray(v, float) for v in (points.params, points.tokens, points.loss))
    measured = [(s["params"], s["tokens"], s["finalValLoss"]) for s in doc["groundTruth"]["sizes"]]
    rows = []
    for e in E_VALUES:
        (a, b, alpha, beta), res = fit_with_e(params, tokens, loss, e)
        errors = {str(n): float((e + np.exp(a) * n ** -alpha + np.exp(b) * d ** -beta) / lo - 1)
                  for n, d, lo in measured}
        rows.append({"E": e, "rms": float(np.sqrt(np.mean(res ** 2))), "alpha": float(alpha), "beta": float(beta),
                     "ground_truth_error": errors})
    return {"records": path.name, "points": len(loss), "profile": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="*", type=Path, default=RECORDS)
    args = parser.parse_args()
    print(json.dumps({"results": [profile(p) for p in args.records]}, indent=1))


if __name__ == "__main__":
    main()
