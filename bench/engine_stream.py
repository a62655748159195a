"""The in-process vLLM engine kept busy? Staged chunks, one bare batch per stage, and streamed rows.

One vLLM engine (the packaged SmolLM2 unless --set models.generator=...) is started once in this
process and then serves three runs over the same N passages, its prefix cache emptied before each:

1. **staged**: `synth generate` with `flow.streamed=false`, chunks of `--chunk` passages: each
   chunk runs its stages one after another as whole batches, so every chunk waits for the last
   reply of every stage (the barrier design of the project before rows streamed);
2. **bare per stage**: the staged run's own requests (chats, schemas, budgets, seeds), replayed
   as one batch per stage over all N passages, nothing else running: the best a barrier design
   can do, since no batch is cut by a chunk boundary and no step runs between calls;
3. **streamed**: `synth generate` as it runs by default: slices of rows in threads, every thread
   waiting on the engine stepping it (``engine/vllm_engine.py``), many chunks in flight.

Reported for each: wall time (the engine's start, the embedder's load and the mining pool's
build excluded: the same whatever the flow) and output tokens per second of that wall time.
The bare replay only calls the engine, so the runs also spend time the replay does not (the
embedder, the filters, the shard writes); streaming overlaps that time with decoding.

    .venv/bin/python bench/engine_stream.py --corpus ../shared/data/corpora/scifact_en/corpus.jsonl \
        --json bench/results/engine_stream.json                 # 256 SciFact passages, chunks of 32
    .venv/bin/python bench/engine_stream.py --quick     # 32 passages in chunks of 8

Run it alone: on 2 shared cores any other busy process distorts every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import RecordingEngine  # noqa: E402


def run(engine, out: Path, args, *sets: str) -> dict:
    from pipeline.config import load_config
    from pipeline.executors import run_generate

    config = load_config(
        None,
        [
            f"output.out_dir={out}",
            f"limit={args.passages}",
            f"output.shard_rows={args.chunk}",
            "cache.enabled=false",
            *([f"corpus.path={args.corpus}"] if args.corpus else []),
            *args.set,
            *sets,
        ],
    )
    engine.engine.llm.reset_prefix_cache()
    started = time.perf_counter()
    result = run_generate(config, engine=engine, overwrite=True)
    # the embedder's load and the mining pool's build are the same whatever the flow: left out
    setup = sum(result.stats.timings.get(k, 0.0) for k in ("load_embedder_and_tokenizer", "mining_pool"))
    wall = time.perf_counter() - started - setup
    tokens = result.stats.to_json()["tokens"]
    return {
        "setup_s": round(setup, 2),
        "wall_s": round(wall, 2),
        "output_tokens": tokens.get("output_tokens", 0),
        "prompt_tokens": tokens.get("prompt_tokens", 0),
        "output_tokens_per_s": round(tokens.get("output_tokens", 0) / wall, 1),
        "rows_kept": result.stats.rows_out,
    }


def bare(engine, recorder: RecordingEngine) -> dict:
    """One engine call per stage, over every request the run made at that stage."""
    by_stage: dict[str, dict] = defaultdict(lambda: {"chats": [], "max_tokens": [], "seeds": []})
    for call, output in zip(recorder.calls, recorder.outputs, strict=True):
        stage = by_stage[call["stage"]]
        stage["output"], stage["temperature"] = output, call["temperature"]
        stage["chats"] += call["chats"]
        budget = call["max_tokens"]
        stage["max_tokens"] += budget if isinstance(budget, list) else [budget] * len(call["chats"])
        stage["seeds"] += call["seeds"] or [None] * len(call["chats"])
    engine.llm.reset_prefix_cache()
    started, output_tokens, stages = time.perf_counter(), 0, {}
    for name, stage in by_stage.items():
        t = time.perf_counter()
        generations = engine.generate(
            stage["chats"], stage["output"], stage["max_tokens"], stage["temperature"], name, stage["seeds"]
        )
        produced = sum(g.output_tokens for g in generations)
        output_tokens += produced
        stages[name] = {
            "requests": len(generations),
            "seconds": round(time.perf_counter() - t, 2),
            "output_tokens": produced,
        }
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 2),
        "output_tokens": output_tokens,
        "output_tokens_per_s": round(output_tokens / wall, 1),
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32, help="passages per chunk (output.shard_rows)")
    parser.add_argument("--corpus", default=None, help="corpus file (default: the packaged sample, 43)")
    parser.add_argument("--set", action="append", default=[], help="config override, as in synth --set")
    parser.add_argument("--quick", action="store_true", help="32 passages in chunks of 8")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.passages, args.chunk = 32, 8

    import logging

    logging.basicConfig(level=logging.WARNING)
    from pipeline.config import load_config
    from pipeline.engine.factory import get_engine
    from pipeline.models import resolve_generator

    config = load_config(None, args.set)
    t = time.perf_counter()
    engine = get_engine(resolve_generator(config.models.generator), config.models, config.seed)
    start_s = time.perf_counter() - t
    work = Path(tempfile.mkdtemp(prefix="bench-engine-stream-"))
    recorder = RecordingEngine(engine)
    staged = run(recorder, work / "staged", args, "flow.streamed=false")
    print(f"staged: {staged}", flush=True)
    replay = bare(engine, recorder)
    print(f"bare per stage: {replay}", flush=True)
    streamed = run(RecordingEngine(engine), work / "streamed", args)
    print(f"streamed: {streamed}", flush=True)
    report = {
        "corpus": args.corpus or "packaged sample",
        "passages": args.passages,
        "chunk": args.chunk,
        "model": engine.model_name,
        "settings": engine.settings,
        "engine_start_s": round(start_s, 1),
        "staged": staged,
        "bare_per_stage": replay,
        "streamed": streamed,
        "streamed_over_staged_wall": round(streamed["wall_s"] / staged["wall_s"], 3),
        "streamed_over_bare_wall": round(streamed["wall_s"] / replay["wall_s"], 3),
        "machine": {"cores": os.cpu_count()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    engine.close()


if __name__ == "__main__":
    main()
