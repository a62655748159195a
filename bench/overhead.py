"""Does the pipeline cost more than its engine? `synth generate` against bare `LLM.chat` on its own prompts.

1. Runs the pipeline in this process on N passages (the packaged sample corpus
   unless --corpus) through a recording wrapper around the vLLM engine: every
   engine call's chats, output schema and token budgets are saved.
2. Replays exactly those calls, in the same order, through a bare `vllm.LLM`
   in a fresh process that imports nothing of the pipeline, with the engine
   settings the run recorded (dtype, eager mode, prefix caching, block size,
   structured-output backend).

Reported per LLM stage and for the whole run: pipeline seconds (the step's wall
time, its non-LLM work included) over bare seconds, engine start excluded. The
run repeats `--repeats` times and the medians are reported.

    .venv/bin/python bench/overhead.py --passages 256 --repeats 3 --json bench/results/overhead.json
    .venv/bin/python bench/overhead.py --quick     # 16 passages, one repeat: a few minutes

Run it alone: on 2 shared cores any other busy process distorts both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class RecordingEngine:
    """Wraps a ChatEngine; keeps every call (stage, chats, schema, budgets, seeds) and its wall time,
    and in ``outputs`` each call's output model."""

    def __init__(self, engine):
        self.engine = engine
        self.model_name = engine.model_name
        self.settings = getattr(engine, "settings", {})
        self.calls: list[dict] = []
        self.outputs: list[type[BaseModel]] = []

    def generate(self, chats, output: type[BaseModel], max_tokens, temperature=None, desc=None, seeds=None):
        started = time.perf_counter()
        generations = self.engine.generate(
            chats, output, max_tokens, temperature=temperature, desc=desc, seeds=seeds
        )
        self.calls.append(
            {
                "stage": desc,
                "chats": chats,
                "schema": output.model_json_schema(),
                "max_tokens": max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(chats),
                "temperature": temperature,
                "seeds": seeds,
                "seconds": time.perf_counter() - started,
                "output_tokens": [g.output_tokens for g in generations],
            }
        )
        self.outputs.append(output)
        return generations

    def close(self):
        self.engine.close()


def run_pipeline(args, out: Path, calls_file: Path) -> dict:
    """One `synth generate` run in this process; returns per-stage seconds and the engine settings."""
    from pipeline.config import load_config
    from pipeline.engine.factory import get_engine
    from pipeline.executors import run_generate
    from pipeline.models import resolve_generator

    sets = [f"output.out_dir={out}", f"limit={args.passages}", *args.set]
    if args.corpus:
        sets.append(f"corpus.path={args.corpus}")
    config = load_config(None, sets, {"generation.languages": args.lang.split(",")})
    engine = RecordingEngine(
        get_engine(resolve_generator(config.models.generator), config.models, config.seed)
    )
    engine.engine.llm.reset_prefix_cache()  # every repeat starts cold, like the bare replay
    started = time.perf_counter()
    result = run_generate(config, engine=engine, overwrite=True)
    wall = time.perf_counter() - started
    stats = result.stats.to_json()
    calls_file.write_text(
        json.dumps({"settings": engine.settings, "seed": config.seed, "calls": engine.calls})
    )
    stages = {name: counts["seconds"] for name, counts in stats["stages"].items()}
    return {
        "wall_after_engine_start": wall - stats["timings_seconds"].get("engine_start", 0.0),
        "generation": sum(stages.values()),
        "stages": stages,
        "engine_calls": _sum_by_stage(engine.calls),
        "output_tokens": {
            stage: sum(sum(c["output_tokens"]) for c in engine.calls if c["stage"] == stage)
            for stage in {c["stage"] for c in engine.calls}
        },
        "tokens": stats["tokens"],
        "settings": engine.settings,
    }


BARE = r"""
import json, sys, time
from vllm import LLM, SamplingParams
from vllm.sampling_params import StructuredOutputsParams

def main():
    recorded = json.load(open(sys.argv[1]))
    s = recorded["settings"]
    llm = LLM(model=sys.argv[2], dtype=s["dtype"], enforce_eager=s["enforce_eager"],
              enable_prefix_caching=s["prefix_caching"], block_size=s["block_size"],
              max_model_len=int(sys.argv[3]), seed=recorded["seed"],
              structured_outputs_config={"backend": s["structured_backend"], "disable_any_whitespace": True})
    out = {}
    for call in recorded["calls"]:
        temperature = 0.7 if call["temperature"] is None else call["temperature"]
        schema = StructuredOutputsParams(json=call["schema"], disable_any_whitespace=True)
        params = [SamplingParams(max_tokens=m, temperature=temperature, top_p=0.9, structured_outputs=schema)
                  for m in call["max_tokens"]]
        started = time.perf_counter()
        results = llm.chat(call["chats"], params, use_tqdm=False,
                           chat_template_kwargs={"enable_thinking": False})
        stage = out.setdefault(call["stage"], {"seconds": 0.0, "output_tokens": 0})
        stage["seconds"] += time.perf_counter() - started
        stage["output_tokens"] += sum(len(r.outputs[0].token_ids) for r in results)
    print("BARE " + json.dumps(out))

if __name__ == "__main__":
    main()
"""


