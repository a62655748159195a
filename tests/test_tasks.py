"""Tasks, checkpoints and resume with a fake engine (the real-process kill test is in test_resume_kill.py)."""

import json

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.config import load_config
from pipeline.executors import run_generate
from pipeline.run.folder import RunStateError

from .conftest import FakeEngine, checkpoint_of, chunks_committed, default_answer


def config_for(out, minilm_path, *extra):
    config = load_config(
        None,
        [
            f"output.out_dir={out}",
            "limit=14",
            "output.shard_rows=3",
            f"models.embedder={minilm_path}",
            "filters.cosine.mode=percentile",
            # one chunk out at a time: a crash counted in engine calls then falls in a known chunk
            "flow.rows_in_flight=1",
            *extra,
        ],
    )
    config.models.generator = "fake-engine"
    return config


def ids(out):
    return sorted(r[S.ID] for r in pq.read_table(out / "data").to_pylist())


class Crash(RuntimeError):
    pass


def crashing_answer(after_calls):
    calls = {"n": 0}

    def answer(prompt, output):
        if output.__name__ == "ConfigureOutput":
            calls["n"] += 1
            if calls["n"] > after_calls:
                raise Crash("simulated crash")
        return default_answer(prompt, output)

    return answer


@pytest.fixture(scope="module")
def reference(tmp_path_factory, minilm_path):
    out = tmp_path_factory.mktemp("ref")
    run_generate(config_for(out, minilm_path), engine=FakeEngine(default_answer))
    return out


def test_tasks_split_the_same_rows(tmp_path, minilm_path, reference):
    out = tmp_path / "three"
    run_generate(config_for(out, minilm_path, "output.num_tasks=3"), engine=FakeEngine(default_answer))
    assert sorted(p.name for p in (out / "completions").iterdir()) == [f"task-{t:05d}" for t in range(3)]
    assert [p.name for p in (out / "data").iterdir()] == ["retrieval"]  # one folder per task type
    assert all(p.name.startswith("part-0000") for p in (out / "data" / "retrieval").iterdir())
    # per-task dedup and percentile can differ from one task; ids kept must come from the same passages
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 14 and stats["reading"]["passages"] == 14
    assert stats["rows_out"] + sum(stats["dropped"].values()) == 14
    assert (out / "manifest.json").exists()


def test_crash_then_resume_equals_uninterrupted(tmp_path, minilm_path, reference):
    out = tmp_path / "crash"
    with pytest.raises(Crash):
        # 14 passages in chunks of 3: each chunk makes 3 configure calls; crash in the third chunk
        run_generate(config_for(out, minilm_path), engine=FakeEngine(crashing_answer(7)))
    progress = checkpoint_of(out)
    assert progress["chunks_done"] == 2
    assert not (out / "completions").exists() or not any((out / "completions").iterdir())
    engine = FakeEngine(default_answer)
    run_generate(config_for(out, minilm_path), engine=engine)
    assert ids(out) == ids(reference)
    # the rerun did not redo the two finished chunks: 14 - 6 = 8 passages were configured
    assert sum(n for name, n in engine.calls if name == "ConfigureOutput") == 8
    assert json.loads((out / "stats.json").read_text())["rows_in"] == 14
    rejected = pq.read_table(out / "rejected").to_pylist() if any((out / "rejected").iterdir()) else []
    assert len(ids(out)) + len(rejected) == 14


def test_a_streamed_chunk_that_fails_keeps_every_chunk_before_it(tmp_path, minilm_path, reference):
    """All five chunks out at once, the third one's request fails: the first two still finish and
    are committed, as a staged run commits them, and nothing after them is."""
    shard = next((reference / "data" / "retrieval").glob("part-00000-00002-*.parquet"))
    passage = pq.read_table(shard).to_pylist()[0][S.POSITIVE][:40]

    def answer(prompt, output):
        if passage in prompt:
            raise Crash("a request of the third chunk fails")
        return default_answer(prompt, output)

    out = tmp_path / "crash"
    with pytest.raises(Crash):
        run_generate(config_for(out, minilm_path, "flow.rows_in_flight=2048"), engine=FakeEngine(answer))
    assert checkpoint_of(out)["chunks_done"] == 2
    assert sorted(p.name[:16] for p in (out / "data").rglob("*.parquet")) == sorted(
        p.name[:16] for p in (reference / "data").rglob("*.parquet") if p.name[11:16] in ("00000", "00001")
    )


