"""The reply cache and the budgets with the fake engine (the real-engine cache tests: test_engine_vllm)."""

from __future__ import annotations

import json
import multiprocessing

import pyarrow.parquet as pq
from pydantic import BaseModel

from pipeline.config import load_config
from pipeline.engine.reply_cache import CachingEngine, ReplyCache, Sampling, model_identity
from pipeline.executors import run_generate

from .conftest import FakeEngine, default_answer

BASE = ["limit=12", "output.shard_rows=4", "generation.tasks=[retrieval]", "generation.languages=[en]"]


def config_for(out, minilm_path, *sets):
    config = load_config(None, [f"output.out_dir={out}", f"models.embedder={minilm_path}", *BASE, *sets])
    config.models.generator = "fake-engine"
    return config


def rows(out) -> dict[str, dict]:
    found = {}
    for path in sorted((out / "data").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            found[row["id"]] = {k: row[k] for k in ("query", "positive", "negatives", "persona")}
    return found


def stage_usage(out) -> dict[str, dict]:
    stats = json.loads((out / "stats.json").read_text())
    return {name: counts["llm"] for name, counts in stats["stages"].items() if "llm" in counts}


def test_a_second_identical_run_asks_the_engine_nothing(tmp_path, minilm_path):
    cache = f"cache.path={tmp_path / 'replies'}"
    first_engine, second_engine = FakeEngine(default_answer), FakeEngine(default_answer)
    run_generate(config_for(tmp_path / "a", minilm_path, cache), engine=first_engine)
    result = run_generate(config_for(tmp_path / "b", minilm_path, cache), engine=second_engine)
    assert first_engine.calls and second_engine.calls == []
    assert rows(tmp_path / "a") == rows(tmp_path / "b") and rows(tmp_path / "a")
    first, second = stage_usage(tmp_path / "a"), stage_usage(tmp_path / "b")
    for stage, usage in second.items():
        assert usage["requests"] == usage["prompt_tokens"] == usage["output_tokens"] == 0
        assert usage["reply_cache_hits"] == first[stage]["requests"]
        assert usage["reply_cache_prompt_tokens"] == first[stage]["prompt_tokens"]
    tokens = result.stats.token_summary()
    assert tokens["computed_tokens"] == 0 and tokens["used_tokens"] > 0
    assert result.stats.timings.get("engine_start", 0.0) == 0.0  # the engine was never started


def test_a_filter_change_pays_only_for_the_rows_it_lets_through(tmp_path, minilm_path):
    cache = f"cache.path={tmp_path / 'replies'}"
    strict = run_generate(
        config_for(tmp_path / "strict", minilm_path, cache, "filters.cosine.threshold=0.95"),
        engine=FakeEngine(default_answer),
    )
    engine = FakeEngine(default_answer)
    loose = run_generate(
        config_for(tmp_path / "loose", minilm_path, cache, "filters.cosine.threshold=0.1"), engine=engine
    )
    before, after = stage_usage(tmp_path / "strict"), stage_usage(tmp_path / "loose")
    for stage in ("configure", "query"):  # before the cosine filter: every reply from the cache
        assert after[stage]["requests"] == 0 and after[stage]["reply_cache_hits"] == before[stage]["requests"]
    let_through = strict.stats.stages["cosine"].dropped["low_cosine"] - loose.stats.stages[
        "cosine"
    ].dropped.get("low_cosine", 0)
    assert let_through > 0
    # the negatives call runs only for the rows the looser threshold newly lets through
    new_negatives = after["negatives_llm"]["requests"]
    assert new_negatives == let_through
    assert after["negatives_llm"].get("reply_cache_hits", 0) == before.get("negatives_llm", {}).get(
        "requests", 0
    )
    assert {name for name, _ in engine.calls} == {"NegativesOutput", "JudgeOutput"}  # the later stages only


class Answer(BaseModel):
    text: str


class OtherAnswer(BaseModel):
    text: str
    more: int = 0


def test_a_changed_seed_temperature_schema_or_model_file_misses(tmp_path):
    cache = ReplyCache(str(tmp_path / "replies"), 1 << 30)
    inner = FakeEngine(lambda prompt, output: json.dumps({"text": prompt[:5]}))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"layers": 2}')

    def engine() -> CachingEngine:
        return CachingEngine(lambda: inner, cache, model_identity(str(model), "m"), "m", Sampling(0.7, 0.9))

    chat = [[{"role": "user", "content": "hello there"}]]
    engine().generate(chat, Answer, 16, seeds=[1])
    assert len(inner.calls) == 1
    hit = engine().generate(chat, Answer, 16, seeds=[1])[0]
    assert len(inner.calls) == 1 and hit.from_cache and hit.parsed.text == "hello"
    engine().generate(chat, Answer, 16, seeds=[2])  # another seed
    engine().generate(chat, Answer, 16, temperature=0.3, seeds=[1])  # another temperature
    engine().generate(chat, OtherAnswer, 16, seeds=[1])  # another schema
    engine().generate(chat, Answer, 17, seeds=[1])  # another token budget
    assert len(inner.calls) == 5
    (model / "config.json").write_text('{"layers": 3}')  # the same path, other weights
    engine().generate(chat, Answer, 16, seeds=[1])
    assert len(inner.calls) == 6
    engine().generate(chat, Answer, 16)  # no seed at a temperature above zero: never cached
    engine().generate(chat, Answer, 16)
    assert len(inner.calls) == 8


