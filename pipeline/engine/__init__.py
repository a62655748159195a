"""LLM engines: one interface (chats and an output model in, parsed outputs out)."""

from .base import ChatEngine, Generation, Usage, parse_output

__all__ = ["ChatEngine", "Generation", "Usage", "parse_output"]
