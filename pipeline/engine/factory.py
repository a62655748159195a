"""Building engines, one per model and process.

Engines are cached by model path: a run that needs the same model twice (the
generator and the judge) starts it once, and a test session can start one
engine and drive several CLI runs through it.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ModelConfig
from ..models import ResolvedModel
from .base import ChatEngine

_ENGINES: dict[str, ChatEngine] = {}


def get_engine(
    model: ResolvedModel, config: ModelConfig, seed: int = 0, batch_folder: Path | None = None
) -> ChatEngine:
    """``batch_folder``: the run's batch folder, for ``engine: batch`` (one engine per run, not kept)."""
    if config.engine == "batch":
        from .batch_engine import BatchEngine, BatchFiles

        if batch_folder is None:
            raise ValueError("the batch engine writes into a run's folder: none was given")
        return BatchEngine(
            BatchFiles(batch_folder), model.path or model.name, config.temperature, config.top_p
        )
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
