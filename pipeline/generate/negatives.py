"""Steps: hard-negative candidates, written by the LLM and mined from the corpus.

Both only propose candidates; ``NegativeMargin`` then applies the same
positive-aware rule to every candidate, whatever wrote it.
"""

from __future__ import annotations

import logging

from .. import schema as S
from ..config import NegativesConfig
from ..embed.embedder import Embedder
from ..embed.pool import PassagePool
from ..langid import check_language, language_name
from ..step import Row, Step, StepResult
from ..text import normalise
from .budgets import JSON_OVERHEAD, capped, chars_budget
from .llm_call import LLM, LLMStep, copies_example
from .replies import NEGATIVE_MAX_CHARS, negatives_output

log = logging.getLogger(__name__)

NEGATIVE_LENGTH_SLACK = 1.5  # a negative is "about as long as the passage": room for half as much again


class WriteNegatives(LLMStep):
    """The LLM writes look-alike passages that do not answer the query, in the passage's language."""

    name = "negatives_llm"
    # documentation sections are prose: the same look-alike passages serve code_docs rows
    task_types = frozenset({"retrieval", "code_docs"})

    template = "retrieval/negatives"

    def __init__(self, llm: LLM, config: NegativesConfig, check_language: bool = True):
        super().__init__(llm, config)
        self.check_language = check_language
        self.output = negatives_output(config.llm_count)

    @staticmethod
    def clean(text: str) -> str:
        return " ".join(text.split())

    @staticmethod
    def key(text: str) -> str:
        """What two texts must share to count as the same one."""
        return normalise(text)

    def variables(self, row: Row) -> dict:
        return {
            "query": row[S.QUERY],
            "passage": row[S.POSITIVE],
            "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
            "count": self.config.llm_count,
        }

    def budget(self, row: Row) -> int:
        """About as long as the positive, for each negative asked for."""
        chars = min(NEGATIVE_MAX_CHARS, int(NEGATIVE_LENGTH_SLACK * len(row[S.POSITIVE])))
        return capped(
            JSON_OVERHEAD + self.config.llm_count * chars_budget(chars, row[S.PASSAGE_LANGUAGE]),
            self.config.max_tokens,
        )

    def keeps(self, text: str, row: Row, result: StepResult) -> bool:
        """Whether a written candidate may go on to the margin (the language check, here)."""
        if self.check_language and not check_language(text, row[S.PASSAGE_LANGUAGE])[0]:
            result.events["negatives_removed_wrong_language"] += 1
            return False
        return True

    def __call__(self, rows: list[Row]) -> StepResult:
        if self.config.llm_count == 0 or not rows:
            return StepResult(kept=rows)
        variables = [self.variables(row) for row in rows]
        limits = [self.budget(row) for row in rows]
        answered, result = self.ask(self.template, rows, variables, self.output, limits)
        # A failed call costs the row its LLM negatives, not the row: mined ones may still serve.
        for failed in result.dropped:
            log.debug("negatives call failed for %s: %s", failed.row[S.ID], failed.detail)
            failed.row[S.WORK_LLM_NEGATIVES] = []
            result.kept.append(failed.row)
            why = "invalid" if failed.reason == "invalid_json" else failed.reason
            result.events[f"negatives_llm_{why}"] += 1
        result.dropped = []
        for row, answer, prompt in answered:
            positive = self.key(row[S.POSITIVE])
            kept = []
            for text in answer.negatives:
                text = self.clean(text)
                if self.key(text) == positive:
                    result.events["negatives_removed_copy_of_positive"] += 1
                elif copies_example(text, prompt):
                    result.events["negatives_removed_copied_example"] += 1
                elif self.keeps(text, row, result):
                    kept.append(text)
            row[S.WORK_LLM_NEGATIVES] = kept
            result.kept.append(row)
        return result


SAME_DOCUMENT_ROOM = 16  # passages of one document a search may have to skip before its ranks


