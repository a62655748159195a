"""Step: a query must ask about the passage, not paste it (or, for code, only restate its name).

For every question-like row (``config.QUESTION_TASK_TYPES``) the query may not share more
than ``max_overlap`` of its n-grams with the positive (``copied_passage``); a code row's
query is also held against the unit's docstring, which the question writer read. A code
query whose words are all words of the unit's identifiers (``parse_json_file`` ->
"parse json file") besides a few filler words is ``trivial``: it teaches a retriever to
match names, which any keyword search already does.
"""

from __future__ import annotations

from .. import schema as S
from ..code.check import identifier_words
from ..config import QUESTION_TASK_TYPES, CopyCheckConfig
from ..step import Dropped, Row, set_score
from ..text import passage_overlap, tokens
from .base import Filter

# words a query may add to a function's name and still say nothing more than the name
FILLER = {"a", "an", "the", "to", "in", "of", "for", "with", "and", "or", "how", "do", "does", "i", "is"}
FILLER |= {"what", "function", "method", "class", "code", "def", "fn", "func", "example", "use", "using"}


def only_names(query: str, row: Row) -> bool:
    """Whether every word of ``query`` is a word of the unit's symbol or signature, or filler."""
    names = identifier_words(f"{row.get(S.SYMBOL) or ''} {row.get(S.SIGNATURE) or ''}")
    names |= {str(row.get(S.PROGRAMMING_LANGUAGE) or "").lower()}
    words = [word for word in identifier_words(query) if word not in FILLER]
    others = [t for t in tokens(query) if not t.isascii()]  # a word in another script is not a name
    return bool(words) and not others and all(word in names for word in words)


class CopyCheck(Filter):
    name = "copy_check"
    task_types = QUESTION_TASK_TYPES  # a bitext source and an STS sentence may quote the passage

    def __init__(self, config: CopyCheckConfig):
        self.config = config

    def check(self, row: Row) -> Dropped | None:
        overlap = passage_overlap(row[S.QUERY], row[S.POSITIVE])
        if row.get(S.WORK_DOCSTRING):
            overlap = max(overlap, passage_overlap(row[S.QUERY], row[S.WORK_DOCSTRING]))
        set_score(row, "passage_overlap", overlap)
        if overlap > self.config.max_overlap:
            return Dropped(
                row,
                "copied_passage",
                detail=f"{overlap:.0%} of the query's n-grams are in the passage",
                scores={"passage_overlap": overlap},
            )
        if row.get(S.SYMBOL) and only_names(row[S.QUERY], row):
            return Dropped(
                row, "trivial", detail="the query only repeats the code's names", raw_output=row[S.QUERY]
            )
        return None
