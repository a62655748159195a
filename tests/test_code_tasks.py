"""The code task types (code_search, code_docs, code_translation) and the corpus-free domain mode."""

import json
import os
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import schema as S
from pipeline.cli import app
from pipeline.code.check import parse_error
from pipeline.filters.copycheck import CopyCheck, only_names
from pipeline.readers.code import markdown_sections, rst_sections

from .conftest import FakeEngine, default_answer, english_words, generate_args, run_fake, task_field

PY = '''
def moving_average(values, window):
    """Average each run of `window` consecutive values, for smoothing a noisy series."""
    total = sum(values[:window])
    out = [total / window]
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return out


class Cache:
    """A dictionary that forgets its oldest entry once it holds `size` of them."""

    def __init__(self, size):
        self.size = size
        self.items = {}

    def put(self, key, value):
        """Store `value` under `key`, evicting the oldest key when full."""
        if len(self.items) >= self.size:
            self.items.pop(next(iter(self.items)))
        self.items[key] = value
'''
GO = """package util

// Clamp limits x to the closed range [low, high].
func Clamp(x, low, high int) int {
	if x < low {
		return low
	}
	if x > high {
		return high
	}
	return x
}
"""
JS = """// Split a list into pages of `size` items; the last page may be shorter.
function paginate(items, size) {
  const pages = [];
  for (let i = 0; i < items.length; i += size) {
    pages.push(items.slice(i, i + size));
  }
  return pages;
}
"""
README = """# smoothing toolkit

Small helpers for time series.

## Installation

Run pip install smoothing-toolkit inside a virtual environment; it needs Python 3.9 or newer.

## Window size

The window is the number of consecutive values averaged together; a larger window gives a
smoother curve but reacts later to real changes in the data.
"""


@pytest.fixture
def source_tree(tmp_path):
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "stats.py").write_text(PY)
    (root / "src" / "clamp.go").write_text(GO)
    (root / "src" / "pages.js").write_text(JS)
    (root / "README.md").write_text(README)
    (root / "node_modules" / "left-pad").mkdir(parents=True)
    (root / "node_modules" / "left-pad" / "index.js").write_text("function leftPad(s) { return s }\n")
    (root / "src" / "bundle.min.js").write_text("function a(){return 1}\n")  # generated, by its name
    (root / "src" / "bundle.js").write_text("function a(){return 1}" * 80 + "\n")  # minified
    (root / "src" / "broken.py").write_text("def broken(:\n    pass\n")
    (root / "package-lock.json").write_text("{}\n")
    return root


TRANSLATIONS = {  # target language -> (a translation that parses, a near miss that parses, one that does not)
    "python": ("def f(x):\n    return x + 1", "def f(x):\n    return x - 1", "def f(x:\n    return"),
    "javascript": (
        "function f(x) { return x + 1; }",
        "function f(x) { return x - 1; }",
        "function f(x { return",
    ),
    "typescript": (
        "function f(x: number): number { return x + 1; }",
        "function f(x: number): number { return x - 1; }",
        "function f(x: number { return",
    ),
    "go": (
        "func f(x int) int { return x + 1 }",
        "func f(x int) int { return x - 1 }",
        "func f(x int { return",
    ),
    "java": (
        "static int f(int x) { return x + 1; }",
        "static int f(int x) { return x - 1; }",
        "static int f(int x { return",
    ),
    "rust": ("fn f(x: i64) -> i64 { x + 1 }", "fn f(x: i64) -> i64 { x - 1 }", "fn f(x: i64 -> { x"),
    "cpp": ("int f(int x) { return x + 1; }", "int f(int x) { return x - 1; }", "int f(int x { return"),
}


