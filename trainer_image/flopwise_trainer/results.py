"""The result protocol: ``result.json`` (everything), ``summary.json`` and the termination message (compact).

The termination message is what the operator reads from the finished pod, so it is ``RunSummary.to_message()``
(≤ 4096 bytes by construction). It goes to ``$FLOPWISE_TERMINATION_LOG`` or an explicit path when given, else
to ``/dev/termination-log`` when that file is writable (it is in a Kubernetes container), else nowhere.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path

from flopwise.contract import PROGRESS_FILE, RunProgress, RunSummary

TERMINATION_ENV = "FLOPWISE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
EXIT_CODES = {"succeeded": 0, "failed": 1, "diverged": 2}


def termination_log_path(explicit: str | None = None) -> Path | None:
    chosen = explicit or os.environ.get(TERMINATION_ENV)
    if chosen:
        return Path(chosen)
    default = Path(DEFAULT_TERMINATION_LOG)
    if default.is_file() and os.access(default, os.W_OK):
        return default
    return None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _finite(obj: object) -> object:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_results(summary: RunSummary, output_dir: str | Path | None, details: dict | None = None,
                  termination_log: str | None = None) -> str:
    """Write result.json + summary.json (when there is an output folder) and the termination message."""
    message = summary.to_message()
    if output_dir is not None:
        out = Path(output_dir)
        try:
            full = {"summary": summary.model_dump(mode="json", by_alias=True), **(details or {})}
            _atomic_write(out / "result.json", json.dumps(_finite(full), indent=1, default=str))
            _atomic_write(out / "summary.json", message)
        except OSError as e:  # an unwritable output folder must not hide the run's status
            print(f"flopwise-train: cannot write results to {out}: {e}", file=sys.stderr)
    path = termination_log_path(termination_log)
    if path is not None:
        try:
            path.write_text(message)
        except OSError as e:
            print(f"flopwise-train: cannot write termination message to {path}: {e}", file=sys.stderr)
    return message


def write_progress(progress: RunProgress, output_dir: str | Path) -> None:
    """Rewrite ``progress.json`` atomically (readers see the old or the new file, never a torn one). It is
    advisory: a failure to write it never stops the run."""
    with contextlib.suppress(OSError):
        _atomic_write(Path(output_dir) / PROGRESS_FILE, progress.to_json())
