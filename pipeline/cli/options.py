"""The options of a run, declared once and grouped: what ``synth generate`` takes, ``synth plan``
takes too (each command names the aliases in its signature; the flags' help lives here), and
how they become the run's configuration (``run_config``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Annotated

import typer

from .app import config_error, fail

# -- what to read and what to make ---------------------------------------------------------------
Lang = Annotated[str | None, typer.Option(help="Query language(s), comma-separated ISO codes: zh or zh,en.")]
Tasks = Annotated[
    str | None,
    typer.Option(
        help="Task types, comma-separated: retrieval, bitext, classification, sts, code_search, "
        "code_docs, code_translation (code types read --corpus as a source tree)."
    ),
]
QueryLangs = Annotated[
    str | None,
    typer.Option(help="Query languages with mixing weights, e.g. en:0.7,zh:0.3 (wins over --lang)."),
]
PassageLangs = Annotated[
    str | None, typer.Option(help="Passage languages to use, with mixing weights, e.g. zh or zh:0.5,en:0.5.")
]
Corpus = Annotated[str | None, typer.Option(help="JSONL/Parquet file, folder of .txt, or HF dataset.")]
Limit = Annotated[int | None, typer.Option(help="Stop after this many passages.")]
Pairs = Annotated[
    str | None,
    typer.Option(
        help="Your own pairs (JSONL/Parquet/TSV/CSV or URL): a query, and a corpus document id or the "
        "positive text; the gate, mined negatives and margin run on them, no LLM writes queries."
    ),
]
Aim = Annotated[
    str | None,
    typer.Option(
        help="An aim file (synth loop's round-k/aim.json, or your own): its question-type, difficulty "
        "and language weights replace the configured ones; passages are drawn toward its target documents."
    ),
]
Domains = Annotated[
    str | None,
    typer.Option(help="No corpus: write documents for these domains, e.g. legal,medical,academic."),
]
Count = Annotated[int | None, typer.Option(help="With --domains: rows to write in all.")]
# -- the models ------------------------------------------------------------------------------------
Model = Annotated[str | None, typer.Option(help="Generator: hub id or local folder (wins over defaults).")]
Embedder = Annotated[str | None, typer.Option(help="Embedder: hub id or local folder.")]
Engine = Annotated[
    str | None,
    typer.Option(help="vllm (in process), openai (HTTP server) or batch (batch files: --batch-results)."),
]
BaseUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. http://host:8000/v1.")]
ApiKeyEnv = Annotated[str | None, typer.Option(help="Environment variable holding the API key.")]
TensorParallel = Annotated[int | None, typer.Option(help="GPUs per engine (vLLM tensor parallelism).")]
# -- the run folder and its settings ---------------------------------------------------------------
Out = Annotated[str | None, typer.Option(help="Output folder.")]
Config = Annotated[str | None, typer.Option(help="YAML config file (a path or a URL).")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: a.b=value.")]
NumTasks = Annotated[int | None, typer.Option(help="Split the run into this many tasks (fixed per OUT).")]
ShardRows = Annotated[
    int | None, typer.Option(help="Passages per chunk: one engine batch, one shard, one checkpoint.")
]
Overwrite = Annotated[bool, typer.Option(help="Delete an existing run in OUT and start over.")]
AcceptCorpusChange = Annotated[
    bool, typer.Option(help="Resume although a corpus file changed: unfinished tasks start over on it.")
]
# -- who runs it -------------------------------------------------------------------------------------
Executor = Annotated[
    str, typer.Option(help="local (this process, --workers) or ray (Ray Data actors, one engine each).")
]
Workers = Annotated[int, typer.Option(help="Run this many worker processes, one GPU each when present.")]
Rank = Annotated[int, typer.Option(help="This process's rank (Slurm arrays and other schedulers).")]
WorldSize = Annotated[int, typer.Option(help="Number of ranks sharing the tasks.")]
Address = Annotated[
    str | None, typer.Option(help="Ray cluster to join (auto, host:6379, ray://...); default: start one.")
]
Replicas = Annotated[int, typer.Option(help="Ray: engine copies running tasks side by side.")]
CpusPerReplica = Annotated[
    float | None, typer.Option(help="Ray: CPUs per replica (default: 1 with GPUs, else CPUs / replicas).")
]
# -- what it may spend -------------------------------------------------------------------------------
Cache = Annotated[
    str | None, typer.Option(help="Reply cache folder (local or a URL); default: the user cache folder.")
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Ask the engine for every reply.")]
PoolDir = Annotated[
    str | None,
    typer.Option(
        help="Mining pools' folder (local or a URL every node reaches); default: beside an --out on "
        "object storage, else the cache folder."
    ),
]
BudgetTokens = Annotated[
    int | None,
    typer.Option(help="Stop cleanly once the run has computed this many tokens (resume with more)."),
]
BudgetEngineHours = Annotated[
    float | None, typer.Option(help="Stop cleanly once the run has spent this many engine hours.")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


@dataclass
class GenerateOptions:
    """The flags of a run (``synth generate``, ``synth plan``), declared once: each field's type is
    its flag (the aliases above); ``run_options`` gives a command all of them as one object."""

    lang: Lang = None
    tasks: Tasks = None
    query_langs: QueryLangs = None
    passage_langs: PassageLangs = None
    corpus: Corpus = None
    pairs: Pairs = None
    limit: Limit = None
    aim: Aim = None
    domains: Domains = None
    count: Count = None
    model: Model = None
    embedder: Embedder = None
    out: Out = None
    config: Config = None
    set_: Sets = None
    num_tasks: NumTasks = None
    workers: Workers = 1
    rank: Rank = 0
    world_size: WorldSize = 1
    overwrite: Overwrite = False
    engine: Engine = None
    base_url: BaseUrl = None
    api_key_env: ApiKeyEnv = None
    executor: Executor = "local"
    address: Address = None
    replicas: Replicas = 1
    tensor_parallel: TensorParallel = None
    cpus_per_replica: CpusPerReplica = None
    accept_corpus_change: AcceptCorpusChange = False
    shard_rows: ShardRows = None
    cache: Cache = None
    no_cache: NoCache = False
    pool_dir: PoolDir = None
    budget_tokens: BudgetTokens = None
    budget_engine_hours: BudgetEngineHours = None
    verbose: Verbose = False

    def settings(self) -> dict:
        """The config keys these flags set (None: not given, the config file or default decides)."""
        try:
            query_weights = parse_weights(self.query_langs) if self.query_langs else None
            passage_weights = parse_weights(self.passage_langs) if self.passage_langs else None
        except ValueError as exc:
            fail(f"--query-langs / --passage-langs: {exc}")
        if self.count is not None and not self.domains:
            fail("--count goes with --domains (a corpus run is bounded by --limit)")
        return {
            "generation.languages": query_weights or (names(self.lang) if self.lang else None),
            "generation.passage_languages": passage_weights,
            "generation.tasks": names(self.tasks) if self.tasks else (["domain"] if self.domains else None),
            "domains.names": names(self.domains) if self.domains else None,
            "domains.count": self.count,
            "corpus.path": self.corpus,
            "pairs.path": self.pairs,
            "aim.path": self.aim,
            "limit": self.limit,
            "models.generator": self.model,
            "models.embedder": self.embedder,
            "output.out_dir": self.out,
            "output.num_tasks": self.num_tasks,
            "output.shard_rows": self.shard_rows,
            "models.tensor_parallel_size": self.tensor_parallel,
            "models.engine": self.engine,
            "models.base_url": self.base_url,
            "models.api_key_env": self.api_key_env,
            "models.engine_progress": True if self.verbose else None,
            "cache.path": self.cache,
            "cache.enabled": False if self.no_cache else None,
            "negatives.pool_dir": self.pool_dir,
            "budget.tokens": self.budget_tokens,
            "budget.engine_hours": self.budget_engine_hours,
        }


def run_options(command):
    """Give ``command`` every flag of a run (``GenerateOptions``' fields) after its own; it receives
    them as one ``options: GenerateOptions`` argument. The group is declared once, on the dataclass."""
    import functools
    import inspect
    import typing

    group = typing.get_type_hints(GenerateOptions, include_extras=True)
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]
    own_hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=own_hints.get(p.name, p.annotation)) for p in own]
    flags = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=group[f.name])
        for f in fields(GenerateOptions)
    ]

    @functools.wraps(command)
    def with_options(**given):
        mine = {p.name: given.pop(p.name) for p in own}
        return command(options=GenerateOptions(**given), **mine)

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + flags
    with_options.__signature__ = inspect.Signature(parameters, return_annotation=None)
    with_options.__annotations__ = {p.name: p.annotation for p in parameters}
    del with_options.__wrapped__  # typer reads the signature above, not the command's own
    return with_options


def names(text: str) -> list[str]:
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


def run_config(options: GenerateOptions):
    """The run's configuration from the options (``synth generate``, ``synth plan``)."""
    return checked_config(options.config, options.set_, options.settings())


def checked_config(config: str | None, sets: list[str] | None, flags: dict):
    """The run's configuration from file, --set items and flags, then every check that needs no model.

    ``preflight`` runs before ``pipeline.executors`` (and so torch, vLLM,
    sentence-transformers) is imported: a bad input fails in about a second.
    """
    from ..config import load_config
    from ..preflight import InputError, preflight

    try:
        cfg = load_config(config, list(sets or []), {k: v for k, v in flags.items() if v is not None})
    except OSError as exc:
        fail(f"{exc.filename or config}: {exc.strerror or exc}")
    except ValueError as exc:
        fail(config_error(exc))
    if cfg.aim.path:
        from ..aim.plan import AimError, apply_aim

        try:
            cfg = apply_aim(cfg, cfg.aim.path)
        except AimError as exc:
            fail(str(exc))
    try:
        preflight(cfg)
    except InputError as exc:
        fail(str(exc))
    return cfg


def settings_file(path: str) -> list[str]:
    """A YAML file of settings as ``--set`` items (``key.sub=value``), applied in file order."""
    from ..config import ConfigFileError, read_config_file

    try:
        loaded = read_config_file(path)
    except ConfigFileError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")

    def flat(node: dict, prefix: str = "") -> list[str]:
        items = []
        for key, value in node.items():
            if isinstance(value, dict) and value:
                items += flat(value, f"{prefix}{key}.")
            else:
                items.append(f"{prefix}{key}={json.dumps(value)}")
        return items

    return flat(loaded)
