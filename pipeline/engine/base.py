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

import contextlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Chat = list[dict[str, str]]

# What this thread lets go of while it waits for an engine's replies or the embedder's vectors: the
# turn of a streamed task's slices (``executors/flow.py``), so the other slices' steps run meanwhile.
# Unset: nothing.
_WAITING: ContextVar[Callable[[], AbstractContextManager] | None] = ContextVar("engine_wait", default=None)


@contextlib.contextmanager
def letting_go(release: Callable[[], AbstractContextManager]):
    """Meanwhile, this thread's waits for replies run inside ``release()`` (see ``waiting``)."""
    token = _WAITING.set(release)
    try:
        yield
    finally:
        _WAITING.reset(token)


def waiting() -> AbstractContextManager:
    """Wrap a wait for replies or vectors: what this thread holds is let go of meanwhile (``letting_go``)."""
    release = _WAITING.get()
    return release() if release is not None else contextlib.nullcontext()


@dataclass
class _Spent:
    seconds: float = 0.0


class EngineClock:
    """Wall time spent waiting for engines, shared out among the calls waiting at once.

    Streamed slices wait for the engine side by side: summing each call's own wall time would
    count one engine second once per slice waiting in it. Instead every stretch of time is split
    evenly among the calls in flight during it, so the calls' seconds add up to the wall time in
    which any call was waiting: engine hours in the stats and the budget are hours of a busy
    engine, however many slices shared them. One call at a time (the staged flow), a call's
    share is its wall time.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._shares: dict[int, _Spent] = {}
        self._last = 0.0

    def _advance(self, now: float) -> None:
        if self._shares:
            each = (now - self._last) / len(self._shares)
            for spent in self._shares.values():
                spent.seconds += each
        self._last = now

    @contextlib.contextmanager
    def share(self) -> Iterator[_Spent]:
        """Meanwhile this call waits; ``.seconds`` is its share once the block ends."""
        spent = _Spent()
        with self._lock:
            self._advance(time.perf_counter())
            self._shares[id(spent)] = spent
        try:
            yield spent
        finally:
            with self._lock:
                self._advance(time.perf_counter())
                self._shares.pop(id(spent), None)


ENGINE_CLOCK = EngineClock()  # one per process: its engines serve every task and slice in it


REQUEST_FAILED = "request_failed"  # finish_reason of a generation whose request never got an answer
PROMPT_TOO_LONG = "prompt_too_long"  # ... whose prompt the server refused as longer than its context


@dataclass
class Generation:
    raw: str  # the model's text, verbatim
    parsed: BaseModel | None  # None when the text is not valid JSON for the schema
    error: str | None = None  # why parsing failed
    finish_reason: str | None = None
    # what the request cost, as the engine counted it (0 where an engine cannot tell)
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the engine's prefix cache
    output_tokens: int = 0
    from_cache: bool = False  # served by the reply cache: the counts are what it cost when computed


@dataclass
class Usage:
    """Tokens and engine time of a number of requests: what a stage costs."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0  # wall time spent waiting for the engine
    # replies the reply cache served: the engine's counts above leave them out
    cache_hits: int = 0
    cache_prompt_tokens: int = 0
    cache_output_tokens: int = 0

    FIELDS = (
        "requests",
        "prompt_tokens",
        "cached_tokens",
        "output_tokens",
        "seconds",
        "cache_hits",
        "cache_prompt_tokens",
        "cache_output_tokens",
    )

    def add(self, generations: list[Generation], seconds: float = 0.0) -> None:
        computed = [g for g in generations if not g.from_cache]
        served = [g for g in generations if g.from_cache]
        self.requests += len(computed)
        self.prompt_tokens += sum(g.prompt_tokens for g in computed)
        self.cached_tokens += sum(g.cached_tokens for g in computed)
        self.output_tokens += sum(g.output_tokens for g in computed)
        self.cache_hits += len(served)
        self.cache_prompt_tokens += sum(g.prompt_tokens for g in served)
        self.cache_output_tokens += sum(g.output_tokens for g in served)
        self.seconds += seconds

    def merge(self, other: Usage) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def tokens(self) -> int:
        """Tokens the engine processed (prompt + output)."""
        return self.prompt_tokens + self.output_tokens

    @property
    def computed_tokens(self) -> int:
        """Tokens the engine computed: prompt tokens not served from its prefix cache, plus output."""
        return self.prompt_tokens - self.cached_tokens + self.output_tokens

    @property
    def cache_tokens(self) -> int:
        """Tokens the reply cache saved (what its replies cost when they were computed)."""
        return self.cache_prompt_tokens + self.cache_output_tokens

    def to_json(self) -> dict[str, float]:
        out: dict[str, float] = {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "engine_seconds": round(self.seconds, 3),
        }
        if self.prompt_tokens:
            out["cached_share"] = round(self.cached_tokens / self.prompt_tokens, 4)
        if self.seconds > 0:
            out["prompt_tokens_per_s"] = round(self.prompt_tokens / self.seconds, 1)
            out["output_tokens_per_s"] = round(self.output_tokens / self.seconds, 1)
        if self.cache_hits:
            out["reply_cache_hits"] = self.cache_hits
            out["reply_cache_prompt_tokens"] = self.cache_prompt_tokens
            out["reply_cache_output_tokens"] = self.cache_output_tokens
        return out

    @classmethod
    def from_json(cls, data: dict) -> Usage:
        return cls(
            requests=int(data.get("requests", 0)),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            cached_tokens=int(data.get("cached_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            seconds=float(data.get("engine_seconds", 0.0)),
            cache_hits=int(data.get("reply_cache_hits", 0)),
            cache_prompt_tokens=int(data.get("reply_cache_prompt_tokens", 0)),
            cache_output_tokens=int(data.get("reply_cache_output_tokens", 0)),
        )


def json_schema(output: type[BaseModel]) -> dict[str, Any]:
    return output.model_json_schema()


def budgets(max_tokens: int | list[int], count: int) -> list[int]:
    """One token budget per chat."""
    if isinstance(max_tokens, int):
        return [max_tokens] * count
    if len(max_tokens) != count:
        raise ValueError(f"{len(max_tokens)} token budgets for {count} chats")
    return list(max_tokens)


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


class EngineStartError(RuntimeError):
    """The engine could not start; the message says why (memory, not a model) and what to try."""


def explain_start_failure(model: str, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    first = text.strip().splitlines()[0][:300]
    if "out of memory" in lowered or "memory" in lowered and ("cache" in lowered or "available" in lowered):
        return (
            f"not enough memory to start {model} ({first}). Try a smaller --model, a shorter "
            "models.max_model_len, or on a GPU a higher models.gpu_memory_utilization; on a CPU, "
            "models.cpu_kv_cache_gib sets the KV-cache size"
        )
    if "config.json" in lowered or "not a valid model" in lowered or "unrecognized model" in lowered:
        return f"{model} is not a model vLLM can load ({first}): give a Hub id or a transformers model folder"
    return f"vLLM could not start {model} ({first}); the engine's own log is in OUT/logs/ (or rerun with -v)"


class ChatEngine(ABC):
    """A batch of chats plus an output model in, one parsed ``Generation`` per chat out."""

    model_name: str  # recorded in every row the engine's answers produce

    @abstractmethod
    def generate(
        self,
        chats: list[Chat],
        output: type[BaseModel],
        max_tokens: int | list[int],
        temperature: float | None = None,
        desc: str | None = None,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        """Answer every chat with JSON matching ``output``; order is preserved.

        ``max_tokens`` is one budget for every chat or one per chat (a short query
        needs a short budget: a reply that loops then ends early). ``seeds`` gives
        each chat its own sampling seed (``step.request_seed``: from the run seed, the
        row and the stage), so a reply depends on its request alone, never on what
        else is in the batch: a redone chunk, a resumed run or another executor gets
        the same replies from the same engine. Each ``Generation`` carries its
        prompt, cached and output token counts.
        """

    def close(self) -> None:  # noqa: B027 - engines without resources need no cleanup
        """Release the model's memory and worker processes."""
