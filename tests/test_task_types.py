"""Bitext, classification and STS rows beside retrieval; cross-lingual mixes; seeded diversity."""

import json

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline import schema as S
from pipeline.cli import app, parse_weights
from pipeline.config import GenerationConfig, load_config
from pipeline.engine import parse_output
from pipeline.executors import run_generate
from pipeline.generate import sampling
from pipeline.generate.bitext import candidate_sentences
from pipeline.generate.replies import STSOutput, bitext_output, classification_output
from pipeline.generate.rows import PROSE_TYPES
from pipeline.readers.documents import ReadStats
from pipeline.readers.passages import Passage, mix_languages

from .conftest import FakeEngine, default_answer, generate_args


def test_task_outputs_validate_what_each_task_needs():
    bitext = bitext_output(2)
    assert parse_output(
        '{"translation": "Hello there", "near_misses": ["Hello where", "Bye there"]}', bitext
    ).parsed
    assert (
        parse_output('{"translation": "Hello there", "near_misses": ["Hello where"]}', bitext).parsed is None
    )
    labels = classification_output(["health", "sport"])
    assert parse_output('{"text": "a run a day", "label": "sport", "wrong_label": "health"}', labels).parsed
    assert (
        parse_output('{"text": "a run a day", "label": "music", "wrong_label": "health"}', labels).parsed
        is None
    )
    assert parse_output('{"sentence1": "ab", "sentence2": "cd", "score": 4}', STSOutput).parsed.score == 4
    assert parse_output('{"sentence1": "ab", "sentence2": "cd", "score": 6}', STSOutput).parsed is None
    # the schema handed to constrained decoding carries the enum of labels
    assert classification_output(["a1", "b2"]).model_json_schema()["properties"]["label"]["enum"] == [
        "a1",
        "b2",
    ]


def test_bitext_sentences_skip_fragments():
    passage = "Intro. The enzyme stays active at four degrees for ten hours. Short one here."
    assert candidate_sentences(passage) == ["The enzyme stays active at four degrees for ten hours."]
    assert candidate_sentences("短句。这种酶在四摄氏度下仍能保持活性十个小时。") == [
        "这种酶在四摄氏度下仍能保持活性十个小时。"
    ]


def test_weights_from_the_command_line():
    assert parse_weights("zh:0.7,en:0.3") == {"zh": 0.7, "en": 0.3}
    assert parse_weights("zh,en") == {"zh": 1.0, "en": 1.0}
    with pytest.raises(ValueError, match="name:weight"):
        parse_weights("zh:lots")
    with pytest.raises(ValidationError):
        GenerationConfig(languages={"zh": 0.0})
    with pytest.raises(ValidationError):
        GenerationConfig(tasks=["retrieval", "poetry"])


def test_same_seed_same_sampled_configuration():
    config = GenerationConfig(
        languages={"en": 0.5, "zh": 0.5},
        question_types={"keywords": 3, "summary": 1},
        difficulties=["high_school", "phd"],
    )
    ids = [f"row-{i}" for i in range(400)]

    def draws(cfg, seed):
        return [
            (
                sampling.query_language(cfg, seed, i, "retrieval"),
                sampling.question_type(cfg, seed, i),
                sampling.difficulty(cfg, seed, i),
                sampling.length_words(cfg, seed, i),
                sampling.sts_score(cfg, seed, i),
            )
            for i in ids
        ]

    first = draws(config, 7)
    assert first == draws(GenerationConfig(**config.model_dump()), 7)  # same config, same seed
    assert first != draws(config, 8)
    types = [d[1] for d in first]
    # the weights are honoured: keywords is drawn ~3x as often as summary (75% of 400, +-5 sd)
    assert 250 < types.count("keywords") < 350 and set(types) == {"keywords", "summary"}
    assert {d[0] for d in first} == {"en", "zh"} and {d[2] for d in first} == {"high_school", "phd"}


def passage(i, language):
    return Passage(f"{language}{i}#0", f"{language}{i}", None, f"text {i}", language)


def test_passage_language_mix_follows_the_weights_and_skips_others():
    corpus = [passage(i, "zh") for i in range(300)] + [passage(i, "en") for i in range(300)]
    corpus += [passage(i, "fr") for i in range(10)]
    stats = ReadStats()
    mixed = list(mix_languages(iter(corpus), {"zh": 0.5, "en": 0.5}, seed=1, stats=stats))
    assert len(mixed) == 600 and stats.counts["skipped_passage_language"] == 10
    assert {p.language for p in mixed[:40]} == {"zh", "en"}  # interleaved, not zh first
    # the first 100 hold about half of each
    assert 35 < sum(p.language == "zh" for p in mixed[:100]) < 65
    again = list(mix_languages(iter(corpus), {"zh": 0.5, "en": 0.5}, seed=1, stats=ReadStats()))
    assert [p.passage_id for p in again] == [p.passage_id for p in mixed]


