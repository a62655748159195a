"""A held-out split of a finished run: rows to train on, and a BEIR folder to measure the lift on.

``synth split OUT`` (and ``synth generate --holdout F``) writes

- ``OUT/splits/train/``: the run's row shards without the held-out documents' rows (``synth
  train --data`` reads the folder);
- ``OUT/splits/eval/``: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``, which ``synth
  eval --run OUT`` (or ``--benchmark``, or mteb) scores;
- ``OUT/splits/split.json``: how it was drawn and what each side holds; the manifest gets a copy.

How rows are split:

- **By document.** A document is held out when a hash of (seed, document id) falls under a rate,
  so its side depends neither on the order the shards are read nor on other documents, and the
  same seed gives the same split. All rows of a held-out document stay out of training.
- **Eval queries** are the held-out rows of the question task types (retrieval, code_search,
  code_docs, domain: a query and the passage that answers it). Rows a reviewer marked good
  (``synth review``) come first: their documents are held out before any drawn one. A row marked
  anything else never becomes an eval query. The rate aims at ``fraction`` of the question rows,
  and at most ``max_queries`` of them (an exact search over the corpus per model is the cost).
- **Near-duplicates** of training queries are removed from eval: an eval query whose MinHash
  (the dedup step's character 4-grams and threshold) meets a training query's, or whose
  normalised text equals one.
- **The corpus** is the run's mining pool (its passages read again as the run read them), so a
  model must find the positive among the whole corpus. An eval positive that is not a pool
  passage as written (a code_search positive without its docstring) is added under the row's
  own id. A run without a corpus (the domain task type) takes every positive and negative its
  rows hold. A pool of more than ``max_documents`` passages (100,000) is sampled to about that
  many by a hash of each passage id, every relevant passage kept: each model is scored by an
  exact search over the whole eval corpus.

Memory holds the eval side (at most ``max_queries`` rows and their MinHash index); training rows
stream one shard at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
from datasketch import MinHashLSH

from .. import schema as S
from .. import storage
from ..config import QUESTION_TASK_TYPES
from ..filters.dedup import query_minhash
from ..run.folder import RunFolder
from ..text import normalise

EVAL_MAX_QUERIES = 2000
EVAL_MAX_DOCUMENTS = 100_000  # a larger pool is sampled (every positive kept): exact search per model
QRELS_SPLIT = "test"


class SplitError(ValueError):
    """A run that cannot be split: the message names the folder and what is missing."""


def held_out_draw(seed: int, document: str) -> float:
    """A document's draw in [0, 1): held out when it falls under the split's rate."""
    digest = hashlib.sha256(f"{seed}\x1f{document}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_run(
    out: str | Path,
    fraction: float = 0.2,
    seed: int = 0,
    max_queries: int = EVAL_MAX_QUERIES,
    passages: Callable[[], Iterable] | None = None,
    near_threshold: float = 0.8,
    num_perm: int = 128,
    frozen: str | Path | None = None,
    max_documents: int = EVAL_MAX_DOCUMENTS,
) -> dict:
    """Split the finished run in ``out``; returns what ``split.json`` records.

    ``passages``: gives the run's pool passages (``executors.workbench.run_pool_passages``;
    called a second time only when the pool must be sampled), or None for a run without a
    corpus. ``frozen``: another split run whose held-out documents this run keeps out of training
    too, with no eval side of its own (``synth loop``'s later rounds, which all score on round 1's
    eval split).
    """
    if not 0 < fraction < 1:
        raise SplitError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    folder = RunFolder(out)
    shards = finished_shards(folder)
    verdicts = reviewed(folder)
    documents = held_out_documents(frozen) if frozen is not None else None
    plan = _SplitPlan(shards, verdicts, seed, fraction, max_queries, documents)
    storage.remove(folder.root / "splits")
    eval_rows = plan.eval_rows() if frozen is None else {}
    train = _TrainWriter(folder, eval_rows, near_threshold, num_perm, keep_texts=passages is None)
    for shard in shards:
        train.write(shard, plan)
    removed = train.near_duplicates
    kept = {row_id: row for row_id, row in eval_rows.items() if row_id not in removed}
    if frozen is None and not kept:  # an eval side with no query measures nothing: say so now
        storage.remove(folder.root / "splits")
        raise SplitError(
            f"{folder}: holding out {fraction:.0%} of the documents of {train.rows + train.held_out} kept "
            f"rows gave no eval query ({len(removed)} near-duplicates of training queries removed); "
            "generate more rows or hold out a larger share"
        )
    corpus = None
    if frozen is None:
        documents = passages if passages is not None else train.texts
        corpus = _write_eval(folder, kept, documents, seed, max_documents)
        ids = sorted({row[S.SOURCE_ID] for row in eval_rows.values()} | plan.good_documents)
        storage.write_text(folder.held_out_file, "".join(f"{d}\n" for d in ids))
    summary = {
        "seed": seed,
        "fraction": fraction,
        "max_queries": max_queries,
        "rate": round(plan.rate, 6),
        "held_out_documents": len(train.held_out_documents),
        "rows": {"train": train.rows, "held_out": train.held_out, "eval_queries": len(kept)},
        "eval_removed": {"near_duplicate_of_train": len(removed)},
        "human_checked": sum(1 for row_id in kept if verdicts.get(row_id) == "good"),
        "not_good_in_review": plan.not_good,
        "corpus": corpus,
        "eval_from": str(frozen) if frozen is not None else None,
    }
    storage.write_json(folder.split_file, summary)
    _record_in_manifest(folder, summary)
    return summary


def finished_shards(folder: RunFolder) -> list[Path]:
    """The data shards the manifest of a finished run lists."""
    if not folder.manifest_file.exists():
        raise SplitError(
            f"{folder}: no manifest.json; split a finished run (rerun synth generate to finish it)"
        )
    manifest = json.loads(folder.manifest_file.read_text(encoding="utf-8"))
    shards = [folder.resolve(s["path"]) for s in manifest["shards"] if s["path"].startswith("data/")]
    if not shards:
        raise SplitError(f"{folder}: the run kept no rows; there is nothing to split")
    return shards


def held_out_documents(run: str | Path) -> set[str]:
    """The documents a split run held out (``splits/held_out_documents.txt``)."""
    path = RunFolder(run).held_out_file
    if not path.exists():
        raise SplitError(f"{run}: no splits/held_out_documents.txt; split it first (synth split {run})")
    return set(path.read_text(encoding="utf-8").split("\n")) - {""}


def reviewed(folder: RunFolder) -> dict[str, str]:
    """Row id -> the latest verdict a reviewer gave it (empty when nobody reviewed)."""
    if not folder.review_files():
        return {}
    from ..review.labels import load_labels

    return {record[S.ROW_ID]: record[S.VERDICT] for record in load_labels(folder.root)}


class _SplitPlan:
    """Which documents are held out: the reviewed-good ones, then those drawn under the rate."""

    def __init__(
        self,
        shards: list[Path],
        verdicts: dict[str, str],
        seed: int,
        fraction: float,
        most: int,
        frozen: set[str] | None = None,
    ):
        self.shards, self.verdicts, self.seed, self.frozen = shards, verdicts, seed, frozen
        good_documents: set[str] = set()
        eligible = 0
        self.not_good = 0
        for row in self._rows([S.ID, S.SOURCE_ID, S.TASK_TYPE]):
            verdict = verdicts.get(row[S.ID])
            if row[S.TASK_TYPE] in QUESTION_TASK_TYPES:
                eligible += 1
                self.not_good += verdict not in (None, "good")
            if verdict == "good":
                good_documents.add(row[S.SOURCE_ID])
        self.good_documents = good_documents
        forced = sum(1 for row in self._rows([S.ID, S.SOURCE_ID, S.TASK_TYPE]) if self._counts(row, True))
        target = min(fraction * eligible, most)
        self.rate = min(1.0, max(0.0, (target - forced) / max(1, eligible - forced)))
        self._held: dict[str, bool] = {}

    def _rows(self, columns: list[str]) -> Iterator[dict]:
        for shard in self.shards:
            yield from pq.read_table(shard, columns=columns).to_pylist()

    def _counts(self, row: dict, forced: bool) -> bool:
        good_document = row[S.SOURCE_ID] in self.good_documents
        return good_document == forced and self.eligible(row)

    def eligible(self, row: dict) -> bool:
        """A row that may become an eval query."""
        return row[S.TASK_TYPE] in QUESTION_TASK_TYPES and self.verdicts.get(row[S.ID]) in (None, "good")

    def held_out(self, document: str) -> bool:
        if self.frozen is not None:
            return document in self.frozen
        return document in self.good_documents or held_out_draw(self.seed, document) < self.rate

    def eval_rows(self) -> dict[str, dict]:
        columns = [S.ID, S.SOURCE_ID, S.PASSAGE_ID, S.TASK_TYPE, S.QUERY, S.POSITIVE, S.TITLE, S.INSTRUCTION]
        columns += [S.LANGUAGE]
        return {
            row[S.ID]: row
            for row in self._rows(columns)
            if self.held_out(row[S.SOURCE_ID]) and self.eligible(row)
        }


class _TrainWriter:
    """Writes each shard's training rows to ``splits/train/`` and finds eval queries they nearly repeat."""

    def __init__(
        self, folder: RunFolder, eval_rows: dict[str, dict], threshold: float, num_perm: int, keep_texts
    ):
        self.folder, self.num_perm = folder, num_perm
        self.index = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.exact: dict[str, list[str]] = {}
        for row_id, row in eval_rows.items():
            norm = normalise(row[S.QUERY])
            self.index.insert(row_id, query_minhash(norm, num_perm))
            self.exact.setdefault(norm, []).append(row_id)
        self.near_duplicates: set[str] = set()
        self.rows = self.held_out = 0
        self.held_out_documents: set[str] = set()
        self._texts: dict[str, str] | None = {} if keep_texts else None

    def write(self, shard: Path, plan: _SplitPlan) -> None:
        table = pq.read_table(shard)
        documents = table.column(S.SOURCE_ID).to_pylist()
        keep = [not plan.held_out(document) for document in documents]
        self.held_out_documents.update(d for d, kept in zip(documents, keep, strict=True) if not kept)
        train = table.filter(keep)
        for row in train.select([S.QUERY, S.TASK_TYPE]).to_pylist():
            if row[S.TASK_TYPE] in QUESTION_TASK_TYPES:
                self._check(row[S.QUERY])
        if self._texts is not None:
            for row in table.select([S.POSITIVE, S.NEGATIVES]).to_pylist():
                for text in [row[S.POSITIVE], *row[S.NEGATIVES]]:
                    self._texts.setdefault(text_id(text), text)
        self.rows += train.num_rows
        self.held_out += table.num_rows - train.num_rows
        if train.num_rows:
            target = self.folder.train_split_folder / self.folder.relative(shard).removeprefix("data/")
            with storage.atomic_path(target) as tmp:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(train, tmp, compression="zstd")

    def _check(self, query: str) -> None:
        norm = normalise(query)
        self.near_duplicates.update(self.exact.get(norm, ()))
        self.near_duplicates.update(self.index.query(query_minhash(norm, self.num_perm)))

    def texts(self) -> Iterator[tuple[str, str, str | None]]:
        """Every positive and negative the run's rows hold, once: the corpus of a run without one."""
        for doc_id, text in sorted((self._texts or {}).items()):
            yield doc_id, text, None


