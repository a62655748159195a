"""The ``synth`` command line."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .train.config import RerankerConfig, TrainConfig

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Synthesize embedding and reranker training data."
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2: how every bad input ends (no traceback, no usage box)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _config_error(exc: Exception) -> str:
    """A pydantic error as "key: what is wrong" lines, without its links and type tags."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    from .config import nearest_key

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


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_weights(text: str) -> dict[str, float]:
    """``zh:0.7,en:0.3`` -> {"zh": 0.7, "en": 0.3}; a bare name weighs 1 (``zh,en`` mixes evenly)."""
    weights: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, _, weight = item.partition(":")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"{item!r}: expected name or name:weight, e.g. zh:0.7") from None
    if not weights:
        raise ValueError(f"{text!r}: no languages given")
    return weights


@app.command()
def generate(
    lang: Annotated[
        str | None, typer.Option(help="Query language(s), comma-separated ISO codes: zh or zh,en.")
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Task types, comma-separated: retrieval, bitext, classification, sts, code_search, "
            "code_docs, code_translation (code types read --corpus as a source tree)."
        ),
    ] = None,
    query_langs: Annotated[
        str | None,
        typer.Option(help="Query languages with mixing weights, e.g. en:0.7,zh:0.3 (wins over --lang)."),
    ] = None,
    passage_langs: Annotated[
        str | None,
        typer.Option(help="Passage languages to use, with mixing weights, e.g. zh or zh:0.5,en:0.5."),
    ] = None,
    corpus: Annotated[
        str | None, typer.Option(help="JSONL/Parquet file, folder of .txt, or HF dataset.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many passages.")] = None,
    domains: Annotated[
        str | None,
        typer.Option(help="No corpus: write documents for these domains, e.g. legal,medical,academic."),
    ] = None,
    count: Annotated[int | None, typer.Option(help="With --domains: rows to write in all.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Generator: hub id or local folder (wins over defaults).")
    ] = None,
    embedder: Annotated[str | None, typer.Option(help="Embedder: hub id or local folder.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder.")] = None,
    config: Annotated[str | None, typer.Option(help="YAML config file (a path or a URL).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: a.b=value.")] = None,
    num_tasks: Annotated[
        int | None, typer.Option(help="Split the run into this many tasks (fixed per OUT).")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Run this many worker processes, one GPU each when present.")
    ] = 1,
    rank: Annotated[int, typer.Option(help="This process's rank (Slurm arrays and other schedulers).")] = 0,
    world_size: Annotated[int, typer.Option(help="Number of ranks sharing the tasks.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Delete an existing run in OUT and start over.")] = False,
    engine: Annotated[str | None, typer.Option(help="vllm (in process) or openai (HTTP server).")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server, e.g. http://host:8000/v1.")
    ] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the API key.")] = None,
    executor: Annotated[
        str, typer.Option(help="local (this process, --workers) or ray (Ray Data actors, one engine each).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (auto, host:6379, ray://...); default: start one.")
    ] = None,
    replicas: Annotated[int, typer.Option(help="Ray: engine copies running tasks side by side.")] = 1,
    tensor_parallel: Annotated[
        int | None, typer.Option(help="GPUs per engine (vLLM tensor parallelism).")
    ] = None,
    cpus_per_replica: Annotated[
        float | None, typer.Option(help="Ray: CPUs per replica (default: 1 with GPUs, else CPUs / replicas).")
    ] = None,
    accept_corpus_change: Annotated[
        bool,
        typer.Option(help="Resume although a corpus file changed: unfinished tasks start over on it."),
    ] = False,
    shard_rows: Annotated[
        int | None, typer.Option(help="Passages per chunk: one engine batch, one shard, one checkpoint.")
    ] = None,
    cache: Annotated[
        str | None, typer.Option(help="Reply cache folder (local or a URL); default: the user cache folder.")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask the engine for every reply.")] = False,
    budget_tokens: Annotated[
        int | None,
        typer.Option(help="Stop cleanly once the run has computed this many tokens (resume with more)."),
    ] = None,
    budget_engine_hours: Annotated[
        float | None, typer.Option(help="Stop cleanly once the run has spent this many engine hours.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Turn a corpus into query / positive training rows. Rerun the same command to resume.

    Exit status 3: the budget stopped the run at a chunk boundary (finished chunks are saved).
    """
    cfg = _run_config(locals())
    from . import console
    from .run.plan import RayOptions, check_executor

    try:
        check_executor(executor, rank=rank, world_size=world_size, workers=workers, replicas=replicas)
    except ValueError as exc:
        _fail(str(exc))

    console.start_logging(cfg.output.out_dir, verbose)
    ray = RayOptions(
        address=address, replicas=replicas, cpus_per_replica=cpus_per_replica, show_worker_logs=verbose
    )
    with _one_line_errors(cfg.output.out_dir):
        from .executors import run_generate

        result = run_generate(
            cfg,
            rank=rank,
            world_size=world_size,
            executor=executor,
            ray_options=ray,
            workers=workers,
            overwrite=overwrite,
            verbose=verbose,
            accept_corpus_change=accept_corpus_change,
        )
    if verbose:
        from .run.stats import format_funnel

        typer.echo(format_funnel(result.stats.to_json()), err=True)
    for line in console.summary(result, console.log_file()):
        typer.echo(line, err=True)
    if result.budget_stop:
        from .run.budget import BUDGET_EXIT

        raise typer.Exit(BUDGET_EXIT)


def plan(
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
    **options,
) -> None:
    """What a run will cost before it starts: a pilot through the real engine and gate, then the
    projection (requests, tokens, kept pairs, engine hours, money) with 95% intervals.

    Takes the same arguments as `synth generate`; the pilot runs in a scratch folder (--pilot-out
    keeps it), never in --out.
    """
    from .run.projection import PUBLISHED_THROUGHPUT, format_projection, plan_json

    if pilot < 2:
        _fail("--pilot must be at least 2 passages")
    cost = {"input": price_input, "cached": price_cached, "output": price_output}
    if prices:
        try:
            cost = {
                **json.loads(Path(prices).read_text(encoding="utf-8")),
                **{k: v for k, v in cost.items() if v},
            }
        except (OSError, ValueError) as exc:
            _fail(f"{prices}: not a JSON file of prices ({exc})")
    cost = {k: float(v) for k, v in cost.items() if v is not None}
    throughput = None
    if gpu or model_size:
        key = ((gpu or "").lower(), (model_size or "").lower())
        if key not in PUBLISHED_THROUGHPUT:
            known = ", ".join(f"--gpu {g.upper()} --model-size {m.upper()}" for g, m in PUBLISHED_THROUGHPUT)
            _fail(f"no published throughput for {gpu} / {model_size}; known: {known}")
        throughput = PUBLISHED_THROUGHPUT[key]
    import shutil
    import tempfile

    scratch = pilot_out or tempfile.mkdtemp(prefix="synth-plan-")
    options["out"] = scratch  # the pilot's folder: the run's own --out is not touched
    cfg = _run_config(options)
    from . import console

    console.start_logging(scratch, options["verbose"])
    with _one_line_errors(scratch):  # a failed pilot keeps its folder: its log says why
        from .executors.pilot import plan_run

        projection, count = plan_run(cfg, pilot, scratch=scratch, prices=cost or None, throughput=throughput)
    console.stop_logging()
    if not pilot_out:
        shutil.rmtree(scratch, ignore_errors=True)
    typer.echo(format_projection(projection, count))
    if json_out == "-":
        typer.echo(plan_json(projection))
    elif json_out:
        Path(json_out).write_text(plan_json(projection) + "\n", encoding="utf-8")
        typer.echo(f"plan: {json_out}", err=True)


def _with_generate_options(command):
    """``command``'s own options followed by every option of ``generate`` (one definition of them)."""
    import inspect
    import typing

    hints = {
        **typing.get_type_hints(generate, include_extras=True),
        **typing.get_type_hints(command, include_extras=True),
    }
    own = [p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in own}
    shared = [p for name, p in inspect.signature(generate).parameters.items() if name not in names]
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in [*own, *shared]]
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


app.command("plan")(_with_generate_options(plan))


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
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Rerun a run's gate with new settings through the reply cache, and compare the funnels.

    OLD's own config.yaml with the --config file's and then the --set changes, into --out: every
    prompt the change leaves alone is answered by the reply cache, so only rows that now reach
    a later LLM stage (negatives, judge) cost tokens.
    """
    from . import console
    from .run.folder import RunFolder

    previous = RunFolder(old)
    if not previous.config_file.exists():
        _fail(f"{old}: no config.yaml: not a run folder")
    if not previous.stats_file.exists():
        _fail(f"{old}: no stats.json: the run has not written anything yet")
    flags = {"output.out_dir": out, "cache.path": cache, "cache.enabled": True}
    changes = [*(_settings_file(config) if config else []), *(set_ or [])]
    cfg = _checked_config(str(previous.config_file), changes, flags)
    console.start_logging(cfg.output.out_dir, verbose)
    with _one_line_errors(cfg.output.out_dir):
        from .executors import run_generate

        result = run_generate(cfg, verbose=verbose)
    from .run.stats import format_comparison

    old_stats = json.loads(previous.stats_file.read_text(encoding="utf-8"))
    typer.echo(format_comparison(old_stats, result.stats.to_json()))
    for line in console.summary(result, console.log_file()):
        typer.echo(line, err=True)


def _settings_file(path: str) -> list[str]:
    """A YAML file of settings as ``--set`` items (``key.sub=value``), applied in file order."""
    from .config import ConfigFileError, read_config_file

    try:
        loaded = read_config_file(path)
    except ConfigFileError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")

    def flat(node: dict, prefix: str = "") -> list[str]:
        items = []
        for key, value in node.items():
            if isinstance(value, dict) and value:
                items += flat(value, f"{prefix}{key}.")
            else:
                items.append(f"{prefix}{key}={json.dumps(value)}")
        return items

    return flat(loaded)


def _run_config(o: dict):
    """The run's configuration from `synth generate`'s options (``synth plan`` takes the same)."""
    try:
        query_weights = parse_weights(o["query_langs"]) if o["query_langs"] else None
        passage_weights = parse_weights(o["passage_langs"]) if o["passage_langs"] else None
    except ValueError as exc:
        _fail(f"--query-langs / --passage-langs: {exc}")
    lang, tasks, domains, count = o["lang"], o["tasks"], o["domains"], o["count"]
    flags = {
        "generation.languages": query_weights or (_names(lang) if lang else None),
        "generation.passage_languages": passage_weights,
        "generation.tasks": _names(tasks) if tasks else (["domain"] if domains else None),
        "domains.names": _names(domains) if domains else None,
        "domains.count": count,
        "corpus.path": o["corpus"],
        "limit": o["limit"],
        "models.generator": o["model"],
        "models.embedder": o["embedder"],
        "output.out_dir": o["out"],
        "output.num_tasks": o["num_tasks"],
        "output.shard_rows": o["shard_rows"],
        "models.tensor_parallel_size": o["tensor_parallel"],
        "models.engine": o["engine"],
        "models.base_url": o["base_url"],
        "models.api_key_env": o["api_key_env"],
        "models.engine_progress": True if o["verbose"] else None,
        "cache.path": o["cache"],
        "cache.enabled": False if o["no_cache"] else None,
        "budget.tokens": o["budget_tokens"],
        "budget.engine_hours": o["budget_engine_hours"],
    }
    if count is not None and not domains:
        _fail("--count goes with --domains (a corpus run is bounded by --limit)")
    return _checked_config(o["config"], o["set_"], flags)


def _checked_config(config: str | None, sets: list[str] | None, flags: dict):
    """The run's configuration from file, --set items and flags, then every check that needs no model.

    ``preflight`` runs before ``pipeline.executors`` (and so torch, vLLM,
    sentence-transformers) is imported: a bad input fails in about a second.
    """
    from .config import load_config
    from .preflight import InputError, preflight

    try:
        cfg = load_config(config, list(sets or []), {k: v for k, v in flags.items() if v is not None})
    except OSError as exc:
        _fail(f"{exc.filename or config}: {exc.strerror or exc}")
    except ValueError as exc:
        _fail(_config_error(exc))
    try:
        preflight(cfg)
    except InputError as exc:
        _fail(str(exc))
    return cfg


@contextlib.contextmanager
def _one_line_errors(out: str):
    """The errors a user can meet during a run, as one line (exit 2); an interrupt as exit 130."""
    from .engine import EngineStartError
    from .engine.openai_engine import EngineStopped, EngineUnavailable
    from .executors import Interrupted
    from .executors.local import WorkersFailed
    from .executors.ray import RayUnavailable
    from .generate.personas import PersonaError
    from .generate.prompts import PromptError
    from .readers.documents import CorpusError
    from .run.folder import LeaseHeld, RunStateError
    from .storage import WriteFailed

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


_SAVE_EVERY_HELP = "Optimizer steps between checkpoints in OUT/checkpoints (0: none); --resume continues."
_ACCUMULATE_HELP = (
    "Batches per optimizer step (gradient accumulation). Each batch contrasts its own rows: for more "
    "in-batch negatives raise --batch-size with --mini-batch instead."
)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Run folder (its data/ shards) or a folder of part-*.parquet.")],
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
        int,
        typer.Option(help="Gradient caching: embed this many texts at a time (0: whole batch at once)."),
    ] = TrainConfig.mini_batch,
    accumulate: Annotated[int, typer.Option(help=_ACCUMULATE_HELP)] = TrainConfig.accumulate,
    save_every: Annotated[int, typer.Option(help=_SAVE_EVERY_HELP)] = TrainConfig.save_every,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in OUT/checkpoints.")
    ] = False,
    seed: Annotated[int, typer.Option()] = TrainConfig.seed,
) -> None:
    """Fine-tune an embedding model on generated rows with the improved InfoNCE loss.

    Runs on the GPU when there is one. Several GPUs, one process each:
    torchrun --standalone --nproc_per_node N -m pipeline.cli train ...
    """
    from .models import resolve_embedder

    folder = _training_inputs(data, model)
    model_path = model or resolve_embedder(None).path
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
    _start_training(out, "train")
    from .train.trainer import train as run_training

    losses = run_training(folder, model_path, out, config, resume=resume)
    _report_training(losses, folder, out)


def _start_training(out: Path, command: str) -> None:
    """Send the libraries' records to ``OUT/logs/<command>-<time>.log`` (one file per process of a
    multi-process run) and say where training runs and where its log is, once."""
    import os

    from . import console
    from .train.device import best_device, describe, world_size
    from .train.lifecycle import is_main_process

    rank = os.environ.get("RANK", "0")
    name = command if world_size() == 1 else f"{command}-rank{rank}"
    log = console.start_logging(out, False, command=name, logs=Path(out) / "logs")
    if is_main_process():
        typer.echo(f"training on {describe(best_device())}; log: {log}")


def _training_inputs(data: Path, model: str) -> Path:
    """The shards' folder (``preflight.check_training_inputs``), or one line and exit 2."""
    from .preflight import InputError, check_training_inputs

    try:
        return check_training_inputs(data, model)
    except InputError as exc:
        _fail(str(exc))


def _report_training(losses: list[float], folder: Path, out: Path) -> None:
    from .train.lifecycle import is_main_process

    if not losses:
        typer.secho(f"error: no trainable rows in {folder}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if is_main_process():
        typer.echo(f"{len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}; saved {out}")


@app.command("train-reranker")
def train_reranker_command(
    data: Annotated[Path, typer.Option(help="Run folder (its data/ shards) or a folder of part-*.parquet.")],
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
    save_every: Annotated[int, typer.Option(help=_SAVE_EVERY_HELP)] = RerankerConfig.save_every,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in OUT/checkpoints.")
    ] = False,
    seed: Annotated[int, typer.Option()] = RerankerConfig.seed,
) -> None:
    """Fine-tune a point-wise yes/no reranker (the paper's prompt and loss) on generated rows."""
    folder = _training_inputs(data, model)
    config = RerankerConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        negatives=negatives,
        accumulate=accumulate,
        save_every=save_every,
        seed=seed,
    )
    _start_training(out, "train-reranker")
    from .train.reranker_trainer import train_reranker

    losses = train_reranker(folder, model, out, config, resume=resume)
    _report_training(losses, folder, out)


