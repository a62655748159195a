"""Engine over HTTP: the same batch of chats sent to any OpenAI-compatible server.

Works with `vllm serve`, SGLang and hosted APIs that accept a JSON-schema ``response_format``.
Every call, from whichever thread (a streamed task's slices call at once), shares one pool of
requests in flight. How many: ``models.concurrency`` when set; else what the server says it runs
at once, where it says (SGLang's ``/get_server_info`` ``max_running_requests``); else 256
(vLLM's default ``max_num_seqs``; vLLM reports no limit). Twice the server's limit was measured
worse, not better: 66% of the simulated server's slot-time at 512 passages against 82%
(docs/benchmarks.md). The ``Gate`` keeps fewer in flight while the server answers 429, or while
its replies take much longer per token than they did at their quickest (requests queueing at the
server add nothing but waiting), and climbs back as the server keeps pace. 429, 5xx, timeouts
and dropped connections are retried with exponential backoff and jitter. The API key is read
from an environment variable and never logged.

What a fault does to the run:

- a request still failing after its retries (the server is gone, or overloaded for good),
  a refused key (401/403) or a model the server no longer has (404): ``EngineStopped`` ends
  the batch, so the chunk in flight is not committed and a rerun resumes from the last
  checkpoint;
- a prompt longer than the server's context (a 400 saying so): that row alone is dropped as
  ``prompt_too_long``;
- replies naming another model than the first reply of the run did (the server was restarted
  with another model): ``EngineStopped``, so rows of two models never mix in one run;
- any other 400: that row is dropped as ``request_failed`` with the server's words.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import httpx
from pydantic import BaseModel
from tenacity import (
    RetryError,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tqdm import tqdm

from .base import (
    PROMPT_TOO_LONG,
    REQUEST_FAILED,
    Chat,
    ChatEngine,
    Generation,
    budgets,
    json_schema,
    parse_output,
)

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# how servers word a prompt over their context (vLLM, SGLang, OpenAI, llama.cpp)
TOO_LONG = re.compile(r"context length|context window|maximum context|too long|exceeds the|n_ctx", re.I)


class EngineUnavailable(RuntimeError):
    """The server cannot be reached or refuses the model."""


class EngineStopped(EngineUnavailable):
    """The server failed for good in the middle of a run: the chunk in flight is not committed."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRY_STATUS
    return isinstance(exc, httpx.TransportError)  # timeouts, refused or dropped connections


DEFAULT_CONCURRENCY = 256  # vLLM's default max_num_seqs: what one server on one GPU batches
MOST_CONCURRENCY = 4096
SLOW_LATENCY = 3.0  # replies this many times slower per token than at their quickest: back off
LATENCY_FLOOR = 16  # latency alone never takes the limit below this (nor below what the server runs)
BEST_DRIFT = 1.0005  # per reply: a pace slower for good is the normal one after some thousand replies


@dataclass
class Pace:
    """Seconds per output token of one kind of reply (one output schema: one stage's requests)."""

    fast: float  # recent replies
    slow: float  # many replies
    best: float  # the lowest the slow average has been, drifting up toward it (a new normal)

    def add(self, pace: float) -> None:
        self.fast = 0.8 * self.fast + 0.2 * pace
        self.slow = 0.98 * self.slow + 0.02 * pace
        self.best = min(self.slow, self.best * BEST_DRIFT)


class Gate:
    """How many requests may be in flight: ``most`` at first, fewer while the server is overloaded.

    A 429 drops the limit to 70% (at most once a second: the requests already out answer 429
    together for one overload). Latency lowers it too, gently. For each kind of reply (its output
    schema: short and long replies differ in seconds per token) the gate follows seconds per
    output token in a fast and a slow moving average; when the fast one runs ``SLOW_LATENCY``
    times above the lowest the slow one has been (the server's pace when nothing queues; it
    drifts up slowly, so a server that is slower for good becomes the new normal), the limit
    drops to 90%, at most once a second and not below ``floor``: what the server says it runs at
    once (a queue beyond it is what latency trims), else ``LATENCY_FLOOR``. Every ``limit``
    answers in a row at a normal pace raise it by one, back up to ``most``.
    """

    def __init__(self, most: int, floor: int = LATENCY_FLOOR):
        self.most = most
        self.floor = min(floor, most)
        self.limit = most
        self.out = 0
        self._answered = 0
        self._lowered_at = 0.0
        self._paces: dict[str, Pace] = {}
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            while self.out >= self.limit:
                self._cond.wait()
            self.out += 1

    def __exit__(self, *exc) -> None:
        with self._cond:
            self.out -= 1
            self._cond.notify()

    def throttled(self) -> None:
        with self._cond:
            self._lower(0.7, 1, "server answered 429")

    def _lower(self, share: float, floor: int, why: str) -> None:
        now = time.monotonic()
        if now - self._lowered_at >= 1.0 and self.limit > floor:
            self.limit = max(floor, int(self.limit * share))
            self._lowered_at, self._answered = now, 0
            log.info("%s: %d requests in flight at most", why, self.limit)

    def answered(self, seconds: float = 0.0, tokens: int = 0, kind: str = "") -> None:
        """A reply of ``kind`` came back after ``seconds`` with ``tokens`` output tokens."""
        with self._cond:
            if self._slowing(seconds, tokens, kind):
                self._lower(0.9, self.floor, "replies slowing down")
                return
            self._answered += 1
            if self.limit < self.most and self._answered >= self.limit:
                self.limit, self._answered = self.limit + 1, 0
                self._cond.notify()

    def _slowing(self, seconds: float, tokens: int, kind: str) -> bool:
        if seconds <= 0 or tokens <= 0:
            return False
        pace = seconds / tokens
        known = self._paces.get(kind)
        if known is None:
            self._paces[kind] = Pace(pace, pace, pace)
            return False
        known.add(pace)
        return known.fast > SLOW_LATENCY * known.best


