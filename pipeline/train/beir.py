"""Reading benchmarks in BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (a folder or a URL)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from .. import storage
from ..jsonl import iter_jsonl


def read_jsonl_texts(path: Path, with_title: bool = False) -> dict[str, str]:
    texts = {}
    for _, row in iter_jsonl(path):
        text = row.get("text") or ""
        if with_title and row.get("title"):
            text = f"{row['title']}. {text}"
        texts[str(row["_id"])] = text
    return texts


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {document id: grade} for the documents judged relevant (grade > 0), grades kept
    as given (TREC-COVID's 1-2, NFCorpus's 1-2, MS MARCO-style 1-3), as trec_eval reads them."""
    relevant: dict[str, dict[str, int]] = defaultdict(dict)
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            grade = int(float(row["score"]))
            if grade > 0:
                relevant[row["query-id"]][row["corpus-id"]] = grade
    return dict(relevant)


def only_split(folder: str | Path) -> str:
    """The name of a BEIR folder's one qrels split (an error naming them when there are several)."""
    qrels_dir = storage.location(folder) / "qrels"
    files = sorted(qrels_dir.glob("*.tsv"), key=str)
    if len(files) != 1:
        raise ValueError(f"{qrels_dir}: name a split, found {[f.stem for f in files]}")
    return files[0].stem


def load_beir(
    folder: str | Path, split: str | None = None, with_title: bool = False
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus, queries and qrels of a BEIR folder; ``split`` None takes the only qrels file."""
    folder = storage.location(folder)
    qrels_file = folder / "qrels" / f"{split or only_split(folder)}.tsv"
    return (
        read_jsonl_texts(folder / "corpus.jsonl", with_title=with_title),
        read_jsonl_texts(folder / "queries.jsonl"),
        read_qrels(qrels_file),
    )