@app.command("eval")
def evaluate_command(
    model: Annotated[str, typer.Option(help="Model folder or hub id.")],
    benchmark: Annotated[
        str, typer.Option(help="BEIR-layout folder or URL: corpus.jsonl, queries.jsonl, qrels/.")
    ],
    split: Annotated[str | None, typer.Option(help="qrels split (default: the only one).")] = None,
    dim: Annotated[int | None, typer.Option(help="Matryoshka dimension to evaluate.")] = None,
    instruction: Annotated[str | None, typer.Option(help="Query instruction (Qwen3-style models).")] = None,
    query_ids: Annotated[
        Path | None, typer.Option(help="File with the query ids to evaluate, one a line.")
    ] = None,
    reranker: Annotated[
        str | None,
        typer.Option(
            help="Rescore the embedder's top documents with this yes/no reranker "
            "(`synth train-reranker` output or a Qwen3 causal LM); reports nDCG@10 after it too."
        ),
    ] = None,
    rerank_depth: Annotated[int, typer.Option(help="Documents per query the reranker rescores.")] = 20,
    store: Annotated[
        bool,
        typer.Option(
            help="Keep vectors in the embedding store, so a second evaluation encodes only queries."
        ),
    ] = True,
    mteb_task: Annotated[
        str | None,
        typer.Option(
            "--mteb",
            help="Also score the benchmark with mteb's own code as this MTEB retrieval task (e.g. SciFact), "
            "its data read from --benchmark; every query with labels, --query-ids aside.",
        ),
    ] = None,
) -> None:
    """nDCG@10, Recall@100, MRR@10, MAP@100 by exact search on CPU or GPU (trec_eval's figures);
    with --reranker, nDCG@10 after reranking; with --mteb, mteb's own scores beside them."""
    from . import console
    from .models import cache_root
    from .train.evaluate import evaluate

    # the libraries' records (transformers', mteb's) to a log file in the cache; results on stdout
    console.start_logging(Path("."), False, command="eval", logs=cache_root() / "logs")
    if rerank_depth < 1:
        raise typer.BadParameter("--rerank-depth must be at least 1")
    split = _benchmark_split(benchmark, split)
    task = None
    if mteb_task:
        from .train.mteb_task import retrieval_task

        try:
            task = retrieval_task(mteb_task)
        except ValueError as exc:
            _fail(str(exc))
    wanted = set(query_ids.read_text().split()) if query_ids else None
    scorer = None
    if reranker:
        from .train.reranker_trainer import Reranker

        scorer = Reranker(reranker)
    result = evaluate(
        model,
        benchmark,
        split=split,
        dim=dim,
        instruction=instruction,
        query_ids=wanted,
        store_root=cache_root() / "vectors" if store else None,
        reranker=scorer,
        rerank_depth=rerank_depth,
    )
    if reranker:
        result["reranker"] = reranker
    if task is not None:
        from .train.mteb_task import evaluate_mteb

        result["mteb"] = evaluate_mteb(model, task, benchmark, split, instruction=instruction)
    typer.echo(json.dumps(result))