class OpenAIEngine(ChatEngine):
    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str | None = None,
        concurrency: int | None = None,
        timeout_s: float = 300.0,
        max_attempts: int = 6,
        max_wait_s: float = 30.0,
        temperature: float = 0.7,
        top_p: float = 0.9,
    ):
        self.base_url = base_url.rstrip("/")
        reported = _server_limit(self.base_url, api_key_env)
        if concurrency is None:
            concurrency = min(MOST_CONCURRENCY, reported) if reported else DEFAULT_CONCURRENCY
            said = f"the server runs {reported} at once" if reported else "the server reports no limit"
            log.info("requests in flight: %d (%s)", concurrency, said)
        self.client = _client(self.base_url, api_key_env, timeout_s, concurrency)
        self.concurrency = concurrency
        # one pool for every call, whichever thread makes it: a streamed task's slices share it
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="request")
        self.gate = Gate(concurrency, max(LATENCY_FLOOR, reported or 0))
        self.temperature = temperature
        self.top_p = top_p
        self._post = retry(
            retry=retry_if_exception(_retryable),
            wait=wait_random_exponential(multiplier=0.5, max=max_wait_s),
            stop=stop_after_attempt(max_attempts),
            before_sleep=lambda state: log.warning(
                "request failed (%s), retry %d", _said(state.outcome.exception()), state.attempt_number
            ),
        )(self._post_once)
        self.model_name = self._check_server(model)
        self._answering: str | None = None  # the model the first reply named
        self._stopped: EngineStopped | None = None  # once set, every request ends at once
        self._lock = threading.Lock()

    def _check_server(self, model: str | None) -> str:
        return str(_served(self.client, self.base_url, model).get("id") or model)

    def _post_once(self, body: dict) -> dict:
        with self.gate:  # a retry waits outside the gate: a backing-off request holds no place
            started = time.monotonic()
            response = self.client.post("/chat/completions", json=body)
            seconds = time.monotonic() - started
        if response.status_code == 429:
            self.gate.throttled()
        response.raise_for_status()
        reply = response.json()
        tokens = ((reply.get("usage") or {}).get("completion_tokens") or 0) if isinstance(reply, dict) else 0
        self.gate.answered(seconds, int(tokens), body["response_format"]["json_schema"]["name"])
        return reply

    def _one(
        self, chat: Chat, output: type[BaseModel], max_tokens: int, temperature: float, seed: int | None
    ) -> Generation:
        body = request_body(self.model_name, chat, output, max_tokens, temperature, self.top_p, seed)
        if self._stopped is not None:
            raise self._stopped
        try:
            reply = self._post(body)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            status = f"{last.response.status_code} " if isinstance(last, httpx.HTTPStatusError) else ""
            raise self._stop(
                f"the server at {self.base_url} stopped answering (after retries: {status}{_said(last)})"
            ) from None
        except httpx.HTTPStatusError as exc:
            status, said = exc.response.status_code, _said(exc)
            if status in (401, 403):
                raise self._stop(
                    f"the server at {self.base_url} refused the key ({status}: {said})"
                ) from None
            if status == 404:
                raise self._stop(
                    f"the server at {self.base_url} no longer serves {self.model_name!r} (404: {said})"
                ) from None
            if status == 400 and TOO_LONG.search(said):
                return Generation("", None, said, PROMPT_TOO_LONG)
            return Generation("", None, f"{status}: {said}", REQUEST_FAILED)
        except httpx.HTTPError as exc:
            return Generation("", None, _said(exc), REQUEST_FAILED)
        self._check_model(reply.get("model"))
        return reply_generation(reply, output)

    @property
    def stopped(self) -> bool:
        return self._stopped is not None

    def _stop(self, message: str) -> EngineStopped:
        with self._lock:
            if self._stopped is None:
                self._stopped = EngineStopped(message)
            return self._stopped

    def _check_model(self, named: str | None) -> None:
        """Every reply must name the model the first one named (a server may add a version suffix)."""
        if not named:
            return
        with self._lock:
            if self._answering is None:
                self._answering = named
                return
            first = self._answering
        if named != first:
            raise self._stop(
                f"the server at {self.base_url} now answers with model {named!r}, the run started with "
                f"{first!r}: stopped so that rows of two models never mix"
            )

    def generate(
        self,
        chats: list[Chat],
        output: type[BaseModel],
        max_tokens: int | list[int],
        temperature: float | None = None,
        desc: str | None = None,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        temp = self.temperature if temperature is None else temperature
        limits = budgets(max_tokens, len(chats))
        futures = [
            self._pool.submit(self._one, chat, output, limit, temp, seed)
            for chat, limit, seed in zip(chats, limits, seeds or [None] * len(chats), strict=True)
        ]
        try:
            # a bar for a large batch only: a streamed task sends many small ones at once
            bar = tqdm(futures, desc=desc or "requests", leave=False, disable=len(futures) < 64)
            return [f.result() for f in bar]
        except EngineStopped:
            for future in futures:  # those not started end here, the others at once (``_stopped``)
                future.cancel()
            wait(futures)
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def request_body(
    model: str,
    chat: Chat,
    output: type[BaseModel],
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
) -> dict:
    """The body of one ``/v1/chat/completions`` request (also a batch file's line, ``batch_engine``)."""
    body = {
        "model": model,
        "messages": chat,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": output.__name__, "schema": json_schema(output), "strict": True},
        },
        # vLLM and SGLang read this; Qwen3's template then skips the thinking block
        "chat_template_kwargs": {"enable_thinking": False},
    }
    if seed is not None:  # vLLM, SGLang and OpenAI sample this request with its own seed
        body["seed"] = seed
    return body


