"""Step: STS rows. Two sentences drawn from the passage's content and their similarity, 1 to 5.

The similarity is drawn first from the config's distribution (so the run holds
paraphrases, partial overlaps and contradictions in known proportions); the
model writes a pair at that level and grades its own pair. A pair whose grade
strays from the request by more than ``sts_max_score_gap`` is dropped: the
model did not do what was asked, and the score would be noise.
"""

from __future__ import annotations

from .. import schema as S
from ..config import GenerationConfig
from ..langid import language_name
from ..step import Dropped, Row, StepResult, set_score
from ..text import normalise, passage_overlap
from . import sampling
from .budgets import capped, words_budget
from .llm_call import LLMStep, copies_example
from .replies import STSOutput

TEMPLATE = "sts/pair"
NEAR_IDENTICAL = 0.8  # share of sentence 2's n-grams found in sentence 1
STS_SENTENCE_WORDS = 20  # budget per sentence: a long sentence, before the slack


class WriteSTS(LLMStep):
    name = "sts"
    task_types = frozenset({"sts"})

    config: GenerationConfig

    def __call__(self, rows: list[Row]) -> StepResult:
        for row in rows:
            row[S.WORK_REQUESTED_SCORE] = sampling.sts_score(self.config, self.seed, row[S.ID])
        variables = [
            {
                "passage": row[S.POSITIVE],
                "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
                "language": language_name(row[S.LANGUAGE]),
                "score": row[S.WORK_REQUESTED_SCORE],
            }
            for row in rows
        ]
        answered, result = self.ask(
            TEMPLATE,
            rows,
            variables,
            STSOutput,
            [
                capped(
                    2 * words_budget(STS_SENTENCE_WORDS, row[S.LANGUAGE], self.config.reply_slack),
                    self.config.max_tokens_query,
                )
                for row in rows
            ],
        )
        for row, answer, prompt in answered:
            first, second = (" ".join(s.split()) for s in (answer.sentence1, answer.sentence2))
            requested = row[S.WORK_REQUESTED_SCORE]
            set_score(row, "sts_score_gap", abs(answer.score - requested))
            overlap = passage_overlap(second, first)
            if normalise(first) == normalise(second) or (overlap >= NEAR_IDENTICAL and answer.score < 5):
                # equal sentences, or near-equal ones graded as different in meaning: the pair is broken
                result.dropped.append(
                    Dropped(row, "identical_pair", detail=f"{overlap:.0%} shared n-grams", raw_output=first)
                )
            elif copies_example(first, prompt) or copies_example(second, prompt):
                result.dropped.append(
                    Dropped(row, "copied_example", detail="sentence taken from a worked example")
                )
            elif abs(answer.score - requested) > self.config.sts_max_score_gap:
                result.dropped.append(
                    Dropped(
                        row,
                        "score_mismatch",
                        detail=f"asked for similarity {requested}, the model graded its pair {answer.score}",
                        raw_output=f"{first}\n{second}",
                    )
                )
            else:
                row[S.QUERY], row[S.POSITIVE] = first, second
                row[S.SCORE] = float(answer.score)
                self.accept(row, result)
        return result
