"""LLM engines: one interface (chats and an output model in, parsed outputs out)."""

from .base import ChatEngine, EngineStartError, Generation, Usage, parse_output

__all__ = ["ChatEngine", "EngineStartError", "Generation", "Usage", "parse_output"]
