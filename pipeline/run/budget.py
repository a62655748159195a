"""A run's spending limits: computed tokens and engine hours, checked at chunk boundaries.

What counts is what the engine computed: prompt tokens it did not serve from its prefix cache,
plus output tokens (``Usage.computed_tokens``); replies served from the reply cache are free.
The spending is read from the tasks' checkpoints, so it is the whole run's, whichever process,
worker or Ray actor committed it, earlier runs into the same folder included: a run stopped by
its budget resumes, with a larger one, exactly where it stopped.

Each task checks before its next chunk (``Budget.check``), counting each of its chunks still out
at what it has spent so far or at the task's average committed chunk, whichever is more
(``executors/task._check_budget``; until a task has committed one chunk it keeps one out). A
chunk that crosses the limit is finished and committed, so a run overshoots by about one chunk
per task running at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import BudgetConfig
from ..engine.base import Usage
from .folder import RunFolder
from .stats import RunStats

BUDGET_EXIT = 3  # exit status of `synth generate` stopped by its budget: not an error, not finished


class BudgetReached(RuntimeError):
    """The run stopped at a chunk boundary because its budget was spent; finished chunks are saved."""

    def __init__(self, message: str, spent: dict | None = None):  # one argument too: Ray pickles it
        super().__init__(message)
        self.spent = spent or {}


@dataclass
class Budget:
    limits: BudgetConfig
    spent: Usage = field(default_factory=Usage)

    @property
    def active(self) -> bool:
        return self.limits.tokens is not None or self.limits.engine_hours is not None

    def read(self, folder: RunFolder, num_tasks: int) -> Usage:
        """What the run's committed chunks spent, from every task's checkpoint."""
        spent = Usage()
        for state in folder.tasks(num_tasks):
            checkpoint = state.load()
            if checkpoint.stats:
                spent.merge(RunStats.from_json(checkpoint.stats).usage())
        self.spent = spent
        return spent

    def reached(self) -> str | None:
        """What was reached, in words; None while the run may go on."""
        tokens, hours = self.limits.tokens, self.limits.engine_hours
        if tokens is not None and self.spent.computed_tokens >= tokens:
            return f"token budget reached: {self.spent.computed_tokens:,} computed tokens of {tokens:,}"
        spent_hours = self.spent.seconds / 3600
        if hours is not None and spent_hours >= hours:
            return f"engine-hour budget reached: {spent_hours:.4g} engine hours of {hours:g}"
        return None

    def check(self, folder: RunFolder, num_tasks: int, pending: Usage | None = None) -> None:
        """Raise ``BudgetReached`` once the run's committed spending, plus ``pending`` (what this
        task's chunks still out have spent so far), has reached a limit."""
        if not self.active:
            return
        self.read(folder, num_tasks)
        if pending is not None:
            self.spent.merge(pending)
        reached = self.reached()
        if reached:
            raise BudgetReached(reached, self.to_json())

    def to_json(self) -> dict:
        hours = self.spent.seconds / 3600
        out: dict = {"computed_tokens": self.spent.computed_tokens, "engine_hours": round(hours, 6)}
        if self.limits.tokens is not None:
            out["tokens_limit"] = self.limits.tokens
            out["tokens_left"] = max(0, self.limits.tokens - self.spent.computed_tokens)
        if self.limits.engine_hours is not None:
            out["engine_hours_limit"] = self.limits.engine_hours
            out["engine_hours_left"] = round(max(0.0, self.limits.engine_hours - hours), 6)
        return out
