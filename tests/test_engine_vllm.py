"""The real vLLM engine (CPU build) on a tiny random-weight Qwen3, driven through `synth generate`."""

import json
import uuid

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipeline import schema as S
from pipeline.cli import app
from pipeline.generate.replies import QueryOutput

from .conftest import generate_args

pytestmark = pytest.mark.engine


def test_engine_returns_schema_valid_json(vllm_engine):
    chats = [[{"role": "user", "content": f"Write a search query number {i}."}] for i in range(8)]
    generations = vllm_engine.generate(chats, QueryOutput, max_tokens=512)
    assert len(generations) == 8
    # random weights, but constrained decoding with a bounded string always closes the JSON
    assert all(g.parsed is not None for g in generations), [g.error for g in generations]


def test_a_seeded_request_gets_the_same_reply_in_any_batch(vllm_engine):
    """Per-request seeds: sampling at temperature 1, a reply depends on its request alone."""
    chats = [[{"role": "user", "content": f"Write a search query about topic {i}."}] for i in range(4)]

    def replies(batch, seeds):
        return [g.raw for g in vllm_engine.generate(batch, QueryOutput, 24, temperature=1.0, seeds=seeds)]

    alone = replies(chats[2:3], [11])
    in_a_batch = replies(chats, [7, 8, 11, 9])
    reversed_batch = replies(chats[::-1], [9, 11, 8, 7])
    assert in_a_batch[2] == alone[0] == reversed_batch[1]
    assert in_a_batch[::-1] == reversed_batch
    other_seeds = replies(chats, [1, 2, 3, 4])
    assert other_seeds != in_a_batch  # the seed, not the prompt alone, decides the sample


def test_engine_counts_tokens_and_serves_a_shared_head_from_the_prefix_cache(vllm_engine):
    head = "You write search queries. " * 60  # ~300 tokens shared by every chat
    chats = [[{"role": "user", "content": f"{head}\n### Your task\nQuery number {i}."}] for i in range(6)]
    first = vllm_engine.generate(chats[:1], QueryOutput, max_tokens=16)
    rest = vllm_engine.generate(chats[1:], QueryOutput, max_tokens=[8, 16, 24, 32, 40])
    assert vllm_engine.settings["prefix_caching"] and vllm_engine.settings["dtype"] == "float32"
    for generation, budget in zip(first + rest, [16, 8, 16, 24, 32, 40], strict=True):
        assert generation.prompt_tokens > 300 and 0 < generation.output_tokens <= budget
    # the head was computed once; the later chats found at least one whole block of it cached
    assert first[0].cached_tokens < first[0].prompt_tokens
    assert all(g.cached_tokens >= vllm_engine.settings["block_size"] for g in rest)


