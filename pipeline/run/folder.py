"""The run folder: every path of a run, what ``--overwrite`` removes, and each task's checkpoint.

No other module builds a run path from strings: they ask a ``RunFolder``. A run is
split into ``output.num_tasks`` tasks (units of work; the kinds of rows are *task
types*); per task, on disk:

- ``progress/task-TTTTT.json``: chunks done so far and the task's cumulative stats,
  rewritten atomically after each chunk's shards have landed;
- ``completions/task-TTTTT``: written when the task has finished;
- ``data/<task_type>/part-TTTTT-CCCCC.parquet`` and ``rejected/part-TTTTT-CCCCC.parquet``:
  the kept and dropped rows of task T's chunk C, written under a hidden temporary
  name and renamed (``pipeline/atomic.py``), so a killed run leaves no partial file
  visible and a rerun redoes at most the chunk that was in flight.

Which blocks of the input a task reads is decided by ``pipeline/readers/blocks.py``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import atomic
from ..config import RunConfig, dump_config
from ..faults import crash_point

DATA, REJECTED = "data", "rejected"


class RunStateError(RuntimeError):
    """The output folder holds a run that this command cannot continue."""


def config_fingerprint(config: RunConfig) -> str:
    """Hash of everything that decides the output; the output folder itself does not."""
    data = config.model_dump(mode="json")
    data["output"].pop("out_dir", None)
    data["output"].pop("license", None)  # only the card says it; a run may be relicensed and rerun
    data["models"].pop("engine_progress", None)  # display only
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def shard_name(task: int, chunk: int) -> str:
    return f"part-{task:05d}-{chunk:05d}.parquet"


def chunk_of(path: Path) -> int:
    """The chunk number in a shard's name (``part-TTTTT-CCCCC.parquet``)."""
    return int(Path(path).name.split(".")[0].split("-")[2])


class RunFolder:
    """One run's output folder and every file in it."""

    # what a run writes, and so what --overwrite removes; other files in the folder are left alone
    OWNED = (
        DATA,
        REJECTED,
        "progress",
        "completions",
        "run.json",
        "stats.json",
        "manifest.json",
        "config.yaml",
        "labels.json",
        "README.md",
        "report.html",
        "export",
    )

    def __init__(self, root: str | Path):
        self._root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self._root)!r})"

    def __str__(self) -> str:
        return str(self._root)

    # -- the files of a run ---------------------------------------------------------
    @property
    def root(self) -> Path:
        return self._root

    @property
    def run_file(self) -> Path:
        return self._root / "run.json"

    @property
    def config_file(self) -> Path:
        return self._root / "config.yaml"

    @property
    def stats_file(self) -> Path:
        return self._root / "stats.json"

    @property
    def manifest_file(self) -> Path:
        return self._root / "manifest.json"

    @property
    def card_file(self) -> Path:
        """The dataset card: README.md, so the Hub shows it."""
        return self._root / "README.md"

    @property
    def labels_file(self) -> Path:
        return self._root / "labels.json"

    @property
    def report_file(self) -> Path:
        return self._root / "report.html"

    @property
    def data_folder(self) -> Path:
        """``data/``: one subfolder of shards per task type."""
        return self._root / DATA

    @property
    def rejected_folder(self) -> Path:
        return self._root / REJECTED

    @property
    def logs_folder(self) -> Path:
        return self._root / "logs"

    def export_folder(self, format: str) -> Path:
        return self._root / "export" / format

    # -- shards ----------------------------------------------------------------------
    def data_shard(self, task_type: str, task: int, chunk: int) -> Path:
        """One folder per task type, so each loads on its own (the dataset card's configs)."""
        return self._root / DATA / task_type / shard_name(task, chunk)

    def rejected_shard(self, task: int, chunk: int) -> Path:
        return self._root / REJECTED / shard_name(task, chunk)

    def data_shards(self) -> list[Path]:
        """Every finished data shard, in name order (temporaries never match)."""
        return self._shards(DATA, "part-*.parquet")

    def rejected_shards(self) -> list[Path]:
        return self._shards(REJECTED, "part-*.parquet")

    def task_shards(self, kind: str, task: int) -> list[Path]:
        """The data (``kind="data"``) or rejected shards of one task."""
        return self._shards(kind, f"part-{task:05d}-*.parquet")

    def relative(self, path: Path) -> str:
        """A path inside the run as the manifest and the card name it (``data/retrieval/part-...``)."""
        return Path(path).relative_to(self._root).as_posix()

    def resolve(self, relative: str) -> Path:
        """The file a manifest entry names."""
        return self._root / relative

    def _shards(self, kind: str, pattern: str) -> list[Path]:
        folder = self._root / kind
        return sorted(p for p in folder.rglob(pattern) if not any(x.startswith(".") for x in p.parts))

    # -- a run's life ----------------------------------------------------------------
    def exists(self) -> bool:
        return self._root.exists()

    def clear(self) -> None:
        """Remove what a run writes (``--overwrite``); other files in the folder are left alone."""
        for name in self.OWNED:
            target = self._root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def open(self, config: RunConfig, overwrite: bool = False) -> None:
        """Create or reopen the folder for this run; refuse one that holds another run."""
        if overwrite:
            self.clear()
        self._root.mkdir(parents=True, exist_ok=True)
        self.claim(config)
        self.remove_stale_temporaries()
        (self._root / DATA).mkdir(exist_ok=True)
        (self._root / REJECTED).mkdir(exist_ok=True)
        dump_config(config, self.config_file)

    def claim(self, config: RunConfig) -> None:
        """Record the run's identity, or check that an existing run is the same one."""
        fingerprint = config_fingerprint(config)
        out = self._root
        if self.run_file.exists():
            previous = json.loads(self.run_file.read_text())
            if previous["num_tasks"] != config.output.num_tasks:
                raise RunStateError(
                    f"{out} holds a run split into {previous['num_tasks']} tasks, this command asks for "
                    f"{config.output.num_tasks}: resume with the same --num-tasks, or pass --overwrite "
                    "to start over"
                )
            if previous["fingerprint"] != fingerprint:
                raise RunStateError(
                    f"{out} holds a run made with a different configuration (see {self.config_file}): "
                    "rerun with the same options to resume, or pass --overwrite to start over"
                )
            return
        leftovers = self._shards(DATA, "*.parquet") + self._shards(REJECTED, "*.parquet")
        if leftovers:  # shards with no run record: another tool's, or an older version's; never mix them in
            raise RunStateError(
                f"{out} already holds shards of an unknown run ({leftovers[0]}): choose an empty folder, "
                "or pass --overwrite to delete them"
            )
        atomic.write_json(self.run_file, {"fingerprint": fingerprint, "num_tasks": config.output.num_tasks})

    def num_tasks(self) -> int:
        """The task count recorded when the run started."""
        return int(json.loads(self.run_file.read_text(encoding="utf-8"))["num_tasks"])

    def remove_stale_temporaries(self) -> None:
        """Half-written files of a killed run: hidden, never read, removed on the next start."""
        for tmp in self._root.glob(atomic.TEMPORARY_GLOB):
            tmp.unlink(missing_ok=True)
        for kind in (DATA, REJECTED, "progress", "completions"):
            for tmp in (self._root / kind).rglob(atomic.TEMPORARY_GLOB):
                tmp.unlink(missing_ok=True)

    # -- tasks -----------------------------------------------------------------------
    def task(self, task: int) -> TaskState:
        return TaskState(self, task)

    def tasks(self, num_tasks: int) -> list[TaskState]:
        return [TaskState(self, t) for t in range(num_tasks)]


