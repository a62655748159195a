"""Does `synth review` stay fast and flat as the run grows? Start time, first page and peak RSS.

For each size a run folder is generated (no model: rows written straight through the run's
Parquet schemas, one shard per 2,000 rows, a fifth of them dropped by three stages, ~40
strata by outcome, question type, difficulty and language pair), then `synth review` starts
on it as a fresh process. Measured: seconds until it prints its URL (imports plus the
streamed stratified sample), the first page (``GET /`` and the row it redirects to, whose
shard is read then), four further row pages, and the server's peak RSS after them.

    .venv/bin/python bench/review.py --sizes 10000,100000 --json bench/results/review.json
    .venv/bin/python bench/review.py --quick      # 2k and 20k rows

Reported per size, and the ratio of the largest to the smallest (goal: first page under one
second at 100k rows; peak RSS ratio at most 1.2).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import ENGLISH_WORDS as VOCABULARY  # noqa: E402

SHARD_ROWS = 2000
QUESTION_TYPES = ["keywords", "acquire_knowledge", "summary", "yes_or_no", "background"]
DIFFICULTIES = ["high_school", "university", "phd"]
DROPS = [("query", "cut_at_token_limit"), ("language", "wrong_language"), ("cosine", "low_cosine")]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(VOCABULARY, k=words))


def write_run(out: Path, rows: int, seed: int = 0) -> None:
    """A finished run folder of ``rows`` rows (kept and dropped) that `synth review` accepts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import schema as S

    rng = random.Random(seed)
    (out / "data" / "retrieval").mkdir(parents=True)
    (out / "rejected").mkdir()
    shards = []
    for number, start in enumerate(range(0, rows, SHARD_ROWS)):
        kept, dropped = [], []
        for i in range(start, min(rows, start + SHARD_ROWS)):
            pair = rng.choice([("en", "en"), ("en", "en"), ("zh", "en")])
            row = {
                S.ID: f"r{i:08d}",
                S.QUERY: _text(rng, rng.randint(4, 16)),
                S.POSITIVE: _text(rng, rng.randint(80, 140)),
                S.NEGATIVES: [_text(rng, 60) for _ in range(3)],
                S.NEGATIVE_SOURCES: ["llm", "mined", "mined"],
                S.NEGATIVE_SCORES: [rng.random() * 0.5 for _ in range(3)],
                S.TASK_TYPE: "retrieval",
                S.LANGUAGE: pair[0],
                S.PASSAGE_LANGUAGE: pair[1],
                S.PERSONA: "A reader of " + _text(rng, 3),
                S.QUESTION_TYPE: rng.choice(QUESTION_TYPES),
                S.DIFFICULTY: rng.choice(DIFFICULTIES),
                S.SOURCE_ID: f"d{i}",
                S.PASSAGE_ID: f"d{i}#0",
                S.POSITIVE_SCORE: 0.5 + rng.random() / 2,
                S.JUDGE_SCORE: rng.choice([2, 3]),
                S.MODEL: "bench",
                S.PROMPT_HASH: "bench",
            }
            if rng.random() < 0.2:
                stage, reason = rng.choice(DROPS)
                record = {k: row.get(k) for k in S.REJECTED_SCHEMA.names}
                record.update({S.STAGE: stage, S.REASON: reason, S.SCORES: json.dumps({"cosine": 0.2})})
                dropped.append(record)
            else:
                kept.append(S.project_row(row))
        name = f"part-00000-{number:05d}-bench000.parquet"
        pq.write_table(pa.Table.from_pylist(kept, schema=S.ROW_SCHEMA), out / "data" / "retrieval" / name)
        pq.write_table(pa.Table.from_pylist(dropped, schema=S.REJECTED_SCHEMA), out / "rejected" / name)
        shards.append({"path": f"data/retrieval/{name}", "rows": len(kept)})
    kept_rows = sum(s["rows"] for s in shards)
    (out / "run.json").write_text(json.dumps({"num_tasks": 1}))
    (out / "completions").mkdir()
    (out / "completions" / "task-00000").write_text("")
    (out / "manifest.json").write_text(json.dumps({"shards": shards, "rows": kept_rows}))
    stats = {"rows_in": rows, "rows_out": kept_rows, "stages": {"query": {}, "language": {}, "cosine": {}}}
    (out / "stats.json").write_text(json.dumps(stats))
    (out / "config.yaml").write_text("output:\n  license: unknown\n")


def _get(port: int, path: str) -> tuple[int, float, str | None]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path)
    reply = connection.getresponse()
    reply.read()
    connection.close()
    return reply.status, time.perf_counter() - started, reply.getheader("location")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(rows: int, sample: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-review-") as scratch:
        out = Path(scratch) / "run"
        started = time.perf_counter()
        write_run(out, rows)
        generated = time.perf_counter() - started
        on_disk = sum(p.stat().st_size for p in out.rglob("*.parquet")) / 2**20
        command = [sys.executable, "-m", "pipeline.cli", "review", str(out), "--port", "0"]
        command += ["--sample", str(sample), "--reviewer", "bench"]
        started = time.perf_counter()
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        port = None
        for line in server.stdout:
            if line.startswith("open http://"):
                port = int(line.split()[1].rstrip("/").rsplit(":", 1)[1])
                break
        ready = time.perf_counter() - started
        if port is None:
            server.kill()
            raise RuntimeError("synth review did not start")
        try:
            status, home, location = _get(port, "/")
            assert status == 303, status
            status, first_row, _ = _get(port, location)
            assert status == 200, status
            later = [_get(port, f"/row/{i}")[1] for i in range(1, 5)]
            peak = _peak_rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "rows": rows,
        "parquet_mib": round(on_disk, 1),
        "generate_seconds": round(generated, 1),
        "ready_seconds": round(ready, 2),
        "first_page_seconds": round(home + first_row, 3),
        "later_page_seconds": round(sum(later) / len(later), 3),
        "peak_rss_mib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2k and 20k rows")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    sizes = [2000, 20000] if args.quick else [int(s) for s in args.sizes.split(",")]
    results = []
    for rows in sizes:
        found = measure(rows, args.sample)
        results.append(found)
        print(
            f"{rows:>7} rows ({found['parquet_mib']} MiB): ready {found['ready_seconds']} s, first page "
            f"{found['first_page_seconds']} s, later pages {found['later_page_seconds']} s, "
            f"peak RSS {found['peak_rss_mib']} MiB"
        )
    small, large = results[0], results[-1]
    ratios = {
        "peak_rss": round(large["peak_rss_mib"] / small["peak_rss_mib"], 2),
        "ready": round(large["ready_seconds"] / small["ready_seconds"], 2),
        "first_page": round(large["first_page_seconds"] / small["first_page_seconds"], 2),
    }
    print(f"{large['rows']} / {small['rows']} rows: " + ", ".join(f"{k} x{v}" for k, v in ratios.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": results, "ratios": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
