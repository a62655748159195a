"""The Ray executor against the local one: same steps, same rows, same stats, same layout.

One local Ray instance serves the whole session (``ray_cluster``); every wait on
Ray runs under a deadline, because a resource mistake in Ray hangs instead of failing.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.config import load_config
from pipeline.executors import run_generate
from pipeline.executors.ray import RayOptions
from pipeline.readers.documents import CorpusError

from .conftest import (
    OPEN_GATE,
    FakeEngine,
    child_env,
    chunks_committed,
    deadline,
    default_answer,
    generate_args,
    lease_holders,
)
from .test_golden import attempt_free

pytest.importorskip("ray")


def fake_config(out, minilm_path):
    config = load_config(
        None,
        [
            f"output.out_dir={out}",
            "limit=12",
            "output.num_tasks=3",
            "output.shard_rows=2",
            f"models.embedder={minilm_path}",
            "filters.cosine.mode=percentile",  # stateful: its history must be per task in both
            "generation.tasks=[retrieval, sts]",
            "cache.enabled=false",  # the runs compared compute every reply (the cache: test_cost.py)
        ],
    )
    config.models.generator = "fake-engine"
    return config


def outcome(out):
    """What two executors must agree on: rows, drops, stats (less timings), layout."""
    data = pq.read_table(out / "data")
    rejected = pq.read_table(out / "rejected").to_pylist() if any((out / "rejected").iterdir()) else []
    stats = json.loads((out / "stats.json").read_text())
    for stage in stats["stages"].values():
        stage.pop("seconds", None)
        for key in ("engine_seconds", "prompt_tokens_per_s", "output_tokens_per_s"):
            stage.get("llm", {}).pop(key, None)
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "schema": data.schema,
        "ids": sorted(data.column(S.ID).to_pylist()),
        "rejected": sorted((r[S.ID], r[S.STAGE], r[S.REASON]) for r in rejected),
        "stats": {k: v for k, v in stats.items() if k not in {"timings_seconds", "engine", "tokens"}},
        "shards": [{**s, "path": attempt_free(s["path"])} for s in manifest["shards"]],
        "completions": sorted(p.name for p in (out / "completions").iterdir()),
    }


def test_ray_executor_matches_the_local_one(ray_cluster, minilm_path, tmp_path):
    local = tmp_path / "local"
    run_generate(fake_config(local, minilm_path), engine=FakeEngine(default_answer))
    on_ray = tmp_path / "ray"
    with deadline(300):
        result = run_generate(
            fake_config(on_ray, minilm_path),
            engine=FakeEngine(default_answer),  # pickled into each replica
            executor="ray",
            ray_options=RayOptions(replicas=2, cpus_per_replica=1),
        )
    assert result.stats.rows_in == 24  # 12 passages x 2 task types
    expected, got = outcome(local), outcome(on_ray)
    assert got["stats"]["reading"]["passages"] == 12
    for key in expected:
        assert got[key] == expected[key], key

    engine = FakeEngine(default_answer)
    with deadline(120):  # a finished run: nothing to do, no actor started
        run_generate(fake_config(on_ray, minilm_path), engine=engine, executor="ray")
    assert engine.calls == []


class SlowEngine(FakeEngine):
    """The fake engine at a pace a test can kill a replica in the middle of (pickled by reference)."""

    def generate(self, chats, *args, **kwargs):
        time.sleep(0.4 * len(chats))
        return super().generate(chats, *args, **kwargs)


def test_a_budget_stops_ray_replicas_and_a_larger_one_resumes(ray_cluster, minilm_path, tmp_path):
    """The budget is the whole run's, read from every task's checkpoint, so Ray actors obey it too."""
    whole = run_generate(fake_config(tmp_path / "whole", minilm_path), engine=FakeEngine(default_answer))
    per_chunk = whole.stats.usage().computed_tokens / 6  # 12 passages, 2 per chunk
    config = fake_config(tmp_path / "out", minilm_path)
    config.cache.enabled = False
    config.budget.tokens = int(per_chunk * 2)
    with deadline(300):
        stopped = run_generate(config, engine=FakeEngine(default_answer), executor="ray")
    assert stopped.budget_stop and "token budget reached" in stopped.budget_stop
    # one replica here: at most the chunk in flight past the limit
    assert stopped.stats.usage().computed_tokens <= config.budget.tokens + 1.5 * per_chunk
    config.budget.tokens = None
    with deadline(300):
        resumed = run_generate(config, engine=FakeEngine(default_answer), executor="ray")
    assert resumed.budget_stop is None
    assert outcome(tmp_path / "out")["ids"] == outcome(tmp_path / "whole")["ids"]


def test_a_replica_killed_mid_run_is_replaced_and_its_task_resumes(ray_cluster, minilm_path, tmp_path):
    """The actor's process dies (as in an OOM kill): Ray restarts it, the task continues from its
    checkpoint under a taken-over lease, and the run ends with exactly the local run's rows."""
    import threading

    local = tmp_path / "local"
    run_generate(fake_config(local, minilm_path), engine=FakeEngine(default_answer))
    out = tmp_path / "ray"
    outcome_of_run: dict = {}

    def drive():
        try:
            outcome_of_run["result"] = run_generate(
                fake_config(out, minilm_path), engine=SlowEngine(default_answer), executor="ray"
            )
        except BaseException as exc:  # handed to the test's thread
            outcome_of_run["error"] = exc

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    killed = None
    deadline_at = time.time() + 240
    while killed is None and driver.is_alive():
        assert time.time() < deadline_at, "no shard landed in time"
        holders = lease_holders(out, 3)
        if holders and list((out / "data").rglob("part-*.parquet")):
            killed = holders[0]["pid"]
            os.kill(killed, signal.SIGKILL)  # the replica's worker process, mid-task
        time.sleep(0.2)
    driver.join(timeout=400)
    assert killed is not None and killed != os.getpid(), "the run ended before a replica could be killed"
    assert not driver.is_alive(), "the run did not finish after its replica died"
    assert "error" not in outcome_of_run, outcome_of_run.get("error")
    expected, got = outcome(local), outcome(out)
    for key in expected:
        assert got[key] == expected[key], key  # every row once: none lost, none twice


