"""Building engines, one per model and process.

Engines are cached by model path: a run that needs the same model twice (the
generator and the judge) starts it once, and a test session can start one
engine and drive several CLI runs through it.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..models import ResolvedModel
from .base import ChatEngine

_ENGINES: dict[str, ChatEngine] = {}


def get_engine(model: ResolvedModel, config: ModelConfig, seed: int = 0) -> ChatEngine:
    if model.path not in _ENGINES:
        from .vllm_engine import VLLMEngine

        _ENGINES[model.path] = VLLMEngine(model.path, model.name, config, seed=seed)
    return _ENGINES[model.path]


def close_engines() -> None:
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        engine.close()
