"""`synth publish` against a loopback Hub that misbehaves, as a real process: one line, never a
traceback or the token; transient faults retried; a revision that holds exactly the last run's
files; the repo's visibility changed on request, or a line saying why it cannot be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from .conftest import child_env, run_fake
from .hub_server import LoopbackHub

TOKEN = "hf_loopbackPublishToken987654"
REPO = "team/faults"


def make_run(out, minilm_path, limit: int, tasks: str):
    run_fake(
        f"output.out_dir={out}",
        f"limit={limit}",
        "output.shard_rows=4",
        f"models.embedder={minilm_path}",
        "filters.cosine.mode=percentile",
        f"generation.tasks=[{tasks}]",
    )
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("publish")
    first = make_run(root / "first", minilm_path, 8, "retrieval, sts")
    second = make_run(root / "second", minilm_path, 6, "retrieval")
    return first, second


@pytest.fixture
def hub(tmp_path):
    with LoopbackHub(tmp_path / "hub", TOKEN) as server:
        yield server


def publish(hub, out, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {**child_env(), "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": token, "HF_HUB_OFFLINE": "0"}
    env["HF_HUB_DISABLE_XET"] = "1"
    env.pop("TRANSFORMERS_OFFLINE", None)
    command = [sys.executable, "-m", "pipeline.cli", "publish", str(out), "--repo-id", REPO, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def committed(run) -> set[str]:
    manifest = json.loads((run / "manifest.json").read_text())
    return {s["path"] for s in manifest["shards"]} | {"README.md", "stats.json"}


def in_repo(hub, revision: str = "main") -> set[str]:
    folder = hub.root / REPO / revision
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    everything = done.stdout + done.stderr
    assert "Traceback" not in everything and TOKEN not in everything
    assert "HTTP Request" not in everything  # the client's INFO lines go to the log file
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    (line,) = [x for x in lines if x.startswith("error: ")]
    # besides the error, only the retries' warnings (one line each)
    assert all(x == line or (x.startswith("WARNING: Hub: ") and "retry" in x) for x in lines), lines
    return line


def test_a_second_run_replaces_the_first_and_visibility_follows(hub, runs):
    first, second = runs
    done = publish(hub, first)
    assert done.returncode == 0, done.stderr
    assert "HTTP Request" not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr
    assert in_repo(hub) == committed(first) | {".gitattributes"}
    assert hub.repos[REPO]["private"] is False
    # the second run into the same repo: the first run's shards are gone in the same commit
    done = publish(hub, second, "--private")
    assert done.returncode == 0, done.stderr
    assert in_repo(hub) == committed(second) | {".gitattributes"}
    stale = committed(first) - committed(second)
    assert stale and set(hub.commits[-1]["deleted"]) == stale and len(hub.commits) == 2
    assert f"removed {len(stale)} files of an earlier publish" in done.stdout
    assert hub.repos[REPO]["private"] is True and "the repo is now private" in done.stdout
    # --keep-existing keeps what is there; --public makes it public again
    done = publish(hub, first, "--keep-existing", "--public")
    assert done.returncode == 0, done.stderr
    assert in_repo(hub) == committed(first) | committed(second) | {".gitattributes"}
    assert hub.repos[REPO]["private"] is False and hub.commits[-1]["deleted"] == []
    # a repo whose visibility this token may not change: one line saying why, nothing committed
    hub.repos[REPO]["locked"] = True
    commits = len(hub.commits)
    line = one_error_line(publish(hub, first, "--private"))
    assert "make the repo private" in line and "403" in line and "admin rights" in line, line
    assert len(hub.commits) == commits and hub.repos[REPO]["private"] is False


@pytest.mark.parametrize(
    "fault, said",
    [
        ({"path": "/api/repos/create", "kind": "garbage"}, "not JSON"),
        ({"path": "/commit/", "kind": "redirect", "location": "ftp://elsewhere.invalid/x"}, "commit"),
        ({"path": "/api/repos/create", "kind": "status", "status": 400}, "400"),
        ({"path": "/commit/", "kind": "drop", "times": 99}, "cannot reach the Hub"),
        ({"path": "/commit/", "kind": "status", "status": 503, "times": 99}, "after 5 tries"),
    ],
    ids=["garbage body", "odd redirect", "client error", "dropped for good", "5xx for good"],
)
def test_a_misbehaving_hub_ends_in_one_line(hub, runs, fault, said, monkeypatch):
    hub.faults.append(fault)
    started = time.monotonic()
    line = one_error_line(publish(hub, runs[0]))
    assert said in line and REPO in line, line
    assert time.monotonic() - started < 120


@pytest.mark.parametrize(
    "fault",
    [
        {"path": "/commit/", "kind": "status", "status": 500, "times": 1},
        {"path": "/api/repos/create", "kind": "status", "status": 429, "retry_after": 1, "times": 2},
        {"path": "/commit/", "kind": "drop", "times": 1},
        {"path": "/preupload/", "kind": "slow", "seconds": 2, "times": 1},
    ],
    ids=["500 then success", "429 with Retry-After", "dropped once", "slow reply"],
)
def test_transient_faults_are_retried(hub, runs, fault):
    hub.faults.append(fault)
    started = time.monotonic()
    done = publish(hub, runs[0])
    assert done.returncode == 0, done.stderr
    assert fault["times"] == 0  # the fault was met
    assert in_repo(hub) == committed(runs[0]) | {".gitattributes"} and len(hub.commits) == 1
    if "retry_after" in fault:  # waited as the server asked, twice
        assert time.monotonic() - started >= 2
    assert TOKEN not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_the_log_file_holds_the_client_lines_not_the_token(hub, runs, tmp_path):
    cache = tmp_path / "cache"
    env_cache = {"SYNTH_CACHE": str(cache)}
    previous = os.environ.get("SYNTH_CACHE")
    os.environ.update(env_cache)
    try:
        done = publish(hub, runs[0])
    finally:
        if previous is None:
            os.environ.pop("SYNTH_CACHE")
        else:
            os.environ["SYNTH_CACHE"] = previous
    assert done.returncode == 0, done.stderr
    logs = list((cache / "logs").glob("publish-*.log"))
    assert logs
    text = logs[0].read_text()
    assert "HTTP Request" in text and TOKEN not in text
