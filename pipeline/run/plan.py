"""The run plan: every decision about a run, made once from the config and the command line.

``resolve_plan`` runs after the checks of ``preflight`` and before any work: it finds the
models, decides whether the judge runs (and says why not, once), picks the prompt
library, lays out the ordered step recipe, the task split and the executor's options.
Executors, workbenches, the manifest and the card read the plan; none of them goes back
to the raw config to decide any of this again.
"""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .. import storage
from ..config import RunConfig
from ..engine.reply_cache import default_root
from ..generate.prompts import PromptLibrary, templates_of
from ..models import SMOLLM2_NAME, ResolvedModel, resolve_embedder, resolve_generator
from ..redaction import redact
from .folder import RunFolder, RunRecord, RunStateError, TaskState, fences

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


@dataclass
class Models:
    """The run's generator, embedder and judge, resolved to local paths (or a served model's name)."""

    generator: ResolvedModel
    embedder: ResolvedModel
    remote: bool  # the generator is served over HTTP: nothing is loaded here
    judge: ResolvedModel | None = None  # a judge other than the generator, when one is named


@dataclass
class RayOptions:
    address: str | None = None  # a running cluster ("auto", "ray://host:10001", "host:6379"); None: local
    replicas: int = 1  # engine copies: actors running tasks side by side
    cpus_per_replica: float | None = None  # None: 1 on GPU clusters, all CPUs / replicas on CPU-only ones
    temp_dir: str | None = None  # Ray's session files (logs included) when this command starts Ray
    show_worker_logs: bool = False  # forward actors' output (engine logs) to this terminal


@dataclass
class TaskSplit:
    """How the run is cut into tasks, and which of them this process runs."""

    num_tasks: int
    rank: int = 0
    world_size: int = 1

    def mine(self) -> list[int]:
        """Tasks ``t`` with ``t % world_size == rank``."""
        return [t for t in range(self.num_tasks) if t % self.world_size == self.rank]


@dataclass
class Flow:
    """How a task's rows move through the steps (``executors/flow.py``).

    ``slice_rows`` rows go through the steps together; chunks are admitted while fewer than
    ``rows_in_flight`` rows are between their first step and their chunk's commit (always one).
    None: a slice is the whole chunk and one chunk is out, the steps one after another as whole
    batches.
    """

    slice_rows: int | None = None
    rows_in_flight: int = 1

    @property
    def streams(self) -> bool:
        return self.slice_rows is not None


def pool_store(config: RunConfig) -> str | None:
    """Where the run's mining pools are built and kept: ``negatives.pool_dir``; for an output on
    object storage, a ``pools/`` folder beside it (every node reaches it, and it outlives the
    nodes); else None, each machine's cache folder."""
    if config.negatives.pool_dir:
        return config.negatives.pool_dir
    out = config.output.out_dir
    if out and storage.is_url(out):
        return str(storage.location(out).parent / "pools")
    return None


def flow_decision(config: RunConfig) -> Flow:
    """Slices of ``flow.slice_rows`` rows, unless ``flow.streamed`` is off: whole chunks, one at a
    time. Both engines stream: a server batches every request in flight, and the in-process vLLM
    engine is stepped for every thread waiting on it (``engine/vllm_engine.py``)."""
    if not config.flow.streamed:
        return Flow()
    return Flow(config.flow.slice_rows, config.flow.rows_in_flight)


