"""``synth generate``, ``synth plan``, ``synth regate`` and ``synth prepare``: making a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import options as o
from .app import app, checked, fail, one_line_errors


@app.command()
@o.run_options
def generate(
    options: o.GenerateOptions,
    holdout: Annotated[
        float | None,
        typer.Option(
            help="Once the run is finished, hold out this share of its documents (synth split OUT "
            "--fraction F): OUT/splits/train/ and a BEIR OUT/splits/eval/."
        ),
    ] = None,
    batch_results: Annotated[
        str | None,
        typer.Option(
            help="--engine batch: the batch runner's output for the requests file the last run wrote "
            "(OUT/batch/requests-RRR.jsonl). Checked line by line against it, then read into the run, "
            "which goes on to the next round."
        ),
    ] = None,
) -> None:
    """Turn a corpus into query / positive training rows. Rerun the same command to resume.

    Exit status 3: the budget stopped the run at a chunk boundary (finished chunks are saved).
    Exit status 4 (--engine batch): requests wait in a batch file; run them, then rerun with
    --batch-results FILE.
    """
    from .. import console
    from ..executors import run_generate
    from ..run.plan import RayOptions, check_executor

    cfg = o.run_config(options)
    if holdout is not None and not 0 < holdout < 1:
        raise typer.BadParameter("--holdout must be between 0 and 1")
    executor, verbose = options.executor, options.verbose
    with checked(ValueError):
        check_executor(
            executor,
            rank=options.rank,
            world_size=options.world_size,
            workers=options.workers,
            replicas=options.replicas,
            engine=cfg.models.engine,
        )
    if batch_results is not None:
        with checked(ValueError):
            read_batch_results(cfg, batch_results)
    console.start_logging(cfg.output.out_dir, verbose)
    ray = RayOptions(options.address, options.replicas, options.cpus_per_replica, show_worker_logs=verbose)
    with one_line_errors(cfg.output.out_dir):
        result = run_generate(
            cfg,
            rank=options.rank,
            world_size=options.world_size,
            executor=executor,
            ray_options=ray,
            workers=options.workers,
            overwrite=options.overwrite,
            verbose=verbose,
            accept_corpus_change=options.accept_corpus_change,
        )
    summarize(result, verbose)
    from ..run.folder import RunFolder

    # one process splits: rank 0, once the run is finished (else run synth split OUT when it is)
    if holdout is not None and options.rank == 0 and RunFolder(cfg.output.out_dir).manifest_file.exists():
        from .train import split

        split(Path(cfg.output.out_dir), fraction=holdout, seed=cfg.seed)


def read_batch_results(cfg, source: str) -> None:
    """A batch runner's results, checked against the last round's requests and kept in the run."""
    from ..console import say
    from ..engine.batch_engine import BatchFiles
    from ..run.folder import RunFolder

    if cfg.models.engine != "batch":
        raise ValueError("--batch-results reads a batch runner's output: give --engine batch too")
    files = BatchFiles(RunFolder(cfg.output.out_dir).batch_folder)
    round = files.round
    answered, failed = files.read_results(source)
    failures = f" ({failed:,} failed: their rows are dropped as request_failed)" if failed else ""
    say(f"batch round {round}: {answered:,} answers read from {source}{failures}")


def summarize(result, verbose: bool) -> None:
    """The closing lines of a run (the whole funnel too with ``--verbose``); exit 3 on a budget stop,
    4 while requests wait in a batch file."""
    from .. import console

    if verbose:
        from ..run.stats import format_funnel

        typer.echo(format_funnel(result.stats.to_json()), err=True)
    for line in console.summary(result, console.log_file()):
        typer.echo(line, err=True)
    if result.budget_stop:
        from ..run.budget import BUDGET_EXIT

        raise typer.Exit(BUDGET_EXIT)
    if result.batch_waiting:
        from ..engine.batch_engine import BATCH_EXIT

        raise typer.Exit(BATCH_EXIT)


@app.command("plan")
@o.run_options
def plan_command(
    options: o.GenerateOptions,
    pilot: Annotated[int, typer.Option(help="Passages the pilot runs through the engine and the gate.")] = 32,
    price_input: Annotated[
        float | None, typer.Option(help="Price per million prompt tokens not served from a cache.")
    ] = None,
    price_cached: Annotated[
        float | None, typer.Option(help="Price per million cached prompt tokens.")
    ] = None,
    price_output: Annotated[float | None, typer.Option(help="Price per million output tokens.")] = None,
    prices: Annotated[
        str | None, typer.Option(help="JSON file of prices per million tokens: {input, cached, output}.")
    ] = None,
    gpu: Annotated[
        str | None, typer.Option(help="With --model-size: project with a published throughput.")
    ] = None,
    model_size: Annotated[str | None, typer.Option(help="Generator size for --gpu, e.g. 32B.")] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="Write the plan as JSON here ('-': stdout).")
    ] = None,
    pilot_out: Annotated[
        str | None, typer.Option(help="Keep the pilot's run folder here (default: a removed scratch folder).")
    ] = None,
) -> None:
    """What a run will cost before it starts: a pilot through the real engine and gate, then the
    projection (requests, tokens, kept pairs, engine hours, money) with 95% intervals.

    Takes the same arguments as `synth generate`; the pilot runs in a scratch folder (--pilot-out
    keeps it), never in --out.
    """
    import shutil
    import tempfile

    from .. import console
    from ..executors.pilot import plan_run
    from ..run.projection import format_projection, plan_json, price_list, published_throughput

    if pilot < 2:
        fail("--pilot must be at least 2 passages")
    with checked(ValueError):
        cost = price_list(prices, input=price_input, cached=price_cached, output=price_output)
        throughput = published_throughput(gpu, model_size)
    scratch = pilot_out or tempfile.mkdtemp(prefix="synth-plan-")
    options.out = scratch  # the pilot's folder: the run's own --out is not touched
    cfg = o.run_config(options)
    console.start_logging(scratch, options.verbose)
    with one_line_errors(scratch):  # a failed pilot keeps its folder: its log says why
        projection, passages = plan_run(cfg, pilot, scratch=scratch, prices=cost, throughput=throughput)
    console.stop_logging()
    if not pilot_out:
        shutil.rmtree(scratch, ignore_errors=True)
    typer.echo(format_projection(projection, passages))
    if json_out == "-":
        typer.echo(plan_json(projection))
    elif json_out:
        Path(json_out).write_text(plan_json(projection) + "\n", encoding="utf-8")
        typer.echo(f"plan: {json_out}", err=True)


@app.command()
def regate(
    old: Annotated[str, typer.Argument(help="A finished (or stopped) run's output folder.")],
    out: Annotated[str, typer.Option(help="New output folder for the rerun.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A setting to change, e.g. filters.cosine.threshold=0.5."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help="YAML file of settings to change (synth calibrate --write-config)."),
    ] = None,
    cache: Annotated[str | None, typer.Option(help="Reply cache folder, if not the default one.")] = None,
    verbose: o.Verbose = False,
) -> None:
    """Rerun a run's gate with new settings through the reply cache, and compare the funnels.

    OLD's own config.yaml with the --config file's and then the --set changes, into --out: every
    prompt the change leaves alone is answered by the reply cache, so only rows that now reach
    a later LLM stage (negatives, judge) cost tokens.
    """
    from .. import console
    from ..executors import run_generate
    from ..run.folder import RunFolder
    from ..run.stats import format_comparison

    previous = RunFolder(old)
    if not previous.config_file.exists():
        fail(f"{old}: no config.yaml: not a run folder")
    if not previous.stats_file.exists():
        fail(f"{old}: no stats.json: the run has not written anything yet")
    flags = {"output.out_dir": out, "cache.path": cache, "cache.enabled": True}
    changes = [*(o.settings_file(config) if config else []), *(set_ or [])]
    cfg = o.checked_config(str(previous.config_file), changes, flags)
    console.start_logging(cfg.output.out_dir, verbose)
    with one_line_errors(cfg.output.out_dir):
        result = run_generate(cfg, verbose=verbose)
    old_stats = json.loads(previous.stats_file.read_text(encoding="utf-8"))
    typer.echo(format_comparison(old_stats, result.stats.to_json()))
    summarize(result, False)


@app.command()
def prepare(
    model: Annotated[str | None, typer.Option(help="Generator to resolve instead of the default.")] = None,
) -> None:
    """Resolve the default models now (converting the packaged SmolLM2 once) and print them."""
    import logging

    from ..models import resolve_embedder, resolve_generator

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    generator = resolve_generator(model)
    embedder = resolve_embedder(None)
    typer.echo(f"generator: {generator.name}\n  at {generator.path}")
    typer.echo(f"embedder: {embedder.name}\n  at {embedder.path}")
