"""The `flopwise` command line. Each subcommand lives in its own module and imports its heavy
dependencies (torch, kopf, matplotlib) lazily, so `flopwise validate` stays fast and light.

Bad input never shows a traceback: every user-facing error type carries a message naming the field and the
fix, and `main` turns it into one clean line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys

import click

from flopwise import __version__

USAGE_ERROR = 2
INTERNAL_ERROR = 70


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flopwise")
def cli() -> None:
    """Turn a compute budget into the best model it can buy."""


def _register() -> None:
    from flopwise.cli import data_cmd, fit_cmd, operator_cmd, plan_cmd, run_cmd, status_cmd

    for command in (*plan_cmd.COMMANDS, run_cmd.command, *status_cmd.COMMANDS, fit_cmd.command, data_cmd.command,
                    operator_cmd.command):
        cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI, turning user errors into one clean message each."""
    try:
        code = cli.main(args=argv, prog_name="flopwise", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Exit as done:
        return done.exit_code
    except ValueError as error:  # CampaignError, PlanError, FitInputError, … all say what to fix
        click.echo(f"error: {error}", err=True)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get("FLOPWISE_DEBUG"):
            raise
        click.echo(f"internal error: {type(error).__name__}: {error} (set FLOPWISE_DEBUG=1 for the traceback)",
                   err=True)
        return INTERNAL_ERROR
    return code if isinstance(code, int) else 0  # a command's ctx.exit(n) comes back as its return value


if __name__ == "__main__":
    sys.exit(main())
