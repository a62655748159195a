"""A loopback OpenAI-compatible server that keeps time like a continuous-batching engine.

What it models (vLLM and SGLang on one GPU, to first order):

- ``slots`` sequences decode together; every decode step takes ``step_s`` however many of the
  slots are busy, and gives each busy sequence one token. With every slot busy the server
  writes ``slots / step_s`` output tokens per second: its ceiling, known exactly.
- A request waits in a queue for a free slot; the step that admits it also pays its prefill,
  ``prefill_s`` per prompt token not already in the prefix cache (blocks of 16 tokens, a token
  counted as 4 characters, every block seen before stays cached).
- A reply is ``length`` tokens long: drawn from a log-normal of mean ``mean_tokens`` seeded by the
  request itself (its messages and seed, so arrival order changes nothing), and never more
  than the request's ``max_tokens``. Its text comes from ``answer(prompt, output)``.
- A request that finds ``queue_limit`` others waiting is refused with 429.
- ``GET /get_server_info`` says ``max_running_requests``: ``slots`` (as SGLang does), unless
  ``reports_limit`` is off (as with vLLM, which reports none).

It records slot occupancy: slot-seconds busy, the first arrival and the last reply (the window
in which the client had work in flight), output tokens, the time spent on prefills, and per step
(time, busy slots), so a bench can say what share of the ceiling a client used. Two shares:
``tokens_per_s_over_ceiling`` (output tokens per second over ``slots / step_s``: prefills count
against it) and ``capacity_used`` (the time a server with every slot busy at every step would
take for the same requests, their prefills included, over the window). ``GET /sim/stats`` returns them;
``POST /sim/reset`` clears them between runs. A request's ``seed`` also decides an extra delay
drawn up to ``jitter_s`` (replies then come back in random order, as on a real server).

    server = SimulatedServer(answer, slots=256, step_s=0.05)
    ... run against server.url ...
    print(server.stats()["busy_share"])
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script by the bench, too

from tests.conftest import default_answer, send_json  # noqa: E402 - the tests' fake model and JSON answer

BLOCK_CHARS = 64  # 16 tokens of 4 characters: the prefix cache's unit
MODEL = "simulated-engine"


@dataclass
class _Request:
    length: int  # output tokens to decode
    prompt_tokens: int
    uncached: int  # prompt tokens the prefill pays for
    delay_s: float  # extra time before the reply is sent (replies out of order)
    done: threading.Event = field(default_factory=threading.Event)
    written: int = 0


class SimulatedServer:
    def __init__(
        self,
        answer: Callable[[str, object], str],
        slots: int = 256,
        step_s: float = 0.05,
        prefill_s: float = 0.00002,
        mean_tokens: float = 60.0,
        queue_limit: int = 4096,
        jitter_s: float = 0.0,
        seed: int = 0,
        reports_limit: bool = True,
    ):
        self.reports_limit = reports_limit
        self.answer, self.slots, self.step_s, self.prefill_s = answer, slots, step_s, prefill_s
        self.mean_tokens, self.queue_limit, self.jitter_s, self.seed = (
            mean_tokens,
            queue_limit,
            jitter_s,
            seed,
        )
        self._lock = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._blocks: set[bytes] = set()
        self._running = True
        self.reset()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client's pool reuses its connections

            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict) -> None:
                send_json(self, code, body)

            def do_GET(self):
                if self.path.endswith("/sim/stats"):
                    self._send(200, server.stats())
                elif self.path.endswith("/get_server_info"):
                    if server.reports_limit:
                        self._send(200, {"max_running_requests": server.slots})
                    else:
                        self._send(404, {"detail": "Not Found"})
                else:
                    self._send(200, {"data": [{"id": MODEL, "object": "model", "created": 1700000000}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/sim/reset"):
                    server.reset()
                    self._send(200, {})
                    return
                try:
                    code, reply = server.complete(body)
                except Exception as exc:  # an answer function that cannot answer: said, not a dropped line
                    name = body["response_format"]["json_schema"]["name"]
                    code, reply = 500, {"error": {"message": f"{type(exc).__name__}: {exc} ({name})"}}
                self._send(code, reply)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # the listen backlog: hundreds of clients connect at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._decode, daemon=True).start()

    @property
    def ceiling(self) -> float:
        """Output tokens per second with every slot busy (prefill not counted)."""
        return self.slots / self.step_s

    def reset(self) -> None:
        with self._lock:
            self.busy_slot_s = 0.0  # slot-seconds with a sequence in them
            self.prefill_total_s = 0.0  # what the prompts cost: a full server pays it too
            self.first_arrival: float | None = None
            self.last_reply: float | None = None
            self.output_tokens = 0
            self.requests = 0
            self.refused = 0
            self.max_waiting = 0
            self.timeline: list[tuple[float, int]] = []  # (seconds since first arrival, busy slots)

    def complete(self, body: dict) -> tuple[int, dict]:
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        schema = body["response_format"]["json_schema"]
        output = type(schema["name"], (), {"__name__": schema["name"]})
        output.model_json_schema = staticmethod(lambda: schema["schema"])
        content = self.answer(body["messages"][-1]["content"], output)
        request = self._request(body, prompt)
        with self._lock:
            if len(self._waiting) >= self.queue_limit:
                self.refused += 1
                return 429, {"error": {"message": "the queue is full", "type": "rate_limit"}}
            now = time.perf_counter()
            if self.first_arrival is None:
                self.first_arrival = now
            self._waiting.append(request)
            self.max_waiting = max(self.max_waiting, len(self._waiting))
            self._lock.notify_all()
        request.done.wait()
        if request.delay_s:
            time.sleep(request.delay_s)
        usage = {
            "prompt_tokens": request.prompt_tokens,
            "completion_tokens": request.length,
            "prompt_tokens_details": {"cached_tokens": request.prompt_tokens - request.uncached},
        }
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        return 200, {"model": MODEL, "object": "chat.completion", "choices": [choice], "usage": usage}

    def _request(self, body: dict, prompt: str) -> _Request:
        identity = json.dumps([body["messages"], body.get("seed")], sort_keys=True).encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(identity).digest()[:8], "big") ^ self.seed)
        sigma = 0.6  # log-normal spread: most replies near the mean, a long tail of long ones
        drawn = rng.lognormvariate(math.log(self.mean_tokens) - sigma**2 / 2, sigma)
        length = max(1, min(int(body.get("max_tokens") or 10**9), round(drawn)))
        cached = 0
        with self._lock:
            chain = hashlib.sha256()
            for start in range(0, len(prompt) - BLOCK_CHARS + 1, BLOCK_CHARS):
                chain.update(prompt[start : start + BLOCK_CHARS].encode())
                block = chain.digest()
                if block in self._blocks and cached == start:
                    cached += BLOCK_CHARS
                self._blocks.add(block)
        prompt_tokens = max(1, len(prompt) // 4)
        return _Request(length, prompt_tokens, prompt_tokens - cached // 4, rng.uniform(0, self.jitter_s))

    def _decode(self) -> None:
        """The engine's loop: admit, then one decode step for every busy slot."""
        clock = None
        while self._running:
            with self._lock:
                while not self._waiting and not self._active and self._running:
                    self._lock.wait()
                    clock = None  # idle: the next step starts when work arrives
                prefill = 0
                while self._waiting and len(self._active) < self.slots:
                    request = self._waiting.popleft()
                    prefill += request.uncached
                    self._active.append(request)
                busy = len(self._active)
            duration = self.step_s + prefill * self.prefill_s
            self.prefill_total_s += prefill * self.prefill_s
            clock = (clock or time.perf_counter()) + duration
            time.sleep(max(0.0, clock - time.perf_counter()))  # on schedule: a late step is caught up
            with self._lock:
                now = time.perf_counter()
                self.busy_slot_s += busy * duration
                self.timeline.append((now - (self.first_arrival or now), busy))
                still = []
                for request in self._active:
                    request.written += 1
                    if request.written >= request.length:
                        self.output_tokens += request.length
                        self.requests += 1
                        self.last_reply = now + request.delay_s
                        request.done.set()
                    else:
                        still.append(request)
                self._active = still

    def stats(self) -> dict:
        """Occupancy over the window from the first request to the last reply."""
        with self._lock:
            window = (self.last_reply - self.first_arrival) if self.last_reply and self.first_arrival else 0.0
            return {
                "slots": self.slots,
                "step_s": self.step_s,
                "ceiling_tokens_per_s": self.ceiling,
                "window_s": round(window, 3),
                "requests": self.requests,
                "refused_429": self.refused,
                "max_waiting": self.max_waiting,
                "output_tokens": self.output_tokens,
                "busy_slot_s": round(self.busy_slot_s, 3),
                "busy_share": round(self.busy_slot_s / (self.slots * window), 4) if window else 0.0,
                "mean_busy_slots": round(self.busy_slot_s / window, 2) if window else 0.0,
                "tokens_per_s_over_ceiling": round(self.output_tokens / window / self.ceiling, 4)
                if window
                else 0.0,
                # the time a server with every slot busy at every step would have taken for the same
                # requests (their decode steps, their prefills), over the window: the capacity used
                "prefill_s": round(self.prefill_total_s, 3),
                "capacity_used": round(
                    (self.output_tokens * self.step_s / self.slots + self.prefill_total_s) / window, 4
                )
                if window
                else 0.0,
                "timeline": self.timeline[:: max(1, len(self.timeline) // 400)],
            }

    def close(self) -> None:
        with self._lock:
            self._running = False
            self._lock.notify_all()
        self.httpd.shutdown()


def main() -> None:
    """Serve until killed, in a process of its own (so the client's Python does not slow its clock)."""
    import argparse

    parser = argparse.ArgumentParser(description="a simulated continuous-batching server")
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--step-s", type=float, default=0.05)
    parser.add_argument("--mean-tokens", type=float, default=60.0)
    parser.add_argument("--jitter-s", type=float, default=0.0)
    args = parser.parse_args()
    server = SimulatedServer(
        default_answer,
        slots=args.slots,
        step_s=args.step_s,
        mean_tokens=args.mean_tokens,
        jitter_s=args.jitter_s,
    )
    print(server.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