def reply_generation(reply: dict, output: type[BaseModel]) -> Generation:
    """A chat completion's first choice, parsed, with the token counts its ``usage`` gives."""
    choice = reply["choices"][0]
    generation = parse_output(choice["message"].get("content") or "", output, choice.get("finish_reason"))
    usage = reply.get("usage") or {}
    generation.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    generation.output_tokens = int(usage.get("completion_tokens") or 0)
    # vLLM reports this when started with --enable-prompt-tokens-details; OpenAI always does
    details = usage.get("prompt_tokens_details") or {}
    generation.cached_tokens = int(details.get("cached_tokens") or 0)
    return generation


def _client(base_url: str, api_key_env: str | None, timeout_s: float, connections: int = 4) -> httpx.Client:
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    if api_key_env and not key:
        raise EngineUnavailable(f"environment variable {api_key_env} is empty or not set")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # one connection per request in flight (httpx's own default pool holds 100)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, limits=limits)


def _server_limit(base_url: str, api_key_env: str | None) -> int | None:
    """How many requests the server says it runs at once (SGLang: ``/get_server_info``), or None."""
    root = base_url.removesuffix("/v1")
    try:
        with _client(root, api_key_env, 10.0) as client:
            response = client.get("/get_server_info")
            info = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    states = info.get("internal_states") or [{}]
    found = info.get("max_running_requests") or (states[0] if isinstance(states[0], dict) else {}).get(
        "max_running_requests"
    )
    return int(found) if isinstance(found, int | float) and found >= 1 else None


def _served(client: httpx.Client, base_url: str, model: str | None) -> dict:
    """The server's ``/v1/models`` entry of ``model`` (None: the first it lists)."""
    try:
        response = client.get("/models")
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise EngineUnavailable(f"no OpenAI-compatible server answers at {base_url}: {exc}") from exc
    cards = [m for m in response.json().get("data", []) if isinstance(m, dict) and m.get("id")]
    served = [m["id"] for m in cards]
    if model is None:
        if not served:
            raise EngineUnavailable(f"{base_url} lists no models; name one with --model")
        return cards[0]
    if served and model not in served:
        raise EngineUnavailable(f"{base_url} does not serve {model!r}; it serves {served}")
    return next((m for m in cards if m["id"] == model), {"id": model})


def model_card(base_url: str, model: str | None, api_key_env: str | None = None) -> dict:
    """What the server at ``base_url`` says of ``model`` (its ``/v1/models`` entry): the reply
    cache keys the model by it (``reply_cache.server_identity``)."""
    with _client(base_url.rstrip("/"), api_key_env, 30.0) as client:
        return _served(client, base_url.rstrip("/"), model)


def _said(exc: BaseException) -> str:
    """What the server (or the connection) said, on one line, at most 300 characters."""
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            body = exc.response.json()
            error = body.get("error", body) if isinstance(body, dict) else body
            text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        except ValueError:
            text = exc.response.text
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