def test_a_change_in_the_middle_of_a_weights_file_misses(tmp_path):
    """Every byte of a model's files counts (an edge-only hash missed a change to middle tensors)."""
    import os

    cache = ReplyCache(str(tmp_path / "replies"), 1 << 30)
    inner = FakeEngine(lambda prompt, output: json.dumps({"text": prompt[:5]}))
    model = tmp_path / "model"
    model.mkdir()
    weights = model / "model.safetensors"
    data = bytearray(os.urandom(5 << 20))
    weights.write_bytes(bytes(data))
    first = model_identity(str(model), "m")
    assert model_identity(str(model), "m") == first  # remembered, and the same
    data[len(data) // 2] ^= 0xFF  # one byte in the middle, same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    second = model_identity(str(model), "m")
    assert second != first
    chat = [[{"role": "user", "content": "hello there"}]]
    CachingEngine(lambda: inner, cache, first, "m", Sampling(0.7, 0.9)).generate(chat, Answer, 16, seeds=[1])
    CachingEngine(lambda: inner, cache, second, "m", Sampling(0.7, 0.9)).generate(chat, Answer, 16, seeds=[1])
    assert len(inner.calls) == 2
    assert model_identity(str(model), "m", revision="v2") != second  # a stated revision counts too


def test_a_store_that_fails_to_answer_keeps_the_entry(tmp_path, monkeypatch):
    cache = ReplyCache(str(tmp_path / "replies"), 1 << 30)
    cache.put("model", "a" * 64, {"raw": "{}"})
    path = cache._path("model", "a" * 64)
    real = type(path).read_bytes

    def unavailable(self):
        if self == path:
            raise OSError(5, "503 Slow Down")
        return real(self)

    monkeypatch.setattr(type(path), "read_bytes", unavailable)
    assert cache.get("model", "a" * 64) is None and path.exists()  # a miss that keeps the entry
    monkeypatch.setattr(type(path), "read_bytes", real)
    assert cache.get("model", "a" * 64) == {"raw": "{}"}
    path.write_text("{half an entr")
    assert cache.get("model", "a" * 64) is None and not path.exists()  # damaged: removed


def _fill(root: str, worker: int, count: int) -> None:
    cache = ReplyCache(root, 1 << 30)
    for i in range(count):
        key = f"{i % 50:064x}"  # half the keys are shared by both writers
        own = f"{worker}{i:063x}"
        for name in (key, own):
            cache.put("model", name, {"raw": json.dumps({"text": "x" * (i % 300)}), "output_tokens": i})
            entry = cache.get("model", key if name == key else own)
            assert entry is None or json.loads(entry["raw"])["text"].startswith("x" * 0)


def test_two_processes_filling_one_cache_corrupt_nothing(tmp_path):
    root = str(tmp_path / "replies")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_fill, args=(root, w, 400)) for w in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [p.exitcode for p in workers] == [0, 0]
    entries = [p for p in (tmp_path / "replies").rglob("*") if p.is_file()]
    assert len(entries) == 50 + 2 * 400
    for path in entries:
        data = json.loads(path.read_text())  # every entry whole
        json.loads(data["raw"])
    assert not [p for p in entries if p.name.endswith(".tmp")]


