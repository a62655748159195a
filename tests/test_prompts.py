import pytest

from pipeline.config import DIFFICULTIES, QUESTION_TYPES
from pipeline.generate.prompts import PromptError, PromptLibrary

CONFIGURE_VARS = {
    "passage": "Water expands when it freezes.",
    "passage_language": "English",
    "candidates": ["A chemist", "A skier", "A child", "A farmer", "A pilot"],
    "question_types": QUESTION_TYPES,
    "difficulties": DIFFICULTIES,
    "question_type": None,  # None: the LLM chooses type and difficulty (choose_by: llm)
    "difficulty": None,
}
QUERY_VARS = {
    "passage": "Water expands when it freezes.",
    "passage_language": "English",
    "persona": "A chemist",
    "question_type": "yes_or_no",
    "difficulty": "phd",
    "length_words": 7,
    "query_language": "Chinese",
}


def test_configure_renders_every_option_and_candidate():
    text = PromptLibrary().render("retrieval/configure", CONFIGURE_VARS)
    for name in QUESTION_TYPES + DIFFICULTIES + CONFIGURE_VARS["candidates"]:
        assert name in text
    assert "5. A pilot" in text
    assert text.count("### Example") == 3


def test_configure_with_sampled_type_asks_for_the_character_only():
    variables = {**CONFIGURE_VARS, "question_type": "yes_or_no", "difficulty": "phd"}
    text = PromptLibrary().render("retrieval/configure", variables)
    task = text.split("### Your task")[-1]
    assert "Query kind: yes_or_no, phd." in task
    assert task.strip().endswith('with the key "character".')
    assert '"question_type":' not in text  # no example teaches the model to answer more than asked


def test_query_states_the_requirements():
    text = PromptLibrary().render("retrieval/query", QUERY_VARS)
    assert "about 7 words" in text and "Language of the query: Chinese" in text
    assert text.endswith('Answer with one JSON object with the key "query".')


@pytest.mark.parametrize(
    "name, variables", [("retrieval/configure", CONFIGURE_VARS), ("retrieval/query", QUERY_VARS)]
)
def test_missing_variable_fails_loudly(name, variables):
    incomplete = {k: v for k, v in variables.items() if k != "passage"}
    with pytest.raises(PromptError, match="passage"):
        PromptLibrary().render(name, incomplete)


def test_sandbox_blocks_attribute_escape(tmp_path):
    (tmp_path / "evil.j2").write_text("{{ passage.__class__.__mro__ }}")
    with pytest.raises(PromptError):
        PromptLibrary(tmp_path).render("evil", {"passage": "x"})


def test_language_override_and_hash(tmp_path):
    (tmp_path / "t.j2").write_text("generic {{ x }}")
    (tmp_path / "t.zh.j2").write_text("中文 {{ x }}")
    lib = PromptLibrary(tmp_path)
    assert lib.render("t", {"x": 1}, "zh") == "中文 1"
    assert lib.render("t", {"x": 1}, "en") == "generic 1"
    assert lib.prompt("t", "zh").hash != lib.prompt("t", "en").hash
    assert len(lib.prompt("t").hash) == 12


def test_unknown_template():
    with pytest.raises(PromptError, match="not found"):
        PromptLibrary().render("retrieval/nope", {})


BITEXT_VARS = {
    "sentence": "水在结冰时体积会膨胀。",
    "source_language": "Chinese",
    "target_language": "English",
    "count": 2,
}
CLASSIFY_VARS = {
    "passage": "Water expands when it freezes.",
    "passage_language": "English",
    "persona": "A chemist",
    "difficulty": "university",
    "length_words": 12,
    "language": "Chinese",
    "labels": {"physics": "Matter, energy and forces.", "cooking": "Preparing food."},
}
STS_VARS = {
    "passage": "Water expands when it freezes.",
    "passage_language": "English",
    "language": "English",
    "score": 3,
}
LABELS_VARS = {"passages": ["Water expands when it freezes.", "Bread rises because of yeast."], "count": 6}
NEW_TEMPLATES = [
    ("bitext/translate", BITEXT_VARS, ["水在结冰时体积会膨胀。", "into English", "list of 2"]),
    (
        "classification/classify",
        CLASSIFY_VARS,
        ["- physics: Matter", "- cooking:", "about 12 words, in Chinese"],
    ),
    ("sts/pair", STS_VARS, ["Similarity asked for: 3, in English", "3 = partly the same meaning"]),
    ("classification/labels", LABELS_VARS, ["Propose 6 categories", "2. Bread rises", "list of 6"]),
]


@pytest.mark.parametrize("name, variables, expected", NEW_TEMPLATES)
def test_task_templates_render_their_variables(name, variables, expected):
    text = PromptLibrary().render(name, variables)
    for piece in expected:
        assert piece in text, piece
    assert text.count("### Your task") == 1  # worked examples sit before it (copy checks rely on this)


@pytest.mark.parametrize("name, variables, expected", NEW_TEMPLATES)
def test_task_templates_fail_on_a_missing_variable(name, variables, expected):
    missing = sorted(variables)[0]
    with pytest.raises(PromptError, match=missing):
        PromptLibrary().render(name, {k: v for k, v in variables.items() if k != missing})


@pytest.mark.parametrize(
    "name, variables",
    [
        ("classification/classify", {**CLASSIFY_VARS, "language": "Chinese"}),
        ("bitext/translate", {**BITEXT_VARS, "target_language": "Chinese", "source_language": "English"}),
        ("sts/pair", {**STS_VARS, "language": "Chinese"}),
    ],
)
def test_chinese_overrides_keep_the_task_section(name, variables):
    library = PromptLibrary()
    generic, chinese = library.render(name, variables), library.render(name, variables, "zh")
    assert chinese != generic and library.prompt(name, "zh").path.name.endswith(".zh.j2")
    # the lines the steps and tests read back are the same in both
    generic_task, chinese_task = generic.split("### Your task")[1], chinese.split("### Your task")[1]
    assert generic_task.splitlines()[:-1] == chinese_task.splitlines()[:-1]
