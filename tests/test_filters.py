"""Each quality-gate step on hand-made rows whose right answer is known."""

import json

import numpy as np

from pipeline import schema as S
from pipeline.config import CosineConfig, DedupConfig, JudgeConfig, NegativesConfig
from pipeline.embed.pool import PassagePool
from pipeline.filters.cosine import CosineFilter
from pipeline.filters.dedup import Dedup
from pipeline.filters.judge import Judge
from pipeline.filters.language import LanguageCheck
from pipeline.filters.margin import NegativeMargin, RequireNegatives, passes_margin
from pipeline.generate.negatives import MineNegatives
from pipeline.generate.prompts import PromptLibrary

from .conftest import FakeEngine, task_field


class TableEmbedder:
    """Unit vectors looked up by text: scores are whatever the test says they are."""

    name = "table"

    def __init__(self, table: dict[str, list[float]], languages=None, cosine_threshold=0.7):
        self.cosine_threshold = cosine_threshold
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        self.languages = languages

    def supports(self, *languages):
        return self.languages is None or all(lang in self.languages for lang in languages)

    def encode(self, texts, show_progress=False, role="passage"):
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, 2), np.float32)


def row(i, query, positive="a passage", language="en", **extra):
    return {
        S.ID: f"r{i}",
        S.TASK_TYPE: "retrieval",
        S.QUERY: query,
        S.POSITIVE: positive,
        S.LANGUAGE: language,
        S.PASSAGE_LANGUAGE: language,
        S.PASSAGE_ID: f"p{i}#0",
        S.SOURCE_ID: f"p{i}",
        **extra,
    }


def test_language_check_drops_wrong_language():
    rows = [
        row(0, "how do vaccines train the immune system", language="zh"),
        row(1, "疫苗如何训练免疫系统", language="zh"),
        row(2, "how do vaccines train the immune system", language="en"),
        row(3, "CRISPR Cas9", language="en"),
        row(4, "100.10.3.61", language="en"),
    ]
    result = LanguageCheck()(rows)
    assert [r[S.ID] for r in result.kept] == ["r1", "r2", "r3"]
    assert [(d.row[S.ID], d.reason) for d in result.dropped] == [
        ("r0", "wrong_language"),
        ("r4", "wrong_language"),
    ]
    assert "looks like en" in result.dropped[0].detail


def test_dedup_exact_near_and_contamination(tmp_path):
    evals = tmp_path / "queries.jsonl"
    evals.write_text(
        json.dumps(
            {"_id": "q1", "text": "what is the boiling point of water at high altitude in the mountains"}
        )
        + "\n"
    )
    step = Dedup(DedupConfig(decontaminate=[str(evals)]))
    first = step(
        [
            row(0, "How do vaccines train the immune system to fight infections?"),
            row(1, "how do VACCINES train the immune system to fight infections"),
        ]
    )
    assert [d.reason for d in first.dropped] == ["duplicate"]
    second = step(
        [
            row(
                2, "how do vaccines train the immune system, to fight infections!!"
            ),  # exact after normalisation, in a later batch
            row(3, "how do vaccines train the immune system to fight infection"),  # near duplicate
            row(4, "tell me the boiling point of water at high altitude in the mountains please"),
            row(5, "why is the sky blue"),
        ]
    )
    assert [(d.row[S.ID], d.reason) for d in second.dropped] == [
        ("r2", "duplicate"),
        ("r3", "near_duplicate"),
        ("r4", "contaminated"),
    ]
    assert [r[S.ID] for r in second.kept] == ["r5"]


def test_cosine_absolute_and_percentile():
    emb = TableEmbedder({"q1": [1, 0], "q2": [1, 1], "q3": [0, 1], "pos": [1, 0]})
    rows = [row(i, q, "pos") for i, q in enumerate(["q1", "q2", "q3"])]
    result = CosineFilter(emb, CosineConfig(threshold=0.7))(rows)
    assert [r[S.QUERY] for r in result.kept] == ["q1", "q2"]  # cos 1.0 and 0.707
    assert result.dropped[0].reason == "low_cosine" and result.dropped[0].scores["cosine"] < 0.01
    rows = [row(i, q, "pos") for i, q in enumerate(["q1", "q2", "q3"])]
    result = CosineFilter(emb, CosineConfig(mode="percentile", percentile=50))(rows)
    assert [r[S.QUERY] for r in result.kept] == ["q1"]