def text_id(text: str) -> str:
    return "t" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _write_eval(
    folder: RunFolder, rows: dict[str, dict], passages: Callable[[], Iterable], seed: int, most: int
) -> dict:
    """``corpus.jsonl`` (the pool, then positives it lacks), ``queries.jsonl``, ``qrels/test.tsv``.

    A query's relevant documents are every corpus document whose text is its positive's, exactly
    (a corpus that holds a passage twice has both count). The pool is read once; a pool of more
    than ``most`` passages is then read again and sampled to about ``most`` by a hash of each id,
    every relevant passage kept."""
    root = folder.eval_split_folder
    by_text: dict[str, list[str]] = {}
    for row_id, row in rows.items():
        by_text.setdefault(text_id(row[S.POSITIVE]), []).append(row_id)
    pool, relevant, from_pool, added = _write_corpus(root / "corpus.jsonl", rows, by_text, passages(), None)
    rate = min(1.0, most / max(1, pool))
    if rate < 1:  # too large for an exact search per model: written again, sampled by a hash of each id
        _, relevant, from_pool, added = _write_corpus(
            root / "corpus.jsonl", rows, by_text, passages(), (seed, rate)
        )
    with storage.atomic_path(root / "queries.jsonl") as tmp, tmp.open("w", encoding="utf-8") as sink:
        for row_id in sorted(rows):
            row = rows[row_id]
            instruction = row.get(S.INSTRUCTION) or ""
            _write_line(
                sink,
                {
                    "_id": row_id,
                    "text": row[S.QUERY],
                    "instruction": instruction,
                    "language": row[S.LANGUAGE],
                },
            )
    with storage.atomic_path(root / "qrels" / f"{QRELS_SPLIT}.tsv") as tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        lines = ["query-id\tcorpus-id\tscore"]
        lines += [f"{q}\t{doc}\t1" for q in sorted(rows) for doc in sorted(relevant[q])]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sampled = {"sampled_from": pool} if rate < 1 else {}
    return {"documents": from_pool + added, "from_pool": from_pool, "positives_added": added, **sampled}


