"""Mining search: recall of the HNSW index against exact search, and time per query, by pool size.

Vectors are synthetic unit vectors around cluster centres (sentence embeddings of a
corpus are clustered by topic; uniform random vectors would be the hardest case
for any graph index and unlike real data). For each size: exact top-k by a matrix
product, HNSW top-k at the default settings of pipeline/embed/index.py, the share of the
exact top-k the index finds (recall@k), build time, and search time per query.

    .venv/bin/python bench/index_recall.py --sizes 10000,50000,100000 --json bench/results/index_recall.json
    .venv/bin/python bench/index_recall.py --quick     # 20k vectors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def clustered(count: int, dimension: int, clusters: int, seed: int, noise: float = 0.8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, count)]
    vectors += noise * rng.normal(size=(count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def measure(size: int, dimension: int, queries: int, k: int, noise: float) -> dict:
    from pipeline.embed.index import VectorIndex

    pool = clustered(size, dimension, clusters=max(10, size // 500), seed=0, noise=noise)
    # queries near corpus passages, as a query lies near its positive
    rng = np.random.default_rng(1)
    probe = pool[rng.choice(size, queries, replace=False)]
    probe = probe + 0.05 * rng.normal(size=(queries, dimension)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    exact = VectorIndex(pool, exact_max=size)
    t = time.perf_counter()
    _, truth = exact.search(probe, k)
    exact_seconds = (time.perf_counter() - t) / queries
    t = time.perf_counter()
    hnsw = VectorIndex(pool, exact_max=0)
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, found = hnsw.search(probe, k)
    hnsw_seconds = (time.perf_counter() - t) / queries
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))
    result = {
        "size": size,
        "dimension": dimension,
        "k": k,
        "noise": noise,
        "recall_at_k": round(recall, 4),
        "hnsw_build_seconds": round(build, 2),
        "exact_ms_per_query": round(exact_seconds * 1000, 3),
        "hnsw_ms_per_query": round(hnsw_seconds * 1000, 3),
    }
    print(
        f"{size:>7} vectors, noise {noise}: recall@{k} {recall:.4f}, build {build:.1f} s, per query: exact "
        f"{exact_seconds * 1000:.2f} ms, HNSW {hnsw_seconds * 1000:.2f} ms"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=66, help="rank_max + room for same-document skips")
    parser.add_argument("--noise", default="0.8,2.0", help="spread around the centres (higher: harder)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [20000] if args.quick else [int(x) for x in args.sizes.split(",")]
    noises = [float(x) for x in args.noise.split(",")]
    results = [measure(size, args.dimension, args.queries, args.k, n) for n in noises for size in sizes]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
