"""What sharding and the Ray executor cost: bytes read per task, and local vs Ray wall time.

Part ``bytes``: a generated JSONL corpus (several small files and one big one,
``--gb`` in all) read by 1, 4 and 16 tasks through the readers, each task its own
blocks; bytes read per task and in total, against the corpus size (before the
readers, every task read the whole stream: tasks x size).

Part ``wall``: the same input (the packaged sample, ``--passages``) through
``synth generate`` with ``--executor local`` and ``--executor ray`` (each a fresh
process, its own engine, the packaged defaults); wall time, and where the
difference goes: start-up (total - generation) and generation per passage.

    .venv/bin/python bench/executors.py --gb 1 --passages 16 --json bench/results/executors.json
    .venv/bin/python bench/executors.py --quick    # 0.1 GB, 8 passages

Run it alone: on 2 shared cores any other busy process distorts the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import ENGLISH_WORDS as EN  # noqa: E402


def make_corpus(folder: Path, size: int, seed: int = 0) -> int:
    """Eight small JSONL files (1% of the size each) and one big one (the rest); returns bytes written."""
    rng = random.Random(seed)
    words = [w for w in EN if w]
    targets = [size // 100] * 8 + [size - 8 * (size // 100)]
    number = 0
    for k, target in enumerate(targets):
        name = "big.jsonl" if k == 8 else f"small-{k}.jsonl"
        written = 0
        with (folder / name).open("w", encoding="utf-8") as handle:
            while written < target:
                text = " ".join(rng.choices(words, k=rng.randint(60, 260)))
                line = json.dumps({"id": f"doc{number}", "text": text}) + "\n"
                handle.write(line)
                written += len(line)
                number += 1
    return sum(p.stat().st_size for p in folder.iterdir())


def bytes_part(gb: float, task_counts: list[int]) -> dict:
    from pipeline.config import CorpusConfig
    from pipeline.readers import open_corpus

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        size = make_corpus(folder, int(gb * (1 << 30)))
        print(f"corpus: {size / 1e9:.3f} GB in 9 files, written in {time.perf_counter() - t:.0f} s")
        results = []
        for tasks in task_counts:
            corpus = open_corpus([str(folder)], CorpusConfig(path=str(folder)), tasks)
            per_task, rows = [], 0
            t = time.perf_counter()
            for task in range(tasks):
                counts = Counter()
                rows += sum(1 for _ in corpus.read(task, tasks, counts))
                per_task.append(counts["bytes_read"])
            seconds = time.perf_counter() - t
            total = sum(per_task)
            result = {
                "tasks": tasks,
                "blocks": len(corpus.blocks),
                "rows": rows,
                "bytes_total": total,
                "bytes_total_over_corpus": total / size,
                "bytes_per_task_min": min(per_task),
                "bytes_per_task_max": max(per_task),
                "bytes_total_before_readers": tasks * size,  # every task read the whole stream
                "seconds": seconds,
            }
            results.append(result)
            print(
                f"{tasks:3d} tasks, {result['blocks']:3d} blocks: {total / 1e9:.4f} GB read "
                f"({result['bytes_total_over_corpus']:.5f}x the corpus; before: {tasks}x), per task "
                f"{min(per_task) / 1e6:.0f}-{max(per_task) / 1e6:.0f} MB, {rows} rows, {seconds:.1f} s"
            )
        return {"corpus_bytes": size, "runs": results}


def wall_part(passages: int, lang: str) -> dict:
    results = {}
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8")
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("local", "ray"):
            out = Path(tmp) / executor
            command = [sys.executable, "-m", "pipeline.cli", "generate", "--lang", lang]
            command += ["--limit", str(passages), "--out", str(out), "--executor", executor]
            t = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                raise SystemExit(f"{executor} run failed:\n{done.stderr[-3000:]}")
            stats = json.loads((out / "stats.json").read_text())
            timings = stats["timings_seconds"]
            generation = timings["generation"]
            results[executor] = {
                "wall": wall,
                "rows_out": stats["rows_out"],
                "passages": stats["reading"]["passages"],
                "generation": generation,
                "startup": wall - generation,
                "generation_per_passage": generation / max(1, stats["reading"]["passages"]),
                "timings": timings,
            }
            print(
                f"{executor:5s}: wall {wall:6.1f} s, start-up {wall - generation:5.1f} s, generation "
                f"{generation:5.1f} s ({generation / passages:.2f} s/passage), {stats['rows_out']} rows kept"
            )
    local, ray = results["local"], results["ray"]
    results["ratio_wall_ray_over_local"] = ray["wall"] / local["wall"]
    results["ratio_generation_ray_over_local"] = ray["generation"] / local["generation"]
    results["extra_startup_seconds"] = ray["startup"] - local["startup"]
    print(
        f"ray / local: wall {results['ratio_wall_ray_over_local']:.3f}, generation "
        f"{results['ratio_generation_ray_over_local']:.3f}, "
        f"start-up +{results['extra_startup_seconds']:.1f} s"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["bytes", "wall", "all"], default="all")
    parser.add_argument("--gb", type=float, default=1.0, help="corpus size of the bytes part")
    parser.add_argument("--tasks", default="1,4,16", help="task counts of the bytes part")
    parser.add_argument("--passages", type=int, default=16, help="passages of the wall part")
    parser.add_argument("--lang", default="en")
    parser.add_argument("--quick", action="store_true", help="0.1 GB and 8 passages")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.gb, args.passages = 0.1, 8
    figures: dict = {"machine": f"{os.cpu_count()} CPUs"}
    if args.part in {"bytes", "all"}:
        figures["bytes"] = bytes_part(args.gb, [int(x) for x in args.tasks.split(",")])
    if args.part in {"wall", "all"}:
        figures["wall"] = wall_part(args.passages, args.lang)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
