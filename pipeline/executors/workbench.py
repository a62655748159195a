"""What a worker builds once and reuses for every task: embedder, tokenizer, engine, and the steps.

The local executor builds one ``Workbench`` in its process; the Ray executor builds one
in each replica actor. Both get their steps from ``build_steps``, which builds the
plan's recipe (``pipeline/run/plan.py`` decides the order): no executor assembles a
stage of its own.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import console
from ..config import RunConfig
from ..embed.embedder import Embedder
from ..embed.pool import PassagePool
from ..engine import ChatEngine
from ..engine.factory import get_engine
from ..engine.reply_cache import CachingEngine, ReplyCache, Sampling, model_identity, server_identity
from ..filters.code import CodeParses
from ..filters.copycheck import CopyCheck
from ..filters.cosine import CosineFilter
from ..filters.dedup import Dedup
from ..filters.judge import Judge
from ..filters.language import LanguageCheck
from ..filters.margin import NegativeMargin, RequireNegatives
from ..filters.positive_check import PositiveCheck
from ..filters.repetition import RepetitionCheck
from ..generate.bitext import WriteBitext
from ..generate.classification import WriteClassification
from ..generate.code import WriteCodeNegatives, WriteCodeQuery, WriteCodeTranslation
from ..generate.configure import Configure
from ..generate.domain import DomainTopic, WriteDomainExample, load_or_brainstorm
from ..generate.labels import load_or_propose
from ..generate.llm_call import LLM
from ..generate.negatives import MineModelNegatives, MineNegatives, WriteNegatives
from ..generate.pairs import PairPositive
from ..generate.personas import PersonaCandidates, developer_personas, load_personas
from ..generate.query import WriteQuery
from ..generate.sts import WriteSTS
from ..models import SMOLLM2_NAME, ResolvedModel, cache_root
from ..readers import Corpus
from ..readers.documents import ReadStats
from ..readers.passages import Passage, open_documents, read_passages
from ..run.plan import RunPlan
from ..step import Step
from ..storage import location

log = logging.getLogger(__name__)


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


def trusted_languages(plan: RunPlan) -> tuple[str, ...] | None:
    """Languages whose embedder scores filters may use (None: all)."""
    wanted = plan.config.models.embedder_languages
    if wanted is None:
        return plan.models.embedder.languages
    return None if "*" in wanted else tuple(wanted)


@dataclass
class Parts:
    """What the steps are built from."""

    plan: RunPlan
    engine: ChatEngine
    embedder: Embedder
    pool: PassagePool | None = None
    judge_engine: ChatEngine | None = None
    labels: dict[str, str] | None = None
    domain_topics: dict[str, list[str]] | None = None  # "domain/language" -> brainstormed topics
    mistakes: MineModelNegatives | None = None  # a trained model and its pool (negatives.model)

    @property
    def llm(self) -> LLM:
        return LLM(self.engine, self.plan.prompts, self.plan.config.seed)


def _classification(p: Parts) -> Step:
    if not p.labels:
        raise ValueError("classification rows need a label set")
    return WriteClassification(p.llm, p.plan.config.generation, p.labels, p.embedder)


def _personas(p: Parts) -> Step:
    config = p.plan.config
    personas = load_personas(config.personas.path)
    log.info("%d personas loaded", len(personas))
    return PersonaCandidates(p.embedder, personas, config.personas.top_k)


def _code_personas(p: Parts) -> Step:
    config = p.plan.config
    personas = developer_personas(config.personas.code_path)
    log.info("%d developer personas loaded", len(personas))
    types = frozenset({"code_search", "code_docs"})
    return PersonaCandidates(
        p.embedder, personas, config.personas.top_k, name="code_personas", task_types=types
    )


def _domain_topic(p: Parts) -> Step:
    if not p.domain_topics:
        raise ValueError("domain rows need the brainstormed topic lists")
    return DomainTopic(p.domain_topics, p.plan.config.seed)


# recipe name -> how to build its step from the parts (the order comes from plan.step_recipe)
BUILDERS: dict[str, Callable[[Parts], Step]] = {
    "personas": _personas,
    "persona_query": lambda p: WriteQuery(
        p.llm, p.plan.config.generation, choose_persona_among=p.plan.config.personas.top_k
    ),
    "configure": lambda p: Configure(p.llm, p.plan.config.generation, p.plan.config.personas.top_k),
    "query": lambda p: WriteQuery(p.llm, p.plan.config.generation),
    "bitext": lambda p: WriteBitext(
        p.llm, p.plan.config.generation, p.plan.config.filters.language.check_negatives
    ),
    "classification": _classification,
    "sts": lambda p: WriteSTS(p.llm, p.plan.config.generation),
    "code_personas": _code_personas,
    "code_query": lambda p: WriteCodeQuery(p.llm, p.plan.config.generation),
    "code_translation": lambda p: WriteCodeTranslation(p.llm, p.plan.config.generation),
    "domain_topic": _domain_topic,
    "domain_example": lambda p: WriteDomainExample(
        p.llm,
        p.plan.config.generation,
        p.plan.config.domains,
        p.plan.config.filters.language.check_negatives,
        p.plan.config.filters.repetition.max_repeated if p.plan.config.filters.repetition.enabled else 1.0,
    ),
    "code_negatives_llm": lambda p: WriteCodeNegatives(p.llm, p.plan.config.negatives),
    "code_parses": lambda p: CodeParses(),
    "language": lambda p: LanguageCheck(),
    "repetition": lambda p: RepetitionCheck(p.plan.config.filters.repetition.max_repeated),
    "copy_check": lambda p: CopyCheck(p.plan.config.filters.passage_copy),
    "dedup": lambda p: Dedup(p.plan.config.filters.dedup),
    "cosine": lambda p: CosineFilter(p.embedder, p.plan.config.filters.cosine),
    "negatives_llm": lambda p: WriteNegatives(
        p.llm, p.plan.config.negatives, p.plan.config.filters.language.check_negatives
    ),
    "negatives_mined": lambda p: MineNegatives(p.embedder, p.pool, p.plan.config.negatives),
    "negatives_model": lambda p: p.mistakes,
    "pair_positive": lambda p: PairPositive(p.embedder, p.pool),
    "positive_check": lambda p: PositiveCheck(
        p.embedder,
        p.pool,
        p.plan.config.filters.positive_check,
        (p.judge_engine or p.engine) if p.plan.judge_on else None,
        p.plan.prompts,
        p.plan.config.filters.judge,
    ),
    "margin": lambda p: NegativeMargin(p.embedder, p.plan.config.negatives, p.plan.config.domains.negatives),
    "judge": lambda p: Judge(p.judge_engine or p.engine, p.plan.prompts, p.plan.config.filters.judge),
    "require_negatives": lambda p: RequireNegatives(p.plan.config.negatives.min_negatives),
}


def needs_domain_topics(plan: RunPlan) -> bool:
    """A domain run whose topics are not in the run folder yet."""
    return "domain_topic" in plan.recipe and not plan.folder.domain_topics_file.exists()


def resolve_domain_topics(plan: RunPlan, engine: ChatEngine) -> dict[str, list[str]] | None:
    """A domain run's topics: saved in the run folder, or brainstormed once and saved."""
    if "domain_topic" not in plan.recipe:
        return None
    config = plan.config
    topics = load_or_brainstorm(
        plan.folder.domain_topics_file,
        engine,
        plan.prompts,
        config.domains,
        list(config.generation.languages),
        config.seed,
    )
    log.info("domain topics: %d in all", sum(len(t) for t in topics.values()))
    return topics


