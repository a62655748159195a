"""Exports of a finished run for the trainers people use.

- ``sentence-transformers``: one Parquet file per task type, columns ``anchor, positive,
  negative_1 .. negative_n`` in that order (what ``MultipleNegativesRankingLoss`` reads:
  every column is an input, the first the anchor); n is the fewest negatives any row of that
  file has, so no cell is empty. STS rows have no negatives: their file has
  ``sentence1, sentence2, score`` with the 1-5 score mapped to 0-1 (``CoSENTLoss`` reads it).
  The instruction is kept in the anchor, written as Qwen3-Embedding reads it
  (``Instruct: ...\\nQuery:...``), unless ``instruction=False``; the task type is the file name.
- ``flagembedding``: JSONL rows ``{"query", "pos": [...], "neg": [...], "pos_scores",
  "neg_scores", "prompt", "task_type"}``; ``prompt`` holds the instruction.
- ``swift`` (ms-swift's embedding format, used by the Qwen3-Embedding recipe): JSONL rows
  ``{"query", "response", "rejected_response": [...], "task_type"}``, the instruction in the query
  as Qwen3-Embedding reads it. STS rows carry ``label`` (the score mapped to 0-1), the field
  ms-swift's cosine-similarity loss reads.
- ``corpus``: the documents a domain run wrote (each row's positive and negatives, each text
  once) as ``corpus.jsonl`` with ``id, text, title, language, domain``: a corpus that
  ``synth generate --corpus`` reads, so written documents can seed the corpus-based mode.

Rows are streamed shard by shard; every export writes one row per row of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema as S
from .. import storage
from ..instructions import format_query
from ..run.folder import RunFolder

FORMATS = ("sentence-transformers", "flagembedding", "swift", "corpus")
COLUMNS = [S.ID, S.QUERY, S.POSITIVE, S.NEGATIVES, S.TASK_TYPE, S.INSTRUCTION, S.SCORE]
COLUMNS += [S.POSITIVE_SCORE, S.NEGATIVE_SCORES, S.LANGUAGE, S.TITLE, S.DOMAIN]


@dataclass
class ExportResult:
    folder: Path
    files: dict[str, int] = field(default_factory=dict)  # file name -> rows

    @property
    def rows(self) -> int:
        return sum(self.files.values())


def iter_rows(out: Path, task_type: str | None = None) -> Iterator[dict]:
    for shard in RunFolder(out).data_shards():
        for batch in storage.parquet_file(shard).iter_batches(batch_size=1024, columns=COLUMNS):
            for row in batch.to_pylist():
                if task_type is None or row[S.TASK_TYPE] == task_type:
                    yield row


def task_types(out: Path) -> list[str]:
    found: set[str] = set()
    for shard in RunFolder(out).data_shards():
        column = storage.read_table(shard, columns=[S.TASK_TYPE]).column(S.TASK_TYPE)
        found.update(column.unique().to_pylist())
    return sorted(found)


def sts_unit(score: float | None) -> float:
    """The 1-5 similarity score on a 0-1 scale."""
    return (min(max(score or 1.0, 1.0), 5.0) - 1.0) / 4.0


def anchor(row: dict, instruction: bool) -> str:
    return format_query(row[S.QUERY], row.get(S.INSTRUCTION) if instruction else None)


def export(out: Path, fmt: str, dest: Path | None = None, instruction: bool = True) -> ExportResult:
    """Write the rows of the run in ``out`` in format ``fmt`` under ``dest`` (default ``out/export/fmt``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    dest = storage.location(dest) if dest else RunFolder(out).export_folder(fmt)
    if not storage.is_remote(dest):
        dest.mkdir(parents=True, exist_ok=True)
    result = ExportResult(dest)
    if fmt == "corpus":
        name, count = _corpus(out, dest)
        result.files[name] = count
        return result
    for task in task_types(out):
        if fmt == "sentence-transformers":
            name, count = _sentence_transformers(out, task, dest, instruction)
        else:
            name, count = _jsonl(out, task, dest, fmt, instruction)
        result.files[name] = count
    return result


def _sentence_transformers(out: Path, task: str, dest: Path, instruction: bool) -> tuple[str, int]:
    path = dest / f"{task}.parquet"
    if task == "sts":
        schema = pa.schema([("sentence1", pa.string()), ("sentence2", pa.string()), ("score", pa.float32())])

        def record(row):
            return {"sentence1": row[S.QUERY], "sentence2": row[S.POSITIVE], "score": sts_unit(row[S.SCORE])}
    else:
        n = min((len(row[S.NEGATIVES]) for row in iter_rows(out, task)), default=0)
        names = ["anchor", "positive"] + [f"negative_{i + 1}" for i in range(n)]
        schema = pa.schema([(name, pa.string()) for name in names])

        def record(row):
            values = [anchor(row, instruction), row[S.POSITIVE], *row[S.NEGATIVES][:n]]
            return dict(zip(names, values, strict=True))

    count = 0
    with storage.atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        batch = []
        for row in iter_rows(out, task):
            batch.append(record(row))
            if len(batch) == 1024:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return path.name, count


def _corpus(out: Path, dest: Path) -> tuple[str, int]:
    """The documents domain rows hold, each distinct text once, in row order."""
    import hashlib

    path = dest / "corpus.jsonl"
    seen: set[bytes] = set()  # 8-byte digests: the texts themselves are not held
    count = 0
    with storage.atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as sink:
        for row in iter_rows(out, "domain"):
            for number, text in enumerate([row[S.POSITIVE], *row[S.NEGATIVES]]):
                digest = hashlib.blake2b(" ".join(text.split()).encode(), digest_size=8).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                record = {
                    "id": f"{row[S.ID]}-{'positive' if number == 0 else f'negative{number}'}",
                    "text": text,
                    "title": row[S.TITLE],
                    "language": row[S.LANGUAGE],
                    "domain": row[S.DOMAIN],
                }
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    return path.name, count


def _jsonl(out: Path, task: str, dest: Path, fmt: str, instruction: bool) -> tuple[str, int]:
    path = dest / f"{task}.jsonl"
    count = 0
    with storage.atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as sink:
        for row in iter_rows(out, task):
            if fmt == "flagembedding":
                record = {
                    "query": row[S.QUERY],
                    "pos": [row[S.POSITIVE]],
                    "neg": list(row[S.NEGATIVES]),
                    "pos_scores": [row[S.POSITIVE_SCORE]] if row[S.POSITIVE_SCORE] is not None else [],
                    "neg_scores": list(row[S.NEGATIVE_SCORES] or []),
                    "prompt": (row[S.INSTRUCTION] or "") if instruction else "",
                    "task_type": task,
                }
            else:
                record = {
                    "query": anchor(row, instruction),
                    "response": row[S.POSITIVE],
                    "rejected_response": list(row[S.NEGATIVES]),
                    "task_type": task,
                }
                if task == "sts":
                    record["label"] = sts_unit(row[S.SCORE])
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return path.name, count
