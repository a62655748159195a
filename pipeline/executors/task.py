"""One task, start to finish: its passages, its rows, the steps, its shards and checkpoints.

Every executor runs a task through ``run_task``; only who calls it differs (a loop in
this process, a Ray actor). A task reads its own input blocks, cuts them into
passages, turns each passage into rows, runs every chunk through the steps, writes
the chunk's shards and then its checkpoint.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from .. import schema as S
from .. import storage
from ..console import say
from ..engine.base import Usage
from ..engine.batch_engine import RepliesPending
from ..faults import crash_point
from ..generate.rows import new_rows
from ..readers import Corpus
from ..readers.documents import ReadStats
from ..readers.passages import Passage, task_passages
from ..run.budget import Budget, BudgetReached
from ..run.folder import DATA, REJECTED, Checkpoint, LeaseLost, TaskState
from ..run.plan import RunPlan
from ..run.shards import records_by_task_type, write_table
from ..run.stats import RunStats
from ..step import Row, StatefulStep, Step
from .base import Interrupted
from .flow import ChunkFlow, ChunkWork

log = logging.getLogger(__name__)


def resume_stateful_steps(steps: list[Step], state: TaskState, checkpoint: Checkpoint) -> None:
    """Give steps that remember earlier rows what a killed run of this task already wrote.

    Each such step gets the rows that reached it and the rows that passed it, read
    back from the task's shards: kept rows passed every step, a rejected row
    reached every step up to the one that dropped it.
    """
    kept = []
    columns = [S.ID, S.TASK_TYPE, S.QUERY, S.POSITIVE_SCORE, S.LANGUAGE, S.PASSAGE_LANGUAGE]
    columns.append(S.TARGET_LANGUAGE)
    for shard in state.shards(DATA, checkpoint):
        for row in storage.read_table(shard, columns=columns).to_pylist():
            scores = {"cosine": row.pop(S.POSITIVE_SCORE)}
            kept.append({**row, S.WORK_SCORES: scores})
    rejected = []
    for shard in state.shards(REJECTED, checkpoint):
        columns = [S.ID, S.TASK_TYPE, S.QUERY, S.STAGE, S.SCORES]
        for row in storage.read_table(shard, columns=columns).to_pylist():
            scores = json.loads(row.pop(S.SCORES)) if row[S.SCORES] else {}
            rejected.append({**row, S.WORK_SCORES: scores})
    order = [step.name for step in steps]
    for position, step in enumerate(steps):
        if not isinstance(step, StatefulStep):
            continue
        reached_at = set(order[position:])
        mine = [r for r in kept + rejected if r.get(S.TASK_TYPE) in step.task_types]
        reached = [r for r in mine if S.STAGE not in r or r[S.STAGE] in reached_at]
        passed = [r for r in mine if S.STAGE not in r or r[S.STAGE] in reached_at - {step.name}]
        step.resume(reached, passed)


def _chunks(items: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _commit_each(works: Iterable[ChunkWork], commit: Callable[[ChunkWork], None]) -> None:
    """Commit chunks as they are handed back (``drain`` hands each on as soon as it finishes)."""
    for work in works:
        commit(work)


def run_task(
    state: TaskState,
    plan: RunPlan,
    corpus: Corpus,
    steps: list[Step],
    count_tokens: Callable[[str], int],
    on_chunk: Callable[[int, int], None] = lambda passages, rows: None,
    stop_requested: Callable[[], bool] = lambda: False,
    lease_wait: float | None = None,
) -> RunStats:
    """Process one task chunk by chunk, checkpointing after each chunk's shards have landed.

    The checkpoint is the commit: it lists every shard the task has committed, and is
    written only once the chunk's shards exist. Shards carry this writer's attempt id, so a
    crashed or overtaken writer's shards never take a committed name. Chunks a killed run
    already finished are read again (to keep the stream's order) but not processed;
    stateful steps are rebuilt from their committed shards.
    ``on_chunk(passages, rows kept)`` is called after each finished chunk.

    A writer whose lease was taken over while it stalled (``LeaseLost``) leaves the task to its
    new owner quietly and returns None; the run goes on with its other tasks.
    """
    with state.lease(lease_wait) as lease:  # one writer per task: a second one waits, then stops
        try:
            return _run_task(state, plan, corpus, steps, count_tokens, on_chunk, stop_requested, lease)
        except LeaseLost as exc:
            log.warning("%s (it stalled past the lease time); its new owner finishes it", exc)
            return None


def write_shards(state: TaskState, chunk: int, rows: list[Row], rejected: list[dict], lease) -> list[str]:
    """A chunk's shards (one per task type, one of its dropped rows), each written only while this
    writer still holds the task; the relative paths the chunk's commit will list."""
    folder = state.folder
    shards = [
        (records, S.ROW_SCHEMA, folder.data_shard(task_type, state.task, chunk, lease.attempt))
        for task_type, records in records_by_task_type(rows).items()
    ]
    if rejected:
        shards.append((rejected, S.REJECTED_SCHEMA, folder.rejected_shard(state.task, chunk, lease.attempt)))
    written = []
    for records, schema, path in shards:
        crash_point("before_shard")
        lease.confirm()  # a writer that was overtaken stops before it writes more
        write_table(records, schema, path)
        written.append(folder.relative(path))
        crash_point("after_shard")
    return written


def _run_task(state, plan, corpus, steps, count_tokens, on_chunk, stop_requested, lease) -> RunStats:
    config = plan.config
    checkpoint = state.load()
    if checkpoint.chunks_done or checkpoint.shards:
        # commit again under this writer's lease version first: a stalled former owner's later
        # commits (under its older version) then never count, whatever they list
        state.save(checkpoint, lease.confirm())
    commits = Commits(state, lease, checkpoint, on_chunk)
    for step in steps:
        if isinstance(step, StatefulStep):
            step.reset()
    # the checkpoint is the only truth: shards it does not list are a crashed attempt's
    removed = state.remove_uncommitted(commits.committed)
    if removed:
        log.info(
            "%s: removed %d shard(s) of chunks after the checkpoint: %s", state.name, len(removed), removed
        )
    if commits.chunks_done:
        say(f"{state.name}: resuming after {commits.chunks_done} finished chunk(s)")
        resume_stateful_steps(steps, state, checkpoint)
    read_stats = ReadStats()
    passages = task_passages(config, corpus, state.task, count_tokens, read_stats)
    with ChunkFlow(steps, plan.flow, state.chunk_replies) as flow:
        try:
            _feed(flow, commits, passages, read_stats, plan, state, stop_requested)
        except BaseException as exc:
            # a failure outside the slices (a bad corpus row): what was done before it is kept, as a
            # staged run keeps it; not after a failed commit (the chunks are committed in order)
            quiet = isinstance(exc, KeyboardInterrupt | BudgetReached | Interrupted)
            if flow.error is None and not commits.failed and not quiet:
                _commit_each(flow.drain(), commits.commit)
            raise
        _commit_each(flow.drain(), commits.commit)
    if commits.held:  # this round's requests are written; the next round resumes after chunks_done
        raise RepliesPending(f"{state.name}: {len(commits.held)} chunk(s) wait for a batch file's results")
    stats = commits.stats
    stats.reading = Counter(read_stats.counts)  # the task's whole input was read in this pass
    state.save(Checkpoint(commits.chunks_done, stats.to_json(), tuple(commits.committed)), lease.confirm())
    storage.remove(state.replies_folder)
    crash_point("before_complete")
    lease.confirm()
    state.complete()
    return stats


class Commits:
    """A task's committed chunks: each finished chunk written and checkpointed, in order."""

    def __init__(self, state: TaskState, lease, checkpoint: Checkpoint, on_chunk: Callable[[int, int], None]):
        self.state, self.lease, self.on_chunk = state, lease, on_chunk
        self.chunks_done, self.committed = checkpoint.chunks_done, list(checkpoint.shards)
        self.stats = RunStats.from_json(checkpoint.stats) if checkpoint.stats else RunStats()
        self.held: list[int] = []  # chunks waiting for a batch file's results, and every chunk after
        self.failed = False  # a commit failed part way: no later chunk may be committed

    def per_chunk(self) -> Usage | None:
        """What a committed chunk of this task cost on average; None before the first."""
        if not self.chunks_done:
            return None
        usage, average = self.stats.usage(), Usage()
        for name in Usage.FIELDS:
            setattr(average, name, type(getattr(usage, name))(getattr(usage, name) / self.chunks_done))
        return average

    def commit(self, work: ChunkWork) -> None:
        if work.pending or self.held:  # committed in order: nothing after a held-back chunk
            self.held.append(work.number)
            return
        state, lease = self.state, self.lease
        self.failed = True  # until the checkpoint is written
        crash_point("after_replies")
        self.committed.extend(write_shards(state, work.number, work.kept, work.rejected, lease))
        self.stats.merge(work.stats)
        self.stats.reading = work.reading
        self.chunks_done = work.number + 1
        crash_point("before_checkpoint")
        # the commit: only after every shard of the chunk exists, under the lease version held
        state.save(Checkpoint(self.chunks_done, self.stats.to_json(), tuple(self.committed)), lease.confirm())
        self.failed = False
        crash_point("after_checkpoint")
        storage.remove(state.chunk_replies(work.number))  # committed: its replies are in its rows now
        self.on_chunk(work.passages, len(work.kept))


def _feed(
    flow: ChunkFlow, commits: Commits, passages, read_stats: ReadStats, plan, state, stop_requested
) -> None:
    """The task's chunks into the flow, each admitted when there is room and budget, the finished
    ones committed as they come back."""
    config, commit = plan.config, commits.commit
    budget = Budget(config.budget)
    for chunk, batch in enumerate(flow.guarded(_chunks(passages, config.output.shard_rows))):
        if chunk < commits.chunks_done:  # written by an earlier run: read again only to count what it read
            with flow.held():
                for passage in batch:
                    new_rows(passage, config, read_stats.counts)
            continue
        if stop_requested():
            _commit_each(flow.drain(), commit)  # the chunks out are finished and committed first
            raise Interrupted(state.name)
        if budget.active:
            _check_budget(flow, commits, budget, plan)
        with flow.held():
            rows = [row for passage in batch for row in new_rows(passage, config, read_stats.counts)]
        while not flow.has_room(len(rows)):
            _commit_each(flow.finished(wait=True), commit)
        flow.start(chunk, len(batch), rows, Counter(read_stats.counts))
        _commit_each(flow.finished(), commit)


def _check_budget(flow: ChunkFlow, commits: Commits, budget: Budget, plan) -> None:
    """Stop before a chunk the budget cannot pay for: the whole run's committed spending (from the
    checkpoints) plus what the chunks out will cost, each counted at least at a committed chunk's
    average. Until this task has committed one, one chunk is out at a time, so the first average
    is known before a second chunk is started."""
    per_chunk = commits.per_chunk()
    if per_chunk is None:
        _commit_each(flow.drain(), commits.commit)
        per_chunk = commits.per_chunk()
    try:
        budget.check(plan.folder, plan.split.num_tasks, flow.pending(per_chunk))
    except BudgetReached:
        _commit_each(flow.drain(), commits.commit)
        raise
