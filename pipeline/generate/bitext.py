"""Step: bitext mining rows. A sentence of the passage, its translation, and near-miss translations.

The sentence is picked from the passage by the run seed (the model never gets
to paraphrase the source); the model translates it into the row's target
language and writes near misses that differ in one fact (a number, a name, a
negation). A near miss is the hardest possible negative for a bitext miner: it
shares almost every word with the right answer.
"""

from __future__ import annotations

from .. import schema as S
from ..config import GenerationConfig
from ..langid import check_language, language_name
from ..readers.passages import split_sentences
from ..step import Dropped, Row, StepResult
from ..text import normalise, tokens
from . import sampling
from .budgets import JSON_OVERHEAD, approx_words, capped, words_budget
from .llm_call import LLM, LLMStep, keep_translation
from .replies import SENTENCE_MAX_CHARS, bitext_output

TEMPLATE = "bitext/translate"
MIN_SENTENCE_TOKENS = 5  # words, or characters in CJK: shorter "sentences" are headings and fragments


def candidate_sentences(passage: str) -> list[str]:
    return [
        s
        for s in split_sentences(passage)
        if len(tokens(s)) >= MIN_SENTENCE_TOKENS and len(s) <= SENTENCE_MAX_CHARS
    ]


class WriteBitext(LLMStep):
    name = "bitext"
    task_types = frozenset({"bitext"})

    def __init__(self, llm: LLM, config: GenerationConfig, check_language: bool = True):
        super().__init__(llm, config)
        self.check_language = check_language
        self.output = bitext_output(config.bitext_negatives)

    def __call__(self, rows: list[Row]) -> StepResult:
        result = StepResult()
        ready = self._sentences(rows, result)
        if not ready:
            return result
        variables = [
            {
                "sentence": row[S.QUERY],
                "source_language": language_name(row[S.LANGUAGE]),
                "target_language": language_name(row[S.TARGET_LANGUAGE]),
                "count": self.config.bitext_negatives,
            }
            for row in ready
        ]
        budgets = [self._budget(row) for row in ready]
        answered, asked = self.ask(
            TEMPLATE, ready, variables, self.output, budgets, language_column=S.TARGET_LANGUAGE
        )
        result.dropped.extend(asked.dropped)
        result.usage.merge(asked.usage)

        def in_target(text: str, row: Row) -> bool:
            return check_language(text, row[S.TARGET_LANGUAGE])[0]

        language_ok = in_target if self.check_language else None
        for row, answer, prompt in answered:
            if keep_translation(row, answer, prompt, result, normalise, _one_line, language_ok):
                self.accept(row, result)
        return result

    def _sentences(self, rows: list[Row], result: StepResult) -> list[Row]:
        """The rows that can be translated, each with its drawn sentence as the query; the others
        dropped in ``result`` with why (no target language, no sentence that fits)."""
        ready = []
        for row in rows:
            if not row.get(S.TARGET_LANGUAGE):
                detail = (
                    f"bitext needs a query language other than the passage's ({row[S.PASSAGE_LANGUAGE]}); "
                    "add one to --lang"
                )
                result.dropped.append(Dropped(row, "no_target_language", detail=detail))
                continue
            sentences = candidate_sentences(row[S.POSITIVE])
            if not sentences:
                detail = "no sentence of 5+ words under the length bound"
                result.dropped.append(Dropped(row, "no_sentence", detail=detail))
                continue
            row[S.QUERY] = sampling.pick(sentences, self.seed, row[S.ID], "sentence")
            ready.append(row)
        return ready

    def _budget(self, row: Row) -> int:
        """Tokens for the translation and its near misses, each about the sentence's length."""
        words = approx_words(row[S.QUERY], row[S.LANGUAGE])
        each = words_budget(words, row[S.TARGET_LANGUAGE], self.config.reply_slack)
        return capped(
            JSON_OVERHEAD + (1 + self.config.bitext_negatives) * each, self.config.max_tokens_bitext
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())
