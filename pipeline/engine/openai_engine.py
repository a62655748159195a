"""Engine over HTTP: the same batch of chats sent to any OpenAI-compatible server.

Works with `vllm serve`, SGLang and hosted APIs that accept a JSON-schema
``response_format``. Requests run concurrently up to a limit; 429, 5xx,
timeouts and dropped connections are retried with exponential backoff and
jitter. The API key is read from an environment variable and never logged.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

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

from .base import REQUEST_FAILED, Chat, ChatEngine, Generation, budgets, json_schema, parse_output

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EngineUnavailable(RuntimeError):
    """The server cannot be reached or refuses the model."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRY_STATUS
    return isinstance(exc, httpx.TransportError)  # timeouts, refused or dropped connections


class OpenAIEngine(ChatEngine):
    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 300.0,
        max_attempts: int = 6,
        max_wait_s: float = 30.0,
        temperature: float = 0.7,
        top_p: float = 0.9,
    ):
        self.base_url = base_url.rstrip("/")
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        if api_key_env and not key:
            raise EngineUnavailable(f"environment variable {api_key_env} is empty or not set")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.concurrency = concurrency
        self.temperature = temperature
        self.top_p = top_p
        self._post = retry(
            retry=retry_if_exception(_retryable),
            wait=wait_random_exponential(multiplier=0.5, max=max_wait_s),
            stop=stop_after_attempt(max_attempts),
            before_sleep=lambda state: log.warning(
                "request failed (%s), retry %d", state.outcome.exception(), state.attempt_number
            ),
        )(self._post_once)
        self.model_name = self._check_server(model)

    def _check_server(self, model: str | None) -> str:
        try:
            response = self.client.get("/models")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"no OpenAI-compatible server answers at {self.base_url}: {exc}") from exc
        served = [m["id"] for m in response.json().get("data", [])]
        if model is None:
            if not served:
                raise EngineUnavailable(f"{self.base_url} lists no models; name one with --model")
            return served[0]
        if served and model not in served:
            raise EngineUnavailable(f"{self.base_url} does not serve {model!r}; it serves {served}")
        return model

    def _post_once(self, body: dict) -> dict:
        response = self.client.post("/chat/completions", json=body)
        response.raise_for_status()
        return response.json()

    def _one(
        self, chat: Chat, output: type[BaseModel], max_tokens: int, temperature: float, seed: int | None
    ) -> Generation:
        body = {
            "model": self.model_name,
            "messages": chat,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": self.top_p,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": output.__name__, "schema": json_schema(output), "strict": True},
            },
            # vLLM and SGLang read this; Qwen3's template then skips the thinking block
            "chat_template_kwargs": {"enable_thinking": False},
        }
        if seed is not None:  # vLLM, SGLang and OpenAI sample this request with its own seed
            body["seed"] = seed
        try:
            reply = self._post(body)
        except RetryError as exc:
            return Generation("", None, f"after retries: {exc.last_attempt.exception()}", REQUEST_FAILED)
        except httpx.HTTPError as exc:
            return Generation("", None, str(exc), REQUEST_FAILED)
        choice = reply["choices"][0]
        generation = parse_output(choice["message"].get("content") or "", output, choice.get("finish_reason"))
        usage = reply.get("usage") or {}
        generation.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        generation.output_tokens = int(usage.get("completion_tokens") or 0)
        # vLLM reports this when started with --enable-prompt-tokens-details; OpenAI always does
        details = usage.get("prompt_tokens_details") or {}
        generation.cached_tokens = int(details.get("cached_tokens") or 0)
        return generation

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
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [
                pool.submit(self._one, chat, output, limit, temp, seed)
                for chat, limit, seed in zip(chats, limits, seeds or [None] * len(chats), strict=True)
            ]
            return [f.result() for f in tqdm(futures, desc=desc or "requests", leave=False)]

    def close(self) -> None:
        self.client.close()
