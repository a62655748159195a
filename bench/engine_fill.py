"""How full does a run keep its engine? `synth generate --engine openai` against a simulated server.

The server (``bench/sim_server.py``) decodes like a continuous-batching engine: ``--slots``
sequences at a fixed step time, so its ceiling in output tokens per second is known exactly. A
run of N passages goes through it: a generated English corpus of N passages (the mining pool is
built over the whole corpus), the default gate but the cosine filter (the fake model's queries are
word salads, which the embedder scores low), the packaged embedder, the reply cache off, the
replies written by the tests' fake model. The server reports:

- ``busy_share``: slot-seconds busy over slots x the window from the run's first request to
  its last reply: how much of what the server could decode the run asked it to;
- ``tokens_per_s_over_ceiling``: output tokens per second in that window over the ceiling (the
  prompts' prefills count against it);
- ``capacity_used``: the time a server with every slot busy at every step would take for the same
  requests (decode steps and prefills) over the window;
- ``mean_busy_slots``, the requests, the replies refused with 429.

The run's own wall time and its engine seconds (stats.json) are reported beside them.

    .venv/bin/python bench/engine_fill.py --passages 64 512 2048 --json bench/results/engine_fill.json
    .venv/bin/python bench/engine_fill.py --quick      # 64 passages

Run it alone: the client side is this machine's 2 cores, and any other busy process slows it.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.synthetic import ENGLISH_WORDS  # noqa: E402


class RemoteServer:
    """The simulated server in a process of its own: the run's Python never holds up its clock."""

    def __init__(self, slots: int, step_s: float, mean_tokens: float):
        command = [sys.executable, str(ROOT / "bench" / "sim_server.py"), "--slots", str(slots)]
        command += ["--step-s", str(step_s), "--mean-tokens", str(mean_tokens)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        self.ceiling = slots / step_s

    def reset(self) -> None:
        httpx.post(f"{self.url}/sim/reset", json={}).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/sim/stats").json()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def make_corpus(path: Path, passages: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = [w for w in ENGLISH_WORDS if w]
    with path.open("w", encoding="utf-8") as handle:
        for number in range(passages):
            text = " ".join(rng.choices(words, k=rng.randint(60, 180))).capitalize() + "."
            handle.write(json.dumps({"id": f"p{number}", "text": text}) + "\n")


def one_run(server: RemoteServer, passages: int, folder: Path, sets: list[str], corpus: Path | None) -> dict:
    from pipeline.config import load_config
    from pipeline.engine.factory import close_engines
    from pipeline.executors import run_generate

    if corpus is None:
        corpus = folder / f"corpus-{passages}.jsonl"
        make_corpus(corpus, passages)
    out = folder / f"out-{passages}"
    config = load_config(
        None,
        [
            f"output.out_dir={out}",
            f"corpus.path={corpus}",
            f"limit={passages}",
            "models.engine=openai",
            f"models.base_url={server.url}",
            "cache.enabled=false",
            "filters.cosine.enabled=false",
            *sets,
        ],
        {"generation.languages": ["en"]},
    )
    server.reset()
    started = time.perf_counter()
    result = run_generate(config)
    wall = time.perf_counter() - started
    close_engines()
    stats = json.loads((out / "stats.json").read_text())
    seen = server.stats()
    seen.pop("timeline")
    engine_seconds = sum(s.get("llm", {}).get("engine_seconds", 0) for s in stats["stages"].values())
    return {
        "passages": passages,
        "rows_in": result.stats.rows_in,
        "rows_out": result.stats.rows_out,
        "dropped": stats.get("dropped", {}),
        "llm_stages": [name for name, stage in stats["stages"].items() if stage.get("llm")],
        "wall_s": round(wall, 2),
        "engine_seconds": round(engine_seconds, 2),
        "server": seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--step-s", type=float, default=0.04, help="decode step of the simulated server")
    parser.add_argument("--mean-tokens", type=float, default=60.0)
    parser.add_argument("--set", action="append", default=[], help="config items for every run")
    parser.add_argument(
        "--corpus",
        type=Path,
        help="the corpus read (default: generated English words, as many passages as the run reads: "
        "the mining pool is built over the whole corpus)",
    )
    parser.add_argument("--label", default="", help="what the runs measure (recorded in --json)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="64 passages")
    args = parser.parse_args()
    if args.quick:
        args.passages = [64]
    server = RemoteServer(args.slots, args.step_s, args.mean_tokens)
    print(
        f"simulated server: {args.slots} slots, step {args.step_s * 1000:.0f} ms, "
        f"ceiling {server.ceiling:,.0f} tok/s"
    )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for passages in args.passages:
            run = one_run(server, passages, Path(tmp), args.set, args.corpus)
            runs.append(run)
            seen = run["server"]
            print(
                f"{passages:5d} passages: {seen['requests']:5d} requests, "
                f"busy {seen['busy_share']:.1%} of the slot-time "
                f"({seen['mean_busy_slots']:.1f} of {args.slots} slots), output "
                f"{seen['tokens_per_s_over_ceiling']:.1%} of the ceiling, capacity used "
                f"{seen['capacity_used']:.1%}, 429s {seen['refused_429']}, "
                f"window {seen['window_s']:.1f} s, wall {run['wall_s']:.1f} s"
            )
            print(f"      rows {run['rows_in']} in, {run['rows_out']} out, dropped {run['dropped']}")
    server.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "label": args.label,
            "slots": args.slots,
            "step_s": args.step_s,
            "sets": args.set,
            "runs": runs,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
