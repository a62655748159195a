"""Pydantic models of what each LLM call must answer.

They double as the JSON schema for constrained decoding, so every string has a
length bound (a weak model otherwise fills its budget with filler) and every
choice is an enum. ``extra="forbid"`` becomes ``additionalProperties: false``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

QUERY_MAX_CHARS = 240  # 30 English words fit; longer is a passage, not a query


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


def configure_output(top_k: int, question_types: list[str], difficulties: list[str]) -> type[BaseModel]:
    """Answer of the configuration call: which candidate, which question type, which difficulty."""
    return create_model(
        "ConfigureOutput",
        __base__=_Output,
        character=(Literal[tuple(range(1, top_k + 1))], Field(description="Number of the chosen candidate.")),
        question_type=(Literal[tuple(question_types)], Field(description="Kind of query to write.")),
        difficulty=(Literal[tuple(difficulties)], Field(description="Expertise the query assumes.")),
    )


class QueryOutput(_Output):
    """Answer of the query call."""

    query: str = Field(min_length=2, max_length=QUERY_MAX_CHARS, description="The search query.")


def persona_query_output(top_k: int) -> type[BaseModel]:
    """Answer of the one-call mode: which candidate asks, then their query."""
    return create_model(
        "PersonaQueryOutput",
        __base__=_Output,
        character=(Literal[tuple(range(1, top_k + 1))], Field(description="Number of the chosen candidate.")),
        query=(str, Field(min_length=2, max_length=QUERY_MAX_CHARS, description="The search query.")),
    )


NEGATIVE_MAX_CHARS = 600
REASON_MAX_CHARS = 200


def negatives_output(count: int) -> type[BaseModel]:
    """Answer of the hard-negatives call: exactly ``count`` passages."""
    return create_model(
        "NegativesOutput",
        __base__=_Output,
        negatives=(
            list[Annotated[str, StringConstraints(min_length=20, max_length=NEGATIVE_MAX_CHARS)]],
            Field(min_length=count, max_length=count, description="Passages that do not answer the query."),
        ),
    )


class JudgeOutput(_Output):
    """Answer of the judge: a short reason first (it steadies the grade), then the 0-3 grade."""

    reason: str = Field(min_length=1, max_length=REASON_MAX_CHARS, description="One sentence of why.")
    score: Literal[0, 1, 2, 3] = Field(
        description="3 answers fully, 2 mostly, 1 same topic only, 0 unrelated."
    )


def configure_persona_output(top_k: int) -> type[BaseModel]:
    """Answer of the configuration call when question type and difficulty were sampled: the persona only."""
    return create_model(
        "ConfigureOutput",
        __base__=_Output,
        character=(Literal[tuple(range(1, top_k + 1))], Field(description="Number of the chosen candidate.")),
    )


SENTENCE_MAX_CHARS = 400  # one sentence, in any script


def _translation_output(name: str, text: Any, what: str, misses: str, count: int) -> type[BaseModel]:
    """A translation and ``count`` near misses, each of type ``text`` (bitext and code translation)."""
    return create_model(
        name,
        __base__=_Output,
        translation=(text, Field(description=what)),
        near_misses=(list[text], Field(min_length=count, max_length=count, description=misses)),
    )


def bitext_output(count: int) -> type[BaseModel]:
    """Answer of the bitext call: the faithful translation and ``count`` near misses."""
    sentence = Annotated[str, StringConstraints(min_length=2, max_length=SENTENCE_MAX_CHARS)]
    return _translation_output(
        "BitextOutput",
        sentence,
        "Faithful translation of the sentence.",
        "Translations with one deliberate error each (number, name, negation).",
        count,
    )


def classification_output(labels: list[str]) -> type[BaseModel]:
    """Answer of the classification call: a text, its label, and the most tempting wrong label."""
    return create_model(
        "ClassificationOutput",
        __base__=_Output,
        text=(
            str,
            Field(min_length=2, max_length=QUERY_MAX_CHARS * 2, description="The text to classify."),
        ),
        label=(Literal[tuple(labels)], Field(description="The label that fits the text.")),
        wrong_label=(
            Literal[tuple(labels)],
            Field(description="A different label that a careless reader might pick."),
        ),
    )


class STSOutput(_Output):
    """Answer of the STS call: two sentences and how similar they are in meaning (1-5)."""

    sentence1: str = Field(min_length=2, max_length=SENTENCE_MAX_CHARS, description="First sentence.")
    sentence2: str = Field(min_length=2, max_length=SENTENCE_MAX_CHARS, description="Second sentence.")
    score: Literal[1, 2, 3, 4, 5] = Field(description="5 same meaning ... 1 unrelated or contradictory.")


class LabelItem(_Output):
    name: str = Field(min_length=2, max_length=40, description="Short label name, lower case.")
    description: str = Field(min_length=5, max_length=200, description="One sentence saying what belongs.")


def label_set_output(count: int) -> type[BaseModel]:
    """Answer of the label-proposal call: ``count`` labels for the corpus's domain."""
    return create_model(
        "LabelSetOutput",
        __base__=_Output,
        labels=(list[LabelItem], Field(min_length=count, max_length=count, description="The labels.")),
    )


CODE_MAX_CHARS = 4000  # a translated unit: max_code_tokens of code is about this many characters


def code_translation_output(count: int) -> type[BaseModel]:
    """Answer of the code translation call: the translation and ``count`` near-miss translations."""
    code = Annotated[str, StringConstraints(min_length=8, max_length=CODE_MAX_CHARS)]
    return _translation_output(
        "CodeTranslationOutput",
        code,
        "The same logic in the target language.",
        "Translations with one subtle bug each (an off-by-one, a wrong edge case).",
        count,
    )


def code_negatives_output(count: int) -> type[BaseModel]:
    """Answer of the code hard-negatives call: ``count`` snippets that do something else."""
    return create_model(
        "CodeNegativesOutput",
        __base__=_Output,
        negatives=(
            list[Annotated[str, StringConstraints(min_length=8, max_length=CODE_MAX_CHARS)]],
            Field(min_length=count, max_length=count, description="Code that does not answer the query."),
        ),
    )


TOPIC_MAX_CHARS = 200
DOCUMENT_MAX_CHARS = 2000


def domain_topics_output(count: int) -> type[BaseModel]:
    """Answer of the brainstorm call: ``count`` topics of one domain.

    The schema keeps the words the model is asked in (``DomainTasksOutput``, ``tasks``: "search
    tasks", E5-mistral's phrase), so cached brainstorm replies stay valid."""
    task = Annotated[str, StringConstraints(min_length=10, max_length=TOPIC_MAX_CHARS)]
    return create_model(
        "DomainTasksOutput",
        __base__=_Output,
        tasks=(list[task], Field(min_length=count, max_length=count, description="One search task each.")),
    )


def domain_example_output(count: int) -> type[BaseModel]:
    """Answer of a domain row's call: the query, the document answering it, ``count`` look-alikes."""
    document = Annotated[str, StringConstraints(min_length=40, max_length=DOCUMENT_MAX_CHARS)]
    return create_model(
        "DomainExampleOutput",
        __base__=_Output,
        query=(str, Field(min_length=2, max_length=QUERY_MAX_CHARS, description="The search query.")),
        positive=(document, Field(description="A document that answers the query.")),
        negatives=(
            list[document],
            Field(
                min_length=count,
                max_length=count,
                description="Documents on the same subject that do not answer the query.",
            ),
        ),
    )
