"""Pydantic models of what each LLM call must answer.

They double as the JSON schema for constrained decoding, so every string has a
length bound (a weak model otherwise fills its budget with filler) and every
choice is an enum. ``extra="forbid"`` becomes ``additionalProperties: false``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

QUERY_MAX_CHARS = 400


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
