"""The reply cache: every LLM reply kept under what was asked, so a rerun pays only for what changed.

The key of a request is a hash of everything that decides its reply: the generator's identity,
the rendered chat, the output schema, the token budget, temperature, top-p and the request's
seed. A local model is known by its files' content, every byte of them, not by its path
(``model_identity``); a server's model by the server's URL and what its ``/v1/models``
says of it (``server_identity``); both by ``models.revision`` when the user states one.
The value is the reply text, its finish reason and the token counts the engine reported.
A request with no seed at a temperature above zero is never cached: its reply is a fresh
draw each time.

Entries are small JSON files, ``ROOT/<identity>/<ab>/<key>.json``, written whole (a temporary and
a rename locally, one PUT on an object store), so processes and Ray actors on several machines
may fill one cache at once: a reader sees a whole entry or none, and two writers of one key
write the same reply. An entry that is not there or does not parse is a miss, and a damaged
one is removed; any other error reading it (a store's 503, a timeout) is a miss that keeps it.

With the cache off (``--no-cache``) the same entries are still written, to the task's own
journal of the chunk in flight (``progress/task-TTTTT/replies/``, set by ``journal``), and
removed once the chunk is committed: a chunk killed part way is redone with the replies it had
already received, so only the requests that had no reply yet are asked again. A reply the
journal gives back counts as computed, not as a cache hit: the attempt that computed it died
before its stats were written, so the resumed chunk's stats equal an uninterrupted run's.

Eviction: past ``cache.max_gib`` the entries used least recently go first (a hit refreshes an
entry's modification time on local disk; on an object store the time is the write's), down to
80% of the bound. The size is checked when a worker closes its engine and every
``SWEEP_EVERY`` new entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .. import storage
from .base import (
    PROMPT_TOO_LONG,
    REQUEST_FAILED,
    Chat,
    ChatEngine,
    Generation,
    budgets,
    json_schema,
    parse_output,
    waiting,
)

log = logging.getLogger(__name__)

KEY_VERSION = 2  # bump when the key's recipe changes: old entries then simply miss
SWEEP_EVERY = 2000
KEEP_SHARE = 0.8  # an eviction sweep stops at this share of the bound
HASH_BLOCK = 8 << 20  # bytes read at a time while hashing a model file
# /v1/models fields that say which model answers; vLLM and SGLang report `created` as the time of
# the listing itself, so a value that close to now says nothing about the model and is left out
MODEL_CARD_FIELDS = ("id", "root", "parent", "created", "owned_by", "revision", "fingerprint", "digest")
LISTING_TIME_SECONDS = 600


def default_root() -> str:
    """``$SYNTH_REPLY_CACHE``, else ``replies/`` in the tool's cache folder (``SYNTH_CACHE``)."""
    from ..models import cache_root

    return os.environ.get("SYNTH_REPLY_CACHE") or str(cache_root() / "replies")


def model_identity(path: str | None, name: str, revision: str | None = None) -> str:
    """What pins a local generator's weights: every byte of its files, not where they are.

    Each file is hashed whole once; the hash is remembered by the file's path, size and
    modification time (``file_hash``), so a later run reads the model's files again only when
    one changed. A model with no local folder (a test's fake) is known by its name.
    """
    folder = Path(path) if path else None
    digest = hashlib.sha256(f"revision:{revision or ''}\n".encode())
    if folder is None or not folder.is_dir():
        digest.update(f"name:{name}".encode())
        return digest.hexdigest()[:24]
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(folder)}:{file_hash(file)}\n".encode())
    return digest.hexdigest()[:24]


