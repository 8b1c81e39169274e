"""``flopwise-train``: run one ``RunSpec`` and exit 0 (succeeded), 1 (failed) or 2 (diverged).

The spec comes from a JSON/YAML file argument, else ``$FLOPWISE_RUN_SPEC`` (JSON text), else
``$FLOPWISE_RUN_SPEC_FILE`` (a path). A spec that cannot be read still produces a failure summary on the
termination log, so the operator learns why instead of watching a crash loop.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import yaml

from flopwise.contract import RunSpec, RunSummary

SPEC_ENV = "FLOPWISE_RUN_SPEC"
SPEC_FILE_ENV = "FLOPWISE_RUN_SPEC_FILE"


def load_spec(path: str | None) -> RunSpec:
    if path is None and os.environ.get(SPEC_ENV):
        return RunSpec.model_validate(json.loads(os.environ[SPEC_ENV]))
    path = path or os.environ.get(SPEC_FILE_ENV)
    if not path:
        raise click.UsageError(f"give a spec file, or set {SPEC_ENV} (JSON) or {SPEC_FILE_ENV}")
    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    return RunSpec.model_validate(data)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec_path", required=False, type=click.Path(dir_okay=False))
@click.option("--termination-log", default=None, help="Where to write the compact summary "
              "(default: $FLOPWISE_TERMINATION_LOG, else /dev/termination-log when writable).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
def main(spec_path: str | None, termination_log: str | None, threads: int | None) -> None:
    """Train one run described by a flopwise RunSpec."""
    from flopwise_trainer.results import EXIT_CODES, write_results

    try:
        spec = load_spec(spec_path)
    except click.UsageError:
        raise
    except Exception as e:
        summary = RunSummary(run_id=os.environ.get("FLOPWISE_RUN_ID", "unknown"), status="failed",
                             exit_reason=f"bad run spec: {type(e).__name__}: {e}"[:512])
        write_results(summary, None, termination_log=termination_log)
        click.echo(summary.exit_reason, err=True)
        sys.exit(EXIT_CODES["failed"])

    import torch

    if threads:
        torch.set_num_threads(threads)
    from flopwise_trainer.train import execute

    summary = execute(spec, termination_log=termination_log)
    if summary.status != "succeeded":
        click.echo(f"{summary.status}: {summary.exit_reason}", err=True)
    sys.exit(EXIT_CODES[summary.status])


if __name__ == "__main__":
    main()