def build_steps(parts: Parts) -> list[Step]:
    """The plan's recipe as step objects, in its order."""
    return [BUILDERS[name](parts) for name in parts.plan.recipe]


def pool_passages(config: RunConfig, corpus: Corpus, count_tokens: Callable[[str], int]) -> Iterator[Passage]:
    """The passages of the mining pool: the whole corpus, or its first ``negatives.pool_size``."""
    read = read_passages(corpus, config.corpus, count_tokens, ReadStats())
    if config.negatives.pool_size is not None:
        read = itertools.islice(read, config.negatives.pool_size)
    return read


def run_pool_passages(config: RunConfig) -> Iterator[Passage]:
    """A finished run's pool passages, read again as the run read them (its generator's tokenizer
    cuts the passages): ``synth split`` writes them as the eval corpus."""
    from ..run.plan import resolve_models

    models = resolve_models(config)
    with console.quiet():
        count_tokens = token_counter(models.generator, local_only=models.remote)
    return pool_passages(config, open_documents(config), count_tokens)


def run_pool(config: RunConfig) -> Callable[[], Iterator[Passage]] | None:
    """What reads a finished run's pool passages again (``run_pool_passages``), or None for a run
    without a corpus (the domain task type): ``synth split``'s eval corpus."""
    return None if config.makes_documents else (lambda: run_pool_passages(config))


def build_pool(plan: RunPlan, corpus: Corpus, embedder: Embedder, count_tokens) -> PassagePool:
    """The whole corpus (or ``negatives.pool_size`` passages), encoded once for mining and kept in
    the run's pool store (``plan.pool_dir``), each machine reading a copy in its cache folder."""
    local = cache_root() / "pools"
    pool = PassagePool.build(
        lambda: pool_passages(plan.config, corpus, count_tokens),
        embedder,
        location(plan.pool_dir) if plan.pool_dir else local,
        local,
    )
    log.info("mining pool: %d passages (%s search)", pool.size, pool.index.kind)
    return pool


def model_negatives(plan: RunPlan, corpus: Corpus, count_tokens) -> MineModelNegatives:
    """The step that mines the trained model's mistakes: the model, and the corpus encoded by it."""
    path = plan.config.negatives.model or ""
    with console.quiet():
        model = Embedder(
            path,
            f"trained:{Path(path).name}",
            plan.config.models.embed_batch_size,
            store_root=cache_root() / "vectors" if plan.config.models.embedding_store else None,
        )
    pool = build_pool(plan, corpus, model, count_tokens)
    return MineModelNegatives(model, pool, plan.config.negatives)


