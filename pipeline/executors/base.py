"""A run's life, the same for every executor: claim the folder, run the tasks, finalize.

``Executor.run`` owns the whole lifecycle: open the run folder (or check that it holds
the same run), list this process's unfinished tasks, say which models run, show one
progress bar, hand the tasks to ``run_tasks`` and, whatever happens there (a crash, a
Ctrl-C), merge every task's stats into ``stats.json`` and, once every task is complete,
write the manifest and the dataset card. Subclasses implement only ``run_tasks``: how
tasks get run (one after another here, on Ray actors). So the output folder is the
same whichever executor wrote it (the shape of datatrove's ``PipelineExecutor``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .. import console
from ..console import say
from ..engine import ChatEngine
from ..engine.batch_engine import BatchFiles, RepliesPending
from ..faults import crash_point
from ..handover.card import write_card
from ..readers import Corpus
from ..readers.passages import open_input
from ..run.budget import Budget, BudgetReached
from ..run.folder import TaskState
from ..run.manifest import write_manifest
from ..run.plan import RunPlan
from ..run.stats import RunStats

log = logging.getLogger(__name__)

OnChunk = Callable[[int, int], None]  # (passages done, rows kept) after each finished chunk


class Interrupted(RuntimeError):
    """A stop was requested between chunks; everything written so far is complete."""


@dataclass
class RunResult:
    out_dir: Path
    stats: RunStats
    shards: list[Path]
    budget_stop: str | None = None  # why the budget stopped the run, with what was spent and is left
    batch_waiting: str | None = None  # the batch file of requests the run waits on, and what to do


class StopFlag:
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


@dataclass
class Progress:
    """The one progress bar of a run: passages done, rows kept so far."""

    total: int | None
    kept: int = 0
    bar: tqdm = field(init=False)

    def __post_init__(self):
        self.bar = tqdm(total=self.total, desc="passages", unit="passage", file=console.terminal)

    def on_chunk(self, passages: int, rows: int) -> None:
        self.kept += rows
        self.bar.set_postfix(kept=self.kept, refresh=False)
        self.bar.update(passages)

    def close(self) -> None:
        self.bar.close()


class Executor(ABC):
    """Runs a plan's unfinished tasks; rerun with the same plan to resume."""

    def __init__(self, plan: RunPlan, engine: ChatEngine | None = None):
        self.plan = plan
        self.engine = engine  # tests hand in a fake engine; otherwise each worker starts its own
        self.corpus: Corpus | None = None  # opened by run(): its blocks and the corpus's identity
        self.timings: dict[str, float] = {}
        self.engine_info: dict = {}

    def context(self) -> contextlib.AbstractContextManager:
        """Around the whole run (the Ray executor sends Ray's output to the log file)."""
        return contextlib.nullcontext()

    def prepare(self, todo: list[TaskState]) -> None:  # noqa: B027 - most executors need nothing here
        """Before the models are named: connect what the tasks need (a server, a cluster)."""

    @abstractmethod
    def run_tasks(self, todo: list[TaskState], on_chunk: OnChunk, stop: StopFlag) -> None:
        """Run every task in ``todo`` to completion, calling ``on_chunk`` after each chunk."""

    def run(self) -> RunResult:
        """Open the folder, run this process's unfinished tasks, finalize; the same for every executor."""
        plan = self.plan
        with self.context():
            started = time.perf_counter()
            self.corpus = open_input(plan.config)  # metadata only; the local executor reads from it
            identity = self.corpus.identity(plan.split.num_tasks)
            plan.folder.open(plan.record, plan.overwrite, identity, plan.accept_corpus_change)
            todo = plan.tasks_to_do()
            if not todo:
                return self.result(self.finalize())
            self.prepare(todo)
            if plan.config.reads_pairs:  # queries from the user's pairs: the run asks no LLM for them
                say(f"queries: {plan.config.pairs.path} (no LLM call for the query side)")
            else:
                say(f"generator: {plan.models.generator.name}")
            say(f"embedder: {plan.models.embedder.name}")
            here = f"tasks to run here: {', '.join(s.name for s in todo)}"
            if plan.split.num_tasks > 1:
                say(here)
            else:
                log.info(here)
            progress = Progress(total=self.expected_passages(todo))
            stopped = waiting = None
            try:
                with StopFlag() as stop:
                    self.run_tasks(todo, progress.on_chunk, stop)
            except BudgetReached as exc:  # a clean stop at a chunk boundary: finalize, then say so
                stopped = exc
            except RepliesPending:  # every task wrote this round's requests: one file for the runner
                waiting = self.batch_message()
            finally:  # also on a crash or interrupt: stats.json always reflects what is on disk
                progress.close()
                self.timings["total"] = time.perf_counter() - started
                stats = self.finalize()
            result = self.result(stats)
            if stopped is not None:
                result.budget_stop = self.budget_message(stopped)
            result.batch_waiting = waiting
            return result

    def batch_message(self) -> str:
        """This round's requests gathered into one batch file; where it is and what to run next."""
        plan = self.plan
        files = BatchFiles(plan.folder.batch_folder)
        round = files.round
        path, count = files.gather()
        return (
            f"{count:,} request(s) of round {round} wait in {path}: run them (vllm run-batch -i {path} "
            f"-o results.jsonl --model {plan.models.generator.path}, or a hosted batch API), then rerun "
            "this command with --batch-results results.jsonl"
        )

    def budget_message(self, stopped: BudgetReached) -> str:
        """The budget's stop, what was spent and what is left to do, in one line."""
        plan = self.plan
        budget = Budget(plan.config.budget)
        budget.read(plan.folder, plan.split.num_tasks)
        states = plan.folder.tasks(plan.split.num_tasks)
        left = sum(not state.is_complete() for state in states)
        hours = budget.spent.seconds / 3600
        return (
            f"{budget.reached() or stopped}; {hours:.4g} engine hours; {left} of {len(states)} task(s) "
            "unfinished: rerun with a larger --budget-tokens / --budget-engine-hours to go on"
        )

    def expected_passages(self, todo: list[TaskState]) -> int | None:
        """The progress bar's total: known for a ``--limit`` (an upper bound: a task's blocks may
        hold fewer passages than its share) and for a domain run (one passage per seed)."""
        plan = self.plan
        totals = []
        if plan.config.limit:
            totals.append(sum(plan.limit_share(state.task) or 0 for state in todo))
        if plan.config.domains.names and self.corpus is not None:
            blocks = [b for s in todo for b in self.corpus.blocks_of(s.task, plan.split.num_tasks)]
            totals.append(sum(block.end - block.start for block in blocks))
        return min(totals) if totals else None

    def finalize(self) -> RunStats:
        """Merge every task's stats into stats.json; once all tasks are complete, the manifest and card."""
        plan = self.plan
        states = plan.folder.tasks(plan.split.num_tasks)
        stats = RunStats.of_tasks(states)
        stats.engine = dict(self.engine_info)
        stats.timings = dict(self.timings)
        stats.timings["generation"] = sum(c.seconds for c in stats.stages.values())
        done = sum(state.is_complete() for state in states)
        stats.timings["tasks_complete"] = done
        stats.write(plan.folder.stats_file)
        if done == len(states):
            crash_point("in_finalize")
            committed = plan.folder.committed(len(states))
            orphans = plan.folder.remove_orphans(committed)
            if orphans:
                log.info("removed %d shard(s) no checkpoint commits: %s", len(orphans), orphans)
            write_manifest(plan, stats, committed)  # refused if the shards' row counts differ from the stats
            crash_point("before_card")
            write_card(plan.folder, plan.config.output.license)
        return stats

    def result(self, stats: RunStats) -> RunResult:
        folder = self.plan.folder
        return RunResult(out_dir=folder.root, stats=stats, shards=folder.data_shards())