def code_answer(broken_translations: bool = False, broken_negatives: bool = False):
    """The fake model for code and domain prompts; every other prompt gets the default answer."""

    def answer(prompt: str, output) -> str:
        name, task = output.__name__, prompt.split("### Your task")[-1]
        if name == "QueryOutput" and ("Code (" in task or "Documentation (" in task):
            # words of the code or section past its first line: on topic, not just its names
            body = task.split("):", 1)[1].strip().split("\n", 1)[-1]
            words = [w for w in re.findall(r"[a-z]{3,}", body.lower()) if w not in {"self", "return"}]
            query = " ".join(dict.fromkeys(words[:12]))
            return json.dumps({"query": f"how to {query} with {english_words(body, 2)}"})
        if name == "CodeTranslationOutput":
            target = task_field(prompt, "Target language").rstrip(".")
            good, near, bad = TRANSLATIONS[target]
            return json.dumps({"translation": bad if broken_translations else good, "near_misses": [near]})
        if name == "CodeNegativesOutput":
            count = output.model_json_schema()["properties"]["negatives"]["maxItems"]
            language = task.split("Code (", 1)[1].split(")", 1)[0]
            good, _near, bad = TRANSLATIONS[language]
            return json.dumps({"negatives": [bad if broken_negatives else good.replace("f(", "g(")] * count})
        if name == "DomainTasksOutput":
            count = output.model_json_schema()["properties"]["tasks"]["maxItems"]
            domain = task_field(prompt, "Domain").split(".")[0]
            return json.dumps(
                {"tasks": [f"A person looks for {domain} records about case {i}" for i in range(count)]}
            )
        if name == "DomainExampleOutput":
            count = output.model_json_schema()["properties"]["negatives"]["maxItems"]
            person = task_field(prompt, "Person").split(". Question type")[0]
            topic = english_words(task_field(prompt, "Domain") + person, 5)
            words = " ".join(reversed(topic.split()))  # on topic, not a copy of the query
            positive = f"This document explains {words} in full, with the rule and the exception."
            negatives = [
                f"A note on a neighbouring matter number {i}: filing fees and office hours."
                for i in range(count)
            ]
            return json.dumps({"query": topic, "positive": positive, "negatives": negatives})
        return default_answer(prompt, output)

    return answer


OPEN = [
    "output.shard_rows=4",
    "negatives.mined_count=0",
    "filters.cosine.enabled=false",  # the fake's queries are word salad: cosine would decide at random
    "filters.judge.enabled=false",
]


def rows_of(out):
    return pq.read_table(out / "data").to_pylist()


def test_all_three_code_types_from_a_source_tree(tmp_path, source_tree, minilm_path, monkeypatch):
    import pipeline.langid as langid

    seen: list[str] = []  # every text natural-language detection was asked about
    real_check = langid.check_language

    def recording_check(text, language, *args, **kwargs):
        seen.append(text)
        return real_check(text, language, *args, **kwargs)

    monkeypatch.setattr(langid, "check_language", recording_check)
    monkeypatch.setattr("pipeline.filters.language.check_language", recording_check)
    out = tmp_path / "out"
    run_fake(
        f"output.out_dir={out}",
        f"corpus.path={source_tree}",
        f"models.embedder={minilm_path}",
        "generation.tasks=[code_search, code_docs, code_translation]",
        *OPEN,
        answer=code_answer(),
    )
    rows, stats = rows_of(out), json.loads((out / "stats.json").read_text())
    if os.environ.get("SYNTH_SHOW_ROW"):  # prints the row docs/tasks.md shows
        row = next(r for r in rows if r[S.SYMBOL] == "moving_average" and r[S.TASK_TYPE] == "code_search")
        print(json.dumps(row, ensure_ascii=False, default=str))
    by_type = {
        t: [r for r in rows if r[S.TASK_TYPE] == t] for t in ("code_search", "code_docs", "code_translation")
    }
    assert all(by_type.values()), {t: len(v) for t, v in by_type.items()}
    symbols = {r[S.SYMBOL] for r in by_type["code_search"]}
    # every function, method and class found once; vendored, minified and broken files skipped
    assert symbols == {"moving_average", "Cache", "Cache.__init__", "Cache.put", "Clamp", "paginate"}
    reading = stats["reading"]
    assert reading["skipped_vendored_folder"] == 1 and reading["skipped_minified_file"] == 1
    assert reading["skipped_generated_file"] == 1
    assert reading["skipped_unparsable_file"] == 1 and reading["skipped_lock_file"] == 1
    assert reading["doc_sections"] == 3 and reading["not_applicable_code_search"] == 3
    for r in by_type["code_search"]:
        assert r[S.PROGRAMMING_LANGUAGE] in {"python", "go", "javascript"} and r[S.CODE_PATH].startswith(
            "src/"
        )
        assert r[S.SIGNATURE] and r[S.SOURCE_ID].startswith(r[S.CODE_PATH] + ":")
        # the code without its own docstring
        assert "Average each run" not in r[S.POSITIVE] and "A dictionary that forgets" not in r[S.POSITIVE]
        assert r[S.NEGATIVES] and r[S.INSTRUCTION].startswith("Given a developer's question")
    docs = {r[S.POSITIVE].splitlines()[0] for r in by_type["code_docs"]}
    assert "## Window size" in docs and any(d.startswith("def moving_average") for d in docs)
    for r in by_type["code_translation"]:
        target = r[S.TARGET_PROGRAMMING_LANGUAGE]
        assert target != r[S.PROGRAMMING_LANGUAGE] and parse_error(r[S.POSITIVE], target) is None
        assert r[S.QUERY].lstrip().startswith(("def ", "class ", "func ", "function ")) and r[S.NEGATIVES]
    # natural-language detection saw the questions, never a line of code
    codes = {r[S.QUERY] for r in by_type["code_translation"]} | {
        r[S.POSITIVE] for r in by_type["code_search"]
    }
    assert seen and not codes & set(seen)


