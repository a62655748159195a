"""Step: the query call. The LLM writes the query from the chosen persona's view.

In one-call mode (``generation.calls: one``) the same call also picks the persona
among the candidates, so the configuration call is not made: question type and
difficulty are drawn with the run seed, as in ``choose_by: sampled``.
"""

from __future__ import annotations

from .. import schema as S
from ..config import GenerationConfig
from ..langid import language_name
from ..step import Dropped, Row, StepResult
from . import sampling
from .budgets import capped, words_budget
from .llm_call import LLM, LLMStep, copies_example
from .replies import QueryOutput, persona_query_output

CHARACTER_TOKENS = 8  # the "character" field of a one-call reply


class WriteQuery(LLMStep):
    name = "query"
    task_types = frozenset({"retrieval"})

    def __init__(self, llm: LLM, config: GenerationConfig, choose_persona_among: int = 0):
        super().__init__(llm, config)
        # one-call mode: the number of candidates the call chooses the persona from (0: off)
        self.one_call = choose_persona_among > 0
        self.template = "retrieval/persona_query" if self.one_call else "retrieval/query"
        self.output = persona_query_output(choose_persona_among) if self.one_call else QueryOutput

    def __call__(self, rows: list[Row]) -> StepResult:
        for row in rows:
            row[S.QUERY_LENGTH_WORDS] = sampling.length_words(self.config, self.seed, row[S.ID])
            if self.one_call:
                sampling.draw_question(row, self.config, self.seed)
        variables = [
            {
                "passage": row[S.POSITIVE],
                "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
                "question_type": row[S.QUESTION_TYPE],
                "difficulty": row[S.DIFFICULTY],
                "length_words": row[S.QUERY_LENGTH_WORDS],
                "query_language": language_name(row[S.LANGUAGE]),
                **({"candidates": row[S.WORK_CANDIDATES]} if self.one_call else {"persona": row[S.PERSONA]}),
            }
            for row in rows
        ]
        answered, result = self.ask(
            self.template,
            rows,
            variables,
            self.output,
            [
                capped(
                    words_budget(row[S.QUERY_LENGTH_WORDS], row[S.LANGUAGE], self.config.reply_slack)
                    + (CHARACTER_TOKENS if self.one_call else 0),
                    self.config.max_tokens_query,
                )
                for row in rows
            ],
        )
        for row, answer, prompt in answered:
            if self.one_call:
                candidates = row[S.WORK_CANDIDATES]
                # the schema bounds the choice by top_k; a passage may have fewer candidates
                row[S.PERSONA] = candidates[min(answer.character, len(candidates)) - 1]
            query = " ".join(answer.query.split())
            if not query:
                result.dropped.append(Dropped(row, "empty_query", raw_output=answer.query))
                continue
            if copies_example(query, prompt):
                result.dropped.append(
                    Dropped(
                        row,
                        "copied_example",
                        detail="query taken from a worked example",
                        raw_output=answer.query,
                    )
                )
                continue
            row[S.QUERY] = query
            self.accept(row, result)
        return result