def test_a_bad_row_read_by_a_replica_reaches_the_user_as_itself(ray_cluster, minilm_path, tmp_path):
    corpus = tmp_path / "bad.jsonl"
    text = "A passage long enough to be kept by the reader."
    rows = [json.dumps({"id": name, "text": text}) for name in ("a", "b")]
    corpus.write_text("\n".join([*rows, '{"id": "c", "text": ']) + "\n", encoding="utf-8")
    config = fake_config(tmp_path / "out", minilm_path)
    config.corpus.path = str(corpus)
    config.output.num_tasks = 1
    with deadline(300), pytest.raises(CorpusError, match=r"bad.jsonl:3: not valid JSON"):
        run_generate(config, engine=FakeEngine(default_answer), executor="ray")


def real_config(out, tiny_qwen3, minilm_path, limit):
    # sampled at the default temperature: per-request seeds make both executors' replies the same
    sampled = [s for s in OPEN_GATE if not s.startswith("models.temperature")]
    sets = [f"output.out_dir={out}", f"limit={limit}", f"models.embedder={minilm_path}", *sampled]
    sets.append("models.max_model_len=4096")  # the tiny model's window, as the shared engine has it
    sets.append("cache.enabled=false")  # both executors compute every reply
    config = load_config(None, [*sets, f"models.generator={tiny_qwen3}"])
    return config


@pytest.mark.engine
def test_ray_runs_the_real_engine_like_the_local_executor(
    ray_cluster, vllm_engine, tiny_qwen3, minilm_path, tmp_path
):
    local = tmp_path / "local"
    run_generate(real_config(local, tiny_qwen3, minilm_path, 4), engine=vllm_engine)
    on_ray = tmp_path / "ray"
    with deadline(400):  # the replica starts its own vLLM engine
        run_generate(real_config(on_ray, tiny_qwen3, minilm_path, 4), executor="ray")
    expected, got = outcome(local), outcome(on_ray)
    assert got["schema"] == expected["schema"]
    assert got["ids"] == expected["ids"] and len(got["ids"]) == 4
    assert got["stats"]["rows_in"] == expected["stats"]["rows_in"] == 4
    assert got["shards"] == expected["shards"]
    texts = [{r[S.ID]: r[S.QUERY] for r in pq.read_table(o / "data").to_pylist()} for o in (local, on_ray)]
    assert texts[0] == texts[1]  # another engine in another process, the same sampled replies
    llm = json.loads((on_ray / "stats.json").read_text())["stages"]["query"]["llm"]
    assert llm["requests"] == 4 and llm["prompt_tokens"] > 0 and llm["output_tokens"] > 0
    manifest = json.loads((on_ray / "manifest.json").read_text())
    assert manifest["models"]["generator"]["prefix_caching"] is True  # the replica's engine settings


@pytest.mark.engine
def test_ray_run_killed_then_resumed_loses_and_duplicates_nothing(
    ray_cluster, tiny_qwen3, minilm_path, tmp_path
):
    import ray

    out = tmp_path / "killed"
    sets = [*OPEN_GATE, "output.num_tasks=2"]
    args = generate_args(out, minilm_path, limit=8, model=tiny_qwen3, sets=sets)
    command = [sys.executable, "-m", "pipeline.cli", *args, "--executor", "ray", "--address", ray_cluster]
    log_path = tmp_path / "first.log"
    with log_path.open("w") as log:
        first = subprocess.Popen(command, env=child_env(), stdout=log, stderr=log, start_new_session=True)
    deadline_at = time.time() + 400
    # killed once a chunk is committed (a checkpoint written), not merely once a shard landed
    while not any(chunks_committed(out, task) for task in range(2)):
        assert first.poll() is None, log_path.read_text()[-3000:]
        assert time.time() < deadline_at, "no chunk was committed in time"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies; Ray reclaims its replica
    first.wait()
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.time() < deadline_at + 60, "the dead run's replica was never reclaimed"
        time.sleep(0.5)
    done = [chunks_committed(out, task) for task in range(2)]
    assert 1 <= sum(done) < 4  # 8 passages in 2 tasks of 2 chunks each: killed mid-run

    second = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=500)
    assert second.returncode == 0, second.stderr[-3000:]
    ids = [r[S.ID] for r in pq.read_table(out / "data", columns=[S.ID]).to_pylist()]
    assert len(ids) == len(set(ids)) == 8  # none twice, none lost (the gate is open)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == stats["rows_out"] == 8
    assert sorted(p.name for p in (out / "completions").iterdir()) == ["task-00000", "task-00001"]
