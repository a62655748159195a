"""Shared shape of a step that asks the LLM one templated question per row."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from .. import schema as S
from ..engine import ChatEngine, Generation
from ..engine.base import ENGINE_CLOCK, PROMPT_TOO_LONG, REQUEST_FAILED
from ..instructions import instruction
from ..step import Dropped, Row, Step, StepResult, charge, request_seed
from .prompts import PromptLibrary

TASK_MARKER = "### Your task"  # every template puts its worked examples before this line
EXAMPLE_MARKER = "### Example"  # ... and after this one
CUT_AT_LIMIT = "cut_at_token_limit"  # drop reason of a reply that ran out of its token budget


# share of the answer's tokens inside runs found in the worked examples that makes it a copy: half
# an answer taken from an example is a copy with some words around it
COPY_OVERLAP = 0.5


def copies_example(answer: str, prompt: str) -> bool:
    """Whether ``answer`` is taken from the prompt's worked examples (small models copy them).

    Verbatim containment catches short answers; for longer ones, most of their n-grams
    (word 4-grams, CJK character 6-grams) appearing in the examples does: a copied example
    with one word changed is still a copy.
    """
    from ..text import passage_overlap

    examples = prompt.split(TASK_MARKER)[0]
    needle = " ".join(answer.lower().split())
    if len(needle) >= 4 and needle in " ".join(examples.lower().split()):
        return True
    return passage_overlap(answer, examples) >= COPY_OVERLAP


_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}")
PARAPHRASE_SHARE = 0.5  # measured: a paraphrased example 0.63, texts on other subjects 0.15-0.18


def example_word_share(answer: str, prompt: str, min_words: int = 3) -> float:
    """Share of the answer's distinct content words (4+ letters) found in the prompt's worked examples.

    Catches what ``copies_example`` misses: the worked example retold in other words (a small
    model asked for a legal document writes the agriculture example again with "fertilizer" for
    "nitrogen"). Only for texts written from scratch, whose subject differs from the example's;
    0 for answers of fewer than ``min_words`` content words.
    """
    words = {w.lower() for w in _CONTENT_WORD.findall(answer)}
    if len(words) < min_words:
        return 0.0
    examples = prompt.split(TASK_MARKER)[0].split(EXAMPLE_MARKER, 1)[-1]  # the examples, not the rules
    head = {w.lower() for w in _CONTENT_WORD.findall(examples)}
    return len(words & head) / len(words)


def unusable_translation(
    row: Row, translation: str, prompt: str, same: Callable[[str], str]
) -> Dropped | None:
    """Why a translation cannot be kept (it equals its source, or it is the worked example), or None.

    ``same`` maps a text to what makes two texts the same (spacing and case for prose, spacing
    for code)."""
    if same(translation) == same(row[S.QUERY]):
        return Dropped(row, "untranslated", detail="translation equals the source", raw_output=translation)
    if copies_example(translation, prompt):
        return Dropped(row, "copied_example", detail="translation taken from a worked example")
    return None


def keep_translation(
    row: Row,
    answer: BaseModel,
    prompt: str,
    result: StepResult,
    same: Callable[[str], str],
    clean: Callable[[str], str],
    language_ok: Callable[[str, Row], bool] | None = None,
) -> bool:
    """Put a translation answer on its row (bitext, code translation): the translation as the
    positive, its near misses as LLM negatives. False, with the row dropped in ``result``, when the
    translation is unusable; a near miss that equals either side, copies a worked example or is not
    in the target language (``language_ok``) is left out and counted."""
    translation = clean(answer.translation)
    unusable = unusable_translation(row, translation, prompt, same)
    if unusable:
        result.dropped.append(unusable)
        return False
    negatives: list[str] = []
    for text in (clean(t) for t in answer.near_misses):
        if same(text) in (same(translation), same(row[S.QUERY])):
            result.events["near_misses_removed_identical"] += 1
        elif copies_example(text, prompt):
            result.events["near_misses_removed_copied_example"] += 1
        elif language_ok is not None and not language_ok(text, row):
            result.events["near_misses_removed_wrong_language"] += 1
        elif text not in negatives:
            negatives.append(text)
    row[S.POSITIVE] = translation
    row[S.NEGATIVES] = negatives
    row[S.NEGATIVE_SOURCES] = ["llm"] * len(negatives)
    return True


def ask(
    engine: ChatEngine,
    prompts: PromptLibrary,
    template: str,
    rows: list[Row],
    variables: list[dict],
    output: type[BaseModel],
    max_tokens: int | list[int],
    invalid_reason: str = "invalid_json",
    language_column: str = S.LANGUAGE,
    seed: int = 0,
) -> tuple[list[tuple[Row, BaseModel, str]], StepResult]:
    """Render ``template`` per row, run the batch, split rows into parsed answers and drops.

    The template is the one for the language in ``language_column`` (the language
    the model must write: ``<name>.<lang>.j2`` when it exists). Returns (row, parsed
    answer, prompt text) triples for the caller to apply, and a result that already
    holds every row whose answer did not parse, with its raw text. Each request is
    sampled with its own seed (``request_seed`` of ``seed``, the row id and the template).
    """
    chats = []
    for row, values in zip(rows, variables, strict=True):
        language = row.get(language_column)
        chats.append([{"role": "user", "content": prompts.render(template, values, language)}])
        row.setdefault(S.WORK_PROMPTS, {})[template] = prompts.prompt(template, language).hash
    seeds = [request_seed(seed, str(row.get(S.ID)), template) for row in rows]
    with ENGINE_CLOCK.share() as spent:  # streamed slices wait side by side: each gets its share
        generations: list[Generation] = engine.generate(chats, output, max_tokens, desc=template, seeds=seeds)
    answered, result = [], StepResult()
    result.usage.add(generations, spent.seconds)
    for row, chat, generation in zip(rows, chats, generations, strict=True):
        charge(row, [generation])
        if generation.parsed is None:
            if generation.finish_reason in (REQUEST_FAILED, PROMPT_TOO_LONG):
                reason = generation.finish_reason  # no answer, or a prompt over the server's context
            elif generation.finish_reason == "length":
                reason = CUT_AT_LIMIT  # a reply that ran past its budget: looping or far too long
            else:
                reason = invalid_reason
            result.dropped.append(Dropped(row, reason, detail=generation.error, raw_output=generation.raw))
        else:
            answered.append((row, generation.parsed, chat[-1]["content"]))
    return answered, result


@dataclass(frozen=True)
class LLM:
    """What every LLM step asks through: the engine, the run's templates, the run seed."""

    engine: ChatEngine
    prompts: PromptLibrary
    seed: int = 0


class LLMStep(Step):
    """A step that asks the LLM one templated question per row.

    Holds what every such step needs (the ``LLM`` it asks and its config section) and
    the two things they all do: ask, and finish a row the model answered well (its
    task instruction and the generator's name).
    """

    def __init__(self, llm: LLM, config):
        self.engine = llm.engine
        self.prompts = llm.prompts
        self.seed = llm.seed
        self.config = config

    def ask(
        self,
        template: str,
        rows: list[Row],
        variables: list[dict],
        output: type[BaseModel],
        max_tokens: int | list[int],
        language_column: str = S.LANGUAGE,
    ) -> tuple[list[tuple[Row, BaseModel, str]], StepResult]:
        return ask(
            self.engine,
            self.prompts,
            template,
            rows,
            variables,
            output,
            max_tokens,
            language_column=language_column,
            seed=self.seed,
        )

    def accept(self, row: Row, result: StepResult) -> None:
        """Keep a row whose model answer is now in place."""
        row[S.INSTRUCTION] = instruction(row)
        row[S.MODEL] = self.engine.model_name
        result.kept.append(row)
