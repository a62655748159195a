"""``synth train``, ``train-reranker``, ``eval`` and ``merge``: the model side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..train.config import RerankerConfig, TrainConfig
from .app import app, checked, fail

SAVE_EVERY_HELP = "Optimizer steps between checkpoints in OUT/checkpoints (0: none); --resume continues."
ACCUMULATE_HELP = (
    "Batches per optimizer step (gradient accumulation). Each batch contrasts its own rows: for more "
    "in-batch negatives raise --batch-size with --mini-batch instead."
)
Data = Annotated[
    Path,
    typer.Option(
        help="Run folder (its splits/train/ shards once synth split made them, else data/) or a folder "
        "of part-*.parquet."
    ),
]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue from the newest checkpoint in OUT/checkpoints.")
]


@app.command()
def train(
    data: Data,
    model: Annotated[str, typer.Option(help="Model to fine-tune (hub id or local folder).")] = "",
    out: Annotated[Path, typer.Option(help="Folder for the fine-tuned checkpoint.")] = Path("outputs/model"),
    epochs: Annotated[int, typer.Option()] = TrainConfig.epochs,
    batch_size: Annotated[
        int, typer.Option(help="Rows per batch and process (the in-batch pool is all processes' rows).")
    ] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option()] = TrainConfig.lr,
    negatives: Annotated[
        int, typer.Option(help="Hard negatives per row in the loss.")
    ] = TrainConfig.negatives,
    temperature: Annotated[float, typer.Option()] = TrainConfig.temperature,
    max_length: Annotated[int, typer.Option(help="Tokens per text.")] = TrainConfig.max_length,
    matryoshka: Annotated[
        str, typer.Option(help="Comma-separated dims for a Matryoshka loss, e.g. 64,128,384.")
    ] = "",
    mini_batch: Annotated[
        int, typer.Option(help="Gradient caching: embed this many texts at a time (0: whole batch at once).")
    ] = TrainConfig.mini_batch,
    accumulate: Annotated[int, typer.Option(help=ACCUMULATE_HELP)] = TrainConfig.accumulate,
    save_every: Annotated[int, typer.Option(help=SAVE_EVERY_HELP)] = TrainConfig.save_every,
    resume: Resume = False,
    seed: Annotated[int, typer.Option()] = TrainConfig.seed,
) -> None:
    """Fine-tune an embedding model on generated rows with the improved InfoNCE loss.

    Runs on the GPU when there is one. Several GPUs, one process each:
    torchrun --standalone --nproc_per_node N -m pipeline.cli train ...
    """
    from ..models import resolve_embedder
    from ..train.trainer import train as run_training

    folder = training_inputs(data, model)
    dims = tuple(int(x) for x in matryoshka.split(",") if x.strip())
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        negatives=negatives,
        temperature=temperature,
        max_length=max_length,
        matryoshka_dims=dims,
        mini_batch=mini_batch,
        accumulate=accumulate,
        save_every=save_every,
        seed=seed,
    )
    start_training(out, "train")
    losses = run_training(folder, model or resolve_embedder(None).path, out, config, resume=resume)
    report_training(losses, folder, out)


@app.command("train-reranker")
def train_reranker(
    data: Data,
    model: Annotated[str, typer.Option(help="Causal LM to fine-tune (hub id or local folder), e.g. Qwen3.")],
    out: Annotated[Path, typer.Option(help="Folder for the fine-tuned reranker.")] = Path("outputs/reranker"),
    epochs: Annotated[int, typer.Option()] = RerankerConfig.epochs,
    batch_size: Annotated[int, typer.Option(help="Pairs per step and process.")] = RerankerConfig.batch_size,
    lr: Annotated[float, typer.Option()] = RerankerConfig.lr,
    negatives: Annotated[
        int, typer.Option(help="'no' pairs per row, from its hard negatives.")
    ] = RerankerConfig.negatives,
    accumulate: Annotated[
        int, typer.Option(help="Batches per optimizer step (gradient accumulation).")
    ] = RerankerConfig.accumulate,
    save_every: Annotated[int, typer.Option(help=SAVE_EVERY_HELP)] = RerankerConfig.save_every,
    resume: Resume = False,
    seed: Annotated[int, typer.Option()] = RerankerConfig.seed,
) -> None:
    """Fine-tune a point-wise yes/no reranker (the paper's prompt and loss) on generated rows."""
    from ..train.reranker_trainer import train_reranker as run_training

    folder = training_inputs(data, model)
    config = RerankerConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        negatives=negatives,
        accumulate=accumulate,
        save_every=save_every,
        seed=seed,
    )
    start_training(out, "train-reranker")
    losses = run_training(folder, model, out, config, resume=resume)
    report_training(losses, folder, out)


