"""Token accounting, reply budgets, prefix-cache-friendly templates and the CPU dtype choice."""

import json

import pytest
from typer.testing import CliRunner

from pipeline import schema as S
from pipeline.cli import app
from pipeline.config import DIFFICULTIES, QUESTION_TYPES, load_config
from pipeline.engine.base import Generation, Usage
from pipeline.engine.vllm_engine import cpu_dtype
from pipeline.executors import run_generate
from pipeline.generate.budgets import words_budget
from pipeline.generate.prompts import PromptLibrary

from .conftest import FakeEngine, default_answer

COPIED = "why does my dishwasher leave white spots on glasses after washing"  # worked example 1


def copy_for_water(prompt: str, output) -> str:
    """Queries about passages that mention water copy the first worked example (dropped at `query`)."""
    if output.__name__ == "QueryOutput" and "water" in prompt.split("### Your task")[-1].lower():
        return json.dumps({"query": COPIED})
    return default_answer(prompt, output)


def fake_run(tmp_path, minilm_path, engine, *sets, values=None):
    """One `synth generate` run into tmp_path/out through a fake engine; returns its result."""
    config = load_config(
        None, [f"output.out_dir={tmp_path / 'out'}", f"models.embedder={minilm_path}", *sets], values
    )
    config.models.generator = "fake-engine"  # no tokenizer: a character estimate counts passage tokens
    return run_generate(config, engine=engine)


def test_tokens_of_every_row_are_accounted_for(tmp_path, minilm_path):
    engine = FakeEngine(copy_for_water)
    result = fake_run(
        tmp_path, minilm_path, engine, "output.shard_rows=6", "limit=14", "filters.cosine.enabled=false"
    )
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    tokens, stages = stats["tokens"], stats["stages"]

    llm_stages = {name for name, counts in stages.items() if "llm" in counts}
    assert llm_stages == {"configure", "query", "negatives_llm", "judge"}
    # per stage: one request per row the stage asked about, cached tokens never above prompt tokens
    assert stages["configure"]["llm"]["requests"] == stages["configure"]["in"] == 14
    for name in llm_stages:
        usage = stages[name]["llm"]
        assert 0 < usage["cached_tokens"] < usage["prompt_tokens"] and usage["output_tokens"] > 0
        assert 0 < usage["cached_share"] < 1
    total = sum(stages[n]["llm"]["prompt_tokens"] + stages[n]["llm"]["output_tokens"] for n in llm_stages)
    assert tokens["total_tokens"] == total
    # every token went either to a written row or to a dropped one, charged where it was dropped
    assert tokens["tokens_on_kept_rows"] + tokens["tokens_on_dropped_rows"] == total
    dropped_at_query = stages["query"].get("dropped_copied_example", 0)
    assert dropped_at_query > 0 and stages["query"]["tokens_on_dropped_rows"] > 0
    assert result.stats.rows_out > 0
    assert tokens["tokens_per_kept_pair"] == pytest.approx(total / result.stats.rows_out, abs=0.1)
    engine_seconds = sum(stages[n]["llm"]["engine_seconds"] for n in llm_stages)
    hours = engine_seconds / result.stats.rows_out * 1e6 / 3600
    assert tokens["engine_hours_per_million_kept_pairs"] == pytest.approx(hours, abs=0.2)

    shown = CliRunner().invoke(app, ["stats", str(tmp_path / "out")]).output
    assert "tokens per kept pair: " in shown and "cached" in shown and "engine hours per million" in shown
    assert "negatives_llm" in shown.split("LLM stage")[1]

    # a resumed or merged run reads the same numbers back
    from pipeline.run.stats import RunStats

    again = RunStats.from_json(stats).to_json()
    assert again["tokens"] == tokens and again["stages"]["query"] == stages["query"]


def test_query_budgets_follow_the_requested_length_and_language(tmp_path, minilm_path):
    engine = FakeEngine(default_answer)
    # MiniLM scores English only: keep the Chinese rows unscored so both languages are written
    sets = ("limit=10", "filters.cosine.unscored=keep")
    fake_run(tmp_path, minilm_path, engine, *sets, values={"generation.languages": ["en", "zh"]})
    import pyarrow.parquet as pq

    budgets = dict(engine.budgets)["QueryOutput"]
    assert len(set(budgets)) > 1 and max(budgets) < 720  # one per row, none at the old fixed 720
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert rows
    expected = sorted(words_budget(r[S.QUERY_LENGTH_WORDS], r[S.LANGUAGE], 2.0) for r in rows)
    assert set(expected) <= set(budgets)


def test_words_budget_gives_cjk_and_long_queries_more_room():
    assert words_budget(4, "en", 2.0) < words_budget(30, "en", 2.0)
    assert words_budget(8, "en", 2.0) < words_budget(8, "zh", 2.0)
    assert words_budget(8, "en", 4.0) > words_budget(8, "en", 2.0)