def file_hash(file: Path) -> str:
    """The sha256 of a file's bytes, remembered in the tool's cache folder by path, size and mtime."""
    from ..models import cache_root

    stat = file.stat()
    resolved = str(file.resolve())
    memo = cache_root() / "file-hashes" / f"{hashlib.sha256(resolved.encode()).hexdigest()[:32]}.json"
    seen = {"path": resolved, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(memo.read_text(encoding="utf-8"))
        if {k: known.get(k) for k in seen} == seen:
            return str(known["sha256"])
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    with contextlib.suppress(OSError):  # a read-only cache folder: hashed again next time
        storage.write_bytes(memo, json.dumps({**seen, "sha256": digest.hexdigest()}).encode())
    return digest.hexdigest()


def server_identity(base_url: str, card: dict, revision: str | None = None) -> str:
    """What pins a server's model: the server's URL and what its ``/v1/models`` entry says of it.

    ``card`` is that entry (``id``, and where the server gives them ``root`` (the weights it
    loaded), ``parent``, ``created``, ``owned_by``, a revision or a fingerprint). A model
    retrained and served again under the same name, or the same name on another server, gets
    another identity, so none of the old model's replies answer for it. ``created`` is left out
    when it is the listing's own time (within ``LISTING_TIME_SECONDS`` of now).
    """
    fields = {key: card[key] for key in MODEL_CARD_FIELDS if card.get(key) is not None}
    created = fields.get("created")
    if isinstance(created, int | float) and abs(time.time() - created) < LISTING_TIME_SECONDS:
        fields.pop("created")
    recipe = {"server": base_url.rstrip("/"), "model": fields, "revision": revision}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:24]


