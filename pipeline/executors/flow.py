"""A task's chunks through the steps: staged, or streamed in slices with many in flight.

**Staged** (``flow.streamed`` off): a chunk runs its steps one after another as whole batches, in
the task's own thread, one chunk at a time.

**Streamed** (the default, with every engine): a chunk is cut into slices of
``slice_rows`` rows and each slice runs through the steps in a thread of its own. A slice goes
on to its next step as soon as its own replies are back, while the other slices, of its chunk
and of the chunks after it, keep requests in flight at the engine. Chunks are admitted while
fewer than ``rows_in_flight`` rows are out (always one), so memory stays flat.

What streaming does not change:

- a chunk is finished when all of its slices are through every step, and ``run_task`` writes and
  commits the finished chunks in order, in its own thread: the commit protocol, its crash points
  and the chunk's journal of replies (one per chunk) are those of the staged flow;
- every step's code runs under one lock (``turn``); a slice lets go of it only while it waits for
  the engine's replies (``engine.base.letting_go``, around the reply cache's engine call) or for
  its turn, so a step need not be thread-safe, and the embedder, the filters and the reading of
  the next passages run while the engine decodes other slices' requests;
- a stateful step (dedup, percentile cosine) sees each chunk whole and the chunks in order: the
  slices of a chunk wait for one another there, and for the chunk before (``_gathered``);
- rows meet every stateful step, and reach the shards, in the order the staged flow gives them
  (``_staged_order``), so a streamed run writes the rows of a staged one; the rejected rows are
  listed by step, then by their place in the chunk.

A chunk one of whose requests went to a batch file (``engine.batch_engine.RepliesPending``) is
*held back*: its other slices end where they are, and it is handed back marked ``pending``. The
chunks after it go on (a stateful step does not wait for a held-back chunk), so that every chunk
writes the requests it can make in this round; ``run_task`` commits none of them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import schema as S
from ..engine.base import Usage, letting_go
from ..engine.batch_engine import RepliesPending
from ..engine.reply_cache import journal
from ..run.plan import Flow
from ..run.shards import rejected_records
from ..run.stats import RunStats
from ..step import Row, StatefulStep, Step, run_step

LAST = float("inf")  # the place of a row a step made itself: after the rows it was made from


class _Stopped(Exception):
    """Another slice failed, or the task stopped: this slice ends where it is."""


@dataclass
class ChunkWork:
    """One chunk between its first step and its commit."""

    number: int
    passages: int
    reading: Counter  # what the task had read once this chunk's passages were read
    slices: list[list[Row]]
    previous: int | None  # the chunk admitted before this one: stateful steps see it first
    size: int  # rows at the start
    left: int = 0  # slices not through every step yet
    stats: RunStats = field(default_factory=RunStats)
    dropped: list[tuple[int, float, dict]] = field(default_factory=list)  # (step, place, record)
    arrived: dict[int, dict[int, list[Row]]] = field(default_factory=dict)  # stateful step -> slices there
    running: set[int] = field(default_factory=set)  # stateful steps one of its slices runs now
    passed: set[int] = field(default_factory=set)  # stateful steps the chunk is through
    pending: bool = False  # held back: a request of it waits in a batch file
    kept: list[Row] = field(default_factory=list)  # set once finished
    rejected: list[dict] = field(default_factory=list)  # set once finished


class ChunkFlow:
    def __init__(self, steps: list[Step], flow: Flow, journal_of: Callable[[int], Path]):
        self.steps, self.flow, self.journal_of = steps, flow, journal_of
        self.turn = threading.Condition()
        self.works: deque[ChunkWork] = deque()  # admitted, not yet handed back, in order
        self.rows_out = 0
        self.last_number: int | None = None
        self.passed_by: dict[int, int] = {}  # stateful step -> the last chunk through it
        self.held_back: set[int] = set()  # chunks waiting for a batch file's results
        self.error: BaseException | None = None
        self.failed_at: int | None = None  # the chunk whose slice failed: it and the later ones stop
        self.stopping = False
        self.threads: list[threading.Thread] = []

    @property
    def streams(self) -> bool:
        return self.flow.streams

    def __enter__(self) -> ChunkFlow:
        return self

    def __exit__(self, kind, *exc) -> None:
        """Stop the slices still out (a failure, an interruption) and wait for them; a second Ctrl-C
        (``KeyboardInterrupt``) does not wait: the process is leaving at once."""
        with self.turn:
            self.stopping = True
            self.turn.notify_all()
        if kind is KeyboardInterrupt:
            return
        for thread in self.threads:
            thread.join()

    def held(self) -> contextlib.AbstractContextManager:
        """The steps' lock, for the task's thread while it reads passages (they share the tokenizer)."""
        return self.turn if self.streams else contextlib.nullcontext()

    def guarded(self, items: Iterator) -> Iterator:
        """``items`` drawn under the steps' lock (``held``), each handed on outside it."""
        items = iter(items)
        while True:
            with self.held():
                item = next(items, self)
            if item is self:
                return
            yield item

    def has_room(self, rows: int) -> bool:
        with self.turn:
            return not self.works or self.rows_out + rows <= self.flow.rows_in_flight

    def pending(self, per_chunk: Usage | None = None) -> Usage:
        """What the chunks out will have spent (the budget counts it before admitting another): what
        each has spent so far, or ``per_chunk`` (a committed chunk's average) where that is more."""
        spent = Usage()
        with self.turn:
            for work in self.works:
                used = work.stats.usage()
                if per_chunk is not None and per_chunk.computed_tokens > used.computed_tokens:
                    used = per_chunk
                spent.merge(used)
        return spent

    def start(self, number: int, passages: int, rows: list[Row], reading: Counter) -> None:
        """Admit a chunk: staged, run it now; streamed, send its slices off."""
        for place, row in enumerate(rows):
            row[S.WORK_POSITION] = place
        size = self.flow.slice_rows or max(1, len(rows))
        slices = [rows[i : i + size] for i in range(0, len(rows), size)] or [[]]
        work = ChunkWork(number, passages, reading, slices, self.last_number, len(rows), left=len(slices))
        work.stats.rows_in += len(rows)
        self.last_number = number
        if not self.streams:
            with journal(self.journal_of(number)):
                try:
                    self._through(work, 0)
                except RepliesPending:
                    self._hold_back(work)
            self.works.append(work)
            return
        with self.turn:
            self.works.append(work)
            self.rows_out += len(rows)
        self.threads = [t for t in self.threads if t.is_alive()]
        for k in range(len(slices)):
            thread = threading.Thread(
                target=self._slice, args=(work, k), daemon=True, name=f"slice-{number}-{k}"
            )
            thread.start()
            self.threads.append(thread)

    def finished(self, wait: bool = False) -> list[ChunkWork]:
        """The chunks through every step, in order, from the first one out (``wait``: at least it).

        After a slice failed, the chunks before its chunk still finish and are handed back, as
        the staged flow would have committed them; the failure is raised once none is left."""
        done = []
        with self.turn:
            while True:
                while self.works and not self.works[0].left and not self._failed(self.works[0]):
                    work = self.works.popleft()
                    self.rows_out -= work.size
                    done.append(self._finish(work))
                if self.error is not None and (not self.works or self._failed(self.works[0])):
                    if done:
                        return done  # committed first; the next call raises
                    raise self.error
                if done or not wait or not self.works:
                    return done
                self.turn.wait()

    def _failed(self, work: ChunkWork) -> bool:
        return self.failed_at is not None and work.number >= self.failed_at

    def drain(self) -> Iterator[ChunkWork]:
        """Every chunk still out, in order, as each finishes."""
        while self.works:
            yield from self.finished(wait=True)

    # the slices' side: each runs under the turn, letting go of it while it waits

    def _slice(self, work: ChunkWork, k: int) -> None:
        try:
            with journal(self.journal_of(work.number)), letting_go(self._let_go), self.turn:
                self._through(work, k)
        except _Stopped:
            pass
        except RepliesPending:
            with self.turn:
                self._hold_back(work)
                self.turn.notify_all()
        except BaseException as exc:  # handed to the task's thread (``finished``)
            with self.turn:
                self.error = self.error or exc
                self.failed_at = min(
                    work.number, self.failed_at if self.failed_at is not None else work.number
                )
                self.turn.notify_all()

    def _hold_back(self, work: ChunkWork) -> None:
        """A slice of ``work`` waits for a batch file: the slice is done, the chunk held back."""
        work.pending = True
        work.left -= 1
        self.held_back.add(work.number)

    @contextlib.contextmanager
    def _let_go(self):
        self.turn.release()
        try:
            yield
        finally:
            self.turn.acquire()

    def _check(self, work: ChunkWork) -> None:
        if self.streams and (self._failed(work) or self.stopping):
            raise _Stopped

    def _through(self, work: ChunkWork, k: int) -> None:
        rows = work.slices[k]
        for index, step in enumerate(self.steps):
            self._check(work)
            if self.streams and isinstance(step, StatefulStep):
                rows = self._gathered(work, k, index, rows)
            else:
                rows = self._step(work, index, rows)
        work.slices[k] = rows
        work.left -= 1
        if self.streams:
            self.turn.notify_all()

    def _step(self, work: ChunkWork, index: int, rows: list[Row]) -> list[Row]:
        step = self.steps[index]
        started = time.perf_counter()
        result, others = run_step(step, rows)
        work.stats.record(step.name, len(rows) - len(others), result, time.perf_counter() - started)
        work.stats.add_outcomes([], result.dropped)
        for record, drop in zip(rejected_records(step.name, result.dropped), result.dropped, strict=True):
            work.dropped.append((index, drop.row.get(S.WORK_POSITION, LAST), record))
        return result.kept + others

    def _gathered(self, work: ChunkWork, k: int, index: int, rows: list[Row]) -> list[Row]:
        """Run stateful step ``index`` once on the whole chunk, after the chunk before it."""
        arrived = work.arrived.setdefault(index, {})
        arrived[k] = rows
        while index not in work.passed:
            self._check(work)
            if work.pending:  # another slice of the chunk waits for a batch file: so does this one
                raise RepliesPending(f"chunk {work.number} is held back")
            earlier_through = (
                work.previous is None
                or self.passed_by.get(index, -1) >= work.previous
                or work.previous in self.held_back  # its rows will not be committed: nothing to wait for
            )
            # the step lets go of the turn while it embeds: a slice woken meanwhile must not run it again
            if len(arrived) == len(work.slices) and earlier_through and index not in work.running:
                work.running.add(index)
                self._run_gathered(work, index)
            else:
                self.turn.wait()
        return work.arrived[index].pop(k)  # the rows the step handed back to this slice

    def _run_gathered(self, work: ChunkWork, index: int) -> None:
        arrived = work.arrived[index]
        owner = {id(row): k for k, rows in arrived.items() for row in rows}
        whole = sorted((row for rows in arrived.values() for row in rows), key=self._staged_order(index))
        back: dict[int, list[Row]] = {k: [] for k in arrived}
        for row in self._step(work, index, whole):
            back[owner.get(id(row), min(arrived))].append(row)
        work.arrived[index] = back
        work.passed.add(index)
        self.passed_by[index] = work.number
        self.turn.notify_all()

    def _staged_order(self, index: int) -> Callable[[Row], tuple]:
        """The order of a chunk's rows before step ``index`` in the staged flow.

        There every step puts the rows it handled before the others (``kept + others``): a
        stable partition by task type per step, so the last step's partition counts most."""
        handled = [self.steps[j].task_types for j in reversed(range(index))]
        return lambda row: (
            tuple(row.get(S.TASK_TYPE) not in types for types in handled),
            row.get(S.WORK_POSITION, LAST),
        )

    def _finish(self, work: ChunkWork) -> ChunkWork:
        rows = [row for rows in work.slices for row in rows]
        if self.streams:
            rows.sort(key=self._staged_order(len(self.steps)))
            work.dropped.sort(key=lambda entry: entry[:2])
        work.stats.add_outcomes(rows, [])
        work.stats.rows_out += len(rows)
        work.kept, work.rejected = rows, [record for _, _, record in work.dropped]
        work.slices, work.dropped, work.arrived = [], [], {}
        return work
