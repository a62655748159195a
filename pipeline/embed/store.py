"""The embedding store: each (embedder, role, text) is encoded once, on disk, and reused.

Vectors live in float16 shards (``shard-<writer>-<n>.npy``, memory-mapped when read) under
one folder per embedder; a SQLite index maps the hash of (role, text) to (shard,
row). Encoding a list looks every text up, encodes only the missing ones in
batches, and appends them as a new shard, committed to the index only after the
shard file is complete: a killed encode keeps every finished batch, and the next
one starts where it stopped. Nothing is held in memory but one batch and the
shards' memory maps, so memory does not grow with the corpus.

float16 keeps cosines to about 1e-3 of the float32 ones, far below the gaps any
filter or ranking here decides on.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import storage

BATCH = 1024  # texts encoded and written per shard


def text_key(role: str, text: str) -> bytes:
    return hashlib.sha256(f"{role}\x1f{text}".encode()).digest()[:16]


class EmbeddingStore:
    """Vectors of one embedder, keyed by role and text hash."""

    def __init__(self, root: Path, embedder_id: str, dimension: int):
        folder = hashlib.sha256(embedder_id.encode()).hexdigest()[:16]
        self.folder = Path(root) / folder
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "embedder.txt").write_text(f"{embedder_id}\n{dimension}\n", encoding="utf-8")
        self.dimension = dimension
        # one connection, used from whichever thread encodes (a Ray replica runs its tasks in a
        # helper thread), one encode at a time
        self.db = sqlite3.connect(self.folder / "index.sqlite", timeout=60, check_same_thread=False)
        self._lock = threading.Lock()
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, shard TEXT, row INT)")
        self.db.commit()
        self.computed = 0  # texts encoded by this store object (the rest came from disk)
        # shard names of this writer: several processes (Ray replicas) may share the folder
        self._writer = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._written = 0

    def _shard_path(self, shard: str) -> Path:
        return self.folder / f"shard-{shard}.npy"

    def _lookup(self, keys: list[bytes]) -> dict[bytes, tuple[str, int]]:
        found: dict[bytes, tuple[str, int]] = {}
        for i in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            for key, shard, row in self.db.execute(
                f"SELECT key, shard, row FROM vectors WHERE key IN ({marks})", part
            ):
                found[key] = (shard, row)
        return found

    def _next_shard(self) -> str:
        self._written += 1
        return f"{self._writer}-{self._written:06d}"

    def encode(self, texts: list[str], role: str, compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Vectors of ``texts`` (float32, as stored), computing only those not stored yet."""
        with self._lock:
            return self._encode(texts, role, compute)

    def _encode(self, texts: list[str], role: str, compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        keys = [text_key(role, t) for t in texts]
        where = self._lookup(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in where))
        if missing:
            first_text = {}
            for key, text in zip(keys, texts, strict=True):
                first_text.setdefault(key, text)
            for start in range(0, len(missing), BATCH):
                batch = missing[start : start + BATCH]
                vectors = np.asarray(compute([first_text[k] for k in batch]), dtype=np.float16)
                shard = self._next_shard()
                path = self._shard_path(shard)
                with storage.atomic_path(path) as tmp, tmp.open("wb") as handle:
                    np.save(handle, vectors)
                self.db.executemany(
                    "INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)",
                    [(k, shard, row) for row, k in enumerate(batch)],
                )
                self.db.commit()  # only now does the batch count as stored
                self.computed += len(batch)
                where.update({k: (shard, row) for row, k in enumerate(batch)})
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # shards are mapped for this call only: pages of maps kept open would count as the process's
        # memory and grow with every text ever read
        maps: dict[str, np.ndarray] = {}
        for i, key in enumerate(keys):
            shard, row = where[key]
            if shard not in maps:
                maps[shard] = np.load(self._shard_path(shard), mmap_mode="r")
            out[i] = maps[shard][row]
        return out