def request_key(
    identity: str,
    chat: Chat,
    schema: dict[str, Any],
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
) -> str:
    recipe = {
        "version": KEY_VERSION,
        "model": identity,
        "chat": chat,
        "schema": schema,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ReplyCache:
    """The entries under one root folder (local or a URL), with a size bound."""

    def __init__(self, root: str, max_bytes: int):
        self.root = storage.location(root)
        self.max_bytes = max_bytes
        self.written = 0

    def _path(self, identity: str, key: str) -> Path:
        return self.root / identity / key[:2] / f"{key}.json"

    def get(self, identity: str, key: str) -> dict | None:
        path = self._path(identity, key)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:  # a damaged entry (half a file, not JSON): drop it, ask the engine again
            log.warning("reply cache: damaged entry %s (%s): removed", path, exc)
            with contextlib.suppress(Exception):
                storage.remove(path)
            return None
        except Exception as exc:  # the store failed to answer (a 503, a timeout): the entry may be fine
            log.warning("reply cache: cannot read %s now (%s): asking the engine", path, storage.reason(exc))
            return None
        if not isinstance(data, dict) or "raw" not in data:
            return None
        if not storage.is_remote(path):
            with contextlib.suppress(OSError):
                os.utime(path)  # least recently used goes first
        return data

    def put(self, identity: str, key: str, value: dict) -> None:
        data = json.dumps(value, ensure_ascii=False).encode()
        storage.write_bytes(self._path(identity, key), data)  # whole, writer by writer
        self.written += 1
        if self.written % SWEEP_EVERY == 0:
            self.sweep()

    def sweep(self) -> int:
        """Remove the least recently used entries while the cache is over its bound; how many went."""
        entries = []
        for path in self._entries():
            with contextlib.suppress(OSError, FileNotFoundError):
                entries.append((storage.modified(path), storage.size(path), path))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        removed = 0
        for _, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= self.max_bytes * KEEP_SHARE:
                break
            with contextlib.suppress(Exception):
                storage.remove(path)
            total -= size
            removed += 1
        log.info(
            "reply cache: removed %d least recently used entries (bound %d bytes)", removed, self.max_bytes
        )
        return removed

    def _entries(self):
        if not self.root.exists():
            return []
        return (p for p in self.root.rglob("*.json") if not storage.is_temporary(p))


_JOURNAL: ContextVar[ReplyCache | None] = ContextVar("reply_journal", default=None)
JOURNAL_BYTES = 1 << 50  # a chunk's replies: never swept, removed whole once the chunk is committed


@contextlib.contextmanager
def journal(folder: Path) -> Iterator[None]:
    """Meanwhile, the replies of a cache-less engine are also kept in ``folder`` (this thread's task)."""
    token = _JOURNAL.set(ReplyCache(str(folder), JOURNAL_BYTES))
    try:
        yield
    finally:
        _JOURNAL.reset(token)


@dataclass
class Sampling:
    """The engine's own sampling settings, the ones a request does not carry."""

    temperature: float
    top_p: float


class CachingEngine(ChatEngine):
    """An engine that answers what it was asked before from the cache, and starts the real one lazily.

    ``start`` builds (or hands over) the real engine; it runs on the first miss, so a run whose
    every request is cached never loads the model. With no ``cache`` (``--no-cache``) only the
    journal of the chunk in flight answers (``journal``).
    """

    def __init__(
        self,
        start: Callable[[], ChatEngine],
        cache: ReplyCache | None,
        identity: str,
        model_name: str,
        sampling: Sampling,
    ):
        self._start = start
        self._engine: ChatEngine | None = None
        self._starting = threading.Lock()  # slices of a streamed task may all miss at once: one start
        self.cache = cache
        self.identity = identity
        self.model_name = model_name
        self.sampling = sampling

    @property
    def engine(self) -> ChatEngine:
        with self._starting:
            if self._engine is None:
                self._engine = self._start()
                self.model_name = self._engine.model_name
        return self._engine

    @property
    def settings(self) -> dict:
        return dict(getattr(self._engine, "settings", {}) or {})

    def generate(
        self,
        chats: list[Chat],
        output: type[BaseModel],
        max_tokens: int | list[int],
        temperature: float | None = None,
        desc: str | None = None,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        if not chats:
            return []
        schema = json_schema(output)
        limits = budgets(max_tokens, len(chats))
        heat = self.sampling.temperature if temperature is None else temperature
        request_seeds = list(seeds) if seeds is not None else [None] * len(chats)
        keys: list[str | None] = []
        for chat, limit, seed in zip(chats, limits, request_seeds, strict=True):
            cacheable = seed is not None or heat == 0
            keys.append(
                request_key(self.identity, chat, schema, limit, heat, self.sampling.top_p, seed)
                if cacheable
                else None
            )
        stores = [self.cache] if self.cache is not None else [j for j in [_JOURNAL.get()] if j is not None]
        answers: list[Generation | None] = []
        for key in keys:
            found = next(((s, e) for s in stores if key and (e := s.get(self.identity, key))), None)
            # a journal's reply is this chunk's own work, done by an attempt whose stats were lost
            # with it: it counts as computed, so a resumed chunk's stats equal an uninterrupted one's
            answers.append(_from_entry(found[1], output, served=found[0] is self.cache) if found else None)
        missing = [i for i, answer in enumerate(answers) if answer is None]
        if missing:
            engine = self.engine  # started (once) before the wait, not inside it
            with waiting():  # a streamed task's other slices run their steps meanwhile
                fresh = engine.generate(
                    [chats[i] for i in missing],
                    output,
                    [limits[i] for i in missing],
                    temperature=temperature,
                    desc=desc,
                    seeds=[request_seeds[i] for i in missing] if seeds is not None else None,
                )
            for i, generation in zip(missing, fresh, strict=True):
                answers[i] = generation
                key = keys[i]
                if key and generation.finish_reason not in (REQUEST_FAILED, PROMPT_TOO_LONG):
                    for store in stores:
                        store.put(self.identity, key, _entry(generation))
        return answers  # type: ignore[return-value] - every slot is filled

    def close(self) -> None:
        """Check the cache's size; the real engine belongs to whoever started it (the factory)."""
        try:
            if self.cache is not None:
                self.cache.sweep()
        except Exception as exc:  # a full or unreachable cache must not fail a finished run
            log.warning("reply cache: size check failed: %s", storage.reason(exc))


def _entry(generation: Generation) -> dict:
    return {
        "raw": generation.raw,
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.prompt_tokens,
        "cached_tokens": generation.cached_tokens,
        "output_tokens": generation.output_tokens,
    }


def _from_entry(entry: dict, output: type[BaseModel], served: bool) -> Generation:
    generation = parse_output(entry["raw"], output, entry.get("finish_reason"))
    generation.prompt_tokens = int(entry.get("prompt_tokens") or 0)
    generation.cached_tokens = int(entry.get("cached_tokens") or 0)
    generation.output_tokens = int(entry.get("output_tokens") or 0)
    generation.from_cache = served
    return generation