def test_cosine_drops_pairs_the_embedder_cannot_score_unless_told_to_keep_them():
    emb = TableEmbedder({"q1": [0, 1], "pos": [1, 0]}, languages=("en",))
    rows = [row(0, "q1", "pos", language="zh"), row(1, "q1", "pos", language="en")]
    result = CosineFilter(emb, CosineConfig(threshold=0.7))(rows)
    assert result.kept == [] and {d.row[S.ID]: d.reason for d in result.dropped} == {
        "r0": "unscored_language",
        "r1": "low_cosine",
    }
    assert "zh->zh" in next(d.detail for d in result.dropped if d.reason == "unscored_language")
    rows = [row(0, "q1", "pos", language="zh"), row(1, "q1", "pos", language="en")]
    result = CosineFilter(emb, CosineConfig(threshold=0.7, unscored="keep"))(rows)
    assert [r[S.ID] for r in result.kept] == ["r0"] and [d.row[S.ID] for d in result.dropped] == ["r1"]
    assert result.events["cosine_skipped_unsupported_language"] == 1


def test_cosine_threshold_defaults_to_the_embedders_own():
    emb = TableEmbedder({"q1": [1, 0], "q2": [1, 1], "pos": [1, 0]}, cosine_threshold=0.8)
    rows = [row(i, q, "pos") for i, q in enumerate(["q1", "q2"])]
    result = CosineFilter(emb, CosineConfig())(rows)  # q2: cos 0.707, under this embedder's 0.8
    assert [r[S.QUERY] for r in result.kept] == ["q1"]
    rows = [row(i, q, "pos") for i, q in enumerate(["q1", "q2"])]
    assert len(CosineFilter(emb, CosineConfig(threshold=0.7))(rows).kept) == 2  # the config wins


def test_copied_example_is_detected():
    from pipeline.generate.llm_call import copies_example
    from pipeline.generate.prompts import PromptLibrary

    prompt = PromptLibrary().render(
        "retrieval/query",
        {
            "passage": "Tea contains caffeine.",
            "passage_language": "English",
            "persona": "A student",
            "question_type": "keywords",
            "difficulty": "phd",
            "length_words": 5,
            "query_language": "English",
        },
    )
    assert copies_example("why does my dishwasher leave white spots on glasses after washing", prompt)
    assert not copies_example("how much caffeine is in green tea", prompt)
    assert not copies_example("Tea contains caffeine.", prompt)  # the passage itself is not an example


def test_margin_removes_negatives_too_close_to_the_positive():
    assert passes_margin(0.5, 0.8, 0.05) and not passes_margin(0.77, 0.8, 0.05)
    emb = TableEmbedder({"q": [1, 0], "pos": [0.8, 0.6], "llm far": [0.2, 1], "llm close": [0.79, 0.61]})
    r = row(
        0,
        "q",
        "pos",
        **{
            S.WORK_LLM_NEGATIVES: ["llm close", "llm far"],
            S.WORK_MINED_NEGATIVES: [
                {"text": "mined close", "score": 0.78},
                {"text": "mined far", "score": 0.3},
            ],
        },
    )
    config = NegativesConfig(llm_count=2, mined_count=2, relative_margin=0.05)
    result = NegativeMargin(emb, config)([r])
    kept = result.kept[0]
    assert kept[S.NEGATIVES] == ["llm far", "mined far"]
    assert kept[S.NEGATIVE_SOURCES] == ["llm", "mined"]
    assert all(s < 0.95 * kept[S.POSITIVE_SCORE] for s in kept[S.NEGATIVE_SCORES])
    assert result.events == {"negatives_removed_margin_llm": 1, "negatives_removed_margin_mined": 1}
    empty = RequireNegatives(1)([row(1, "q", **{S.NEGATIVES: []}), kept])
    assert [d.reason for d in empty.dropped] == ["no_negatives"] and empty.kept == [kept]


def test_mining_skips_the_positive_its_document_and_copies(tmp_path):
    emb = TableEmbedder({"q": [1, 0]})
    texts = ["the positive", "same doc other part", "copy", "near 1", "near 2", "far"]
    pool = PassagePool.from_arrays(
        tmp_path / "pool",
        texts=["the positive", "same doc other part", "The positive", "near 1", "near 2", "far"],
        passage_ids=["p0#0", "p0#1", "x#0", "a#0", "b#0", "c#0"],
        source_ids=["p0", "p0", "x", "a", "b", "c"],
        vectors=np.array([[1, 0], [0.99, 0.14], [0.98, 0.2], [0.9, 0.44], [0.8, 0.6], [0, 1]], np.float32),
    )
    del texts
    r = row(0, "q", "the positive")
    MineNegatives(emb, pool, NegativesConfig(rank_min=1, rank_max=6))([r])
    assert [c["text"] for c in r[S.WORK_MINED_NEGATIVES]] == ["near 2", "far"]  # "near 1" is rank 0


