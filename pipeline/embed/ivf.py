"""The mining index of a large pool: FAISS IVF-PQ with its lists on disk, built in shards.

Above exact search's limit a pool gets an inverted-file index whose lists live in one file
(``lists.ivfdata``) that FAISS maps into memory (``OnDiskInvertedLists``). A searching process
holds only the list centres (compared with each query to pick the lists to probe) and the
product-quantizer's tables, so its own memory stays nearly flat as the pool grows; the lists'
pages are the kernel's page cache, shared by every process on the node that searches the same
file, and dropped under memory pressure.

Why FAISS and not a vector database: FAISS is already the project's search library; its
documented way to build an on-disk IVF index is exactly the cluster's way (train once on a
sample, let each builder add its share of the vectors to a copy of the trained index, merge
the shards' lists into one on-disk file: ``faiss.contrib.ondisk.merge_ondisk``); and the files
it writes are plain files that a pool folder on object storage carries like any other.
LanceDB (Lance's IVF-PQ) was the other candidate; it adds a second columnar engine beside
Parquet and SQLite for the same job. docs/mining.md has the figures.

Product quantization loses rank order among close passages, and mining cares about ranks
``rank_min..rank_max``. So the index returns ``REFINE`` (8) times the candidates asked for, and
those are re-scored exactly against the pool's float16 vectors, read row by row from
``vectors.f16`` (``os.pread``: no memory map, so the process does not grow with the rows it
has read). bench/index_disk.py measures recall@66 against exact search at 100k, 1M and 5M.

The parameters come from the pool's size (``IvfParameters.for_pool``) and are written into
the pool's ``meta.json``, so a search uses the settings the index was built with.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import console

INDEX_FILE = "index.faiss"
LISTS_FILE = "lists.ivfdata"
LISTS_PER_ROOT = 4  # lists = 4 x sqrt(pool), a power of two: FAISS's usual range is 4-16 x sqrt
MIN_LISTS, MAX_LISTS = 256, 16_384
TRAIN_PER_LIST = 40  # k-means wants at least 39 points per centre
MAX_TRAIN_ROWS = 1 << 19  # the training sample's cap (2 GiB at 1024 dimensions in float32)
TRAIN_ITERATIONS = 10
PROBE_SHARE = 1 / 64  # lists probed per query, as a share of the lists
MIN_PROBES = 32
REFINE = 8  # candidates per neighbour asked, re-scored exactly: recall@66 at 1M 0.972 with 4, 1.000 with 8
ADD_BLOCK = 65_536  # vectors read from the file and added to a shard at a time
SHARD_ROWS = 1 << 20  # vectors per shard: its lists are held in memory until written (136 MiB at 1024 dims)
SEARCH_BLOCK = 32  # queries re-scored at a time (32 x 8 x 66 rows: 69 MB at 1024 dims in float32)


@dataclass(frozen=True)
class IvfParameters:
    lists: int
    probes: int
    code_bytes: int  # product-quantizer bytes per vector (one byte per 8 dimensions)
    train_rows: int
    refine: int

    @classmethod
    def for_pool(cls, size: int, dimension: int) -> IvfParameters:
        lists = 2 ** round(math.log2(max(1.0, LISTS_PER_ROOT * math.sqrt(size))))
        # a small pool (tests) gets fewer lists than the floor: each list needs its training points
        lists = min(max(MIN_LISTS, min(MAX_LISTS, lists)), max(1, size // TRAIN_PER_LIST))
        return cls(
            lists=lists,
            probes=min(lists, max(MIN_PROBES, int(lists * PROBE_SHARE))),
            code_bytes=_code_bytes(dimension),
            train_rows=min(size, lists * TRAIN_PER_LIST, MAX_TRAIN_ROWS),
            refine=REFINE,
        )

    @classmethod
    def from_meta(cls, meta: dict) -> IvfParameters:
        return cls(**meta)

    def as_meta(self) -> dict:
        return asdict(self)


def _code_bytes(dimension: int) -> int:
    """Bytes per vector: one per 8 dimensions, on a count that divides the dimension."""
    for count in range(max(1, dimension // 8), 0, -1):
        if dimension % count == 0:
            return count
    return 1


def build(folder: Path, size: int, dimension: int, seed: int = 0) -> IvfParameters:
    """Build the on-disk index of ``folder/vectors.f16`` in ``folder``; the parameters it used.

    Trains on a seeded sample of rows, adds the vectors shard by shard (each shard could be
    another builder's: only its row range is read), merges the shards' lists into one file
    and deletes the shards. Memory holds the sample, then one shard's lists.
    """
    folder = Path(folder)
    vectors = folder / "vectors.f16"
    parameters = IvfParameters.for_pool(size, dimension)
    rows = np.sort(np.random.default_rng(seed).choice(size, parameters.train_rows, replace=False))
    trained = folder / "trained.faiss"
    write_trained(train(read_rows(vectors, rows, dimension), parameters, seed), trained)
    shards = []
    for number, start in enumerate(range(0, size, SHARD_ROWS)):
        shards.append(folder / f"shard-{number:05d}.faiss")
        blocks = read_blocks(vectors, dimension, start, min(size, start + SHARD_ROWS))
        write_shard(trained, blocks, shards[-1])
    merge(trained, shards, folder)
    for path in (trained, *shards):
        path.unlink()
    return parameters


def read_blocks(path: Path, dimension: int, start: int, stop: int) -> Iterable[tuple[int, np.ndarray]]:
    """(first row number, float16 rows) blocks of rows ``start..stop`` of a vectors file."""
    with Path(path).open("rb") as source:
        source.seek(start * dimension * 2)
        for first in range(start, stop, ADD_BLOCK):
            count = min(ADD_BLOCK, stop - first) * dimension
            yield first, np.fromfile(source, dtype=np.float16, count=count).reshape(-1, dimension)


def read_rows(path: Path, rows: np.ndarray, dimension: int) -> np.ndarray:
    """The given rows of a float16 vectors file, as float32."""
    handle = os.open(path, os.O_RDONLY)
    try:
        return _pread_rows(handle, rows, dimension)
    finally:
        os.close(handle)


def _pread_rows(handle: int, rows: np.ndarray, dimension: int) -> np.ndarray:
    """Rows read one by one, not through a memory map: a map's pages would count as the process's."""
    out = np.empty((len(rows), dimension), dtype=np.float16)
    width = dimension * 2
    for i, row in enumerate(np.asarray(rows).tolist()):
        out[i] = np.frombuffer(os.pread(handle, width, row * width), np.float16)
    return out.astype(np.float32)


def train(sample: np.ndarray, parameters: IvfParameters, seed: int = 0):
    """An empty IVF-PQ index (inner product) whose list centres and codebooks fit ``sample``."""
    import faiss

    dimension = sample.shape[1]
    # a flat quantizer: assigning 1M vectors to 8,192 centres by one matrix product took a fifth
    # of the time an HNSW graph over the centres took (efSearch 128), on this 2-core machine
    spec = f"IVF{parameters.lists},PQ{parameters.code_bytes}"
    index = faiss.index_factory(dimension, spec, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    # polysemous training anneals the codes for a Hamming pre-filter we do not use: 10x the time
    ivf.do_polysemous_training = False
    ivf.cp.niter = TRAIN_ITERATIONS
    ivf.cp.seed = seed
    ivf.cp.min_points_per_centroid = 1  # the sample is sized on purpose; no warning for a small one
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def write_trained(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def write_shard(trained: Path, blocks: Iterable[tuple[int, np.ndarray]], path: Path) -> int:
    """Add (first row number, vectors) blocks to a copy of the trained index; write it; its count."""
    import faiss

    index = faiss.read_index(str(trained))
    added = 0
    for first, block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        index.add_with_ids(block, np.arange(first, first + len(block), dtype=np.int64))
        added += len(block)
    faiss.write_index(index, str(path))
    return added


def merge(trained: Path, shards: list[Path], folder: Path) -> None:
    """Merge the shards' lists into ``folder/lists.ivfdata`` and write ``folder/index.faiss``."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    index = faiss.read_index(str(trained))
    # the index records the lists' path; a reader maps the file beside the index wherever it is now
    with console.quiet():  # FAISS prints each resize of the lists' file on stdout
        merge_ondisk(index, [str(p) for p in shards], str(Path(folder) / LISTS_FILE))
    faiss.write_index(index, str(Path(folder) / INDEX_FILE))


class DiskIndex:
    """Search an on-disk IVF-PQ index, re-scoring its candidates against the float16 vectors."""

    kind = "ivf"

    def __init__(self, folder: Path, size: int, dimension: int, parameters: IvfParameters):
        import faiss

        vectors_file = Path(folder) / "vectors.f16"
        self.parameters = parameters
        self.size, self.dimension = size, dimension
        # the lists' file is mapped from this folder, read only (IO_FLAG_ONDISK_SAME_DIR would do
        # the same, but prints a line on stdout for every index read)
        self.index = faiss.read_index(str(Path(folder) / INDEX_FILE), faiss.IO_FLAG_SKIP_IVF_DATA)
        ivf = faiss.extract_index_ivf(self.index)
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        lists.filename = str(Path(folder) / LISTS_FILE)
        lists.read_only = True
        lists.do_mmap()
        ivf.nprobe = parameters.probes
        self._vectors = os.open(vectors_file, os.O_RDONLY)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row numbers) of the k nearest, by exact inner product among the index's candidates."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.size)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        fetch = min(self.size, k * self.parameters.refine)
        for start in range(0, len(queries), SEARCH_BLOCK):
            block = queries[start : start + SEARCH_BLOCK]
            _, candidates = self.index.search(block, fetch)
            found_scores, found_rows = self._rescore(block, candidates, k)
            scores[start : start + len(block), : found_rows.shape[1]] = found_scores
            rows[start : start + len(block), : found_rows.shape[1]] = found_rows
        return scores, rows

    def _rescore(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        wanted = np.unique(candidates[candidates >= 0])
        vectors = _pread_rows(self._vectors, wanted, self.dimension)
        position = np.searchsorted(wanted, np.maximum(candidates, 0))
        scores = np.einsum("qd,qcd->qc", queries, vectors[position])
        scores[candidates < 0] = -np.inf
        # highest first, the lower row first among equal scores (as exact search orders them)
        order = np.lexsort((candidates, -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(
            np.where(candidates < 0, -1, candidates), order, axis=1
        )
