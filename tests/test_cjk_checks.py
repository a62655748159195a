"""The copy, repetition and decontamination checks on Chinese, Japanese and mixed texts.

Every CJK character is its own token whatever surrounds it, so a Chinese run
inside an English prompt (the worked examples of a template) is seen exactly as
it is alone.
"""

import pytest

from pipeline.config import DedupConfig
from pipeline.filters.copycheck import passage_overlap
from pipeline.filters.dedup import Dedup
from pipeline.filters.repetition import repeated_share
from pipeline.generate.llm_call import copies_example
from pipeline.generate.prompts import PromptLibrary
from pipeline.text import tokens

from .test_prompts import QUERY_VARS

EXAMPLE_QUERY = "洗碗机洗完的玻璃杯上为什么总有白色斑点"  # worked example 1 of retrieval/query.zh.j2


@pytest.mark.parametrize(
    "left, right",
    [
        ("Answer with one JSON object.", "洗碗机洗完的玻璃杯"),
        ("睡眠与记忆", "sleep and memory 2024"),
        ("テストの結果", "は良かった"),
        ("한국어 문장", "mixed text"),
    ],
)
def test_a_run_splits_the_same_alone_and_beside_other_text(left, right):
    assert tokens(f"{left} {right}") == tokens(left) + tokens(right)
    assert tokens(f"{left}{right}")[: len(tokens(left)) - 1] == tokens(left)[:-1]


def test_chinese_inside_an_english_prompt_is_split_into_characters():
    assert tokens('Answer: {"query": "洗碗机洗完"}') == ["answer", "query", "洗", "碗", "机", "洗", "完"]


def test_a_copied_chinese_example_is_caught_in_the_rendered_prompt():
    prompt = PromptLibrary().render("retrieval/query", {**QUERY_VARS, "query_language": "Chinese"}, "zh")
    assert EXAMPLE_QUERY in prompt.split("### Your task")[0]
    assert copies_example(EXAMPLE_QUERY + "；", prompt)  # the reply seen in a real run
    assert copies_example("洗碗机洗完的玻璃杯上为什么总有白斑", prompt)  # the ending changed
    assert not copies_example("睡眠不足会如何影响第二天的记忆力", prompt)


@pytest.mark.parametrize(
    "query, passage, copied",
    [
        ("充足的睡眠能帮助大脑巩固白天学到的知识", "研究表明，充足的睡眠能帮助大脑巩固白天学到的知识", True),
        ("睡眠对学习有什么好处", "研究表明，充足的睡眠能帮助大脑巩固白天学到的知识", False),
        ("十分な睡眠は記憶の定着を助ける", "研究によると、十分な睡眠は記憶の定着を助ける。", True),
        ("なぜ寝ると覚えられるの", "研究によると、十分な睡眠は記憶の定着を助ける。", False),
        ("REM睡眠能帮助大脑巩固记忆吗", "Studies show REM睡眠能帮助大脑巩固记忆 in adults.", True),
    ],
)
def test_copies_of_the_passage_in_chinese_japanese_and_mixed_text(query, passage, copied):
    assert (passage_overlap(query, passage) > 0.5) is copied


@pytest.mark.parametrize(
    "text, loops",
    [
        ("睡眠很重要睡眠很重要睡眠很重要睡眠很重要睡眠很重要", True),
        ("睡眠不足会如何影响第二天的记忆力和注意力", False),
        ("記憶の定着 記憶の定着 記憶の定着 記憶の定着 記憶の定着", True),
        ("how 睡眠 works how 睡眠 works how 睡眠 works how 睡眠 works", True),
    ],
)
def test_looping_chinese_japanese_and_mixed_text(text, loops):
    assert (repeated_share(text) > 0.2) is loops


def test_decontamination_catches_a_chinese_eval_query_inside_mixed_text(tmp_path):
    eval_file = tmp_path / "queries.txt"
    eval_file.write_text("深度学习模型如何处理长文本输入\n", encoding="utf-8")
    step = Dedup(DedupConfig(decontaminate=[str(eval_file)]))
    rows = [
        {"id": "a", "query": "Transformer: 深度学习模型如何处理长文本输入?", "task_type": "retrieval"},
        {"id": "b", "query": "长文本对检索模型有什么挑战", "task_type": "retrieval"},
    ]
    result = step(rows)
    assert [d.row["id"] for d in result.dropped] == ["a"]
    assert result.dropped[0].reason == "contaminated"