def test_a_reply_cut_at_its_budget_is_dropped_with_its_own_reason(tmp_path, minilm_path):
    class Cutting(FakeEngine):
        def generate(self, chats, output, max_tokens, temperature=None, desc=None, seeds=None):
            generations = super().generate(chats, output, max_tokens, temperature, desc)
            if output.__name__ != "QueryOutput":
                return generations
            cut = Generation('{"query": "loop loop loop', None, "not valid JSON", "length", 50, 10, 30)
            return [cut] + generations[1:]

    fake_run(tmp_path, minilm_path, Cutting(default_answer), "limit=4")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["stages"]["query"]["dropped_cut_at_token_limit"] == 1


def test_usage_sums_and_round_trips():
    usage = Usage()
    usage.add([Generation("", None, prompt_tokens=100, cached_tokens=80, output_tokens=7)] * 3, 2.0)
    assert (usage.requests, usage.tokens, usage.cached_tokens) == (3, 321, 240)
    data = usage.to_json()
    assert data["cached_share"] == 0.8 and data["output_tokens_per_s"] == 10.5
    assert Usage.from_json(data) == usage


ROWS = [
    {
        "passage": "Water expands when it freezes, which is why pipes burst in winter.",
        "passage_language": "English",
        "persona": "A plumber",
        "candidates": ["A plumber", "A skier", "A child", "A farmer", "A pilot"],
        "question_type": "yes_or_no",
        "difficulty": "phd",
        "length_words": 7,
        "query_language": "English",
        "language": "English",
        "query": "do frozen pipes burst",
        "sentence": "Water expands when it freezes.",
        "source_language": "English",
        "target_language": "German",
        "score": 2,
    },
    {
        "passage": "长城始建于春秋战国时期，明朝时大规模重修，现存部分大多为明代所建。",
        "passage_language": "Chinese",
        "persona": "A history teacher",
        "candidates": ["A history teacher", "A nurse", "A pilot", "A chef", "A miner"],
        "question_type": "background",
        "difficulty": "high_school",
        "length_words": 20,
        "query_language": "Chinese",
        "language": "Chinese",
        "query": "长城 明代 重修",
        "sentence": "现存部分大多为明代所建。",
        "source_language": "Chinese",
        "target_language": "English",
        "score": 5,
    },
]
RUN_VALUES = {  # the same for every row of a run: may sit in the shared head
    "question_types": QUESTION_TYPES,
    "difficulties": DIFFICULTIES,
    "count": 1,
    "labels": {"history": "The past.", "health": "Medicine and care."},
}
TEMPLATES = [
    "retrieval/configure",
    "retrieval/query",
    "retrieval/persona_query",
    "retrieval/negatives",
    "judge/relevance",
    "bitext/translate",
    "classification/classify",
    "sts/pair",
]


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("language", [None, "zh"])
@pytest.mark.parametrize("sampled", [True, False])
def test_templates_put_the_row_values_after_a_shared_head(name, language, sampled):
    """Everything before "### Your task" is the same for every row, so the prefix cache serves it."""
    library = PromptLibrary()
    heads = []
    for row in ROWS:
        values = {**row, **RUN_VALUES}
        if name == "retrieval/configure" and not sampled:
            values["question_type"] = values["difficulty"] = None
        text = library.render(name, values, language)
        head, marker, task = text.partition("### Your task")
        assert marker and any(v in task for v in (row["passage"][:10], row["sentence"][:5], row["query"]))
        heads.append(head)
    assert heads[0] == heads[1]
    assert len(heads[0]) > 2 * len(task)  # the shared part is most of the prompt


@pytest.mark.parametrize(
    "flags, dtype",
    [
        ({"avx", "avx2", "fma"}, "float32"),
        ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
        ({"avx2", "amx_bf16", "amx_tile"}, "bfloat16"),
        ({"fp", "asimd", "bf16"}, "bfloat16"),  # Arm
        (set(), "float32"),
    ],
)
def test_cpu_dtype_follows_native_bf16_support(flags, dtype):
    chosen, why = cpu_dtype(flags)
    assert chosen == dtype and why


def test_one_call_mode_picks_the_persona_in_the_query_call(tmp_path, minilm_path):
    import pyarrow.parquet as pq

    engine = FakeEngine(default_answer)
    fake_run(tmp_path, minilm_path, engine, "limit=6", "generation.calls=one")
    called = {name for name, _ in engine.calls}
    assert "ConfigureOutput" not in called and "PersonaQueryOutput" in called
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert rows and all(r[S.PERSONA] and r[S.QUESTION_TYPE] and r[S.DIFFICULTY] for r in rows)
    assert all("retrieval/persona_query=" in r[S.PROMPT_HASH] for r in rows)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "retrieval/persona_query" in manifest["prompts"]
    assert "retrieval/configure" not in manifest["prompts"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert "configure" not in stats["stages"] and stats["stages"]["query"]["llm"]["requests"] == 6


def test_one_call_mode_needs_sampled_kinds():
    with pytest.raises(ValueError, match="choose_by=sampled"):
        load_config(None, ["generation.calls=one", "generation.choose_by=llm"])
