"""What object storage costs: a loopback S3 server (moto) against the local disk, in one session.

Part ``bytes``: a generated JSONL corpus (``--gb`` in 16 files of equal size, as corpora on
object stores come sharded; moto copies a whole object to answer each range request, so one
huge file would measure moto) uploaded to a bucket and read by 1, 4 and 16 tasks through the readers
over ``s3://``, each task its own blocks: bytes read in total against the corpus size (goal:
within 1.01x, as on local disk), the S3 requests made, and, in a fresh process per size, the
peak memory of reading a 10 MB and the ``--gb`` corpus (goal: at most 1.2x: remote files are
streamed in ranges, never held whole).

Part ``wall``: the same ``synth generate`` (the packaged defaults, ``--passages`` of the English
sample, a fresh process each) with corpus and output on local disk, then both in buckets: wall
time (goal: at most 1.1x), and for the bucket run the requests made and bytes sent and received
(counted in the server's own request log).

    .venv/bin/python bench/storage.py --gb 1 --passages 16 --json bench/results/storage.json
    .venv/bin/python bench/storage.py --quick    # 0.05 GB, 8 passages

Run it alone: on 2 shared cores any other busy process distorts the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import ENGLISH_WORDS  # noqa: E402

SECRET = "bench-secret-key-0000"


def make_corpus(folder: Path, size: int, files: int = 16, seed: int = 0) -> int:
    """``files`` JSONL files of about ``size / files`` bytes of random English; returns bytes written."""
    import random

    rng = random.Random(seed)
    words = [w for w in ENGLISH_WORDS if w]
    number = 0
    for k in range(files):
        written = 0
        with (folder / f"part-{k:03d}.jsonl").open("w", encoding="utf-8") as handle:
            while written < size // files:
                text = " ".join(rng.choices(words, k=rng.randint(60, 260)))
                line = json.dumps({"id": f"doc{number}", "text": text}) + "\n"
                handle.write(line)
                written += len(line)
                number += 1
    return sum(p.stat().st_size for p in folder.iterdir())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def s3_server(log: Path):
    """moto's S3 server on 127.0.0.1; the AWS variables of this process point at it."""
    port = free_port()
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=sink,
        )
        try:
            deadline = time.time() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.time() > deadline:
                    raise SystemExit("moto server did not start")
                time.sleep(0.2)
            os.environ.update(
                AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY=SECRET,
                AWS_DEFAULT_REGION="us-east-1",
            )
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait()


def filesystem():
    import s3fs

    return s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)


def count_requests() -> Counter:
    """Count every S3 call this process makes (by operation), and the bytes GetObject returned."""
    import s3fs.core

    counts: Counter = Counter()
    original = s3fs.core.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        counts[method] += 1
        reply = await original(self, method, *args, **kwargs)
        if method == "get_object":
            counts["get_object_bytes"] += int(reply.get("ContentLength") or 0)
        return reply

    s3fs.core.S3FileSystem._call_s3 = counted
    return counts


READ_CHILD = """
import json, sys
from collections import Counter
sys.path.insert(0, {root!r})
from pipeline.config import CorpusConfig
from pipeline.readers import open_corpus
url = {url!r}
corpus = open_corpus([url], CorpusConfig(path=url), 4)
counts, rows = Counter(), 0
for task in range(4):
    rows += sum(1 for _ in corpus.read(task, 4, counts))
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would count the parent's peak
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"rows": rows, "bytes_read": counts["bytes_read"], "peak_rss": peak}}))
"""


def bytes_part(gb: float, task_counts: list[int], scratch: Path) -> dict:
    from pipeline.config import CorpusConfig
    from pipeline.readers import open_corpus

    fs = filesystem()
    results: dict = {"runs": [], "memory": []}
    for name, size in (("small", 10 << 20), ("large", int(gb * (1 << 30)))):
        local = scratch / name
        local.mkdir()
        written = make_corpus(local, size)
        bucket = f"bench-{name}"
        fs.mkdir(bucket)
        t = time.perf_counter()
        fs.put(str(local) + "/", f"{bucket}/corpus/", recursive=True)
        print(f"{name} corpus: {written / 1e6:.1f} MB uploaded in {time.perf_counter() - t:.0f} s")
        shutil.rmtree(local)
        url = f"s3://{bucket}/corpus"
        if name == "large":
            results["corpus_bytes"] = written
            requests = count_requests()
            for tasks in task_counts:
                requests.clear()
                corpus = open_corpus([url], CorpusConfig(path=url), tasks)
                per_task, rows = [], 0
                t = time.perf_counter()
                for task in range(tasks):
                    counts: Counter = Counter()
                    rows += sum(1 for _ in corpus.read(task, tasks, counts))
                    per_task.append(counts["bytes_read"])
                seconds = time.perf_counter() - t
                run = {
                    "tasks": tasks,
                    "blocks": len(corpus.blocks),
                    "rows": rows,
                    "bytes_total": sum(per_task),
                    "bytes_total_over_corpus": sum(per_task) / written,
                    "bytes_fetched": requests["get_object_bytes"],
                    "bytes_fetched_over_corpus": requests["get_object_bytes"] / written,
                    "requests": {k: v for k, v in requests.items() if k != "get_object_bytes"},
                    "seconds": seconds,
                    "mb_per_s": written / 1e6 / seconds,
                }
                results["runs"].append(run)
                print(
                    f"{tasks:3d} tasks, {run['blocks']:3d} blocks: {run['bytes_total_over_corpus']:.5f}x the "
                    f"corpus read, {run['bytes_fetched_over_corpus']:.5f}x fetched, "
                    f"{sum(run['requests'].values())} requests, {rows} rows, {seconds:.1f} s"
                )
        child = subprocess.run(
            [sys.executable, "-c", READ_CHILD.format(root=str(ROOT), url=url)],
            capture_output=True,
            text=True,
            env=os.environ,
        )
        if child.returncode != 0:
            raise SystemExit(child.stderr[-3000:])
        memory = {
            "corpus": name,
            "corpus_bytes": written,
            **json.loads(child.stdout.strip().splitlines()[-1]),
        }
        results["memory"].append(memory)
        print(
            f"{name}: peak RSS {memory['peak_rss'] / 2**20:.0f} MiB reading {written / 1e6:.0f} MB in 4 tasks"
        )
    small, large = results["memory"]
    results["peak_rss_ratio_large_over_small"] = large["peak_rss"] / small["peak_rss"]
    print(
        f"peak RSS {large['corpus_bytes'] / small['corpus_bytes']:.0f}x the corpus: "
        f"{results['peak_rss_ratio_large_over_small']:.3f}x"
    )
    return results


