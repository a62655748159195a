"""Batch files: the run's requests written for a batch runner, the runner's results read back.

``synth generate --engine batch`` runs as a live run does until a request has no answer yet.
Such a request is written as one line of an OpenAI batch file (what ``vllm run-batch`` and the
hosted batch APIs read: ``custom_id``, ``method``, ``url``, ``body``) and its chunk is held back
(``RepliesPending``): it is not committed, and neither is any chunk after it, but the run goes
on until every chunk has written what it can ask now. The run then stops with the path of the
round's file (``OUT/batch/requests-RRR.jsonl``) and exits 4.

``synth generate --batch-results FILE`` checks FILE against the last round's requests (one line
per request: a line missing, one more, or one that does not parse stops the run before anything
is read in), keeps its answers (``OUT/batch/answers/``) and runs again from the last checkpoint:
what was answered goes on to its next step, whose requests make the next round. A run whose
recipe asks four LLM calls per row (configure, query, negatives, judge) takes four rounds.

A request's ``custom_id`` is a hash of its body (model, chat, schema, budget, sampling, seed), so
an answer finds its request again whatever order the runner returns lines in, and a request asked
again in a later round (a chunk redone from its checkpoint) is answered by what the earlier
round brought back. Answers come back as computed replies with the token counts of the runner's
``usage``; above this engine the reply cache keeps them as it keeps a server's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
import tempfile
import uuid
from pathlib import Path

from pydantic import BaseModel

from .. import storage
from .base import REQUEST_FAILED, Chat, ChatEngine, Generation, budgets
from .openai_engine import reply_generation, request_body

BATCH_EXIT = 4  # exit status of `synth generate` waiting on a batch file: not an error, not finished
URL = "/v1/chat/completions"


class RepliesPending(RuntimeError):
    """Requests were written to this round's batch file: the chunk waits for their results."""


class BatchResultsError(ValueError):
    """A results file that does not answer the last round's requests; the message says where."""


