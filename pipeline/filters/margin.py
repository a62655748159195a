"""Step: the positive-aware margin on every negative, then the final choice of negatives.

A negative is kept only if score(q, neg) < (1 - margin) * score(q, pos) (NV-Retriever's
TopK-PercPos; margin 0.05 means 95% of the positive's score). Rows in languages the
embedder does not handle keep their candidates unchecked (counted as an event). Peers apply this
to mined negatives only; here LLM-written negatives must pass it too, since an
LLM asked for a look-alike often writes something that answers the query, and so must the
passages a trained model ranks above the positive (``negatives.model``), scored here by the
run's embedder.
"""

from __future__ import annotations

import numpy as np

from .. import schema as S
from ..config import QUESTION_TASK_TYPES, TASK_TYPES, NegativesConfig
from ..embed.embedder import Embedder
from ..step import Dropped, Row, Step, StepResult, set_score
from .base import Filter


def passes_margin(negative_score: float, positive_score: float, margin: float) -> bool:
    return negative_score < (1.0 - margin) * positive_score


class NegativeMargin(Step):
    name = "margin"
    # near misses and wrong labels are negatives by construction
    task_types = QUESTION_TASK_TYPES

    def __init__(self, embedder: Embedder, config: NegativesConfig, domain_negatives: int = 0):
        self.embedder = embedder
        self.config = config
        self.domain_negatives = domain_negatives  # a domain row keeps up to this many written ones

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult(kept=rows)
        if not rows:
            return result
        queries = self.embedder.encode([r[S.QUERY] for r in rows], role="query")
        missing = [i for i, r in enumerate(rows) if r.get(S.POSITIVE_SCORE) is None]
        if missing:
            positives = self.embedder.encode([rows[i][S.POSITIVE] for i in missing], role="passage")
            for j, i in enumerate(missing):
                rows[i][S.POSITIVE_SCORE] = float(queries[i] @ positives[j])
        llm_scores = self._scored(rows, queries, S.WORK_LLM_NEGATIVES)
        model_scores = self._scored(rows, queries, S.WORK_MODEL_NEGATIVES)

        for i, row in enumerate(rows):
            positive = row[S.POSITIVE_SCORE]
            # an embedder that does not handle these languages gives scores no rule should trust
            trusted = self.embedder.supports(row[S.LANGUAGE], row[S.PASSAGE_LANGUAGE])
            if not trusted:
                result.events["margin_skipped_unsupported_language"] += 1
            chosen: list[tuple[str, float, str]] = []
            # a trained model's own mistakes first: the hardest, and a trainer that takes one
            # negative per row (train.negatives = 1) takes them
            for source, candidates, limit in (
                ("model", model_scores.get(i, []), self.config.model_count),
                (
                    "llm",
                    llm_scores.get(i, []),
                    self.domain_negatives if row[S.TASK_TYPE] == "domain" else self.config.llm_count,
                ),
                (
                    "mined",
                    [(c["text"], c["score"]) for c in row.get(S.WORK_MINED_NEGATIVES) or []],
                    self.config.mined_count,
                ),
            ):
                taken = 0
                for text, score in candidates:
                    if taken == limit:
                        break
                    if any(text == c[0] for c in chosen):
                        continue
                    if text in (row.get(S.WORK_RELEVANT) or ()):  # the judge found it answers the query
                        result.events[f"negatives_removed_relevant_{source}"] += 1
                        continue
                    if not trusted or passes_margin(score, positive, self.config.relative_margin):
                        chosen.append((text, score, source))
                        taken += 1
                    else:
                        result.events[f"negatives_removed_margin_{source}"] += 1
            row[S.NEGATIVES] = [c[0] for c in chosen]
            row[S.NEGATIVE_SCORES] = [c[1] for c in chosen]
            row[S.NEGATIVE_SOURCES] = [c[2] for c in chosen]
            if chosen:
                set_score(row, "hardest_negative", float(np.max([c[1] for c in chosen])))
        return result

    def _scored(self, rows: list[Row], queries, column: str) -> dict[int, list[tuple[str, float]]]:
        """Row index -> (text, the run's embedder's score) of the candidates in ``column``."""
        texts = [(i, t) for i, r in enumerate(rows) for t in r.get(column) or []]
        vectors = self.embedder.encode([t for _, t in texts], role="passage")
        scored: dict[int, list[tuple[str, float]]] = {}
        for (i, text), vector in zip(texts, vectors, strict=True):
            scored.setdefault(i, []).append((text, float(queries[i] @ vector)))
        return scored


class RequireNegatives(Filter):
    """Rows left with too few negatives after every check are not worth training on."""

    name = "require_negatives"
    task_types = frozenset(TASK_TYPES) - {"sts"}  # STS rows carry a score instead

    def __init__(self, minimum: int):
        self.minimum = minimum

    def check(self, row: Row) -> Dropped | None:
        count = len(row.get(S.NEGATIVES) or [])
        if count >= self.minimum:
            return None
        return Dropped(row, "no_negatives", detail=f"{count} < {self.minimum} negatives left")
