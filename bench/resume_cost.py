"""What a crash costs: the work a resume redoes, at every named crash point.

For each point of ``pipeline/faults.py`` a ``synth`` process (the tests' fake engine, the full
default gate, the real MiniLM embedder) dies there; the same run is then resumed in this
process. Counted: the rows the LLM was asked to configure in the killed run and in the resume,
against an uninterrupted run's; what both together generated beyond it is the work redone,
reported in chunks per task (goal: at most one chunk per task). Wall times are reported beside
(killed + resumed against uninterrupted).

    .venv/bin/python bench/resume_cost.py --json bench/results/resume_cost.json
    .venv/bin/python bench/resume_cost.py --quick      # three points

Run it alone: on 2 shared cores any other busy process distorts the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS, CHUNK, LIMIT = 4, 4, 48  # three chunks per task
CASES = [
    "before_shard@5",
    "after_shard@5",
    "before_checkpoint@3",
    "mid_checkpoint@3",
    "after_checkpoint@3",
    "before_complete@2",
    "in_finalize",
    "mid_manifest",
    "before_card",
]
CHILD = """
import os, sys
sys.path.insert(0, {root!r})
from tests.conftest import FakeEngine, default_answer
from pipeline.config import load_config
from pipeline.executors import run_generate
log = os.open({log!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

def answer(prompt, output):
    if output.__name__ == "ConfigureOutput":
        os.write(log, b"row\\n")  # unbuffered: counted even when the process dies on the next line
    return default_answer(prompt, output)

config = load_config(None, {settings!r})
config.models.generator = "fake-engine"
run_generate(config, engine=FakeEngine(answer))
"""


def settings(out: Path, embedder: str) -> list[str]:
    return [
        "seed=5",
        f"limit={LIMIT}",
        f"output.num_tasks={TASKS}",
        f"output.shard_rows={CHUNK}",
        "generation.tasks=[retrieval]",
        f"output.out_dir={out}",
        f"models.embedder={embedder}",
    ]


def run_child(out: Path, embedder: str, log: Path, point: str | None) -> tuple[int, float, int]:
    env = dict(os.environ)
    env.pop("SYNTH_CRASH_AT", None)
    if point:
        env["SYNTH_CRASH_AT"] = point
    script = CHILD.format(root=str(ROOT), log=str(log), settings=settings(out, embedder))
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    rows = log.read_text().count("row\n") if log.exists() else 0
    return done.returncode, seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three points only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from pipeline.faults import CRASH_EXIT
    from pipeline.models import resolve_embedder

    embedder = resolve_embedder(None).path
    cases = CASES[1:4] if args.quick else CASES
    figures: dict = {"tasks": TASKS, "passages": LIMIT, "rows_per_chunk": CHUNK, "points": []}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        os.environ["SYNTH_CACHE"] = str(scratch / "cache")  # one mining pool for every run, built first
        code, seconds, rows = run_child(scratch / "reference", embedder, scratch / "reference.log", None)
        assert code == 0, "the uninterrupted run failed"
        code, seconds, rows = run_child(scratch / "timed", embedder, scratch / "timed.log", None)
        figures["uninterrupted"] = {"seconds": seconds, "rows_generated": rows}
        print(f"uninterrupted: {rows} rows generated, {seconds:.1f} s")
        for case in cases:
            out, log = scratch / case.replace("@", "-"), scratch / f"{case}.log"
            code, killed_seconds, killed_rows = run_child(out, embedder, log, case)
            assert code == CRASH_EXIT, f"{case}: exit {code}, not the crash point's"
            log.unlink()
            code, resumed_seconds, resumed_rows = run_child(out, embedder, log, None)
            assert code == 0, f"{case}: the resume failed"
            redone = killed_rows + resumed_rows - rows
            point = {
                "point": case,
                "rows_generated_killed": killed_rows,
                "rows_generated_resumed": resumed_rows,
                "rows_redone": redone,
                "chunks_redone_per_task": redone / CHUNK / TASKS,
                "chunks_redone_at_most_per_task": -(-redone // CHUNK),  # all in one task, at worst
                "seconds_killed_plus_resumed": killed_seconds + resumed_seconds,
                "seconds_over_uninterrupted": (killed_seconds + resumed_seconds) / seconds,
            }
            figures["points"].append(point)
            print(
                f"{case:20s} killed {killed_rows:3d} + resumed {resumed_rows:3d} rows: {redone} redone "
                f"({point['chunks_redone_at_most_per_task']} chunk(s)); "
                f"time {point['seconds_over_uninterrupted']:.2f}x"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
