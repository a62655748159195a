"""Nearest passages by inner product: exact search for small pools, FAISS HNSW above that.

Vectors are unit length, so inner product is cosine. Below ``EXACT_MAX`` vectors an
exact matrix product is both exact and fast enough; above it FAISS's HNSW graph
(``IndexHNSWSQ`` with float16 codes, inner-product metric) answers in time that
grows with the log of the pool. HNSW rather than IVF: it needs no training pass
over a sample, is built from a stream of batches, and keeps recall high at a
fixed ``efSearch`` without choosing a cell count per corpus size. float16 codes
rather than a flat float32 copy: the vectors are stored as float16 anyway, recall
is the same, and the index is 0.58x the size (bench/index_recall.py).

Exact search reads the vectors in blocks, so a memory-mapped float16 matrix is
never copied whole into memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

EXACT_MAX = 100_000  # vectors; up to here exact search is as fast as HNSW per query and needs no build
HNSW_M = 32  # graph degree
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 1024  # candidates examined per query: >= 0.958 recall@66 at 100k on the hard bench case
BLOCK = 16_384  # vectors converted to float32 at a time (exact search, index build): 24 MiB at 384 dims


class VectorIndex:
    """Top-k search over a fixed set of unit vectors (an array or a memory map, any float dtype)."""

    def __init__(self, vectors: np.ndarray, exact_max: int | None = None, index=None):
        self.vectors = vectors
        self.size, self.dimension = vectors.shape
        limit = EXACT_MAX if exact_max is None else exact_max
        self.kind = "exact" if self.size <= limit and index is None else "hnsw"
        self.index = index
        if self.kind == "hnsw" and index is None:
            blocks = (vectors[start : start + BLOCK] for start in range(0, self.size, BLOCK))
            self.index = build_hnsw(blocks, self.dimension)

    @classmethod
    def load(cls, path: Path, vectors: np.ndarray) -> VectorIndex:
        """An HNSW index saved by ``save``, over these vectors."""
        import faiss

        return cls(vectors, index=faiss.read_index(str(path)))

    def save(self, path: Path) -> None:
        """Write the HNSW index (exact search has nothing to save)."""
        import faiss

        if self.index is None:
            raise ValueError("an exact-search index has nothing to save")

        faiss.write_index(self.index, str(path))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (len(queries), k), nearest first; k is capped at the pool size."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.size)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
            return self.index.search(queries, k)
        best_scores = np.empty((len(queries), 0), dtype=np.float32)
        best_ids = np.empty((len(queries), 0), dtype=np.int64)
        for start in range(0, self.size, BLOCK):
            block = np.asarray(self.vectors[start : start + BLOCK], dtype=np.float32)
            scores = queries @ block.T  # (N, B)
            if scores.shape[1] > k:  # the block's own top k, unordered
                top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                scores = np.take_along_axis(scores, top, axis=1)
            else:
                top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_ids = np.concatenate([best_ids, top + start], axis=1)
            # highest score first, the lower id first among equal scores (as a stable sort would)
            order = np.lexsort((best_ids, -best_scores), axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, order, axis=1)
            best_ids = np.take_along_axis(best_ids, order, axis=1)
        return best_scores, best_ids


def build_hnsw(blocks: Iterable[np.ndarray], dimension: int):
    """A FAISS HNSW index (float16 codes, inner product) over vectors given block by block."""
    import faiss

    index = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    for block in blocks:
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    return index


def save_hnsw(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))
