"""The run folder: every path of a run, what ``--overwrite`` removes, and each task's checkpoint.

No other module builds a run path from strings: they ask a ``RunFolder``. The folder is a
local path or a URL (``s3://bucket/run``, any fsspec filesystem; ``pipeline/storage.py``).
A run is split into ``output.num_tasks`` tasks (units of work; the kinds of rows are *task
types*); per task:

- ``data/<task_type>/part-TTTTT-CCCCC-AAAAAAAA.parquet`` and ``rejected/part-...``: the kept
  and dropped rows of task T's chunk C, written by attempt A (the writer's lease id), each
  written whole (temporary + rename locally, one PUT on an object store);
- ``progress/task-TTTTT/commit-VVVVVVVVVV-CCCCCC.json``: the checkpoint, written whole after
  each chunk's shards have landed: chunks done (C), the task's cumulative stats and the
  shards it commits, under the lease version (V) its writer held. The commit of the highest
  (V, C) is the only truth: a shard it does not list (a crashed or overtaken attempt's) is
  never read and is removed on the next start and when the run finishes; a commit under a
  version that was taken over no longer counts (``pipeline/run/lease.py``);
- ``progress/task-TTTTT/lease-VVVVVVVVVV.json``: the one writer's lease, a version per renewal;
- ``completions/task-TTTTT``: written when the task has finished.

Which blocks of the input a task reads is decided by ``pipeline/readers/blocks.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import storage
from ..config import RunConfig, config_text
from ..faults import crash_point
from .lease import Lease, LeaseHeld, LeaseLost, fences

__all__ = ["Lease", "LeaseHeld", "LeaseLost", "RunFolder", "RunStateError", "TaskState", "fences"]

# every name a run folder holds, once
DATA, REJECTED, PROGRESS, COMPLETIONS, EXPORT, LOGS, REVIEW = (
    "data",
    "rejected",
    "progress",
    "completions",
    "export",
    "logs",
    "review",
)
RUN_FILE, CONFIG_FILE, STATS_FILE, MANIFEST_FILE = "run.json", "config.yaml", "stats.json", "manifest.json"
CARD_FILE, LABELS_FILE, REPORT_FILE = "README.md", "labels.json", "report.html"
DOMAIN_TOPICS_FILE = "domain_topics.json"
LEGACY_DOMAIN_TOPICS_FILE = "domain_tasks.json"  # its name before 2026-12
SPLITS = "splits"  # synth split: splits/train/ (row shards), splits/eval/ (BEIR), splits/split.json
COMMIT_PREFIX = "commit-"


class RunStateError(RuntimeError):
    """The output folder holds a run that this command cannot continue."""


@dataclass(frozen=True)
class RunRecord:
    """What a run folder records of its configuration: enough to tell a resume from another run."""

    fingerprint: str
    num_tasks: int
    config_text: str  # config.yaml

    @classmethod
    def of(cls, config: RunConfig) -> RunRecord:
        return cls(config_fingerprint(config), config.output.num_tasks, config_text(config))


def config_fingerprint(config: RunConfig) -> str:
    """Hash of everything that decides the output; the output folder itself does not."""
    data = config.model_dump(mode="json")
    data["output"].pop("out_dir", None)
    data["output"].pop("license", None)  # only the card says it; a run may be relicensed and rerun
    data["models"].pop("engine_progress", None)  # display only
    for key in ("revision", "batch_invariant"):  # unset: the fingerprint of runs made before they existed
        if data["models"].get(key) is None:
            data["models"].pop(key, None)
    if data.get("pairs", {}).get("path") is None:
        data.pop("pairs", None)  # no pairs: the fingerprint of runs made before pairs existed
    if data["negatives"].get("model") is None:  # off: the fingerprint of runs made before it existed
        data["negatives"].pop("model", None)
        data["negatives"].pop("model_count", None)
    if data.get("aim", {}).get("path") is None:
        data.pop("aim", None)  # not aimed: the fingerprint of runs made before aims existed
    else:
        data["aim"].pop("path")  # the plan's content (its digest) decides, not where the file is
    data.pop("cache", None)  # where replies come from never changes them
    data["negatives"].pop("pool_dir", None)  # nor where the mining pool is kept
    data.pop("flow", None)  # how rows move through the steps never changes them
    # requests in flight never change a reply: pinned to the default of the runs made before it rose
    data["models"]["concurrency"] = 16
    data.pop("budget", None)  # a run stopped by its budget resumes with a larger one
    # the key's name before 2026-12, so runs started before the rename resume
    data["domains"]["tasks_per_domain"] = data["domains"].pop("topics_per_domain")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def shard_name(task: int, chunk: int, attempt: str) -> str:
    return f"part-{task:05d}-{chunk:05d}-{attempt}.parquet"


def chunk_of(path: Path | str) -> int:
    """The chunk number in a shard's name (``part-TTTTT-CCCCC-AAAAAAAA.parquet``)."""
    return int(str(path).rsplit("/", 1)[-1].split(".")[0].split("-")[2])


