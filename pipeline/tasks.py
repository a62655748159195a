"""Task bookkeeping on disk: what a run is, which tasks are done, how far each got.

A run is split into ``output.num_tasks`` tasks; task t of T owns the input
blocks t, t+T, ... (``pipeline/readers``), so the split depends on nothing but
the input and the config, whichever executor runs the tasks. Per task, on disk:

- ``progress/task-TTTTT.json``: chunks done so far and the task's cumulative
  stats, rewritten atomically after each chunk's shards have landed;
- ``completions/task-TTTTT``: written when the task has finished.

Shards are ``data/part-TTTTT-CCCCC.parquet`` (task, chunk), written under a
hidden temporary name and renamed, so a killed run leaves no partial file
visible and a rerun redoes at most the chunk that was in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig

RUN_FILE = "run.json"
OWNED = (
    "data",
    "rejected",
    "progress",
    "completions",
    RUN_FILE,
    "stats.json",
    "manifest.json",
    "config.yaml",
)


class RunStateError(RuntimeError):
    """The output folder holds a run that this command cannot continue."""


def config_fingerprint(config: RunConfig) -> str:
    """Hash of everything that decides the output; the output folder itself does not."""
    data = config.model_dump(mode="json")
    data["output"].pop("out_dir", None)
    data["output"].pop("license", None)  # only the card says it; a run may be relicensed and rerun
    data["models"].pop("engine_progress", None)  # display only
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def clear_run(out: Path) -> None:
    """Remove what a run writes (``--overwrite``); other files in the folder are left alone."""
    for name in OWNED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def claim_run(out: Path, config: RunConfig) -> None:
    """Record the run's identity, or check that an existing run is the same one."""
    fingerprint = config_fingerprint(config)
    run_file = out / RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if previous["num_tasks"] != config.output.num_tasks:
            raise RunStateError(
                f"{out} holds a run split into {previous['num_tasks']} tasks, this command asks for "
                f"{config.output.num_tasks}: resume with the same --num-tasks, or pass --overwrite "
                "to start over"
            )
        if previous["fingerprint"] != fingerprint:
            raise RunStateError(
                f"{out} holds a run made with a different configuration (see {out / 'config.yaml'}): "
                "rerun with the same options to resume, or pass --overwrite to start over"
            )
        return
    leftovers = [p for name in ("data", "rejected") for p in (out / name).rglob("*.parquet")]
    if leftovers:  # shards with no run record: another tool's, or an older version's; never mix them in
        raise RunStateError(
            f"{out} already holds shards of an unknown run ({leftovers[0]}): choose an empty folder, or "
            "pass --overwrite to delete them"
        )
    write_json_atomic(run_file, {"fingerprint": fingerprint, "num_tasks": config.output.num_tasks})


@dataclass
class TaskState:
    out: Path
    task: int

    @property
    def name(self) -> str:
        return f"task-{self.task:05d}"

    @property
    def progress_file(self) -> Path:
        return self.out / "progress" / f"{self.name}.json"

    @property
    def completion_file(self) -> Path:
        return self.out / "completions" / self.name

    def is_complete(self) -> bool:
        return self.completion_file.exists()

    def load(self) -> tuple[int, dict[str, Any] | None]:
        """(chunks already done, cumulative stats) of an unfinished task."""
        if not self.progress_file.exists():
            return 0, None
        data = json.loads(self.progress_file.read_text())
        return int(data["chunks_done"]), data["stats"]

    def save(self, chunks_done: int, stats: dict[str, Any]) -> None:
        write_json_atomic(self.progress_file, {"chunks_done": chunks_done, "stats": stats})

    def complete(self) -> None:
        self.completion_file.parent.mkdir(parents=True, exist_ok=True)
        self.completion_file.write_text("done\n")

    def shard_name(self, chunk: int) -> str:
        return f"part-{self.task:05d}-{chunk:05d}.parquet"

    def shards(self, folder: str) -> list[Path]:
        return sorted((self.out / folder).rglob(f"part-{self.task:05d}-*.parquet"))


def remove_stale_temporaries(out: Path) -> None:
    """Half-written shards of a killed run: hidden, never read, removed on the next start."""
    for folder in ("data", "rejected"):
        for tmp in (out / folder).rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