@dataclass
class TaskState:
    """One task's checkpoint and completion marker."""

    folder: RunFolder
    task: int

    @property
    def name(self) -> str:
        return f"task-{self.task:05d}"

    @property
    def progress_file(self) -> Path:
        return self.folder.root / "progress" / f"{self.name}.json"

    @property
    def completion_file(self) -> Path:
        return self.folder.root / "completions" / self.name

    def is_complete(self) -> bool:
        return self.completion_file.exists()

    def load(self) -> tuple[int, dict[str, Any] | None]:
        """(chunks already done, cumulative stats) of an unfinished task."""
        if not self.progress_file.exists():
            return 0, None
        data = json.loads(self.progress_file.read_text())
        return int(data["chunks_done"]), data["stats"]

    def save(self, chunks_done: int, stats: dict[str, Any]) -> None:
        """The commit of a chunk: written, atomically, only after every shard of the chunk exists."""
        with atomic.atomic_path(self.progress_file) as tmp:
            tmp.write_text(
                json.dumps({"chunks_done": chunks_done, "stats": stats}, indent=2, ensure_ascii=False)
            )
            crash_point("mid_checkpoint")

    def complete(self) -> None:
        atomic.write_text(self.completion_file, "done\n")

    def shards(self, kind: str) -> list[Path]:
        return self.folder.task_shards(kind, self.task)

    def remove_uncommitted(self, chunks_done: int) -> list[str]:
        """Delete this task's shards of chunks at or after ``chunks_done`` (not in the checkpoint).

        A process that died between a chunk's shards and its checkpoint leaves shards no
        checkpoint lists; the chunk is redone, so they must go before anything reads the
        task's shards back (the stateful steps resume from them).
        """
        removed = []
        for kind in (DATA, REJECTED):
            for path in self.shards(kind):
                if chunk_of(path) >= chunks_done:
                    path.unlink()
                    removed.append(self.folder.relative(path))
        return removed
