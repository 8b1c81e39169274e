"""What the engine asks of a fit, so that fits can run elsewhere while the engine stays a pure function.

A fit (Hoffmann's 4500 starts, the bootstrap, the backtest) takes seconds of CPU under the GIL; on an operator
reconciling a hundred campaigns it held every other campaign's pass behind it. So the engine never fits by itself
when it is given a ``Fitter``: it describes the fit it needs as a `FitRequest` (the ladder's finished runs and the
options of `conclude.conclude_ladder` — picklable, with a key that is a hash of exactly those) and asks the fitter,
which answers with the conclusion, or None while it is still being computed elsewhere (the operator's process pool,
`kube/fitpool.py`). The engine then goes on with everything that does not need the fit (launching the ladder's next
runs) and waits, in its status as it stands, for the rest: a pass with the fit ready decides exactly what a pass
fitting inline would have. Without a fitter (`flopwise run`, tests) the fit is computed inline, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from flopwise.api.status import RunRecord
from flopwise.engine import conclude
from flopwise.fitting.fit import HOFFMANN_GRID, StartGrid
from flopwise.planning.laws import ScalingLaw


@dataclass(frozen=True)
class FitRequest:
    """One conclusion of the ladder: its finished runs (and the final run's partial leg, ``extra``) and options."""

    runs: tuple[RunRecord, ...]
    flops: float
    prior: ScalingLaw
    resamples: int = 0
    seed: int = 0
    grid: StartGrid = HOFFMANN_GRID
    floor_sd: float | None = None
    extra: tuple[RunRecord, ...] = ()
    backtest_holdout: bool = True
    owner: str = field(default="", compare=False)  # who asked (a campaign): scheduling only, not the fit

    @property
    def key(self) -> str:
        """A hash of everything the fit reads: the same key, the same fit."""
        digest = hashlib.sha256()
        for record in (*self.runs, b"|", *self.extra):
            digest.update(record if isinstance(record, bytes) else record.model_dump_json().encode())
        digest.update(repr((self.flops, self.prior, self.resamples, self.seed, self.grid, self.floor_sd,
                            self.backtest_holdout)).encode())
        return digest.hexdigest()


def request_for(records: list[RunRecord], **options: object) -> FitRequest:
    """The request for ``records`` (a campaign's runs): only what `conclude.endpoints` reads goes along."""
    points = tuple(r for r in records if r.role in ("ladder", "seed") and conclude.is_point(r))
    extra = tuple(options.pop("extra", None) or ())  # type: ignore[arg-type]
    return FitRequest(runs=points, extra=extra, **options)  # type: ignore[arg-type]


def run_fit(request: FitRequest) -> conclude.Conclusion:
    """The fit itself (raises FitInputError when there is not enough to fit): inline, or in a worker process."""
    return conclude.conclude_ladder(list(request.runs), flops=request.flops, prior=request.prior,
                                    resamples=request.resamples, seed=request.seed, grid=request.grid,
                                    floor_sd=request.floor_sd, extra=list(request.extra) or None,
                                    backtest_holdout=request.backtest_holdout)


Fitter = Callable[[FitRequest], "conclude.Conclusion | None"]
"""Answers a request with its conclusion, or None while it is being computed elsewhere; raises FitInputError as
`run_fit` does."""
