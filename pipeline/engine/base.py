"""The engine interface every LLM call goes through.

A step hands over a batch of chats and the pydantic model of the answer it
expects; the engine turns that model into a JSON schema for constrained
decoding, runs the whole batch, and returns one ``Generation`` per chat. Output
is parsed with ``json.loads`` (strict: no control characters in strings) and
validated with pydantic, never evaluated. Anything that fails stays visible as
``parsed=None`` with the error and the raw text, so the step can drop the row
with a reason instead of keeping a broken one.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Chat = list[dict[str, str]]
REQUEST_FAILED = "request_failed"  # finish_reason of a generation whose request never got an answer


@dataclass
class Generation:
    raw: str  # the model's text, verbatim
    parsed: BaseModel | None  # None when the text is not valid JSON for the schema
    error: str | None = None  # why parsing failed
    finish_reason: str | None = None


def json_schema(output: type[BaseModel]) -> dict[str, Any]:
    return output.model_json_schema()


def parse_output(raw: str, output: type[BaseModel], finish_reason: str | None = None) -> Generation:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        hint = " (reply cut at the token limit)" if finish_reason == "length" else ""
        return Generation(raw, None, f"not valid JSON: {exc.msg} at column {exc.colno}{hint}", finish_reason)
    try:
        return Generation(raw, output.model_validate(data), None, finish_reason)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        return Generation(raw, None, f"schema mismatch at {where}: {first['msg']}", finish_reason)


class ChatEngine(ABC):
    """A batch of chats plus an output model in, one parsed ``Generation`` per chat out."""

    model_name: str  # recorded in every row the engine's answers produce

    @abstractmethod
    def generate(
        self,
        chats: list[Chat],
        output: type[BaseModel],
        max_tokens: int,
        temperature: float | None = None,
        desc: str | None = None,
    ) -> list[Generation]:
        """Answer every chat with JSON matching ``output``; order is preserved."""

    def close(self) -> None:  # noqa: B027 - engines without resources need no cleanup
        """Release the model's memory and worker processes."""
