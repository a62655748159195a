"""The ``synth`` command line: a thin shell over the library, one module per group of commands.

- ``generate``: ``generate``, ``plan``, ``regate``, ``prepare`` (making a run);
- ``handover``: ``stats``, ``export``, ``report``, ``publish`` (a run handed on);
- ``review``: ``review``, ``calibrate`` (a person's labels);
- ``train``: ``train``, ``train-reranker``, ``eval``, ``split``, ``merge`` (the model side);
- ``loop``: ``loop`` (generate, split, train and eval, round after round).

Each command turns its flags into one typed object (``options.GenerateOptions``, the trainers'
configs) and calls one function of the library; the options a run takes are declared once, in
``options``; every check that needs no model lives in ``pipeline/preflight.py``.
"""

from __future__ import annotations

import sys

import typer

from . import generate, handover, loop, review, train  # noqa: F401 - each registers its commands
from .app import app
from .options import parse_weights

__all__ = ["app", "main", "parse_weights"]


def main() -> None:
    """The ``synth`` command: every error a user can meet is one line; an unexpected one is one
    line too, with the log file that holds its traceback (``--verbose`` prints it as well).

    Whatever is printed passes the redaction (``pipeline/redaction.py``): no secret reaches the
    terminal, whichever command or library wrote it.
    """
    from .. import redaction, storage

    redaction.install_on_terminal()
    try:
        app()
    except storage.StorageError as exc:  # a place that cannot be used as given: every command
        typer.secho(f"error: {redaction.redact(exc)}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as exc:  # the last line of defence: the commands name every expected error
        import traceback

        from .. import console

        try:
            where = f"; the traceback is in {console.crash_report(exc)}"
        except OSError:  # a full disk or a read-only cache folder: the terminal gets it anyway
            where = ""
        if "--verbose" in sys.argv or "-v" in sys.argv[1:]:
            print(redaction.redact("".join(traceback.format_exception(exc))), file=sys.stderr)
        first = (str(exc).strip().splitlines() or [""])[0]
        message = redaction.redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
        typer.secho(f"error: unexpected {message}{where}", fg=typer.colors.RED, err=True)
        sys.exit(1)
