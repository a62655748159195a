"""The command line as a user runs it: each command group once as a real process, its help and
one real invocation, so the thin shell cannot drift from the library it calls."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import child_env, generate_args
from .test_openai_engine import FakeServer

GROUPS = {
    "generate": ["generate", "plan", "regate", "prepare"],
    "handover": ["stats", "export", "report", "publish"],
    "review": ["review", "calibrate"],
    "train": ["train", "train-reranker", "eval", "split", "merge"],
    "loop": ["loop"],
}


def synth(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=timeout)


def test_every_command_of_every_group_answers_help():
    listed = synth("--help")
    assert listed.returncode == 0, listed.stderr
    for group, commands in GROUPS.items():
        for command in commands:
            assert command in listed.stdout, (group, command)
            done = synth(command, "--help")
            assert done.returncode == 0 and "Usage:" in done.stdout, (command, done.stderr[-1000:])


@pytest.fixture(scope="module")
def server():
    served = FakeServer()
    yield served
    served.close()


@pytest.fixture(scope="module")
def run(server, tmp_path_factory, minilm_path):
    """The generate group, for real: a run through the loopback server."""
    out = tmp_path_factory.mktemp("cli") / "run"
    extra = ["--engine", "openai", "--base-url", server.url]
    done = synth(
        *generate_args(out, minilm_path, limit=4, sets=["filters.cosine.enabled=false"], extra=extra)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows: 4 generated" in done.stderr
    return out


def test_the_generate_group_plans_a_run(server, minilm_path, tmp_path):
    extra = ["--engine", "openai", "--base-url", server.url, "--pilot", "2", "--json", "-"]
    args = generate_args(
        tmp_path / "never", minilm_path, limit=8, sets=["filters.cosine.enabled=false"], extra=extra
    )
    done = synth("plan", *args[1:])
    assert done.returncode == 0, done.stderr[-3000:]
    projection = json.loads(done.stdout[done.stdout.index("{") :])
    assert projection and not (tmp_path / "never").exists()  # the pilot ran in a scratch folder


def test_the_handover_group_on_a_run(run):
    stats = synth("stats", str(run))
    assert stats.returncode == 0 and "input: 4 rows read" in stats.stdout, stats.stdout + stats.stderr
    exported = synth("export", str(run))
    assert exported.returncode == 0 and "rows" in exported.stdout, exported.stderr
    report = synth("report", str(run))
    assert report.returncode == 0 and (run / "report.html").exists(), report.stderr


def test_the_review_group_on_a_run_without_labels(run):
    done = synth("calibrate", str(run))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "no labels" in line and "synth review" in line


def test_the_train_group_scores_a_benchmark(tmp_path, minilm_path):
    bench = tmp_path / "bench"
    (bench / "qrels").mkdir(parents=True)
    docs = {
        "d1": "Tides rise and fall twice a day.",
        "d2": "Bread rises in a warm oven.",
        "d3": "Snow falls.",
    }
    (bench / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items())
    )
    queries = {"q1": "why do tides rise", "q2": "how does bread rise"}
    (bench / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    (bench / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    done = synth("eval", "--model", minilm_path, "--benchmark", str(bench), "--no-store")
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    assert scores["ndcg@10"] == pytest.approx(1.0)


def test_the_loop_group_runs_a_round_on_pairs(tmp_path, minilm_path):
    """`synth loop --pairs` for real: generate from the pairs, split, train (two processes under
    torchrun, as on two GPUs; gloo here), score, report."""
    topics = ["tides", "bread", "snow", "bees", "glass", "rust", "moss", "clay", "wind", "salt"]
    asks = [
        ("why does {t} change when the winter comes", "In winter {t} changes because the cold slows it."),
        (
            "which instruments measure {t} in a laboratory",
            "A laboratory measures {t} with gauges and scales.",
        ),
        ("history of {t} among old farming villages", "Old farming villages knew {t} for centuries."),
    ]
    corpus, pairs = tmp_path / "corpus.jsonl", tmp_path / "pairs.jsonl"
    rows = [(f"{t}-{n}", q.format(t=t), d.format(t=t)) for t in topics for n, (q, d) in enumerate(asks)]
    corpus.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, _, d in rows))
    pairs.write_text("".join(json.dumps({"query": q, "passage_id": i}) + "\n" for i, q, _ in rows))
    out = tmp_path / "loop"
    sets = ["filters.cosine.enabled=false", "negatives.min_negatives=0"]
    done = synth(
        "loop", "--pairs", str(pairs), "--corpus", str(corpus), "--embedder", minilm_path,
        "--base-model", minilm_path, "--rounds", "1", "--rows-per-round", "30", "--holdout", "0.3",
        "--epochs", "1", "--batch-size", "4", "--processes", "2", "--out", str(out),
        *[a for s in sets for a in ("--set", s)],
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1: nDCG@10" in done.stdout and (out / "report.html").exists()
    summary = json.loads((out / "loop.json").read_text())
    assert [entry["name"] for entry in summary["lift"]][:2] == ["base", "round 1"]
    assert json.loads((out / "round-1" / "model" / "training_log.json").read_text())["processes"] == 2
