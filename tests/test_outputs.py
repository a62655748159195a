import json

from pipeline.config import DIFFICULTIES, QUESTION_TYPES
from pipeline.engine import parse_output
from pipeline.engine.base import json_schema
from pipeline.generate.replies import QueryOutput, configure_output

Configure = configure_output(5, QUESTION_TYPES, DIFFICULTIES)


def test_schema_is_bounded_and_closed():
    query = json_schema(QueryOutput)
    assert query["additionalProperties"] is False
    assert query["properties"]["query"]["maxLength"] > 0
    conf = json_schema(Configure)
    assert conf["properties"]["character"]["enum"] == [1, 2, 3, 4, 5]
    assert set(conf["properties"]["difficulty"]["enum"]) == set(DIFFICULTIES)
    assert conf["additionalProperties"] is False


def test_valid_answer_parses():
    gen = parse_output(
        json.dumps({"character": 3, "question_type": "summary", "difficulty": "phd"}), Configure
    )
    assert gen.parsed is not None and gen.parsed.character == 3 and gen.error is None


def test_not_json_is_reported_with_raw_text():
    gen = parse_output('{"query": "unfinished', QueryOutput, finish_reason="length")
    assert gen.parsed is None
    assert "not valid JSON" in gen.error and "token limit" in gen.error
    assert gen.raw == '{"query": "unfinished'


def test_schema_mismatch_names_the_field():
    gen = parse_output(
        json.dumps({"character": 9, "question_type": "summary", "difficulty": "phd"}), Configure
    )
    assert gen.parsed is None and "character" in gen.error
    extra = parse_output(json.dumps({"query": "ok query", "note": "x"}), QueryOutput)
    assert extra.parsed is None and "note" in extra.error


def test_control_characters_in_strings_are_rejected():
    # strict json.loads: a raw newline inside a string is not JSON
    gen = parse_output('{"query": "two\nlines"}', QueryOutput)
    assert gen.parsed is None


def test_python_literal_is_not_evaluated():
    gen = parse_output("{'query': __import__('os').getcwd()}", QueryOutput)
    assert gen.parsed is None and "not valid JSON" in gen.error


def test_size_categories_follow_the_hubs_list():
    from pipeline.handover.card import size_category

    cases = {0: "n<1K", 999: "n<1K", 1_000: "1K<n<10K", 150_000_000: "100M<n<1B"}
    cases.update({2_000_000_000: "1B<n<10B", 50_000_000_000: "10B<n<100B", 500_000_000_000: "100B<n<1T"})
    cases[2_000_000_000_000] = "n>1T"
    assert {rows: size_category(rows) for rows in cases} == cases
