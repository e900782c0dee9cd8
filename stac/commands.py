"""What every command line shares (stac-runtime, stac-edge, stac-bench, stac-calibrate, stac-export): the --tables
option, and library errors turned into one-line CLI errors. The commands themselves live beside what they drive."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from .tables import TableSet

# what a library call raises for bad options, input or files: the message is for the user, the traceback is not
LIBRARY_ERRORS = (ValueError, FileNotFoundError)


@contextlib.contextmanager
def cli_errors(*extra: type[Exception]) -> Iterator[None]:
    """Run a command's library calls: LIBRARY_ERRORS (and ``extra``) become a one-line error and exit status 1."""
    try:
        yield
    except (*LIBRARY_ERRORS, *extra) as e:
        raise click.ClickException(str(e)) from None


def tables_option(help: str = "tables.json (default: the built-in set)", required: bool = False,
                  builtin: bool = True, default: str | None = None):
    """--tables FILE (or ``default``), given to the command as ``tables``, a loaded TableSet; when absent, the
    built-in set (``builtin``) or None."""

    def load(ctx: click.Context, param: click.Parameter, value: str | None) -> TableSet | None:
        if value is None:
            return TableSet.default() if builtin and not required else None
        with cli_errors():  # TableSetError: unreadable, malformed or inconsistent
            return TableSet.load(value)

    return click.option("--tables", "tables", type=click.Path(dir_okay=False), required=required, default=default,
                        show_default=default is not None, callback=load, help=help)
