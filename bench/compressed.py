"""Reading a gzip corpus with 4 tasks: one big compressed file against the same text in 16 files.

A compressed stream cannot be entered mid-way, so a compressed file is one block and one task
reads it whole (pipeline/readers/compressed.py). This measures what that costs and what
splitting the corpus into files buys: a ``--gb`` JSON Lines corpus (random English, uncompressed
size) is written as 16 gzip files, and as one file (the 16 gzip members concatenated, which is
a valid gzip file). For each layout every one of 4 tasks reads its share through the readers in
a fresh process: rows, compressed bytes read against the files' size, seconds, peak memory.
The layout's wall time with 4 tasks in parallel is its slowest task.

    .venv/bin/python bench/compressed.py --gb 1 --json bench/results/compressed.json
    .venv/bin/python bench/compressed.py --quick     # 0.05 GB

Run it alone: on 2 shared cores any other busy process distorts the timings.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import ENGLISH_WORDS  # noqa: E402

TASKS = 4
FILES = 16
CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from collections import Counter
from pipeline.config import CorpusConfig
from pipeline.readers.blocks import open_corpus
corpus = open_corpus([{source!r}], CorpusConfig(), num_tasks={tasks})
counts = Counter()
started = time.perf_counter()
rows = sum(1 for _ in corpus.read({task}, {tasks}, counts))
seconds = time.perf_counter() - started
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"rows": rows, "bytes_read": counts["bytes_read"], "seconds": seconds, "peak_kib": peak}}))
"""


def make_corpus(folder: Path, size: int, seed: int = 0) -> tuple[list[Path], Path, int]:
    """16 gzip files holding ``size`` bytes of JSON Lines, their concatenation, and the row count."""
    rng = random.Random(seed)
    words = [w for w in ENGLISH_WORDS if w]
    parts, number = [], 0
    (folder / "parts").mkdir()
    for k in range(FILES):
        path = folder / "parts" / f"part-{k:03d}.jsonl.gz"
        written = 0
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
            while written < size // FILES:
                line = json.dumps({"id": f"doc{number}", "text": " ".join(rng.choices(words, k=120))}) + "\n"
                handle.write(line)
                written += len(line)
                number += 1
        parts.append(path)
    whole = folder / "corpus.jsonl.gz"
    with whole.open("wb") as sink:
        for path in parts:
            sink.write(path.read_bytes())
    return parts, whole, number


def read_task(source: Path, task: int) -> dict:
    code = CHILD.format(root=str(ROOT), source=str(source), task=task, tasks=TASKS)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(source: Path, size_on_disk: int, rows: int) -> dict:
    tasks = [read_task(source, task) for task in range(TASKS)]
    assert sum(t["rows"] for t in tasks) == rows, (tasks, rows)
    return {
        "rows_per_task": [t["rows"] for t in tasks],
        "seconds_per_task": [round(t["seconds"], 2) for t in tasks],
        "wall_seconds_4_tasks": round(max(t["seconds"] for t in tasks), 2),
        "bytes_read_ratio": round(sum(t["bytes_read"] for t in tasks) / size_on_disk, 5),
        "peak_rss_mib": round(max(t["peak_kib"] for t in tasks) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="0.05 GB")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    gb = 0.05 if args.quick else args.gb
    with tempfile.TemporaryDirectory(prefix="bench-compressed-") as scratch:
        parts, whole, rows = make_corpus(Path(scratch), int(gb * 2**30))
        on_disk = whole.stat().st_size
        one = measure(whole, on_disk, rows)
        many = measure(whole.parent / "parts", on_disk, rows)
        small = read_task(whole.parent / "parts" / "part-000.jsonl.gz", 0)  # 1/16 of the text, one task
    result = {
        "uncompressed_gb": gb,
        "gzip_mib": round(on_disk / 2**20, 1),
        "rows": rows,
        "one_file": one,
        "sixteen_files": many,
        "speedup_of_16_files": round(one["wall_seconds_4_tasks"] / many["wall_seconds_4_tasks"], 2),
        "peak_rss_whole_over_one_part": round(one["peak_rss_mib"] / (small["peak_kib"] / 1024), 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
