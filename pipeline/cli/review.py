"""``synth review`` and ``synth calibrate``: a person's labels on a run, and what they measure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail
from .handover import finished

Run = Annotated[str, typer.Argument(help="Output folder of a finished run (a path or a URL).")]


@app.command()
def review(
    out: Run,
    sample: Annotated[int, typer.Option(help="Rows to review, across kept and dropped rows.", min=1)] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the sample (the same seed continues a review).")] = 0,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on (::1 for IPv6; 0.0.0.0: every address, with a token)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).", min=0, max=65535)] = 8765,
    reviewer: Annotated[str | None, typer.Option(help="Name saved with each label (default: login).")] = None,
) -> None:
    """Judge sampled rows in the browser with the keyboard; each decision is saved as it is made.

    The labels go to OUT/review/ (one Parquet file per decision); stop with Ctrl+C and start
    again with the same --sample and --seed to continue. `synth calibrate OUT` reads them.
    """
    from .. import console
    from ..models import cache_root
    from ..redaction import show
    from ..review.server import Review, listen, new_token, page_address, serve

    finished(out)
    name = reviewer or login()
    console.start_logging(out, False, command="review", logs=cache_root() / "logs")
    try:
        listener = listen(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    state = Review(out, sample, seed, name)
    token = new_token(host)  # off loopback: the page asks for the token printed here
    progress = state.progress()
    typer.echo(
        f"review of {out}: {progress['sample']} sampled rows, {progress['labelled']} labelled so far "
        f"(reviewer {name})"
    )
    # the token is the user's to see: printed past the terminal's redaction, on purpose
    show(
        f"open {page_address(host, listener, token)}  (keys: g good, q bad query, p positive does not answer,"
    )
    typer.echo("  1-9 a negative answers, s skip, n note; Ctrl+C stops, labels are saved as you go)")
    serve(state, host, listener, token)
    done = state.progress()
    typer.echo(f"{done['labelled']} of {done['sample']} rows labelled; next: synth calibrate {out}")


def login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


@app.command()
def calibrate(
    out: Annotated[str, typer.Argument(help="Output folder of a reviewed run (a path or a URL).")],
    precision: Annotated[
        float, typer.Option(help="Target precision the suggested settings should reach.", min=0.0, max=1.0)
    ] = 0.9,
    labels: Annotated[
        str | None, typer.Option(help="A label file to read instead of OUT/review/ (Parquet).")
    ] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="The figures as JSON (-: stdout).")] = None,
    write_config: Annotated[
        str | None, typer.Option(help="Write the suggested settings as YAML (regate --config, a new run).")
    ] = None,
) -> None:
    """Each filter's precision and recall on this run from your labels, and the settings for a target.

    With the run's own labels, also saves the figures as OUT/review/calibration.json and rewrites
    the dataset card with the measured precision of its kept rows (`synth report` shows them too).
    """
    from .. import storage
    from ..handover.card import refresh_card
    from ..review.calibrate import calibrate_run, format_calibration, write_suggested
    from ..review.labels import load_labels
    from ..run.folder import RunFolder

    manifest = finished(out)
    source = labels or out
    try:
        records = load_labels(source)
    except FileNotFoundError:
        fail(f"{source}: no such label file")
    except OSError as exc:
        fail(f"{source}: {exc.strerror or exc}")
    result = calibrate_run(out, precision, records)
    if result is None:
        fail(f"no labels in {source}: label rows first with `synth review {out}`")
    if json_out == "-":
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(format_calibration(result))
        if json_out:
            Path(json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if write_config:
        write_suggested(result, write_config, out, precision)
        typer.echo(f"suggested settings: {write_config}", err=json_out == "-")
    if labels is None and manifest:  # the run's own labels: the card and the report show them
        folder = RunFolder(out)
        storage.write_json(folder.calibration_file, result)
        refresh_card(folder)
