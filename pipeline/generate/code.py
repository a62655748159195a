"""Steps of the code task types: the developer's question, the translation, code look-alikes.

- ``WriteCodeQuery`` (code_search, code_docs): a developer persona (drawn among the unit's
  top-k developer personas with the run seed) asks the question that the code, or the doc
  section, answers: one of the kinds developers type (how-to, error message, API usage,
  concept), at a drawn difficulty and length, in the row's query language.
- ``WriteCodeTranslation`` (code_translation): the unit in the row's target programming
  language, and near-miss translations that differ by one subtle bug (an off-by-one, a wrong
  edge case, a swapped condition): the hardest negatives a code retriever can meet.
- ``WriteCodeNegatives`` (code_search): plausible code in the same language that does
  something else; they must still parse (``filters/code.py``) before they count.

Whether written code parses is the gate's job, not these steps'.
"""

from __future__ import annotations

from .. import schema as S
from ..config import GenerationConfig, NegativesConfig
from ..langid import language_name
from ..step import Dropped, Row, StepResult
from . import sampling
from .budgets import JSON_OVERHEAD, capped, words_budget
from .llm_call import LLM, LLMStep, copies_example, keep_translation
from .negatives import WriteNegatives
from .replies import CODE_MAX_CHARS, QueryOutput, code_negatives_output, code_translation_output

CODE_TOKENS_PER_CHAR = 0.4  # code is denser in tokens than English prose (symbols, indentation)
TRANSLATION_SLACK = 1.6  # another language may need more lines (types, braces) for the same logic


def same_code(text: str) -> str:
    """Code as written up to spacing: ``x + 1`` and ``x - 1`` differ (``normalise`` drops symbols)."""
    return " ".join(text.split())


def _code_budget(chars: int, copies: int, cap: int) -> int:
    """Tokens for ``copies`` pieces of code of about ``chars`` characters each, with room to spare."""
    each = min(CODE_MAX_CHARS, int(TRANSLATION_SLACK * chars))
    return capped(JSON_OVERHEAD + copies * (int(each * CODE_TOKENS_PER_CHAR) + 16), cap)


class WriteCodeQuery(LLMStep):
    name = "code_query"
    task_types = frozenset({"code_search", "code_docs"})

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        for task in ("code_search", "code_docs"):
            mine = [row for row in rows if row[S.TASK_TYPE] == task]
            if mine:
                asked = self._ask(task, mine)
                result.kept += asked.kept
                result.dropped += asked.dropped
                result.events.update(asked.events)
                result.usage.merge(asked.usage)
        return result

    def _ask(self, task: str, rows: list[Row]) -> StepResult:
        config: GenerationConfig = self.config
        for row in rows:
            row[S.PERSONA] = sampling.pick(row[S.WORK_CANDIDATES], self.seed, row[S.ID], "persona")
            row[S.QUESTION_TYPE] = sampling.code_question_type(config, self.seed, row[S.ID])
            row[S.DIFFICULTY] = sampling.difficulty(config, self.seed, row[S.ID])
            row[S.QUERY_LENGTH_WORDS] = sampling.length_words(config, self.seed, row[S.ID])
        variables = [
            {
                "persona": row[S.PERSONA],
                # code_search shows the unit as written (docstring included): the question is
                # better for it; the positive is the code without the docstring
                "code": row.get(S.WORK_CODE) or row[S.POSITIVE],
                "document": row[S.POSITIVE],
                "programming_language": row.get(S.PROGRAMMING_LANGUAGE) or "unknown",
                "path": row.get(S.CODE_PATH) or "",
                "question_type": row[S.QUESTION_TYPE],
                "difficulty": row[S.DIFFICULTY],
                "length_words": row[S.QUERY_LENGTH_WORDS],
                "query_language": language_name(row[S.LANGUAGE]),
            }
            for row in rows
        ]
        budgets = [
            capped(
                words_budget(row[S.QUERY_LENGTH_WORDS], row[S.LANGUAGE], config.reply_slack),
                config.max_tokens_query,
            )
            for row in rows
        ]
        answered, result = self.ask(f"{task}/query", rows, variables, QueryOutput, budgets)
        for row, answer, prompt in answered:
            query = " ".join(answer.query.split())
            if not query:
                result.dropped.append(Dropped(row, "empty_query", raw_output=answer.query))
            elif copies_example(query, prompt):
                result.dropped.append(
                    Dropped(
                        row, "copied_example", detail="query taken from a worked example", raw_output=query
                    )
                )
            else:
                row[S.QUERY] = query
                self.accept(row, result)
        return result


class WriteCodeTranslation(LLMStep):
    name = "code_translation"
    task_types = frozenset({"code_translation"})
    template = "code_translation/translate"

    def __init__(self, llm: LLM, config: GenerationConfig):
        super().__init__(llm, config)
        self.output = code_translation_output(config.code_negatives)

    def __call__(self, rows: list[Row]) -> StepResult:
        result, ready = StepResult(), []
        for row in rows:
            if row.get(S.TARGET_PROGRAMMING_LANGUAGE):
                ready.append(row)
            else:
                detail = f"generation.code_targets has no language other than {row[S.PROGRAMMING_LANGUAGE]}"
                result.dropped.append(Dropped(row, "no_target_language", detail=detail))
        if not ready:
            return result
        variables = [
            {
                "code": row[S.QUERY],
                "source_language": row[S.PROGRAMMING_LANGUAGE],
                "target_language": row[S.TARGET_PROGRAMMING_LANGUAGE],
                "count": self.config.code_negatives,
            }
            for row in ready
        ]
        budgets = [
            _code_budget(len(row[S.QUERY]), 1 + self.config.code_negatives, self.config.max_tokens_code)
            for row in ready
        ]
        answered, asked = self.ask(self.template, ready, variables, self.output, budgets)
        result.dropped += asked.dropped
        result.usage.merge(asked.usage)
        for row, answer, prompt in answered:
            if keep_translation(row, answer, prompt, result, same_code, lambda t: t.strip("\n")):
                self.accept(row, result)
        return result


class WriteCodeNegatives(WriteNegatives):
    """Plausible code in the row's language that does something other than what the query asks."""

    name = "code_negatives_llm"
    task_types = frozenset({"code_search"})
    template = "code_search/negatives"

    def __init__(self, llm: LLM, config: NegativesConfig):
        super().__init__(llm, config, check_language=False)  # code: no natural-language check
        self.output = code_negatives_output(config.llm_count)

    @staticmethod
    def clean(text: str) -> str:
        return text.strip("\n")  # indentation is syntax in some languages: keep it

    @staticmethod
    def key(text: str) -> str:
        return same_code(text)

    def variables(self, row: Row) -> dict:
        return {
            "query": row[S.QUERY],
            "code": row[S.POSITIVE],
            "programming_language": row[S.PROGRAMMING_LANGUAGE],
            "count": self.config.llm_count,
        }

    def budget(self, row: Row) -> int:
        return _code_budget(len(row[S.POSITIVE]), self.config.llm_count, self.config.max_tokens)

    def keeps(self, text: str, row: Row, result: StepResult) -> bool:
        return True