def shards_under(folder: Path, pattern: str = "part-*.parquet") -> list[Path]:
    """Every finished shard under ``folder``, in name order: the one listing of shards (a run's,
    and ``synth train --data`` on a folder of them). Hidden files and folders inside it, the
    temporaries among them, never match; the folder itself may be under a hidden one."""
    if not folder.exists():
        return []
    root = str(folder).rstrip("/")
    found = (p for p in folder.rglob(pattern) if storage.is_remote(p) or p.is_file())
    return sorted(
        (p for p in found if not any(x.startswith(".") for x in str(p)[len(root) + 1 :].split("/"))), key=str
    )


class RunFolder:
    """One run's output folder and every file in it."""

    # what a run writes, and so what --overwrite removes; other files in the folder are left alone
    OWNED = (DATA, REJECTED, PROGRESS, COMPLETIONS, RUN_FILE, STATS_FILE, MANIFEST_FILE, CONFIG_FILE)
    OWNED += (LABELS_FILE, DOMAIN_TOPICS_FILE, LEGACY_DOMAIN_TOPICS_FILE, CARD_FILE, REPORT_FILE)
    OWNED += (EXPORT, REVIEW, SPLITS)

    def __init__(self, root: str | Path):
        self._root = storage.location(root)

    @property
    def remote(self) -> bool:
        """True when the folder is on an object store or another remote filesystem."""
        return storage.is_remote(self._root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self._root)!r})"

    def __str__(self) -> str:
        return str(self._root)

    # -- the files of a run ---------------------------------------------------------
    @property
    def root(self) -> Path:
        return self._root

    @property
    def name(self) -> str:
        """The folder's own name (its last path part; a local ``.`` is named as it resolves)."""
        if not self.remote:
            return self._root.resolve().name
        return str(self._root).rstrip("/").rsplit("/", 1)[-1]

    @property
    def run_file(self) -> Path:
        return self._root / RUN_FILE

    @property
    def config_file(self) -> Path:
        return self._root / CONFIG_FILE

    @property
    def stats_file(self) -> Path:
        return self._root / STATS_FILE

    @property
    def manifest_file(self) -> Path:
        return self._root / MANIFEST_FILE

    @property
    def card_file(self) -> Path:
        """The dataset card: README.md, so the Hub shows it."""
        return self._root / CARD_FILE

    @property
    def labels_file(self) -> Path:
        return self._root / LABELS_FILE

    @property
    def domain_topics_file(self) -> Path:
        """A domain run's brainstormed topics (pipeline/generate/domain.py); a run started before
        the file's rename keeps reading its ``domain_tasks.json``."""
        legacy = self._root / LEGACY_DOMAIN_TOPICS_FILE
        return legacy if legacy.exists() else self._root / DOMAIN_TOPICS_FILE

    @property
    def report_file(self) -> Path:
        return self._root / REPORT_FILE

    @property
    def data_folder(self) -> Path:
        """``data/``: one subfolder of shards per task type."""
        return self._root / DATA

    @property
    def rejected_folder(self) -> Path:
        return self._root / REJECTED

    @property
    def logs_folder(self) -> Path:
        """``logs/`` in the folder; for a remote folder, a local one (a log is appended line by line)."""
        if self.remote:
            from ..models import cache_root

            return storage.local_home(self._root, cache_root() / LOGS)
        return self._root / LOGS

    def export_folder(self, format: str) -> Path:
        return self._root / EXPORT / format

    @property
    def batch_folder(self) -> Path:
        """``--engine batch``: each round's requests file, the results read back and their answers."""
        return self.root / "batch"

    @property
    def review_folder(self) -> Path:
        """``review/``: a person's decisions on sampled rows (``synth review``), one file per save."""
        return self._root / REVIEW

    @property
    def calibration_file(self) -> Path:
        """``review/calibration.json``: what ``synth calibrate`` measured from the labels (the card
        and the report show it; they never compute it)."""
        return self._root / REVIEW / "calibration.json"

    @property
    def train_split_folder(self) -> Path:
        """``splits/train/``: the rows ``synth split`` kept for training (``synth train`` reads it)."""
        return self._root / SPLITS / "train"

    @property
    def eval_split_folder(self) -> Path:
        """``splits/eval/``: the held-out queries as a BEIR folder (``synth eval --run`` scores on it)."""
        return self._root / SPLITS / "eval"

    @property
    def held_out_file(self) -> Path:
        """``splits/held_out_documents.txt``: the held-out document ids, one a line (a later
        ``synth loop`` round keeps them out of its training rows)."""
        return self._root / SPLITS / "held_out_documents.txt"

    @property
    def split_file(self) -> Path:
        """``splits/split.json``: how the split was drawn and what each side holds."""
        return self._root / SPLITS / "split.json"

    def review_files(self) -> list[Path]:
        return self._shards(REVIEW, "labels-*.parquet")

    # -- shards ----------------------------------------------------------------------
    def data_shard(self, task_type: str, task: int, chunk: int, attempt: str) -> Path:
        """One folder per task type, so each loads on its own (the dataset card's configs)."""
        return self._root / DATA / task_type / shard_name(task, chunk, attempt)

    def rejected_shard(self, task: int, chunk: int, attempt: str) -> Path:
        return self._root / REJECTED / shard_name(task, chunk, attempt)

    def data_shards(self) -> list[Path]:
        """Every finished data shard, in name order (temporaries never match)."""
        return self._shards(DATA, "part-*.parquet")

    def rejected_shards(self) -> list[Path]:
        return self._shards(REJECTED, "part-*.parquet")

    def task_shards(self, kind: str, task: int) -> list[Path]:
        """Every data (``kind="data"``) or rejected shard of one task on disk, committed or not."""
        return self._shards(kind, f"part-{task:05d}-*.parquet")

    def committed(self, num_tasks: int) -> list[str]:
        """The shards the tasks' checkpoints commit (relative paths): the run's rows, and no others."""
        return sorted(name for state in self.tasks(num_tasks) for name in state.load().shards)

    def remove_orphans(self, committed: list[str]) -> list[str]:
        """Delete every shard not in ``committed`` (an attempt that crashed or was overtaken)."""
        keep = set(committed)
        orphans = [p for p in self._shards(DATA, "*.parquet") + self._shards(REJECTED, "*.parquet")]
        orphans = [p for p in orphans if self.relative(p) not in keep]
        for path in orphans:
            storage.remove(path)
        return [self.relative(p) for p in orphans]

    def relative(self, path: Path) -> str:
        """A path inside the run as the manifest and the card name it (``data/retrieval/part-...``)."""
        root, text = str(self._root).rstrip("/"), str(path)
        if not text.startswith(root + "/"):
            raise ValueError(f"{text} is not inside {root}")
        return text[len(root) + 1 :]

    def resolve(self, relative: str) -> Path:
        """The file a manifest entry names."""
        return self._root / relative

    def _shards(self, kind: str, pattern: str) -> list[Path]:
        return shards_under(self._root / kind, pattern)

    # -- a run's life ----------------------------------------------------------------
    def exists(self) -> bool:
        return self._root.exists()

    def open(
        self,
        record: RunRecord,
        overwrite: bool = False,
        corpus: dict | None = None,
        accept_corpus_change: bool = False,
    ) -> None:
        """Create or reopen the folder for this run; refuse one that holds another run.

        Everything is checked before anything is written. A new run records its identity and its
        input's (``corpus``, ``Corpus.identity``) in one exclusive create: of two ranks starting
        together, one writes and the other checks against it. A resumed run whose input changed
        stops, naming the file: the finished chunks were read from the old blocks, and the new
        file may cut into other ones. With ``accept_corpus_change`` the unfinished tasks start
        over on the new block plan (their shards and checkpoints are removed); finished tasks stay
        as they are. ``overwrite`` removes what a run writes (other files are left alone).
        """
        created = {"fingerprint": record.fingerprint, "num_tasks": record.num_tasks}
        created |= {"corpus": corpus} if corpus is not None else {}
        while True:
            previous = None if overwrite else self._recorded(record)
            if previous is not None and self._input_changed(previous, corpus, accept_corpus_change):
                self._restart_unfinished(record.num_tasks)
            if overwrite:
                for name in self.OWNED:
                    storage.remove(self._root / name)
                overwrite = False
            if not self.remote:  # an object store has no folders to make
                self._root.mkdir(parents=True, exist_ok=True)
            if previous is not None or storage.create_exclusive(
                self.run_file, json.dumps(created, indent=2).encode()
            ):
                break
            # another rank created the record a moment ago: check this run against it
        if previous is not None and corpus is not None and previous.get("corpus") != corpus:
            storage.write_json(self.run_file, {**previous, "corpus": corpus})
        if not self.remote:  # a killed run's half-written files (``storage.sweep_temporaries``)
            below = [self._root / k for k in (DATA, REJECTED, PROGRESS, COMPLETIONS)]
            storage.sweep_temporaries([self._root], below, max_age=Lease.seconds())
            (self._root / DATA).mkdir(exist_ok=True)
            (self._root / REJECTED).mkdir(exist_ok=True)
        storage.write_text(self.config_file, record.config_text)

    def _recorded(self, record: RunRecord) -> dict | None:
        """The run record already in the folder, checked to be this run's; None for a new run."""
        out = self._root
        if not self.run_file.exists():
            leftovers = self._shards(DATA, "*.parquet") + self._shards(REJECTED, "*.parquet")
            if leftovers:  # shards with no run record (another tool's, an older version's): never mix them in
                raise RunStateError(
                    f"{out} already holds shards of an unknown run ({leftovers[0]}): choose an empty "
                    "folder, or pass --overwrite to delete them"
                )
            return None
        previous = json.loads(self.run_file.read_text())
        if previous["num_tasks"] != record.num_tasks:
            raise RunStateError(
                f"{out} holds a run split into {previous['num_tasks']} tasks, this command asks for "
                f"{record.num_tasks}: resume with the same --num-tasks, or pass --overwrite "
                "to start over"
            )
        if previous["fingerprint"] != record.fingerprint:
            raise RunStateError(
                f"{out} holds a run made with a different configuration (see {self.config_file}): "
                "rerun with the same options to resume, or pass --overwrite to start over"
            )
        return previous

    def _input_changed(self, previous: dict, corpus: dict | None, accept_change: bool) -> bool:
        """Whether the input changed since the run started (and may: else a ``RunStateError``)."""
        if corpus is None or previous.get("corpus") in (None, corpus):
            return False
        if not accept_change:
            raise RunStateError(_corpus_change(self._root, previous["corpus"], corpus))
        return True

    def _restart_unfinished(self, num_tasks: int) -> None:
        """The unfinished tasks' shards and checkpoints removed: they start over on the new input."""
        for state in self.tasks(num_tasks):
            if not state.is_complete():
                state.start_over()

    def num_tasks(self) -> int:
        """The task count recorded when the run started."""
        return int(json.loads(self.run_file.read_text(encoding="utf-8"))["num_tasks"])

    # -- tasks -----------------------------------------------------------------------
    def task(self, task: int) -> TaskState:
        return TaskState(self, task)

    def tasks(self, num_tasks: int) -> list[TaskState]:
        return [TaskState(self, t) for t in range(num_tasks)]


