"""A mining pool built once for every process that needs it, on whatever machines they run.

Pools live in a pool store (``negatives.pool_dir``): the cache folder by default, or a URL
that every node reaches (``s3://...``). A pool's folder there is named by its content key
(``pool.pool_key``) and is complete once its ``meta.json`` exists. Every process that needs a
pool (a run, each ``--workers`` process, each Ray replica on any node) takes part in building
it, in a sibling folder ``<key>.build/``:

1. **Parts.** The corpus is cut into parts of ``PART_ROWS`` passages, in corpus order. A
   builder reads the corpus once; for each part not yet done it tries the part's lease
   (``run.lease``, never waiting). With the lease it encodes the part and writes
   ``part-PPPPP.f16`` (vectors) and ``part-PPPPP.jsonl`` (passages), then the marker
   ``part-PPPPP.json`` (rows, bytes, the builder that encoded it: host and process). A part
   whose lease another live builder holds is that builder's. So the builders encode the corpus
   in parallel, each part once; a builder that dies leaves its part's lease to go stale
   (``LEASE_SECONDS``), and a builder's next pass takes the part over.
2. **Finish.** With every part done, one builder (the ``finish`` lease) assembles the pool
   from the parts (``pool._write_files``: passages, vectors, the on-disk index above exact
   search's limit, ``meta.json`` last, with what each builder encoded), publishes it and
   removes ``<key>.build/``. The others wait for ``meta.json``.
3. **Use.** A pool on a local store is used in place. A pool on a URL is copied once per
   machine into the local cache (``meta.json`` last, under a machine-local lock): FAISS maps
   the index's lists from a local file and the vectors are read row by row.

Memory holds one part (its passages and vectors), then the index's build (``ivf.build``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from .. import storage
from ..redaction import redact
from ..run.lease import Lease, LeaseHeld

log = logging.getLogger(__name__)

PART_ROWS = 65_536  # passages encoded under one lease
ENCODE_BATCH = 4096  # passages encoded at a time within a part
WAIT_SECONDS = 2.0  # between looks at parts or a finish another builder holds
META = "meta.json"


def build_folder(passages: Callable[[], Iterable], embedder, store: Path, cache: Path) -> Path:
    """The local folder of the pool of ``passages()`` under ``embedder``, built if no one has."""
    from .pool import embedder_identity, pool_key

    identity = embedder_identity(embedder)
    key, count = pool_key(passages(), identity)
    shared, local = store / key, Path(cache) / key
    if storage.is_remote(shared) and (local / META).exists():
        return local  # this machine's copy
    if not (shared / META).exists():
        log.info("mining pool: building %d passages in %s", count, redact(str(shared)))
        build = Build(store / f"{key}.build", shared, count)
        while not (shared / META).exists():
            encoded = build.encode_free_parts(passages, embedder)
            if build.parts_done() == build.parts:
                build.finish(shared, local, identity)
            elif not encoded:
                time.sleep(WAIT_SECONDS)
    else:
        log.info("mining pool: %d passages, reused from %s", count, redact(str(shared)))
    if storage.is_remote(shared):
        copy_down(shared, local)
        return local
    return shared


class Build:
    """The parts and leases of one pool's build (``<store>/<key>.build/``)."""

    def __init__(self, folder: Path, shared: Path, count: int):
        self.folder = folder
        self.shared = shared  # the pool's own folder: once it has meta.json, the build is over
        self.count = count
        self.parts = -(-count // PART_ROWS)

    def _marker(self, part: int) -> Path:
        return self.folder / f"part-{part:05d}.json"

    def done(self) -> set[int]:
        return {
            int(name[5:10])
            for name in storage.list_names(self.folder)
            if name.startswith("part-") and name.endswith(".json")
        }

    def parts_done(self) -> int:
        return len(self.done())

    def encode_free_parts(self, passages: Callable[[], Iterable], embedder) -> int:
        """One pass over the corpus, encoding every part no one has done or holds; how many it did."""
        from tqdm import tqdm

        todo = set(range(self.parts)) - self.done()
        if not todo:
            return 0
        source = iter(passages())
        encoded = 0
        progress = tqdm(total=self.count, desc="mining pool", unit="passage", leave=False)
        for part in range(self.parts):
            rows = itertools.islice(source, PART_ROWS)
            size = min(PART_ROWS, self.count - part * PART_ROWS)
            if part in todo and self._encode(part, rows, embedder, progress):
                encoded += 1
            else:
                for _ in rows:  # another builder's part: read past it
                    pass
                progress.update(size)
        progress.close()
        return encoded

    def _encode(self, part: int, rows: Iterator, embedder, progress) -> bool:
        lease = Lease(self.folder / f"part-{part:05d}", f"mining pool part {part}", wait=0)
        try:
            lease.acquire()
        except LeaseHeld:
            return False
        try:
            if self._marker(part).exists() or (self.shared / META).exists():
                return False  # done by another builder between the listing and the lease
            started = time.perf_counter()
            passages = [(p.passage_id, p.source_id, p.text) for p in rows]
            texts = [text for _, _, text in passages]
            blocks = []
            for i in range(0, len(texts), ENCODE_BATCH):
                block = texts[i : i + ENCODE_BATCH]
                blocks.append(np.asarray(embedder.encode(block, role="passage"), dtype=np.float16))
                progress.update(len(block))
            vectors = np.concatenate(blocks)
            lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages).encode("utf-8")
            name = f"part-{part:05d}"
            storage.write_bytes(self.folder / f"{name}.f16", vectors.tobytes())
            storage.write_bytes(self.folder / f"{name}.jsonl", lines)
            lease.confirm()  # a builder that stalled past its lease leaves the part to its new owner
            marker = {
                "rows": len(passages),
                "dimension": int(vectors.shape[1]) if len(passages) else 0,
                "bytes": vectors.nbytes + len(lines),
                "builder": f"{socket.gethostname()}:{os.getpid()}",
                "seconds": round(time.perf_counter() - started, 2),
            }
            storage.write_bytes(self._marker(part), json.dumps(marker).encode())
            return True
        finally:
            lease.release()

    def markers(self) -> list[dict]:
        return [json.loads(storage.read_bytes(self._marker(part))) for part in range(self.parts)]

    def batches(self) -> Iterator[tuple[list[tuple[str, str, str]], np.ndarray]]:
        for part, marker in enumerate(self.markers()):
            name = f"part-{part:05d}"
            lines = storage.read_bytes(self.folder / f"{name}.jsonl").splitlines()
            rows = [tuple(json.loads(line)) for line in lines]
            vectors = np.frombuffer(storage.read_bytes(self.folder / f"{name}.f16"), dtype=np.float16)
            yield rows, vectors.reshape(marker["rows"], marker["dimension"] or -1)

    def finish(self, shared: Path, local: Path, identity: str) -> None:
        """Assemble and publish the pool, if no other builder is doing it."""
        from .pool import _write_files

        lease = Lease(self.folder / "finish", "mining pool", wait=0)
        try:
            lease.acquire()
        except LeaseHeld:
            time.sleep(WAIT_SECONDS)
            return
        try:
            if (shared / META).exists():
                return
            markers = self.markers()
            built_by: dict[str, dict] = {}
            for marker in markers:
                builder = built_by.setdefault(marker["builder"], {"parts": 0, "passages": 0, "bytes": 0})
                builder["parts"] += 1
                builder["passages"] += marker["rows"]
                builder["bytes"] += marker["bytes"]
            dimension = next((m["dimension"] for m in markers if m["dimension"]), None)
            target = local if storage.is_remote(shared) else shared
            _write_files(target, self.batches(), identity, dimension, {"built_by": built_by})
            lease.confirm()
            if storage.is_remote(shared):
                publish(local, shared)
        finally:
            lease.release()
        storage.remove(self.folder)


