"""Step: the LLM judge grades the positive and every negative on a 0-3 rubric.

The positive must reach ``min_positive_score`` or the row is dropped
(``judge_rejected``). A negative graded above ``max_negative_score`` answers the
query after all and is removed. A judgement that does not parse drops the row
(``judge_invalid``): an unreadable verdict is never read as a pass.
"""

from __future__ import annotations

from .. import schema as S
from ..config import QUESTION_TASK_TYPES, JudgeConfig
from ..engine import ChatEngine
from ..engine.base import ENGINE_CLOCK
from ..generate.prompts import PromptLibrary
from ..generate.replies import JudgeOutput
from ..step import Dropped, Row, Step, StepResult, charge, set_score

TEMPLATE = "judge/relevance"


def judgement_chat(prompts: PromptLibrary, query: str, passage: str) -> list[dict[str, str]]:
    """The chat that asks the judge to grade one (query, passage) pair."""
    return [{"role": "user", "content": prompts.render(TEMPLATE, {"query": query, "passage": passage})}]


def grade(
    engine: ChatEngine,
    prompts: PromptLibrary,
    asked: list,
    config: JudgeConfig,
    result: StepResult,
    desc: str,
) -> dict[int, list]:
    """The judge's grades of (row index, query, passage) triples, grouped by row index in the order
    asked; what the calls cost is added to ``result``."""
    chats = [judgement_chat(prompts, query, passage) for _, query, passage in asked]
    with ENGINE_CLOCK.share() as spent:  # streamed slices wait side by side: each gets its share
        generations = engine.generate(chats, JudgeOutput, config.max_tokens, temperature=0.0, desc=desc)
    result.usage.add(generations, spent.seconds)
    grouped: dict[int, list] = {}
    for (i, _, _), generation in zip(asked, generations, strict=True):
        grouped.setdefault(i, []).append(generation)
    return grouped


class Judge(Step):
    name = "judge"
    task_types = QUESTION_TASK_TYPES  # the rubric grades whether a passage answers a query

    def __init__(self, engine: ChatEngine, prompts: PromptLibrary, config: JudgeConfig):
        self.engine = engine
        self.prompts = prompts
        self.config = config

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        if not rows:
            return result
        # one judgement per (row, document): the positive, then the negatives; what the positive
        # check graded already (the same question) is read back, not asked again
        documents = [(row[S.POSITIVE], *(row.get(S.NEGATIVES) or [])) for row in rows]
        asked = [
            (i, row[S.QUERY], text)
            for i, row in enumerate(rows)
            for text in documents[i]
            if text not in (row.get(S.WORK_GRADES) or {})
        ]
        fresh = grade(self.engine, self.prompts, asked, self.config, result, "judge")

        judge_hash = self.prompts.prompt(TEMPLATE).hash
        for i, row in enumerate(rows):
            charge(row, fresh.get(i, []))
            answers, known = iter(fresh.get(i, [])), row.get(S.WORK_GRADES) or {}
            verdict = [known[text] if text in known else next(answers) for text in documents[i]]
            row.setdefault(S.WORK_PROMPTS, {})[TEMPLATE] = judge_hash
            positive, *negatives = verdict
            broken = next((g for g in verdict if g.parsed is None), None)
            if broken is not None:
                result.dropped.append(
                    Dropped(row, "judge_invalid", detail=broken.error, raw_output=broken.raw)
                )
                continue
            row[S.JUDGE_SCORE] = positive.parsed.score
            set_score(row, "judge_positive", positive.parsed.score)
            if positive.parsed.score < self.config.min_positive_score:
                result.dropped.append(
                    Dropped(
                        row,
                        "judge_rejected",
                        detail=positive.parsed.reason,
                        raw_output=positive.raw,
                        scores={"judge_positive": positive.parsed.score},
                    )
                )
                continue
            keep = [k for k, g in enumerate(negatives) if g.parsed.score <= self.config.max_negative_score]
            result.events["negatives_removed_judge"] += len(negatives) - len(keep)
            for column in (S.NEGATIVES, S.NEGATIVE_SCORES, S.NEGATIVE_SOURCES):
                row[column] = [row[column][k] for k in keep]
            result.kept.append(row)
        return result
