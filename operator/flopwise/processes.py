"""Which process is a run: a pid and its start time, read from /proc (Linux), so a reused pid is never taken for
a run that ended. Shared by the local executor and the warm trainer (:mod:`flopwise_trainer.warm`)."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first, start time at index 19); None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22); None when it is gone."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def running(pid: int, started: int) -> bool:
    """Is the process that started at ``started`` still there and not a zombie?"""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == started
