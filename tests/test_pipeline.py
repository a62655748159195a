"""The whole local runner with a fake engine: shards, schema, stats, rejected rows."""

import json

import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.config import load_config
from pipeline.executors import run_generate
from pipeline.readers.documents import CorpusError

from .conftest import FakeEngine, default_answer, run_fake


def answer_with_failures(prompt: str, output) -> str:
    # Passages about ice get a broken query reply, so we can follow them into rejected/.
    if output.__name__ == "QueryOutput" and "ice" in prompt.split("### Your task")[-1].lower():
        return '{"query": "cut off'
    return default_answer(prompt, output)


def make_config(tmp_path, *extra):
    return load_config(None, [f"output.out_dir={tmp_path / 'out'}", "output.shard_rows=5", *extra])


def test_run_writes_schema_stats_and_rejected(tmp_path, minilm_path):
    engine = FakeEngine(answer_with_failures)
    config = make_config(
        tmp_path,
        "limit=12",
        f"models.embedder={minilm_path}",
        "generation.languages=[zh]",
        "generation.choose_by=llm",  # the fake always chooses "summary"
        "models.embedder_languages=['*']",  # exercise cosine and margin on Chinese, trusted or not
        "filters.cosine.mode=percentile",
        "filters.cosine.percentile=20",
    )
    config.models.generator = "fake-engine"  # no tokenizer: falls back to a character estimate
    result = run_generate(config, engine=engine)
    out = tmp_path / "out"

    table = pq.read_table(out / "data")
    assert table.schema.equals(S.ROW_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert len(rows) + len(rejected) == 12
    broken = [r for r in rejected if r[S.REASON] == "invalid_json"]
    assert broken and all(r[S.RAW_OUTPUT] == '{"query": "cut off' for r in broken)
    assert {r[S.REASON] for r in rejected} <= {"invalid_json", "low_cosine"}
    assert all(r[S.SCORES] for r in rejected if r[S.REASON] == "low_cosine")
    assert all(r[S.LANGUAGE] == "zh" and r[S.QUERY] and r[S.POSITIVE] for r in rows)
    assert all(r[S.MODEL] == "fake-engine" for r in rows)
    assert all("judge/relevance=" in r[S.PROMPT_HASH] for r in rows)
    assert len({r[S.ID] for r in rows}) == len(rows)
    assert all(r[S.PERSONA] and r[S.QUESTION_TYPE] == "summary" and r[S.JUDGE_SCORE] == 3 for r in rows)
    # three shards of at most five passages: the engine saw whole shards per call (a slice of 16 rows
    # holds a whole chunk), in whatever order the chunks streaming side by side reached it
    assert sorted(n for name, n in engine.calls if name == "ConfigureOutput") == [2, 5, 5]

    # every kept row has negatives of both kinds, and each obeys the margin rule when re-scored
    from pipeline.embed.embedder import Embedder

    embedder = Embedder(minilm_path, "minilm")
    for r in rows:
        assert r[S.NEGATIVES] and set(r[S.NEGATIVE_SOURCES]) == {"llm", "mined"}
        assert r[S.POSITIVE] not in r[S.NEGATIVES]
        q, pos, *negs = embedder.encode([r[S.QUERY], r[S.POSITIVE], *r[S.NEGATIVES]])
        for neg in negs:
            assert float(q @ neg) < 0.95 * float(q @ pos) + 1e-5

    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 12 and stats["rows_out"] == len(rows)
    assert stats["rows_out"] + sum(stats["dropped"].values()) == stats["rows_in"]
    assert stats["stages"]["query"]["dropped_invalid_json"] == len(broken)
    cosine = stats["histograms"]["cosine"]
    assert sum(cosine["kept"]) == len(rows) and sum(cosine["dropped"]) == stats["dropped"].get(
        "low_cosine", 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["generator"]["name"] == "fake-engine"
    assert sum(s["rows"] for s in manifest["shards"]) == len(rows)
    assert (out / "config.yaml").exists()
    assert result.stats.rows_out == len(rows)


def test_same_seed_same_choices(tmp_path, minilm_path):
    def run(sub):
        run_fake(
            f"output.out_dir={tmp_path / sub}",
            "limit=6",
            f"models.embedder={minilm_path}",
            "generation.languages=[en, zh]",
            # the fake writes nonsense for zh queries on English passages: only sampling is tested here
            "filters.language.enabled=false",
            "filters.cosine.enabled=false",
            "filters.judge.enabled=false",
        )
        return [
            (r[S.ID], r[S.LANGUAGE], r[S.QUERY_LENGTH_WORDS])
            for r in pq.read_table(tmp_path / sub / "data").to_pylist()
        ]

    first, second = run("a"), run("b")
    assert first == second
    assert {lang for _, lang, _ in first} == {"en", "zh"}


def bad_corpus(tmp_path):
    corpus = tmp_path / "c.jsonl"
    texts = [
        "Rivers carry sediment from mountains down to the sea.",
        "Volcanic islands form where magma rises through the ocean floor.",
        "Medieval castles were built with thick stone walls and moats.",
        "Solar panels turn sunlight into electricity with silicon cells.",
        "Jazz grew out of blues and ragtime in New Orleans.",
        "Chess openings are studied by players for years.",
    ]
    good = [json.dumps({"id": str(i), "text": t}) for i, t in enumerate(texts)]
    corpus.write_text("\n".join(good + ['{"id": "7", "text": oops}']) + "\n")
    return corpus


def test_bad_row_keeps_earlier_shards(tmp_path, minilm_path):
    # without mining the corpus is read lazily, shard by shard
    config = make_config(
        tmp_path,
        f"corpus.path={bad_corpus(tmp_path)}",
        f"models.embedder={minilm_path}",
        "negatives.mined_count=0",
        "filters.cosine.enabled=false",
    )
    config.models.generator = "fake-engine"
    with pytest.raises(CorpusError, match=r"c\.jsonl:7"):
        run_generate(config, engine=FakeEngine(default_answer))
    # the first shard (5 passages) was written before the bad row was reached
    assert pq.read_table(tmp_path / "out" / "data").num_rows == 5
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["rows_out"] == 5


def test_bad_row_found_before_any_llm_call_when_mining(tmp_path, minilm_path):
    # the mining pool reads the corpus up front, so the error comes before any generation
    engine = FakeEngine(default_answer)
    config = make_config(tmp_path, f"corpus.path={bad_corpus(tmp_path)}", f"models.embedder={minilm_path}")
    config.models.generator = "fake-engine"
    with pytest.raises(CorpusError, match=r"c\.jsonl:7"):
        run_generate(config, engine=engine)
    assert engine.calls == []


def test_judge_auto_off_only_for_the_packaged_smollm2():
    from pipeline.config import RunConfig
    from pipeline.models import SMOLLM2_NAME, ResolvedModel
    from pipeline.run.plan import judge_decision

    config = RunConfig()
    on, why_not = judge_decision(config, ResolvedModel("x", SMOLLM2_NAME))
    assert not on and "SmolLM2" in why_not
    assert judge_decision(config, ResolvedModel("x", "Qwen/Qwen3-8B")) == (True, None)
    config.filters.judge.enabled = True
    assert judge_decision(config, ResolvedModel("x", SMOLLM2_NAME)) == (True, None)
