"""The fenced lease: one writer per task, takeovers that only one taker wins, a stalled writer that
cannot commit, and ranks that start at the same instant (pipeline/run/lease.py, run/folder.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.config import load_config
from pipeline.executors import run_generate
from pipeline.run.folder import Checkpoint, Lease, LeaseHeld, LeaseLost, RunFolder
from pipeline.run.lease import newest, version_path
from pipeline.storage import is_remote, location, machine

from .conftest import FakeEngine, child_env, chunks_committed, default_answer, generate_args
from .test_openai_engine import FakeServer


def write_version(folder, version: int, **record) -> Path:
    path = version_path(location(folder), version)
    data = json.dumps({"owner": "other", "state": "held", "host": "elsewhere", "pid": 1, **record}).encode()
    if is_remote(path):
        path.fs.pipe_file(path.path, data)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def test_a_live_writer_refuses_a_second_and_a_silent_one_is_taken_over(tmp_path, minilm_path, monkeypatch):
    monkeypatch.setenv("SYNTH_LEASE_WAIT", "0")
    out = tmp_path / "out"
    settings = [
        f"output.out_dir={out}",
        "limit=4",
        f"models.embedder={minilm_path}",
        "filters.judge.enabled=false",
    ]
    config = load_config(None, settings)
    config.models.generator = "fake-engine"
    folder = RunFolder(out).task(0).task_folder
    # this test's own process on this machine, renewed just now: a second writer is refused
    write_version(folder, 7, machine=machine(), pid=os.getpid())
    with pytest.raises(LeaseHeld, match=r"task-00000 is being written by process \d+"):
        run_generate(config, engine=FakeEngine(default_answer))
    assert not list(RunFolder(out).data_shards())  # refused before writing anything
    # a writer elsewhere that has not renewed for longer than the lease time (on the disk's clock)
    old = time.time() - 10_000
    os.utime(version_path(folder, 7), (old, old))
    run_generate(config, engine=FakeEngine(default_answer))
    state = RunFolder(out).task(0)
    assert state.is_complete() and state.lease_holder() is None  # released when done
    version, record = newest(folder)
    assert version > 8 and record["state"] == "released"


def test_a_dead_writers_lease_on_this_machine_is_taken_over_at_once(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    write_version(tmp_path, 3, machine=machine(), pid=int(dead.stdout))
    with Lease(tmp_path, "task-00000", wait=0) as lease:
        assert lease.version == 4 and newest(tmp_path)[1]["owner"] == lease.owner
    assert newest(tmp_path)[1]["state"] == "released"


def test_a_lease_seen_from_another_pid_namespace_is_not_taken_for_dead(tmp_path):
    """Containers that share a host name but not their process ids: the pid says nothing there."""
    write_version(tmp_path, 1, machine=machine() + "-other-namespace", pid=999_999)
    with pytest.raises(LeaseHeld):
        Lease(tmp_path, "task-00000", wait=0).acquire()


def _take_over(folder: str, start_at: float, results) -> None:
    while time.time() < start_at:  # every taker starts in the same instant
        time.sleep(0.001)
    lease = Lease(location(folder), "task-00000", wait=0)
    try:
        lease.acquire()
    except LeaseHeld:
        results.put("refused")
        return
    results.put(f"won {lease.version}")
    time.sleep(1.0)  # hold it while the others look
    lease.release()


def _race(folder: str, takers: int = 6) -> list[str]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 4.0
    processes = [context.Process(target=_take_over, args=(folder, start_at, results)) for _ in range(takers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    return sorted(results.get(timeout=5) for _ in processes)


def test_takers_of_one_expired_lease_on_local_disk_one_wins(tmp_path):
    for round_ in range(3):
        folder = tmp_path / f"round-{round_}"
        path = write_version(folder, 5)
        old = time.time() - 10_000
        os.utime(path, (old, old))
        outcome = _race(str(folder))
        assert outcome.count("won 6") == 1 and outcome.count("refused") == len(outcome) - 1, outcome


def test_takers_of_one_expired_lease_on_s3_one_wins(s3_server, monkeypatch):
    monkeypatch.setenv("SYNTH_LEASE_SECONDS", "2")
    folder = s3_server.bucket("lease-race") + "/run/progress/task-00000"
    write_version(folder, 5)
    time.sleep(3.5)  # older than the lease time on the store's clock
    outcome = _race(folder)
    assert outcome.count("won 6") == 1 and outcome.count("refused") == len(outcome) - 1, outcome


def test_a_writer_that_stalled_past_its_lease_loses_it_and_its_late_commit_does_not_count(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SYNTH_LEASE_SECONDS", "1.5")
    state = RunFolder(tmp_path / "out").task(0)
    stalled = Lease(state.task_folder, state.name, wait=0)
    stalled.acquire()
    stalled._stop.set()  # its heartbeat stops, as in a long pause
    state.save(Checkpoint(1, {}, ("data/x/part-00000-00000-a.parquet",)), stalled.confirm())
    time.sleep(2.5)
    with state.lease(wait=5) as taker:  # takes the stale lease over and commits again under its own
        state.save(state.load(), taker.confirm())
        # the stalled writer wakes and commits a chunk under its old version: it does not count
        state.save(Checkpoint(2, {}, ("data/x/part-00000-00001-a.parquet",)), stalled.version)
        assert state.load().chunks_done == 1
        with pytest.raises(LeaseLost):
            stalled.confirm()
        assert not stalled._create(stalled.version + 1, "held")  # nor can it renew
        state.save(Checkpoint(2, {}, ("data/x/part-00000-00001-b.parquet",)), taker.confirm())
    assert state.load().shards == ("data/x/part-00000-00001-b.parquet",)


def _propose(path: str, number: int, start_at: float, results) -> None:
    from pipeline.generate.labels import create_once

    while time.time() < start_at:
        time.sleep(0.001)
    results.put(json.dumps(create_once(location(path), {"label": f"proposal {number}"})))


def test_a_label_set_proposed_by_many_processes_at_once_is_created_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 4.0
    path = str(tmp_path / "labels.json")
    processes = [context.Process(target=_propose, args=(path, k, start_at, results)) for k in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    used = {results.get(timeout=5) for _ in processes}
    assert len(used) == 1 and json.loads(used.pop()) == json.loads(Path(path).read_text())


def rows(out: Path) -> list[tuple]:
    committed = RunFolder(out).committed(1)
    found = []
    for name in committed:
        for row in pq.read_table(out / name).to_pylist():
            found.append((name.split("/")[0], row[S.ID], row.get(S.QUERY), row.get(S.POSITIVE)))
    return sorted(found, key=str)


def test_a_paused_writer_resumed_after_a_takeover_cannot_commit(tmp_path, minilm_path):
    """SIGSTOP past the lease time, a second writer takes the task, SIGCONT: the first leaves the task,
    and the run's rows equal an uninterrupted run's."""
    server = FakeServer(delay_s=0.25)
    try:
        # one chunk out at a time (streamed in slices): the pause then lands between chunks
        sets = ["filters.cosine.enabled=false", "output.shard_rows=2", "filters.judge.enabled=false"]
        sets.append("flow.rows_in_flight=1")
        extra = ["--engine", "openai", "--base-url", server.url, "--no-cache"]
        reference = tmp_path / "reference"
        args = generate_args(reference, minilm_path, limit=8, sets=sets, extra=extra)
        command = [sys.executable, "-m", "pipeline.cli", *args]
        done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

        out = tmp_path / "out"
        command = [
            sys.executable,
            "-m",
            "pipeline.cli",
            *generate_args(out, minilm_path, limit=8, sets=sets, extra=extra),
        ]
        env = {**child_env(), "SYNTH_LEASE_SECONDS": "3"}
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while not chunks_committed(out):
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        time.sleep(4)  # past the lease time: its lease is stale now
        second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while (RunFolder(out).task(0).lease_holder() or {}).get("pid") != second.pid:  # taken over
            assert second.poll() is None and time.time() < deadline, second.communicate()[1][-3000:]
            time.sleep(0.1)
        first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=240)
        _, second_err = second.communicate(timeout=240)
        assert second.returncode == 0, second_err[-3000:]
        assert first.returncode == 0 and "Traceback" not in first_err, first_err[-3000:]
        assert "took this task over" in first_err, first_err[-3000:]
        assert rows(out) == rows(reference)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["rows"] == json.loads((reference / "manifest.json").read_text())["rows"]
    finally:
        server.close()


def test_ranks_started_in_the_same_instant_finish_with_one_label_set(tmp_path, minilm_path):
    """Four ranks at once, again and again (``SYNTH_RANK_RACES``, 1 in ``make test``; measured with 10):
    every rank finishes, one labels.json, the rows of one process."""
    server = FakeServer()
    try:
        sets = [
            "filters.cosine.enabled=false",
            "output.shard_rows=2",
            "output.num_tasks=4",
            "filters.judge.enabled=false",
            "generation.tasks=[retrieval, classification]",
            "negatives.mined_count=0",
            "negatives.min_negatives=0",
        ]
        extra = ["--engine", "openai", "--base-url", server.url, "--no-cache"]
        reference = tmp_path / "reference"
        single = [
            sys.executable,
            "-m",
            "pipeline.cli",
            *generate_args(reference, minilm_path, limit=8, sets=sets, extra=extra),
        ]
        done = subprocess.run(single, env=child_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        expected = rows_of_run(reference)
        for attempt in range(int(os.environ.get("SYNTH_RANK_RACES", "1"))):
            out = tmp_path / f"ranks-{attempt}"
            args = generate_args(out, minilm_path, limit=8, sets=sets, extra=extra)
            ranks = [
                subprocess.Popen(
                    [sys.executable, "-m", "pipeline.cli", *args, "--rank", str(k), "--world-size", "4"],
                    env=child_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for k in range(4)
            ]
            for rank in ranks:
                _, err = rank.communicate(timeout=300)
                assert rank.returncode == 0, (attempt, err[-3000:])
            labels = json.loads((out / "labels.json").read_text())
            assert labels == json.loads((reference / "labels.json").read_text())
            assert rows_of_run(out) == expected, attempt
            assert not [p for p in out.rglob("*.tmp")], attempt
    finally:
        server.close()


def rows_of_run(out: Path) -> list[tuple]:
    return sorted(
        (r[S.ID], r[S.TASK_TYPE], r[S.QUERY], r[S.POSITIVE]) for r in pq.read_table(out / "data").to_pylist()
    )


def test_a_store_without_conditional_create_takes_one_writer_per_run_folder(tmp_path):
    from pipeline.run.folder import RunStateError, fences
    from pipeline.run.plan import resolve_plan

    assert fences(location(str(tmp_path))) and fences(location("s3://bucket/run"))
    assert not fences(location("hf://datasets/team/runs/first"))
    config = load_config(None, ["output.out_dir=hf://datasets/team/runs/first"])
    for parallel in ({"workers": 2}, {"world_size": 2}, {"executor": "ray"}):
        with pytest.raises(RunStateError, match="cannot create a file only if it is absent"):
            resolve_plan(config, **parallel)


def test_an_s3fs_without_conditional_puts_is_refused_in_one_line(monkeypatch):
    import s3fs

    from pipeline.storage import StorageError, create_exclusive

    monkeypatch.setattr(s3fs, "__version__", "2024.6.1")
    with pytest.raises(StorageError, match=r"s3fs 2024.6.1 cannot create an object only if it is absent"):
        create_exclusive(location("s3://bucket/run/progress/task-00000/lease-0000000001.json"), b"{}")
