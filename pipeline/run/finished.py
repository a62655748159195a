"""Is a run folder finished, and do its files match its manifest? Checked before export, report, publish."""

from __future__ import annotations

import json
from pathlib import Path

from .. import storage
from .folder import RunFolder


class RunNotFinished(Exception):
    """The folder is not a complete run: the message says what is missing and what to do."""


def finished_run(out: str | Path) -> dict:
    """The run's manifest, after checking every task completed and the shards are the manifest's."""
    folder = RunFolder(out)
    if not folder.run_file.exists():
        raise RunNotFinished(f"{out} is not a run folder (no run.json): pass the folder given to --out")
    tasks = folder.tasks(folder.num_tasks())
    missing = [state.task for state in tasks if not state.is_complete()]
    if missing:
        raise RunNotFinished(
            f"{out} is not finished: {len(missing)} of {len(tasks)} task(s) have no completion marker "
            f"(first: task {missing[0]}); run the same `synth generate` command again to finish it"
        )
    if not folder.manifest_file.exists():
        raise RunNotFinished(f"{out} has no manifest.json: run the same `synth generate` command again")
    manifest = json.loads(folder.manifest_file.read_text(encoding="utf-8"))
    listed = {s["path"]: s["rows"] for s in manifest["shards"]}
    on_disk = {folder.relative(p): p for p in folder.data_shards()}
    for path, rows in listed.items():
        if path not in on_disk:
            raise RunNotFinished(f"{folder.resolve(path)} is in the manifest but not on disk")
        found = storage.parquet_file(on_disk[path]).metadata.num_rows
        if found != rows:
            raise RunNotFinished(f"{folder.resolve(path)} has {found} rows, the manifest says {rows}")
    extra = sorted(set(on_disk) - set(listed))
    if extra:
        raise RunNotFinished(
            f"{folder.resolve(extra[0])} is not in the manifest: the folder was changed after the run"
        )
    return manifest
