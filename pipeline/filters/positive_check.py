"""Step: every positive checked against the corpus (Gecko's positive relabelling, NeMo Curator's
triviality filter).

A generated query often has a better answer elsewhere in the corpus than the passage it was
written from. For each question row the step retrieves the query's nearest pool passages under
the run's embedder (the positive's own document and copies of it left out) and compares them
with the positive:

- ``positive_gap`` (a column): the positive's score minus the best other passage's. A row whose
  gap is above ``easy_margin`` is ``easy`` (a column): the model already finds its positive
  first, by a distance. ``drop_easy_share`` drops that share of the easy rows, the easiest first
  (``easy``).
- A row whose positive is outranked sends the positive and the ``candidates`` best outranking
  passages to the judge (when it is on). The positive graded relevant keeps the row
  (``positive_confirmed``); graded not relevant while an outranking passage is, the better
  passage becomes the positive (``positive_replaced``), and the seed passage a negative only if
  the judge graded it irrelevant; neither relevant drops the row (``ambiguous_positive``).
  Passages the judge graded relevant are never used as negatives (the margin step skips them).
- Without the judge (the packaged demo) the step only flags: ``positive_outranked`` counts the
  rows, their gap says by how much, and nothing is changed.

Every drop goes to ``rejected/`` with its gap and grades.
"""

from __future__ import annotations

from .. import schema as S
from ..config import JudgeConfig, PositiveCheckConfig
from ..embed.embedder import Embedder
from ..embed.pool import PassagePool
from ..engine import ChatEngine
from ..generate.prompts import PromptLibrary
from ..step import Dropped, Row, Step, StepResult, charge, set_score
from ..text import normalise
from .judge import grade

ROOM = 16  # pool passages of the positive's own document a search may have to skip


class PositiveCheck(Step):
    name = "positive_check"
    task_types = frozenset({"retrieval", "code_search", "code_docs"})  # positives cut from the corpus

    def __init__(
        self,
        embedder: Embedder,
        pool: PassagePool,
        config: PositiveCheckConfig,
        judge: ChatEngine | None = None,
        prompts: PromptLibrary | None = None,
        judge_config: JudgeConfig | None = None,
    ):
        self.embedder = embedder
        self.pool = pool
        self.config = config
        self.judge = judge
        self.prompts = prompts
        self.judge_config = judge_config or JudgeConfig()

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        if not rows or not self.pool.size:
            result.kept = rows
            return result
        outranked = self._compare(rows)
        result.events["positive_outranked"] += len(outranked)
        judged = self.judge is not None and outranked  # without the judge: flagged only
        kept = self._judged(rows, outranked, result) if judged else rows
        result.kept = self._without_easiest(kept, result)
        return result

    def _compare(self, rows: list[Row]) -> dict[int, list[tuple[str, float, str, str]]]:
        """Set each row's gap and ``easy``; row index -> the passages that outrank its positive."""
        queries = self.embedder.encode([r[S.QUERY] for r in rows], role="query")
        positives = self.embedder.encode([r[S.POSITIVE] for r in rows], role="passage")
        scores, nearest = self.pool.nearest(queries, self.config.candidates + ROOM)
        found = self.pool.passages(nearest.ravel())
        outranked = {}
        for i, (row, order, row_scores) in enumerate(zip(rows, nearest, scores, strict=True)):
            positive = float(queries[i] @ positives[i])
            own = normalise(row[S.POSITIVE])
            others = []
            for index, score in zip(order, row_scores, strict=True):
                if index < 0:
                    break
                passage_id, source_id, text = found[int(index)]
                if passage_id == row[S.PASSAGE_ID] or source_id == row[S.SOURCE_ID] or normalise(text) == own:
                    continue
                others.append((text, float(score), passage_id, source_id))
            gap = positive - others[0][1] if others else 1.0
            row[S.POSITIVE_GAP] = gap
            row[S.EASY] = gap > self.config.easy_margin
            set_score(row, "positive_gap", gap)
            better = [o for o in others if o[1] > positive][: self.config.candidates]
            if better:
                outranked[i] = better
        return outranked

    def _judged(self, rows: list[Row], outranked: dict, result: StepResult) -> list[Row]:
        """The judge's verdict on each outranked row: kept, given the better positive, or dropped."""
        asked = [
            (i, rows[i][S.QUERY], text)
            for i, better in outranked.items()
            for text in [rows[i][S.POSITIVE], *(b[0] for b in better)]
        ]
        grades = grade(self.judge, self.prompts, asked, self.judge_config, result, "positive check")
        kept = []
        for i, row in enumerate(rows):
            if i not in outranked:
                kept.append(row)
                continue
            charge(row, grades[i])
            verdict = self._verdict(row, outranked[i], grades[i], result)
            if verdict is None:
                kept.append(row)
            else:
                result.dropped.append(verdict)
        return kept

    def _verdict(self, row: Row, better: list, generations: list, result: StepResult) -> Dropped | None:
        """Keep (None, the row perhaps given a better positive) or drop the row, from its grades."""
        if any(g.parsed is None for g in generations):
            broken = next(g for g in generations if g.parsed is None)
            return Dropped(row, "judge_invalid", detail=broken.error, raw_output=broken.raw)
        positive, *others = [g.parsed.score for g in generations]
        texts = [row[S.POSITIVE], *(b[0] for b in better)]
        row[S.WORK_GRADES] = dict(zip(texts, generations, strict=True))  # the judge step asks none again
        relevant = [
            b
            for b, grade in zip(better, others, strict=True)
            if grade >= self.judge_config.min_positive_score
        ]
        row[S.WORK_RELEVANT] = [b[0] for b in relevant]  # answers: never a negative
        scores = {"positive_gap": row[S.POSITIVE_GAP], "judge_positive": positive}
        if positive >= self.judge_config.min_positive_score:
            result.events["positive_confirmed"] += 1
            return None
        if not relevant:
            detail = (
                f"{len(better)} passages outrank the positive; the judge found none of them, nor it, relevant"
            )
            return Dropped(row, "ambiguous_positive", detail=detail, scores=scores)
        text, _, passage_id, source_id = relevant[0]
        seed = row[S.POSITIVE]
        row[S.POSITIVE], row[S.PASSAGE_ID], row[S.SOURCE_ID] = text, passage_id, source_id
        row[S.POSITIVE_SCORE] = None  # the margin scores the new positive
        row[S.WORK_RELEVANT] = [b[0] for b in relevant[1:]]
        if positive <= self.judge_config.max_negative_score:
            row[S.WORK_LLM_NEGATIVES] = [seed, *(row.get(S.WORK_LLM_NEGATIVES) or [])]
        result.events["positive_replaced"] += 1
        return None

    def _without_easiest(self, rows: list[Row], result: StepResult) -> list[Row]:
        """``drop_easy_share`` of the easy rows dropped, the largest gaps first."""
        easy = sorted((r for r in rows if r.get(S.EASY)), key=lambda r: (-r[S.POSITIVE_GAP], r[S.ID]))
        dropped = {id(r) for r in easy[: int(len(easy) * self.config.drop_easy_share)]}
        for row in rows:
            if id(row) in dropped:
                result.dropped.append(
                    Dropped(
                        row,
                        "easy",
                        detail="the positive is first by a wide gap",
                        scores={"positive_gap": row[S.POSITIVE_GAP]},
                    )
                )
        return [r for r in rows if id(r) not in dropped]
