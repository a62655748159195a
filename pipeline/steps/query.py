"""Step: the query call. The LLM writes the query from the chosen persona's view."""

from __future__ import annotations

from .. import sampling
from .. import schema as S
from ..config import GenerationConfig
from ..engine import ChatEngine
from ..langid import language_name
from ..outputs import QueryOutput
from ..prompts import PromptLibrary
from .base import Dropped, Row, StepResult
from .llm_call import LLMStep, copies_example


class WriteQuery(LLMStep):
    name = "query"
    tasks = frozenset({"retrieval"})

    def __init__(
        self,
        engine: ChatEngine,
        prompts: PromptLibrary,
        config: GenerationConfig,
        seed: int,
        task: str = "retrieval",
    ):
        super().__init__(engine, prompts, config, seed)
        self.task = task
        self.template = f"{task}/query"

    def __call__(self, rows: list[Row]) -> StepResult:
        for row in rows:
            row[S.QUERY_LENGTH_WORDS] = sampling.length_words(self.config, self.seed, row[S.ID])
        variables = [
            {
                "passage": row[S.POSITIVE],
                "passage_language": language_name(row[S.PASSAGE_LANGUAGE]),
                "persona": row[S.PERSONA],
                "question_type": row[S.QUESTION_TYPE],
                "difficulty": row[S.DIFFICULTY],
                "length_words": row[S.QUERY_LENGTH_WORDS],
                "query_language": language_name(row[S.LANGUAGE]),
            }
            for row in rows
        ]
        answered, result = self.ask(
            self.template,
            rows,
            variables,
            QueryOutput,
            self.config.max_tokens_query,
        )
        for row, answer, prompt in answered:
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
