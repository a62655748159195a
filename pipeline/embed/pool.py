"""The mining pool: every corpus passage, encoded once, searchable, and kept on disk.

A pool is a folder under ``<cache>/pools/<key>``, where the key hashes the embedder and
every passage (id, document id, text), so a changed corpus, splitter or embedder
never reuses a stale pool:

- ``passages.sqlite``: row number -> passage id, document id, text (read only for the
  few passages a search returns);
- ``vectors.f16``: the unit vectors, float16, row by row (memory-mapped);
- ``index.faiss``: the HNSW index, when the pool is larger than exact search's limit;
- ``meta.json``: size, dimension, embedder, index kind; written last, so a folder
  without it is unfinished and ignored.

Building reads the corpus twice: once to compute the key (a cached pool then costs
one read), once to encode in batches through the embedder (and its embedding
store). Memory holds one batch and the index, never the corpus's texts.
Several workers asking for the same pool wait on one lock; one builds it.
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..engine.base import waiting
from .index import BLOCK, EXACT_MAX, VectorIndex, build_hnsw, save_hnsw

log = logging.getLogger(__name__)

ENCODE_BATCH = 4096  # passages encoded and written at a time
LOOKUP_BATCH = 500  # SQLite's limit on bound parameters is 999


class PassagePool:
    """Passages to mine negatives from: search by vector, read back by row number."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        self.size: int = meta["size"]
        self.dimension: int = meta["dimension"]
        self.embedder: str = meta["embedder"]
        self.vectors = (
            np.memmap(
                self.folder / "vectors.f16", dtype=np.float16, mode="r", shape=(self.size, self.dimension)
            )
            if self.size
            else np.zeros((0, self.dimension), dtype=np.float16)
        )
        self.db = sqlite3.connect(self.folder / "passages.sqlite", check_same_thread=False)
        self._index: VectorIndex | None = None
        self._searching = threading.Lock()

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            saved = self.folder / "index.faiss"
            self._index = (
                VectorIndex.load(saved, self.vectors) if saved.exists() else VectorIndex(self.vectors)
            )
        return self._index

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row numbers) of the k passages nearest to each query; -1 where HNSW found fewer."""
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
    def build(cls, passages: Callable[[], Iterable], embedder, root: Path) -> PassagePool:
        """The pool of ``passages()`` (called once or twice: it must give the same passages each time)."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        key, count = pool_key(passages(), embedder_identity(embedder))
        folder = root / key
        with _locked(root / f"{key}.lock"):
            if not (folder / "meta.json").exists():
                log.info("mining pool: encoding %d passages", count)
                _write(folder, passages(), count, embedder)
            else:
                log.info("mining pool: %d passages, reused from %s", count, folder)
        return cls(folder)

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


def _batches(
    passages: Iterable, embedder, total: int
) -> Iterator[tuple[list[tuple[str, str, str]], np.ndarray]]:
    from tqdm import tqdm

    progress = tqdm(total=total, desc="mining pool", unit="passage", leave=False)
    batch: list[tuple[str, str, str]] = []
    for passage in passages:
        batch.append((passage.passage_id, passage.source_id, passage.text))
        if len(batch) == ENCODE_BATCH:
            yield batch, embedder.encode([t for _, _, t in batch], role="passage")
            progress.update(len(batch))
            batch = []
    if batch:
        yield batch, embedder.encode([t for _, _, t in batch], role="passage")
        progress.update(len(batch))
    progress.close()


def _write(folder: Path, passages: Iterable, total: int, embedder) -> None:
    dimension = int(embedder.dimension) if hasattr(embedder, "dimension") else None
    _write_files(folder, _batches(passages, embedder, total), embedder_identity(embedder), dimension)


def _write_files(folder: Path, batches: Iterable, identity: str, dimension: int | None) -> None:
    """Write a pool into a temporary folder and move it into place once complete."""
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
        kind = "exact"
        if size > EXACT_MAX:
            kind = "hnsw"
            log.info("mining pool: building the HNSW index over %d passages", size)
            # blocks read from the file, not a memory map: mapped pages would count as the process's memory
            blocks = _file_blocks(building / "vectors.f16", size, dimension)
            save_hnsw(build_hnsw(blocks, dimension), building / "index.faiss")
        meta = {"size": size, "dimension": dimension or 0, "embedder": identity, "index": kind}
        (building / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if folder.exists():  # an unfinished folder left by a killed build
            shutil.rmtree(folder)
        building.rename(folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _file_blocks(path: Path, size: int, dimension: int) -> Iterator[np.ndarray]:
    with path.open("rb") as source:
        for start in range(0, size, BLOCK):
            count = min(BLOCK, size - start) * dimension
            yield np.fromfile(source, dtype=np.float16, count=count).reshape(-1, dimension)


@contextmanager
def _locked(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