def test_generate_cli_on_the_real_engine(vllm_engine, tiny_qwen3, minilm_path, tmp_path):
    """Every step runs on the real engine; the filters that judge meaning are opened up,
    since a random-weight model writes noise (the language check would drop it all)."""
    out = tmp_path / "run"
    sets = [
        "generation.max_tokens_query=512",
        "generation.reply_slack=50",  # random weights rarely close a string early: room to finish
        "output.shard_rows=4",
        "negatives.max_tokens=1024",
        "filters.judge.max_tokens=300",
        "filters.judge.min_positive_score=0",
        "filters.judge.max_negative_score=3",
        "filters.language.enabled=false",
        "filters.repetition.enabled=false",
        "filters.cosine.enabled=false",
        "models.embedder_languages=['*']",  # apply the margin to Chinese rows, so it can be re-checked below
    ]
    args = generate_args(out, minilm_path, lang="zh", limit=6, model=tiny_qwen3, sets=sets)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "data")
    assert table.schema.equals(S.ROW_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 6
    assert stats["rows_out"] == len(rows) > 0
    rejected = (
        pq.read_table(out / "rejected").to_pylist() if list((out / "rejected").glob("*.parquet")) else []
    )
    # every input row is either kept or rejected with a reason, and stats agree
    assert len(rows) + len(rejected) == 6
    assert stats["rows_out"] + sum(stats["dropped"].values()) == 6
    assert all(r[S.REASON] and r[S.STAGE] for r in rejected)
    assert all(r[S.QUERY].strip() and r[S.POSITIVE] and r[S.LANGUAGE] == "zh" for r in rows)
    assert all(r[S.PASSAGE_LANGUAGE] == "zh" for r in rows)  # the packaged Chinese sample corpus
    assert {r[S.MODEL] for r in rows} == {"tiny-random-qwen3"}
    assert all(r[S.JUDGE_SCORE] is not None for r in rows)
    # the engine's own token counts reach stats.json, per stage and per kept pair
    tokens = stats["tokens"]
    assert tokens["prompt_tokens"] > tokens["cached_tokens"] > 0 and tokens["output_tokens"] > 0
    assert tokens["tokens_on_kept_rows"] + tokens["tokens_on_dropped_rows"] == tokens["total_tokens"]
    assert stats["stages"]["query"]["llm"]["requests"] == 6
    assert stats["engine"]["dtype"] == "float32" and stats["engine"]["prefix_caching"]

    # kept negatives obey the positive-aware margin, re-scored independently
    from pipeline.embed.embedder import Embedder

    embedder = Embedder(minilm_path, "minilm")
    for r in rows:
        assert len(r[S.NEGATIVES]) >= 1
        q, pos, *negs = embedder.encode([r[S.QUERY], r[S.POSITIVE], *r[S.NEGATIVES]])
        assert all(float(q @ n) < 0.95 * float(q @ pos) + 1e-5 for n in negs)


def test_every_task_type_on_the_real_engine(vllm_engine, tiny_qwen3, minilm_path, tmp_path):
    """Bitext, classification and STS rows through the real engine, with their own columns.

    The checks that judge meaning are opened up (random weights write noise); what is
    tested is that each task's call, schema and row shape work end to end on vLLM.
    """
    out = tmp_path / "run"
    sets = [
        "output.shard_rows=4",
        "generation.max_tokens_query=400",
        "generation.max_tokens_bitext=600",
        "generation.reply_slack=50",
        "generation.sts_max_score_gap=4",
        "generation.label_count=3",
        "filters.language.enabled=false",
        "filters.repetition.enabled=false",
        "filters.language.check_negatives=false",
        "filters.cosine.enabled=false",
    ]
    args = generate_args(out, minilm_path, lang="zh,en", limit=4, model=tiny_qwen3, sets=sets)
    result = CliRunner().invoke(app, [*args, "--tasks", "bitext,classification,sts"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "data").to_pylist()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 12 == stats["rows_out"] + sum(stats["dropped"].values())
    kinds = {r[S.TASK_TYPE] for r in rows}
    assert kinds == {"bitext", "classification", "sts"}, stats["dropped"]
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels) >= 2  # proposed by the engine, or the built-in set if its answer was unusable
    for r in rows:
        assert r[S.MODEL] == "tiny-random-qwen3" and r[S.INSTRUCTION]
        if r[S.TASK_TYPE] == "bitext":
            assert r[S.TARGET_LANGUAGE] in {"zh", "en"} and r[S.TARGET_LANGUAGE] != r[S.LANGUAGE]
            assert r[S.NEGATIVES]
        elif r[S.TASK_TYPE] == "classification":
            assert r[S.LABEL] in labels and len(r[S.NEGATIVES]) == 1
        else:
            assert r[S.SCORE] in {1.0, 2.0, 3.0, 4.0, 5.0}
    shown = CliRunner().invoke(app, ["stats", str(out)]).output
    assert "task_type (kept/total):" in shown


REAL_OPEN = [
    "output.shard_rows=4",
    "generation.max_tokens_query=400",
    "generation.max_tokens_code=600",
    "generation.reply_slack=50",
    "negatives.max_tokens=600",
    "negatives.mined_count=0",
    "negatives.min_negatives=0",
    "filters.language.enabled=false",
    "filters.repetition.enabled=false",
    "filters.passage_copy.enabled=false",
    "filters.language.check_negatives=false",
    "filters.cosine.enabled=false",
]


def test_code_types_on_the_real_engine(vllm_engine, tiny_qwen3, minilm_path, tmp_path):
    """code_search, code_docs and code_translation through vLLM; random weights write code that does
    not parse, and the gate must say so rather than keep it."""
    from pipeline.code.check import parse_error

    from .test_code_tasks import GO, PY, README

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "stats.py").write_text(PY)
    (tree / "clamp.go").write_text(GO)
    (tree / "README.md").write_text(README)
    out = tmp_path / "run"
    args = generate_args(out, minilm_path, limit=20, model=tiny_qwen3, sets=REAL_OPEN)
    args += ["--corpus", str(tree), "--tasks", "code_search,code_docs,code_translation"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["dropped"].values())
    assert {"code_query", "code_translation", "code_parses"} <= set(stats["stages"])
    rows = pq.read_table(out / "data").to_pylist() if (out / "data").exists() else []
    rejected = pq.read_table(out / "rejected").to_pylist()
    for r in rows:
        assert r[S.MODEL] == "tiny-random-qwen3" and r[S.PROGRAMMING_LANGUAGE] in {"python", "go", None}
        if r[S.TASK_TYPE] == "code_translation":  # a kept translation parses in its language
            assert parse_error(r[S.POSITIVE], r[S.TARGET_PROGRAMMING_LANGUAGE]) is None
    translations = [r for r in rejected if r[S.TASK_TYPE] == "code_translation"]
    assert translations and {r[S.REASON] for r in translations} <= {
        "code_does_not_parse",
        "invalid_json",
        "cut_at_token_limit",
        "copied_example",
        "untranslated",
    }


