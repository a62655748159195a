"""The whole local runner with a fake engine: shards, schema, stats, rejected rows."""

import json

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.config import load_config
from pipeline.corpus import CorpusError
from pipeline.runner import run_generate

from .conftest import FakeEngine, default_answer


def answer_with_failures(prompt: str, output) -> str:
    # Passages about ice get a broken query reply, so we can follow them into rejected/.
    if output.__name__ == "QueryOutput" and "ice" in prompt.split("### Your task")[-1].lower():
        return '{"query": "cut off'
    return default_answer(prompt, output)


def make_config(tmp_path, *extra):
    return load_config(None, [f"output.out_dir={tmp_path / 'out'}", "output.shard_rows=5", *extra])


def test_run_writes_schema_stats_and_rejected(tmp_path, minilm_path):
    engine = FakeEngine(answer_with_failures)
    config = make_config(tmp_path, "limit=12", f"models.embedder={minilm_path}", "generation.languages=[zh]")
    config.models.generator = "fake-engine"  # no tokenizer: falls back to a character estimate
    result = run_generate(config, engine=engine)
    out = tmp_path / "out"

    table = pq.read_table(out / "data")
    assert table.schema.equals(S.ROW_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert len(rows) + len(rejected) == 12
    assert rejected and all(
        r[S.REASON] == "invalid_json" and r[S.RAW_OUTPUT] == '{"query": "cut off' for r in rejected
    )
    assert all(r[S.LANGUAGE] == "zh" and r[S.QUERY] and r[S.POSITIVE] for r in rows)
    assert all(r[S.MODEL] == "fake-engine" for r in rows)
    assert all(r[S.PROMPT_HASH].startswith("retrieval/configure=") for r in rows)
    assert len({r[S.ID] for r in rows}) == len(rows)
    # the persona chosen is candidate 2 of the top-5, and it is a real persona text
    assert all(r[S.PERSONA] and r[S.QUESTION_TYPE] == "summary" for r in rows)
    # three shards of at most five passages: the engine saw whole shards per call
    assert [n for name, n in engine.calls if name == "ConfigureOutput"] == [5, 5, 2]

    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 12 and stats["rows_out"] == len(rows)
    assert stats["rows_out"] + sum(stats["dropped"].values()) == stats["rows_in"]
    assert stats["stages"]["query"]["dropped_invalid_json"] == len(rejected)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["generator"]["name"] == "fake-engine"
    assert sum(s["rows"] for s in manifest["shards"]) == len(rows)
    assert (out / "config.yaml").exists()
    assert result.stats.rows_out == len(rows)


def test_same_seed_same_choices(tmp_path, minilm_path):
    def run(sub):
        config = load_config(
            None,
            [
                f"output.out_dir={tmp_path / sub}",
                "limit=6",
                f"models.embedder={minilm_path}",
                "generation.languages=[en, zh]",
            ],
        )
        config.models.generator = "fake-engine"
        run_generate(config, engine=FakeEngine(default_answer))
        return [
            (r[S.ID], r[S.LANGUAGE], r[S.QUERY_LENGTH_WORDS])
            for r in pq.read_table(tmp_path / sub / "data").to_pylist()
        ]

    first, second = run("a"), run("b")
    assert first == second
    assert {lang for _, lang, _ in first} == {"en", "zh"}


def test_bad_row_keeps_earlier_shards(tmp_path, minilm_path):
    corpus = tmp_path / "c.jsonl"
    good = [
        json.dumps({"id": str(i), "text": f"Passage number {i} talks about rivers and lakes."})
        for i in range(6)
    ]
    corpus.write_text("\n".join(good + ['{"id": "7", "text": oops}']) + "\n")
    config = make_config(tmp_path, f"corpus.path={corpus}", f"models.embedder={minilm_path}")
    config.models.generator = "fake-engine"
    with pytest.raises(CorpusError, match=r"c\.jsonl:7"):
        run_generate(config, engine=FakeEngine(default_answer))
    # the first shard (5 passages) was written before the bad row was reached
    assert pq.read_table(tmp_path / "out" / "data").num_rows == 5
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["rows_out"] == 5
