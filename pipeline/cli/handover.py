"""``synth stats``, ``export``, ``report`` and ``publish``: a run handed on."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import app, checked, fail

Run = Annotated[str, typer.Argument(help="Output folder of a finished run (a path or a URL).")]


def finished(out: str) -> dict:
    """The manifest of a finished run, or one line saying what is missing (exit 2)."""
    from ..run.finished import RunNotFinished, finished_run

    with checked(RunNotFinished):
        return finished_run(out)


@app.command()
def stats(out: Annotated[str, typer.Argument(help="Output folder of a run (a path or a URL).")]) -> None:
    """Print the funnel of a finished run."""
    from ..run.folder import RunFolder
    from ..run.stats import format_funnel

    path = RunFolder(out).stats_file
    if not path.exists():
        fail(f"{path} not found")
    typer.echo(format_funnel(json.loads(path.read_text())))


@app.command()
def export(
    out: Run,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="sentence-transformers, flagembedding, swift, or corpus (a domain run's documents).",
        ),
    ] = "sentence-transformers",
    dest: Annotated[
        str | None, typer.Option("--out", help="Folder for the files (default: OUT/export/FORMAT).")
    ] = None,
    instruction: Annotated[
        bool, typer.Option(help="Keep each row's instruction on the query side (Qwen3-Embedding format).")
    ] = True,
) -> None:
    """Write the run's rows for a trainer: one file per task type, one row per row of the run."""
    from ..handover.export import FORMATS
    from ..handover.export import export as write_export

    if format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    finished(out)
    result = write_export(out, format, dest, instruction=instruction)
    for name, rows in result.files.items():
        typer.echo(f"{result.folder / name}: {rows} rows")


@app.command()
def report(
    out: Run,
    dest: Annotated[str | None, typer.Option("--out", help="HTML file (default: OUT/report.html).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random sample rows shown.")] = 0,
) -> None:
    """One self-contained HTML page: the funnel, distributions, cosines, negatives, sample rows."""
    from ..handover.report import write_report

    finished(out)
    typer.echo(f"report: {write_report(out, dest, seed)}")


@app.command()
def publish(
    out: Run,
    repo_id: Annotated[
        str, typer.Option(help="Dataset repo on the Hub, NAMESPACE/NAME (created if needed).")
    ],
    private: Annotated[
        bool | None,
        typer.Option(
            "--private/--public",
            help="Make the repo private or public (an existing one too). Neither: a new repo is public, "
            "an existing one stays as it is.",
        ),
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Branch to commit to (created if needed).")] = None,
    include_rejected: Annotated[bool, typer.Option(help="Upload rejected/ (dropped rows) too.")] = False,
    keep_existing: Annotated[
        bool,
        typer.Option(
            help="Keep files an earlier publish left in the repo (default: the commit deletes them)."
        ),
    ] = False,
) -> None:
    """Upload the shards, dataset card and stats.json to a Hub dataset repo in one commit.

    The revision then holds exactly this run's files: an earlier publish's files are deleted in
    the same commit (--keep-existing keeps them). The token comes from HF_TOKEN or the stored
    login (`hf auth login`) and is never printed; HF_ENDPOINT points at another Hub server.
    The HTTP client's lines go to a log file under the cache folder's logs/.
    """
    from .. import console
    from ..handover.publish import PublishError
    from ..handover.publish import publish as upload
    from ..models import cache_root
    from ..run.finished import RunNotFinished

    console.start_logging(out, False, command="publish", logs=cache_root() / "logs")
    with checked(RunNotFinished, PublishError):
        done = upload(
            out,
            repo_id,
            private=private,
            revision=revision,
            include_rejected=include_rejected,
            keep_existing=keep_existing,
        )
    typer.echo(f"published {len(done.files)} files to {done.repo_url} in one commit: {done.commit_url}")
    if done.deleted:
        typer.echo(f"removed {len(done.deleted)} files of an earlier publish (--keep-existing keeps them)")
    if done.visibility:
        typer.echo(f"the repo is now {done.visibility}")
