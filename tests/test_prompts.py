import pytest

from pipeline.config import DIFFICULTIES, QUESTION_TYPES
from pipeline.prompts import PromptError, PromptLibrary

CONFIGURE_VARS = {
    "passage": "Water expands when it freezes.",
    "passage_language": "English",
    "candidates": ["A chemist", "A skier", "A child", "A farmer", "A pilot"],
    "question_types": QUESTION_TYPES,
    "difficulties": DIFFICULTIES,
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