def _generate(corpus: str, out: str, passages: int, log: Path) -> tuple[float, dict]:
    command = [sys.executable, "-m", "pipeline.cli", "generate", "--corpus", corpus]
    command += ["--limit", str(passages), "--out", out]
    t = time.perf_counter()
    done = subprocess.run(command, env=dict(os.environ, LANG="C.UTF-8"), capture_output=True, text=True)
    wall = time.perf_counter() - t
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"run into {out} failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(_read(out + "/stats.json"))


def _read(path: str) -> bytes:
    if path.startswith("s3://"):
        return filesystem().cat_file(path.removeprefix("s3://"))
    return Path(path).read_bytes()


def wall_part(passages: int, scratch: Path, server_log: Path) -> dict:
    from pipeline.readers.documents import sample_corpus_path

    fs = filesystem()
    fs.mkdir("bench-runs")
    corpus = sample_corpus_path("en")
    fs.put_file(str(corpus), "bench-runs/corpus/en.jsonl")
    results = {}
    # the first run warms the page cache and the embedding store for both; its time is not compared
    _generate(str(corpus), str(scratch / "warm"), passages, scratch / "warm.log")
    for name, source, out in (
        ("local", str(corpus), str(scratch / "local")),
        ("s3", "s3://bench-runs/corpus/en.jsonl", "s3://bench-runs/out"),
    ):
        logged_before = server_log.read_text().count("\n")
        wall, stats = _generate(source, out, passages, scratch / f"{name}.log")
        results[name] = {
            "wall": wall,
            "rows_out": stats["rows_out"],
            "generation": stats["timings_seconds"]["generation"],
        }
        if name == "s3":
            lines = server_log.read_text().splitlines()[logged_before:]
            plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]  # werkzeug colours its log
            methods = Counter(line.split('"')[1].split()[0] for line in plain if line.count('"') >= 2)
            results[name]["requests"] = dict(methods)
            names = fs.find("bench-runs/out")
            results[name]["bytes_written"] = sum(fs.info(n)["size"] for n in names)
            results[name]["objects_written"] = len(names)
        print(
            f"{name:5s}: wall {wall:6.1f} s, generation {results[name]['generation']:.1f} s, "
            f"{stats['rows_out']} rows kept"
        )
    results["ratio_wall_s3_over_local"] = results["s3"]["wall"] / results["local"]["wall"]
    print(f"s3 / local wall: {results['ratio_wall_s3_over_local']:.3f}; requests {results['s3']['requests']}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["bytes", "wall", "all"], default="all")
    parser.add_argument("--gb", type=float, default=1.0, help="corpus size of the bytes part")
    parser.add_argument("--tasks", default="1,4,16", help="task counts of the bytes part")
    parser.add_argument("--passages", type=int, default=16, help="passages of the wall part")
    parser.add_argument("--quick", action="store_true", help="0.05 GB and 8 passages")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.gb, args.passages = 0.05, 8
    figures: dict = {"machine": f"{os.cpu_count()} CPUs", "server": "moto (server mode) on 127.0.0.1"}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        scratch = Path(tmp)
        server_log = scratch / "moto.log"
        with s3_server(server_log):
            if args.part in {"bytes", "all"}:
                (scratch / "bytes").mkdir()
                figures["bytes"] = bytes_part(
                    args.gb, [int(x) for x in args.tasks.split(",")], scratch / "bytes"
                )
            if args.part in {"wall", "all"}:
                (scratch / "wall").mkdir()
                figures["wall"] = wall_part(args.passages, scratch / "wall", server_log)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
