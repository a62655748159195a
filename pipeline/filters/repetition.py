"""Step: drop texts that loop. Small models under a length budget often repeat a phrase
("the holy week the holy week ...") until the budget runs out; such a text passes the
language check and can pass a cosine filter, but teaches nothing.
"""

from __future__ import annotations

from .. import schema as S
from ..step import Dropped, Row, set_score
from ..text import repeated_share
from .base import Filter
from .language import written_texts


class RepetitionCheck(Filter):
    name = "repetition"

    def __init__(self, max_repeated: float = 0.2):
        self.max_repeated = max_repeated

    def check(self, row: Row) -> Dropped | None:
        worst = max((repeated_share(text) for _, text, _ in written_texts(row)), default=0.0)
        if not written_texts(row):
            return None  # code (code_translation): loops in code are not a phrase repeated
        set_score(row, "repeated_ngrams", worst)
        if worst <= self.max_repeated:
            return None
        return Dropped(
            row,
            "repetitive",
            detail=f"{worst:.0%} of the n-grams repeat earlier ones",
            raw_output=row[S.QUERY],
            scores={"repeated_ngrams": worst},
        )