def test_domain_mode_on_the_real_engine(vllm_engine, tiny_qwen3, minilm_path, tmp_path):
    out = tmp_path / "run"
    sets = [*REAL_OPEN, "domains.max_tokens=1200", "domains.topics_per_domain=2"]
    args = generate_args(out, minilm_path, limit=4, model=tiny_qwen3, sets=sets)
    args = [a for a in args if a not in ("--limit", "4")] + ["--domains", "legal", "--count", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 4 == stats["rows_out"] + sum(stats["dropped"].values())
    tasks = json.loads((out / "domain_topics.json").read_text())
    assert list(tasks) == ["legal/en"] and tasks["legal/en"]  # brainstormed, or the fallback task
    assert "domain_example" in stats["stages"]


def test_a_rerun_is_served_by_the_reply_cache_without_calling_vllm(
    vllm_engine, tiny_qwen3, minilm_path, tmp_path, monkeypatch
):
    """The same command into a new folder: every reply from the cache, vLLM never called, same rows."""
    calls = []
    real_generate = type(vllm_engine).generate

    def counting(self, chats, *args, **kwargs):
        calls.append(len(chats))
        return real_generate(self, chats, *args, **kwargs)

    monkeypatch.setattr(type(vllm_engine), "generate", counting)
    sets = [*REAL_OPEN, "output.shard_rows=4"]
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        args = generate_args(out, minilm_path, limit=4, model=tiny_qwen3, sets=sets)
        result = CliRunner().invoke(app, [*args, "--cache", str(tmp_path / "replies")])
        assert result.exit_code == 0, result.output
        if out == outs[0]:
            first_calls, calls[:] = sum(calls), []
    assert first_calls > 0 and calls == []
    first, second = (json.loads((out / "stats.json").read_text())["tokens"] for out in outs)
    assert second["computed_tokens"] == 0 == second["total_tokens"]
    assert second["reply_cache_hits"] == first["requests"]
    assert second["used_tokens"] == first["total_tokens"]

    def rows(out):
        table = pq.read_table(out / "rejected").to_pylist() if (out / "rejected").exists() else []
        kept = pq.read_table(out / "data").to_pylist() if (out / "data").exists() else []
        return sorted((r[S.ID], r[S.QUERY]) for r in [*kept, *table])

    assert rows(outs[0]) == rows(outs[1]) and rows(outs[0])


def test_regate_reruns_only_what_a_filter_change_lets_through(
    vllm_engine, tiny_qwen3, minilm_path, tmp_path, monkeypatch
):
    """A strict cosine threshold drops every row before the negatives; a reviewer marks them good,
    `synth calibrate` suggests a lower cut, and `synth regate --config` with it asks vLLM only for
    the later stages and prints both funnels (the review-calibrate-regate loop)."""
    calls: list[str] = []
    real_generate = type(vllm_engine).generate

    def counting(self, chats, output, *args, **kwargs):
        calls.extend([output.__name__] * len(chats))
        return real_generate(self, chats, output, *args, **kwargs)

    monkeypatch.setattr(type(vllm_engine), "generate", counting)
    strict = [*REAL_OPEN, "filters.cosine.enabled=true", "filters.cosine.threshold=0.999"]
    old, new = tmp_path / "old", tmp_path / "new"
    args = generate_args(old, minilm_path, limit=4, model=tiny_qwen3, sets=strict)
    result = CliRunner().invoke(app, [*args, "--tasks", "retrieval", "--cache", str(tmp_path / "replies")])
    assert result.exit_code == 0, result.output
    old_stats = json.loads((old / "stats.json").read_text())
    assert old_stats["stages"]["cosine"]["dropped_low_cosine"] == 4
    # a person marks every dropped row a good pair; calibrate suggests the cut just under them
    from pipeline.review.server import Review

    review = Review(old, 4, 0, "tester")
    for ref in review.sample:
        review.save({"decision_id": uuid.uuid4().hex, "row_id": ref.row_id, "verdict": "good"})
    suggested = tmp_path / "suggested.yaml"
    result = CliRunner().invoke(app, ["calibrate", str(old), "--write-config", str(suggested)])
    assert result.exit_code == 0, result.output
    lowest = min(review.row(i)["positive_score"] for i in range(4))
    assert yaml.safe_load(suggested.read_text())["filters"]["cosine"]["threshold"] < lowest
    calls.clear()
    result = CliRunner().invoke(
        app,
        [
            "regate",
            str(old),
            "--out",
            str(new),
            "--config",
            str(suggested),
            "--cache",
            str(tmp_path / "replies"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dropped at cosine: low_cosine" in result.output and "computed tokens" in result.output
    stages = json.loads((new / "stats.json").read_text())["stages"]
    for stage in ("configure", "query"):
        assert stages[stage]["llm"]["requests"] == 0 and stages[stage]["llm"]["reply_cache_hits"] == 4
    assert calls and set(calls) <= {"NegativesOutput", "JudgeOutput"}
    assert stages["negatives_llm"]["llm"]["requests"] == 4


def test_plan_runs_a_pilot_on_the_real_engine_and_writes_json(vllm_engine, tiny_qwen3, minilm_path, tmp_path):
    """`synth plan` end to end: a pilot through vLLM and the gate, the projection on screen and in JSON."""
    target = tmp_path / "plan.json"
    args = generate_args(tmp_path / "never", minilm_path, limit=40, model=tiny_qwen3, sets=REAL_OPEN)
    args[0] = "plan"
    result = CliRunner().invoke(
        app, [*args, "--tasks", "retrieval", "--pilot", "8", "--price-input", "0.5", "--json", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "the whole run (95% interval" in result.output and "money" in result.output
    plan = json.loads(target.read_text())
    assert plan["pilot_passages"] == 8 and plan["pilot_tasks"] == 2 and plan["run_passages"] == 40
    assert plan["stages"]["query"]["requests"]["value"] == 40  # one query per passage
    assert plan["tokens"]["low"] <= plan["tokens"]["value"] <= plan["tokens"]["high"]
    assert plan["engine_hours"]["value"] > 0 and "measured here" in plan["engine_hours_basis"]
    assert not (tmp_path / "never").exists()  # the pilot ran in a scratch folder
