"""How much do a real quickstart's ladder runs say about the irreducible loss E? The profile of the Chinchilla form
over E: for each E held fixed, the least-squares fit in log loss of A, B, α, β to the ladder's and seeds' annealed
endpoints (the points the engine fits), its rms misfit, and that law's error at the models trained for real for
the whole budget (the records' ground truth). The engine puts the same profile in the status when the
five-parameter fit's E is at its bound (:mod:`flopwise.fitting.e_profile`).

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

from flopwise.api.status import RunRecord
from flopwise.engine.conclude import endpoints
from flopwise.fitting.e_profile import fit_with_e

REPO = Path(__file__).resolve().parents[1]
RECORDS = [REPO / "tests" / "data" / f"quickstart-ladder-{name}.json"
           for name in ("2026-11-29", "2026-11-30", "minsteps400")]
E_VALUES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def profile(path: Path) -> dict[str, object]:
    doc = json.loads(path.read_text())
    points = endpoints([RunRecord.model_validate(r) for r in doc["runs"]]).points
    params, tokens, loss = (np.asarray(v, float) for v in (points.params, points.tokens, points.loss))
    measured = [(s["params"], s["tokens"], s["finalValLoss"]) for s in doc["groundTruth"]["sizes"]]
    rows = []
    for e in E_VALUES:
        fitted = fit_with_e(params, tokens, loss, e)
        errors = {str(n): fitted.loss(n, d) / lo - 1 for n, d, lo in measured}
        rows.append({"E": e, "rms": fitted.rms, "alpha": fitted.alpha, "beta": fitted.beta,
                     "ground_truth_error": errors})
    return {"records": path.name, "points": len(loss), "profile": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="*", type=Path, default=RECORDS)
    args = parser.parse_args()
    print(json.dumps({"results": [profile(p) for p in args.records]}, indent=1))


if __name__ == "__main__":
    main()
