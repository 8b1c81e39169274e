"""The table a scaling-law fit consumes: one row per (run, checkpoint) with N, D and the loss.

Rows come from a CSV (``params,tokens,loss`` and optionally ``run``, ``step``) or from arrays. Validation
fails early with a :class:`FitInputError` whose message names the column or line and says how to fix it,
so the command line can print it as one line instead of a traceback.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_POINTS = 5
REQUIRED_COLUMNS = ("params", "tokens", "loss")
OPTIONAL_COLUMNS = ("run", "step")


class FitInputError(ValueError):
    """Points that cannot be fitted; the message says which column/row and what to do."""


@dataclass(frozen=True)
class FitPoints:
    """Parallel arrays. Without run ids, points of the same ``params`` count as one run."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    run: np.ndarray  # str ids
    step: np.ndarray | None = None
    explicit_runs: bool = False  # run ids were given (not derived from params)

    @classmethod
    def from_arrays(
        cls,
        params: Sequence[float] | np.ndarray,
        tokens: Sequence[float] | np.ndarray,
        loss: Sequence[float] | np.ndarray,
        run: Sequence[str] | np.ndarray | None = None,
        step: Sequence[int] | np.ndarray | None = None,
        *,
        validate: bool = True,
    ) -> FitPoints:
        """Build and (unless ``validate=False``, e.g. raw curves before hygiene) check the points."""
        p = np.asarray(params, dtype=float).ravel()
        t = np.asarray(tokens, dtype=float).ravel()
        y = np.asarray(loss, dtype=float).ravel()
        if not (p.size == t.size == y.size):
            raise FitInputError(f"params, tokens and loss differ in length ({p.size}, {t.size}, {y.size})")
        r = np.array([f"N={v:.6g}" for v in p] if run is None else [str(v) for v in run], dtype=object)
        s = None if step is None else np.asarray(step, dtype=float).ravel()
        if r.size != p.size or (s is not None and s.size != p.size):
            raise FitInputError("run/step columns must have one entry per point")
        points = cls(params=p, tokens=t, loss=y, run=r, step=s, explicit_runs=run is not None)
        if validate:
            points.validate()
        return points

    def validate(self, source: str = "points") -> None:
        for name in REQUIRED_COLUMNS:
            values = getattr(self, name)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise FitInputError(
                    f"{source}: column '{name}' is NaN or infinite at row {bad[0] + 1} ({bad.size} rows); "
                    "drop those rows (diverged runs belong out of the fit)"
                )
            bad = np.flatnonzero(values <= 0)
            if bad.size:
                raise FitInputError(
                    f"{source}: column '{name}' must be > 0, got {values[bad[0]]:g} at row {bad[0] + 1} "
                    f"({bad.size} rows); fix or drop them"
                )
        if len(self) < MIN_POINTS:
            raise FitInputError(
                f"{source}: only {len(self)} point(s); a scaling-law fit needs at least {MIN_POINTS} "
                "(params, tokens, loss) rows — add runs or intermediate checkpoints"
            )

    def __len__(self) -> int:
        return int(self.params.size)

    def subset(self, mask: np.ndarray) -> FitPoints:
        return FitPoints(
            params=self.params[mask], tokens=self.tokens[mask], loss=self.loss[mask], run=self.run[mask],
            step=None if self.step is None else self.step[mask], explicit_runs=self.explicit_runs,
        )

    @property
    def log_x(self) -> np.ndarray:
        """(n, 2): log N, log D — the inputs of the objective."""
        return np.stack([np.log(self.params), np.log(self.tokens)], axis=1)

    @property
    def log_y(self) -> np.ndarray:
        return np.log(self.loss)

    def run_ids(self) -> list[str]:
        """Distinct runs in first-seen order."""
        return list(dict.fromkeys(self.run.tolist()))

    def n_distinct_sizes(self) -> int:
        return int(np.unique(self.params).size)


def load_points_csv(path: str | Path) -> FitPoints:
    """Read ``params,tokens,loss[,run,step]``; every problem raises :class:`FitInputError`."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except FileNotFoundError:
        raise FitInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FitInputError(f"{path}: cannot read it as CSV ({exc})") from None
    if not header:
        raise FitInputError(f"{path}: empty file; expected a header line 'params,tokens,loss[,run,step]'")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise FitInputError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; header is {','.join(header)!r}, "
            "expected params,tokens,loss[,run,step]"
        )
    columns: dict[str, list[float]] = {c: [] for c in REQUIRED_COLUMNS}
    runs: list[str] = []
    steps: list[float] = []
    has_run, has_step = "run" in header, "step" in header
    for line, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in raw.items()}
        if not any(row.values()):
            continue  # blank line
        for c in REQUIRED_COLUMNS:
            columns[c].append(_number(row.get(c, ""), c, line, path))
        if has_run:
            runs.append(row.get("run", ""))
        if has_step:
            steps.append(_number(row.get("step", ""), "step", line, path))
    points = FitPoints.from_arrays(
        columns["params"], columns["tokens"], columns["loss"],
        run=runs if has_run else None, step=steps if has_step else None, validate=False,
    )
    try:
        points.validate(source=str(path))
    except FitInputError as exc:  # rows → file lines (header is line 1, blank lines aside)
        raise FitInputError(str(exc).replace(" at row ", " at data row ")) from None
    return points


def _number(text: str, column: str, line: int, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FitInputError(f"{path}: line {line}, column '{column}' is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise FitInputError(
            f"{path}: line {line}, column '{column}' is {text}; drop the row (diverged runs belong out of the fit)"
        )
    if value <= 0 and column != "step":
        raise FitInputError(f"{path}: line {line}, column '{column}' must be > 0, got {text}")
    return value
