"""Step: the configuration call. The LLM picks the persona (and, in `llm` mode, type and difficulty).

In the default `sampled` mode the question type and difficulty are drawn from
the config's weights with the run seed first, and the LLM only picks which of
the candidate personas would ask such a question about the passage.
"""

from __future__ import annotations

from .. import schema as S
from ..config import GenerationConfig
from ..langid import language_name
from ..step import Row, StepResult
from . import sampling
from .llm_call import LLM, LLMStep
from .replies import configure_output, configure_persona_output


class Configure(LLMStep):
    name = "configure"
    task_types = frozenset({"retrieval"})

    template = "retrieval/configure"

    def __init__(self, llm: LLM, config: GenerationConfig, top_k: int):
        super().__init__(llm, config)
        self.sampled = config.choose_by == "sampled"
        self.question_types = [k for k, w in config.question_types.items() if w > 0]
        self.difficulties = [k for k, w in config.difficulties.items() if w > 0]
        if self.sampled:
            self.output = configure_persona_output(top_k)
        else:
            self.output = configure_output(top_k, self.question_types, self.difficulties)

    def __call__(self, rows: list[Row]) -> StepResult:
        if self.sampled:
            for row in rows:
                sampling.draw_question(row, self.config, self.seed)
        variables = [
            {
                "passage": row[S.POSITIVE],
                "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
                "candidates": row[S.WORK_CANDIDATES],
                "question_types": self.question_types,
                "difficulties": self.difficulties,
                # set only in sampled mode: the template then asks for the persona alone
                "question_type": row.get(S.QUESTION_TYPE) if self.sampled else None,
                "difficulty": row.get(S.DIFFICULTY) if self.sampled else None,
            }
            for row in rows
        ]
        answered, result = self.ask(
            self.template,
            rows,
            variables,
            self.output,
            self.config.max_tokens_configure,
        )
        for row, answer, _prompt in answered:
            candidates = row[S.WORK_CANDIDATES]
            # The schema's enum bounds the choice by top_k; a passage may have fewer candidates.
            row[S.PERSONA] = candidates[min(answer.character, len(candidates)) - 1]
            if not self.sampled:
                row[S.QUESTION_TYPE] = answer.question_type
                row[S.DIFFICULTY] = answer.difficulty
            result.kept.append(row)
        return result