def _benchmark_split(benchmark: str, split: str | None) -> str:
    """The qrels split to score (``preflight.check_benchmark``), or one line and exit 2."""
    from .preflight import InputError, check_benchmark

    try:
        return check_benchmark(benchmark, split)
    except InputError as exc:
        _fail(str(exc))


@app.command()
def merge(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint folders (model.safetensors) to merge.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the merged checkpoint.")],
) -> None:
    """Merge fine-tuning checkpoints by slerp, each with an equal share (the paper's model merging)."""
    from .train.merge import merge_checkpoints

    if len(checkpoints) < 2:
        raise typer.BadParameter("give at least two checkpoints")
    merge_checkpoints(checkpoints, out)
    typer.echo(f"merged {len(checkpoints)} checkpoints into {out}")


@app.command()
def stats(out: Annotated[str, typer.Argument(help="Output folder of a run (a path or a URL).")]) -> None:
    """Print the funnel of a finished run."""
    from .run.folder import RunFolder
    from .run.stats import format_funnel

    path = RunFolder(out).stats_file
    if not path.exists():
        typer.secho(f"error: {path} not found", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(format_funnel(json.loads(path.read_text())))


def _finished(out: str) -> dict:
    from .run.finished import RunNotFinished, finished_run

    try:
        return finished_run(out)
    except RunNotFinished as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


@app.command()
def export(
    out: Annotated[str, typer.Argument(help="Output folder of a finished run (a path or a URL).")],
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
    from .handover.export import FORMATS
    from .handover.export import export as write_export

    if format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    _finished(out)
    result = write_export(out, format, dest, instruction=instruction)
    for name, rows in result.files.items():
        typer.echo(f"{result.folder / name}: {rows} rows")


@app.command()
def report(
    out: Annotated[str, typer.Argument(help="Output folder of a finished run (a path or a URL).")],
    dest: Annotated[str | None, typer.Option("--out", help="HTML file (default: OUT/report.html).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random sample rows shown.")] = 0,
) -> None:
    """One self-contained HTML page: the funnel, distributions, cosines, negatives, sample rows."""
    from .handover.report import write_report

    _finished(out)
    typer.echo(f"report: {write_report(out, dest, seed)}")


@app.command()
def review(
    out: Annotated[str, typer.Argument(help="Output folder of a finished run (a path or a URL).")],
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
    import socket

    from . import console
    from .models import cache_root

    _finished(out)
    name = reviewer or _login()
    console.start_logging(out, False, command="review", logs=cache_root() / "logs")
    try:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(64)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    import uvicorn

    from .review.server import Review, build_app, new_token, url_host

    state = Review(out, sample, seed, name)
    bound = listener.getsockname()[1]
    shown = url_host("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    token = new_token(host)  # off loopback: the page asks for the token printed here
    progress = state.progress()
    typer.echo(
        f"review of {out}: {progress['sample']} sampled rows, {progress['labelled']} labelled so far "
        f"(reviewer {name})"
    )
    from .redaction import show

    query = f"?token={token}" if token else ""
    show(f"open http://{shown}:{bound}/{query}  (keys: g good, q bad query, p positive does not answer,")
    typer.echo("  1-9 a negative answers, s skip, n note; Ctrl+C stops, labels are saved as you go)")
    app_ = build_app(state, host, token)
    config = uvicorn.Config(app_, log_config=None, access_log=False, lifespan="off")
    # uvicorn stops on Ctrl+C and then raises the signal again for the caller: a normal stop here
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[listener])
    done = state.progress()
    typer.echo(f"{done['labelled']} of {done['sample']} rows labelled; next: synth calibrate {out}")


def _login() -> str:
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

    Also rewrites the run's dataset card with the measured precision of its kept rows.
    """
    import yaml

    from .review.calibrate import calibrate_run, format_calibration, suggested_settings
    from .review.labels import load_labels
    from .run.folder import RunFolder

    manifest = _finished(out)
    folder = RunFolder(out)
    source = labels or out
    try:
        records = load_labels(source)
    except FileNotFoundError:
        _fail(f"{source}: no such label file")
    except OSError as exc:
        _fail(f"{source}: {exc.strerror or exc}")
    result = calibrate_run(out, precision, records)
    if result is None:
        _fail(f"no labels in {source}: label rows first with `synth review {out}`")
    if json_out == "-":
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(format_calibration(result))
        if json_out:
            Path(json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if write_config:
        settings = suggested_settings(result)
        header = (
            f"# settings suggested by `synth calibrate {out} --precision {precision:g}` from "
            f"{result['labels']} labels\n# use: synth regate {out} --out NEW --config {write_config}\n"
        )
        body = yaml.safe_dump(settings, sort_keys=True) if settings else "# nothing to change\n"
        Path(write_config).write_text(header + body, encoding="utf-8")
        typer.echo(f"suggested settings: {write_config}", err=json_out == "-")
    if labels is None and manifest:
        from .handover.card import write_card

        config = yaml.safe_load(folder.config_file.read_text(encoding="utf-8")) or {}
        write_card(folder, config.get("output", {}).get("license") or "unknown")


@app.command()
def publish(
    out: Annotated[str, typer.Argument(help="Output folder of a finished run (a path or a URL).")],
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
    from . import console
    from .handover.publish import PublishError
    from .handover.publish import publish as upload
    from .models import cache_root
    from .run.finished import RunNotFinished

    console.start_logging(out, False, command="publish", logs=cache_root() / "logs")
    try:
        done = upload(
            out,
            repo_id,
            private=private,
            revision=revision,
            include_rejected=include_rejected,
            keep_existing=keep_existing,
        )
    except (RunNotFinished, PublishError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"published {len(done.files)} files to {done.repo_url} in one commit: {done.commit_url}")
    if done.deleted:
        typer.echo(f"removed {len(done.deleted)} files of an earlier publish (--keep-existing keeps them)")
    if done.visibility:
        typer.echo(f"the repo is now {done.visibility}")


def main() -> None:
    """The ``synth`` command: every error a user can meet is one line; an unexpected one is one
    line too, with the log file that holds its traceback (``--verbose`` prints it as well).

    Whatever is printed passes the redaction (``pipeline/redaction.py``): no secret reaches the
    terminal, whichever command or library wrote it.
    """
    from . import redaction, storage

    redaction.install_on_terminal()
    try:
        app()
    except storage.StorageError as exc:  # a place that cannot be used as given: every command
        typer.secho(f"error: {redaction.redact(exc)}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as exc:  # the last line of defence: the commands name every expected error
        import traceback

        from . import console

        try:
            where = f"; the traceback is in {console.crash_report(exc)}"
        except OSError:  # a full disk or a read-only cache folder: the terminal gets it anyway
            where = ""
        if "--verbose" in sys.argv or "-v" in sys.argv[1:]:
            print(storage.redact("".join(traceback.format_exception(exc))), file=sys.stderr)
        first = (str(exc).strip().splitlines() or [""])[0]
        message = storage.redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
        typer.secho(f"error: unexpected {message}{where}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":  # engines spawn processes: keep the guard
    main()
