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
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from . import sampling
from . import schema as S
from .config import RunConfig, dump_config
from .corpus import Passage, ReadStats, iter_documents, iter_passages, mix_languages, sample_corpus_paths
from .embedder import Embedder
from .engine import ChatEngine
from .engine.factory import get_engine
from .labels import load_or_propose
from .models import SMOLLM2_NAME, ResolvedModel, cache_root, resolve_embedder, resolve_generator
from .personas import load_personas
from .prompts import PromptLibrary
from .stats import RunStats
from .steps.base import Row, Step, run_step
from .steps.bitext import WriteBitext
from .steps.classification import WriteClassification
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
from .steps.repetition import RepetitionCheck
from .steps.sts import WriteSTS
from .tasks import TaskState, claim_run, clear_run, remove_stale_temporaries
from .writer import data_records, rejected_records, write_table

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    stats: RunStats
    shards: list[Path]


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


def new_row(passage: Passage, config: RunConfig, task: str = "retrieval") -> Row:
    """The starting row of one task type for one passage, with its seeded language draw.

    For bitext the drawn language is the translation's (``target_language``) and
    the query, a sentence of the passage, is in the passage's language.
    """
    generation = config.generation
    target = None
    if task == "bitext":
        language = passage.language
        target = sampling.bitext_target(generation, config.seed, passage.passage_id, passage.language)
    else:
        language = sampling.query_language(generation, config.seed, passage.passage_id, task)
    key = f"{passage.passage_id}\x1f{task}\x1f{language}\x1f{target or ''}"
    return {
        S.ID: hashlib.sha256(key.encode()).hexdigest()[:16],
        S.POSITIVE: passage.text,
        S.TASK_TYPE: task,
        S.LANGUAGE: language,
        S.PASSAGE_LANGUAGE: passage.language,
        S.TARGET_LANGUAGE: target,
        S.SOURCE_ID: passage.source_id,
        S.PASSAGE_ID: passage.passage_id,
        S.TITLE: passage.title,
        S.NEGATIVES: [],
    }


def new_rows(passage: Passage, config: RunConfig) -> list[Row]:
    """One row per configured task type."""
    return [new_row(passage, config, task) for task in config.generation.tasks]


def default_corpus(config: RunConfig) -> list[Path]:
    """The packaged samples read when no corpus is named: those of the passage or query languages."""
    generation = config.generation
    return sample_corpus_paths(generation.passage_languages or generation.languages)


def passage_mix(config: RunConfig) -> dict[str, float] | None:
    """Passage-language weights: as configured; for the packaged samples, the query languages' weights."""
    generation = config.generation
    if generation.passage_languages:
        return generation.passage_languages
    if config.corpus.path is None and len(default_corpus(config)) > 1:
        return {lang: w for lang, w in generation.languages.items() if lang in {"en", "zh"}}
    return None


def passage_stream(config: RunConfig, count_tokens, read_stats: ReadStats) -> Iterator[Passage]:
    """The run's passages in their fixed order: read, split, language-mixed, limited."""
    stream = iter_passages(
        iter_documents(config.corpus, default_corpus(config), read_stats),
        count_tokens,
        config.corpus,
        read_stats,
    )
    mix = passage_mix(config)
    if mix:
        stream = mix_languages(stream, mix, config.seed, read_stats)
    if config.limit:
        stream = itertools.islice(stream, config.limit)
    return stream


def trusted_languages(config: RunConfig, embedder: ResolvedModel) -> tuple[str, ...] | None:
    """Languages whose embedder scores filters may use (None: all)."""
    wanted = config.models.embedder_languages
    if wanted is None:
        return embedder.languages
    return None if "*" in wanted else tuple(wanted)


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


def build_pool(config: RunConfig, embedder: Embedder, count_tokens) -> PassagePool | None:
    """Encode up to ``negatives.pool_size`` corpus passages once, for mining."""
    if not config.negatives.mined_count or "retrieval" not in config.generation.tasks:
        return None
    stats = ReadStats()
    passages = iter_passages(
        iter_documents(config.corpus, default_corpus(config), stats), count_tokens, config.corpus, stats
    )
    pool = PassagePool.build(
        itertools.islice(passages, config.negatives.pool_size), embedder, cache_root() / "pools"
    )
    log.info("mining pool: %d passages", len(pool.texts))
    return pool


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM stopped the run between chunks; everything written so far is complete."""


class _StopFlag:
    """First SIGINT/SIGTERM: finish the chunk in flight, then stop. Second: stop at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: finishing the current chunk (press Ctrl-C again to abandon it)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _resume_stateful_steps(steps: list[Step], state: TaskState) -> None:
    """Give steps that remember earlier rows (dedup, percentile cosine) what a killed run already did.

    Each such step gets the rows that reached it and the rows that passed it, read
    back from the task's shards: kept rows passed every step, a rejected row
    reached every step up to the one that dropped it.
    """
    import pyarrow.parquet as pq

    kept = []
    for shard in state.shards("data"):
        columns = [
            S.ID,
            S.TASK_TYPE,
            S.QUERY,
            S.POSITIVE_SCORE,
            S.LANGUAGE,
            S.PASSAGE_LANGUAGE,
            S.TARGET_LANGUAGE,
        ]
        for row in pq.read_table(shard, columns=columns).to_pylist():
            scores = {"cosine": row.pop(S.POSITIVE_SCORE)}
            kept.append({**row, "scores": scores})
    rejected = []
    for shard in state.shards("rejected"):
        columns = [S.ID, S.TASK_TYPE, S.QUERY, S.STAGE, S.SCORES]
        for row in pq.read_table(shard, columns=columns).to_pylist():
            scores = json.loads(row.pop(S.SCORES)) if row[S.SCORES] else {}
            rejected.append({**row, "scores": scores})
    order = [step.name for step in steps]
    for position, step in enumerate(steps):
        resume = getattr(step, "resume", None)
        if resume is None:
            continue
        reached_at = set(order[position:])
        mine = [r for r in kept + rejected if r.get(S.TASK_TYPE) in step.tasks]
        reached = [r for r in mine if S.STAGE not in r or r[S.STAGE] in reached_at]
        passed = [r for r in mine if S.STAGE not in r or r[S.STAGE] in reached_at - {step.name}]
        resume(reached, passed)


