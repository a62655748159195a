"""How close is `synth plan` to what the run then spends, and what does `synth regate` save?

One process, one engine (the generator is started once and shared by every run):

1. the full run: `--limit FULL` passages of the corpus into an empty reply cache, so every
   reply is computed; its tokens, kept pairs and engine seconds are the truth;
2. for each pilot size P: `synth plan`'s projection (``plan_run``) for the same run from a P-passage
   pilot, with an empty reply cache of its own; reported as projected / actual, and whether
   the actual figure lies in the projection's 95% interval;
3. the regate loop: the full run again with `filters.cosine.threshold` changed, through the
   cache the full run filled (`synth regate`'s path); its engine seconds and computed tokens
   as a share of the full run's.

    .venv/bin/python bench/cost.py --corpus ../shared/data/corpora/scifact_en/corpus.jsonl \
        --full 128 --pilots 32,64 --json bench/results/cost.json
    .venv/bin/python bench/cost.py --quick     # the packaged sample: 24 passages, a 12-passage pilot

Run it alone: on 2 shared cores any other busy process distorts the engine times.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def config_for(args, out: Path, *sets: str):
    from pipeline.config import load_config

    items = [f"output.out_dir={out}", f"limit={args.full}", "generation.tasks=[retrieval]", *sets]
    if args.corpus:
        items.append(f"corpus.path={args.corpus}")
    return load_config(None, items, {"generation.languages": ["en"]})


def fresh_prefix_cache(config) -> None:
    """Empty the shared engine's prefix cache, so no run is served by an earlier one's prompts."""
    from pipeline.engine.factory import get_engine
    from pipeline.models import resolve_generator

    engine = get_engine(resolve_generator(config.models.generator), config.models, config.seed)
    engine.llm.reset_prefix_cache()


def figures(stats) -> dict:
    usage = stats.usage()
    return {
        "tokens": usage.tokens + usage.cache_tokens,
        "computed_tokens": usage.computed_tokens,
        "kept_pairs": stats.rows_out,
        "rows": stats.rows_in,
        "engine_seconds": round(usage.seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", default=None)
    parser.add_argument("--full", type=int, default=128)
    parser.add_argument("--pilots", default="32,64")
    parser.add_argument("--threshold", type=float, default=0.5, help="cosine threshold of the regate rerun")
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.full, args.pilots = 24, "12"

    from pipeline.executors import run_generate
    from pipeline.executors.pilot import plan_run

    work = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    cache = f"cache.path={work / 'regate-cache'}"  # empty: the full run computes every reply
    fresh_prefix_cache(config_for(args, work / "full", cache))
    full = run_generate(config_for(args, work / "full", cache), overwrite=True)
    actual = figures(full.stats)
    print(f"full run: {args.full} passages: {actual}")
    report: dict = {"full_passages": args.full, "actual": actual, "pilots": {}}
    for size in [int(p) for p in args.pilots.split(",")]:
        config = config_for(args, work / f"unused-{size}", f"cache.path={work / f'cache-{size}'}")
        fresh_prefix_cache(config)
        projection, _ = plan_run(config, pilot=size, scratch=str(work / f"pilot-{size}"))
        rows = {}
        for name in ("tokens", "computed_tokens", "kept_pairs", "rows"):
            figure, truth = projection[name], actual[name]
            rows[name] = {
                "projected": round(figure["value"], 1),
                "low": round(figure["low"], 1),
                "high": round(figure["high"], 1),
                "actual": truth,
                "projected_over_actual": round(figure["value"] / truth, 3) if truth else None,
                "inside_interval": figure["low"] <= truth <= figure["high"],
            }
        hours = projection.get("engine_hours")
        if hours:
            truth = actual["engine_seconds"] / 3600
            rows["engine_hours"] = {
                "projected": hours["value"],
                "actual": truth,
                "projected_over_actual": round(hours["value"] / truth, 3) if truth else None,
            }
        report["pilots"][size] = rows
        print(f"pilot {size}: " + ", ".join(f"{k} {v['projected_over_actual']}" for k, v in rows.items()))
    first = actual
    again = config_for(args, work / "regated", cache, f"filters.cosine.threshold={args.threshold}")
    fresh_prefix_cache(again)
    second = figures(run_generate(again, overwrite=True).stats)
    report["regate"] = {
        "first": first,
        "regated": second,
        "engine_seconds_share": round(second["engine_seconds"] / first["engine_seconds"], 4),
        "computed_tokens_share": round(second["computed_tokens"] / first["computed_tokens"], 4),
    }
    shares = report["regate"]
    print(
        f"regate (cosine threshold {args.threshold}): engine time {shares['engine_seconds_share']:.1%} "
        f"and computed tokens {shares['computed_tokens_share']:.1%} of the first run"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
