"""The local runner: corpus -> passages -> steps -> Parquet shards, stats and manifest.

Reading the corpus and writing shards happen here and only here; the steps see
batches of rows. One shard is one batch, so the engine gets a whole shard of
prompts per call.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from . import schema as S
from .config import RunConfig, dump_config
from .corpus import Passage, ReadStats, iter_documents, iter_passages, sample_corpus_path
from .embedder import Embedder
from .engine import ChatEngine
from .engine.factory import get_engine
from .models import SMOLLM2_NAME, ResolvedModel, cache_root, resolve_embedder, resolve_generator
from .personas import load_personas
from .prompts import PromptLibrary
from .stats import RunStats
from .steps.base import Row, Step, row_rng
from .steps.configure import Configure
from .steps.copycheck import CopyCheck
from .steps.cosine import CosineFilter
from .steps.dedup import Dedup
from .steps.judge import Judge
from .steps.language import LanguageCheck
from .steps.margin import NegativeMargin, RequireNegatives
from .steps.negatives import MineNegatives, PassagePool, WriteNegatives
from .steps.personas import PersonaCandidates
from .steps.query import WriteQuery
from .writer import data_records, rejected_records, write_table

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    stats: RunStats
    shards: list[Path]


def token_counter(model: ResolvedModel) -> Callable[[str], int]:
    """Token counts from the generator's tokenizer, so the passage budget means what the model sees."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model.path)
    except Exception as exc:  # a remote engine's model may not be loadable here
        log.warning("no tokenizer for %s (%s); counting ~4 characters a token", model.name, exc)
        return lambda text: max(1, len(text) // 4)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def new_row(passage: Passage, config: RunConfig, task: str = "retrieval") -> Row:
    languages = config.generation.languages
    language = row_rng(config.seed, passage.passage_id, "language").choice(languages)
    row_id = hashlib.sha256(f"{passage.passage_id}\x1f{task}\x1f{language}".encode()).hexdigest()[:16]
    return {
        S.ID: row_id,
        S.POSITIVE: passage.text,
        S.TASK_TYPE: task,
        S.LANGUAGE: language,
        S.PASSAGE_LANGUAGE: passage.language,
        S.SOURCE_ID: passage.source_id,
        S.PASSAGE_ID: passage.passage_id,
        S.TITLE: passage.title,
        S.NEGATIVES: [],
    }


def _batches(items: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def judge_enabled(config: RunConfig, generator: ResolvedModel) -> bool:
    """The judge runs unless switched off, or left on auto with the packaged SmolLM2 as judge."""
    wanted = config.filters.judge.enabled
    if wanted is not None:
        return wanted
    if not config.filters.judge.model and generator.name == SMOLLM2_NAME:
        log.warning(
            "LLM judge off: the packaged SmolLM2-135M grades at chance level (docs/quality.md). "
            "Pass a real --model, or --set filters.judge.enabled=true to force it."
        )
        return False
    return True


def build_steps(
    config: RunConfig,
    engine: ChatEngine,
    embedder: Embedder,
    pool: PassagePool | None,
    judge_engine: ChatEngine | None = None,
    judge_on: bool = True,
) -> list[Step]:
    """The ordered steps of a run: cheap filters before expensive LLM calls."""
    prompts = PromptLibrary()
    personas = load_personas(config.personas.path)
    log.info("%d personas loaded", len(personas))
    filters, negatives = config.filters, config.negatives
    steps: list[Step] = [
        PersonaCandidates(embedder, personas, config.personas.top_k),
        Configure(engine, prompts, config.generation, config.personas.top_k),
        WriteQuery(engine, prompts, config.generation, config.seed),
    ]
    if filters.language.enabled:
        steps.append(LanguageCheck())
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


def build_pool(
    config: RunConfig, embedder: Embedder, count_tokens, default_corpus: Path
) -> PassagePool | None:
    """Encode up to ``negatives.pool_size`` corpus passages once, for mining."""
    if not config.negatives.mined_count:
        return None
    stats = ReadStats()
    passages = iter_passages(
        iter_documents(config.corpus, default_corpus, stats), count_tokens, config.corpus, stats
    )
    pool = PassagePool.build(
        itertools.islice(passages, config.negatives.pool_size), embedder, cache_root() / "pools"
    )
    log.info("mining pool: %d passages", len(pool.texts))
    return pool


def run_generate(config: RunConfig, engine: ChatEngine | None = None) -> RunResult:
    """Run the whole pipeline once into ``config.output.out_dir``."""
    started = time.perf_counter()
    out = Path(config.output.out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "rejected").mkdir(parents=True, exist_ok=True)
    dump_config(config, out / "config.yaml")
    stats = RunStats()

    generator = resolve_generator(config.models.generator)
    embedder_model = resolve_embedder(config.models.embedder)
    log.info("generator: %s", generator.name)
    judge_on = judge_enabled(config, generator)

    log.info("embedder: %s", embedder_model.name)

    t = time.perf_counter()
    embedder = Embedder(
        embedder_model.path,
        embedder_model.name,
        config.models.embed_batch_size,
        languages=embedder_model.languages,
    )
    count_tokens = token_counter(generator)
    stats.timings["load_embedder_and_tokenizer"] = time.perf_counter() - t

    default_corpus = sample_corpus_path(config.generation.languages[0])
    t = time.perf_counter()
    pool = build_pool(config, embedder, count_tokens, default_corpus)
    stats.timings["mining_pool"] = time.perf_counter() - t

    t = time.perf_counter()
    if engine is None:
        engine = get_engine(generator, config.models, config.seed)
    judge_engine = None
    if judge_on and config.filters.judge.model:
        judge_engine = get_engine(resolve_generator(config.filters.judge.model), config.models, config.seed)
    stats.timings["engine_start"] = time.perf_counter() - t
    steps = build_steps(config, engine, embedder, pool, judge_engine, judge_on)

    read_stats = ReadStats()
    passages = iter_passages(
        iter_documents(config.corpus, default_corpus, read_stats), count_tokens, config.corpus, read_stats
    )
    if config.limit:
        passages = itertools.islice(passages, config.limit)

    shards: list[Path] = []
    progress = tqdm(total=config.limit, desc="passages", unit="passage")
    try:
        for index, batch in enumerate(_batches(iter(passages), config.output.shard_rows)):
            rows = [new_row(p, config) for p in batch]
            rejected: list[dict] = []
            for step in steps:
                t = time.perf_counter()
                result = step(rows)
                stats.record(step.name, len(rows), result, time.perf_counter() - t)
                stats.add_outcomes([], result.dropped)
                rejected.extend(rejected_records(step.name, result.dropped))
                rows = result.kept
            stats.add_outcomes(rows, [])
            name = f"part-{index:05d}.parquet"
            if rows:
                shards.append(write_table(data_records(rows), S.ROW_SCHEMA, out / "data" / name))
            if rejected:
                write_table(rejected, S.REJECTED_SCHEMA, out / "rejected" / name)
            progress.update(len(batch))
            progress.set_postfix(kept=stats.rows_out)
    finally:
        progress.close()
        stats.reading.update(read_stats.counts)
        stats.timings["total"] = time.perf_counter() - started
        stats.timings["generation"] = sum(c.seconds for c in stats.stages.values())
        stats.write(out / "stats.json")
        _write_manifest(out, config, generator, embedder_model, shards, stats)
    return RunResult(out_dir=out, stats=stats, shards=shards)


def _write_manifest(
    out: Path,
    config: RunConfig,
    generator: ResolvedModel,
    embedder: ResolvedModel,
    shards: list[Path],
    stats: RunStats,
) -> None:
    import pyarrow.parquet as pq

    prompts = PromptLibrary()
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": {
            "generator": {"name": generator.name, "path": generator.path},
            "embedder": {"name": embedder.name, "path": embedder.path},
        },
        "prompts": {
            name: prompts.prompt(name).hash
            for name in ("retrieval/configure", "retrieval/query", "retrieval/negatives", "judge/relevance")
        },
        "seed": config.seed,
        "rows": stats.rows_out,
        "shards": [
            {"path": str(p.relative_to(out)), "rows": pq.ParquetFile(p).metadata.num_rows} for p in shards
        ],
        "schema": [f"{f.name}: {f.type}" for f in S.ROW_SCHEMA],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