class MineNegatives(Step):
    """Candidates from a rank range of the passages nearest to the query.

    The positive, other passages of the same document, and exact copies of the
    positive are skipped: they are likely relevant, and a relevant "negative"
    teaches the model the wrong thing.
    """

    name = "negatives_mined"
    task_types = frozenset({"retrieval", "code_search", "code_docs"})

    def __init__(self, embedder: Embedder, pool: PassagePool, config: NegativesConfig):
        self.embedder = embedder
        self.pool = pool
        self.config = config

    def __call__(self, rows: list[Row]) -> StepResult:
        if self.config.mined_count == 0 or not rows or not self.pool.size:
            return StepResult(kept=rows)
        queries = self.embedder.encode([r[S.QUERY] for r in rows], role="query")
        # rank_max plus room for the skipped passages of the positive's own document
        scores, nearest = self.pool.nearest(queries, self.config.rank_max + SAME_DOCUMENT_ROOM)
        found = self.pool.passages(nearest.ravel())  # row number -> (passage id, document id, text)
        for row, order, row_scores in zip(rows, nearest, scores, strict=True):
            positive = normalise(row[S.POSITIVE])
            candidates, rank = [], 0
            for index, score in zip(order, row_scores, strict=True):
                if index < 0 or rank >= self.config.rank_max:
                    break  # an index search that found fewer; or deep enough
                passage_id, source_id, text = found[int(index)]
                if (
                    passage_id == row[S.PASSAGE_ID]
                    or source_id == row[S.SOURCE_ID]
                    or normalise(text) == positive
                ):
                    continue  # not counted as a rank: the positive's own document
                if rank >= self.config.rank_min:
                    candidates.append({"text": text, "score": float(score)})
                rank += 1
            row[S.WORK_MINED_NEGATIVES] = candidates
        return StepResult(kept=rows)


class MineModelNegatives(Step):
    """Candidates a trained model gets wrong: the corpus passages it ranks above the row's positive,
    or within the margin of it (the model's own scores), nearest first.

    The model's pool is the same corpus encoded by the model (``negatives.model``); the positive,
    its document and copies of it are skipped as in ``MineNegatives``. The run's embedder then
    scores the candidates for the margin, and the judge grades them when it is on: a passage the
    model prefers may be a second answer, which those checks catch.
    """

    name = "negatives_model"
    task_types = frozenset({"retrieval", "code_search", "code_docs"})

    def __init__(self, model: Embedder, pool: PassagePool, config: NegativesConfig):
        self.model = model
        self.pool = pool
        self.config = config

    def __call__(self, rows: list[Row]) -> StepResult:
        if not rows or not self.pool.size:
            return StepResult(kept=rows)
        queries = self.model.encode([r[S.QUERY] for r in rows], role="query")
        positives = self.model.encode([r[S.POSITIVE] for r in rows], role="passage")
        depth = self.config.model_count * 4 + SAME_DOCUMENT_ROOM
        scores, nearest = self.pool.nearest(queries, depth)
        found = self.pool.passages(nearest.ravel())
        for row, query, positive_vector, order, row_scores in zip(
            rows, queries, positives, nearest, scores, strict=True
        ):
            floor = (1.0 - self.config.relative_margin) * float(query @ positive_vector)
            positive = normalise(row[S.POSITIVE])
            candidates = []
            for index, score in zip(order, row_scores, strict=True):
                if index < 0 or score < floor or len(candidates) == self.config.model_count * 2:
                    break  # nearest first: the rest score lower still
                passage_id, source_id, text = found[int(index)]
                if (
                    passage_id == row[S.PASSAGE_ID]
                    or source_id == row[S.SOURCE_ID]
                    or normalise(text) == positive
                ):
                    continue
                candidates.append(text)
            row[S.WORK_MODEL_NEGATIVES] = candidates
        return StepResult(kept=rows)
