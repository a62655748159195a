"""Step: a query must ask about the passage, not paste it."""

from __future__ import annotations

from .. import schema as S
from ..config import CopyCheckConfig
from ..step import Dropped, Row, Step, StepResult, set_score
from ..text import mostly_cjk, ngrams, tokens


def passage_overlap(query: str, passage: str) -> float:
    """Share of the query's tokens that lie in an n-gram found verbatim in the passage.

    n-grams are word 4-grams, CJK character 6-grams. Counting covered tokens rather than
    matching n-grams, a pasted sentence with some junk after it still counts as mostly pasted.
    """
    query_tokens = tokens(query)
    n = 6 if mostly_cjk(query_tokens) else 4
    if len(query_tokens) < n:
        return 0.0  # shorter than one n-gram: a keyword query, not a pasted sentence
    found = ngrams(tokens(passage), n)
    covered = [False] * len(query_tokens)
    for i in range(len(query_tokens) - n + 1):
        if tuple(query_tokens[i : i + n]) in found:
            covered[i : i + n] = [True] * n
    return sum(covered) / len(query_tokens)


class CopyCheck(Step):
    name = "copy_check"
    task_types = frozenset({"retrieval"})  # a bitext source and an STS sentence may quote the passage

    def __init__(self, config: CopyCheckConfig):
        self.config = config

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        for row in rows:
            overlap = passage_overlap(row[S.QUERY], row[S.POSITIVE])
            set_score(row, "passage_overlap", overlap)
            if overlap > self.config.max_overlap:
                result.dropped.append(
                    Dropped(
                        row,
                        "copied_passage",
                        detail=f"{overlap:.0%} of the query's n-grams are in the passage",
                        scores={"passage_overlap": overlap},
                    )
                )
            else:
                result.kept.append(row)
        return result