def judge_rows():
    return [
        row(
            0,
            "q zero",
            "good passage",
            **{
                S.NEGATIVES: ["bad one", "answers it"],
                S.NEGATIVE_SCORES: [0.1, 0.2],
                S.NEGATIVE_SOURCES: ["llm", "mined"],
            },
        ),
        row(
            1,
            "q one",
            "off-topic passage",
            **{S.NEGATIVES: ["bad one"], S.NEGATIVE_SCORES: [0.1], S.NEGATIVE_SOURCES: ["llm"]},
        ),
        row(2, "q two", "good passage", **{S.NEGATIVES: [], S.NEGATIVE_SCORES: [], S.NEGATIVE_SOURCES: []}),
    ]


def test_judge_grades_positive_and_negatives():
    def answer(prompt, output):
        passage = task_field(prompt, "Passage")
        if task_field(prompt, "Query") == "q two":
            return "the passage is relevant"  # not JSON
        score = {"good passage": 3, "answers it": 3, "bad one": 0, "off-topic passage": 1}[passage]
        return json.dumps({"reason": "r", "score": score})

    result = Judge(FakeEngine(answer), PromptLibrary(), JudgeConfig())(judge_rows())
    assert [r[S.ID] for r in result.kept] == ["r0"]
    assert result.kept[0][S.NEGATIVES] == ["bad one"] and result.kept[0][S.NEGATIVE_SOURCES] == ["llm"]
    assert result.kept[0][S.JUDGE_SCORE] == 3
    assert result.events["negatives_removed_judge"] == 1
    reasons = {d.row[S.ID]: d for d in result.dropped}
    assert reasons["r1"].reason == "judge_rejected"
    assert reasons["r2"].reason == "judge_invalid" and reasons["r2"].raw_output == "the passage is relevant"


def test_copied_passage_is_dropped_but_keywords_are_not():
    from pipeline.config import CopyCheckConfig
    from pipeline.filters.copycheck import CopyCheck

    passage = "The term spondyloarthropathy describes a group of related inflammatory joint diseases."
    rows = [
        row(
            0,
            "The term spondyloarthropathy describes a group of related inflammatory joint diseases",
            passage,
        ),
        row(1, "what links inflammatory joint diseases in young adults", passage),
        row(2, "spondyloarthropathy inflammatory joint", passage),
        row(
            3,
            "量子纠错通过把一个逻辑量子比特编码在多个",
            "量子纠错通过把一个逻辑量子比特编码在多个物理量子比特上",
            language="zh",
        ),
    ]
    result = CopyCheck(CopyCheckConfig())(rows)
    assert sorted(d.row[S.ID] for d in result.dropped) == ["r0", "r3"]
    assert all(d.reason == "copied_passage" for d in result.dropped)


def test_unparsable_llm_negatives_keep_the_row():
    from pipeline.generate.llm_call import LLM
    from pipeline.generate.negatives import WriteNegatives

    step = WriteNegatives(
        LLM(FakeEngine(lambda prompt, output: '{"negatives": ["cut'), PromptLibrary()),
        NegativesConfig(llm_count=1),
    )
    result = step([row(0, "how do tides work", "The moon's gravity pulls the oceans.")])
    assert result.dropped == [] and result.kept[0][S.WORK_LLM_NEGATIVES] == []
    assert result.events["negatives_llm_invalid"] == 1


def test_repetition_drops_looping_text_only():
    from pipeline.filters.repetition import RepetitionCheck

    rows = [
        row(0, "the-holy-week-the-holy-week-the-holy-week-the-holy-week of the year in rome"),
        row(1, "how does AMPK regulate cardiovascular function in older adults with heart disease"),
        row(2, "发现胆疯被胆疯，发现胆疯被胆疯，发现胆疯被胆疯，控制血糖", language="zh"),
        row(3, "为什么说威斯特伐利亚和约是现代主权国家体系的起点", language="zh"),
    ]
    result = RepetitionCheck()(rows)
    assert [r[S.ID] for r in result.kept] == ["r1", "r3"]
    assert {d.reason for d in result.dropped} == {"repetitive"}


def test_a_lightly_edited_example_is_still_a_copy():
    from pipeline.generate.llm_call import copies_example

    prompt = (
        "Rules.\n### Example\nAnswer: 长城始建于春秋战国时期，明朝时大规模重修，现存部分大多为明代所建。\n"
        "### Your task\nPassage: something else"
    )
    assert copies_example("长城始建于春秋战国时期，明朝时大规模重修，现存部分大多为明代修建的。", prompt)
    assert not copies_example("秦朝统一六国后修建了连接各段城墙的防线。", prompt)
    assert not copies_example("something else entirely, about rivers", prompt)  # the task part does not count
