"""The vLLM engine: the only module of the project that imports vllm.

Offline batching through ``LLM.chat``: the whole batch goes in one call and the
engine schedules it. Answers are constrained by a JSON schema built from the
step's pydantic output model (structured outputs, no free whitespace), and
Qwen3's thinking mode is switched off through the chat template.
"""

from __future__ import annotations

import logging
import os
import time

from pydantic import BaseModel

from ..config import ModelConfig
from ..models import cache_root, has_cuda
from .base import Chat, ChatEngine, Generation, json_schema, parse_output

log = logging.getLogger(__name__)


def configure_cpu_environment(config: ModelConfig) -> None:
    """vLLM reads these at import time; values set by the user win."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kv_cache_gib))
    # By default one core is held back for the scheduler; on a 2-core machine giving
    # both to the model nearly doubled throughput.
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root() / "vllm"))


class VLLMEngine(ChatEngine):
    def __init__(self, model_path: str, model_name: str, config: ModelConfig, seed: int = 0):
        self.model_name = model_name
        self.config = config
        on_gpu = has_cuda()
        if not on_gpu:
            configure_cpu_environment(config)
        started = time.perf_counter()
        from vllm import LLM  # deferred: importing vllm alone takes ~20 s on CPU

        kwargs = dict(
            model=model_path,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            seed=seed,
            enforce_eager=(not on_gpu) if config.enforce_eager is None else config.enforce_eager,
            # Set at engine level: the per-request whitespace flag was measured to have no effect.
            structured_outputs_config={
                "backend": config.structured_backend,
                "disable_any_whitespace": True,
            },
        )
        if on_gpu:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        self.llm = LLM(**kwargs)
        self.start_seconds = time.perf_counter() - started
        log.info("vLLM engine for %s ready in %.1f s", model_name, self.start_seconds)

    def generate(
        self,
        chats: list[Chat],
        output: type[BaseModel],
        max_tokens: int,
        temperature: float | None = None,
        desc: str | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if not chats:
            return []
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=self.config.temperature if temperature is None else temperature,
            top_p=self.config.top_p,
            structured_outputs=StructuredOutputsParams(json=json_schema(output), disable_any_whitespace=True),
        )
        results = self.llm.chat(
            chats,
            params,
            use_tqdm=True,
            chat_template_kwargs={"enable_thinking": False},
        )
        generations = []
        for result in results:
            completion = result.outputs[0]
            generations.append(parse_output(completion.text, output, completion.finish_reason))
        return generations

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(
                getattr(engine, "engine_core", None), "shutdown", None
            )
            if callable(shutdown):
                shutdown()
            self.llm = None
