"""`flopwise data`: prepare token shards the trainer reads (numpy only, no torch)."""

from __future__ import annotations

import click


@click.group("data")
def command() -> None:
    """Prepare training data as memory-mapped token shards."""


@command.command("stdlib")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--max-bytes", type=click.IntRange(min=1), default=None, help="Stop after this many bytes.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Last fraction of the tokens held out for validation.")
@click.option("--include", multiple=True, help="Glob on the library-relative path (repeatable), e.g. 'email/*'.")
@click.option("--exclude", multiple=True, help="Glob on the library-relative path to leave out (repeatable).")
def stdlib(out_dir: str, max_bytes: int | None, val_fraction: float, include: tuple[str, ...],
           exclude: tuple[str, ...]) -> None:
    """Byte-level tokens (vocab 256) of the Python standard library's own .py files: a real corpus
    every machine has without a download."""
    from flopwise.data import prepare_stdlib

    meta = prepare_stdlib(out_dir, max_bytes=max_bytes, val_fraction=val_fraction, include=include,
                          exclude=exclude)
    click.echo(f"{out_dir}: {meta['tokens']['train']:,} train + {meta['tokens']['val']:,} val tokens "
               f"({meta['dtype']}, vocab {meta['vocabSize']}) from {meta['source']}")
