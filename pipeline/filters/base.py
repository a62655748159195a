"""What the per-row filters share: judge each row on its own, keep it or drop it with a reason."""

from __future__ import annotations

from abc import abstractmethod

from ..step import Dropped, Row, Step, StepResult


class Filter(Step):
    """A step whose verdict on a row depends on that row alone (and the filter's settings).

    Subclasses implement ``check``: None keeps the row, a ``Dropped`` drops it. Scores a
    check computes go on the row with ``set_score`` either way, so kept rows carry them too.
    """

    @abstractmethod
    def check(self, row: Row) -> Dropped | None:
        """None to keep ``row``; otherwise why it is dropped."""

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        for row in rows:
            dropped = self.check(row)
            if dropped is None:
                result.kept.append(row)
            else:
                result.dropped.append(dropped)
        return result
