"""The mining pool: every corpus passage, encoded once, searchable, and kept on disk.

A pool is a folder ``<store>/<key>`` (the store: ``<cache>/pools``, or ``negatives.pool_dir``),
where the key hashes the embedder and every passage (id, document id, text), so a changed
corpus, splitter or embedder never reuses a stale pool:

- ``passages.sqlite``: row number -> passage id, document id, text (read only for the
  few passages a search returns);
- ``vectors.f16``: the unit vectors, float16, row by row (memory-mapped);
- ``index.faiss`` and ``lists.ivfdata``: the on-disk IVF-PQ index (``ivf.py``), when the pool
  is larger than exact search's limit (pools built before it have an in-memory HNSW
  ``index.faiss``, still read);
- ``meta.json``: size, dimension, embedder, index kind and the index's parameters; written
  last, so a folder without it is unfinished and ignored.

Building (``pool_build.py``) reads the corpus once to compute the key (a pool already built
then costs that one read), then once per builder to encode its parts. Every process that asks
for the same pool at once takes part in one build, on one machine or many; a pool on a URL is
copied once into each machine's cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..engine.base import waiting
from . import ivf
from .index import EXACT_MAX, VectorIndex

log = logging.getLogger(__name__)

LOOKUP_BATCH = 500  # SQLite's limit on bound parameters is 999


class PassagePool:
    """Passages to mine negatives from: search by vector, read back by row number."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        self.size: int = meta["size"]
        self.dimension: int = meta["dimension"]
        self.embedder: str = meta["embedder"]
        self.kind: str = meta.get("index", "exact")
        self.ivf = ivf.IvfParameters.from_meta(meta["ivf"]) if self.kind == "ivf" else None
        self.vectors = (
            np.memmap(
                self.folder / "vectors.f16", dtype=np.float16, mode="r", shape=(self.size, self.dimension)
            )
            if self.size
            else np.zeros((0, self.dimension), dtype=np.float16)
        )
        self.db = sqlite3.connect(self.folder / "passages.sqlite", check_same_thread=False)
        self._index: VectorIndex | ivf.DiskIndex | None = None
        self._searching = threading.Lock()

    @property
    def index(self) -> VectorIndex | ivf.DiskIndex:
        if self._index is None:
            if self.ivf is not None:
                self._index = ivf.DiskIndex(self.folder, self.size, self.dimension, self.ivf)
            elif self.kind == "hnsw":
                self._index = VectorIndex.load(self.folder / "index.faiss", self.vectors)
            else:
                self._index = VectorIndex(self.vectors, exact_max=self.size)
        return self._index

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row numbers) of the k passages nearest to each query; -1 where an index found fewer."""
        # a streamed task's other slices run their steps meanwhile; one search at a time
        with waiting(), self._searching:
            return self.index.search(queries, k)

    def passages(self, rows: Iterable[int]) -> dict[int, tuple[str, str, str]]:
        """Row number -> (passage id, document id, text), for the rows asked."""
        wanted = sorted({int(r) for r in rows if r >= 0})
        found = {}
        for start in range(0, len(wanted), LOOKUP_BATCH):
            part = wanted[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            for row, passage_id, source_id, text in self.db.execute(
                f"SELECT row, passage_id, source_id, text FROM passages WHERE row IN ({marks})", part
            ):
                found[row] = (passage_id, source_id, text)
        return found

    def passages_of(self, documents: Iterable[str]) -> dict[str, list[tuple[int, str, str]]]:
        """Document id -> its passages as (row number, passage id, text), in corpus order."""
        self._index_documents()
        wanted = sorted(set(documents))
        found: dict[str, list[tuple[int, str, str]]] = {}
        for start in range(0, len(wanted), LOOKUP_BATCH):
            part = wanted[start : start + LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            query = "SELECT row, passage_id, source_id, text FROM passages"
            query += f" WHERE source_id IN ({marks}) ORDER BY row"
            for row, passage_id, source_id, text in self.db.execute(query, part):
                found.setdefault(source_id, []).append((row, passage_id, text))
        return found

    def _index_documents(self) -> None:
        """An index on document ids, made once per pool (pools built before it existed get it here)."""
        if getattr(self, "_documents_indexed", False):
            return
        self.db.execute("CREATE INDEX IF NOT EXISTS by_source ON passages (source_id)")
        self.db.commit()
        self._documents_indexed = True

    @classmethod
    def build(
        cls, passages: Callable[[], Iterable], embedder, store: Path, cache: Path | None = None
    ) -> PassagePool:
        """The pool of ``passages()`` (read twice or more: it must give the same passages each time),
        built in ``store`` (a folder or a URL) by every process that asks at once, each encoding
        parts of it (``pool_build``); a pool on a URL is read from a copy in ``cache`` (a local
        folder; None: the store itself, which must then be local)."""
        from .. import storage
        from .pool_build import build_folder

        if cache is None and storage.is_remote(store):
            raise ValueError(f"{store}: a pool store on a URL needs a local cache folder for its copy")
        return cls(build_folder(passages, embedder, store, Path(cache if cache is not None else store)))

    @classmethod
    def from_arrays(
        cls,
        folder: Path,
        texts: list[str],
        passage_ids: list[str],
        source_ids: list[str],
        vectors: np.ndarray,
    ) -> PassagePool:
        """A pool of given vectors (tests and benchmarks that plant their own)."""
        rows = zip(passage_ids, source_ids, texts, strict=True)
        _write_files(Path(folder), [(list(rows), np.asarray(vectors))], "given vectors", vectors.shape[1])
        return cls(folder)


def embedder_identity(embedder) -> str:
    return getattr(embedder, "identity", None) or embedder.name


def pool_key(passages: Iterable, identity: str) -> tuple[str, int]:
    """Hash of the embedder and every passage, and the number of passages."""
    digest = hashlib.sha256(identity.encode())
    count = 0
    for passage in passages:
        for part in (passage.passage_id, passage.source_id, passage.text):
            digest.update(hashlib.sha256(str(part).encode()).digest())
        count += 1
    return digest.hexdigest()[:24], count


def _write_files(
    folder: Path, batches: Iterable, identity: str, dimension: int | None, extra: dict | None = None
) -> None:
    """Write a pool into a temporary folder and move it into place once complete (``extra``: more
    of ``meta.json``)."""
    building = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:8]}")
    building.mkdir(parents=True)
    try:
        db = sqlite3.connect(building / "passages.sqlite")
        db.execute(
            "CREATE TABLE passages (row INTEGER PRIMARY KEY, passage_id TEXT, source_id TEXT, text TEXT)"
        )
        size = 0
        with (building / "vectors.f16").open("wb") as sink:
            for rows, vectors in batches:
                dimension = vectors.shape[1]
                db.executemany(
                    "INSERT INTO passages VALUES (?, ?, ?, ?)",
                    [(size + i, *row) for i, row in enumerate(rows)],
                )
                sink.write(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
                size += len(rows)
        db.commit()
        db.close()
        meta = {
            "size": size,
            "dimension": dimension or 0,
            "embedder": identity,
            "index": "exact",
            **(extra or {}),
        }
        if size > EXACT_MAX:
            log.info("mining pool: building the on-disk IVF index over %d passages", size)
            meta.update(index="ivf", ivf=ivf.build(building, size, dimension).as_meta())
        (building / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if folder.exists():  # an unfinished folder left by a killed build
            shutil.rmtree(folder)
        building.rename(folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)


@contextmanager
def _locked(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
