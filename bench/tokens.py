"""What does a kept pair cost, and what does the prefix cache save? Old templates against new, one engine.

Runs `synth generate` on the same passages with the current templates and with
those of an earlier commit (`--old-rev`, read with `git show`, passed as
`generation.prompts_dir`), alternating the order over `--repeats`, in one process
with one vLLM engine whose prefix cache is emptied before every run. Reported
per LLM stage: requests, prompt tokens, the share served from the prefix cache,
output tokens and engine seconds; per run: tokens per kept pair and the wall
time of generation (engine start excluded). Medians over the repeats.

    .venv/bin/python bench/tokens.py --passages 256 --corpus ../shared/data/corpora/scifact_en/corpus.jsonl \
        --repeats 2 --json bench/results/tokens_256.json
    .venv/bin/python bench/tokens.py --quick      # 24 passages of the packaged sample, one repeat

Run it alone: on 2 shared cores any other busy process distorts the times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OLD_REV = "797f652"  # the last commit before the templates put row values last


def export_templates(rev: str, target: Path) -> Path:
    """The prompts/ folder of commit ``rev``, written under ``target``."""
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "prompts"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in names:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{name}"], capture_output=True, text=True, check=True
        ).stdout
        path = target / Path(name).relative_to("prompts")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def persona_spread(out: Path) -> dict:
    """How varied the personas of the kept rows are: distinct ones, and entropy over log2(rows)."""
    import math
    from collections import Counter

    import pyarrow.parquet as pq

    from pipeline.run.folder import shards_under

    shards = shards_under(out / "data")
    personas = [p for s in shards for p in pq.read_table(s, columns=["persona"]).column(0).to_pylist()]
    if len(personas) < 2:
        return {"distinct_personas": len(set(personas)), "persona_entropy": 0.0}
    counts = Counter(personas)
    entropy = -sum(c / len(personas) * math.log2(c / len(personas)) for c in counts.values())
    return {"distinct_personas": len(counts), "persona_entropy": round(entropy / math.log2(len(personas)), 3)}


def one_run(args, prompts_dir: Path | None, extra: list[str], out: Path) -> dict:
    from pipeline.config import load_config
    from pipeline.engine.factory import get_engine
    from pipeline.executors import run_generate
    from pipeline.models import resolve_generator

    sets = [f"output.out_dir={out}", f"limit={args.passages}", *args.set]
    if args.corpus:
        sets.append(f"corpus.path={args.corpus}")
    if prompts_dir:
        sets.append(f"generation.prompts_dir={prompts_dir}")
    sets += extra
    config = load_config(None, sets, {"generation.languages": args.lang.split(",")})
    engine = get_engine(resolve_generator(config.models.generator), config.models, config.seed)
    engine.llm.reset_prefix_cache()
    started = time.perf_counter()
    stats = run_generate(config, engine=engine, overwrite=True).stats.to_json()
    return {
        "generation_s": sum(c["seconds"] for c in stats["stages"].values()),
        "wall_s": time.perf_counter() - started,
        "rows_in": stats["rows_in"],
        "rows_out": stats["rows_out"],
        "tokens": stats["tokens"],
        **persona_spread(out),
        "stages": {name: c["llm"] for name, c in stats["stages"].items() if "llm" in c},
        "engine": stats.get("engine", {}),
    }


def summarise(runs: list[dict]) -> dict:
    def median(values):
        return round(statistics.median(values), 3)

    stages = {}
    for name in runs[0]["stages"]:
        usages = [r["stages"][name] for r in runs if name in r["stages"]]
        stages[name] = {
            key: median([u.get(key, 0) for u in usages])
            for key in ("requests", "prompt_tokens", "cached_share", "output_tokens", "engine_seconds")
        }
    return {
        "generation_s": median([r["generation_s"] for r in runs]),
        "rows_out": median([r["rows_out"] for r in runs]),
        "kept_rate": median([r["rows_out"] / max(1, r["rows_in"]) for r in runs]),
        "distinct_personas": median([r["distinct_personas"] for r in runs]),
        "persona_entropy": median([r["persona_entropy"] for r in runs]),
        "tokens_per_kept_pair": median([r["tokens"].get("tokens_per_kept_pair", 0) for r in runs]),
        "computed_tokens_per_kept_pair": median(
            [r["tokens"].get("computed_tokens_per_kept_pair", 0) for r in runs]
        ),
        "cached_share": median([r["tokens"].get("cached_share", 0) for r in runs]),
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--corpus", default=None)
    parser.add_argument("--old-rev", default=OLD_REV)
    parser.add_argument(
        "--variants",
        default="new,old,one_call",
        help="new: current templates; old: those of --old-rev; one_call: current, generation.calls=one",
    )
    parser.add_argument("--set", action="append", default=[], help="config override, as in synth --set")
    parser.add_argument("--quick", action="store_true", help="24 passages of the packaged sample, one repeat")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.passages, args.repeats, args.corpus = 24, 1, None

    import logging

    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-tokens-"))
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants = {
        "new": (None, []),
        "old": (export_templates(args.old_rev, work / "old-prompts") if "old" in wanted else None, []),
        "one_call": (None, ["generation.calls=one"]),
    }
    variants = {name: variants[name] for name in wanted}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for name in order:
            result = one_run(args, *variants[name], work / f"{name}-{repeat}")
            runs[name].append(result)
            print(
                f"repeat {repeat} {name}: generation {result['generation_s']:.1f}s, "
                f"{result['rows_out']} rows, cached {result['tokens'].get('cached_share', 0):.0%}, "
                f"{result['tokens'].get('tokens_per_kept_pair', 0):.0f} tokens per kept pair",
                flush=True,
            )
    report = {
        "passages": args.passages,
        "lang": args.lang,
        "corpus": args.corpus or "packaged sample",
        "repeats": args.repeats,
        "engine": next(iter(runs.values()))[0]["engine"],
        **{name: summarise(r) for name, r in runs.items()},
    }
    for name in ("old", "one_call"):
        if name in runs and "new" in runs:
            report[f"{name}_over_new_generation_time"] = round(
                report[name]["generation_s"] / report["new"]["generation_s"], 3
            )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    for name in runs:
        shares = ", ".join(f"{s} {u['cached_share']:.0%}" for s, u in report[name]["stages"].items())
        print(f"{name} templates: cached share per stage: {shares}")
    for name in ("old", "one_call"):
        if f"{name}_over_new_generation_time" in report:
            ratio = report[f"{name}_over_new_generation_time"]
            print(f"generation time, {name} / new: {ratio:.2f}")


if __name__ == "__main__":
    main()