def test_translations_and_negatives_that_do_not_parse_are_dropped(tmp_path, source_tree, minilm_path):
    out = tmp_path / "out"
    run_fake(
        f"output.out_dir={out}",
        f"corpus.path={source_tree}",
        f"models.embedder={minilm_path}",
        "generation.tasks=[code_search, code_translation]",
        "negatives.min_negatives=0",
        *OPEN,
        answer=code_answer(broken_translations=True, broken_negatives=True),
    )
    stats = json.loads((out / "stats.json").read_text())
    rejected = pq.read_table(out / "rejected").to_pylist()
    translations = [r for r in rejected if r[S.TASK_TYPE] == "code_translation"]
    assert translations and all(r[S.REASON] == "code_does_not_parse" for r in translations)
    assert all("does not parse" in r[S.DETAIL] or "line" in r[S.DETAIL] for r in translations)
    assert stats["stages"]["code_parses"]["negatives_removed_not_parsing"] == 6
    assert all(not r[S.NEGATIVES] for r in rows_of(out))


def test_the_copy_check_sees_identifiers(minilm_path):
    row = {
        S.TASK_TYPE: "code_search",
        S.QUERY: "parse json file",
        S.POSITIVE: "def parse_json_file(path):\n    return json.load(open(path))",
        S.SYMBOL: "parse_json_file",
        S.SIGNATURE: "def parse_json_file(path)",
        S.PROGRAMMING_LANGUAGE: "python",
    }
    check = CopyCheck(__import__("pipeline.config", fromlist=["CopyCheckConfig"]).CopyCheckConfig())
    assert check.check(dict(row)).reason == "trivial"
    assert check.check({**row, S.QUERY: "how to parseJsonFile in python"}).reason == "trivial"
    assert check.check({**row, S.QUERY: "load settings saved by the app from disk"}) is None
    assert not only_names("怎么读取 json 文件", row)


def test_doc_files_split_by_section():
    sections = markdown_sections("# Title\nintro\n```\n# not a heading\n```\n## Usage\ncall it\n")
    assert [(title, text.splitlines()[0]) for _, title, text in sections] == [
        ("Title", "# Title"),
        ("Usage", "## Usage"),
    ]
    rst = rst_sections("Guide\n=====\n\nintro text\n\nOptions\n-------\nset the flag\n")
    assert [title for _, title, _ in rst] == ["Guide", "Options"] and rst[1][0] == 6


