"""Step: every text the model wrote must be in the language that was asked for (peers never check this)."""

from __future__ import annotations

from .. import schema as S
from ..langid import check_language
from ..step import Dropped, Row, set_score
from .base import Filter


def written_texts(row: Row) -> list[tuple[str, str, str]]:
    """(column, text, language it must be in) of each text the model wrote for this row."""
    task = row[S.TASK_TYPE]
    if task == "bitext":  # the query is the passage's own sentence; the translation is written
        return [(S.POSITIVE, row[S.POSITIVE], row[S.TARGET_LANGUAGE])]
    if task in ("sts", "domain"):  # a domain row's document is written too, in the query's language
        return [(S.QUERY, row[S.QUERY], row[S.LANGUAGE]), (S.POSITIVE, row[S.POSITIVE], row[S.LANGUAGE])]
    if task == "code_translation":  # code on both sides: no natural language to check
        return []
    # code_search, code_docs: only the question is natural language; the code never is judged as one
    return [(S.QUERY, row[S.QUERY], row[S.LANGUAGE])]


class LanguageCheck(Filter):
    name = "language"

    def __init__(self, min_margin: float = 0.2):
        self.min_margin = min_margin

    def check(self, row: Row) -> Dropped | None:
        for column, text, language in written_texts(row):
            ok, scores = check_language(text, language, self.min_margin)
            if column == S.QUERY or row[S.TASK_TYPE] == "bitext":
                set_score(row, "query_language", scores["requested"])
            if not ok:
                best = next((k[len("best_is_") :] for k in scores if k.startswith("best_is_")), "?")
                return Dropped(
                    row,
                    "wrong_language",
                    detail=f"{column}: asked {language}, looks like {best}",
                    scores={"query_language": scores["requested"], "best_language": scores["best"]},
                )
        return None