def test_the_cache_stays_within_its_bound(tmp_path):
    cache = ReplyCache(str(tmp_path / "replies"), 20_000)
    for i in range(100):
        cache.put("model", f"{i:064x}", {"raw": "y" * 500})
    cache.get("model", f"{0:064x}")  # used lately: kept
    removed = cache.sweep()
    left = sum(p.stat().st_size for p in (tmp_path / "replies").rglob("*.json"))
    assert removed > 0 and left <= 20_000 * 0.8
    assert cache.get("model", f"{0:064x}") is not None and cache.get("model", f"{1:064x}") is None


def test_a_token_budget_stops_cleanly_and_a_larger_one_resumes(tmp_path, minilm_path):
    off = "cache.enabled=false"  # the budget alone: every reply computed
    whole = run_generate(config_for(tmp_path / "whole", minilm_path, off), engine=FakeEngine(default_answer))
    per_chunk = whole.stats.usage().computed_tokens / 3  # 12 passages, 4 per chunk
    budget = int(per_chunk * 1.5)
    out = tmp_path / "budgeted"
    stopped = run_generate(
        config_for(out, minilm_path, off, f"budget.tokens={budget}"), engine=FakeEngine(default_answer)
    )
    assert stopped.budget_stop and "token budget reached" in stopped.budget_stop
    spent = stopped.stats.usage().computed_tokens
    assert budget <= spent <= budget + 1.2 * per_chunk  # at most one chunk past the limit
    assert not (out / "manifest.json").exists()  # not finished
    resumed = run_generate(
        config_for(out, minilm_path, off, f"budget.tokens={budget * 10}"), engine=FakeEngine(default_answer)
    )
    assert resumed.budget_stop is None
    assert rows(out) == rows(tmp_path / "whole")
    assert resumed.stats.usage().computed_tokens == whole.stats.usage().computed_tokens


def test_the_plan_projects_what_the_full_run_then_spends(tmp_path, minilm_path):
    """A 24-passage pilot on the packaged English sample (43 passages) against the whole run."""
    import math

    from pipeline.executors.pilot import plan_run

    sets = [f"output.out_dir={tmp_path / 'full'}", f"models.embedder={minilm_path}"]
    sets += ["generation.tasks=[retrieval]", "generation.languages=[en]", "output.shard_rows=4"]
    config = load_config(None, sets)
    config.models.generator = "fake-engine"
    prices = {"input": 1.0, "cached": 0.1, "output": 4.0}
    plan, count = plan_run(config, pilot=24, engine=FakeEngine(default_answer), prices=prices)
    assert count.exact and count.passages == plan["run_passages"] == 43
    assert plan["pilot_passages"] == 24 and plan["pilot_tasks"] == 6
    full = run_generate(config, engine=FakeEngine(default_answer))
    usage = full.stats.usage()
    spent = {
        "tokens": usage.tokens + usage.cache_tokens,  # the pilot's replies came from the cache
        "kept_pairs": full.stats.rows_out,
        "rows": full.stats.rows_in,
    }
    for name, actual in spent.items():
        figure = plan[name]
        assert not math.isnan(figure["low"])
        assert figure["low"] <= actual <= figure["high"], (name, actual, figure)
    assert plan["money"]["low"] <= plan["money"]["value"] <= plan["money"]["high"]
    assert set(plan["stages"]) >= {"configure", "query"}
    assert "measured here" in plan["engine_hours_basis"]


def test_the_reply_cache_on_object_storage(tmp_path, s3_server, minilm_path):
    """`--cache s3://...`: a second run into a new folder is answered from the bucket."""
    url = s3_server.bucket("replies") + "/cache"
    cache = f"cache.path={url}"
    first, second = FakeEngine(default_answer), FakeEngine(default_answer)
    run_generate(config_for(tmp_path / "a", minilm_path, cache, "limit=4"), engine=first)
    run_generate(config_for(tmp_path / "b", minilm_path, cache, "limit=4"), engine=second)
    assert first.calls and second.calls == []
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    entries = s3_server.filesystem().find("replies/cache")
    assert entries and all(name.endswith(".json") for name in entries)
    removed = ReplyCache(url, 1).sweep()  # a bound of one byte
    assert removed == len(entries) and not s3_server.filesystem().find("replies/cache")
