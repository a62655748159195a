"""What a step is: a batch of rows in, kept rows plus dropped rows with reasons out.

Steps know nothing of files or executors; the local executor and the Ray
executor's ``map_batches`` actors call the same step objects through ``run_step``.
Generating steps live in ``pipeline/generate/``, filters in ``pipeline/filters/``;
``pipeline/run/plan.py`` decides their order and ``pipeline/executors/workbench.py``
builds them.

A row is a dict keyed by the column names of ``pipeline/schema.py``; the fields a
step leaves for a later one (``Row`` below lists them) start with an underscore and
never reach a shard.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import schema as S
from .config import TASK_TYPES
from .engine.base import Usage

# A row: the columns of schema.ROW_SCHEMA plus these working fields, each set by one step and
# read by later ones (see schema.WORK_*):
#   _persona_candidates  personas step -> configure / query: top-k persona texts
#   _prompt_hashes       every LLM step -> the shard writer: template name -> hash
#   _llm_negatives       negatives_llm -> margin: candidates written by the LLM
#   _mined_negatives     negatives_mined -> margin: candidates from the corpus, nearest first
#   _requested_score     sts -> the stats: the similarity the pair was asked to have
#   _scores              any filter -> stats, shards, rejected rows: score name -> value
#   _tokens              every LLM step -> stats: tokens spent on the row so far
Row = dict[str, Any]


@dataclass
class Dropped:
    row: Row
    reason: str  # short snake_case name, counted as dropped_<reason>
    detail: str | None = None  # human-readable why
    raw_output: str | None = None  # model text at fault, verbatim
    scores: dict[str, float] | None = None  # numbers that decided the drop


@dataclass
class StepResult:
    kept: list[Row] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    # events inside kept rows, e.g. {"negatives_removed_margin": 3}: a row can lose a
    # negative without being dropped, and the funnel must still explain it
    events: Counter = field(default_factory=Counter)
    # what the step's LLM calls cost (requests, prompt / cached / output tokens, engine time)
    usage: Usage = field(default_factory=Usage)


def set_score(row: Row, name: str, value: float) -> None:
    row.setdefault(S.WORK_SCORES, {})[name] = float(value)


def charge(row: Row, generations) -> None:
    """Add what the engine spent answering for ``row`` to the row's running token count.

    When the row is dropped later, the stage that drops it is charged everything spent
    on it so far: that is where filtering earlier would have saved the tokens.
    """
    spent = sum(g.prompt_tokens + g.output_tokens for g in generations)
    row[S.WORK_TOKENS] = row.get(S.WORK_TOKENS, 0) + spent


class Step(ABC):
    name: str
    # task types whose rows this step handles; rows of other types pass it untouched and uncounted
    task_types: frozenset[str] = frozenset(TASK_TYPES)

    @abstractmethod
    def __call__(self, rows: list[Row]) -> StepResult:
        """Process one batch; every input row ends up either kept or dropped."""


class StatefulStep(Step):
    """A step whose verdict on a row depends on the rows it saw before it (dedup, percentile cosine).

    Its memory is scoped to one task, in every executor: the executor calls
    ``reset`` before each task, in whatever process or Ray actor runs it, and
    ``resume`` when it continues a task a killed run left half done. So a task's
    output depends on its own input only, never on which worker ran the tasks
    before it, and duplicates *across* tasks are not seen (docs/scaling.md).
    """

    @abstractmethod
    def reset(self) -> None:
        """Forget every row: a new task starts."""

    @abstractmethod
    def resume(self, reached: list[Row], passed: list[Row]) -> None:
        """Rebuild memory from a task's written chunks.

        ``reached``: the rows of this step's task types that got to this step;
        ``passed``: those of them it kept. Rows carry id, task type, languages, query
        and ``scores`` (the scores written with them).
        """


def run_step(step: Step, rows: list[Row]) -> tuple[StepResult, list[Row]]:
    """Run ``step`` on the rows of its task types; return its result and the rows it did not see.

    Stats count a stage over its own result only; the caller carries on with
    ``result.kept + others``. Every executor (local, Ray ``map_batches`` actors)
    calls steps through this.
    """
    mine = [row for row in rows if row.get(S.TASK_TYPE) in step.task_types]
    others = [row for row in rows if row.get(S.TASK_TYPE) not in step.task_types]
    return (step(mine) if mine else StepResult()), others


def request_seed(seed: int, *keys: str) -> int:
    """The sampling seed of one LLM request: from the run seed and what the request is for.

    Keys are the row id and the stage (its template), so every request of a run has its own
    seed and the same request always gets the same one, whatever batch it is sent in.
    """
    digest = hashlib.sha256("\x1f".join([str(seed), "request", *keys]).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def row_rng(seed: int, *keys: str) -> random.Random:
    """A generator that depends only on the run seed and the row, not on batch order.

    A resumed or re-sharded run therefore samples the same choices for the same row.
    """
    digest = hashlib.sha256("\x1f".join([str(seed), *keys]).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