def training_inputs(data: Path, model: str) -> Path:
    """The shards' folder (``preflight.check_training_inputs``), or one line and exit 2."""
    from ..preflight import InputError, check_training_inputs

    with checked(InputError):
        return check_training_inputs(data, model)


def start_training(out: Path, command: str) -> None:
    """Send the libraries' records to ``OUT/logs/<command>-<time>.log`` (one file per process of a
    multi-process run) and say where training runs and where its log is, once."""
    import os

    from .. import console
    from ..train.device import best_device, describe, world_size
    from ..train.lifecycle import is_main_process

    rank = os.environ.get("RANK", "0")
    name = command if world_size() == 1 else f"{command}-rank{rank}"
    log = console.start_logging(out, False, command=name, logs=Path(out) / "logs")
    if is_main_process():
        typer.echo(f"training on {describe(best_device())}; log: {log}")


def report_training(losses: list[float], folder: Path, out: Path) -> None:
    from ..train.lifecycle import is_main_process

    if not losses:
        fail(f"no trainable rows in {folder}")
    if is_main_process():
        typer.echo(f"{len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}; saved {out}")


Models = Annotated[
    list[str],
    typer.Option(
        "--model",
        help="Model folder or hub id; give it several times to compare (base first): each later model's "
        "difference to the first, with a paired bootstrap 95% interval.",
    ),
]
Benchmark = Annotated[
    str | None, typer.Option(help="BEIR-layout folder or URL: corpus.jsonl, queries.jsonl, qrels/.")
]
RunOption = Annotated[
    Path | None, typer.Option("--run", help="A split run folder (synth split): scores on its splits/eval/.")
]
Reranker = Annotated[
    str | None,
    typer.Option(
        help="Rescore the embedder's top documents with this yes/no reranker "
        "(`synth train-reranker` output or a Qwen3 causal LM); reports nDCG@10 after it too."
    ),
]
MtebTask = Annotated[
    str | None,
    typer.Option(
        "--mteb",
        help="Also score the benchmark with mteb's own code as this MTEB retrieval task (e.g. SciFact), "
        "its data read from --benchmark; every query with labels, --query-ids aside.",
    ),
]
StoreVectors = Annotated[
    bool,
    typer.Option(help="Keep vectors in the embedding store, so a second evaluation encodes only queries."),
]


@app.command("eval")
def evaluate(
    model: Models,
    benchmark: Benchmark = None,
    run: RunOption = None,
    split: Annotated[
        str | None, typer.Option(help="qrels split of --benchmark (default: the only one).")
    ] = None,
    dim: Annotated[int | None, typer.Option(help="Matryoshka dimension to evaluate.")] = None,
    instruction: Annotated[str | None, typer.Option(help="Query instruction (Qwen3-style models).")] = None,
    query_ids: Annotated[
        Path | None, typer.Option(help="File with the query ids to evaluate, one a line.")
    ] = None,
    reranker: Reranker = None,
    rerank_depth: Annotated[int, typer.Option(help="Documents per query the reranker rescores.")] = 20,
    store: StoreVectors = True,
    mteb_task: MtebTask = None,
) -> None:
    """nDCG@10, Recall@100, MRR@10, MAP@100 by exact search on CPU or GPU (trec_eval's figures),
    on --benchmark, on a run's held-out split (--run), or both; several --model side by side."""
    from .. import console
    from ..models import cache_root
    from ..train.evaluate import evaluate_targets

    # the libraries' records (transformers', mteb's) to a log file in the cache; results on stdout
    console.start_logging(Path("."), False, command="eval", logs=cache_root() / "logs")
    targets = eval_targets(benchmark, run, split, rerank_depth)
    task = mteb_retrieval_task(mteb_task)
    options = {"dim": dim, "instruction": instruction, "rerank_depth": rerank_depth}
    options["query_ids"] = set(query_ids.read_text().split()) if query_ids else None
    options["store_root"] = cache_root() / "vectors" if store else None
    for line in evaluate_targets(model, targets, reranker=reranker, mteb_task=task, **options):
        typer.echo(line)


