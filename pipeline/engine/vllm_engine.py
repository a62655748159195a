"""The vLLM engine: the only module of the project that imports vllm.

One engine in this process, fed from many threads: each ``generate`` call renders its chats and
adds them to the engine's queue (``LLM.enqueue_chat``), then waits for its own replies while
whichever waiting thread holds the wheel steps the engine (``_collect``). One engine step
advances every request in flight, whoever added it, so the slices of a streamed task
(``executors/flow.py``) share the engine's batch the way clients share a server's: a request
added while others decode joins the next step, and a reply is handed back the step it
finishes, not when the last reply of its batch does.

Why not vLLM's ``AsyncLLM``: it always runs the engine core in a process of its own, and that
process imports torch and vLLM again (a start of ~38 s instead of ~6 s on a 2-core CPU,
``configure_cpu_environment``); stepping the in-process engine gives the same continuous
batching without it.

Answers are constrained by a JSON schema built from the step's pydantic output model
(structured outputs, no free whitespace), and Qwen3's thinking mode is switched off through
the chat template.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..models import cache_root, has_cuda
from .base import (
    Chat,
    ChatEngine,
    EngineStartError,
    Generation,
    budgets,
    explain_start_failure,
    json_schema,
    parse_output,
)

log = logging.getLogger(__name__)

# The prefix cache reuses whole KV blocks only. vLLM's CPU default of 128 tokens left up to 127
# tokens of each shared template head uncached; 32 (the smallest size the CPU kernels prefer)
# raised the share served from cache from 67% to 78% on the query call, and the call took
# 44 s instead of 54 s (43 sample passages, SmolLM2; docs/benchmarks.md).
CPU_BLOCK_SIZE = 32
CPU_BATCHED_TOKENS = 8192  # tokens one CPU engine step may take: a few whole prompts


def cpu_flags() -> set[str]:
    """Feature flags of this CPU as the kernel lists them (empty where /proc is not Linux's)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, then Arm
            flags.update(value.split())
    return flags


def cpu_dtype(flags: set[str] | None = None) -> tuple[str, str]:
    """The weight dtype for vLLM on this CPU, and why.

    bfloat16 only where the CPU computes it natively (AVX512-BF16 or AMX on x86, the
    BF16 extension on Arm). Without it vLLM falls back to plain torch matmuls in
    bfloat16, measured 4x slower than float32 on an AVX2-only EPYC.
    """
    flags = cpu_flags() if flags is None else flags
    native = {"avx512_bf16", "amx_bf16", "bf16"} & flags
    if native:
        return "bfloat16", f"CPU computes bfloat16 natively ({', '.join(sorted(native))})"
    return "float32", "CPU has no native bfloat16 (no avx512_bf16, amx_bf16 or bf16 flag)"


def configure_cpu_environment(config: ModelConfig) -> None:
    """vLLM reads these at import time; values set by the user win."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kv_cache_gib))
    # By default one core is held back for the scheduler; on a 2-core machine giving
    # both to the model nearly doubled throughput.
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root() / "vllm"))
    # The engine core in this process instead of a spawned one: each spawned process imports
    # torch and vLLM again, and the start went from ~38 s to ~6 s (2-core AVX2 machine, SmolLM2);
    # the calls took the same time within 10% (docs/benchmarks.md).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def batch_invariant(wanted: bool | None, on_gpu: bool) -> bool:
    """Whether to run vLLM batch-invariant: as set, else where vLLM supports it (CUDA 8.0 and up)."""
    if wanted is not None:
        return wanted
    if not on_gpu:
        return False
    import torch

    return torch.cuda.get_device_capability() >= (8, 0)


def engine_arguments(model_path: str, dtype: str, config: ModelConfig, seed: int, on_gpu: bool) -> dict:
    """The arguments of vLLM's ``LLM`` for this machine (CPU or GPU) and the model settings."""
    kwargs = dict(
        model=model_path,
        dtype=dtype,
        # on by default in current vLLM; said here because the templates are built for it
        enable_prefix_caching=True,
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
    else:
        # vLLM 0.32's CPU runner fails ("CPU Generator does not use offset") when it discards the
        # token sampled for a seeded request whose prompt it is prefilling in pieces; every request
        # has a seed, so prompts are prefilled whole (a long code unit's prompt made it show)
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(config.max_model_len, CPU_BATCHED_TOKENS)
    if config.tensor_parallel_size > 1:
        kwargs["tensor_parallel_size"] = config.tensor_parallel_size
        # worker processes on the GPUs this process was given, also inside a Ray actor
        # (vLLM's Ray backend would ask the cluster for GPUs the actor already holds)
        kwargs["distributed_executor_backend"] = "mp"
    block_size = config.block_size or (None if on_gpu else CPU_BLOCK_SIZE)
    if block_size:
        kwargs["block_size"] = block_size
    return kwargs


class VLLMEngine(ChatEngine):
    def __init__(self, model_path: str, model_name: str, config: ModelConfig, seed: int = 0):
        self.model_name = model_name
        self.config = config
        self._queue = threading.Lock()  # adding requests and stepping the engine never overlap
        self._replies = threading.Condition()  # guards what follows
        self._finished: dict[str, object] = {}  # request id -> its final output, until collected
        self._wheel = False  # a thread is stepping the engine now
        self._failure: BaseException | None = None  # a step failed: every waiter raises it
        on_gpu = has_cuda()
        if not on_gpu:
            configure_cpu_environment(config)
        started = time.perf_counter()
        self.batch_invariant = batch_invariant(config.batch_invariant, on_gpu)
        if self.batch_invariant:  # read by vLLM when it builds its kernels
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        from vllm import LLM  # deferred: importing vllm alone takes ~20 s on CPU

        self.dtype, why = config.dtype, "set in the config"
        if config.dtype == "auto" and not on_gpu:
            self.dtype, why = cpu_dtype()
        log.info("generator dtype: %s (%s)", self.dtype, why)
        kwargs = engine_arguments(model_path, self.dtype, config, seed, on_gpu)
        try:
            self.llm = LLM(**kwargs)
        except Exception as exc:  # said in one line with what to try; the engine's log holds the rest
            log.debug("engine start failed", exc_info=True)
            raise EngineStartError(explain_start_failure(model_name, exc)) from exc
        cache = self.llm.llm_engine.vllm_config.cache_config
        self.settings = {
            "dtype": self.dtype,
            "dtype_reason": why,
            "enforce_eager": kwargs["enforce_eager"],
            "prefix_caching": bool(cache.enable_prefix_caching),
            "block_size": cache.block_size,
            "structured_backend": config.structured_backend,
            "tensor_parallel_size": config.tensor_parallel_size,
            "batch_invariant": self.batch_invariant,
        }
        self.start_seconds = time.perf_counter() - started
        log.info("vLLM engine for %s ready in %.1f s", model_name, self.start_seconds)

    def generate(
        self,
        chats: list[Chat],
        output: type[BaseModel],
        max_tokens: int | list[int],
        temperature: float | None = None,
        desc: str | None = None,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if not chats:
            return []
        schema = json_schema(output)  # one schema object per call: the backend compiles it once
        temperature = self.config.temperature if temperature is None else temperature
        structured = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
        limits = budgets(max_tokens, len(chats))
        params = [
            SamplingParams(
                max_tokens=limit,
                temperature=temperature,
                top_p=self.config.top_p,
                seed=seed,  # per request: the reply does not depend on the rest of the batch
                structured_outputs=structured,
            )
            for limit, seed in zip(limits, seeds or [None] * len(chats), strict=True)
        ]
        with self._queue:
            ids = self.llm.enqueue_chat(
                chats, params, use_tqdm=False, chat_template_kwargs={"enable_thinking": False}
            )
        results = self._collect([_external(i) for i in ids], desc)
        generations = []
        for result in results:
            completion = result.outputs[0]
            generation = parse_output(completion.text, output, completion.finish_reason)
            generation.prompt_tokens = len(result.prompt_token_ids or ())
            generation.cached_tokens = int(result.num_cached_tokens or 0)
            generation.output_tokens = len(completion.token_ids)
            generations.append(generation)
        return generations

    def _collect(self, ids: list[str], desc: str | None) -> list:
        """The final outputs of ``ids``, in order, stepping the engine while no other thread does.

        Any waiting thread may step: one step at a time, each step's finished outputs filed for
        their own waiters, who are woken. The thread whose replies are all back leaves the wheel
        to the next waiter, so the engine never stops while anyone waits."""
        wanted, results = set(ids), {}
        progress = tqdm(total=len(ids), desc=desc or "generate", disable=not self.config.engine_progress)
        try:
            while True:
                with self._replies:
                    for request in [i for i in wanted if i in self._finished]:
                        results[request] = self._finished.pop(request)
                        wanted.discard(request)
                        progress.update(1)
                    if self._failure is not None:
                        raise RuntimeError(f"the vLLM engine failed: {self._failure}") from self._failure
                    if not wanted:
                        return [results[i] for i in ids]
                    if self._wheel:
                        self._replies.wait()
                        continue
                    self._wheel = True
                outputs = []
                try:
                    with self._queue:
                        outputs = self.llm.llm_engine.step()
                except BaseException as exc:
                    with self._replies:
                        self._failure = exc
                    raise
                finally:
                    with self._replies:
                        self._wheel = False
                        if self._failure is None:
                            for output in outputs:
                                if output.finished:
                                    self._finished[_external(output.request_id)] = output
                        self._replies.notify_all()
        finally:
            progress.close()

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


def _external(request_id: str) -> str:
    """The id a request was added under: vLLM may append ``-<random>`` to it inside the engine."""
    return request_id.split("-", 1)[0]
