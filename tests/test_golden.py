"""Golden run: a fixed-seed run's every output file, compared with the figures recorded in tests/golden/.

The run uses the fake engine over the packaged sample corpora (English and Chinese), all four
task types, two tasks, the default gate (language, repetition, copy checks, dedup, cosine, LLM
and mined negatives, margin, judge), and once more with a stop after a few engine calls and a
rerun. What is compared is everything a run writes except timings, dates and the command line:
the rows of every data and rejected shard (sorted), stats, manifest, card, labels, config,
checkpoints and completion markers. A refactor that changes any of it fails here.

After a deliberate change of output, rewrite the record with
``SYNTH_GOLDEN_WRITE=1 pytest tests/test_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import schema as S
from pipeline.config import load_config
from pipeline.executors import run_generate

from .conftest import FakeEngine, default_answer

RECORD = Path(__file__).parent / "golden" / "generate.json"
SETTINGS = [
    "seed=7",
    "limit=20",
    "output.num_tasks=2",
    "output.shard_rows=3",
    "generation.tasks=[retrieval, bitext, classification, sts]",
    "generation.languages={en: 1, zh: 1}",
    "models.embedding_store=false",
    "filters.cosine.threshold=0.4",  # the fake engine's queries are word salads: let some reach the end
    "filters.cosine.unscored=keep",  # MiniLM scores English only; Chinese rows go on to the later stages
]
TIMING_WORDS = ("seconds", "per_s", "engine_hours", "timings")


class Stop(RuntimeError):
    """The simulated stop: the engine fails part way into the run."""


def stopping_answer(after: int):
    calls = {"n": 0}

    def answer(prompt, output):
        calls["n"] += 1
        if calls["n"] > after:
            raise Stop("simulated stop")
        return default_answer(prompt, output)

    return answer


# the record's runs are staged: one chunk at a time, each step as one batch
STAGED = ["flow.streamed=false"]
# the same run streamed: slices of 2 rows, up to 3 chunks (12 rows each) out at once
STREAMED = ["flow.slice_rows=2", "flow.rows_in_flight=36"]


def _config(out: Path, minilm_path: str, *extra: str):
    config = load_config(None, [*SETTINGS, f"output.out_dir={out}", f"models.embedder={minilm_path}", *extra])
    config.models.generator = "fake-engine"
    return config


ATTEMPT = re.compile(r"(part-\d{5}-\d{5})-[0-9a-f]{8}(\.parquet)")
LEASE_VERSION = re.compile(r"(commit)-\d{10}(-\d{6}\.json)")


def attempt_free(name: str) -> str:
    """A shard's name without the writer's attempt id, a commit's without the lease version it was
    written under (both depend on who wrote it and how often it renewed its lease, not content)."""
    return LEASE_VERSION.sub(r"\1-<LEASE>\2", ATTEMPT.sub(r"\1-<ATTEMPT>\2", name))


def _scrub(value, out: dict[str, str]):
    """Timings dropped, floats rounded, the run's own folder and attempt ids replaced by placeholders."""
    if isinstance(value, dict):
        return {k: _scrub(v, out) for k, v in value.items() if not any(w in k for w in TIMING_WORDS)}
    if isinstance(value, list):
        return [_scrub(v, out) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str):
        for path, placeholder in out.items():
            value = value.replace(path, placeholder)
        return attempt_free(value)
    return value


def _rows(path: Path, out: dict[str, str]) -> list:
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if row.get(S.SCORES):
            row[S.SCORES] = json.loads(row[S.SCORES])
    rows = _scrub(rows, out)
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, ensure_ascii=False))


def snapshot(out: Path, embedder: str | None = None) -> dict[str, object]:
    """Relative path -> the file's comparable content."""
    # paths of this checkout (the run folder, the embedder inside the venv) are not the run's content
    root = {str(out): "<OUT>", **({embedder: "<EMBEDDER>"} if embedder else {})}
    files: dict[str, object] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = attempt_free(path.relative_to(out).as_posix())
        if name.startswith("logs/") or path.name.startswith("lease-"):
            continue  # a lease holds its writer's random token, host and process id
        if path.suffix == ".parquet":
            files[name] = _rows(path, root)
        elif path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if name == "manifest.json":
                data.pop("created", None)
                data.pop("command", None)
            if "/commit-" in name:
                data.pop("lease", None)
            if name == "run.json":
                data.pop("corpus", None)  # file sizes and times of this checkout's sample corpus
                data.pop("fingerprint", None)  # a hash of config.yaml, paths included: compared there
            files[name] = _scrub(data, root)
        elif path.suffix == ".yaml":
            files[name] = _scrub(yaml.safe_load(path.read_text(encoding="utf-8")), root)
        else:
            text = path.read_text(encoding="utf-8")
            lines = [line for line in text.splitlines() if "Command:" not in line and "Created:" not in line]
            files[name] = _scrub("\n".join(lines), root)
    return files