def custom_id(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


class BatchFiles:
    """A run's batch folder: each round's requests, the results read back, their answers by custom id."""

    def __init__(self, folder: Path):
        self.folder = folder  # ``RunFolder.batch_folder``

    def _numbered(self, prefix: str) -> list[int]:
        if not self.folder.exists():
            return []
        names = storage.list_names(self.folder)
        return sorted(
            int(n[len(prefix) : -6]) for n in names if n.startswith(prefix) and n.endswith(".jsonl")
        )

    @functools.cached_property
    def round(self) -> int:
        """The round being asked now: one past the last round whose results were read back (looked
        up once: results are read in before a run starts)."""
        done = self._numbered("results-")
        return (done[-1] if done else 0) + 1

    def requests_file(self, round: int) -> Path:
        return self.folder / f"requests-{round:03d}.jsonl"

    def results_file(self, round: int) -> Path:
        return self.folder / f"results-{round:03d}.jsonl"

    def parts_folder(self, round: int) -> Path:
        return self.folder / f"round-{round:03d}"

    def _answer_path(self, key: str) -> Path:
        return self.folder / "answers" / key[:2] / f"{key}.json"

    def answer(self, key: str) -> dict | None:
        """The runner's answer to request ``key`` once read back: ``{"body": ...}`` or ``{"error": ...}``."""
        try:
            return json.loads(storage.read_bytes(self._answer_path(key)))
        except FileNotFoundError:
            return None

    def ask(self, lines: list[dict]) -> None:
        """Write requests as a part of this round's file: one whole file per call, from any thread."""
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        storage.write_bytes(self.parts_folder(self.round) / f"part-{uuid.uuid4().hex}.jsonl", data)

    def gather(self) -> tuple[Path, int]:
        """This round's parts as one requests file (parts removed); the file and its line count."""
        round = self.round
        parts = self.parts_folder(round)
        names = sorted(n for n in storage.list_names(parts) if n.endswith(".jsonl")) if parts.exists() else []
        target, count = self.requests_file(round), 0
        with storage.atomic_path(target) as tmp, open(tmp, "wb") as out:
            for name in names:
                with storage.open_read(parts / name) as handle:
                    for line in handle:
                        out.write(line)
                        count += 1
        for name in names:
            storage.remove(parts / name)
        if not storage.is_remote(parts):  # an object store has no folders to remove
            with contextlib.suppress(OSError):
                parts.rmdir()
        return target, count

    def read_results(self, source: str | Path) -> tuple[int, int]:
        """Check ``source`` against the last round's requests, then keep its answers and a copy.

        Returns (answers, failed requests). Raises ``BatchResultsError`` naming the file and line
        of the first problem; nothing is kept then. The request ids are held in an on-disk table
        while checking, so memory stays flat however large the round."""
        round = self.round
        requests = self.requests_file(round)
        if not requests.exists():
            raise BatchResultsError(f"{self.folder} has no requests waiting for results (no {requests.name})")
        with tempfile.TemporaryDirectory(prefix="synth-batch-") as scratch:
            table = sqlite3.connect(Path(scratch) / "ids.db")
            with contextlib.closing(table):
                table.execute("create table asked (id text primary key, answered integer default 0)")
                for number, line in _lines(requests):
                    table.execute(
                        "insert or ignore into asked (id) values (?)", (_field(line, requests, number),)
                    )
                for number, line in _lines(source):
                    key = _field(line, source, number)
                    seen = table.execute("select answered from asked where id = ?", (key,)).fetchone()
                    if seen is None:
                        raise BatchResultsError(
                            f"{source}, line {number}: custom_id {key} is not a request of {requests}"
                        )
                    if seen[0]:
                        raise BatchResultsError(f"{source}, line {number}: custom_id {key} is answered twice")
                    table.execute("update asked set answered = 1 where id = ?", (key,))
                missing = table.execute("select count(*), min(id) from asked where answered = 0").fetchone()
                if missing[0]:
                    raise BatchResultsError(
                        f"{source} leaves {missing[0]} request(s) of {requests} unanswered "
                        f"(custom_id {missing[1]}, ...): give the runner's whole output"
                    )
        answered = failed = 0
        for _, line in _lines(source):
            entry = _answer(line)
            failed += "error" in entry
            storage.write_bytes(
                self._answer_path(line["custom_id"]), json.dumps(entry, ensure_ascii=False).encode()
            )
            answered += 1
        with (
            storage.atomic_path(self.results_file(round)) as tmp,
            open(tmp, "wb") as out,
            storage.open_read(source) as handle,
        ):
            for raw in handle:
                out.write(raw)
        return answered, failed


def _lines(path: str | Path):
    """(line number, parsed line) of a JSONL file; blank lines skipped."""
    with storage.open_read(path) as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as exc:
                raise BatchResultsError(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(line, dict):
                raise BatchResultsError(f"{path}, line {number}: not a JSON object")
            yield number, line


def _field(line: dict, path: str | Path, number: int) -> str:
    key = line.get("custom_id")
    if not isinstance(key, str) or not key:
        raise BatchResultsError(f"{path}, line {number}: no custom_id")
    return key


def _answer(line: dict) -> dict:
    """A results line as an answers-store entry: the reply's body, or the runner's words on a failure."""
    response = line.get("response") or {}
    body = response.get("body") if isinstance(response, dict) else None
    status = response.get("status_code", 200) if isinstance(response, dict) else None
    if line.get("error") or not isinstance(body, dict) or status != 200 or not body.get("choices"):
        said = line.get("error") or (body or {}).get("error") or f"status {status}"
        return {"error": " ".join(str(said).split())[:300]}
    return {"body": body}


class BatchEngine(ChatEngine):
    """Answers from the results read back; every other request goes to this round's batch file."""

    def __init__(self, files: BatchFiles, model: str, temperature: float = 0.7, top_p: float = 0.9):
        self.files = files
        self.model_name = model
        self.temperature = temperature
        self.top_p = top_p
        self.settings = {"engine": "batch", "round": files.round}

    def generate(
        self,
        chats: list[Chat],
        output: type[BaseModel],
        max_tokens: int | list[int],
        temperature: float | None = None,
        desc: str | None = None,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        heat = self.temperature if temperature is None else temperature
        limits = budgets(max_tokens, len(chats))
        answers: list[Generation] = []
        asked: list[dict] = []
        for chat, limit, seed in zip(chats, limits, seeds or [None] * len(chats), strict=True):
            body = request_body(self.model_name, chat, output, limit, heat, self.top_p, seed)
            key = custom_id(body)
            entry = self.files.answer(key)
            if entry is None:
                asked.append({"custom_id": key, "method": "POST", "url": URL, "body": body})
            elif entry.get("body") is not None:
                answers.append(reply_generation(entry["body"], output))
            else:
                answers.append(
                    Generation("", None, entry.get("error") or "the batch runner failed", REQUEST_FAILED)
                )
        if asked:
            self.files.ask(asked)
            raise RepliesPending(f"{len(asked)} request(s) written to batch round {self.files.round}")
        return answers
