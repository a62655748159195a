"""The ``synth`` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Synthesize embedding and reranker training data."
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def generate(
    lang: Annotated[
        str | None, typer.Option(help="Query language(s), comma-separated ISO codes: zh or zh,en.")
    ] = None,
    corpus: Annotated[
        str | None, typer.Option(help="JSONL/Parquet file, folder of .txt, or HF dataset.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many passages.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Generator: hub id or local folder (wins over defaults).")
    ] = None,
    embedder: Annotated[str | None, typer.Option(help="Embedder: hub id or local folder.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: a.b=value.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Turn a corpus into query / positive training rows."""
    from .config import load_config
    from .corpus import CorpusError
    from .personas import PersonaError
    from .prompts import PromptError
    from .runner import run_generate

    _setup_logging(verbose)
    overrides = list(set_ or [])
    try:
        cfg = load_config(config, overrides)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if lang:
        cfg.generation.languages = [x.strip() for x in lang.split(",") if x.strip()]
    if corpus:
        cfg.corpus.path = corpus
    if limit:
        cfg.limit = limit
    if model:
        cfg.models.generator = model
    if embedder:
        cfg.models.embedder = embedder
    if out:
        cfg.output.out_dir = out
    cfg = type(cfg).model_validate(cfg.model_dump())  # re-check after the flags
    try:
        result = run_generate(cfg)
    except (CorpusError, PersonaError, PromptError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    from .stats import format_funnel

    typer.echo(format_funnel(result.stats.to_json()))
    timings = result.stats.timings
    typer.echo(
        "time: total {total:.1f}s, engine start {engine_start:.1f}s, generation {generation:.1f}s".format(
            **{k: timings.get(k, 0.0) for k in ("total", "engine_start", "generation")}
        )
    )
    typer.echo(
        f"{result.stats.rows_out} rows in {len(result.shards)} shard(s) under {result.out_dir / 'data'}"
    )


@app.command()
def prepare(
    model: Annotated[str | None, typer.Option(help="Generator to resolve instead of the default.")] = None,
) -> None:
    """Resolve the default models now (converting the packaged SmolLM2 once) and print them."""
    from .models import resolve_embedder, resolve_generator

    _setup_logging(False)
    generator = resolve_generator(model)
    embedder = resolve_embedder(None)
    typer.echo(f"generator: {generator.name}\n  at {generator.path}")
    typer.echo(f"embedder: {embedder.name}\n  at {embedder.path}")


@app.command()
def stats(out: Annotated[Path, typer.Argument(help="Output folder of a run.")]) -> None:
    """Print the funnel of a finished run."""
    from .stats import format_funnel

    path = out / "stats.json"
    if not path.exists():
        typer.secho(f"error: {path} not found", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(format_funnel(json.loads(path.read_text())))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # engines spawn processes: keep the guard
    main()
