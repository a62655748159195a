"""Step: a query must ask about the passage, not paste it."""

from __future__ import annotations

from .. import schema as S
from ..config import CopyCheckConfig
from ..step import Dropped, Row, set_score
from ..text import passage_overlap
from .base import Filter


class CopyCheck(Filter):
    name = "copy_check"
    task_types = frozenset({"retrieval"})  # a bitext source and an STS sentence may quote the passage

    def __init__(self, config: CopyCheckConfig):
        self.config = config

    def check(self, row: Row) -> Dropped | None:
        overlap = passage_overlap(row[S.QUERY], row[S.POSITIVE])
        set_score(row, "passage_overlap", overlap)
        if overlap <= self.config.max_overlap:
            return None
        return Dropped(
            row,
            "copied_passage",
            detail=f"{overlap:.0%} of the query's n-grams are in the passage",
            scores={"passage_overlap": overlap},
        )