@dataclass
class RunPlan:
    config: RunConfig
    folder: RunFolder
    models: Models
    judge_on: bool
    recipe: tuple[str, ...]  # the ordered step names (pipeline/executors/workbench.py builds each)
    split: TaskSplit
    executor: str = "local"
    ray: RayOptions = field(default_factory=RayOptions)
    workers: int = 1
    overwrite: bool = False
    command: str = ""  # the command line, as the manifest and the card record it
    verbose: bool = False
    accept_corpus_change: bool = False  # a changed corpus re-plans the unfinished tasks
    # the reply cache's folder, resolved once here (Ray actors and workers read it from the plan),
    # None when the cache is off
    reply_cache: str | None = None
    # where mining pools are built and kept (``pool_store``); None: each machine's cache folder
    pool_dir: str | None = None
    flow: Flow = field(default_factory=Flow)

    @cached_property
    def prompts(self) -> PromptLibrary:
        """The run's templates: the packaged ones, or the folder the config names."""
        folder = self.config.generation.prompts_dir
        return PromptLibrary(Path(folder) if folder else None)

    @cached_property
    def record(self) -> RunRecord:
        """What the run folder records of the configuration (``RunFolder.open``)."""
        return RunRecord.of(self.config)

    @property
    def templates(self) -> list[str]:
        return templates_of(self.config)

    def __getstate__(self) -> dict:
        # sent to Ray actors: the template library is rebuilt where it is used
        state = dict(self.__dict__)
        state.pop("prompts", None)
        return state

    def tasks_to_do(self) -> list[TaskState]:
        """The unfinished tasks of this process's share."""
        states = [self.folder.task(t) for t in self.split.mine()]
        return [state for state in states if not state.is_complete()]

    def limit_share(self, task: int) -> int | None:
        """Task ``task``'s part of ``--limit``: the limit split as evenly as the tasks allow."""
        limit = self.config.limit
        if not limit:
            return None
        tasks = self.split.num_tasks
        return limit // tasks + (task < limit % tasks)

    def serve(self, served_name: str) -> None:
        """Name the generator after what the server says it serves (the OpenAI-compatible engine)."""
        path = self.models.generator.path or served_name
        self.models.generator = ResolvedModel(path=path, name=served_name)


def resolve_models(config: RunConfig) -> Models:
    """Find or convert the models; cheap when they are already in place, and needs no engine."""
    remote = config.models.engine in ("openai", "batch")
    if remote:  # the server decides the model; nothing is converted or loaded here
        served = config.models.generator or ""
        generator = ResolvedModel(path=served, name=served or f"served at {config.models.base_url}")
    else:
        generator = resolve_generator(config.models.generator)
    generation = config.generation
    languages = set(generation.languages) | set(generation.passage_languages or {})
    judge = None
    if config.filters.judge.model:
        name = config.filters.judge.model
        judge = ResolvedModel(name, name) if remote else resolve_generator(name)
    return Models(generator, resolve_embedder(config.models.embedder, languages), remote, judge)


def judge_decision(config: RunConfig, generator: ResolvedModel) -> tuple[bool, str | None]:
    """(the judge runs, why not): on unless switched off, or left on auto with SmolLM2 as judge."""
    wanted = config.filters.judge.enabled
    if wanted is not None:
        return wanted, None
    if not config.filters.judge.model and generator.name == SMOLLM2_NAME:
        return False, (
            "LLM judge off: the packaged SmolLM2-135M grades at chance level (docs/quality.md). "
            "Pass a real --model, or --set filters.judge.enabled=true to force it."
        )
    return True, None


