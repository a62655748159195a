"""A mining pool built by a Ray cluster on the loopback S3 server, with a node lost mid-build.

A cluster of ``ray.cluster_utils.Cluster`` (a head with no CPUs, two one-CPU worker nodes) and a
moto S3 server on 127.0.0.1. One builder runs on each node (``PassagePool.build`` with the store
on S3 and the node's own cache folder), encoding parts of the corpus side by side
(``pipeline/embed/pool_build.py``). Once a few parts have landed, the second node is removed
(its raylet and workers killed, as a lost machine) while it holds a part's lease; the first
builder takes that part over and finishes the pool. A third node then joins, and a searcher on
the first and on the third node each opens the pool (the third copies it down) and searches it.

Measured: the build's wall time; the parts, passages and bytes each builder encoded (from the
pool's ``meta.json``); that no part was encoded twice except the one lost with the node; what
each searcher copied and found.

    .venv/bin/python bench/pool_cluster.py            # bench/results/pool_cluster.json
    .venv/bin/python bench/pool_cluster.py --quick    # fewer passages

The embedder is a stand-in (vectors seeded by each text's digest, a fixed pause per part), so
the figures measure the build's coordination, not an encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.storage import s3_server  # noqa: E402  (moto's S3 server on 127.0.0.1)

DIMENSION = 64


class StandIn:
    """Vectors seeded by each text's digest (alike in every process), a pause per call."""

    identity = "stand-in-64"
    dimension = DIMENSION
    name = "stand-in"

    def __init__(self, pause: float):
        self.pause = pause

    def encode(self, texts, show_progress=False, role="passage"):
        import hashlib

        import numpy as np

        time.sleep(self.pause)
        out = np.array(
            [
                np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(
                    size=DIMENSION
                )
                for t in texts
            ]
        )
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def passages(count: int):
    from pipeline.readers.passages import Passage

    return [
        Passage(f"p{i}#0", f"d{i}", None, f"passage {i} about topic {i % 97}", "en") for i in range(count)
    ]


def open_pool(store: str, cache: str, count: int, part_rows: int, pause: float, pid_file: str | None) -> dict:
    """Run on a node: take part in the build (or copy the pool down), then search it."""
    import pipeline.embed.pool_build as pool_build
    from pipeline.embed.pool import PassagePool
    from pipeline.storage import location

    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    pool_build.PART_ROWS = part_rows
    pool_build.WAIT_SECONDS = 0.2
    embedder = StandIn(pause)
    rows = passages(count)
    started = time.perf_counter()
    pool = PassagePool.build(lambda: iter(rows), embedder, location(store), cache)
    seconds = time.perf_counter() - started
    _, nearest = pool.nearest(StandIn(0).encode([rows[7].text]), 1)
    copied = sum(f.stat().st_size for f in pool.folder.iterdir())
    return {
        "pid": os.getpid(),
        "seconds": round(seconds, 2),
        "nearest": int(nearest[0, 0]),
        "local_bytes": copied,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=6000)
    parser.add_argument("--part-rows", type=int, default=200)
    parser.add_argument(
        "--pause", type=float, default=0.5, help="seconds the stand-in encoder takes per part"
    )
    parser.add_argument("--remove-after", type=int, default=6, help="parts done before the second node goes")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/pool_cluster.json")
    args = parser.parse_args()
    if args.quick:
        args.passages, args.part_rows, args.json = 1200, 100, None

    work = Path(tempfile.mkdtemp(prefix="pool-cluster-"))
    with s3_server(work / "moto.log") as endpoint:
        measure(args, work, endpoint)


def measure(args, work: Path, endpoint: str) -> None:
    import ray
    import s3fs
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    env = {
        name: os.environ[name]
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint,
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        use_listings_cache=False,
    )
    fs.mkdir("pools")
    store = "s3://pools/store"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {name: cluster.add_node(num_cpus=1) for name in ("a", "b")}
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), **env}},
        logging_level="WARNING",
        log_to_driver=False,
    )
    remote = ray.remote(num_cpus=1, max_retries=0)(open_pool)

    def on(name: str):
        strategy = NodeAffinitySchedulingStrategy(node_id=nodes[name].node_id, soft=False)
        return remote.options(scheduling_strategy=strategy)

    started = time.perf_counter()
    builds = {
        name: on(name).remote(
            store,
            str(work / f"cache-{name}"),
            args.passages,
            args.part_rows,
            args.pause,
            str(work / f"pid-{name}"),
        )
        for name in ("a", "b")
    }
    removed_at = None
    while removed_at is None:
        done = [
            p for p in fs.find("pools/store") if p.endswith(".json") and "/part-" in p and "lease-" not in p
        ]
        if len(done) >= args.remove_after:
            cluster.remove_node(nodes["b"], allow_graceful=False)  # the machine is gone, mid-build
            removed_at = len(done)
        time.sleep(0.05)
    first = ray.get(builds["a"])
    build_seconds = time.perf_counter() - started
    lost = None
    try:
        ray.get(builds["b"], timeout=30)
    except Exception as exc:  # the node's task died with it
        lost = type(exc).__name__
    (key,) = [p.rsplit("/", 1)[-1] for p in fs.ls("pools/store")]
    meta = json.loads(fs.cat(f"pools/store/{key}/meta.json"))
    pids = {(work / f"pid-{name}").read_text(): name for name in ("a", "b")}
    per_node = {
        pids.get(builder.rsplit(":", 1)[1], builder): counts for builder, counts in meta["built_by"].items()
    }

    nodes["c"] = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    searches = {
        name: on(name).remote(store, str(work / f"cache-{name}"), args.passages, args.part_rows, 0.0, None)
        for name in ("a", "c")
    }
    searched = {name: ray.get(ref) for name, ref in searches.items()}
    stored = sum(fs.du(f"pools/store/{key}", total=False).values())
    parts = -(-args.passages // args.part_rows)
    result = {
        "passages": args.passages,
        "parts": parts,
        "part_rows": args.part_rows,
        "pause_per_part_s": args.pause,
        "parts_done_when_node_b_removed": removed_at,
        "node_b_task": lost,
        "build_seconds": round(build_seconds, 2),
        "encoded_per_node": per_node,
        "parts_encoded_in_all": sum(c["parts"] for c in per_node.values()),
        "bytes_on_s3": stored,
        "node_a_build": first,
        "searches": searched,
        "one_node_alone_s": round(parts * args.pause, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
