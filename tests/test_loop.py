"""The lift, shown: ``synth split`` (by document, near-duplicates out, reviewed rows first, the
same for a seed), ``synth eval --run`` with several models and intervals, and ``synth loop``
resumed after a kill at each of its steps (real processes, the fake engine)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.faults import CRASH_EXIT, ENV
from pipeline.run.folder import RunFolder, shards_under
from pipeline.text import normalise

from .conftest import OPEN_GATE, child_env, run_fake

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["river", "volcano", "glacier", "orchard", "harbor", "canyon", "meadow", "lagoon", "prairie", "reef"]


def write_corpus(path: Path) -> Path:
    """Twenty documents; each of the first six has a twin under another id (the same text, so the
    same query: a near-duplicate across the split whenever the twins fall on different sides)."""
    rows = []
    for i, topic in enumerate(TOPICS * 2):
        tag = hashlib.sha256(str(i).encode()).hexdigest()  # distinct opening words: distinct queries
        words = " ".join(f"{tag[k : k + 6]} on" for k in range(0, 48, 6))
        text = f"{words} the {topic}, its plants, animals and weather across the seasons of the year."
        rows.append({"id": f"doc-{i:02d}", "text": text})
    for i in range(6):
        rows.append({"id": f"twin-{i:02d}", "text": rows[i]["text"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_run(tmp_path: Path, minilm_path: str, name: str = "run") -> Path:
    out = tmp_path / name
    corpus = write_corpus(tmp_path / f"{name}-corpus.jsonl")
    run_fake(*OPEN_GATE, f"corpus.path={corpus}", f"output.out_dir={out}", f"models.embedder={minilm_path}")
    return out


def split(out: Path, fraction: float = 0.3, seed: int = 0) -> dict:
    from pipeline.cli.train import split_with_corpus

    return split_with_corpus(out, fraction, seed, 2000)


def rows_of(folder: Path, columns: list[str]) -> list[dict]:
    return [r for shard in shards_under(folder) for r in pq.read_table(shard, columns=columns).to_pylist()]


def eval_side(out: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    root = RunFolder(out).eval_split_folder
    queries = [json.loads(line) for line in (root / "queries.jsonl").read_text().splitlines()]
    qrels = [
        tuple(line.split("\t")[:2]) for line in (root / "qrels" / "test.tsv").read_text().splitlines()[1:]
    ]
    return queries, qrels


def test_split_is_by_document_without_near_duplicates_and_the_same_for_a_seed(tmp_path, minilm_path):
    out = make_run(tmp_path, minilm_path)
    summary = split(out)
    train = rows_of(RunFolder(out).train_split_folder, [S.ID, S.SOURCE_ID, S.QUERY])
    every = {r[S.ID]: r for r in rows_of(RunFolder(out).data_folder, [S.ID, S.SOURCE_ID, S.QUERY])}
    queries, qrels = eval_side(out)
    assert queries and train
    eval_documents = {every[q["_id"]][S.SOURCE_ID] for q in queries}
    assert not eval_documents & {r[S.SOURCE_ID] for r in train}  # no document on both sides
    assert not {normalise(q["text"]) for q in queries} & {normalise(r[S.QUERY]) for r in train}
    removed = summary["eval_removed"]["near_duplicate_of_train"]
    assert removed > 0  # twins on different sides: their eval query went
    assert summary["rows"]["train"] + summary["rows"]["held_out"] == len(every)
    assert summary["rows"]["eval_queries"] + removed <= summary["rows"]["held_out"]
    # every query's positive is in the corpus, which is the run's whole pool
    corpus = {json.loads(line)["_id"] for line in (RunFolder(out).eval_split_folder / "corpus.jsonl").open()}
    assert {doc for _, doc in qrels} <= corpus and len(corpus) == 26
    assert json.loads(RunFolder(out).manifest_file.read_text())["split"] == summary

    first = {p.name: p.read_bytes() for p in RunFolder(out).eval_split_folder.rglob("*") if p.is_file()}
    again = split(out)  # the same seed, the same split
    assert again == summary
    assert {
        p.name: p.read_bytes() for p in RunFolder(out).eval_split_folder.rglob("*") if p.is_file()
    } == first
    other = split(out, seed=1)
    assert other["held_out_documents"] != summary["held_out_documents"] or eval_side(out)[0] != queries

    from pipeline.train.split import SplitError

    with pytest.raises(SplitError, match="gave no eval query"):  # a share too small to draw one document
        split(out, fraction=1e-9)
    assert not (out / "splits").exists()


def test_rows_a_reviewer_marked_good_go_to_eval_first(tmp_path, minilm_path):
    from pipeline.review.labels import Decision, LabelStore

    out = make_run(tmp_path, minilm_path)
    split(out)
    held = set(RunFolder(out).held_out_file.read_text().split())
    train = rows_of(RunFolder(out).train_split_folder, [S.ID, S.SOURCE_ID, S.TASK_TYPE])
    untwinned = [r for r in train if r[S.SOURCE_ID].startswith("doc-") and int(r[S.SOURCE_ID][4:]) >= 6]
    chosen = next(r for r in untwinned if r[S.SOURCE_ID] not in held)
    view = {"row_id": chosen[S.ID], "kept": True, "stratum": "kept", "stratum_rows": 1}
    view.update({"task_type": chosen[S.TASK_TYPE], "stage": None, "reason": None, "positive_score": None})
    view.update(
        {"judge_score": None, "negative_scores": [], "negative_sources": [], "scores": {}, "negatives": []}
    )
    decision = Decision(view, "good", [], None, "tester", "a1b2c3d4e5", dt.datetime.now(dt.timezone.utc))
    LabelStore(out).save(decision)

    summary = split(out)
    queries, _ = eval_side(out)
    assert chosen[S.ID] in {q["_id"] for q in queries}
    assert summary["human_checked"] == 1
    assert chosen[S.SOURCE_ID] not in {
        r[S.SOURCE_ID] for r in rows_of(RunFolder(out).train_split_folder, [S.SOURCE_ID])
    }


def test_eval_on_a_run_compares_models_with_intervals_mteb_reads_it_and_train_reads_the_split(
    tmp_path, minilm_path
):
    out = make_run(tmp_path, minilm_path)
    split(out)
    copy = tmp_path / "minilm-copy"
    shutil.copytree(minilm_path, copy)
    command = [sys.executable, "-m", "pipeline.cli", "eval", "--model", minilm_path, "--model", str(copy)]
    done = subprocess.run(
        [*command, "--run", str(out), "--no-store"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "held-out split" in lines[0] and "95% CI" in lines[1]
    result = json.loads(lines[-1])
    base, other = (result["models"][m] for m in (minilm_path, str(copy)))
    assert base["ndcg@10"] == pytest.approx(other["ndcg@10"])  # the same weights
    interval = result["differences"][str(copy)]["ndcg@10"]
    assert interval["low"] <= interval["difference"] <= interval["high"]
    assert interval["queries"] == base["queries"] == len(eval_side(out)[0])

    # the same folder as a --benchmark, scored by mteb's own code as well: the folder is a BEIR one
    folder = str(RunFolder(out).eval_split_folder)
    scored = subprocess.run(
        [*command[:6], "--benchmark", folder, "--mteb", "SciFact", "--no-store"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    mine = json.loads(scored.stdout.strip().splitlines()[-1])
    assert mine["mteb"]["mteb_ndcg_at_10"] == pytest.approx(mine["ndcg@10"], abs=1e-3) == base["ndcg@10"]

    from pipeline.preflight import check_training_inputs

    assert check_training_inputs(out, "") == RunFolder(out).train_split_folder  # held-out rows stay out

    missing = subprocess.run(
        [*command[:-2], "--run", str(tmp_path / "nowhere")], env=child_env(), capture_output=True, text=True
    )
    assert missing.returncode == 2 and "synth split" in missing.stderr and "Traceback" not in missing.stderr


def test_paired_interval_excludes_zero_for_a_consistent_gain_and_not_for_noise():
    from pipeline.train.compare import paired_interval

    base = {f"q{i}": 0.5 for i in range(200)}
    better = {q: s + 0.1 for q, s in base.items()}
    noisy = {q: s + (0.3 if i % 2 else -0.3) for i, (q, s) in enumerate(base.items())}
    gain = paired_interval(base, better)
    assert gain["low"] > 0 and gain["difference"] == pytest.approx(0.1)
    noise = paired_interval(base, noisy)
    assert noise["low"] < 0 < noise["high"]


DRIVER = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.conftest import OPEN_GATE, FakeEngine, default_answer
from pipeline.cli.loop import pool_passages_of
from pipeline.config import load_config
from pipeline.loop import LoopPlan, run_loop
from pipeline.train.config import TrainConfig

out, corpus, minilm = sys.argv[1:4]
config = load_config(None, [*OPEN_GATE, f"corpus.path={{corpus}}", f"models.embedder={{minilm}}"])
config.models.generator = "fake-engine"
train = TrainConfig(epochs=1, batch_size=2, save_every=0, seed=0)
plan = LoopPlan(Path(out), config, 3, 8, minilm, train, fraction=0.4)
summary = run_loop(plan, engine=FakeEngine(default_answer), passages_of=pool_passages_of, say=print)
print("LIFT " + json.dumps(summary["lift"]))
"""


