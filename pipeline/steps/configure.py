"""Step: the configuration call. The LLM picks the persona, question type and difficulty."""

from __future__ import annotations

from .. import schema as S
from ..config import GenerationConfig
from ..engine import ChatEngine
from ..langid import language_name
from ..outputs import configure_output
from ..prompts import PromptLibrary
from .base import Row, Step, StepResult
from .llm_call import ask


class Configure(Step):
    name = "configure"

    def __init__(
        self,
        engine: ChatEngine,
        prompts: PromptLibrary,
        config: GenerationConfig,
        top_k: int,
        task: str = "retrieval",
    ):
        self.engine = engine
        self.prompts = prompts
        self.config = config
        self.template = f"{task}/configure"
        self.output = configure_output(top_k, config.question_types, config.difficulties)

    def __call__(self, rows: list[Row]) -> StepResult:
        variables = [
            {
                "passage": row[S.POSITIVE],
                "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
                "candidates": row[S.WORK_CANDIDATES],
                "question_types": self.config.question_types,
                "difficulties": self.config.difficulties,
            }
            for row in rows
        ]
        answered, result = ask(
            self.engine,
            self.prompts,
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
            row[S.QUESTION_TYPE] = answer.question_type
            row[S.DIFFICULTY] = answer.difficulty
            result.kept.append(row)
        return result
