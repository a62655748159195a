"""Step: the query must be in the language that was asked for (peers never check this)."""

from __future__ import annotations

from .. import schema as S
from ..langid import check_language
from .base import Dropped, Row, Step, StepResult, set_score


class LanguageCheck(Step):
    name = "language"

    def __init__(self, min_margin: float = 0.2):
        self.min_margin = min_margin

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        for row in rows:
            ok, scores = check_language(row[S.QUERY], row[S.LANGUAGE], self.min_margin)
            set_score(row, "query_language", scores["requested"])
            if ok:
                result.kept.append(row)
            else:
                best = next((k[len("best_is_") :] for k in scores if k.startswith("best_is_")), "?")
                result.dropped.append(
                    Dropped(
                        row,
                        "wrong_language",
                        detail=f"asked {row[S.LANGUAGE]}, looks like {best}",
                        scores={"query_language": scores["requested"], "best_language": scores["best"]},
                    )
                )
        return result
