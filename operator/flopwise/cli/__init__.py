"""The `flopwise` command line. Each subcommand lives in its own module and imports its heavy
dependencies (torch, kopf, matplotlib) lazily, so `flopwise validate` stays fast and light."""

from __future__ import annotations

import click

from flopwise import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flopwise")
def main() -> None:
    """Turn a compute budget into the best model it can buy."""


def _register() -> None:
    from flopwise.cli import data_cmd, fit_cmd

    for module in (fit_cmd, data_cmd):
        main.add_command(module.command)


_register()
