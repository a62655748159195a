"""How fast are the cheap filters? Rows per second of each, alone, on synthetic rows.

The rows look like a mixed English / Chinese retrieval run: a query and a
passage per row, some queries looping, some pasted from the passage, some
repeated. Each step runs the whole set in batches of 512, as in a run, and is
timed alone. The cosine filter encodes with the run's embedder (the packaged
all-MiniLM-L6-v2 unless --embedder), so it runs on a subset (--cosine-rows).

    .venv/bin/python bench/filters.py --rows 100000 --json bench/results/filters.json
    .venv/bin/python bench/filters.py --quick      # 10k rows, 1k for the cosine filter
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import CHINESE_CHARACTERS as ZH  # noqa: E402
from bench.synthetic import ENGLISH_WORDS as EN  # noqa: E402

BATCH = 512


def synthetic_rows(count: int, seed: int = 0) -> list[dict]:
    from pipeline import schema as S

    rng = random.Random(seed)
    rows = []
    for i in range(count):
        chinese = rng.random() < 0.3
        if chinese:
            passage = "".join(rng.choices(ZH, k=120)) + "。"
            query = "".join(rng.choices(ZH, k=rng.randint(6, 24)))
        else:
            passage = " ".join(rng.choices(EN, k=80)) + "."
            query = "how does " + " ".join(rng.choices(EN, k=rng.randint(3, 12))) + " work"
        kind = rng.random()
        if kind < 0.05:  # a looping reply
            query = " ".join([query] * 6)
        elif kind < 0.10:  # pasted from the passage
            query = passage[:60] if chinese else " ".join(passage.split()[:12])
        elif kind < 0.15 and rows:  # a repeat of an earlier query
            query = rows[rng.randrange(len(rows))][S.QUERY]
        language = "zh" if chinese else "en"
        rows.append(
            {
                S.ID: f"r{i}",
                S.QUERY: query,
                S.POSITIVE: passage,
                S.TASK_TYPE: "retrieval",
                S.LANGUAGE: language,
                S.PASSAGE_LANGUAGE: language,
                S.TARGET_LANGUAGE: None,
                S.PASSAGE_ID: f"p{i}",
                S.SOURCE_ID: f"d{i}",
                S.NEGATIVES: [],
            }
        )
    return rows


def time_step(step, rows: list[dict]) -> dict:
    from pipeline.step import run_step

    kept = dropped = 0
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        batch = [dict(r) for r in rows[start : start + BATCH]]
        result, others = run_step(step, batch)
        kept += len(result.kept) + len(others)
        dropped += len(result.dropped)
    seconds = time.perf_counter() - started
    return {
        "rows": len(rows),
        "kept": kept,
        "dropped": dropped,
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(rows) / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--cosine-rows", type=int, default=5_000)
    parser.add_argument("--embedder", default=None)
    parser.add_argument("--quick", action="store_true", help="10k rows, 1k for the cosine filter")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.cosine_rows = 10_000, 1_000

    from pipeline.config import CopyCheckConfig, CosineConfig, DedupConfig
    from pipeline.embed.embedder import Embedder
    from pipeline.filters.copycheck import CopyCheck
    from pipeline.filters.cosine import CosineFilter
    from pipeline.filters.dedup import Dedup
    from pipeline.filters.language import LanguageCheck
    from pipeline.filters.repetition import RepetitionCheck
    from pipeline.models import resolve_embedder

    rows = synthetic_rows(args.rows)
    model = resolve_embedder(args.embedder)
    embedder = Embedder(model.path, model.name, 64, languages=model.languages)
    steps = {
        "language": (LanguageCheck(), rows),
        "repetition": (RepetitionCheck(0.2), rows),
        "copy_check": (CopyCheck(CopyCheckConfig()), rows),
        "dedup": (Dedup(DedupConfig()), rows),
        "cosine": (CosineFilter(embedder, CosineConfig()), rows[: args.cosine_rows]),
    }
    report = {}
    for name, (step, subset) in steps.items():
        report[name] = time_step(step, subset)
        print(
            f"{name:<12}{report[name]['rows']:>8} rows  {report[name]['rows_per_s']:>10.1f} rows/s  "
            f"({report[name]['dropped']} dropped)",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
