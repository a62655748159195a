"""``synth loop``: generate, split, train and evaluate, round after round (``pipeline/loop.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..train.config import TrainConfig
from . import options as o
from .app import app, checked, fail, one_line_errors


@app.command()
@o.run_options
def loop(
    options: o.GenerateOptions,
    rounds: Annotated[int, typer.Option(help="Rounds of generate, split, train, eval.")] = 2,
    rows_per_round: Annotated[
        int, typer.Option(help="Passages each round adds: round k reads the corpus's first k times as many.")
    ] = 200,
    base_model: Annotated[
        str, typer.Option(help="Embedder to improve (local folder or hub id; default: the packaged MiniLM).")
    ] = "",
    holdout: Annotated[
        float, typer.Option(help="Share of round 1's question rows held out, by document.")
    ] = 0.2,
    eval_documents: Annotated[
        int,
        typer.Option(help="Documents in the eval corpus: a larger pool is sampled (every positive kept)."),
    ] = 100_000,
    processes: Annotated[
        int | None,
        typer.Option(help="Training processes per round, under torchrun (default: one per GPU, 1 on CPU)."),
    ] = None,
    aim_rounds: Annotated[
        bool,
        typer.Option(help="Aim each round after the first at the previous round's failures (aim.json)."),
    ] = True,
    aim_share: Annotated[
        float, typer.Option(help="Share of an aimed round's draw kept as configured (nothing starved).")
    ] = 0.3,
    model_negatives: Annotated[
        bool,
        typer.Option(
            help="Rounds after the first also take the previous round's model's mistakes as negatives."
        ),
    ] = True,
    epochs: Annotated[int, typer.Option(help="Training epochs per round.")] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(help="Rows per training batch.")] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Learning rate per round.")] = TrainConfig.lr,
) -> None:
    """From a corpus to a measured, better embedder: each round generates (every synth generate
    option applies; --out is the loop's folder), trains from the previous round's model, and
    scores on round 1's frozen held-out split. Each round after the first is aimed at what the
    previous round's model still gets wrong on its training rows (round-k/failures.json,
    round-k/aim.json). Then the base and a merge of the rounds are scored, and OUT/report.html
    shows the lift with intervals and what each round aimed at. Rerun the same command to resume."""
    from ..loop import LoopPlan, run_loop
    from ..models import resolve_embedder

    if options.limit is not None:
        fail("--limit is set per round by --rows-per-round")
    if min(rounds, rows_per_round, eval_documents, processes or 1) < 1 or not 0 < holdout < 1:
        fail(
            "--rounds, --rows-per-round, --eval-documents and --processes must be at least 1, "
            "--holdout between 0 and 1"
        )
    if not 0 <= aim_share < 1:
        fail("--aim-share must be at least 0 and below 1")
    out = Path(options.out or "outputs/loop")
    config = o.run_config(options)
    train = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=config.seed, save_every=0)
    base = base_model or resolve_embedder(None).path
    plan = LoopPlan(
        out,
        config,
        rounds,
        rows_per_round,
        base,
        train,
        fraction=holdout,
        eval_documents=eval_documents,
        processes=processes if processes is not None else gpu_count(),
        aim=aim_rounds,
        aim_share=aim_share,
        model_negatives=model_negatives,
    )
    plan.extra = {"workers": options.workers, "executor": options.executor, "overwrite": False}
    from .. import console

    console.start_logging(out, options.verbose, command="loop", logs=out / "logs")
    with one_line_errors(str(out)), checked(ValueError):
        summary = run_loop(plan, passages_of=pool_passages_of, say=lambda line: typer.echo(line, err=True))
    print_lift(summary, out)


def print_lift(summary: dict, out: Path) -> None:
    """Each model's nDCG@10, its difference to the base with the interval, and its Recall@100."""
    for entry in summary["lift"]:
        difference = entry.get("difference", {}).get("ndcg@10")
        shown = (
            f" ({difference['difference']:+.4f} [{difference['low']:+.4f}, {difference['high']:+.4f}])"
            if difference
            else ""
        )
        typer.echo(
            f"{entry['name']:>10}: nDCG@10 {entry['ndcg@10']:.4f}{shown}, "
            f"Recall@100 {entry['recall@100']:.4f}"
        )
    typer.echo(f"report: {out / 'report.html'}")


def gpu_count() -> int:
    """The GPUs torch sees (at least 1: one process on a CPU)."""
    import torch

    return max(1, torch.cuda.device_count())


def pool_passages_of(run: Path):
    """What gives a finished round's pool passages, read again as its run read them (None for a
    domain run)."""
    from ..config import load_config
    from ..executors.workbench import run_pool
    from ..run.folder import RunFolder

    return run_pool(load_config(RunFolder(run).config_file))