def test_code_rows_from_a_jsonl_file(tmp_path, minilm_path):
    corpus = tmp_path / "code.jsonl"
    rows = [
        {
            "id": "a",
            "code": "def add(a, b):\n    return a + b",
            "language": "python",
            "docstring": "Add two numbers.",
        },
        {"id": "b", "code": "function sub(a, b) { return a - b; }", "programming_language": "javascript"},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    run_fake(
        f"output.out_dir={out}",
        f"corpus.path={corpus}",
        f"models.embedder={minilm_path}",
        "generation.tasks=[code_translation]",
        *OPEN,
        answer=code_answer(),
    )
    kept = rows_of(out)
    assert {r[S.PROGRAMMING_LANGUAGE] for r in kept} == {"python", "javascript"}
    assert {r[S.LANGUAGE] for r in kept} == {"en"}  # a code row's "language" is its programming language


def test_a_code_row_without_a_known_language_fails_naming_the_row(tmp_path, minilm_path):
    corpus = tmp_path / "code.jsonl"
    corpus.write_text(json.dumps({"id": "a", "code": "x = 1", "language": "klingon"}) + "\n")
    args = generate_args(
        tmp_path / "out", minilm_path, extra=["--corpus", str(corpus), "--tasks", "code_search"]
    )
    result = CliRunner().invoke(app, args)
    assert (
        result.exit_code == 2 and "code.jsonl:1" in result.output and "programming_language" in result.output
    )


def test_code_types_need_a_corpus(tmp_path, minilm_path):
    result = CliRunner().invoke(
        app, generate_args(tmp_path / "out", minilm_path, extra=["--tasks", "code_search"])
    )
    assert result.exit_code == 2 and "--corpus" in result.output


def test_domain_mode_writes_documents_without_a_corpus(tmp_path, minilm_path):
    out = tmp_path / "out"
    engine = FakeEngine(code_answer())
    from pipeline.config import load_config
    from pipeline.executors import run_generate

    config = load_config(
        None,
        [
            f"output.out_dir={out}",
            f"models.embedder={minilm_path}",
            "generation.tasks=[domain]",
            "domains.names=[legal, medical]",
            "domains.count=16",
            "generation.languages=[en, zh]",
            *OPEN,
            "filters.language.enabled=false",  # the fake writes English in every language
            "filters.language.check_negatives=false",
        ],
    )
    config.models.generator = "fake-engine"
    run_generate(config, engine=engine)
    rows = rows_of(out)
    if os.environ.get("SYNTH_SHOW_ROW"):  # prints the row docs/tasks.md shows
        print(json.dumps(next(r for r in rows if r[S.DOMAIN] == "legal"), ensure_ascii=False, default=str))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 16 == len(rows) + sum(stats["dropped"].values())
    tasks = json.loads((out / "domain_topics.json").read_text())
    assert set(tasks) == {"legal/en", "legal/zh", "medical/en", "medical/zh"}
    assert {r[S.DOMAIN] for r in rows} == {"legal", "medical"}
    for r in rows:
        assert r[S.TITLE] in tasks[f"{r[S.DOMAIN]}/{r[S.LANGUAGE]}"] and r[S.PERSONA]
        assert len(r[S.NEGATIVES]) == 3 and r[S.NEGATIVE_SOURCES] == ["llm"] * 3
        assert r[S.PASSAGE_LANGUAGE] == r[S.LANGUAGE] and r[S.INSTRUCTION].startswith(
            f"Given a {r[S.DOMAIN]}"
        )
    calls = [name for name, _ in engine.calls]
    assert calls.count("DomainTasksOutput") == 1  # one brainstorm call batch for the run
    # the written documents, as a corpus the corpus-based mode reads
    result = CliRunner().invoke(app, ["export", str(out), "--format", "corpus"])
    assert result.exit_code == 0, result.output
    documents = [json.loads(line) for line in (out / "export" / "corpus" / "corpus.jsonl").open()]
    assert len(documents) == len({d["text"] for d in documents}) > len(rows)
    again = tmp_path / "again"
    run_fake(
        f"output.out_dir={again}",
        f"corpus.path={out / 'export' / 'corpus' / 'corpus.jsonl'}",
        f"models.embedder={minilm_path}",
        "limit=4",
        *OPEN,
    )
    assert json.loads((again / "stats.json").read_text())["rows_in"] == 4 and rows_of(again)


def test_a_domain_run_started_before_the_topic_rename_resumes(tmp_path):
    """``domains.tasks_per_domain`` and ``domain_tasks.json`` were the names before topics: a run
    started then keeps its fingerprint and its brainstormed list."""
    from pipeline.config import load_config
    from pipeline.run.folder import RunFolder, config_fingerprint

    old = load_config(None, ["domains.tasks_per_domain=3"])
    new = load_config(None, ["domains.topics_per_domain=3"])
    assert old.domains.topics_per_domain == 3 and config_fingerprint(old) == config_fingerprint(new)
    assert config_fingerprint(new) != config_fingerprint(load_config(None, ["domains.topics_per_domain=4"]))
    folder = RunFolder(tmp_path)
    assert folder.domain_topics_file.name == "domain_topics.json"
    (tmp_path / "domain_tasks.json").write_text("{}")
    assert folder.domain_topics_file.name == "domain_tasks.json"


def test_domain_flags_are_checked_before_anything_runs(tmp_path, minilm_path):
    base = generate_args(tmp_path / "out", minilm_path)
    result = CliRunner().invoke(app, [*base, "--count", "4"])
    assert result.exit_code == 2 and "--domains" in result.output
    result = CliRunner().invoke(app, [*base, "--domains", "legal", "--tasks", "domain,retrieval"])
    assert result.exit_code == 2 and "domain" in result.output
    result = CliRunner().invoke(app, [*base, "--domains", "legal", "--corpus", str(tmp_path)])
    assert result.exit_code == 2 and "no corpus" in result.output


def test_domain_run_progress_has_a_total(tmp_path, minilm_path):
    """A domain run knows how many passages it will make (one per seed); --limit caps it."""
    from pipeline.config import load_config
    from pipeline.executors.local import LocalExecutor
    from pipeline.readers.passages import open_input
    from pipeline.run.plan import resolve_plan

    def total(*extra: str) -> int | None:
        overrides = [f"output.out_dir={tmp_path / 'out'}", f"models.embedder={minilm_path}", *extra]
        config = load_config(None, overrides)
        config.models.generator = "fake-engine"
        executor = LocalExecutor(resolve_plan(config))
        executor.corpus = open_input(config)
        todo = [executor.plan.folder.task(t) for t in executor.plan.split.mine()]
        return executor.expected_passages(todo)

    domain = ["generation.tasks=[domain]", "domains.names=[legal, medical]", "domains.count=150"]
    assert total(*domain) == 150
    assert total(*domain, "output.num_tasks=3") == 150
    assert total(*domain, "limit=40") == 40
    assert total() is None  # a corpus run without --limit: unknown until read