def _run_task(
    state: TaskState,
    config: RunConfig,
    steps: list[Step],
    passages: Iterator[Passage],
    read_stats: ReadStats,
    progress: tqdm,
    stop: _StopFlag,
) -> RunStats:
    """Process one task chunk by chunk, checkpointing after each chunk's shards have landed."""
    chunks_done, saved = state.load()
    stats = RunStats.from_json(saved) if saved else RunStats()
    for step in steps:
        if hasattr(step, "reset"):
            step.reset()
    if chunks_done:
        log.info("%s: resuming after %d finished chunk(s)", state.name, chunks_done)
        _resume_stateful_steps(steps, state)
    for chunk, batch in enumerate(_batches(passages, config.output.shard_rows)):
        if chunk < chunks_done:
            continue  # written by an earlier run
        if stop.requested:
            raise Interrupted(state.name)
        rows = [row for p in batch for row in new_rows(p, config)]
        stats.rows_in += len(rows)
        rejected: list[dict] = []
        for step in steps:
            t = time.perf_counter()
            result, others = run_step(step, rows)
            stats.record(step.name, len(rows) - len(others), result, time.perf_counter() - t)
            stats.add_outcomes([], result.dropped)
            rejected.extend(rejected_records(step.name, result.dropped))
            rows = result.kept + others
        stats.add_outcomes(rows, [])
        stats.rows_out += len(rows)
        name = state.shard_name(chunk)
        if rows:
            write_table(data_records(rows), S.ROW_SCHEMA, state.out / "data" / name)
        if rejected:
            write_table(rejected, S.REJECTED_SCHEMA, state.out / "rejected" / name)
        stats.reading = Counter(read_stats.counts)
        chunks_done = chunk + 1
        state.save(chunks_done, stats.to_json())  # the checkpoint: only after both shards exist
        progress.update(len(batch))
    stats.reading = Counter(read_stats.counts)  # the pass always starts at the corpus head: full counts
    state.save(chunks_done, stats.to_json())
    state.complete()
    return stats