def run_bare(calls_file: Path, model: str, max_model_len: int, log: Path) -> dict:
    """Replay the recorded calls through a bare vLLM engine in a fresh process."""
    script = calls_file.with_name("bare.py")
    script.write_text(BARE)
    with log.open("a") as sink:
        done = subprocess.run(
            [sys.executable, str(script), str(calls_file), model, str(max_model_len)],
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            check=True,
        )
    line = next(x for x in done.stdout.splitlines() if x.startswith("BARE "))
    return json.loads(line[5:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--corpus", default=None)
    parser.add_argument("--set", action="append", default=[], help="config override, as in synth --set")
    parser.add_argument("--quick", action="store_true", help="16 passages, one repeat")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.passages, args.repeats = 16, 1

    import logging

    logging.basicConfig(level=logging.WARNING)
    from pipeline.config import load_config
    from pipeline.models import resolve_generator

    model = resolve_generator(load_config(None, args.set).models.generator).path
    max_model_len = load_config(None, args.set).models.max_model_len
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    log = work / "engine.log"
    runs = []
    for repeat in range(args.repeats):
        calls_file = work / f"calls-{repeat}.json"
        pipeline = run_pipeline(args, work / f"run-{repeat}", calls_file)
        bare = run_bare(calls_file, model, max_model_len, log)
        runs.append({"pipeline": pipeline, "bare": bare})
        print(
            f"repeat {repeat}: pipeline {pipeline['generation']:.1f}s, bare "
            f"{sum(b['seconds'] for b in bare.values()):.1f}s",
            flush=True,
        )

    stages = list(runs[0]["bare"])
    report = {
        "passages": args.passages,
        "repeats": args.repeats,
        "lang": args.lang,
        "settings": runs[0]["pipeline"]["settings"],
        "stages": {},
    }
    for stage in stages:
        step = _step_name(stage)
        pipe = [r["pipeline"]["stages"].get(_step_name(stage), 0.0) for r in runs]
        call = [r["pipeline"]["engine_calls"][stage] for r in runs]
        bare = [r["bare"][stage]["seconds"] for r in runs]
        report["stages"][step] = {
            "pipeline_step_s": round(statistics.median(pipe), 2),
            "pipeline_engine_call_s": round(statistics.median(call), 2),
            "bare_s": round(statistics.median(bare), 2),
            # sampling differs between two engines: similar counts mean comparable work
            "output_tokens_pipeline": runs[-1]["pipeline"]["output_tokens"].get(stage, 0),
            "output_tokens_bare": runs[-1]["bare"][stage]["output_tokens"],
            "ratio_step_over_bare": round(
                statistics.median(p / b for p, b in zip(pipe, bare, strict=True)), 3
            ),
        }
    generation = [r["pipeline"]["generation"] for r in runs]
    bare_total = [sum(b["seconds"] for b in r["bare"].values()) for r in runs]
    report["pipeline_generation_s"] = round(statistics.median(generation), 2)
    report["bare_total_s"] = round(statistics.median(bare_total), 2)
    report["ratio"] = round(statistics.median(g / b for g, b in zip(generation, bare_total, strict=True)), 3)
    report["tokens"] = runs[-1]["pipeline"]["tokens"]
    report["machine"] = {"cores": os.cpu_count()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(f"overhead ratio (pipeline / bare engine, engine start excluded): {report['ratio']:.3f}")


def _sum_by_stage(calls: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for call in calls:
        totals[call["stage"]] = totals.get(call["stage"], 0.0) + call["seconds"]
    return totals


def _step_name(desc: str) -> str:
    """The step that made an engine call, from the call's description (its template)."""
    return {
        "retrieval/configure": "configure",
        "retrieval/query": "query",
        "retrieval/negatives": "negatives_llm",
        "judge": "judge",
        "bitext/translate": "bitext",
        "classification/classify": "classification",
        "sts/pair": "sts",
    }.get(desc, desc)


if __name__ == "__main__":
    main()
