"""Every input row read, counted or refused: for each corpus format, rows read = documents + each
skip (stats.json's ``input``), and what cannot be read stops the run naming file and line."""

from __future__ import annotations

import bz2
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import child_env, run_fake

GOOD = [f"Passage number {i} tells how the tides rise and fall along the northern coast." for i in range(4)]
# four good rows, one with empty text, one repeating an id
ROWS = [{"id": f"d{i}", "text": text} for i, text in enumerate(GOOD)]
ROWS += [
    {"id": "empty", "text": "   "},
    {"id": "d0", "text": "A second row that reuses the id d0 of the first row."},
]
SETTINGS = [
    "generation.tasks=[retrieval]",
    "filters.cosine.enabled=false",
    "negatives.mined_count=0",
    "negatives.min_negatives=0",
    "models.embedding_store=false",
]


def jsonl(path: Path, rows=ROWS) -> Path:
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "")  # one blank line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def delimited(path: Path, separator: str, rows=ROWS) -> Path:
    quote = (lambda v: '"' + v.replace('"', '""') + '"') if separator == "," else (lambda v: v)
    lines = [f"id{separator}text"] + [f"{quote(r['id'])}{separator}{quote(r['text'])}" for r in rows]
    lines.insert(3, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def json_array(path: Path) -> Path:
    path.write_text(json.dumps(ROWS, indent=1), encoding="utf-8")
    return path


def parquet(path: Path) -> Path:
    pq.write_table(pa.table({"id": [r["id"] for r in ROWS], "text": [r["text"] for r in ROWS]}), path)
    return path


def text_folder(path: Path) -> Path:
    path.mkdir()
    for i, text in enumerate(GOOD):
        (path / f"doc{i}.txt").write_text(text, encoding="utf-8")
    (path / "empty.txt").write_text("  \n", encoding="utf-8")
    (path / "image.txt").write_bytes(b"\x00\x01binary")
    # types no reader knows: counted by type, named in the summary
    (path / "more.txt.gz").write_bytes(gzip.compress(b"compressed text is not read as .txt.gz"))
    (path / "table.arrow").write_bytes(b"ARROW1")
    (path / "rows.jsonl.lz4").write_bytes(b"\x04\x22\x4d\x18")
    return path


def compressed(path: Path) -> Path:
    plain = jsonl(path.with_suffix(""))
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return path


FORMATS = {
    "jsonl": (lambda d: jsonl(d / "c.jsonl"), 1),
    "json-array": (lambda d: json_array(d / "c.json"), 0),
    "tsv": (lambda d: delimited(d / "c.tsv", "\t"), 1),
    "csv": (lambda d: delimited(d / "c.csv", ","), 1),
    "parquet": (lambda d: parquet(d / "c.parquet"), 0),
    "jsonl.gz": (lambda d: compressed(d / "c.jsonl.gz"), 1),
    "csv.bz2": (lambda d: _bz2(delimited(d / "c.csv", ",")), 1),
}


def _bz2(plain: Path) -> Path:
    packed = plain.with_name(plain.name + ".bz2")
    packed.write_bytes(bz2.compress(plain.read_bytes()))
    plain.unlink()
    return packed


@pytest.mark.parametrize("kind", list(FORMATS))
def test_rows_read_equal_documents_plus_each_skip(kind, tmp_path, minilm_path):
    make, blank_lines = FORMATS[kind]
    corpus = make(tmp_path)
    out = tmp_path / "out"
    run_fake(f"corpus.path={corpus}", f"output.out_dir={out}", f"models.embedder={minilm_path}", *SETTINGS)
    accounting = json.loads((out / "stats.json").read_text())["input"]
    assert accounting == {
        "rows_read": 6,
        "documents": 4,
        "rows_skipped": {"empty_document": 1, "duplicate_id": 1},
        "blank_lines": blank_lines,
        "files_not_read": {},
    }


def test_a_text_folder_counts_its_files_and_names_the_types_it_did_not_read(tmp_path, minilm_path):
    folder = text_folder(tmp_path / "docs")
    out = tmp_path / "out"
    run_fake(f"corpus.path={folder}", f"output.out_dir={out}", f"models.embedder={minilm_path}", *SETTINGS)
    accounting = json.loads((out / "stats.json").read_text())["input"]
    assert accounting["rows_read"] == 5 and accounting["documents"] == 4  # the empty file: a skip
    assert accounting["files_not_read"] == {".arrow": 1, ".jsonl.lz4": 1, ".txt.gz": 1, "binary .txt": 1}
    from pipeline.console import summary
    from pipeline.run.stats import RunStats, format_funnel

    stats = json.loads((out / "stats.json").read_text())
    assert "files not read: 1 .arrow, 1 .jsonl.lz4, 1 .txt.gz, 1 binary .txt" in format_funnel(stats)

    class Result:  # what `synth generate` prints at the end
        out_dir, shards, budget_stop = out, [], None

    Result.stats = RunStats.from_json(stats)
    assert any("not read: 1 .arrow, 1 .jsonl.lz4, 1 .txt.gz" in line for line in summary(Result, None))


def test_a_corpus_under_a_dot_folder_or_given_as_a_parent_path_is_read(tmp_path, minilm_path):
    hidden = tmp_path / ".data" / "corpus"
    hidden.mkdir(parents=True)
    jsonl(hidden / "c.jsonl")
    (hidden / ".cache").mkdir()
    (hidden / ".cache" / "skip.jsonl").write_text(
        '{"id": "x", "text": "never read: hidden inside the corpus"}\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    for given, name in [(str(hidden), "dot"), ("../.data/corpus", "parent")]:
        out = tmp_path / f"out-{name}"
        config = [
            f"corpus.path={given}",
            f"output.out_dir={out}",
            f"models.embedder={minilm_path}",
            *SETTINGS,
        ]
        import os

        previous = os.getcwd()
        os.chdir(work)
        try:
            run_fake(*config)
        finally:
            os.chdir(previous)
        assert json.loads((out / "stats.json").read_text())["input"]["rows_read"] == 6, given


BROKEN = {
    "unclosed-csv-quote": (
        "c.csv",
        'id,text\nd1,"A passage that opens a quote and never closes it.\nd2,Another passage of text here.\n'
        "d3,A third passage of text here.\n",
        "c.csv:2: a quoted field opened on this line is never closed",
    ),
    "json-array-then-more": (
        "c.json",
        '[{"id": "a", "text": "A passage of text in the array."}]\n[{"id": "b", "text": "Another one."}]\n',
        "c.json:2: data after the end of the JSON array",
    ),
    "json-array-then-an-object": (
        "c.json",
        '[{"id": "a", "text": "A passage of text in the array."}] {"id": "b"}',
        "c.json:1: data after the end of the JSON array",
    ),
    "empty-array-then-more": ("c.json", "[]\n[1]", "c.json:2: data after the end of the JSON array"),
    "jsonl-broken-line": (
        "c.jsonl",
        '{"id": "a", "text": "A passage of text here."}\n{"id": "b", "text": \n',
        "c.jsonl:2:",
    ),
    "tsv-extra-field": ("c.tsv", "id\ttext\na\tA passage of text here.\tthird\n", "c.tsv:2: 3 field(s)"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_what_cannot_be_read_stops_the_run_naming_file_and_line(case, tmp_path):
    name, content, expected = BROKEN[case]
    (tmp_path / name).write_text(content, encoding="utf-8")
    command = [sys.executable, "-m", "pipeline.cli", "generate", "--corpus", str(tmp_path / name)]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert expected in line, line
