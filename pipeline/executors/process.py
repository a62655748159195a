"""One task, start to finish: its passages, its rows, the steps, its shards and checkpoints.

Every executor runs a task through ``run_task``; only who calls it differs (a
loop in this process, a Ray actor). A task reads its own input blocks, cuts
them into passages, turns each passage into rows, runs every chunk through the
steps, writes the chunk's shards and then its checkpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import sampling
from .. import schema as S
from ..config import RunConfig
from ..console import say
from ..corpus import Passage, ReadStats, documents, iter_passages, mix_languages, sample_corpus_paths
from ..readers import Corpus, open_corpus
from ..stats import RunStats
from ..steps.base import Row, StatefulStep, Step, run_step
from ..tasks import TaskState
from ..writer import records_by_task_type, rejected_records, write_table

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """A stop was requested between chunks; everything written so far is complete."""


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


def open_input(config: RunConfig) -> Corpus:
    """The run's corpus, cut into blocks for ``output.num_tasks`` tasks (reads metadata only)."""
    sources = [config.corpus.path] if config.corpus.path else [str(p) for p in default_corpus(config)]
    return open_corpus(sources, config.corpus, config.output.num_tasks)


def passage_mix(config: RunConfig) -> dict[str, float] | None:
    """Passage-language weights: as configured; for the packaged samples, the query languages' weights."""
    generation = config.generation
    if generation.passage_languages:
        return generation.passage_languages
    if config.corpus.path is None and len(default_corpus(config)) > 1:
        return {lang: w for lang, w in generation.languages.items() if lang in {"en", "zh"}}
    return None


def limit_share(config: RunConfig, task: int) -> int | None:
    """Task ``task``'s part of ``--limit``: the limit split as evenly as the tasks allow."""
    if not config.limit:
        return None
    tasks = config.output.num_tasks
    return config.limit // tasks + (task < config.limit % tasks)


def task_passages(
    config: RunConfig, corpus: Corpus, task: int, count_tokens, read_stats: ReadStats
) -> Iterator[Passage]:
    """Task ``task``'s passages in their fixed order: its blocks read, split, language-mixed, limited."""
    rows = corpus.read(task, config.output.num_tasks, read_stats.counts)
    docs = documents(rows, config.corpus, read_stats)
    stream = iter_passages(docs, count_tokens, config.corpus, read_stats)
    mix = passage_mix(config)
    if mix:
        stream = mix_languages(stream, mix, config.seed, read_stats)
    share = limit_share(config, task)
    if share is not None:
        stream = itertools.islice(stream, share)
    return stream


def resume_stateful_steps(steps: list[Step], state: TaskState) -> None:
    """Give steps that remember earlier rows what a killed run of this task already wrote.

    Each such step gets the rows that reached it and the rows that passed it, read
    back from the task's shards: kept rows passed every step, a rejected row
    reached every step up to the one that dropped it.
    """
    import pyarrow.parquet as pq

    kept = []
    columns = [S.ID, S.TASK_TYPE, S.QUERY, S.POSITIVE_SCORE, S.LANGUAGE, S.PASSAGE_LANGUAGE]
    columns.append(S.TARGET_LANGUAGE)
    for shard in state.shards("data"):
        for row in pq.read_table(shard, columns=columns).to_pylist():
            scores = {"cosine": row.pop(S.POSITIVE_SCORE)}
            kept.append({**row, "scores": scores})
    rejected = []
    for shard in state.shards("rejected"):
        for row in pq.read_table(shard, columns=[S.ID, S.TASK_TYPE, S.QUERY, S.STAGE, S.SCORES]).to_pylist():
            scores = json.loads(row.pop(S.SCORES)) if row[S.SCORES] else {}
            rejected.append({**row, "scores": scores})
    order = [step.name for step in steps]
    for position, step in enumerate(steps):
        if not isinstance(step, StatefulStep):
            continue
        reached_at = set(order[position:])
        mine = [r for r in kept + rejected if r.get(S.TASK_TYPE) in step.tasks]
        reached = [r for r in mine if S.STAGE not in r or r[S.STAGE] in reached_at]
        passed = [r for r in mine if S.STAGE not in r or r[S.STAGE] in reached_at - {step.name}]
        step.resume(reached, passed)


def process_chunk(steps: list[Step], rows: list[Row], stats: RunStats) -> tuple[list[Row], list[dict]]:
    """Run one chunk's rows through every step; return the kept rows and the rejected records."""
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
    return rows, rejected


def _chunks(items: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def run_task(
    state: TaskState,
    config: RunConfig,
    corpus: Corpus,
    steps: list[Step],
    count_tokens,
    on_chunk: Callable[[int, int], None] = lambda passages, rows: None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> RunStats:
    """Process one task chunk by chunk, checkpointing after each chunk's shards have landed.

    Chunks a killed run already finished are read again (to keep the stream's
    order) but not processed; stateful steps are rebuilt from their shards.
    ``on_chunk(passages, rows kept)`` is called after each finished chunk.
    """
    chunks_done, saved = state.load()
    stats = RunStats.from_json(saved) if saved else RunStats()
    for step in steps:
        if isinstance(step, StatefulStep):
            step.reset()
    if chunks_done:
        say(f"{state.name}: resuming after {chunks_done} finished chunk(s)")
        resume_stateful_steps(steps, state)
    read_stats = ReadStats()
    passages = task_passages(config, corpus, state.task, count_tokens, read_stats)
    for chunk, batch in enumerate(_chunks(passages, config.output.shard_rows)):
        if chunk < chunks_done:
            continue  # written by an earlier run
        if stop_requested():
            raise Interrupted(state.name)
        rows, rejected = process_chunk(steps, [row for p in batch for row in new_rows(p, config)], stats)
        name = state.shard_name(chunk)
        # one folder per task type, so each can be loaded on its own (the dataset card's configs)
        for task_type, records in records_by_task_type(rows).items():
            write_table(records, S.ROW_SCHEMA, state.out / "data" / task_type / name)
        if rejected:
            write_table(rejected, S.REJECTED_SCHEMA, state.out / "rejected" / name)
        stats.reading = Counter(read_stats.counts)
        chunks_done = chunk + 1
        state.save(chunks_done, stats.to_json())  # the checkpoint: only after both shards exist
        on_chunk(len(batch), len(rows))
    stats.reading = Counter(read_stats.counts)  # the task's whole input was read in this pass
    state.save(chunks_done, stats.to_json())
    state.complete()
    return stats