def files_of(folder: Path) -> list[str]:
    """The pool's files, ``meta.json`` last (the file that says the others are all there)."""
    names = sorted(n for n in storage.list_names(folder) if n != META and not n.startswith("."))
    return [*names, META]


def publish(local: Path, shared: Path) -> None:
    """Upload a finished local pool folder, ``meta.json`` last."""
    fs, name = storage.fs_path(shared)
    for file in files_of(local):
        fs.put_file(str(local / file), f"{name}/{file}")


def copy_down(shared: Path, local: Path) -> None:
    """This machine's copy of a pool published on a store: one download, ``meta.json`` last."""
    from .pool import _locked

    local.parent.mkdir(parents=True, exist_ok=True)
    with _locked(local.parent / f"{local.name}.lock"):
        if (local / META).exists():
            return
        log.info("mining pool: copying %s to %s", redact(str(shared)), local)
        fs, name = storage.fs_path(shared)
        building = local.with_name(f".{local.name}-{uuid.uuid4().hex[:8]}")
        building.mkdir()
        try:
            for file in files_of(shared):
                fs.get_file(f"{name}/{file}", str(building / file))
            if local.exists():  # an unfinished copy left by a killed process
                storage.remove(local)
            os.replace(building, local)
        finally:
            storage.remove(building)