def eval_targets(benchmark: str | None, run: Path | None, split: str | None, rerank_depth: int) -> dict:
    """Target name -> (BEIR folder, qrels split, whether --mteb applies), each checked
    (``preflight.check_benchmark``)."""
    from ..preflight import InputError, check_benchmark
    from ..run.folder import RunFolder
    from ..train.split import QRELS_SPLIT

    if rerank_depth < 1:
        raise typer.BadParameter("--rerank-depth must be at least 1")
    if benchmark is None and run is None:
        raise typer.BadParameter("give --benchmark, --run, or both")
    targets = {}
    with checked(InputError):
        if benchmark is not None:
            targets[benchmark] = (benchmark, check_benchmark(benchmark, split), True)
        if run is not None:
            folder = RunFolder(run).eval_split_folder
            if not folder.exists():
                raise InputError(f"{run}: no held-out split (splits/eval/); make one with synth split {run}")
            targets[f"{run} (held-out split)"] = (
                str(folder),
                check_benchmark(str(folder), QRELS_SPLIT),
                False,
            )
    return targets


def mteb_retrieval_task(name: str | None):
    """mteb's task of that name (``--mteb``), or one line and exit 2."""
    if not name:
        return None
    from ..train.mteb_task import retrieval_task

    with checked(ValueError):
        return retrieval_task(name)


@app.command()
def split(
    out: Annotated[Path, typer.Argument(help="A finished run folder.")],
    fraction: Annotated[
        float, typer.Option(help="Share of the question rows to hold out, by document.")
    ] = 0.2,
    seed: Annotated[
        int, typer.Option(help="Which documents are held out (the same seed, the same split).")
    ] = 0,
    max_queries: Annotated[int, typer.Option(help="At most this many eval queries.")] = 2000,
) -> None:
    """Hold out documents of a finished run: OUT/splits/train/ to train on, OUT/splits/eval/ (BEIR)
    to score on (synth eval --run OUT); no document on both sides, no eval query near a train one."""
    from ..train.split import SplitError

    with checked(SplitError):
        summary = split_with_corpus(out, fraction, seed, max_queries)
    rows = summary["rows"]
    typer.echo(
        f"{out}/splits: train {rows['train']} rows; eval {rows['eval_queries']} queries "
        f"({summary['human_checked']} human-checked, {summary['eval_removed']['near_duplicate_of_train']} "
        f"removed as near-duplicates of train queries) over {summary['corpus']['documents']} documents; "
        f"{rows['held_out']} rows of {summary['held_out_documents']} held-out documents kept out of training"
    )


def split_with_corpus(out: Path, fraction: float, seed: int, max_queries: int) -> dict:
    """``split_run`` with the run's pool passages read again from its corpus (none for a domain run)."""
    from ..config import load_config
    from ..executors.workbench import run_pool
    from ..run.folder import RunFolder
    from ..train.split import split_run

    config = load_config(RunFolder(out).config_file)
    dedup = config.filters.dedup
    return split_run(out, fraction, seed, max_queries, run_pool(config), dedup.near_threshold, dedup.num_perm)


@app.command()
def merge(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint folders (model.safetensors) to merge.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the merged checkpoint.")],
) -> None:
    """Merge fine-tuning checkpoints by slerp, each with an equal share (the paper's model merging)."""
    from ..train.merge import merge_checkpoints

    if len(checkpoints) < 2:
        raise typer.BadParameter("give at least two checkpoints")
    merge_checkpoints(checkpoints, out)
    typer.echo(f"merged {len(checkpoints)} checkpoints into {out}")