def step_recipe(config: RunConfig, judge_on: bool) -> tuple[str, ...]:
    """The ordered steps of a run: cheap filters before expensive LLM calls.

    Every step handles the task types it names and lets other rows pass (``run_step``),
    so one recipe serves a run of any mix of task types.
    """
    filters, negatives, generation = config.filters, config.negatives, config.generation
    types = set(generation.tasks)
    recipe: list[str] = []
    # with --pairs the queries are the user's: no persona, no query call; the gate and the negatives stay
    asks = set() if config.reads_pairs else types
    recipe += ["pair_positive"] if config.reads_pairs else []
    if "domain" in asks:
        recipe.append("domain_topic")  # the brainstormed topic first: persona retrieval reads it
    if asks & {"retrieval", "classification", "domain"}:
        recipe.append("personas")
    if asks & {"code_search", "code_docs"}:
        recipe.append("code_personas")
    if "retrieval" in asks:
        recipe += ["persona_query"] if generation.calls == "one" else ["configure", "query"]
    if asks & {"code_search", "code_docs"}:
        recipe.append("code_query")
    recipe += [name for name in ("code_translation",) if name in asks]
    recipe += ["domain_example"] if "domain" in asks else []
    recipe += [name for name in ("bitext", "classification", "sts") if name in asks]
    optional = [
        ("language", filters.language.enabled),
        ("repetition", filters.repetition.enabled),
        ("copy_check", filters.passage_copy.enabled),
        ("dedup", True),
        ("cosine", filters.cosine.enabled),
        # a better answer elsewhere in the corpus: needs the mining pool, before any negative is written
        (
            "positive_check",
            filters.positive_check.enabled
            and bool(negatives.mined_count)
            and bool(types & {"retrieval", "code_search", "code_docs"}),
        ),
        # a pair's negatives are mined: --pairs spends LLM tokens on the judge alone, when it is on
        ("negatives_llm", bool(negatives.llm_count) and bool(asks & {"retrieval", "code_docs"})),
        ("code_negatives_llm", bool(negatives.llm_count) and "code_search" in types),
        # after every step that writes code, before the margin scores it
        ("code_parses", bool(types & {"code_search", "code_translation"})),
        (
            "negatives_mined",
            bool(negatives.mined_count) and bool(types & {"retrieval", "code_search", "code_docs"}),
        ),
        (
            "negatives_model",
            bool(negatives.model and negatives.model_count)
            and bool(types & {"retrieval", "code_search", "code_docs"}),
        ),
        ("margin", True),
        ("judge", judge_on),
        ("require_negatives", bool(negatives.min_negatives)),
    ]
    return (*recipe, *(name for name, on in optional if on))


def check_executor(
    executor: str, *, rank: int, world_size: int, workers: int, replicas: int, engine: str = "vllm"
) -> None:
    """Whether the executor options make a run (one ``ValueError`` line if not): the one place
    they are judged, before anything loads (the command line) and again by ``resolve_plan``."""
    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"--rank must be in [0, {world_size}) for --world-size {world_size}, got {rank}")
    if executor == "ray" and (workers > 1 or world_size > 1):
        raise ValueError("--executor ray spreads the tasks itself: drop --workers / --world-size")
    if replicas < 1:
        raise ValueError("--replicas must be at least 1")
    if engine == "batch" and (executor == "ray" or workers > 1 or world_size > 1):
        raise ValueError(
            "--engine batch writes each round's requests file from one process: drop --workers, "
            "--world-size and --executor ray"
        )


def resolve_plan(
    config: RunConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    executor: str = "local",
    ray: RayOptions | None = None,
    workers: int = 1,
    overwrite: bool = False,
    verbose: bool = False,
    command: str | None = None,
    accept_corpus_change: bool = False,
) -> RunPlan:
    """The plan of a run of ``config``; warns once when the judge is switched off by the default."""
    check_executor(
        executor,
        rank=rank,
        world_size=world_size,
        workers=workers,
        replicas=(ray or RayOptions()).replicas,
        engine=config.models.engine,
    )
    models = resolve_models(config)
    judge_on, why_not = judge_decision(config, models.generator)
    if why_not:
        log.warning(why_not)
    recipe = step_recipe(config, judge_on)
    folder = RunFolder(config.output.out_dir)
    parallel = workers > 1 or world_size > 1 or executor == "ray"
    if parallel and not fences(folder.root / "progress"):
        raise RunStateError(
            f"{folder}: this store cannot create a file only if it is absent, so two writers of one task "
            "could both run (docs/running.md): write the run to local disk or S3, or run one process "
            "(no --workers, --world-size or --executor ray)"
        )
    return RunPlan(
        config=config,
        folder=folder,
        models=models,
        judge_on=judge_on,
        recipe=recipe,
        split=TaskSplit(config.output.num_tasks, rank, world_size),
        executor=executor,
        ray=ray or RayOptions(),
        workers=workers,
        overwrite=overwrite,
        command=redact(
            command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        ),
        verbose=verbose,
        accept_corpus_change=accept_corpus_change,
        reply_cache=(config.cache.path or default_root()) if config.cache.enabled else None,
        pool_dir=pool_store(config),
        flow=flow_decision(config),
    )
