"""Exactly once at every crash point: a process killed at a named point, then the same run again.

For each point of ``pipeline/faults.py`` a real ``synth`` process (the fake engine, the full
default gate: language, repetition, copy checks, dedup, cosine, LLM and mined negatives,
margin, judge) exits there; the rerun in this process must end with exactly the files of an
uninterrupted run, row for row: nothing written twice, nothing lost, the manifest matching
the shards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.executors import run_generate
from pipeline.faults import CRASH_EXIT, ENV, RUN_POINTS

from .conftest import FakeEngine, child_env, default_answer
from .test_golden import snapshot

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "seed=3",
    "limit=12",
    "output.num_tasks=2",
    "output.shard_rows=3",  # two chunks per task
    "generation.tasks=[retrieval, sts]",
    "models.embedding_store=false",
    "filters.cosine.threshold=0.4",  # the fake engine's queries are word salads: let some reach the end
]
# the point and how often it is passed before the process dies there: late enough that
# something is already on disk, early enough that work is left
CASES = [
    "after_replies@2",
    "before_shard@4",
    "after_shard@4",
    "before_checkpoint@2",
    "mid_checkpoint@2",
    "after_checkpoint@2",
    "before_complete@1",
    "in_finalize",
    "mid_manifest",
    "before_card",
]
CHILD = """
import sys
sys.path.insert(0, {root!r})
from tests.conftest import FakeEngine, default_answer
from pipeline.config import load_config
from pipeline.executors import run_generate
config = load_config(None, {settings!r})
config.models.generator = "fake-engine"
run_generate(config, engine=FakeEngine(default_answer))
"""


def _settings(out: Path, minilm_path: str) -> list[str]:
    return [*SETTINGS, f"output.out_dir={out}", f"models.embedder={minilm_path}"]


def _run_here(out: Path, minilm_path: str):
    config = load_config(None, _settings(out, minilm_path))
    config.models.generator = "fake-engine"
    return run_generate(config, engine=FakeEngine(default_answer))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache folder for the module (the mining pool is built once), not the user's."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("SYNTH_CACHE")
    os.environ["SYNTH_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SYNTH_CACHE", None)
    else:
        os.environ["SYNTH_CACHE"] = previous


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, minilm_path, cache):
    out = tmp_path_factory.mktemp("reference") / "out"
    _run_here(out, minilm_path)
    return snapshot(out)


def test_every_point_is_in_the_matrix():
    assert {case.split("@")[0] for case in CASES} == set(RUN_POINTS)


@pytest.mark.parametrize("case", CASES)
def test_a_crash_then_a_rerun_writes_exactly_the_uninterrupted_run(
    case, tmp_path, minilm_path, cache, uninterrupted
):
    out = tmp_path / "out"
    script = CHILD.format(root=str(ROOT), settings=_settings(out, minilm_path))
    env = {**child_env(), ENV: case, "SYNTH_CACHE": str(cache)}
    child = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == CRASH_EXIT, child.stderr[-3000:]
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert any(name.startswith("progress/") for name in left) or case.startswith("before_shard"), left
    _run_here(out, minilm_path)
    found = snapshot(out)
    assert sorted(found) == sorted(uninterrupted), (case, sorted(set(found) ^ set(uninterrupted)))
    differ = [name for name in found if found[name] != uninterrupted[name]]
    assert not differ, (case, differ)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["rows"] for s in manifest["shards"]) == found["stats.json"]["rows_out"] > 0
    assert not [p for p in out.rglob(".*.tmp")], "a crashed attempt's temporary file is still there"
