"""The on-disk IVF-PQ mining index (pipeline/embed/ivf.py) from 100k to 5M passages: build time,
bytes on disk, the memory of a searching process, queries per second and recall@66 against
exact search.

Vectors are synthetic unit vectors around cluster centres (``bench/index_recall.py``'s
generator, one centre per 500 vectors), written block by block into a pool folder's
``vectors.f16`` exactly as a pool stores them, so nothing here holds the pool in memory.
The index is built by the pool's own function (``ivf.build``) in a child process, and searched
by another child process that opens the index as a pool does and reports its memory from
/proc: ``VmHWM`` (peak resident), ``RssAnon`` (memory of its own) and ``RssFile`` (pages of
mapped files: the lists' file, which the kernel shares among the node's processes and drops
under pressure). Recall is measured against exact top-k over the same float16 vectors, for
queries near random pool vectors (a query lies near its positive).

    .venv/bin/python bench/index_disk.py                                  # 100k, 1M, 5M at 1024 dims
    .venv/bin/python bench/index_disk.py --sizes 100000 --dimension 384   # one size
    .venv/bin/python bench/index_disk.py --quick                          # 50k at 256 dims

Writes bench/results/index_disk.json; figures in docs/mining.md. A 5M pool needs about 11 GB of
free disk in --work (default: a temporary folder), removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCK = 65_536


def write_vectors(path: Path, size: int, dimension: int, noise: float, seed: int = 0) -> None:
    """Clustered unit vectors, float16, block by block (the same vectors for the same arguments)."""
    centres = np.random.default_rng(seed).normal(size=(max(10, size // 500), dimension)).astype(np.float32)
    with path.open("wb") as sink:
        for number, start in enumerate(range(0, size, BLOCK)):
            rng = np.random.default_rng([seed, number])
            count = min(BLOCK, size - start)
            block = centres[rng.integers(0, len(centres), count)]
            block += noise * rng.normal(size=(count, dimension)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            sink.write(block.astype(np.float16).tobytes())


def probe_queries(path: Path, size: int, dimension: int, count: int) -> np.ndarray:
    from pipeline.embed.ivf import read_rows

    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(size, count, replace=False))
    queries = read_rows(path, rows, dimension) + 0.05 * rng.normal(size=(count, dimension)).astype(np.float32)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def exact_top(path: Path, size: int, dimension: int, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by inner product, the file read block by block."""
    from pipeline.embed.index import VectorIndex

    vectors = np.memmap(path, dtype=np.float16, mode="r", shape=(size, dimension))
    return VectorIndex(vectors, exact_max=size).search(queries, k)[1]


def memory() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) // 1024  # MiB
    return fields


def child_build(folder: Path, size: int, dimension: int) -> None:
    from pipeline.embed import ivf

    started = time.perf_counter()
    parameters = ivf.build(folder, size, dimension)
    result = {"seconds": time.perf_counter() - started, "parameters": parameters.as_meta(), **memory()}
    print(json.dumps(result))


def child_search(
    folder: Path, size: int, dimension: int, queries_file: Path, k: int, rounds: int, refine: int
) -> None:
    from dataclasses import replace

    from pipeline.embed import ivf

    queries = np.load(queries_file)
    meta = json.loads((folder / "meta.json").read_text())
    before = memory()
    index = ivf.DiskIndex(folder, size, dimension, replace(ivf.IvfParameters.from_meta(meta), refine=refine))
    index.search(queries[:16], k)  # warm: the first lists and rows read
    started = time.perf_counter()
    for _ in range(rounds):
        _, found = index.search(queries, k)
    seconds = time.perf_counter() - started
    np.save(folder / "found.npy", found)
    print(json.dumps({"qps": rounds * len(queries) / seconds, "before_open": before, **memory()}))


def run_child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    size: int, dimension: int, queries: int, k: int, noise: float, work: Path, refines: list[int]
) -> dict:
    folder = work / f"pool-{size}-{dimension}"
    folder.mkdir(parents=True, exist_ok=True)
    vectors = folder / "vectors.f16"
    started = time.perf_counter()
    write_vectors(vectors, size, dimension, noise)
    generated = time.perf_counter() - started
    probe = probe_queries(vectors, size, dimension, queries)
    np.save(folder / "queries.npy", probe)
    started = time.perf_counter()
    truth = exact_top(vectors, size, dimension, probe, k)
    exact_qps = queries / (time.perf_counter() - started)
    built = run_child("--build", str(folder), str(size), str(dimension))
    (folder / "meta.json").write_text(json.dumps(built["parameters"]))
    by_refine = {}
    for refine in refines:  # each in a fresh process: its memory and its first reads are its own
        searched = run_child("--search", str(folder), str(size), str(dimension), str(k), str(refine))
        found = np.load(folder / "found.npy")
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))
        by_refine[refine] = {f"recall_at_{k}": round(recall, 4), "search_qps": round(searched["qps"], 1)}
    default = by_refine.get(built["parameters"]["refine"], {})
    index_bytes = sum((folder / name).stat().st_size for name in ("index.faiss", "lists.ivfdata"))
    result = {
        "size": size,
        "dimension": dimension,
        "noise": noise,
        "k": k,
        "parameters": built["parameters"],
        f"recall_at_{k}": default.get(f"recall_at_{k}"),
        "by_refine": by_refine,
        "build_seconds": round(built["seconds"], 1),
        "build_peak_rss_mib": built["VmHWM"],
        "index_bytes": index_bytes,
        "vectors_bytes": vectors.stat().st_size,
        "search_qps": default.get("search_qps"),
        "exact_qps": round(exact_qps, 2),
        "search_peak_rss_mib": searched["VmHWM"],
        "search_rss_anon_mib": searched["RssAnon"],
        "search_rss_file_mib": searched["RssFile"],
        "search_rss_before_open_mib": searched["before_open"]["VmRSS"],
        "generate_seconds": round(generated, 1),
    }
    print(json.dumps(result), flush=True)
    shutil.rmtree(folder)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--build", "--search"):
        folder, size, dimension = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        if sys.argv[1] == "--build":
            child_build(folder, size, dimension)
        else:
            child_search(
                folder, size, dimension, folder / "queries.npy", int(sys.argv[5]), 3, int(sys.argv[6])
            )
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=66, help="rank_max + room for same-document skips")
    parser.add_argument("--noise", type=float, default=0.8, help="spread around the centres")
    parser.add_argument("--refines", default="4,8", help="refine factors searched (the default one included)")
    parser.add_argument("--work", type=Path, default=None, help="where the pools are written")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/index_disk.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.dimension, args.json = "50000", 256, None
    work = args.work or Path(tempfile.mkdtemp(prefix="index-disk-"))
    refines = [int(r) for r in args.refines.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [
        measure(size, args.dimension, args.queries, args.k, args.noise, work, refines) for size in sizes
    ]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"results": results, "machine": "2-core CPU, no GPU"}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
