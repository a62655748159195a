"""The ``synth`` application and what every command shares: one-line failures and errors."""

from __future__ import annotations

import contextlib
from typing import NoReturn

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Synthesize embedding and reranker training data."
)


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2: how every bad input ends (no traceback, no usage box)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def config_error(exc: Exception) -> str:
    """A pydantic error as "key: what is wrong" lines, without its links and type tags."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    from ..config import nearest_key

    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "config"
        if error.get("type") == "extra_forbidden":
            *parent, last = error["loc"]
            nearest = nearest_key(tuple(parent), str(last))
            lines.append(f"{key}: unknown setting" + (f" (did you mean {nearest}?)" if nearest else ""))
            continue
        lines.append(f"{key}: {error['msg']} (given: {error['input']!r})")
    return "; ".join(lines)


@contextlib.contextmanager
def checked(*errors: type[Exception]):
    """Meanwhile, an error of these types is one line and exit status 2 (``fail``)."""
    try:
        yield
    except errors as exc:
        fail(str(exc))


@contextlib.contextmanager
def one_line_errors(out: str):
    """The errors a user can meet during a run, as one line (exit 2); an interrupt as exit 130."""
    from ..engine import EngineStartError
    from ..engine.openai_engine import EngineStopped, EngineUnavailable
    from ..executors import Interrupted
    from ..executors.local import WorkersFailed
    from ..executors.ray import RayUnavailable
    from ..generate.personas import PersonaError
    from ..generate.prompts import PromptError
    from ..readers.documents import CorpusError
    from ..run.folder import LeaseHeld, RunStateError
    from ..storage import WriteFailed

    try:
        yield
    except WorkersFailed as exc:
        typer.secho(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except WriteFailed as exc:
        resume = f"finished chunks are saved in {out}: free space or make it writable, then rerun the command"
        typer.secho(f"error: {exc}; {resume}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except EngineStopped as exc:
        resume = f"finished chunks are saved in {out}: run the same command again to resume"
        typer.secho(f"error: {exc}; {resume}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except (
        CorpusError,
        PersonaError,
        PromptError,
        RunStateError,
        LeaseHeld,
        EngineUnavailable,
        EngineStartError,
        RayUnavailable,
    ) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except (Interrupted, KeyboardInterrupt) as exc:
        typer.secho(
            f"interrupted: finished chunks are saved in {out}; run the same command again to resume",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(130) from exc
