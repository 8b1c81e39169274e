"""Executors carry out the engine's launches and report what they observe. The engine never knows which."""

from __future__ import annotations

from typing import Protocol

from flopwise.api.status import RunRecord
from flopwise.contract import RunSpec
from flopwise.engine.machine import Observation


class Executor(Protocol):
    def launch(self, record: RunRecord, spec: RunSpec) -> bool:
        """Start the run unless it exists already (idempotent on the run id)."""

    def observe(self, records: list[RunRecord]) -> list[Observation]:
        """What became of each Running record: absent, running, succeeded, failed or lost."""

    def cancel(self, run_id: str) -> None: ...
