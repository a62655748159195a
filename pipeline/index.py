"""Nearest passages by inner product: exact search for small pools, FAISS HNSW above that.

Vectors are unit length, so inner product is cosine. Below ``EXACT_MAX`` vectors an
exact matrix product is both exact and fast enough; above it FAISS's HNSW graph
(``IndexHNSWFlat``, inner-product metric) answers in time that grows with the log
of the pool. HNSW rather than IVF: it needs no training pass over a sample, can
be built from a stream of shards, and keeps recall high at a fixed ``efSearch``
without choosing a cell count per corpus size (bench/index_recall.py measures it).
"""

from __future__ import annotations

import numpy as np

EXACT_MAX = 50_000  # vectors; below this a (queries x pool) product is cheap (bench/index_recall.py)
HNSW_M = 32  # graph degree
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 1024  # candidates examined per query: 0.97 recall@66 at 100k on the hard bench case


class VectorIndex:
    """Top-k search over a fixed set of unit vectors."""

    def __init__(self, vectors: np.ndarray, exact_max: int | None = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.size, self.dimension = vectors.shape
        limit = EXACT_MAX if exact_max is None else exact_max
        self.kind = "exact" if self.size <= limit else "hnsw"
        if self.kind == "exact":
            self.vectors = vectors
            return
        import faiss

        self.index = faiss.IndexHNSWFlat(self.dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (len(queries), k), nearest first; k is capped at the pool size."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.size)
        if self.kind == "exact":
            scores = queries @ self.vectors.T  # (N, P)
            ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, k)
            return np.take_along_axis(scores, ids, axis=1), ids
        self.index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
        scores, ids = self.index.search(queries, k)
        return scores, ids
