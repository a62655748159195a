"""A run's life, the same for every executor: claim the output folder, then merge and finalize.

``open_run`` records what the run is (or checks that an existing folder holds the
same run) and lists the tasks still to do; an executor runs those tasks with
``process.run_task`` wherever it likes; ``finalize`` merges every task's stats
into ``stats.json`` and, once all tasks are complete, writes ``manifest.json``.
The output layout is therefore the same whichever executor wrote it.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import schema as S
from ..card import write_card
from ..config import RunConfig, dump_config
from ..models import ResolvedModel
from ..prompts import templates_of
from ..stats import RunStats
from ..tasks import TaskState, claim_run, clear_run, remove_stale_temporaries
from ..writer import data_shards
from .build import judge_enabled, prompt_library


@dataclass
class RunResult:
    out_dir: Path
    stats: RunStats
    shards: list[Path]


def open_run(config: RunConfig, overwrite: bool = False) -> Path:
    """Create or reopen ``config.output.out_dir`` for this run; refuse a folder holding another run."""
    out = Path(config.output.out_dir)
    if overwrite:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    claim_run(out, config)
    remove_stale_temporaries(out)
    (out / "data").mkdir(exist_ok=True)
    (out / "rejected").mkdir(exist_ok=True)
    dump_config(config, out / "config.yaml")
    return out


def tasks_to_do(out: Path, config: RunConfig, rank: int = 0, world_size: int = 1) -> list[TaskState]:
    """The unfinished tasks of this rank's share (tasks ``t`` with ``t % world_size == rank``)."""
    mine = [TaskState(out, t) for t in range(config.output.num_tasks) if t % world_size == rank]
    return [state for state in mine if not state.is_complete()]


def finalize(
    out: Path,
    config: RunConfig,
    generator: ResolvedModel,
    embedder: ResolvedModel,
    timings: dict[str, float],
    engine_info: dict | None = None,
) -> RunStats:
    """Merge every task's stats into stats.json; write the manifest once all tasks are complete."""
    states = [TaskState(out, t) for t in range(config.output.num_tasks)]
    stats = RunStats()
    reading = Counter()
    for state in states:
        saved = state.load()[1]
        if saved:
            task_stats = RunStats.from_json(saved)
            reading += task_stats.reading  # each task reads only its own blocks: counts add up
            task_stats.reading = Counter()
            stats.merge(task_stats)
    stats.reading = reading
    stats.engine = dict(engine_info or {})
    stats.timings = dict(timings)
    stats.timings["generation"] = sum(c.seconds for c in stats.stages.values())
    done = sum(state.is_complete() for state in states)
    stats.timings["tasks_complete"] = done
    stats.write(out / "stats.json")
    if done == len(states):
        write_manifest(out, config, generator, embedder, data_shards(out / "data"), stats)
        write_card(out, config.output.license)
    return stats


def result_of(out: Path, stats: RunStats) -> RunResult:
    return RunResult(out_dir=out, stats=stats, shards=data_shards(out / "data"))


def write_manifest(
    out: Path,
    config: RunConfig,
    generator: ResolvedModel,
    embedder: ResolvedModel,
    shards: list[Path],
    stats: RunStats,
) -> None:
    import pyarrow.parquet as pq

    prompts = prompt_library(config)
    judge = config.filters.judge
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "models": {
            "generator": {"name": generator.name, "path": generator.path, **stats.engine},
            "embedder": {"name": embedder.name, "path": embedder.path},
            "judge": {
                "name": judge.model or generator.name,
                "enabled": judge_enabled(config, generator, warn=False),
            },
        },
        "prompts": {name: prompts.prompt(name).hash for name in templates_of(config)},
        "tasks": list(config.generation.tasks),
        "seed": config.seed,
        "rows": stats.rows_out,
        "shards": [
            {"path": str(p.relative_to(out)), "rows": pq.ParquetFile(p).metadata.num_rows} for p in shards
        ],
        "schema": [f"{f.name}: {f.type}" for f in S.ROW_SCHEMA],
    }
    labels = out / "labels.json"
    if labels.exists():
        manifest["labels"] = json.loads(labels.read_text(encoding="utf-8"))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