def run_generate(
    config: RunConfig,
    engine: ChatEngine | None = None,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
) -> RunResult:
    """Run this process's share of the tasks into ``config.output.out_dir``; resume what is unfinished.

    Tasks ``t`` with ``t % world_size == rank`` are this process's. Finished tasks
    are skipped, unfinished ones continue after their last finished chunk. When
    every task of the run is complete, the stats and manifest are merged.
    """
    started = time.perf_counter()
    out = Path(config.output.out_dir)
    if overwrite:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    claim_run(out, config)
    remove_stale_temporaries(out)
    (out / "data").mkdir(exist_ok=True)
    (out / "rejected").mkdir(exist_ok=True)
    dump_config(config, out / "config.yaml")

    num_tasks = config.output.num_tasks
    mine = [TaskState(out, t) for t in range(num_tasks) if t % world_size == rank]
    todo = [state for state in mine if not state.is_complete()]
    timings: dict[str, float] = {}
    engine_info: dict = {}
    remote = config.models.engine == "openai"
    if remote:
        # the server decides the model; nothing is converted or loaded here
        served = config.models.generator or ""
        generator = ResolvedModel(path=served, name=served or f"served at {config.models.base_url}")
    else:
        generator = resolve_generator(config.models.generator)
    embedder_model = resolve_embedder(config.models.embedder)
    if todo:
        if remote:  # connect first: the server names the model, and an unreachable one fails fast
            if engine is None:
                engine = get_engine(generator, config.models, config.seed)
            generator = ResolvedModel(path=generator.path or engine.model_name, name=engine.model_name)
        log.info("generator: %s", generator.name)
        log.info("embedder: %s", embedder_model.name)
        log.info("tasks to run here: %s", ", ".join(s.name for s in todo))
        judge_on = judge_enabled(config, generator)
        t = time.perf_counter()
        embedder = Embedder(
            embedder_model.path,
            embedder_model.name,
            config.models.embed_batch_size,
            languages=trusted_languages(config, embedder_model),
        )
        count_tokens = token_counter(generator, local_only=remote)
        timings["load_embedder_and_tokenizer"] = time.perf_counter() - t

        t = time.perf_counter()
        pool = build_pool(config, embedder, count_tokens)
        timings["mining_pool"] = time.perf_counter() - t

        t = time.perf_counter()
        if engine is None:
            engine = get_engine(generator, config.models, config.seed)
        judge_engine = None
        if judge_on and config.filters.judge.model:
            judge_model = config.filters.judge.model
            judge = ResolvedModel(judge_model, judge_model) if remote else resolve_generator(judge_model)
            judge_engine = get_engine(judge, config.models, config.seed)
        timings["engine_start"] = time.perf_counter() - t
        engine_info = dict(getattr(engine, "settings", {}))
        labels = None
        if "classification" in config.generation.tasks:
            head = itertools.islice(passage_stream(config, count_tokens, ReadStats()), 64)
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
        steps = build_steps(config, engine, embedder, pool, judge_engine, judge_on, labels)

        total = -(-config.limit // num_tasks) * len(todo) if config.limit else None  # an upper bound
        progress = tqdm(total=total, desc="passages", unit="passage")
        try:
            with _StopFlag() as stop:
                for state in todo:
                    read_stats = ReadStats()
                    stream = passage_stream(config, count_tokens, read_stats)
                    own = (p for i, p in enumerate(stream) if i % num_tasks == state.task)
                    _run_task(state, config, steps, own, read_stats, progress, stop)
        finally:  # also on a crash or interrupt: stats.json always reflects what is on disk
            progress.close()
            timings["total"] = time.perf_counter() - started
            stats = _finalize(out, config, generator, embedder_model, timings, engine_info)
    else:
        stats = _finalize(out, config, generator, embedder_model, timings, engine_info)
    return RunResult(out_dir=out, stats=stats, shards=sorted((out / "data").glob("part-*.parquet")))


def _finalize(
    out: Path,
    config: RunConfig,
    generator: ResolvedModel,
    embedder: ResolvedModel,
    timings: dict[str, float],
    engine_info: dict | None = None,
) -> RunStats:
    """Merge every task's stats into stats.json; write the manifest once all tasks are complete."""
    states = [TaskState(out, t) for t in range(config.output.num_tasks)]
    stats = RunStats()
    reading = Counter()
    for state in states:
        saved = state.load()[1]
        if saved:
            task_stats = RunStats.from_json(saved)
            # every task reads the corpus from its head, so reading counts are per run, not per task
            reading = reading | task_stats.reading
            task_stats.reading = Counter()
            stats.merge(task_stats)
    stats.reading = reading
    stats.engine = dict(engine_info or {})
    stats.timings = dict(timings)
    stats.timings["generation"] = sum(c.seconds for c in stats.stages.values())
    done = sum(state.is_complete() for state in states)
    stats.timings["tasks_complete"] = done
    stats.write(out / "stats.json")
    if done == len(states):
        _write_manifest(
            out, config, generator, embedder, sorted((out / "data").glob("part-*.parquet")), stats
        )
    return stats


def _write_manifest(
    out: Path,
    config: RunConfig,
    generator: ResolvedModel,
    embedder: ResolvedModel,
    shards: list[Path],
    stats: RunStats,
) -> None:
    import pyarrow.parquet as pq

    prompts = prompt_library(config)
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": {
            "generator": {"name": generator.name, "path": generator.path, **stats.engine},
            "embedder": {"name": embedder.name, "path": embedder.path},
        },
        "prompts": {name: prompts.prompt(name).hash for name in templates_of(config)},
        "tasks": list(config.generation.tasks),
        "seed": config.seed,
        "rows": stats.rows_out,
        "shards": [
            {"path": str(p.relative_to(out)), "rows": pq.ParquetFile(p).metadata.num_rows} for p in shards
        ],
        "schema": [f"{f.name}: {f.type}" for f in S.ROW_SCHEMA],
    }
    labels = out / "labels.json"
    if labels.exists():
        manifest["labels"] = json.loads(labels.read_text(encoding="utf-8"))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))


TEMPLATES = {
    "retrieval": ("retrieval/configure", "retrieval/query", "retrieval/negatives", "judge/relevance"),
    "bitext": ("bitext/translate",),
    "classification": ("classification/classify", "classification/labels"),
    "sts": ("sts/pair",),
}


def templates_of(config: RunConfig) -> list[str]:
    names = [name for task in config.generation.tasks for name in TEMPLATES[task]]
    if config.generation.calls == "one" and "retrieval/configure" in names:
        names[names.index("retrieval/configure") : names.index("retrieval/query") + 1] = [
            "retrieval/persona_query"
        ]
    return names