def test_a_language_after_a_long_run_of_another_is_read_ahead_to_disk_and_never_lost():
    """One file per language, more passages than the buffer: every passage of both languages comes
    out, in the asked-for mix from the start, with at most ``buffer_limit`` of them in memory."""
    from pipeline.readers.passages import SpillQueue

    corpus = [passage(i, "en") for i in range(300)] + [passage(i, "zh") for i in range(300)]
    stats = ReadStats()
    peaks = []
    append = SpillQueue.append

    def watched(self, item):
        append(self, item)
        peaks.append(len(self._memory))

    SpillQueue.append = watched
    try:
        mixed = list(
            mix_languages(iter(corpus), {"zh": 0.5, "en": 0.5}, seed=3, stats=stats, buffer_limit=16)
        )
    finally:
        SpillQueue.append = append
    assert sorted(p.passage_id for p in mixed) == sorted(p.passage_id for p in corpus)
    assert 35 < sum(p.language == "zh" for p in mixed[:100]) < 65  # the mix holds from the start
    assert max(peaks) <= 16 and stats.counts["passages_read_ahead"] == 0
    # a consumer that stops early (--limit) leaves the passages read ahead counted
    stats = ReadStats()
    stream = mix_languages(iter(corpus), {"zh": 0.5, "en": 0.5}, seed=3, stats=stats, buffer_limit=16)
    taken = [next(stream) for _ in range(50)]
    read = 300 + sum(p.language == "zh" for p in taken)  # every en passage was read to reach zh
    assert stats.counts["passages_read_ahead"] == read - len(taken)


def run_fake(tmp_path, *sets, engine=None):
    config = load_config(None, [f"output.out_dir={tmp_path / 'out'}", *sets])
    config.models.generator = "fake-engine"
    run_generate(config, engine=engine or FakeEngine(default_answer))
    return pq.read_table(tmp_path / "out" / "data").to_pylist(), json.loads(
        (tmp_path / "out" / "stats.json").read_text()
    )


def test_all_four_task_types_in_both_languages(tmp_path, minilm_path):
    rows, stats = run_fake(
        tmp_path,
        "limit=16",
        f"models.embedder={minilm_path}",
        "generation.tasks=[retrieval, bitext, classification, sts]",
        "generation.languages=[zh, en]",
        "filters.cosine.enabled=false",  # the fake's queries are word salad: cosine would decide at random
    )
    by_task = {task: [r for r in rows if r[S.TASK_TYPE] == task] for task in PROSE_TYPES}
    assert all(by_task.values()), {t: len(v) for t, v in by_task.items()}
    for task, task_rows in by_task.items():
        assert {r[S.PASSAGE_LANGUAGE] for r in task_rows} == {"zh", "en"}, task
        assert all(r[S.INSTRUCTION] for r in task_rows)
    for r in by_task["bitext"]:
        assert r[S.TARGET_LANGUAGE] and r[S.TARGET_LANGUAGE] != r[S.LANGUAGE] == r[S.PASSAGE_LANGUAGE]
        assert r[S.NEGATIVES] and r[S.NEGATIVE_SOURCES] == ["llm"]
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    for r in by_task["classification"]:
        assert r[S.LABEL] in labels and r[S.POSITIVE].startswith(r[S.LABEL] + ": ")
        assert len(r[S.NEGATIVES]) == 1 and not r[S.NEGATIVES][0].startswith(r[S.LABEL] + ":")
    for r in by_task["sts"]:
        assert 1 <= r[S.SCORE] <= 5 and r[S.NEGATIVES] == []
    assert all(r[S.SCORE] is None for r in by_task["retrieval"] + by_task["bitext"])

    # stats count every type and language pair, and every input row is accounted for
    groups = stats["groups"]
    assert {k for k, v in groups["task_type"].items() if v["kept"]} == set(PROSE_TYPES)
    assert stats["rows_in"] == 64 == stats["rows_out"] + sum(stats["dropped"].values())
    assert sum(v["kept"] for v in groups["task_type"].values()) == len(rows)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tasks"] == ["retrieval", "bitext", "classification", "sts"]
    assert "sts/pair" in manifest["prompts"] and manifest["labels"] == labels

    shown = CliRunner().invoke(app, ["stats", str(tmp_path / "out")]).output
    assert "task_type (kept/total):" in shown and "sts=" in shown and "bitext=" in shown
    assert "task_language_pair (kept/total):" in shown and "retrieval zh->en=" in shown
    assert "task_language (kept/total):" in shown and "classification zh=" in shown


def test_cross_lingual_zh_passages_en_queries(tmp_path, minilm_path):
    rows, stats = run_fake(
        tmp_path,
        "limit=8",
        f"models.embedder={minilm_path}",
        "generation.passage_languages=[zh]",
        "generation.languages=[en]",
        "generation.tasks=[retrieval, classification]",
        "filters.judge.enabled=false",  # the fake judge grades by shared words: none across languages
        "filters.cosine.unscored=keep",  # MiniLM cannot score en->zh pairs
    )
    assert rows and all(r[S.PASSAGE_LANGUAGE] == "zh" and r[S.LANGUAGE] == "en" for r in rows)
    assert all(r[S.QUERY].isascii() for r in rows)
    retrieval = [r for r in rows if r[S.TASK_TYPE] == "retrieval"]
    assert retrieval and all(
        "in English" in r[S.INSTRUCTION] and "in Chinese" in r[S.INSTRUCTION] for r in retrieval
    )
    assert set(stats["groups"]["language_pair"]) == {"zh->en"}