def _write_corpus(
    path: Path,
    rows: dict[str, dict],
    by_text: dict[str, list[str]],
    passages: Iterable,
    sample: tuple[int, float] | None,
) -> tuple[int, dict[str, list[str]], int, int]:
    """Pool passages (all, or those whose hash of (seed, id) falls under a rate, every relevant one
    kept), then the positives the pool lacks; returns (pool passages read, row id -> relevant
    document ids, passages written, positives added)."""
    relevant: dict[str, list[str]] = {}
    read = from_pool = added = 0
    with storage.atomic_path(path) as tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as sink:
            for doc_id, text, title in _documents(passages):
                read += 1
                answers = by_text.get(text_id(text), ())
                if not answers and sample is not None and held_out_draw(sample[0], doc_id) >= sample[1]:
                    continue
                _write_line(sink, {"_id": doc_id, "title": title or "", "text": text})
                from_pool += 1
                for row_id in answers:
                    relevant.setdefault(row_id, []).append(doc_id)
            for row_id in sorted(set(rows) - set(relevant)):  # positives the pool lacks as written
                row, doc_id = rows[row_id], f"{row_id}:positive"
                _write_line(sink, {"_id": doc_id, "title": row.get(S.TITLE) or "", "text": row[S.POSITIVE]})
                relevant[row_id] = [doc_id]
                added += 1
    return read, relevant, from_pool, added


def _write_line(sink, record: dict) -> None:
    sink.write(json.dumps(record, ensure_ascii=False) + "\n")


def _documents(passages: Iterable) -> Iterator[tuple[str, str, str | None]]:
    """(id, text, title) from pool passages or from (id, text, title) tuples."""
    for item in passages:
        if isinstance(item, tuple):
            yield item
        else:
            yield item.passage_id, item.text, item.title


def _record_in_manifest(folder: RunFolder, summary: dict) -> None:
    manifest = json.loads(folder.manifest_file.read_text(encoding="utf-8"))
    manifest["split"] = summary
    storage.write_json(folder.manifest_file, manifest)
