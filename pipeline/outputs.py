"""Pydantic models of what each LLM call must answer.

They double as the JSON schema for constrained decoding, so every string has a
length bound (a weak model otherwise fills its budget with filler) and every
choice is an enum. ``extra="forbid"`` becomes ``additionalProperties: false``.
"""

from __future__ import annotations

from typing import Annotated, Literal

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