def test_a_loop_killed_at_each_step_resumes_and_ends_with_the_uninterrupted_figures(tmp_path, minilm_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))

    def loop(out: Path, crash: str | None = None) -> subprocess.CompletedProcess:
        env = {**child_env(), **({ENV: crash} if crash else {})}
        command = [sys.executable, str(driver), str(out), str(corpus), minilm_path]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    reference = loop(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "killed"
    # a kill in round 2's generation, training and failure analysis (the split's and the eval's
    # resume markers are the same code as the training's, so they are not killed here: test time)
    points = (
        "loop_generate@2",
        "loop_train@1",
        "loop_failures@1",  # the plan is made again, the same
    )
    for point in points:
        killed = loop(out, point)
        assert killed.returncode == CRASH_EXIT, (point, killed.stderr[-3000:])
    resumed = loop(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # round 1 finished before the kills reached round 2: its steps were not redone
    assert "round 1: generate" not in resumed.stdout and "round 1: train" not in resumed.stdout

    lift = lambda done: json.loads(done.stdout.split("LIFT ", 1)[1])  # noqa: E731
    assert [e["name"] for e in lift(resumed)] == ["base", "round 1", "round 2", "round 3", "merge"]
    figures = lambda done: [(e["name"], e["ndcg@10"], e["recall@100"], e.get("rows")) for e in lift(done)]  # noqa: E731
    assert figures(resumed) == figures(reference)
    page = (out / "report.html").read_text()
    assert all(f"round {k}" in page for k in (1, 2, 3)) and "id='lift'" in page
    assert json.loads((out / "loop.json").read_text())["rounds"] == 3
    assert json.loads((out / "round-1" / "split.json").read_text())["rows"]["eval_queries"] == 1
    # rounds 2 and 3 were aimed, by default; the plan killed mid-way resumed to the same plan
    aims = json.loads((out / "loop.json").read_text())["aims"]
    assert [a["round"] for a in aims] == [2, 3] and "What each round aimed at" in page
    plan = lambda root, k: {  # noqa: E731
        key: value
        for key, value in json.loads((root / f"round-{k}" / "aim.json").read_text()).items()
        if key != "seconds"
    }
    for k in (1, 2):
        assert plan(out, k) == plan(tmp_path / "reference", k)
    config = (out / "round-2" / "run" / "config.yaml").read_text()
    assert "round-1/aim.json" in config and "digest:" in config
    manifest = json.loads((out / "round-3" / "run" / "manifest.json").read_text())
    assert manifest["aim"]["from"].endswith("round-2/failures.json")
    assert "What this run was aimed at" in (out / "round-3" / "run" / "README.md").read_text()


def test_a_large_pool_is_sampled_for_the_eval_corpus_keeping_every_positive(tmp_path, minilm_path):
    from pipeline.config import load_config
    from pipeline.executors.workbench import run_pool_passages
    from pipeline.train.split import split_run

    out = make_run(tmp_path, minilm_path)
    config = load_config(RunFolder(out).config_file)
    summary = split_run(out, 0.3, 0, passages=lambda: run_pool_passages(config), max_documents=8)
    corpus = {json.loads(line)["_id"] for line in (RunFolder(out).eval_split_folder / "corpus.jsonl").open()}
    _, qrels = eval_side(out)
    assert {doc for _, doc in qrels} <= corpus  # every positive is there
    assert summary["corpus"]["sampled_from"] == 26 and len(corpus) < 26
