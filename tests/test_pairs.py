"""``--pairs``: the user's own query-passage pairs through the same gate as generated rows."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema as S
from pipeline.run.folder import RunFolder, shards_under

from .conftest import OPEN_GATE, child_env, run_fake
from .test_loop import write_corpus

GATE = [*OPEN_GATE, "filters.cosine.enabled=true", "filters.cosine.threshold=0.45", "negatives.mined_count=2"]
GATE += ["filters.dedup.exact=true"]


def kept_rows(out: Path) -> list[dict]:
    columns = [S.QUERY, S.POSITIVE, S.NEGATIVES, S.SOURCE_ID, S.PASSAGE_ID, S.MODEL]
    return [
        r
        for s in shards_under(RunFolder(out).data_folder)
        for r in pq.read_table(s, columns=columns).to_pylist()
    ]


def stats_of(out: Path) -> dict:
    return json.loads(RunFolder(out).stats_file.read_text())


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    """The pairs in the format the file's suffix names."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(pairs), path)
    else:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(pairs[0]), delimiter="\t" if path.suffix == ".tsv" else ","
            )
            writer.writeheader()
            writer.writerows(pairs)
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory, minilm_path):
    """A run of the fake engine over the corpus: its queries become the pairs of the other runs."""
    folder = tmp_path_factory.mktemp("pairs")
    corpus = write_corpus(folder / "corpus.jsonl")
    out = folder / "generated"
    run_fake(*GATE, f"corpus.path={corpus}", f"output.out_dir={out}", f"models.embedder={minilm_path}")
    return corpus, out


def pairs_run(tmp_path, corpus, pairs_file, minilm_path, name="from-pairs"):
    out = tmp_path / name
    run_fake(
        *GATE,
        f"corpus.path={corpus}",
        f"pairs.path={pairs_file}",
        f"output.out_dir={out}",
        f"models.embedder={minilm_path}",
    )
    return out


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".tsv", ".csv"])
def test_pairs_naming_documents_give_the_rows_and_funnel_of_a_generated_run(
    generated, tmp_path, minilm_path, suffix
):
    corpus, reference = generated
    # every generated row, kept or dropped, as a pair: its query and its document
    shards = RunFolder(reference).data_shards() + RunFolder(reference).rejected_shards()
    rows = [r for s in shards for r in pq.read_table(s, columns=[S.ID, S.QUERY, S.PASSAGE_ID]).to_pylist()]
    document = lambda row: row[S.PASSAGE_ID].rsplit("#", 1)[0]  # noqa: E731 - passage "doc-03#0"
    pairs = [
        {"id": r[S.ID], "query": r[S.QUERY], "passage_id": document(r)} for r in sorted(rows, key=document)
    ]
    out = pairs_run(tmp_path, corpus, write_pairs(tmp_path / f"pairs{suffix}", pairs), minilm_path)

    strip = lambda found: sorted((r[S.QUERY], r[S.POSITIVE], tuple(r[S.NEGATIVES])) for r in found)  # noqa: E731
    assert strip(kept_rows(out)) == strip(kept_rows(reference))
    assert {r[S.MODEL] for r in kept_rows(out)} == {"pairs"}
    want, got = stats_of(reference), stats_of(out)
    shared = [name for name in want["stages"] if name in got["stages"]]
    assert shared == ["dedup", "cosine", "negatives_mined", "margin"]
    counts = lambda stats: {  # noqa: E731 - rows in, out and dropped by reason (not the times)
        n: {k: v for k, v in stats["stages"][n].items() if k in ("in", "out") or k.startswith("dropped_")}
        for n in shared
    }
    assert counts(got) == counts(want)
    assert got["input"]["pairs"] == got["input"]["rows_read"] == len(pairs)
    assert got["tokens"].get("requests", 0) == 0 and got["tokens"].get("total_tokens", 0) == 0  # no LLM call
    manifest = json.loads(RunFolder(out).manifest_file.read_text())
    assert manifest["queries"]["source"] == "pairs" and manifest["models"]["generator"]["enabled"] is False
    assert "given by the user" in RunFolder(out).card_file.read_text()


def test_pairs_giving_positive_texts(generated, tmp_path, minilm_path):
    corpus, reference = generated
    kept = kept_rows(reference)
    pairs = [{"query": r[S.QUERY], "positive": r[S.POSITIVE]} for r in kept]
    out = pairs_run(tmp_path, corpus, write_pairs(tmp_path / "pairs.jsonl", pairs), minilm_path)
    assert sorted((r[S.QUERY], r[S.POSITIVE]) for r in kept_rows(out)) == sorted(
        (r[S.QUERY], r[S.POSITIVE]) for r in kept
    )


def test_a_pair_naming_a_missing_document_stops_before_anything_loads(generated, tmp_path, minilm_path):
    corpus, _ = generated
    pairs = write_pairs(
        tmp_path / "pairs.jsonl",
        [
            {"query": "what lives near the river", "passage_id": "doc-01"},
            {"query": "and here", "passage_id": "nowhere"},
        ],
    )
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "generate",
        "--pairs",
        str(pairs),
        "--corpus",
        str(corpus),
    ]
    done = subprocess.run(
        [*command, "--embedder", minilm_path, "--out", str(tmp_path / "out")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert f"{pairs}:2: document 'nowhere' is not in the corpus" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / "out").glob("*"))  # checked before anything of the run was written

    bad = write_pairs(tmp_path / "bad.jsonl", [{"query": "a question with nothing to answer it"}])
    done = subprocess.run(
        [*command[:5], str(bad), *command[6:], "--out", str(tmp_path / "out")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and f"{bad}:1: neither a document id" in done.stderr
