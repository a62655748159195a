"""Shared shape of a step that asks the LLM one templated question per row."""

from __future__ import annotations

from pydantic import BaseModel

from .. import schema as S
from ..engine import ChatEngine, Generation
from ..engine.base import REQUEST_FAILED
from ..prompts import PromptLibrary
from .base import Dropped, Row, StepResult

TASK_MARKER = "### Your task"  # every template puts its worked examples before this line


COPY_OVERLAP = 0.6  # share of the answer's n-grams found in the examples that makes it a copy


def copies_example(answer: str, prompt: str) -> bool:
    """Whether ``answer`` is taken from the prompt's worked examples (small models copy them).

    Verbatim containment catches short answers; for longer ones, most of their n-grams
    (word 4-grams, CJK character 6-grams) appearing in the examples does: a copied example
    with one word changed is still a copy.
    """
    from .copycheck import passage_overlap

    examples = prompt.split(TASK_MARKER)[0]
    needle = " ".join(answer.lower().split())
    if len(needle) >= 4 and needle in " ".join(examples.lower().split()):
        return True
    return passage_overlap(answer, examples) >= COPY_OVERLAP


def ask(
    engine: ChatEngine,
    prompts: PromptLibrary,
    template: str,
    rows: list[Row],
    variables: list[dict],
    output: type[BaseModel],
    max_tokens: int,
    invalid_reason: str = "invalid_json",
    language_column: str = S.LANGUAGE,
) -> tuple[list[tuple[Row, BaseModel, str]], StepResult]:
    """Render ``template`` per row, run the batch, split rows into parsed answers and drops.

    The template is the one for the language in ``language_column`` (the language
    the model must write: ``<name>.<lang>.j2`` when it exists). Returns (row, parsed
    answer, prompt text) triples for the caller to apply, and a result that already
    holds every row whose answer did not parse, with its raw text.
    """
    chats = []
    for row, values in zip(rows, variables, strict=True):
        language = row.get(language_column)
        chats.append([{"role": "user", "content": prompts.render(template, values, language)}])
        row.setdefault(S.WORK_PROMPTS, {})[template] = prompts.prompt(template, language).hash
    generations: list[Generation] = engine.generate(chats, output, max_tokens, desc=template)
    answered, result = [], StepResult()
    for row, chat, generation in zip(rows, chats, generations, strict=True):
        if generation.parsed is None:
            reason = REQUEST_FAILED if generation.finish_reason == REQUEST_FAILED else invalid_reason
            result.dropped.append(Dropped(row, reason, detail=generation.error, raw_output=generation.raw))
        else:
            answered.append((row, generation.parsed, chat[-1]["content"]))
    return answered, result