def _canonical(content) -> str:
    return json.dumps(content, sort_keys=True, ensure_ascii=False)


def digest(files: dict[str, object]) -> dict[str, str]:
    return {
        name: hashlib.sha256(_canonical(content).encode()).hexdigest()[:16] for name, content in files.items()
    }


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory, minilm_path):
    """(uninterrupted run, stopped-and-rerun run, both again streamed), each with its own empty cache."""
    runs = {}
    previous = os.environ.get("SYNTH_CACHE"), os.environ.get("SYNTH_REPLY_CACHE")
    try:
        for name in ("uninterrupted", "resumed", "streamed", "streamed_resumed"):
            os.environ["SYNTH_CACHE"] = str(tmp_path_factory.mktemp(f"cache-{name}"))
            os.environ["SYNTH_REPLY_CACHE"] = str(tmp_path_factory.mktemp(f"replies-{name}"))
            out = tmp_path_factory.mktemp(name) / "out"
            extra = STREAMED if name.startswith("streamed") else STAGED
            if name.endswith("resumed"):
                stop = 40 if name == "resumed" else 120  # streamed: 3 chunks out share the first replies
                with pytest.raises(Stop):
                    run_generate(_config(out, minilm_path, *extra), engine=FakeEngine(stopping_answer(stop)))
                assert any((out / "data").rglob("*.parquet")), "the stop came before any shard"
            run_generate(_config(out, minilm_path, *extra), engine=FakeEngine(default_answer))
            runs[name] = snapshot(out, minilm_path)
    finally:
        for variable, value in zip(("SYNTH_CACHE", "SYNTH_REPLY_CACHE"), previous, strict=True):
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
    return runs


def test_golden_run_is_unchanged(golden_runs, tmp_path):
    found = {name: digest(files) for name, files in golden_runs.items()}
    dump = os.environ.get("SYNTH_GOLDEN_DUMP")
    if dump:  # the whole content, for a diff against the code before a change
        Path(dump).write_text(json.dumps(golden_runs, indent=1, sort_keys=True, ensure_ascii=False))
    if os.environ.get("SYNTH_GOLDEN_WRITE"):
        RECORD.parent.mkdir(exist_ok=True)
        RECORD.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORD.read_text())
    for name in ("uninterrupted", "resumed"):
        missing = sorted(set(recorded[name]) - set(found[name]))
        extra = sorted(set(found[name]) - set(recorded[name]))
        both = set(found[name]) & set(recorded[name])
        changed = sorted(f for f in both if found[name][f] != recorded[name][f])
        assert not (missing or extra or changed), (
            f"{name} run differs from tests/golden: missing {missing}, new {extra}, changed {changed} "
            "(SYNTH_GOLDEN_DUMP=FILE writes the whole content)"
        )


@pytest.mark.parametrize("name", ["streamed", "streamed_resumed"])
def test_a_streamed_run_writes_what_the_staged_one_writes(golden_runs, name):
    """Slices in threads, several chunks out, replies in any order: the same files (but the config,
    which records the flow). Stopped and rerun, the same shards: its stats count the replies the
    reply cache served, as the staged resumed run's do."""
    staged, streamed = (digest(golden_runs[run]) for run in ("uninterrupted", name))
    assert set(streamed) == set(staged)
    compared = [f for f in staged if f != "config.yaml"]
    if name == "streamed_resumed":
        compared = [f for f in compared if f.endswith(".parquet") or f.startswith("completions/")]
    changed = sorted(f for f in compared if staged[f] != streamed[f])
    assert not changed, changed


def test_golden_run_exercises_the_whole_gate(golden_runs):
    """The record is worth keeping only if the run reaches every task type and most stages."""
    files = golden_runs["uninterrupted"]
    stats = files["stats.json"]
    assert {"retrieval", "bitext", "classification", "sts"} <= set(stats["groups"]["task_type"])
    for stage in ("configure", "query", "language", "dedup", "cosine", "negatives_mined", "margin", "judge"):
        assert stage in stats["stages"], stage
    assert stats["rows_out"] > 0 and stats["dropped"]
    assert {p.split("/")[0] for p in files} >= {"data", "rejected", "progress", "completions"}
    assert "labels.json" in files and "README.md" in files
    # the stopped run really resumed: it rebuilt from a checkpoint, it did not start from nothing
    assert golden_runs["resumed"]["stats.json"]["rows_in"] == stats["rows_in"]