def needs_labels_from_engine(plan: RunPlan) -> bool:
    """Classification with no label set on disk or in the config, and a generator worth asking."""
    return (
        "classification" in plan.recipe
        and not plan.folder.labels_file.exists()
        and not plan.config.generation.labels
        and plan.models.generator.name != SMOLLM2_NAME
    )


def resolve_labels(
    plan: RunPlan, engine: ChatEngine | None, corpus: Corpus, count_tokens
) -> dict[str, str] | None:
    """The classification label set: configured, saved in the run folder, or proposed once."""
    if "classification" not in plan.recipe:
        return None
    head = itertools.islice(read_passages(corpus, plan.config.corpus, count_tokens, ReadStats()), 64)
    labels = load_or_propose(
        plan.folder.labels_file,
        plan.config.generation.labels,
        # the packaged SmolLM2-135M copies the worked example's labels: not worth asking
        None if plan.models.generator.name == SMOLLM2_NAME else engine,
        plan.prompts,
        [p.text for p in head],
        plan.config.generation.label_count,
        seed=plan.config.seed,
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
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, plan: RunPlan, corpus: Corpus, engine: ChatEngine | None = None) -> Workbench:
        """Load the embedder and tokenizer, build the mining pool, start the engine(s), build the steps."""
        config, models = plan.config, plan.models
        timings: dict[str, float] = {}
        t = time.perf_counter()
        with console.quiet():  # what the model loaders print goes to the run's log file
            embedder = Embedder(
                models.embedder.path,
                models.embedder.name,
                config.models.embed_batch_size,
                languages=trusted_languages(plan),
                cosine_threshold=models.embedder.cosine_threshold,
                code_cosine_threshold=models.embedder.code_cosine_threshold,
                store_root=cache_root() / "vectors" if config.models.embedding_store else None,
            )
            count_tokens = token_counter(models.generator, local_only=models.remote)
        timings["load_embedder_and_tokenizer"] = time.perf_counter() - t

        t = time.perf_counter()
        pool = None
        if {"negatives_mined", "pair_positive", "positive_check"} & set(
            plan.recipe
        ):  # with --pairs the corpus is the pool
            documents = open_documents(config) if config.reads_pairs else corpus
            pool = build_pool(plan, documents, embedder, count_tokens)
        mistakes = None
        if "negatives_model" in plan.recipe:  # the same corpus, encoded by the trained model
            documents = open_documents(config) if config.reads_pairs else corpus
            mistakes = model_negatives(plan, documents, count_tokens)
        timings["mining_pool"] = time.perf_counter() - t

        given = engine

        def start(model=models.generator) -> ChatEngine:
            """The real engine, started when first needed (never, when the reply cache answers all)."""
            t = time.perf_counter()
            with console.quiet():
                started = given if given is not None and model is models.generator else None
                started = started or get_engine(model, config.models, config.seed, plan.folder.batch_folder)
            timings["engine_start"] = timings.get("engine_start", 0.0) + time.perf_counter() - t
            return started

        engine = cached(plan, start, models.generator)
        judge_engine = None
        if plan.judge_on and models.judge is not None:
            judge_engine = cached(plan, lambda: start(models.judge), models.judge)
        labels = resolve_labels(plan, engine, corpus, count_tokens)
        domain_topics = resolve_domain_topics(plan, engine)
        parts = Parts(plan, engine, embedder, pool, judge_engine, labels, domain_topics, mistakes)
        steps = build_steps(parts)
        return cls(engine, embedder, count_tokens, steps, timings)

    @property
    def engine_info(self) -> dict:
        """The settings the engine runs with (empty while the reply cache has answered everything)."""
        return dict(getattr(self.engine, "settings", {}) or {})

    def close(self) -> None:
        """Check the reply cache's size bound; the engines themselves belong to the factory."""
        if isinstance(self.engine, CachingEngine):
            self.engine.close()


def cached(plan: RunPlan, start: Callable[[], ChatEngine], model: ResolvedModel) -> ChatEngine:
    """The engine behind the reply cache (``cache.enabled``); with the cache off, behind the journal of
    the chunk in flight only (``reply_cache.journal``). Either way it starts at the first miss."""
    config = plan.config
    cache = None
    if plan.reply_cache is not None:
        cache = ReplyCache(plan.reply_cache, int(config.cache.max_gib * (1 << 30)))
    sampling = Sampling(config.models.temperature, config.models.top_p)
    revision = config.models.revision
    if config.models.engine == "batch":  # a batch runner is known by the model name it serves
        identity = model_identity(None, f"batch:{model.path or model.name}", revision)
    elif plan.models.remote:  # the server's URL and what it says of the model, asked now (one GET)
        from ..engine.openai_engine import model_card

        card = model_card(config.models.base_url or "", model.path or None, config.models.api_key_env)
        identity = server_identity(config.models.base_url or "", card, revision)
    else:
        identity = model_identity(model.path, model.name, revision)
    return CachingEngine(start, cache, identity, model.name, sampling)
