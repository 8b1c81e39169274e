"""A warm trainer: one process that has imported torch and the trainer once, and forks a run per request.

Why: on these CPUs a run's own interpreter spends ~2.7 s importing torch before it trains. That is as long as a
test campaign's tiny runs train, and ~12% of the quickstart's 30 runs. The local executor
(:mod:`flopwise.executors.local`) starts one ``python -m flopwise_trainer.warm`` and writes it one JSON line per run:
``{"argv": [...], "env": {...}, "log": path}``. The server forks; the child starts its own session (as the
executor's ``start_new_session`` did), points stdin at /dev/null and stdout and stderr at the run's log, takes the
run's environment and runs ``flopwise-train``'s own ``main`` with the argv: the same code path as the command, so
the same run (tests/test_local_warm.py compares the losses of both ways). Once the child has its own session it
says so on a pipe, and only then does the server answer ``{"pid": …, "start": …}`` (the child's start time in clock
ticks since boot, /proc/PID/stat field 22: with the pid, an identity no reused pid can fake), so a signal the
executor sends to the run's process group always reaches it. The server reaps its children and exits when its
stdin closes (the executor ended); runs it started go on, in their own sessions, like runs started any other way.

The server forks from its main thread before any torch operation, so no intra-op thread pool exists to be lost in
the child; each run sets its own thread count (``--threads``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import IO

from flopwise.processes import start_time

REAP_SECONDS = 0.05


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Fork a run per request line until ``requests`` ends."""
    import torch  # noqa: F401 — the point of this process: imported once, inherited by every run

    import flopwise_trainer.train  # noqa: F401
    from flopwise_trainer.cli import main

    lock = threading.Lock()  # a child cannot be reaped between its fork and the reading of its start time

    def reap() -> None:
        while True:
            time.sleep(REAP_SECONDS)
            with lock:
                try:
                    while os.waitpid(-1, os.WNOHANG)[0]:
                        pass
                except ChildProcessError:
                    pass

    threading.Thread(target=reap, name="reaper", daemon=True).start()
    for line in requests:
        request = json.loads(line)
        replies.flush()
        sys.stderr.flush()
        ready, told = os.pipe()
        with lock:
            pid = os.fork()
            if pid == 0:
                os.close(ready)
                _run(request, main, told)
            os.close(told)
            os.read(ready, 1)  # the child has its own session: a signal to its group reaches it from now on
            os.close(ready)
            started = start_time(pid)
        replies.write(json.dumps({"pid": pid, "start": started}) + "\n")
        replies.flush()


def _run(request: dict, main, told: int) -> None:  # type: ignore[no-untyped-def]
    """In the forked child: become the run, as `flopwise-train ARGV` started in its own session would be; say so on
    ``told`` once its session is its own."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.write(told, b".")
        os.close(told)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["flopwise-train", *request["argv"]]
        try:
            main.main(args=list(request["argv"]), prog_name="flopwise-train")
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # whatever happens, the child must never return into the server's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
