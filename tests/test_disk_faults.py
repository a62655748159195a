"""A full disk or a read-only folder in the middle of a run: one line naming the file, nothing
half-written visible, and a rerun after freeing space ends with exactly an uninterrupted run's rows.

Every run is a real `synth generate` process against the loopback OpenAI-compatible server of
tests/test_openai_engine.py (deterministic replies), so what is checked is what a user sees.
Faults are injected at a chosen write (``SYNTH_DISK_FULL_AT``, pipeline/faults.py: half the
bytes reach the temporary, then ENOSPC) and, where this machine lets the test mount one, met
for real on a small tmpfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S

from .conftest import child_env
from .test_openai_engine import FakeServer, http_args


@pytest.fixture(scope="module")
def served():
    server = FakeServer()
    yield server
    server.close()


def command(server: FakeServer, out: Path, minilm_path: str) -> list[str]:
    sets = ["filters.cosine.threshold=0.4", "output.shard_rows=2", "models.embedding_store=false"]
    args = http_args(server, out, minilm_path, limit=8, sets=sets, extra=["--num-tasks", "2"])
    return [sys.executable, "-m", "pipeline.cli", *args]


def run(server, out, minilm_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(server, out, minilm_path),
        env={**child_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows_of(out: Path) -> list[tuple]:
    kept = pq.read_table(out / "data").to_pylist()
    dropped = pq.read_table(out / "rejected").to_pylist()
    return sorted((r[S.ID], r[S.QUERY], "kept") for r in kept) + sorted(
        (r[S.ID], r[S.REASON], "dropped") for r in dropped
    )


@pytest.fixture(scope="module")
def whole(served, minilm_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("disk") / "whole"
    done = run(served, out, minilm_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return rows_of(out)


def visible_temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# a checkpoint, and a run-level file of the finalize step (manifest.json; stats.json before it
# takes the same temporary-then-rename, storage.replacing). A shard's write (data and rejected
# shards are written by one function) meets a full disk in test_a_real_full_disk_then_freed_space_resumes,
# whose room is a third of a run's bytes; it is not injected here too, for test time.
@pytest.mark.parametrize("target", ["progress/@2", "manifest.json"])
def test_a_full_disk_at_a_write_stops_in_one_line_and_the_rerun_loses_nothing(
    target, served, minilm_path, tmp_path, whole
):
    out = tmp_path / "run"
    failed = run(served, out, minilm_path, SYNTH_DISK_FULL_AT=target)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr + failed.stdout
    (line,) = [x for x in failed.stderr.splitlines() if x.startswith("error:")]
    name = target.split("@")[0]
    assert f"cannot write {out}/" in line and name in line and "No space left on device" in line, line
    assert "rerun the command" in line
    assert not visible_temporaries(out), visible_temporaries(out)
    again = run(served, out, minilm_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert rows_of(out) == whole
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == sum(1 for r in whole if r[2] == "kept")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted for the test (skipped where the machine does not allow mounting)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_then_freed_space_resumes(served, minilm_path, small_disk, whole):
    out = small_disk / "run"
    first = run(served, out, minilm_path, SYNTH_DISK_FULL_AT="")  # a first run fills the folder's files
    assert first.returncode == 0, first.stderr[-2000:]
    needed = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    # leave less room than a run needs: it stops at whichever write meets the full disk
    filler = small_disk / f"filler-{uuid.uuid4().hex}"
    free = shutil.disk_usage(small_disk).free
    with filler.open("wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * max(0, free - needed // 3))
    failed = run(served, out, minilm_path)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr
    (line,) = [x for x in failed.stderr.splitlines() if x.startswith("error:")]
    assert "No space left on device" in line and str(out) in line, line
    assert not visible_temporaries(out)
    filler.unlink()  # space is freed
    again = run(served, out, minilm_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert rows_of(out) == whole


def test_a_read_only_output_folder_is_one_line(served, minilm_path, small_disk):
    out = small_disk / "run"
    out.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    failed = run(served, out, minilm_path)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    (line,) = [x for x in failed.stderr.splitlines() if x.startswith("error:")]
    assert str(out) in line and "Read-only file system" in line, line