def test_bitext_needs_a_second_language(tmp_path, minilm_path):
    rows, stats = run_fake(
        tmp_path,
        "limit=3",
        f"models.embedder={minilm_path}",
        "generation.tasks=[bitext]",
        "generation.languages=[en]",
    )
    assert rows == [] and stats["dropped"] == {"no_target_language": 3}


def test_configured_labels_are_used_and_sts_mismatch_is_dropped(tmp_path, minilm_path):
    def answer(prompt, output):
        if output.__name__ == "STSOutput":  # a model that always grades its pair 5, whatever was asked
            return json.dumps(
                {"sentence1": "The cat sat on the mat.", "sentence2": f"A cat sat {len(prompt)}.", "score": 5}
            )
        return default_answer(prompt, output)

    rows, stats = run_fake(
        tmp_path,
        "limit=12",
        f"models.embedder={minilm_path}",
        "generation.tasks=[classification, sts]",
        "generation.labels={physics: Forces and matter., biology: Living things.}",
        "generation.sts_scores={1: 1, 5: 1}",
        "generation.sts_max_score_gap=1",
        engine=FakeEngine(answer),
    )
    assert {r[S.LABEL] for r in rows if r[S.TASK_TYPE] == "classification"} == {"physics"}
    sts = [r for r in rows if r[S.TASK_TYPE] == "sts"]
    assert sts and all(r[S.SCORE] == 5 for r in sts)
    # asked for 1, graded 5: dropped with its reason; asked for 5: kept
    asked_low = stats["groups"]["sts_score"]["1"]
    assert (
        asked_low["kept"] == 0
        and asked_low["dropped"] == stats["stages"]["sts"]["dropped_score_mismatch"] > 0
    )
    assert not (tmp_path / "out" / "labels.json").exists()


def test_generate_cli_takes_tasks_and_language_mixes(tmp_path, minilm_path, monkeypatch):
    seen = {}

    def fake_run(plan, engine=None):
        seen["config"] = plan.config
        raise SystemExit(0)

    monkeypatch.setattr("pipeline.executors.execute", fake_run)
    args = generate_args(
        tmp_path / "o",
        minilm_path,
        lang="zh,en",
        extra=["--tasks", "bitext,sts", "--query-langs", "en:0.8,zh:0.2", "--passage-langs", "zh"],
    )
    CliRunner().invoke(app, args)
    generation = seen["config"].generation
    assert generation.tasks == ["bitext", "sts"]
    assert generation.languages == {"en": 0.8, "zh": 0.2} and generation.passage_languages == {"zh": 1.0}


def test_label_proposal_keeps_only_usable_labels():
    from pipeline.generate.labels import usable_labels
    from pipeline.generate.prompts import PromptLibrary
    from pipeline.generate.replies import LabelItem

    prompt = PromptLibrary().render("classification/labels", {"passages": ["Cells divide."], "count": 4})
    items = [
        LabelItem(
            name="cooking", description="Recipes, ingredients and ways of preparing food."
        ),  # the example's
        LabelItem(name="Cell Biology", description="How cells grow, divide and die."),
        LabelItem(name="cell biology studies", description="Near repeat of the name above."),
        LabelItem(name="genetics", description="Genes and heredity.}}}}"),  # garbled
        LabelItem(name="immunology", description="The immune system and its responses."),
    ]
    assert usable_labels(items, prompt) == {
        "cell biology": "How cells grow, divide and die.",
        "immunology": "The immune system and its responses.",
    }


def test_repeated_label_gets_the_embedders_nearest_other_label(minilm_path):
    from pipeline.embed.embedder import Embedder
    from pipeline.generate.classification import WriteClassification
    from pipeline.generate.llm_call import LLM
    from pipeline.generate.prompts import PromptLibrary

    labels = {
        "sport": "Games, athletes and matches.",
        "football": "Soccer clubs, players and leagues.",
        "cooking": "Recipes and food.",
    }

    def answer(prompt, output):
        return json.dumps(
            {"text": "The striker scored twice in the derby", "label": "sport", "wrong_label": "sport"}
        )

    llm = LLM(FakeEngine(answer), PromptLibrary())
    step = WriteClassification(llm, GenerationConfig(), labels, Embedder(minilm_path, "minilm"))
    row = {
        S.ID: "r",
        S.TASK_TYPE: "classification",
        S.LANGUAGE: "en",
        S.PASSAGE_LANGUAGE: "en",
        S.POSITIVE: "A passage about a football match.",
        S.WORK_CANDIDATES: ["A fan"],
    }
    result = step([row])
    assert result.events["wrong_label_from_embedder"] == 1
    assert result.kept[0][S.NEGATIVES] == ["football: Soccer clubs, players and leagues."]