def test_a_resumed_run_counts_what_its_finished_chunks_read(tmp_path, minilm_path):
    """The reading counts of a crashed-then-resumed run equal an uninterrupted run's, the task
    types a passage did not apply to included (the finished chunks are read again to count them)."""
    both = ("generation.tasks=[retrieval, code_translation]", "cache.enabled=false")  # code: no text passage
    whole = tmp_path / "whole"
    run_generate(config_for(whole, minilm_path, *both), engine=FakeEngine(default_answer))
    out = tmp_path / "crash"
    with pytest.raises(Crash):
        run_generate(config_for(out, minilm_path, *both), engine=FakeEngine(crashing_answer(7)))
    run_generate(config_for(out, minilm_path, *both), engine=FakeEngine(default_answer))
    reading = json.loads((out / "stats.json").read_text())["reading"]
    assert reading["not_applicable_code_translation"] == 14
    assert reading == json.loads((whole / "stats.json").read_text())["reading"]


def test_rerun_of_a_finished_run_does_nothing(tmp_path, minilm_path):
    out = tmp_path / "again"
    run_generate(config_for(out, minilm_path), engine=FakeEngine(default_answer))
    engine = FakeEngine(default_answer)
    run_generate(config_for(out, minilm_path), engine=engine)
    assert engine.calls == []


def test_changed_config_or_task_count_is_refused(tmp_path, minilm_path):
    out = tmp_path / "run"
    run_generate(config_for(out, minilm_path), engine=FakeEngine(default_answer))
    with pytest.raises(RunStateError, match="num-tasks"):
        run_generate(config_for(out, minilm_path, "output.num_tasks=2"), engine=FakeEngine(default_answer))
    with pytest.raises(RunStateError, match="different configuration"):
        run_generate(config_for(out, minilm_path, "seed=5"), engine=FakeEngine(default_answer))
    run_generate(config_for(out, minilm_path, "seed=5"), engine=FakeEngine(default_answer), overwrite=True)
    assert json.loads((out / "run.json").read_text())["num_tasks"] == 1


def test_ranks_share_tasks_and_the_last_merges(tmp_path, minilm_path):
    out = tmp_path / "ranks"
    config = config_for(out, minilm_path, "output.num_tasks=4")
    run_generate(config, engine=FakeEngine(default_answer), rank=0, world_size=2)
    assert sorted(p.name for p in (out / "completions").iterdir()) == ["task-00000", "task-00002"]
    assert not (out / "manifest.json").exists()  # half the run is missing
    run_generate(config, engine=FakeEngine(default_answer), rank=1, world_size=2)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 14 and (out / "manifest.json").exists()


def test_mixed_task_types_resume_like_an_uninterrupted_run(tmp_path, minilm_path):
    """Dedup state is per task type; a resumed mixed run must rebuild it and keep the same rows."""
    mixed = ["generation.tasks=[retrieval, bitext, sts]", "generation.languages=[zh, en]"]
    mixed.append("filters.cosine.unscored=keep")  # MiniLM scores English only; zh rows must reach dedup
    reference = tmp_path / "ref"
    # the reference computes every reply: from the cache the crashing engine would never be asked
    run_generate(
        config_for(reference, minilm_path, *mixed, "cache.enabled=false"), engine=FakeEngine(default_answer)
    )
    out = tmp_path / "crash"
    with pytest.raises(Crash):
        run_generate(config_for(out, minilm_path, *mixed), engine=FakeEngine(crashing_answer(7)))
    assert chunks_committed(out) == 2
    run_generate(config_for(out, minilm_path, *mixed), engine=FakeEngine(default_answer))
    assert ids(out) == ids(reference)
    assert {r[S.TASK_TYPE] for r in pq.read_table(out / "data").to_pylist()} == {"retrieval", "bitext", "sts"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 42 == stats["rows_out"] + sum(stats["dropped"].values())
    assert stats["groups"] == json.loads((reference / "stats.json").read_text())["groups"]


def test_a_folder_with_foreign_shards_is_refused(tmp_path, minilm_path):
    out = tmp_path / "old"
    (out / "data").mkdir(parents=True)
    (out / "data" / "part-00000.parquet").write_bytes(b"not ours")
    with pytest.raises(RunStateError, match="unknown run"):
        run_generate(config_for(out, minilm_path), engine=FakeEngine(default_answer))
    assert (out / "data" / "part-00000.parquet").exists()  # nothing was deleted
