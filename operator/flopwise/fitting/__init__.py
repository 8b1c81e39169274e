"""Scaling-law fitting: L(N, D) = E + A/N^α + B/D^β from a campaign's losses (numpy and scipy only).

* :mod:`.objective` — Hoffmann/Epoch's summed Huber loss on log L with its exact gradient, batched over starts;
* :mod:`.lbfgs` — L-BFGS for thousands of starts at once;
* :mod:`.fit` — the grid fit, borrowed-exponent and fixed-ratio reduced fits, and the rule choosing between them;
* :mod:`.bootstrap` — percentile intervals for the parameters, the compute-optimal N, D and predicted losses;
* :mod:`.hygiene` — checkpoint cut-off, diverged runs, per-run weights (the Hitchhiker's guide);
* :mod:`.backtest` — hold out the largest model and report the ARE of its predicted loss;
* :mod:`.points`, :mod:`.anchors` — the point table, CSV validation, and the published data sets.
"""

from flopwise.fitting.backtest import BacktestResult, backtest
from flopwise.fitting.bootstrap import BootstrapResult, Interval, bootstrap
from flopwise.fitting.fit import (
    COARSE_GRID,
    HOFFMANN_GRID,
    FitResult,
    RatioLaw,
    StartGrid,
    choose_fit_mode,
    fit_fixed_ratio,
    fit_law,
    fit_points,
)
from flopwise.fitting.hygiene import CleanPoints, clean
from flopwise.fitting.points import FitInputError, FitPoints, load_points_csv

__all__ = [
    "COARSE_GRID", "HOFFMANN_GRID", "BacktestResult", "BootstrapResult", "CleanPoints", "FitInputError",
    "FitPoints", "FitResult", "Interval", "RatioLaw", "StartGrid", "backtest", "bootstrap", "choose_fit_mode",
    "clean", "fit_fixed_ratio", "fit_law", "fit_points", "load_points_csv",
]
