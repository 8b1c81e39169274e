"""Which process is a run: a pid and its start time, read from /proc (Linux), so a reused pid is never taken for
a run that ended. Shared by the local executor and the warm trainer (:mod:`flopwise_trainer.warm`)."""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def running(pid: int, started: int) -> bool:
    """Is the process that started at ``started`` still there and not a zombie?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0] != "Z" and int(fields[19]) == started