def _corpus_change(out: Path, previous: dict, now: dict) -> str:
    before = {f["source"]: f for f in previous["files"]}
    after = {f["source"]: f for f in now["files"]}
    changed = sorted(s for s in before.keys() & after.keys() if before[s] != after[s])
    if changed:
        old, new = before[changed[0]], after[changed[0]]
        if "revision" in old or "revision" in new:
            what = (
                f"{changed[0]} changed since the run started (commit {old.get('revision')} -> "
                f"{new.get('revision')} on the Hub)"
            )
        else:
            what = f"{changed[0]} changed since the run started (size {old.get('size')} -> {new.get('size')})"
    elif before.keys() != after.keys():
        gone, added = sorted(before.keys() - after.keys()), sorted(after.keys() - before.keys())
        what = f"the corpus files changed since the run started (gone: {gone[:3]}, new: {added[:3]})"
    else:
        what = "the corpus's block plan changed since the run started"
    return (
        f"{what}: the finished chunks of {out} were read from the old input. Write to a new --out, "
        "or pass --accept-corpus-change to start the unfinished tasks over on the new input"
    )


@dataclass(frozen=True)
class Checkpoint:
    """What a task has committed: chunks done, its cumulative stats, and the shards they wrote."""

    chunks_done: int = 0
    stats: dict[str, Any] | None = None
    shards: tuple[str, ...] = ()  # relative paths, data and rejected

    def of(self, kind: str) -> list[str]:
        return [name for name in self.shards if name.startswith(kind + "/")]


