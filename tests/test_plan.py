"""The run plan and the run folder: decisions made once, paths known in one place."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.config import load_config
from pipeline.executors import run_generate
from pipeline.executors.workbench import BUILDERS
from pipeline.models import SMOLLM2_NAME, ResolvedModel
from pipeline.run.folder import Checkpoint, RunFolder, RunRecord, chunk_of, config_fingerprint
from pipeline.run.plan import Models, resolve_plan, step_recipe

from .conftest import FakeEngine, default_answer


def test_the_recipe_follows_the_settings():
    config = load_config(None, [])
    assert step_recipe(config, judge_on=True) == (
        "personas",
        "configure",
        "query",
        "language",
        "repetition",
        "copy_check",
        "dedup",
        "cosine",
        "positive_check",
        "negatives_llm",
        "negatives_mined",
        "margin",
        "judge",
        "require_negatives",
    )
    unchecked = load_config(None, ["filters.positive_check.enabled=false", "negatives.model=/trained"])
    recipe = step_recipe(unchecked, judge_on=True)
    assert "positive_check" not in recipe
    assert recipe.index("negatives_mined") < recipe.index("negatives_model") < recipe.index("margin")
    one_call = load_config(None, ["generation.calls=one", "filters.cosine.enabled=false"])
    recipe = step_recipe(one_call, judge_on=False)
    assert recipe[:2] == ("personas", "persona_query") and "cosine" not in recipe and "judge" not in recipe
    sts = load_config(None, ["generation.tasks=[sts]", "negatives.llm_count=0", "negatives.min_negatives=0"])
    assert step_recipe(sts, judge_on=True) == (
        "sts",
        "language",
        "repetition",
        "copy_check",
        "dedup",
        "cosine",
        "margin",
        "judge",
    )  # no personas, no mining: they serve retrieval and classification rows only
    assert set(BUILDERS) >= {
        name for c in (config, one_call, sts, unchecked) for name in step_recipe(c, True)
    }


def test_the_judge_policy_is_decided_and_said_once(caplog, monkeypatch):
    import pipeline.run.plan as plan_module

    def packaged(config):
        return Models(ResolvedModel("x", SMOLLM2_NAME), ResolvedModel("e", "embedder"), remote=False)

    monkeypatch.setattr(plan_module, "resolve_models", packaged)
    with caplog.at_level(logging.WARNING):
        plan = resolve_plan(load_config(None, []), command="synth generate")
    assert not plan.judge_on and "judge" not in plan.recipe
    warnings = [r for r in caplog.records if "judge off" in r.getMessage()]
    assert len(warnings) == 1
    forced = resolve_plan(load_config(None, ["filters.judge.enabled=true"]), command="synth generate")
    assert forced.judge_on and "judge" in forced.recipe


def test_the_plan_travels_to_ray_actors_without_its_template_library():
    import pickle

    plan = resolve_plan(load_config(None, ["models.generator=fake-engine"]), command="synth generate")
    assert plan.prompts.prompt("retrieval/query").hash  # built on first use
    copy = pickle.loads(pickle.dumps(plan))
    assert "prompts" not in copy.__dict__ and copy.prompts.prompt("retrieval/query").hash
    assert copy.recipe == plan.recipe and copy.split == plan.split


def test_the_dumped_config_resumes_the_same_run(tmp_path):
    """``--workers`` children run ``--config OUT/config.yaml``: it must be the very same run."""
    config = load_config(None, [f"output.out_dir={tmp_path}", "generation.languages={en: 0.7, zh: 0.3}"])
    folder = RunFolder(tmp_path)
    folder.open(RunRecord.of(config))
    again = load_config(folder.config_file)
    assert config_fingerprint(again) == config_fingerprint(config)
    folder.open(RunRecord.of(again))  # the claim accepts it


def test_overwrite_removes_everything_a_run_wrote_including_labels(tmp_path, minilm_path):
    def labels_named(prefix):
        def answer(prompt, output):
            if output.__name__ == "LabelSetOutput":
                count = output.model_json_schema()["properties"]["labels"]["maxItems"]
                names = [
                    {"name": f"{prefix} {i}", "description": f"Texts of kind {i}."} for i in range(count)
                ]
                return json.dumps({"labels": names})
            return default_answer(prompt, output)

        return answer

    settings = [f"output.out_dir={tmp_path}", "limit=4", "generation.tasks=[classification]"]
    settings += [f"models.embedder={minilm_path}", "filters.judge.enabled=false"]
    config = load_config(None, settings)
    config.models.generator = "fake-engine"
    config.cache.enabled = False  # two fakes under one name: the cache would give beta alpha's reply
    run_generate(config, engine=FakeEngine(labels_named("alpha")))
    folder = RunFolder(tmp_path)
    assert all(name.startswith("alpha") for name in json.loads(folder.labels_file.read_text()))
    (tmp_path / "notes.txt").write_text("mine")
    run_generate(config, engine=FakeEngine(labels_named("beta")), overwrite=True)
    labels = json.loads(folder.labels_file.read_text())
    assert labels and all(name.startswith("beta") for name in labels)  # proposed again, not reused
    assert json.loads(folder.manifest_file.read_text())["labels"] == labels
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not the run's: left alone


def test_run_paths_come_from_the_folder(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.data_shard("bitext", 3, 7, "a1b2c3d4").relative_to(tmp_path).as_posix() == (
        "data/bitext/part-00003-00007-a1b2c3d4.parquet"
    )
    assert folder.relative(folder.rejected_shard(0, 1, "ff")) == "rejected/part-00000-00001-ff.parquet"
    assert chunk_of(folder.rejected_shard(0, 12, "ff")) == 12
    shards = (folder.data_shard("sts", 0, 0, "aa"), folder.rejected_shard(0, 0, "aa"))
    for path in (*shards, folder.data_shard("sts", 1, 0, "aa"), folder.data_shard("sts", 0, 1, "bb")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (folder.root / "data" / "sts" / ".part-00000-00001-cc.parquet.tmp").write_bytes(b"")
    assert [folder.relative(p) for p in folder.task_shards("data", 0)] == [
        "data/sts/part-00000-00000-aa.parquet",
        "data/sts/part-00000-00001-bb.parquet",
    ]
    assert len(folder.data_shards()) == 3  # a temporary is never a shard
    with pytest.raises(ValueError):
        folder.relative(tmp_path.parent / "elsewhere")
    # the checkpoint is the commit: what it does not list is removed, on resume and at the end
    state = folder.task(0)
    state.save(Checkpoint(1, {}, tuple(folder.relative(p) for p in shards)), version=1)
    assert [folder.relative(p) for p in state.shards("data")] == ["data/sts/part-00000-00000-aa.parquet"]
    assert state.remove_uncommitted(state.load().shards) == ["data/sts/part-00000-00001-bb.parquet"]
    assert folder.remove_orphans(folder.committed(2)) == ["data/sts/part-00001-00000-aa.parquet"]
    assert sorted(folder.relative(p) for p in folder.data_shards() + folder.rejected_shards()) == sorted(
        folder.relative(p) for p in shards
    )


def test_a_changed_corpus_is_refused_by_name_and_accepted_on_request(tmp_path, minilm_path):
    from pipeline.executors import execute
    from pipeline.run.folder import RunStateError

    from .test_tasks import Crash, crashing_answer

    corpus = tmp_path / "corpus.jsonl"
    lines = [
        json.dumps({"id": f"d{i}", "text": f"Passage {i} is about the river valley number {i}."})
        for i in range(12)
    ]
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    settings = [f"output.out_dir={out}", f"corpus.path={corpus}", "output.shard_rows=2", "output.num_tasks=2"]
    settings += [f"models.embedder={minilm_path}", "filters.judge.enabled=false", "negatives.mined_count=0"]

    def plan(accept=False):
        config = load_config(None, settings)
        config.models.generator = "fake-engine"
        return resolve_plan(config, accept_corpus_change=accept, command="synth generate")

    with pytest.raises(Crash):
        execute(plan(), engine=FakeEngine(crashing_answer(3)))
    recorded = json.loads((out / "run.json").read_text())["corpus"]
    assert recorded["files"][0]["source"] == str(corpus) and recorded["blocks"]
    corpus.write_text("\n".join(lines + [json.dumps({"id": "new", "text": "A row added later on."})]) + "\n")
    with pytest.raises(RunStateError, match=r"corpus\.jsonl changed since the run started.*--accept-corpus"):
        execute(plan(), engine=FakeEngine(default_answer))
    result = execute(plan(accept=True), engine=FakeEngine(default_answer))
    assert result.stats.rows_in == 13  # every task started over on the new input
    assert json.loads((out / "run.json").read_text())["corpus"]["files"][0]["size"] == corpus.stat().st_size


def test_the_pool_store_is_decided_once_and_never_changes_the_fingerprint():
    from pipeline.run.plan import pool_store

    local = load_config(None, ["output.out_dir=outputs/run"])
    bucket = load_config(None, ["output.out_dir=s3://bucket/runs/zh-1"])
    named = load_config(
        None, ["output.out_dir=s3://bucket/runs/zh-1", "negatives.pool_dir=s3://shared/pools"]
    )
    assert pool_store(local) is None  # each machine's cache folder
    assert pool_store(bucket) == "s3://bucket/runs/pools"  # beside an --out on object storage
    assert pool_store(named) == "s3://shared/pools"
    assert config_fingerprint(bucket) == config_fingerprint(named)
