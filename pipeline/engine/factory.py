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
    if config.engine == "openai":
        key = f"openai:{config.base_url}:{model.path}"
        if key not in _ENGINES or _ENGINES[key].stopped:  # a server that failed for good: try afresh
            from .openai_engine import OpenAIEngine

            if not config.base_url:
                raise ValueError("the openai engine needs --base-url")
            _ENGINES[key] = OpenAIEngine(
                config.base_url,
                model.path or None,
                config.api_key_env,
                concurrency=config.concurrency,
                max_attempts=config.max_attempts,
                temperature=config.temperature,
                top_p=config.top_p,
            )
        return _ENGINES[key]
    if model.path not in _ENGINES:
        from .vllm_engine import VLLMEngine

        _ENGINES[model.path] = VLLMEngine(model.path, model.name, config, seed=seed)
    return _ENGINES[model.path]


def close_engines() -> None:
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        engine.close()