@dataclass
class TaskState:
    """One task's checkpoint (its commits), lease and completion marker."""

    folder: RunFolder
    task: int

    @property
    def name(self) -> str:
        return f"task-{self.task:05d}"

    @property
    def task_folder(self) -> Path:
        """``progress/task-TTTTT/``: the task's commits and its lease."""
        return self.folder.root / PROGRESS / self.name

    @property
    def replies_folder(self) -> Path:
        """The replies of the chunks in flight when the reply cache is off (``reply_cache.journal``)."""
        return self.task_folder / "replies"

    def chunk_replies(self, chunk: int) -> Path:
        """One chunk's journal of replies, removed once the chunk is committed."""
        return self.replies_folder / f"chunk-{chunk:05d}"

    @property
    def legacy_progress_file(self) -> Path:
        """Where runs made before fenced leases kept their one checkpoint (read when no commit exists)."""
        return self.folder.root / PROGRESS / f"{self.name}.json"

    @property
    def completion_file(self) -> Path:
        return self.folder.root / COMPLETIONS / self.name

    def is_complete(self) -> bool:
        return self.completion_file.exists()

    def commit_path(self, version: int, chunks_done: int) -> Path:
        return self.task_folder / f"{COMMIT_PREFIX}{version:010d}-{chunks_done:06d}.json"

    def _commits(self) -> list[str]:
        names = storage.list_names(self.task_folder)
        return sorted(n for n in names if n.startswith(COMMIT_PREFIX) and n.endswith(".json"))

    def load(self) -> Checkpoint:
        """The task's checkpoint: the commit of the highest lease version and chunk count; an empty
        one if it has none yet."""
        for _ in range(5):  # the newest commit listed may be replaced (and the old one removed) meanwhile
            commits = self._commits()
            path = self.task_folder / commits[-1] if commits else self.legacy_progress_file
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                if not commits:
                    return Checkpoint()
                continue
            return Checkpoint(int(data["chunks_done"]), data["stats"], tuple(data.get("shards", ())))
        raise RunStateError(f"{self.task_folder}: the commits keep changing while being read; rerun")

    def save(self, checkpoint: Checkpoint, version: int) -> None:
        """The commit of a chunk under lease ``version``: written whole, only after every shard it
        lists exists; the writer's older commits are removed after it."""
        record = {"chunks_done": checkpoint.chunks_done, "stats": checkpoint.stats}
        record["shards"] = list(checkpoint.shards)
        record["lease"] = version
        path = self.commit_path(version, checkpoint.chunks_done)
        with storage.atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
            crash_point("mid_checkpoint")
        for name in self._commits():
            if name < path.name:
                storage.remove(self.task_folder / name)
        storage.remove(self.legacy_progress_file)

    def start_over(self) -> None:
        """Remove the task's shards and commits (``--accept-corpus-change``: it starts over on the
        new input); the lease stays."""
        doomed = [path for kind in (DATA, REJECTED) for path in self.folder.task_shards(kind, self.task)]
        doomed += [self.task_folder / name for name in self._commits()] + [self.legacy_progress_file]
        for path in doomed:
            storage.remove(path)

    def complete(self) -> None:
        storage.write_text(self.completion_file, "done\n")

    def shards(self, kind: str, checkpoint: Checkpoint | None = None) -> list[Path]:
        """The committed shards of one kind (``data`` or ``rejected``), as the checkpoint lists them."""
        return [self.folder.resolve(name) for name in (checkpoint or self.load()).of(kind)]

    def remove_uncommitted(self, keep: tuple[str, ...] | list[str]) -> list[str]:
        """Delete this task's shards that the checkpoint does not list (``keep``).

        A process that died between a chunk's shards and its checkpoint, or a writer whose
        lease was taken over, leaves shards no checkpoint lists; they must go before anything
        reads the task's shards back (the stateful steps resume from them).
        """
        shards = [path for kind in (DATA, REJECTED) for path in self.folder.task_shards(kind, self.task)]
        doomed = {self.folder.relative(path): path for path in shards}
        doomed = {name: path for name, path in doomed.items() if name not in set(keep)}
        for path in doomed.values():
            storage.remove(path)
        return list(doomed)

    def lease(self, wait: float | None = None) -> Lease:
        """The one-writer lease of this task (``with state.lease(): ...``)."""
        return Lease(self.task_folder, self.name, wait)

    def lease_holder(self) -> dict | None:
        """The record of the live writer holding this task's lease, or None (free or released)."""
        from .lease import newest

        _, held = newest(self.task_folder)
        return held if held and held.get("state") == "held" else None
