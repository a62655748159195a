"""What a worker builds once and reuses for every task: models, engine, embedder and the steps.

The local executor builds one ``Workbench`` in its process; the Ray executor
builds one in each replica actor. Both get the same steps from ``build_steps``:
no executor assembles a stage of its own.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import console
from ..config import RunConfig
from ..corpus import ReadStats, documents, iter_passages
from ..embedder import Embedder
from ..engine import ChatEngine
from ..engine.factory import get_engine
from ..labels import load_or_propose
from ..models import SMOLLM2_NAME, ResolvedModel, cache_root, resolve_embedder, resolve_generator
from ..personas import load_personas
from ..pool import PassagePool
from ..prompts import PromptLibrary
from ..readers import Corpus
from ..steps.base import Step
from ..steps.bitext import WriteBitext
from ..steps.classification import WriteClassification
from ..steps.configure import Configure
from ..steps.copycheck import CopyCheck
from ..steps.cosine import CosineFilter
from ..steps.dedup import Dedup
from ..steps.judge import Judge
from ..steps.language import LanguageCheck
from ..steps.margin import NegativeMargin, RequireNegatives
from ..steps.negatives import MineNegatives, WriteNegatives
from ..steps.personas import PersonaCandidates
from ..steps.query import WriteQuery
from ..steps.repetition import RepetitionCheck
from ..steps.sts import WriteSTS

log = logging.getLogger(__name__)


@dataclass
class Models:
    """The run's generator and embedder, resolved to local paths (or a served model's name)."""

    generator: ResolvedModel
    embedder: ResolvedModel
    remote: bool  # the generator is served over HTTP: nothing is loaded here


def resolve_models(config: RunConfig) -> Models:
    """Find or convert the models; cheap when they are already in place, and needs no engine."""
    remote = config.models.engine == "openai"
    if remote:  # the server decides the model; nothing is converted or loaded here
        served = config.models.generator or ""
        generator = ResolvedModel(path=served, name=served or f"served at {config.models.base_url}")
    else:
        generator = resolve_generator(config.models.generator)
    generation = config.generation
    languages = set(generation.languages) | set(generation.passage_languages or {})
    return Models(generator, resolve_embedder(config.models.embedder, languages), remote)


def token_counter(model: ResolvedModel, local_only: bool = False) -> Callable[[str], int]:
    """Token counts from the generator's tokenizer, so the passage budget means what the model sees."""
    from transformers import AutoTokenizer

    if local_only and not Path(model.path).is_dir():
        log.info("no local tokenizer for %s: counting ~4 characters a token", model.name)
        return lambda text: max(1, len(text) // 4)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model.path)
    except Exception as exc:  # a remote engine's model may not be loadable here
        log.warning("no tokenizer for %s (%s); counting ~4 characters a token", model.name, exc)
        return lambda text: max(1, len(text) // 4)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def trusted_languages(config: RunConfig, embedder: ResolvedModel) -> tuple[str, ...] | None:
    """Languages whose embedder scores filters may use (None: all)."""
    wanted = config.models.embedder_languages
    if wanted is None:
        return embedder.languages
    return None if "*" in wanted else tuple(wanted)


def judge_enabled(config: RunConfig, generator: ResolvedModel, warn: bool = True) -> bool:
    """The judge runs unless switched off, or left on auto with the packaged SmolLM2 as judge."""
    wanted = config.filters.judge.enabled
    if wanted is not None:
        return wanted
    if not config.filters.judge.model and generator.name == SMOLLM2_NAME:
        if warn:
            log.warning(
                "LLM judge off: the packaged SmolLM2-135M grades at chance level (docs/quality.md). "
                "Pass a real --model, or --set filters.judge.enabled=true to force it."
            )
        return False
    return True


def prompt_library(config: RunConfig) -> PromptLibrary:
    """The run's templates: the packaged ones, or the folder the config names."""
    folder = config.generation.prompts_dir
    return PromptLibrary(Path(folder) if folder else None)


def build_steps(
    config: RunConfig,
    engine: ChatEngine,
    embedder: Embedder,
    pool: PassagePool | None,
    judge_engine: ChatEngine | None = None,
    judge_on: bool = True,
    labels: dict[str, str] | None = None,
) -> list[Step]:
    """The ordered steps of a run: cheap filters before expensive LLM calls.

    Every step handles the task types in its ``tasks`` and lets other rows pass
    (``run_step``), so one list serves a run of any mix of task types.
    """
    prompts = prompt_library(config)
    filters, negatives, generation = config.filters, config.negatives, config.generation
    tasks = set(generation.tasks)
    steps: list[Step] = []
    if tasks & {"retrieval", "classification"}:
        personas = load_personas(config.personas.path)
        log.info("%d personas loaded", len(personas))
        steps.append(PersonaCandidates(embedder, personas, config.personas.top_k))
    if "retrieval" in tasks and generation.calls == "one":
        steps.append(
            WriteQuery(engine, prompts, generation, config.seed, choose_persona_among=config.personas.top_k)
        )
    elif "retrieval" in tasks:
        steps.append(Configure(engine, prompts, generation, config.personas.top_k, config.seed))
        steps.append(WriteQuery(engine, prompts, generation, config.seed))
    if "bitext" in tasks:
        steps.append(WriteBitext(engine, prompts, generation, config.seed, filters.language.check_negatives))
    if "classification" in tasks:
        if not labels:
            raise ValueError("classification rows need a label set")
        steps.append(WriteClassification(engine, prompts, generation, labels, config.seed, embedder))
    if "sts" in tasks:
        steps.append(WriteSTS(engine, prompts, generation, config.seed))
    if filters.language.enabled:
        steps.append(LanguageCheck())
    if filters.repetition.enabled:
        steps.append(RepetitionCheck(filters.repetition.max_repeated))
    if filters.passage_copy.enabled:
        steps.append(CopyCheck(filters.passage_copy))
    steps.append(Dedup(filters.dedup))
    if filters.cosine.enabled:
        steps.append(CosineFilter(embedder, filters.cosine))
    if negatives.llm_count:
        steps.append(WriteNegatives(engine, prompts, negatives, filters.language.check_negatives))
    if negatives.mined_count and pool is not None:
        steps.append(MineNegatives(embedder, pool, negatives))
    steps.append(NegativeMargin(embedder, negatives))
    if judge_on:
        steps.append(Judge(judge_engine or engine, prompts, filters.judge))
    if negatives.min_negatives:
        steps.append(RequireNegatives(negatives.min_negatives))
    return steps


def build_pool(config: RunConfig, corpus: Corpus, embedder: Embedder, count_tokens) -> PassagePool | None:
    """The whole corpus (or ``negatives.pool_size`` passages), encoded once for mining (cached on disk)."""
    if not config.negatives.mined_count or "retrieval" not in config.generation.tasks:
        return None

    def passages():
        stats = ReadStats()
        read = iter_passages(
            documents(corpus.read(counts=stats.counts), config.corpus, stats),
            count_tokens,
            config.corpus,
            stats,
        )
        if config.negatives.pool_size is not None:
            read = itertools.islice(read, config.negatives.pool_size)
        return read

    pool = PassagePool.build(passages, embedder, cache_root() / "pools")
    log.info("mining pool: %d passages (%s search)", pool.size, pool.index.kind)
    return pool


def needs_labels_from_engine(config: RunConfig, out: Path, generator: ResolvedModel) -> bool:
    """Classification with no label set on disk or in the config, and a generator worth asking."""
    return (
        "classification" in config.generation.tasks
        and not (out / "labels.json").exists()
        and not config.generation.labels
        and generator.name != SMOLLM2_NAME
    )


def resolve_labels(
    config: RunConfig,
    out: Path,
    generator: ResolvedModel,
    engine: ChatEngine | None,
    corpus: Corpus,
    count_tokens,
) -> dict[str, str] | None:
    """The classification label set: configured, saved in ``OUT/labels.json``, or proposed once."""
    if "classification" not in config.generation.tasks:
        return None
    stats = ReadStats()
    head = itertools.islice(
        iter_passages(
            documents(corpus.read(counts=stats.counts), config.corpus, stats),
            count_tokens,
            config.corpus,
            stats,
        ),
        64,
    )
    labels = load_or_propose(
        out,
        config.generation.labels,
        # the packaged SmolLM2-135M copies the worked example's labels: not worth asking
        None if generator.name == SMOLLM2_NAME else engine,
        prompt_library(config),
        [p.text for p in head],
        config.generation.label_count,
    )
    log.info("classification labels: %s", ", ".join(labels))
    return labels


@dataclass
class Workbench:
    """A worker's engine, embedder, token counter and steps, built once for all its tasks."""

    engine: ChatEngine
    embedder: Embedder
    count_tokens: Callable[[str], int]
    steps: list[Step]
    engine_info: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        config: RunConfig,
        models: Models,
        corpus: Corpus,
        out: Path,
        engine: ChatEngine | None = None,
    ) -> Workbench:
        """Load the embedder and tokenizer, build the mining pool, start the engine(s), build the steps."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        with console.quiet():  # what the model loaders print goes to the run's log file
            embedder = Embedder(
                models.embedder.path,
                models.embedder.name,
                config.models.embed_batch_size,
                languages=trusted_languages(config, models.embedder),
                cosine_threshold=models.embedder.cosine_threshold,
                store_root=cache_root() / "vectors" if config.models.embedding_store else None,
            )
            count_tokens = token_counter(models.generator, local_only=models.remote)
        timings["load_embedder_and_tokenizer"] = time.perf_counter() - t

        t = time.perf_counter()
        pool = build_pool(config, corpus, embedder, count_tokens)
        timings["mining_pool"] = time.perf_counter() - t

        t = time.perf_counter()
        judge_on = judge_enabled(config, models.generator, warn=False)
        judge_engine = None
        with console.quiet():
            if engine is None:
                engine = get_engine(models.generator, config.models, config.seed)
            if judge_on and config.filters.judge.model:
                judge_model = config.filters.judge.model
                remote = models.remote
                judge = ResolvedModel(judge_model, judge_model) if remote else resolve_generator(judge_model)
                judge_engine = get_engine(judge, config.models, config.seed)
        timings["engine_start"] = time.perf_counter() - t
        labels = resolve_labels(config, out, models.generator, engine, corpus, count_tokens)
        steps = build_steps(config, engine, embedder, pool, judge_engine, judge_on, labels)
        return cls(engine, embedder, count_tokens, steps, dict(getattr(engine, "settings", {})), timings)
