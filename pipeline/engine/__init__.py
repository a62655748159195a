"""LLM engines: one interface (chats and an output model in, parsed outputs out)."""

from .base import ChatEngine, Generation, parse_output

__all__ = ["ChatEngine", "Generation", "parse_output"]
